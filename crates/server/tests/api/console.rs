//! The web console over HTTP, as a browser would use it: sign-in and its
//! cookie, CSRF refusals, tenancy, the CSP and escaping of hostile payloads
//! (pages parsed with an HTML parser), paging by seq, findings, verify,
//! policies and the event stream route.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use scraper::{Html, Selector};
use serde_json::json;

use crate::helpers::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A browser signed in to the console (no redirects followed, so each
/// answer is seen as sent).
struct Browser {
    client: Client,
    base: String,
    cookie: String,
}

fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_form(
    client: &Client,
    url: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let mut r = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.send().await.expect("request")
}

fn set_cookie(h: &HeaderMap) -> Option<String> {
    h.get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn sign_in(app: &TestApp, key: &str) -> Browser {
    let client = no_redirects();
    let r = post_form(
        &client,
        &app.url("/console/sign-in"),
        None,
        &[("key", key)],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sc = set_cookie(r.headers()).expect("a session cookie");
    let cookie = sc.split(';').next().expect("name=value").to_owned();
    Browser {
        client,
        base: app.base.clone(),
        cookie,
    }
}

impl Browser {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.base, path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("request")
    }

    /// A page that must answer 200; its HTML parsed.
    async fn page(&self, path: &str) -> (HeaderMap, Html) {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        let h = r.headers().clone();
        (h, Html::parse_document(&r.text().await.expect("body")))
    }

    async fn csrf(&self) -> String {
        let (_, html) = self.page("/console/sessions").await;
        let sel = Selector::parse("input[name=csrf]").unwrap();
        html.select(&sel)
            .next()
            .and_then(|e| e.value().attr("value"))
            .expect("a csrf field")
            .to_owned()
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        post_form(
            &self.client,
            &format!("{}{}", self.base, path),
            Some(&self.cookie),
            fields,
            None,
        )
        .await
    }
}

fn texts(html: &Html, css: &str) -> Vec<String> {
    let sel = Selector::parse(css).unwrap();
    html.select(&sel)
        .map(|e| e.text().collect::<String>())
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn sign_in_exchanges_the_key_for_a_strict_cookie_and_sign_out_ends_it() {
    let app = spawn_app().await;
    let client = no_redirects();
    let r = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console");
    let r = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(location(&r), "/console/sign-in", "not signed in");

    let r = post_form(
        &client,
        &app.url("/console/sign-in"),
        None,
        &[("key", "al_wrong_0000000000000000000000000000")],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookie(r.headers()).is_none(),
        "no cookie for a wrong key"
    );

    let r = post_form(
        &client,
        &app.url("/console/sign-in"),
        None,
        &[("key", &app.key)],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(r.headers()).expect("cookie");
    let attrs: Vec<&str> = cookie.split("; ").collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(&want), "{want} missing from {cookie}");
    }
    assert!(
        !attrs.contains(&"Secure"),
        "plain HTTP without --secure-cookies"
    );
    assert!(!cookie.contains(&app.key), "the cookie is not the key");
    let b = Browser {
        client: client.clone(),
        base: app.base.clone(),
        cookie: attrs[0].to_owned(),
    };
    let (_, html) = b.page("/console").await;
    assert!(texts(&html, ".who").concat().contains("default"));

    // Signing in again from this browser ends its older session.
    let r = post_form(
        &client,
        &app.url("/console/sign-in"),
        Some(&b.cookie),
        &[("key", &app.key)],
        None,
    )
    .await;
    let fresh = set_cookie(r.headers()).expect("a new cookie");
    assert_eq!(
        b.get("/console/sessions").await.status(),
        StatusCode::SEE_OTHER,
        "the older token was forgotten"
    );
    let b = Browser {
        cookie: fresh.split(';').next().unwrap().to_owned(),
        ..b
    };
    let csrf = b.csrf().await;
    let r = b.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(r.headers()).unwrap().contains("Max-Age=0"));
    let r = b.get("/console/sessions").await;
    assert_eq!(
        location(&r),
        "/console/sign-in",
        "the old cookie no longer works: the session was revoked server-side"
    );
}

#[tokio::test]
async fn with_secure_cookies_the_cookie_is_secure_and_host_prefixed() {
    let app = spawn_app_with(|c| c.secure_cookies = true).await;
    let r = post_form(
        &no_redirects(),
        &app.url("/console/sign-in"),
        None,
        &[("key", &app.key)],
        None,
    )
    .await;
    let cookie = set_cookie(r.headers()).unwrap();
    assert!(
        cookie.starts_with("__Host-agentledger_console="),
        "{cookie}"
    );
    assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_or_from_another_origin_are_refused() {
    let app = spawn_app().await;
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    let before = app.get_json("/api/v1/policies").await;

    for fields in [
        vec![],
        vec![("csrf", "00".repeat(32))],
        vec![("csrf", "x".into())],
    ] {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = b.post("/console/sign-out", &f).await;
        // A missing field is refused by the form extractor (422), a wrong one by the check.
        assert!(
            r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "{fields:?}: {}",
            r.status()
        );
    }
    let r = post_form(
        &b.client,
        &app.url("/console/sign-out"),
        Some(&b.cookie),
        &[("csrf", &csrf)],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "right token, wrong origin"
    );
    let r = b
        .post(
            "/console/policies",
            &[
                ("csrf", &"ab".repeat(32)),
                ("policies", "forbid(principal, action, resource);"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get_json("/api/v1/policies").await,
        before,
        "nothing was saved"
    );
    // Signing this browser in to another project from another site: refused.
    let r = post_form(
        &no_redirects(),
        &app.url("/console/sign-in"),
        None,
        &[("key", &app.key)],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The session survived every refused form.
    assert_eq!(b.get("/console/sessions").await.status(), StatusCode::OK);
    // A page sent with no-referrer makes a browser post `Origin: null`:
    // Sec-Fetch-Site decides.
    let r = b
        .client
        .post(app.url("/console/sign-out"))
        .header("cookie", &b.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .body(form_body(&[("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn another_projects_sessions_and_events_are_404_in_the_console() {
    let app = spawn_app().await;
    let ingested = app.ingest(json!([tool_call("sess-a", "c1")])).await;
    let event = ingested["events"][0]["id"].as_str().unwrap().to_owned();
    let other = app.new_key("other").await;
    let b = sign_in(&app, &other).await;
    for path in [
        "/console/sessions/sess-a".to_owned(),
        "/console/sessions/sess-a/verify".to_owned(),
        "/console/sessions/sess-a/export".to_owned(),
        format!("/console/events/{event}"),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(!r.text().await.unwrap().contains("search_database"));
    }
    let (_, html) = b.page("/console/sessions").await;
    assert!(texts(&html, "table.list a").is_empty(), "no session listed");
    let (_, html) = b.page("/console/search?q=user").await;
    assert!(!html.html().contains("sess-a"));
    // The owner sees it.
    let owner = sign_in(&app, &app.key).await;
    owner.page("/console/sessions/sess-a").await;
    owner.page(&format!("/console/events/{event}")).await;
}

#[tokio::test]
async fn hostile_payloads_render_as_inert_text_under_a_strict_csp_on_every_page() {
    let app = spawn_app().await;
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">x</a>";
    let r = app
        .ingest(json!([{
            "session_id": "<script>alert('sid')</script>",
            "agent_id": "agent\"><img src=x onerror=alert(4)>",
            "kind": "tool_call",
            "payload": {"toolName": "<b onmouseover=alert(5)>t</b>", "callId": "c1",
                "arguments": {"q": hostile, "<script>k</script>": "javascript:alert(6)"}}
        }]))
        .await;
    let event = r["events"][0]["id"].as_str().unwrap().to_owned();
    let b = sign_in(&app, &app.key).await;
    let sid = "%3Cscript%3Ealert%28%27sid%27%29%3C%2Fscript%3E";
    let pages = [
        "/console".to_owned(),
        "/console/sessions".to_owned(),
        format!("/console/sessions/{sid}"),
        format!("/console/sessions/{sid}/verify"),
        format!("/console/events/{event}"),
        "/console/search?q=alert".to_owned(),
        "/console/search?q=%3Cscript%3E&agent_id=%22%3E%3Cimg".to_owned(),
        "/console/live".to_owned(),
        "/console/policies".to_owned(),
    ];
    let script = Selector::parse("script").unwrap();
    let any = Selector::parse("*").unwrap();
    for path in &pages {
        let (h, html) = b.page(path).await;
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        let scripts: Vec<_> = html.select(&script).collect();
        assert_eq!(scripts.len(), 1, "{path}: only our own script");
        let src = scripts[0].value().attr("src").unwrap_or_default();
        assert!(src.starts_with("/console/assets/console-"), "{path}: {src}");
        for el in html.select(&any) {
            for (name, value) in el.value().attrs() {
                assert!(!name.starts_with("on"), "{path}: an {name} attribute");
                assert!(
                    !value
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("javascript:"),
                    "{path}: {name}={value}"
                );
            }
            assert!(
                !matches!(el.value().name(), "img" | "b" | "iframe" | "object"),
                "{path}: a <{}> element from a payload",
                el.value().name()
            );
        }
    }
    // The event page shows the payload as the text it is.
    let (_, html) = b.page(&format!("/console/events/{event}")).await;
    let payload = texts(&html, "#payload").concat();
    assert!(
        payload.contains("<script>alert(1)</script><img src=x onerror=alert(2)>"),
        "{payload}"
    );
    assert!(payload.contains("javascript:alert(6)"));
}

#[tokio::test]
async fn a_revoked_key_ends_its_console_sessions() {
    let app = spawn_app().await;
    let key = app.new_key("default").await;
    let b = sign_in(&app, &key).await;
    assert_eq!(b.get("/console/sessions").await.status(), StatusCode::OK);
    let list = String::from_utf8(app.cli(&["keys", "list"]).stdout).unwrap();
    let prefix: String = key.chars().take(7).collect();
    let id = list
        .lines()
        .find(|l| l.contains(&prefix) && l.contains("cli"))
        .and_then(|l| l.split_whitespace().next())
        .expect("key listed")
        .to_owned();
    assert!(app.cli(&["keys", "revoke", &id]).status.success());
    tokio::time::sleep(agentledger::auth::AUTH_CACHE_TTL + Duration::from_millis(100)).await;
    let r = b.get("/console/sessions").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/sign-in");
}

#[tokio::test]
async fn policies_need_an_admin_key() {
    let app = spawn_app().await;
    let key = app.new_key("default").await;
    let b = sign_in(&app, &key).await;
    assert_eq!(
        b.get("/console/policies").await.status(),
        StatusCode::FORBIDDEN
    );
    let (_, html) = b.page("/console").await;
    assert!(
        !texts(&html, "header nav a").iter().any(|t| t == "Policies"),
        "no Policies tab for a non-admin key"
    );
}

#[tokio::test]
async fn a_long_session_opens_at_a_page_of_seqs_and_links_the_next_finding() {
    let app = spawn_app().await;
    for chunk in 0..5 {
        let events: Vec<_> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i + 1;
                if n == 420 {
                    json!({"session_id": "long", "agent_id": "a", "kind": "memory",
                        "payload": {"note": "AKIAIOSFODNN7EXAMPLE"}})
                } else {
                    memory("long", n)
                }
            })
            .collect();
        app.ingest(json!(events)).await;
    }
    let b = sign_in(&app, &app.key).await;
    let (_, html) = b.page("/console/sessions/long").await;
    let seqs = texts(&html, "table.timeline tbody tr td:first-child");
    assert_eq!(seqs.len(), 200);
    assert_eq!(seqs[0], "1");
    assert_eq!(seqs[199], "200");
    let next = Selector::parse("#next-finding").unwrap();
    let href = html
        .select(&next)
        .next()
        .and_then(|a| a.value().attr("href"))
        .expect("a link to the next flag/deny")
        .to_owned();
    let r = b.get(&href).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/sessions/long?at=420#e420");
    let (_, html) = b.page("/console/sessions/long?at=420").await;
    let seqs = texts(&html, "table.timeline tbody tr td:first-child");
    assert_eq!((seqs[0].as_str(), seqs.len()), ("401", 100));
    let flagged = Selector::parse("tr#e420.finding .chip.flag").unwrap();
    assert!(
        html.select(&flagged).next().is_some(),
        "seq 420 shown flagged"
    );
    // None after the last page; the previous one from there is seq 420.
    let r = b
        .get("/console/sessions/long/finding?dir=next&from=450")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = b
        .get("/console/sessions/long/finding?dir=prev&from=450")
        .await;
    assert_eq!(location(&r), "/console/sessions/long?at=420#e420");
    let r = b
        .get("/console/sessions/long/finding?dir=prev&from=420")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "nothing before the only one"
    );
}

#[tokio::test]
async fn the_event_page_marks_each_finding_at_its_span_with_the_chain_fields() {
    let app = spawn_app().await;
    let r = app
        .ingest(json!([{"session_id": "s", "agent_id": "a", "kind": "tool_call",
            "payload": {"toolName": "http", "callId": "c", "arguments": {"q": "use AKIAIOSFODNN7EXAMPLE now"}}}]))
        .await;
    let id = r["events"][0]["id"].as_str().unwrap();
    let b = sign_in(&app, &app.key).await;
    let (_, html) = b.page(&format!("/console/events/{id}")).await;
    assert_eq!(texts(&html, "#payload mark"), ["AKIAIOSFODNN7EXAMPLE"]);
    assert_eq!(texts(&html, "#verdict"), ["flag"]);
    let facts = texts(&html, ".facts dd").join(" ");
    assert!(facts.contains(r["events"][0]["hash"].as_str().unwrap()));
    assert!(facts.contains("(none: first event)"));
}

#[tokio::test]
async fn the_verify_page_names_the_first_broken_seq() {
    let app = spawn_app().await;
    app.ingest(json!([memory("t", 1), memory("t", 2), memory("t", 3)]))
        .await;
    let b = sign_in(&app, &app.key).await;
    let (_, html) = b.page("/console/sessions/t/verify").await;
    assert!(
        texts(&html, "#server-verdict")
            .concat()
            .starts_with("Valid: 3 events")
    );
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"n\":99}' WHERE seq = 2",
    );
    let (_, html) = b.page("/console/sessions/t/verify").await;
    assert_eq!(texts(&html, "#broken-seq"), ["2"]);
}

/// The policies page after a dry run of `draft` over `session` (200), and its text.
async fn dry_run(b: &Browser, csrf: &str, draft: &str, session: &str) -> (Html, String) {
    let r = b
        .post(
            "/console/policies",
            &[
                ("csrf", csrf),
                ("policies", draft),
                ("session", session),
                ("action", "dry_run"),
            ],
        )
        .await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    (Html::parse_document(&body), body)
}

#[tokio::test]
async fn a_policy_draft_is_refused_at_its_line_and_a_dry_run_lists_changed_verdicts() {
    let app = spawn_app().await;
    app.ingest(json!([tool_call("dry", "c1"), memory("dry", 2)]))
        .await;
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    let bad = "permit(principal, action, resource);\n\nforbid(principal, action, resource) when { nonsense };\n";
    let r = b
        .post(
            "/console/policies",
            &[("csrf", &csrf), ("policies", bad), ("action", "validate")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = Html::parse_document(&r.text().await.unwrap());
    assert!(texts(&html, "#policy-error").concat().contains("line 3"));
    assert!(texts(&html, "#bad-line").concat().starts_with("3forbid"));

    let draft = "@id(\"no-search\")\n@reason(\"no database searches\")\nforbid (principal, action == Action::\"tool_call\", resource == Tool::\"search_database\");\n";
    let before = app.get_json("/api/v1/policies").await;
    let (html, _) = dry_run(&b, &csrf, draft, "dry").await;
    let summary = texts(&html, "#dry-run-summary").concat();
    assert!(summary.contains("1 verdicts would change"), "{summary}");
    let cells = texts(&html, "table.list tbody td");
    assert!(cells.contains(&"deny".to_owned()), "{cells:?}");
    assert_eq!(
        app.get_json("/api/v1/policies").await,
        before,
        "a dry run saves nothing"
    );
}

#[tokio::test]
async fn a_dry_run_counts_an_erased_call_where_it_stands_and_judges_no_erasure() {
    // Three calls; the first one's payload erased after the second. A draft
    // allowing one call: the second call is the first over it, because the
    // erased call counts where it stands (with the tool its record keeps),
    // and neither the erased call (nothing left to judge) nor its record
    // (written by the server) is judged again.
    let app = spawn_app().await;
    let ack = app
        .ingest(json!([tool_call("dry", "c1"), tool_call("dry", "c2")]))
        .await;
    let first = ack["events"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/events/{first}/erase"),
            &json!({"reason": "personal data"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.ingest(json!([tool_call("dry", "c3")])).await;
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    let draft = "@id(\"one-search\")\n@reason(\"one database search per session\")\nforbid (principal, action == Action::\"tool_call\", resource == Tool::\"search_database\") when { context.session.this_tool_calls >= 1 };\n";
    let (html, body) = dry_run(&b, &csrf, draft, "dry").await;
    let summary = texts(&html, "#dry-run-summary").concat();
    assert!(summary.starts_with("2 events judged"), "{summary}");
    assert!(summary.contains("(2 not judged again"), "{summary}");
    assert!(summary.contains("2 verdicts would change"), "{summary}");
    let seqs = texts(&html, "table.list tbody td.n");
    assert_eq!(seqs, ["2", "4"], "{body}");
}

#[tokio::test]
async fn assets_carry_their_hash_and_answer_revalidation_with_304() {
    let app = spawn_app().await;
    let b = sign_in(&app, &app.key).await;
    let (_, html) = b.page("/console/sessions").await;
    let sel = Selector::parse("script[src]").unwrap();
    let src = html
        .select(&sel)
        .next()
        .and_then(|s| s.value().attr("src"))
        .unwrap()
        .to_owned();
    let r = b.client.get(app.url(&src)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = r.headers()["etag"].clone();
    let r = b
        .client
        .get(app.url(&src))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = b
        .client
        .get(app.url("/console/assets/console-0000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = b.get("/console/no/such/page").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-security-policy"], CSP);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// Read SSE `data:` lines of `event: event` messages until `n` arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<serde_json::Value> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events arrive in time")
            .expect("stream open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let msg: String = buf.drain(..end + 2).collect();
            if msg.lines().any(|l| l == "event: event") {
                let data = msg
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("data");
                out.push(serde_json::from_str(data).expect("json"));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_stream_route_sends_the_projects_committed_events_that_match_its_filters() {
    let app = spawn_app().await;
    let other = app.new_key("other").await;
    let open = |key: String, query: &'static str| {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/events/stream{query}"));
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let all = open(app.key.clone(), "").await;
    assert_eq!(all.status(), StatusCode::OK);
    assert!(
        all.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let agent_b = open(app.key.clone(), "?agent_id=b").await;
    let others = open(other.clone(), "").await;
    assert_eq!(others.status(), StatusCode::OK);
    // A third and fourth stream of the key are allowed, a fifth is not.
    let third = open(app.key.clone(), "").await;
    assert_eq!(third.status(), StatusCode::OK);
    let fourth = open(app.key.clone(), "").await;
    assert_eq!(fourth.status(), StatusCode::OK);
    let fifth = open(app.key.clone(), "").await;
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    drop((third, fourth));
    let r = open(app.key.clone(), "?q=secret").await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "no full text on a stream"
    );
    let r = app
        .client
        .get(app.url("/api/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    app.ingest(json!([
        {"session_id": "live", "agent_id": "a", "kind": "memory", "payload": {"n": 1}},
        {"session_id": "live", "agent_id": "b", "kind": "memory", "payload": {"n": 2}},
    ]))
    .await;
    app.post_with(
        "/api/v1/events",
        &json!({"events": [memory("theirs", 1)]}),
        &other,
    )
    .await;
    let got = read_events(all, 2).await;
    assert_eq!(
        got.iter()
            .map(|e| (
                e["session_id"].as_str().unwrap(),
                e["seq"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("live", 1), ("live", 2)],
        "this project's events in commit order, none of the other project's"
    );
    assert_eq!(got[0]["decision"], "allow");
    let b = read_events(agent_b, 1).await;
    assert_eq!(b[0]["agent_id"], "b");
    let theirs = read_events(others, 1).await;
    assert_eq!(
        theirs[0]["session_id"], "theirs",
        "the other project sees only its own"
    );

    let doc = app.get_json("/openapi.json").await;
    assert!(doc["paths"]["/api/v1/events/stream"]["get"].is_object());
}

#[tokio::test]
async fn an_admin_creates_a_key_shown_once_and_revokes_it_and_only_the_projects_keys() {
    let app = spawn_app().await;
    let other_admin = app.new_admin_key("other").await;
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    let r = b
        .post(
            "/console/keys",
            &[("csrf", &csrf), ("name", "ci <agent>"), ("admin", "on")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = Html::parse_document(&r.text().await.unwrap());
    let key = texts(&html, "#new-key").concat();
    assert!(key.starts_with("al_") && key.len() > 40, "{key}");
    assert_eq!(
        app.get_with("/api/v1/events", &key).await.status(),
        StatusCode::OK,
        "the new key works on the API"
    );
    // Shown once: the listing never holds it again.
    let (_, html) = b.page("/console/keys").await;
    assert!(!html.html().contains(&key));
    assert!(texts(&html, "table.keys td").contains(&"ci <agent>".to_owned()));
    let ids: Vec<String> = {
        let sel = Selector::parse("table.keys tbody tr").unwrap();
        html.select(&sel)
            .filter_map(|r| r.value().attr("id").map(str::to_owned))
            .collect()
    };
    assert_eq!(
        ids.len(),
        2,
        "the bootstrap key and the new one; not other's"
    );
    // Another project's key cannot be revoked from here.
    let other_b = sign_in(&app, &other_admin).await;
    let (_, other_html) = other_b.page("/console/keys").await;
    let sel = Selector::parse("table.keys tbody tr").unwrap();
    let other_id = other_html
        .select(&sel)
        .next()
        .and_then(|r| r.value().attr("id"))
        .unwrap()
        .to_owned();
    let r = b
        .post(
            "/console/keys/revoke",
            &[("csrf", &csrf), ("id", &other_id)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        other_b.get("/console/keys").await.status(),
        StatusCode::OK,
        "the other project's key still works"
    );
    // Revoke the new key.
    let new_id = ids
        .iter()
        .find(|id| {
            texts(&html, &format!("tr#{id} td"))
                .iter()
                .any(|t| t == "ci <agent>")
        })
        .unwrap()
        .clone();
    let r = b
        .post("/console/keys/revoke", &[("csrf", "00"), ("id", &new_id)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "CSRF token required");
    let r = b
        .post("/console/keys/revoke", &[("csrf", &csrf), ("id", &new_id)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(agentledger::auth::AUTH_CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(
        app.get_with("/api/v1/events", &key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A key that is not an admin's sees no Keys page.
    let plain = app.new_key("default").await;
    let p = sign_in(&app, &plain).await;
    assert_eq!(p.get("/console/keys").await.status(), StatusCode::FORBIDDEN);
}

/// A client whose connections come from `ip` (any 127.x address is this
/// machine on Linux), so one test can play several addresses.
fn client_from(ip: &str) -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds")
}

#[tokio::test]
async fn failed_sign_ins_close_the_form_to_the_address_with_429_and_retry_after() {
    let app = spawn_app().await;
    let guesser = client_from("127.0.0.2");
    let url = app.url("/console/sign-in");
    // Five free failures (each a different key prefix: only the address
    // counts them together).
    for i in 0..5 {
        let r = post_form(
            &guesser,
            &url,
            None,
            &[("key", &format!("al_{i}xxguess"))],
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let r = post_form(&guesser, &url, None, &[("key", "al_5xxguess")], None).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the sixth is tested, then closes"
    );
    // Closed now: even the right key is not looked at from this address.
    let r = post_form(&guesser, &url, None, &[("key", &app.key)], None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&r), 1);
    assert!(set_cookie(r.headers()).is_none());
    let html = Html::parse_document(&r.text().await.unwrap());
    assert!(
        texts(&html, "body")
            .concat()
            .contains("Too many failed sign-ins")
    );
    // Another address is not braked by this one's failures.
    let r = post_form(
        &client_from("127.0.0.3"),
        &url,
        None,
        &[("key", &app.key)],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // After Retry-After the form opens again; the next failure doubles the wait.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post_form(&guesser, &url, None, &[("key", "al_6xxguess")], None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post_form(&guesser, &url, None, &[("key", &app.key)], None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&r), 2, "the wait doubled");
}

#[tokio::test]
async fn failed_sign_ins_for_one_key_prefix_from_many_addresses_close_the_form_to_it() {
    let app = spawn_app().await;
    let url = app.url("/console/sign-in");
    let target: String = app.key.chars().take(7).collect();
    // Six guesses at the key's prefix, from three addresses (two each: no
    // address reaches its own bound).
    for i in 0..6 {
        let c = client_from(&format!("127.0.1.{}", 1 + i % 3));
        let guess = format!("{target}{i}wrong");
        let r = post_form(&c, &url, None, &[("key", &guess)], None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let fresh = client_from("127.0.1.9");
    let r = post_form(
        &fresh,
        &url,
        None,
        &[("key", &format!("{target}zzz"))],
        None,
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the prefix is braked"
    );
    assert!(retry_after(&r) >= 1);
    // Other keys are still tested from that address.
    let r = post_form(&fresh, &url, None, &[("key", "al_Qother")], None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// The overview's figures are exact counts of the day (from the store's
/// rollups), and its chain health claims "ok" only for a session it
/// verified in full: a session past its budget is "unchecked", a tampered
/// one "broken".
#[tokio::test]
async fn the_overview_counts_the_day_exactly_and_claims_only_chains_it_verified() {
    let app = spawn_app().await;
    let call = |s: &str, agent: &str, tool: &str| {
        json!({"session_id": s, "agent_id": agent, "kind": "tool_call",
            "payload": {"toolName": tool, "callId": "c", "arguments": {}}})
    };
    app.ingest(json!([
        call("small", "alpha", "search"),
        call("small", "alpha", "search"),
        call("small", "beta", "shell"),
        {"session_id": "small", "agent_id": "alpha", "kind": "memory",
            "payload": {"note": "AKIAIOSFODNN7EXAMPLE"}},
    ]))
    .await;
    app.ingest(json!([
        call("tampered", "beta", "search"),
        memory("tampered", 2)
    ]))
    .await;
    // Past the overview's verification budget (2,000 events).
    for chunk in 0..3 {
        let events: Vec<_> = (0..700).map(|i| memory("long", chunk * 700 + i)).collect();
        app.ingest(json!(events)).await;
    }
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"n\":99}' WHERE seq = 2 AND session_ref = \
         (SELECT rowid FROM sessions WHERE id = 'tampered')",
    );
    let b = sign_in(&app, &app.key).await;
    let (_, html) = b.page("/console").await;
    let cards = texts(&html, ".cards .card");
    let card = |d: &str| -> u64 {
        cards
            .iter()
            .find(|c| c.starts_with(d))
            .and_then(|c| c[d.len()..].trim().parse().ok())
            .unwrap_or_else(|| panic!("a {d} card in {cards:?}"))
    };
    assert_eq!(
        card("allow") + card("flag") + card("deny"),
        2106,
        "every judged event"
    );
    assert!(
        card("flag") + card("deny") >= 1,
        "the access key was flagged"
    );
    let rows = |section: &str| -> Vec<(String, String)> {
        let sel = Selector::parse(&format!(".cols > div:nth-child({section}) tr")).unwrap();
        html.select(&sel)
            .map(|tr| {
                let td: Vec<String> = tr
                    .select(&Selector::parse("td").unwrap())
                    .map(|t| t.text().collect())
                    .collect();
                (td[0].clone(), td.get(1).cloned().unwrap_or_default())
            })
            .collect()
    };
    assert_eq!(
        rows("2"),
        [("search".into(), "3".into()), ("shell".into(), "1".into())]
    );
    assert!(
        rows("1").iter().any(|(d, n)| d == "secrets" && n == "1"),
        "findings by detector: {:?}",
        rows("1")
    );
    assert_eq!(rows("3")[0], ("my-agent".into(), "2101".into()));
    let health: Vec<Vec<String>> = {
        let tr = Selector::parse("#health tr").unwrap();
        html.select(&tr)
            .map(|r| {
                r.select(&Selector::parse("td").unwrap())
                    .map(|t| t.text().collect())
                    .collect()
            })
            .collect()
    };
    let state = |id: &str| -> (String, String) {
        let r = health
            .iter()
            .find(|r| r[0] == id)
            .unwrap_or_else(|| panic!("{id} in {health:?}"));
        (r[2].clone(), r[3].clone())
    };
    assert_eq!(state("long").0, "unchecked");
    assert!(
        state("long").1.contains("not verified"),
        "{:?}",
        state("long")
    );
    assert_eq!(state("tampered").0, "broken");
    assert!(state("tampered").1.contains("seq 2"));
    assert_eq!(state("small").0, "ok");
}

#[tokio::test]
async fn an_admin_manages_alert_rules_and_destinations_and_sees_alerts_and_deliveries() {
    let app = spawn_app().await;
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    // A webhook to a port nothing listens on: its delivery stays pending
    // with the connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = b
        .post(
            "/console/alerts/destinations",
            &[
                ("csrf", &csrf),
                ("name", "siem <prod>"),
                ("kind", "webhook"),
                ("url", &format!("http://127.0.0.1:{port}/hook/path-secret")),
                ("secret", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = Html::parse_document(&r.text().await.unwrap());
    let secret = texts(&html, "#new-secret").concat();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    let dest = {
        let sel = Selector::parse("table.destinations tbody tr").unwrap();
        html.select(&sel)
            .next()
            .and_then(|r| r.value().attr("id"))
            .expect("a destination row")
            .to_owned()
    };
    let r = b
        .post(
            "/console/alerts/rules",
            &[
                ("csrf", &csrf),
                ("name", "tool errors"),
                ("type", "event_kind"),
                ("values", "tool_error, error"),
                ("destination", &dest),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    // Bad input is refused with the field named.
    let r = b
        .post(
            "/console/alerts/rules",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("type", "event_kind"),
                ("values", "tool_eror"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("condition.kinds"));

    app.ingest(
        json!([{"session_id": "s-err", "agent_id": "my-agent", "kind": "error",
        "payload": {"message": "boom"}}]),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let html = loop {
        let (_, html) = b.page("/console/alerts").await;
        let errors = texts(&html, "table.deliveries td");
        if errors.iter().any(|t| t.contains("could not connect")) {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an attempt: {errors:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        texts(&html, "table.alerts td")
            .concat()
            .contains("tool errors")
    );
    assert_eq!(texts(&html, "table.deliveries td.status"), ["pending"]);
    let page = html.html();
    assert!(page.contains("siem &lt;prod&gt;"), "escaped");
    assert!(!page.contains("path-secret"), "the URL's path is not shown");
    assert!(!page.contains(&secret), "the secret is not shown again");

    // Another key of the project that is not admin sees alerts, not rules.
    let reader = app.new_key("default").await;
    let rb = sign_in(&app, &reader).await;
    let (_, html) = rb.page("/console/alerts").await;
    assert_eq!(texts(&html, "table.alerts tbody tr").len(), 1);
    assert!(texts(&html, "table.rules").is_empty());
    let rcsrf = rb.csrf().await;
    let r = rb
        .post(
            "/console/alerts/rules/delete",
            &[("csrf", &rcsrf), ("id", "x")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The admin resolves the alert.
    let alert = {
        let sel = Selector::parse("table.alerts tbody tr").unwrap();
        html.select(&sel)
            .next()
            .and_then(|r| r.value().attr("id"))
            .unwrap()
            .to_owned()
    };
    let r = b
        .post(
            "/console/alerts/resolve",
            &[("csrf", &csrf), ("id", &alert)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = b.page("/console/alerts").await;
    assert!(texts(&html, "table.alerts tbody tr").is_empty());
}

#[tokio::test]
async fn a_dry_run_sees_the_findings_redaction_took_from_the_stored_payload() {
    // With --redact, the stored payload no longer holds the secret the
    // detectors found: judged again as stored, it would look clean. The
    // findings its stored verdict recorded stand for it, so a draft that
    // stops e-mail after a secret sees the secret; even where the e-mail
    // addresses after it (not redacted) would fill a new scan's findings.
    let app = spawn_app_with(|c| c.policy.redact = "secrets".parse().unwrap()).await;
    let mails: Vec<String> = (0..70).map(|i| format!("user{i}@example.org")).collect();
    let result = format!(
        "token ghp_8rESQedUStPKR0CsTy4Qwb8DwkNhFdnXsiVp contacts {}",
        mails.join(" ")
    );
    app.ingest(json!([
        {
            "session_id": "leak", "agent_id": "my-agent", "kind": "tool_response",
            "payload": { "toolName": "read_file", "callId": "c1", "durationMs": 3,
                         "result": result }
        },
        {
            "session_id": "leak", "agent_id": "my-agent", "kind": "tool_call",
            "payload": { "toolName": "send_email", "callId": "c2", "arguments": { "to": "a" } }
        }
    ]))
    .await;
    let stored = app.get("/api/v1/events?session_id=leak").await;
    let stored: serde_json::Value = stored.json().await.unwrap();
    let result = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["payload"]["result"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        result.contains("[REDACTED:") && !result.contains("ghp_"),
        "{result}"
    );
    let b = sign_in(&app, &app.key).await;
    let csrf = b.csrf().await;
    let draft = "@id(\"no-mail-after-secret\")\nforbid (principal, action == Action::\"tool_call\", resource == Tool::\"send_email\") when { context.session.secret_seen };\n";
    let (html, body) = dry_run(&b, &csrf, draft, "leak").await;
    let changed: Vec<String> = texts(&html, "table.list tbody td.n");
    assert!(changed.contains(&"2".to_owned()), "{body}");
    assert!(body.contains("no-mail-after-secret"), "{body}");
}
