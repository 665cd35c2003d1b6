//! Delivers the outbox: at least once, every attempt's outcome kept in the
//! database (so a restart or SIGKILL resumes where it was), exponential
//! backoff with jitter, at most `per_destination` attempts in flight per
//! destination (a destination that is down holds only its own slots; others
//! and ingest go on), dead-lettered (`failed`) after `max_attempts`.
//!
//! A delivery is claimed before its attempt by moving its due time past the
//! attempt's timeout (a lease): no other pass or node takes it meanwhile,
//! and if this process dies mid-attempt the delivery is due again when the
//! lease ends. Receivers can therefore see a delivery twice; each carries
//! its id in `X-Agentledger-Delivery` (the same on every attempt) to drop
//! duplicates by.
//!
//! Outbound requests go only to the URL an admin configured: redirects are
//! not followed, no proxy from the environment is used (see [`client`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use agentledger_core::Micros;
use agentledger_store::EventStore;
use agentledger_store::alerts::{
    Alert, AttemptResult, Delivery, Destination, DestinationKind, Transition,
};

use super::{AlertConfig, Alerting};

/// Deliveries looked at per pass.
const BATCH: u32 = 200;
/// Longest error text kept per attempt.
const MAX_ERROR: usize = 300;

pub async fn run(alerting: Arc<Alerting>, store: Arc<dyn EventStore>) {
    let client = match client(&alerting.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts: no HTTP client; nothing will be delivered");
            return;
        }
    };
    let slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
    let mut stop = alerting.stopping();
    loop {
        if Alerting::pause(&alerting.wake_deliver, &mut stop, alerting.config.poll).await {
            break;
        }
        let due = match store.due_deliveries(Micros::now(), BATCH).await {
            Ok(d) => d,
            Err(agentledger_store::StoreError::ShuttingDown) => break,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: could not read the outbox");
                continue;
            }
        };
        for d in due {
            let sem = slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(d.destination_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(alerting.config.per_destination)))
                .clone();
            // A destination with every slot busy keeps its deliveries due:
            // they are taken on a later pass, and nothing waits here.
            let Ok(permit) = sem.try_acquire_owned() else {
                continue;
            };
            let lease = lease_until(&alerting.config);
            match store.claim_delivery(&d.id, d.next_attempt_at, lease).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: could not claim a delivery");
                    continue;
                }
            }
            let (store, client, cfg) = (store.clone(), client.clone(), alerting.config.clone());
            tokio::spawn(async move {
                let result = attempt(store.as_ref(), &client, &cfg, &d).await;
                if let Err(e) = store.record_attempt(&d.id, result).await {
                    // The lease ends and it is tried again: at least once.
                    tracing::warn!(error = %e, delivery = %d.id, "alerts: could not record an attempt");
                }
                drop(permit);
            });
        }
    }
}

fn lease_until(cfg: &AlertConfig) -> Micros {
    let lease = cfg.timeout + Duration::from_secs(5);
    Micros(Micros::now().0 + lease.as_micros() as i64)
}

/// The outbound client: HTTP/1.1 over TCP, or TLS (rustls with the `ring`
/// provider and the Mozilla root store compiled in, so what is trusted
/// does not depend on the host). It follows no redirects and reads no proxy
/// settings: a request goes to the configured URL or nowhere.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn client(cfg: &AlertConfig) -> Result<Client, String> {
    outbound_client(cfg.timeout)
}

/// The outbound client above with this connect timeout; alerts, witnesses and the log
/// monitor all use it.
pub fn outbound_client<B>(
    connect_timeout: Duration,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        B,
    >,
    String,
>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https),
    )
}

/// The delay before attempt `n + 1` after `n` failed ones: `base * 2^(n-1)`
/// capped at `max`, then "equal jitter" (uniform in its upper half), so
/// retries of many deliveries to one destination spread out.
pub fn backoff(cfg: &AlertConfig, failed: u32) -> Duration {
    let exp = failed.saturating_sub(1).min(30);
    let full = cfg
        .retry_base
        .saturating_mul(1u32 << exp)
        .min(cfg.retry_max);
    let jitter: f64 = rand::random_range(0.5..=1.0);
    full.mul_f64(jitter)
}

