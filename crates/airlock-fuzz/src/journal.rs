//! The journal's reader, `verify` and recovery over a damaged segment.
//! Besides not panicking, the audit trail's promise: whatever the reader
//! hands out as a record is a record that was written, byte for byte, at
//! that seq. Damage is reported or cut, never read as something else.

use std::collections::HashMap;
use std::path::Path;

use airlock_journal::{Journal, Options, Reader, verify};

/// Records written before the damage.
const RECORDS: &[&[u8]] = &[
    b"{\"type\":\"session_start\",\"principal\":\"devin\"}",
    b"{\"type\":\"statement\",\"sql\":\"select 1\"}",
    b"",
    b"{\"type\":\"session_end\"}",
];

/// The first byte picks the damage: the segment replaced by the rest of
/// the input, the rest written over it at an offset (the next two bytes),
/// or the segment cut at that offset and the rest appended.
pub fn segment(data: &[u8]) {
    let [mode, hi, lo, bytes @ ..] = data else {
        return;
    };
    let dir = scratch();
    let (mut journal, _) = Journal::open(dir.path(), Options::default()).expect("a new journal");
    let mut written = HashMap::new();
    for payload in RECORDS {
        let appended = journal.append(payload).expect("append");
        written.insert(appended.seq, payload.to_vec());
    }
    let segment = journal.segment().to_path_buf();
    journal.close().expect("close");

    let original = std::fs::read(&segment).expect("read the segment");
    let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (original.len() + 1);
    let damaged = match mode % 3 {
        0 => bytes.to_vec(),
        1 => {
            let mut d = original.clone();
            let end = (at + bytes.len()).min(d.len());
            d[at..end].copy_from_slice(&bytes[..end - at]);
            d
        }
        _ => [&original[..at], bytes].concat(),
    };
    std::fs::write(&segment, &damaged).expect("write the damage");

    let verified = verify(dir.path());
    let read = read_back(dir.path(), &written);
    if let Ok(summary) = &verified
        && summary.streams.iter().all(|s| s.torn_tail.is_none())
    {
        assert_eq!(summary.records(), read, "verify and the reader disagree");
    }
    // Recovery: the damaged stream is an earlier process's; a new one starts
    // and takes records.
    let (mut journal, _) = match Journal::open(dir.path(), Options::default()) {
        Ok(opened) => opened,
        Err(_) => return,
    };
    journal.append(b"after").expect("append after recovery");
    journal.close().expect("close after recovery");
    read_back(dir.path(), &written);
    let _ = verify(dir.path());
}

/// Reads every record in `dir`; each one of the damaged stream must be the
/// one written at its seq. Returns how many were read before the first
/// error.
fn read_back(dir: &Path, written: &HashMap<u64, Vec<u8>>) -> u64 {
    let Ok(reader) = Reader::open(dir) else {
        return 0;
    };
    let mut read = 0;
    for record in reader.take(64) {
        let Ok(record) = record else { break };
        if record.payload == b"after" {
            continue;
        }
        assert_eq!(
            written.get(&record.seq),
            Some(&record.payload),
            "record {} reads as something never written",
            record.seq
        );
        read += 1;
    }
    read
}

/// A directory in memory when the machine has one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}
