//! The engine's side of approvals and just-in-time grants.
//!
//! Approvals and grants live in the store, so every replica on the same
//! store sees them: a statement held on replica A is released by a vote
//! cast through replica B's API. [`Approvals`] is the one background worker
//! per process that turns store rows into wake-ups:
//!
//! - **Held statements.** A session waiting for approval `id` holds a
//!   one-shot receiver; the worker polls the store for the statuses of all
//!   waited-on approvals every [`POLL`] (one query, only while anything
//!   waits) and wakes each one that is decided. A vote cast through this
//!   process's own API nudges the worker to poll at once.
//! - **Grants in use.** Sessions routed through a grant watch it; the
//!   worker checks their statuses every [`GRANT_POLL`] and cuts the
//!   sessions of a grant that was revoked (its expiry each session times
//!   itself). It also marks grants past their end `expired`, exactly once
//!   across replicas, and reports them.
//! - **Liveness.** The worker writes a heartbeat for this process; pending
//!   approvals of a process whose heartbeat stopped (it died: its held
//!   clients lost their connections) are marked `abandoned`.
//!
//! Polling rather than LISTEN/NOTIFY: it works the same on SQLite and
//! PostgreSQL, costs one indexed query per tick while anything waits, and
//! keeps the release latency under a second, as promised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_audit::event::{now_ms, rfc3339_ms};
use airlock_audit::ship::StoreSlot;
use airlock_audit::{Body, Event, Recorder};
use airlock_notify::{Notification, Notifier};
use airlock_store::{ApprovalRow, ApprovalStatus, Store};
use tokio::sync::{Notify, oneshot, watch};
use uuid::Uuid;

/// How often decisions on held statements are looked for.
pub const POLL: Duration = Duration::from_millis(200);
/// How often grants in use are checked for revocation and expiry.
pub const GRANT_POLL: Duration = Duration::from_secs(1);
/// How often this process's heartbeat is written.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A process whose heartbeat is older than this is taken for dead.
pub const STALE: Duration = Duration::from_secs(30);

/// How an approval ended, as a waiting session learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub status: ApprovalStatus,
    pub reason: Option<String>,
    pub by: Option<String>,
}

/// The approvals worker of one gateway process.
pub struct Approvals {
    /// This process, as approvals it holds name it.
    pub gateway: Uuid,
    store: Arc<StoreSlot>,
    pub notifier: Notifier,
    recorder: Option<Arc<Recorder>>,
    waiters: Mutex<HashMap<Uuid, oneshot::Sender<Decided>>>,
    grants: Mutex<HashMap<Uuid, Vec<watch::Sender<Option<String>>>>>,
    nudge: Notify,
}

