//! Recording, end to end: what the journal and the store hold after real
//! clients ran through the gateway, what is refused when the journal cannot
//! be written, a store that is down and comes back, and a gateway killed
//! with SIGKILL in the middle of a write workload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use airlock_audit::Event;
use airlock_audit::event::{Body, Decision, Value};
use airlock_identity::dev::{DevIssuer, MintRequest};

use crate::common::{self, Cleanup, Gateway, direct, local_config, unique};

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

/// Every event in a journal directory, in (stream, seq) order, with its raw
/// bytes.
fn journal_events(dir: &Path) -> Vec<(Vec<u8>, Event)> {
    airlock_journal::Reader::open(dir)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            let e = Event::decode(&r.payload).unwrap();
            (r.payload, e)
        })
        .collect()
}

/// The journal's events once `sessions` sessions have ended.
async fn journal_after_sessions(dir: &Path, sessions: usize) -> Vec<(Vec<u8>, Event)> {
    let mut events = Vec::new();
    wait_until("the sessions to end", Duration::from_secs(10), async || {
        events = journal_events(dir);
        let ended = events
            .iter()
            .filter(|(_, e)| matches!(e.body, Body::SessionEnd(_)))
            .count();
        ended >= sessions
    })
    .await;
    events
}

fn statements_of<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> Vec<airlock_audit::event::Statement> {
    events
        .into_iter()
        .filter_map(|e| match &e.body {
            Body::Statement(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn results_of<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> Vec<airlock_audit::event::StatementResult> {
    events
        .into_iter()
        .filter_map(|e| match &e.body {
            Body::Result(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn session_of(events: &[(Vec<u8>, Event)], principal: &str) -> Vec<Event> {
    let id = events
        .iter()
        .find_map(|(_, e)| match &e.body {
            Body::SessionStart(s) if s.principal == principal => Some(s.session),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no session of {principal}"));
    events
        .iter()
        .filter(|(_, e)| e.session() == Some(id))
        .map(|(_, e)| e.clone())
        .collect()
}

async fn connect(gw: &Gateway, token: &str, user: &str) -> tokio_postgres::Client {
    gw.client(user, token)
        .await
        .expect("connects through the gateway")
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn store_at(url: &str) -> airlock_store::Store {
    airlock_store::Store::connect(url)
        .await
        .expect("store opens")
}

/// Every event the store holds, over all streams.
async fn store_events(store: &airlock_store::Store) -> Vec<Event> {
    let mut out = Vec::new();
    for stream in store.streams().await.unwrap() {
        let mut after = 0;
        loop {
            let page = store.events(stream, after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page.iter().map(|r| Event::decode(&r.payload).unwrap()));
        }
    }
    out
}

fn data_rows(messages: &[tokio_postgres::SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}

const SEEDED: [&str; 3] = ["123-45-6789", "987-65-4321", "4111111111111111"];

#[tokio::test(flavor = "multi_thread")]
async fn recordings_keep_what_happened_and_nothing_masking_hides() {
    let table = unique("rec_people");
    direct(&format!(
        "CREATE TABLE {table} (id int, name text, ssn text, note text);
         INSERT INTO {table} VALUES (1, 'Ann', '123-45-6789', 'card 4111111111111111'),
                                    (2, 'Bob', '987-65-4321', 'none'),
                                    (3, 'Cy', NULL, 'none');"
    ));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    // A third access rule (the list continues): the DBA sees raw values.
    let gw = Gateway::start(&local_config(
        "  - name: dba-unmasked
    groups: [dba-raw]
    connections: [test]
    roles: [admin]
    unmask: true
masking:
  rules:
    - name: ssn
      columns: [\"*.ssn\"]
      strategy: {partial: {keep_last: 4}}
    - name: cards
      detect: [credit_card]
      strategy: redact
recording:
  result_sample: {max_rows: 2, max_bytes: 64KiB}
api:
  auditor_groups: [security]
",
    ))
    .await;

    let agent = connect(&gw, &gw.token("agent-7", &["ai-agents"]), "readonly").await;
    let rows = agent
        .simple_query(&format!(
            "SELECT id, name, ssn, note FROM {table} ORDER BY id"
        ))
        .await
        .unwrap();
    assert_eq!(data_rows(&rows), 3);
    agent
        .simple_query(&format!(
            "SELECT id FROM {table} WHERE ssn = '123-45-6789' /* 987-65-4321 */"
        ))
        .await
        .unwrap();
    let found = agent
        .query(
            &format!("SELECT id FROM {table} WHERE ssn = $1"),
            &[&"987-65-4321"],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    agent
        .simple_query("SELECT 'paid with 4111111111111111' AS memo")
        .await
        .unwrap();
    let denied = agent
        .simple_query(&format!("DELETE FROM {table}"))
        .await
        .unwrap_err();
    assert_eq!(denied.code().unwrap().code(), "42501");
    drop(agent);

    let dba = connect(&gw, &gw.token("dba-1", &["dba-raw"]), "admin").await;
    let raw = dba
        .query(&format!("SELECT ssn FROM {table} WHERE id = 1"), &[])
        .await
        .unwrap();
    assert_eq!(
        raw[0].get::<_, String>(0),
        "123-45-6789",
        "the control sees raw values"
    );
    drop(dba);

    let journal = gw.data_dir().join("journal");
    let events = journal_after_sessions(&journal, 2).await;

    // Nothing masking hides is in the journal, whatever field it could be in.
    for (bytes, _) in &events {
        let text = String::from_utf8_lossy(bytes);
        for raw in SEEDED {
            assert!(!text.contains(raw), "{raw} leaked into the journal: {text}");
        }
    }

    let agent = session_of(&events, "agent-7");
    let Body::SessionStart(start) = &agent[0].body else {
        panic!("a session starts with its start event")
    };
    assert_eq!(
        (
            start.connection.as_str(),
            start.role.as_str(),
            start.access_rule.as_str()
        ),
        ("test", "readonly", "agents")
    );
    assert!(!start.tls && !start.unmask);
    let statements = statements_of(&agent);
    let results = results_of(&agent);
    // tokio-postgres's `query` prepares (Parse/Describe) before it binds:
    // one statement event per execution, at its Bind.
    assert_eq!(
        statements.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    // 1: the sample is what the client got, masked, cut at max_rows.
    let r1 = results.iter().find(|r| r.seq == 1).unwrap();
    assert_eq!(r1.rows, 3);
    assert_eq!(r1.tag.as_deref(), Some("SELECT 3"));
    let sample = r1.sample.as_ref().unwrap();
    assert_eq!(sample.columns, ["id", "name", "ssn", "note"]);
    assert_eq!(sample.rows.len(), 2);
    assert!(sample.truncated);
    assert_eq!(sample.rows[0][2], Value::Text("*****6789".into()));
    // A detector match masks the whole value, as the client saw it.
    assert_eq!(sample.rows[0][3], Value::Text("*****".into()));
    // 2: a statement on a masked column loses its literals and comments.
    assert_eq!(
        statements[1].text,
        format!("SELECT id FROM {table} WHERE ssn = '*****' '*****'")
    );
    // 3: and its parameters.
    assert_eq!(statements[2].params, [Value::Text("*****".into())]);
    assert_eq!(
        statements[2].protocol,
        airlock_audit::event::Protocol::Extended
    );
    // 4: detectors redact values anywhere in a text.
    assert_eq!(statements[3].text, "SELECT 'paid with *****' AS memo");
    // 5: a refusal is recorded with its reason, and has no result.
    assert_eq!(statements[4].decision, Decision::Deny);
    assert_eq!(statements[4].refusal.as_ref().unwrap().code, "42501");
    assert!(results.iter().all(|r| r.seq != 5));
    let Body::SessionEnd(end) = &agent.last().unwrap().body else {
        panic!("a session ends with its end event")
    };
    assert_eq!(end.statements, 5);

    // The unmasked session's values are withheld, its row count kept.
    let dba = session_of(&events, "dba-1");
    let r = results_of(&dba).remove(0);
    assert_eq!(r.rows, 1);
    let sample = r.sample.unwrap();
    assert!(sample.rows.is_empty() && sample.withheld.is_some());

    // Everything ships to the (default SQLite) store, in the same order.
    let store = store_at(&format!("sqlite://{}/airlock.db", gw.data_dir().display())).await;
    let journaled: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
    let mut shipped = Vec::new();
    wait_until(
        "the store to catch up",
        Duration::from_secs(15),
        async || {
            shipped = store_events(&store).await;
            shipped.len() >= journaled.len()
        },
    )
    .await;
    assert_eq!(shipped[..journaled.len()], journaled[..]);

    // An auditor lists and replays through the HTTP API.
    let cli = |args: &[&str], token: &str| {
        Command::new(AIRLOCK)
            .args(args)
            .args(["--server", &format!("http://{}", gw.http)])
            .env("AIRLOCK_TOKEN", token)
            .output()
            .unwrap()
    };
    let auditor = gw.token("auditor-1", &["security"]);
    let listed = cli(
        &["sessions", "list", "--principal", "agent-7", "--json"],
        &auditor,
    );
    assert!(listed.status.success(), "{}", common::stderr(&listed));
    let session = start.session.to_string();
    assert!(common::stdout(&listed).contains(&session));
    let replay = cli(&["sessions", "replay", &session], &auditor);
    assert!(replay.status.success(), "{}", common::stderr(&replay));
    let transcript = common::stdout(&replay);
    for want in [
        format!("test=> SELECT id, name, ssn, note FROM {table} ORDER BY id"),
        "*****6789".to_string(),
        "(3 rows)".to_string(),
        format!("test=> SELECT id FROM {table} WHERE ssn = '*****' '*****'"),
        "42501".to_string(),
        "session ended".to_string(),
    ] {
        assert!(transcript.contains(&want), "{want:?} not in:\n{transcript}");
    }
    for raw in SEEDED {
        assert!(!transcript.contains(raw));
    }
    // Someone outside the auditor groups may not.
    let refused = cli(
        &["sessions", "replay", &session],
        &gw.token("agent-7", &["ai-agents"]),
    );
    assert!(!refused.status.success());
    assert!(
        common::stderr(&refused).contains("not allowed"),
        "{}",
        common::stderr(&refused)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_statements_huge_results_and_non_utf8_values_stay_within_bounds() {
    let gw = Gateway::start(&local_config("")).await;
    let token = gw.token("dba-2", &["dba"]);
    let client = connect(&gw, &token, "admin").await;
    let big = "x".repeat(1 << 20);
    let rows = client
        .simple_query(&format!("SELECT length('{big}')"))
        .await
        .unwrap();
    assert_eq!(data_rows(&rows), 1);
    let rows = client
        .simple_query("SELECT g, repeat('y', 1000) FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    assert_eq!(data_rows(&rows), 20000);
    drop(client);

    // A LATIN1 client gets non-UTF-8 bytes in a text column.
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            &gw.conninfo("test", "admin"),
            "-c",
            "SELECT chr(233) || 't' AS word",
        ])
        .env("PGPASSWORD", &token)
        .env("PGCLIENTENCODING", "LATIN1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(out.stdout, b"\xe9t\n");

    let journal = gw.data_dir().join("journal");
    let events = journal_after_sessions(&journal, 2).await;
    // Defaults: statements cut at 64 KiB, samples at 100 rows and 64 KiB.
    for (bytes, _) in &events {
        assert!(bytes.len() < 80 << 10, "an event of {} bytes", bytes.len());
    }
    let statements = statements_of(events.iter().map(|(_, e)| e));
    let cut = statements[0]
        .truncated
        .as_ref()
        .expect("the 1 MB statement is cut");
    assert_eq!(cut.bytes, (1 << 20) + "SELECT length('')".len() as u64);
    assert_eq!(statements[0].text.len(), 64 << 10);
    let results = results_of(events.iter().map(|(_, e)| e));
    let huge = &results[1];
    assert_eq!(huge.rows, 20000);
    let sample = huge.sample.as_ref().unwrap();
    assert!(sample.truncated && !sample.rows.is_empty() && sample.rows.len() < 100);
    let latin1 = results.last().unwrap().sample.as_ref().unwrap();
    assert_eq!(latin1.columns, ["word"]);
    assert_eq!(latin1.rows, [[Value::Bytes { hex: "e974".into() }]]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_journal_refuses_sessions_with_58000_and_health_stays_up() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    // A directory below a regular file cannot be created, even by root.
    let journal = blocker.path().join("journal");
    let gw = Gateway::start(&local_config(&format!(
        "journal: {{dir: {}}}\n",
        journal.display()
    )))
    .await;
    let err = tokio_postgres::connect(
        &format!(
            "{} password={}",
            gw.conninfo("test", "admin"),
            gw.token("dba-3", &["dba"])
        ),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("the session is refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "58000");
    assert!(db.message().contains("audit journal"), "{}", db.message());

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{}/healthz", gw.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("http://{}/readyz", gw.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("audit journal"));
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// The real binary, for faults a process must suffer whole.

struct Serve {
    child: Child,
    dir: PathBuf,
    pg: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, pg: u16, http: u16, extra: &str) -> PathBuf {
    let yaml = local_config(extra)
        .replace(
            "postgres: 127.0.0.1:0",
            &format!("postgres: 127.0.0.1:{pg}"),
        )
        .replace("http: 127.0.0.1:0", &format!("http: 127.0.0.1:{http}"));
    let path = dir.join("airlock.yaml");
    std::fs::write(
        &path,
        format!("data_dir: {}\n{yaml}", dir.join("data").display()),
    )
    .unwrap();
    path
}

/// Starts `airlock serve`; with `max_file_kib`, under `ulimit -f` with
/// SIGXFSZ ignored, so writes past the limit fail with EFBIG.
fn serve(dir: &Path, config: &Path, pg: u16, max_file_kib: Option<u32>) -> Serve {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("airlock.log"))
        .unwrap();
    // The soft limit only: a test may lift it on the running gateway.
    let limit = max_file_kib.map_or(String::new(), |k| {
        format!("trap '' XFSZ; ulimit -S -f {k}; ")
    });
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{limit}exec {AIRLOCK} serve --config {}",
            config.display()
        ))
        .env("AIRLOCK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Serve {
        child,
        dir: dir.to_path_buf(),
        pg,
    }
}

impl Serve {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        DevIssuer::open_or_create(self.dir.join("data"))
            .unwrap()
            .mint(
                MintRequest {
                    subject: sub.into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    ttl: Duration::from_secs(900),
                    act: None,
                    audience: "airlock".into(),
                },
                SystemTime::now(),
            )
    }

    async fn connect(&self, token: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=test user=admin password={token} sslmode=disable connect_timeout=10",
                self.pg
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Waits for the PostgreSQL listener to serve a session.
    async fn ready_client(&self, token: &str) -> tokio_postgres::Client {
        let start = Instant::now();
        loop {
            match self.connect(token).await {
                Ok(c) => return c,
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the gateway did not serve: {e}\n{}",
                    std::fs::read_to_string(self.dir.join("airlock.log")).unwrap_or_default()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit(&self, args: &[&str]) -> std::process::Output {
        Command::new(AIRLOCK)
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(self.dir.join("airlock.yaml"))
            .output()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_fails_mid_batch_refuses_every_statement_in_it_with_58000_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let table = unique("rec_efbig");
    direct(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    let (pg, http) = (airlock_testkit::free_port(), airlock_testkit::free_port());
    // `fsync: always`: while one batch syncs, the next fills with the other
    // sessions' statements. The file-size limit bites the SQLite store
    // too: only the data path matters here.
    let config = write_config(dir.path(), pg, http, "journal: {fsync: always}\n");
    let gw = serve(dir.path(), &config, pg, Some(256));
    let token = gw.token("dba-4", &["dba"]);
    let pad = "p".repeat(2000);
    let mut sessions = Vec::new();
    for w in 0..4 {
        let client = gw.ready_client(&token).await;
        let (table, pad) = (table.clone(), pad.clone());
        sessions.push(tokio::spawn(async move {
            let mut ran = Vec::new();
            for n in 0..400 {
                let id = w * 1000 + n;
                match client
                    .simple_query(&format!(
                        "INSERT INTO {table} SELECT {id} WHERE '{pad}' <> ''"
                    ))
                    .await
                {
                    Ok(_) => ran.push(id),
                    Err(e) => return (ran, Some((id, e)), client),
                }
            }
            (ran, None, client)
        }));
    }
    let mut ran = BTreeSet::new();
    let mut refused = Vec::new();
    // The sessions stay open until readiness is checked: a session's end
    // is an append that may fit again once the failed batch is cut off,
    // and would make the gateway ready again.
    let mut open = Vec::new();
    for s in sessions {
        let (ok, err, client) = s.await.unwrap();
        open.push(client);
        ran.extend(ok);
        let (id, e) = err.expect("the journal fills up within 400 statements a session");
        assert_eq!(e.code().unwrap().code(), "58000", "{e}");
        refused.push(id);
    }
    // Every refused statement, in the failed batch or after it, was
    // refused before it reached the database; every other one ran.
    let in_db: BTreeSet<i32> = direct(&format!("SELECT id FROM {table} ORDER BY id"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        in_db, ran,
        "the database holds exactly what was not refused"
    );
    assert!(refused.iter().all(|id| !in_db.contains(id)));
    let ready = reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = reqwest::get(format!("http://127.0.0.1:{http}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(open);
    // Space returns (the running gateway's file-size limit is lifted): the
    // journal takes appends again, the gateway is ready, and statements
    // run and are recorded, in the same run.
    let lifted = Command::new("prlimit")
        .args(["--pid", &gw.child.id().to_string(), "--fsize=unlimited:"])
        .status()
        .unwrap();
    assert!(lifted.success(), "prlimit");
    let client = gw.ready_client(&token).await;
    client
        .simple_query(&format!("INSERT INTO {table} SELECT 99999 WHERE true"))
        .await
        .expect("statements run once the journal can be written");
    ran.insert(99999);
    let mut status = 0;
    for _ in 0..300 {
        status = reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again");
    drop(client);
    // What the journal holds is intact: the failed batch was cut off.
    drop(gw);
    let journal = dir.path().join("data/journal");
    let records: Vec<_> = airlock_journal::Reader::open(&journal)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let prefix = format!("INSERT INTO {table} SELECT ");
    let recorded: BTreeSet<i32> = records
        .iter()
        .filter_map(|r| match Event::decode(&r.payload).ok()?.body {
            Body::Statement(s) => s
                .text
                .strip_prefix(&prefix)?
                .split(' ')
                .next()?
                .parse()
                .ok(),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded, ran,
        "the journal holds every statement that ran, and no other"
    );
    airlock_journal::verify(&journal).expect("the journal's chain verifies");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_workload_loses_no_statement_that_ran() {
    kill_9_mid_workload("100ms").await;
}

/// With `fsync: always` each batch is a group commit: the kill lands while
/// one is being written or synced.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_group_commit_loses_no_statement_that_ran() {
    kill_9_mid_workload("always").await;
}

async fn kill_9_mid_workload(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let table = unique("rec_crash");
    direct(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    let (pg, http) = (airlock_testkit::free_port(), airlock_testkit::free_port());
    let config = write_config(
        dir.path(),
        pg,
        http,
        &format!("journal: {{fsync: {fsync}}}\n"),
    );
    let mut gw = serve(dir.path(), &config, pg, None);
    let token = gw.token("ci-crash", &["dba"]);

    // Four clients insert unique ids as fast as they can; the gateway is
    // killed while they do.
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = gw.ready_client(&token).await;
        let table = table.clone();
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let id = w * 1_000_000 + n;
                if client
                    .simple_query(&format!("INSERT INTO {table} VALUES ({id})"))
                    .await
                    .is_err()
                {
                    return n;
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = gw.child.id();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = gw.child.wait();
    let mut ran = 0;
    for w in workers {
        ran += w.await.unwrap();
    }
    assert!(ran > 20, "the workload ran ({ran} inserts)");

    // A write torn by the crash: half a record at the end of the last
    // segment.
    let journal = dir.path().join("data/journal");
    let last = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[0, 0, 1, 0, 0xde, 0xad])
        .unwrap();

    // Restart: recovery sets the torn tail aside and the old stream ships.
    drop(gw);
    let gw = restart_and_check_every_row_recorded(dir.path(), &config, pg, &table, ran).await;
    let torn: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".torn"))
        .collect();
    assert_eq!(torn.len(), 1, "the torn tail is kept aside for an auditor");

    // An auditor-visible edit in the store: a recorded id changed.
    drop(gw);
    let db = format!("sqlite://{}/data/airlock.db", dir.path().display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let (stream, seq, payload): (String, i64, String) = sqlx::query_as(
        "SELECT stream, seq, payload FROM events WHERE kind = 'statement' ORDER BY stream, seq LIMIT 1 OFFSET 5",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let edited = String::from_utf8(b64.decode(payload).unwrap())
        .unwrap()
        .replace("INSERT", "SELECT");
    sqlx::query("UPDATE events SET payload = ? WHERE stream = ? AND seq = ?")
        .bind(b64.encode(edited))
        .bind(&stream)
        .bind(seq)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let verify = Command::new(AIRLOCK)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = format!("{}{}", common::stdout(&verify), common::stderr(&verify));
    assert_eq!(verify.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&stream) && said.contains(&format!("seq {seq}")),
        "{said}"
    );
}

/// `kill -9` twenty times in a row under a write load, the gateway
/// restarted each time on the same journal and store: every row that
/// reached the database is recorded, and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_twenty_times_loses_no_statement_that_ran() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let table = unique("rec_kills");
    direct(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY)"));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    let inserted = Arc::new(AtomicU64::new(0));
    // Fresh ports each start: a port left free by a killed gateway may be
    // taken by another test meanwhile.
    let ports = || {
        let (pg, http) = (airlock_testkit::free_port(), airlock_testkit::free_port());
        (
            write_config(dir.path(), pg, http, "journal: {fsync: 100ms}\n"),
            pg,
        )
    };
    for round in 0..20u64 {
        let (config, pg) = ports();
        let gw = serve(dir.path(), &config, pg, None);
        let token = gw.token("ci-kills", &["dba"]);
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let client = gw.ready_client(&token).await;
            let (table, inserted) = (table.clone(), Arc::clone(&inserted));
            workers.push(tokio::spawn(async move {
                for n in 0.. {
                    let id = (round * 2 + w) * 1_000_000 + n;
                    let sql = format!("INSERT INTO {table} VALUES ({id})");
                    if client.simple_query(&sql).await.is_err() {
                        return;
                    }
                    inserted.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Killed once this round's clients have written.
        let before = inserted.load(Ordering::Relaxed);
        wait_until("inserts this round", Duration::from_secs(30), async || {
            inserted.load(Ordering::Relaxed) >= before + 10
        })
        .await;
        assert!(
            Command::new("kill")
                .args(["-9", &gw.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        for w in workers {
            w.await.unwrap();
        }
        drop(gw);
    }
    let ran = inserted.load(Ordering::Relaxed) as usize;
    let (config, pg) = ports();
    restart_and_check_every_row_recorded(dir.path(), &config, pg, &table, ran).await;
}

/// Starts the gateway again after a crash and checks that every row of
/// `table` (`ran` inserts at least) has its INSERT shipped to the store,
/// and that `audit verify` passes.
async fn restart_and_check_every_row_recorded(
    dir: &Path,
    config: &Path,
    pg: u16,
    table: &str,
    ran: usize,
) -> Serve {
    let gw = serve(dir, config, pg, None);
    drop(gw.ready_client(&gw.token("ci-check", &["dba"])).await);
    let store = store_at(&format!("sqlite://{}/data/airlock.db", dir.display())).await;
    let in_db: BTreeSet<i64> = direct(&format!("SELECT id FROM {table} ORDER BY id"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        in_db.len() >= ran,
        "rows committed: {} of {ran}",
        in_db.len()
    );
    let mut recorded = BTreeSet::new();
    wait_until(
        "every inserted id to be shipped",
        Duration::from_secs(60),
        async || {
            recorded = inserted_ids(&store_events(&store).await, table);
            in_db.is_subset(&recorded)
        },
    )
    .await;
    let verify = gw.audit(&["verify"]);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        common::stdout(&verify),
        common::stderr(&verify)
    );
    gw
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bind_of_a_statement_prepared_in_sql_is_recorded() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&local_config("")).await;
    let token = gw.token("dba-5", &["dba"]);
    let mut s = common::raw_login(gw.pg, "admin", "test", &token).await;
    s.write_all(&common::message(
        b'Q',
        b"PREPARE s1(int) AS SELECT $1 + 1\0",
    ))
    .await
    .unwrap();
    common::read_until(&mut s, b'Z').await;
    // Bind portal "" to SQL-prepared "s1" with the text parameter "41".
    let mut bind = b"\0s1\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&2i32.to_be_bytes());
    bind.extend_from_slice(b"41\0\0");
    let mut out = common::message(b'B', &bind);
    out.extend_from_slice(&common::message(b'E', b"\0\0\0\0\0"));
    out.extend_from_slice(&common::message(b'S', b""));
    s.write_all(&out).await.unwrap();
    let answers = common::read_until(&mut s, b'Z').await;
    let row = answers.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.body.ends_with(b"42"));
    drop(s);

    let journal = gw.data_dir().join("journal");
    let events = journal_after_sessions(&journal, 1).await;
    let events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
    let bound = statements_of(&events)
        .into_iter()
        .find(|s| s.text.starts_with("EXECUTE s1"))
        .expect("the Bind is recorded");
    let result = results_of(&events)
        .into_iter()
        .find(|r| r.seq == bound.seq)
        .expect("and its result");
    assert_eq!(result.rows, 1);
    gw.stop().await;
}

/// The ids of `INSERT INTO {table} VALUES (id)` statements in `events`.
fn inserted_ids(events: &[Event], table: &str) -> BTreeSet<i64> {
    let prefix = format!("INSERT INTO {table} VALUES (");
    events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Statement(s) => s
                .text
                .strip_prefix(&prefix)?
                .strip_suffix(')')?
                .parse::<i64>()
                .ok(),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_sessions_ships_the_journal_and_a_restart_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let table = unique("rec_drain");
    direct(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {table}"));
    let (pg, http) = (airlock_testkit::free_port(), airlock_testkit::free_port());
    let config = write_config(dir.path(), pg, http, "shutdown_grace: 3s\n");
    let mut gw = serve(dir.path(), &config, pg, None);
    let token = gw.token("ci-drain", &["dba"]);

    // Four sessions insert unique ids until the gateway ends them.
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = gw.ready_client(&token).await;
        let table = table.clone();
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let id = w * 1_000_000 + n;
                if let Err(e) = client
                    .simple_query(&format!("INSERT INTO {table} VALUES ({id})"))
                    .await
                {
                    // 57P01 when the cut meets a statement in flight; a
                    // client between two statements reads the FATAL as its
                    // connection closing.
                    let ended = e.code().map(|c| c.code().to_string());
                    return (n, ended.or_else(|| e.is_closed().then(|| "closed".into())));
                }
            }
            unreachable!()
        }));
    }
    let ready = |code: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
            .await
            .is_ok_and(|r| r.status() == code)
    };
    wait_until(
        "the gateway to be ready",
        Duration::from_secs(10),
        async || ready(200).await,
    )
    .await;
    let pid = gw.child.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Draining: not ready, no new sessions, the open ones still served.
    wait_until(
        "/readyz to say not ready",
        Duration::from_secs(10),
        async || ready(503).await,
    )
    .await;
    assert!(
        gw.connect(&token).await.is_err(),
        "a new session during the drain"
    );
    let before = workers.iter().filter(|w| w.is_finished()).count();
    assert_eq!(before, 0, "sessions run on during the grace period");

    // The grace period over, the sessions left are ended with 57P01 (their
    // ends, recorded, are checked below).
    let mut ran = 0;
    for w in workers {
        let (n, code) = w.await.unwrap();
        assert!(
            matches!(code.as_deref(), Some("57P01" | "closed")),
            "after {n} inserts: {code:?}"
        );
        ran += n;
    }
    assert!(ran > 20, "the workload ran ({ran} inserts)");
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status}");

    // Shipped before the process exited: every insert that ran, and every
    // session's end, are in the store with no gateway running.
    let store = store_at(&format!(
        "sqlite://{}/data/airlock.db",
        dir.path().display()
    ))
    .await;
    let events = store_events(&store).await;
    let in_db: BTreeSet<i64> = direct(&format!("SELECT id FROM {table} ORDER BY id"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let recorded = inserted_ids(&events, &table);
    assert!(in_db.len() >= ran);
    assert!(
        in_db.is_subset(&recorded),
        "an insert that ran is not in the store"
    );
    let ends: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::SessionEnd(end) => Some(end.reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends.iter()
            .filter(|r| **r == "gateway shutting down")
            .count(),
        4,
        "{ends:?}"
    );

    // The next process on the same data dir serves at once, and the trail
    // verifies.
    let gw = serve(dir.path(), &config, pg, None);
    drop(gw.ready_client(&token).await);
    let verify = gw.audit(&["verify"]);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        common::stdout(&verify),
        common::stderr(&verify)
    );
}
