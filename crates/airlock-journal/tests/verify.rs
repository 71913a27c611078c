//! Tampering is named: each edit, deletion, reordering or truncation is
//! reported as the first broken link, with the right reason. And pruning
//! keeps the chain verifiable, while deleting segments by hand does not.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use airlock_journal::format::{FRAME_LEN, crc32c, genesis_hash, record_hash};
use airlock_journal::{Journal, JournalError, Options, Reason, prune, verify};
use common::{
    broken, event, fix_crc, options, read_all, records_of, segments, spans, write_stream,
};
use uuid::Uuid;

/// One stream of `n` records in one segment, its file, and its bytes.
fn one_segment(n: u64) -> (tempfile::TempDir, Uuid, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, _) = write_stream(dir.path(), n, Options::DEFAULT_SEGMENT_BYTES);
    let file = segments(dir.path(), stream)[0].clone();
    let bytes = fs::read(&file).unwrap();
    (dir, stream, file, bytes)
}

/// Rewrites `file` with `spans` of `bytes` (by record index) after its header.
fn rewrite(file: &Path, bytes: &[u8], order: &[usize]) {
    let spans = spans(bytes);
    let mut out = bytes[..spans[0].0].to_vec();
    for &i in order {
        let (start, len) = spans[i];
        out.extend_from_slice(&bytes[start..start + len]);
    }
    fs::write(file, out).unwrap();
}

#[test]
fn an_intact_journal_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(dir.path(), 30, 700);
    let summary = verify(dir.path()).unwrap();
    let s = &summary.streams[0];
    assert_eq!(s.stream, stream);
    assert_eq!(
        (s.records, s.last_seq, s.last_hash),
        (30, 30, appended[29].hash)
    );
    assert_eq!((s.anchor, &s.torn_tail), (None, &None));
    assert!(s.segments > 3);
}

#[test]
fn bit_flip_in_the_middle_record() {
    for (what, at) in [
        ("payload", FRAME_LEN + 72 + 3),
        ("stored hash", FRAME_LEN + 50),
        ("length", 0),
    ] {
        let (dir, stream, file, mut bytes) = one_segment(5);
        let (start, _) = spans(&bytes)[2];
        bytes[start + at] ^= 0x10;
        fs::write(&file, &bytes).unwrap();
        let b = broken(dir.path());
        assert_eq!(
            (b.stream, &b.file, b.offset, b.seq),
            (stream, &file, start as u64, 3),
            "{what}"
        );
        assert_eq!(b.reason, Reason::Edited, "{what}");
    }
}

#[test]
fn edit_with_a_recomputed_crc_fails_the_hash() {
    let (dir, _, file, mut bytes) = one_segment(5);
    let span = spans(&bytes)[2];
    bytes[span.0 + FRAME_LEN + 72] ^= 0x01;
    fix_crc(&mut bytes, span);
    fs::write(&file, &bytes).unwrap();
    let b = broken(dir.path());
    assert_eq!(
        (b.seq, b.offset, b.reason),
        (3, span.0 as u64, Reason::Edited)
    );
}

#[test]
fn edit_with_recomputed_hash_and_crc_breaks_the_next_link() {
    let (dir, _, file, mut bytes) = one_segment(5);
    let span = spans(&bytes)[2];
    let body = span.0 + FRAME_LEN;
    let payload_at = body + 72;
    bytes[payload_at] ^= 0x01;
    let prev: [u8; 32] = bytes[body + 8..body + 40].try_into().unwrap();
    let hash = record_hash(&prev, 3, &bytes[payload_at..span.0 + span.1]);
    bytes[body + 40..body + 72].copy_from_slice(&hash);
    fix_crc(&mut bytes, span);
    fs::write(&file, &bytes).unwrap();
    let b = broken(dir.path());
    let next = spans(&bytes)[3].0 as u64;
    assert_eq!((b.seq, b.offset, b.reason), (4, next, Reason::ChainBroken));
}

#[test]
fn one_record_deleted() {
    let (dir, _, file, bytes) = one_segment(6);
    rewrite(&file, &bytes, &[0, 1, 3, 4, 5]);
    let b = broken(dir.path());
    let at = spans(&bytes)[2].0 as u64;
    assert_eq!((b.seq, b.offset), (3, at));
    assert_eq!(
        b.reason,
        Reason::Missing {
            expected: 3,
            found: 4
        }
    );
}

