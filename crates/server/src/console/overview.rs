//! The overview: the project's last 24 hours at a glance. Every figure is
//! a bounded query: counts stop at the store's count limit (10,000, shown
//! as "10,000+"), the detector and tool tallies read the latest 500
//! matching events, and chain health verifies only the latest sessions of
//! at most [`VERIFY_MAX_EVENTS`] events (longer ones link to Verify).

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use agentledger_core::Kind;
use agentledger_core::Micros;
use agentledger_core::query::{EventQuery, SessionQuery};
use agentledger_core::verdict::{Decision, Verdict};
use agentledger_store::LlmGroup;
use agentledger_store::verify::verify_session;

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::views::{Nav, time, urlencode};
use crate::state::AppState;

const HOUR: i64 = 3_600_000_000;
const HOURS: i64 = 24;
const SAMPLE: u32 = 500;
/// Sessions longer than this are not verified on the overview (five of
/// them hash at most 10,000 events: milliseconds); their Verify page does.
pub const VERIFY_MAX_EVENTS: u64 = 2_000;

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
}

/// A section's query that ran past the query budget leaves that section
/// empty (and says so) rather than failing the page.
fn within_budget<T>(r: agentledger_store::StoreResult<T>) -> Result<Option<T>, ConsoleError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(agentledger_store::StoreError::QueryBudget(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn count_text(total: Option<u64>, capped: bool) -> String {
    match (total, capped) {
        (Some(n), true) => format!("{n}+"),
        (Some(n), false) => n.to_string(),
        (None, _) => "?".into(),
    }
}

fn top(mut tally: Vec<(String, u64)>, n: usize) -> Vec<Count> {
    tally.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    tally
        .into_iter()
        .take(n)
        .map(|(label, v)| Count {
            label,
            value: v.to_string(),
        })
        .collect()
}

fn tally(items: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0u64) += 1;
    }
    m.into_iter().collect()
}

pub async fn overview(
    State(st): State<AppState>,
    signed: Signed,
) -> Result<Response, ConsoleError> {
    let project = &signed.caller.project;
    let now = Micros::now();
    let start = Micros((now.0 / HOUR - HOURS + 1) * HOUR);
    let since = |q: EventQuery| EventQuery {
        from: Some(start),
        ..q
    };
    let mut decisions = Vec::new();
    for d in [Decision::Allow, Decision::Flag, Decision::Deny] {
        let q = since(EventQuery {
            decisions: vec![d],
            limit: 1,
            ..Default::default()
        });
        let p = within_budget(st.store.query_events(project, q).await)?;
        decisions.push(Count {
            label: d.as_str().into(),
            value: p.map_or("?".into(), |p| count_text(p.total, p.total_capped)),
        });
    }
    let mut per_hour = Vec::new();
    for h in 0..HOURS {
        let from = Micros(start.0 + h * HOUR);
        let q = EventQuery {
            from: Some(from),
            to: Some(Micros(from.0 + HOUR - 1)),
            limit: 1,
            ..Default::default()
        };
        let p = within_budget(st.store.query_events(project, q).await)?;
        per_hour.push((from, p.and_then(|p| p.total).unwrap_or(0) as f64));
    }
    // Sums over every LLM response of the day: on a busy ledger this can
    // run past the query budget; the page then says so instead of failing.
    let llm = within_budget(
        st.store
            .llm_usage(
                project,
                since(EventQuery::default()),
                None,
                LlmGroup::Time(HOUR),
            )
            .await,
    )?;
    let hours: Vec<Micros> = (0..HOURS).map(|h| Micros(start.0 + h * HOUR)).collect();
    let of_hour = |f: &dyn Fn(&agentledger_store::LlmUsageRow) -> f64| -> Vec<(Micros, f64)> {
        let rows = llm.as_deref().unwrap_or_default();
        hours
            .iter()
            .map(|h| {
                let v = rows
                    .iter()
                    .filter(|r| r.bucket == Some(*h))
                    .map(f)
                    .sum::<f64>();
                (*h, v)
            })
            .collect()
    };
    let usage_caption = |c: &str| {
        if llm.is_some() {
            c.to_owned()
        } else {
            format!(
                "{c}: too many LLM calls today to sum within the query budget (see /api/v1/usage with a narrower range)"
            )
        }
    };
    let tokens = of_hour(&|r| (r.input_tokens + r.output_tokens) as f64);
    let cost = of_hour(&|r| r.cost_usd);

    let flagged = within_budget(
        st.store
            .query_events(
                project,
                since(EventQuery {
                    decisions: vec![Decision::Flag, Decision::Deny],
                    limit: SAMPLE,
                    skip_total: true,
                    ..Default::default()
                }),
            )
            .await,
    )?
    .map(|p| p.events)
    .unwrap_or_default();
    let detectors = tally(flagged.iter().flat_map(|e| {
        e.verdict
            .as_ref()
            .and_then(|v| serde_json::from_str::<Verdict>(v.get()).ok())
            .map(|v| {
                v.findings
                    .into_iter()
                    .map(|f| f.detector)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    }));
    let calls = within_budget(
        st.store
            .query_events(
                project,
                since(EventQuery {
                    kinds: vec![Kind::ToolCall],
                    limit: SAMPLE,
                    skip_total: true,
                    ..Default::default()
                }),
            )
            .await,
    )?
    .map(|p| p.events)
    .unwrap_or_default();
    let tools = tally(calls.iter().filter_map(|e| {
        let v: serde_json::Value = serde_json::from_str(e.payload.get()).ok()?;
        agentledger_policy::engine::tool_and_arguments(e.kind, &v).0
    }));
    // The most active agents among the latest events (a bounded sample,
    // like the tallies above).
    let latest = within_budget(
        st.store
            .query_events(
                project,
                since(EventQuery {
                    limit: SAMPLE,
                    skip_total: true,
                    ..Default::default()
                }),
            )
            .await,
    )?
    .map(|p| p.events)
    .unwrap_or_default();
    let agents = top(tally(latest.iter().map(|e| e.agent_id.clone())), 5);

    let recent = st
        .store
        .list_sessions(
            project,
            SessionQuery {
                limit: 5,
                ..Default::default()
            },
        )
        .await?;
    let mut health = Vec::new();
    for s in recent.sessions {
        let href = format!("/console/sessions/{}/verify", urlencode(&s.id));
        let (state, detail) = if s.head_seq > VERIFY_MAX_EVENTS {
            (
                "unchecked",
                format!("{} events: verify it on its page", s.head_seq),
            )
        } else {
            match verify_session(st.store.as_ref(), project, &s.id).await? {
                Some(r) if r.valid => ("ok", format!("{} events verified", r.events)),
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
            chart(&per_hour, |v| format!("{v:.0}"), "events per hour"),
            chart(
                &tokens,
                |v| format!("{v:.0}"),
                &usage_caption("LLM tokens per hour"),
            ),
            chart(
                &cost,
                |v| format!("${v:.4}"),
                &usage_caption("LLM cost per hour (USD)"),
            ),
        ],
        detectors: top(detectors, 8),
        tools: top(tools, 8),
        agents,
        health,
    })
}
