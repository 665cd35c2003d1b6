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
