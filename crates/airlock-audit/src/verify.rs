//! `airlock audit verify`: checks the journal, the store's copy, and one
//! against the other, and names the first broken link.
//!
//! Design, and why:
//!
//! - **Each copy checks itself.** The journal's own [`airlock_journal::verify`]
//!   runs first. Then every stream of the store is walked as a chain from
//!   its anchor (or the stream's genesis hash): consecutive seqs, each
//!   `prev` equal to the hash before, each `hash` equal to
//!   `SHA-256(prev || seq || payload)` recomputed, ending exactly at the
//!   stream's high-water mark. So an edit, a deletion, a swap or a cut tail
//!   in the store is found even when the journal is gone (another host's
//!   stream, or pruned).
//! - **And each corroborates the other.** While a store stream is walked,
//!   the journal's records of the same stream are read alongside it: every
//!   event the store holds that the journal still has must carry the same
//!   hash (an event rewritten *with* a freshly computed hash passes the
//!   store's own chain check only up to the next link; this names it where
//!   it happened), and the journal's record at the store's anchor must
//!   have the anchor's hash (a forged anchor).
//! - **Bounded memory.** The store is paged ([`PAGE`] events at a time, by
//!   seq) and the journal read in batches, so a large store is checked in
//!   constant memory.
//! - **A name, not a boolean.** The result is the first broken link: which
//!   copy, which stream, which seq, and what is wrong there (edited,
//!   deleted, reordered, truncated tail, forged anchor...).

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;

use airlock_journal::format::{genesis_hash, record_hash};
use airlock_journal::{Hash, JournalError, Reader, Record, VerifySummary};
use airlock_store::{Store, StoreError};
use uuid::Uuid;

use crate::ship::{blocking, open_stream, read_batch};

/// Store events read per query.
pub const PAGE: u32 = 1000;
/// Journal records read per batch.
const JOURNAL_BATCH: usize = 1000;

/// Everything checked, when nothing is broken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The journal's own check.
    pub journal: VerifySummary,
    /// Every stream of the store (empty without a store).
    pub store: Vec<StoreStream>,
    /// Journal streams with records the store does not have yet, and how
    /// many (not shipped yet: not a broken link).
    pub unshipped: Vec<(Uuid, u64)>,
}

/// One stream of the store, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStream {
    pub stream: Uuid,
    /// The anchor the chain starts from (after retention).
    pub anchor: Option<u64>,
    /// Events checked.
    pub events: u64,
    /// The last event: the high-water mark (unless a shipper added events
    /// while verify ran).
    pub last_seq: u64,
    /// Of the events, those compared with the journal's copy.
    pub cross_checked: u64,
}

/// Why [`verify`] did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A broken link: the evidence was altered (or damaged).
    #[error("{0}")]
    Broken(Broken),
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The first broken link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// In the journal's files.
    Journal(airlock_journal::Broken),
    /// In the store's copy (or between it and the journal).
    Store(StoreBroken),
}

/// A broken link in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBroken {
    pub stream: Uuid,
    /// Where the chain breaks.
    pub seq: u64,
    pub problem: Problem,
}

/// What is wrong at a [`StoreBroken`] link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The event's payload or hash was changed.
    Edited(Edit),
    /// Events `expected..found` are not in the store: deleted.
    Missing { expected: u64, found: u64 },
    /// The event that belongs at this seq is stored at `found_at`: events
    /// were swapped or reordered.
    Reordered { found_at: u64 },
    /// `prev` is not the hash of the event before: that one was rewritten
    /// with a freshly computed hash, or this link was.
    ChainBroken,
    /// The store's events end at `last` but were shipped up to
    /// `high_water`: the newest events were deleted. `journal_holds`: the
    /// journal still has the first of them.
    TruncatedTail {
        last: u64,
        high_water: u64,
        journal_holds: bool,
    },
    /// The stream's high-water mark is gone, so a cut tail could not be
    /// told.
    NoHighWater,
    /// Events past the high-water mark: not put there by a shipper.
    PastHighWater { high_water: u64 },
    /// The last event is not the one the high-water mark recorded.
    HighWaterDiffers,
    /// The anchor retention left does not fit the chain.
    ForgedAnchor(AnchorProblem),
}

/// How an event was found edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Its hash is not `SHA-256(prev || seq || payload)`.
    HashMismatch,
    /// Its hash is consistent but differs from the journal's record.
    DiffersFromJournal,
}

/// What is wrong with an anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorProblem {
    /// The journal's record at the anchor's seq has another hash.
    DiffersFromJournal,
    /// The first event after the anchor does not chain from its hash.
    DoesNotChain,
    /// The store still holds events at or before it.
    EventsBeforeIt,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Journal(b) => write!(f, "journal: {b}"),
            Broken::Store(b) => write!(f, "{b}"),
        }
    }
}

