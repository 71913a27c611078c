//! File-system helpers: locks, owner-only files, durable renames.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::JournalError;

/// Journal files hold statement texts: owner only.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Serializes [`prune`](crate::prune) runs and keeps [`verify`](crate::verify)
/// from reading a half-pruned stream. Never deleted, so locking it is not racy.
pub(crate) const PRUNE_LOCK: &str = ".prune.lock";

/// Takes an exclusive `flock` without waiting. `false`: another open file
/// (another journal, in this process or another) holds it.
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes a `flock`, waiting for it.
pub(crate) fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    loop {
        match flock(file, op) {
            Err(e) if e == rustix::io::Errno::INTR => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// Takes the directory's prune lock: exclusive for pruning (creating the
/// file), shared for reading it whole. `None`: there is no lock file (no
/// prune ever ran) and `create` is false.
pub(crate) fn prune_lock(dir: &Path, exclusive: bool, create: bool) -> io::Result<Option<File>> {
    let opened = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(FILE_MODE)
        .open(dir.join(PRUNE_LOCK));
    let file = match opened {
        Ok(f) => f,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    lock(&file, exclusive)?;
    Ok(Some(file))
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| JournalError::io("create directory", dir, e))
}

/// Makes created, renamed and removed entries of `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io("sync directory", dir, e))
}

/// Creates `path` (which must not exist), owner-only, for appending.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Writes `bytes` to a new file at `path` atomically and durably: a
/// temporary file, synced, renamed over `path`, directory synced.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = tmp_path(path);
    remove_if_exists(&tmp).map_err(|e| JournalError::io("remove", &tmp, e))?;
    let written = create_new(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(JournalError::io("write", path, e));
    }
    sync_dir(dir)
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
