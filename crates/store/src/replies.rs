//! Replies kept under idempotency keys that echo a payload since erased
//! (docs/transparency.md, "Erasure that keeps the proof"). A kept reply is
//! replayed byte for byte on a retry, so a reply that carried the payload
//! (the Realm dialect's create replies do: `data`) would hand the erased
//! content back until its key expired. The erasing transaction rewrites each
//! such reply: the reply as a read of the event now shows it, its payload
//! `null`; or, where that cannot be done without breaking the reply, an
//! answer saying it was erased.

use memchr::memmem;

/// A kept reply's new status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scrubbed {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What to keep instead of `body` (status `status`, `content_type`), a reply
/// that names the erased event (`event_id`, its ULID text, in upper or lower
/// case: dialects write it either way, Realm as `event_` + lower case) and holds its
/// `payload` bytes as stored: `None` when it does not hold both (nothing of
/// the payload to remove).
///
/// Every occurrence of the payload's JSON text becomes `null` when the reply
/// is JSON, the payload an object or an array, and the result still JSON
/// (the payload was a value of it: what a read of the erased event answers).
/// Otherwise (another content type, a scalar payload whose text could sit in
/// a string or a number) the whole reply is replaced by a `410`
/// saying so: the request was carried out, and a retry still does not repeat
/// it.
pub(crate) fn scrub(
    status: u16,
    content_type: &str,
    body: &[u8],
    event_id: &str,
    payload: &str,
) -> Option<Scrubbed> {
    let payload = payload.as_bytes();
    let named = contains(body, event_id.to_ascii_uppercase().as_bytes())
        || contains(body, event_id.to_ascii_lowercase().as_bytes());
    if payload.is_empty() || !named || !contains(body, payload) {
        return None;
    }
    let json = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    // An object's or an array's text cannot sit inside a JSON string (its
    // quotes would be escaped there): each occurrence is a value of the reply.
    let structured = matches!(payload.first(), Some(b'{' | b'['));
    let replaced = replace_all(body, payload, b"null");
    if json && structured && serde_json::from_slice::<serde::de::IgnoredAny>(&replaced).is_ok() {
        return Some(Scrubbed {
            status,
            content_type: content_type.to_owned(),
            body: replaced,
        });
    }
    // The API's error body (dialects' native `ErrorBody`).
    let gone = serde_json::json!({"error": {
        "message": format!(
            "this request was carried out; the reply kept for its idempotency key held the \
             payload of event {event_id}, which has since been erased, so it is no longer kept"
        ),
        "type": "gone",
        "code": "REPLY_ERASED",
        "details": {"event_id": event_id},
    }});
    Some(Scrubbed {
        status: 410,
        content_type: "application/json".into(),
        body: gone.to_string().into_bytes(),
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memmem::find(hay, needle).is_some()
}

/// `hay` with every (non-overlapping) occurrence of `needle` replaced.
fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut from = 0;
    for at in memmem::find_iter(hay, needle) {
        out.extend_from_slice(&hay[from..at]);
        out.extend_from_slice(with);
        from = at + needle.len();
    }
    out.extend_from_slice(&hay[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01KBWZ2X8F3YQ4T7N9V6M5R2CH";

    #[test]
    fn a_json_reply_keeps_its_shape_with_the_payload_null() {
        let payload = r#"{"ssn":"078-05-1120"}"#;
        let id = ID.to_ascii_lowercase();
        let body = format!(r#"{{"id":"event_{id}","data":{payload},"again":[{payload}]}}"#);
        let s = scrub(201, "application/json", body.as_bytes(), ID, payload).expect("scrubbed");
        assert_eq!(s.status, 201);
        assert_eq!(
            String::from_utf8(s.body).expect("utf8"),
            format!(r#"{{"id":"event_{id}","data":null,"again":[null]}}"#)
        );
    }

    #[test]
    fn a_reply_that_would_break_is_replaced_by_a_410() {
        // The payload's text inside a string: nulling it would leave a
        // reply that no longer says what it said; and a text reply.
        let payload = "1120";
        let body = format!(r#"{{"id":"{ID}","note":"ssn 078-05-{payload}"}}"#);
        let s = scrub(201, "application/json", body.as_bytes(), ID, payload).expect("scrubbed");
        assert_eq!(s.status, 410);
        let text = String::from_utf8(s.body).expect("utf8");
        assert!(
            !text.contains(payload) && text.contains("REPLY_ERASED") && text.contains(ID),
            "{text}"
        );
        let s = scrub(200, "text/plain", format!("{ID} {{}}").as_bytes(), ID, "{}").expect("text");
        assert_eq!(s.status, 410);
    }

    #[test]
    fn a_reply_without_the_event_or_its_payload_is_left_alone() {
        let json = |body: &str, payload: &str| {
            scrub(201, "application/json", body.as_bytes(), ID, payload)
        };
        let payload = r#"{"n":1}"#;
        assert_eq!(json(r#"{"id":"other","data":{"n":1}}"#, payload), None);
        assert_eq!(json(&format!(r#"{{"id":"{ID}"}}"#), payload), None);
        assert_eq!(json(&format!(r#"{{"id":"{ID}","data":{{}}}}"#), ""), None);
    }
}
