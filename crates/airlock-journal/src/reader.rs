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
    pub hash: Hash,
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
    current: Option<Cursor>,
}

struct Cursor {
    stream: Uuid,
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
            current: None,
        })
    }

    /// The streams this reader will read, in order.
    pub fn streams(&self) -> Vec<Uuid> {
        self.streams.iter().map(|(s, _)| *s).collect()
    }

    /// Skips `stream`'s records up to and including `seq` (what the store
    /// already has). Whole segments before it are not opened at all.
    pub fn resume_after(&mut self, stream: Uuid, seq: u64) -> &mut Self {
        self.resume.insert(stream, seq);
        self
    }

    fn start(&mut self) -> bool {
        let Some((stream, segments)) = self.streams.pop_front() else {
            return false;
        };
        let after = self.resume.get(&stream).copied().unwrap_or(0);
        // A segment lies wholly at or before `after` if its successor starts
        // at or before `after + 1`.
        let skip = segments
            .windows(2)
            .take_while(|w| w[1].first_seq <= after.saturating_add(1))
            .count();
        self.current = Some(Cursor {
            stream,
            segments: segments.into_iter().skip(skip).collect(),
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
                            hash: r.hash,
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
