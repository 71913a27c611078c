//! One tool call that runs SQL, through the same engine steps as a wire
//! door's statement and in the same order: route the principal, journal
//! the session's start, log in upstream as the route's role (reading the
//! masking catalog), analyze with the connection's dialect, ask the judge
//! (fetching a row estimate when a rule needs one), then refuse, hold or
//! record-and-run; rows are masked with the policy's plan by the engine's
//! JSON masker, capped by `mcp.*`, and recorded as the agent got them.
//!
//! Each call is one session in the audit trail (`door: mcp`); a held call's
//! session lasts until its statement is decided and, when approved, run.

use std::sync::Arc;
use std::time::Duration;

use airlock_audit::event::{Decision as Recorded, Door, Protocol};
use airlock_engine::hold::{self, HoldRequest, Holder, Refusal};
use airlock_engine::open::{self, Authorized};
use airlock_engine::recording::{At, Judgement, Param as RecordedParam, Params, RecordingSession};
use airlock_policy::guardrails::Estimate;
use airlock_policy::judge::{self, Ruling};
use airlock_policy::masking::{FieldOrigin, MaskPlan, SensitiveCatalog};
use airlock_policy::{Hint, Principal, Statement, StatementKind};
use serde_json::{Value, json};

use super::holds::Holds;
use super::{my, pg};
use crate::Gateway;
use crate::snapshot::Snapshot;

/// A parameter as the agent gave it (JSON), bound by its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Param {
    /// Objects and arrays are bound as their JSON text.
    pub(crate) fn from_json(v: &Value) -> Param {
        match v {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Param::Int(i),
                (None, Some(f)) if n.is_f64() => Param::Float(f),
                _ => Param::Text(n.to_string()),
            },
            Value::String(s) => Param::Text(s.clone()),
            other => Param::Text(other.to_string()),
        }
    }

    /// The value in text (PostgreSQL's text format; the recording).
    pub(crate) fn text(&self) -> Option<Vec<u8>> {
        match self {
            Param::Null => None,
            Param::Text(s) => Some(s.as_bytes().to_vec()),
            Param::Int(i) => Some(i.to_string().into_bytes()),
            Param::Float(f) => Some(f.to_string().into_bytes()),
            Param::Bool(b) => Some(if *b {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            }),
        }
    }
}

/// A result column as the upstream described it.
pub(crate) struct Column {
    pub name: String,
    pub origin: FieldOrigin,
    /// Its values are text: a masked value takes the strategy (else it
    /// becomes null, as on the wire doors).
    pub text: bool,
}

/// How a statement that ran ended.
pub(crate) struct Done {
    pub tag: Option<String>,
    /// Rows were left (the row cap).
    pub suspended: bool,
}

/// The upstream's error, before scrubbing.
pub(crate) struct UpstreamError {
    pub code: String,
    pub message: String,
    /// PostgreSQL: the ErrorResponse body, for the door's scrubber.
    pub raw: Vec<u8>,
}

pub(crate) type Answer = Result<Done, UpstreamError>;

/// The answer once the upstream is done: its error if it sent one, else
/// how the statement ended (a statement with no completion: done, no tag).
pub(crate) fn answer(error: Option<UpstreamError>, done: Option<Done>) -> Answer {
    match (error, done) {
        (Some(e), _) => Err(e),
        (None, done) => Ok(done.unwrap_or(Done {
            tag: None,
            suspended: false,
        })),
    }
}

/// The upstream connection was lost or answered nonsense.
pub(crate) struct Lost;

/// Where an upstream streams its answer.
pub(crate) trait Sink {
    /// The result's columns (none for a statement without rows); once,
    /// before any row.
    fn columns(&mut self, columns: Vec<Column>);
    fn row(&mut self, row: Vec<Value>);
}

/// An internal query's first value.
#[derive(Default)]
pub(crate) struct FirstValue {
    pub value: Option<Value>,
}

impl Sink for FirstValue {
    fn columns(&mut self, _: Vec<Column>) {}
    fn row(&mut self, row: Vec<Value>) {
        if self.value.is_none() {
            self.value = row.into_iter().next();
        }
    }
}

/// An internal query's rows.
#[derive(Default)]
pub(crate) struct AllRows {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Sink for AllRows {
    fn columns(&mut self, columns: Vec<Column>) {
        self.names = columns.into_iter().map(|c| c.name).collect();
    }
    fn row(&mut self, row: Vec<Value>) {
        self.rows.push(row);
    }
}

/// Why a call produced no result, as the agent is told.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// `no_access`, `denied`, `invalid`, `unavailable`, `error`.
    pub status: &'static str,
    /// A SQLSTATE or MySQL error number from the upstream, or airlock's
    /// own (`42501` for a policy refusal, `58000` for the audit).
    pub code: String,
    pub message: String,
    pub rule: Option<String>,
    pub approval: Option<uuid::Uuid>,
    /// What the agent could do instead (every policy refusal has one).
    pub hint: Option<Hint>,
}

