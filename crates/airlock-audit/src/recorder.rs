//! The process's one journal writer, shared by every session.
//!
//! **Group commit.** [`Recorder::record`] encodes an event outside any
//! lock, chains it into the journal's pending batch under a short lock (no
//! syscall), and returns once a batch holding it has been written (and,
//! with `fsync: always`, synced). Whoever needs a batch written and finds
//! none being written writes it, outside the lock, for everyone whose
//! events are in it; the others wait on a condition variable for that
//! batch to complete. One client pays one `write(2)` per durable event, as
//! a dedicated writer would, without two thread hand-offs per statement;
//! many clients share one `write(2)` (and one `fdatasync`) per batch.
//!
//! [`Recorder::record_later`] is for events whose statement has already
//! run (results): queued, not waited for, written with the next batch or
//! by the flusher ([`Recorder::run_sync_timer`]) within [`FLUSH_DELAY`].
//!
//! **Back-pressure.** The pending batch is bounded
//! ([`airlock_journal::MAX_PENDING`]): when it is full, a session writes it
//! or waits for the batch being written, so a slow disk slows sessions down
//! and no event is dropped.
//!
//! **Failure.** A batch that fails to write is cut off the file; every
//! event in it, and every event chained after it, is lost, and each
//! `record` waiting for one of them fails: the caller refuses the
//! statement with `58000`. A journal that cannot be opened (or broke) is
//! retried at most once a second by the next event, so a directory that
//! becomes writable again heals without a restart; until then
//! [`Recorder::ready`] says why not.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use airlock_journal::{Appended, Fsync, Journal, JournalError, Options, Push};
use tokio::sync::Notify;

use crate::event::Event;

/// How often a broken journal is reopened, at most.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long an event queued by [`Recorder::record_later`] waits for a
/// batch to join before the flusher writes it.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// Epochs whose outcome a late waiter may still ask about.
const EPOCHS_KEPT: usize = 64;

/// Why an event was not recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// The shared journal writer.
pub struct Recorder {
    dir: PathBuf,
    options: Options,
    state: Mutex<State>,
    /// Signalled when a batch completes (written or lost).
    batch_done: Condvar,
    /// Woken after appends, for the shipper.
    appended: Notify,
    /// Woken when [`Recorder::record_later`] leaves events pending.
    later: Notify,
    /// Why the store failed last, as the shipper saw it; `None` while it
    /// works.
    store_error: Mutex<Option<String>>,
    /// Registered once: the macro looks the metric up on every call.
    append_seconds: metrics::Histogram,
    /// Tests: runs before each batch is written (a slow disk).
    #[cfg(test)]
    before_write: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

struct State {
    journal: Option<Journal>,
    /// Why there is no journal, or why the last batch failed.
    error: Option<String>,
    last_open: Instant,
    /// Bumped whenever pending or in-flight events are lost (a failed
    /// batch, a new journal), so that a seq reused afterwards is never
    /// taken for the lost event's.
    epoch: u64,
    /// For recent epochs: the last seq written before the epoch ended.
    ended: VecDeque<(u64, u64)>,
    /// The journal broke while a batch was out: it takes no more events and
    /// is dropped when that batch's writer comes back.
    retiring: bool,
    /// Sessions waiting on `batch_done`.
    waiters: usize,
}

/// Where an event is: its epoch and seq.
#[derive(Clone, Copy)]
struct Ticket {
    epoch: u64,
    seq: u64,
}

impl State {
    /// Whether the event is written (`Some(Ok)`), lost (`Some(Err)`), or
    /// still pending (`None`).
    fn outcome(&self, t: Ticket) -> Option<Result<(), RecordError>> {
        let lost = || {
            Err(RecordError(self.error.clone().unwrap_or_else(|| {
                "the audit journal lost the event".into()
            })))
        };
        if t.epoch != self.epoch {
            let written = self
                .ended
                .iter()
                .find(|(e, _)| *e == t.epoch)
                .is_some_and(|&(_, upto)| t.seq <= upto);
            return Some(if written { Ok(()) } else { lost() });
        }
        match &self.journal {
            Some(j) if j.written_seq() >= t.seq => Some(Ok(())),
            // A retiring journal's batch decides when its writer is back.
            Some(j) if !j.is_poisoned() || j.writing() => None,
            _ => Some(lost()),
        }
    }

