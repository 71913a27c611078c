//! The writer: one stream, appended to by one process.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::format::{
    HEADER_LEN, Hash, Header, MAX_PAYLOAD, RECORD_OVERHEAD, encode_record, genesis_hash,
    record_hash, segment_name,
};
use crate::fsutil::{create_dir, create_new, remove_if_exists, sync_dir, tmp_path, try_lock};
use crate::recover::{Recovery, recover};
use crate::{Fsync, JournalError, Options};

/// The batch buffers are kept between batches up to this capacity, so a
/// rare huge event does not pin its size in memory.
const KEEP_BUFFER: usize = 64 << 10;

/// [`Journal::push`] takes no more records while this many bytes are
/// pending (one record of any size is always taken into an empty batch):
/// the caller writes a batch first. This bounds the memory of records
/// waiting for a slow disk.
pub const MAX_PENDING: usize = 1 << 20;

/// Where an event went: the shipper's idempotency key is (stream, `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

/// What [`Journal::push`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// In the pending batch: chained and numbered, not yet written.
    Queued(Appended),
    /// Not taken: the pending batch is full, or the record starts a new
    /// segment. Write the pending batch ([`Journal::take_batch`]) and push
    /// again.
    WriteFirst,
}

/// A batch of records that failed to reach the file, with every record
/// chained after it: none of them is in the journal.
#[derive(Debug)]
pub struct Lost {
    pub seqs: RangeInclusive<u64>,
    pub error: JournalError,
}

/// An open stream. Not shared: the gateway puts it behind its own lock.
///
/// Records are written in batches (group commit): [`Journal::push`] chains
/// a record into the pending batch under the caller's lock,
/// [`Journal::take_batch`] hands the batch out to be written *outside* the
/// lock ([`Batch::write`]: one `write(2)`, plus the `fdatasync` with
/// [`Fsync::Always`]), and [`Journal::finish_batch`] takes the outcome. At
/// most one batch is out at a time, so batches reach the file in seq order.
/// [`Journal::append`] does all three for one record.
pub struct Journal {
    dir: PathBuf,
    stream: Uuid,
    options: Options,
    /// The current segment, `O_APPEND`, holding an exclusive `flock` that
    /// tells other processes this stream is live. Shared with the batch
    /// being written.
    file: Arc<File>,
    segment: Arc<Path>,
    /// The segment's length once the pending batch is written.
    segment_len: u64,
    /// The segment's length on disk (what a failed batch is cut back to).
    written_len: u64,
    next_seq: u64,
    last_hash: Hash,
    /// Encoded records not yet handed to a batch.
    pending: Vec<u8>,
    /// A spare buffer, so batches do not allocate.
    spare: Vec<u8>,
    /// The batch being written, if one is out.
    in_flight: Option<InFlight>,
    /// Records up to this seq have been written (`write(2)` returned).
    written_seq: u64,
    /// The hash of record `written_seq`: what a batch chains from.
    written_hash: Hash,
    /// Records up to this seq are on disk (as far as `fdatasync` knows).
    synced_seq: u64,
    /// The `now` of the last sync the timer did ([`Journal::sync_if_due`]).
    timer_synced_at: Option<Instant>,
    poisoned: bool,
}

