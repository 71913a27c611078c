//! Finding a directory's streams, and reading a segment record by record.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::JournalError;
use crate::format::{
    BODY_FIXED, FRAME_LEN, HEADER_LEN, Header, MAX_BODY, RawRecord, contains_record, crc32c,
    crc32c_update, parse_anchor_name, parse_segment_name, parse_torn_name, u32_at, u64_at,
};

/// One segment file, as named.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub first_seq: u64,
}

/// A stream's files in a directory.
#[derive(Debug, Default)]
pub(crate) struct StreamFiles {
    /// Sorted by `first_seq`.
    pub segments: Vec<SegmentFile>,
    pub anchor: Option<PathBuf>,
    /// Torn tails recovery moved aside.
    pub set_aside: Vec<PathBuf>,
}

/// Every stream with a segment, anchor or set-aside file in `dir`, by id (for
/// UUID v7, roughly by start time). Other files are ignored.
pub(crate) fn list(dir: &Path) -> Result<BTreeMap<Uuid, StreamFiles>, JournalError> {
    let mut streams: BTreeMap<Uuid, StreamFiles> = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| JournalError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some((stream, first_seq)) = parse_segment_name(name) {
            streams
                .entry(stream)
                .or_default()
                .segments
                .push(SegmentFile { path, first_seq });
        } else if let Some(stream) = parse_anchor_name(name) {
            streams.entry(stream).or_default().anchor = Some(path);
        } else if let Some(stream) = parse_torn_name(name) {
            streams.entry(stream).or_default().set_aside.push(path);
        }
    }
    for files in streams.values_mut() {
        files.segments.sort_by_key(|s| s.first_seq);
        files.set_aside.sort();
    }
    Ok(streams)
}

/// Why a segment could not be opened for reading.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(io::Error),
    /// The header is short or invalid, or disagrees with the file name.
    Header(&'static str),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// What comes next in a segment.
#[derive(Debug)]
pub(crate) enum Step {
    Record(RawRecord),
    /// The segment ends cleanly.
    End,
    /// The bytes from `offset` to the end are fewer than the record needs.
    Short {
        offset: u64,
    },
    /// The record at `offset` has an impossible length or a bad CRC.
    Bad {
        offset: u64,
    },
}

/// Reads a segment's records in order, up to its length when opened (a
/// live segment's later records are for the next reader).
pub(crate) struct SegmentReader {
    input: BufReader<File>,
    len: u64,
    offset: u64,
    header: Header,
}

impl SegmentReader {
    /// Opens `segment` and checks its header against its name.
    pub fn open(segment: &SegmentFile, stream: Uuid) -> Result<SegmentReader, OpenError> {
        Self::from_file(File::open(&segment.path)?, segment, stream)
    }

    pub fn from_file(
        file: File,
        segment: &SegmentFile,
        stream: Uuid,
    ) -> Result<SegmentReader, OpenError> {
        let len = file.metadata()?.len();
        let mut input = BufReader::with_capacity(64 << 10, file);
        if len < HEADER_LEN as u64 {
            return Err(OpenError::Header("shorter than a header"));
        }
        let mut bytes = [0; HEADER_LEN];
        input.read_exact(&mut bytes)?;
        let header = Header::decode(&bytes).map_err(OpenError::Header)?;
        if header.stream != stream || header.first_seq != segment.first_seq {
            return Err(OpenError::Header("header does not match the file name"));
        }
        Ok(SegmentReader {
            input,
            len,
            offset: HEADER_LEN as u64,
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's length when opened.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Where the next record starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Continues reading at `offset` (the end of a record an earlier
    /// reader returned), past the header.
    pub fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if offset < HEADER_LEN as u64 || offset > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is outside the segment"),
            ));
        }
        self.input.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    pub fn next_step(&mut self) -> io::Result<Step> {
        let offset = self.offset;
        let remaining = self.len - offset;
        if remaining == 0 {
            return Ok(Step::End);
        }
        if remaining < FRAME_LEN as u64 {
            return Ok(Step::Short { offset });
        }
        let mut frame = [0; FRAME_LEN];
        self.input.read_exact(&mut frame)?;
        let body_len = u32_at(&frame, 0) as usize;
        if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
            return Ok(Step::Bad { offset });
        }
        if remaining < (FRAME_LEN + body_len) as u64 {
            return Ok(Step::Short { offset });
        }
        let mut fixed = [0; BODY_FIXED];
        self.input.read_exact(&mut fixed)?;
        let mut payload = vec![0; body_len - BODY_FIXED];
        self.input.read_exact(&mut payload)?;
        if crc32c_update(crc32c(&fixed), &payload) != u32_at(&frame, 4) {
            return Ok(Step::Bad { offset });
        }
        self.offset += (FRAME_LEN + body_len) as u64;
        Ok(Step::Record(RawRecord {
            offset,
            seq: u64_at(&fixed, 0),
            prev: fixed[8..40].try_into().expect("32 bytes"),
            hash: fixed[40..72].try_into().expect("32 bytes"),
            payload,
        }))
    }

    /// After a [`Step::Short`] or [`Step::Bad`] at `bad`: whether a good
    /// record (seq after `after_seq`) follows anywhere. If one does, the bad
    /// bytes are damage, not a torn tail. Leaves the reader unusable.
    pub fn record_follows(&mut self, bad: u64, after_seq: u64) -> io::Result<bool> {
        let from = bad + 1;
        if from >= self.len {
            return Ok(false);
        }
        self.input.seek(SeekFrom::Start(from))?;
        let mut rest = Vec::new();
        (&mut self.input)
            .take(self.len - from)
            .read_to_end(&mut rest)?;
        Ok(contains_record(&rest, after_seq))
    }

    /// Whether a record with `seq` comes later in this segment (tells a
    /// reordering from a deletion). Leaves the reader unusable.
    pub fn seq_comes_later(&mut self, seq: u64) -> io::Result<bool> {
        loop {
            match self.next_step()? {
                Step::Record(r) if r.seq == seq => return Ok(true),
                Step::Record(_) => {}
                _ => return Ok(false),
            }
        }
    }
}
