//! Erasure that keeps the proof (issue 17): the admin route and
//! `agentledger erase` remove a payload, keep its digest, and append an
//! `event_erased` record; the chain, the log and every verifier still accept
//! the session, and refuse an erasure the chain does not record.

use reqwest::StatusCode;
use serde_json::{Value, json};

use agentledger_tlog::hash::leaf_hash;
use agentledger_tlog::proof::TlogProof;

use crate::helpers::*;
use crate::log::{acked, checkpoint_of_size, vkey};

fn events() -> Value {
    json!([
        {"session_id": "e", "agent_id": "my-agent", "kind": "tool_call",
         "payload": {"toolName": "lookup", "callId": "c1", "arguments": {"ssn": "zebrafinch 078-05-1120"}}},
        memory("e", 1),
        memory("e", 2),
    ])
}

/// Verify an export file with the CLI and with scripts/verify_export.py.
fn verify_offline(app: &TestApp, file: &std::path::Path) -> (bool, String, bool, String) {
    let out = app.cli(&["verify", "--file", file.to_str().expect("utf8")]);
    let py = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/verify_export.py"
        ))
        .arg(file)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        py.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&py.stdout),
            String::from_utf8_lossy(&py.stderr)
        ),
    )
}

async fn inclusion_verifies(
    app: &TestApp,
    id: &str,
    entry: &[u8],
    verifier: &agentledger_tlog::note::Ed25519Verifier,
) {
    let r = app
        .get(&format!("/log/proof/inclusion/{id}?format=text"))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "proof of {id}");
    let proof = TlogProof::parse(&r.bytes().await.expect("body")).expect("tlog-proof");
    proof
        .verify(&leaf_hash(entry), &[verifier])
        .expect("inclusion verifies");
}

