//! Writing and reading: round trips, rotation, sizes, several streams in
//! one directory, and the interval fsync's timer logic.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use airlock_journal::format::{genesis_hash, record_hash};
use airlock_journal::{Fsync, Journal, JournalError, MAX_PAYLOAD, Options, Reader, verify};
use common::{event, options, read_all, records_of, segments, write_stream};
use uuid::Uuid;

#[test]
fn append_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (old, appended) = write_stream(dir.path(), 10, Options::DEFAULT_SEGMENT_BYTES);

    // Each hash chains from the one before, starting at the stream's genesis.
    let mut prev = genesis_hash(old);
    for (i, a) in appended.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(a.seq, seq);
        assert_eq!(a.hash, record_hash(&prev, seq, &event(seq)));
        prev = a.hash;
    }

    let (mut journal, recovery) =
        Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    assert_ne!(journal.stream(), old, "each open starts a new stream");
    assert_eq!(recovery.streams.len(), 1);
    let state = &recovery.streams[0];
    assert_eq!(
        (state.stream, state.last_seq, state.complete_records),
        (old, 10, 10)
    );
    assert_eq!(state.last_hash, appended[9].hash);
    assert_eq!((&state.torn_tail, &state.damaged), (&None, &None));

    let new = journal.stream();
    for i in 1..=3 {
        assert_eq!(journal.append(&event(100 + i)).unwrap().seq, i);
    }
    journal.close().unwrap();

    let old_records = records_of(dir.path(), old);
    assert_eq!(old_records.len(), 10);
    let mut prev = genesis_hash(old);
    for (r, a) in old_records.iter().zip(&appended) {
        assert_eq!((r.seq, r.hash, &r.payload), (a.seq, a.hash, &event(a.seq)));
        assert_eq!(
            r.prev, prev,
            "seq {} carries the hash it chains from",
            r.seq
        );
        prev = r.hash;
    }
    let new_payloads: Vec<_> = records_of(dir.path(), new)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(new_payloads, vec![event(101), event(102), event(103)]);

    let summary = verify(dir.path()).unwrap();
    assert_eq!(summary.streams.len(), 2);
    assert_eq!(summary.records(), 13);
    let old_summary = summary.streams.iter().find(|s| s.stream == old).unwrap();
    assert_eq!(
        (old_summary.last_seq, old_summary.last_hash),
        (10, appended[9].hash)
    );
}

#[test]
fn rotation_continues_the_chain_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    // About three 140-byte records per 512-byte segment.
    let (stream, appended) = write_stream(dir.path(), 50, 512);
    let files = segments(dir.path(), stream);
    assert!(files.len() >= 10, "{} segments", files.len());

    let mut expected_first = 1;
    for file in &files {
        let bytes = fs::read(file).unwrap();
        assert!(
            bytes.len() <= 512,
            "{} is {} bytes",
            file.display(),
            bytes.len()
        );
        let name = file.file_name().unwrap().to_str().unwrap();
        let first_seq: u64 = name[37..57].parse().unwrap();
        assert_eq!(
            first_seq, expected_first,
            "segments start where the last one ended"
        );
        // The header's prev is the previous segment's last hash.
        let prev = if first_seq == 1 {
            genesis_hash(stream)
        } else {
            appended[first_seq as usize - 2].hash
        };
        assert_eq!(&bytes[36..68], &prev);
        expected_first += common::spans(&bytes).len() as u64;
    }
    assert_eq!(expected_first, 51);

    let records = read_all(dir.path());
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    // `prev` links across segment boundaries too.
    assert_eq!(records[0].prev, genesis_hash(stream));
    for w in records.windows(2) {
        assert_eq!(w[1].prev, w[0].hash, "seq {}", w[1].seq);
    }
    let summary = verify(dir.path()).unwrap();
    assert_eq!(
        (summary.streams[0].segments, summary.records()),
        (files.len(), 50)
    );
}

#[test]
fn a_record_bigger_than_a_segment_goes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), options(512)).unwrap();
    journal.append(b"small").unwrap();
    journal.append(&vec![b'x'; 2000]).unwrap();
    journal.append(b"small again").unwrap();
    let stream = journal.stream();
    journal.close().unwrap();
    let files = segments(dir.path(), stream);
    let counts: Vec<usize> = files
        .iter()
        .map(|f| common::spans(&fs::read(f).unwrap()).len())
        .collect();
    assert_eq!(counts, vec![1, 1, 1]);
    verify(dir.path()).unwrap();
}

#[test]
fn one_mib_payload_and_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) =
        Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    journal.append(&big).unwrap();

    let too_big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        journal.append(&too_big),
        Err(JournalError::PayloadTooLarge { len, max }) if len == MAX_PAYLOAD + 1 && max == MAX_PAYLOAD
    ));
    // The refusal wrote nothing and took no seq.
    assert_eq!(journal.append(&vec![1u8; MAX_PAYLOAD]).unwrap().seq, 2);
    assert_eq!(journal.append(b"after").unwrap().seq, 3);
    journal.close().unwrap();

    let records = read_all(dir.path());
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].payload, big);
    assert_eq!(records[1].payload.len(), MAX_PAYLOAD);
    assert_eq!(records[2].payload, b"after");
    verify(dir.path()).unwrap();
}

