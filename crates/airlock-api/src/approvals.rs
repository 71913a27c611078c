//! Approvals and just-in-time access: `/api/v1/approvals` (held
//! statements) and `/api/v1/access` (JIT access requests and grants).
//!
//! Every request is authenticated like the audit endpoints. Who may decide
//! is the policy core's rule ([`airlock_policy::approval::check_vote`]);
//! the store decides races (exactly one of a concurrent approve and deny
//! wins). Reading: a request is visible to its requester, its approvers,
//! auditors and admins.
//!
//! The request and answer types here are the endpoints' wire format: the
//! handlers build them and the [`client`](crate::client) reads them. Their
//! fields are in alphabetical order, the order the API has always sent (and
//! `airlock approvals --json` printed) them in; a test checks it.

use std::sync::Arc;
use std::time::Duration;

use airlock_audit::event::{Approval as ApprovalEvent, now_ms, rfc3339_ms as rfc3339};
use airlock_policy::Principal;
use airlock_policy::approval::{Requester, Vote, check_vote, human};
use airlock_store::{
    ApprovalFilter, ApprovalKind, ApprovalRow, ApprovalStatus, NewApproval, Store, VoteKind,
    VoteOutcome,
};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ApiState;
use crate::audit::{Caller, error, store_error};

/// The terms under which a principal may request a JIT role.
#[derive(Debug, Clone)]
pub struct JitTerms {
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub max_duration: Duration,
    /// The principal's requests are granted at once (`jit.preapprove`).
    pub preapproved: bool,
}

/// What the approvals endpoints need from the rest of the process.
pub trait ApprovalHooks: Send + Sync {
    /// The JIT rule under which `p` may request `role` on `connection`.
    fn jit_terms(&self, p: &Principal, connection: &str, role: &str) -> Option<JitTerms>;
    /// A vote was cast here: held statements may be released now.
    fn nudge(&self);
    /// Journals an approval or grant event.
    fn record(&self, event: ApprovalEvent);
    /// Sends a webhook notification.
    fn notify(&self, event: &'static str, data: Value, summary: String);
}

/// The approvals endpoints' hooks; authentication and the store are the
/// audit endpoints'.
#[derive(Clone)]
pub struct ApprovalsApi {
    pub hooks: Arc<dyn ApprovalHooks>,
}

/// A held statement or an access request, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The human the requester acts for.
    pub act: Option<String>,
    /// Approve votes so far.
    pub approvals: u32,
    /// The groups that may decide.
    pub approvers: Vec<String>,
    pub connection: String,
    /// A held statement, shown alone (`GET …/{id}`): the session's last
    /// statements before it, redacted as recorded, oldest first (absent
    /// in lists, and until the session's events reach the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<String>>,
    /// RFC 3339, milliseconds, like every time here.
    pub created_at: String,
    /// A held statement: when it times out.
    pub deadline: Option<String>,
    pub decided_at: Option<String>,
    /// The deciding voter, or the revoker.
    pub decided_by: Option<String>,
    /// What is asked, as the gateway stored it: [`Approval::detail()`]
    /// reads it. Null when it is not JSON.
    pub detail: Value,
    /// An access request: how long the grant lasts.
    pub duration_seconds: Option<i64>,
    /// An access request: when the grant ends (or ended).
    pub expires_at: Option<String>,
    pub id: Uuid,
    /// `statement` or `access`.
    pub kind: String,
    pub min_approvals: u32,
    /// The reason given with the decision.
    pub reason: Option<String>,
    /// The requester's token subject.
    pub requester: String,
    pub requester_issuer: String,
    pub role: String,
    /// The guardrail (statement) or access rule (access).
    pub rule: String,
    /// A held statement's session.
    pub session: Option<Uuid>,
    /// `pending`, `approved`, `denied`, `timed_out`, `cancelled`,
    /// `abandoned`, `granted`, `expired` or `revoked`.
    pub status: String,
    /// Oldest first.
    pub votes: Vec<ApprovalVote>,
}