#[test]
fn two_records_swapped() {
    let (dir, _, file, bytes) = one_segment(6);
    rewrite(&file, &bytes, &[0, 1, 3, 2, 4, 5]);
    let b = broken(dir.path());
    assert_eq!((b.seq, b.offset), (3, spans(&bytes)[2].0 as u64));
    assert_eq!(
        b.reason,
        Reason::Reordered {
            expected: 3,
            found: 4
        }
    );
}

#[test]
fn one_record_duplicated() {
    let (dir, _, file, bytes) = one_segment(4);
    rewrite(&file, &bytes, &[0, 1, 1, 2, 3]);
    let b = broken(dir.path());
    assert_eq!((b.seq, b.offset), (3, spans(&bytes)[2].0 as u64));
    assert_eq!(b.reason, Reason::Duplicate { seq: 2 });
}

#[test]
fn the_last_record_deleted_whole_is_not_visible_locally() {
    // Cutting a stream at a record boundary looks like a shorter stream: the
    // store's copy (or the anchor, after pruning) is what catches it.
    let (dir, _, file, bytes) = one_segment(4);
    rewrite(&file, &bytes, &[0, 1, 2]);
    assert_eq!(verify(dir.path()).unwrap().streams[0].last_seq, 3);
}

/// A stream over several segments, with the segment files.
fn several_segments() -> (tempfile::TempDir, Uuid, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let (stream, _) = write_stream(dir.path(), 30, 600);
    let files = segments(dir.path(), stream);
    assert!(files.len() >= 5);
    (dir, stream, files)
}

fn first_seq(file: &Path) -> u64 {
    file.file_name().unwrap().to_str().unwrap()[37..57]
        .parse()
        .unwrap()
}

#[test]
fn truncated_mid_record_in_a_non_final_segment() {
    let (dir, _, files) = several_segments();
    let bytes = fs::read(&files[1]).unwrap();
    let (start, len) = *spans(&bytes).last().unwrap();
    fs::write(&files[1], &bytes[..start + len / 2]).unwrap();
    let b = broken(dir.path());
    assert_eq!(
        (&b.file, b.offset, b.reason.clone()),
        (&files[1], start as u64, Reason::Truncated)
    );
    assert_eq!(b.seq, first_seq(&files[1]) + spans(&bytes).len() as u64 - 1);
}

#[test]
fn a_middle_segment_deleted() {
    let (dir, _, files) = several_segments();
    fs::remove_file(&files[2]).unwrap();
    let b = broken(dir.path());
    assert_eq!((&b.file, b.offset), (&files[3], 0));
    let (expected, found) = (first_seq(&files[2]), first_seq(&files[3]));
    assert_eq!(
        (b.seq, b.reason),
        (expected, Reason::Missing { expected, found })
    );
}

#[test]
fn bad_segment_headers() {
    let (dir, _, files) = several_segments();
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[0] = b'X';
    fs::write(&files[1], &bytes).unwrap();
    let b = broken(dir.path());
    assert_eq!((&b.file, b.offset), (&files[1], 0));
    assert!(matches!(b.reason, Reason::BadHeader(_)), "{}", b.reason);

    // A segment renamed to fill a gap: its header still names its own seq.
    let (dir, _, files) = several_segments();
    fs::remove_file(&files[2]).unwrap();
    let renamed = files[2].clone();
    fs::rename(&files[3], &renamed).unwrap();
    let b = broken(dir.path());
    assert_eq!(b.file, renamed);
    assert_eq!(
        b.reason,
        Reason::BadHeader("header does not match the file name")
    );
}

#[test]
fn streams_are_verified_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    let (b, _) = write_stream(dir.path(), 5, Options::DEFAULT_SEGMENT_BYTES);
    // Stream a's segment copied over stream b's name: it is not b's chain.
    let (fa, fb) = (&segments(dir.path(), a)[0], &segments(dir.path(), b)[0]);
    fs::copy(fa, fb).unwrap();
    let link = broken(dir.path());
    assert_eq!((link.stream, &link.file), (b, fb));
    assert!(matches!(link.reason, Reason::BadHeader(_)));
}

