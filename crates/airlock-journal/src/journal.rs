//! The writer: one stream, appended to by one process.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use uuid::Uuid;

use crate::format::{
    HEADER_LEN, Hash, Header, MAX_PAYLOAD, RECORD_OVERHEAD, encode_record, genesis_hash,
    record_hash, segment_name,
};
use crate::fsutil::{create_dir, create_new, remove_if_exists, sync_dir, tmp_path, try_lock};
use crate::recover::{Recovery, recover};
use crate::{Fsync, JournalError, Options};

/// The record buffer is kept between appends up to this capacity, so a
/// rare huge event does not pin its size in memory.
const KEEP_BUFFER: usize = 64 << 10;

/// Where an event went: the shipper's idempotency key is (stream, `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

/// An open stream. Not shared: the gateway puts it behind its own lock.
pub struct Journal {
    dir: PathBuf,
    stream: Uuid,
    options: Options,
    /// The current segment, `O_APPEND`, holding an exclusive `flock` that
    /// tells other processes this stream is live.
    file: File,
    segment: PathBuf,
    segment_len: u64,
    next_seq: u64,
    last_hash: Hash,
    buf: Vec<u8>,
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
            file,
            segment,
            segment_len: HEADER_LEN as u64,
            next_seq: 1,
            last_hash,
            buf: Vec::with_capacity(4096),
            synced_seq: 0,
            timer_synced_at: None,
            poisoned: false,
        };
        Ok((journal, recovery))
    }

    /// Appends one event. Returns once the whole record has been handed to
    /// `write(2)` (and, with [`Fsync::Always`], synced). On error nothing of
    /// the record stays in the file, or the journal is poisoned.
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let seq = self.next_seq;
        let record_len = (RECORD_OVERHEAD + payload.len()) as u64;
        if self.segment_len > HEADER_LEN as u64
            && self.segment_len + record_len > self.options.segment_bytes
        {
            self.rotate(seq)?;
        }
        let hash = record_hash(&self.last_hash, seq, payload);
        self.buf.clear();
        encode_record(&mut self.buf, seq, &self.last_hash, &hash, payload);
        // One write_all of the whole record: O_APPEND puts it after the last
        // one, and a crash can only tear this record, at the tail.
        let written = self.file.write_all(&self.buf);
        self.buf.clear();
        self.buf.shrink_to(KEEP_BUFFER);
        if let Err(e) = written {
            // Cut off a partial record, or the next one would land after
            // garbage and turn a failed write into mid-file damage.
            if self.file.set_len(self.segment_len).is_err() {
                self.poisoned = true;
            }
            return Err(JournalError::io("write", &self.segment, e));
        }
        self.segment_len += record_len;
        self.next_seq += 1;
        self.last_hash = hash;
        if self.options.fsync == Fsync::Always {
            self.sync_file()?;
        }
        Ok(Appended { seq, hash })
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
        let file = self
            .file
            .try_clone()
            .map_err(|e| JournalError::io("sync", &self.segment, e))?;
        self.timer_synced_at = Some(now);
        Ok(Some(SyncJob {
            file,
            segment: self.segment.clone(),
            up_to: self.last_seq(),
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
        self.last_seq() > self.synced_seq
    }

    fn sync_file(&mut self) -> Result<(), JournalError> {
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(JournalError::io("sync", &self.segment, e));
        }
        self.synced_seq = self.last_seq();
        Ok(())
    }

    /// Closes the current segment, synced, and continues the chain in a new
    /// one starting at `first_seq`.
    fn rotate(&mut self, first_seq: u64) -> Result<(), JournalError> {
        self.sync_file()?;
        let (file, segment) = create_segment(&self.dir, self.stream, first_seq, &self.last_hash)?;
        // The old segment's lock is released only now, after the new one is
        // in place and locked: the stream never looks dead while live.
        self.file = file;
        self.segment = segment;
        self.segment_len = HEADER_LEN as u64;
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.dirty() && !self.poisoned {
            let _ = self.file.sync_data();
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

/// An `fdatasync` of the journal's current segment that runs without the
/// journal, from [`Journal::begin_sync`].
#[must_use = "run it and pass the result to Journal::finish_sync"]
#[derive(Debug)]
pub struct SyncJob {
    file: File,
    segment: PathBuf,
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