impl Failure {
    pub(crate) fn new(status: &'static str, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code: code.into(),
            message: message.into(),
            rule: None,
            approval: None,
            hint: None,
        }
    }

    #[must_use]
    fn hinted(self, hint: Hint) -> Failure {
        Failure {
            hint: Some(hint),
            ..self
        }
    }

    pub(crate) fn unavailable(connection: &str) -> Failure {
        Failure::new(
            "unavailable",
            "08006",
            format!("airlock: connection \"{connection}\" is unavailable"),
        )
    }

    pub(crate) fn unmaskable(connection: &str) -> Failure {
        Failure::new(
            "unavailable",
            "58000",
            format!(
                "airlock: connection \"{connection}\" cannot be masked: reading its catalog failed"
            ),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new("invalid", "22023", message)
    }

    fn unrecorded() -> Failure {
        Failure::new(
            "unavailable",
            "58000",
            "airlock: the audit journal cannot be written; airlock runs nothing it cannot record",
        )
        .hinted(airlock_engine::hold::unrecorded_hint())
    }
}

/// A statement that ran: what the agent gets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ran {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Rows the agent got.
    pub row_count: u64,
    pub truncated: bool,
    pub masked_columns: Vec<String>,
    pub command: Option<String>,
    pub session: uuid::Uuid,
    pub seq: u64,
    /// Values that read like instructions to an agent.
    pub flags: Vec<Value>,
    /// The approval that released it.
    pub approval: Option<uuid::Uuid>,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Ran(Ran),
    Pending {
        approval: uuid::Uuid,
        rule: String,
        session: uuid::Uuid,
    },
    Failed(Failure),
}

impl Outcome {
    /// The tool result's structured content, and whether it is an error.
    pub(crate) fn to_json(&self) -> (Value, bool) {
        match self {
            Outcome::Ran(r) => (
                json!({
                    "status": "ok",
                    "columns": r.columns,
                    "rows": r.rows,
                    "row_count": r.row_count,
                    "truncated": r.truncated,
                    "masked_columns": r.masked_columns,
                    "command": r.command,
                    "statement_id": format!("{}:{}", r.session, r.seq),
                    "session_id": r.session.to_string(),
                    "flags": r.flags,
                    "approval_id": r.approval.map(|a| a.to_string()),
                }),
                false,
            ),
            Outcome::Pending {
                approval,
                rule,
                session,
            } => (
                json!({
                    "status": "pending_approval",
                    "approval_id": approval.to_string(),
                    "rule": rule,
                    "session_id": session.to_string(),
                    "message": format!(
                        "airlock: statement held for approval {approval} (rule {rule}); poll approval_status with this approval_id for the result"
                    ),
                    "approve_command": format!("airlock approvals approve {approval}"),
                }),
                false,
            ),
            Outcome::Failed(f) => (
                json!({
                    "status": f.status,
                    "code": f.code,
                    "message": f.message,
                    "rule": f.rule,
                    "approval_id": f.approval.map(|a| a.to_string()),
                    "hint": f.hint.as_ref().map(Hint::to_value),
                }),
                true,
            ),
        }
    }
}

/// The caps the operator set (`mcp.*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub max_rows: u64,
    pub max_bytes: usize,
    pub statement_timeout: Duration,
}

/// What a tool asks to run.
pub(crate) struct Request {
    pub connection: String,
    pub role: String,
    pub sql: String,
    pub params: Vec<Param>,
    /// Run `EXPLAIN <sql>`, judged like `sql` itself.
    pub explain: bool,
}

/// Who calls, and with what configuration.
#[derive(Clone)]
pub(crate) struct Context {
    pub gateway: Arc<Gateway>,
    pub snapshot: Arc<Snapshot>,
    pub principal: Principal,
    pub holds: Arc<Holds>,
    pub caps: Caps,
    pub client_addr: String,
    pub tls: bool,
}

/// What an upstream's catalog tells the judge and the masker.
pub(crate) struct Catalogs {
    /// The masking catalog, for a masked route.
    pub masking: Option<Arc<SensitiveCatalog>>,
    /// The unique keys (PostgreSQL, read-write routes), for row bounds.
    pub keys: Option<Arc<airlock_policy::UniqueKeys>>,
}

/// An upstream of either dialect.
enum Db {
    Pg(pg::Conn),
    My(my::Conn),
}

impl Db {
    async fn open(
        snapshot: &Snapshot,
        authorized: &Authorized,
        caps: Caps,
    ) -> Result<(Db, Catalogs), Failure> {
        let route = &authorized.route;
        match snapshot.connections[&route.connection].protocol {
            // Within the access rule's ceiling, if it has one.
            airlock_config::Protocol::Postgres => pg::open(
                snapshot,
                route,
                route
                    .statement_timeout
                    .map_or(caps.statement_timeout, |c| c.min(caps.statement_timeout)),
            )
            .await
            .map(|(c, k)| (Db::Pg(c), k)),
            airlock_config::Protocol::Mysql => my::open(snapshot, route, caps.statement_timeout)
                .await
                .map(|(c, k)| (Db::My(c), k)),
        }
    }

    fn analyze(&self, snapshot: &Snapshot, sql: &str) -> Arc<[Statement]> {
        let analyzed: Arc<[Statement]> = match self {
            Db::Pg(_) => airlock_sql::cache::analyze(&snapshot.analyzer, sql).statements,
            Db::My(c) => airlock_sql::cache::analyze_mysql(&snapshot.mysql_analyzer, sql, c.mode),
        };
        // SQL-level PREPARE/EXECUTE are resolved against the session's
        // (new, empty) prepared statements, as the wire doors do.
        let needs_session = analyzed.iter().any(|s| {
            matches!(
                s.kind,
                StatementKind::Prepare | StatementKind::Execute | StatementKind::Deallocate
            ) || s.nested.contains(&StatementKind::Execute)
        });
        if needs_session {
            airlock_sql::resolve(&analyzed, &mut airlock_sql::SessionState::default()).into()
        } else {
            analyzed
        }
    }