impl fmt::Display for StoreBroken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store: stream {}, seq {}: {}",
            self.stream, self.seq, self.problem
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Edited(Edit::HashMismatch) => {
                f.write_str("event edited: its hash does not match its prev, seq and payload")
            }
            Problem::Edited(Edit::DiffersFromJournal) => f.write_str(
                "event edited: its hash differs from the journal's record of the same seq",
            ),
            Problem::Missing { expected, found } if *found == expected + 1 => write!(
                f,
                "event deleted: seq {expected} is missing, the next stored event is seq {found}"
            ),
            Problem::Missing { expected, found } => write!(
                f,
                "events deleted: seqs {expected} to {} are missing, the next stored event is \
                 seq {found}",
                found - 1
            ),
            Problem::Reordered { found_at } => write!(
                f,
                "events reordered or swapped: the event that belongs here is stored at seq \
                 {found_at}"
            ),
            Problem::ChainBroken => f.write_str(
                "chain broken: prev is not the hash of the event before (that event was \
                 rewritten with a fresh hash, or this link was)",
            ),
            Problem::TruncatedTail {
                last,
                high_water,
                journal_holds,
            } => {
                write!(
                    f,
                    "tail truncated: the stored events end at seq {last} but were shipped up \
                     to seq {high_water}"
                )?;
                if *journal_holds {
                    f.write_str(" (the journal still holds them)")?;
                }
                Ok(())
            }
            Problem::NoHighWater => f.write_str(
                "the stream's high-water mark was deleted: a truncated tail cannot be told",
            ),
            Problem::PastHighWater { high_water } => write!(
                f,
                "events past the high-water mark (seq {high_water}): not shipped from a journal"
            ),
            Problem::HighWaterDiffers => {
                f.write_str("the last event differs from the one the high-water mark recorded")
            }
            Problem::ForgedAnchor(AnchorProblem::DiffersFromJournal) => f.write_str(
                "forged anchor: the journal's record at the anchor's seq has another hash",
            ),
            Problem::ForgedAnchor(AnchorProblem::DoesNotChain) => {
                f.write_str("forged anchor: the first event after it does not chain from its hash")
            }
            Problem::ForgedAnchor(AnchorProblem::EventsBeforeIt) => {
                f.write_str("forged anchor: the store still holds events at or before it")
            }
        }
    }
}

/// Checks `journal_dir`, then (with a store) every stream of the store and
/// the store against the journal. Returns the first broken link as
/// [`VerifyError::Broken`]; changes nothing.
pub async fn verify(journal_dir: &Path, store: Option<&Store>) -> Result<Report, VerifyError> {
    let dir = journal_dir.to_path_buf();
    let journal = blocking(move || airlock_journal::verify(&dir))
        .await
        .map_err(|e| match e {
            airlock_journal::VerifyError::Broken(b) => VerifyError::Broken(Broken::Journal(b)),
            airlock_journal::VerifyError::Journal(e) => VerifyError::Journal(e),
        })?;
    let mut report = Report {
        journal,
        ..Report::default()
    };
    let Some(store) = store else {
        return Ok(report);
    };
    for stream in store.streams().await? {
        let anchor = store.anchor(stream).await?;
        let checked = match check_stream(journal_dir, store, stream, anchor).await {
            // Retention pruned the stream while it was walked: again, once.
            Err(VerifyError::Broken(_)) if store.anchor(stream).await? != anchor => {
                let anchor = store.anchor(stream).await?;
                check_stream(journal_dir, store, stream, anchor).await?
            }
            checked => checked?,
        };
        report.store.push(checked);
    }
    for s in &report.journal.streams {
        let shipped = store.high_water(s.stream).await?.map_or(0, |(seq, _)| seq);
        if s.last_seq > shipped {
            report.unshipped.push((s.stream, s.last_seq - shipped));
        }
    }
    Ok(report)
}

