//! Approvals and just-in-time grants end to end: real psql and
//! tokio-postgres clients held by the real gateway, decided by a second
//! process (the `airlock` CLI) or through the HTTP API, on SQLite and on a
//! PostgreSQL store shared by two gateways.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use airlock_identity::dev::{DevIssuer, MintRequest};
use serde_json::{Value, json};

use crate::common::{
    self, Cleanup, Gateway, count_rows, direct, local_config, spawn_psql, stderr, stdout, unique,
};

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

/// Guardrails holding unbounded writes, for the approver group `dba`, and
/// a read-write route for group `writers`.
fn config(extra: &str) -> String {
    local_config(&format!(
        r#"  - name: writers
    groups: [writers]
    connections: [test]
    roles: [admin]
guardrails:
  - name: review-unbounded-writes
    match: {{statements: [update, delete], where: absent}}
    action: approve
    approvers: [dba]
{extra}"#
    ))
}

fn mint(gw: &Gateway, sub: &str, groups: &[&str], act: Option<&str>, ttl: Duration) -> String {
    let dev = DevIssuer::open_or_create(gw.data_dir()).unwrap();
    dev.mint(
        MintRequest {
            subject: sub.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ttl,
            act: act.map(Into::into),
            audience: "airlock".into(),
        },
        SystemTime::now(),
    )
}

/// A table of `n` rows, dropped when the guard is.
fn table(n: u32) -> (String, Cleanup) {
    let t = unique("orders");
    direct(&format!(
        "CREATE TABLE {t} (id int); INSERT INTO {t} SELECT generate_series(1, {n})"
    ));
    let cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {t}"));
    (t, cleanup)
}

/// The CLI against `gw`'s API as the holder of `token`.
fn cli(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    Command::new(AIRLOCK)
        .args(args)
        .args(["--server", &format!("http://{}", gw.http)])
        .env("AIRLOCK_TOKEN", token)
        .output()
        .expect("airlock runs")
}

fn api(gw: &Gateway) -> String {
    format!("http://{}/api/v1", gw.http)
}