#[tokio::test]
async fn erasure_keeps_the_proof_over_http() {
    let app = spawn_app().await;
    let ack = app.ingest(events()).await;
    let evs = acked(&ack);
    let erased_id = evs[0].0.clone();
    app.wait_for_search().await;
    let found = app.get_json("/api/v1/events?q=zebrafinch").await;
    assert_eq!(found["events"].as_array().expect("events").len(), 1);
    let before = app.get_json(&format!("/api/v1/events/{erased_id}")).await;
    let path = format!("/api/v1/events/{erased_id}/erase");
    let why = json!({"reason": "personal data (GDPR art. 17)"});

    // Admin keys only; another project's event is not found.
    let reader = app.new_key("default").await;
    let r = app.post_with(&path, &why, &reader).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let other = app.new_admin_key("other").await;
    let r = app.post_with(&path, &why, &other).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app.post(&path, &json!({"reason": ""})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A client cannot send an erasure record of its own.
    let r = app
        .post_events(json!([{"session_id": "e", "agent_id": "my-agent", "kind": "event_erased", "payload": {}}]))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = app.post(&path, &why).await;
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["seq"], 1);
    assert_eq!(done["erased"]["record_seq"], 4);
    assert!(
        done["erased"]["by"]
            .as_str()
            .expect("by")
            .starts_with("key:")
    );
    // Erasing twice changes nothing: 409, naming the first erasure.
    let r = app.post(&path, &why).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let text = r.text().await.expect("body");
    assert!(text.contains("already erased"), "{text}");

    // Reads show it erased, digest and hash kept.
    let after = app.get_json(&format!("/api/v1/events/{erased_id}")).await;
    assert_eq!(after["payload"], Value::Null);
    assert_eq!(after["payload_sha256"], before["payload_sha256"]);
    assert_eq!(after["hash"], before["hash"]);
    assert_eq!(after["erased"], done["erased"]);
    let record = app
        .get_json("/api/v1/events?session_id=e&kind=event_erased")
        .await;
    let record = &record["events"][0];
    assert_eq!(record["payload"]["erasedSeq"], 1);
    assert_eq!(record["payload"]["reason"], "personal data (GDPR art. 17)");
    // The tool's name is kept (the policy state counts calls per tool), its
    // arguments are not.
    assert_eq!(record["payload"]["tool"], "lookup");
    assert!(!record.to_string().contains("zebrafinch"));
    assert!(!record.to_string().contains("078-05"));

    // The chain verifies; search no longer finds the erased word.
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["events"], 4);
    for _ in 0..2 {
        let q = app.get_json("/api/v1/events?q=zebrafinch").await;
        assert!(q["events"].as_array().expect("events").is_empty(), "{q}");
        assert_eq!(q["total"], 0);
        app.wait_for_search().await;
    }

    // The log: the erased event's leaf (its chain hash is unchanged) and the
    // session's last event, the record, are proved in a signed checkpoint.
    let verifier = vkey(&app, "default");
    checkpoint_of_size(&app, &app.key, 4, &verifier).await;
    inclusion_verifies(&app, &erased_id, &evs[0].1, &verifier).await;
    let record_leaf = crate::log::leaf("e", 4, record["hash"].as_str().expect("hash"));
    inclusion_verifies(
        &app,
        record["id"].as_str().expect("id"),
        &record_leaf,
        &verifier,
    )
    .await;

    // The export shows the erasure and verifies offline, with both verifiers.
    let export = app
        .get("/api/v1/sessions/e/export")
        .await
        .text()
        .await
        .expect("body");
    assert!(!export.contains("zebrafinch"), "{export}");
    let first: Value = serde_json::from_str(export.lines().next().expect("line")).expect("json");
    assert_eq!(first["payload"], Value::Null);
    assert_eq!(first["payload_sha256"], before["payload_sha256"]);
    assert_eq!(first["erased"], done["erased"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("e.jsonl");
    std::fs::write(&file, &export).expect("write");
    let (ok, text, py_ok, py_text) = verify_offline(&app, &file);
    assert!(ok, "{text}");
    assert!(py_ok, "{py_text}");
    // Its log proof line still proves the session in the signed log (the leaf holds the
    // chain hash, not the payload), with both verifiers.
    let key = verifier.to_vkey();
    let out = app.cli(&[
        "verify",
        "--file",
        file.to_str().expect("utf8"),
        "--log-key",
        &key,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK default/e: seq"),
        "{text}"
    );
    let py = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/verify_export.py"
        ))
        .arg(&file)
        .args(["--log-key", &key])
        .output()
        .expect("python3 runs");
    let py_text = String::from_utf8_lossy(&py.stdout);
    assert!(
        py.status.success() && py_text.contains("OK default/e: seq"),
        "{py_text}"
    );

    // An export whose erasure the chain does not record is refused: the
    // record dropped (and the head with it), or who erased it rewritten.
    let lines: Vec<&str> = export.lines().collect();
    let cases = [
        (lines[..3].join("\n"), "no event_erased record"),
        (
            export.replacen(
                done["erased"]["by"].as_str().expect("by"),
                "key:someone-else",
                1,
            ),
            "does not match",
        ),
    ];
    for (forged, why) in cases {
        std::fs::write(&file, format!("{forged}\n")).expect("write");
        let (ok, text, py_ok, py_text) = verify_offline(&app, &file);
        assert!(!ok && text.contains(why), "{text}");
        assert!(!py_ok && py_text.contains(why), "{py_text}");
    }
}

