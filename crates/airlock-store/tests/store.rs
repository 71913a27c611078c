//! Every check runs against SQLite (a temp dir) and PostgreSQL (a throwaway
//! database on `AIRLOCK_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`,
//! dropped afterwards even if the test panics), by `airlock_testkit::both!`.

use std::time::{Duration, Instant};

use airlock_store::{EventRow, Hash, SessionFilter, Store, StoreError};
use airlock_testkit::both;
use uuid::Uuid;

both!(
    migrations_are_idempotent,
    insert_and_read_back,
    reinsert_is_a_no_op,
    different_hash_conflicts,
    non_utf8_payload_round_trips,
    resume_point,
    delete_before_keeps_the_rest,
    high_water_moves_up_with_inserts,
    high_water_outlives_a_truncated_tail,
    prune_deletes_a_prefix_and_anchors_it,
    prune_never_deletes_the_last_shipped_event,
    sessions_filter_and_order,
    session_events_in_journal_order,
    upgrade_from_0001_backfills_the_high_water_marks,
);

fn h(n: u8) -> Hash {
    [n; 32]
}

/// A chain of `n` events; hashes are stand-ins (the store does not check
/// them), each `prev` the hash before.
fn chain(stream: Uuid, from: u64, n: u64) -> Vec<EventRow> {
    (from..from + n)
        .map(|seq| EventRow {
            stream,
            seq,
            prev: h(seq as u8 - 1),
            hash: h(seq as u8),
            payload: format!("{{\"seq\":{seq}}}").into_bytes(),
            session_id: (seq % 2 == 0).then(|| format!("s{seq}")),
            kind: Some("statement".into()),
            principal: None,
            connection: None,
            decision: (seq % 3 == 0).then(|| "allow".into()),
            recorded_at: 1_700_000_000_000 + seq as i64,
        })
        .collect()
}

async fn migrations_are_idempotent(url: &str) {
    let a = Store::connect(url).await.unwrap();
    a.insert_events(&chain(Uuid::now_v7(), 1, 2)).await.unwrap();
    a.close().await;
    // Again on a populated store, and a second pool while the first is open.
    let b = Store::connect(url).await.unwrap();
    let c = Store::connect(url).await.unwrap();
    b.ping().await.unwrap();
    c.ping().await.unwrap();
    assert_eq!(b.streams().await.unwrap().len(), 1);
}

async fn insert_and_read_back(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
    let one = chain(s1, 1, 5);
    let two = chain(s2, 1, 3);
    assert_eq!(store.insert_events(&one).await.unwrap(), 5);
    assert_eq!(store.insert_events(&two).await.unwrap(), 3);
    assert_eq!(store.insert_events(&[]).await.unwrap(), 0);

    assert_eq!(store.streams().await.unwrap(), vec![s1, s2]);
    assert_eq!(store.events(s1, 0, 100).await.unwrap(), one);
    assert_eq!(store.events(s2, 0, 100).await.unwrap(), two);
    // Paging: after a seq, bounded by the limit, in seq order.
    assert_eq!(store.events(s1, 1, 2).await.unwrap(), one[1..3]);
    assert_eq!(store.events(s1, 5, 10).await.unwrap(), vec![]);
    assert_eq!(store.events(Uuid::now_v7(), 0, 10).await.unwrap(), vec![]);
}

async fn reinsert_is_a_no_op(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let s = Uuid::now_v7();
    let events = chain(s, 1, 4);
    assert_eq!(store.insert_events(&events[..2]).await.unwrap(), 2);
    // A shipper resending an overlapping batch after a crash.
    assert_eq!(store.insert_events(&events).await.unwrap(), 2);
    assert_eq!(store.insert_events(&events).await.unwrap(), 0);
    assert_eq!(store.events(s, 0, 100).await.unwrap(), events);
}