impl Approvals {
    pub fn new(
        store: Arc<StoreSlot>,
        notifier: Notifier,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<Approvals> {
        Arc::new(Approvals {
            gateway: Uuid::new_v4(),
            store,
            notifier,
            recorder,
            waiters: Mutex::default(),
            grants: Mutex::default(),
            nudge: Notify::new(),
        })
    }

    /// The store, once connected.
    pub fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    /// Polls for decisions now (a vote was cast through this process).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Ends pending approval `id` as `to` (timed out, cancelled), unless a
    /// decision won the race: how it ended. Without a store it ends as
    /// `to` (nothing can approve it).
    pub async fn finish(&self, id: Uuid, to: ApprovalStatus, reason: &str) -> Decided {
        let ended = Decided {
            status: to,
            reason: Some(reason.to_string()),
            by: None,
        };
        let Some(store) = self.store.get() else {
            return ended;
        };
        match store.finish(id, to, Some(reason), now_ms()).await {
            Ok(status) if status == to => ended,
            Ok(status) => match store.approval(id).await {
                Ok(Some(row)) => Decided {
                    status: row.status,
                    reason: row.reason,
                    by: row.decided_by,
                },
                _ => Decided {
                    status,
                    reason: None,
                    by: None,
                },
            },
            Err(e) => {
                tracing::warn!(approval = %id, error = %e, "an approval could not be ended in the store");
                ended
            }
        }
    }

    /// Waits for approval `id` to be decided (the caller times out).
    pub fn wait(&self, id: Uuid) -> oneshot::Receiver<Decided> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, tx);
        self.nudge();
        rx
    }

    /// Watches grant `id` for a session using it: the receiver gets the
    /// reason when the grant is revoked or expires.
    pub fn watch_grant(&self, id: Uuid) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_default()
            .push(tx);
        rx
    }

    /// Records an approval event that belongs to no session, logging a
    /// failure (the store row is the authority; the journal is the trail).
    pub fn record(&self, event: airlock_audit::event::Approval) {
        if let Some(recorder) = &self.recorder
            && let Err(e) = recorder.record(&Event::now(Body::Approval(event)))
        {
            tracing::error!(error = %e, "an approval event could not be recorded");
        }
    }

    /// Runs until `stop` completes; then marks this process's pending
    /// approvals abandoned (their clients are being disconnected).
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_grants = tokio::time::Instant::now() - GRANT_POLL;
        let mut last_heartbeat = tokio::time::Instant::now() - HEARTBEAT;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(POLL) => {}
                _ = self.nudge.notified() => {}
            }
            let Some(store) = self.store.get() else {
                continue;
            };
            if let Err(e) = self.poll_waiters(store).await {
                tracing::warn!(error = %e, "approvals: polling the store failed");
            }
            let now = tokio::time::Instant::now();
            if now.duration_since(last_heartbeat) >= HEARTBEAT {
                last_heartbeat = now;
                if let Err(e) = self.liveness(store).await {
                    tracing::warn!(error = %e, "approvals: heartbeat failed");
                }
            }
            if now.duration_since(last_grants) >= GRANT_POLL {
                last_grants = now;
                if let Err(e) = self.poll_grants(store).await {
                    tracing::warn!(error = %e, "approvals: checking grants failed");
                }
            }
        }
        // Statements still held here are refused: nobody is left to wake
        // them.
        for (_, tx) in self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
        {
            let _ = tx.send(Decided {
                status: ApprovalStatus::Abandoned,
                reason: Some("the gateway is shutting down".into()),
                by: None,
            });
        }
        if let Some(store) = self.store.get() {
            match store.abandon_gateway(self.gateway, now_ms()).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), "held statements abandoned at shutdown");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "approvals: abandoning at shutdown failed"),
            }
        }
    }

    async fn poll_waiters(&self, store: &Store) -> Result<(), airlock_store::StoreError> {
        let ids: Vec<Uuid> = {
            let mut waiters = self
                .waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            waiters.retain(|_, tx| !tx.is_closed());
            waiters.keys().copied().collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        for (id, status, reason, by) in store.statuses(&ids).await? {
            if status == ApprovalStatus::Pending {
                continue;
            }
            if let Some(tx) = self
                .waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id)
            {
                let _ = tx.send(Decided { status, reason, by });
            }
        }
        Ok(())
    }

    async fn liveness(&self, store: &Store) -> Result<(), airlock_store::StoreError> {
        let now = now_ms();
        store.heartbeat(self.gateway, now).await?;
        for id in store.abandon_stale(now, STALE.as_millis() as i64).await? {
            tracing::info!(approval = %id, "held statement abandoned: its gateway stopped");
        }
        Ok(())
    }

    async fn poll_grants(&self, store: &Store) -> Result<(), airlock_store::StoreError> {
        let now = now_ms();
        for row in store.expire_grants(now).await? {
            self.expired(&row);
        }
        let ids: Vec<Uuid> = {
            let mut grants = self
                .grants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            grants.retain(|_, senders| {
                senders.retain(|tx| !tx.is_closed());
                !senders.is_empty()
            });
            grants.keys().copied().collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        for (id, status, reason, by) in store.statuses(&ids).await? {
            let why = match status {
                ApprovalStatus::Granted => continue,
                ApprovalStatus::Revoked => format!(
                    "your just-in-time grant {id} was revoked by {}{}",
                    by.as_deref().unwrap_or("an administrator"),
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
                ApprovalStatus::Expired => format!("your just-in-time grant {id} expired"),
                other => format!("your just-in-time grant {id} is {}", other.as_str()),
            };
            if let Some(senders) = self
                .grants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id)
            {
                for tx in senders {
                    let _ = tx.send(Some(why.clone()));
                }
            }
        }
        Ok(())
    }

    /// A grant this process found expired: recorded and announced once.
    fn expired(&self, row: &ApprovalRow) {
        tracing::info!(grant = %row.id, "just-in-time grant expired");
        self.record(airlock_audit::event::Approval::of_row(row, "expired"));
        self.notifier.send(Notification {
            event: "access.expired",
            data: serde_json::json!({
                "id": row.id,
                "connection": row.connection,
                "role": row.role,
                "requester": row.requester_subject,
                "expired_at": row.expires_ms.map(rfc3339_ms),
            }),
            summary: format!(
                "airlock: just-in-time grant {} ({} as {} on {}) expired",
                row.id, row.requester_subject, row.role, row.connection
            ),
        });
    }
}
