//! Helpers shared by the journal's test suites: writing streams, and
//! finding and rewriting records in segment files by hand.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_journal::format::{FRAME_LEN, HEADER_LEN, crc32c};
use airlock_journal::{
    Appended, Broken, Fsync, Journal, Options, Reader, Record, VerifyError, verify,
};
use uuid::Uuid;

/// No syncs in the way of the test (the timer never runs).
pub fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: Fsync::Interval(Duration::from_secs(3600)),
        segment_bytes,
    }
}

/// A small canonical-JSON-like event, different for each `i`.
pub fn event(i: u64) -> Vec<u8> {
    format!(r#"{{"kind":"statement","seq":{i},"text":"SELECT {i}"}}"#).into_bytes()
}

/// Writes `n` events as one stream and closes it, as a process that exited.
pub fn write_stream(dir: &Path, n: u64, segment_bytes: u64) -> (Uuid, Vec<Appended>) {
    let (mut journal, _) = Journal::open(dir, options(segment_bytes)).unwrap();
    let appended = (1..=n)
        .map(|i| journal.append(&event(i)).unwrap())
        .collect();
    let stream = journal.stream();
    journal.close().unwrap();
    (stream, appended)
}

/// The stream's segment files, in seq order.
pub fn segments(dir: &Path, stream: Uuid) -> Vec<PathBuf> {
    let prefix = stream.hyphenated().to_string();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(&prefix) && name.ends_with(".seg")
        })
        .collect();
    files.sort();
    files
}

/// (start, length) of every record frame in a segment's bytes.
pub fn spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = HEADER_LEN;
    let mut spans = Vec::new();
    while at < bytes.len() {
        let len = FRAME_LEN + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        spans.push((at, len));
        at += len;
    }
    spans
}

/// Recomputes a record's CRC after its body was changed in place.
pub fn fix_crc(bytes: &mut [u8], (start, len): (usize, usize)) {
    let crc = crc32c(&bytes[start + FRAME_LEN..start + len]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// All records the reader yields, failing on any error.
pub fn read_all(dir: &Path) -> Vec<Record> {
    Reader::open(dir).unwrap().map(Result::unwrap).collect()
}

pub fn records_of(dir: &Path, stream: Uuid) -> Vec<Record> {
    read_all(dir)
        .into_iter()
        .filter(|r| r.stream == stream)
        .collect()
}

/// `verify`'s broken link; panics if the journal verifies.
pub fn broken(dir: &Path) -> Broken {
    match verify(dir) {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a broken link, got {other:?}"),
    }
}
