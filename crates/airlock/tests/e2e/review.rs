//! Commit review (SPEC §14) end to end: a write runs inside the client's
//! transaction, its COMMIT waits for an approver who sees what the
//! transaction measurably did (rows per table, triggers included, and a
//! masked sample of the rows written), and commits only when approved.
//! Real psql and tokio-postgres clients, decided through the HTTP API.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::approvals::pending;
use crate::common::{self, Cleanup, Gateway, direct, local_config, unique};

/// A route for group `writers`, a commit review of every UPDATE and DELETE
/// for approvers `dba`, and emails masked.
fn config() -> String {
    local_config(
        r#"  - name: writers
    groups: [writers]
    connections: [test]
    roles: [admin]
guardrails:
  - name: review-writes
    match: {statements: [update, delete]}
    action: review_commit
    approvers: [dba]
approvals: {timeout: 60s, timeout_in_transaction: 60s}
masking:
  rules:
    - {name: email, columns: ["*.email"], strategy: email}
"#,
    )
}

/// A table of three accounts, with a trigger that logs every update to a
/// second table; both dropped with the guard.
fn accounts() -> (String, String, Cleanup) {
    let t = unique("accounts");
    let log = format!("{t}_log");
    direct(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, email text, balance int);
         INSERT INTO {t} VALUES (1, 'ann@example.com', 100), (2, 'bo@example.com', 200), (3, 'cy@example.com', 300);
         CREATE TABLE {log} (id int, at timestamptz DEFAULT now());
         CREATE FUNCTION {t}_logged() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {log} (id) VALUES (NEW.id); RETURN NEW; END $$;
         CREATE TRIGGER logged AFTER UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_logged();"
    ));
    let cleanup = Cleanup::sql(format!(
        "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {log}; DROP FUNCTION IF EXISTS {t}_logged()"
    ));
    (t, log, cleanup)
}

fn balances(t: &str) -> String {
    direct(&format!(
        "SELECT string_agg(balance::text, ',' ORDER BY id) FROM {t}"
    ))
    .trim()
    .to_string()
}

fn api(gw: &Gateway) -> String {
    format!("http://{}/api/v1", gw.http)
}

async fn approvals(gw: &Gateway, token: &str, status: &str) -> Vec<Value> {
    let body = common::api_get(gw, token, &format!("approvals?status={status}")).await;
    body["approvals"].as_array().cloned().unwrap_or_default()
}

