//! Human approvals of held statements and just-in-time access grants.
//!
//! One table, `approvals`, holds both kinds: a statement a gateway holds
//! until enough humans approve it ([`ApprovalKind::Statement`]), and a
//! request for access to a connection for a while
//! ([`ApprovalKind::Access`]). Votes are rows of `approval_votes`, one per
//! human per approval. Gateways heartbeat into `gateways`, so a statement
//! whose gateway died is abandoned rather than approved for nobody.
//!
//! Every change of status is a conditional `UPDATE` on the status it leaves
//! (`pending`, or `granted` for a revocation or an expiry), so replicas and
//! voters racing on a row change it exactly once, and the loser learns the
//! status the winner left.

use std::collections::HashMap;
use std::fmt;

use sqlx::Row as _;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Store, StoreError, bad};

/// What an approval is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalKind {
    /// A held SQL statement: approved, it runs once.
    Statement,
    /// A just-in-time access request: granted, it lasts `duration_ms`.
    Access,
}

impl ApprovalKind {
    /// `statement` or `access`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Statement => "statement",
            ApprovalKind::Access => "access",
        }
    }

    /// The kind [`as_str`](ApprovalKind::as_str) names.
    pub fn parse(s: &str) -> Option<ApprovalKind> {
        match s {
            "statement" => Some(ApprovalKind::Statement),
            "access" => Some(ApprovalKind::Access),
            _ => None,
        }
    }
}

impl fmt::Display for ApprovalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an approval stands.
///
/// Statements: `pending` → `approved` | `denied` | `timed_out` |
/// `cancelled` | `abandoned`. Access requests: `pending` → `granted` |
/// `denied` | `cancelled`, and `granted` → `expired` | `revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    /// Waiting for votes.
    Pending,
    /// Statement: enough approve votes; the gateway may run it.
    Approved,
    /// A deny vote.
    Denied,
    /// Statement: the deadline passed before a decision.
    TimedOut,
    /// The requester (or its session) gave up.
    Cancelled,
    /// Statement: the gateway holding it stopped.
    Abandoned,
    /// Access: enough approve votes; the grant runs until `expires_ms`.
    Granted,
    /// Access: the grant ran out.
    Expired,
    /// Access: the grant was ended early.
    Revoked,
}

impl ApprovalStatus {
    /// The stored name: `pending`, `approved`, `denied`, `timed_out`,
    /// `cancelled`, `abandoned`, `granted`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::TimedOut => "timed_out",
            ApprovalStatus::Cancelled => "cancelled",
            ApprovalStatus::Abandoned => "abandoned",
            ApprovalStatus::Granted => "granted",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Revoked => "revoked",
        }
    }

    /// The status [`as_str`](ApprovalStatus::as_str) names.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "timed_out" => ApprovalStatus::TimedOut,
            "cancelled" => ApprovalStatus::Cancelled,
            "abandoned" => ApprovalStatus::Abandoned,
            "granted" => ApprovalStatus::Granted,
            "expired" => ApprovalStatus::Expired,
            "revoked" => ApprovalStatus::Revoked,
            _ => return None,
        })
    }

    /// Nothing will change it any more: neither pending nor granted.
    pub fn is_final(self) -> bool {
        !matches!(self, ApprovalStatus::Pending | ApprovalStatus::Granted)
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vote's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoteKind {
    Approve,
    Deny,
}