#[test]
fn non_utf8_and_empty_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) =
        Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0xc3, 0x28, 0xa0, 0xa1, 0x80],
        Vec::new(),
        b"caf\xe9 latin-1".to_vec(),
        (0..=255u8).collect(),
    ];
    for p in &payloads {
        journal.append(p).unwrap();
    }
    journal.close().unwrap();
    let read: Vec<Vec<u8>> = read_all(dir.path())
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(read, payloads);
    verify(dir.path()).unwrap();
}

#[test]
fn two_journals_in_one_directory_are_two_chains() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Journal::open(dir.path(), options(600)).unwrap();
    let (mut b, recovery) = Journal::open(dir.path(), options(600)).unwrap();
    assert!(
        recovery.streams.is_empty(),
        "a live stream is not another process's to recover"
    );
    for i in 1..=20 {
        assert_eq!(a.append(&event(i)).unwrap().seq, i);
        if i % 2 == 0 {
            assert_eq!(b.append(&event(1000 + i)).unwrap().seq, i / 2);
        }
    }
    let (sa, sb) = (a.stream(), b.stream());

    // Verified while both are live, each as its own chain.
    let summary = verify(dir.path()).unwrap();
    let last = |s: Uuid| {
        summary
            .streams
            .iter()
            .find(|x| x.stream == s)
            .map(|x| (x.records, x.last_seq))
    };
    assert_eq!(last(sa), Some((20, 20)));
    assert_eq!(last(sb), Some((10, 10)));

    // A third process sees neither as recoverable.
    let (c, recovery) = Journal::open(dir.path(), options(600)).unwrap();
    assert!(recovery.streams.is_empty());
    drop((a, b, c));

    let records = read_all(dir.path());
    let of = |s: Uuid| {
        records
            .iter()
            .filter(|r| r.stream == s)
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(sa), (1..=20).map(event).collect::<Vec<_>>());
    assert_eq!(
        of(sb),
        (1..=10).map(|i| event(1000 + 2 * i)).collect::<Vec<_>>()
    );
}

#[test]
fn a_live_streams_tail_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    a.append(&event(1)).unwrap();
    // What another process could see mid-write: part of a record.
    let segment = a.segment().to_path_buf();
    let mut bytes = fs::read(&segment).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2]);
    fs::write(&segment, &bytes).unwrap();

    let (b, recovery) = Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    assert!(recovery.streams.is_empty());
    assert_eq!(
        fs::read(&segment).unwrap(),
        bytes,
        "not cut while its owner holds it"
    );
    drop((a, b));

    // Once the owner is gone, it is recovered.
    let (_c, recovery) =
        Journal::open(dir.path(), options(Options::DEFAULT_SEGMENT_BYTES)).unwrap();
    let torn: Vec<_> = recovery
        .streams
        .iter()
        .filter_map(|s| s.torn_tail.clone())
        .collect();
    assert_eq!(torn.len(), 1);
    assert_eq!((torn[0].offset, torn[0].bytes), (whole as u64, 6));
    assert_eq!(fs::read(&segment).unwrap().len(), whole);
}

#[test]
fn reader_resumes_after_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(dir.path(), 40, 512);
    let (other, _) = write_stream(dir.path(), 3, 512);
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(reader.streams(), {
        let mut s = vec![stream, other];
        s.sort();
        s
    });
    reader.resume_after(stream, 33).resume_after(other, 3);
    let records: Vec<_> = reader.map(Result::unwrap).collect();
    let seqs: Vec<_> = records.iter().map(|r| (r.stream, r.seq)).collect();
    assert_eq!(seqs, (34..=40).map(|s| (stream, s)).collect::<Vec<_>>());
    // The first record after the resume point chains from the last skipped
    // one: what the shipper compares with the store's last hash.
    assert_eq!(records[0].prev, appended[32].hash);

    // Only the streams kept are read.
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.retain(|s| s == other);
    assert_eq!(reader.streams(), vec![other]);
    let seqs: Vec<_> = reader
        .map(Result::unwrap)
        .map(|r| (r.stream, r.seq))
        .collect();
    assert_eq!(seqs, (1..=3).map(|s| (other, s)).collect::<Vec<_>>());
}