async fn decide(gw: &Gateway, token: &str, id: &str, verb: &str, reason: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/approvals/{id}/{verb}", api(gw)))
        .bearer_auth(token)
        .json(&json!({"reason": reason}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{verb}: {}", r.status());
}

/// psql through the gateway reading `script` from standard input, one
/// statement per line, each sent as its own Query.
fn psql_script(gw: &Gateway, token: &str, script: &str) -> std::process::Child {
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-f",
            "-",
        ])
        .arg(gw.conninfo("test", "admin"))
        .env("PGPASSWORD", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_commit_waits_for_an_approver_who_sees_the_measured_effect() {
    let gw = Gateway::start(&config()).await;
    let (t, log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);

    let psql = psql_script(
        &gw,
        &devin,
        &format!("BEGIN;\nUPDATE {t} SET balance = balance - 10 WHERE id <= 2;\nCOMMIT;\n"),
    );
    let held = pending(&gw, &bob).await;
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["rule"], "review-writes", "{held}");
    let effect = &held["detail"]["effect"];
    // Rows per table, the trigger's inserts included.
    let tables = effect["tables"].as_array().unwrap();
    assert!(
        tables.contains(
            &json!({"table": format!("public.{t}"), "inserted": 0, "updated": 2, "deleted": 0})
        ),
        "{effect}"
    );
    assert!(
        tables.contains(
            &json!({"table": format!("public.{log}"), "inserted": 2, "updated": 0, "deleted": 0})
        ),
        "{effect}"
    );
    // The rows as written (values as text), emails masked; the trigger's
    // table is sampled too.
    let sample = &effect["written_rows"][0];
    assert_eq!(sample["table"], format!("public.{t}"), "{effect}");
    let rows = sample["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{effect}");
    assert!(
        rows.iter().any(|r| r["balance"] == "90" && r["id"] == "1"),
        "{effect}"
    );
    assert_eq!(
        effect["written_rows"][1]["table"],
        format!("public.{log}"),
        "{effect}"
    );
    assert_eq!(effect["sample_complete"], true, "{effect}");
    // And as they were before the UPDATE.
    let before = &effect["rows_before"][0];
    assert_eq!(before["table"], t.as_str(), "{effect}");
    let old = before["rows"].as_array().unwrap();
    assert_eq!(old.len(), 2, "{effect}");
    assert!(
        old.iter().any(|r| r["balance"] == "100" && r["id"] == "1"),
        "{effect}"
    );
    for email in ["ann@example.com", "bo@example.com", "ann@", "bo@"] {
        assert!(
            !effect.to_string().contains(email),
            "an email shown unmasked: {effect}"
        );
    }
    let shown = effect.to_string();
    assert!(
        !shown.contains("ann@example.com"),
        "an email shown unmasked: {shown}"
    );
    assert!(
        rows.iter().all(|r| r["email"]
            .as_str()
            .is_some_and(|e| e.ends_with("@example.com"))),
        "{effect}"
    );
    assert!(
        held["detail"]["statement"]
            .as_str()
            .unwrap()
            .ends_with("COMMIT"),
        "{held}"
    );
    assert_eq!(effect["baseline"], true, "{effect}");

    // Held: nothing is committed yet.
    assert_eq!(balances(&t), "100,200,300");
    decide(&gw, &bob, &id, "approve", "checked the sample").await;
    let out = tokio::task::spawn_blocking(move || psql.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("COMMIT"),
        "{}",
        common::stdout(&out)
    );
    assert_eq!(balances(&t), "90,190,300");

    // The approver's CLI shows the same effect.
    let shown = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "approvals",
            "show",
            &id,
            "--server",
            &format!("http://{}", gw.http),
        ])
        .env("AIRLOCK_TOKEN", &bob)
        .output()
        .unwrap();
    let text = common::stdout(&shown);
    assert!(
        text.contains(&format!("public.{t}")) && text.contains("updated 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extended_protocol_write_is_reviewed_and_a_denial_commits_nothing() {
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let client = gw.client("admin", &devin).await.unwrap();

    // Outside a transaction block, a reviewed write is refused: it would
    // commit at once.
    let e = client
        .execute(&*format!("DELETE FROM {t} WHERE id = $1"), &[&3i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("needs a transaction block"), "{db:?}");
    assert!(db.hint().unwrap().contains("BEGIN"), "{db:?}");
    assert_eq!(balances(&t), "100,200,300");

    client.batch_execute("BEGIN").await.unwrap();
    let n = client
        .execute(
            &*format!("UPDATE {t} SET balance = $1 WHERE id = $2"),
            &[&0i32, &3i32],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The COMMIT as a simple query (as tokio-postgres's own commit sends
    // it), and a query pipelined behind it, which waits its turn.
    let both = tokio::spawn(async move {
        let (c, a) = tokio::join!(
            client.batch_execute("COMMIT"),
            client.query_one("SELECT 1 AS after", &[])
        );
        let (c, a) = (
            c.map_err(|e| sqlstate(&e)),
            a.map(|r| r.get::<_, i32>(0)).map_err(|e| sqlstate(&e)),
        );
        (c, a, client)
    });
    let held = pending(&gw, &bob).await;
    let effect = &held["detail"]["effect"];
    assert_eq!(
        effect["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["updated"] == 1)
            .count(),
        1,
        "{effect}"
    );
    assert!(
        held["detail"]["statement"]
            .as_str()
            .unwrap()
            .contains("UPDATE"),
        "{held}"
    );
    // Its baseline was read inside the batch, ahead of the Bind.
    assert_eq!(effect["baseline"], true, "{effect}");
    // The reviewed transaction holds its row lock while it waits.
    let blocked = common::psql(
        &format!(
            "host=127.0.0.1 port={} dbname=test user=postgres",
            common::LOCAL_PG_PORT
        ),
        "",
        &format!("SET lock_timeout = '200ms'; UPDATE {t} SET balance = 1 WHERE id = 3"),
    );
    assert!(
        common::stderr(&blocked).contains("lock timeout"),
        "{}",
        common::stderr(&blocked)
    );

    decide(
        &gw,
        &bob,
        held["id"].as_str().unwrap(),
        "deny",
        "zeroing an account needs a ticket",
    )
    .await;
    let (commit, after, client) = both.await.unwrap();
    assert_eq!(commit, Err("42501".to_string()));
    // The pipelined query ran after the refusal, in the aborted block.
    assert_eq!(after, Err("25P02".to_string()));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&t), "100,200,300");
    // A COMMIT sent with the extended protocol cannot be measured: refused.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            &*format!("UPDATE {t} SET balance = 5 WHERE id = $1"),
            &[&1i32],
        )
        .await
        .unwrap();
    let e = client.execute("COMMIT", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        e.as_db_error()
            .unwrap()
            .hint()
            .unwrap()
            .contains("simple query"),
        "{e:?}"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&t), "100,200,300");
    // Nothing was filed for it.
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_could_commit_unreviewed_is_refused_and_an_abandoned_review_commits_nothing() {
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);

    // A COMMIT in the same message as the write could not be held.
    let client = gw.client("admin", &devin).await.unwrap();
    let e = client
        .batch_execute(&format!(
            "BEGIN; UPDATE {t} SET balance = 0 WHERE id = 1; COMMIT"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // Once a review is pending: COMMIT among other statements, and PREPARE
    // TRANSACTION, are refused.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 0 WHERE id = 1"))
        .await
        .unwrap();
    let e = client.batch_execute("SELECT 1; COMMIT").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 0 WHERE id = 1"))
        .await
        .unwrap();
    let e = client
        .batch_execute("PREPARE TRANSACTION 'sneak'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&t), "100,200,300");
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);

    // Abandoned: the client leaves while its COMMIT is held. The request is
    // cancelled, nothing commits, the locks go with the connection.
    let mut psql = psql_script(
        &gw,
        &devin,
        &format!("BEGIN;\nDELETE FROM {t} WHERE id = 2;\nCOMMIT;\n"),
    );
    let held = pending(&gw, &bob).await;
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(
        held["detail"]["effect"]["tables"][0]["deleted"], 1,
        "{held}"
    );
    psql.kill().unwrap();
    psql.wait().unwrap();
    let mut status = String::new();
    for _ in 0..200 {
        status = approvals(&gw, &bob, "cancelled")
            .await
            .iter()
            .find(|a| a["id"] == id.as_str())
            .map(|a| a["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        if !status.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
    assert_eq!(balances(&t), "100,200,300");
    direct(&format!(
        "SET lock_timeout = '5s'; UPDATE {t} SET balance = balance WHERE id = 2"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewed_transaction_chosen_as_a_deadlock_victim_rolls_back_without_a_hold() {
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let (other, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=test user=postgres",
            common::LOCAL_PG_PORT
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // The other session waits long before checking for a deadlock: the
    // reviewed one finds it and is the victim.
    other
        .batch_execute(&format!(
            "SET deadlock_timeout = '60s'; BEGIN; UPDATE {t} SET balance = 2 WHERE id = 2"
        ))
        .await
        .unwrap();
    let client = gw.client("admin", &devin).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 1 WHERE id = 1"))
        .await
        .unwrap();
    let blocked = {
        let sql = format!("UPDATE {t} SET balance = 1 WHERE id = 1");
        tokio::spawn(async move { other.batch_execute(&sql).await.map(|_| other) })
    };
    // Wait until the other session waits on the reviewed one's lock.
    for _ in 0..200 {
        let waiting = direct(&format!(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '{t}'::regclass OR NOT granted AND locktype = 'transactionid'"
        ));
        if waiting.trim() != "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let e = client
        .batch_execute(&format!("UPDATE {t} SET balance = 1 WHERE id = 2"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "40P01", "{e:?}");
    // The aborted transaction's COMMIT can only roll back: nothing to hold.
    client.batch_execute("COMMIT").await.unwrap();
    let other = blocked.await.unwrap().unwrap();
    other.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&t), "100,200,300");
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);
    // The session goes on: a new reviewed transaction is held as usual.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 7 WHERE id = 3"))
        .await
        .unwrap();
    let commit = tokio::spawn(async move {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| sqlstate(&e))
    });
    let held = pending(&gw, &bob).await;
    decide(&gw, &bob, held["id"].as_str().unwrap(), "approve", "fine").await;
    assert_eq!(commit.await.unwrap(), Ok(()));
    assert_eq!(balances(&t), "100,200,7");
}

// ---------------------------------------------------------------------------
// Message sequences no driver sends, written on the raw wire: each tries to
// get a reviewed write committed without an approval.

fn query(sql: &str) -> bytes::BytesMut {
    common::message(b'Q', format!("{sql}\0").as_bytes())
}

/// Parse (unnamed), Bind, Execute and Sync of `sql`, without parameters.
fn extended(sql: &str) -> bytes::BytesMut {
    let mut b = common::message(b'P', format!("\0{sql}\0\0\0").as_bytes());
    b.extend_from_slice(&common::message(b'B', b"\0\0\0\0\0\0\0\0"));
    b.extend_from_slice(&common::message(b'E', b"\0\0\0\0\0"));
    b.extend_from_slice(&common::message(b'S', b""));
    b
}

/// Reads `n` ReadyForQuery-terminated answers.
async fn answers(s: &mut tokio::net::TcpStream, n: usize) -> Vec<common::Received> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.extend(common::read_until(s, b'Z').await);
    }
    got
}

/// Opens a transaction block on a raw session and runs `update` (a
/// reviewed statement) in it: a review is then pending.
async fn open_review(s: &mut tokio::net::TcpStream, update: &str) {
    use tokio::io::AsyncWriteExt;
    s.write_all(&query("BEGIN")).await.unwrap();
    s.write_all(&query(update)).await.unwrap();
    let got = answers(s, 2).await;
    assert!(codes(&got).is_empty(), "{:?}", codes(&got));
}

fn codes(msgs: &[common::Received]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.field(b'C'))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_sequences_cannot_commit_a_reviewed_write_unreviewed() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);

    // 1. A BEGIN that never runs (its message fails first) does not count:
    // the extended batch behind it would run in an implicit transaction.
    let mut s = common::raw_login(gw.pg, "admin", "test", &devin).await;
    open_review(
        &mut s,
        &format!("UPDATE {t} SET balance = balance WHERE false"),
    )
    .await;
    let mut pipelined = query("ROLLBACK; SELECT 1/0; BEGIN");
    pipelined.extend_from_slice(&extended(&format!(
        "UPDATE {t} SET balance = 0 WHERE id = 1"
    )));
    s.write_all(&pipelined).await.unwrap();
    let got = answers(&mut s, 2).await;
    assert_eq!(codes(&got), ["22012", "42501"], "{got:?}");
    assert_eq!(balances(&t), "100,200,300");
    drop(s);

    // 2. Statements pipelined behind a held COMMIT that is approved run
    // after it, outside the reviewed transaction: a reviewed write there is
    // refused, not committed by the approval.
    let mut s = common::raw_login(gw.pg, "admin", "test", &devin).await;
    open_review(
        &mut s,
        &format!("UPDATE {t} SET balance = 101 WHERE id = 1"),
    )
    .await;
    let mut pipelined = query("COMMIT");
    pipelined.extend_from_slice(&extended(&format!(
        "UPDATE {t} SET balance = 0 WHERE id = 2"
    )));
    s.write_all(&pipelined).await.unwrap();
    let held = pending(&gw, &bob).await;
    decide(
        &gw,
        &bob,
        held["id"].as_str().unwrap(),
        "approve",
        "one row",
    )
    .await;
    let got = answers(&mut s, 2).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    assert_eq!(balances(&t), "101,200,300");

    // 3. COMMIT AND CHAIN ends the review it was approved for: the chained
    // transaction's own COMMIT is not held on the old review's account.
    open_review(
        &mut s,
        &format!("UPDATE {t} SET balance = 102 WHERE id = 1"),
    )
    .await;
    s.write_all(&query("COMMIT AND CHAIN")).await.unwrap();
    let held = pending(&gw, &bob).await;
    decide(
        &gw,
        &bob,
        held["id"].as_str().unwrap(),
        "approve",
        "chained",
    )
    .await;
    let got = answers(&mut s, 1).await;
    assert_eq!(
        got.last().unwrap().body,
        b"T",
        "the chained transaction is open"
    );
    s.write_all(&query("COMMIT")).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert!(codes(&got).is_empty(), "{:?}", codes(&got));
    assert_eq!(balances(&t), "102,200,300");

    // 4. A SQL PREPAREd reviewed statement bound by the protocol outside a
    // block is refused (it cannot be reviewed there).
    s.write_all(&query(&format!(
        "PREPARE zero AS UPDATE {t} SET balance = 0 WHERE id = 3"
    )))
    .await
    .unwrap();
    answers(&mut s, 1).await;
    let mut bind = common::message(b'B', b"\0zero\0\0\0\0\0\0\0");
    bind.extend_from_slice(&common::message(b'E', b"\0\0\0\0\0"));
    bind.extend_from_slice(&common::message(b'S', b""));
    s.write_all(&bind).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    assert_eq!(balances(&t), "102,200,300");
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_that_times_out_commits_nothing_and_savepoints_mark_the_sample_incomplete() {
    let gw = Gateway::start(
        &config().replace("timeout_in_transaction: 60s", "timeout_in_transaction: 1s"),
    )
    .await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let client = gw.client("admin", &devin).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SAVEPOINT a").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 0 WHERE id = 1"))
        .await
        .unwrap();
    client.batch_execute("RELEASE a").await.unwrap();
    let commit = tokio::spawn(async move {
        let r = client.batch_execute("COMMIT").await.map_err(|e| {
            let d = e.as_db_error().map(|d| d.message().to_string());
            (sqlstate(&e), d)
        });
        (r, client)
    });
    let held = pending(&gw, &bob).await;
    let effect = &held["detail"]["effect"];
    // Counted, but written under a savepoint: not sampled.
    assert_eq!(effect["tables"][0]["updated"], 1, "{effect}");
    assert_eq!(effect["sample_complete"], false, "{effect}");
    let (result, client) = commit.await.unwrap();
    let (code, message) = result.unwrap_err();
    assert_eq!(code, "42501");
    assert!(message.unwrap_or_default().contains("timed out"), "{held}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&t), "100,200,300");
}

#[tokio::test(flavor = "multi_thread")]
async fn late_answers_stale_portals_and_renamed_statements_do_not_end_a_review() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);

    // A ROLLBACK's answer arriving while a batch behind it is still
    // unanswered does not end the review that batch's write joined.
    let mut s = common::raw_login(gw.pg, "admin", "test", &devin).await;
    open_review(
        &mut s,
        &format!("UPDATE {t} SET balance = balance WHERE false"),
    )
    .await;
    let mut pipelined = query("ROLLBACK");
    let mut batch = common::message(b'P', b"\0BEGIN\0\0\0");
    batch.extend_from_slice(&common::message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend_from_slice(&common::message(b'E', b"\0\0\0\0\0"));
    pipelined.extend_from_slice(&batch);
    pipelined.extend_from_slice(&extended(&format!(
        "UPDATE {t} SET balance = 0 WHERE id = 2"
    )));
    s.write_all(&pipelined).await.unwrap();
    let got = answers(&mut s, 2).await;
    assert!(codes(&got).is_empty(), "{:?}", codes(&got));
    assert_eq!(got.last().unwrap().body, b"T");
    s.write_all(&query("COMMIT")).await.unwrap();
    let held = pending(&gw, &bob).await;
    decide(&gw, &bob, held["id"].as_str().unwrap(), "deny", "caught").await;
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;
    assert_eq!(balances(&t), "100,200,300");

    // While a review is pending, a portal bound in an earlier batch is not
    // executed: it could be a COMMIT by now.
    open_review(&mut s, &format!("UPDATE {t} SET balance = 1 WHERE id = 1")).await;
    let mut bind = common::message(b'P', b"\0SELECT 1\0\0\0");
    bind.extend_from_slice(&common::message(b'B', b"p\0\0\0\0\0\0\0\0"));
    bind.extend_from_slice(&common::message(b'S', b""));
    s.write_all(&bind).await.unwrap();
    answers(&mut s, 1).await;
    let mut exec = common::message(b'E', b"p\0\0\0\0\0");
    exec.extend_from_slice(&common::message(b'S', b""));
    s.write_all(&exec).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;

    // A SQL PREPARE may not take a protocol-prepared name: Binds of it
    // would run a statement airlock judged as another.
    let mut parse = common::message(b'P', b"s1\0SELECT 1\0\0\0");
    parse.extend_from_slice(&common::message(b'S', b""));
    s.write_all(&parse).await.unwrap();
    answers(&mut s, 1).await;
    s.write_all(&query(&format!(
        "DEALLOCATE s1; PREPARE s1 AS UPDATE {t} SET balance = 0 WHERE id = 3"
    )))
    .await
    .unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    assert_eq!(balances(&t), "100,200,300");
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_on_the_search_path_cannot_hide_the_effect() {
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let schema = unique("evil");
    let _schema = Cleanup::sql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let client = gw.client("admin", &devin).await.unwrap();
    // A `>` that always says "nothing changed", first on the path.
    direct(&format!(
        "CREATE SCHEMA {schema};
         CREATE FUNCTION {schema}.never(bigint, integer) RETURNS boolean LANGUAGE sql AS 'SELECT false';
         CREATE OPERATOR {schema}.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = {schema}.never);
         GRANT USAGE ON SCHEMA {schema} TO PUBLIC"
    ));
    client
        .batch_execute(&format!("SET search_path = {schema}, pg_catalog, public"))
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!("UPDATE {t} SET balance = 0 WHERE id = 1"))
        .await
        .unwrap();
    let commit = tokio::spawn(async move {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| sqlstate(&e))
    });
    let held = pending(&gw, &bob).await;
    let effect = &held["detail"]["effect"];
    assert_eq!(effect["tables"][0]["updated"], 1, "{effect}");
    decide(&gw, &bob, held["id"].as_str().unwrap(), "deny", "no").await;
    assert_eq!(commit.await.unwrap(), Err("42501".to_string()));
    assert_eq!(balances(&t), "100,200,300");
}

#[tokio::test(flavor = "multi_thread")]
async fn portals_and_prepared_names_cannot_carry_a_write_past_review() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&config()).await;
    let (t, _log, _drop) = accounts();
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let mut s = common::raw_login(gw.pg, "admin", "test", &devin).await;
    let parse =
        |name: &str, sql: &str| common::message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes());
    let bind = |portal: &str, stmt: &str| {
        common::message(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
    };
    let execute = |portal: &str| common::message(b'E', format!("{portal}\0\0\0\0\0").as_bytes());
    let sync = || common::message(b'S', b"");
    let update = format!("UPDATE {t} SET balance = 0 WHERE id = 1");

    // A reviewed statement bound in one batch and executed in the next,
    // with no review pending yet, is refused: it would join no review.
    s.write_all(&query("BEGIN")).await.unwrap();
    answers(&mut s, 1).await;
    let mut b1 = parse("u", &update);
    b1.extend_from_slice(&bind("p", "u"));
    b1.extend_from_slice(&sync());
    s.write_all(&b1).await.unwrap();
    answers(&mut s, 1).await;
    let mut b2 = execute("p");
    b2.extend_from_slice(&sync());
    s.write_all(&b2).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;

    // A portal bound to a reviewed statement keeps that mark even when a
    // later Bind of the name fails upstream (and a savepoint brings the
    // portal back): executed apart from its Bind, it is refused.
    s.write_all(&query("BEGIN")).await.unwrap();
    answers(&mut s, 1).await;
    let mut b1 = parse("w", &update);
    b1.extend_from_slice(&bind("pw", "w"));
    b1.extend_from_slice(&sync());
    s.write_all(&b1).await.unwrap();
    answers(&mut s, 1).await;
    s.write_all(&query("SAVEPOINT s")).await.unwrap();
    answers(&mut s, 1).await;
    // The name is taken: this Bind fails upstream (42P03).
    let mut b2 = parse("sel", "SELECT 1");
    b2.extend_from_slice(&bind("pw", "sel"));
    b2.extend_from_slice(&sync());
    s.write_all(&b2).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42P03"], "{got:?}");
    s.write_all(&query("ROLLBACK TO SAVEPOINT s"))
        .await
        .unwrap();
    answers(&mut s, 1).await;
    let mut b3 = execute("pw");
    b3.extend_from_slice(&sync());
    s.write_all(&b3).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;
    assert_eq!(balances(&t), "100,200,300");

    // A portal bound to BEGIN, closed, and its name taken by a cursor: its
    // Execute, apart from its Bind, is refused, and nothing behind it
    // runs.
    let mut b = parse("b", "BEGIN");
    b.extend_from_slice(&bind("q", "b"));
    b.extend_from_slice(&common::message(b'C', b"Pq\0"));
    b.extend_from_slice(&parse("d", "DECLARE q CURSOR WITH HOLD FOR SELECT 1"));
    b.extend_from_slice(&bind("", "d"));
    b.extend_from_slice(&execute(""));
    b.extend_from_slice(&execute("q"));
    b.extend_from_slice(&parse("", &update));
    b.extend_from_slice(&bind("", ""));
    b.extend_from_slice(&execute(""));
    b.extend_from_slice(&sync());
    s.write_all(&b).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    assert!(
        common::error_message(&got)
            .is_some_and(|m| m.contains("not executed right after its Bind")),
        "the stale portal is what was refused: {:?}",
        common::error_message(&got)
    );
    assert_eq!(balances(&t), "100,200,300");
    s.write_all(&query("CLOSE q")).await.unwrap();
    answers(&mut s, 1).await;

    // A SQL-prepared reviewed statement that airlock was made to forget
    // (a DEALLOCATE in a message that fails before it) is not run by a
    // protocol Bind: what it runs cannot be judged.
    s.write_all(&query("BEGIN")).await.unwrap();
    answers(&mut s, 1).await;
    let mut prep = parse("", &format!("PREPARE zero AS {update}"));
    prep.extend_from_slice(&bind("", ""));
    prep.extend_from_slice(&execute(""));
    prep.extend_from_slice(&sync());
    s.write_all(&prep).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert!(codes(&got).is_empty(), "{:?}", codes(&got));
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;
    s.write_all(&query("SELECT 1/0; DEALLOCATE zero"))
        .await
        .unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["22012"], "{got:?}");
    let mut run = bind("", "zero");
    run.extend_from_slice(&execute(""));
    run.extend_from_slice(&sync());
    s.write_all(&run).await.unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    assert_eq!(balances(&t), "100,200,300");

    // `EXECUTE p` prepared with the protocol is judged by what `p` was: a
    // SQL PREPARE may not make `p` something else later.
    s.write_all(&query("PREPARE p1 AS SELECT 1")).await.unwrap();
    answers(&mut s, 1).await;
    let mut p = parse("x", "EXECUTE p1");
    p.extend_from_slice(&sync());
    s.write_all(&p).await.unwrap();
    answers(&mut s, 1).await;
    s.write_all(&query(&format!(
        "BEGIN; DEALLOCATE p1; PREPARE p1 AS {update}"
    )))
    .await
    .unwrap();
    let got = answers(&mut s, 1).await;
    assert_eq!(codes(&got), ["42501"], "{got:?}");
    s.write_all(&query("ROLLBACK")).await.unwrap();
    answers(&mut s, 1).await;
    assert_eq!(balances(&t), "100,200,300");
    assert_eq!(approvals(&gw, &bob, "pending").await.len(), 0);
}
