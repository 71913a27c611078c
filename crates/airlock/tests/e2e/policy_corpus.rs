//! The policy evasion corpus (`tests/corpus/policy.txt`): SQL texts an
//! attacker would try, each with the decision airlock must reach.
//!
//! Every case is checked twice:
//! - [`corpus_through_explain`]: offline, through `airlock::explain::explain`,
//!   which runs the data path's analyzer and guardrails without a database;
//! - [`corpus_through_the_gateway`]: end to end, through the in-process
//!   gateway and the machine's PostgreSQL, in a database created for the run.
//!   Each text goes out as ONE simple Query message over the raw wire, byte
//!   for byte as the corpus gives it (multi-statement texts, invalid UTF-8 and
//!   NUL bytes included). A refused message must leave the database exactly
//!   as it was, which the test proves by fingerprinting the database directly
//!   (bypassing the gateway) before and after; a read-only principal must
//!   leave it unchanged whatever the decision, and its session settings too.
//!
//! [`read_only_paths_beyond_simple_query`] covers what a corpus of simple
//! Query texts cannot: the extended protocol (tokio-postgres), SQL-level
//! PREPARE/EXECUTE across messages, a client library's transaction, psql's
//! `\copy`, `-c … -c …`, `\;`, `\gexec` and `\lo_import` (the FunctionCall
//! message), and a client encoding other than UTF-8.
//!
//! Both corpus tests report every failing case at once, with what was
//! expected and what happened.

use std::fmt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::common::{self, Gateway, Received};
use crate::corpus::{self, Case, Dialect, Expect, Who, explain_case, finish, parse_corpus};

/// The corpus, compiled in (cargo rebuilds the test when it changes).
const CORPUS: &str = include_str!("../corpus/policy.txt");

/// The test policy: the harness's connection `test` (roles `readonly` and
/// `admin`, access rules `agents`, read-only, and `dba`), pointed at
/// `database`, with [`corpus::GUARDRAILS`]. Nobody approves: held statements time
/// out at once.
fn policy(database: &str) -> String {
    let yaml = common::local_config(&format!(
        "{}approvals: {{timeout: 100ms, timeout_in_transaction: 100ms}}\n",
        corpus::GUARDRAILS
    ));
    let from = "database: test,";
    assert!(yaml.contains(from), "the harness config changed shape");
    yaml.replace(from, &format!("database: {database},"))
}

fn corpus() -> Vec<Case> {
    parse_corpus(CORPUS, "policy.txt", Dialect::Postgres)
        .unwrap_or_else(|e| panic!("tests/corpus/policy.txt: {e}"))
}

#[test]
fn the_corpus_format() {
    let cases = parse_corpus(
        "-- header\n-- case: a\n-- as: agent\n-- expect: deny read-only\n-- note: n\n-- lead comment\nselect 1;\r\ndelete from t\n\n\n-- ===\n-- section\n\n-- case: b\n-- as: dba\n-- escapes: yes\n-- expect: error 22021\nselect '\\xff{{repeat:3:(}}\\u{a0}\\\\'\n",
        "t.txt",
        Dialect::Postgres,
    )
    .unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].sql, b"-- lead comment\nselect 1;\r\ndelete from t");
    assert_eq!(cases[0].expect, Expect::Deny("read-only".into()));
    assert_eq!(cases[0].line, 2);
    assert_eq!(cases[1].sql, b"select '\xff(((\xc2\xa0\\'");
    assert!(
        parse_corpus(
            "-- case: a\n-- as: agent\n-- expect: maybe\nselect 1",
            "t.txt",
            Dialect::Postgres,
        )
        .is_err()
    );
    assert!(parse_corpus(
        "-- case: a\n-- as: agent\n-- expect: allow\n-- case: a\n-- as: agent\n-- expect: allow\n",
        "t.txt",
        Dialect::Postgres,
    ).is_err());

    // The corpus itself: big enough, and every family the issue asks for.
    let cases = corpus();
    assert!(cases.len() >= 90, "only {} cases", cases.len());
    for who in [Who::Agent, Who::Dba] {
        assert!(cases.iter().any(|c| c.who == who));
    }
    assert!(
        cases.iter().any(|c| c.sql.len() >= 1 << 20),
        "a 1 MB statement"
    );
    assert!(
        cases.iter().any(|c| std::str::from_utf8(&c.sql).is_err()),
        "invalid UTF-8"
    );
    assert!(cases.iter().any(|c| c.sql.is_empty()), "an empty query");
    assert!(cases.iter().any(|c| c.sql == b";"), "a lone ;");
    assert!(
        cases.iter().any(|c| c.scs_off),
        "standard_conforming_strings off"
    );
}

