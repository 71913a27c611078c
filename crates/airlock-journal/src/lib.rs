//! airlock's local audit journal: every recorded event is appended here
//! (the `write(2)` has returned) before the statement it describes goes
//! upstream, and a shipper copies it to the store later.
//!
//! Design, and why:
//!
//! - **One stream per process.** [`Journal::open`] picks a UUID v7 stream
//!   id; segment files are `<stream>-<first seq, 20 digits>.seg`. Processes
//!   sharing a directory never write to the same file, so there is no
//!   cross-process ordering to get wrong, and a crash tears one stream only.
//! - **Hash chain.** Each record stores `seq`, `prev` (the previous record's
//!   hash) and `hash = SHA-256(prev || seq || payload)`. The first record's
//!   `prev` is [`format::genesis_hash`] of the stream id, so records cannot
//!   be moved to another stream. Any edit, deletion or reordering breaks a
//!   link that [`verify`] names; the same hashes let the store be checked
//!   against the journal.
//! - **Framing for torn writes.** Each record is `u32 length, u32 CRC-32C,
//!   body` and is written with one `write_all` on an `O_APPEND` file. The CRC
//!   tells a torn or garbled tail (a crash) from a good record cheaply; the
//!   SHA-256 is what `verify` trusts. See [`format`](mod@format) for the bytes.
//! - **Durability is the caller's choice.** [`Fsync::Always`] syncs each
//!   record before `append` returns. [`Fsync::Interval`] leaves that to the
//!   caller's timer ([`Journal::sync_if_due`], or [`Journal::begin_sync`] to
//!   sync outside the caller's lock); the interval is measured only with the
//!   `now` the caller passes, so the gateway's one timer drives it and tests
//!   pass their own. A killed process loses nothing either way (the page
//!   cache survives it). A power loss with an interval can lose the last
//!   interval's records, or leave a hole before pages that did reach the
//!   disk, which `verify` then reports as damage.
//! - **Only the last segment can be torn.** Rotation syncs the old segment
//!   and creates the new one under a temporary name (header written, synced
//!   and locked) before renaming it into place. So recovery at open scans
//!   only each stream's last segment, keeping start-up time independent of
//!   the journal's size, and a short non-final segment is tampering, not a
//!   crash.
//! - **Recovery keeps everything.** A torn tail is copied to
//!   `<segment>.torn` before the segment is cut back to its last complete
//!   record, and reported in [`Recovery`]. A bad record *followed by good
//!   ones* is damage, not a torn write: it is left in place for `verify`.
//! - **Live streams are off limits.** A journal holds an exclusive `flock`
//!   on its current segment; recovery and [`prune`] skip segments they
//!   cannot lock, so a process opening the directory never cuts another
//!   process's record in half.
//! - **Retention keeps the chain checkable.** [`prune`] deletes whole
//!   segments and writes `<stream>.anchor` with the seq and hash the first
//!   remaining record chains from; `verify` starts there. Segments deleted
//!   without a matching anchor show up as missing records. An anchor is only
//!   as trustworthy as the directory: the store's copy of the event at the
//!   anchor's seq is what corroborates it.
//!
//! What it does not do: it knows nothing of events' contents (payloads are
//! opaque bytes, canonical JSON by convention), runs no threads and no timer,
//! and does not ship; [`Reader`] is the shipper's input.
#![forbid(unsafe_code)]

mod crc;
pub mod format;
mod fsutil;
mod journal;
mod prune;
mod reader;
mod recover;
mod segment;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use format::{Hash, MAX_PAYLOAD};
pub use journal::{Appended, Batch, BatchError, Journal, Lost, MAX_PENDING, Push, SyncJob, Synced};
pub use prune::{Pruned, prune};
pub use reader::{Position, Reader, Record};
pub use recover::{Damage, Recovery, StreamState, TornTail};
pub use verify::{Broken, Reason, StreamSummary, VerifyError, VerifySummary, verify};

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` before [`Journal::append`] returns: an acknowledged event
    /// survives a power loss.
    Always,
    /// The caller syncs at most this long after a write
    /// ([`Journal::sync_if_due`]); a power loss can lose up to one interval.
    Interval(Duration),
}

/// How a [`Journal`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub fsync: Fsync,
    /// A segment is rotated when the next record would take it past this
    /// size. A record bigger than this still goes in, alone.
    pub segment_bytes: u64,
}

impl Options {
    /// 64 MiB: big enough that rotation (which syncs) is rare, small enough
    /// that recovery's scan of a last segment is quick.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
}

impl Default for Options {
    /// Durability first: the caller opts into an interval.
    fn default() -> Self {
        Options {
            fsync: Fsync::Always,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("journal: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal: payload of {len} bytes is over the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
    /// A write could not be undone or a sync failed, so the file's state is
    /// unknown; the gateway must refuse statements until it opens a new
    /// journal (a new stream).
    #[error("journal: an earlier write or sync failed; this journal takes no more events")]
    Poisoned,
    /// The reader met bytes it cannot read as the next record.
    #[error("journal: {} is corrupt at byte {offset}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// [`prune`] refuses to delete segments whose chain does not verify.
    #[error("journal: refusing to prune: {0}")]
    Broken(Box<Broken>),
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