    fn redactor(&self) -> airlock_engine::recording::Redactor {
        match self {
            Db::Pg(_) => airlock_sql::literals::value_spans,
            Db::My(_) => crate::mysql::value_spans,
        }
    }

    async fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        max_rows: u64,
        sink: &mut (dyn Sink + Send),
    ) -> Result<Answer, Lost> {
        match self {
            Db::Pg(c) => c.execute(sql, params, max_rows, sink).await,
            Db::My(c) => c.execute(sql, params, max_rows, sink).await,
        }
    }

    /// Stops the statement the upstream is running, from a connection of
    /// its own.
    async fn cancel(&self) {
        match self {
            Db::Pg(c) => {
                if let Some(target) = &c.cancel {
                    target.send().await;
                }
            }
            Db::My(c) => {
                let (target, credential, id) = &c.kill;
                if let Err(e) = crate::mysql::upstream::kill(target, credential, "QUERY", *id).await
                {
                    tracing::warn!(error = %e, "the statement could not be killed upstream");
                }
            }
        }
    }

    /// The planner's row estimate of `sql`, and its cost where the
    /// upstream gives one (PostgreSQL).
    async fn estimate(&mut self, sql: &str, params: &[Param]) -> (Estimate, Option<f64>) {
        let (rows, cost) = match self {
            Db::Pg(c) => c.estimate(sql, params).await,
            Db::My(c) => (c.estimate(sql, params).await, None),
        };
        (rows.map_or(Estimate::Unavailable, Estimate::Rows), cost)
    }

    /// The upstream's error message as the agent may see it: detectors
    /// always; quoted values hidden when anything is masked.
    fn scrub(
        &self,
        masking: &airlock_mask::Masking,
        catalog: Option<&SensitiveCatalog>,
        error: &UpstreamError,
        schema_only: bool,
    ) -> String {
        let scrubbed = match (self, catalog) {
            (Db::Pg(_), Some(catalog)) if !error.raw.is_empty() => {
                let keep = |quoted: &[u8]| {
                    std::str::from_utf8(quoted).is_ok_and(|n| catalog.names_object(n))
                };
                let mut out = bytes::BytesMut::new();
                crate::mask::notice(
                    masking,
                    b'E',
                    &error.raw,
                    (catalog.any_sensitive, schema_only),
                    &keep,
                    &mut out,
                )
                .then(|| {
                    airlock_pgwire::codec::notice_fields(&out[5..])
                        .into_iter()
                        .find(|(f, _)| *f == b'M')
                        .map(|(_, m)| m)
                })
                .flatten()
            }
            (Db::My(_), Some(catalog)) => {
                crate::mysql::mask::scrub(masking, catalog, &error.message)
            }
            _ => masking.scrub(&error.message, None),
        };
        scrubbed.unwrap_or_else(|| error.message.clone())
    }
}

/// What the judge asks of the agent's text and values.
struct CallFacts<'a> {
    text: &'a str,
    params: &'a [Param],
}

impl judge::Facts for CallFacts<'_> {
    fn writes_placeholder(&self) -> bool {
        airlock_mask::looks_masked(self.text.as_bytes())
            || self
                .params
                .iter()
                .filter_map(Param::text)
                .any(|v| airlock_mask::looks_masked(&v))
    }
}

/// The judge's answer as this door applies it.
enum Judged {
    Allow,
    Refuse {
        decision: Recorded,
        rule: Option<String>,
        failure: Failure,
    },
    Hold(HoldRequest),
}

/// One call's open session: its route, upstream and recording.
struct Open {
    /// The call's session slot (`limits.max_sessions`), held until it ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Its place under the per-principal and per-connection caps.
    permit: airlock_engine::limits::Permit,
    /// The session, counted active until it ends.
    _active: crate::metrics::ActiveSession,
    /// When the call's session started.
    started: std::time::SystemTime,
    authorized: Authorized,
    db: Db,
    catalog: Option<Arc<SensitiveCatalog>>,
    keys: Option<Arc<airlock_policy::UniqueKeys>>,
    recorder: RecordingSession,
    journal: Arc<airlock_audit::Recorder>,
}

impl Open {
    /// Who holds this call's statement, and where its approval events go.
    fn holder<'a>(
        &'a self,
        approvals: &'a airlock_engine::approvals::Approvals,
        trail: &'a airlock_engine::hold::Trail,
    ) -> Holder<'a> {
        Holder {
            approvals,
            principal: &self.authorized.principal,
            route: &self.authorized.route,
            trail: Some(trail),
        }
    }
}

/// The message id the call's one statement is recorded under.
const ID: u64 = 1;

