//! Alerting on the HTTP edge: rules and destinations (admin keys of the
//! project), and the project's alerts and deliveries (any key of it).
//! docs/alerts.md describes the rules, the signature and the retries.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use agentledger_core::Kind;
use agentledger_core::verdict::Decision;
use agentledger_dialects::InputError;
use agentledger_dialects::error::parse_json;
use agentledger_dialects::native::ErrorBody;
use agentledger_store::alerts::{
    Alert, AlertRule, Condition, Delivery, DeliveryStatus, Destination, DestinationKind,
    MAX_DESTINATIONS_PER_PROJECT, MAX_DESTINATIONS_PER_RULE, MAX_RULES_PER_PROJECT, Metric,
    NewDestination, NewRule, host_of,
};

use crate::auth::Caller;
use crate::body::JsonBytes;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/alerts/deliveries", get(list_deliveries))
        .route("/api/v1/alerts/rules", get(list_rules).post(create_rule))
        .route("/api/v1/alerts/rules/{id}", delete(delete_rule))
        .route(
            "/api/v1/alerts/destinations",
            get(list_destinations).post(create_destination),
        )
        .route(
            "/api/v1/alerts/destinations/{id}",
            delete(delete_destination),
        )
}

/// Longest name of a rule or destination.
pub const MAX_NAME: usize = 100;
/// Longest destination URL.
pub const MAX_URL: usize = 2048;
/// Shortest and longest webhook signing secret a caller may choose.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Detectors or kinds one rule may name.
const MAX_NAMES_PER_RULE: usize = 20;
/// A threshold rule's window, in seconds.
const WINDOW: std::ops::RangeInclusive<u32> = 1..=86_400;
/// Most alerts or deliveries one listing returns.
const MAX_LIMIT: u32 = 500;

fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "alert rules and destinations need an admin key",
        ))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    InputError::invalid(field, format!("{field}: {}", message.into())).into()
}

/// A destination as the API shows it: never its URL's path or its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationOut {
    pub id: String,
    pub name: String,
    /// `webhook` (signed JSON) or `slack`.
    pub kind: String,
    /// The URL's host and port; the rest of the URL is not shown again.
    pub host: String,
    pub created_at: String,
    /// The signing secret, in the answer that created the destination only
    /// (when the server generated it). Keep it: it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&Destination> for DestinationOut {
    fn from(d: &Destination) -> Self {
        DestinationOut {
            id: d.id.clone(),
            name: d.name.clone(),
            kind: d.kind.as_str().into(),
            host: d.host(),
            created_at: d.created_at.to_rfc3339(),
            secret: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<DestinationOut>,
}

/// `POST /api/v1/alerts/destinations`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationIn {
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: String,
    /// `http://` or `https://`; requests go only here (no redirects followed).
    pub url: String,
    /// Webhooks only: the HMAC-SHA256 signing secret (16 to 256 characters).
    /// Omit it and the server generates one and shows it once.
    pub secret: Option<String>,
}

fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
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

fn check_url(url: &str) -> Result<(), ApiError> {
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
    if reqwest::Url::parse(url).is_err() {
        return Err(invalid("url", "is not a valid URL"));
    }
    Ok(())
}

/// Add an alert destination
///
/// A generic JSON webhook (signed: see docs/alerts.md) or a Slack-compatible
/// incoming webhook (its URL is its secret: only its host is shown after
/// this). Needs an admin key of the project.
#[utoipa::path(post, path = "/api/v1/alerts/destinations", tag = "alerts",
    request_body = DestinationIn,
    responses((status = 201, body = DestinationOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_destination(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<DestinationOut>), ApiError> {
    admin(&caller)?;
    let req: DestinationIn = parse_json(&body)?;
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
    if st.store.list_destinations(&caller.project).await?.len() >= MAX_DESTINATIONS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "a project holds at most {MAX_DESTINATIONS_PER_PROJECT} destinations; delete one first"
        )));
    }
    let d = st
        .store
        .create_destination(
            &caller.project,
            NewDestination {
                name,
                kind,
                url: req.url,
                secret,
            },
        )
        .await?;
    // The host only: the URL (a Slack one is a secret) and the secret are never logged.
    tracing::info!(key = %caller.key_id, project = %caller.project.name, destination = %d.id, host = %d.host(), "alert destination created");
    let mut out = DestinationOut::from(&d);
    out.secret = shown;
    Ok((StatusCode::CREATED, Json(out)))
}

