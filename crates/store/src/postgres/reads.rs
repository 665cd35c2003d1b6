//! Listings, counts, searches and sums, with the SQLite backend's semantics.
//!
//! # Full-text search
//! A search's text is split on whitespace; each distinct term is one phrase
//! (`phraseto_tsquery` with the `simple` configuration: lower-cased, never
//! stemmed, no stop words, so any language is matched as written) and every
//! term must match, as SQLite's quoted FTS5 phrases do. User text is never
//! read as query syntax. The vector is a generated column written in the
//! appending transaction, so a search sees every acknowledged event (no
//! index lag, hence no tail scan as SQLite needs). Differences from SQLite's
//! `unicode61` tokenizer: diacritics are significant (`café` is not `cafe`),
//! and PostgreSQL's parser keeps some compound tokens whole as well as in
//! parts (`foo-bar`, `a.b`, e-mail addresses, URLs).
//!
//! # How a search is planned
//! The planner cannot see a search's terms (they are folded into one query
//! by an aggregate at run time), so it guesses a match rate, and either
//! guess is ruinous on one kind of search: walking the time index for a
//! rare term reads every event of the project, and fetching then sorting
//! every match of a common word reads hundreds of thousands. So the store
//! decides, as SQLite's planner does from its term statistics: it first
//! counts matches through the GIN index, up to `LOOKUP_MATCHES` (a
//! bounded read of the index: a bitmap of the term's entries, then as
//! many rows as counted). Up to that many, the page is cut from those
//! matches, sorted (a materialized CTE keeps the planner on the index).
//! Above it, the words are common: the page walks the listing's own order
//! (time, or seq in one session) newest first and tests each event with
//! `ts_match_vq`, the function behind `@@`, which no index can answer, so
//! the planner cannot turn it back into a bitmap of every match.
//!
//! # Counts
//! Totals are counted up to `COUNT_LIMIT`; with a full-text term, up to
//! `TEXT_COUNT_LIMIT` (the count that decides the plan goes on to
//! `LOOKUP_MATCHES`), as SQLite reports its common terms.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use agentledger_core::query::{COUNT_LIMIT, TEXT_COUNT_LIMIT};
use agentledger_core::verdict::Decision;
use agentledger_core::{Kind, Micros, ProjectId};

use super::rows::{EVENT_COLS, EVENT_FROM, SESSION_COLS, event_from_row, get, session_from_row};
use crate::{
    AgentPage, AgentSummary, Cursor, EventPage, EventQuery, LlmGroup, LlmUsageRow, Order,
    ProjectRef, SessionPage, SessionQuery, StoreError, StoreResult, UsageGroup, UsageRow,
};

/// Full-text matches above which a search's page walks the listing's order
/// instead of sorting its matches (module doc).
pub(crate) const LOOKUP_MATCHES: i64 = 5_000;

