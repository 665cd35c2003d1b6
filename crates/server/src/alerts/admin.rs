//! Changing a project's rules and destinations, checked and bounded: the
//! one place the API routes and the console's forms both call, so both
//! refuse the same input with the same message (naming the field).

use agentledger_core::Kind;
use agentledger_core::verdict::Decision;
use agentledger_dialects::InputError;
use agentledger_store::ProjectRef;
use agentledger_store::alerts::{
    AlertRule, Condition, Destination, DestinationKind, MAX_DESTINATIONS_PER_PROJECT,
    MAX_DESTINATIONS_PER_RULE, MAX_RULES_PER_PROJECT, Metric, NewDestination, NewRule, host_of,
};

use crate::error::ApiError;
use crate::state::AppState;

/// Longest name of a rule or destination.
pub const MAX_NAME: usize = 100;
/// Longest destination URL.
pub const MAX_URL: usize = 2048;
/// Shortest and longest webhook signing secret a caller may choose.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Detectors or kinds one rule may name.
pub const MAX_NAMES_PER_RULE: usize = 20;
/// A threshold rule's window, in seconds.
pub const WINDOW: std::ops::RangeInclusive<u32> = 1..=86_400;

pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    InputError::invalid(field, format!("{field}: {}", message.into())).into()
}

pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if n.chars().count() > MAX_NAME {
        return Err(invalid(field, format!("at most {MAX_NAME} characters")));
    }
    if n.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(n.to_owned())
}

pub fn check_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL {
        return Err(invalid("url", format!("at most {MAX_URL} bytes")));
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(invalid("url", "must start with http:// or https://"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "url",
            "must not contain spaces or control characters",
        ));
    }
    let host = host_of(url);
    if host.is_empty() || host.starts_with(':') {
        return Err(invalid("url", "must name a host"));
    }
    if url.split_once("://").is_some_and(|(_, r)| {
        r.split(['/', '?', '#'])
            .next()
            .is_some_and(|a| a.contains('@'))
    }) {
        return Err(invalid(
            "url",
            "must not carry credentials (user:password@); webhooks are signed instead",
        ));
    }
    if url
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::is_empty))
        != Some(false)
    {
        return Err(invalid("url", "is not a valid URL"));
    }
    Ok(())
}

pub fn check_condition(c: &Condition) -> Result<(), ApiError> {
    match c {
        Condition::Decision { decisions } => {
            if decisions.is_empty() {
                return Err(invalid("condition.decisions", "name flag, deny or both"));
            }
            if decisions.contains(&Decision::Allow) {
                return Err(invalid(
                    "condition.decisions",
                    "allow is every ordinary event; name flag or deny",
                ));
            }
        }
        Condition::Detector { detectors } => {
            if detectors.is_empty() || detectors.len() > MAX_NAMES_PER_RULE {
                return Err(invalid(
                    "condition.detectors",
                    format!("name 1 to {MAX_NAMES_PER_RULE} detectors or finding rules"),
                ));
            }
            if detectors.iter().any(|d| d.is_empty() || d.len() > MAX_NAME) {
                return Err(invalid(
                    "condition.detectors",
                    format!("each is 1 to {MAX_NAME} characters"),
                ));
            }
        }
        Condition::EventKind { kinds } => {
            if kinds.is_empty() || kinds.len() > MAX_NAMES_PER_RULE {
                return Err(invalid(
                    "condition.kinds",
                    format!("name 1 to {MAX_NAMES_PER_RULE} kinds"),
                ));
            }
            if kinds
                .iter()
                .any(|k| matches!(k, Kind::AlertTriggered | Kind::AlertResolved))
            {
                return Err(invalid(
                    "condition.kinds",
                    "alerts on alert events are not allowed",
                ));
            }
        }
        Condition::Threshold {
            metric,
            threshold,
            window_secs,
        } => {
            if !threshold.is_finite() || *threshold <= 0.0 {
                return Err(invalid("condition.threshold", "must be a positive number"));
            }
            let cap = match metric {
                Metric::ProjectEvents => Some(agentledger_core::query::COUNT_LIMIT as f64),
                Metric::AgentErrors => Some(1000.0),
                Metric::SessionCost => None,
            };
            if cap.is_some_and(|c| *threshold > c) {
                return Err(invalid(
                    "condition.threshold",
                    format!(
                        "at most {} for {}",
                        cap.unwrap_or_default(),
                        metric.as_str()
                    ),
                ));
            }
            if !WINDOW.contains(window_secs) {
                return Err(invalid(
                    "condition.window_secs",
                    "must be 1 to 86400 seconds",
                ));
            }
        }
    }
    Ok(())
}

/// A destination to add, as a caller sent it.
pub struct DestinationInput {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub secret: Option<String>,
}

