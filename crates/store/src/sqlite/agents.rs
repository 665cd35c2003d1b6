//! Agents as their sessions describe them: the ledger keeps no agent table,
//! so an agent's first and last sightings and session count are read from
//! the session rows (one index range per project, never the events).

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use agentledger_core::Micros;

use crate::{AgentPage, AgentSummary, ProjectRef};

pub(super) fn list_agents_sync(
    conn: &Connection,
    project: &ProjectRef,
    only: Option<String>,
    limit: u32,
    offset: u64,
) -> rusqlite::Result<AgentPage> {
    let mut filters = String::from("project_id = ?");
    let mut params = vec![Value::Integer(project.id.0)];
    if let Some(a) = only {
        filters.push_str(" AND agent_id = ?");
        params.push(Value::Text(a));
    }
    let total: i64 = conn.query_row(
        &format!("SELECT count(DISTINCT agent_id) FROM sessions WHERE {filters}"),
        params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    // A session without events yet was seen when it was created.
    let sql = format!(
        "SELECT agent_id, min(coalesce(first_event_at, created_at)), \
         max(coalesce(last_event_at, created_at)), count(*) \
         FROM sessions WHERE {filters} GROUP BY agent_id ORDER BY agent_id LIMIT ? OFFSET ?"
    );
    params.push(Value::Integer(i64::from(limit.max(1))));
    params.push(Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let mut stmt = conn.prepare_cached(&sql)?;
    let agents = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            Ok(AgentSummary {
                id: r.get(0)?,
                first_seen_at: Micros(r.get(1)?),
                last_seen_at: Micros(r.get(2)?),
                session_count: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(AgentPage {
        agents,
        total: total as u64,
    })
}