/// Routes, opens and judges one statement, then runs it, holds it (the
/// result reaches [`Holds`]), or refuses it.
pub(crate) async fn run(cx: &Context, request: Request) -> Outcome {
    let mut open = match open_session(cx, &request).await {
        Ok(o) => o,
        Err(f) => return Outcome::Failed(f),
    };
    let session = open.recorder.session();
    let outcome = judge_and_run(cx, &mut open, request).await;
    match outcome {
        Err(HoldOpen { waiting, run }) => {
            let pending = Outcome::Pending {
                approval: waiting.id,
                rule: waiting.request().rule.clone(),
                session,
            };
            cx.holds
                .register(waiting.id, super::holds::owner(&cx.principal));
            let cx = cx.clone();
            tokio::spawn(async move {
                // Whatever happens to this task, the call's entry is settled.
                let settled = Settled {
                    holds: Arc::clone(&cx.holds),
                    id: waiting.id,
                    done: false,
                };
                let outcome = settle_hold(&cx, &mut open, waiting, run).await;
                end(&open, &outcome);
                // The call's places (its slot, its permit) are given back
                // before anyone learns it ended: a next call must find them.
                drop(open);
                settled.finish(outcome.to_json());
            });
            pending
        }
        Ok(outcome) => {
            end(&open, &outcome);
            outcome
        }
    }
}

/// Settles a held call's entry in [`Holds`]: with its outcome, or, should
/// its task end without one, as failed.
struct Settled {
    holds: Arc<Holds>,
    id: uuid::Uuid,
    done: bool,
}

impl Settled {
    fn finish(mut self, result: (Value, bool)) {
        self.holds.finish(self.id, result);
        self.done = true;
    }
}

impl Drop for Settled {
    fn drop(&mut self) {
        if !self.done {
            let failure = Failure::new(
                "unavailable",
                "58000",
                "airlock: the held statement's task ended without an outcome",
            );
            self.holds
                .finish(self.id, Outcome::Failed(failure).to_json());
        }
    }
}

fn end(open: &Open, outcome: &Outcome) {
    let reason = match outcome {
        Outcome::Ran(_) => "the tool call completed".to_string(),
        Outcome::Failed(f) => format!("the tool call failed: {}", f.status),
        Outcome::Pending { .. } => return,
    };
    open::end(
        &open.journal,
        open.recorder.session(),
        reason,
        open.recorder.statements(),
    );
}

async fn open_session(cx: &Context, request: &Request) -> Result<Open, Failure> {
    let snapshot = &cx.snapshot;
    let policy = open::Policy {
        verifier: &snapshot.verifier,
        access: &snapshot.access,
        lifetime: snapshot.session_lifetime,
        approvals: cx.gateway.approvals().map(|a| &**a),
    };
    let now = cx.gateway.clock().now();
    let authorized = open::route(
        &policy,
        cx.principal.clone(),
        &request.connection,
        &request.role,
        now,
    )
    .await
    .map_err(|refused| {
        Failure::new("no_access", "28000", refused.message()).hinted(refused.hint())
    })?;
    if cx.gateway.draining() {
        return Err(Failure::new(
            "unavailable",
            "57P01",
            open::Cut::Shutdown.message(),
        ));
    }
    // A call is a session like a wire door's: it takes a slot.
    let Ok(slot) = Arc::clone(&cx.gateway.sessions).try_acquire_owned() else {
        return Err(Failure::new(
            "unavailable",
            "53300",
            "airlock: too many sessions (limits.max_sessions)",
        ));
    };
    let permit = cx
        .gateway
        .admit(snapshot, &authorized, "mcp")
        .map_err(|e| Failure::new("unavailable", "53300", e.message()).hinted(e.hint()))?;
    // Each statement a tool runs draws on the principal's budget before
    // anything opens (`describe_table` runs two); a refusal is counted, and
    // nothing of it is journaled, as for a session over a cap.
    if let Some(exceeded) = crate::over_budget(permit.budget().as_ref(), 1, "mcp") {
        return Err(
            Failure::new("unavailable", "54000", exceeded.message()).hinted(exceeded.hint())
        );
    }
    let Some(journal) = cx.gateway.recorder().cloned() else {
        return Err(Failure::unrecorded());
    };
    let id = uuid::Uuid::now_v7();
    let client = open::Client {
        door: Door::Mcp,
        addr: cx.client_addr.clone(),
        tls: cx.tls,
        application_name: Some("mcp"),
    };
    open::start(&journal, &snapshot.masking, id, &authorized, &client)
        .map_err(|_| Failure::unrecorded())?;
    let (
        db,
        Catalogs {
            masking: catalog,
            keys,
        },
    ) = match Db::open(snapshot, &authorized, cx.caps).await {
        Ok(ok) => ok,
        Err(f) => {
            open::end(
                &journal,
                id,
                format!("the upstream could not be opened: {}", f.message),
                0,
            );
            return Err(f);
        }
    };
    let route = &authorized.route;
    let recorder = snapshot.recording(
        Arc::clone(&journal),
        id,
        Door::Mcp,
        route,
        catalog.as_ref(),
        db.redactor(),
    );
    Ok(Open {
        _slot: slot,
        permit,
        _active: cx.gateway.metrics.session_started("mcp"),
        started: now,
        authorized,
        db,
        catalog,
        keys,
        recorder,
        journal,
    })
}

/// What runs once a held statement is approved.
struct Run {
    text: String,
    statements: Arc<[Statement]>,
    params: Vec<Param>,
    rule: String,
}

/// A statement held: the hold, and what runs once it is approved.
struct HoldOpen {
    waiting: hold::Waiting,
    run: Run,
}