impl Approval {
    pub(crate) fn from_row(row: &ApprovalRow) -> Approval {
        Approval {
            act: row.requester_act.clone(),
            approvals: row.approvals,
            approvers: row.approvers.clone(),
            connection: row.connection.clone(),
            context: None,
            created_at: rfc3339(row.created_ms),
            deadline: row.deadline_ms.map(rfc3339),
            decided_at: row.decided_ms.map(rfc3339),
            decided_by: row.decided_by.clone(),
            detail: serde_json::from_str(&row.detail).unwrap_or(Value::Null),
            duration_seconds: row.duration_ms.map(|ms| ms / 1000),
            expires_at: row.expires_ms.map(rfc3339),
            id: row.id,
            kind: row.kind.as_str().to_string(),
            min_approvals: row.min_approvals,
            reason: row.reason.clone(),
            requester: row.requester_subject.clone(),
            requester_issuer: row.requester_issuer.clone(),
            role: row.role.clone(),
            rule: row.rule.clone(),
            session: row.session_id,
            status: row.status.as_str().to_string(),
            votes: row
                .votes
                .iter()
                .map(|v| ApprovalVote {
                    at: rfc3339(v.at_ms),
                    human: v.human.clone(),
                    reason: v.reason.clone(),
                    vote: match v.vote {
                        VoteKind::Approve => "approve",
                        VoteKind::Deny => "deny",
                    }
                    .to_string(),
                    voter: v.voter.clone(),
                })
                .collect(),
        }
    }

    /// The `detail` field, read as far as it is readable.
    pub fn detail(&self) -> ApprovalDetail {
        ApprovalDetail::deserialize(&self.detail).unwrap_or_default()
    }
}

/// One vote on an [`Approval`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    pub at: String,
    /// The human behind the vote (one vote per human).
    pub human: String,
    pub reason: Option<String>,
    /// `approve` or `deny`.
    pub vote: String,
    /// The identity that voted.
    pub voter: String,
}

/// An [`Approval`]'s `detail`, read: a held statement's text and
/// classification (written by the gateway), or an access request's reason.
/// A field that is missing or not of its type reads as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApprovalDetail {
    /// A held statement's text, redacted like its statement event.
    #[serde(default, deserialize_with = "lenient")]
    pub statement: Option<String>,
    /// Its bound parameters, redacted.
    #[serde(default, deserialize_with = "lenient")]
    pub parameters: Option<Vec<airlock_audit::event::Value>>,
    #[serde(default, deserialize_with = "lenient")]
    pub kinds: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient")]
    pub effects: Option<Vec<String>>,
    /// The planner's row estimate.
    #[serde(default, deserialize_with = "lenient")]
    pub estimated_rows: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub in_transaction: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub timeout_seconds: Option<u64>,
    /// A COMMIT held for commit review: what the transaction measurably did.
    #[serde(default, deserialize_with = "lenient")]
    pub effect: Option<Effect>,
    /// An access request's reason.
    #[serde(default, deserialize_with = "lenient")]
    pub reason: Option<String>,
}

/// What a transaction held for commit review did, as measured inside it
/// before its COMMIT (docs/agents.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Effect {
    /// Rows inserted, updated and deleted per table since the first
    /// reviewed statement, triggers and cascades included.
    #[serde(default)]
    pub tables: Vec<TableEffect>,
    /// Per ordinary table the transaction changed: a masked sample of the
    /// rows as it left them, values as text.
    #[serde(default)]
    pub written_rows: Vec<WrittenRows>,
    /// Per table: a masked sample of the rows the reviewed UPDATEs and
    /// DELETEs sent as simple queries were about to change, as they were.
    #[serde(default)]
    pub rows_before: Vec<WrittenRows>,
    /// The reviewed statements, redacted.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Whether the counts are relative to a baseline read as the first
    /// reviewed statement ran (else they may include writes of earlier
    /// transactions of the session not yet flushed to the statistics).
    #[serde(default)]
    pub baseline: bool,
    /// Whether every row the transaction wrote could be sampled, and the
    /// rows before every reviewed UPDATE and DELETE (not when a savepoint
    /// was used, more tables changed than are sampled, or a reviewed
    /// statement was sent with the extended protocol or called a function).
    #[serde(default)]
    pub sample_complete: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TableEffect {
    pub table: String,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WrittenRows {
    pub table: String,
    #[serde(default)]
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// More rows were written than the sample shows.
    #[serde(default)]
    pub more: bool,
}

/// `Some` when the field is a `T`, `None` for anything else.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).ok())
}

