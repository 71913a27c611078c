//! Retention: deleting old segments so that `verify` still passes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::JournalError;
use crate::format::{Hash, anchor_name, encode_anchor};
use crate::fsutil::{prune_lock, sync_dir, try_lock, write_atomic};
use crate::segment::list;
use crate::verify::{Chain, VerifyError, read_anchor};

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Segment files deleted.
    pub removed: Vec<PathBuf>,
    /// The anchor in force afterwards: the chain continues after this seq
    /// from this hash.
    pub anchor: Option<(u64, Hash)>,
    /// The stream was dead and wholly before `before_seq`: all its segments
    /// are gone, only its anchor is left.
    pub retired: bool,
}

/// Deletes `stream`'s segments whose records all come before `before_seq`
/// (the caller passes the first seq it must keep: not yet shipped, or
/// within retention). The last segment goes too only when no process
/// holds the stream, so streams of exited processes do not pile up.
///
/// The chain of what is deleted is verified first (a broken chain is not
/// pruned away: [`JournalError::Broken`]), then `<stream>.anchor` is
/// written, atomically and durably, with the seq and hash the first kept
/// record chains from, then the files are deleted. A crash in between
/// leaves segments before the anchor, which `verify` accepts and the next
/// prune deletes.
pub fn prune(dir: &Path, stream: Uuid, before_seq: u64) -> Result<Pruned, JournalError> {
    let _lock = prune_lock(dir, true, true).map_err(|e| JournalError::io("lock", dir, e))?;
    let Some(files) = list(dir)?.remove(&stream) else {
        return Ok(Pruned::default());
    };
    let anchor = match &files.anchor {
        Some(path) => Some(read_anchor(stream, path).map_err(refusal)?),
        None => None,
    };
    let segments = &files.segments;
    let mut pruned = Pruned {
        anchor,
        ..Pruned::default()
    };
    if segments.is_empty() {
        return Ok(pruned);
    }
    // A segment lies wholly before `before_seq` if its successor starts at
    // or before it.
    let whole = segments
        .windows(2)
        .take_while(|w| w[1].first_seq <= before_seq)
        .count();
    let mut chain = Chain::new(stream, anchor, files.anchor.clone());
    for segment in &segments[..whole] {
        chain.check_segment(segment, false).map_err(refusal)?;
    }
    let last = &segments[segments.len() - 1];
    let mut retire_lock = None;
    if whole == segments.len() - 1
        && let Some(lock) = lock_if_dead(&last.path)?
    {
        let mut probe = chain.clone();
        if let Ok(None) = probe.check_segment(last, false)
            && probe.finish().is_ok()
            && probe.expected <= before_seq
        {
            chain = probe;
            retire_lock = Some(lock);
        }
    }
    pruned.retired = retire_lock.is_some();
    let remove = &segments[..whole + usize::from(pruned.retired)];
    if remove.is_empty() {
        return Ok(pruned);
    }
    if !pruned.retired {
        chain.check_header(&segments[whole]).map_err(refusal)?;
    }
    let new_anchor = (chain.expected - 1, chain.prev);
    if anchor.is_none_or(|(seq, _)| seq < new_anchor.0) {
        let path = dir.join(anchor_name(stream));
        write_atomic(
            dir,
            &path,
            encode_anchor(stream, new_anchor.0, &new_anchor.1).as_bytes(),
        )?;
        pruned.anchor = Some(new_anchor);
    }
    for segment in remove {
        match fs::remove_file(&segment.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(JournalError::io("remove", &segment.path, e));
            }
            _ => pruned.removed.push(segment.path.clone()),
        }
    }
    sync_dir(dir)?;
    Ok(pruned)
}

/// The segment's file, locked, if no journal holds it.
fn lock_if_dead(path: &Path) -> Result<Option<File>, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io("open", path, e))?;
    let free = try_lock(&file).map_err(|e| JournalError::io("lock", path, e))?;
    Ok(free.then_some(file))
}

fn refusal(e: VerifyError) -> JournalError {
    match e {
        VerifyError::Broken(b) => JournalError::Broken(Box::new(b)),
        VerifyError::Journal(e) => e,
    }
}