async fn judge_and_run(
    cx: &Context,
    open: &mut Open,
    request: Request,
) -> Result<Outcome, HoldOpen> {
    let snapshot = &cx.snapshot;
    let statements = open.db.analyze(snapshot, &request.sql);
    let text = if request.explain {
        format!("EXPLAIN {}", request.sql)
    } else {
        request.sql.clone()
    };
    if request.sql.contains('\0') || statements.len() != 1 {
        let message = if request.sql.contains('\0') {
            "airlock: SQL text cannot contain NUL bytes"
        } else if statements.is_empty() {
            "airlock: no statement: send exactly one SQL statement per call"
        } else {
            "airlock: one statement per call: send each statement in a call of its own"
        };
        let failure = Failure::invalid(message);
        let _ = record(
            open,
            &text,
            &statements,
            &request.params,
            Recorded::Deny,
            None,
            Some(&failure),
            None,
        );
        return Ok(Outcome::Failed(failure));
    }
    // EXPLAIN is judged as the statement it wraps, and as itself.
    let statements: Arc<[Statement]> = if request.explain {
        let wrapped = open.db.analyze(snapshot, &text);
        statements.iter().chain(wrapped.iter()).cloned().collect()
    } else {
        statements
    };
    let approvals = cx.gateway.approvals().cloned();
    let judged = judge(
        cx,
        open,
        (&request.sql, &text),
        &statements,
        &request.params,
        (approvals.is_some(), request.explain),
    )
    .await;
    let params = request.params;
    // A result of COPY rows has no place in a tool's answer: what the
    // judge would let run is still refused, as not available here.
    let copy = statements
        .iter()
        .any(|s| matches!(s.kind, StatementKind::CopyIn | StatementKind::CopyOut));
    if copy && !matches!(judged, Judged::Refuse { .. }) {
        let failure = Failure::invalid(
            "airlock: COPY is not available through MCP: read with SELECT, write with INSERT",
        );
        let _ = record(
            open,
            &text,
            &statements,
            &params,
            Recorded::Deny,
            None,
            Some(&failure),
            None,
        );
        return Ok(Outcome::Failed(failure));
    }
    match judged {
        Judged::Refuse {
            decision,
            rule,
            failure,
        } => {
            let failure = Failure {
                rule: rule.clone(),
                ..failure
            };
            let _ = record(
                open,
                &text,
                &statements,
                &params,
                decision,
                rule.as_deref(),
                Some(&failure),
                None,
            );
            Ok(Outcome::Failed(failure))
        }
        Judged::Hold(hold_request) => {
            let Some(approvals) = approvals else {
                unreachable!("the judge holds nothing without approvals")
            };
            let rule = hold_request.rule.clone();
            let owner = super::holds::owner(&open.authorized.principal);
            if cx.holds.pending(&owner) >= super::holds::MAX_PENDING {
                let failure = Failure {
                    rule: Some(rule.clone()),
                    ..Failure::new(
                        "unavailable",
                        "53400",
                        format!(
                            "airlock: {} of your statements already wait for approval; poll approval_status before asking for more",
                            super::holds::MAX_PENDING
                        ),
                    )
                    .hinted(Hint::later(
                        "approval",
                        "poll approval_status for the statements already held; send this again once one is decided",
                    ))
                };
                let _ = record(
                    open,
                    &text,
                    &statements,
                    &params,
                    Recorded::Approve,
                    Some(&rule),
                    Some(&failure),
                    None,
                );
                return Ok(Outcome::Failed(failure));
            }
            let trail = open.recorder.trail();
            let holder = open.holder(&approvals, &trail);
            match hold::begin(&holder, snapshot.approvals, hold_request, false).await {
                Ok(waiting) => {
                    tracing::info!("{}", hold::held_notice(&waiting));
                    Err(HoldOpen {
                        waiting,
                        run: Run {
                            text,
                            statements,
                            params,
                            rule,
                        },
                    })
                }
                Err(outcome) => Ok(refused_hold(
                    open,
                    &outcome,
                    &text,
                    &statements,
                    &params,
                    &rule,
                )),
            }
        }
        Judged::Allow => {
            if !record(
                open,
                &text,
                &statements,
                &params,
                Recorded::Allow,
                None,
                None,
                None,
            ) {
                return Ok(Outcome::Failed(Failure::unrecorded()));
            }
            Ok(execute(cx, open, &text, &statements, &params, None).await)
        }
    }
}

/// Waits for a held statement's decision, then refuses or runs it.
async fn settle_hold(
    cx: &Context,
    open: &mut Open,
    mut waiting: hold::Waiting,
    run: Run,
) -> Outcome {
    let Some(approvals) = cx.gateway.approvals().cloned() else {
        return Outcome::Failed(Failure::unrecorded());
    };
    let trail = open.recorder.trail();
    let holder = open.holder(&approvals, &trail);
    let mut terminate = cx.gateway.terminate.subscribe();
    let wait = tokio::select! {
        wait = waiting.decided() => wait,
        _ = crate::lifetime::terminated(&mut terminate) => {
            hold::cancel(&holder, waiting, "the gateway is shutting down").await;
            let failure = Failure {
                rule: Some(run.rule.clone()),
                ..Failure::new("unavailable", "57P01", open::Cut::Shutdown.message())
            };
            let _ = record(open, &run.text, &run.statements, &run.params, Recorded::Approve, Some(&run.rule), Some(&failure), None);
            return Outcome::Failed(failure);
        }
    };
    let outcome = hold::end(&holder, waiting, wait).await;
    if outcome.refusal().is_some() {
        return refused_hold(
            open,
            &outcome,
            &run.text,
            &run.statements,
            &run.params,
            &run.rule,
        );
    }
    let approval = outcome.approval();
    // Held for minutes: the session must still be one that may run it
    // (the token live, a just-in-time grant not expired or revoked).
    if let Err(failure) = still_routed(cx, open).await {
        let failure = Failure {
            approval,
            ..failure
        };
        let _ = record(
            open,
            &run.text,
            &run.statements,
            &run.params,
            Recorded::Approve,
            Some(&run.rule),
            Some(&failure),
            approval,
        );
        return Outcome::Failed(failure);
    }
    if !record(
        open,
        &run.text,
        &run.statements,
        &run.params,
        Recorded::Approve,
        Some(&run.rule),
        None,
        approval,
    ) {
        return Outcome::Failed(Failure::unrecorded());
    }
    execute(cx, open, &run.text, &run.statements, &run.params, approval).await
}

