//! Session caps per principal and per connection (`limits.per_principal`,
//! `limits.per_connection`) through the PostgreSQL door, with real
//! tokio-postgres sessions held open; the MySQL and MCP doors have theirs
//! in their suites.

use crate::common::{Cleanup, Gateway, count_rows, direct, local_config, unique};

async fn connect(
    gw: &Gateway,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    gw.client("readonly", token).await
}

#[track_caller]
fn refused_with(result: Result<tokio_postgres::Client, tokio_postgres::Error>, wanted: &str) {
    let err = result.expect_err("the session is refused");
    let db = err.as_db_error().expect("a FATAL from airlock");
    assert_eq!(db.code().code(), "53300", "{}", db.message());
    assert!(db.message().contains(wanted), "{}", db.message());
    let hint: serde_json::Value = serde_json::from_str(db.hint().expect("a hint")).unwrap();
    assert_eq!(
        (&hint["rule"], &hint["retry"]),
        (&"max-sessions".into(), &true.into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn principals_and_connections_get_their_session_caps() {
    let gw = Gateway::start(&local_config(
        "limits: {per_principal: {max_sessions: 2}, per_connection: {max_sessions: 3}}\n",
    ))
    .await;
    let alice = gw.token("alice", &["dba"]);
    let bob = gw.token("bob", &["dba"]);
    let carol = gw.token("carol", &["dba"]);
    let a1 = connect(&gw, &alice).await.unwrap();
    let a2 = connect(&gw, &alice).await.unwrap();
    // Alice's third: her cap, and the message names it.
    refused_with(
        connect(&gw, &alice).await,
        "alice already has 2 sessions open",
    );
    refused_with(
        connect(&gw, &alice).await,
        "limits.per_principal.max_sessions",
    );
    // Bob is counted apart: the connection's third session.
    let b1 = connect(&gw, &bob).await.unwrap();
    b1.query_one("select 1", &[]).await.unwrap();
    // Carol meets the connection's cap.
    refused_with(
        connect(&gw, &carol).await,
        "limits.per_connection.max_sessions",
    );
    // A session that ends gives its places back.
    drop(a1);
    let mut again = None;
    for _ in 0..100 {
        match connect(&gw, &carol).await {
            Ok(c) => {
                again = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let c1 = again.expect("carol gets the place alice's session gave back");
    c1.query_one("select 1", &[]).await.unwrap();
    a2.query_one("select 1", &[]).await.unwrap();
    // Refusals are counted by door and limit.
    let metrics = gw.metrics().await;
    let count = |limit: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("airlock_limit_refusals_total")
                    && l.contains("door=\"postgres\"")
                    && l.contains(&format!("limit=\"{limit}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count("per_principal_sessions") >= 2, "{metrics}");
    assert!(count("per_connection_sessions") >= 1, "{metrics}");
    drop((a2, b1, c1));
    gw.stop().await;
}

/// A session that fails after it was admitted (its upstream is down) gives
/// its place back: the principal's next session gets in.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_upstream_fails_gives_its_place_back() {
    // The local config with a second connection whose upstream is down.
    let yaml = local_config("limits: {per_principal: {max_sessions: 1}}\n").replacen(
        "connections:\n",
        "connections:\n  down:\n    upstream: {host: 127.0.0.1, port: 1, database: test, tls: disable}\n    roles:\n      readonly: {user: postgres}\n",
        1,
    );
    let gw = Gateway::start(&yaml).await;
    let alice = gw.token("alice", &["dba"]);
    for _ in 0..3 {
        let down = tokio_postgres::connect(
            &format!("{} password={alice}", gw.conninfo("down", "readonly")),
            tokio_postgres::NoTls,
        )
        .await;
        let err = down.err().expect("the upstream is down");
        let db = err.as_db_error().expect("a FATAL from airlock");
        assert_eq!(db.code().code(), "08006", "{}", db.message());
    }
    let client = connect(&gw, &alice)
        .await
        .expect("the place was given back");
    client.query_one("select 1", &[]).await.unwrap();
    gw.stop().await;
}

/// `limits.per_principal.statements_per_second`: one bucket shared by a
/// principal's sessions, charged per statement of a Query and per
/// execution of a prepared statement; a statement over it gets `54000`
/// naming the limit, never reaches the database, is recorded as denied
/// and counted; another principal is unaffected, and the budget comes back
/// with time.
#[tokio::test(flavor = "multi_thread")]
async fn a_principals_statements_share_one_rate_budget() {
    let table = unique("rate");
    direct(&format!("CREATE TABLE {table} (n int)"));
    let _drop = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    let gw = Gateway::start(&local_config(
        "limits: {per_principal: {statements_per_second: 2}}\n",
    ))
    .await;
    let alice = gw.token("alice", &["dba"]);
    let a1 = gw.client("admin", &alice).await.unwrap();
    let a2 = gw.client("admin", &alice).await.unwrap();
    // Twelve inserts from two sessions, simple and prepared (extended
    // protocol: each execution is charged): the burst is two, and the
    // refill over their round trips cannot cover ten.
    let insert = a2
        .prepare(&format!("INSERT INTO {table} VALUES ($1)"))
        .await
        .unwrap();
    let mut refused = 0u32;
    for n in 0..12i32 {
        let done = if n % 2 == 0 {
            a1.simple_query(&format!("INSERT INTO {table} VALUES ({n}) -- rate_probe"))
                .await
                .map(drop)
        } else {
            a2.execute(&insert, &[&n]).await.map(drop)
        };
        if let Err(e) = done {
            let db = e.as_db_error().expect("an error from airlock");
            assert_eq!(db.code().code(), "54000", "{}", db.message());
            assert!(
                db.message()
                    .contains("limits.per_principal.statements_per_second"),
                "{}",
                db.message()
            );
            // Simple and extended alike: slow down, and it may pass.
            let hint: serde_json::Value = serde_json::from_str(db.hint().unwrap()).unwrap();
            assert_eq!(hint["retry"], true, "{hint}");
            assert!(
                hint["try"]
                    .as_str()
                    .unwrap()
                    .contains("at most 2 statements a second"),
                "{hint}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 3, "only {refused} of 12 refused");
    // What was refused never reached the database.
    assert_eq!(count_rows(&table), 12 - refused);
    // Another principal has a budget of its own.
    let bob = gw.token("bob", &["dba"]);
    let b = gw.client("admin", &bob).await.unwrap();
    b.simple_query("select 1").await.unwrap();
    // The budget refills: alice is served again.
    let start = std::time::Instant::now();
    while a1.simple_query("select 'again'").await.is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"airlock_limit_refusals_total{door="postgres",limit="per_principal_statements"}"#
        ),
        "{metrics}"
    );
    drop((a1, a2, b));
    let events = gw.journal_texts();
    let denied = |what: &str| {
        events
            .iter()
            .any(|e| e.contains(what) && e.contains("limits.per_principal.statements_per_second"))
    };
    assert!(
        denied("rate_probe"),
        "no refused Query recorded with the limit"
    );
    assert!(denied("$1"), "no refused execution recorded with the limit");
    gw.stop().await;
}

/// An access rule's ceiling on `statement_timeout`: sessions start with it,
/// a SET over it (or to 0, or unreadable) is refused, RESET goes back to
/// it, a startup value over it refuses the session, and the upstream
/// cancels what runs longer.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_timeout_ceiling_holds_whatever_the_client_sets() {
    let gw = Gateway::start(&local_config(
        "  - name: capped\n    groups: [capped]\n    connections: [test]\n    roles: [readonly]\n    mode: read-only\n    statement_timeout: 1s\n",
    ))
    .await;
    let token = gw.token("devin", &["capped"]);
    let psql = |sql: &str| gw.psql(&token, "test", "readonly", sql);
    let out = psql("SHOW statement_timeout");
    assert_eq!(
        crate::common::stdout(&out),
        "1s",
        "{}",
        crate::common::stderr(&out)
    );
    let out = psql(
        "SET statement_timeout = '250ms'; SHOW statement_timeout; RESET statement_timeout; SHOW statement_timeout",
    );
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_eq!(crate::common::stdout(&out), "SET\n250ms\nRESET\n1s");
    for sql in [
        "SET statement_timeout = '5s'",
        "SET statement_timeout = 0",
        "SELECT set_config('statement_timeout', '1h', false)",
        // EXPLAIN ANALYZE runs it; PostgreSQL rounds 0.5 to 0.
        "EXPLAIN ANALYZE SELECT set_config('statement_timeout', '0', false)",
        "SET statement_timeout = 0.5",
    ] {
        let out = psql(sql);
        assert!(!out.status.success(), "{sql}");
        assert!(
            crate::common::stderr(&out).contains("rule \"statement-timeout\""),
            "{sql}: {}",
            crate::common::stderr(&out)
        );
    }
    // The upstream enforces it.
    let out = psql("SELECT pg_sleep(3)");
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("canceling statement due to statement timeout"),
        "{}",
        crate::common::stderr(&out)
    );
    // Over the extended protocol, with its hint.
    let client = gw.client("readonly", &token).await.unwrap();
    let e = client
        .execute("SET statement_timeout = '10s'", &[])
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    let hint: serde_json::Value = serde_json::from_str(db.hint().unwrap()).unwrap();
    assert_eq!(hint["rule"], "statement-timeout");
    // A startup value: lower is kept, higher refuses the session.
    let conninfo = gw.conninfo("test", "readonly");
    let out = crate::common::psql(
        &format!("{conninfo} options='-c statement_timeout=200'"),
        &token,
        "SHOW statement_timeout",
    );
    assert_eq!(
        crate::common::stdout(&out),
        "200ms",
        "{}",
        crate::common::stderr(&out)
    );
    for options in [
        "-c statement_timeout=0",
        // PostgreSQL applies the last.
        "-c statement_timeout=100 -c statement_timeout=0",
    ] {
        let out = crate::common::psql(
            &format!("{conninfo} options='{options}'"),
            &token,
            "SELECT 1",
        );
        assert!(!out.status.success(), "{options}");
        assert!(
            crate::common::stderr(&out).contains("statement-timeout"),
            "{options}: {}",
            crate::common::stderr(&out)
        );
    }
}