/// List the project's alert destinations
///
/// Needs an admin key of the project.
#[utoipa::path(get, path = "/api/v1/alerts/destinations", tag = "alerts",
    responses((status = 200, body = DestinationList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_destinations(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<DestinationList>, ApiError> {
    admin(&caller)?;
    let ds = st.store.list_destinations(&caller.project).await?;
    Ok(Json(DestinationList {
        destinations: ds.iter().map(DestinationOut::from).collect(),
    }))
}

/// Delete an alert destination
///
/// Refused (409) while a rule names it. Pending deliveries to it are given
/// up. Needs an admin key of the project.
#[utoipa::path(delete, path = "/api/v1/alerts/destinations/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Destination id (dst_…)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_destination(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    let users: Vec<String> = st
        .store
        .list_rules(Some(&caller.project))
        .await?
        .into_iter()
        .filter(|r| r.destinations.contains(&id))
        .map(|r| r.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "rules {} name this destination; delete them first",
            users.join(", ")
        )));
    }
    if !st.store.delete_destination(&caller.project, &id).await? {
        return Err(ApiError::NotFound("no such destination"));
    }
    tracing::info!(key = %caller.key_id, project = %caller.project.name, destination = %id, "alert destination deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A rule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleOut {
    pub id: String,
    pub name: String,
    /// As created: see `RuleIn.condition`.
    #[schema(value_type = Object)]
    pub condition: serde_json::Value,
    /// Destination ids.
    pub destinations: Vec<String>,
    pub created_at: String,
}

impl From<&AlertRule> for RuleOut {
    fn from(r: &AlertRule) -> Self {
        RuleOut {
            id: r.id.clone(),
            name: r.name.clone(),
            condition: serde_json::to_value(&r.condition).unwrap_or_default(),
            destinations: r.destinations.clone(),
            created_at: r.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub rules: Vec<RuleOut>,
}

/// `POST /api/v1/alerts/rules`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    pub name: String,
    /// One of `{"type": "decision", "decisions": ["deny", "flag"]}`,
    /// `{"type": "detector", "detectors": ["secrets"]}`,
    /// `{"type": "event_kind", "kinds": ["tool_error", "error"]}`,
    /// `{"type": "threshold", "metric": "session_cost" | "agent_errors" |
    /// "project_events", "threshold": 5, "window_secs": 300}`.
    #[schema(value_type = Object)]
    pub condition: Condition,
    /// Destination ids (at most 5; none: the alert is recorded, not sent).
    #[serde(default)]
    pub destinations: Vec<String>,
}

fn check_condition(c: &Condition) -> Result<(), ApiError> {
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

/// Add an alert rule
///
/// Fires on an event's decision, a detector's finding or an event kind (the
/// alert is written in the event's own transaction), or on a threshold over
/// a window (evaluated in the background). Needs an admin key of the project.
#[utoipa::path(post, path = "/api/v1/alerts/rules", tag = "alerts",
    request_body = RuleIn,
    responses((status = 201, body = RuleOut), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_rule(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<RuleOut>), ApiError> {
    admin(&caller)?;
    let req: RuleIn = parse_json(&body)?;
    let name = check_name("name", &req.name)?;
    check_condition(&req.condition)?;
    let mut dests = req.destinations;
    dests.dedup();
    if dests.len() > MAX_DESTINATIONS_PER_RULE {
        return Err(invalid(
            "destinations",
            format!("at most {MAX_DESTINATIONS_PER_RULE}"),
        ));
    }
    let known = st.store.list_destinations(&caller.project).await?;
    if let Some(unknown) = dests.iter().find(|d| !known.iter().any(|k| &k.id == *d)) {
        return Err(invalid(
            "destinations",
            format!("{unknown:?} is not a destination of this project"),
        ));
    }
    if st.store.list_rules(Some(&caller.project)).await?.len() >= MAX_RULES_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "a project holds at most {MAX_RULES_PER_PROJECT} alert rules; delete one first"
        )));
    }
    let rule = st
        .store
        .create_rule(
            &caller.project,
            NewRule {
                name,
                condition: req.condition,
                destinations: dests,
            },
        )
        .await?;
    st.alerts.reload(st.store.as_ref()).await?;
    tracing::info!(key = %caller.key_id, project = %caller.project.name, rule = %rule.id, "alert rule created");
    Ok((StatusCode::CREATED, Json(RuleOut::from(&rule))))
}