#[test]
fn records_moved_into_another_stream_do_not_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_stream(dir.path(), 3, Options::DEFAULT_SEGMENT_BYTES);
    let (b, _) = write_stream(dir.path(), 3, Options::DEFAULT_SEGMENT_BYTES);
    let (fa, fb) = (&segments(dir.path(), a)[0], &segments(dir.path(), b)[0]);
    // a's records under a header rewritten for b, with b's genesis as prev.
    let mut bytes = fs::read(fa).unwrap();
    bytes[12..28].copy_from_slice(b.as_bytes());
    bytes[36..68].copy_from_slice(&genesis_hash(b));
    let crc = crc32c(&bytes[..68]);
    bytes[68..72].copy_from_slice(&crc.to_le_bytes());
    fs::write(fb, &bytes).unwrap();
    let link = broken(dir.path());
    let first = spans(&bytes)[0].0 as u64;
    assert_eq!(
        (link.stream, &link.file, link.offset, link.seq),
        (b, fb, first, 1)
    );
    assert_eq!(link.reason, Reason::ChainBroken);
}

#[test]
fn prune_writes_an_anchor_that_verify_starts_from() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), options(600)).unwrap();
    let appended: Vec<_> = (1..=30)
        .map(|i| journal.append(&event(i)).unwrap())
        .collect();
    let stream = journal.stream();
    let files = segments(dir.path(), stream);

    let pruned = prune(dir.path(), stream, 15).unwrap();
    let kept_from = files
        .iter()
        .map(|f| first_seq(f))
        .filter(|&s| s <= 15)
        .max()
        .unwrap();
    assert_eq!(
        pruned.removed,
        files
            .iter()
            .filter(|f| first_seq(f) < kept_from)
            .cloned()
            .collect::<Vec<_>>()
    );
    let anchor_seq = kept_from - 1;
    assert_eq!(
        pruned.anchor,
        Some((anchor_seq, appended[anchor_seq as usize - 1].hash))
    );
    assert!(!pruned.retired);
    let anchor = dir.path().join(format!("{stream}.anchor"));
    assert!(
        fs::read_to_string(&anchor)
            .unwrap()
            .contains(&format!("\nseq {anchor_seq}\n"))
    );

    let summary = verify(dir.path()).unwrap();
    let s = &summary.streams[0];
    assert_eq!(
        (s.anchor, s.records, s.last_seq),
        (Some(anchor_seq), 30 - anchor_seq, 30)
    );
    let first = read_all(dir.path()).remove(0);
    assert_eq!(first.seq, kept_from);
    assert_eq!(first.prev, appended[kept_from as usize - 2].hash);

    // Pruning again to the same point does nothing; the live stream goes on.
    assert!(prune(dir.path(), stream, 15).unwrap().removed.is_empty());
    assert!(prune(dir.path(), stream, 1000).unwrap().removed.len() < files.len());
    assert!(
        !segments(dir.path(), stream).is_empty(),
        "a live stream keeps its last segment"
    );
    journal.append(&event(31)).unwrap();
    assert_eq!(verify(dir.path()).unwrap().streams[0].last_seq, 31);
}

#[test]
fn segments_deleted_without_an_anchor_are_missing() {
    let (dir, _, files) = several_segments();
    fs::remove_file(&files[0]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let b = broken(dir.path());
    assert_eq!((&b.file, b.offset), (&files[2], 0));
    assert_eq!(
        b.reason,
        Reason::Missing {
            expected: 1,
            found: first_seq(&files[2])
        }
    );
}

#[test]
fn segments_deleted_past_the_anchor_or_a_forged_anchor() {
    let (dir, stream, files) = several_segments();
    prune(dir.path(), stream, first_seq(&files[1])).unwrap();
    verify(dir.path()).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let b = broken(dir.path());
    let (expected, found) = (first_seq(&files[1]), first_seq(&files[2]));
    assert_eq!(b.reason, Reason::Missing { expected, found });

    // An anchor rewritten to cover the deletion, with a made-up hash.
    let anchor = dir.path().join(format!("{stream}.anchor"));
    let text = fs::read_to_string(&anchor).unwrap();
    let forged: String = text
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("seq", _)) => format!("seq {}\n", found - 1),
            Some(("hash", _)) => format!("hash {}\n", "ab".repeat(32)),
            _ => format!("{l}\n"),
        })
        .collect();
    fs::write(&anchor, forged).unwrap();
    let b = broken(dir.path());
    assert_eq!(
        (&b.file, b.offset, b.reason.clone()),
        (&files[2], 0, Reason::ChainBroken)
    );

    fs::write(&anchor, "garbage").unwrap();
    assert!(matches!(broken(dir.path()).reason, Reason::BadAnchor(_)));
}