async fn different_hash_conflicts(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let s = Uuid::now_v7();
    let events = chain(s, 1, 3);
    store.insert_events(&events[..2]).await.unwrap();

    let mut forged = events.clone();
    forged[1].hash = h(0xee);
    forged[1].payload = b"forged".to_vec();
    match store.insert_events(&forged).await {
        Err(StoreError::Conflict {
            stream,
            seq,
            stored,
            offered,
        }) => {
            assert_eq!((stream, seq), (s, 2));
            assert_eq!(stored, "02".repeat(32));
            assert_eq!(offered, "ee".repeat(32));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The batch was all-or-nothing: seq 3 did not go in, seq 2 is unchanged.
    assert_eq!(store.events(s, 0, 100).await.unwrap(), events[..2]);
}

async fn non_utf8_payload_round_trips(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let s = Uuid::now_v7();
    let mut e = chain(s, 1, 1).remove(0);
    e.payload = vec![0x00, 0xff, 0xfe, 0x80, b'\'', b'"', 0x00, 0xc3, 0x28];
    e.session_id = None;
    e.kind = None;
    e.decision = None;
    store.insert_events(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(store.events(s, 0, 1).await.unwrap(), vec![e]);
}

async fn resume_point(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s, other) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(store.shipped(s).await.unwrap(), None);
    store.insert_events(&chain(s, 1, 9)).await.unwrap();
    store.insert_events(&chain(other, 1, 12)).await.unwrap();
    // Max by number, not by text ("9" > "12" as strings).
    store.insert_events(&chain(s, 10, 3)).await.unwrap();
    assert_eq!(store.shipped(s).await.unwrap(), Some((12, h(12))));
    assert_eq!(store.shipped(other).await.unwrap(), Some((12, h(12))));
}

async fn delete_before_keeps_the_rest(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s, other) = (Uuid::now_v7(), Uuid::now_v7());
    let events = chain(s, 1, 6);
    store.insert_events(&events).await.unwrap();
    store.insert_events(&chain(other, 1, 6)).await.unwrap();
    assert_eq!(store.delete_before(s, 4).await.unwrap(), 3);
    assert_eq!(store.delete_before(s, 4).await.unwrap(), 0);
    assert_eq!(store.events(s, 0, 100).await.unwrap(), events[3..]);
    assert_eq!(store.shipped(s).await.unwrap(), Some((6, h(6))));
    assert_eq!(store.events(other, 0, 100).await.unwrap().len(), 6);
}

/// Raw SQL on the store's database, as someone with write access to it.
async fn raw(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

async fn high_water_moves_up_with_inserts(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s, other) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(store.high_water(s).await.unwrap(), None);
    let events = chain(s, 1, 6);
    store.insert_events(&events[..4]).await.unwrap();
    assert_eq!(store.high_water(s).await.unwrap(), Some((4, h(4))));
    assert_eq!(
        store.shipped_and_high_water(s).await.unwrap(),
        (Some((4, h(4))), Some((4, h(4))))
    );
    // A batch of two streams, out of order: each stream's highest seq.
    let mut mixed = vec![events[5].clone(), chain(other, 1, 2).remove(1)];
    mixed.push(events[4].clone());
    mixed.push(chain(other, 1, 1).remove(0));
    store.insert_events(&mixed).await.unwrap();
    assert_eq!(store.high_water(s).await.unwrap(), Some((6, h(6))));
    assert_eq!(store.high_water(other).await.unwrap(), Some((2, h(2))));
    // Resending older events never moves it down.
    assert_eq!(store.insert_events(&events[..2]).await.unwrap(), 0);
    assert_eq!(store.high_water(s).await.unwrap(), Some((6, h(6))));
    // A conflicting batch moves nothing.
    let mut forged = chain(s, 6, 3);
    forged[0].hash = h(0xee);
    assert!(store.insert_events(&forged).await.is_err());
    assert_eq!(store.high_water(s).await.unwrap(), Some((6, h(6))));
}

async fn high_water_outlives_a_truncated_tail(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s, gone) = (Uuid::now_v7(), Uuid::now_v7());
    store.insert_events(&chain(s, 1, 5)).await.unwrap();
    store.insert_events(&chain(gone, 1, 2)).await.unwrap();
    raw(
        url,
        &format!("DELETE FROM events WHERE stream = '{s}' AND seq > 3"),
    )
    .await;
    raw(url, &format!("DELETE FROM events WHERE stream = '{gone}'")).await;
    assert_eq!(store.shipped(s).await.unwrap(), Some((3, h(3))));
    assert_eq!(store.high_water(s).await.unwrap(), Some((5, h(5))));
    assert_eq!(
        store.shipped_and_high_water(s).await.unwrap(),
        (Some((3, h(3))), Some((5, h(5))))
    );
    assert_eq!(
        store.shipped_and_high_water(gone).await.unwrap(),
        (None, Some((2, h(2))))
    );
    assert_eq!(
        store.shipped_and_high_water(Uuid::now_v7()).await.unwrap(),
        (None, None)
    );
    // A stream with no events left is still listed, by its mark.
    assert_eq!(store.shipped(gone).await.unwrap(), None);
    assert_eq!(store.streams().await.unwrap(), vec![s, gone]);
}

