//! One ledger: events written through any dialect are read through every query API.

use serde_json::{Value, json};

use crate::helpers::*;

const AGENT: &str = "agt_cross";

#[tokio::test]
async fn all_four_dialects_write_one_ledger_that_every_api_reads() {
    let app = spawn_app().await;
    // Fabraix: register a run for the agent, log one event.
    let mut reg = fixture_json("fabraix", "register_request.json");
    reg["agent_id"] = AGENT.into();
    let trace: Value = app
        .post("/v1/register-agent-run", &reg)
        .await
        .json()
        .await
        .unwrap();
    let trace = trace["trace_id"].as_str().unwrap().to_owned();
    let fab: Value = app
        .post(
            "/v1/event",
            &serde_json::from_str(
                &fixture("fabraix", "event_user.json").replace("TRACE_ID", &trace),
            )
            .unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    // AgentLens and native write to the same session.
    let al: Value = app
        .post(
            "/api/events",
            &json!({"events": [{"sessionId": trace, "agentId": AGENT, "eventType": "tool_call",
            "payload": {"toolName": "search", "callId": "c1", "arguments": {}}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let nat = app.ingest(json!([{"session_id": trace, "agent_id": AGENT, "kind": "decision", "payload": {"chosen": "escalate"}}])).await;
    // Secureagentics with the same trace; Realm into the same session (inheriting its agent).
    let sa: Value = app
        .post(
            &format!("/v1/agents/{AGENT}/events"),
            &json!({"type": "completion", "payload": {"output": "done"}, "trace_id": trace}),
        )
        .await
        .json()
        .await
        .unwrap();
    let realm: Value = app
        .post(
            &format!("/v1/sessions/{trace}/events"),
            &fixture_json("realm", "decision.json"),
        )
        .await
        .json()
        .await
        .unwrap();

    let ids = [
        fab["event_id"].as_str().unwrap(),
        al["events"][0]["id"].as_str().unwrap(),
        nat["events"][0]["id"].as_str().unwrap(),
        sa["id"].as_str().unwrap(),
        realm["id"].as_str().unwrap(),
    ];
    // Every get-by-id route accepts every rendering of every id.
    for id in ids {
        for route in ["/api/v1/events/", "/api/events/", "/v1/events/"] {
            let r = app.get(&format!("{route}{id}")).await;
            assert_eq!(r.status(), reqwest::StatusCode::OK, "{route}{id}");
        }
    }
    // Every query API sees all six events of the session (register + five).
    let native = app
        .get_json(&format!("/api/v1/events?session_id={trace}&order=asc"))
        .await;
    let dialects: Vec<&str> = native["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["dialect"].as_str().unwrap())
        .collect();
    assert_eq!(
        dialects,
        vec![
            "fabraix",
            "fabraix",
            "agentlens",
            "native",
            "secureagentics",
            "realm"
        ]
    );
    let sources: Vec<&str> = native["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        vec![
            "register-agent-run",
            "user",
            "tool_call",
            "decision",
            "completion",
            "decision"
        ]
    );
    assert!(
        native["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["agent_id"] == AGENT)
    );
    let agentlens = app
        .get_json(&format!("/api/events?sessionId={trace}"))
        .await;
    assert_eq!(agentlens["total"], 6);
    let secure = app.get_json(&format!("/v1/agents/{AGENT}/events")).await;
    assert_eq!(secure["total"], 6);
    let types: std::collections::BTreeSet<&str> = secure["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["completion", "custom", "tool_call"].into_iter().collect(),
        "kinds shown as Secureagentics types"
    );
    assert!(
        secure["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["trace_id"] == trace.as_str())
    );
    // One chain across all of them.
    let v = app
        .get_json(&format!("/api/v1/sessions/{trace}/verify"))
        .await;
    assert_eq!(
        (v["valid"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(6)),
        "{v}"
    );
}