/// Add a destination; with it, the secret the server generated (shown
/// once), if it generated one.
pub async fn create_destination(
    st: &AppState,
    project: &ProjectRef,
    key_id: &str,
    req: DestinationInput,
) -> Result<(Destination, Option<String>), ApiError> {
    let name = check_name("name", &req.name)?;
    let kind = DestinationKind::parse(&req.kind)
        .ok_or_else(|| invalid("kind", "must be one of: webhook, slack"))?;
    check_url(&req.url)?;
    let (secret, shown) = match (kind, req.secret) {
        (DestinationKind::Slack, Some(_)) => {
            return Err(invalid(
                "secret",
                "Slack destinations take no secret (the URL is the secret)",
            ));
        }
        (DestinationKind::Slack, None) => (None, None),
        (DestinationKind::Webhook, Some(s)) => {
            if !SECRET_LEN.contains(&s.chars().count()) {
                return Err(invalid("secret", "must be 16 to 256 characters"));
            }
            (Some(s), None)
        }
        (DestinationKind::Webhook, None) => {
            let key = agentledger_core::keys::generate_key();
            let s = format!(
                "whsec_{}",
                key.split_once('_').map_or(key.as_str(), |(_, r)| r)
            );
            (Some(s.clone()), Some(s))
        }
    };
    if st.store.list_destinations(project).await?.len() >= MAX_DESTINATIONS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "a project holds at most {MAX_DESTINATIONS_PER_PROJECT} destinations; delete one first"
        )));
    }
    let d = st
        .store
        .create_destination(
            project,
            NewDestination {
                name,
                kind,
                url: req.url,
                secret,
            },
        )
        .await?;
    // The host only: the URL (a Slack one is a secret) and the secret are never logged.
    tracing::info!(key = %key_id, project = %project.name, destination = %d.id, host = %d.host(), "alert destination created");
    Ok((d, shown))
}

/// Delete a destination no rule names.
pub async fn delete_destination(
    st: &AppState,
    project: &ProjectRef,
    key_id: &str,
    id: &str,
) -> Result<(), ApiError> {
    let users: Vec<String> = st
        .store
        .list_rules(Some(project))
        .await?
        .into_iter()
        .filter(|r| r.destinations.iter().any(|d| d == id))
        .map(|r| r.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "rules {} name this destination; delete them first",
            users.join(", ")
        )));
    }
    if !st.store.delete_destination(project, id).await? {
        return Err(ApiError::NotFound("no such destination"));
    }
    tracing::info!(key = %key_id, project = %project.name, destination = %id, "alert destination deleted");
    Ok(())
}

/// Add a rule (the rule cache is reloaded: it applies to the next request).
pub async fn create_rule(
    st: &AppState,
    project: &ProjectRef,
    key_id: &str,
    name: &str,
    condition: Condition,
    mut destinations: Vec<String>,
) -> Result<AlertRule, ApiError> {
    let name = check_name("name", name)?;
    check_condition(&condition)?;
    destinations.sort();
    destinations.dedup();
    if destinations.len() > MAX_DESTINATIONS_PER_RULE {
        return Err(invalid(
            "destinations",
            format!("at most {MAX_DESTINATIONS_PER_RULE}"),
        ));
    }
    let known = st.store.list_destinations(project).await?;
    if let Some(unknown) = destinations
        .iter()
        .find(|d| !known.iter().any(|k| &k.id == *d))
    {
        return Err(invalid(
            "destinations",
            format!("{unknown:?} is not a destination of this project"),
        ));
    }
    if st.store.list_rules(Some(project)).await?.len() >= MAX_RULES_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "a project holds at most {MAX_RULES_PER_PROJECT} alert rules; delete one first"
        )));
    }
    let rule = st
        .store
        .create_rule(
            project,
            NewRule {
                name,
                condition,
                destinations,
            },
        )
        .await?;
    st.alerts.reload(st.store.as_ref()).await?;
    tracing::info!(key = %key_id, project = %project.name, rule = %rule.id, "alert rule created");
    Ok(rule)
}

pub async fn delete_rule(
    st: &AppState,
    project: &ProjectRef,
    key_id: &str,
    id: &str,
) -> Result<(), ApiError> {
    if !st.store.delete_rule(project, id).await? {
        return Err(ApiError::NotFound("no such alert rule"));
    }
    st.alerts.reload(st.store.as_ref()).await?;
    tracing::info!(key = %key_id, project = %project.name, rule = %id, "alert rule deleted");
    Ok(())
}

/// Resolve an open alert by hand (recorded in its session, not sent).
pub async fn resolve(
    st: &AppState,
    project: &ProjectRef,
    key_id: &str,
    id: &str,
) -> Result<(), ApiError> {
    if !st.store.resolve_alert(project, id, &[]).await? {
        return Err(ApiError::NotFound("no such open alert"));
    }
    st.alerts.wake();
    tracing::info!(key = %key_id, project = %project.name, alert = %id, "alert resolved by hand");
    Ok(())
}