async fn prune_deletes_a_prefix_and_anchors_it(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (s, other) = (Uuid::now_v7(), Uuid::now_v7());
    let events = chain(s, 1, 10);
    store.insert_events(&events).await.unwrap();
    store.insert_events(&chain(other, 1, 10)).await.unwrap();
    assert_eq!(store.anchor(s).await.unwrap(), None);
    assert_eq!(store.prune(s, 0).await.unwrap(), 0);
    assert_eq!(store.anchor(s).await.unwrap(), None);

    // Events 1..=4 were recorded before 1_700_000_000_005.
    assert_eq!(store.prune(s, 1_700_000_000_005).await.unwrap(), 4);
    assert_eq!(store.anchor(s).await.unwrap(), Some((4, h(4))));
    assert_eq!(store.events(s, 0, 100).await.unwrap(), events[4..]);
    assert_eq!(store.prune(s, 1_700_000_000_005).await.unwrap(), 0);
    assert_eq!(store.anchor(s).await.unwrap(), Some((4, h(4))));
    assert_eq!(store.events(other, 0, 100).await.unwrap().len(), 10);
    assert_eq!(store.anchor(other).await.unwrap(), None);

    // A clock that went back: seq 7 recorded "before" seq 6. Only a prefix
    // goes: pruning stops at the first event recorded after the cut.
    raw(
        url,
        &format!("UPDATE events SET recorded_at = 1 WHERE stream = '{s}' AND seq = 7"),
    )
    .await;
    assert_eq!(store.prune(s, 1_700_000_000_006).await.unwrap(), 1);
    assert_eq!(store.anchor(s).await.unwrap(), Some((5, h(5))));
    assert_eq!(store.events(s, 0, 100).await.unwrap()[0].seq, 6);
}

async fn prune_never_deletes_the_last_shipped_event(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let s = Uuid::now_v7();
    let events = chain(s, 1, 5);
    store.insert_events(&events).await.unwrap();
    assert_eq!(store.prune(s, i64::MAX).await.unwrap(), 4);
    assert_eq!(store.anchor(s).await.unwrap(), Some((4, h(4))));
    assert_eq!(store.events(s, 0, 100).await.unwrap(), events[4..]);
    assert_eq!(store.shipped(s).await.unwrap(), Some((5, h(5))));
    assert_eq!(store.prune(s, i64::MAX).await.unwrap(), 0);
    // Shipping goes on after it.
    store.insert_events(&chain(s, 6, 2)).await.unwrap();
    assert_eq!(store.prune(s, i64::MAX).await.unwrap(), 2);
    assert_eq!(store.anchor(s).await.unwrap(), Some((6, h(6))));
    assert_eq!(store.high_water(s).await.unwrap(), Some((7, h(7))));
    // Nothing to prune in a stream the store does not know.
    assert_eq!(store.prune(Uuid::now_v7(), i64::MAX).await.unwrap(), 0);
}

/// A session's start, as the shipper indexes it.
fn start(stream: Uuid, seq: u64, session: &str, principal: &str, conn: &str, at: i64) -> EventRow {
    EventRow {
        stream,
        seq,
        prev: h(seq as u8 - 1),
        hash: h(seq as u8),
        payload: format!("start {session}").into_bytes(),
        session_id: Some(session.into()),
        kind: Some("session_start".into()),
        principal: Some(principal.into()),
        connection: Some(conn.into()),
        decision: None,
        recorded_at: at,
    }
}

fn statement(stream: Uuid, seq: u64, session: &str, decision: &str, at: i64) -> EventRow {
    EventRow {
        stream,
        seq,
        prev: h(seq as u8 - 1),
        hash: h(seq as u8),
        payload: format!("statement {session} {decision}").into_bytes(),
        session_id: Some(session.into()),
        kind: Some("statement".into()),
        principal: None,
        connection: None,
        decision: Some(decision.into()),
        recorded_at: at,
    }
}

