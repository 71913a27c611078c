//! The shipper's input: every stream's records, in seq order.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use uuid::Uuid;

use crate::JournalError;
use crate::format::Hash;
use crate::segment::{OpenError, SegmentFile, SegmentReader, Step, list};

/// One event, keyed by (`stream`, `seq`): copying it twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Uuid,
    pub seq: u64,
    /// The hash this record chains from: the record before's `hash`, the
    /// stream's genesis hash, or the anchor's hash after a prune. The
    /// shipper checks it against what the store holds before sending.
    pub prev: Hash,
    pub hash: Hash,
    /// Where it ends: [`Reader::resume_at`] starts a later reader here.
    pub end: Position,
    pub payload: Vec<u8>,
}

/// Iterates the records of every stream in a directory, stream by stream
/// (by id), each in seq order across its segments, up to where each
/// segment ended when it was reached. To follow live streams, make a new
/// reader later and [`resume_after`](Reader::resume_after) what was shipped.
///
/// It checks framing, CRCs, seq continuity and `prev` links (not hashes:
/// that is [`verify`](crate::verify)'s work). An error ends that stream's
/// records for this reader; iteration goes on with the next stream. An
/// incomplete last record of a stream is not an error: it is still being
/// written, or is a torn tail that the next [`Journal::open`](crate::Journal::open)
/// moves aside.
pub struct Reader {
    streams: VecDeque<(Uuid, Vec<SegmentFile>)>,
    resume: HashMap<Uuid, u64>,
    /// Where a stream's reading may start, by byte, instead of by scanning.
    hints: HashMap<Uuid, (Position, Hash)>,
    current: Option<Cursor>,
}

/// Where a record ends in its stream's segments: a later reader of the same
/// stream can start there without scanning the records before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The record's seq.
    pub seq: u64,
    /// The first seq of its segment (which names the segment).
    pub segment: u64,
    /// The byte offset just past the record.
    pub end: u64,
}

struct Cursor {
    stream: Uuid,
    /// Start the segment of this first seq at this byte, chaining from the
    /// hash.
    hint: Option<(Position, Hash)>,
    segments: VecDeque<SegmentFile>,
    reader: Option<SegmentReader>,
    /// The next seq and the hash it must chain from, once a segment is open.
    expected: Option<(u64, Hash)>,
    /// Records up to this seq are skipped.
    after: u64,
}

impl Reader {
    /// Lists `dir`'s streams and segments now.
    pub fn open(dir: &Path) -> Result<Reader, JournalError> {
        let streams = list(dir)?
            .into_iter()
            .filter(|(_, files)| !files.segments.is_empty())
            .map(|(stream, files)| (stream, files.segments))
            .collect();
        Ok(Reader {
            streams,
            resume: HashMap::new(),
            hints: HashMap::new(),
            current: None,
        })
    }

    /// The streams this reader will read, in order.
    pub fn streams(&self) -> Vec<Uuid> {
        self.streams.iter().map(|(s, _)| *s).collect()
    }

    /// Keeps only the streams `keep` accepts; call it before iterating.
    /// The shipper leaves out streams it knows are shipped (so their last
    /// segments are not scanned again), and a check of one stream reads
    /// that stream only.
    pub fn retain(&mut self, mut keep: impl FnMut(Uuid) -> bool) -> &mut Self {
        self.streams.retain(|(s, _)| keep(*s));
        self
    }

    /// Skips `stream`'s records up to and including `seq` (what the store
    /// already has). Whole segments before it are not opened at all.
    pub fn resume_after(&mut self, stream: Uuid, seq: u64) -> &mut Self {
        self.resume.insert(stream, seq);
        self
    }

    /// Like [`resume_after`](Reader::resume_after)`(stream, at.seq)`, but
    /// starts reading at `at` (a [`Record::end`] an earlier reader returned,
    /// whose hash was `hash`) instead of scanning up to it. A record there
    /// that does not continue `at.seq` with `hash` is reported as corrupt.
    pub fn resume_at(&mut self, stream: Uuid, at: Position, hash: Hash) -> &mut Self {
        self.resume.insert(stream, at.seq);
        self.hints.insert(stream, (at, hash));
        self
    }