/// The answer of `GET /api/v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// The answer of `GET /api/v1/access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessList {
    pub requests: Vec<Approval>,
}

/// What a vote or a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteResult {
    /// A held statement runs.
    Approved,
    /// Refused.
    Denied,
    /// An approval counted; more are needed.
    Counted,
    /// An access request became a grant.
    Granted,
    /// A grant ended.
    Revoked,
}

impl VoteResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteResult::Approved => "approved",
            VoteResult::Denied => "denied",
            VoteResult::Counted => "counted",
            VoteResult::Granted => "granted",
            VoteResult::Revoked => "revoked",
        }
    }
}

/// The answer of `POST …/{id}/approve`, `…/deny` and `…/revoke`: what
/// happened, and the approval afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteAnswer {
    pub approval: Approval,
    pub result: VoteResult,
}

/// The approval or request as webhooks carry it.
fn approval_json(row: &ApprovalRow) -> Value {
    serde_json::to_value(Approval::from_row(row)).unwrap_or(Value::Null)
}

async fn caller(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<(Caller, Store, Arc<dyn ApprovalHooks>), Response> {
    let Some(api) = &state.approvals else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals are not enabled on this gateway",
        ));
    };
    // Who may do what depends on the request itself (its approvers, its
    // requester): each handler checks after reading it.
    let caller = crate::audit::authenticated(state, headers).await?;
    Ok((caller, crate::audit::store(state)?, Arc::clone(&api.hooks)))
}

/// Whether `caller` may read `row`.
fn may_read(caller: &Caller, row: &ApprovalRow) -> bool {
    caller.auditor
        || caller.admin
        || airlock_policy::approval::is_approver(&caller.principal, &row.approvers)
        || (caller.principal.subject == row.requester_subject
            && caller.principal.issuer == row.requester_issuer)
}

/// The query of `GET /api/v1/approvals` and `GET /api/v1/access`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending` (statements' default), `open` (access default: pending and
    /// granted), `all`, or one status.
    pub status: Option<String>,
    /// At most this many (1 to 1000; 100 when absent).
    pub limit: Option<u32>,
}

impl ApprovalsQuery {
    /// The query string's parameters, in this order.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let ApprovalsQuery { status, limit } = self;
        let mut pairs = Vec::new();
        pairs.extend(status.clone().map(|s| ("status", s)));
        pairs.extend(limit.map(|l| ("limit", l.to_string())));
        pairs
    }
}

/// `ACCESS`: the kind of request a route serves (access requests, or held
/// statements).
const fn kind(access: bool) -> ApprovalKind {
    if access {
        ApprovalKind::Access
    } else {
        ApprovalKind::Statement
    }
}