/// Walks one store stream from `anchor`, with the journal's copy alongside.
async fn check_stream(
    dir: &Path,
    store: &Store,
    stream: Uuid,
    anchor: Option<(u64, Hash)>,
) -> Result<StoreStream, VerifyError> {
    let broken = |seq, problem| {
        VerifyError::Broken(Broken::Store(StoreBroken {
            stream,
            seq,
            problem,
        }))
    };
    let mark = store.high_water(stream).await?;
    let mut journal = journal_records(dir, stream, anchor.map_or(0, |(seq, _)| seq)).await?;
    if let Some((seq, hash)) = anchor
        && let Some(r) = journal.peek().await?
        && r.seq == seq
        && r.hash != hash
    {
        return Err(broken(
            seq,
            Problem::ForgedAnchor(AnchorProblem::DiffersFromJournal),
        ));
    }
    let (mut expected, mut prev) = match anchor {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, genesis_hash(stream)),
    };
    let mut summary = StoreStream {
        stream,
        anchor: anchor.map(|(seq, _)| seq),
        events: 0,
        last_seq: expected - 1,
        cross_checked: 0,
    };
    let mut after = 0;
    loop {
        let page = store.events(stream, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if e.seq < expected {
                // Seqs are unique and in order: only before an anchor.
                return Err(broken(
                    e.seq,
                    Problem::ForgedAnchor(AnchorProblem::EventsBeforeIt),
                ));
            }
            if e.seq > expected {
                return Err(broken(
                    expected,
                    Problem::Missing {
                        expected,
                        found: e.seq,
                    },
                ));
            }
            let consistent = record_hash(&e.prev, e.seq, &e.payload) == e.hash;
            if !consistent || e.prev != prev {
                // The event that belongs here, stored elsewhere on the page?
                if let Some(k) = page
                    .iter()
                    .find(|k| k.seq != e.seq && record_hash(&prev, e.seq, &k.payload) == k.hash)
                {
                    return Err(broken(e.seq, Problem::Reordered { found_at: k.seq }));
                }
                let problem = if !consistent {
                    Problem::Edited(Edit::HashMismatch)
                } else if anchor.is_some_and(|(seq, _)| seq + 1 == e.seq) {
                    Problem::ForgedAnchor(AnchorProblem::DoesNotChain)
                } else {
                    Problem::ChainBroken
                };
                return Err(broken(e.seq, problem));
            }
            if let Some(r) = journal.seek(e.seq).await? {
                if r.hash != e.hash {
                    return Err(broken(e.seq, Problem::Edited(Edit::DiffersFromJournal)));
                }
                summary.cross_checked += 1;
            }
            prev = e.hash;
            expected = e.seq + 1;
            summary.events += 1;
        }
    }
    let last = expected - 1;
    summary.last_seq = last;
    // A shipper may be adding events while this runs: the mark read before
    // paging says how far the events must go, the one read after how far
    // they may.
    let end_mark = store.high_water(stream).await?;
    if let Some((high_water, _)) = mark
        && last < high_water
    {
        let journal_holds = journal.seek(last + 1).await?.is_some();
        return Err(broken(
            last + 1,
            Problem::TruncatedTail {
                last,
                high_water,
                journal_holds,
            },
        ));
    }
    let Some((high_water, hash)) = end_mark else {
        if summary.events > 0 || anchor.is_some() {
            return Err(broken(last, Problem::NoHighWater));
        }
        return Ok(summary);
    };
    if last > high_water {
        return Err(broken(
            high_water + 1,
            Problem::PastHighWater { high_water },
        ));
    }
    let recorded = [Some((high_water, hash)), mark];
    if let Some((_, hash)) = recorded.into_iter().flatten().find(|(seq, _)| *seq == last)
        && hash != prev
    {
        return Err(broken(last, Problem::HighWaterDiffers));
    }
    Ok(summary)
}

/// `stream`'s journal records from seq `from` on (those it still holds).
async fn journal_records(dir: &Path, stream: Uuid, from: u64) -> Result<Buffered, VerifyError> {
    let reader = open_stream(dir, stream, from.saturating_sub(1), None).await?;
    Ok(Buffered::new(reader))
}

/// A journal reader's records, read ahead in batches on the blocking pool.
struct Buffered {
    reader: Option<Reader>,
    buf: VecDeque<Record>,
    error: Option<JournalError>,
}

impl Buffered {
    fn new(reader: Reader) -> Buffered {
        Buffered {
            reader: Some(reader),
            buf: VecDeque::new(),
            error: None,
        }
    }

    /// The next record, `None` at the end. A read error comes once, after
    /// the records before it.
    async fn peek(&mut self) -> Result<Option<&Record>, JournalError> {
        if self.buf.is_empty()
            && let Some(reader) = self.reader.take()
        {
            let (reader, batch) = read_batch(reader, JOURNAL_BATCH).await;
            self.buf.extend(batch.records);
            self.error = batch.error;
            if !batch.end && self.error.is_none() {
                self.reader = Some(reader);
            }
        }
        if self.buf.is_empty()
            && let Some(e) = self.error.take()
        {
            return Err(e);
        }
        Ok(self.buf.front())
    }

    /// Skips records before `seq`; takes and returns the one at `seq`, if
    /// the journal holds it.
    async fn seek(&mut self, seq: u64) -> Result<Option<Record>, JournalError> {
        while let Some(r) = self.peek().await? {
            if r.seq >= seq {
                break;
            }
            self.buf.pop_front();
        }
        Ok(match self.peek().await? {
            Some(r) if r.seq == seq => self.buf.pop_front(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_stream_seq_and_problem() {
        let stream = Uuid::nil();
        let b = |seq, problem| {
            Broken::Store(StoreBroken {
                stream,
                seq,
                problem,
            })
            .to_string()
        };
        let deleted = b(
            4,
            Problem::Missing {
                expected: 4,
                found: 5,
            },
        );
        assert_eq!(
            deleted,
            "store: stream 00000000-0000-0000-0000-000000000000, seq 4: event deleted: seq 4 \
             is missing, the next stored event is seq 5"
        );
        assert!(
            b(
                4,
                Problem::Missing {
                    expected: 4,
                    found: 7
                }
            )
            .contains("seqs 4 to 6")
        );
        assert!(b(3, Problem::Reordered { found_at: 8 }).contains("stored at seq 8"));
        let cut = b(
            9,
            Problem::TruncatedTail {
                last: 8,
                high_water: 10,
                journal_holds: true,
            },
        );
        assert!(
            cut.contains("end at seq 8 but were shipped up to seq 10"),
            "{cut}"
        );
        assert!(cut.contains("journal still holds"), "{cut}");
    }
}
