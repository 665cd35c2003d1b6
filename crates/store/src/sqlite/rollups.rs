//! The hourly rollups' SQL (see `crate::rollup`): the writer's UPSERT, one
//! per touched row of a transaction, and the overview's range reads over
//! the table's primary key (project, dimension, hour, key).

use rusqlite::{Connection, params};

use agentledger_core::Micros;

use crate::ProjectRef;
use crate::rollup::{MAX_ROLLUP_ROWS, RollupQuery, RollupRow, Rollups, hour_of};

/// Add a transaction's deltas to their rows (inside that transaction).
pub(super) fn write(conn: &Connection, rollups: &Rollups) -> rusqlite::Result<()> {
    if rollups.is_empty() {
        return Ok(());
    }
    let mut st = conn.prepare_cached(
        "INSERT INTO rollups (project_id, dim, hour, key, events, input_tokens, output_tokens, cost_usd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (project_id, dim, hour, key) DO UPDATE SET \
         events = events + excluded.events, \
         input_tokens = input_tokens + excluded.input_tokens, \
         output_tokens = output_tokens + excluded.output_tokens, \
         cost_usd = cost_usd + excluded.cost_usd",
    )?;
    for (k, v) in &rollups.rows {
        st.execute(params![
            k.project_id,
            k.dim.code(),
            k.hour,
            k.key,
            v.events,
            v.input_tokens,
            v.output_tokens,
            v.cost_usd
        ])?;
    }
    Ok(())
}

pub(super) fn read(
    conn: &Connection,
    project: &ProjectRef,
    q: &RollupQuery,
) -> rusqlite::Result<Vec<RollupRow>> {
    let from = hour_of(q.from.0);
    let limit = q.limit.min(MAX_ROLLUP_ROWS);
    let sql = if q.by_hour {
        "SELECT hour, key, events, input_tokens, output_tokens, cost_usd FROM rollups \
         WHERE project_id = ?1 AND dim = ?2 AND hour >= ?3 AND hour < ?4 \
         ORDER BY hour, events DESC, key LIMIT ?5"
    } else {
        "SELECT NULL, key, sum(events), sum(input_tokens), sum(output_tokens), sum(cost_usd) \
         FROM rollups WHERE project_id = ?1 AND dim = ?2 AND hour >= ?3 AND hour < ?4 \
         GROUP BY key ORDER BY 3 DESC, key LIMIT ?5"
    };
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(
        params![project.id.0, q.dim.code(), from, q.to.0, limit],
        |r| {
            Ok(RollupRow {
                hour: r.get::<_, Option<i64>>(0)?.map(Micros),
                key: r.get(1)?,
                events: r.get::<_, i64>(2)?.max(0) as u64,
                input_tokens: r.get(3)?,
                output_tokens: r.get(4)?,
                cost_usd: r.get(5)?,
            })
        },
    )?;
    rows.collect()
}

/// The writer's rollup deltas not yet written: the running request's
/// (dropped if it fails: its savepoint is rolled back) and its
/// transaction's (written just before COMMIT, dropped if COMMIT fails).
#[derive(Default)]
pub(super) struct Pending {
    request: Rollups,
    txn: Rollups,
}

impl Pending {
    pub(super) fn count(&mut self, project_id: i64, ev: &crate::rollup::EventFacts<'_>) {
        self.request.add(project_id, ev);
    }

    pub(super) fn count_new(
        &mut self,
        project_id: i64,
        ev: &agentledger_core::NewEvent,
        usage: &agentledger_core::usage::Usage,
        server_ts: Micros,
    ) {
        self.request.add_new(project_id, ev, usage, server_ts);
    }

    /// The running request ended: its deltas join the transaction's if it
    /// succeeded.
    pub(super) fn request_done(&mut self, ok: bool) {
        let r = std::mem::take(&mut self.request);
        if ok {
            self.txn.merge(r);
        }
    }

    /// Write the transaction's deltas (call inside it, before COMMIT); they
    /// are forgotten either way (a failed write fails the transaction).
    pub(super) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.request_done(true);
        let txn = std::mem::take(&mut self.txn);
        write(conn, &txn)
    }

    /// The transaction was rolled back: nothing of it counts.
    pub(super) fn discard(&mut self) {
        *self = Pending::default();
    }
}