/// Waits for exactly one pending approval and returns it.
pub(crate) async fn pending(gw: &Gateway, token: &str) -> Value {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let body: Value = client
            .get(format!("{}/approvals", api(gw)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(list) = body["approvals"].as_array()
            && let Some(first) = list.first()
        {
            assert_eq!(list.len(), 1, "{body}");
            return first.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval became pending");
}

async fn status_of(gw: &Gateway, token: &str, id: &str) -> String {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/approvals/{id}", api(gw)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"].as_str().unwrap_or_default().to_string()
}

async fn post(gw: &Gateway, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", api(gw)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn wait(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_delete_runs_once_approved_through_the_cli_and_not_when_denied() {
    // A webhook endpoint that is down: the data path does not notice, and
    // the retries show in the metrics.
    let gw = Gateway::start(&config(
        "approvals: {timeout: 60s}\napi: {auditor_groups: [security]}\n\
         notifications:\n  webhooks:\n    - {url: \"http://127.0.0.1:1/hook\", timeout: 1s}\n",
    ))
    .await;
    let devin = mint(
        &gw,
        "devin",
        &["writers"],
        Some("alice"),
        Duration::from_secs(900),
    );
    let bob = gw.token("bob", &["dba"]);

    // Approved: the statement runs, the rows are gone.
    let (t, _drop) = table(5);
    let psql = spawn_psql(&gw, &devin, "admin", &format!("DELETE FROM {t}"));
    let held = pending(&gw, &bob).await;
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["requester"], "devin");
    assert_eq!(held["act"], "alice");
    assert_eq!(held["rule"], "review-unbounded-writes");
    assert_eq!(held["detail"]["statement"], format!("DELETE FROM {t}"));
    assert_eq!(held["detail"]["kinds"], json!(["delete"]));
    assert_eq!(
        held["detail"]["estimated_rows"].as_u64().map(|n| n > 0),
        Some(true),
        "{held}"
    );
    assert_eq!(count_rows(&t), 5, "nothing runs while held");
    let out = cli(&gw, &bob, &["approvals", "approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("approved"), "{}", stdout(&out));
    let done = wait(psql);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(stdout(&done).contains("DELETE 5"), "{}", stdout(&done));
    assert!(
        stderr(&done).contains(&format!(
            "airlock: statement held for approval {id} (rule review-unbounded-writes); approve with: airlock approvals approve {id}"
        )),
        "{}",
        stderr(&done)
    );
    assert_eq!(count_rows(&t), 0);
    // Approving twice: the approval is already decided.
    let again = cli(&gw, &bob, &["approvals", "approve", &id]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already approved"),
        "{}",
        stderr(&again)
    );

    // Denied: nothing runs, psql shows 42501 with the id and the reason.
    let (t, _drop) = table(3);
    let psql = spawn_psql(&gw, &devin, "admin", &format!("DELETE FROM {t}"));
    let id = pending(&gw, &bob).await["id"].as_str().unwrap().to_string();
    let out = cli(
        &gw,
        &bob,
        &[
            "approvals",
            "deny",
            &id,
            "--reason",
            "not during business hours",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let done = wait(psql);
    assert!(!done.status.success());
    let err = stderr(&done);
    assert!(err.contains("ERROR:  42501"), "{err}");
    assert!(
        err.contains(&id) && err.contains("not during business hours"),
        "{err}"
    );
    assert!(err.contains("denied by bob"), "{err}");
    assert_eq!(count_rows(&t), 3);

    // The replay shows the holds and their decisions.
    let auditor = gw.token("sam", &["security"]);
    let mut transcript = String::new();
    for _ in 0..100 {
        let list = cli(&gw, &auditor, &["sessions", "list", "--json"]);
        let sessions: Value = serde_json::from_slice(&list.stdout).unwrap_or(Value::Null);
        transcript = sessions["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                stdout(&cli(
                    &gw,
                    &auditor,
                    &["sessions", "replay", s["id"].as_str().unwrap()],
                ))
            })
            .collect();
        if transcript.contains("denied by bob: not during") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(transcript.contains("approved by bob"), "{transcript}");
    assert!(
        transcript.contains("denied by bob: not during business hours"),
        "{transcript}"
    );
    assert!(
        transcript.contains("(rule \"review-unbounded-writes\""),
        "{transcript}"
    );

    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = gw.metrics().await;
        if metrics.contains("airlock_webhook_retries_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("airlock_webhook_retries_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("airlock_webhook_attempts_total{result=\"error\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_votes_are_refused_and_a_race_has_one_winner() {
    let gw = Gateway::start(&config(
        "approvals: {timeout: 60s}\napi: {admin_groups: [platform]}\n",
    ))
    .await;
    let devin = mint(
        &gw,
        "devin",
        &["writers"],
        Some("alice"),
        Duration::from_secs(900),
    );
    let bob = gw.token("bob", &["dba"]);
    let carol = gw.token("carol", &["dba"]);
    let (t, _drop) = table(2);
    let psql = spawn_psql(&gw, &devin, "admin", &format!("UPDATE {t} SET id = id + 1"));
    let id = pending(&gw, &bob).await["id"].as_str().unwrap().to_string();
    let path = |verb: &str| format!("/approvals/{id}/{verb}");

    // Unknown id.
    let (code, body) = post(
        &gw,
        &bob,
        &format!("/approvals/{}/approve", uuid::Uuid::new_v4()),
        json!({}),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = post(&gw, &bob, "/approvals/not-a-uuid/approve", json!({})).await;
    assert_eq!(code, 404);
    // Every party of the request, even in the approver group; and a token
    // that acts for someone else (an agent holding a dba's token) at all.
    for (who, act, says) in [
        ("devin", None, "you made"),
        ("alice", None, "you made"),
        ("carol", Some("other-agent"), "acts for someone else"),
    ] {
        let token = mint(&gw, who, &["dba"], act, Duration::from_secs(900));
        let (code, body) = post(&gw, &token, &path("approve"), json!({})).await;
        assert_eq!(code, 403, "{who}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    // Outside the approver group.
    let eve = gw.token("eve", &["interns"]);
    let (code, body) = post(&gw, &eve, &path("approve"), json!({})).await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("dba"), "{body}");
    // An expired approver token.
    let stale = DevIssuer::open_or_create(gw.data_dir()).unwrap().mint(
        MintRequest {
            subject: "bob".into(),
            groups: vec!["dba".into()],
            ttl: Duration::from_secs(60),
            act: None,
            audience: "airlock".into(),
        },
        SystemTime::now() - Duration::from_secs(3600),
    );
    let (code, body) = post(&gw, &stale, &path("approve"), json!({})).await;
    assert_eq!(code, 401, "{body}");
    // A denial without a reason.
    let (code, body) = post(&gw, &bob, &path("deny"), json!({})).await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&gw, &bob, &path("deny"), json!({"reason": "  "})).await;
    assert_eq!(code, 400);
    assert_eq!(
        status_of(&gw, &bob, &id).await,
        "pending",
        "no bad vote counted"
    );

    // Approve and deny at once: exactly one wins, and the client sees it.
    let (approve, deny) = (path("approve"), path("deny"));
    let (a, d) = tokio::join!(
        post(&gw, &bob, &approve, json!({})),
        post(&gw, &carol, &deny, json!({"reason": "race"})),
    );
    let winners = [a.0, d.0].iter().filter(|c| **c == 200).count();
    assert_eq!(winners, 1, "approve: {a:?}, deny: {d:?}");
    assert!([a.0, d.0].contains(&409), "approve: {a:?}, deny: {d:?}");
    let done = wait(psql);
    let status = status_of(&gw, &bob, &id).await;
    if a.0 == 200 {
        assert_eq!(status, "approved");
        assert!(done.status.success(), "{}", stderr(&done));
    } else {
        assert_eq!(status, "denied");
        assert!(stderr(&done).contains("42501"), "{}", stderr(&done));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_time_out_and_a_client_that_leaves_cancels_its_approval() {
    let gw = Gateway::start(&config(
        "approvals: {timeout: 60s, timeout_in_transaction: 1s}\n",
    ))
    .await;
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let (t, _drop) = table(4);

    // Inside a transaction block the shorter timeout applies; approving
    // afterwards is too late.
    let psql = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .arg(gw.conninfo("test", "admin"))
        .args(["-c", "BEGIN", "-c", &format!("DELETE FROM {t}")])
        .env("PGPASSWORD", &devin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = wait(psql);
    assert!(!done.status.success());
    let err = stderr(&done);
    assert!(err.contains("42501") && err.contains("timed out"), "{err}");
    assert!(err.contains("approvals.timeout_in_transaction"), "{err}");
    let id = err
        .split("approval ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, body) = post(&gw, &bob, &format!("/approvals/{id}/approve"), json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    assert_eq!(count_rows(&t), 4);

    // The client goes away while held: the approval is cancelled.
    let mut psql = spawn_psql(&gw, &devin, "admin", &format!("DELETE FROM {t}"));
    let id = pending(&gw, &bob).await["id"].as_str().unwrap().to_string();
    psql.kill().unwrap();
    let _ = psql.wait();
    let mut status = String::new();
    for _ in 0..100 {
        status = status_of(&gw, &bob, &id).await;
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
    let (code, _) = post(&gw, &bob, &format!("/approvals/{id}/approve"), json!({})).await;
    assert_eq!(code, 409);
    assert_eq!(count_rows(&t), 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_protocol_holds_at_execute_and_pipelined_statements_wait() {
    let gw = Gateway::start(&config("approvals: {timeout: 60s}\n")).await;
    let devin = gw.token("devin", &["writers"]);
    let bob = gw.token("bob", &["dba"]);
    let (t, _drop) = table(3);
    let (client, connection) = tokio_postgres::connect(
        &format!("{} password={devin}", gw.conninfo("test", "admin")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let sql = format!("UPDATE {t} SET id = id + $1");
    let update = client.prepare(&sql).await.unwrap();
    let select = client
        .prepare(&format!("SELECT count(*) FROM {t} WHERE id > 100"))
        .await
        .unwrap();
    // Pipelined: the UPDATE is held at Execute; the SELECT sent behind it
    // waits.
    let update = client.execute(&update, &[&100i32]);
    let select = client.query_one(&select, &[]);
    let decide = async {
        let held = pending(&gw, &bob).await;
        assert_eq!(held["detail"]["statement"], sql);
        // Sent in binary by the driver: shown as hex.
        assert_eq!(
            held["detail"]["parameters"],
            json!([{"hex": "00000064"}]),
            "{held}"
        );
        let (code, body) = post(
            &gw,
            &bob,
            &format!("/approvals/{}/approve", held["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    };
    let (updated, selected, ()) = tokio::join!(update, select, decide);
    assert_eq!(updated.unwrap(), 3);
    let n: i64 = selected.unwrap().get(0);
    assert_eq!(n, 3, "the SELECT ran after the held UPDATE");
    gw.stop().await;
}

/// The access rule of SPEC §3: group `ai-agents` may use role `admin` on
/// `test` only through a grant approved by `dba`.
fn jit_config() -> String {
    local_config(
        r#"  - name: agents-write-jit
    groups: [ai-agents]
    connections: [test]
    roles: [admin]
    jit: {max_duration: 1h, approvers: [dba], min_approvals: 1}
"#,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jit_role_works_only_while_its_grant_lives() {
    let gw = Gateway::start(&jit_config()).await;
    let devin = gw.token("devin", &["ai-agents"]);
    let bob = gw.token("bob", &["dba"]);

    // No grant: refused, saying how to get one.
    let out = gw.psql(&devin, "test", "admin", "select 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs a just-in-time grant"),
        "{}",
        stderr(&out)
    );
    // Longer than the rule allows.
    let out = cli(
        &gw,
        &devin,
        &[
            "access",
            "request",
            "test",
            "--role",
            "admin",
            "--for",
            "2h",
            "--reason",
            "migration",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_duration"), "{}", stderr(&out));

    // Requested, approved through the CLI: the role works.
    let (code, req) = post(
        &gw,
        &devin,
        "/access/requests",
        json!({"connection": "test", "role": "admin", "duration": "5s", "reason": "fix ticket 42"}),
    )
    .await;
    assert_eq!(code, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_string();
    // Not by the requester.
    let (code, _) = post(&gw, &devin, &format!("/access/{id}/approve"), json!({})).await;
    assert_eq!(code, 403);
    let out = cli(&gw, &bob, &["access", "approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = cli(&gw, &bob, &["access", "list", "--json"]);
    assert!(stdout(&listed).contains("granted"), "{}", stdout(&listed));

    let (client, connection) = tokio_postgres::connect(
        &format!("{} password={devin}", gw.conninfo("test", "admin")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(connection);
    let row = client.query_one("select 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    // The grant expires: the open session is cut with a FATAL saying why.
    let err = conn.await.unwrap().expect_err("the session is cut");
    let db = err.as_db_error().expect("a FATAL from airlock");
    assert_eq!(db.code().code(), "28000");
    assert!(
        db.message().contains(&format!("grant {id} expired")),
        "{}",
        db.message()
    );
    assert!(client.query_one("select 1", &[]).await.is_err());
    let out = gw.psql(&devin, "test", "admin", "select 1");
    assert!(!out.status.success(), "the role is gone with the grant");

    // Revoked: cut at once.
    let (_, req) = post(
        &gw,
        &devin,
        "/access/requests",
        json!({"connection": "test", "role": "admin", "duration": "30m", "reason": "again"}),
    )
    .await;
    let id = req["id"].as_str().unwrap().to_string();
    let (code, body) = post(&gw, &bob, &format!("/access/{id}/approve"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "granted");
    let (client, connection) = tokio_postgres::connect(
        &format!("{} password={devin}", gw.conninfo("test", "admin")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(connection);
    client.query_one("select 1", &[]).await.unwrap();
    let out = cli(&gw, &bob, &["access", "revoke", &id, "--reason", "done"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = conn.await.unwrap().expect_err("the session is cut");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("revoked by bob: done"), "{message}");
    let (code, body) = post(
        &gw,
        &bob,
        &format!("/access/{id}/revoke"),
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(code, 409, "revoking twice: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("is revoked"),
        "{body}"
    );
    gw.stop().await;
}

/// A gateway on a given data dir (shared dev issuer) and store.
async fn replica(data_dir: &std::path::Path, store_url: &str, journal: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "data_dir: {}\nstore: {{url: \"{store_url}\"}}\njournal: {{dir: {}}}\n{}",
        data_dir.display(),
        dir.path().join(journal).display(),
        config("approvals: {timeout: 60s}\n")
    );
    let config_path = dir.path().join("airlock.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let config = airlock::serve::load(&config_path).expect("valid");
    let running = airlock::serve::start(config, Some(config_path.clone()))
        .await
        .expect("starts");
    Gateway {
        pg: running.postgres.unwrap(),
        mysql: running.mysql,
        http: running.http.unwrap(),
        dir,
        config_path,
        running: Some(running),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_held_on_one_replica_is_released_by_the_other() {
    let db = common::local_db("airlock_store").await;
    let url = db.url();
    let shared = tempfile::tempdir().unwrap();
    let a = replica(shared.path(), &url, "journal-a").await;
    let b = replica(shared.path(), &url, "journal-b").await;
    let dev = DevIssuer::open_or_create(shared.path()).unwrap();
    let token = |sub: &str, group: &str| {
        dev.mint(
            MintRequest {
                subject: sub.into(),
                groups: vec![group.into()],
                ttl: Duration::from_secs(900),
                act: None,
                audience: "airlock".into(),
            },
            SystemTime::now(),
        )
    };
    let (devin, bob) = (token("devin", "writers"), token("bob", "dba"));
    // Both connected to the store.
    for gw in [&a, &b] {
        let mut ready = false;
        for _ in 0..200 {
            let r = reqwest::get(format!("http://{}/readyz", gw.http))
                .await
                .unwrap();
            if r.status() == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "the gateway became ready");
    }

    let (t, _drop) = table(6);
    let mut psql = spawn_psql(&a, &devin, "admin", &format!("DELETE FROM {t}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    if psql.try_wait().unwrap().is_some() {
        panic!("psql ended: {}", stderr(&wait(psql)));
    }
    // Seen on B, approved on B (its CLI, its API).
    let id = pending(&b, &bob).await["id"].as_str().unwrap().to_string();
    let out = cli(&b, &bob, &["approvals", "approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = wait(psql);
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(count_rows(&t), 0);

    // A gateway that shuts down ends its held clients' sessions and
    // cancels their approvals, and B says so.
    let (t, _drop) = table(2);
    let psql = spawn_psql(&a, &devin, "admin", &format!("DELETE FROM {t}"));
    let id = pending(&b, &bob).await["id"].as_str().unwrap().to_string();
    a.stop().await;
    let done = wait(psql);
    assert!(!done.status.success());
    assert_eq!(status_of(&b, &bob, &id).await, "cancelled");
    let (code, _) = post(&b, &bob, &format!("/approvals/{id}/approve"), json!({})).await;
    assert_eq!(code, 409);
    assert_eq!(count_rows(&t), 2);
    b.stop().await;
}

/// The first pending access request's id, as approvers list it, once
/// `requester` (an `access request --wait`) has filed it.
async fn pending_access(gw: &Gateway, token: &str, requester: &mut std::process::Child) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Some(status) = requester.try_wait().unwrap() {
            let mut err = String::new();
            let mut out = String::new();
            use std::io::Read as _;
            requester
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            requester
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            panic!("the request ended ({status}) before it was seen pending: {out}{err}");
        }
        let listed = cli(gw, token, &["access", "list", "--json"]);
        let list: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if let Some(id) = list["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["status"] == "pending")
            .and_then(|r| r["id"].as_str())
        {
            return id.to_string();
        }
        last = format!("{}{}", stdout(&listed), stderr(&listed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no access request became pending in 60 s; the last list: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_request_wait_exits_by_the_decision_for_ci_jobs() {
    let gw = Gateway::start(&jit_config()).await;
    let devin = gw.token("devin", &["ai-agents"]);
    let bob = gw.token("bob", &["dba"]);
    let request = |timeout: &str| {
        Command::new(AIRLOCK)
            .args([
                "access", "request", "test", "--role", "admin", "--for", "10m",
            ])
            .args(["--reason", "ci migration", "--wait", "--timeout", timeout])
            .args(["--server", &format!("http://{}", gw.http)])
            .env("AIRLOCK_TOKEN", &devin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Granted: exit 0, the grant printed.
    let mut child = request("60s");
    let id = pending_access(&gw, &bob, &mut child).await;
    assert!(cli(&gw, &bob, &["access", "approve", &id]).status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("granted: {id} until ")),
        "{}",
        stdout(&out)
    );
    assert!(
        cli(&gw, &bob, &["access", "revoke", &id, "--reason", "done"])
            .status
            .success()
    );

    // Denied: exit 1, with the reason.
    let mut child = request("60s");
    let id = pending_access(&gw, &bob, &mut child).await;
    assert!(
        cli(&gw, &bob, &["access", "deny", &id, "--reason", "not now"])
            .status
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("not now"), "{}", stdout(&out));

    // Nobody decides: exit 1 after the timeout.
    let out = request("1s").wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("still pending"), "{}", stdout(&out));
    gw.stop().await;
}
