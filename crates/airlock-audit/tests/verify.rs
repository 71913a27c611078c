//! `verify` against real stores (SQLite and PostgreSQL): a journal recorded
//! with a `Recorder`, shipped, then the store tampered with by hand. Each
//! kind of tampering is named with its stream and seq, with the journal
//! alongside and (where it matters) without it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use airlock_audit::event::hex;
use airlock_audit::verify::{AnchorProblem, Edit};
use airlock_audit::{
    Broken, Problem, Recorder, Shipper, StoreBroken, VerifyError, ship_once, verify,
};
use airlock_journal::format::record_hash;
use airlock_store::Store;
use airlock_testkit::both;
use common::{raw, recorder, sessions, swap};
use tempfile::TempDir;
use uuid::Uuid;

both!(
    an_intact_store_verifies,
    an_edited_event_is_named,
    an_event_rewritten_with_a_fresh_hash_is_named,
    a_deleted_event_is_named,
    swapped_events_are_named,
    a_truncated_tail_is_named,
    a_deleted_high_water_mark_is_named,
    a_forged_anchor_is_named,
    verify_passes_while_a_shipper_ships,
);

/// 20 events in one stream, shipped.
struct Shipped {
    dir: TempDir,
    /// A journal directory with nothing in it: the store checked alone.
    empty: TempDir,
    _rec: Arc<Recorder>,
    store: Store,
    stream: Uuid,
    n: u64,
}

async fn shipped(url: &str) -> Shipped {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let n = sessions(&rec, 5, SystemTime::now());
    let store = Store::connect(url).await.unwrap();
    assert_eq!(ship_once(dir.path(), &store).await.unwrap().inserted, n);
    Shipped {
        dir,
        empty: tempfile::tempdir().unwrap(),
        _rec: rec,
        store,
        stream,
        n,
    }
}

async fn broken(dir: &Path, store: &Store) -> StoreBroken {
    match verify(dir, Some(store)).await {
        Err(VerifyError::Broken(Broken::Store(b))) => b,
        other => panic!("expected a broken link in the store, got {other:?}"),
    }
}

/// The message names the stream and the seq.
fn named(b: &StoreBroken, words: &str) {
    let text = b.to_string();
    assert!(text.contains(&b.stream.to_string()), "{text}");
    assert!(text.contains(&format!("seq {}:", b.seq)), "{text}");
    assert!(text.contains(words), "{text}");
}

async fn an_intact_store_verifies(url: &str) {
    let s = shipped(url).await;
    let report = verify(s.dir.path(), Some(&s.store)).await.unwrap();
    assert_eq!(report.journal.records(), s.n);
    assert_eq!(report.store.len(), 1);
    let st = &report.store[0];
    assert_eq!(
        (
            st.stream,
            st.anchor,
            st.events,
            st.last_seq,
            st.cross_checked
        ),
        (s.stream, None, s.n, s.n, s.n)
    );
    assert!(report.unshipped.is_empty());

    // The store alone, and the journal alone.
    let alone = verify(s.empty.path(), Some(&s.store)).await.unwrap();
    assert_eq!(
        (alone.store[0].events, alone.store[0].cross_checked),
        (s.n, 0)
    );
    let journal = verify(s.dir.path(), None).await.unwrap();
    assert!(journal.store.is_empty());

    // Not shipped yet is not broken.
    sessions(&s._rec, 1, SystemTime::now());
    let report = verify(s.dir.path(), Some(&s.store)).await.unwrap();
    assert_eq!(report.unshipped, vec![(s.stream, 4)]);
}

async fn an_edited_event_is_named(url: &str) {
    let s = shipped(url).await;
    raw(
        url,
        &format!(
            "UPDATE events SET payload = 'eyJ4IjoxfQ==' WHERE stream = '{}' AND seq = 7",
            s.stream
        ),
    )
    .await;
    for dir in [s.dir.path(), s.empty.path()] {
        let b = broken(dir, &s.store).await;
        assert_eq!(
            (b.stream, b.seq, &b.problem),
            (s.stream, 7, &Problem::Edited(Edit::HashMismatch))
        );
        named(&b, "edited");
    }
}