/// A statement's parameters, bound as the text is built (`$n` in order).
#[derive(Default)]
pub(crate) struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    pub(crate) fn bind<T: ToSql + Sync + Send + 'static>(&mut self, v: T) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The distinct whitespace-separated terms of a search, in order.
pub(crate) fn search_terms(text: Option<&str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.map(|t| {
        t.split_whitespace()
            .filter(|t| seen.insert(*t))
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// How a full-text term is tested (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TextMatch {
    /// `@@`, which the GIN index answers: for counting, and for searches
    /// with at most `LOOKUP_MATCHES` matches.
    Index,
    /// `ts_match_vq`, tested row by row as an ordered index is walked: for
    /// common words, whose first page is found after a few rows.
    Walk,
}

/// The WHERE clause (over `events e`) of an event listing, its count and its sums.
pub(crate) fn event_filters(p: &mut Params, project: ProjectId, q: &EventQuery) -> String {
    event_filters_with(p, project, q, TextMatch::Index)
}

/// [`event_filters`], with the full-text term tested as `how` says.
pub(crate) fn event_filters_with(
    p: &mut Params,
    project: ProjectId,
    q: &EventQuery,
    how: TextMatch,
) -> String {
    let pid = p.bind(project.0);
    let mut w = format!("e.project_id = {pid}");
    if let Some(s) = &q.session_id {
        let sid = p.bind(s.clone());
        w.push_str(&format!(
            " AND e.session_ref = (SELECT ref FROM sessions WHERE project_id = {pid} AND id = {sid})"
        ));
    }
    if let Some(a) = &q.agent_id {
        w.push_str(&format!(" AND e.agent_id = {}", p.bind(a.clone())));
    }
    if !q.kinds.is_empty() {
        let v: Vec<i16> = q.kinds.iter().map(|k| i16::from(k.code())).collect();
        w.push_str(&format!(" AND e.kind = ANY({}::int2[])", p.bind(v)));
    }
    if !q.severities.is_empty() {
        let v: Vec<i16> = q.severities.iter().map(|k| i16::from(k.code())).collect();
        w.push_str(&format!(" AND e.severity = ANY({}::int2[])", p.bind(v)));
    }
    if !q.source_types.is_empty() {
        w.push_str(&format!(
            " AND e.source_type = ANY({}::text[])",
            p.bind(q.source_types.clone())
        ));
    }
    if let Some(d) = q.dialect {
        w.push_str(&format!(" AND e.dialect = {}", p.bind(i16::from(d.code()))));
    }
    if !q.decisions.is_empty() {
        if !q.decisions.contains(&Decision::Allow) {
            // Lets the planner use the partial index over flagged and denied events.
            w.push_str(" AND e.decision > 0");
        }
        let v: Vec<i16> = q.decisions.iter().map(|d| i16::from(d.code())).collect();
        w.push_str(&format!(" AND e.decision = ANY({}::int2[])", p.bind(v)));
    }
    if let Some(m) = &q.model {
        w.push_str(&format!(" AND e.model = {}", p.bind(m.clone())));
    }
    if let Some(f) = q.from {
        w.push_str(&format!(" AND e.ts >= {}", p.bind(f.0)));
    }
    if let Some(t) = q.to {
        w.push_str(&format!(" AND e.ts <= {}", p.bind(t.0)));
    }
    let terms = search_terms(q.text.as_deref());
    if !terms.is_empty() {
        let query = format!(
            "(SELECT agentledger_tsquery_and(phraseto_tsquery('simple'::regconfig, t)) \
             FROM unnest({}::text[]) AS t)",
            p.bind(terms)
        );
        match how {
            TextMatch::Index => w.push_str(&format!(" AND e.search @@ {query}")),
            TextMatch::Walk => w.push_str(&format!(" AND ts_match_vq(e.search, {query})")),
        }
    }
    w
}

fn db(e: tokio_postgres::Error) -> StoreError {
    // The budget is reported by the caller, which knows it.
    super::errors::store_error(e, std::time::Duration::ZERO)
}

async fn count<C: GenericClient + Sync>(
    c: &C,
    filters: &str,
    p: &Params,
    cap: i64,
) -> StoreResult<i64> {
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM events e WHERE {filters} LIMIT {}) x",
        cap + 1
    );
    let row = c.query_one(&sql, &p.refs()).await.map_err(db)?;
    get(&row, "count")
}