async fn sessions_filter_and_order(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .insert_events(&[
            start(a, 1, "s1", "alice", "prod", 100),
            statement(a, 2, "s1", "allow", 101),
            start(a, 3, "s2", "bob", "prod", 200),
            statement(a, 4, "s2", "deny", 201),
            statement(a, 5, "s1", "deny", 202),
            start(a, 6, "s3", "alice", "staging", 300),
            statement(a, 7, "s3", "allow", 301),
        ])
        .await
        .unwrap();
    // Another process's stream; a `result` carrying a decision-like column
    // is not a statement.
    let mut result = statement(b, 2, "s4", "deny", 401);
    result.kind = Some("result".into());
    store
        .insert_events(&[start(b, 1, "s4", "carol", "prod", 400), result])
        .await
        .unwrap();

    let ids = |rows: Vec<EventRow>| {
        rows.into_iter()
            .map(|r| r.session_id.unwrap())
            .collect::<Vec<_>>()
    };
    let all = store.sessions(&SessionFilter::default()).await.unwrap();
    assert!(
        all.iter()
            .all(|r| r.kind.as_deref() == Some("session_start"))
    );
    assert_eq!(all[0].principal.as_deref(), Some("carol"));
    assert_eq!(all[0].connection.as_deref(), Some("prod"));
    assert_eq!(ids(all), ["s4", "s3", "s2", "s1"]);

    let f = |edit: fn(&mut SessionFilter)| {
        let mut f = SessionFilter::default();
        edit(&mut f);
        f
    };
    let alice = f(|f| f.principal = Some("alice".into()));
    assert_eq!(ids(store.sessions(&alice).await.unwrap()), ["s3", "s1"]);
    let prod = f(|f| f.connection = Some("prod".into()));
    assert_eq!(
        ids(store.sessions(&prod).await.unwrap()),
        ["s4", "s2", "s1"]
    );
    let since = f(|f| f.since_ms = Some(200));
    assert_eq!(
        ids(store.sessions(&since).await.unwrap()),
        ["s4", "s3", "s2"]
    );
    let denied = f(|f| f.decision = Some("deny".into()));
    assert_eq!(ids(store.sessions(&denied).await.unwrap()), ["s2", "s1"]);
    let limited = f(|f| f.limit = 2);
    assert_eq!(ids(store.sessions(&limited).await.unwrap()), ["s4", "s3"]);
    let everything = SessionFilter {
        principal: Some("alice".into()),
        connection: Some("prod".into()),
        since_ms: Some(50),
        decision: Some("deny".into()),
        limit: 10,
    };
    assert_eq!(ids(store.sessions(&everything).await.unwrap()), ["s1"]);
    let none = f(|f| f.principal = Some("mallory".into()));
    assert!(store.sessions(&none).await.unwrap().is_empty());
}

async fn session_events_in_journal_order(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .insert_events(&[
            statement(b, 2, "s1", "allow", 5),
            start(b, 1, "s1", "alice", "prod", 9),
            start(a, 1, "s1", "alice", "prod", 1),
            statement(a, 2, "other", "allow", 2),
            statement(a, 3, "s1", "deny", 3),
        ])
        .await
        .unwrap();
    let got: Vec<_> = store
        .session_events("s1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.stream, r.seq))
        .collect();
    assert_eq!(got, [(a, 1), (a, 3), (b, 1), (b, 2)]);
    assert!(store.session_events("nope").await.unwrap().is_empty());
}

async fn upgrade_from_0001_backfills_the_high_water_marks(url: &str) {
    // The first migration alone, from a copy of its file (same checksum).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_events.sql"),
        dir.path().join("0001_events.sql"),
    )
    .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let (s, other) = (Uuid::now_v7(), Uuid::now_v7());
    for (stream, n) in [(s, 12), (other, 3)] {
        for seq in 1..=n {
            sqlx::query(
                "INSERT INTO events (stream, seq, prev, hash, payload, recorded_at) \
                 VALUES ($1, $2, $3, $4, 'e30=', 0)",
            )
            .bind(stream.to_string())
            .bind(seq)
            .bind("00".repeat(32))
            .bind(format!("{seq:02x}").repeat(32))
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;

    let store = Store::connect(url).await.unwrap();
    assert_eq!(store.high_water(s).await.unwrap(), Some((12, h(12))));
    assert_eq!(store.high_water(other).await.unwrap(), Some((3, h(3))));
    let old = store.events(s, 0, 1).await.unwrap().remove(0);
    assert_eq!((old.principal, old.decision), (None, None));
}

#[tokio::test]
async fn store_that_is_down_fails_quickly() {
    let port = airlock_testkit::free_port();
    let start = Instant::now();
    let err = Store::connect_with(
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Db(_) | StoreError::Timeout(_)),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn unroutable_store_times_out() {
    // TEST-NET-1 (RFC 5737): packets go nowhere, so only the timeout ends it.
    let start = Instant::now();
    let err = Store::connect_with(
        "postgres://postgres@192.0.2.1:5432/x",
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Db(_) | StoreError::Timeout(_)),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn missing_sqlite_file_without_rwc_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("absent.db").display());
    assert!(Store::connect(&url).await.is_err());
}
