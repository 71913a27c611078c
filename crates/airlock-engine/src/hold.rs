//! Holding a statement for approval, for any door.
//!
//! A door whose judge answered `approve` asks [`begin`] to hold the
//! statement: the hold is journaled, stored (so any replica's API can
//! decide it), announced, and a [`Waiting`] comes back. The door tells its
//! client in its own way (a NOTICE, a JSON-RPC progress message), waits on
//! [`Waiting::decided`] alongside its sockets, and settles the hold with
//! [`end`] (decided or timed out) or [`cancel`] (its client went away).
//! Every way it can end is a [`HoldOutcome`], which the door maps to its own
//! error (a SQLSTATE, a MySQL errno, a JSON-RPC error).

use std::time::Duration;

use airlock_audit::event::{Approval, Value, now_ms, rfc3339_ms};
use airlock_audit::{RecordError, Recorder};
use airlock_policy::{Hint, Principal, Route};
use airlock_store::ApprovalStatus;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::approvals::{Approvals, Decided};

/// What approvers are asked about a held statement (SPEC §8). Texts are
/// redacted as the recording redacts them.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub text: String,
    pub params: Vec<Value>,
    pub kinds: Vec<String>,
    pub effects: Vec<String>,
    /// The planner's row estimate, for an UPDATE or DELETE.
    pub estimate: Option<u64>,
    /// The statement event's seq, when it was recorded before the hold
    /// (the extended protocol's Bind).
    pub seq: Option<u64>,
    /// For a COMMIT held by commit review: what the transaction measurably
    /// did, as the door measured it (rows per table, a masked sample).
    pub effect: Option<serde_json::Value>,
}

impl HoldRequest {
    /// The request for `statements`, which the judge's `Ruling::Approve`
    /// (`rule`, `approvers`, `min_approvals`, `estimate`) holds; `text` and
    /// `params` already redacted as the recording redacts them
    /// (`RecordingSession::redacted`). Not yet recorded (`seq` is `None`).
    pub fn new(
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
        estimate: Option<u64>,
        statements: &[airlock_policy::Statement],
        text: String,
        params: Vec<Value>,
    ) -> HoldRequest {
        HoldRequest {
            rule,
            approvers,
            min_approvals,
            text,
            params,
            kinds: crate::recording::kinds(statements),
            effects: crate::recording::effects(statements),
            estimate,
            seq: None,
            effect: None,
        }
    }
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Run it.
    Approved { approval: Uuid },
    Denied {
        approval: Uuid,
        by: Option<String>,
        reason: Option<String>,
    },
    TimedOut {
        approval: Uuid,
        reason: Option<String>,
    },
    /// Ended another way before it ran (cancelled, abandoned).
    Cancelled {
        approval: Uuid,
        status: ApprovalStatus,
        reason: Option<String>,
    },
    /// It cannot be held: `what` is missing (the approvals service or its
    /// store).
    Unavailable {
        approval: Option<Uuid>,
        rule: String,
        what: &'static str,
    },
    /// airlock cannot record it, so it does not run.
    Unrecorded { approval: Option<Uuid> },
}

/// How a door should refuse a statement whose hold did not approve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A person or the policy said no (PostgreSQL: `42501`).
    Policy,
    /// airlock could not do its part (PostgreSQL: `58000`).
    System,
}

impl HoldOutcome {
    /// The approval it was, once one was created.
    pub fn approval(&self) -> Option<Uuid> {
        match self {
            HoldOutcome::Approved { approval }
            | HoldOutcome::Denied { approval, .. }
            | HoldOutcome::TimedOut { approval, .. }
            | HoldOutcome::Cancelled { approval, .. } => Some(*approval),
            HoldOutcome::Unavailable { approval, .. } | HoldOutcome::Unrecorded { approval } => {
                *approval
            }
        }
    }

