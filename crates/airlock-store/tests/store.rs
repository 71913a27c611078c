//! Every check runs against SQLite (a temp dir) and PostgreSQL (a throwaway
//! database on `AIRLOCK_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`,
//! dropped afterwards even if the test panics).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_store::{EventRow, Hash, Store, StoreError};
use sqlx::Connection as _;
use uuid::Uuid;

fn pg_base() -> String {
    std::env::var("AIRLOCK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Drops its database on drop, from a thread of its own: `Drop` cannot
/// await, and the test's runtime may be the one unwinding.
struct PgDb {
    name: String,
}

impl PgDb {
    async fn create() -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "airlock_store_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .expect("PostgreSQL for tests (set AIRLOCK_TEST_PG)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        PgDb { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await?;
                sqlx::query(&sql).execute(&mut c).await.map(drop)
            })
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {res:?}", self.name);
        }
    }
}

/// Keeps the backing database alive for the test's duration.
enum Backing {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgDb),
}

async fn sqlite() -> (String, Backing) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    (url, Backing::Sqlite(dir))
}

async fn pg() -> (String, Backing) {
    let db = PgDb::create().await;
    (db.url(), Backing::Pg(db))
}

/// Runs `$check(url)` once per backend, as `<name>_sqlite` and `<name>_pg`.
macro_rules! both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (url, _keep) = super::sqlite().await;
                super::$name(&url).await;
            }
            #[tokio::test]
            async fn pg() {
                let (url, _keep) = super::pg().await;
                super::$name(&url).await;
            }
        }
    )* };
}

both!(
    migrations_are_idempotent,
    insert_and_read_back,
    reinsert_is_a_no_op,
    different_hash_conflicts,
    non_utf8_payload_round_trips,
    resume_point,
    delete_before_keeps_the_rest,
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

#[tokio::test]
async fn store_that_is_down_fails_quickly() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
