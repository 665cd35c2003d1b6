//! Alerts: the project's open alerts and recent deliveries (any signed-in
//! key of the project), and, for admins, its rules and destinations with
//! forms to add and delete them. The forms call the same checks as the API
//! (`crate::alerts::admin`); a generated signing secret is shown on the
//! answer that created it only; destinations show their host, never the
//! rest of the URL.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use agentledger_core::Kind;
use agentledger_core::verdict::Decision;
use agentledger_store::alerts::{Condition, Metric};

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::views::{Nav, time};
use crate::alerts::admin::{self, invalid};
use crate::state::AppState;

/// Alerts and deliveries shown.
const SHOWN: u32 = 100;

pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub message: String,
    pub session: String,
    pub created: String,
}

impl AlertRow {
    pub fn href(&self) -> String {
        format!(
            "/console/sessions/{}",
            super::views::urlencode(&self.session)
        )
    }
}

pub struct DeliveryRow {
    pub id: String,
    pub alert: String,
    pub destination: String,
    pub transition: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: String,
    pub next: String,
    pub created: String,
}

pub struct RuleRow {
    pub id: String,
    pub name: String,
    pub condition: String,
    pub destinations: String,
}

pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub host: String,
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
struct AlertsPage {
    nav: Nav,
    alerts: Vec<AlertRow>,
    deliveries: Vec<DeliveryRow>,
    rules: Vec<RuleRow>,
    destinations: Vec<DestinationRow>,
    /// A signing secret just generated: shown on this answer only.
    secret: Option<String>,
}

async fn page_with(
    st: &AppState,
    signed: &Signed,
    secret: Option<String>,
) -> Result<Response, ConsoleError> {
    let project = &signed.caller.project;
    let alerts = st
        .store
        .list_alerts(project, true, SHOWN)
        .await?
        .into_iter()
        .map(|a| AlertRow {
            id: a.id,
            rule: a.rule_name,
            message: a.message,
            session: a.session_id,
            created: time(a.created_at),
        })
        .collect();
    let deliveries = st
        .store
        .list_deliveries(project, None, SHOWN)
        .await?
        .into_iter()
        .map(|d| DeliveryRow {
            next: if d.status == agentledger_store::alerts::DeliveryStatus::Pending {
                time(d.next_attempt_at)
            } else {
                String::new()
            },
            id: d.id,
            alert: d.alert_id,
            destination: d.destination_id,
            transition: d.transition.as_str().into(),
            status: d.status.as_str().into(),
            attempts: d.attempts,
            last_error: d.last_error.unwrap_or_default(),
            created: time(d.created_at),
        })
        .collect();
    let (rules, destinations) = if signed.caller.admin {
        let rules = st
            .store
            .list_rules(Some(project))
            .await?
            .into_iter()
            .map(|r| RuleRow {
                condition: serde_json::to_string(&r.condition).unwrap_or_default(),
                destinations: r.destinations.join(", "),
                id: r.id,
                name: r.name,
            })
            .collect();
        let dests = st
            .store
            .list_destinations(project)
            .await?
            .into_iter()
            .map(|d| DestinationRow {
                host: d.host(),
                kind: d.kind.as_str().into(),
                id: d.id,
                name: d.name,
            })
            .collect();
        (rules, dests)
    } else {
        (Vec::new(), Vec::new())
    };
    render(&AlertsPage {
        nav: Nav::new(signed, "alerts"),
        alerts,
        deliveries,
        rules,
        destinations,
        secret,
    })
}

pub async fn page(State(st): State<AppState>, signed: Signed) -> Result<Response, ConsoleError> {
    page_with(&st, &signed, None).await
}

#[derive(Deserialize)]
pub struct DestinationForm {
    csrf: String,
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    secret: String,
}

pub async fn create_destination(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<DestinationForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    let secret = Some(f.secret.trim().to_owned()).filter(|s| !s.is_empty());
    let (_, shown) = admin::create_destination(
        &st,
        &signed.caller.project,
        &signed.caller.key_id,
        admin::DestinationInput {
            name: f.name,
            kind: f.kind,
            url: f.url.trim().to_owned(),
            secret,
        },
    )
    .await?;
    page_with(&st, &signed, shown).await
}

#[derive(Deserialize)]
pub struct RuleForm {
    csrf: String,
    name: String,
    /// decision, detector, event_kind or threshold.
    #[serde(rename = "type")]
    kind: String,
    /// Comma-separated decisions, detectors or kinds.
    #[serde(default)]
    values: String,
    #[serde(default)]
    metric: String,
    #[serde(default)]
    threshold: String,
    #[serde(default)]
    window_secs: String,
    /// One destination id, or empty.
    #[serde(default)]
    destination: String,
}

fn names(values: &str) -> Vec<String> {
    values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn condition(f: &RuleForm) -> Result<Condition, crate::error::ApiError> {
    let parse_all = |field: &'static str, f2: &dyn Fn(&str) -> bool| {
        let v = names(&f.values);
        if let Some(bad) = v.iter().find(|s| !f2(s)) {
            return Err(invalid(field, format!("{bad:?} is not one of them")));
        }
        Ok(v)
    };
    Ok(match f.kind.as_str() {
        "decision" => Condition::Decision {
            decisions: parse_all("condition.decisions", &|s| s.parse::<Decision>().is_ok())?
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        },
        "detector" => Condition::Detector {
            detectors: names(&f.values),
        },
        "event_kind" => Condition::EventKind {
            kinds: parse_all("condition.kinds", &|s| s.parse::<Kind>().is_ok())?
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        },
        "threshold" => Condition::Threshold {
            metric: match f.metric.as_str() {
                "session_cost" => Metric::SessionCost,
                "agent_errors" => Metric::AgentErrors,
                "project_events" => Metric::ProjectEvents,
                _ => {
                    return Err(invalid(
                        "condition.metric",
                        "one of session_cost, agent_errors, project_events",
                    ));
                }
            },
            threshold: f
                .threshold
                .trim()
                .parse()
                .map_err(|_| invalid("condition.threshold", "must be a number"))?,
            window_secs: f
                .window_secs
                .trim()
                .parse()
                .map_err(|_| invalid("condition.window_secs", "must be whole seconds"))?,
        },
        _ => {
            return Err(invalid(
                "condition.type",
                "one of decision, detector, event_kind, threshold",
            ));
        }
    })
}

pub async fn create_rule(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<RuleForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    let c = condition(&f)?;
    let dests = names(&f.destination);
    admin::create_rule(
        &st,
        &signed.caller.project,
        &signed.caller.key_id,
        &f.name,
        c,
        dests,
    )
    .await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

#[derive(Deserialize)]
pub struct IdForm {
    csrf: String,
    id: String,
}

pub async fn delete_rule(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<IdForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    admin::delete_rule(&st, &signed.caller.project, &signed.caller.key_id, &f.id).await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

pub async fn delete_destination(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<IdForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    admin::delete_destination(&st, &signed.caller.project, &signed.caller.key_id, &f.id).await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

pub async fn resolve(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<IdForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    admin::resolve(&st, &signed.caller.project, &signed.caller.key_id, &f.id).await?;
    Ok(Redirect::to("/console/alerts").into_response())
}
