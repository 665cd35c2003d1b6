//! Hourly rollups: per project and hour, how many events there were by
//! decision, by kind, by agent and by tool (tool calls), how many findings
//! by detector, and the usage columns' sums of each group.
//!
//! Why: the console's overview asks "what happened in the last 24 hours?"
//! Answered from the events, that is a scan of every event of the day (a
//! million on a busy ledger: seconds). Answered from the rollups it is a
//! range read of at most 24 rows per key (milliseconds), and the figures are
//! exact rather than capped samples.
//!
//! State follows the ledger: the rollups are written in the same
//! transaction as the events they count (a failed transaction counts
//! nothing), and a migration builds them from the events of a ledger that
//! predates them; conformance checks that they equal a recount. A group's
//! events are first summed in memory ([`Rollups::add`]), then each touched
//! row is written once (an UPSERT adding the sums), so ingest pays a few
//! row writes per group, not per event. Rows are kept in key order, so
//! concurrent writers (two PostgreSQL nodes) lock shared rows in the same
//! order and cannot deadlock on them.
//!
//! The hour is that of the event's `ts` (the client's time if it gave one,
//! else the server's), as every time filter of the API uses. Keys of the
//! decision and kind dimensions are the pinned codes the events table
//! stores, in decimal; agent, tool and detector keys are the names.

use std::collections::BTreeMap;

use agentledger_core::usage::Usage;
use agentledger_core::verdict::Decision;
use agentledger_core::{Kind, Micros, NewEvent};

/// An hour in microseconds.
pub const HOUR: i64 = 3_600_000_000;

/// What a rollup row counts by. The codes are stored: pinned, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RollupDim {
    /// Events by decision (judged events only); key: the decision's code.
    Decision,
    /// Events by kind (every event: their sum is the hour's total); key: the kind's code.
    Kind,
    /// Events by agent id.
    Agent,
    /// Tool calls (`tool_call` events) by the tool their payload names.
    Tool,
    /// Findings by detector (an event with two findings counts twice);
    /// the usage sums of these rows are zero.
    Detector,
}

impl RollupDim {
    pub const ALL: [RollupDim; 5] = [
        RollupDim::Decision,
        RollupDim::Kind,
        RollupDim::Agent,
        RollupDim::Tool,
        RollupDim::Detector,
    ];

    /// The stored code.
    pub fn code(self) -> i16 {
        match self {
            RollupDim::Decision => 1,
            RollupDim::Kind => 2,
            RollupDim::Agent => 3,
            RollupDim::Tool => 4,
            RollupDim::Detector => 5,
        }
    }

    pub fn from_code(c: i64) -> Option<Self> {
        RollupDim::ALL
            .into_iter()
            .find(|d| i64::from(d.code()) == c)
    }
}

/// A row's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    pub project_id: i64,
    pub dim: RollupDim,
    /// The hour's start, µs since the epoch.
    pub hour: i64,
    pub key: String,
}

/// A row's sums.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RollupSums {
    pub events: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// The start of the hour holding `ts` (floored, also before 1970).
pub fn hour_of(ts: i64) -> i64 {
    ts - ts.rem_euclid(HOUR)
}

/// One group's rollup deltas, summed in memory before they are written.
#[derive(Debug, Default)]
pub struct Rollups {
    pub rows: BTreeMap<RollupKey, RollupSums>,
}

impl Rollups {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn bump(&mut self, project_id: i64, dim: RollupDim, hour: i64, key: String, usage: &Usage) {
        let s = self
            .rows
            .entry(RollupKey {
                project_id,
                dim,
                hour,
                key,
            })
            .or_default();
        s.events += 1;
        if dim != RollupDim::Detector {
            s.input_tokens += usage.input_tokens.unwrap_or(0);
            s.output_tokens += usage.output_tokens.unwrap_or(0);
            s.cost_usd += usage.cost_usd.unwrap_or(0.0);
        }
    }

    /// Count one event as the writer inserts it: with the usage columns
    /// stored for it and its server time.
    pub fn add_new(&mut self, project_id: i64, ev: &NewEvent, usage: &Usage, server_ts: Micros) {
        let j = ev.judgement.as_ref();
        self.add(
            project_id,
            &EventFacts {
                ts: ev.client_ts.unwrap_or(server_ts),
                kind: ev.kind,
                agent_id: ev.agent_id.as_str(),
                decision: j.map(|j| j.decision),
                verdict: j.map(|j| j.verdict.get()),
                payload: ev.payload.get(),
                usage,
            },
        );
    }

