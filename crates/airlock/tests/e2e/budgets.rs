//! Budgets on access rules (SPEC §14, docs/agents.md): statements, rows
//! and bytes per session and per principal, through psql (simple
//! protocol), tokio-postgres (extended protocol) and MCP; refusals are
//! recorded under their budget and counted in the metrics.

use serde_json::{Value, json};

use tokio::io::AsyncWriteExt;

use crate::common::{self, Gateway, stderr, stdout};
use crate::mcp::Mcp;

fn config() -> String {
    common::local_config(
        r#"  - name: budgeted
    groups: [budgeted]
    connections: [test]
    roles: [readonly]
    mode: read-write
    budgets:
      session: {max_statements: 6, max_rows: 30}
      principal: {max_rows: 50}
      window: 1h
mcp: {enabled: true}
"#,
    )
}

/// A refusal by budget `rule`, over the extended protocol.
#[track_caller]
fn refused(e: tokio_postgres::Error, rule: &str, retry: bool) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(db.code().code(), "54000", "{db:?}");
    assert!(db.message().contains(rule), "{db:?}");
    let hint: Value = serde_json::from_str(db.hint().expect("a hint")).unwrap();
    assert_eq!(
        (&hint["rule"], &hint["retry"]),
        (&json!(rule), &json!(retry))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_count_statements_and_returned_rows_per_session_and_principal() {
    let gw = Gateway::start(&config()).await;
    let devin = gw.token("devin", &["budgeted"]);
    let rows = |n: u32| format!("SELECT g FROM generate_series(1, {n}) g");

    // A session's rows: 25 fit; the next result crosses 30 and is not cut
    // (its 10 rows arrive whole); the statement after it is refused.
    let a = gw.client("readonly", &devin).await.unwrap();
    assert_eq!(a.query(&rows(25), &[]).await.unwrap().len(), 25);
    assert_eq!(a.query(&rows(10), &[]).await.unwrap().len(), 10);
    refused(
        a.query("SELECT 1", &[]).await.unwrap_err(),
        "budgets.session.max_rows",
        false,
    );
    // The session goes on: it is refused, not ended.
    refused(
        a.simple_query("SELECT 1").await.unwrap_err(),
        "budgets.session.max_rows",
        false,
    );
    drop(a);

    // The principal's rows count across sessions: 35 so far, 20 more
    // through psql reach 50; its next session is refused at once.
    let out = gw.psql(&devin, "test", "readonly", &rows(20));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 20);
    let out = gw.psql(&devin, "test", "readonly", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("budgets.principal.max_rows"),
        "{}",
        stderr(&out)
    );
    // MCP calls draw on the same principal budget.
    let mut mcp = Mcp::connect(&gw, &devin, "legacy").await;
    let answer = mcp
        .call("query", json!({"connection": "test", "sql": "SELECT 1"}))
        .await;
    assert_eq!(answer["is_error"], true, "{answer}");
    assert_eq!(answer["structured"]["code"], "54000", "{answer}");
    assert_eq!(
        answer["structured"]["hint"]["rule"], "budgets.principal.max_rows",
        "{answer}"
    );
    assert_eq!(answer["structured"]["hint"]["retry"], true, "{answer}");
    mcp.close().await;

    // Statements: six a session, each statement of a message counted, a
    // message that would go over refused whole. Another principal, whose
    // rows are its own.
    let ann = gw.token("ann", &["budgeted"]);
    let b = gw.client("readonly", &ann).await.unwrap();
    b.simple_query("SELECT 1; SELECT 2; SELECT 3")
        .await
        .unwrap();
    let one = b.prepare("SELECT 1").await.unwrap();
    b.query(&one, &[]).await.unwrap();
    b.query(&one, &[]).await.unwrap();
    refused(
        b.simple_query("SELECT 1; SELECT 2").await.unwrap_err(),
        "budgets.session.max_statements",
        false,
    );
    b.query(&one, &[]).await.unwrap();
    refused(
        b.query(&one, &[]).await.unwrap_err(),
        "budgets.session.max_statements",
        false,
    );

    // COPY … TO STDOUT's rows count; a suspended portal's next rows are
    // refused once the cap is reached (no new Bind to charge).
    let carl = gw.token("carl", &["budgeted"]);
    let c = gw.client("readonly", &carl).await.unwrap();
    let copied = c
        .copy_out("COPY (SELECT g FROM generate_series(1, 31) g) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(copied);
    let mut lines = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut copied).await {
        lines += chunk.unwrap().iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 31);
    refused(
        c.simple_query("SELECT 1").await.unwrap_err(),
        "budgets.session.max_rows",
        false,
    );
    drop(c);
    let dora = gw.token("dora", &["budgeted"]);
    let mut d = gw.client("readonly", &dora).await.unwrap();
    let tx = d.transaction().await.unwrap();
    let portal = tx.bind(&rows(100) as &str, &[]).await.unwrap();
    assert_eq!(tx.query_portal(&portal, 30).await.unwrap().len(), 30);
    refused(
        tx.query_portal(&portal, 30).await.unwrap_err(),
        "budgets.session.max_rows",
        false,
    );
    drop(tx);

    // Recorded under their budgets; counted by the metrics.
    let journal = gw.journal_texts().join("\n");
    for rule in [
        "budgets.session.max_rows",
        "budgets.principal.max_rows",
        "budgets.session.max_statements",
    ] {
        assert!(
            journal.contains(&format!("\"rule\":\"{rule}\"")),
            "{rule} not recorded"
        );
    }
    let metrics = gw.metrics().await;
    for limit in [
        "budget_session_results",
        "budget_principal_results",
        "budget_session_statements",
    ] {
        assert!(
            metrics.contains(&format!("limit=\"{limit}\"")),
            "{limit} not counted"
        );
    }
}

