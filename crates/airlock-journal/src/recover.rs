//! Recovery at open: what earlier processes left behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::JournalError;
use crate::format::Hash;
use crate::fsutil::{create_new, sync_dir, try_lock};
use crate::segment::{OpenError, SegmentFile, SegmentReader, Step, list};

/// What [`Journal::open`](crate::Journal::open) found in the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Streams of earlier processes that are no longer running, by id.
    /// Streams another live process is writing are not touched or listed.
    pub streams: Vec<StreamState>,
}

/// Where an earlier process's stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub stream: Uuid,
    /// The last complete record (its seq is the first segment's first seq
    /// minus one when there is none).
    pub last_seq: u64,
    pub last_hash: Hash,
    /// Records in the stream's segments present in the directory: the last
    /// segment is counted by scanning it, earlier ones (closed and synced at
    /// rotation; [`verify`](crate::verify) checks them) from their names.
    pub complete_records: u64,
    /// Bytes after the last complete record, moved aside.
    pub torn_tail: Option<TornTail>,
    /// A bad record followed by good ones, or a bad header: not something a
    /// crash does, so it is left in place for `verify` to report. The fields
    /// above then describe the records before it (with a bad header, none:
    /// `last_hash` is all zeros).
    pub damaged: Option<Damage>,
}

/// An incomplete or garbled record at the end of a stream's last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the torn record starts; the segment now ends here.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// `<segment>.torn` holding the cut bytes; `None` when only reported
    /// (by [`verify`](crate::verify), which changes nothing).
    pub set_aside: Option<PathBuf>,
}

/// Damage recovery will not repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
}

/// Scans the last segment of every stream no live process holds, and moves
/// torn tails aside. Only the last segment: rotation synced the others.
pub(crate) fn recover(dir: &Path) -> Result<Recovery, JournalError> {
    let mut recovery = Recovery::default();
    for (stream, files) in list(dir)? {
        let (Some(first), Some(last)) = (files.segments.first(), files.segments.last()) else {
            continue; // only an anchor: a retired stream
        };
        let file = match OpenOptions::new().read(true).write(true).open(&last.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // pruned meanwhile
            Err(e) => return Err(JournalError::io("open", &last.path, e)),
        };
        if !try_lock(&file).map_err(|e| JournalError::io("lock", &last.path, e))? {
            continue; // live: its owner is writing it
        }
        let mut state = recover_segment(dir, stream, last, file)?;
        state.complete_records = (state.last_seq + 1).saturating_sub(first.first_seq);
        recovery.streams.push(state);
    }
    Ok(recovery)
}

fn recover_segment(
    dir: &Path,
    stream: Uuid,
    segment: &SegmentFile,
    file: File,
) -> Result<StreamState, JournalError> {
    let path = &segment.path;
    let io_err = |e| JournalError::io("recover", path, e);
    let mut state = StreamState {
        stream,
        last_seq: segment.first_seq - 1,
        last_hash: [0; 32],
        complete_records: 0,
        torn_tail: None,
        damaged: None,
    };
    let reader = file.try_clone().map_err(io_err)?;
    let mut reader = match SegmentReader::from_file(reader, segment, stream) {
        Ok(r) => r,
        Err(OpenError::Io(e)) => return Err(io_err(e)),
        Err(OpenError::Header(_)) => {
            state.damaged = Some(Damage {
                segment: path.clone(),
                offset: 0,
            });
            return Ok(state);
        }
    };
    state.last_hash = reader.header().prev;
    let len = reader.file_len();
    loop {
        match reader.next_step().map_err(io_err)? {
            Step::Record(r) => {
                state.last_seq = r.seq;
                state.last_hash = r.hash;
            }
            Step::End => return Ok(state),
            Step::Short { offset } | Step::Bad { offset } => {
                if reader
                    .record_follows(offset, state.last_seq)
                    .map_err(io_err)?
                {
                    state.damaged = Some(Damage {
                        segment: path.clone(),
                        offset,
                    });
                } else {
                    let aside = set_aside(dir, path, &file, offset, len)?;
                    state.torn_tail = Some(TornTail {
                        segment: path.clone(),
                        offset,
                        bytes: len - offset,
                        set_aside: Some(aside),
                    });
                }
                return Ok(state);
            }
        }
    }
}

/// Copies `segment[offset..len]` to a new `<segment>.torn` (synced), then
/// cuts the segment at `offset`. A crash in between leaves both copies;
/// the next recovery sets the same bytes aside again, under `.torn.<n>`.
fn set_aside(
    dir: &Path,
    segment: &Path,
    file: &File,
    offset: u64,
    len: u64,
) -> Result<PathBuf, JournalError> {
    let mut base = segment.as_os_str().to_owned();
    base.push(".torn");
    let mut n = 1u32;
    let (mut out, aside) = loop {
        let mut name = base.clone();
        if n > 1 {
            name.push(format!(".{n}"));
        }
        let path = PathBuf::from(name);
        match create_new(&path) {
            Ok(f) => break (f, path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(JournalError::io("create", &path, e)),
        }
    };
    let mut input = file;
    input
        .seek(SeekFrom::Start(offset))
        .and_then(|_| io::copy(&mut input.take(len - offset), &mut out))
        .and_then(|_| out.sync_all())
        .map_err(|e| JournalError::io("set aside torn tail in", &aside, e))?;
    sync_dir(dir)?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io("truncate torn tail of", segment, e))?;
    Ok(aside)
}
