//! Checking every stream's chain, and naming the first broken link.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::JournalError;
use crate::format::{Hash, decode_anchor, genesis_hash, record_hash};
use crate::fsutil::prune_lock;
use crate::recover::TornTail;
use crate::segment::{OpenError, SegmentFile, SegmentReader, Step, list};

/// Every stream in a directory checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub streams: Vec<StreamSummary>,
}

impl VerifySummary {
    /// Records checked, over all streams.
    pub fn records(&self) -> u64 {
        self.streams.iter().map(|s| s.records).sum()
    }
}

/// One stream checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream: Uuid,
    /// The seq of the anchor the chain starts from (after pruning), if any.
    pub anchor: Option<u64>,
    pub segments: usize,
    /// Records checked (the segments' records, including any that an
    /// interrupted prune left before the anchor).
    pub records: u64,
    /// The end of the chain, to compare with the store's copy.
    pub last_seq: u64,
    pub last_hash: Hash,
    /// An incomplete last record that no recovery has moved aside yet: a
    /// crash, or a write in progress. Not a broken link.
    pub torn_tail: Option<TornTail>,
    /// Torn tails earlier recoveries moved aside, for an auditor to look at.
    pub set_aside: Vec<PathBuf>,
}

/// Why [`verify`] failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Broken(Broken),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The first broken link of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub stream: Uuid,
    /// The segment (or anchor) file where the chain breaks.
    pub file: PathBuf,
    /// Byte offset in `file` of the record (0: its header).
    pub offset: u64,
    /// The seq the chain expected there.
    pub seq: u64,
    pub reason: Reason,
}

/// What is wrong at a [`Broken`] link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The segment header is short, invalid, or disagrees with the name.
    BadHeader(&'static str),
    /// The anchor file is invalid, or the chain does not pass through it.
    BadAnchor(&'static str),
    /// The record's bytes match neither their CRC nor their stored hash
    /// (edited, or damaged on disk).
    Edited,
    /// The record's `prev` is not the hash of the record before it: that
    /// record was rewritten with a fresh hash, or this link was.
    ChainBroken,
    /// A later seq is where `expected` should be, and `expected` does not
    /// come later: records (or whole segments) were deleted.
    Missing { expected: u64, found: u64 },
    /// Seqs out of order: `expected` comes later, or an earlier seq is here.
    Reordered { expected: u64, found: u64 },
    /// The record before, again.
    Duplicate { seq: u64 },
    /// A segment that is not its stream's last ends inside a record.
    Truncated,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {}: {} at byte {}, seq {}: {}",
            self.stream,
            self.file.display(),
            self.offset,
            self.seq,
            self.reason
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BadHeader(why) => write!(f, "bad segment header: {why}"),
            Reason::BadAnchor(why) => write!(f, "bad anchor: {why}"),
            Reason::Edited => {
                f.write_str("record edited: its bytes do not match their checksum or hash")
            }
            Reason::ChainBroken => {
                f.write_str("chain broken: prev is not the hash of the record before")
            }
            Reason::Missing { expected, found } => {
                write!(f, "records missing: expected seq {expected}, found {found}")
            }
            Reason::Reordered { expected, found } => write!(
                f,
                "records reordered: expected seq {expected}, found {found}"
            ),
            Reason::Duplicate { seq } => write!(f, "record {seq} duplicated"),
            Reason::Truncated => f.write_str("segment truncated inside a record"),
        }
    }
}

/// Checks every stream in `dir`: headers, CRCs, seq continuity, stored
/// hashes against recomputed ones, and each `prev` against the hash before
/// it, across segments, from the genesis hash or the stream's anchor.
/// Changes nothing. Returns the first broken link found.
pub fn verify(dir: &Path) -> Result<VerifySummary, VerifyError> {
    // Shared with readers, exclusive with prune: no half-pruned stream.
    let _lock = prune_lock(dir, false, false).map_err(|e| JournalError::io("lock", dir, e))?;
    let mut summary = VerifySummary::default();
    for (stream, files) in list(dir)? {
        let anchor = match &files.anchor {
            Some(path) => Some(read_anchor(stream, path)?),
            None => None,
        };
        let mut chain = Chain::new(stream, anchor, files.anchor.clone());
        let mut torn_tail = None;
        for (i, segment) in files.segments.iter().enumerate() {
            torn_tail = chain.check_segment(segment, i + 1 == files.segments.len())?;
        }
        chain.finish()?;
        summary.streams.push(StreamSummary {
            stream,
            anchor: anchor.map(|(seq, _)| seq),
            segments: files.segments.len(),
            records: chain.records,
            last_seq: chain.expected - 1,
            last_hash: chain.prev,
            torn_tail,
            set_aside: files.set_aside,
        });
    }
    Ok(summary)
}

pub(crate) fn read_anchor(stream: Uuid, path: &Path) -> Result<(u64, Hash), VerifyError> {
    let text = fs::read(path).map_err(|e| JournalError::io("read", path, e))?;
    let text = String::from_utf8(text).map_err(|_| "not UTF-8");
    text.and_then(|t| decode_anchor(&t, stream)).map_err(|why| {
        VerifyError::Broken(Broken {
            stream,
            file: path.to_path_buf(),
            offset: 0,
            seq: 0,
            reason: Reason::BadAnchor(why),
        })
    })
}