    fn start(&mut self) -> bool {
        let Some((stream, segments)) = self.streams.pop_front() else {
            return false;
        };
        let after = self.resume.get(&stream).copied().unwrap_or(0);
        let hint = self.hints.get(&stream).copied();
        // A segment lies wholly at or before `after` if its successor starts
        // at or before `after + 1`.
        let skip = segments
            .windows(2)
            .take_while(|w| w[1].first_seq <= after.saturating_add(1))
            .count();
        let segments: VecDeque<SegmentFile> = segments.into_iter().skip(skip).collect();
        // The hint holds only if its segment is still where reading starts.
        let hint =
            hint.filter(|(at, _)| segments.front().is_some_and(|s| s.first_seq == at.segment));
        self.current = Some(Cursor {
            stream,
            hint,
            segments,
            reader: None,
            expected: None,
            after,
        });
        true
    }
}

impl Iterator for Reader {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(cur) = &mut self.current else {
                if !self.start() {
                    return None;
                }
                continue;
            };
            match cur.step() {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => self.current = None,
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Cursor {
    /// The stream's next record, `None` at its end.
    fn step(&mut self) -> Result<Option<Record>, JournalError> {
        loop {
            if self.reader.is_none() {
                let Some(segment) = self.segments.front() else {
                    return Ok(None);
                };
                let reader = match SegmentReader::open(segment, self.stream) {
                    Ok(r) => r,
                    Err(OpenError::Io(e)) => {
                        return Err(JournalError::io("read", &segment.path, e));
                    }
                    Err(OpenError::Header(why)) => {
                        return Err(corrupt(segment, 0, why.to_string()));
                    }
                };
                let mut reader = reader;
                if let Some((at, hash)) = self.hint.take() {
                    reader
                        .skip_to(at.end)
                        .map_err(|e| JournalError::io("read", &segment.path, e))?;
                    self.expected = Some((at.seq + 1, hash));
                    self.reader = Some(reader);
                    continue;
                }
                let header = reader.header();
                if let Some((seq, prev)) = self.expected
                    && (header.first_seq != seq || header.prev != prev)
                {
                    return Err(corrupt(
                        segment,
                        0,
                        format!("does not continue the stream at seq {seq}"),
                    ));
                }
                self.expected = Some((header.first_seq, header.prev));
                self.reader = Some(reader);
            }
            let (segment, reader) = (
                &self.segments[0],
                self.reader.as_mut().expect("opened above"),
            );
            let (seq, prev) = self.expected.expect("set with the reader");
            let step = reader
                .next_step()
                .map_err(|e| JournalError::io("read", &segment.path, e))?;
            match step {
                Step::Record(r) => {
                    if r.seq != seq || r.prev != prev {
                        let what = if r.seq != seq {
                            format!("expected seq {seq}, found {}", r.seq)
                        } else {
                            format!("seq {seq} does not chain from the record before")
                        };
                        return Err(corrupt(segment, r.offset, what));
                    }
                    self.expected = Some((seq + 1, r.hash));
                    if r.seq > self.after {
                        return Ok(Some(Record {
                            stream: self.stream,
                            seq: r.seq,
                            prev: r.prev,
                            hash: r.hash,
                            end: Position {
                                seq: r.seq,
                                segment: segment.first_seq,
                                end: reader.offset(),
                            },
                            payload: r.payload,
                        }));
                    }
                }
                Step::End => {
                    self.reader = None;
                    self.segments.pop_front();
                }
                Step::Short { offset } | Step::Bad { offset } => {
                    let last = self.segments.len() == 1;
                    let follows = reader
                        .record_follows(offset, seq - 1)
                        .map_err(|e| JournalError::io("read", &segment.path, e))?;
                    if last && !follows {
                        return Ok(None); // the tail: in progress, or torn
                    }
                    return Err(corrupt(
                        segment,
                        offset,
                        format!("no valid record at seq {seq}"),
                    ));
                }
            }
        }
    }
}

fn corrupt(segment: &SegmentFile, offset: u64, detail: String) -> JournalError {
    JournalError::Corrupt {
        path: segment.path.clone(),
        offset,
        detail,
    }
}