    /// `None` when the statement runs; otherwise how to refuse it and the
    /// client's message.
    pub fn refusal(&self) -> Option<(Refusal, String)> {
        let because = |reason: &Option<String>| {
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        };
        Some(match self {
            HoldOutcome::Approved { .. } => return None,
            HoldOutcome::Denied {
                approval,
                by,
                reason,
            } => (
                Refusal::Policy,
                format!(
                    "airlock: statement not run: approval {approval} was denied by {}{}",
                    by.as_deref().unwrap_or("an approver"),
                    because(reason)
                ),
            ),
            HoldOutcome::TimedOut { approval, reason } => (
                Refusal::Policy,
                format!(
                    "airlock: statement not run: approval {approval} timed out{}",
                    because(reason)
                ),
            ),
            HoldOutcome::Cancelled {
                approval,
                status,
                reason,
            } => (
                Refusal::Policy,
                format!(
                    "airlock: statement not run: approval {approval} is {}{}",
                    status.as_str().replace('_', " "),
                    because(reason)
                ),
            ),
            HoldOutcome::Unavailable { rule, what, .. } => (
                Refusal::System,
                format!(
                    "airlock: approval required (rule \"{rule}\"), but {what}; the statement was not run"
                ),
            ),
            HoldOutcome::Unrecorded { .. } => (Refusal::System, UNRECORDED.into()),
        })
    }
}

impl HoldOutcome {
    /// What the client could do instead (`None` when the statement runs).
    /// A hold's own refusals name the rule `approval`.
    pub fn hint(&self) -> Option<Hint> {
        Some(match self {
            HoldOutcome::Approved { .. } => return None,
            HoldOutcome::Denied { .. } => Hint::never(
                "approval",
                "an approver refused this statement: do not send it again unchanged; change what the reason asks for",
            ),
            HoldOutcome::TimedOut { .. } => Hint::later(
                "approval",
                "nobody decided in time: ask an approver to watch `airlock approvals list` (or the console), then send it again",
            ),
            HoldOutcome::Cancelled { .. } => Hint::later(
                "approval",
                "the hold ended before a decision; send the statement again to be held anew",
            ),
            HoldOutcome::Unavailable { rule, .. } => Hint::later(
                rule,
                "the statement needs an approval that cannot be filed now; send it again once the approvals store is back",
            ),
            HoldOutcome::Unrecorded { .. } => unrecorded_hint(),
        })
    }
}

/// What to do about a statement airlock could not record.
pub fn unrecorded_hint() -> Hint {
    Hint::later(
        "audit",
        "send it again once airlock can record (its audit journal is writable again)",
    )
}

/// The client's message for a statement airlock cannot record.
pub const UNRECORDED: &str = "airlock: the statement was not run because airlock cannot record it; airlock runs nothing it does not record";

/// Who holds: the session's principal and route, and where its approval
/// events are journaled.
pub struct Holder<'a> {
    pub approvals: &'a Approvals,
    pub principal: &'a Principal,
    pub route: &'a Route,
    pub trail: Option<&'a Trail>,
}

/// Where one session's approval events are journaled.
#[derive(Clone)]
pub struct Trail {
    pub recorder: std::sync::Arc<Recorder>,
    pub session: Uuid,
}

impl Trail {
    /// Journals an approval event of this session.
    pub fn approval(&self, mut event: Approval) -> Result<(), RecordError> {
        event.session = Some(self.session);
        self.recorder
            .record(&airlock_audit::Event::now(airlock_audit::Body::Approval(
                event,
            )))
            .map(drop)
    }
}

impl Holder<'_> {
    fn record(&self, event: Approval) -> Result<(), RecordError> {
        match self.trail {
            Some(t) => t.approval(event),
            None => Ok(()),
        }
    }

    fn event(&self, id: Uuid, action: &str, request: &HoldRequest, requester: bool) -> Approval {
        Approval {
            id,
            request: "statement".into(),
            action: action.into(),
            seq: request.seq,
            rule: request.rule.clone(),
            connection: self.route.connection.clone(),
            role: self.route.role.clone(),
            requester: requester.then(|| self.principal.subject.clone()),
            act: self.principal.act.clone().filter(|_| requester),
            ..Default::default()
        }
    }
}

/// How long a held statement waited for its decision, by outcome
/// (`airlock_approval_wait_seconds`).
fn waited(held_at: std::time::Instant, outcome: &str) {
    metrics::histogram!(APPROVAL_WAIT_SECONDS, "outcome" => outcome.to_string())
        .record(held_at.elapsed().as_secs_f64());
}

/// The histogram of how long held statements wait for their decision.
pub const APPROVAL_WAIT_SECONDS: &str = "airlock_approval_wait_seconds";

