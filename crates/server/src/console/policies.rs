//! Policies (admin): the Cedar set in force for the project, an editor that
//! shows a refusal at its line, and a dry run that judges a stored session
//! with the draft and lists the verdicts that would change, before saving.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use agentledger_core::erasure::ErasureRecord;
use agentledger_core::verdict::{Verdict, decision_of};
use agentledger_core::{AgentId, NewEvent, SessionId};
use agentledger_policy::engine::{Redact, compile, schema};
use agentledger_policy::state::CHECK_SOURCE_TYPE;
use agentledger_policy::{Engine, PolicyError, SessionState, Source};

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::views::{Nav, Row};
use crate::state::AppState;

/// Events of a session a dry run judges at most (from seq 1).
pub const DRY_RUN_EVENTS: u32 = 5_000;
const MAX_POLICY_BYTES: usize = 1024 * 1024;

pub struct Line {
    pub n: usize,
    pub text: String,
    pub bad: bool,
}

pub struct Change {
    pub row: Row,
    pub before: String,
    pub after: String,
    pub why: String,
}

#[derive(Template)]
#[template(path = "console/policies.html")]
struct PoliciesPage {
    nav: Nav,
    origin: String,
    text: String,
    session: String,
    /// A refusal: its message and the draft's lines, the bad one marked.
    error: String,
    lines: Vec<Line>,
    notice: String,
    ran: bool,
    judged: usize,
    skipped: usize,
    changes: Vec<Change>,
}

fn engine(st: &AppState) -> Result<&Engine, ConsoleError> {
    st.policy.as_deref().ok_or(ConsoleError::BadRequest(
        "the policy engine is off (--no-policy)".into(),
    ))
}

fn blank(nav: Nav, origin: String, text: String) -> PoliciesPage {
    PoliciesPage {
        nav,
        origin,
        text,
        session: String::new(),
        error: String::new(),
        lines: Vec::new(),
        notice: String::new(),
        ran: false,
        judged: 0,
        skipped: 0,
        changes: Vec::new(),
    }
}

fn in_force(st: &AppState, signed: &Signed) -> Result<(String, String), ConsoleError> {
    let (c, own) = engine(st)?.current_for(signed.caller.project.id.0);
    let origin = if own {
        "this project's own set"
    } else {
        "the operator's default set"
    };
    let text = c
        .sources
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Ok((origin.into(), text))
}

pub async fn page(State(st): State<AppState>, signed: Signed) -> Result<Response, ConsoleError> {
    signed.require_admin()?;
    let (origin, text) = in_force(&st, &signed)?;
    render(&blank(Nav::new(&signed, "policies"), origin, text))
}

#[derive(Deserialize)]
pub struct PolicyForm {
    csrf: String,
    policies: String,
    #[serde(default)]
    session: String,
    action: String,
}

pub async fn submit(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<PolicyForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    if f.policies.len() > MAX_POLICY_BYTES {
        return Err(ConsoleError::BadRequest(format!(
            "the policy text is over {MAX_POLICY_BYTES} bytes"
        )));
    }
    let engine = engine(&st)?;
    let (origin, _) = in_force(&st, &signed)?;
    // Browsers send a textarea's lines with CRLF.
    let text = f.policies.replace("\r\n", "\n");
    let mut p = blank(Nav::new(&signed, "policies"), origin, text.clone());
    p.session = f.session.trim().to_owned();
    let sources = vec![Source {
        name: "console".into(),
        text: text.clone(),
    }];
    let compiled = match compile(sources.clone(), engine.schema()) {
        Ok(c) => c,
        Err(PolicyError::Invalid { line, message, .. }) => {
            p.error = format!("line {line}: {message}");
            p.lines = text
                .lines()
                .enumerate()
                .map(|(i, l)| Line {
                    n: i + 1,
                    text: l.to_owned(),
                    bad: i + 1 == line,
                })
                .collect();
            return render_status(&p, axum::http::StatusCode::BAD_REQUEST);
        }
        Err(PolicyError::Io(m)) => {
            return Err(ConsoleError::Api(crate::error::ApiError::Internal(m)));
        }
    };
    match f.action.as_str() {
        "validate" => {
            p.notice = format!(
                "Valid: {} policies. Nothing was saved.",
                compiled.info.len()
            );
            render(&p)
        }
        "dry_run" => {
            if p.session.is_empty() {
                return Err(ConsoleError::BadRequest(
                    "name a session of this project for the dry run".into(),
                ));
            }
            dry_run(&st, &signed, engine, compiled, &mut p).await?;
            render(&p)
        }
        "save" => {
            st.store
                .save_policy_set(
                    &signed.caller.project,
                    Some(crate::routes::policy::serialise(&sources)),
                )
                .await?;
            engine
                .replace_for(signed.caller.project.id.0, sources)
                .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
            tracing::info!(key = %signed.caller.key_id, project = %signed.caller.project.name, "policy set replaced through the console");
            Ok(Redirect::to("/console/policies").into_response())
        }
        _ => Err(ConsoleError::BadRequest("unknown action".into())),
    }
}