// ---------------------------------------------------------------------------
// A: through `policy explain`.

#[test]
fn corpus_through_explain() {
    let started = Instant::now();
    let cases = corpus();
    let config = airlock_config::Config::from_yaml_str(&policy("airlock_corpus"), "policy.yaml")
        .unwrap_or_else(|e| panic!("the test policy is invalid: {e:?}"));
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = explain_case(&config, "test", case) {
            failures.push(format!("{}: {e}", case.label()));
        }
    }
    eprintln!(
        "policy corpus through explain: {} cases, {} failed, {:?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    finish("through policy explain", cases.len(), failures);
}

// ---------------------------------------------------------------------------
// The dedicated database.

/// Creates the tables the corpus works on, or puts them back as they were.
const SEED: &str = "
create table if not exists t (id int primary key, v text);
delete from t;
insert into t select g, 'row ' || g from generate_series(1, 10) g;
create table if not exists customers (id int primary key, name text, ssn text);
delete from customers;
insert into customers values
  (1, 'Ada Lovelace', '123-45-6789'),
  (2, 'Alan Turing', '987-65-4321'),
  (3, 'Grace Hopper', '555-12-3456');
create table if not exists big (id int primary key, v text);
delete from big;
insert into big select g, 'big ' || g from generate_series(1, 5000) g;
analyze big;
create sequence if not exists s;
select setval('s', 1, false);
";

/// Everything a case could change: the rows, the tables and their
/// privileges, the sequence, functions, extensions, large objects, roles,
/// the corpus's databases and replication slots, per-role settings and the
/// server's configuration files (ALTER SYSTEM).
const FINGERPRINT: &str = r#"
select concat_ws(E'\n',
  't=' || (select md5(coalesce(string_agg(id || ':' || coalesce(v, '<null>'), ',' order by id), '')) from t),
  'big=' || (select md5(coalesce(string_agg(id || ':' || coalesce(v, '<null>'), ',' order by id), '')) from big),
  'customers=' || (select md5(coalesce(string_agg(id || ':' || name || ':' || ssn, ',' order by id), '')) from customers),
  'relations=' || (select coalesce(string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || coalesce(c.relacl::text, ''), ',' order by n.nspname, c.relname), '')
                   from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'),
  'schemas=' || (select string_agg(nspname, ',' order by nspname) from pg_namespace where nspname not like 'pg_%'),
  'sequence=' || (select last_value || '/' || is_called from s),
  'functions=' || (select count(*) from pg_proc where pronamespace = 'public'::regnamespace),
  'extensions=' || (select string_agg(extname, ',' order by extname) from pg_extension),
  'large_objects=' || (select count(*) from pg_largeobject_metadata),
  'roles=' || (select count(*) from pg_roles),
  'databases=' || (select count(*) from pg_database where datname like 'corpus_evil%'),
  'slots=' || (select count(*) from pg_replication_slots where slot_name like 'corpus_evil%'
                and (active_pid is null or active_pid in (select pid from pg_stat_activity where datname = current_database()))),
  'role_settings=' || (select count(*) from pg_db_role_setting where setrole = (select oid from pg_roles where rolname = 'postgres')),
  'file_settings=' || (select md5(coalesce(string_agg(sourcefile || ':' || coalesce(name, '') || '=' || coalesce(setting, ''), ',' order by sourcefile, sourceline), '')) from pg_file_settings)
)"#;

/// A database of its own on the machine's PostgreSQL, with a direct
/// connection (not through the gateway).
struct Db {
    name: String,
    client: Client,
    _conn: JoinHandle<Result<(), tokio_postgres::Error>>,
    _guard: DropDb,
}

/// Drops the database when the test ends, however it ends.
struct DropDb(String);

