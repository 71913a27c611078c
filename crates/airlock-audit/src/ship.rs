//! The shipper: copies the journal's events to the store in the background,
//! and applies retention to both.
//!
//! Design, and why:
//!
//! - **The store says where to resume.** Each round asks the store for every
//!   stream's last event and high-water mark, read together
//!   ([`Store::shipped_and_high_water`]), and sends what the journal
//!   holds after it, in batches of [`BATCH`]. Nothing is remembered between
//!   processes, so a crash, a restart or an old stream left by an exited
//!   process all ship the same way; resending is harmless (the store skips
//!   events it has).
//! - **Check the seam before sending.** The journal checks its own chain,
//!   and the store keeps what it is given, so the one link nobody else
//!   checks is where the two meet: the first record sent must chain from
//!   the store's last event (or the store's anchor, or the stream's genesis
//!   hash). If it does not, or the store's events end before its high-water
//!   mark, or it holds a different event under a key being sent
//!   ([`StoreError::Conflict`]), one of them was altered: that is a tamper
//!   alarm (an `error!` log and `airlock_audit_tamper_alarms_total`), and
//!   that stream is not shipped further by this shipper, so the evidence
//!   stays as found for `airlock audit verify`. Other streams go on.
//! - **Nothing is dropped.** A payload that is not a readable event is
//!   shipped anyway, with kind `unknown`: the chain needs every record.
//! - **Down is normal.** The journal keeps every event while the store is
//!   unreachable; [`run`] retries with capped exponential backoff and
//!   reports the store's state to the [`Recorder`] (readiness).
//! - **Cheap when idle.** A round wakes on every append or every 250 ms.
//!   A stream read to its end is not read again (nor is the store asked
//!   about it) until its last segment changes, so dead streams cost a
//!   directory listing, not a scan.
//! - **Retention keeps both chains checkable.** The store deletes a prefix
//!   of each stream and anchors it ([`Store::prune`]); the journal deletes
//!   only segments whose records are all shipped and all gone from the
//!   store, and only after its record at the store's anchor corroborates
//!   the anchor (same hash, recorded before the cut-off), so a tampered
//!   store cannot make the shipper delete the journal's evidence.
//!
//! The file reads run on tokio's blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use airlock_journal::format::genesis_hash;
use airlock_journal::{Hash, JournalError, Reader, Record};
use airlock_store::{EventRow, Store, StoreError};
use uuid::Uuid;

use crate::event::{Event, hex, now_ms};
use crate::recorder::Recorder;

/// Events sent to the store per transaction.
pub const BATCH: usize = 2048;
/// How often the shipper looks at the journal when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// After an append wakes the shipper, how long it waits for more before a
/// round.
const GATHER: Duration = Duration::from_millis(100);
/// The first retry delay after a failure, doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often an idle shipper (nothing to ship) makes sure the store still
/// answers, for readiness.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How often retention runs, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// When a retention pass fails, the next try.
const PRUNE_RETRY: Duration = Duration::from_secs(60);

/// Where the HTTP API finds the store: empty until the shipper first
/// connects, then set for good (the pool reconnects by itself).
#[derive(Debug, Default)]
pub struct StoreSlot(OnceLock<Store>);

impl StoreSlot {
    pub fn new() -> StoreSlot {
        StoreSlot::default()
    }

    /// The store, once connected.
    pub fn get(&self) -> Option<&Store> {
        self.0.get()
    }

    /// Sets the store; `false` if one was set already (it is kept).
    pub fn set(&self, store: Store) -> bool {
        self.0.set(store).is_ok()
    }
}

/// What one shipping round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipReport {
    /// Streams whose journal changed since they were last shipped, checked
    /// against the store this round (0: the store was not asked anything).
    pub checked: u64,
    /// Journal records sent to the store.
    pub sent: u64,
    /// Of those, events the store did not have yet.
    pub inserted: u64,
    /// Streams found tampered with in this round; they are not shipped.
    pub alarms: Vec<TamperAlarm>,
    /// Streams whose journal could not be read past some point (damage,
    /// or a segment that vanished under the reader), and why. What came
    /// before it was shipped; the next round tries again.
    pub journal_errors: Vec<String>,
}

