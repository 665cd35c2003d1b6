//! Cedar policies over events. The event is the request; `forbid` denies,
//! `permit` allows, and policies annotated `@effect("flag")` flag. The verdict
//! names every policy that decided it and their `@reason`s.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use lru::LruCache;
use miette::Diagnostic;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use agentledger_core::chain::redaction_commitment;
use agentledger_core::usage::Usage;
use agentledger_core::verdict::{Decision, Finding, Judgement, Verdict};
use agentledger_core::{Kind, NewEvent};

use crate::detect::{Detectors, Scan};
use crate::state::SessionState;

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../cedar/agentledger.cedarschema");
/// The built-in policy set.
pub const DEFAULT_POLICIES: &str = include_str!("../cedar/default.cedar");

/// Reason recorded when detectors and policies ran out of time.
pub const BUDGET_EXCEEDED: &str = "evaluation_budget_exceeded";
/// Most argument tags on a resource, and the longest tag value kept.
const MAX_TAGS: usize = 64;
const MAX_TAG_BYTES: usize = 4096;
const MAX_ARGUMENTS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A policy that does not parse or validate: where, and why.
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Io(String),
}

/// One policy as loaded, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// What it decides: `allow`, `deny` or `flag`.
    pub decides: Decision,
    pub reason: Option<String>,
    /// The file (or `api`, `default`) it came from.
    pub source: String,
    pub text: String,
}

/// A named policy text (a file, or a body sent through the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A validated policy set, split by what its policies decide.
pub struct Compiled {
    main: PolicySet,
    flag_permit: PolicySet,
    flag_forbid: PolicySet,
    pub info: Vec<PolicyInfo>,
    pub sources: Vec<Source>,
    reasons: std::collections::HashMap<String, String>,
    /// The request attributes some policy's text names: the request carries
    /// only those (Cedar has no computed attribute names, so an attribute
    /// whose name no policy contains cannot be read). Found once, at compile.
    used: HashSet<&'static str>,
}

/// Every context and session attribute the engine can supply, plus `Tag`
/// (resource tags) and `session` (the session record).
const ATTRIBUTES: &[&str] = &[
    "Tag",
    "session",
    "kind",
    "source_type",
    "dialect",
    "severity",
    "tool",
    "model",
    "arguments",
    "findings",
    "detectors",
    "check",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "events",
    "tool_calls",
    "this_tool_calls",
    "tools",
    "secret_seen",
    "pii_seen",
    "untrusted_input_seen",
    "total_tokens",
    "denied",
    "flagged",
];

impl Compiled {
    fn uses(&self, name: &str) -> bool {
        debug_assert!(ATTRIBUTES.contains(&name), "{name} missing from ATTRIBUTES");
        self.used.contains(name)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..text.floor_char_boundary(offset.min(text.len()))]
        .matches('\n')
        .count()
        + 1
}

/// The line of the `nth` (0-based) occurrence of `needle` in `text`.
fn nth_line(text: &str, needle: &str, nth: usize) -> usize {
    text.match_indices(needle)
        .nth(nth)
        .map_or(1, |(i, _)| line_of(text, i))
}

/// The first labelled location of a diagnostic, as a line in `text`.
fn diag_line(d: &dyn Diagnostic, text: &str) -> usize {
    d.labels()
        .and_then(|mut l| l.next())
        .map_or(1, |l| line_of(text, l.offset()))
}

fn invalid(file: &str, line: usize, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        file: file.to_owned(),
        line,
        message: message.into(),
    }
}

pub fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| panic!("the shipped Cedar schema is invalid: {e:?}"))
}