/// How long statements are held.
#[derive(Debug, Clone, Copy)]
pub struct HoldTimeouts {
    /// `approvals.timeout`.
    pub idle: Duration,
    /// `approvals.timeout_in_transaction`.
    pub in_transaction: Duration,
}

/// A held statement, waiting for its decision.
pub struct Waiting {
    pub id: Uuid,
    /// When the statement was held, for `airlock_approval_wait_seconds`.
    held_at: std::time::Instant,
    decided: oneshot::Receiver<Decided>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    in_transaction: bool,
    request: HoldRequest,
}

/// How the wait ended: decided, or `None` when the time ran out (or
/// nobody is left to decide).
pub type Wait = Option<Decided>;

impl Waiting {
    /// Resolves when the statement is decided or its time is up.
    /// Cancel-safe: a door selects on it with its sockets.
    pub async fn decided(&mut self) -> Wait {
        match tokio::time::timeout_at(self.deadline, &mut self.decided).await {
            Ok(Ok(d)) => Some(d),
            _ => None,
        }
    }

    pub fn request(&self) -> &HoldRequest {
        &self.request
    }
}

/// Holds a statement: journaled, stored and announced before anyone can act
/// on it. `Err` is the outcome when it cannot be held (nothing runs).
pub async fn begin(
    holder: &Holder<'_>,
    timeouts: HoldTimeouts,
    request: HoldRequest,
    in_transaction: bool,
) -> Result<Waiting, HoldOutcome> {
    let id = Uuid::new_v4();
    let approvals = holder.approvals;
    let (principal, route) = (holder.principal, holder.route);
    let Some(store) = approvals.store() else {
        tracing::warn!("statement needs approval, but the store is not connected");
        return Err(HoldOutcome::Unavailable {
            approval: Some(id),
            rule: request.rule,
            what: "the approvals store is unavailable",
        });
    };
    let timeout = if in_transaction {
        timeouts.in_transaction
    } else {
        timeouts.idle
    };
    let created = now_ms();
    let deadline_ms = created + timeout.as_millis() as i64;
    let session = holder.trail.map(|t| t.session);
    let mut event = holder.event(id, "requested", &request, true);
    event.approvers = request.approvers.clone();
    event.min_approvals = Some(request.min_approvals);
    event.estimate = request.estimate;
    event.until = Some(rfc3339_ms(deadline_ms));
    if let Err(e) = holder.record(event) {
        tracing::error!(error = %e, "a hold cannot be recorded");
        return Err(HoldOutcome::Unrecorded { approval: None });
    }
    let mut detail = serde_json::json!({
        "statement": request.text,
        "parameters": request.params,
        "kinds": request.kinds,
        "effects": request.effects,
        "estimated_rows": request.estimate,
        "in_transaction": in_transaction,
        "timeout_seconds": timeout.as_secs(),
    });
    if let Some(effect) = &request.effect {
        detail["effect"] = effect.clone();
    }
    let row = airlock_store::NewApproval {
        id,
        kind: airlock_store::ApprovalKind::Statement,
        requester_issuer: principal.issuer.clone(),
        requester_subject: principal.subject.clone(),
        requester_act: airlock_policy::approval::encode_actors(&principal.act_chain),
        connection: route.connection.clone(),
        role: route.role.clone(),
        rule: request.rule.clone(),
        approvers: request.approvers.clone(),
        min_approvals: request.min_approvals,
        detail: detail.to_string(),
        session_id: session,
        gateway: Some(approvals.gateway),
        created_ms: created,
        deadline_ms: Some(deadline_ms),
        duration_ms: None,
    };
    if let Err(e) = store.create_approval(&row).await {
        tracing::warn!(error = %e, "an approval could not be stored");
        let mut cancelled = holder.event(id, "cancelled", &request, false);
        cancelled.reason = Some("the approvals store is unavailable".into());
        let _ = holder.record(cancelled);
        return Err(HoldOutcome::Unavailable {
            approval: Some(id),
            rule: request.rule,
            what: "the approvals store is unavailable",
        });
    }
    tracing::info!(approval = %id, rule = %request.rule, in_transaction, "statement held for approval");
    let mut data = serde_json::json!({
            "id": id,
            "rule": request.rule,
            "connection": route.connection,
            "role": route.role,
            "requester": principal.subject,
            "act": principal.act,
            "approvers": request.approvers,
            "min_approvals": request.min_approvals,
            "statement": request.text,
            "kinds": request.kinds,
            "estimated_rows": request.estimate,
            "session": session,
            "deadline": rfc3339_ms(deadline_ms),
    });
    if let Some(effect) = &request.effect {
        data["effect"] = effect.clone();
    }
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.requested",
        data,
        summary: format!(
            "airlock: {}{} asks to {} on {} (rule {}): approve with `airlock approvals approve {id}`",
            principal.subject,
            principal
                .act
                .as_deref()
                .map(|a| format!(" (for {a})"))
                .unwrap_or_default(),
            if request.effect.is_some() {
                "commit a reviewed transaction"
            } else {
                "run a statement"
            },
            route.connection,
            request.rule
        ),
    });
    Ok(Waiting {
        id,
        held_at: std::time::Instant::now(),
        decided: approvals.wait(id),
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        in_transaction,
        request,
    })
}