/// The journal and the store disagree about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TamperAlarm {
    pub stream: Uuid,
    /// The seq where they part.
    pub seq: u64,
    pub reason: String,
}

impl fmt::Display for TamperAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {}, seq {}: {}",
            self.stream, self.seq, self.reason
        )
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events deleted from the store.
    pub store_events: u64,
    /// Journal segment files deleted.
    pub journal_segments: usize,
    /// Streams whose journal was kept, and why (a refusal, not a failure
    /// of the pass).
    pub kept: Vec<String>,
}

/// Why a round stopped early. Either way nothing is lost: the next round
/// starts again from what the store holds.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What a stream's last segment looked like: unchanged means no new
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    first_seq: u64,
    len: u64,
}

/// Ships one journal directory to one store, round after round,
/// remembering which streams are done and which are halted.
pub struct Shipper {
    dir: PathBuf,
    store: Store,
    /// Streams read to their end and wholly shipped, with their last
    /// segment as it was before that read.
    done: HashMap<Uuid, Fingerprint>,
    /// Streams not shipped any more: a tamper alarm.
    halted: HashMap<Uuid, TamperAlarm>,
    /// The last journal error logged per stream, so a damaged stream is
    /// logged once, not every round.
    damaged: HashMap<Uuid, String>,
    /// Where each stream's last shipped record ends, so the next round
    /// starts reading there instead of re-reading the live segment.
    positions: HashMap<Uuid, (airlock_journal::Position, Hash)>,
}