impl VoteKind {
    /// `approve` or `deny`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            VoteKind::Approve => "approve",
            VoteKind::Deny => "deny",
        }
    }

    /// The vote [`as_str`](VoteKind::as_str) names.
    pub fn parse(s: &str) -> Option<VoteKind> {
        match s {
            "approve" => Some(VoteKind::Approve),
            "deny" => Some(VoteKind::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for VoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approval to create, pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    pub id: Uuid,
    pub kind: ApprovalKind,
    pub requester_issuer: String,
    pub requester_subject: String,
    /// The human an agent acts for.
    pub requester_act: Option<String>,
    pub connection: String,
    pub role: String,
    /// The policy rule that asked for approval.
    pub rule: String,
    /// The groups whose members may vote.
    pub approvers: Vec<String>,
    /// Approve votes (by distinct humans) needed; at least 1.
    pub min_approvals: u32,
    /// Opaque JSON text: statement, classification, estimate, reason, ...
    pub detail: String,
    pub session_id: Option<Uuid>,
    /// The gateway process holding the statement (see
    /// [`Store::abandon_stale`]).
    pub gateway: Option<Uuid>,
    pub created_ms: i64,
    /// No approval at or after this time.
    pub deadline_ms: Option<i64>,
    /// Access: how long a grant lasts; required (> 0) for that kind.
    pub duration_ms: Option<i64>,
}

/// An approval as stored, with its votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: Uuid,
    pub kind: ApprovalKind,
    pub status: ApprovalStatus,
    pub requester_issuer: String,
    pub requester_subject: String,
    pub requester_act: Option<String>,
    pub connection: String,
    pub role: String,
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// Approve votes so far.
    pub approvals: u32,
    pub detail: String,
    pub session_id: Option<Uuid>,
    pub gateway: Option<Uuid>,
    pub created_ms: i64,
    pub deadline_ms: Option<i64>,
    /// When the status last changed by a decision (a deciding vote,
    /// [`finish`](Store::finish), [`revoke`](Store::revoke), an abandonment);
    /// an expiry leaves it at the grant.
    pub decided_ms: Option<i64>,
    /// The reason given with that decision.
    pub reason: Option<String>,
    /// Who made it: the deciding voter, or the revoker.
    pub decided_by: Option<String>,
    pub duration_ms: Option<i64>,
    /// Access: when the grant ends (or ended, if revoked earlier).
    pub expires_ms: Option<i64>,
    /// Oldest first.
    pub votes: Vec<VoteRow>,
}

/// A recorded vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRow {
    /// The identity that voted (e.g. an agent, or the human's own login).
    pub voter: String,
    /// The human behind it: one vote per human per approval.
    pub human: String,
    pub vote: VoteKind,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// A vote to cast with [`Store::vote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub voter: String,
    pub human: String,
    pub vote: VoteKind,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// What [`Store::vote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteOutcome {
    /// No approval has that id. Nothing recorded.
    NotFound,
    /// It was decided already (this status). Nothing recorded.
    NotPending(ApprovalStatus),
    /// Its deadline passed while pending; a statement is now `timed_out`
    /// (an access request stays pending for its owner to cancel). Nothing
    /// recorded.
    Expired,
    /// This human voted on it already. Nothing recorded.
    Duplicate,
    /// The approve vote was recorded; it is still pending.
    Counted { approvals: u32, needed: u32 },
    /// The vote was recorded and decided it: `approved`, `granted` or
    /// `denied`.
    Decided(ApprovalStatus),
}

/// Which approvals [`Store::approvals`] lists. Every `Some` must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFilter {
    pub kind: Option<ApprovalKind>,
    pub status: Option<ApprovalStatus>,
    /// At most this many (the newest).
    pub limit: u32,
}

impl Default for ApprovalFilter {
    /// Every approval, the newest 100.
    fn default() -> Self {
        ApprovalFilter {
            kind: None,
            status: None,
            limit: 100,
        }
    }
}

/// The columns every approval query reads, as `decode_approval` reads them.
const APPROVAL_COLUMNS: &str = "id, kind, status, requester_issuer, requester_subject, \
     requester_act, connection, role, rule, approvers, min_approvals, approvals, detail, \
     session_id, gateway, created_ms, deadline_ms, decided_ms, reason, decided_by, \
     duration_ms, expires_ms";

/// Ids per `IN (…)` list: far under SQLite's and PostgreSQL's limits.
const ID_CHUNK: usize = 500;

/// The reasons recorded when a gateway's statements are abandoned.
const STALE_REASON: &str = "the gateway holding the statement stopped heartbeating";
const SHUTDOWN_REASON: &str = "the gateway holding the statement shut down";