/// Parse and validate policy texts; the first problem refuses the whole set.
pub fn compile(sources: Vec<Source>, schema: &Schema) -> Result<Compiled, PolicyError> {
    let validator = Validator::new(schema.clone());
    let mut c = Compiled {
        main: PolicySet::new(),
        flag_permit: PolicySet::new(),
        flag_forbid: PolicySet::new(),
        info: Vec::new(),
        sources: Vec::new(),
        reasons: Default::default(),
        used: ATTRIBUTES
            .iter()
            .copied()
            .filter(|a| sources.iter().any(|s| s.text.contains(a)))
            .collect(),
    };
    let mut ids = HashSet::new();
    for src in &sources {
        let parsed = PolicySet::from_str(&src.text).map_err(|e| {
            let line = diag_line(&e, &src.text);
            invalid(&src.name, line, e.to_string() + &detail(&e))
        })?;
        if parsed.templates().next().is_some() {
            return Err(invalid(&src.name, 1, "policy templates are not supported"));
        }
        let mut file_set = PolicySet::new();
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        // Keep the file's order (ids are policy0, policy1, … in order).
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        for (n, p) in policies.into_iter().enumerate() {
            let id = p
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}#{}", src.name, n + 1));
            if !ids.insert(id.clone()) {
                let line = nth_line(&src.text, &format!("\"{id}\""), 1);
                return Err(invalid(
                    &src.name,
                    line,
                    format!("duplicate policy id {id:?}"),
                ));
            }
            let effect_ann = p.annotation("effect");
            let flag = match effect_ann {
                None => false,
                Some("flag") => true,
                Some(other) => {
                    let line = nth_line(&src.text, &format!("\"{other}\""), 0);
                    return Err(invalid(
                        &src.name,
                        line,
                        format!("@effect({other:?}): the only effect annotation is \"flag\""),
                    ));
                }
            };
            let policy = p.new_id(PolicyId::new(&id));
            let text = p.to_string();
            let decides = match (flag, p.effect()) {
                (true, _) => Decision::Flag,
                (false, Effect::Forbid) => Decision::Deny,
                (false, Effect::Permit) => Decision::Allow,
            };
            if let Some(r) = p.annotation("reason") {
                c.reasons.insert(id.clone(), r.to_owned());
            }
            c.info.push(PolicyInfo {
                id: id.clone(),
                effect: match p.effect() {
                    Effect::Permit => "permit".into(),
                    Effect::Forbid => "forbid".into(),
                },
                decides,
                reason: p.annotation("reason").map(str::to_owned),
                source: src.name.clone(),
                text,
            });
            let target = match (flag, p.effect()) {
                (false, _) => &mut c.main,
                (true, Effect::Permit) => &mut c.flag_permit,
                (true, Effect::Forbid) => &mut c.flag_forbid,
            };
            target
                .add(policy.clone())
                .map_err(|e| invalid(&src.name, 1, e.to_string()))?;
            file_set
                .add(policy)
                .map_err(|e| invalid(&src.name, 1, e.to_string()))?;
        }
        let result = validator.validate(&file_set, ValidationMode::Strict);
        if let Some(e) = result.validation_errors().next() {
            let line = diag_line(e, &src.text);
            return Err(invalid(&src.name, line, e.to_string() + &detail(e)));
        }
    }
    c.sources = sources;
    Ok(c)
}

/// A diagnostic's help text, when it has one.
fn detail(d: &dyn Diagnostic) -> String {
    d.help().map(|h| format!(" ({h})")).unwrap_or_default()
}

/// Which detectors' matches are removed from stored payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redact {
    pub secrets: bool,
    pub pii: bool,
}

impl FromStr for Redact {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut r = Redact::default();
        for part in s.split(',').map(str::trim) {
            match part {
                "off" | "" => {}
                "secrets" => r.secrets = true,
                "pii" => r.pii = true,
                other => {
                    return Err(format!(
                        "unknown redaction {other:?}: use off, secrets or secrets,pii"
                    ));
                }
            }
        }
        Ok(r)
    }
}

/// An event's detector results and everything of its Cedar request that
/// does not read the session, before the session is read (see
/// [`Engine::scan`]). The parsed payload is dropped with the scan: deciding
/// (on the store's writer) touches only what is here.
pub struct Scanned {
    /// Time the scan took: the evaluation budget counts it and the decision,
    /// not any wait between them (a session's lock).
    spent: Duration,
    /// The set that judges the event: the one in force when it was scanned.
    compiled: Arc<Compiled>,
    check: bool,
    /// The decision, when no policy of the set reads the session (so it
    /// needs nothing the writer holds); else what it needs to be made.
    pending: Pending,
    scan: Scan,
    tool: Option<String>,
    usage: Option<Usage>,
    /// The payload and metadata as stored, when redaction changed them.
    redaction: Option<Redaction>,
    /// The tool and usage the stored payload states, when redaction changed
    /// the payload: what the session's state holds ([`Engine::decide`]).
    stored_tool_usage: Option<(Option<String>, Option<Usage>)>,
}