    /// Ends the epoch: whatever is pending or in flight is lost.
    fn end_epoch(&mut self, written: u64) {
        self.ended.push_back((self.epoch, written));
        if self.ended.len() > EPOCHS_KEPT {
            self.ended.pop_front();
        }
        self.epoch += 1;
    }
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
        #[cfg(feature = "bench-unrecorded")]
        tracing::error!(
            "this build (feature bench-unrecorded) records nothing: it is for benchmarks only"
        );
        Arc::new(Recorder {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                journal,
                error,
                last_open: Instant::now(),
                epoch: 0,
                ended: VecDeque::new(),
                retiring: false,
                waiters: 0,
            }),
            batch_done: Condvar::new(),
            appended: Notify::new(),
            later: Notify::new(),
            store_error: Mutex::new(None),
            append_seconds: metrics::histogram!("airlock_journal_append_seconds"),
            #[cfg(test)]
            before_write: std::sync::OnceLock::new(),
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

    /// Appends `event`; `Ok` once it is in the journal (written, and with
    /// `fsync: always` synced). The rule of the data path: a statement goes
    /// upstream only after this returned `Ok` for its event.
    pub fn record(&self, event: &Event) -> Result<Appended, RecordError> {
        #[cfg(feature = "bench-unrecorded")]
        if true {
            let _ = event;
            return Ok(Appended {
                seq: 0,
                hash: [0; 32],
            });
        }
        let payload = event.encode();
        let started = Instant::now();
        let state = self.state();
        let (mut state, appended, ticket) = self.push(state, &payload)?;
        loop {
            match state.outcome(ticket) {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(e),
                None => state = self.write_or_wait(state),
            }
        }
        drop(state);
        self.append_seconds.record(started.elapsed().as_secs_f64());
        Ok(appended)
    }

    /// Queues `event` without waiting for it to be written: for events
    /// whose statement has already run. It is written with the next batch,
    /// or by the flusher within [`FLUSH_DELAY`]. Waits only while the
    /// pending batch is full. A write that fails later is logged and makes
    /// the recorder not ready.
    pub fn record_later(&self, event: &Event) -> Result<(), RecordError> {
        #[cfg(feature = "bench-unrecorded")]
        if true {
            let _ = event;
            return Ok(());
        }
        let payload = event.encode();
        let state = self.state();
        let (state, _, _) = self.push(state, &payload)?;
        // Only the first pending event wakes the flusher: the ones after it
        // go out with it.
        let first = state
            .journal
            .as_ref()
            .is_some_and(|j| j.pending_records() == 1);
        drop(state);
        if first {
            self.later.notify_one();
        }
        Ok(())
    }

    /// Chains `payload` into the pending batch, writing or waiting first
    /// while that is full.
    fn push<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        payload: &[u8],
    ) -> Result<(MutexGuard<'a, State>, Appended, Ticket), RecordError> {
        loop {
            self.reopen_if_due(&mut state);
            let retiring = state.retiring;
            let Some(journal) = state.journal.as_mut().filter(|_| !retiring) else {
                metrics::counter!("airlock_journal_append_failures_total").increment(1);
                return Err(RecordError(
                    state
                        .error
                        .clone()
                        .unwrap_or_else(|| "the audit journal is not open".into()),
                ));
            };
            match journal.push(payload) {
                Ok(Push::Queued(appended)) => {
                    let ticket = Ticket {
                        epoch: state.epoch,
                        seq: appended.seq,
                    };
                    return Ok((state, appended, ticket));
                }
                Ok(Push::WriteFirst) => state = self.write_or_wait(state),
                Err(e) => {
                    metrics::counter!("airlock_journal_append_failures_total").increment(1);
                    tracing::error!(error = %e, "audit journal append failed");
                    if journal.is_poisoned() || matches!(e, JournalError::Poisoned) {
                        self.drop_journal(&mut state);
                    }
                    // Not ready until an append succeeds again.
                    state.error = Some(e.to_string());
                    return Err(RecordError(e.to_string()));
                }
            }
        }
    }