impl Drop for DropDb {
    fn drop(&mut self) {
        // One statement per call: DROP DATABASE cannot run in the implicit
        // transaction of a multi-statement message. The last two drop what
        // a case could have created had it got through.
        for sql in [
            format!("drop database if exists {} with (force)", self.0),
            "drop database if exists corpus_evil_db with (force)".to_string(),
            "drop role if exists corpus_evil_role".to_string(),
        ] {
            let o = common::psql(
                &format!(
                    "host=127.0.0.1 port={} dbname=postgres user=postgres",
                    common::LOCAL_PG_PORT
                ),
                "",
                &sql,
            );
            if !o.status.success() {
                eprintln!("{sql}: {}", common::stderr(&o));
            }
        }
    }
}

impl Db {
    async fn create(prefix: &str) -> Db {
        let name = common::unique(prefix);
        let sql = format!("create database {name}");
        blocking(move || common::direct(&sql)).await;
        let guard = DropDb(name.clone());
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={name}",
                common::LOCAL_PG_PORT
            ),
            NoTls,
        )
        .await
        .expect("direct connection to the test database");
        let db = Db {
            name,
            client,
            _conn: tokio::spawn(conn),
            _guard: guard,
        };
        db.client.batch_execute(SEED).await.expect("seeding");
        db.fingerprint()
            .await
            .expect("fingerprinting the seeded database");
        db
    }

    /// Puts the seeded data back (after a case changed it).
    async fn restore(&self) {
        if let Err(e) = self.client.batch_execute(SEED).await {
            eprintln!("restoring the seed of {}: {e}", self.name);
        }
    }

    /// Waits until no session but this one is connected to the database, so
    /// that what a previous session left (temporary tables and replication
    /// slots, locks) is gone.
    async fn wait_idle(&self) {
        const OTHERS: &str = "select count(*) from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid()";
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let msgs = self.client.simple_query(OTHERS).await.expect(OTHERS);
            if first_value(&msgs).as_deref() == Some("0") || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn fingerprint(&self) -> Result<String, String> {
        let msgs = self
            .client
            .simple_query(FINGERPRINT)
            .await
            .map_err(|e| format!("the fingerprint query failed: {e}"))?;
        first_value(&msgs).ok_or_else(|| "the fingerprint query returned no row".into())
    }
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
        _ => None,
    })
}

/// The lines of two fingerprints that differ.
fn diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (b.get(i).copied(), a.get(i).copied());
        if x != y {
            out.push(format!("{} -> {}", x.unwrap_or("-"), y.unwrap_or("-")));
        }
    }
    out.join(", ")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

// ---------------------------------------------------------------------------
// The raw wire.

fn query_message(sql: &[u8]) -> BytesMut {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql);
    body.put_u8(0);
    common::message(b'Q', &body)
}

/// Reads one Query's answer up to ReadyForQuery, refusing COPY FROM STDIN
/// data with CopyFail. Returns the messages and the transaction status.
async fn response(s: &mut TcpStream) -> Result<(Vec<Received>, u8), String> {
    let mut got = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), common::read_message(s))
            .await
            .map_err(|_| format!("no ReadyForQuery within 60 s; got {}", describe(&got)))?
            .map_err(|e| format!("connection ended ({e}); got {}", describe(&got)))?;
        match m.tag {
            b'G' => {
                let fail = common::message(b'f', b"corpus: no data\0");
                s.write_all(&fail).await.map_err(|e| e.to_string())?;
            }
            b'Z' => {
                let status = m.body.first().copied().unwrap_or(b'?');
                got.push(m);
                return Ok((got, status));
            }
            _ => {}
        }
        got.push(m);
    }
}