/// List the project's alert rules
///
/// Needs an admin key of the project.
#[utoipa::path(get, path = "/api/v1/alerts/rules", tag = "alerts",
    responses((status = 200, body = RuleList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_rules(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<RuleList>, ApiError> {
    admin(&caller)?;
    let rules = st.store.list_rules(Some(&caller.project)).await?;
    Ok(Json(RuleList {
        rules: rules.iter().map(RuleOut::from).collect(),
    }))
}

/// Delete an alert rule
///
/// Its alerts and their deliveries stay. Needs an admin key of the project.
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Rule id (rul_…)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_rule(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    if !st.store.delete_rule(&caller.project, &id).await? {
        return Err(ApiError::NotFound("no such alert rule"));
    }
    st.alerts.reload(st.store.as_ref()).await?;
    tracing::info!(key = %caller.key_id, project = %caller.project.name, rule = %id, "alert rule deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// An alert as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertOut {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    /// `open` or `resolved`.
    pub status: String,
    pub session_id: String,
    /// The event that fired it (decision, detector and kind rules).
    pub event_id: Option<String>,
    /// What a threshold alert measures (`project`, an agent or a session
    /// id); the event's id otherwise.
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub created_at: String,
    pub resolved_at: Option<String>,
    /// Seq of the `alert_triggered` event in the session, once appended.
    pub triggered_seq: Option<u64>,
    pub resolved_seq: Option<u64>,
}

impl From<&Alert> for AlertOut {
    fn from(a: &Alert) -> Self {
        AlertOut {
            id: a.id.clone(),
            rule_id: a.rule_id.clone(),
            rule_name: a.rule_name.clone(),
            status: a.status.as_str().into(),
            session_id: a.session_id.clone(),
            event_id: a.event_id.clone(),
            subject: a.subject.clone(),
            value: a.value,
            threshold: a.threshold,
            message: a.message.clone(),
            created_at: a.created_at.to_rfc3339(),
            resolved_at: a.resolved_at.map(|t| t.to_rfc3339()),
            triggered_seq: a.triggered_seq,
            resolved_seq: a.resolved_seq,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsParams {
    /// `open` (default) or `all`.
    pub status: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<u32>,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l.unwrap_or(100) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(invalid("limit", format!("must be 1 to {MAX_LIMIT}"))),
    }
}

/// List the project's alerts
///
/// Newest first; open ones by default. Any key of the project.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertsParams),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_alerts(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<AlertsParams>,
) -> Result<Json<AlertList>, ApiError> {
    let open_only = match p.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(_) => return Err(invalid("status", "must be open or all")),
    };
    let alerts = st
        .store
        .list_alerts(&caller.project, open_only, limit(p.limit)?)
        .await?;
    Ok(Json(AlertList {
        alerts: alerts.iter().map(AlertOut::from).collect(),
    }))
}

/// Resolve an open alert
///
/// For alerts on events (a threshold alert resolves itself when its measure
/// falls back, and opens again if it has not). Needs an admin key of the
/// project.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (alr_…)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn resolve(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    // Resolved by hand: recorded in the session, not sent again.
    if !st.store.resolve_alert(&caller.project, &id, &[]).await? {
        return Err(ApiError::NotFound("no such open alert"));
    }
    st.alerts.wake();
    Ok(StatusCode::NO_CONTENT)
}

/// A delivery as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// Sent as `X-Agentledger-Delivery` (the same on every attempt).
    pub id: String,
    pub alert_id: String,
    pub destination_id: String,
    /// `triggered` or `resolved`.
    pub transition: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: u32,
    /// Pending deliveries: when the next attempt is due.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// The destination's last HTTP status.
    pub last_status: Option<u16>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<&Delivery> for DeliveryOut {
    fn from(d: &Delivery) -> Self {
        DeliveryOut {
            id: d.id.clone(),
            alert_id: d.alert_id.clone(),
            destination_id: d.destination_id.clone(),
            transition: d.transition.as_str().into(),
            status: d.status.as_str().into(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| d.next_attempt_at.to_rfc3339()),
            last_error: d.last_error.clone(),
            last_status: d.last_status,
            created_at: d.created_at.to_rfc3339(),
            delivered_at: d.delivered_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesParams {
    /// Only this alert's deliveries.
    pub alert: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// List the project's alert deliveries
///
/// Newest first, with their attempts and last error. Any key of the project.
#[utoipa::path(get, path = "/api/v1/alerts/deliveries", tag = "alerts", params(DeliveriesParams),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_deliveries(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<DeliveriesParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let ds = st
        .store
        .list_deliveries(&caller.project, p.alert.as_deref(), limit(p.limit)?)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: ds.iter().map(DeliveryOut::from).collect(),
    }))
}