    /// One step towards getting pending events written: writes the pending
    /// batch if no batch is out (for every session with events in it), or
    /// else waits for the batch that is out.
    fn write_or_wait<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(journal) = state.journal.as_mut() else {
            return state;
        };
        let Some(batch) = journal.take_batch() else {
            if journal.writing() {
                state.waiters += 1;
                let mut state = self
                    .batch_done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.waiters -= 1;
                return state;
            }
            return state;
        };
        drop(state);
        #[cfg(test)]
        if let Some(stall) = self.before_write.get() {
            stall();
        }
        let outcome = batch.write();
        let mut state = self.state();
        // The journal stays while its batch is out (`drop_journal` defers to
        // this writer), so this is the batch's own journal.
        if let Some(journal) = state.journal.as_mut() {
            let written = journal.written_seq();
            match journal.finish_batch(batch, outcome) {
                Ok(()) => {
                    if !state.retiring {
                        state.error = None;
                    }
                    self.appended.notify_one();
                }
                Err(lost) => {
                    let events = lost.seqs.end() + 1 - lost.seqs.start();
                    metrics::counter!("airlock_journal_append_failures_total").increment(events);
                    tracing::error!(error = %lost.error, events, "audit journal write failed; the statements waiting on it are refused");
                    let poisoned = journal.is_poisoned();
                    state.error = Some(lost.error.to_string());
                    if poisoned {
                        state.retiring = true;
                    } else {
                        state.end_epoch(written);
                    }
                }
            }
            if state.retiring {
                self.drop_journal(&mut state);
            }
        }
        if state.waiters > 0 {
            self.batch_done.notify_all();
        }
        state
    }

    /// Writes what is pending now (the flusher, shutdown): every event
    /// pushed before the call is written or lost when it returns.
    pub fn flush(&self) {
        let mut state = self.state();
        let Some(target) = state.journal.as_ref().map(|j| Ticket {
            epoch: state.epoch,
            seq: j.last_seq(),
        }) else {
            return;
        };
        while state.outcome(target).is_none() {
            let busy = state
                .journal
                .as_ref()
                .is_some_and(|j| j.pending_records() > 0 || j.writing());
            if !busy {
                break;
            }
            state = self.write_or_wait(state);
        }
    }

    /// A journal whose state is unknown: a new stream on the next attempt.
    /// While a batch is out, its writer drops the journal when it is back.
    fn drop_journal(&self, state: &mut State) {
        if state.journal.as_ref().is_some_and(Journal::writing) {
            state.retiring = true;
            return;
        }
        state.retiring = false;
        let written = state.journal.as_ref().map_or(0, Journal::written_seq);
        state.journal = None;
        state.last_open = Instant::now();
        state.end_epoch(written);
    }

    fn reopen_if_due(&self, state: &mut State) {
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

    /// The recorder's background duties until `stop` resolves: writes
    /// events that [`Recorder::record_later`] left pending for
    /// [`FLUSH_DELAY`] and no batch took, and with `fsync: <interval>`
    /// syncs what was written at that interval. The writes and syncs run on
    /// the blocking pool, outside the lock. Flushes and syncs once more on
    /// the way out.
    pub async fn run_sync_timer(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let every = match self.options.fsync {
            Fsync::Interval(every) => Some(every),
            Fsync::Always => None,
        };
        let mut tick = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick(), if every.is_some() => self.sync_now().await,
                () = self.later.notified() => {
                    tokio::time::sleep(FLUSH_DELAY).await;
                    self.flush_off_thread().await;
                }
                () = &mut stop => break,
            }
        }
        let me = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || me.close()).await;
    }

    /// Writes and syncs everything pending (shutdown).
    pub fn close(&self) {
        self.flush();
        let mut state = self.state();
        if let Some(j) = state.journal.as_mut().filter(|j| !j.writing())
            && let Err(e) = j.sync()
        {
            tracing::error!(error = %e, "audit journal sync at shutdown failed");
        }
    }

    async fn flush_off_thread(self: &Arc<Self>) {
        let pending = self
            .state()
            .journal
            .as_ref()
            .is_some_and(|j| j.pending_records() > 0);
        if pending {
            let me = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || me.flush()).await;
        }
    }

    async fn sync_now(&self) {
        let (stream, job) = match self.state().journal.as_mut() {
            Some(j) => (j.stream(), j.begin_sync(std::time::Instant::now())),
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
        // Only the journal the job synced: another may have replaced it.
        if let Some(j) = state.journal.as_mut().filter(|j| j.stream() == stream)
            && let Err(e) = j.finish_sync(done)
        {
            tracing::error!(error = %e, "audit journal sync failed; opening a new stream");
            state.error = Some(e.to_string());
            self.drop_journal(&mut state);
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

    fn big_event(writer: usize, n: usize) -> Event {
        Event::now(Body::PolicyReload(PolicyReload {
            ok: true,
            error: Some(format!("{writer} {n} {}", "x".repeat(100 << 10))),
            config_sha256: None,
        }))
    }

    #[test]
    fn a_slow_disk_makes_sessions_wait_and_drops_nothing() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;

        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: Fsync::Interval(Duration::from_secs(3600)),
            ..Options::default()
        };
        let recorder = Recorder::open(dir.path(), options);
        // Each batch's write waits for a token: the disk is as slow as the
        // test wants.
        let (disk, stalled) = mpsc::channel::<()>();
        let stalled = Mutex::new(stalled);
        assert!(
            recorder
                .before_write
                .set(Box::new(move || stalled.lock().unwrap().recv().unwrap()))
                .is_ok()
        );
        const WRITERS: usize = 4;
        const EACH: usize = 30; // 4 × 30 × 100 KiB: 12 times the pending bound
        let queued = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (recorder, queued) = (Arc::clone(&recorder), Arc::clone(&queued));
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        if w == 0 && n % 10 == 9 {
                            // A statement: waits until its event is written.
                            recorder.record(&big_event(w, n)).unwrap();
                        } else {
                            recorder.record_later(&big_event(w, n)).unwrap();
                        }
                        queued.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // The first batch is stuck on the disk and the next one fills up.
        let start = Instant::now();
        while !{
            let state = recorder.state();
            let j = state.journal.as_ref().unwrap();
            j.writing() && j.pending_bytes() + (100 << 10) > airlock_journal::MAX_PENDING
        } {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the batch never filled"
            );
            std::thread::yield_now();
        }
        assert!(
            queued.load(Ordering::SeqCst) < WRITERS * EACH,
            "sessions wait while the disk is slow"
        );
        assert!(recorder.state().error.is_none(), "a full batch is no error");
        // The disk catches up.
        for _ in 0..10_000 {
            let _ = disk.send(());
        }
        for w in writers {
            w.join().unwrap();
        }
        recorder.flush();
        let records: Vec<_> = airlock_journal::Reader::open(dir.path())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), WRITERS * EACH, "nothing was dropped");
        for w in 0..WRITERS {
            let order: Vec<usize> = records
                .iter()
                .filter_map(|r| match Event::decode(&r.payload).unwrap().body {
                    Body::PolicyReload(p) => {
                        let text = p.error.unwrap();
                        let mut words = text.split(' ');
                        (words.next() == Some(&w.to_string()))
                            .then(|| words.next().unwrap().parse().unwrap())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(order, (0..EACH).collect::<Vec<_>>(), "writer {w} in order");
        }
        airlock_journal::verify(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn queued_events_are_written_by_the_flusher_and_synced_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: Fsync::Interval(Duration::from_secs(3600)),
            ..Options::default()
        };
        let recorder = Recorder::open(dir.path(), options);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn(Arc::clone(&recorder).run_sync_timer(async {
            let _ = stopped.await;
        }));
        let on_disk = || airlock_journal::Reader::open(dir.path()).unwrap().count();
        for round in 1..=3 {
            // Queued while nothing else is written: only the flusher writes it.
            recorder.record_later(&event()).unwrap();
            recorder.record_later(&event()).unwrap();
            let start = Instant::now();
            while on_disk() < 2 * round {
                assert!(start.elapsed() < Duration::from_secs(10), "never written");
                tokio::task::yield_now().await;
            }
        }
        recorder.record_later(&event()).unwrap();
        stop.send(()).unwrap();
        flusher.await.unwrap();
        assert_eq!(on_disk(), 7, "written at stop");
        let state = recorder.state();
        let j = state.journal.as_ref().unwrap();
        assert!(
            !j.sync_due(Instant::now() + Duration::from_secs(7200)),
            "and synced"
        );
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