pub(crate) async fn query_events<C: GenericClient + Sync>(
    c: &C,
    project: &ProjectRef,
    q: &EventQuery,
) -> StoreResult<EventPage> {
    let text = !search_terms(q.text.as_deref()).is_empty();
    let mut p = Params::default();
    let mut filters = event_filters(&mut p, project.id, q);
    // A search is counted first even when no total is wanted: the count
    // decides how its page is read (module doc).
    let mut how = TextMatch::Index;
    let (total, total_capped) = if text {
        let n = count(c, &filters, &p, LOOKUP_MATCHES).await?;
        if n > LOOKUP_MATCHES {
            how = TextMatch::Walk;
            p = Params::default();
            filters = event_filters_with(&mut p, project.id, q, how);
        }
        match u64::try_from(n) {
            _ if q.skip_total => (None, false),
            Ok(n) if n <= TEXT_COUNT_LIMIT => (Some(n), false),
            _ => (Some(TEXT_COUNT_LIMIT), true),
        }
    } else if q.skip_total {
        (None, false)
    } else {
        let cap = COUNT_LIMIT as i64;
        let n = count(c, &filters, &p, cap).await?;
        (Some(n.min(cap) as u64), n > cap)
    };
    // One session reads in chain order (seq); everything else in time order.
    let by_seq = q.session_id.is_some();
    let (dir, cmp) = match q.order {
        Order::Asc => ("ASC", ">"),
        Order::Desc => ("DESC", "<"),
    };
    let mut sql = format!("SELECT {EVENT_COLS} FROM {EVENT_FROM} WHERE {filters}");
    // Matches of a search with few of them are collected through the GIN
    // index first, then sorted: without the fence the planner may walk the
    // time index past every event of the project looking for them.
    let fenced = text && how == TextMatch::Index;
    if let Some(cur) = &q.cursor {
        // The cursor names the last event of the previous page; it must be
        // one of this project's (and this session's, when paging by seq).
        let row = c
            .query_opt(
                "SELECT e.ts, e.pos, e.seq FROM events e WHERE e.project_id = $1 AND e.id = $2 \
                 AND ($3::text IS NULL OR e.session_ref = \
                      (SELECT ref FROM sessions WHERE project_id = $1 AND id = $3))",
                &[&project.id.0, &cur.after, &q.session_id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::BadCursor)?;
        if by_seq {
            let seq: i64 = get(&row, "seq")?;
            sql.push_str(&format!(" AND e.seq {cmp} {}", p.bind(seq)));
        } else {
            let (ts, pos): (i64, i64) = (get(&row, "ts")?, get(&row, "pos")?);
            let (ts, pos) = (p.bind(ts), p.bind(pos));
            sql.push_str(&format!(" AND (e.ts, e.pos) {cmp} ({ts}, {pos})"));
        }
    }
    let t = if fenced {
        sql = format!("WITH m AS MATERIALIZED ({sql}) SELECT * FROM m");
        "m"
    } else {
        "e"
    };
    if by_seq {
        sql.push_str(&format!(" ORDER BY {t}.seq {dir}"));
    } else {
        sql.push_str(&format!(" ORDER BY {t}.ts {dir}, {t}.pos {dir}"));
    }
    let limit = i64::from(q.limit.max(1));
    let offset = if q.cursor.is_some() {
        0
    } else {
        i64::try_from(q.offset).unwrap_or(i64::MAX)
    };
    sql.push_str(&format!(
        " LIMIT {} OFFSET {}",
        p.bind(limit + 1),
        p.bind(offset)
    ));
    let rows = c.query(&sql, &p.refs()).await.map_err(db)?;
    let more = rows.len() as i64 > limit;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows.iter().take(limit as usize) {
        events.push(event_from_row(r, &project.name)?);
    }
    let next_cursor = if more {
        events
            .last()
            .map(|e| Cursor::after(e.id.to_bytes().to_vec()))
    } else {
        None
    };
    Ok(EventPage {
        events,
        total,
        total_capped,
        next_cursor,
    })
}

/// Sums of tokens and cost over the events matching `q` that carry usage.
pub(crate) async fn usage<C: GenericClient + Sync>(
    c: &C,
    project: &ProjectRef,
    q: &EventQuery,
    group: Option<UsageGroup>,
) -> StoreResult<Vec<UsageRow>> {
    let mut p = Params::default();
    let filters = event_filters(&mut p, project.id, q);
    let key = match group {
        None => "NULL::text",
        Some(UsageGroup::Model) => "e.model",
        Some(UsageGroup::Agent) => "e.agent_id",
        Some(UsageGroup::Session) => "s.id",
        Some(UsageGroup::Kind) => "e.kind",
    };
    let sql = format!(
        "SELECT {key} AS grp, count(*) AS n, coalesce(sum(e.input_tokens), 0)::int8 AS inp, \
         coalesce(sum(e.output_tokens), 0)::int8 AS outp, \
         coalesce(sum(e.cost_usd), 0.0)::float8 AS cost \
         FROM {EVENT_FROM} WHERE {filters} AND (e.model IS NOT NULL OR e.input_tokens IS NOT NULL \
         OR e.output_tokens IS NOT NULL OR e.cost_usd IS NOT NULL) \
         GROUP BY 1 ORDER BY 5 DESC, 3 DESC LIMIT 1000"
    );
    let rows = c.query(&sql, &p.refs()).await.map_err(db)?;
    rows.iter()
        .map(|r| {
            let group = match group {
                Some(UsageGroup::Kind) => get::<Option<i16>>(r, "grp")?
                    .and_then(|c| u8::try_from(c).ok())
                    .and_then(Kind::from_code)
                    .map(|k| k.as_str().to_owned()),
                None => None,
                Some(_) => get::<Option<String>>(r, "grp")?,
            };
            Ok(UsageRow {
                group,
                events: get::<i64>(r, "n")? as u64,
                input_tokens: get(r, "inp")?,
                output_tokens: get(r, "outp")?,
                cost_usd: get(r, "cost")?,
            })
        })
        .collect()
}

/// Monday 1970-01-05 00:00 UTC, in microseconds: weeks are counted from it.
const MONDAY: i64 = 4 * 86_400 * 1_000_000;
const WEEK: i64 = 7 * 86_400 * 1_000_000;
/// Stored JSON text (`$text`, an SQL expression) as `json`, for its members
/// to be read. The cast accepts every valid JSON text, but `->`, `->>` and
/// `json_array_elements` unescape every string of the document as they parse
/// it and fail on `\u0000` (text cannot hold NUL): one event with a NUL
/// anywhere in its payload made the project's LLM analytics an error, and one
/// session tag holding NUL every tag-filtered listing. Each `\u0000` escape
/// is read as `\ufffd` instead (U+FFFD where the NUL was), only where one is
/// an escape (after an even run of backslashes: `\\u0000` is six characters
/// of text and is read as they are), and only in a text that has one
/// (`strpos` first, the regular expression then). The text stays valid JSON.
/// The literals are escape strings (`E'...'`): they mean the same whatever
/// the server's `standard_conforming_strings`.
macro_rules! nul_safe_json {
    ($text:literal) => {
        concat!(
            "(CASE WHEN strpos(",
            $text,
            r#", E'\\u0000') > 0 THEN regexp_replace("#,
            $text,
            r#", E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u0000', E'\\1\\\\ufffd', 'g') ELSE "#,
            $text,
            " END)::json"
        )
    };
}
/// What an LLM response's payload says beyond its columns, read once per row:
/// `provider` when it is a string, `latencyMs` when it is a number (anything
/// else is neither). Joined after the event as `f`. `OFFSET 0` keeps each
/// subquery from being folded into its users: folded, the text was scanned
/// for `\u0000` and parsed again for every use of `f.provider` and
/// `f.latency` (the select list, the provider filter, the sum and the count).
const LLM_FIELDS: &str = concat!(
    " CROSS JOIN LATERAL (SELECT \
     CASE WHEN json_typeof(pj -> 'provider') = 'string' THEN pj ->> 'provider' END AS provider, \
     CASE WHEN json_typeof(pj -> 'latencyMs') = 'number' THEN (pj ->> 'latencyMs')::float8 END \
     AS latency FROM (SELECT ",
    nul_safe_json!("nullif(e.payload, '')"),
    " AS pj OFFSET 0) j OFFSET 0) f"
);

pub(crate) async fn llm_usage<C: GenericClient + Sync>(
    c: &C,
    project: &ProjectRef,
    q: &EventQuery,
    provider: Option<String>,
    group: LlmGroup,
) -> StoreResult<Vec<LlmUsageRow>> {
    let q = EventQuery {
        kinds: vec![Kind::LlmResponse],
        ..q.clone()
    };
    let mut p = Params::default();
    let mut filters = event_filters(&mut p, project.id, &q);
    if let Some(name) = provider {
        filters.push_str(&format!(" AND f.provider = {}", p.bind(name)));
    }
    let (keys, order) = match group {
        LlmGroup::Model => (
            "f.provider AS provider, e.model AS model, NULL::int8 AS bucket".to_owned(),
            "7 DESC, 5 DESC",
        ),
        LlmGroup::Time(width) => {
            let width = width.max(1);
            // Weeks start on Mondays; hours and days divide the epoch evenly.
            let origin = if width == WEEK { MONDAY } else { 0 };
            (
                format!(
                    "NULL::text AS provider, NULL::text AS model, \
                     ((e.ts - {origin}) / {width}) * {width} + {origin} AS bucket"
                ),
                "3",
            )
        }
    };
    let sql = format!(
        "SELECT {keys}, count(*) AS calls, coalesce(sum(e.input_tokens), 0)::int8 AS inp, \
         coalesce(sum(e.output_tokens), 0)::int8 AS outp, \
         coalesce(sum(e.cost_usd), 0.0)::float8 AS cost, \
         coalesce(sum(f.latency), 0.0)::float8 AS latency, count(f.latency) AS latency_n \
         FROM {EVENT_FROM}{LLM_FIELDS} WHERE {filters} \
         GROUP BY 1, 2, 3 ORDER BY {order} LIMIT 1001"
    );
    let rows = c.query(&sql, &p.refs()).await.map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(LlmUsageRow {
                provider: get(r, "provider")?,
                model: get(r, "model")?,
                bucket: get::<Option<i64>>(r, "bucket")?.map(Micros),
                calls: get::<i64>(r, "calls")? as u64,
                input_tokens: get(r, "inp")?,
                output_tokens: get(r, "outp")?,
                cost_usd: get(r, "cost")?,
                latency_ms_sum: get(r, "latency")?,
                latency_count: get::<i64>(r, "latency_n")? as u64,
            })
        })
        .collect()
}