#[test]
fn an_interrupted_prune_still_verifies_and_finishes_later() {
    let (dir, stream, files) = several_segments();
    let saved: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let pruned = prune(dir.path(), stream, first_seq(&files[3])).unwrap();
    assert_eq!(pruned.removed, files[..3].to_vec());
    // As if the crash came after the anchor and the first deletion.
    fs::write(&files[1], &saved[1]).unwrap();
    fs::write(&files[2], &saved[2]).unwrap();
    let summary = verify(dir.path()).unwrap();
    assert_eq!(summary.streams[0].last_seq, 30);

    // A leftover that disagrees with the anchor is caught.
    let mut bad = saved[2].clone();
    let (start, len) = *spans(&bad).last().unwrap();
    let body = start + FRAME_LEN;
    bad[body + 72] ^= 1;
    let prev: [u8; 32] = bad[body + 8..body + 40].try_into().unwrap();
    let seq = u64::from_le_bytes(bad[body..body + 8].try_into().unwrap());
    let hash = record_hash(&prev, seq, &bad[body + 72..start + len]);
    bad[body + 40..body + 72].copy_from_slice(&hash);
    fix_crc(&mut bad, (start, len));
    fs::write(&files[2], &bad).unwrap();
    assert!(matches!(broken(dir.path()).reason, Reason::BadAnchor(_)));
    fs::write(&files[2], &saved[2]).unwrap();

    let again = prune(dir.path(), stream, first_seq(&files[3])).unwrap();
    assert_eq!(again.removed, files[1..3].to_vec());
    assert_eq!(again.anchor, pruned.anchor);
    verify(dir.path()).unwrap();
}

#[test]
fn a_dead_stream_pruned_whole_is_retired_to_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, appended) = write_stream(dir.path(), 30, 600);
    let files = segments(dir.path(), stream);

    // Not all of it before before_seq: the last segment stays.
    assert!(!prune(dir.path(), stream, 30).unwrap().retired);
    assert_eq!(
        segments(dir.path(), stream),
        files[files.len() - 1..].to_vec()
    );

    let pruned = prune(dir.path(), stream, 31).unwrap();
    assert!(pruned.retired);
    assert_eq!(pruned.anchor, Some((30, appended[29].hash)));
    assert!(segments(dir.path(), stream).is_empty());
    let summary = verify(dir.path()).unwrap();
    let s = &summary.streams[0];
    assert_eq!(
        (s.anchor, s.records, s.last_seq, s.last_hash),
        (Some(30), 0, 30, appended[29].hash)
    );
    assert!(records_of(dir.path(), stream).is_empty());
    let (_, recovery) = Journal::open(dir.path(), options(600)).unwrap();
    assert!(recovery.streams.is_empty());
}

#[test]
fn prune_refuses_to_delete_a_broken_chain() {
    let (dir, stream, files) = several_segments();
    let mut bytes = fs::read(&files[0]).unwrap();
    let (start, _) = spans(&bytes)[1];
    bytes[start + FRAME_LEN + 72] ^= 1;
    fs::write(&files[0], &bytes).unwrap();
    let err = prune(dir.path(), stream, first_seq(&files[3])).unwrap_err();
    let b = match err {
        JournalError::Broken(b) => b,
        other => panic!("{other}"),
    };
    assert_eq!((&b.file, b.reason.clone()), (&files[0], Reason::Edited));
    assert_eq!(segments(dir.path(), stream), files, "nothing deleted");
}