    /// Count one stored event.
    pub fn add(&mut self, project_id: i64, ev: &EventFacts<'_>) {
        let hour = hour_of(ev.ts.0);
        let usage = ev.usage;
        self.bump(
            project_id,
            RollupDim::Kind,
            hour,
            ev.kind.code().to_string(),
            usage,
        );
        self.bump(
            project_id,
            RollupDim::Agent,
            hour,
            ev.agent_id.to_owned(),
            usage,
        );
        if let Some(d) = ev.decision {
            self.bump(
                project_id,
                RollupDim::Decision,
                hour,
                d.code().to_string(),
                usage,
            );
        }
        for d in ev.verdict.map(detectors).unwrap_or_default() {
            self.bump(project_id, RollupDim::Detector, hour, d, usage);
        }
        if ev.kind == Kind::ToolCall
            && let Some(tool) = agentledger_core::payload::tool_name_in(ev.kind, ev.payload)
        {
            self.bump(project_id, RollupDim::Tool, hour, tool, usage);
        }
    }

    /// Add another group's deltas (a request that succeeded joins its
    /// transaction's).
    pub fn merge(&mut self, other: Rollups) {
        for (k, v) in other.rows {
            let s = self.rows.entry(k).or_default();
            s.events += v.events;
            s.input_tokens += v.input_tokens;
            s.output_tokens += v.output_tokens;
            s.cost_usd += v.cost_usd;
        }
    }
}

/// The facts of one event a rollup counts.
pub struct EventFacts<'a> {
    /// The event's `ts`: the client's time, else the server's.
    pub ts: Micros,
    pub kind: Kind,
    pub agent_id: &'a str,
    pub decision: Option<Decision>,
    /// The stored verdict (JSON text).
    pub verdict: Option<&'a str>,
    pub payload: &'a str,
    /// The usage columns as stored.
    pub usage: &'a Usage,
}

impl<'a> EventFacts<'a> {
    /// The facts of a stored event, with its stored derived columns.
    pub fn stored(ev: &'a agentledger_core::Event, cols: &'a crate::DerivedColumns) -> Self {
        EventFacts {
            ts: ev.time(),
            kind: ev.kind,
            agent_id: &ev.agent_id,
            decision: cols.decision,
            verdict: ev.verdict.as_ref().map(|v| v.get()),
            payload: ev.payload.get(),
            usage: &cols.usage,
        }
    }
}

/// The `detector` of each finding of a stored verdict (those that are strings).
fn detectors(verdict: &str) -> Vec<String> {
    // Most verdicts have no findings: skip the parse.
    if !verdict.contains("\"detector\"") {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(verdict) else {
        return Vec::new();
    };
    v.get("findings")
        .and_then(serde_json::Value::as_array)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f.get("detector").and_then(serde_json::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// What [`crate::EventStore::rollups`] reads: one dimension over whole
/// hours `[from, to)`, summed per key over the range or per hour and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupQuery {
    pub dim: RollupDim,
    /// Start of the first hour (floored to an hour).
    pub from: Micros,
    /// End of the range (exclusive).
    pub to: Micros,
    /// Per hour and key (else per key over the whole range).
    pub by_hour: bool,
    /// Rows at most (the largest counts first when not by hour). Capped at
    /// [`MAX_ROLLUP_ROWS`].
    pub limit: u32,
}

/// The most rows one rollup read returns.
pub const MAX_ROLLUP_ROWS: u32 = 10_000;

/// One answer row of a rollup read.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    /// The hour (by hour; else `None`).
    pub hour: Option<Micros>,
    pub key: String,
    pub events: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_floor_also_before_the_epoch() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR - 1), 0);
        assert_eq!(hour_of(HOUR), HOUR);
        assert_eq!(hour_of(-1), -HOUR);
    }

    #[test]
    fn dimension_codes_are_pinned() {
        let codes: Vec<i16> = RollupDim::ALL.iter().map(|d| d.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
        for d in RollupDim::ALL {
            assert_eq!(RollupDim::from_code(i64::from(d.code())), Some(d));
        }
    }

    #[test]
    fn detectors_are_read_from_findings() {
        let v = r#"{"decision":"flag","policies":[],"reasons":[],"findings":[
            {"detector":"pii","rule":"ssn","json_pointer":"/payload/x","start":0,"end":1,"confidence":1},
            {"detector":"secrets","rule":"k","json_pointer":"/payload/y","start":0,"end":1,"confidence":1}]}"#;
        assert_eq!(detectors(v), ["pii", "secrets"]);
        assert!(detectors(r#"{"findings":[]}"#).is_empty());
    }
}
