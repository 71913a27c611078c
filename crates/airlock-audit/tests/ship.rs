//! The shipper against real stores (SQLite and PostgreSQL): events recorded
//! with a `Recorder` in a temp journal, shipped with `ship_once`/`Shipper`,
//! or by `run` through store outages.

mod common;

use std::fs;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use airlock_audit::event::{Body, Decision, PolicyReload};
use airlock_audit::{Event, ShipError, Shipper, connect, run, ship_once, verify};
use airlock_journal::Journal;
use airlock_store::{SessionFilter, Store};
use airlock_testkit::{PgDb, both};
use common::{Proxy, eventually, raw, recorder, session, sessions};

both!(
    ships_and_indexes_every_event,
    shipping_is_idempotent,
    resumes_after_a_crash,
    a_torn_tail_keeps_every_complete_event,
    undecodable_payloads_ship_as_unknown,
    a_truncated_store_halts_that_stream_only,
    a_record_that_does_not_chain_from_the_store_is_an_alarm,
    retention_prunes_both_and_verify_still_passes,
    a_damaged_journal_stream_ships_up_to_the_damage,
);

fn epoch_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

async fn ships_and_indexes_every_event(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let at = epoch_ms(1_700_000_000_000);
    let (s1, n1) = session(
        &rec,
        "alice",
        "prod",
        &[Decision::Allow, Decision::Deny],
        at,
    );
    let later = at + Duration::from_secs(1);
    let (s2, n2) = session(&rec, "bob", "staging", &[Decision::Allow], later);
    rec.record(&Event::at(
        later,
        Body::PolicyReload(PolicyReload {
            ok: true,
            error: None,
            config_sha256: None,
        }),
    ))
    .unwrap();
    let total = n1 + n2 + 1;

    let store = Store::connect(url).await.unwrap();
    let report = ship_once(dir.path(), &store).await.unwrap();
    assert_eq!((report.sent, report.inserted), (total, total));
    assert!(report.alarms.is_empty(), "{report:?}");
    assert!(report.journal_errors.is_empty(), "{report:?}");
    let stream = rec.stream().unwrap();
    assert_eq!(store.high_water(stream).await.unwrap().unwrap().0, total);

    let listed = store.sessions(&SessionFilter::default()).await.unwrap();
    let ids: Vec<_> = listed
        .iter()
        .map(|r| r.session_id.clone().unwrap())
        .collect();
    assert_eq!(ids, [s2.to_string(), s1.to_string()]);
    assert_eq!(listed[0].principal.as_deref(), Some("bob"));
    assert_eq!(listed[0].connection.as_deref(), Some("staging"));
    let denied = SessionFilter {
        decision: Some("deny".into()),
        ..SessionFilter::default()
    };
    let denied = store.sessions(&denied).await.unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].session_id, Some(s1.to_string()));

    let events = store.session_events(&s1.to_string()).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.clone().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "session_start",
            "statement",
            "result",
            "statement",
            "session_end"
        ]
    );
    let decisions: Vec<_> = events.iter().map(|e| e.decision.as_deref()).collect();
    assert_eq!(decisions, [None, Some("allow"), None, Some("deny"), None]);
    assert!(events.iter().all(|e| e.recorded_at == 1_700_000_000_000));
    assert_eq!(
        Event::decode(&events[0].payload).unwrap().session(),
        Some(s1)
    );
    // The reload belongs to no session, and is stored all the same.
    let last = store.events(stream, total - 1, 10).await.unwrap();
    assert_eq!(last[0].kind.as_deref(), Some("policy_reload"));
    assert_eq!(last[0].session_id, None);
}

async fn shipping_is_idempotent(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let n = sessions(&rec, 8, SystemTime::now());
    let store = Store::connect(url).await.unwrap();

    let mut shipper = Shipper::new(dir.path(), store.clone());
    assert_eq!(shipper.ship().await.unwrap().inserted, n);
    // Nothing new: the store is not even asked.
    let again = shipper.ship().await.unwrap();
    assert_eq!((again.checked, again.sent, again.inserted), (0, 0, 0));
    // A fresh shipper (a restart) resumes where the store is.
    let fresh = ship_once(dir.path(), &store).await.unwrap();
    assert_eq!((fresh.checked, fresh.sent, fresh.inserted), (1, 0, 0));

    // Two shippers racing over the same new events: each event goes in once.
    let more = sessions(&rec, 3, SystemTime::now());
    let (a, b) = tokio::join!(ship_once(dir.path(), &store), ship_once(dir.path(), &store));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.inserted + b.inserted, more);
    assert!(a.alarms.is_empty() && b.alarms.is_empty());
    let stream = rec.stream().unwrap();
    assert_eq!(
        store.events(stream, 0, 1000).await.unwrap().len() as u64,
        n + more
    );
    assert_eq!(shipper.ship().await.unwrap().inserted, 0);
    verify(dir.path(), Some(&store)).await.unwrap();
}