/// Whether the call's route still holds now: its deadline (token expiry,
/// lifetime, grant expiry) not passed, and the principal still routed to
/// the same connection and role.
async fn still_routed(cx: &Context, open: &Open) -> Result<(), Failure> {
    // The configuration in force now (a reload may have taken the route
    // away); the lifetime counted from the call's start.
    let snapshot = &cx.gateway.snapshot();
    if !snapshot.mcp.enabled {
        return Err(Failure::new(
            "unavailable",
            "58000",
            "airlock: the MCP endpoint was turned off while the statement was held",
        ));
    }
    let now = cx.gateway.clock().now();
    if let Some(d) = open::deadline(&open.authorized, snapshot.session_lifetime, open.started)
        && d.at <= now
    {
        return Err(Failure::new("denied", "42501", d.why.message()));
    }
    let policy = open::Policy {
        verifier: &snapshot.verifier,
        access: &snapshot.access,
        lifetime: snapshot.session_lifetime,
        approvals: cx.gateway.approvals().map(|a| &**a),
    };
    let route = &open.authorized.route;
    match open::route(
        &policy,
        open.authorized.principal.clone(),
        &route.connection,
        &route.role,
        now,
    )
    .await
    {
        Ok(a) if a.route.role == route.role => Ok(()),
        Ok(_) => Err(Failure::new(
            "no_access",
            "28000",
            format!(
                "airlock: role \"{}\" is no longer yours on connection \"{}\"",
                route.role, route.connection
            ),
        )
        .hinted(Hint::never(
            "access",
            "list_connections shows the roles you may use now; a just-in-time role needs a new grant (request_access)",
        ))),
        Err(refused) => {
            Err(Failure::new("no_access", "28000", refused.message()).hinted(refused.hint()))
        }
    }
}

fn refused_hold(
    open: &mut Open,
    outcome: &hold::HoldOutcome,
    text: &str,
    statements: &[Statement],
    params: &[Param],
    rule: &str,
) -> Outcome {
    let Some((class, message)) = outcome.refusal() else {
        unreachable!("an approved hold is not refused")
    };
    let (status, code) = match class {
        Refusal::Policy => ("denied", "42501"),
        Refusal::System => ("unavailable", "58000"),
    };
    let failure = Failure {
        rule: Some(rule.to_string()),
        approval: outcome.approval(),
        hint: outcome.hint(),
        ..Failure::new(status, code, message)
    };
    let _ = record(
        open,
        text,
        statements,
        params,
        Recorded::Approve,
        Some(rule),
        Some(&failure),
        outcome.approval(),
    );
    Outcome::Failed(failure)
}

/// Asks the judge, fetching one row estimate when a rule needs it.
/// `sql` is the statement (its estimate is fetched), `text` what runs and
/// what approvers see (an EXPLAIN's differs).
async fn judge(
    cx: &Context,
    open: &mut Open,
    (sql, text): (&str, &str),
    statements: &[Statement],
    params: &[Param],
    (approvals, explain): (bool, bool),
) -> Judged {
    let snapshot = &cx.snapshot;
    let route = &open.authorized.route;
    let facts = CallFacts { text, params };
    let mut estimate = Estimate::NotFetched;
    let mut cost = None;
    // `max_cost`; the `explain` tool runs nothing.
    let costed = !explain && open.permit.budget().is_some_and(|b| b.counts_cost());
    let ruling = loop {
        let session = judge::Session {
            guardrails: &snapshot.guardrails,
            mode: route.mode,
            access_rule: &route.rule,
            writes: route.writes.as_ref(),
            schema_only: route.schema_only,
            statement_timeout: route.statement_timeout,
            costed,
            approvals,
            masking: open.catalog.as_deref().map(|catalog| judge::Masked {
                policy: &snapshot.masking.policy,
                catalog,
            }),
            keys: open.keys.as_deref(),
        };
        let ask = judge::Ask {
            fetch: if estimate == Estimate::NotFetched {
                judge::Fetch::Now
            } else {
                judge::Fetch::Never
            },
            ..judge::Ask::message(statements, estimate)
        };
        match judge::judge(&session, &ask, &facts) {
            // The one statement (an EXPLAIN's estimate is its inner one's).
            Ruling::NeedsEstimate { .. } => (estimate, cost) = open.db.estimate(sql, params).await,
            ruling => break ruling,
        }
    };
    // `max_cost`: charged once it may run (or be held); an estimate with
    // no cost in it is over every cap.
    if matches!(ruling, Ruling::Allow { .. } | Ruling::Approve { .. })
        && costed
        && statements.iter().any(judge::costs)
        && let Some(exceeded) = crate::over_cost(open.permit.budget().as_ref(), cost, "mcp")
    {
        return Judged::Refuse {
            decision: airlock_audit::event::Decision::Deny,
            rule: Some(exceeded.rule().into()),
            failure: Failure::new("unavailable", "54000", exceeded.message())
                .hinted(exceeded.hint()),
        };
    }
    match ruling {
        Ruling::Allow { .. } | Ruling::NeedsEstimate { .. } => Judged::Allow,
        // Not asked for (`can_review`), so never given.
        Ruling::Review { rule, .. } => Judged::Refuse {
            decision: airlock_audit::event::Decision::Approve,
            failure: {
                let d = judge::unreviewable(&rule);
                Failure::new("denied", "42501", d.message).hinted(d.hint)
            },
            rule: Some(rule),
        },
        Ruling::Deny(d) => {
            let (decision, rule) = airlock_engine::recording::denied_by(&d.by);
            let rule = rule.map(str::to_string);
            tracing::info!(rule = ?d.rule(), "statement denied");
            // A statement that does not parse gets the server's own error,
            // as on the wire.
            let failure = match d.syntax_error(statements) {
                Some(e) => Failure::new("error", e.code, e.message.clone()),
                None => Failure::new("denied", "42501", d.message).hinted(d.hint),
            };
            Judged::Refuse {
                decision,
                rule,
                failure,
            }
        }
        Ruling::Approve {
            rule,
            approvers,
            min_approvals,
            estimate,
        } => {
            let texts: Vec<Option<Vec<u8>>> = params.iter().map(Param::text).collect();
            let (redacted, values) = open.recorder.redacted(text, statements, &recorded(&texts));
            Judged::Hold(HoldRequest::new(
                rule,
                approvers,
                min_approvals,
                estimate,
                statements,
                redacted,
                values,
            ))
        }
    }
}