pub(crate) async fn list_sessions<C: GenericClient + Sync>(
    c: &C,
    project: &ProjectRef,
    q: &SessionQuery,
    offset: u64,
    any_tags: &[String],
) -> StoreResult<SessionPage> {
    let mut p = Params::default();
    let pid = p.bind(project.id.0);
    let mut filters = format!("s.project_id = {pid}");
    if let Some(a) = &q.agent_id {
        filters.push_str(&format!(" AND s.agent_id = {}", p.bind(a.clone())));
    }
    if let Some(st) = q.status {
        let ended = matches!(st, agentledger_core::SessionStatus::Ended);
        filters.push_str(&format!(" AND s.ended = {}", p.bind(ended)));
    }
    if let Some(f) = q.from {
        filters.push_str(&format!(" AND s.created_at >= {}", p.bind(f.0)));
    }
    if let Some(t) = q.to {
        filters.push_str(&format!(" AND s.created_at <= {}", p.bind(t.0)));
    }
    if !any_tags.is_empty() {
        // Tags are stored as the JSON array the client sent; only its
        // string members are tags.
        filters.push_str(&format!(
            concat!(
                " AND EXISTS (SELECT 1 FROM json_array_elements(",
                nul_safe_json!("s.tags"),
                ") t WHERE json_typeof(t) = 'string' AND t #>> '{{}}' = ANY({}::text[]))"
            ),
            p.bind(any_tags.to_vec())
        ));
    }
    let total: i64 = get(
        &c.query_one(
            &format!("SELECT count(*) FROM sessions s WHERE {filters}"),
            &p.refs(),
        )
        .await
        .map_err(db)?,
        "count",
    )?;
    let mut sql = format!("SELECT {SESSION_COLS} FROM sessions s WHERE {filters}");
    if let Some(cur) = &q.cursor {
        // The cursor names the last session of the previous page, in this project.
        let id = String::from_utf8(cur.after.clone()).map_err(|_| StoreError::BadCursor)?;
        let row = c
            .query_opt(
                "SELECT created_at, ref FROM sessions WHERE project_id = $1 AND id = $2",
                &[&project.id.0, &id],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::BadCursor)?;
        let (created, r): (i64, i64) = (get(&row, "created_at")?, get(&row, "ref")?);
        let (created, r) = (p.bind(created), p.bind(r));
        sql.push_str(&format!(" AND (s.created_at, s.ref) < ({created}, {r})"));
    }
    let limit = i64::from(q.limit.max(1));
    sql.push_str(&format!(
        " ORDER BY s.created_at DESC, s.ref DESC LIMIT {} OFFSET {}",
        p.bind(limit + 1),
        p.bind(i64::try_from(offset).unwrap_or(i64::MAX))
    ));
    let rows = c.query(&sql, &p.refs()).await.map_err(db)?;
    let more = rows.len() as i64 > limit;
    let mut sessions = Vec::with_capacity(rows.len());
    for r in rows.iter().take(limit as usize) {
        sessions.push(session_from_row(r, &project.name)?);
    }
    let next_cursor = if more {
        sessions
            .last()
            .map(|s| Cursor::after(s.id.as_bytes().to_vec()))
    } else {
        None
    };
    Ok(SessionPage {
        sessions,
        total: total as u64,
        next_cursor,
    })
}

