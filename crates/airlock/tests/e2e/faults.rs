//! Faults from outside the gateway (docs/security.md, "Faults"): what the
//! client sees, and that nothing is lost. The crash and journal faults are
//! in `recording.rs`, beside the recording they test.

use std::time::Duration;

use airlock_testkit::{Cluster, HostAuth};
use tokio_postgres::error::SqlState;

use crate::common::{Gateway, LOCAL_PG_PORT, local_config};

async fn connect(
    gw: &Gateway,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    gw.client("admin", token).await
}

/// Runs `step` (the cluster's `stop`, `start_again`: blocking) off the
/// runtime's threads.
async fn on_cluster(cluster: Cluster, step: fn(&Cluster)) -> Cluster {
    tokio::task::spawn_blocking(move || {
        step(&cluster);
        cluster
    })
    .await
    .unwrap()
}

/// `airlock audit verify` on the gateway's journal and store passes.
#[track_caller]
fn audit_verifies(gw: &Gateway) {
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["audit", "verify", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        crate::common::stderr(&verify)
    );
}

/// The SQLSTATE of a server error; `None` for a closed connection.
fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

/// An upstream restart while a session runs a statement and another is
/// idle: the running one gets the upstream's own `57P01`, the idle one an
/// error on its next statement, a session opened while the upstream is
/// down `08006`; sessions opened once it is back work, and every
/// statement that ran is recorded and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_restart_gives_clean_errors_and_new_sessions_work_once_it_is_back() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(HostAuth::Trust, false))
        .await
        .unwrap();
    let yaml = local_config("").replace(
        &format!("port: {LOCAL_PG_PORT}, database: test"),
        &format!("port: {}, database: postgres", cluster.port),
    );
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("dana", &["dba"]);
    let idle = connect(&gw, &token).await.unwrap();
    idle.simple_query("select 'before'").await.unwrap();
    let active = connect(&gw, &token).await.unwrap();
    let running = tokio::spawn(async move { active.simple_query("select pg_sleep(60)").await });
    // Stopped once the statement runs upstream.
    for n in 0.. {
        let sleeping = cluster
            .sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'");
        if sleeping == "1" {
            break;
        }
        assert!(n < 200, "the statement never ran upstream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cluster = on_cluster(cluster, Cluster::stop).await;

    let err = running
        .await
        .unwrap()
        .expect_err("the running statement fails");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    let err = idle
        .simple_query("select 'after'")
        .await
        .expect_err("the idle session is over");
    assert!(
        matches!(code(&err).as_deref(), None | Some("57P01" | "08006")),
        "{err:?}"
    );
    let err = connect(&gw, &token)
        .await
        .expect_err("no upstream, no session");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");

    let cluster = on_cluster(cluster, Cluster::start_again).await;
    let back = connect(&gw, &token)
        .await
        .expect("a session once the upstream is back");
    let rows = back.simple_query("select 'back'").await.unwrap();
    assert!(!rows.is_empty());
    drop(back);

    let recorded = gw.journal_texts();
    for sql in ["select 'before'", "select pg_sleep(60)", "select 'back'"] {
        assert!(
            recorded.iter().any(|e| e.contains(sql)),
            "{sql} is not in the journal"
        );
    }
    audit_verifies(&gw);
    gw.stop().await;
    drop(cluster);
}

/// The audit store down for a minute under a write load: statements go on
/// (the journal is the record), `/readyz` says why it is not ready, the
/// journal grows, and once the store is back shipping catches up: the
/// store holds every journaled event, every row written is a recorded
/// statement, and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_down_for_a_minute_under_load_loses_nothing() {
    let store = tokio::task::spawn_blocking(|| Cluster::start(HostAuth::Trust, false))
        .await
        .unwrap();
    let table = crate::common::unique("store_down");
    crate::common::direct(&format!("create table {table} (n int)"));
    let _drop = crate::common::Cleanup::sql(format!("drop table if exists {table}"));
    let yaml = local_config(&format!(
        "store: {{url: \"postgres://postgres@127.0.0.1:{}/postgres\"}}\n",
        store.port
    ));
    let gw = Gateway::start(&yaml).await;
    let ready = async |gw: &Gateway| {
        let r = reqwest::get(format!("http://{}/readyz", gw.http))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(ready(&gw).await.0, 200);
    let token = gw.token("dana", &["dba"]);
    let client = connect(&gw, &token).await.unwrap();
    // The load: one INSERT after another until told to stop.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let insert = format!("insert into {table} values ($1)");
    let load = tokio::spawn(async move {
        let mut n = 0i32;
        while !*stopped.borrow_and_update() {
            client.execute(&insert, &[&n]).await.expect("writes go on");
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    });
    let store = on_cluster(store, Cluster::stop).await;
    let down_at = std::time::Instant::now();
    let events_when_down = gw.journal_texts().len();
    // The shipper notices, and readiness says so.
    let mut why = String::new();
    for _ in 0..600 {
        let (status, body) = ready(&gw).await;
        if status == 503 {
            why = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        why.contains("audit store"),
        "not ready for the store: {why:?}"
    );
    // Down for a minute, under load.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down_at.elapsed())).await;
    let store = on_cluster(store, Cluster::start_again).await;
    let back_at = std::time::Instant::now();
    stop.send(true).unwrap();
    let written = load.await.unwrap();
    let journaled = gw.journal_texts();
    assert!(
        journaled.len() > events_when_down + 100,
        "the journal grew from {events_when_down} to {} events",
        journaled.len()
    );
    // Shipping catches up: the store holds every event journaled so far
    // (more may come: the load's session ends).
    let mut in_store = 0;
    for _ in 0..1200 {
        in_store = store.sql("select count(*) from events").parse().unwrap();
        if in_store >= journaled.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        in_store >= journaled.len(),
        "{in_store} events in the store, {} journaled",
        journaled.len()
    );
    eprintln!(
        "store down {:.0?}: {written} inserts, journal {events_when_down} -> {} events, caught up {:.1?} after the restart",
        back_at - down_at,
        journaled.len(),
        back_at.elapsed()
    );
    assert_eq!(ready(&gw).await.0, 200);
    // Every row written is a statement that was recorded.
    let rows: usize = crate::common::direct(&format!("select count(*) from {table}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows, written as usize);
    let inserts = journaled
        .iter()
        .filter(|e| e.contains(&format!("insert into {table}")))
        .count();
    assert!(
        inserts >= rows,
        "{inserts} recorded inserts for {rows} rows"
    );
    audit_verifies(&gw);
    gw.stop().await;
    drop(store);
}