#[test]
fn reader_resumes_at_a_position_without_rescanning() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: positions in an earlier segment and in the last one.
    let (stream, appended) = write_stream(dir.path(), 40, 512);
    let all: Vec<_> = Reader::open(dir.path())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for k in [0, 5, 38, 39] {
        let mut reader = Reader::open(dir.path()).unwrap();
        reader.resume_at(stream, all[k].end, all[k].hash);
        let seqs: Vec<_> = reader.map(|r| r.unwrap().seq).collect();
        assert_eq!(seqs, ((k as u64 + 2)..=40).collect::<Vec<_>>(), "after {k}");
    }
    assert_eq!(all[39].end.seq, 40);
    assert_eq!(all[39].hash, appended[39].hash);

    // A hint whose hash is not the record's: the next record (in the same
    // segment) does not chain.
    let k = (0..39)
        .find(|&k| all[k].end.segment == all[k + 1].end.segment)
        .unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.resume_at(stream, all[k].end, [7; 32]);
    assert!(matches!(
        reader.next(),
        Some(Err(JournalError::Corrupt { .. }))
    ));
    // A hint into a segment that is no longer first falls back to seq.
    let mut reader = Reader::open(dir.path()).unwrap();
    let stale = airlock_journal::Position {
        seq: 38,
        segment: 999,
        end: 1,
    };
    reader.resume_at(stream, stale, all[37].hash);
    assert_eq!(reader.next().unwrap().unwrap().seq, 39);
}

#[test]
fn reader_reports_mid_file_damage_and_goes_on_with_other_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (damaged, _) = write_stream(dir.path(), 5, 1 << 20);
    let (intact, _) = write_stream(dir.path(), 2, 1 << 20);
    let file = &segments(dir.path(), damaged)[0];
    let mut bytes = fs::read(file).unwrap();
    let (start, _) = common::spans(&bytes)[2];
    bytes[start + 90] ^= 0x01;
    fs::write(file, &bytes).unwrap();

    let items: Vec<_> = Reader::open(dir.path()).unwrap().collect();
    let ok: Vec<_> = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| (r.stream, r.seq))
        .collect();
    assert_eq!(
        ok,
        vec![(damaged, 1), (damaged, 2), (intact, 1), (intact, 2)]
    );
    let errors: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        matches!(errors[..], [JournalError::Corrupt { offset, .. }] if *offset == start as u64),
        "{errors:?}"
    );
}

#[test]
fn interval_sync_is_driven_by_the_callers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(100);
    let (mut journal, _) = Journal::open(
        dir.path(),
        Options {
            fsync: Fsync::Interval(every),
            ..Options::default()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    assert!(!journal.sync_due(t0), "nothing written, nothing to sync");
    assert!(!journal.sync_if_due(t0).unwrap());

    journal.append(b"one").unwrap();
    assert!(
        journal.sync_due(t0),
        "the timer has never synced: due at once"
    );
    assert!(journal.sync_if_due(t0).unwrap());
    assert!(!journal.sync_due(t0 + every * 10), "clean after the sync");

    journal.append(b"two").unwrap();
    assert!(
        !journal.sync_due(t0 + every / 2),
        "within the interval of the last sync"
    );
    assert!(!journal.sync_if_due(t0 + every / 2).unwrap());
    assert!(journal.sync_due(t0 + every));
    assert!(
        journal
            .sync_if_due(t0 + every + Duration::from_millis(1))
            .unwrap()
    );

    journal.append(b"three").unwrap();
    assert!(!journal.sync_due(t0 + every + Duration::from_millis(50)));
    journal.sync().unwrap();
    assert!(
        !journal.sync_due(t0 + every * 100),
        "an explicit sync cleans too"
    );

    // A clock that went backwards does not make a sync overdue forever.
    journal.append(b"four").unwrap();
    assert!(!journal.sync_due(t0));
    assert!(journal.sync_due(t0 + every * 3));
}

#[test]
fn a_sync_job_runs_outside_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(100);
    let (mut journal, _) = Journal::open(
        dir.path(),
        Options {
            fsync: Fsync::Interval(every),
            ..Options::default()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    assert!(journal.begin_sync(t0).unwrap().is_none(), "nothing to sync");
    journal.append(b"one").unwrap();
    let job = journal.begin_sync(t0).unwrap().expect("due");
    journal.append(b"two").unwrap(); // while the job runs elsewhere
    assert!(
        !journal.sync_due(t0 + every / 2),
        "the interval counts from the job"
    );
    journal.finish_sync(job.run()).unwrap();
    assert!(
        journal.sync_due(t0 + every),
        "the job did not cover the later record"
    );
    let job = journal.begin_sync(t0 + every).unwrap().expect("due");
    journal.finish_sync(job.run()).unwrap();
    assert!(!journal.sync_due(t0 + every * 5));
    assert!(journal.begin_sync(t0 + every * 5).unwrap().is_none());
}

#[test]
fn always_syncs_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(Options::default().fsync, Fsync::Always);
    for i in 1..=3 {
        journal.append(&event(i)).unwrap();
        assert!(
            !journal.sync_due(Instant::now() + Duration::from_secs(3600)),
            "nothing left to sync"
        );
    }
    journal.close().unwrap();
    assert_eq!(read_all(dir.path()).len(), 3);
}

#[test]
fn open_fails_when_the_directory_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = Journal::open(&file.join("journal"), Options::default()).unwrap_err();
    assert!(matches!(err, JournalError::Io { .. }), "{err}");
}