impl Store {
    /// Stores a new approval, `pending` with no votes. An id already stored
    /// is an error.
    pub async fn create_approval(&self, new: &NewApproval) -> Result<(), StoreError> {
        if new.min_approvals == 0 {
            return Err(StoreError::Invalid(
                "an approval needs min_approvals of at least 1".into(),
            ));
        }
        if new.kind == ApprovalKind::Access && new.duration_ms.is_none_or(|d| d <= 0) {
            return Err(StoreError::Invalid(
                "an access request needs a positive duration_ms".into(),
            ));
        }
        let approvers = serde_json::to_string(&new.approvers)
            .map_err(|e| StoreError::Invalid(format!("approvers: {e}")))?;
        sqlx::query(
            "INSERT INTO approvals (id, kind, status, requester_issuer, requester_subject, \
             requester_act, connection, role, rule, approvers, min_approvals, approvals, \
             detail, session_id, gateway, created_ms, deadline_ms, duration_ms) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, \
             $14, $15, $16)",
        )
        .bind(uuid_text(new.id))
        .bind(new.kind.as_str())
        .bind(new.requester_issuer.as_str())
        .bind(new.requester_subject.as_str())
        .bind(new.requester_act.clone())
        .bind(new.connection.as_str())
        .bind(new.role.as_str())
        .bind(new.rule.as_str())
        .bind(approvers)
        .bind(i64::from(new.min_approvals))
        .bind(new.detail.as_str())
        .bind(new.session_id.map(uuid_text))
        .bind(new.gateway.map(uuid_text))
        .bind(new.created_ms)
        .bind(new.deadline_ms)
        .bind(new.duration_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One approval with its votes.
    pub async fn approval(&self, id: Uuid) -> Result<Option<ApprovalRow>, StoreError> {
        Ok(self.approvals_by_id(&[id]).await?.pop())
    }

    /// The approvals `filter` matches, newest first, with their votes.
    pub async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRow>, StoreError> {
        let mut sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE 1 = 1");
        let mut n = 0;
        let mut param = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if filter.kind.is_some() {
            param(&mut sql, " AND kind = ?");
        }
        if filter.status.is_some() {
            param(&mut sql, " AND status = ?");
        }
        param(&mut sql, " ORDER BY created_ms DESC, id DESC LIMIT ?");
        let mut query = sqlx::query(&sql);
        if let Some(k) = filter.kind {
            query = query.bind(k.as_str());
        }
        if let Some(s) = filter.status {
            query = query.bind(s.as_str());
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        let mut rows = rows
            .iter()
            .map(decode_approval)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_votes(&mut rows).await?;
        Ok(rows)
    }

    /// Casts a vote, atomically: of concurrent votes, each sees the row as
    /// the previous one left it, so exactly one of an approve and a deny
    /// decides, and approvals by distinct humans all count.
    ///
    /// A deny decides at once (`denied`). An approve counts; the one that
    /// reaches `min_approvals` decides: `approved` for a statement,
    /// `granted` for an access request (with `expires_ms = at_ms +
    /// duration_ms`). The deciding vote's voter and reason become the row's
    /// `decided_by` and `reason`. A vote at or after the deadline is
    /// [`VoteOutcome::Expired`] and times a pending statement out.
    pub async fn vote(&self, id: Uuid, vote: &Vote) -> Result<VoteOutcome, StoreError> {
        let id_text = uuid_text(id);
        // The first statement of the transaction writes: on PostgreSQL it
        // locks the row (a concurrent vote waits, then re-checks the WHERE
        // and recomputes the SET against the committed row); on SQLite it
        // takes the write lock (waiting out the busy timeout), so no read
        // snapshot can go stale before it.
        let mut tx = self.pool.begin().await?;
        let decided = match vote.vote {
            VoteKind::Deny => sqlx::query(
                "UPDATE approvals SET status = 'denied', decided_ms = $1, decided_by = $2, \
                 reason = $3 \
                 WHERE id = $4 AND status = 'pending' \
                 AND (deadline_ms IS NULL OR deadline_ms > $1) \
                 RETURNING status, approvals, min_approvals",
            ),
            VoteKind::Approve => sqlx::query(
                "UPDATE approvals SET approvals = approvals + 1, \
                 status = CASE WHEN approvals + 1 >= min_approvals \
                     THEN CASE WHEN kind = 'access' THEN 'granted' ELSE 'approved' END \
                     ELSE 'pending' END, \
                 decided_ms = CASE WHEN approvals + 1 >= min_approvals \
                     THEN $1 ELSE decided_ms END, \
                 decided_by = CASE WHEN approvals + 1 >= min_approvals \
                     THEN $2 ELSE decided_by END, \
                 reason = CASE WHEN approvals + 1 >= min_approvals \
                     THEN $3 ELSE reason END, \
                 expires_ms = CASE WHEN approvals + 1 >= min_approvals AND kind = 'access' \
                     THEN $1 + duration_ms ELSE expires_ms END \
                 WHERE id = $4 AND status = 'pending' \
                 AND (deadline_ms IS NULL OR deadline_ms > $1) \
                 RETURNING status, approvals, min_approvals",
            ),
        }
        .bind(vote.at_ms)
        .bind(vote.voter.as_str())
        .bind(vote.reason.clone())
        .bind(id_text.as_str())
        .fetch_all(&mut *tx)
        .await?;

        let Some(after) = decided.first() else {
            // Not pending, past its deadline, or absent. Still in the
            // transaction: time a statement out, then read what is there.
            let timed_out = sqlx::query(
                "UPDATE approvals SET status = 'timed_out', decided_ms = $1 \
                 WHERE id = $2 AND kind = 'statement' AND status = 'pending' \
                 AND deadline_ms IS NOT NULL AND deadline_ms <= $1",
            )
            .bind(vote.at_ms)
            .bind(id_text.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
                    .bind(id_text.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.commit().await?;
            return Ok(match status.as_deref().map(parse_status).transpose()? {
                None => VoteOutcome::NotFound,
                _ if timed_out => VoteOutcome::Expired,
                // Pending, yet the update did not match: the deadline passed
                // (an access request, which has no timed_out status).
                Some(ApprovalStatus::Pending) => VoteOutcome::Expired,
                Some(s) => VoteOutcome::NotPending(s),
            });
        };
        let status = parse_status(&after.try_get::<String, _>("status")?)?;
        let approvals = count(after.try_get("approvals")?, "approvals")?;
        let needed = count(after.try_get("min_approvals")?, "min_approvals")?;

        let inserted = sqlx::query(
            "INSERT INTO approval_votes (approval_id, voter, human, vote, reason, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (approval_id, human) DO NOTHING",
        )
        .bind(id_text.as_str())
        .bind(vote.voter.as_str())
        .bind(vote.human.as_str())
        .bind(vote.vote.as_str())
        .bind(vote.reason.clone())
        .bind(vote.at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // The row's update goes too.
            tx.rollback().await?;
            return Ok(VoteOutcome::Duplicate);
        }
        tx.commit().await?;
        Ok(if status == ApprovalStatus::Pending {
            VoteOutcome::Counted { approvals, needed }
        } else {
            VoteOutcome::Decided(status)
        })
    }

    /// Moves a pending approval to `to` (`timed_out`, `cancelled`,
    /// `abandoned`, ...) if it is still pending, and returns its status
    /// afterwards: `to`, or whatever decided it first (a timeout that raced
    /// an approval learns it was approved). An unknown id is an
    /// [`StoreError::Invalid`].
    pub async fn finish(
        &self,
        id: Uuid,
        to: ApprovalStatus,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<ApprovalStatus, StoreError> {
        if to == ApprovalStatus::Pending {
            return Err(StoreError::Invalid(
                "an approval cannot be finished as pending".into(),
            ));
        }
        let id_text = uuid_text(id);
        sqlx::query(
            "UPDATE approvals SET status = $1, reason = $2, decided_ms = $3 \
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(at_ms)
        .bind(id_text.as_str())
        .execute(&self.pool)
        .await?;
        self.status_of(&id_text).await
    }

    /// The status, reason and decider of each of `ids` that exists, for
    /// polling many at once; unknown ids are left out. Order unspecified.
    #[allow(clippy::type_complexity)]
    pub async fn statuses(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, ApprovalStatus, Option<String>, Option<String>)>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT id, status, reason, decided_by FROM approvals WHERE id IN ({})",
                self.placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(uuid_text(*id));
            }
            for r in query.fetch_all(&self.pool).await? {
                out.push((
                    parse_uuid(&r.try_get::<String, _>("id")?, "id")?,
                    parse_status(&r.try_get::<String, _>("status")?)?,
                    r.try_get("reason")?,
                    r.try_get("decided_by")?,
                ));
            }
        }
        Ok(out)
    }

    /// Ends a grant early: `granted` → `revoked`, if it is still granted,
    /// with `decided_by`, `reason` and `decided_ms` describing the
    /// revocation and `expires_ms` brought forward to `at_ms`. Returns the
    /// status afterwards. An unknown id is an [`StoreError::Invalid`].
    pub async fn revoke(
        &self,
        id: Uuid,
        by: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<ApprovalStatus, StoreError> {
        let id_text = uuid_text(id);
        sqlx::query(
            "UPDATE approvals SET status = 'revoked', decided_by = $1, reason = $2, \
             decided_ms = $3, \
             expires_ms = CASE WHEN expires_ms IS NULL OR expires_ms > $3 \
                 THEN $3 ELSE expires_ms END \
             WHERE id = $4 AND status = 'granted'",
        )
        .bind(by)
        .bind(reason)
        .bind(at_ms)
        .bind(id_text.as_str())
        .execute(&self.pool)
        .await?;
        self.status_of(&id_text).await
    }

    /// Every `granted` access whose `expires_ms <= now_ms` becomes
    /// `expired`. Returns the rows this call changed (after the change), so
    /// with several replicas expiring at once each expiry is reported once.
    pub async fn expire_grants(&self, now_ms: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'expired' \
             WHERE kind = 'access' AND status = 'granted' AND expires_ms <= $1 \
             RETURNING id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let ids = ids
            .iter()
            .map(|s| parse_uuid(s, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        self.approvals_by_id(&ids).await
    }

    /// The grants `issuer`/`subject` holds on `connection` at `now_ms`:
    /// access rows, `granted`, with `expires_ms > now_ms`; oldest first.
    pub async fn active_grants(
        &self,
        issuer: &str,
        subject: &str,
        connection: &str,
        now_ms: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE requester_issuer = $1 AND requester_subject = $2 AND connection = $3 \
             AND kind = 'access' AND status = 'granted' AND expires_ms > $4 \
             ORDER BY created_ms, id"
        ))
        .bind(issuer)
        .bind(subject)
        .bind(connection)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut rows = rows
            .iter()
            .map(decode_approval)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_votes(&mut rows).await?;
        Ok(rows)
    }

    /// Records that `gateway` is alive at `now_ms` (never moving its
    /// heartbeat back). Heartbeat before holding statements, and more often
    /// than the `stale_ms` other replicas pass to
    /// [`abandon_stale`](Store::abandon_stale).
    pub async fn heartbeat(&self, gateway: Uuid, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateways (id, heartbeat_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms \
             WHERE gateways.heartbeat_ms < excluded.heartbeat_ms",
        )
        .bind(uuid_text(gateway))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending statements held by a gateway with no heartbeat after
    /// `now_ms - stale_ms` (or none at all) become `abandoned`; returns
    /// their ids. Statements created in that window are spared (their
    /// gateway may not have heartbeaten yet), as are those without a
    /// gateway.
    pub async fn abandon_stale(&self, now_ms: i64, stale_ms: i64) -> Result<Vec<Uuid>, StoreError> {
        let cutoff = now_ms.saturating_sub(stale_ms);
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'abandoned', decided_ms = $1, reason = $2 \
             WHERE kind = 'statement' AND status = 'pending' AND gateway IS NOT NULL \
             AND created_ms <= $3 \
             AND NOT EXISTS (SELECT 1 FROM gateways g \
                 WHERE g.id = approvals.gateway AND g.heartbeat_ms > $3) \
             RETURNING id",
        )
        .bind(now_ms)
        .bind(STALE_REASON)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|s| parse_uuid(s, "id")).collect()
    }

    /// A clean shutdown: `gateway`'s pending statements become `abandoned`
    /// (their ids are returned) and its heartbeat row is deleted.
    pub async fn abandon_gateway(
        &self,
        gateway: Uuid,
        at_ms: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let gateway = uuid_text(gateway);
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'abandoned', decided_ms = $1, reason = $2 \
             WHERE kind = 'statement' AND status = 'pending' AND gateway = $3 \
             RETURNING id",
        )
        .bind(at_ms)
        .bind(SHUTDOWN_REASON)
        .bind(gateway.as_str())
        .fetch_all(&self.pool)
        .await?;
        sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(gateway.as_str())
            .execute(&self.pool)
            .await?;
        ids.iter().map(|s| parse_uuid(s, "id")).collect()
    }

    /// The current status of the approval `id`.
    async fn status_of(&self, id: &str) -> Result<ApprovalStatus, StoreError> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        match status {
            Some(s) => parse_status(&s),
            None => Err(StoreError::Invalid(format!("no approval {id}"))),
        }
    }

    /// The approvals with these ids, with votes, in the order given
    /// (unknown ids left out).
    async fn approvals_by_id(&self, ids: &[Uuid]) -> Result<Vec<ApprovalRow>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id IN ({})",
                self.placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(uuid_text(*id));
            }
            for r in query.fetch_all(&self.pool).await? {
                let row = decode_approval(&r)?;
                found.insert(row.id, row);
            }
        }
        let mut rows: Vec<ApprovalRow> = ids.iter().filter_map(|id| found.remove(id)).collect();
        self.attach_votes(&mut rows).await?;
        Ok(rows)
    }

    /// Fills in each row's votes, oldest first.
    async fn attach_votes(&self, rows: &mut [ApprovalRow]) -> Result<(), StoreError> {
        let mut votes: HashMap<Uuid, Vec<VoteRow>> = HashMap::new();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        for chunk in ids.chunks(ID_CHUNK) {
            let sql = format!(
                "SELECT approval_id, voter, human, vote, reason, at_ms FROM approval_votes \
                 WHERE approval_id IN ({}) ORDER BY at_ms, human",
                self.placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(uuid_text(*id));
            }
            for r in query.fetch_all(&self.pool).await? {
                let id = parse_uuid(&r.try_get::<String, _>("approval_id")?, "approval_id")?;
                let vote: String = r.try_get("vote")?;
                votes.entry(id).or_default().push(VoteRow {
                    voter: r.try_get("voter")?,
                    human: r.try_get("human")?,
                    vote: VoteKind::parse(&vote).ok_or_else(|| bad("vote", &vote))?,
                    reason: r.try_get("reason")?,
                    at_ms: r.try_get("at_ms")?,
                });
            }
        }
        for row in rows {
            row.votes = votes.remove(&row.id).unwrap_or_default();
        }
        Ok(())
    }

    /// `n` parameters from `$first` on, comma-separated: anonymous `?` on
    /// SQLite (sqlx-sqlite looks numbered ones up by a linear scan), numbered on PostgreSQL. The query
    /// must have no other parameters on SQLite.
    fn placeholders(&self, first: usize, n: usize) -> String {
        let mut s = String::with_capacity(n * 4);
        for i in 0..n {
            if i > 0 {
                s.push_str(", ");
            }
            if self.sqlite {
                s.push('?');
            } else {
                s.push_str(&format!("${}", first + i));
            }
        }
        s
    }
}

