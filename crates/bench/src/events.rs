//! The benchmark's event shapes.

/// The payload of standard event `i` (what the ledger stores).
pub fn standard_payload(i: u64) -> String {
    let query = "quarterly revenue by region and product line for the enterprise segment, \
        excluding refunds and internal test accounts, grouped by fiscal month with \
        year-over-year deltas and the top ten accounts by growth in each region";
    format!(
        concat!(
            r#"{{"toolName":"search_database","callId":"call_{i:08}","#,
            r#""arguments":{{"query":"{q}","limit":20,"filters":{{"region":"eu-west-1","since":"2026-01-01"}}}}}}"#
        ),
        i = i,
        q = query
    )
}

/// Metadata of every standard event.
pub const STANDARD_METADATA: &str = r#"{"host":"bench-01","attempt":1}"#;

/// A standard event: a tool_call of about 500 bytes as sent on the wire,
/// spread over `sessions` sessions.
pub fn standard_event(i: u64, sessions: u64) -> String {
    format!(
        r#"{{"session_id":"bench-{s}","agent_id":"bench-agent","kind":"tool_call","payload":{p},"metadata":{m}}}"#,
        s = i % sessions,
        p = standard_payload(i),
        m = STANDARD_METADATA
    )
}

/// An AgentLens ingest body with the same standard events (camelCase fields).
pub fn agentlens_batch_body(start: u64, n: u64, sessions: u64) -> String {
    let mut body = String::with_capacity(n as usize * 520 + 16);
    body.push_str(r#"{"events":["#);
    for i in start..start + n {
        if i > start {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sessionId":"bench-{s}","agentId":"bench-agent","eventType":"tool_call","payload":{p},"metadata":{m}}}"#,
            s = i % sessions,
            p = standard_payload(i),
            m = STANDARD_METADATA
        ));
    }
    body.push_str("]}");
    body
}

/// The JSON Schema a Fabraix client would send with the standard payload.
pub const STANDARD_SCHEMA: &str = r#"{"type":"object","properties":{"toolName":{"type":"string"},"callId":{"type":"string","pattern":"^call_[0-9]+$"},"arguments":{"type":"object","properties":{"query":{"type":"string","maxLength":2000},"limit":{"type":"integer","minimum":1,"maximum":100},"filters":{"type":"object"}},"required":["query"]}},"required":["toolName","callId","arguments"]}"#;

/// A Fabraix `/v1/event` body carrying standard event `i` for run `trace`.
pub fn fabraix_event_body(i: u64, trace: &str) -> String {
    serde_json::json!({
        "event_type": "tool",
        "trace_id": trace,
        "timestamp": 1_700_000_000.0 + i as f64,
        "content": standard_payload(i),
        "schema": STANDARD_SCHEMA,
    })
    .to_string()
}

/// A native ingest body holding events `start..start+n`.
pub fn batch_body(start: u64, n: u64, sessions: u64) -> String {
    let mut body = String::with_capacity(n as usize * 520 + 16);
    body.push_str(r#"{"events":["#);
    for i in start..start + n {
        if i > start {
            body.push(',');
        }
        body.push_str(&standard_event(i, sessions));
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_event_is_about_500_bytes_and_valid_json() {
        let e = super::standard_event(7, 100);
        assert!((450..=560).contains(&e.len()), "{}", e.len());
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["kind"], "tool_call");
        let b: serde_json::Value = serde_json::from_str(&super::batch_body(0, 3, 2)).unwrap();
        assert_eq!(b["events"].as_array().unwrap().len(), 3);
        let b: serde_json::Value =
            serde_json::from_str(&super::agentlens_batch_body(0, 3, 2)).unwrap();
        assert_eq!(b["events"][2]["eventType"], "tool_call");
        let f: serde_json::Value =
            serde_json::from_str(&super::fabraix_event_body(4, "t")).unwrap();
        assert_eq!(f["content"].as_str().unwrap(), super::standard_payload(4));
    }
}
