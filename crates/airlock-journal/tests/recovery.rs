//! Recovery after a crash: torn tails are moved aside and every complete
//! record is kept; damage that a crash cannot cause is left for `verify`.

mod common;

use std::fs;
use std::path::Path;

use airlock_journal::{Journal, Options, Reason, StreamState, verify};
use common::{broken, event, options, records_of, segments, spans, write_stream};
use uuid::Uuid;

/// Opens a journal in `dir` (the next process) and returns what it
/// recovered of `stream`.
fn recover(dir: &Path, stream: Uuid) -> StreamState {
    let (_journal, recovery) = Journal::open(dir, options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    let mut states: Vec<_> = recovery
        .streams
        .into_iter()
        .filter(|s| s.stream == stream)
        .collect();
    assert_eq!(states.len(), 1);
    states.remove(0)
}

#[test]
fn torn_last_record_at_every_byte() {
    let original = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(original.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    let segment = &segments(original.path(), stream)[0];
    let name = segment.file_name().unwrap();
    let bytes = fs::read(segment).unwrap();
    let (start, len) = *spans(&bytes).last().unwrap();
    assert_eq!(start + len, bytes.len());

    for cut in 0..len {
        let dir = tempfile::tempdir().unwrap();
        let crashed = dir.path().join(name);
        fs::write(&crashed, &bytes[..start + cut]).unwrap();

        let state = recover(dir.path(), stream);
        assert_eq!(
            (state.last_seq, state.complete_records),
            (4, 4),
            "cut {cut}"
        );
        assert_eq!(state.last_hash, appended[3].hash, "cut {cut}");
        assert_eq!(state.damaged, None, "cut {cut}");
        if cut == 0 {
            assert_eq!(state.torn_tail, None);
        } else {
            let torn = state
                .torn_tail
                .unwrap_or_else(|| panic!("cut {cut}: no torn tail"));
            assert_eq!(
                (&torn.segment, torn.offset, torn.bytes),
                (&crashed, start as u64, cut as u64)
            );
            let aside = torn.set_aside.unwrap();
            assert_eq!(
                fs::read(&aside).unwrap(),
                &bytes[start..start + cut],
                "cut {cut}: torn bytes kept"
            );
        }
        assert_eq!(
            fs::read(&crashed).unwrap(),
            &bytes[..start],
            "cut {cut}: cut back to the last record"
        );
        let kept: Vec<_> = records_of(dir.path(), stream)
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(kept, (1..=4).map(event).collect::<Vec<_>>(), "cut {cut}");
        let summary = verify(dir.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let s = summary.streams.iter().find(|s| s.stream == stream).unwrap();
        assert_eq!((s.last_seq, s.torn_tail.is_none()), (4, true));
        assert_eq!(s.set_aside.len(), usize::from(cut > 0));
    }
}

#[test]
fn garbled_last_record_is_a_torn_tail() {
    for garble in ["zeros", "bit flip", "length"] {
        let dir = tempfile::tempdir().unwrap();
        let (stream, appended) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
        let segment = &segments(dir.path(), stream)[0];
        let mut bytes = fs::read(segment).unwrap();
        let (start, len) = *spans(&bytes).last().unwrap();
        match garble {
            "zeros" => bytes[start + len / 2..].fill(0),
            "bit flip" => bytes[start + len - 1] ^= 0x80,
            _ => bytes[start + 1] ^= 0x01,
        }
        fs::write(segment, &bytes).unwrap();

        let state = recover(dir.path(), stream);
        assert_eq!(
            (state.last_seq, state.last_hash),
            (4, appended[3].hash),
            "{garble}"
        );
        let torn = state.torn_tail.unwrap();
        assert_eq!(
            (torn.offset, torn.bytes),
            (start as u64, len as u64),
            "{garble}"
        );
        assert_eq!(fs::read(segment).unwrap(), &bytes[..start], "{garble}");
        assert_eq!(
            fs::read(torn.set_aside.unwrap()).unwrap(),
            &bytes[start..],
            "{garble}"
        );
        assert_eq!(records_of(dir.path(), stream).len(), 4);
        let summary = verify(dir.path()).unwrap();
        assert!(
            summary.streams.iter().all(|s| s.torn_tail.is_none()),
            "{garble}"
        );
    }
}

#[test]
fn zero_filled_extension_is_moved_aside() {
    // What a power loss can leave: the size grew, the data never arrived.
    let dir = tempfile::tempdir().unwrap();
    let (stream, _) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    let segment = &segments(dir.path(), stream)[0];
    let mut bytes = fs::read(segment).unwrap();
    let end = bytes.len();
    bytes.resize(end + 4096, 0);
    fs::write(segment, &bytes).unwrap();

    let state = recover(dir.path(), stream);
    assert_eq!(state.last_seq, 5);
    let torn = state.torn_tail.unwrap();
    assert_eq!((torn.offset, torn.bytes), (end as u64, 4096));
    assert_eq!(fs::metadata(segment).unwrap().len(), end as u64);
    assert_eq!(records_of(dir.path(), stream).len(), 5);
}

#[test]
fn torn_tail_in_the_last_of_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(dir.path(), 20, 512);
    let files = segments(dir.path(), stream);
    let last = files.last().unwrap();
    let bytes = fs::read(last).unwrap();
    let (start, len) = *spans(&bytes).last().unwrap();
    fs::write(last, &bytes[..start + len - 3]).unwrap();

    let state = recover(dir.path(), stream);
    assert_eq!((state.last_seq, state.complete_records), (19, 19));
    assert_eq!(state.last_hash, appended[18].hash);
    assert_eq!(state.torn_tail.unwrap().segment, *last);
    assert_eq!(fs::metadata(last).unwrap().len(), start as u64);
    assert_eq!(records_of(dir.path(), stream).len(), 19);
    verify(dir.path()).unwrap();
}

#[test]
fn verify_before_recovery_reports_the_tail_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, _) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    let segment = &segments(dir.path(), stream)[0];
    let bytes = fs::read(segment).unwrap();
    let (start, _) = *spans(&bytes).last().unwrap();
    fs::write(segment, &bytes[..start + 10]).unwrap();

    let summary = verify(dir.path()).unwrap();
    let torn = summary.streams[0].torn_tail.clone().unwrap();
    assert_eq!(
        (torn.offset, torn.bytes, torn.set_aside),
        (start as u64, 10, None)
    );
    assert_eq!(summary.streams[0].last_seq, 4);
    assert_eq!(
        fs::read(segment).unwrap().len(),
        start + 10,
        "verify changes nothing"
    );
    // The reader ships what is complete and stops at the tail.
    assert_eq!(records_of(dir.path(), stream).len(), 4);
}

#[test]
fn damage_in_the_middle_is_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    let segment = segments(dir.path(), stream)[0].clone();
    let mut bytes = fs::read(&segment).unwrap();
    let (start, _) = spans(&bytes)[1];
    bytes[start + 85] ^= 0x04;
    fs::write(&segment, &bytes).unwrap();

    let state = recover(dir.path(), stream);
    assert_eq!(state.torn_tail, None);
    let damage = state.damaged.unwrap();
    assert_eq!(
        (damage.segment, damage.offset),
        (segment.clone(), start as u64)
    );
    assert_eq!((state.last_seq, state.last_hash), (1, appended[0].hash));
    assert_eq!(fs::read(&segment).unwrap(), bytes, "left as it was");

    let b = broken(dir.path());
    assert_eq!(
        (b.stream, b.seq, b.offset, b.reason),
        (stream, 2, start as u64, Reason::Edited)
    );
}