/// Agents as their sessions describe them (the ledger keeps no agent table).
pub(crate) async fn list_agents<C: GenericClient + Sync>(
    c: &C,
    project: &ProjectRef,
    only: Option<String>,
    limit: u32,
    offset: u64,
) -> StoreResult<AgentPage> {
    let mut p = Params::default();
    let mut filters = format!("project_id = {}", p.bind(project.id.0));
    if let Some(a) = only {
        filters.push_str(&format!(" AND agent_id = {}", p.bind(a)));
    }
    let total: i64 = get(
        &c.query_one(
            &format!("SELECT count(DISTINCT agent_id) AS n FROM sessions WHERE {filters}"),
            &p.refs(),
        )
        .await
        .map_err(db)?,
        "n",
    )?;
    // A session without events yet was seen when it was created.
    let sql = format!(
        "SELECT agent_id, min(coalesce(first_event_at, created_at)) AS first_seen, \
         max(coalesce(last_event_at, created_at)) AS last_seen, count(*) AS n \
         FROM sessions WHERE {filters} GROUP BY agent_id ORDER BY agent_id LIMIT {} OFFSET {}",
        p.bind(i64::from(limit.max(1))),
        p.bind(i64::try_from(offset).unwrap_or(i64::MAX))
    );
    let rows = c.query(&sql, &p.refs()).await.map_err(db)?;
    let agents = rows
        .iter()
        .map(|r| {
            Ok(AgentSummary {
                id: get(r, "agent_id")?,
                first_seen_at: Micros(get(r, "first_seen")?),
                last_seen_at: Micros(get(r, "last_seen")?),
                session_count: get::<i64>(r, "n")? as u64,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(AgentPage {
        agents,
        total: total as u64,
    })
}
