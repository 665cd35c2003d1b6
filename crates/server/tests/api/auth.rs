use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/api/v1/events"),
    ("POST", "/api/v1/events"),
    ("GET", "/api/v1/events/01HXYZ00000000000000000000"),
    ("GET", "/api/v1/sessions"),
    ("POST", "/api/v1/sessions"),
    ("GET", "/api/v1/sessions/s"),
    ("GET", "/api/v1/sessions/s/verify"),
    ("GET", "/api/v1/sessions/s/export"),
    ("GET", "/metrics"),
    ("POST", "/v1/register-agent-run"),
    ("POST", "/v1/event"),
    ("POST", "/api/events"),
    ("GET", "/api/events"),
    ("GET", "/api/events/01HXYZ00000000000000000000"),
    ("POST", "/v1/agents/agt_x/events"),
    ("POST", "/v1/agents/agt_x/events/batch"),
    ("GET", "/v1/agents/agt_x/events"),
    ("POST", "/v1/sessions/s/events"),
    ("POST", "/v1/sessions/s/events/batch"),
    ("GET", "/v1/events/event_01hxyz00000000000000000000"),
];

#[tokio::test]
async fn every_route_but_health_needs_a_valid_key() {
    let app = spawn_app().await;
    for (method, path) in PROTECTED {
        for key in [None, Some("wrong-key")] {
            let mut req = app.client.request(method.parse().unwrap(), app.url(path));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let r = req
                .json(&json!({"events": [memory("s", 1)]}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {key:?}"
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "authentication_error");
        }
    }
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.event_total().await, 0);
}

#[tokio::test]
async fn both_key_headers_work() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/events",
        "/api/events",
        "/v1/agents/agt_x/events",
        "/api/v1/sessions",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .header("x-api-key", &app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "x-api-key on {path}");
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "bearer on {path}");
    }
    let r = app
        .client
        .post(app.url("/v1/sessions/s/events"))
        .bearer_auth(&app.key)
        .json(&json!({"type": "custom", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "bearer on a Realm write");
}

#[tokio::test]
async fn another_projects_key_sees_nothing_and_cannot_write_into_it() {
    let app = spawn_app().await;
    let body = app.ingest(json!([tool_call("private", "c1")])).await;
    let id = body["events"][0]["id"].as_str().unwrap().to_owned();
    let other = app.new_key("other-team").await;
    app.wait_for_search().await;
    let own = app.get_json("/api/v1/events?q=search_database").await;
    assert_eq!(own["total"], 1, "the owner finds it");

    for path in [
        format!("/api/v1/events/{id}"),
        format!("/api/events/{id}"),
        format!("/v1/events/{id}"),
        "/api/v1/sessions/private".into(),
        "/api/v1/sessions/private/verify".into(),
        "/api/v1/sessions/private/export".into(),
    ] {
        assert_eq!(
            app.get_with(&path, &other).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for listing in [
        "/api/v1/events",
        "/api/v1/events?q=search_database",
        "/api/v1/sessions",
        "/api/events",
        "/api/events?search=search_database&agentId=my-agent",
    ] {
        let listed: serde_json::Value = app.get_with(listing, &other).await.json().await.unwrap();
        assert_eq!(listed["total"], 0, "{listing}");
    }
    // Another project cannot log into this project's Fabraix run.
    let run: serde_json::Value = app
        .post(
            "/v1/register-agent-run",
            &fixture_json("fabraix", "register_request.json"),
        )
        .await
        .json()
        .await
        .unwrap();
    let trace = run["trace_id"].as_str().unwrap();
    let ev: serde_json::Value =
        serde_json::from_str(&fixture("fabraix", "event_user.json").replace("TRACE_ID", trace))
            .unwrap();
    assert_eq!(
        app.post_with("/v1/event", &ev, &other).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.post("/v1/event", &ev).await.status(), StatusCode::OK);

    // Writing the same session id from the other project makes a separate session.
    let r = app
        .post_with(
            "/api/v1/events",
            &json!({"events": [memory("private", 1)]}),
            &other,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mine = app.get_json("/api/v1/sessions/private").await;
    assert_eq!(mine["event_count"], 1, "the owner's chain is untouched");
    assert_eq!(
        app.get_json("/api/v1/sessions/private/verify").await["valid"],
        true
    );
}

#[tokio::test]
async fn revoked_keys_stop_working() {
    let app = spawn_app().await;
    let key = app.new_key("default").await;
    assert_eq!(
        app.get_with("/api/v1/events", &key).await.status(),
        StatusCode::OK
    );
    let list = String::from_utf8(app.cli(&["keys", "list"]).stdout).unwrap();
    assert!(!list.contains(&key), "listing never shows a key");
    let prefix: String = key.chars().take(7).collect();
    let id = list
        .lines()
        .find(|l| l.contains(&prefix) && l.contains("cli"))
        .and_then(|l| l.split_whitespace().next())
        .expect("key listed")
        .to_owned();
    let out = app.cli(&["keys", "revoke", &id]);
    assert!(out.status.success());
    // The running server reuses a verified key for at most AUTH_CACHE_TTL (1 s).
    let revoked_at = std::time::Instant::now();
    loop {
        let status = app.get_with("/api/v1/events", &key).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(3),
            "revoked key still accepted after 3 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.get_with("/api/v1/events", &key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !app.cli(&["keys", "revoke", &id]).status.success(),
        "revoking twice fails"
    );
}

#[tokio::test]
async fn metrics_need_the_operator_token_not_a_project_key() {
    let app = spawn_app().await;
    let plain = app.new_key("default").await;
    let other_admin = app.new_admin_key("other").await;
    for key in [&plain, &app.key, &other_admin] {
        let r = app.get_with("/metrics", key).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a project's key");
        assert!(r.text().await.unwrap().contains("operator token"));
    }
    assert_eq!(
        app.get_with("/metrics", "al_not_a_token_at_all_not_a_token_at_all")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_with("/metrics", &app.operator).await.status(),
        StatusCode::OK
    );
    // Without a configured token nobody reads server-wide metrics.
    let closed = spawn_app_with(|c| c.operator_token = None).await;
    assert_eq!(closed.get("/metrics").await.status(), StatusCode::FORBIDDEN);
}

/// Finding 12 of issue 13: with two Authorization (or two x-api-key)
/// headers the first was used silently; a proxy may read the other one.
#[tokio::test]
async fn a_repeated_key_header_is_refused_as_ambiguous() {
    let app = spawn_app().await;
    let other = app.new_key("other").await;
    for (name, a, b) in [
        (
            "authorization",
            format!("Bearer {}", app.key),
            format!("Bearer {other}"),
        ),
        (
            "authorization",
            format!("Bearer {}", app.key),
            format!("Bearer {}", app.key),
        ),
        ("x-api-key", app.key.clone(), other.clone()),
    ] {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(name, a.parse().unwrap());
        headers.append(name, b.parse().unwrap());
        let r = app
            .client
            .get(app.url("/api/v1/events"))
            .headers(headers)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        let text = r.text().await.unwrap();
        assert!(text.contains("repeated"), "{text}");
        assert!(!text.contains(&app.key) && !text.contains(&other));
    }
}