fn short(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One attempt, and what it means for the delivery.
async fn attempt(
    store: &dyn EventStore,
    client: &Client,
    cfg: &AlertConfig,
    d: &Delivery,
) -> AttemptResult {
    let failed = |error: String, status: Option<u16>| {
        let attempts = d.attempts + 1;
        if attempts >= cfg.max_attempts {
            AttemptResult::Failed {
                error: short(error),
                status,
            }
        } else {
            let next = backoff(cfg, attempts);
            AttemptResult::Retry {
                error: short(error),
                status,
                next_at: Micros(Micros::now().0 + next.as_micros() as i64),
            }
        }
    };
    let dest = match store.destination_by_id(&d.destination_id).await {
        Ok(Some(dest)) if dest.project_id == d.project_id => dest,
        Ok(_) => {
            return AttemptResult::Failed {
                error: "the destination was deleted".into(),
                status: None,
            };
        }
        Err(e) => return failed(format!("reading the destination: {e}"), None),
    };
    let alert = match store.get_alert(&d.alert_id).await {
        Ok(Some(a)) if a.project_id == d.project_id => a,
        Ok(_) => {
            return AttemptResult::Failed {
                error: "the alert is gone".into(),
                status: None,
            };
        }
        Err(e) => return failed(format!("reading the alert: {e}"), None),
    };
    let body = body(&dest, &alert, d);
    let now = Micros::now();
    let unix = now.0.div_euclid(1_000_000);
    let mut req = axum::http::Request::post(dest.url.as_str())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("agentledger/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-agentledger-delivery", d.id.as_str())
        .header("x-agentledger-event", event_name(d.transition));
    if let (DestinationKind::Webhook, Some(secret)) = (dest.kind, dest.secret.as_deref()) {
        req = req.header(
            super::sign::SIGNATURE_HEADER,
            super::sign::signature(secret, unix, &body),
        );
    }
    let req = match req.body(http_body_util::Full::new(bytes::Bytes::from(body))) {
        Ok(r) => r,
        Err(_) => return failed("the destination URL is not usable".into(), None),
    };
    // One timeout for the whole exchange; the answer's body is not read.
    match tokio::time::timeout(cfg.timeout, client.request(req)).await {
        Err(_) => failed(format!("timed out after {:?}", cfg.timeout), None),
        // Without the URL: a Slack URL is a secret.
        Ok(Err(e)) => failed(describe(&e), None),
        Ok(Ok(resp)) => {
            let status = resp.status();
            if status.is_success() {
                AttemptResult::Delivered {
                    status: status.as_u16(),
                }
            } else if status.is_redirection() {
                failed(
                    format!(
                        "HTTP {}: redirects are not followed; configure the final URL",
                        status.as_u16()
                    ),
                    Some(status.as_u16()),
                )
            } else {
                failed(format!("HTTP {}", status.as_u16()), Some(status.as_u16()))
            }
        }
    }
}

/// An error and its causes, never the URL (hyper's errors do not carry it).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn event_name(t: Transition) -> &'static str {
    match t {
        Transition::Triggered => "alert.triggered",
        Transition::Resolved => "alert.resolved",
    }
}

/// Slack's control characters escaped as Slack asks (`&`, `<`, `>`): an
/// agent or session id is the client's text and must not become a link or
/// an `<!channel>` mention.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The JSON body: a signed webhook gets the alert; Slack gets `text`.
pub fn body(dest: &Destination, a: &Alert, d: &Delivery) -> Vec<u8> {
    let v = match dest.kind {
        DestinationKind::Slack => {
            let icon = match d.transition {
                Transition::Triggered => ":rotating_light:",
                Transition::Resolved => ":white_check_mark:",
            };
            let what = match d.transition {
                Transition::Triggered => a.message.clone(),
                Transition::Resolved => format!("resolved: {}", a.message),
            };
            json!({ "text": format!("{icon} agentledger: {}", slack_escape(&what)) })
        }
        DestinationKind::Webhook => json!({
            "id": d.id,
            "type": event_name(d.transition),
            "created_at": d.created_at.to_rfc3339(),
            "alert": {
                "id": a.id,
                "rule_id": a.rule_id,
                "rule_name": a.rule_name,
                "condition": serde_json::from_str::<serde_json::Value>(&a.condition)
                    .unwrap_or(serde_json::Value::Null),
                "status": a.status.as_str(),
                "session_id": a.session_id,
                "event_id": a.event_id,
                "subject": a.subject,
                "value": a.value,
                "threshold": a.threshold,
                "message": a.message,
                "created_at": a.created_at.to_rfc3339(),
                "resolved_at": a.resolved_at.map(|t| t.to_rfc3339()),
            }
        }),
    };
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(
            slack_escape("agent <!channel> & <https://x|y>"),
            "agent &lt;!channel&gt; &amp; &lt;https://x|y&gt;"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let cfg = AlertConfig {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..AlertConfig::default()
        };
        for (failed, full) in [(1u32, 1.0f64), (2, 2.0), (3, 4.0), (7, 60.0), (40, 60.0)] {
            let d = backoff(&cfg, failed).as_secs_f64();
            assert!(
                (full / 2.0..=full).contains(&d),
                "after {failed} failures: {d} s, want {}..{full}",
                full / 2.0
            );
        }
    }
}