impl Shipper {
    pub fn new(dir: &Path, store: Store) -> Shipper {
        Shipper {
            dir: dir.to_path_buf(),
            store,
            done: HashMap::new(),
            halted: HashMap::new(),
            damaged: HashMap::new(),
            positions: HashMap::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The streams this shipper stopped shipping, and why.
    pub fn halted(&self) -> impl Iterator<Item = &TamperAlarm> {
        self.halted.values()
    }

    /// One round: every stream's new records to the store. A store error
    /// ends the round (what was sent stays sent); a damaged journal stream
    /// or a tamper alarm only ends that stream's part of it.
    pub async fn ship(&mut self) -> Result<ShipReport, ShipError> {
        let dir = self.dir.clone();
        let (streams, prints) = blocking(move || {
            let streams = Reader::open(&dir)?.streams();
            Ok::<_, JournalError>((streams, fingerprints(&dir)))
        })
        .await?;
        let mut report = ShipReport::default();
        for stream in streams {
            if self.halted.contains_key(&stream) {
                continue;
            }
            let print = prints.get(&stream).copied();
            if print.is_some() && self.done.get(&stream) == print.as_ref() {
                continue;
            }
            self.done.remove(&stream);
            report.checked += 1;
            // Done: read to its end and all shipped, or damaged (read to
            // the damage, which does not go away by reading again). Either
            // way, read again once its last segment changes.
            if self.ship_stream(stream, &mut report).await?
                && let Some(print) = print
            {
                self.done.insert(stream, print);
            }
        }
        Ok(report)
    }

    /// Ships one stream; `true` when it need not be read again until it
    /// changes: read to its end (or to damage in it) and all of that is in
    /// the store.
    async fn ship_stream(
        &mut self,
        stream: Uuid,
        report: &mut ShipReport,
    ) -> Result<bool, ShipError> {
        let (shipped, mark) = self.store.shipped_and_high_water(stream).await?;
        if let Some((seq, reason)) = tail_problem(shipped, mark) {
            self.alarm(report, stream, seq, reason);
            return Ok(false);
        }
        let anchor = match shipped {
            Some(_) => None,
            None => self.store.anchor(stream).await?,
        };
        let (after, link) = shipped.or(anchor).unwrap_or((0, genesis_hash(stream)));
        // The position is trusted only while it is where the store ends.
        let hint = self
            .positions
            .get(&stream)
            .copied()
            .filter(|(at, hash)| at.seq == after && *hash == link);
        let mut reader = open_stream(&self.dir, stream, after, hint).await?;
        let mut first = true;
        loop {
            let (back, batch) = read_batch(reader, BATCH).await;
            reader = back;
            if first && let Some(r) = batch.records.first() {
                first = false;
                if r.seq != after + 1 || r.prev != link {
                    let reason = if r.seq != after + 1 {
                        format!(
                            "the journal's next record is seq {} but the store's copy ends at \
                             seq {after}: the records between are in neither",
                            r.seq
                        )
                    } else {
                        format!(
                            "the journal's record does not chain from the store's seq {after} \
                             (its prev is {}, the store's hash is {}): the store or the \
                             journal was altered",
                            hex(&r.prev),
                            hex(&link)
                        )
                    };
                    self.alarm(report, stream, r.seq, reason);
                    return Ok(false);
                }
            }
            let last = batch.records.last().map(|r| (r.end, r.hash));
            if !batch.records.is_empty() {
                let now = now_ms();
                let rows: Vec<EventRow> = batch.records.into_iter().map(|r| row(r, now)).collect();
                match self.store.insert_events(&rows).await {
                    Ok(inserted) => {
                        if let Some(last) = last {
                            self.positions.insert(stream, last);
                        }
                        report.sent += rows.len() as u64;
                        report.inserted += inserted;
                        metrics::counter!("airlock_audit_shipped_events_total").increment(inserted);
                    }
                    Err(StoreError::Conflict {
                        seq,
                        stored,
                        offered,
                        ..
                    }) => {
                        let reason = format!(
                            "the store already holds a different event at this seq (hash \
                             {stored}, the journal's is {offered})"
                        );
                        self.alarm(report, stream, seq, reason);
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(e) = batch.error {
                let why = e.to_string();
                if self.damaged.get(&stream) != Some(&why) {
                    tracing::error!(
                        %stream,
                        error = %why,
                        "cannot read the audit journal further; what came before was shipped \
                         (run `airlock audit verify`)"
                    );
                    self.damaged.insert(stream, why.clone());
                }
                report
                    .journal_errors
                    .push(format!("stream {stream}: {why}"));
                // Damage stays; a file that vanished (another process
                // pruning) is worth another look next round.
                return Ok(matches!(e, JournalError::Corrupt { .. }));
            }
            if batch.end {
                return Ok(true);
            }
        }
    }

    fn alarm(&mut self, report: &mut ShipReport, stream: Uuid, seq: u64, reason: String) {
        tracing::error!(
            %stream,
            seq,
            %reason,
            "audit tamper alarm: the journal and the store disagree; this stream is not \
             shipped further (run `airlock audit verify`)"
        );
        metrics::counter!("airlock_audit_tamper_alarms_total").increment(1);
        let alarm = TamperAlarm {
            stream,
            seq,
            reason,
        };
        self.halted.insert(stream, alarm.clone());
        report.alarms.push(alarm);
    }

    /// Retention: deletes what was recorded more than `retention` ago,
    /// from the store (every stream but halted ones) and then from the
    /// journal (segments wholly shipped and wholly gone from the store).
    pub async fn prune(&mut self, retention: Duration) -> Result<PruneReport, ShipError> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let mut report = PruneReport::default();
        for stream in self.store.streams().await? {
            if !self.halted.contains_key(&stream) {
                report.store_events += self.store.prune(stream, cutoff).await?;
            }
        }
        let dir = self.dir.clone();
        let streams =
            blocking(move || Ok::<_, JournalError>(Reader::open(&dir)?.streams())).await?;
        for stream in streams {
            if self.halted.contains_key(&stream) {
                continue;
            }
            match self.prune_journal(stream, cutoff).await? {
                Ok(removed) => report.journal_segments += removed,
                Err(why) => report.kept.push(format!("stream {stream}: {why}")),
            }
        }
        Ok(report)
    }

    /// Deletes `stream`'s journal segments that come before the first event
    /// the store still holds, once the journal corroborates the store's
    /// anchor. The inner `Err` says why nothing was deleted.
    async fn prune_journal(
        &mut self,
        stream: Uuid,
        cutoff: i64,
    ) -> Result<Result<usize, String>, ShipError> {
        let Some((mark, _)) = self.store.high_water(stream).await? else {
            return Ok(Ok(0)); // nothing shipped yet
        };
        let Some(first_held) = self
            .store
            .events(stream, 0, 1)
            .await?
            .first()
            .map(|e| e.seq)
        else {
            return Ok(Err("the store holds none of its events".into()));
        };
        let before = first_held.min(mark + 1);
        let last_gone = before - 1;
        if last_gone == 0 {
            return Ok(Ok(0));
        }
        // The journal's record at the store's anchor, if it still has it.
        let reader = open_stream(&self.dir, stream, last_gone - 1, None).await?;
        let (_, batch) = read_batch(reader, 1).await;
        let record = match (batch.records.into_iter().next(), batch.error) {
            (Some(r), _) if r.seq == last_gone => r,
            (Some(_), _) | (None, None) => return Ok(Ok(0)), // pruned already
            (None, Some(e)) => return Ok(Err(e.to_string())),
        };
        let anchor = self.store.anchor(stream).await?;
        if anchor != Some((last_gone, record.hash)) {
            let why = match anchor {
                Some((seq, hash)) if seq == last_gone => {
                    let reason = format!(
                        "the store's anchor has hash {}, the journal's record {}",
                        hex(&hash),
                        hex(&record.hash)
                    );
                    let mut report = ShipReport::default();
                    self.alarm(&mut report, stream, seq, reason.clone());
                    reason
                }
                _ => format!(
                    "the store's events before seq {first_held} are gone without a matching \
                     anchor"
                ),
            };
            tracing::warn!(%stream, %why, "audit retention keeps this stream's journal");
            return Ok(Err(why));
        }
        if let Ok(event) = Event::decode(&record.payload)
            && event.at_millis() >= cutoff
        {
            let why = format!(
                "the store deleted seq {last_gone}, which the journal recorded after the \
                 retention cut-off"
            );
            tracing::warn!(%stream, %why, "audit retention keeps this stream's journal");
            return Ok(Err(why));
        }
        let dir = self.dir.clone();
        match blocking(move || airlock_journal::prune(&dir, stream, before)).await {
            Ok(pruned) => Ok(Ok(pruned.removed.len())),
            Err(e) => {
                tracing::error!(%stream, error = %e, "audit retention cannot prune the journal");
                Ok(Err(e.to_string()))
            }
        }
    }
}

/// Why the store's events and its high-water mark disagree: a deleted tail.
fn tail_problem(shipped: Option<(u64, Hash)>, mark: Option<(u64, Hash)>) -> Option<(u64, String)> {
    match (shipped, mark) {
        (None, None) => None,
        (Some(a), Some(m)) if a == m => None,
        (Some((seq, _)), Some((mark, _))) if seq < mark => Some((
            seq + 1,
            format!(
                "the store's events end at seq {seq} but it was shipped up to seq {mark}: \
                 its tail was deleted"
            ),
        )),
        (None, Some((mark, _))) => Some((
            1,
            format!(
                "the store holds none of the stream's events but it was shipped up to seq {mark}"
            ),
        )),
        (Some((seq, _)), None) => Some((
            seq,
            "the store holds events of the stream but no high-water mark: it was deleted".into(),
        )),
        (Some((seq, _)), Some((mark, _))) if seq > mark => Some((
            mark + 1,
            format!("the store holds events up to seq {seq}, past its high-water mark {mark}"),
        )),
        (Some((seq, _)), Some(_)) => Some((
            seq,
            "the store's last event differs from its high-water mark".into(),
        )),
    }
}

/// One round: [`Shipper::ship`] with nothing remembered (the CLI's `ship`,
/// and tests).
pub async fn ship_once(dir: &Path, store: &Store) -> Result<ShipReport, ShipError> {
    Shipper::new(dir, store.clone()).ship().await
}

/// Connects to `store_url`, retrying with capped exponential backoff until
/// it answers (or `stop` resolves: `None`). The recorder's store status is
/// `Err` while it does not.
pub async fn connect(
    recorder: &Recorder,
    store_url: &str,
    connect_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> Option<Store> {
    tokio::pin!(stop);
    let mut backoff = Backoff::default();
    let mut down = false;
    loop {
        let attempt = tokio::select! {
            _ = &mut stop => return None,
            r = Store::connect_with(store_url, connect_timeout) => r,
        };
        match attempt {
            Ok(store) => return Some(store),
            Err(e) => {
                if !down {
                    tracing::warn!(error = %e, "the audit store is unreachable; events stay in the journal and are shipped when it is back");
                    down = true;
                }
                recorder.set_store_status(Err(e.to_string()));
            }
        }
        tokio::select! {
            _ = &mut stop => return None,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// How often the journal's size is measured for `airlock_journal_bytes`.
const MEASURE_EVERY: Duration = Duration::from_secs(10);

/// A shipping round succeeded: the time of it
/// (`airlock_ship_last_success_timestamp_seconds`; the lag is now minus it).
fn shipped_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("airlock_ship_last_success_timestamp_seconds").set(now);
}

/// At most every [`MEASURE_EVERY`], the journal's size on disk
/// (`airlock_journal_bytes`).
fn measure_journal(recorder: &Recorder, next_measure: &mut Instant) {
    if Instant::now() < *next_measure {
        return;
    }
    *next_measure = Instant::now() + MEASURE_EVERY;
    let bytes: u64 = std::fs::read_dir(recorder.dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    metrics::gauge!("airlock_journal_bytes").set(bytes as f64);
}

/// The background shipper of a gateway process, until `stop` resolves.
///
/// [`connect`]s to `store_url` with a pool of its own (the caller runs it
/// where its connection threads should run: at low priority), then ships a
/// round on every append or every 250 ms, whichever comes first, and after
/// a failure at the backoff's pace. The recorder's store status follows:
/// `Err` while the store is unreachable, `Ok` when a round succeeds. With
/// `retention`, prunes once when connected and then at most every 10
/// minutes. On `stop`, one last round (bounded by `connect_timeout`) ships
/// what the last statements recorded.
pub async fn run(
    recorder: Arc<Recorder>,
    store_url: String,
    connect_timeout: Duration,
    retention: Option<Duration>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Backoff::default();
    let mut down = false;
    let Some(store) = connect(&recorder, &store_url, connect_timeout, &mut stop).await else {
        return;
    };
    let mut shipper = Shipper::new(recorder.dir(), store);
    let mut next_prune = Instant::now();
    let mut next_measure = Instant::now();
    let mut last_contact = Instant::now();
    loop {
        let mut round = shipper.ship().await;
        if let Ok(report) = &round {
            if report.checked > 0 {
                last_contact = Instant::now();
            } else if down || last_contact.elapsed() >= PING_EVERY {
                // Nothing to ship: still tell readiness whether it would
                // work (and, while down, whether it is back).
                last_contact = Instant::now();
                if let Err(e) = shipper.store().ping().await {
                    round = Err(e.into());
                }
            }
        }
        let ok = match round {
            Ok(report) => {
                if down {
                    tracing::info!("the audit store is reachable again; shipping caught up");
                    down = false;
                }
                shipped_now();
                recorder.set_store_status(Ok(()));
                backoff.reset();
                if report.inserted > 0 {
                    tracing::debug!(events = report.inserted, "audit events shipped");
                }
                true
            }
            Err(ShipError::Store(e)) => {
                if !down {
                    tracing::warn!(error = %e, "the audit store failed; events stay in the journal and are shipped when it is back");
                    down = true;
                }
                recorder.set_store_status(Err(e.to_string()));
                false
            }
            Err(ShipError::Journal(e)) => {
                tracing::error!(error = %e, "cannot read the audit journal directory");
                false
            }
        };
        if ok
            && let Some(retention) = retention
            && Instant::now() >= next_prune
        {
            next_prune = match shipper.prune(retention).await {
                Ok(report) => {
                    if report.store_events > 0 || report.journal_segments > 0 {
                        tracing::info!(
                            store_events = report.store_events,
                            journal_segments = report.journal_segments,
                            "audit retention pruned"
                        );
                    }
                    Instant::now() + PRUNE_EVERY
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention failed; trying again later");
                    Instant::now() + PRUNE_RETRY
                }
            };
        }
        // Measured whether or not the store answers: a journal growing
        // through an outage is what operators need to see.
        measure_journal(&recorder, &mut next_measure);
        let wait = if ok { TICK } else { backoff.next() };
        tokio::select! {
            _ = &mut stop => break,
            _ = recorder.appended(), if ok => {
                // Under load appends never stop: gather what follows into
                // one round rather than one round per statement.
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(GATHER) => {}
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    match tokio::time::timeout(connect_timeout, shipper.ship()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the last audit shipping round failed; the journal keeps the events for the next start")
        }
        Err(_) => tracing::warn!(
            "the last audit shipping round timed out; the journal keeps the events for the next start"
        ),
    }
}

/// Capped exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(BACKOFF_MAX);
        now
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// A record as the store keeps it, with the columns it is listed by.
/// An event's index fields; a payload that is not a known event kind does
/// not decode (it ships as `unknown`).
fn event_index(payload: &[u8]) -> Result<crate::event::IndexFields, String> {
    let fields = crate::event::IndexFields::decode(payload).map_err(|e| e.to_string())?;
    if Event::KINDS.contains(&fields.kind.as_str()) {
        Ok(fields)
    } else {
        Err(format!("unknown event kind {:?}", fields.kind))
    }
}

fn row(r: Record, now_ms: i64) -> EventRow {
    let mut row = EventRow {
        stream: r.stream,
        seq: r.seq,
        prev: r.prev,
        hash: r.hash,
        payload: Vec::new(),
        session_id: None,
        kind: Some("unknown".into()),
        principal: None,
        connection: None,
        decision: None,
        // Unknown: when it was shipped is the best guess.
        recorded_at: now_ms,
    };
    match event_index(&r.payload) {
        Ok(index) => {
            row.session_id = index.session.map(|s| s.hyphenated().to_string());
            row.decision = index.decision.map(|d| d.name().to_owned());
            let at = index.at_millis();
            row.kind = Some(index.kind);
            row.principal = index.principal;
            row.connection = index.connection;
            match at {
                0 => {}
                at => row.recorded_at = at,
            }
        }
        Err(e) => tracing::warn!(
            stream = %r.stream,
            seq = r.seq,
            error = %e,
            "an audit journal record is not a readable event; shipped as kind `unknown`"
        ),
    }
    row.payload = r.payload;
    row
}

/// A reader of `stream` alone, from the record after `after`.
pub(crate) async fn open_stream(
    dir: &Path,
    stream: Uuid,
    after: u64,
    hint: Option<(airlock_journal::Position, Hash)>,
) -> Result<Reader, JournalError> {
    let dir = dir.to_path_buf();
    blocking(move || {
        let mut reader = Reader::open(&dir)?;
        reader.retain(|s| s == stream);
        match hint {
            Some((at, hash)) => reader.resume_at(stream, at, hash),
            None => reader.resume_after(stream, after),
        };
        Ok(reader)
    })
    .await
}

/// Up to `max` records of a reader, read on the blocking pool.
pub(crate) struct Batch {
    pub records: Vec<Record>,
    /// Why the stream could not be read further (it ends here).
    pub error: Option<JournalError>,
    /// The reader has nothing more.
    pub end: bool,
}

pub(crate) async fn read_batch(mut reader: Reader, max: usize) -> (Reader, Batch) {
    let read = tokio::task::spawn_blocking(move || {
        let mut batch = Batch {
            records: Vec::new(),
            error: None,
            end: false,
        };
        while batch.records.len() < max {
            match reader.next() {
                Some(Ok(r)) => batch.records.push(r),
                Some(Err(e)) => {
                    batch.error = Some(e);
                    break;
                }
                None => {
                    batch.end = true;
                    break;
                }
            }
        }
        (reader, batch)
    })
    .await;
    match read {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs blocking file work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Every stream's last segment in `dir`, as the shipper last saw it.
/// Errors leave streams out (they are then read as changed).
fn fingerprints(dir: &Path) -> HashMap<Uuid, Fingerprint> {
    let mut prints: HashMap<Uuid, Fingerprint> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return prints;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((stream, first_seq)) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        if prints.get(&stream).is_some_and(|p| p.first_seq > first_seq) {
            continue;
        }
        match entry.metadata() {
            Ok(meta) => {
                prints.insert(
                    stream,
                    Fingerprint {
                        first_seq,
                        len: meta.len(),
                    },
                );
            }
            Err(_) => {
                prints.remove(&stream);
            }
        }
    }
    prints
}

/// `<stream>-<first seq, 20 digits>.seg` (see `airlock_journal::format`).
fn parse_segment_name(name: &str) -> Option<(Uuid, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (id, seq) = stem.split_at_checked(36)?;
    let seq = seq.strip_prefix('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..9).map(|_| b.next()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert_eq!(delays[1], BACKOFF_MIN * 2);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }

    #[test]
    fn segment_names() {
        let s = Uuid::now_v7();
        assert_eq!(
            parse_segment_name(&format!("{s}-{:020}.seg", 42)),
            Some((s, 42))
        );
        assert_eq!(parse_segment_name(&format!("{s}.anchor")), None);
        assert_eq!(parse_segment_name(&format!("{s}-{:020}.seg.torn", 1)), None);
        assert_eq!(parse_segment_name(&format!("{s}-42.seg")), None);
    }

    #[test]
    fn undecodable_payloads_are_kept_as_unknown() {
        let s = Uuid::now_v7();
        let r = Record {
            stream: s,
            seq: 3,
            prev: [1; 32],
            hash: [2; 32],
            end: airlock_journal::Position {
                seq: 3,
                segment: 1,
                end: 100,
            },
            payload: vec![0xff, 0x00, b'{'],
        };
        let row = row(r, 1234);
        assert_eq!(row.kind.as_deref(), Some("unknown"));
        assert_eq!((row.recorded_at, row.session_id), (1234, None));
        assert_eq!(row.payload, vec![0xff, 0x00, b'{']);
        assert_eq!((row.prev, row.hash), ([1; 32], [2; 32]));
    }

    #[test]
    fn tail_problems() {
        let h = |n| Some((n, [n as u8; 32]));
        assert_eq!(tail_problem(None, None), None);
        assert_eq!(tail_problem(h(4), h(4)), None);
        assert_eq!(tail_problem(h(3), h(5)).unwrap().0, 4);
        assert_eq!(tail_problem(None, h(5)).unwrap().0, 1);
        assert_eq!(tail_problem(h(5), None).unwrap().0, 5);
        assert_eq!(tail_problem(h(6), h(5)).unwrap().0, 6);
        assert_eq!(tail_problem(Some((5, [0; 32])), h(5)).unwrap().0, 5);
    }
}
