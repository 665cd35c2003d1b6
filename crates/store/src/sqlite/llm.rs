//! LLM call figures for AgentLens's analytics: the usage columns' sums, with
//! the provider and latency read out of the responses' payloads (the columns
//! do not keep them). Bounded like every listing: the caller's filters, at
//! most 1,001 groups (the caller refuses more than 1,000 rather than answer
//! short), and the query budget of `read_budgeted`.

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use agentledger_core::{Kind, Micros};

use super::event_filters;
use crate::sqlite::rows::EVENT_FROM;
use crate::{EventQuery, LlmGroup, LlmUsageRow, ProjectRef};

/// Monday 1970-01-05 00:00 UTC, in microseconds: weeks are counted from it.
const MONDAY: i64 = 4 * 86_400 * 1_000_000;
const WEEK: i64 = 7 * 86_400 * 1_000_000;
/// A payload's `latencyMs` when it is a number (anything else is no latency).
const LATENCY: &str = "CASE WHEN json_type(nullif(e.payload, ''), '$.latencyMs') IN ('integer', 'real') \
    THEN json_extract(nullif(e.payload, ''), '$.latencyMs') END";

pub(super) fn llm_usage_sync(
    conn: &Connection,
    project: &ProjectRef,
    q: &EventQuery,
    provider: Option<String>,
    group: LlmGroup,
) -> rusqlite::Result<Vec<LlmUsageRow>> {
    let q = EventQuery {
        kinds: vec![Kind::LlmResponse],
        ..q.clone()
    };
    let (mut filters, mut params) = event_filters(project.id, &q);
    if let Some(p) = provider {
        filters.push_str(" AND json_extract(nullif(e.payload, ''), '$.provider') = ?");
        params.push(Value::Text(p));
    }
    let (keys, order) = match group {
        LlmGroup::Model => (
            "json_extract(nullif(e.payload, ''), '$.provider'), e.model, NULL".to_owned(),
            "7 DESC, 5 DESC",
        ),
        LlmGroup::Time(width) => {
            let width = width.max(1);
            // Weeks start on Mondays; hours and days divide the epoch evenly.
            let origin = if width == WEEK { MONDAY } else { 0 };
            (
                format!("NULL, NULL, ((e.ts - {origin}) / {width}) * {width} + {origin}"),
                "3",
            )
        }
    };
    let sql = format!(
        "SELECT {keys}, count(*), coalesce(sum(e.input_tokens), 0), \
         coalesce(sum(e.output_tokens), 0), coalesce(sum(e.cost_usd), 0.0), \
         coalesce(sum({LATENCY}), 0.0), count({LATENCY}) \
         FROM {EVENT_FROM} WHERE {filters} \
         GROUP BY 1, 2, 3 ORDER BY {order} LIMIT 1001"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
        Ok(LlmUsageRow {
            provider: text(r.get_ref(0)?),
            model: r.get(1)?,
            bucket: r.get::<_, Option<i64>>(2)?.map(Micros),
            calls: r.get::<_, i64>(3)? as u64,
            input_tokens: r.get(4)?,
            output_tokens: r.get(5)?,
            cost_usd: r.get(6)?,
            latency_ms_sum: r.get(7)?,
            latency_count: r.get::<_, i64>(8)? as u64,
        })
    })?;
    rows.collect()
}

/// A payload's `provider` when it is a string (any other JSON is no provider).
fn text(v: rusqlite::types::ValueRef<'_>) -> Option<String> {
    match v {
        rusqlite::types::ValueRef::Text(t) => String::from_utf8(t.to_vec()).ok(),
        _ => None,
    }
}
