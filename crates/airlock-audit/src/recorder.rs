//! The process's one journal writer, shared by every session.
//!
//! [`Recorder::record`] encodes an event and appends it under a mutex; it
//! returns once `write(2)` has (and, with `fsync: always`, `fdatasync`).
//! An append that fails is the caller's cue to refuse the statement with
//! `58000`. A journal that cannot be opened (or broke) is retried at most
//! once a second by the next append, so a directory that becomes writable
//! again heals without a restart; until then [`Recorder::ready`] says why
//! not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use airlock_journal::{Appended, Fsync, Journal, JournalError, Options};
use tokio::sync::Notify;

use crate::event::Event;

/// How often a broken journal is reopened, at most.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Why an event was not recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// The shared journal writer.
pub struct Recorder {
    dir: PathBuf,
    options: Options,
    state: Mutex<State>,
    /// Woken after appends, for the shipper.
    appended: Notify,
    /// Why the store failed last, as the shipper saw it; `None` while it
    /// works.
    store_error: Mutex<Option<String>>,
    /// Registered once: the macro looks the metric up on every call.
    append_seconds: metrics::Histogram,
}

struct State {
    journal: Option<Journal>,
    /// Why there is no journal.
    error: Option<String>,
    last_open: Instant,
}

impl Recorder {
    /// Opens a new stream in `dir`. Never fails: a journal that cannot be
    /// opened leaves the recorder not ready, refusing every event, until a
    /// later append manages to open it.
    pub fn open(dir: &Path, options: Options) -> Arc<Recorder> {
        let (journal, error) = match open_journal(dir, options) {
            Ok(j) => (Some(j), None),
            Err(e) => (None, Some(e)),
        };
        if let Some(e) = &error {
            tracing::error!(error = %e, "the audit journal cannot be opened; statements are refused until it can");
        }
        Arc::new(Recorder {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                journal,
                error,
                last_open: Instant::now(),
            }),
            appended: Notify::new(),
            store_error: Mutex::new(None),
            append_seconds: metrics::histogram!("airlock_journal_append_seconds"),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fsync(&self) -> Fsync {
        self.options.fsync
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `event`; `Ok` once it is in the journal.
    pub fn record(&self, event: &Event) -> Result<Appended, RecordError> {
        let payload = event.encode();
        let started = Instant::now();
        let mut state = self.state();
        if state.journal.is_none() && state.last_open.elapsed() >= REOPEN_EVERY {
            state.last_open = Instant::now();
            match open_journal(&self.dir, self.options) {
                Ok(j) => {
                    tracing::info!("the audit journal is writable again");
                    state.journal = Some(j);
                    state.error = None;
                }
                Err(e) => state.error = Some(e),
            }
        }
        let Some(journal) = state.journal.as_mut() else {
            metrics::counter!("airlock_journal_append_failures_total").increment(1);
            return Err(RecordError(
                state
                    .error
                    .clone()
                    .unwrap_or_else(|| "the audit journal is not open".into()),
            ));
        };
        match journal.append(&payload) {
            Ok(appended) => {
                state.error = None;
                drop(state);
                self.append_seconds.record(started.elapsed().as_secs_f64());
                self.appended.notify_one();
                Ok(appended)
            }
            Err(e) => {
                metrics::counter!("airlock_journal_append_failures_total").increment(1);
                tracing::error!(error = %e, "audit journal append failed");
                if journal.is_poisoned() || matches!(e, JournalError::Poisoned) {
                    // A new stream on the next attempt: this one's state is
                    // unknown.
                    state.journal = None;
                    state.last_open = Instant::now();
                }
                // Not ready until an append succeeds again.
                state.error = Some(e.to_string());
                Err(RecordError(e.to_string()))
            }
        }
    }

    /// Ready means the journal is open and the store answered last time.
    pub fn ready(&self) -> Result<(), String> {
        let state = self.state();
        if state.journal.is_none() || state.error.is_some() {
            let why = state.error.as_deref().unwrap_or("not open");
            return Err(format!("audit journal: {why}"));
        }
        drop(state);
        match &*self
            .store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(why) => Err(format!("audit store: {why}")),
            None => Ok(()),
        }
    }

    /// The shipper reports whether the store works.
    pub fn set_store_status(&self, status: Result<(), String>) {
        *self
            .store_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status.err();
    }

    /// Resolves after the next append (or at once if one happened since
    /// the last call).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// The stream this process writes, when the journal is open.
    pub fn stream(&self) -> Option<uuid::Uuid> {
        self.state().journal.as_ref().map(Journal::stream)
    }

    /// With `fsync: <interval>`, syncs what was written at that interval
    /// (the sync itself runs on the blocking pool, outside the lock) until
    /// `stop` resolves. Returns at once with `fsync: always`.
    pub async fn run_sync_timer(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let Fsync::Interval(every) = self.options.fsync else {
            return;
        };
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            self.sync_now().await;
        }
        self.sync_now().await;
    }