async fn resumes_after_a_crash(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(url).await.unwrap();
    let rec = recorder(dir.path());
    let old = rec.stream().unwrap();
    let n1 = sessions(&rec, 3, SystemTime::now());
    assert_eq!(ship_once(dir.path(), &store).await.unwrap().inserted, n1);
    let n2 = sessions(&rec, 2, SystemTime::now());
    // The process dies before these are shipped.
    drop(rec);

    let rec = recorder(dir.path());
    let new = rec.stream().unwrap();
    assert_ne!(new, old);
    let n3 = sessions(&rec, 1, SystemTime::now());
    let report = ship_once(dir.path(), &store).await.unwrap();
    assert_eq!(report.inserted, n2 + n3);
    assert_eq!(store.high_water(old).await.unwrap().unwrap().0, n1 + n2);
    assert_eq!(store.high_water(new).await.unwrap().unwrap().0, n3);

    let checked = verify(dir.path(), Some(&store)).await.unwrap();
    assert_eq!(checked.store.len(), 2);
    assert!(checked.unshipped.is_empty(), "{checked:?}");
    let cross: u64 = checked.store.iter().map(|s| s.cross_checked).sum();
    assert_eq!(cross, n1 + n2 + n3);
}

async fn a_torn_tail_keeps_every_complete_event(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let n = sessions(&rec, 5, SystemTime::now());
    drop(rec);
    // A crash in the middle of a write: part of a record at the end.
    let segments = segments_of(dir.path(), stream);
    let mut last = fs::OpenOptions::new()
        .append(true)
        .open(segments.last().unwrap())
        .unwrap();
    last.write_all(&[0x50, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(last);

    let rec = recorder(dir.path());
    assert!(rec.ready().is_ok());
    let store = Store::connect(url).await.unwrap();
    let report = ship_once(dir.path(), &store).await.unwrap();
    assert!(report.journal_errors.is_empty(), "{report:?}");
    assert_eq!(report.inserted, n);
    assert_eq!(store.high_water(stream).await.unwrap().unwrap().0, n);
    let checked = verify(dir.path(), Some(&store)).await.unwrap();
    let summary = checked
        .journal
        .streams
        .iter()
        .find(|s| s.stream == stream)
        .unwrap();
    assert_eq!(summary.set_aside.len(), 1, "the torn bytes were kept aside");
}

async fn undecodable_payloads_ship_as_unknown(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), common::options()).unwrap();
    let stream = journal.stream();
    let garbage = b"\xff\xfe not an event".to_vec();
    journal.append(&garbage).unwrap();
    journal
        .append(br#"{"v":1,"at":"x","kind":"a_kind_from_a_later_version"}"#)
        .unwrap();
    let reload = Event::at(
        epoch_ms(1_700_000_000_000),
        Body::PolicyReload(PolicyReload {
            ok: false,
            error: Some("bad".into()),
            config_sha256: None,
        }),
    );
    journal.append(&reload.encode()).unwrap();
    journal.close().unwrap();

    let store = Store::connect(url).await.unwrap();
    assert_eq!(ship_once(dir.path(), &store).await.unwrap().inserted, 3);
    let rows = store.events(stream, 0, 10).await.unwrap();
    let kinds: Vec<_> = rows.iter().map(|r| r.kind.as_deref()).collect();
    assert_eq!(
        kinds,
        [Some("unknown"), Some("unknown"), Some("policy_reload")]
    );
    assert_eq!(rows[0].payload, garbage);
    assert!(rows[0].recorded_at > 1_700_000_000_000, "shipping time");
    assert_eq!(rows[2].recorded_at, 1_700_000_000_000);
    verify(dir.path(), Some(&store)).await.unwrap();
}

async fn a_truncated_store_halts_that_stream_only(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(url).await.unwrap();
    let rec_a = recorder(dir.path());
    let a = rec_a.stream().unwrap();
    let na = sessions(&rec_a, 2, SystemTime::now());
    drop(rec_a);
    let rec_b = recorder(dir.path());
    let b = rec_b.stream().unwrap();
    let nb = sessions(&rec_b, 1, SystemTime::now());
    assert_eq!(
        ship_once(dir.path(), &store).await.unwrap().inserted,
        na + nb
    );

    raw(
        url,
        &format!(
            "DELETE FROM events WHERE stream = '{a}' AND seq > {}",
            na - 2
        ),
    )
    .await;
    let mut shipper = Shipper::new(dir.path(), store.clone());
    let more = sessions(&rec_b, 1, SystemTime::now());
    let report = shipper.ship().await.unwrap();
    assert_eq!(report.alarms.len(), 1, "{report:?}");
    let alarm = &report.alarms[0];
    assert_eq!((alarm.stream, alarm.seq), (a, na - 1));
    assert!(alarm.reason.contains("tail was deleted"), "{alarm}");
    assert_eq!(report.inserted, more, "the other stream ships on");

    // Halted: not re-shipped (which would hide the evidence), not re-alarmed.
    let more = sessions(&rec_b, 1, SystemTime::now());
    let report = shipper.ship().await.unwrap();
    assert!(report.alarms.is_empty());
    assert_eq!(report.inserted, more);
    assert_eq!(shipper.halted().count(), 1);
    assert_eq!(store.shipped(a).await.unwrap().unwrap().0, na - 2);
    assert_eq!(store.high_water(a).await.unwrap().unwrap().0, na);
    let b_shipped = store.shipped(b).await.unwrap().unwrap().0;
    assert_eq!(b_shipped, nb + 2 * more);
}

async fn a_record_that_does_not_chain_from_the_store_is_an_alarm(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(url).await.unwrap();
    let rec = recorder(dir.path());
    let s = rec.stream().unwrap();
    let n = sessions(&rec, 1, SystemTime::now());
    ship_once(dir.path(), &store).await.unwrap();
    // The store's last event rewritten, mark and all.
    let forged = "ab".repeat(32);
    raw(
        url,
        &format!("UPDATE events SET hash = '{forged}' WHERE stream = '{s}' AND seq = {n}"),
    )
    .await;
    raw(
        url,
        &format!("UPDATE streams SET shipped_hash = '{forged}' WHERE stream = '{s}'"),
    )
    .await;
    sessions(&rec, 1, SystemTime::now());
    let report = ship_once(dir.path(), &store).await.unwrap();
    assert_eq!(report.inserted, 0);
    assert_eq!(report.alarms.len(), 1);
    assert_eq!((report.alarms[0].stream, report.alarms[0].seq), (s, n + 1));
    assert!(
        report.alarms[0].reason.contains("does not chain"),
        "{}",
        report.alarms[0]
    );
}

async fn retention_prunes_both_and_verify_still_passes(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    let n_old = sessions(&rec, 20, old);
    let n_new = sessions(&rec, 3, SystemTime::now());
    let store = Store::connect(url).await.unwrap();
    let mut shipper = Shipper::new(dir.path(), store.clone());
    shipper.ship().await.unwrap();
    let segments_before = count_segments(dir.path());
    assert!(segments_before > 5, "{segments_before} segments");

    let pruned = shipper.prune(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(pruned.store_events, n_old);
    assert!(pruned.journal_segments > 0, "{pruned:?}");
    assert!(pruned.kept.is_empty(), "{pruned:?}");
    assert_eq!(
        count_segments(dir.path()),
        segments_before - pruned.journal_segments
    );
    let (anchor, _) = store.anchor(stream).await.unwrap().unwrap();
    assert_eq!(anchor, n_old);

    let checked = verify(dir.path(), Some(&store)).await.unwrap();
    assert_eq!(checked.store.len(), 1);
    let s = &checked.store[0];
    assert_eq!(
        (s.anchor, s.events, s.last_seq),
        (Some(n_old), n_new, n_old + n_new)
    );
    assert_eq!(
        s.cross_checked, n_new,
        "the journal kept what the store kept"
    );

    // Again: nothing more is old enough.
    let again = shipper.prune(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((again.store_events, again.journal_segments), (0, 0));
    // Shipping goes on from where it was.
    let more = sessions(&rec, 1, SystemTime::now());
    assert_eq!(shipper.ship().await.unwrap().inserted, more);
    verify(dir.path(), Some(&store)).await.unwrap();
}

async fn a_damaged_journal_stream_ships_up_to_the_damage(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let rec_a = recorder(dir.path());
    let a = rec_a.stream().unwrap();
    sessions(&rec_a, 6, SystemTime::now());
    drop(rec_a);
    let rec_b = recorder(dir.path());
    let nb = sessions(&rec_b, 1, SystemTime::now());
    // A flipped bit inside the first record of a's second segment.
    let second = segments_of(dir.path(), a)[1].clone();
    let name = second.file_name().unwrap().to_str().unwrap().to_string();
    let first_seq: u64 = name[37..57].parse().unwrap();
    let mut bytes = fs::read(&second).unwrap();
    bytes[72 + 8 + 72 + 10] ^= 0x20;
    fs::write(&second, &bytes).unwrap();

    let store = Store::connect(url).await.unwrap();
    let mut shipper = Shipper::new(dir.path(), store.clone());
    let report = shipper.ship().await.unwrap();
    assert_eq!(report.journal_errors.len(), 1, "{report:?}");
    assert!(report.journal_errors[0].contains(&a.to_string()));
    assert!(report.alarms.is_empty());
    assert_eq!(report.inserted, first_seq - 1 + nb);
    assert_eq!(store.shipped(a).await.unwrap().unwrap().0, first_seq - 1);
    // Not read again (nor reported again) while it does not change.
    let again = shipper.ship().await.unwrap();
    assert_eq!((again.checked, again.journal_errors.len()), (0, 0));
}

fn segments_of(dir: &std::path::Path, stream: uuid::Uuid) -> Vec<std::path::PathBuf> {
    let prefix = stream.to_string();
    let mut segments: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(&prefix) && name.ends_with(".seg")
        })
        .collect();
    segments.sort();
    segments
}

fn count_segments(dir: &std::path::Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".seg")
        })
        .count()
}