fn render_status(
    p: &PoliciesPage,
    status: axum::http::StatusCode,
) -> Result<Response, ConsoleError> {
    let mut r = render(p)?;
    *r.status_mut() = status;
    Ok(r)
}

/// Judge the session's stored events (as stored: redacted values stay
/// redacted, and a redacted event keeps its recorded findings) with the
/// draft, in seq order against a fresh session state, and list each event
/// whose decision would differ from its stored one.
/// Recorded action checks, erased events and erasure records are not judged
/// again (see the loop).
async fn dry_run(
    st: &AppState,
    signed: &Signed,
    live: &Engine,
    draft: agentledger_policy::Compiled,
    p: &mut PoliciesPage,
) -> Result<(), ConsoleError> {
    let project = &signed.caller.project;
    if st.store.get_session(project, &p.session).await?.is_none() {
        return Err(ConsoleError::NotFound("no such session in this project"));
    }
    let events = st
        .store
        .session_events(project, &p.session, 0, DRY_RUN_EVENTS)
        .await?;
    // Not redacting: the stored bytes are what the ledger keeps, and what a
    // state rebuilt from it folds.
    let engine = Engine::new(draft, schema(), live.budget, Redact::default());
    let (judged, skipped, changes) = tokio::task::spawn_blocking(move || {
        let mut state = SessionState::default();
        // The erasure records among the events read, by the seq they erase.
        let records: std::collections::HashMap<u64, ErasureRecord> = events
            .iter()
            .filter(|e| e.kind == agentledger_core::Kind::EventErased && e.erased.is_none())
            .filter_map(|e| ErasureRecord::parse(e.payload.get()).ok())
            .map(|r| (r.erased_seq, r))
            .collect();
        let (mut judged, mut skipped, mut changes) = (0, 0, Vec::new());
        for e in &events {
            let (Ok(session_id), Ok(agent_id)) = (
                SessionId::parse(e.session_id.clone()),
                AgentId::parse(e.agent_id.clone()),
            ) else {
                skipped += 1;
                continue;
            };
            // Not judged again, folded as the ledger holds them: recorded
            // checks (their proposal is not an event of its own), erased
            // events (their payload is gone: their stored verdict stands,
            // and their tool and usage come with their record) and erasure
            // records (written by the server, never judged).
            if e.source_type == CHECK_SOURCE_TYPE
                || e.erased.is_some()
                || e.kind == agentledger_core::Kind::EventErased
            {
                // An erased event counts where it stands, with its record's
                // tool and usage, when the record was read.
                match records.get(&e.seq).filter(|_| e.erased.is_some()) {
                    Some(record) => state.apply_erased(e, record),
                    None => state.apply_stored(e),
                }
                skipped += 1;
                continue;
            }
            let mut ev = NewEvent {
                session_id,
                agent_id,
                kind: e.kind,
                source_type: e.source_type.clone(),
                dialect: e.dialect,
                severity: e.severity,
                client_ts: e.client_ts,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                judgement: None,
            };
            // What redaction took from the stored payload or metadata, the
            // detectors cannot find again: such an event is judged with the
            // findings its stored verdict recorded, which are what its
            // judgement saw (a secret seen then is seen).
            let redacted =
                e.original_payload_sha256.is_some() || e.original_metadata_sha256.is_some();
            let recorded = e
                .verdict
                .as_ref()
                .filter(|_| redacted)
                .and_then(|v| serde_json::from_str::<Verdict>(v.get()).ok());
            let v = match recorded {
                Some(r) => engine.judge_stored(&mut ev, &mut state, &r.findings),
                None => engine.judge(&mut ev, &mut state, false),
            };
            judged += 1;
            let before = e
                .verdict
                .as_ref()
                .and_then(|v| decision_of(v.get()))
                .map_or("none", |d| d.as_str());
            if before != v.decision.as_str() {
                let mut why = v.policies.clone();
                why.extend(v.reasons.iter().cloned());
                changes.push(Change {
                    row: Row::of(e),
                    before: before.into(),
                    after: v.decision.as_str().into(),
                    why: why.join("; "),
                });
            }
        }
        (judged, skipped, changes)
    })
    .await
    .map_err(|e| ConsoleError::Api(crate::error::ApiError::Internal(format!("dry run: {e}"))))?;
    p.ran = true;
    p.judged = judged;
    p.skipped = skipped;
    p.changes = changes;
    Ok(())
}