    async fn sync_now(&self) {
        let job = match self.state().journal.as_mut() {
            Some(j) => j.begin_sync(std::time::Instant::now()),
            None => return,
        };
        let job = match job {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "audit journal sync failed");
                return;
            }
        };
        let done = tokio::task::spawn_blocking(move || job.run())
            .await
            .unwrap_or_else(|e| {
                Err(JournalError::Io {
                    op: "sync",
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let mut state = self.state();
        if let Some(j) = state.journal.as_mut()
            && let Err(e) = j.finish_sync(done)
        {
            tracing::error!(error = %e, "audit journal sync failed; opening a new stream");
            state.error = Some(e.to_string());
            state.journal = None;
        }
    }
}

fn open_journal(dir: &Path, options: Options) -> Result<Journal, String> {
    let (journal, recovery) = Journal::open(dir, options).map_err(|e| e.to_string())?;
    for state in &recovery.streams {
        if let Some(torn) = &state.torn_tail {
            tracing::warn!(
                stream = %state.stream,
                segment = %torn.segment.display(),
                bytes = torn.bytes,
                kept = state.complete_records,
                "a torn journal tail from a crash was moved aside; every complete event was kept"
            );
            metrics::counter!("airlock_journal_torn_tails_total").increment(1);
        }
        if let Some(d) = &state.damaged {
            tracing::error!(
                stream = %state.stream,
                segment = %d.segment.display(),
                offset = d.offset,
                "the audit journal is damaged (not by a crash); run `airlock audit verify`"
            );
        }
    }
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, PolicyReload};

    fn event() -> Event {
        Event::now(Body::PolicyReload(PolicyReload {
            ok: true,
            error: None,
            config_sha256: None,
        }))
    }

    #[test]
    fn an_unwritable_journal_refuses_events_and_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // A directory below a regular file cannot exist, even for root.
        let recorder = Recorder::open(&file.join("journal"), Options::default());
        assert!(recorder.ready().unwrap_err().starts_with("audit journal: "));
        assert!(recorder.record(&event()).is_err());
        assert!(recorder.stream().is_none());
    }

    #[test]
    fn events_are_appended_and_the_store_status_counts_for_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::open(dir.path(), Options::default());
        assert_eq!(recorder.ready(), Ok(()));
        let first = recorder.record(&event()).unwrap();
        let second = recorder.record(&event()).unwrap();
        assert_eq!((first.seq, second.seq), (1, 2));
        let records: Vec<_> = airlock_journal::Reader::open(dir.path())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            Event::decode(&records[1].payload).unwrap().kind(),
            "policy_reload"
        );
        recorder.set_store_status(Err("connection refused".into()));
        assert_eq!(
            recorder.ready(),
            Err("audit store: connection refused".into())
        );
        recorder.set_store_status(Ok(()));
        assert_eq!(recorder.ready(), Ok(()));
    }
}
