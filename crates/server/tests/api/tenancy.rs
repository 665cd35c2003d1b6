//! What one project's keys can learn or change of another project: policy
//! sets, search totals and plans, cursors. Each test here failed before the
//! fix it names (issue 13).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn put_policies_with(app: &TestApp, key: &str, text: &str) -> reqwest::Response {
    app.client
        .put(app.url("/api/v1/policies"))
        .bearer_auth(key)
        .json(&json!({ "policies": text }))
        .send()
        .await
        .unwrap()
}

async fn check_with(app: &TestApp, key: &str, session: &str) -> Value {
    let r = app
        .post_with(
            "/api/v1/check",
            &json!({"session_id": session, "agent_id": "a", "tool": "search",
                    "arguments": {"q": "weather"}}),
            key,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Finding 2: an admin of project B replaced the one server-wide set, so a
/// `forbid` of everything made project A's checks deny, and B could read A's
/// policies. Sets now belong to a project.
#[tokio::test]
async fn a_project_admin_sets_only_its_own_policies() {
    let app = spawn_app().await;
    let b_admin = app.new_admin_key("tenant-b").await;
    let forbid_all = "@id(\"b-forbids-all\")\nforbid (principal, action, resource);";
    let r = put_policies_with(&app, &b_admin, forbid_all).await;
    assert_eq!(r.status(), StatusCode::OK);
    let b_list: Value = r.json().await.unwrap();
    assert_eq!(b_list["origin"], "project");

    // Project A (the bootstrap key's) is still judged by the default set.
    let a = check_with(&app, &app.key, "a-sess").await;
    assert_eq!(a["decision"], "allow", "{a}");
    let a_list = app.get_json("/api/v1/policies").await;
    assert_eq!(a_list["origin"], "default");
    assert!(
        !a_list.to_string().contains("b-forbids-all"),
        "A never sees B's policies"
    );
    // B's own checks are denied by B's set.
    let b = check_with(&app, &b_admin, "b-sess").await;
    assert_eq!(b["decision"], "deny", "{b}");

    // A's own set does not reach B either, and both survive a restart.
    let r = put_policies_with(
        &app,
        &app.key,
        "@id(\"a-permits\")\npermit (principal, action, resource);",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let app = app.restart().await;
    let a = check_with(&app, &app.key, "a-sess").await;
    assert_eq!(a["decision"], "allow", "{a}");
    let b = check_with(&app, &b_admin, "b-sess").await;
    assert_eq!(b["decision"], "deny", "{b}");

    // Dropping B's set returns B to the operator's default.
    let r = app
        .client
        .delete(app.url("/api/v1/policies"))
        .bearer_auth(&b_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["origin"], "default");
    let b = check_with(&app, &b_admin, "b-sess").await;
    assert_eq!(b["decision"], "allow", "{b}");
}

/// Finding 2, the side channel: policy-labelled counters in /metrics let a
/// project's admin watch another project's verdicts. /metrics is now the
/// operator's alone, and its policy series name the project.
#[tokio::test]
async fn metrics_reveal_nothing_to_a_project_admin() {
    let app = spawn_app().await;
    let b_admin = app.new_admin_key("tenant-b").await;
    let r = app.get_with("/metrics", &b_admin).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let a = check_with(&app, &app.key, "a-sess").await;
    assert_eq!(a["decision"], "allow");
    let m = app.metrics().await;
    assert!(
        m.contains(r#"agentledger_policy_decisions_total{decision="allow"}"#),
        "{m}"
    );
}

/// Post `n` memory events whose payload holds `word`, in batches of 1,000.
async fn fill(app: &TestApp, key: &str, session: &str, word: &str, n: usize) {
    let mut i = 0;
    while i < n {
        let batch: Vec<Value> = (i..(i + 1000).min(n))
            .map(|j| {
                json!({"session_id": session, "agent_id": "a", "kind": "memory",
                       "payload": {"note": format!("{word} number {j}")}})
            })
            .collect();
        i += batch.len();
        let r = app
            .post_with("/api/v1/events", &json!({ "events": batch }), key)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

/// Finding 4: the full-text plan (and with it the cap on `total`) was chosen
/// by counting matches in every project, so project A's `total_capped` told
/// whether project B used a word more than ~5,000 times. Every decision is
/// now taken over the caller's project alone.
#[tokio::test]
async fn search_totals_depend_on_the_callers_project_only() {
    let app = spawn_app().await;
    let b = app.new_key("tenant-b").await;
    fill(&app, &b, "b-sess", "zebra", 5_001).await;
    fill(&app, &app.key, "a-sess", "zebra", 1_001).await;
    app.wait_for_search().await;
    let a = app.get_json("/api/v1/events?q=zebra&limit=1").await;
    assert_eq!(a["total"], 1_001, "{a}");
    assert_eq!(a["total_capped"], false, "{a}");
    // B sees its own (over 5,000: counted to the full-text cap), none of A's.
    let r = app.get_with("/api/v1/events?q=zebra&limit=1", &b).await;
    let bv: Value = r.json().await.unwrap();
    assert_eq!(bv["total"], 1_000, "{bv}");
    assert_eq!(bv["total_capped"], true, "{bv}");
    // A project's name is never a search term that matches its events.
    let a = app.get_json("/api/v1/events?q=p1&limit=1").await;
    assert_eq!(a["total"], 0, "{a}");
}

/// Finding 5: a 1 KB query of common words ran for seconds and starved
/// other projects' reads. Words per query are bounded, listings are stopped
/// at their time budget (503 with Retry-After, not a long wait).
#[tokio::test]
async fn expensive_searches_are_bounded() {
    let app = spawn_app_with(|c| c.query_budget = std::time::Duration::from_micros(1)).await;
    fill(&app, &app.key, "s", "common", 3_000).await;
    app.wait_for_search().await;
    let many: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
    let r = app
        .get(&format!("/api/v1/events?q={}", many.join("+")))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("distinct words"));
    // Repeating one word is one word.
    let same = vec!["common"; 100].join("+");
    for path in [
        format!("/api/v1/events?q={same}"),
        "/api/v1/events?kind=memory".to_owned(),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "QUERY_TOO_EXPENSIVE", "{body}");
    }
}

/// Finding 13: cursors were `ts.rowid`, so paging revealed how many events
/// the whole server held. A cursor now names the last row of the page by its
/// id, and only the project (and listing) it came from can use it.
#[tokio::test]
async fn cursors_reveal_no_server_counts_and_stay_in_their_project() {
    let app = spawn_app().await;
    let b = app.new_key("tenant-b").await;
    app.ingest(json!([memory("s1", 1), memory("s1", 2), memory("s2", 3)]))
        .await;
    let page = app.get_json("/api/v1/events?limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let last_id = page["events"][1]["id"].as_str().unwrap();
    // The cursor is the last event's id (16 bytes) and nothing else.
    let ulid_bytes = agentledger_core::EventId::parse_any(last_id)
        .unwrap()
        .to_bytes();
    assert_eq!(cursor, format!("c{}", hex::encode(ulid_bytes)));
    let next = app
        .get_json(&format!("/api/v1/events?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next["events"].as_array().unwrap().len(), 1);
    // Another project cannot use it; neither can another listing.
    for (path, key) in [
        (format!("/api/v1/events?cursor={cursor}"), b.as_str()),
        (
            format!("/api/v1/events?session_id=s2&cursor={cursor}"),
            app.key.as_str(),
        ),
        (
            format!("/api/v1/sessions?cursor={cursor}"),
            app.key.as_str(),
        ),
    ] {
        let r = app.get_with(&path, key).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["details"]["path"], "cursor", "{body}");
    }
    let sessions = app.get_json("/api/v1/sessions?limit=1").await;
    let sc = sessions["next_cursor"].as_str().expect("session cursor");
    let r = app
        .get_with(&format!("/api/v1/sessions?cursor={sc}"), &b)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.get(&format!("/api/v1/sessions?cursor={sc}")).await;
    assert_eq!(r.status(), StatusCode::OK);
}
