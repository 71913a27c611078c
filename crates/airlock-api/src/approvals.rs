//! Approvals and just-in-time access: `/api/v1/approvals` (held
//! statements) and `/api/v1/access` (JIT access requests and grants).
//!
//! Every request is authenticated like the audit endpoints. Who may decide
//! is the policy core's rule ([`airlock_policy::approval::check_vote`]);
//! the store decides races (exactly one of a concurrent approve and deny
//! wins). Reading: a request is visible to its requester, its approvers,
//! auditors and admins.

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
use serde::Deserialize;
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

/// The approval or request as the API shows it.
pub(crate) fn approval_json(row: &ApprovalRow) -> Value {
    let detail: Value = serde_json::from_str(&row.detail).unwrap_or(Value::Null);
    json!({
        "id": row.id,
        "kind": row.kind.as_str(),
        "status": row.status.as_str(),
        "requester": row.requester_subject,
        "requester_issuer": row.requester_issuer,
        "act": row.requester_act,
        "connection": row.connection,
        "role": row.role,
        "rule": row.rule,
        "approvers": row.approvers,
        "min_approvals": row.min_approvals,
        "approvals": row.approvals,
        "session": row.session_id,
        "created_at": rfc3339(row.created_ms),
        "deadline": row.deadline_ms.map(rfc3339),
        "decided_at": row.decided_ms.map(rfc3339),
        "decided_by": row.decided_by,
        "reason": row.reason,
        "duration_seconds": row.duration_ms.map(|ms| ms / 1000),
        "expires_at": row.expires_ms.map(rfc3339),
        "detail": detail,
        "votes": row.votes.iter().map(|v| json!({
            "voter": v.voter,
            "human": v.human,
            "vote": match v.vote { VoteKind::Approve => "approve", VoteKind::Deny => "deny" },
            "reason": v.reason,
            "at": rfc3339(v.at_ms),
        })).collect::<Vec<_>>(),
    })
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
        || caller.principal.in_any_group(&row.approvers)
        || (caller.principal.subject == row.requester_subject
            && caller.principal.issuer == row.requester_issuer)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `pending` (statements' default), `open` (access default: pending and
    /// granted), `all`, or one status.
    status: Option<String>,
    limit: Option<u32>,
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
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
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
    let filter = ApprovalFilter {
        kind: Some(kind),
        status,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    match store.approvals(&filter).await {
        Ok(rows) => {
            let items: Vec<Value> = rows
                .iter()
                .filter(|r| {
                    !open || matches!(r.status, ApprovalStatus::Pending | ApprovalStatus::Granted)
                })
                .filter(|r| may_read(&caller, r))
                .map(approval_json)
                .collect();
            let key = match kind {
                ApprovalKind::Statement => "approvals",
                ApprovalKind::Access => "requests",
            };
            Json(json!({ key: items })).into_response()
        }
        Err(e) => store_error(&e),
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
    match find(&store, &caller, &id, kind).await {
        Ok(row) => Json(approval_json(&row)).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    #[serde(default)]
    reason: Option<String>,
}

fn body<T: Default>(body: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
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
    decision: Result<Json<Decision>, JsonRejection>,
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
        VoteOutcome::Counted { .. } => "counted",
        VoteOutcome::Decided(ApprovalStatus::Granted) => "granted",
        VoteOutcome::Decided(ApprovalStatus::Approved) => "approved",
        VoteOutcome::Decided(_) => "denied",
    };
    hooks.nudge();
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no {what} {id}")),
        Err(e) => return store_error(&e),
    };
    tracing::info!(approval = %row.id, voter = %cast.voter, result, "vote cast");
    if kind == ApprovalKind::Access {
        // A held statement's events are its session's; an access request's
        // are recorded where they are decided.
        let action = if result == "counted" { "vote" } else { result };
        hooks.record(event(&row, action, Some(&cast.voter), reason.as_deref()));
        match result {
            "granted" => hooks.notify(
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
            "denied" => hooks.notify(
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
    Json(json!({ "result": result, "approval": approval_json(&row) })).into_response()
}

/// An approval event for `row`.
fn event(row: &ApprovalRow, action: &str, by: Option<&str>, reason: Option<&str>) -> ApprovalEvent {
    ApprovalEvent {
        by: by.map(Into::into),
        reason: reason.map(Into::into),
        ..ApprovalEvent::of_row(row, action)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessRequest {
    connection: String,
    role: String,
    /// `30m`, `1h`…
    duration: String,
    reason: String,
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
    if request.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "an access request needs a reason");
    }
    let duration = match humantime::parse_duration(request.duration.trim()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid duration {:?} (write e.g. 30m or 1h)",
                    request.duration
                ),
            );
        }
    };
    let p = &caller.principal;
    let Some(terms) = hooks.jit_terms(p, &request.connection, &request.role) else {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "no just-in-time access rule lets {} request role \"{}\" on connection \"{}\"",
                p.subject, request.role, request.connection
            ),
        );
    };
    if duration > terms.max_duration {
        return error(
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
        requester_act: p.act.clone(),
        connection: request.connection.clone(),
        role: request.role.clone(),
        rule: terms.rule.clone(),
        approvers: terms.approvers.clone(),
        min_approvals: terms.min_approvals,
        detail: json!({ "reason": request.reason.trim() }).to_string(),
        session_id: None,
        gateway: None,
        created_ms: created,
        deadline_ms: None,
        duration_ms: Some(duration.as_millis() as i64),
    };
    if let Err(e) = store.create_approval(&row).await {
        return store_error(&e);
    }
    let row = match store.approval(row.id).await {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the request vanished"),
        Err(e) => return store_error(&e),
    };
    tracing::info!(request = %row.id, connection = %row.connection, role = %row.role, "access requested");
    hooks.record(event(&row, "requested", None, Some(request.reason.trim())));
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
    (StatusCode::CREATED, Json(approval_json(&row))).into_response()
}

pub(crate) async fn revoke_access(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    decision: Result<Json<Decision>, JsonRejection>,
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
    if !(own || caller.admin || caller.principal.in_any_group(&row.approvers)) {
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
    Json(json!({ "result": "revoked", "approval": approval_json(&row) })).into_response()
}