/// In the database: a row marked erased without a chained record, or a
/// tampered payload of an event that is not erased, still fails verify.
#[tokio::test]
async fn an_erasure_the_chain_does_not_record_fails_verify() {
    let app = spawn_app().await;
    let ack = app.ingest(events()).await;
    let id = acked(&ack)[0].0.clone();
    let r = app
        .post(
            &format!("/api/v1/events/{id}/erase"),
            &json!({"reason": "r"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get_json("/api/v1/sessions/e/verify").await["valid"],
        true
    );
    // Seq 2 "erased" by editing its row: no record names it.
    tamper(
        &app.db,
        "UPDATE events SET payload = '', erased_at = 1, erased_by = 'key:x', erasure_seq = 5 \
         WHERE seq = 2",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["first_invalid_seq"], 2, "{v}");
    // The usage columns of the erased event are checked against its record.
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"n\":1}', erased_at = NULL, erased_by = NULL, \
         erasure_seq = NULL WHERE seq = 2",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    tamper(
        &app.db,
        "UPDATE events SET output_tokens = 99 WHERE seq = 1",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], false, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .expect("reason")
            .contains("erasure record"),
        "{v}"
    );
    tamper(
        &app.db,
        "UPDATE events SET output_tokens = NULL WHERE seq = 1",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    // An erased row whose payload column still holds bytes: the erasure
    // left them behind, and verify says so (the export shows them).
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"left\":\"behind\"}' WHERE seq = 1",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(
        (&v["valid"], &v["first_invalid_seq"], &v["reason"]),
        (
            &json!(false),
            &json!(1),
            &json!("an erased event still holds a payload")
        ),
        "{v}"
    );
    let export = app.get_text("/api/v1/sessions/e/export").await;
    assert!(
        export.contains(r#""payload":{"left":"behind"}"#),
        "{export}"
    );
    tamper(&app.db, "UPDATE events SET payload = '' WHERE seq = 1");
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    // A tampered payload of an event that is not erased fails as before.
    tamper(
        &app.db,
        "UPDATE events SET payload = '{\"n\":7}' WHERE seq = 3",
    );
    let v = app.get_json("/api/v1/sessions/e/verify").await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["first_invalid_seq"], 3, "{v}");
}

/// `agentledger erase` on the database: the record names `cli:<OS user>`,
/// verify on the database passes, the export shows the erasure.
#[tokio::test]
async fn the_cli_erases_an_event() {
    let app = spawn_app().await;
    let ack = app.ingest(events()).await;
    let id = acked(&ack)[0].0.clone();
    let out = app.cli(&["erase", "--event", &id, "--reason", "leaked secret"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 4"));
    let again = app.cli(&["erase", "--event", &id, "--reason", "leaked secret"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already erased"));
    let missing = app.cli(&[
        "erase",
        "--project",
        "nope",
        "--event",
        &id,
        "--reason",
        "x",
    ]);
    assert!(!missing.status.success());
    let verify = app.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let export = app.cli(&["export"]);
    let text = String::from_utf8(export.stdout).expect("utf8");
    assert!(!text.contains("zebrafinch"));
    let first: Value = serde_json::from_str(text.lines().next().expect("line")).expect("json");
    let by = first["erased"]["by"].as_str().expect("by");
    assert!(by.starts_with("cli:"), "{by}");
    let ev = app.get_json(&format!("/api/v1/events/{id}")).await;
    assert_eq!(ev["erased"]["by"], by);
}

/// A reply kept under an `Idempotency-Key` that echoed the payload (Realm's create reply does,
/// as `data`) no longer holds it once the event is erased: a retry replays the reply with
/// `data: null`, as a read of the event now shows it, and the database's kept replies hold no
/// trace of the payload.
#[tokio::test]
async fn erasure_reaches_replies_kept_under_idempotency_keys() {
    let app = spawn_app().await;
    let body = json!({"type": "tool_call",
        "data": {"tool_name": "lookup", "tool_input": {"ssn": "zebrafinch 078-05-1120"}}});
    let send = || {
        app.client
            .post(app.url("/v1/sessions/rs/events"))
            .header("x-api-key", &app.key)
            .header("idempotency-key", "create-1")
            .json(&body)
            .send()
    };
    let first = send().await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["data"]["tool_input"]["ssn"], "zebrafinch 078-05-1120");
    let prefixed = first["id"].as_str().expect("id").to_owned();
    let id = prefixed.strip_prefix("event_").expect("event_ id");
    let r = app
        .post(
            &format!("/api/v1/events/{id}/erase"),
            &json!({"reason": "personal data"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let again = send().await.expect("send");
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["data"], Value::Null, "{again}");
    let read = app.get_json(&format!("/v1/events/{prefixed}")).await;
    assert_eq!(read["data"], Value::Null, "{read}");
    let conn = rusqlite::Connection::open(&app.db).expect("open");
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM idempotency_keys WHERE instr(body, 'zebrafinch') > 0",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0);
    // The API description says what such a retry may answer.
    let doc = app.get_json("/openapi.json").await;
    let create = &doc["paths"]["/v1/sessions/{session_id}/events"]["post"]["responses"];
    assert!(
        create["410"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("REPLY_ERASED")),
        "{create}"
    );
}
