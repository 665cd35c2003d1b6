//! The hourly rollups' SQL for PostgreSQL (see `crate::rollup`): one
//! UPSERT per transaction for every touched row, and the overview's range
//! reads.
//!
//! Several nodes append to one database at once, and every append of a
//! project in one hour touches the same few rows (its kind, its agent):
//! with one row per key the nodes would queue on those row locks, each
//! waiting for the other's COMMIT. So each key has up to [`SHARDS`] rows;
//! a transaction writes the shard its random lock token picks, two nodes
//! rarely pick the same one, and a read sums the shards. Within the one
//! statement rows are written in key order, so two transactions that do
//! share a shard lock its rows in the same order and cannot deadlock.

use tokio_postgres::GenericClient;

use agentledger_core::Micros;

use crate::ProjectRef;
use crate::rollup::{MAX_ROLLUP_ROWS, RollupQuery, RollupRow, Rollups, hour_of};

/// Rows per key at most (see the module doc).
pub(super) const SHARDS: i64 = 8;

/// The shard a transaction writes, from its random token.
pub(super) fn shard_of(token: i64) -> i16 {
    token.rem_euclid(SHARDS) as i16
}

/// Add a transaction's deltas to their rows (inside that transaction).
pub(super) async fn write(
    client: &impl GenericClient,
    rollups: &Rollups,
    shard: i16,
) -> Result<(), tokio_postgres::Error> {
    if rollups.is_empty() {
        return Ok(());
    }
    let n = rollups.rows.len();
    let (mut ps, mut dims, mut hours, mut keys) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut events, mut ins, mut outs, mut costs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (k, v) in &rollups.rows {
        ps.push(k.project_id);
        dims.push(k.dim.code());
        hours.push(k.hour);
        keys.push(k.key.as_str());
        events.push(v.events);
        ins.push(v.input_tokens);
        outs.push(v.output_tokens);
        costs.push(v.cost_usd);
    }
    client
        .execute(
            "INSERT INTO rollups (project_id, dim, hour, key, shard, events, input_tokens, \
             output_tokens, cost_usd) \
             SELECT p, d, h, k, $9, e, i, o, c FROM unnest($1::int8[], $2::int2[], $3::int8[], \
             $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::float8[]) AS u(p, d, h, k, e, i, o, c) \
             ON CONFLICT (project_id, dim, hour, key, shard) DO UPDATE SET \
             events = rollups.events + EXCLUDED.events, \
             input_tokens = rollups.input_tokens + EXCLUDED.input_tokens, \
             output_tokens = rollups.output_tokens + EXCLUDED.output_tokens, \
             cost_usd = rollups.cost_usd + EXCLUDED.cost_usd",
            &[
                &ps, &dims, &hours, &keys, &events, &ins, &outs, &costs, &shard,
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn read(
    client: &impl GenericClient,
    project: &ProjectRef,
    q: &RollupQuery,
) -> Result<Vec<RollupRow>, tokio_postgres::Error> {
    let from = hour_of(q.from.0);
    let limit = i64::from(q.limit.min(MAX_ROLLUP_ROWS));
    let sql = if q.by_hour {
        "SELECT hour, key, sum(events)::int8 AS events, sum(input_tokens)::int8 AS i, \
         sum(output_tokens)::int8 AS o, sum(cost_usd) AS c FROM rollups \
         WHERE project_id = $1 AND dim = $2 AND hour >= $3 AND hour < $4 \
         GROUP BY hour, key ORDER BY hour, 3 DESC, key LIMIT $5"
    } else {
        "SELECT NULL::int8 AS hour, key, sum(events)::int8 AS events, sum(input_tokens)::int8 AS i, \
         sum(output_tokens)::int8 AS o, sum(cost_usd) AS c FROM rollups \
         WHERE project_id = $1 AND dim = $2 AND hour >= $3 AND hour < $4 \
         GROUP BY key ORDER BY 3 DESC, key LIMIT $5"
    };
    let rows = client
        .query(sql, &[&project.id.0, &q.dim.code(), &from, &q.to.0, &limit])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RollupRow {
                hour: r.try_get::<_, Option<i64>>(0)?.map(Micros),
                key: r.try_get(1)?,
                events: r.try_get::<_, i64>(2)?.max(0) as u64,
                input_tokens: r.try_get(3)?,
                output_tokens: r.try_get(4)?,
                cost_usd: r.try_get(5)?,
            })
        })
        .collect()
}
