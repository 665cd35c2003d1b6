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

use agentledger_dialects::error::parse_json;
use agentledger_dialects::native::ErrorBody;
use agentledger_store::alerts::{
    Alert, AlertRule, Condition, Delivery, DeliveryStatus, Destination,
};

use crate::alerts::admin::{self, invalid};
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
    let (d, shown) = admin::create_destination(
        &st,
        &caller.project,
        &caller.key_id,
        admin::DestinationInput {
            name: req.name,
            kind: req.kind,
            url: req.url,
            secret: req.secret,
        },
    )
    .await?;
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
    admin::delete_destination(&st, &caller.project, &caller.key_id, &id).await?;
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
    let rule = admin::create_rule(
        &st,
        &caller.project,
        &caller.key_id,
        &req.name,
        req.condition,
        req.destinations,
    )
    .await?;
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
    admin::delete_rule(&st, &caller.project, &caller.key_id, &id).await?;
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
    admin::resolve(&st, &caller.project, &caller.key_id, &id).await?;
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
