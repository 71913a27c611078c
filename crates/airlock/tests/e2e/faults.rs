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
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();

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

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again();
        cluster
    })
    .await
    .unwrap();
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
    gw.stop().await;
    drop(cluster);
}