/// `GET /approvals`, `GET /access`.
pub(crate) async fn list<const ACCESS: bool>(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ApprovalsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let kind = kind(ACCESS);
    let (caller, store, _) = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let default = match kind {
        ApprovalKind::Statement => "pending",
        ApprovalKind::Access => "open",
    };
    let wanted = q.status.as_deref().unwrap_or(default);
    let (status, open) = match wanted {
        "all" => (None, false),
        "open" => (None, true),
        s => match ApprovalStatus::parse(s) {
            Some(s) => (Some(s), false),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown status {s:?}: use all, open, pending, approved, denied, timed_out, cancelled, abandoned, granted, expired or revoked"
                    ),
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // "open" is two statuses, each asked for with the limit: older pending
    // requests and live grants are not crowded out by newer decided ones.
    let statuses = if open {
        vec![Some(ApprovalStatus::Pending), Some(ApprovalStatus::Granted)]
    } else {
        vec![status]
    };
    let mut rows = Vec::new();
    for status in statuses {
        let filter = ApprovalFilter {
            kind: Some(kind),
            status,
            limit,
        };
        match store.approvals(&filter).await {
            Ok(more) => rows.extend(more),
            Err(e) => return store_error(&e),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    rows.truncate(limit as usize);
    let items = rows
        .iter()
        .filter(|r| may_read(&caller, r))
        .map(Approval::from_row)
        .collect();
    match kind {
        ApprovalKind::Statement => Json(ApprovalList { approvals: items }).into_response(),
        ApprovalKind::Access => Json(AccessList { requests: items }).into_response(),
    }
}

/// What a request of `kind` is called in messages.
fn noun(kind: ApprovalKind) -> &'static str {
    match kind {
        ApprovalKind::Statement => "approval",
        ApprovalKind::Access => "access request",
    }
}

/// The row `id` of `kind`.
async fn fetch(store: &Store, id: &str, kind: ApprovalKind) -> Result<ApprovalRow, Response> {
    let not_found = || error(StatusCode::NOT_FOUND, format!("no {} {id}", noun(kind)));
    let Ok(uuid) = id.parse::<Uuid>() else {
        return Err(not_found());
    };
    match store.approval(uuid).await {
        Ok(Some(row)) if row.kind == kind => Ok(row),
        Ok(_) => Err(not_found()),
        Err(e) => Err(store_error(&e)),
    }
}

/// The row `id` of `kind`, if the caller may read it.
async fn find(
    store: &Store,
    caller: &Caller,
    id: &str,
    kind: ApprovalKind,
) -> Result<ApprovalRow, Response> {
    let row = fetch(store, id, kind).await?;
    if may_read(caller, &row) {
        return Ok(row);
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!(
            "{} may not see {} {id}: it is visible to its requester, its approvers, auditors and admins",
            caller.principal.subject,
            noun(kind)
        ),
    ))
}

/// `GET /approvals/{id}`, `GET /access/{id}`.
pub(crate) async fn show<const ACCESS: bool>(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let kind = kind(ACCESS);
    let (caller, store, _) = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let row = match find(&store, &caller, &id, kind).await {
        Ok(row) => row,
        Err(r) => return r,
    };
    let mut approval = Approval::from_row(&row);
    if let Some(session) = row.session_id {
        approval.context = context(&store, session, row.created_ms).await;
    }
    Json(approval).into_response()
}

/// Statements a held statement's session ran before it, shown with it.
pub const CONTEXT_STATEMENTS: usize = 5;

/// The last [`CONTEXT_STATEMENTS`] statements `session` recorded before
/// `before_ms`, when the store has its events.
async fn context(store: &Store, session: Uuid, before_ms: i64) -> Option<Vec<String>> {
    let rows = match store
        .session_events(&session.hyphenated().to_string())
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, %session, "reading a held statement's context failed");
            return None;
        }
    };
    // Event times are RFC 3339 in UTC with milliseconds: they sort as text.
    let before = rfc3339(before_ms);
    let mut texts: Vec<String> = rows
        .iter()
        .filter_map(|row| match airlock_audit::Event::decode(&row.payload) {
            Ok(airlock_audit::Event {
                at,
                body: airlock_audit::Body::Statement(s),
                ..
            }) if at <= before => Some(s.text),
            _ => None,
        })
        .collect();
    let skip = texts.len().saturating_sub(CONTEXT_STATEMENTS);
    texts.drain(..skip);
    Some(texts)
}

/// The body of `POST …/{id}/approve`, `…/deny` and `…/revoke` (none at
/// all is no reason).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Why, for the record: required to deny or revoke.
    #[serde(default)]
    pub reason: Option<String>,
}

pub(crate) fn body<T: Default>(body: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    match body {
        Ok(Json(t)) => Ok(t),
        // No body at all is an empty decision.
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, e.body_text())),
    }
}