/// The client's notice for a statement just held.
pub fn held_notice(w: &Waiting) -> String {
    let what = if w.request.effect.is_some() {
        "COMMIT held for review"
    } else {
        "statement held for approval"
    };
    format!(
        "airlock: {what} {} (rule {}); approve with: airlock approvals approve {}",
        w.id, w.request.rule, w.id
    )
}

/// Settles a hold that was decided or timed out: what the held statement
/// gets.
pub async fn end(holder: &Holder<'_>, w: Waiting, wait: Wait) -> HoldOutcome {
    let id = w.id;
    let held_at = w.held_at;
    let approvals = holder.approvals;
    let decided = match wait {
        Some(d) => d,
        // Timed out (or the worker is gone): time it out in the store,
        // unless a decision won the race.
        None => {
            let reason = format!(
                "nobody decided within {} ({})",
                humantime::format_duration(w.timeout),
                if w.in_transaction {
                    "approvals.timeout_in_transaction"
                } else {
                    "approvals.timeout"
                }
            );
            approvals
                .finish(id, ApprovalStatus::TimedOut, &reason)
                .await
        }
    };
    waited(held_at, decided.status.as_str());
    let mut event = holder.event(id, decided.status.as_str(), &w.request, false);
    event.by = decided.by.clone();
    event.reason = decided.reason.clone();
    let recorded = holder.record(event);
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.decided",
        data: serde_json::json!({
            "id": id,
            "status": decided.status.as_str(),
            "by": decided.by,
            "reason": decided.reason,
            "rule": w.request.rule,
            "connection": holder.route.connection,
        }),
        summary: format!(
            "airlock: approval {id} {}{}",
            decided.status.as_str().replace('_', " "),
            decided
                .by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default()
        ),
    });
    tracing::info!(approval = %id, status = decided.status.as_str(), "hold ended");
    match decided.status {
        ApprovalStatus::Approved => match recorded {
            Ok(()) => HoldOutcome::Approved { approval: id },
            Err(e) => {
                tracing::error!(error = %e, "an approval cannot be recorded");
                HoldOutcome::Unrecorded { approval: Some(id) }
            }
        },
        ApprovalStatus::Denied => HoldOutcome::Denied {
            approval: id,
            by: decided.by,
            reason: decided.reason,
        },
        ApprovalStatus::TimedOut => HoldOutcome::TimedOut {
            approval: id,
            reason: decided.reason,
        },
        status => HoldOutcome::Cancelled {
            approval: id,
            status,
            reason: decided.reason,
        },
    }
}

/// Ends the hold of a session that ended (`why`): cancelled, unless a
/// decision won the race, which the journal then shows.
pub async fn cancel(holder: &Holder<'_>, w: Waiting, why: &str) {
    let approvals = holder.approvals;
    let decided = approvals.finish(w.id, ApprovalStatus::Cancelled, why).await;
    let status = decided.status.as_str();
    waited(w.held_at, status);
    tracing::info!(approval = %w.id, status, "held statement's session ended");
    let mut event = holder.event(w.id, status, &w.request, false);
    event.by = decided.by;
    event.reason = decided.reason.clone();
    let _ = holder.record(event);
    approvals.notifier.send(airlock_notify::Notification {
        event: "approval.decided",
        data: serde_json::json!({"id": w.id, "status": status, "reason": decided.reason}),
        summary: format!(
            "airlock: approval {} {}: {why}",
            w.id,
            status.replace('_', " ")
        ),
    });
}