impl Journal {
    /// Recovers what earlier processes left in `dir` (created if missing),
    /// then starts a new stream in it. Fails if the directory cannot be
    /// written, so the gateway learns before the first statement.
    pub fn open(dir: &Path, options: Options) -> Result<(Journal, Recovery), JournalError> {
        create_dir(dir)?;
        let recovery = recover(dir)?;
        let stream = Uuid::now_v7();
        let last_hash = genesis_hash(stream);
        let (file, segment) = create_segment(dir, stream, 1, &last_hash)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            stream,
            options,
            file: Arc::new(file),
            segment: segment.into(),
            segment_len: HEADER_LEN as u64,
            written_len: HEADER_LEN as u64,
            next_seq: 1,
            last_hash,
            pending: Vec::with_capacity(4096),
            spare: Vec::with_capacity(4096),
            in_flight: None,
            written_seq: 0,
            written_hash: last_hash,
            synced_seq: 0,
            timer_synced_at: None,
            poisoned: false,
        };
        Ok((journal, recovery))
    }

    /// Appends one event and writes it (with any records pushed before it).
    /// Returns once the whole record has been handed to `write(2)` (and,
    /// with [`Fsync::Always`], synced). On error nothing of the record stays
    /// in the file, or the journal is poisoned.
    ///
    /// For a journal written by one thread: not while a batch from
    /// [`Journal::take_batch`] is out.
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended, JournalError> {
        debug_assert!(self.in_flight.is_none(), "append while a batch is out");
        let appended = loop {
            match self.push(payload)? {
                Push::Queued(a) => break a,
                Push::WriteFirst => self.write_pending()?,
            }
        };
        self.write_pending()?;
        Ok(appended)
    }

    /// Writes the pending batch here and now.
    fn write_pending(&mut self) -> Result<(), JournalError> {
        if let Some(batch) = self.take_batch() {
            let written = batch.write();
            self.finish_batch(batch, written)
                .map_err(|lost| lost.error)?;
        }
        Ok(())
    }

    /// Chains one event into the pending batch. It is in the journal once a
    /// batch holding it is written ([`Journal::written_seq`] reaches its
    /// seq).
    pub fn push(&mut self, payload: &[u8]) -> Result<Push, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let idle = self.pending.is_empty() && self.in_flight.is_none();
        let record_len = (RECORD_OVERHEAD + payload.len()) as u64;
        if !self.pending.is_empty() && self.pending.len() + record_len as usize > MAX_PENDING {
            return Ok(Push::WriteFirst);
        }
        if self.segment_len > HEADER_LEN as u64
            && self.segment_len + record_len > self.options.segment_bytes
        {
            // Rotation syncs the records before it, so it waits for them.
            if !idle {
                return Ok(Push::WriteFirst);
            }
            self.rotate(self.next_seq)?;
        }
        let seq = self.next_seq;
        let hash = record_hash(&self.last_hash, seq, payload);
        encode_record(&mut self.pending, seq, &self.last_hash, &hash, payload);
        self.segment_len += record_len;
        self.next_seq += 1;
        self.last_hash = hash;
        Ok(Push::Queued(Appended { seq, hash }))
    }

    /// The pending records as a batch to write, unless there are none or a
    /// batch is already out.
    pub fn take_batch(&mut self) -> Option<Batch> {
        if self.pending.is_empty() || self.in_flight.is_some() || self.poisoned {
            return None;
        }
        let bytes = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        let first_seq = self.written_seq + 1;
        let last_seq = self.next_seq - 1;
        self.in_flight = Some(InFlight {
            first_seq,
            last_seq,
            prev: self.written_hash,
            last_hash: self.last_hash,
        });
        Some(Batch {
            file: Arc::clone(&self.file),
            bytes,
            sync: self.options.fsync == Fsync::Always,
            seqs: first_seq..=last_seq,
        })
    }

    /// Takes a written batch's outcome. On success its records are in the
    /// journal. On failure nothing of it stays in the file, and the records
    /// pushed since are dropped too (they chain from the lost ones): the
    /// journal continues from the record before the batch, or is poisoned
    /// if the file could not be cut back or the sync failed.
    pub fn finish_batch(
        &mut self,
        batch: Batch,
        outcome: Result<(), BatchError>,
    ) -> Result<(), Lost> {
        let Some(flight) = self.in_flight.take() else {
            return Err(Lost {
                seqs: batch.seqs,
                error: JournalError::Poisoned,
            });
        };
        let len = batch.bytes.len() as u64;
        self.reuse(batch.bytes);
        match outcome {
            Ok(()) => {
                self.written_len += len;
                self.written_seq = flight.last_seq;
                self.written_hash = flight.last_hash;
                if batch.sync {
                    self.synced_seq = flight.last_seq;
                }
                Ok(())
            }
            Err(e) => {
                let lost = flight.first_seq..=self.next_seq - 1;
                // Cut off a partial batch, or the next one would land after
                // garbage and turn a failed write into mid-file damage. A
                // failed sync leaves the file's state unknown.
                if e.op == "sync" || self.file.set_len(self.written_len).is_err() {
                    self.poisoned = true;
                }
                self.next_seq = flight.first_seq;
                self.last_hash = flight.prev;
                self.segment_len = self.written_len;
                self.pending.clear();
                Err(Lost {
                    seqs: lost,
                    error: JournalError::io(e.op, &self.segment, e.source),
                })
            }
        }
    }

    fn reuse(&mut self, mut bytes: Vec<u8>) {
        bytes.clear();
        bytes.shrink_to(KEEP_BUFFER);
        self.spare = bytes;
    }

    /// The bytes of the records pushed and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// How many records are pushed and not yet handed to a batch (nor
    /// written).
    pub fn pending_records(&self) -> u64 {
        let handed = self
            .in_flight
            .as_ref()
            .map_or(self.written_seq, |f| f.last_seq);
        self.next_seq - 1 - handed
    }

    /// Whether a batch is out being written.
    pub fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The last seq whose batch was written.
    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }

    /// Whether the caller's timer should sync now: there are unsynced
    /// records and the interval has passed since the timer's last sync (or
    /// the timer has not synced yet). Always `false` with [`Fsync::Always`].
    pub fn sync_due(&self, now: Instant) -> bool {
        match self.options.fsync {
            Fsync::Always => false,
            Fsync::Interval(every) => {
                self.dirty()
                    && self
                        .timer_synced_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= every)
            }
        }
    }

    /// The timer's call: syncs if [`Journal::sync_due`], and remembers `now`
    /// as the time of that sync. Called at least once per interval, it gets
    /// a record to disk within one interval plus one timer period.
    pub fn sync_if_due(&mut self, now: Instant) -> Result<bool, JournalError> {
        if !self.sync_due(now) {
            return Ok(false);
        }
        self.sync()?;
        self.timer_synced_at = Some(now);
        Ok(true)
    }

    /// Forces written records to disk now (shutdown, or an event that must
    /// be durable). A failed sync poisons the journal: after one, Linux
    /// cannot say which writes reached the disk.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.in_flight.is_none() {
            self.write_pending()?;
        }
        if self.dirty() {
            self.sync_file()?;
        }
        Ok(())
    }

    /// [`Journal::sync_if_due`] in two halves, so that the caller's lock is
    /// not held across `fdatasync` (milliseconds, where an append takes
    /// microseconds): take the job under the lock, [`SyncJob::run`] it
    /// outside, and hand the result to [`Journal::finish_sync`] under the lock.
    pub fn begin_sync(&mut self, now: Instant) -> Result<Option<SyncJob>, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if !self.sync_due(now) {
            return Ok(None);
        }
        self.timer_synced_at = Some(now);
        Ok(Some(SyncJob {
            file: Arc::clone(&self.file),
            segment: Arc::clone(&self.segment),
            up_to: self.written_seq,
        }))
    }

    /// Takes a [`SyncJob`]'s result. A failed sync poisons the journal.
    pub fn finish_sync(&mut self, done: Result<Synced, JournalError>) -> Result<(), JournalError> {
        match done {
            Ok(Synced { up_to }) => {
                self.synced_seq = self.synced_seq.max(up_to);
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// Syncs and closes; [`Drop`] does the same but cannot report an error.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.sync()
    }

    /// This process's stream.
    pub fn stream(&self) -> Uuid {
        self.stream
    }

    /// The last appended seq (0 before the first append).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The hash the next record will chain from.
    pub fn last_hash(&self) -> Hash {
        self.last_hash
    }

    /// The segment being written.
    pub fn segment(&self) -> &Path {
        &self.segment
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// After a failed write that could not be undone or a failed sync: the
    /// gateway reports not ready and opens a new journal.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn dirty(&self) -> bool {
        self.written_seq > self.synced_seq
    }

    fn sync_file(&mut self) -> Result<(), JournalError> {
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(JournalError::io("sync", &self.segment, e));
        }
        self.synced_seq = self.written_seq;
        Ok(())
    }

    /// Closes the current segment, synced, and continues the chain in a new
    /// one starting at `first_seq`. Only with nothing pending or in flight.
    fn rotate(&mut self, first_seq: u64) -> Result<(), JournalError> {
        self.sync_file()?;
        let (file, segment) = create_segment(&self.dir, self.stream, first_seq, &self.last_hash)?;
        // The old segment's lock is released only now, after the new one is
        // in place and locked: the stream never looks dead while live.
        self.file = Arc::new(file);
        self.segment = segment.into();
        self.segment_len = HEADER_LEN as u64;
        self.written_len = HEADER_LEN as u64;
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.poisoned {
            let _ = self.sync();
        }
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("stream", &self.stream)
            .field("segment", &self.segment)
            .field("last_seq", &self.last_seq())
            .field("options", &self.options)
            .field("synced_seq", &self.synced_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// The batch being written.
#[derive(Debug)]
struct InFlight {
    first_seq: u64,
    last_seq: u64,
    /// The hash the batch's first record chains from.
    prev: Hash,
    /// The batch's last record's hash.
    last_hash: Hash,
}

/// Pending records to write outside the journal's lock, from
/// [`Journal::take_batch`].
#[must_use = "write it and pass the outcome to Journal::finish_batch"]
#[derive(Debug)]
pub struct Batch {
    file: Arc<File>,
    bytes: Vec<u8>,
    sync: bool,
    seqs: RangeInclusive<u64>,
}

/// Why a batch did not reach the file.
#[derive(Debug)]
pub struct BatchError {
    op: &'static str,
    source: io::Error,
}

impl Batch {
    /// One `write_all` of every record: `O_APPEND` puts them after the last
    /// batch, and a crash can only tear the tail. With [`Fsync::Always`],
    /// one `fdatasync` for the whole batch (the group commit).
    pub fn write(&self) -> Result<(), BatchError> {
        (&*self.file)
            .write_all(&self.bytes)
            .map_err(|source| BatchError {
                op: "write",
                source,
            })?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(|source| BatchError { op: "sync", source })?;
        }
        Ok(())
    }

    /// The records it holds.
    #[cfg(test)]
    fn seqs(&self) -> RangeInclusive<u64> {
        self.seqs.clone()
    }
}

/// An `fdatasync` of the journal's current segment that runs without the
/// journal, from [`Journal::begin_sync`].
#[must_use = "run it and pass the result to Journal::finish_sync"]
#[derive(Debug)]
pub struct SyncJob {
    file: Arc<File>,
    segment: Arc<Path>,
    up_to: u64,
}

/// Proof of a finished [`SyncJob`], for [`Journal::finish_sync`].
#[derive(Debug)]
pub struct Synced {
    up_to: u64,
}

impl SyncJob {
    /// Syncs the records written before the job was taken. (A rotation
    /// meanwhile synced them itself; syncing the old file again is harmless.)
    pub fn run(self) -> Result<Synced, JournalError> {
        self.file
            .sync_data()
            .map_err(|e| JournalError::io("sync", &self.segment, e))?;
        Ok(Synced { up_to: self.up_to })
    }
}

/// Creates a segment whose header is complete, synced and locked before it
/// appears under its name, so that no reader ever sees a torn header and
/// recovery never mistakes it for a dead stream's.
fn create_segment(
    dir: &Path,
    stream: Uuid,
    first_seq: u64,
    prev: &Hash,
) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(segment_name(stream, first_seq));
    let tmp = tmp_path(&path);
    let header = Header {
        stream,
        first_seq,
        prev: *prev,
    };
    let created = remove_if_exists(&tmp)
        .and_then(|()| create_new(&tmp))
        .and_then(|mut file| {
            if !try_lock(&file)? {
                return Err(std::io::Error::other(
                    "a new segment is locked by another process",
                ));
            }
            file.write_all(&header.encode())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(file)
        });
    match created {
        Ok(file) => {
            sync_dir(dir)?;
            Ok((file, path))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(JournalError::io("create segment", &path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reader, verify};

    fn open(dir: &Path) -> Journal {
        Journal::open(dir, Options::default()).unwrap().0
    }

    fn queued(j: &mut Journal, payload: &[u8]) -> u64 {
        match j.push(payload).unwrap() {
            Push::Queued(a) => a.seq,
            Push::WriteFirst => panic!("not taken"),
        }
    }

    fn payloads(dir: &Path) -> Vec<Vec<u8>> {
        Reader::open(dir)
            .unwrap()
            .map(|r| r.unwrap().payload)
            .collect()
    }

    #[test]
    fn records_pushed_while_a_batch_is_out_go_in_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        assert_eq!((queued(&mut j, b"a"), queued(&mut j, b"b")), (1, 2));
        let first = j.take_batch().unwrap();
        assert_eq!(first.seqs(), 1..=2);
        assert!(j.take_batch().is_none(), "one batch out at a time");
        assert_eq!(queued(&mut j, b"c"), 3);
        assert_eq!(j.written_seq(), 0);
        let outcome = first.write();
        j.finish_batch(first, outcome).unwrap();
        assert_eq!(j.written_seq(), 2);
        let second = j.take_batch().unwrap();
        assert_eq!(second.seqs(), 3..=3);
        let outcome = second.write();
        j.finish_batch(second, outcome).unwrap();
        assert_eq!(j.written_seq(), 3);
        assert!(j.take_batch().is_none());
        drop(j);
        assert_eq!(payloads(dir.path()), [b"a", b"b", b"c"]);
        verify(dir.path()).unwrap();
    }

    #[test]
    fn a_failed_batch_loses_itself_and_what_chained_from_it_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        j.append(b"kept").unwrap();
        queued(&mut j, b"lost 1");
        queued(&mut j, b"lost 2");
        let batch = j.take_batch().unwrap();
        queued(&mut j, b"lost 3, pushed while the batch was out");
        // Half the batch reached the file before the disk failed.
        (&*batch.file).write_all(&batch.bytes[..10]).unwrap();
        let failed = Err(BatchError {
            op: "write",
            source: io::Error::from_raw_os_error(28),
        });
        let lost = j.finish_batch(batch, failed).unwrap_err();
        assert_eq!(lost.seqs, 2..=4);
        assert!(lost.error.to_string().contains("write"), "{}", lost.error);
        assert!(!j.is_poisoned(), "the partial batch was cut off");
        assert_eq!(j.pending_records(), 0);
        assert_eq!(j.append(b"after").unwrap().seq, 2, "the chain goes on");
        drop(j);
        assert_eq!(payloads(dir.path()), [&b"kept"[..], b"after"]);
        verify(dir.path()).unwrap();
    }

    #[test]
    fn a_failed_sync_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        queued(&mut j, b"x");
        let batch = j.take_batch().unwrap();
        let failed = Err(BatchError {
            op: "sync",
            source: io::Error::from_raw_os_error(5),
        });
        assert_eq!(j.finish_batch(batch, failed).unwrap_err().seqs, 1..=1);
        assert!(j.is_poisoned());
        assert!(matches!(j.push(b"y"), Err(JournalError::Poisoned)));
    }

    #[test]
    fn a_full_batch_takes_no_more_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        let big = vec![b'x'; MAX_PENDING / 2];
        queued(&mut j, &big);
        queued(&mut j, &big[..big.len() - 2 * RECORD_OVERHEAD]);
        assert_eq!(j.push(&big).unwrap(), Push::WriteFirst);
        let batch = j.take_batch().unwrap();
        // Still full while the batch is out: nothing new is pending, so a
        // record goes into the next batch.
        assert_eq!(queued(&mut j, &big), 3);
        assert_eq!(j.push(&big).unwrap(), Push::WriteFirst);
        let outcome = batch.write();
        j.finish_batch(batch, outcome).unwrap();
        j.sync().unwrap();
        assert_eq!(j.written_seq(), 3);
        assert_eq!(payloads(dir.path()).len(), 3);
    }

    #[test]
    fn rotation_waits_for_the_batch_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(
            dir.path(),
            Options {
                fsync: Fsync::Always,
                segment_bytes: 300,
            },
        )
        .unwrap()
        .0;
        let payload = [b'p'; 100];
        queued(&mut j, &payload);
        assert_eq!(j.push(&payload).unwrap(), Push::WriteFirst);
        let batch = j.take_batch().unwrap();
        assert_eq!(j.push(&payload).unwrap(), Push::WriteFirst, "one is out");
        let outcome = batch.write();
        j.finish_batch(batch, outcome).unwrap();
        assert_eq!(queued(&mut j, &payload), 2, "in a new segment");
        j.sync().unwrap();
        assert_ne!(j.segment(), dir.path().join(segment_name(j.stream(), 1)));
        drop(j);
        assert_eq!(payloads(dir.path()).len(), 2);
        verify(dir.path()).unwrap();
    }
}
