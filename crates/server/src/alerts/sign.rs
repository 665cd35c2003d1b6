//! The webhook signature (docs/alerts.md, "Verifying a delivery"): as
//! Stripe's, HMAC-SHA256 keyed with the destination's secret over
//! `<unix seconds>.<body bytes>`, sent as
//! `X-Agentledger-Signature: t=<unix seconds>,v1=<lowercase hex>`. The
//! timestamp is covered so a receiver can refuse old replays; the body is
//! covered byte for byte, so receivers must verify before parsing.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The header's name.
pub const SIGNATURE_HEADER: &str = "x-agentledger-signature";

/// The signature header's value for `body` sent at `unix` seconds.
pub fn signature(secret: &str, unix: i64, body: &[u8]) -> String {
    format!("t={unix},v1={}", hex::encode(mac(secret, unix, body)))
}

fn mac(secret: &str, unix: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(unix.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Check a received header as a receiver would: the `t` and every `v1` in
/// it; true if one `v1` matches (constant time) and `t` is within
/// `tolerance_secs` of `now_unix`.
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now_unix - t).abs() > tolerance_secs {
        return false;
    }
    let want = mac(secret, t, body);
    sigs.iter()
        .any(|s| subtle::ConstantTimeEq::ct_eq(s.as_slice(), &want[..]).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_round_trip() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test
        let h = signature("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            h,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert!(verify("whsec_test", &h, br#"{"a":1}"#, 1_700_000_100, 300));
        assert!(!verify("whsec_test", &h, br#"{"a":2}"#, 1_700_000_100, 300));
        assert!(!verify(
            "whsec_other",
            &h,
            br#"{"a":1}"#,
            1_700_000_100,
            300
        ));
        assert!(
            !verify("whsec_test", &h, br#"{"a":1}"#, 1_700_001_000, 300),
            "too old"
        );
    }
}