fn decode_approval(r: &AnyRow) -> Result<ApprovalRow, StoreError> {
    let kind: String = r.try_get("kind")?;
    let approvers: String = r.try_get("approvers")?;
    let opt_uuid = |col: &str| -> Result<Option<Uuid>, StoreError> {
        r.try_get::<Option<String>, _>(col)?
            .map(|s| parse_uuid(&s, col))
            .transpose()
    };
    Ok(ApprovalRow {
        id: parse_uuid(&r.try_get::<String, _>("id")?, "id")?,
        kind: ApprovalKind::parse(&kind).ok_or_else(|| bad("approval kind", &kind))?,
        status: parse_status(&r.try_get::<String, _>("status")?)?,
        requester_issuer: r.try_get("requester_issuer")?,
        requester_subject: r.try_get("requester_subject")?,
        requester_act: r.try_get("requester_act")?,
        connection: r.try_get("connection")?,
        role: r.try_get("role")?,
        rule: r.try_get("rule")?,
        approvers: serde_json::from_str(&approvers).map_err(|e| bad("approvers", e))?,
        min_approvals: count(r.try_get("min_approvals")?, "min_approvals")?,
        approvals: count(r.try_get("approvals")?, "approvals")?,
        detail: r.try_get("detail")?,
        session_id: opt_uuid("session_id")?,
        gateway: opt_uuid("gateway")?,
        created_ms: r.try_get("created_ms")?,
        deadline_ms: r.try_get("deadline_ms")?,
        decided_ms: r.try_get("decided_ms")?,
        reason: r.try_get("reason")?,
        decided_by: r.try_get("decided_by")?,
        duration_ms: r.try_get("duration_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        votes: Vec::new(),
    })
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_uuid(s: &str, what: &str) -> Result<Uuid, StoreError> {
    Uuid::try_parse(s).map_err(|e| bad(what, e))
}

fn parse_status(s: &str) -> Result<ApprovalStatus, StoreError> {
    ApprovalStatus::parse(s).ok_or_else(|| bad("approval status", s))
}

fn count(n: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| bad(what, n))
}