#[tokio::test]
async fn run_catches_up_when_the_sqlite_store_appears() {
    let dir = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let store_dir = base.path().join("not-yet");
    let url = format!("sqlite://{}?mode=rwc", store_dir.join("store.db").display());
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let mut n = sessions(&rec, 3, SystemTime::now());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        rec.clone(),
        url.clone(),
        Duration::from_millis(500),
        Some(Duration::from_secs(3600)),
        async {
            let _ = rx.await;
        },
    ));
    let r = &*rec;
    eventually(
        Duration::from_secs(5),
        "the store reported down",
        || async move { r.ready().is_err() },
    )
    .await;
    assert!(rec.ready().unwrap_err().starts_with("audit store"));
    n += sessions(&rec, 2, SystemTime::now());

    fs::create_dir(&store_dir).unwrap();
    // Ready again once the shipper connected (and migrated) and shipped.
    eventually(
        Duration::from_secs(15),
        "the shipper to connect",
        || async move { r.ready().is_ok() },
    )
    .await;
    let store = Store::connect(&url).await.unwrap();
    let st = &store;
    let shipped = |want: u64| async move {
        st.shipped(stream).await.unwrap().map(|(seq, _)| seq) == Some(want)
    };
    eventually(Duration::from_secs(10), "the backlog shipped", || {
        shipped(n)
    })
    .await;
    // Connected, an append ships promptly.
    n += sessions(&rec, 1, SystemTime::now());
    eventually(Duration::from_secs(5), "a new event shipped", || shipped(n)).await;

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    verify(dir.path(), Some(&store)).await.unwrap();
}