/// `POST …/{id}/approve` (`APPROVE`) and `…/{id}/deny`.
pub(crate) async fn vote<const ACCESS: bool, const APPROVE: bool>(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    decision: Result<Json<DecisionRequest>, JsonRejection>,
) -> Response {
    let kind = kind(ACCESS);
    let vote = if APPROVE { Vote::Approve } else { Vote::Deny };
    let (caller, store, hooks) = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let decision = match body(decision) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let reason = decision
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    // Who may vote is the check below, which says why not.
    let row = match fetch(&store, &id, kind).await {
        Ok(row) => row,
        Err(r) => return r,
    };
    let requester = Requester {
        subject: &row.requester_subject,
        act: row.requester_act.as_deref(),
    };
    if let Err(refusal) = check_vote(
        &requester,
        &caller.principal,
        &row.approvers,
        vote,
        reason.as_deref(),
        caller.admin,
    ) {
        let status = match refusal {
            airlock_policy::approval::VoteRefusal::ReasonRequired => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        tracing::info!(approval = %row.id, voter = %caller.principal.subject, refusal = %refusal, "vote refused");
        return error(status, refusal.to_string());
    }
    let at = now_ms();
    let cast = airlock_store::Vote {
        voter: caller.principal.subject.clone(),
        human: human(&caller.principal).to_string(),
        vote: match vote {
            Vote::Approve => VoteKind::Approve,
            Vote::Deny => VoteKind::Deny,
        },
        reason: reason.clone(),
        at_ms: at,
    };
    let outcome = match store.vote(row.id, &cast).await {
        Ok(o) => o,
        Err(e) => return store_error(&e),
    };
    let what = noun(kind);
    let result = match outcome {
        VoteOutcome::NotFound => return error(StatusCode::NOT_FOUND, format!("no {what} {id}")),
        VoteOutcome::NotPending(status) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "{what} {id} is already {}",
                    status.as_str().replace('_', " ")
                ),
            );
        }
        VoteOutcome::Expired => {
            return error(
                StatusCode::CONFLICT,
                format!("{what} {id} timed out before it was decided"),
            );
        }
        VoteOutcome::Duplicate => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "{} already voted on {what} {id}; another approver is needed",
                    cast.human
                ),
            );
        }
        VoteOutcome::Counted { .. } => VoteResult::Counted,
        VoteOutcome::Decided(ApprovalStatus::Granted) => VoteResult::Granted,
        VoteOutcome::Decided(ApprovalStatus::Approved) => VoteResult::Approved,
        VoteOutcome::Decided(_) => VoteResult::Denied,
    };
    hooks.nudge();
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no {what} {id}")),
        Err(e) => return store_error(&e),
    };
    tracing::info!(approval = %row.id, voter = %cast.voter, result = result.as_str(), "vote cast");
    if kind == ApprovalKind::Access {
        // A held statement's events are its session's; an access request's
        // are recorded where they are decided.
        let action = match result {
            VoteResult::Counted => "vote",
            other => other.as_str(),
        };
        hooks.record(event(&row, action, Some(&cast.voter), reason.as_deref()));
        match result {
            VoteResult::Granted => hooks.notify(
                "access.granted",
                approval_json(&row),
                format!(
                    "airlock: {} may use role {} on {} until {} (granted by {})",
                    row.requester_subject,
                    row.role,
                    row.connection,
                    row.expires_ms.map(rfc3339).unwrap_or_default(),
                    cast.voter
                ),
            ),
            VoteResult::Denied => hooks.notify(
                "approval.decided",
                approval_json(&row),
                format!(
                    "airlock: access request {} denied by {}",
                    row.id, cast.voter
                ),
            ),
            _ => {}
        }
    }
    Json(VoteAnswer {
        approval: Approval::from_row(&row),
        result,
    })
    .into_response()
}