async fn simple(s: &mut TcpStream, sql: &str) -> Result<(Vec<Received>, u8), String> {
    s.write_all(&query_message(sql.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    response(s).await
}

/// The ErrorResponses among `msgs`, as (SQLSTATE, message).
fn errors(msgs: &[Received]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .map(|m| {
            (
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default(),
            )
        })
        .collect()
}

/// What the server answered, for failure messages: command tags and errors.
fn describe(msgs: &[Received]) -> String {
    let parts: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m.tag {
            b'C' => Some(
                String::from_utf8_lossy(m.body.strip_suffix(b"\0").unwrap_or(&m.body)).into_owned(),
            ),
            b'E' => Some(format!(
                "ERROR {} {}",
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default()
            )),
            b'I' => Some("(empty query)".into()),
            b'G' => Some("(COPY FROM STDIN)".into()),
            b'H' => Some("(COPY TO STDOUT)".into()),
            _ => None,
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The first column of the first DataRow, as text.
fn first_cell(msgs: &[Received]) -> Option<String> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let b = &row.body;
    if b.len() < 6 || i16::from_be_bytes([b[0], b[1]]) < 1 {
        return None;
    }
    let len = i32::from_be_bytes(b[2..6].try_into().unwrap());
    if len < 0 {
        return Some("NULL".into());
    }
    let v = b.get(6..6 + len as usize)?;
    Some(String::from_utf8_lossy(v).into_owned())
}

/// Whether the answer to one message matches the expectation.
fn check_answer(expect: &Expect, msgs: &[Received]) -> Result<(), String> {
    let errs = errors(msgs);
    let refusal = |prefix: String| -> Result<(), String> {
        match errs.first() {
            Some((code, message)) if code == "42501" && message.starts_with(&prefix) => {
                // A refusal covers the whole message: nothing of it ran.
                match msgs
                    .iter()
                    .find(|m| matches!(m.tag, b'C' | b'D' | b'T' | b'G' | b'H' | b'I'))
                {
                    Some(_) => Err(format!(
                        "refused, but part of the message ran: {}",
                        describe(msgs)
                    )),
                    None => Ok(()),
                }
            }
            Some(_) => Err(format!("expected {prefix}…, got {}", describe(msgs))),
            None => Err(format!(
                "expected {prefix}…, but it ran: {}",
                describe(msgs)
            )),
        }
    };
    match expect {
        Expect::Allow => match errs.iter().find(|(_, m)| m.starts_with("airlock:")) {
            Some((code, message)) => Err(format!("expected allow, got {code} {message}")),
            None => Ok(()),
        },
        Expect::Deny(rule) => refusal(format!("airlock: statement denied by rule \"{rule}\": ")),
        // Held under the rule (the notice says which), then timed out.
        Expect::Approve(rule) => {
            let held = format!("(rule {rule}); approve with:");
            if !msgs
                .iter()
                .any(|m| m.tag == b'N' && m.field(b'M').is_some_and(|t| t.contains(&held)))
            {
                return Err(format!("expected a hold {held}…, got {}", describe(msgs)));
            }
            refusal("airlock: statement not run: approval ".into())
        }
        Expect::Error(code) => match errs.first() {
            Some((c, _)) if c == code => Ok(()),
            _ => Err(format!("expected error {code}, got {}", describe(msgs))),
        },
    }
}

/// What a session's privileges and read-only state are.
const SESSION: &str = "select concat_ws(',', current_setting('default_transaction_read_only'), \
     current_setting('transaction_read_only'), current_user, session_user, \
     current_setting('search_path'))";

async fn session_state(s: &mut TcpStream) -> Result<String, String> {
    let (msgs, _) = simple(s, SESSION).await?;
    first_cell(&msgs).ok_or_else(|| format!("the session query failed: {}", describe(&msgs)))
}

// ---------------------------------------------------------------------------
// B: end to end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_the_gateway() {
    let started = Instant::now();
    let cases = corpus();
    let db = Db::create("airlock_corpus").await;
    let gw = Gateway::start(&policy(&db.name)).await;
    let agent = gw.token(Who::Agent.sub(), Who::Agent.groups());
    let dba = gw.token(Who::Dba.sub(), Who::Dba.groups());

    let mut failures = Vec::new();
    for case in &cases {
        let token = match case.who {
            Who::Agent => &agent,
            Who::Dba => &dba,
        };
        if let Err(e) = run_case(&gw, &db, token, case).await {
            failures.push(format!("{}: {e}", case.label()));
        }
    }
    if let Err(e) = denial_inside_a_transaction(&gw, &agent).await {
        failures.push(format!("denial inside BEGIN: {e}"));
    }
    eprintln!(
        "policy corpus through the gateway: {} cases, {} failed, {:?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    gw.stop().await;
    finish("through the gateway", cases.len(), failures);
}

async fn run_case(gw: &Gateway, db: &Db, token: &str, case: &Case) -> Result<(), String> {
    db.wait_idle().await;
    let mut s = common::raw_login(gw.pg, case.who.user(), "test", token).await;
    if case.scs_off && !case.pipelined {
        let (msgs, _) = simple(&mut s, "set standard_conforming_strings = off").await?;
        if !errors(&msgs).is_empty() {
            return Err(format!(
                "set standard_conforming_strings failed: {}",
                describe(&msgs)
            ));
        }
    }
    let session_before = session_state(&mut s).await?;
    let before = db
        .fingerprint()
        .await
        .map_err(|e| format!("fingerprint before the case: {e}"))?;
    let expect = case.end_to_end();

    let mut out = BytesMut::new();
    if case.pipelined {
        out.extend_from_slice(&query_message(b"set standard_conforming_strings = off"));
    }
    out.extend_from_slice(&query_message(&case.sql));
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    if case.pipelined {
        let (msgs, _) = response(&mut s).await?;
        if !errors(&msgs).is_empty() {
            return Err(format!("the pipelined SET failed: {}", describe(&msgs)));
        }
    }
    let (msgs, status) = response(&mut s).await?;

    let mut problems = Vec::new();
    if let Err(e) = check_answer(expect, &msgs) {
        problems.push(e);
    }
    // The session stays usable.
    if status != b'I' {
        let (msgs, _) = simple(&mut s, "rollback").await?;
        if !errors(&msgs).is_empty() {
            problems.push(format!("rollback failed: {}", describe(&msgs)));
        }
    }
    let (one, _) = simple(&mut s, "select 1").await?;
    if first_cell(&one).as_deref() != Some("1") {
        problems.push(format!(
            "the session is not usable afterwards: {}",
            describe(&one)
        ));
    }
    // A read-only principal never changes its session's privileges or
    // read-only state; nor does a refused message, whoever sends it. (An
    // allowed message may change the search path: a harmless setting.)
    if case.who == Who::Agent || *expect != Expect::Allow {
        let session_after = session_state(&mut s).await?;
        let privileges = |state: &str| state.splitn(5, ',').take(4).collect::<Vec<_>>().join(",");
        let changed = if *expect == Expect::Allow {
            privileges(&session_after) != privileges(&session_before)
        } else {
            session_after != session_before
        };
        if changed {
            problems.push(format!(
                "the session changed: {session_before} -> {session_after}"
            ));
        }
    }
    match db.fingerprint().await {
        Ok(after) if after == before => {}
        Ok(after) => {
            if !case.changes {
                problems.push(format!(
                    "the database changed: {} (answer: {})",
                    diff(&before, &after),
                    describe(&msgs)
                ));
            }
            db.restore().await;
        }
        Err(e) => {
            problems.push(format!(
                "the database changed: {e} (answer: {})",
                describe(&msgs)
            ));
            db.restore().await;
        }
    }
    let _ = s.write_all(&common::message(b'X', &[])).await;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// After a denial inside BEGIN the client sees what PostgreSQL would show:
/// the transaction is aborted (25P02) until ROLLBACK.
async fn denial_inside_a_transaction(gw: &Gateway, token: &str) -> Result<(), String> {
    let mut s = common::raw_login(gw.pg, "readonly", "test", token).await;
    let (msgs, status) = simple(&mut s, "begin").await?;
    if status != b'T' || !errors(&msgs).is_empty() {
        return Err(format!(
            "begin: {} (status {})",
            describe(&msgs),
            status as char
        ));
    }
    let (msgs, status) = simple(&mut s, "insert into t values (500, 'x')").await?;
    check_answer(&Expect::Deny("read-only".into()), &msgs)?;
    if status != b'E' {
        return Err(format!(
            "after the denial the status is {}, not E",
            status as char
        ));
    }
    let (msgs, _) = simple(&mut s, "select 1").await?;
    match errors(&msgs).first() {
        Some((code, _)) if code == "25P02" => {}
        _ => {
            return Err(format!(
                "expected 25P02 after the denial, got {}",
                describe(&msgs)
            ));
        }
    }
    let (msgs, status) = simple(&mut s, "rollback").await?;
    if status != b'I' || !errors(&msgs).is_empty() {
        return Err(format!("rollback: {}", describe(&msgs)));
    }
    let (msgs, _) = simple(&mut s, "select 1").await?;
    if first_cell(&msgs).as_deref() != Some("1") {
        return Err(format!("select 1 after rollback: {}", describe(&msgs)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// C: read-only paths beyond one simple Query.

#[track_caller]
fn assert_refused<T: fmt::Debug>(what: &str, r: Result<T, tokio_postgres::Error>) {
    let e = match r {
        Ok(v) => panic!("{what}: expected 42501 from airlock, but it succeeded: {v:?}"),
        Err(e) => e,
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{what}: expected 42501 from airlock, got {e:?}"));
    assert_eq!(db.code().code(), "42501", "{what}: {db:?}");
    assert!(db.message().starts_with("airlock: "), "{what}: {db:?}");
}

/// psql through the gateway, with `args` after the connection string and
/// `stdin` fed to it.
async fn psql(gw: &Gateway, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let conninfo = gw.conninfo("test", "readonly");
    let token = token.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    blocking(move || {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", &conninfo])
            .args(&args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    })
    .await
}

#[track_caller]
fn assert_psql_refused(what: &str, o: &Output) {
    let err = common::stderr(o);
    assert!(
        !o.status.success(),
        "{what}: psql succeeded: {}",
        common::stdout(o)
    );
    assert!(
        err.contains("airlock: statement denied by rule \"read-only\""),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_paths_beyond_simple_query() {
    let db = Db::create("airlock_corpus_paths").await;
    let gw = Gateway::start(&policy(&db.name)).await;
    let agent = gw.token("agent", &["ai-agents"]);
    let before = db.fingerprint().await.unwrap();

    let mut config = tokio_postgres::Config::new();
    config
        .host(gw.pg.ip().to_string())
        .port(gw.pg.port())
        .dbname("test")
        .user("readonly")
        .password(agent.as_str())
        .ssl_mode(tokio_postgres::config::SslMode::Disable)
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = config.connect(NoTls).await.expect("agent connects");
    let conn = tokio::spawn(conn);
    // The extended protocol: judged at Parse.
    assert_refused(
        "prepare delete",
        client.prepare("delete from t where id = $1").await,
    );
    assert_refused(
        "execute insert",
        client
            .execute("insert into t values ($1, $2)", &[&99i32, &"x"])
            .await,
    );
    assert_refused(
        "prepare of two statements",
        client.prepare("select 1; delete from t").await,
    );
    assert_refused(
        "set_config in a prepared query",
        client
            .query(
                "select set_config('default_transaction_read_only', 'off', false)",
                &[],
            )
            .await,
    );
    assert_refused(
        "set role in a prepared statement",
        client.execute("set role postgres", &[]).await,
    );
    assert_refused(
        "set session authorization in a prepared statement",
        client
            .execute("set session authorization postgres", &[])
            .await,
    );
    let n: i64 = client
        .query_one("select count(*) from t where id > $1", &[&0i32])
        .await
        .expect("a prepared read works")
        .get(0);
    assert_eq!(n, 10);

    // A multi-statement simple Query.
    assert_refused(
        "commit; insert",
        client
            .batch_execute("commit; insert into t values (99, 'x')")
            .await,
    );

    // A transaction driven by the client library.
    {
        let mut client = client;
        let tx = client.transaction().await.expect("begin");
        assert_refused(
            "update inside a transaction",
            tx.execute("update t set v = 'x' where id = 1", &[]).await,
        );
        tx.rollback().await.expect("rollback");

        // SQL-level PREPARE/EXECUTE across messages.
        assert_refused(
            "prepare p as delete",
            client.batch_execute("prepare p as delete from t").await,
        );
        assert_refused("execute p", client.batch_execute("execute p").await);
        assert_refused("execute p (extended)", client.prepare("execute p").await);
        client
            .batch_execute("prepare p2 as select 1")
            .await
            .expect("prepare p2 as select 1");
        let msgs = client.simple_query("execute p2").await.expect("execute p2");
        assert_eq!(first_value(&msgs).as_deref(), Some("1"));
        let row = client
            .query_one("execute p2", &[])
            .await
            .expect("execute p2 through Parse");
        assert_eq!(row.get::<_, i32>(0), 1);

        // Nothing the agent did changed its session.
        let msgs = client
            .simple_query("show default_transaction_read_only")
            .await
            .unwrap();
        assert_eq!(first_value(&msgs).as_deref(), Some("on"));
        let msgs = client
            .simple_query("select current_user = session_user")
            .await
            .unwrap();
        assert_eq!(first_value(&msgs).as_deref(), Some("t"));
        drop(client);
    }
    let _ = conn.await;

    // psql: \copy is COPY FROM STDIN, a write.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.tsv");
    std::fs::write(&file, "99\tx\n98\ty\n").unwrap();
    let copy = format!("\\copy t from '{}'", file.display());
    let o = psql(&gw, &agent, &["-c", &copy], None).await;
    assert_psql_refused("\\copy t from file", &o);

    // psql -c … -c …: each -c is its own message; the second is refused.
    let o = psql(
        &gw,
        &agent,
        &["-c", "select 1", "-c", "insert into t values (98, 'y')"],
        None,
    )
    .await;
    assert_eq!(common::stdout(&o), "1", "the first -c runs");
    assert_psql_refused("psql -c select -c insert", &o);

    // psql's \; sends both statements in one message.
    let o = psql(
        &gw,
        &agent,
        &[],
        Some("select 1 \\; insert into t values (97, 'z');\n"),
    )
    .await;
    assert_psql_refused("select 1 \\; insert", &o);

    // \gexec runs each value of the result as its own message.
    let o = psql(&gw, &agent, &[], Some("select 'delete from t' \\gexec\n")).await;
    assert_psql_refused("\\gexec", &o);

    // \lo_import uses the FunctionCall protocol message, which names a
    // function by OID: judged as the SELECT it stands for, a write.
    let o = psql(&gw, &agent, &["-c", "\\lo_import /etc/hostname"], None).await;
    assert!(!o.status.success(), "\\lo_import succeeded");
    assert!(
        common::stderr(&o).contains("statement denied by rule \"read-only\"")
            && common::stderr(&o).contains("effects: write"),
        "{}",
        common::stderr(&o)
    );

    // A client encoding whose multibyte characters can end in a backslash
    // (BIG5: 0xA4 0x5C): the gateway reads only ASCII in it, so the text
    // below, one SELECT or a SELECT and a DELETE depending on who decodes
    // it, is refused.
    let mut s = common::raw_login_with(
        gw.pg,
        &[
            ("user", "readonly"),
            ("database", "test"),
            ("client_encoding", "BIG5"),
        ],
        &agent,
    )
    .await;
    let (msgs, _) = {
        s.write_all(&query_message(b"select '\xa4\x5c'; delete from t; -- '"))
            .await
            .unwrap();
        response(&mut s).await.unwrap()
    };
    check_answer(&Expect::Deny("unknown".into()), &msgs).unwrap();
    let (msgs, _) = simple(&mut s, "select 1").await.unwrap();
    assert_eq!(first_cell(&msgs).as_deref(), Some("1"));

    // A script: the write is refused, the reads around it run.
    let o = psql(
        &gw,
        &agent,
        &["-v", "ON_ERROR_STOP=0"],
        Some("select 1;\ndelete from t;\nselect count(*) from t;\n"),
    )
    .await;
    assert_eq!(common::stdout(&o), "1\n10");
    assert!(
        common::stderr(&o).contains("airlock: statement denied by rule \"read-only\""),
        "{}",
        common::stderr(&o)
    );

    let after = db.fingerprint().await.unwrap();
    assert_eq!(
        before,
        after,
        "the database changed: {}",
        diff(&before, &after)
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// C: through the MCP endpoint's `query` tool.

/// Every case again through MCP's `query` (the Python SDK, protocol
/// 2026-07-28), against the same database: the outcome must be the wire
/// door's. What one `query` call cannot carry is refused without running,
/// and counted: a text of several statements (one statement per call),
/// COPY that the wire door would not deny (no place for its rows in a tool
/// result), NUL bytes (no server takes them), bytes that are not UTF-8 (a
/// JSON string cannot hold them), and cases that need a session setting
/// first (`scs: off`: each call is a session of its own).
#[tokio::test(flavor = "multi_thread")]
async fn corpus_through_mcp_matches_the_wire_door() {
    use crate::mcp::Mcp;
    use serde_json::json;

    let started = Instant::now();
    let cases = corpus();
    let db = Db::create("airlock_corpus_mcp").await;
    let yaml = format!(
        "{}mcp: {{enabled: true, max_request_size: 4MiB}}\n",
        policy(&db.name)
    );
    let gw = Gateway::start(&yaml).await;
    let analyzer = airlock_sql::Analyzer::new(&[]);
    let mut agent = Mcp::connect(
        &gw,
        &gw.token(Who::Agent.sub(), Who::Agent.groups()),
        "2026-07-28",
    )
    .await;
    let mut dba = Mcp::connect(
        &gw,
        &gw.token(Who::Dba.sub(), Who::Dba.groups()),
        "2026-07-28",
    )
    .await;

    let mut failures = Vec::new();
    let (mut compared, mut not_carried) = (0, 0);
    for case in &cases {
        let Ok(sql) = std::str::from_utf8(&case.sql) else {
            not_carried += 1;
            continue;
        };
        if case.scs_off {
            not_carried += 1;
            continue;
        }
        db.wait_idle().await;
        let before = db.fingerprint().await.expect("fingerprint");
        let client = match case.who {
            Who::Agent => &mut agent,
            Who::Dba => &mut dba,
        };
        let answer = client
            .call(
                "query",
                json!({"connection": "test", "role": case.who.user(), "sql": sql}),
            )
            .await;
        let got = &answer["structured"];
        let status = got["status"].as_str().unwrap_or_default();
        let message = got["message"].as_str().unwrap_or_default();
        let statements = analyzer.analyze(sql);
        let copy = statements.iter().any(|s| {
            matches!(
                s.kind,
                airlock_policy::StatementKind::CopyIn | airlock_policy::StatementKind::CopyOut
            )
        });
        let expect = case.end_to_end();
        let denied = matches!(expect, Expect::Deny(_));
        let result = if sql.contains('\0') || statements.len() != 1 || (copy && !denied) {
            not_carried += 1;
            match status {
                "invalid" => Ok(()),
                _ => Err(format!(
                    "not one statement MCP can carry, but not refused as such: {answer}"
                )),
            }
        } else {
            compared += 1;
            match expect {
                Expect::Allow => match status {
                    "ok" => Ok(()),
                    "error" if !message.starts_with("airlock:") => Ok(()),
                    _ => Err(format!("expected allow, got {answer}")),
                },
                Expect::Deny(rule) => {
                    let prefix = format!("airlock: statement denied by rule \"{rule}\": ");
                    match (status, message.starts_with(&prefix)) {
                        ("denied", true) => Ok(()),
                        _ => Err(format!("expected {prefix}…, got {answer}")),
                    }
                }
                Expect::Approve(rule) => match (status, got["rule"].as_str()) {
                    ("pending_approval", Some(r)) if r == rule => Ok(()),
                    _ => Err(format!("expected a hold by {rule}, got {answer}")),
                },
                Expect::Error(code) => match (status, got["code"].as_str()) {
                    ("error", Some(c)) if c == code => Ok(()),
                    _ => Err(format!("expected error {code}, got {answer}")),
                },
            }
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.label()));
        }
        // Held cases time out at once (approvals.timeout: 100ms); nothing
        // refused, held or not carried changes the database.
        let runs = matches!(expect, Expect::Allow) && status == "ok";
        if !runs || !case.changes {
            tokio::time::sleep(Duration::from_millis(if status == "pending_approval" {
                300
            } else {
                0
            }))
            .await;
            match db.fingerprint().await {
                Ok(after) if after == before => {}
                Ok(after) => {
                    failures.push(format!(
                        "{}: the database changed: {}",
                        case.label(),
                        diff(&before, &after)
                    ));
                    db.restore().await;
                }
                Err(e) => failures.push(format!("{}: {e}", case.label())),
            }
        } else {
            db.restore().await;
        }
    }
    eprintln!(
        "policy corpus through MCP: {} cases, {compared} compared with the wire door, {not_carried} refused as not carried by one query call, {} failed, {:?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(compared >= 190, "too few cases compared: {compared}");
    agent.close().await;
    dba.close().await;
    gw.stop().await;
    finish("through MCP", cases.len(), failures);
}