/// How far a scanned event's decision got.
enum Pending {
    /// The request's session-free parts, or why the event cannot be
    /// expressed: decided against the session's state.
    Request(Result<Box<Prepared>, String>),
    /// Decided at the scan: no policy of the set reads the session.
    Decided(Verdict, Judgement),
}

/// A Cedar request without its `session` record.
struct Prepared {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    entities: Entities,
    pairs: Vec<(String, RestrictedExpression)>,
}

/// What redaction makes of an event: the redacted texts and the keyed
/// commitments to the originals (see [`Engine::redaction`]).
struct Redaction {
    payload: Option<Box<RawValue>>,
    metadata: Option<Box<RawValue>>,
    original_payload_sha256: Option<[u8; 32]>,
    original_metadata_sha256: Option<[u8; 32]>,
    salt: [u8; 32],
}

/// The engine: detectors, the current policy set (swapped atomically) and the
/// per-session state.
pub struct Engine {
    schema: Schema,
    /// The operator's default set: judges every project that has none of its own.
    policies: RwLock<Arc<Compiled>>,
    /// Sets that projects' admins put in force, by project id.
    projects: RwLock<HashMap<i64, Arc<Compiled>>>,
    detectors: Detectors,
    authorizer: Authorizer,
    pub budget: Duration,
    pub redact: Redact,
}

impl Engine {
    pub fn new(policies: Compiled, schema: Schema, budget: Duration, redact: Redact) -> Engine {
        Engine {
            schema,
            policies: RwLock::new(Arc::new(policies)),
            projects: RwLock::new(HashMap::new()),
            detectors: Detectors::new(),
            authorizer: Authorizer::new(),
            budget,
            redact,
        }
    }

    /// The built-in set.
    pub fn with_defaults(budget: Duration, redact: Redact) -> Result<Engine, PolicyError> {
        let schema = schema();
        let c = compile(
            vec![Source {
                name: "default".into(),
                text: DEFAULT_POLICIES.into(),
            }],
            &schema,
        )?;
        Ok(Engine::new(c, schema, budget, redact))
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn current(&self) -> Arc<Compiled> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validate `sources` and, only if all of them pass, make them the
    /// operator's default set.
    pub fn replace(&self, sources: Vec<Source>) -> Result<Arc<Compiled>, PolicyError> {
        let c = Arc::new(compile(sources, &self.schema)?);
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = c.clone();
        Ok(c)
    }

    /// The set that judges `project`: its own, else the operator's default.
    /// The flag says whether it is the project's own.
    pub fn current_for(&self, project: i64) -> (Arc<Compiled>, bool) {
        let own = self
            .projects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&project)
            .cloned();
        match own {
            Some(c) => (c, true),
            None => (self.current(), false),
        }
    }

    /// Validate `sources` and, only if all of them pass, make them the set
    /// that judges `project` (and no other project).
    pub fn replace_for(
        &self,
        project: i64,
        sources: Vec<Source>,
    ) -> Result<Arc<Compiled>, PolicyError> {
        let c = Arc::new(compile(sources, &self.schema)?);
        self.projects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(project, c.clone());
        Ok(c)
    }