fn recorded(texts: &[Option<Vec<u8>>]) -> Params<'_> {
    if texts.is_empty() {
        return Params::None;
    }
    Params::Values(
        texts
            .iter()
            .map(|t| RecordedParam {
                value: t.as_deref(),
                binary: false,
            })
            .collect(),
    )
}

/// Records the statement event; false when it could not be written.
#[allow(clippy::too_many_arguments)]
fn record(
    open: &mut Open,
    text: &str,
    statements: &[Statement],
    params: &[Param],
    decision: Recorded,
    rule: Option<&str>,
    refusal: Option<&Failure>,
    approval: Option<uuid::Uuid>,
) -> bool {
    let texts: Vec<Option<Vec<u8>>> = params.iter().map(Param::text).collect();
    let judgement = Judgement {
        decision: if refusal.is_some() && decision == Recorded::Allow {
            Recorded::Deny
        } else {
            decision
        },
        rule,
        refusal: refusal.map(|f| (f.code.as_str(), f.message.as_str())),
        approval,
    };
    open.recorder
        .statement(
            ID,
            Protocol::Extended,
            text,
            statements,
            &recorded(&texts),
            judgement,
        )
        .is_ok()
}

/// Runs the statement upstream and collects its masked, capped result.
async fn execute(
    cx: &Context,
    open: &mut Open,
    text: &str,
    statements: &[Statement],
    params: &[Param],
    approval: Option<uuid::Uuid>,
) -> Outcome {
    let snapshot = &cx.snapshot;
    let at = At { id: ID, index: 0 };
    // On a schema-only route, aggregates leave out groups of fewer than
    // `k` rows.
    let schema_only = open.authorized.route.schema_only.is_some();
    let rewritten = match judge::group_floor(open.authorized.route.schema_only, statements) {
        None => None,
        Some(k) => match airlock_sql::disclosure::at_least(text, k) {
            Ok(sql) => Some(sql),
            Err(_) => {
                let d = judge::unfloored();
                return Outcome::Failed(Failure::new("denied", "42501", d.message).hinted(d.hint));
            }
        },
    };
    let text = rewritten.as_deref().unwrap_or(text);
    let mut collector = Collector {
        masking: &snapshot.masking,
        catalog: open.catalog.as_deref(),
        statement: statements.last(),
        recorder: &mut open.recorder,
        // The access rule's cap on one result truncates here, as
        // `mcp.max_bytes` does: the call's result says so.
        caps: match open.permit.budget().and_then(|b| b.max_result_bytes()) {
            Some(m) => Caps {
                max_bytes: cx
                    .caps
                    .max_bytes
                    .min(usize::try_from(m).unwrap_or(usize::MAX)),
                ..cx.caps
            },
            None => cx.caps,
        },
        plan: None,
        text: Vec::new(),
        show_scrub: false,
        ran: Ran {
            approval,
            ..Ran::default()
        },
        bytes: 0,
        received: 0,
    };
    // The upstream's own statement timeout ends the statement; this one
    // ends an upstream that stops answering.
    let grace = cx.caps.statement_timeout + snapshot.limits.upstream_connect_timeout;
    let answer = tokio::time::timeout(
        grace,
        open.db
            .execute(text, params, cx.caps.max_rows, &mut collector),
    )
    .await;
    let Collector { mut ran, bytes, .. } = collector;
    // What the agent was given counts against its access rule's budgets.
    if let Some(budget) = open.permit.budget() {
        budget.returned(
            ran.rows.len() as u64,
            bytes as u64,
            std::time::Instant::now(),
        );
    }
    ran.session = open.recorder.session();
    ran.seq = open.recorder.statements();
    match answer {
        Ok(Ok(Ok(done))) => {
            ran.truncated |= done.suspended;
            open.recorder.complete(at, done.tag.clone(), done.suspended);
            ran.command = done.tag;
            Outcome::Ran(ran)
        }
        Ok(Ok(Err(error))) => {
            let message = open.db.scrub(
                &snapshot.masking,
                open.catalog.as_deref(),
                &error,
                schema_only,
            );
            open.recorder.error(at, error.code.clone(), message.clone());
            Outcome::Failed(Failure {
                approval,
                ..Failure::new("error", &error.code, message)
            })
        }
        Err(_) => {
            // The upstream stopped answering: its statement must not run on.
            open.db.cancel().await;
            let failure = Failure {
                approval,
                ..Failure::new(
                    "error",
                    "57014",
                    "airlock: the statement ran longer than mcp.statement_timeout and was cancelled",
                )
            };
            open.recorder
                .error(at, failure.code.clone(), failure.message.clone());
            Outcome::Failed(failure)
        }
        Ok(Err(Lost)) => {
            let failure = Failure {
                approval,
                ..Failure::new(
                    "unavailable",
                    "08006",
                    "airlock: the upstream connection was lost during the statement",
                )
            };
            open.recorder
                .error(at, failure.code.clone(), failure.message.clone());
            Outcome::Failed(failure)
        }
    }
}

