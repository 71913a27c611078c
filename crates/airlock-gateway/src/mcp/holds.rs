//! Statements held for approval on behalf of MCP calls: the call returns
//! at once with the approval id, and `approval_status` reads the outcome
//! here once the statement is decided (and, if approved, has run).
//!
//! Entries live in memory: a held call's upstream session and hold live in
//! this process too. Finished entries are kept for [`KEEP`], then dropped;
//! the approval itself stays in the store, where `approval_status` still
//! finds its decision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

/// How long a finished call's result can be read.
pub(crate) const KEEP: Duration = Duration::from_secs(15 * 60);

/// Statements one principal may have waiting for approval at once.
pub(crate) const MAX_PENDING: usize = 20;

/// The held calls of this process.
#[derive(Default)]
pub(crate) struct Holds {
    entries: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    owner: String,
    /// The tool result, once decided: structured content and whether it
    /// is an error.
    result: watch::Sender<Option<(Value, bool)>>,
    finished: Option<Instant>,
}

/// What `approval_status` finds here.
pub(crate) enum Found {
    /// Not held by a call of this process (or forgotten).
    Unknown,
    /// Held for another principal.
    Forbidden,
    Pending,
    Done(Value, bool),
}

/// The principal an entry belongs to.
pub(crate) fn owner(p: &airlock_policy::Principal) -> String {
    format!("{} {}", p.issuer, p.subject)
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entries, results older than [`KEEP`] dropped.
    fn pruned(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.finished.is_none_or(|at| at.elapsed() < KEEP));
        entries
    }

    /// How many of `owner`'s statements wait for a decision.
    pub(crate) fn pending(&self, owner: &str) -> usize {
        self.pruned()
            .values()
            .filter(|e| e.finished.is_none() && e.owner == owner)
            .count()
    }

    pub(crate) fn register(&self, id: Uuid, owner: String) {
        let mut entries = self.pruned();
        entries.insert(
            id,
            Entry {
                owner,
                result: watch::channel(None).0,
                finished: None,
            },
        );
    }

    pub(crate) fn finish(&self, id: Uuid, result: (Value, bool)) {
        if let Some(e) = self.pruned().get_mut(&id) {
            e.finished = Some(Instant::now());
            e.result.send_replace(Some(result));
        }
    }

    /// The call held as `id`, for `owner`, waiting up to `wait` for its
    /// decision.
    pub(crate) async fn find(&self, id: Uuid, owner: &str, wait: Duration) -> Found {
        let mut rx = {
            let entries = self.pruned();
            let Some(e) = entries.get(&id) else {
                return Found::Unknown;
            };
            if e.owner != owner {
                return Found::Forbidden;
            }
            e.result.subscribe()
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        let result = rx.borrow().clone();
        match result {
            Some((v, e)) => Found::Done(v, e),
            None => Found::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_owner_reads_a_result_and_it_waits_for_it() {
        let holds = std::sync::Arc::new(Holds::default());
        let id = Uuid::new_v4();
        holds.register(id, "iss alice".into());
        assert!(matches!(
            holds.find(id, "iss mallory", Duration::ZERO).await,
            Found::Forbidden
        ));
        assert!(matches!(
            holds
                .find(Uuid::new_v4(), "iss alice", Duration::ZERO)
                .await,
            Found::Unknown
        ));
        assert!(matches!(
            holds.find(id, "iss alice", Duration::ZERO).await,
            Found::Pending
        ));
        let waiter = {
            let holds = std::sync::Arc::clone(&holds);
            tokio::spawn(async move { holds.find(id, "iss alice", Duration::from_secs(30)).await })
        };
        holds.finish(id, (serde_json::json!({"status": "ok"}), false));
        match waiter.await.unwrap() {
            Found::Done(v, false) => assert_eq!(v["status"], "ok"),
            _ => panic!("the waiter sees the result"),
        }
    }
}