/// A stream's chain, checked segment by segment.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    stream: Uuid,
    anchor: Option<(u64, Hash)>,
    anchor_file: Option<PathBuf>,
    /// The next seq, and the hash it must chain from.
    pub expected: u64,
    pub prev: Hash,
    /// An anchor not reached yet: an interrupted prune left segments from
    /// before it, which are checked from their own header up to it.
    pending: Option<(u64, Hash)>,
    started: bool,
    pub records: u64,
}

impl Chain {
    pub fn new(stream: Uuid, anchor: Option<(u64, Hash)>, anchor_file: Option<PathBuf>) -> Chain {
        let (seq, prev) = anchor.unwrap_or((0, genesis_hash(stream)));
        Chain {
            stream,
            anchor,
            anchor_file,
            expected: seq + 1,
            prev,
            pending: None,
            started: false,
            records: 0,
        }
    }

    fn broken(&self, file: &Path, offset: u64, reason: Reason) -> VerifyError {
        VerifyError::Broken(Broken {
            stream: self.stream,
            file: file.to_path_buf(),
            offset,
            seq: self.expected,
            reason,
        })
    }

    /// Opens `segment` and checks that its header continues the chain.
    pub fn check_header(&mut self, segment: &SegmentFile) -> Result<SegmentReader, VerifyError> {
        let reader = match SegmentReader::open(segment, self.stream) {
            Ok(r) => r,
            Err(OpenError::Io(e)) => return Err(JournalError::io("read", &segment.path, e).into()),
            Err(OpenError::Header(why)) => {
                return Err(self.broken(&segment.path, 0, Reason::BadHeader(why)));
            }
        };
        let header = reader.header();
        if !self.started
            && let Some((seq, hash)) = self.anchor
            && header.first_seq <= seq
        {
            self.expected = header.first_seq;
            self.prev = header.prev;
            self.pending = Some((seq, hash));
        }
        self.started = true;
        if header.first_seq != self.expected {
            let (expected, found) = (self.expected, header.first_seq);
            let reason = if found > expected {
                Reason::Missing { expected, found }
            } else {
                Reason::Reordered { expected, found }
            };
            return Err(self.broken(&segment.path, 0, reason));
        }
        if header.prev != self.prev {
            return Err(self.broken(&segment.path, 0, Reason::ChainBroken));
        }
        Ok(reader)
    }

    /// Checks one segment's records. In the stream's last segment
    /// (`last`) an incomplete final record is a torn tail, not a break.
    pub fn check_segment(
        &mut self,
        segment: &SegmentFile,
        last: bool,
    ) -> Result<Option<TornTail>, VerifyError> {
        let mut reader = self.check_header(segment)?;
        let path = &segment.path;
        let io = |e| VerifyError::from(JournalError::io("read", path, e));
        loop {
            let step = reader.next_step().map_err(io)?;
            let (offset, short) = match step {
                Step::End => return Ok(None),
                Step::Short { offset } => (offset, true),
                Step::Bad { offset } => (offset, false),
                Step::Record(r) => {
                    let expected = self.expected;
                    if r.seq != expected {
                        let found = r.seq;
                        let reason = if found > expected {
                            if reader.seq_comes_later(expected).map_err(io)? {
                                Reason::Reordered { expected, found }
                            } else {
                                Reason::Missing { expected, found }
                            }
                        } else if found + 1 == expected && r.hash == self.prev {
                            Reason::Duplicate { seq: found }
                        } else {
                            Reason::Reordered { expected, found }
                        };
                        return Err(self.broken(path, r.offset, reason));
                    }
                    if record_hash(&r.prev, r.seq, &r.payload) != r.hash {
                        return Err(self.broken(path, r.offset, Reason::Edited));
                    }
                    if r.prev != self.prev {
                        return Err(self.broken(path, r.offset, Reason::ChainBroken));
                    }
                    if let Some((seq, hash)) = self.pending
                        && seq == r.seq
                    {
                        if hash != r.hash {
                            let why = "the record at its seq has another hash";
                            return Err(self.broken(
                                self.anchor_path(path),
                                0,
                                Reason::BadAnchor(why),
                            ));
                        }
                        self.pending = None;
                    }
                    self.prev = r.hash;
                    self.expected += 1;
                    self.records += 1;
                    continue;
                }
            };
            // Bad bytes followed by a good record are damage wherever they are.
            if reader
                .record_follows(offset, self.expected - 1)
                .map_err(io)?
            {
                return Err(self.broken(path, offset, Reason::Edited));
            }
            if last {
                return Ok(Some(TornTail {
                    segment: path.clone(),
                    offset,
                    bytes: reader.file_len() - offset,
                    set_aside: None,
                }));
            }
            let reason = if short {
                Reason::Truncated
            } else {
                Reason::Edited
            };
            return Err(self.broken(path, offset, reason));
        }
    }

    /// After the last segment: an anchor the chain never reached.
    pub fn finish(&self) -> Result<(), VerifyError> {
        match (self.pending, &self.anchor_file) {
            (Some(_), Some(file)) => Err(self.broken(
                file,
                0,
                Reason::BadAnchor("the chain ends before the anchor's seq"),
            )),
            _ => Ok(()),
        }
    }

    fn anchor_path<'a>(&'a self, fallback: &'a Path) -> &'a Path {
        self.anchor_file.as_deref().unwrap_or(fallback)
    }
}