/// Grants a pre-approved request at once: the policy's vote, recorded and
/// announced like an approver's.
async fn preapprove(
    store: &Store,
    hooks: &dyn ApprovalHooks,
    row: ApprovalRow,
    rule: &str,
) -> Result<Approval, AccessRefused> {
    let by = format!("{}{rule}", airlock_policy::access::POLICY_VOTER);
    let reason = format!("pre-approved by access rule \"{rule}\" (jit.preapprove)");
    let cast = airlock_store::Vote {
        voter: by.clone(),
        human: by.clone(),
        vote: VoteKind::Approve,
        reason: Some(reason.clone()),
        at_ms: now_ms(),
    };
    // min_approvals of a pre-approved request is one: the policy's. The
    // policy's vote must be the one that granted it; otherwise the request
    // (which asked no person) is withdrawn.
    let outcome = store.vote(row.id, &cast).await;
    if !matches!(outcome, Ok(VoteOutcome::Decided(ApprovalStatus::Granted))) {
        tracing::warn!(request = %row.id, ?outcome, "pre-approval not applied; withdrawing the request");
        let _ = store
            .finish(
                row.id,
                ApprovalStatus::Cancelled,
                Some("the pre-approval could not be applied"),
                now_ms(),
            )
            .await;
        return Err(match outcome {
            Err(e) => AccessRefused::Store(e),
            Ok(_) => AccessRefused::Invalid(
                StatusCode::CONFLICT,
                "the pre-approval could not be applied; request again".into(),
            ),
        });
    }
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(AccessRefused::Invalid(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request vanished".into(),
            ));
        }
        Err(e) => return Err(AccessRefused::Store(e)),
    };
    tracing::info!(request = %row.id, rule, "access pre-approved");
    hooks.record(event(&row, "granted", Some(&by), Some(&reason)));
    hooks.notify(
        "access.granted",
        approval_json(&row),
        format!(
            "airlock: {} may use role {} on {} until {} (pre-approved by access rule {rule})",
            row.requester_subject,
            row.role,
            row.connection,
            row.expires_ms.map(rfc3339).unwrap_or_default(),
        ),
    );
    Ok(Approval::from_row(&row))
}

/// An approval event for `row`.
fn event(row: &ApprovalRow, action: &str, by: Option<&str>, reason: Option<&str>) -> ApprovalEvent {
    ApprovalEvent {
        by: by.map(Into::into),
        reason: reason.map(Into::into),
        ..ApprovalEvent::of_row(row, action)
    }
}

/// The body of `POST /api/v1/access/requests`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The connection (a client's dbname).
    pub connection: String,
    /// The role profile to be granted.
    pub role: String,
    /// How long the grant lasts once approved: `30m`, `1h`…
    pub duration: String,
    /// Why, for the approvers and the record.
    pub reason: String,
}

pub(crate) async fn request_access(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<AccessRequest>, JsonRejection>,
) -> Response {
    let (caller, store, hooks) = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let request = match request {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match file_access_request(&store, &*hooks, &caller.principal, &request).await {
        Ok(approval) => (StatusCode::CREATED, Json(approval)).into_response(),
        Err(AccessRefused::Invalid(status, message)) => error(status, message),
        Err(AccessRefused::Store(e)) => store_error(&e),
    }
}

/// Why an access request was not filed.
#[derive(Debug)]
pub enum AccessRefused {
    /// The request is not one the principal may file (the status the API
    /// answers with, and why).
    Invalid(StatusCode, String),
    Store(airlock_store::StoreError),
}

impl std::fmt::Display for AccessRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessRefused::Invalid(_, message) => f.write_str(message),
            AccessRefused::Store(_) => f.write_str("the approvals store is unavailable"),
        }
    }
}