/// Masks, caps, scans and records rows as they arrive.
struct Collector<'a> {
    masking: &'a airlock_mask::Masking,
    catalog: Option<&'a SensitiveCatalog>,
    statement: Option<&'a Statement>,
    recorder: &'a mut RecordingSession,
    caps: Caps,
    plan: Option<MaskPlan>,
    /// Per column: its values are text.
    text: Vec<bool>,
    /// MySQL SHOW output quotes values read elsewhere: scrubbed.
    show_scrub: bool,
    ran: Ran,
    bytes: usize,
    received: u64,
}

impl Sink for Collector<'_> {
    fn columns(&mut self, columns: Vec<Column>) {
        let origins: Vec<FieldOrigin> = columns.iter().map(|c| c.origin.clone()).collect();
        self.plan = self.catalog.map(|catalog| {
            let lineage = match self.statement {
                Some(s) => std::borrow::Cow::Borrowed(&s.lineage),
                None => std::borrow::Cow::Owned(airlock_policy::lineage::Lineage::opaque()),
            };
            self.masking.policy.plan(catalog, &lineage, &origins)
        });
        self.show_scrub = self
            .statement
            .is_some_and(|s| s.kind == StatementKind::Show)
            && self.catalog.is_some_and(|c| c.any_sensitive);
        if let Some(plan) = &self.plan {
            self.ran.masked_columns = columns
                .iter()
                .zip(&plan.columns)
                .filter(|(_, m)| m.is_some())
                .map(|(c, _)| c.name.clone())
                .collect();
        }
        self.text = columns.iter().map(|c| c.text).collect();
        self.ran.columns = columns.into_iter().map(|c| c.name).collect();
        self.recorder
            .columns(ID, Arc::from(self.ran.columns.clone()));
    }

    fn row(&mut self, mut row: Vec<Value>) {
        self.received += 1;
        if self.ran.truncated || self.received > self.caps.max_rows {
            self.ran.truncated = true;
            return;
        }
        if let Some(plan) = &self.plan {
            // A masked value that is not text becomes null, as on the wire.
            for ((value, mask), text) in row.iter_mut().zip(&plan.columns).zip(&self.text) {
                if mask.is_some() && !text {
                    *value = Value::Null;
                }
            }
            self.masking.mask_json_row(plan, &mut row);
        }
        if let (true, Some(catalog)) = (self.show_scrub, self.catalog) {
            for value in &mut row {
                if let Value::String(s) = value
                    && let Some(new) = crate::mysql::mask::scrub(self.masking, catalog, s)
                {
                    *s = new;
                }
            }
        }
        // The row's size as JSON, counted without writing it out.
        let mut size = Counted(row.len());
        let _ = serde_json::to_writer(&mut size, &row);
        let size = size.0;
        if self.bytes + size > self.caps.max_bytes {
            self.ran.truncated = true;
            return;
        }
        self.bytes += size;
        let texts: Vec<Option<std::borrow::Cow<'_, [u8]>>> =
            row.iter().map(recorded_value).collect();
        self.recorder
            .row(At { id: ID, index: 0 }, texts.iter().map(Option::as_deref));
        let index = self.ran.rows.len();
        for (column, value) in row.iter().enumerate() {
            if let Some(kind) = super::flags::scan_json(value) {
                airlock_mask::planted::count("flagged");
                let name = self.ran.columns.get(column).map_or("?", String::as_str);
                self.recorder
                    .flag(At { id: ID, index: 0 }, index as u64 + 1, name, kind);
                self.ran.flags.push(json!({
                    "row": index,
                    "column": self.ran.columns.get(column),
                    "kind": kind,
                }));
            }
        }
        self.ran.rows.push(row);
        self.ran.row_count += 1;
    }
}

/// A JSON value as the recording keeps it: text, or NULL.
fn recorded_value(v: &Value) -> Option<std::borrow::Cow<'_, [u8]>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().into()),
        other => Some(other.to_string().into_bytes().into()),
    }
}

/// A writer that only counts the bytes written to it.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