    /// Drop `project`'s own set: the operator's default judges it again.
    pub fn clear_for(&self, project: i64) {
        self.projects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&project);
    }

    /// Judge an event against the session so far: attach the verdict (and
    /// redact, if configured), then fold the event into the session.
    pub fn judge(&self, ev: &mut NewEvent, state: &mut SessionState, check: bool) -> Verdict {
        let compiled = self.current();
        self.judge_with(&compiled, ev, state, check)
    }

    /// Judge an event of `project` with the set in force for that project.
    pub fn judge_for(
        &self,
        project: i64,
        ev: &mut NewEvent,
        state: &mut SessionState,
        check: bool,
    ) -> Verdict {
        let (compiled, _) = self.current_for(project);
        self.judge_with(&compiled, ev, state, check)
    }

    /// [`Engine::judge`] of an event as the ledger stored it, whose payload
    /// or metadata redaction changed, with the set in force (the console's
    /// dry run makes an engine of its draft): the detectors cannot see again
    /// what redaction took, so the event is judged with the findings its
    /// stored verdict recorded (`recorded`), which are what its judgement
    /// saw, and is not redacted again (its bytes are what the ledger keeps).
    pub fn judge_stored(
        &self,
        ev: &mut NewEvent,
        state: &mut SessionState,
        recorded: &[Finding],
    ) -> Verdict {
        let compiled = self.current();
        let scanned = self.scan_with(&compiled, ev, false, Some(recorded));
        self.decide(ev, scanned, state)
    }

    fn judge_with(
        &self,
        compiled: &Arc<Compiled>,
        ev: &mut NewEvent,
        state: &mut SessionState,
        check: bool,
    ) -> Verdict {
        let scanned = self.scan_with(compiled, ev, check, None);
        self.decide(ev, scanned, state)
    }

    /// The part of judging that does not read the session: parse the
    /// payload and metadata, run the detectors, find the tool, arguments and
    /// usage, build the Cedar request's session-free parts with the set in
    /// force for `project`, and redact. Pure and the costly part, so callers
    /// may run it for many events in parallel, outside any lock, then
    /// [`Engine::decide`] each in session order. `check`: the event is a
    /// proposed action, not a record of one.
    pub fn scan(&self, project: i64, ev: &NewEvent, check: bool) -> Scanned {
        let (compiled, _) = self.current_for(project);
        self.scan_with(&compiled, ev, check, None)
    }

    /// `recorded`: a stored event's findings, as its judgement made them: not
    /// scanned for again, nor redacted ([`Engine::judge_stored`]).
    fn scan_with(
        &self,
        compiled: &Arc<Compiled>,
        ev: &NewEvent,
        check: bool,
        recorded: Option<&[Finding]>,
    ) -> Scanned {
        let started = Instant::now();
        let deadline = started + self.budget;
        let payload: Value = serde_json::from_str(ev.payload.get()).unwrap_or(Value::Null);
        let metadata: Value = serde_json::from_str(ev.metadata.get()).unwrap_or(Value::Null);
        let mut scan = Scan::default();
        match recorded {
            Some(findings) => scan.findings = findings.to_vec(),
            None => {
                self.detectors
                    .scan_value("/payload", &payload, deadline, &mut scan);
                self.detectors
                    .scan_value("/metadata", &metadata, deadline, &mut scan);
            }
        }
        let (tool, arguments) = tool_and_arguments(ev.kind, &payload);
        let usage = Usage::of(ev.kind, ev.payload.get());
        let request = self.prepare(
            compiled,
            ev,
            &payload,
            tool.as_deref(),
            arguments.as_ref(),
            usage.as_ref(),
            &scan,
            check,
        );
        let redaction = match recorded {
            Some(_) => None,
            None => self.redaction(ev, payload, metadata, &scan.findings),
        };
        let stored_tool_usage = redaction
            .as_ref()
            .and_then(|r| r.payload.as_deref())
            .map(|p| {
                (
                    agentledger_core::payload::tool_name_in(ev.kind, p.get()),
                    Usage::of(ev.kind, p.get()),
                )
            });
        let pending = if compiled.uses("session") {
            Pending::Request(request)
        } else {
            // The default set (detectors only) and any set without flow
            // rules: the same answer whatever the session holds, so it is
            // made here, in parallel, not on the store's serial writer.
            let verdict = self.evaluate(
                compiled,
                request,
                &scan,
                tool.as_deref(),
                &SessionState::default(),
            );
            let (verdict, judgement) = self.conclude(verdict, &scan, started.elapsed());
            Pending::Decided(verdict, judgement)
        };
        Scanned {
            spent: started.elapsed(),
            compiled: compiled.clone(),
            check,
            pending,
            scan,
            tool,
            usage,
            redaction,
            stored_tool_usage,
        }
    }

    /// The part of judging that reads the session: Cedar against the state,
    /// the verdict attached (and the redaction the scan made), then the event
    /// folded into the state. `scanned` must be this event's [`Engine::scan`];
    /// the event is judged by the set that was in force then.
    pub fn decide(&self, ev: &mut NewEvent, scanned: Scanned, state: &mut SessionState) -> Verdict {
        let decided_from = Instant::now();
        let Scanned {
            spent,
            compiled,
            check,
            pending,
            scan,
            tool,
            usage,
            redaction,
            stored_tool_usage,
        } = scanned;
        // The event is judged by what the agent sent, but the state holds
        // what the ledger keeps: a state rebuilt from the ledger
        // (`SessionState::apply_stored`, after a restart or on another node)
        // reads the stored, redacted payload, and must be this one even
        // where redaction took a tool name or a usage figure. So the tool's
        // earlier calls are looked up, and this one counted, under the name
        // the ledger keeps.
        let (tool, usage) = stored_tool_usage.unwrap_or((tool, usage));
        let (verdict, mut judgement) = match pending {
            Pending::Decided(verdict, judgement) => (verdict, judgement),
            Pending::Request(request) => {
                let verdict = self.evaluate(&compiled, request, &scan, tool.as_deref(), state);
                self.conclude(verdict, &scan, spent + decided_from.elapsed())
            }
        };
        if let Some(r) = redaction {
            judgement.redaction_salt = Some(r.salt);
            if let Some(p) = r.payload {
                ev.payload = p;
                judgement.original_payload_sha256 = r.original_payload_sha256;
            }
            if let Some(m) = r.metadata {
                ev.metadata = m;
                judgement.original_metadata_sha256 = r.original_metadata_sha256;
            }
        }
        ev.judgement = Some(judgement);
        state.apply(
            ev.kind,
            check,
            tool.as_deref(),
            usage.as_ref(),
            Some(&verdict),
        );
        verdict
    }

    /// The verdict with what the scan adds (a spent budget, findings not
    /// listed), and its stored text.
    fn conclude(&self, mut verdict: Verdict, scan: &Scan, spent: Duration) -> (Verdict, Judgement) {
        if scan.budget_exceeded || spent > self.budget {
            verdict.reasons.push(BUDGET_EXCEEDED.into());
            verdict.decision = verdict.decision.max(Decision::Flag);
        }
        if scan.dropped > 0 {
            verdict
                .reasons
                .push(format!("{} more findings not listed", scan.dropped));
        }
        let judgement = Judgement::new(&verdict);
        (verdict, judgement)
    }

    /// Cedar's answer for a prepared request with the session's record.
    fn evaluate(
        &self,
        c: &Compiled,
        request: Result<Box<Prepared>, String>,
        scan: &Scan,
        tool: Option<&str>,
        state: &SessionState,
    ) -> Verdict {
        let mut verdict = Verdict {
            decision: Decision::Allow,
            policies: Vec::new(),
            reasons: Vec::new(),
            findings: scan.findings.clone(),
        };
        let request = request.and_then(|r| finish(c, *r, tool, state));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                // Never silently allowed: an event the engine cannot express is flagged.
                verdict.decision = Decision::Flag;
                verdict.reasons.push(format!("policy_error: {e}"));
                return verdict;
            }
        };
        let (req, entities) = request;
        let reason_of = |id: &str, verdict: &mut Verdict| {
            verdict.policies.push(id.to_owned());
            if let Some(r) = c.reasons.get(id) {
                verdict.reasons.push(r.clone());
            }
        };
        let main = if c.main.is_empty() {
            None
        } else {
            Some(self.authorizer.is_authorized(&req, &c.main, &entities))
        };
        let main = main.as_ref();
        let determining: Vec<String> = main
            .map(|m| m.diagnostics().reason().map(|p| p.to_string()).collect())
            .unwrap_or_default();
        let mut errors: Vec<String> = main
            .map(|m| m.diagnostics().errors().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        let denied =
            main.is_some_and(|m| m.decision() == CedarDecision::Deny) && !determining.is_empty();
        if denied {
            verdict.decision = Decision::Deny;
        }
        let mut flags = Vec::new();
        for set in [&c.flag_permit, &c.flag_forbid] {
            if set.is_empty() {
                continue;
            }
            let r = self.authorizer.is_authorized(&req, set, &entities);
            flags.extend(r.diagnostics().reason().map(|p| p.to_string()));
            errors.extend(r.diagnostics().errors().map(|e| e.to_string()));
        }
        if !flags.is_empty() && verdict.decision < Decision::Flag {
            verdict.decision = Decision::Flag;
        }
        for id in determining.iter().chain(&flags) {
            reason_of(id, &mut verdict);
        }
        if !errors.is_empty() {
            verdict.decision = verdict.decision.max(Decision::Flag);
            for e in errors {
                verdict.reasons.push(format!("policy_error: {e}"));
            }
        }
        verdict
    }

    /// The request's parts that do not read the session.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        c: &Compiled,
        ev: &NewEvent,
        payload: &Value,
        tool: Option<&str>,
        arguments: Option<&Value>,
        usage: Option<&Usage>,
        scan: &Scan,
        check: bool,
    ) -> Result<Box<Prepared>, String> {
        let principal = uid("Agent", ev.agent_id.as_str())?;
        let action = uid("Action", ev.kind.as_str())?;
        let model = usage
            .and_then(|u| u.model.clone())
            .or_else(|| {
                payload
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let (rtype, rid) = match ev.kind {
            Kind::ToolCall | Kind::ToolResponse | Kind::ToolError => {
                ("Tool", tool.unwrap_or("unknown").to_owned())
            }
            Kind::LlmCall | Kind::LlmResponse | Kind::Embedding | Kind::CostTracked => (
                "Model",
                if model.is_empty() {
                    "unknown".into()
                } else {
                    model.clone()
                },
            ),
            Kind::Memory => (
                "Memory",
                memory_key(payload).unwrap_or("unknown").to_owned(),
            ),
            k => ("Target", k.as_str().to_owned()),
        };
        let resource = uid(rtype, &rid)?;
        let entities = if c.uses("Tag") {
            let tags = match (rtype, arguments) {
                ("Tool", Some(Value::Object(m))) => tags_of(m),
                (_, _) => payload.as_object().map(tags_of).unwrap_or_default(),
            };
            Entities::from_entities(
                [
                    Entity::new_no_attrs(principal.clone(), HashSet::new()),
                    Entity::new_with_tags(resource.clone(), [], [], tags)
                        .map_err(|e| e.to_string())?,
                ],
                None,
            )
            .map_err(|e| e.to_string())?
        } else {
            Entities::empty()
        };
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let n = |v: i64| RestrictedExpression::new_long(v);
        let set = |it: &mut dyn Iterator<Item = &str>| RestrictedExpression::new_set(it.map(s));
        let b = RestrictedExpression::new_bool;
        // Each attribute is built only when some policy names it.
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::new();
        let mut add = |name: &str, f: &mut dyn FnMut() -> RestrictedExpression| {
            if c.uses(name) {
                pairs.push((name.to_owned(), f()));
            }
        };
        add("kind", &mut || s(ev.kind.as_str()));
        add("source_type", &mut || s(&ev.source_type));
        add("dialect", &mut || s(ev.dialect.as_str()));
        add("severity", &mut || s(ev.severity.as_str()));
        add("tool", &mut || s(tool.unwrap_or("")));
        add("model", &mut || s(&model));
        add("arguments", &mut || {
            RestrictedExpression::new_string(
                arguments
                    .map(|a| truncate(&a.to_string(), MAX_ARGUMENTS_BYTES))
                    .unwrap_or_default(),
            )
        });
        add("findings", &mut || {
            let mut rules: Vec<&str> = scan.findings.iter().map(|f| f.rule.as_str()).collect();
            rules.sort_unstable();
            rules.dedup();
            set(&mut rules.into_iter())
        });
        add("detectors", &mut || {
            let mut d: Vec<&str> = scan.findings.iter().map(|f| f.detector.as_str()).collect();
            d.sort_unstable();
            d.dedup();
            set(&mut d.into_iter())
        });
        add("check", &mut || b(check));
        add("input_tokens", &mut || {
            n(usage.and_then(|u| u.input_tokens).unwrap_or(0))
        });
        add("output_tokens", &mut || {
            n(usage.and_then(|u| u.output_tokens).unwrap_or(0))
        });
        add("cost_usd", &mut || {
            decimal(usage.and_then(|u| u.cost_usd).unwrap_or(0.0))
        });
        Ok(Box::new(Prepared {
            principal,
            action,
            resource,
            entities,
            pairs,
        }))
    }

    /// Matched spans replaced in the payload and metadata, as redaction is
    /// configured; `None` when nothing changed.
    fn redaction(
        &self,
        ev: &NewEvent,
        mut payload: Value,
        mut metadata: Value,
        findings: &[Finding],
    ) -> Option<Redaction> {
        let wanted = |f: &&Finding| {
            (self.redact.secrets && f.detector == "secrets")
                || (self.redact.pii && f.detector == "pii")
        };
        let chosen: Vec<&Finding> = findings.iter().filter(wanted).collect();
        if chosen.is_empty() {
            return None;
        }
        let mut changed_payload = false;
        let mut changed_metadata = false;
        for (root, value, changed) in [
            ("/payload", &mut payload, &mut changed_payload),
            ("/metadata", &mut metadata, &mut changed_metadata),
        ] {
            let mut by_pointer: std::collections::BTreeMap<&str, Vec<&Finding>> =
                Default::default();
            for f in chosen.iter().filter(|f| f.json_pointer.starts_with(root)) {
                by_pointer
                    .entry(&f.json_pointer[root.len()..])
                    .or_default()
                    .push(f);
            }
            for (ptr, mut fs) in by_pointer {
                // A card number or SSN sent as a JSON number: its finding
                // covers the number's text; the number becomes the marker.
                if let Some(slot @ Value::Number(_)) = value.pointer_mut(ptr) {
                    let text = slot.to_string();
                    if let Some(f) = fs.iter().find(|f| f.start == 0 && f.end == text.len()) {
                        *slot = Value::String(format!("[REDACTED:{}]", f.rule));
                        *changed = true;
                    }
                    continue;
                }
                let Some(Value::String(s)) = value.pointer_mut(ptr) else {
                    continue;
                };
                fs.sort_by_key(|f| std::cmp::Reverse(f.start));
                let mut last_start = usize::MAX;
                for f in fs {
                    if f.end > last_start
                        || f.end > s.len()
                        || !s.is_char_boundary(f.start)
                        || !s.is_char_boundary(f.end)
                    {
                        continue;
                    }
                    s.replace_range(f.start..f.end, &format!("[REDACTED:{}]", f.rule));
                    last_start = f.start;
                    *changed = true;
                }
            }
        }
        // The originals are committed to with a keyed hash under a fresh
        // random salt (stored apart from the event, destroyable): a plain
        // digest of a redacted SSN was reversed by trying every SSN.
        if !(changed_payload || changed_metadata) {
            return None;
        }
        let salt = agentledger_core::keys::generate_salt();
        let redacted = |changed: bool, v: &Value| {
            changed
                .then(|| serde_json::to_string(v).ok())
                .flatten()
                .and_then(|t| RawValue::from_string(t).ok())
        };
        let (payload, metadata) = (
            redacted(changed_payload, &payload),
            redacted(changed_metadata, &metadata),
        );
        if payload.is_none() && metadata.is_none() {
            return None;
        }
        Some(Redaction {
            original_payload_sha256: payload
                .as_ref()
                .map(|_| redaction_commitment(&salt, ev.payload.get().as_bytes())),
            original_metadata_sha256: metadata
                .as_ref()
                .map(|_| redaction_commitment(&salt, ev.metadata.get().as_bytes())),
            payload,
            metadata,
            salt,
        })
    }
}

/// The request with the session's record, when some policy reads it.
fn finish(
    c: &Compiled,
    r: Prepared,
    tool: Option<&str>,
    state: &SessionState,
) -> Result<(Request, Entities), String> {
    let Prepared {
        principal,
        action,
        resource,
        entities,
        mut pairs,
    } = r;
    let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let n = |v: i64| RestrictedExpression::new_long(v);
    let set = |it: &mut dyn Iterator<Item = &str>| RestrictedExpression::new_set(it.map(s));
    let b = RestrictedExpression::new_bool;
    let mut session = None;
    if c.uses("session") {
        let this_tool = tool.map_or(0, |t| state.calls_of(t));
        let mut fields: Vec<(String, RestrictedExpression)> = Vec::new();
        let mut put = |name: &str, f: &mut dyn FnMut() -> RestrictedExpression| {
            if c.uses(name) {
                fields.push((name.to_owned(), f()));
            }
        };
        put("events", &mut || n(state.events as i64));
        put("tool_calls", &mut || n(state.tool_calls as i64));
        put("this_tool_calls", &mut || n(this_tool as i64));
        put("tools", &mut || {
            set(&mut state.tools.keys().map(String::as_str))
        });
        put("findings", &mut || {
            set(&mut state.findings.iter().map(String::as_str))
        });
        put("detectors", &mut || {
            set(&mut state.detectors.iter().map(String::as_str))
        });
        put("secret_seen", &mut || b(state.secret_seen()));
        put("pii_seen", &mut || b(state.pii_seen()));
        put("untrusted_input_seen", &mut || {
            b(state.untrusted_input_seen())
        });
        put("input_tokens", &mut || n(state.input_tokens));
        put("output_tokens", &mut || n(state.output_tokens));
        put("total_tokens", &mut || {
            n(state.input_tokens.saturating_add(state.output_tokens))
        });
        put("cost_usd", &mut || decimal(state.cost_usd));
        put("denied", &mut || n(state.denied as i64));
        put("flagged", &mut || n(state.flagged as i64));
        session = Some(RestrictedExpression::new_record(fields).map_err(|e| e.to_string())?);
    }
    if let Some(sess) = session {
        pairs.push(("session".to_owned(), sess));
    }
    let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
    let req =
        Request::new(principal, action, resource, context, None).map_err(|e| e.to_string())?;
    Ok((req, entities))
}

/// The entity type names requests use, parsed once (parsing one runs the
/// Cedar parser, which costs more than evaluating the default policy set).
static TYPE_NAMES: std::sync::LazyLock<Vec<(&'static str, EntityTypeName)>> =
    std::sync::LazyLock::new(|| {
        ["Agent", "Action", "Tool", "Model", "Memory", "Target"]
            .into_iter()
            .filter_map(|t| EntityTypeName::from_str(t).ok().map(|n| (t, n)))
            .collect()
    });

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let t = TYPE_NAMES
        .iter()
        .find(|(n, _)| *n == ty)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| format!("unknown entity type {ty}"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// Decimal values already built. Building one parses the extension's name
/// with the Cedar parser, the largest cost of a request; session costs change
/// only when an event adds cost, so most lookups hit.
static DECIMALS: std::sync::LazyLock<Mutex<LruCache<i64, RestrictedExpression>>> =
    std::sync::LazyLock::new(|| {
        Mutex::new(LruCache::new(
            NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
        ))
    });

/// A Cedar decimal (4 fractional digits).
fn decimal(v: f64) -> RestrictedExpression {
    let v = if v.is_finite() {
        v.clamp(-9.0e14, 9.0e14)
    } else {
        0.0
    };
    let key = (v * 10_000.0).round() as i64;
    let mut cache = DECIMALS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = cache.get(&key) {
        return e.clone();
    }
    let e = RestrictedExpression::new_decimal(format!("{v:.4}"));
    cache.put(key, e.clone());
    e
}

fn truncate(s: &str, max: usize) -> String {
    s[..s.floor_char_boundary(max.min(s.len()))].to_owned()
}

/// Top-level keys as string tags (strings as themselves, anything else as JSON).
fn tags_of(m: &Map<String, Value>) -> Vec<(String, RestrictedExpression)> {
    m.iter()
        .take(MAX_TAGS)
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => truncate(s, MAX_TAG_BYTES),
                other => truncate(&other.to_string(), MAX_TAG_BYTES),
            };
            (k.clone(), RestrictedExpression::new_string(s))
        })
        .collect()
}

fn memory_key(p: &Value) -> Option<&str> {
    ["key", "memoryKey", "memory_key", "name"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_str))
}

/// The tool an event names and its arguments, across the dialects' payload
/// shapes: `toolName`/`arguments` (native, AgentLens), `tool.name`/`tool.arguments`
/// (OTLP), `tool_name`/`tool`/`name` with `args`/`input`/`parameters`.
pub fn tool_and_arguments(kind: Kind, p: &Value) -> (Option<String>, Option<Value>) {
    let tool = agentledger_core::payload::tool_name(kind, p).map(str::to_owned);
    let args = ["arguments", "args", "parameters", "input"]
        .iter()
        .find_map(|k| p.get(*k))
        .or_else(|| p.pointer("/tool/arguments"))
        .cloned();
    (tool, args)
}