/// `on_exceed: session` and `max_result_bytes`: the refusal (an ERROR
/// 54000 naming the budget, in the statement's place) ends the session
/// with a FATAL (tokio-postgres, psql, the raw wire); a result that reaches `max_result_bytes` is cut and the session
/// ends, while the same rows fetched in pages of a portal each count
/// alone; a write whose RETURNING rows are cut while the database is still
/// sending them does not commit; a write pipelined ahead of the refusal is
/// answered before the session ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_can_end_the_session_and_a_result_too_large_is_cut() {
    let table = common::unique("cut_write");
    let _cleanup = common::Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    common::direct(&format!("CREATE TABLE {table} (id int, pad text)"));
    let gw = Gateway::start(&common::local_config(
        r#"  - name: ending
    groups: [ending]
    connections: [test]
    roles: [readonly]
    mode: read-write
    budgets:
      session: {max_statements: 3}
      on_exceed: session
      max_result_bytes: 64KiB
"#,
    ))
    .await;
    let devin = gw.token("devin", &["ending"]);
    let ended = |e: tokio_postgres::Error, rule: &str, severity: &str| {
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}")).clone();
        assert_eq!(
            (db.code().code(), db.severity()),
            ("54000", severity),
            "{db:?}"
        );
        assert!(db.message().contains("session ended"), "{db:?}");
        let hint: Value = serde_json::from_str(db.hint().expect("a hint")).unwrap();
        assert_eq!(hint["rule"], rule, "{hint}");
    };

    // Three statements, then the fourth ends the session.
    let a = gw.client("readonly", &devin).await.unwrap();
    for _ in 0..3 {
        a.simple_query("SELECT 1").await.unwrap();
    }
    // The refusal comes in the statement's place, then the FATAL.
    ended(
        a.simple_query("SELECT 1").await.unwrap_err(),
        "budgets.session.max_statements",
        "ERROR",
    );
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        e.as_db_error().is_none_or(|d| d.severity() == "FATAL"),
        "{e}"
    );
    // Then the connection is gone.
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert!(e.as_db_error().is_none(), "the session ended: {e}");

    // Pipelined: a write ahead of the refused statement is answered
    // before the session ends, so the client knows it ran.
    let mut raw = common::raw_login(gw.pg, "readonly", "test", &devin).await;
    let mut pipelined = common::message(b'Q', b"SELECT 1\0");
    pipelined.extend_from_slice(&common::message(b'Q', b"SELECT 2\0"));
    pipelined.extend_from_slice(&common::message(
        b'Q',
        format!("INSERT INTO {table} VALUES (1, 'kept')\0").as_bytes(),
    ));
    pipelined.extend_from_slice(&common::message(b'Q', b"SELECT 4\0"));
    raw.write_all(&pipelined).await.unwrap();
    let (got, closed) =
        common::read_until_close(&mut raw, std::time::Duration::from_secs(10)).await;
    assert!(closed, "the session ended");
    let tags: Vec<u8> = got.iter().map(|m| m.tag).collect();
    assert!(
        got.iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"INSERT 0 1")),
        "{tags:?}"
    );
    let last = got.last().unwrap();
    assert_eq!(
        (
            last.tag,
            last.field(b'V').as_deref(),
            last.field(b'C').as_deref()
        ),
        (b'E', Some("FATAL"), Some("54000")),
        "{tags:?}"
    );
    assert_eq!(common::count_rows(&table), 1);
    common::direct(&format!("TRUNCATE {table}"));

    // 1000 rows of about 110 bytes: cut past 64 KiB, the session ends.
    let big = "SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g";
    let b = gw.client("readonly", &devin).await.unwrap();
    ended(
        b.query(big, &[]).await.unwrap_err(),
        "budgets.max_result_bytes",
        "FATAL",
    );
    let e = b.simple_query("SELECT 1").await.unwrap_err();
    assert!(e.as_db_error().is_none(), "the session ended: {e}");
    let out = gw.psql(&devin, "test", "readonly", big);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("FATAL") && stderr(&out).contains("budgets.max_result_bytes"),
        "{}",
        stderr(&out)
    );
    // One row that would pass it is not sent; nor is an error quoting a
    // value that large.
    let out = gw.psql(&devin, "test", "readonly", "SELECT repeat('x', 200000)");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("budgets.max_result_bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("xxxx"));
    let out = gw.psql(
        &devin,
        "test",
        "readonly",
        "SELECT repeat('x', 200000)::int",
    );
    assert!(
        stderr(&out).contains("budgets.max_result_bytes"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&"x".repeat(1000)));
    // Each page of a portal is a result of its own.
    let mut c = gw.client("readonly", &devin).await.unwrap();
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind(big, &[]).await.unwrap();
    let mut fetched = 0;
    loop {
        let page = tx.query_portal(&portal, 200).await.unwrap();
        if page.is_empty() {
            break;
        }
        fetched += page.len();
    }
    assert_eq!(fetched, 1000);
    tx.commit().await.unwrap();
    drop(c);

    // A write whose RETURNING rows are cut does not commit: the upstream
    // connection closes while the statement is still sending.
    let d = gw.client("readonly", &devin).await.unwrap();
    let write = format!(
        "INSERT INTO {table} SELECT g, repeat('y', 200) FROM generate_series(1, 100000) g RETURNING *"
    );
    ended(
        d.simple_query(&write).await.unwrap_err(),
        "budgets.max_result_bytes",
        "FATAL",
    );
    // Once its backend is gone, nothing of it is there.
    let gone =
        format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO {table}%'");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::direct(&gone) != "0" {
        assert!(std::time::Instant::now() < deadline, "the write still runs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(common::count_rows(&table), 0);

    // The session's end names the limit in the recording and the metrics.
    let journal = gw.journal_texts().join("\n");
    assert!(
        journal.contains("budgets.max_result_bytes"),
        "the cut session's end is recorded"
    );
    let metrics = gw.metrics().await;
    assert!(metrics.contains("limit=\"budget_result_bytes\""), "counted");
}

/// `max_cost`: each statement's planner estimate is charged before it
/// runs, and one that would pass the cap is refused (psql's simple
/// protocol; tokio-postgres's extended one, estimated with each
/// execution's parameters); a message of several statements, and a
/// statement EXPLAIN cannot estimate, are refused under it; MCP calls are
/// charged too.
#[tokio::test(flavor = "multi_thread")]
async fn max_cost_charges_each_estimate_and_refuses_what_would_pass_it() {
    let query = |n: u32| format!("SELECT count(*) FROM generate_series(1, {n}) g");
    let plan = common::direct(&format!("EXPLAIN (FORMAT JSON) {}", query(10_000)));
    let cost: Value = serde_json::from_str(&plan).unwrap();
    let cost = cost[0]["Plan"]["Total Cost"].as_f64().unwrap();
    // Room for two such statements, not three.
    let cap = (cost * 2.5) as u64;
    let gw = Gateway::start(&common::local_config(&format!(
        r#"  - name: costed
    groups: [costed]
    connections: [test]
    roles: [readonly]
    mode: read-write
    budgets:
      session: {{max_cost: {cap}}}
mcp: {{enabled: true}}
"#
    )))
    .await;
    let devin = gw.token("devin", &["costed"]);
    let costed = |out: &std::process::Output, why: &str| {
        let err = stderr(out);
        assert!(!out.status.success(), "{err}");
        // (The SQLSTATE is checked on the extended protocol below.)
        assert!(err.contains("max_cost"), "{err}");
        assert!(err.contains(why), "{err}");
    };
    let conninfo = gw.conninfo("test", "readonly");
    let psql =
        |sqls: &str| common::psql_each(&conninfo, &devin, &sqls.split('\n').collect::<Vec<_>>());
    // One session: two fit, the third would pass the cap; cheap ones still
    // run.
    let out = psql(&format!("{q}\n{q}\n{q}", q = query(10_000)));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["10000", "10000"]);
    costed(&out, "budgets.session.max_cost");
    let out = psql(&format!("{}\nSELECT 1", query(1_000_000)));
    costed(&out, "estimated planner cost");
    let out = psql("SELECT 1\nSHOW search_path");
    assert!(out.status.success(), "{}", stderr(&out));
    // The estimates rely on the planner's cost settings: they stay.
    costed(&psql("SET random_page_cost = 0"), "planner cost setting");
    costed(
        &psql("SELECT set_config('cpu_tuple_cost', '0', false)"),
        "planner cost setting",
    );
    // EXPLAIN takes one statement; COPY it does not take at all.
    costed(&psql("SELECT 1; SELECT 2"), "several statements");
    costed(&psql("COPY (SELECT 1) TO STDOUT"), "could not be estimated");

    // The extended protocol: each execution is estimated with its own
    // parameters.
    let c = gw.client("readonly", &devin).await.unwrap();
    let counted = c
        .prepare("SELECT count(*) FROM generate_series(1, $1::int) g")
        .await
        .unwrap();
    for n in [10, 10_000] {
        let rows = c.query(&counted, &[&n]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), i64::from(n));
    }
    let e = c.query(&counted, &[&1_000_000i32]).await.unwrap_err();
    let db = e.as_db_error().expect("a refusal");
    assert_eq!(db.code().code(), "54000", "{db:?}");
    assert!(db.message().contains("budgets.session.max_cost"), "{db:?}");
    assert_eq!(
        c.query(&counted, &[&10i32]).await.unwrap()[0].get::<_, i64>(0),
        10
    );

    // An MCP call is a session of its own: charged the same way.
    let mut mcp = Mcp::connect(&gw, &devin, "legacy").await;
    let answer = mcp
        .call(
            "query",
            json!({"connection": "test", "sql": query(1_000_000)}),
        )
        .await;
    assert_eq!(answer["is_error"], true, "{answer}");
    assert_eq!(answer["structured"]["code"], "54000", "{answer}");
    assert_eq!(
        answer["structured"]["hint"]["rule"], "budgets.session.max_cost",
        "{answer}"
    );
    let answer = mcp
        .call("query", json!({"connection": "test", "sql": query(10)}))
        .await;
    assert_eq!(answer["is_error"], false, "{answer}");
    // A plain EXPLAIN runs nothing: free.
    let answer = mcp
        .call(
            "explain",
            json!({"connection": "test", "sql": query(1_000_000)}),
        )
        .await;
    assert_eq!(answer["is_error"], false, "{answer}");
    mcp.close().await;

    // Recorded under the budget, and counted.
    let journal = gw.journal_texts().join("\n");
    assert!(journal.contains(r#""rule":"budgets.session.max_cost""#));
    assert!(
        gw.metrics()
            .await
            .contains(r#"limit="budget_session_cost""#)
    );
}