async fn an_event_rewritten_with_a_fresh_hash_is_named(url: &str) {
    let s = shipped(url).await;
    // Someone who knows the hash function rewrites seq 7 consistently.
    let prev = s.store.events(s.stream, 6, 1).await.unwrap()[0].prev;
    let hash = record_hash(&prev, 7, br#"{"x":1}"#);
    raw(
        url,
        &format!(
            "UPDATE events SET payload = 'eyJ4IjoxfQ==', hash = '{}' \
             WHERE stream = '{}' AND seq = 7",
            hex(&hash),
            s.stream
        ),
    )
    .await;
    // The journal's copy names the event itself...
    let b = broken(s.dir.path(), &s.store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (7, &Problem::Edited(Edit::DiffersFromJournal))
    );
    named(&b, "differs from the journal");
    // ...the store alone, the link after it.
    let b = broken(s.empty.path(), &s.store).await;
    assert_eq!((b.seq, &b.problem), (8, &Problem::ChainBroken));
    named(&b, "chain broken");
}

async fn a_deleted_event_is_named(url: &str) {
    let s = shipped(url).await;
    raw(
        url,
        &format!(
            "DELETE FROM events WHERE stream = '{}' AND seq = 9",
            s.stream
        ),
    )
    .await;
    let b = broken(s.dir.path(), &s.store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (
            9,
            &Problem::Missing {
                expected: 9,
                found: 10
            }
        )
    );
    named(&b, "deleted");
}

async fn swapped_events_are_named(url: &str) {
    let s = shipped(url).await;
    swap(url, s.stream, 5, 12).await;
    for dir in [s.dir.path(), s.empty.path()] {
        let b = broken(dir, &s.store).await;
        assert_eq!(
            (b.seq, &b.problem),
            (5, &Problem::Reordered { found_at: 12 })
        );
        named(&b, "reordered or swapped");
    }
}

async fn a_truncated_tail_is_named(url: &str) {
    let s = shipped(url).await;
    raw(
        url,
        &format!(
            "DELETE FROM events WHERE stream = '{}' AND seq > {}",
            s.stream,
            s.n - 3
        ),
    )
    .await;
    for (dir, journal_holds) in [(s.dir.path(), true), (s.empty.path(), false)] {
        let b = broken(dir, &s.store).await;
        assert_eq!(
            (b.seq, &b.problem),
            (
                s.n - 2,
                &Problem::TruncatedTail {
                    last: s.n - 3,
                    high_water: s.n,
                    journal_holds
                }
            )
        );
        named(&b, "tail truncated");
    }
    // All of it.
    raw(
        url,
        &format!("DELETE FROM events WHERE stream = '{}'", s.stream),
    )
    .await;
    let b = broken(s.dir.path(), &s.store).await;
    assert_eq!(b.seq, 1);
    assert!(matches!(b.problem, Problem::TruncatedTail { last: 0, .. }));
}

async fn a_deleted_high_water_mark_is_named(url: &str) {
    let s = shipped(url).await;
    raw(
        url,
        &format!("DELETE FROM streams WHERE stream = '{}'", s.stream),
    )
    .await;
    let b = broken(s.dir.path(), &s.store).await;
    assert_eq!((b.seq, &b.problem), (s.n, &Problem::NoHighWater));
    named(&b, "high-water mark was deleted");
}

async fn a_forged_anchor_is_named(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    let n_old = sessions(&rec, 10, old);
    sessions(&rec, 2, SystemTime::now());
    let store = Store::connect(url).await.unwrap();
    let mut shipper = Shipper::new(dir.path(), store.clone());
    shipper.ship().await.unwrap();
    let pruned = shipper.prune(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(pruned.store_events, n_old);
    verify(dir.path(), Some(&store)).await.unwrap();
    verify(empty.path(), Some(&store)).await.unwrap();

    let set_anchor = |sql: String| async move {
        raw(
            url,
            &format!("UPDATE anchors SET {sql} WHERE stream = '{stream}'"),
        )
        .await
    };
    set_anchor(format!("hash = '{}'", "cd".repeat(32))).await;
    let b = broken(dir.path(), &store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (
            n_old,
            &Problem::ForgedAnchor(AnchorProblem::DiffersFromJournal)
        )
    );
    named(&b, "forged anchor");
    let b = broken(empty.path(), &store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (
            n_old + 1,
            &Problem::ForgedAnchor(AnchorProblem::DoesNotChain)
        )
    );

    // Moved forward over events the store still holds.
    let real = store.events(stream, 0, 1).await.unwrap()[0].prev;
    set_anchor(format!("seq = {}, hash = '{}'", n_old + 2, hex(&real))).await;
    let b = broken(dir.path(), &store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (
            n_old + 2,
            &Problem::ForgedAnchor(AnchorProblem::DiffersFromJournal)
        )
    );
    let b = broken(empty.path(), &store).await;
    assert_eq!(
        (b.seq, &b.problem),
        (
            n_old + 1,
            &Problem::ForgedAnchor(AnchorProblem::EventsBeforeIt)
        )
    );
}

async fn verify_passes_while_a_shipper_ships(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let store = Store::connect(url).await.unwrap();
    sessions(&rec, 5, SystemTime::now());
    ship_once(dir.path(), &store).await.unwrap();
    let shipping = async {
        for _ in 0..20 {
            sessions(&rec, 2, SystemTime::now());
            ship_once(dir.path(), &store).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let verifying = async {
        for _ in 0..10 {
            verify(dir.path(), Some(&store)).await.unwrap();
        }
    };
    tokio::join!(shipping, verifying);
    let report = verify(dir.path(), Some(&store)).await.unwrap();
    assert_eq!(report.store[0].events, 4 * (5 + 2 * 20));
}

#[tokio::test]
async fn a_damaged_journal_is_named_first() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    sessions(&rec, 3, SystemTime::now());
    drop(rec);
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside the first record's payload (header 72, frame 8, fixed 72).
    bytes[72 + 8 + 72 + 10] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    match verify(dir.path(), None).await {
        Err(VerifyError::Broken(Broken::Journal(b))) => {
            assert_eq!((b.stream, b.seq), (stream, 1));
            let text = Broken::Journal(b).to_string();
            assert!(text.starts_with("journal: "), "{text}");
        }
        other => panic!("expected a broken journal, got {other:?}"),
    }
}
