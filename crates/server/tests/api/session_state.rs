//! The policy checkpoint's session state follows the ledger: it is the fold
//! of the committed events, judged in commit order. A request the store
//! refused does not count; concurrent requests to one session are judged in
//! the order they commit.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use agentledger_store::sqlite::Faults;

use crate::helpers::*;

/// At most `n` shell calls per session.
fn at_most(n: u32) -> String {
    format!(
        r#"@id("shell-limit")
@reason("at most {n} shell calls per session")
forbid (principal, action == Action::"tool_call", resource == Tool::"shell")
when {{ context.session.this_tool_calls >= {n} }};"#
    )
}

async fn put_policies(app: &TestApp, text: &str) {
    let r = app
        .client
        .put(app.url("/api/v1/policies"))
        .bearer_auth(&app.key)
        .json(&json!({ "policies": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

fn shell(session: &str, n: usize) -> Value {
    json!({"session_id": session, "agent_id": "my-agent", "kind": "tool_call",
           "payload": {"toolName": "shell", "callId": format!("c{n}"), "arguments": {"cmd": "ls"}}})
}

/// The decisions of a session's events, in seq order.
async fn decisions(app: &TestApp, session: &str) -> Vec<String> {
    let page = app
        .get_json(&format!(
            "/api/v1/events?session_id={session}&limit=500&order=asc"
        ))
        .await;
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["verdict"]["decision"]
                .as_str()
                .unwrap_or("none")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_request_whose_commit_failed_does_not_count_and_its_retry_counts_once() {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_with(move |c| c.faults = Some(f)).await;
    put_policies(&app, &at_most(3)).await;
    app.ingest(json!([shell("s", 1), shell("s", 2)])).await;

    // The third call's COMMIT fails twice (as a failed fsync would); the
    // client retries through the failures.
    faults.fail_next_commits(2);
    for _ in 0..2 {
        let r = app.post_events(json!([shell("s", 3)])).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    app.ingest(json!([shell("s", 3)])).await;
    // The fourth is the first over the limit.
    app.ingest(json!([shell("s", 4)])).await;
    assert_eq!(
        decisions(&app, "s").await,
        ["allow", "allow", "allow", "deny"]
    );

    // The same after a restart (the state is rebuilt from the ledger).
    let app = app.restart().await;
    app.ingest(json!([shell("s", 5)])).await;
    assert_eq!(
        decisions(&app, "s").await,
        ["allow", "allow", "allow", "deny", "deny"]
    );
}

#[tokio::test]
async fn a_request_refused_by_back_pressure_does_not_count() {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_with(move |c| c.faults = Some(f)).await;
    put_policies(&app, &at_most(1)).await;
    // A failed write inside the transaction (the request's savepoint is
    // rolled back, the rest of the group commits).
    faults.fail_next_writes(1);
    let r = app.post_events(json!([shell("w", 1)])).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    app.ingest(json!([shell("w", 1)])).await;
    app.ingest(json!([shell("w", 2)])).await;
    assert_eq!(decisions(&app, "w").await, ["allow", "deny"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_to_one_session_never_allow_n_plus_one_nor_deny_the_nth() {
    const N: usize = 5;
    const REQUESTS: usize = 40;
    let app = Arc::new(spawn_app().await);
    put_policies(&app, &at_most(N as u32)).await;
    for round in 0..3 {
        let session = format!("race-{round}");
        let mut tasks = Vec::new();
        for i in 0..REQUESTS {
            let app = app.clone();
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                let r = app.post_events(json!([shell(&session, i)])).await;
                assert_eq!(r.status(), StatusCode::CREATED);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let d = decisions(&app, &session).await;
        assert_eq!(d.len(), REQUESTS);
        // In commit (seq) order: exactly the first N allowed.
        let expected: Vec<&str> = (0..REQUESTS)
            .map(|i| if i < N { "allow" } else { "deny" })
            .collect();
        assert_eq!(d, expected, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_action_checks_are_judged_in_commit_order() {
    // Checks do not count as calls, but what they reveal does: a secret in
    // one check makes every later check of send_email deny.
    let app = Arc::new(spawn_app().await);
    put_policies(
        &app,
        r#"@id("no-email-after-secret")
forbid (principal, action == Action::"tool_call", resource == Tool::"send_email")
when { context.session.secret_seen };"#,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let args = if i == 7 {
                json!({"to": "x@example.com", "body": "ghp_R8x2LmQ9vT4kZ7wN1pY6sD3fH5jB0cA2eG4i"})
            } else {
                json!({"to": "x@example.com", "body": "hello"})
            };
            let r = app
                .post(
                    "/api/v1/check",
                    &json!({"session_id": "chk", "agent_id": "a", "tool": "send_email",
                            "arguments": args}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            let b: Value = r.json().await.unwrap();
            (
                b["seq"].as_u64().unwrap(),
                i == 7,
                b["decision"].as_str().unwrap().to_owned(),
            )
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let secret_seq = answers.iter().find(|a| a.1).expect("the secret's check").0;
    // The check carrying the secret is judged before its finding is folded
    // in; every check committed after it is denied, none before it.
    for (seq, secret, decision) in &answers {
        let after = *seq > secret_seq;
        assert_eq!(
            decision == "deny",
            after,
            "seq {seq} (secret: {secret}, the secret at {secret_seq}): {answers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_commits_among_concurrent_requests_leave_exactly_n_allowed() {
    // Requests queued behind a failed one were judged against a state that
    // included it: they must be judged again, not committed on that state.
    const N: usize = 4;
    const REQUESTS: usize = 30;
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = Arc::new(spawn_app_with(move |c| c.faults = Some(f)).await);
    put_policies(&app, &at_most(N as u32)).await;
    for round in 0..3 {
        let session = format!("fail-{round}");
        faults.fail_next_commits(2);
        faults.fail_next_writes(2);
        let mut tasks = Vec::new();
        for i in 0..REQUESTS {
            let app = app.clone();
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                // A client retrying through 5xx until it is acknowledged.
                for _ in 0..20 {
                    let r = app.post_events(json!([shell(&session, i)])).await;
                    if r.status() == StatusCode::CREATED {
                        return;
                    }
                    assert!(r.status().is_server_error(), "{}", r.status());
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                panic!("never acknowledged");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let d = decisions(&app, &session).await;
        let expected: Vec<&str> = (0..REQUESTS)
            .map(|i| if i < N { "allow" } else { "deny" })
            .collect();
        assert_eq!(d, expected, "round {round}");
        let v = app
            .get_json(&format!("/api/v1/sessions/{session}/verify"))
            .await;
        assert_eq!(v["valid"], true, "{v}");
    }
}

#[tokio::test]
async fn an_erased_call_still_counts_after_a_restart() {
    // Erasing a call's payload (personal data in its arguments) does not
    // give the agent its call back: the erasure record keeps the tool name,
    // so the state rebuilt after a restart counts it as the kept one did.
    let app = spawn_app().await;
    put_policies(&app, &at_most(3)).await;
    let ack = app.ingest(json!([shell("s", 1), shell("s", 2)])).await;
    let first = ack["events"][0]["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            &format!("/api/v1/events/{first}/erase"),
            &json!({"reason": "personal data"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let record = app
        .get_json("/api/v1/events?session_id=s&kind=event_erased")
        .await;
    assert_eq!(record["events"][0]["payload"]["tool"], "shell");
    // Kept in memory: the third call is the last allowed (the record is not
    // counted a second time).
    app.ingest(json!([shell("s", 3)])).await;
    assert_eq!(
        decisions(&app, "s").await,
        ["allow", "allow", "none", "allow"]
    );
    // Rebuilt from the ledger, where the first call's payload is gone.
    let app = app.restart().await;
    app.ingest(json!([shell("s", 4)])).await;
    assert_eq!(
        decisions(&app, "s").await,
        ["allow", "allow", "none", "allow", "deny"]
    );
}