#[tokio::test]
async fn run_rides_out_a_postgres_outage() {
    let db = PgDb::create("airlock_audit_test").await;
    let proxy = Proxy::closed();
    let url = proxy.url(db.name());
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let stream = rec.stream().unwrap();
    let mut n = sessions(&rec, 2, SystemTime::now());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        rec.clone(),
        url.clone(),
        Duration::from_secs(1),
        None,
        async {
            let _ = rx.await;
        },
    ));
    let r = &*rec;
    let down = || async move { r.ready().is_err() };
    let up = || async move { r.ready().is_ok() };
    eventually(Duration::from_secs(5), "the store reported down", down).await;

    proxy.start().await;
    // Ready again once the shipper connected and shipped.
    eventually(Duration::from_secs(15), "the shipper to connect", up).await;
    let store = Store::connect(&url).await.unwrap();
    let st = &store;
    let shipped = |want: u64| async move {
        st.shipped(stream).await.ok().flatten().map(|(seq, _)| seq) == Some(want)
    };
    eventually(Duration::from_secs(10), "the backlog shipped", || {
        shipped(n)
    })
    .await;

    // Down again, with the pool connected: connections cut and refused.
    proxy.stop().await;
    n += sessions(&rec, 2, SystemTime::now());
    eventually(Duration::from_secs(10), "the outage noticed", down).await;
    assert!(matches!(
        ship_once(dir.path(), &store).await,
        Err(ShipError::Store(_))
    ));
    n += sessions(&rec, 1, SystemTime::now());

    proxy.start().await;
    eventually(Duration::from_secs(30), "the backlog shipped", || {
        shipped(n)
    })
    .await;
    eventually(Duration::from_secs(5), "readiness", up).await;

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    verify(dir.path(), Some(&store)).await.unwrap();
    store.close().await;
    proxy.stop().await;
}

#[tokio::test]
async fn stop_before_the_store_answers_returns() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorder(dir.path());
    let port = Proxy::closed().port;
    let url = format!("postgres://postgres@127.0.0.1:{port}/x");
    let started = std::time::Instant::now();
    let connected = connect(
        &rec,
        &url,
        Duration::from_millis(200),
        tokio::time::sleep(Duration::from_millis(600)),
    )
    .await;
    assert!(connected.is_none());
    assert!(rec.ready().unwrap_err().starts_with("audit store"));
    run(
        rec,
        url,
        Duration::from_millis(200),
        None,
        tokio::time::sleep(Duration::from_millis(600)),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
}