/// Files a just-in-time access request for `p`: checked against the JIT
/// rules, stored, journaled and announced. `POST /api/v1/access/requests`
/// and the MCP endpoint's `request_access` tool both call it.
pub async fn file_access_request(
    store: &Store,
    hooks: &dyn ApprovalHooks,
    p: &Principal,
    request: &AccessRequest,
) -> Result<Approval, AccessRefused> {
    let invalid = |status, message: String| Err(AccessRefused::Invalid(status, message));
    if request.reason.trim().is_empty() {
        return invalid(
            StatusCode::BAD_REQUEST,
            "an access request needs a reason".into(),
        );
    }
    let duration = match humantime::parse_duration(request.duration.trim()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            return invalid(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid duration {:?} (write e.g. 30m or 1h)",
                    request.duration
                ),
            );
        }
    };
    let Some(terms) = hooks.jit_terms(p, &request.connection, &request.role) else {
        return invalid(
            StatusCode::FORBIDDEN,
            format!(
                "no just-in-time access rule lets {} request role \"{}\" on connection \"{}\"",
                p.subject, request.role, request.connection
            ),
        );
    };
    if duration > terms.max_duration {
        return invalid(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is longer than access rule \"{}\" allows (jit.max_duration: {})",
                humantime::format_duration(duration),
                terms.rule,
                humantime::format_duration(terms.max_duration)
            ),
        );
    }
    let created = now_ms();
    let row = NewApproval {
        id: Uuid::new_v4(),
        kind: ApprovalKind::Access,
        requester_issuer: p.issuer.clone(),
        requester_subject: p.subject.clone(),
        requester_act: airlock_policy::approval::encode_actors(&p.act_chain),
        connection: request.connection.clone(),
        role: request.role.clone(),
        rule: terms.rule.clone(),
        approvers: terms.approvers.clone(),
        min_approvals: if terms.preapproved {
            1
        } else {
            terms.min_approvals
        },
        detail: json!({ "reason": request.reason.trim() }).to_string(),
        session_id: None,
        gateway: None,
        created_ms: created,
        deadline_ms: None,
        duration_ms: Some(duration.as_millis() as i64),
    };
    store
        .create_approval(&row)
        .await
        .map_err(AccessRefused::Store)?;
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return invalid(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request vanished".into(),
            );
        }
        Err(e) => return Err(AccessRefused::Store(e)),
    };
    tracing::info!(request = %row.id, connection = %row.connection, role = %row.role, "access requested");
    hooks.record(event(&row, "requested", None, Some(request.reason.trim())));
    if terms.preapproved {
        return preapprove(store, hooks, row, &terms.rule).await;
    }
    hooks.notify(
        "access.requested",
        approval_json(&row),
        format!(
            "airlock: {} requests role {} on {} for {}: {} — approve with `airlock access approve {}`",
            row.requester_subject,
            row.role,
            row.connection,
            humantime::format_duration(duration),
            request.reason.trim(),
            row.id
        ),
    );
    Ok(Approval::from_row(&row))
}

pub(crate) async fn revoke_access(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    decision: Result<Json<DecisionRequest>, JsonRejection>,
) -> Response {
    let (caller, store, hooks) = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let decision = match body(decision) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(reason) = decision
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "a revocation needs a reason");
    };
    let row = match find(&store, &caller, &id, ApprovalKind::Access).await {
        Ok(row) => row,
        Err(r) => return r,
    };
    // The grantee may give it up; approvers and admins may take it away.
    let own = caller.principal.subject == row.requester_subject
        && caller.principal.issuer == row.requester_issuer;
    if !(own
        || caller.admin
        || airlock_policy::approval::is_approver(&caller.principal, &row.approvers))
    {
        return error(
            StatusCode::FORBIDDEN,
            "only the grantee, the rule's approvers and admins may revoke a grant",
        );
    }
    let by = caller.principal.subject.clone();
    // A grant already ended is not revoked again (revoke answers with the
    // status afterwards, whoever ended it).
    let revoked = match row.status {
        ApprovalStatus::Granted => store.revoke(row.id, &by, &reason, now_ms()).await,
        other => Ok(other),
    };
    match revoked {
        Ok(ApprovalStatus::Revoked) if row.status == ApprovalStatus::Granted => {}
        Ok(other) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "access request {id} is {}, not granted",
                    other.as_str().replace('_', " ")
                ),
            );
        }
        Err(e) => return store_error(&e),
    }
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no access request {id}")),
        Err(e) => return store_error(&e),
    };
    tracing::info!(grant = %row.id, by = %by, "grant revoked");
    hooks.record(event(&row, "revoked", Some(&by), Some(&reason)));
    hooks.nudge();
    Json(VoteAnswer {
        approval: Approval::from_row(&row),
        result: VoteResult::Revoked,
    })
    .into_response()
}
