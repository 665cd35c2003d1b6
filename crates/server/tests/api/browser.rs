//! The console in a real browser: Debian's `chromium`, driven unmodified
//! through `chromedriver` over the WebDriver protocol (plain HTTP and JSON,
//! spoken here with reqwest). `.ci/run` installs both and runs this test
//! explicitly (`cargo test -p agentledger --test api console_in_chromium --
//! --ignored`). Screenshots of each page go to `$AGENTLEDGER_SCREENSHOTS`
//! (default: a folder in the target directory); docs/ keeps a few.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// The W3C name of the element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    http: Client,
    base: String,
    session: String,
    shots: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{driver}: {e} (apt-get install chromium chromium-driver)"));
        let http = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_owned();
        let shots = std::env::var_os("AGENTLEDGER_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
            });
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        Driver {
            child,
            http,
            base,
            session,
            shots,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut r = self.http.request(method, url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        self.cmd(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// Wait until `js` (a function body) returns true.
    async fn until(&self, what: &str, js: &str) {
        for _ in 0..100 {
            if self.script(js).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at = self.url().await;
        let body = self
            .script("return document.body ? document.body.innerText : ''")
            .await;
        panic!("timed out waiting for {what}; at {at}: {body}");
    }

    async fn screenshot(&self, name: &str) {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("base64 PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// The browser's console messages so far (chromedriver's log endpoint).
    async fn console_log(&self) -> Vec<String> {
        self.cmd(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({"type": "browser"})),
        )
        .await
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
    }
}

/// Assert no message of the browser's console reports a CSP violation.
fn no_csp_violation(log: &[String], page: &str) {
    let bad: Vec<&String> = log
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Content-Security-Policy"))
        .collect();
    assert!(bad.is_empty(), "{page}: CSP violations: {bad:?}");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver; .ci/run runs it"]
async fn console_in_chromium() {
    let app = spawn_app().await;
    // A deny policy beside the defaults, so the session has a denied call.
    let current = app.get_json("/api/v1/policies").await;
    let mut text: Vec<String> = current["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_owned())
        .collect();
    text.push(
        "@id(\"no-shell\")\n@reason(\"no shell access for agents\")\n\
         forbid (principal, action == Action::\"tool_call\", resource == Tool::\"shell\");"
            .into(),
    );
    let r = app
        .client
        .put(app.url("/api/v1/policies"))
        .bearer_auth(&app.key)
        .json(&json!({"policies": text.join("\n\n")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.ingest(json!([
        {"session_id": "demo", "agent_id": "support-bot", "kind": "user_input",
         "payload": {"text": "Find the customer's last order and email them a summary"}},
        {"session_id": "demo", "agent_id": "support-bot", "kind": "llm_response", "payload": {
            "callId": "l1", "provider": "openai", "model": "gpt-4o", "completion": "I will search the orders.", "finishReason": "stop", "latencyMs": 900,
            "usage": {"inputTokens": 812, "outputTokens": 64}, "costUsd": 0.0031}},
        tool_call("demo", "c1"),
        {"session_id": "demo", "agent_id": "support-bot", "kind": "tool_call", "payload": {
            "toolName": "http_post", "callId": "c2",
            "arguments": {"url": "https://api.example.com", "auth": "AKIAIOSFODNN7EXAMPLE"}}},
        {"session_id": "demo", "agent_id": "support-bot", "kind": "tool_call", "payload": {
            "toolName": "shell", "callId": "c3", "arguments": {"cmd": "cat /etc/passwd"}}},
        {"session_id": "hostile", "agent_id": "<img src=x onerror=\"window.pwned=1\">",
         "kind": "tool_call", "payload": {"toolName": "<script>window.pwned=2</script>",
            "callId": "h1", "arguments": {"html": "<img src=x onerror=\"window.pwned=3\">",
            "link": "javascript:window.pwned=4"}}},
    ]))
    .await;

    let d = Driver::start().await;
    // Sign in.
    d.goto(&app.url("/")).await;
    assert!(d.url().await.ends_with("/console/sign-in"));
    d.screenshot("sign-in").await;
    // The log channel works and shows a violation (reading it clears it):
    // an inline script added now is refused by the page's policy.
    d.script(
        "const s = document.createElement('script'); s.textContent = 'window.inline = 1'; \
         document.body.appendChild(s); console.log('probe'); return true;",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = d.console_log().await;
    assert!(log.iter().any(|m| m.contains("probe")), "{log:?}");
    assert!(
        log.iter().any(|m| m.contains("Content Security Policy")),
        "a violation is seen in the log: {log:?}"
    );
    assert_eq!(d.script("return window.inline === undefined").await, true);
    d.type_into("#key", &app.key).await;
    d.click("form.signin button").await;
    d.until("the overview", "return location.pathname === '/console'")
        .await;
    d.screenshot("overview").await;
    no_csp_violation(&d.console_log().await, "overview");

    // The session, with its flagged and denied calls marked.
    d.goto(&app.url("/console/sessions")).await;
    d.screenshot("sessions").await;
    d.click("table.list a[href='/console/sessions/demo']").await;
    d.until(
        "the session",
        "return location.pathname === '/console/sessions/demo'",
    )
    .await;
    assert_eq!(d.count("tr.finding").await, 2);
    assert_eq!(d.text("tr#e4 .chip").await, "flag");
    assert_eq!(d.text("tr#e5 .chip").await, "deny");
    // The keyboard: n selects the next finding.
    d.script("document.body.dispatchEvent(new KeyboardEvent('keydown', {key: 'n', bubbles: true})); return true;")
        .await;
    d.until(
        "n to select the first finding",
        "return document.querySelector('tr.current') === document.getElementById('e4')",
    )
    .await;
    d.screenshot("session").await;
    no_csp_violation(&d.console_log().await, "session");

    // The flagged event, its finding highlighted.
    d.click("tr#e4 td a[href^='/console/events/']").await;
    d.until(
        "the event page",
        "return location.pathname.startsWith('/console/events/')",
    )
    .await;
    assert_eq!(d.text("#payload mark").await, "AKIAIOSFODNN7EXAMPLE");
    d.screenshot("event").await;

    // Verify on the server, then in the browser.
    d.goto(&app.url("/console/sessions/demo/verify")).await;
    assert!(
        d.text("#server-verdict")
            .await
            .starts_with("Valid: 5 events")
    );
    d.click("#verify-here").await;
    d.until(
        "the browser's verification",
        "return !!document.getElementById('browser-result').dataset.result",
    )
    .await;
    let result = d.text("#browser-result").await;
    assert!(
        result.starts_with("Verified in this browser: 5 events"),
        "{result}"
    );
    d.screenshot("verify").await;
    no_csp_violation(&d.console_log().await, "verify");

    // An erased event: its payload is gone, its record follows in the chain,
    // and the browser's verification accepts the two together.
    let ack = app
        .ingest(json!([
            memory("erased-demo", 1),
            memory("erased-demo", 2),
            memory("erased-demo", 3)
        ]))
        .await;
    let erased_id = ack["events"][1]["id"]
        .as_str()
        .expect("event id")
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/events/{erased_id}/erase"),
            &json!({"reason": "personal data"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    d.goto(&app.url("/console/sessions/erased-demo/verify"))
        .await;
    assert!(
        d.text("#server-verdict")
            .await
            .starts_with("Valid: 4 events")
    );
    d.click("#verify-here").await;
    d.until(
        "the browser's verification of an erased session",
        "return !!document.getElementById('browser-result').dataset.result",
    )
    .await;
    let result = d.text("#browser-result").await;
    assert!(
        result.starts_with("Verified in this browser: 4 events"),
        "{result}"
    );

    // Search, and a hit opens in its session at its seq.
    d.goto(&app.url("/console/search?q=passwd")).await;
    d.screenshot("search").await;
    d.click("table.hits tbody tr td:nth-child(2) a").await;
    d.until("the hit in its session", "return location.hash === '#e5'")
        .await;

    // Live: an event posted now appears without a reload.
    d.goto(&app.url("/console/live")).await;
    d.until(
        "the stream",
        "return document.getElementById('live-status').textContent === 'live'",
    )
    .await;
    app.ingest(json!([memory("arrives-live", 1)])).await;
    d.until(
        "the live event",
        "return document.getElementById('live-rows').textContent.includes('arrives-live')",
    )
    .await;
    d.screenshot("live").await;

    // Tamper with the database: both verifications name the broken seq.
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"toolName\":\"search_database\",\"callId\":\"c1\",\"arguments\":{\"query\":\"nothing to see\"}}' WHERE seq = 3 AND session_ref = (SELECT rowid FROM sessions WHERE id = 'demo')",
    );
    d.goto(&app.url("/console/sessions/demo/verify")).await;
    assert_eq!(d.text("#broken-seq").await, "3");
    d.click("#verify-here").await;
    d.until(
        "the browser's verification",
        "return !!document.getElementById('browser-result').dataset.result",
    )
    .await;
    let result = d.text("#browser-result").await;
    assert!(
        result.starts_with("Broken in this browser at seq 3"),
        "{result}"
    );
    d.screenshot("verify-broken").await;

    // Hostile payloads execute nothing.
    d.goto(&app.url("/console/sessions/hostile")).await;
    d.click("tr#e1 td a[href^='/console/events/']").await;
    d.until(
        "the hostile event",
        "return location.pathname.startsWith('/console/events/')",
    )
    .await;
    assert!(d.text("#payload").await.contains("<img src=x onerror="));
    assert_eq!(d.script("return window.pwned === undefined").await, true);
    d.goto(&app.url("/console/search?q=pwned")).await;
    assert_eq!(d.script("return window.pwned === undefined").await, true);

    // Policies (admin): the editor and the set in force.
    d.goto(&app.url("/console/policies")).await;
    d.screenshot("policies").await;

    // Alerts: a rule on denied calls, to a webhook that is down, then a
    // denied shell call in a session of its own (the alert's event joins
    // that session's chain): the page shows the alert, its delivery
    // retrying and the rule.
    let r = app
        .client
        .post(app.url("/api/v1/alerts/destinations"))
        .bearer_auth(&app.key)
        .json(&json!({"name": "siem", "kind": "webhook",
                      "url": "http://127.0.0.1:9/hooks/agentledger"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let dest: serde_json::Value = r.json().await.unwrap();
    let r = app
        .client
        .post(app.url("/api/v1/alerts/rules"))
        .bearer_auth(&app.key)
        .json(&json!({"name": "denied tool calls",
                      "condition": {"type": "decision", "decisions": ["deny"]},
                      "destinations": [dest["id"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.ingest(json!([
        {"session_id": "on-call", "agent_id": "support-bot", "kind": "tool_call", "payload": {
            "toolName": "shell", "callId": "c9", "arguments": {"cmd": "rm -rf /var/backups"}}},
    ]))
    .await;
    d.goto(&app.url("/console/alerts")).await;
    assert!(d.text("table.alerts").await.contains("denied tool calls"));
    assert!(d.text("table.deliveries").await.contains("pending"));
    d.screenshot("alerts").await;
    no_csp_violation(&d.console_log().await, "the rest");
}
