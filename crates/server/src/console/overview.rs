//! The overview: the project's last 24 hours at a glance.
//!
//! Every figure but chain health comes from the store's hourly rollups
//! (`agentledger_store::rollup`), kept in the events' own transaction, so
//! they are exact (no cap, no sample) and cost a few index range reads of
//! at most 24 rows per key, however many events the day held. A day is
//! the current hour and the 23 before it, in whole hours of the events'
//! `ts`, as the API's time filters use.
//!
//! Chain health cannot be rolled up: a chain is verified by recomputing
//! it. The page verifies the latest sessions, each in full, only while
//! the events it hashes stay within [`VERIFY_BUDGET`]; a session past that
//! is shown "unchecked" with a link to its Verify page, never as verified.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use agentledger_core::Kind;
use agentledger_core::Micros;
use agentledger_core::query::SessionQuery;
use agentledger_core::verdict::Decision;
use agentledger_store::rollup::{RollupDim, RollupQuery, RollupRow};
use agentledger_store::verify::verify_session;

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::views::{Nav, time, urlencode};
use crate::state::AppState;

const HOUR: i64 = agentledger_store::rollup::HOUR;
const HOURS: i64 = 24;
/// Latest sessions whose chain health is shown.
const HEALTH_SESSIONS: u32 = 5;
/// Events the overview hashes at most to verify the latest sessions (each
/// verified whole or not at all); longer ones link to their Verify page.
pub const VERIFY_BUDGET: u64 = 2_000;

/// One bar of a chart, in the SVG's own units (viewBox 0 0 480 120).
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub title: String,
}

pub struct Chart {
    pub bars: Vec<Bar>,
    pub max: String,
    pub caption: String,
}

fn chart(values: &[(Micros, f64)], fmt: impl Fn(f64) -> String, caption: &str) -> Chart {
    let max = values.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let n = values.len().max(1) as i64;
    let w = 480 / n;
    let bars = values
        .iter()
        .enumerate()
        .map(|(i, (at, v))| {
            let h = if max > 0.0 {
                ((v / max) * 110.0).round() as i64
            } else {
                0
            };
            Bar {
                x: i as i64 * w,
                y: 120 - h,
                w: (w - 2).max(1),
                h,
                title: format!("{}: {}", time(*at), fmt(*v)),
            }
        })
        .collect();
    Chart {
        bars,
        max: fmt(max),
        caption: caption.to_owned(),
    }
}

pub struct Count {
    pub label: String,
    pub value: String,
}

pub struct Health {
    pub id: String,
    pub href: String,
    pub events: u64,
    /// ok, broken, or unchecked.
    pub state: &'static str,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    nav: Nav,
    decisions: Vec<Count>,
    charts: Vec<Chart>,
    detectors: Vec<Count>,
    tools: Vec<Count>,
    agents: Vec<Count>,
    health: Vec<Health>,
    verify_budget: u64,
}

fn counts(rows: Vec<RollupRow>, label: impl Fn(&str) -> String) -> Vec<Count> {
    rows.into_iter()
        .map(|r| Count {
            label: label(&r.key),
            value: r.events.to_string(),
        })
        .collect()
}

pub async fn overview(
    State(st): State<AppState>,
    signed: Signed,
) -> Result<Response, ConsoleError> {
    let project = &signed.caller.project;
    let now = Micros::now();
    let start = Micros((now.0.div_euclid(HOUR) - HOURS + 1) * HOUR);
    let end = Micros(start.0 + HOURS * HOUR);
    let read = |dim: RollupDim, by_hour: bool, limit: u32| {
        st.store.rollups(
            project,
            RollupQuery {
                dim,
                from: start,
                to: end,
                by_hour,
                limit,
            },
        )
    };

    let by_decision = read(RollupDim::Decision, false, 10).await?;
    let decisions = [Decision::Allow, Decision::Flag, Decision::Deny]
        .into_iter()
        .map(|d| {
            let code = d.code().to_string();
            let n = by_decision
                .iter()
                .find(|r| r.key == code)
                .map_or(0, |r| r.events);
            Count {
                label: d.as_str().into(),
                value: n.to_string(),
            }
        })
        .collect();

    // Events per hour (the sum of the kinds) and the LLM responses' usage.
    // 24 hours x the kinds (28): well within one read.
    let by_kind = read(RollupDim::Kind, true, 24 * 64).await?;
    let llm = Kind::LlmResponse.code().to_string();
    let hours: Vec<Micros> = (0..HOURS).map(|h| Micros(start.0 + h * HOUR)).collect();
    let per_hour = |f: &dyn Fn(&RollupRow) -> f64| -> Vec<(Micros, f64)> {
        hours
            .iter()
            .map(|h| {
                let v = by_kind
                    .iter()
                    .filter(|r| r.hour == Some(*h))
                    .map(f)
                    .sum::<f64>();
                (*h, v)
            })
            .collect()
    };
    let events = per_hour(&|r| r.events as f64);
    let tokens = per_hour(&|r| {
        if r.key == llm {
            (r.input_tokens + r.output_tokens) as f64
        } else {
            0.0
        }
    });
    let cost = per_hour(&|r| if r.key == llm { r.cost_usd } else { 0.0 });

    let detectors = counts(read(RollupDim::Detector, false, 8).await?, str::to_owned);
    let tools = counts(read(RollupDim::Tool, false, 8).await?, str::to_owned);
    let agents = counts(read(RollupDim::Agent, false, 5).await?, str::to_owned);

    let recent = st
        .store
        .list_sessions(
            project,
            SessionQuery {
                limit: HEALTH_SESSIONS,
                ..Default::default()
            },
        )
        .await?;
    let mut health = Vec::new();
    let mut budget = VERIFY_BUDGET;
    for s in recent.sessions {
        let href = format!("/console/sessions/{}/verify", urlencode(&s.id));
        let (state, detail) = if s.head_seq > budget {
            (
                "unchecked",
                format!(
                    "not verified here ({} events past this page's budget): verify it on its page",
                    s.head_seq
                ),
            )
        } else {
            budget -= s.head_seq;
            match verify_session(st.store.as_ref(), project, &s.id).await? {
                Some(r) if r.valid => ("ok", format!("all {} events verified now", r.events)),
                Some(r) => (
                    "broken",
                    format!(
                        "broken at seq {}: {}",
                        r.first_invalid_seq.unwrap_or(0),
                        r.reason.unwrap_or_default()
                    ),
                ),
                None => ("unchecked", "gone".into()),
            }
        };
        health.push(Health {
            id: s.id,
            href,
            events: s.head_seq,
            state,
            detail,
        });
    }
    render(&OverviewPage {
        nav: Nav::new(&signed, "overview"),
        decisions,
        charts: vec![
            chart(&events, |v| format!("{v:.0}"), "events per hour"),
            chart(&tokens, |v| format!("{v:.0}"), "LLM tokens per hour"),
            chart(&cost, |v| format!("${v:.4}"), "LLM cost per hour (USD)"),
        ],
        detectors,
        tools,
        agents,
        health,
        verify_budget: VERIFY_BUDGET,
    })
}
