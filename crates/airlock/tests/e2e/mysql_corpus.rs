//! The MySQL/MariaDB evasion corpus (`tests/corpus/mysql.txt`): SQL texts an
//! attacker would try on a `protocol: mysql` connection, each with the
//! decision airlock must reach. Same format and parser as the PostgreSQL
//! corpus ([`crate::corpus`]), with a `mode` header for the session's
//! `sql_mode`.
//!
//! [`mysql_corpus_through_explain`] checks every case offline through
//! `airlock::explain` and reports every failing case at once;
//! [`mysql_corpus_through_the_gateway`] sends each text as ONE COM_QUERY
//! (multi-statements on) through the MySQL door to the machine's MariaDB,
//! in a database of its own, and checks the decision and that a refused or
//! read-only case left the database as it was.

use std::time::{Duration, Instant};

use airlock_mywire::codec;
use airlock_mywire::response::{Expect as Answer, Part, Response};
use airlock_testkit::{LOCAL_MARIADB_PORT, MyDb};
use serde_json::Value;

use crate::common::{self, Gateway};
use crate::corpus::{self, Case, Dialect, Expect, Who, explain_case, finish, parse_corpus};
use crate::mysql::{raw_login_to, raw_query, read_packet};

/// The corpus, compiled in (cargo rebuilds the test when it changes).
const CORPUS: &str = include_str!("../corpus/mysql.txt");

/// The test policy: the harness's connection `test` as a MySQL connection
/// (roles `readonly` and `admin`, access rules `agents`, read-only, and
/// `dba`), with [`corpus::GUARDRAILS`].
pub(crate) fn policy() -> String {
    let yaml = common::local_config(&format!(
        "{}approvals: {{timeout: 100ms, timeout_in_transaction: 100ms}}\n",
        corpus::GUARDRAILS
    ));
    let from = "  test:\n";
    assert!(yaml.contains(from), "the harness config changed shape");
    yaml.replacen(from, "  test:\n    protocol: mysql\n", 1)
}

pub(crate) fn corpus() -> Vec<Case> {
    parse_corpus(CORPUS, "mysql.txt", Dialect::Mysql)
        .unwrap_or_else(|e| panic!("tests/corpus/mysql.txt: {e}"))
}

#[test]
fn the_mysql_corpus_format() {
    let cases = parse_corpus(
        "-- case: a\n-- as: agent\n-- mode: ansi_quotes, no_backslash_escapes\n-- expect: allow\nselect 1",
        "t.txt",
        Dialect::Mysql,
    )
    .unwrap();
    assert!(cases[0].mode.ansi_quotes && cases[0].mode.no_backslash_escapes);
    // Each dialect's headers only.
    assert!(
        parse_corpus(
            "-- case: a\n-- as: agent\n-- scs: off\n-- expect: allow\nselect 1",
            "t.txt",
            Dialect::Mysql,
        )
        .is_err()
    );
    assert!(
        parse_corpus(
            "-- case: a\n-- as: agent\n-- mode: ansi_quotes\n-- expect: allow\nselect 1",
            "t.txt",
            Dialect::Postgres,
        )
        .is_err()
    );
    assert!(
        parse_corpus(
            "-- case: a\n-- as: agent\n-- mode: pipes\n-- expect: allow\nselect 1",
            "t.txt",
            Dialect::Mysql,
        )
        .is_err()
    );

    let cases = corpus();
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    for who in [Who::Agent, Who::Dba] {
        assert!(cases.iter().any(|c| c.who == who));
    }
    assert!(cases.iter().any(|c| c.mode.ansi_quotes));
    assert!(cases.iter().any(|c| c.mode.no_backslash_escapes));
    assert!(cases.iter().any(|c| c.sql.is_empty()), "an empty query");
}

#[test]
fn mysql_corpus_through_explain() {
    let started = Instant::now();
    let cases = corpus();
    let config = airlock_config::Config::from_yaml_str(&policy(), "policy.yaml")
        .unwrap_or_else(|e| panic!("the test policy is invalid: {e:?}"));
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = explain_case(&config, "test", case) {
            failures.push(format!("{}: {e}", case.label()));
        }
    }
    eprintln!(
        "mysql corpus through explain: {} cases, {} failed, {:?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    finish("through policy explain", cases.len(), failures);
}

/// The tables the corpus reads: `t` (10 rows), `customers` (with SSNs),
/// `big` (5,000 rows).
const SEED: &str = "SET SESSION max_recursive_iterations = 100000;
CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
INSERT INTO t WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 10) SELECT n, CONCAT('row ', n) FROM g;
CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, ssn TEXT, email TEXT);
INSERT INTO customers VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'), (2, 'Bob', '987-65-4321', 'bob@example.org'), (3, 'Cy', '555-12-3456', 'cy@example.net');
CREATE TABLE big (id INT PRIMARY KEY, v TEXT);
INSERT INTO big WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) SELECT n, CONCAT('big ', n) FROM g;";

/// The database's contents and objects, to prove a case changed nothing.
fn fingerprint(db: &MyDb) -> String {
    db.sql(
        "SELECT CONCAT_WS('|', (SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()), \
         (SELECT COUNT(*) FROM t), (SELECT MD5(GROUP_CONCAT(id, v ORDER BY id)) FROM t), \
         (SELECT MD5(GROUP_CONCAT(id, name, ssn ORDER BY id)) FROM customers), \
         (SELECT COUNT(*) FROM big), (SELECT MD5(GROUP_CONCAT(v ORDER BY id)) FROM big), \
         (SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'corpus_evil%'), \
         (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()))",
    )
}

/// What the door answered: every error `(code, message)`, and whether any
/// result or OK came before the first error.
struct Answered {
    errors: Vec<(u16, String)>,
    ran: bool,
}

async fn send(gw: &Gateway, who: Who, token: &str, sql: &[u8]) -> Result<Answered, String> {
    let (mut s, mut input) = raw_login_to(gw, "test", who.user(), token).await;
    raw_query(&mut s, sql).await;
    let mut response = Response::new(false);
    response.expect(Answer::Results { binary: false });
    let mut answered = Answered {
        errors: Vec::new(),
        ran: false,
    };
    while !response.done() {
        let p = tokio::time::timeout(Duration::from_secs(30), read_packet(&mut s, &mut input))
            .await
            .map_err(|_| "no answer in 30 s".to_string())?;
        match response.next(&p.payload).map_err(|e| e.to_string())? {
            Part::Err => {
                let e = codec::err_info(&p.payload).ok_or("a malformed ERR")?;
                answered
                    .errors
                    .push((e.code, String::from_utf8_lossy(&e.message).into_owned()));
            }
            Part::Ok(_) | Part::ColumnCount(_) if answered.errors.is_empty() => answered.ran = true,
            _ => {}
        }
    }
    Ok(answered)
}

async fn check(gw: &Gateway, token: &str, expect: &Expect, a: &Answered) -> Result<(), String> {
    let airlock = a.errors.iter().find(|(_, m)| m.starts_with("airlock:"));
    let refused = |prefix: &str| -> Result<(), String> {
        match a.errors.first() {
            Some((1227, m)) if m.starts_with(prefix) && !a.ran => Ok(()),
            Some((1227, m)) if m.starts_with(prefix) => {
                Err(format!("refused, but part of the message ran: {m}"))
            }
            other => Err(format!(
                "expected {prefix}…, got {other:?} (ran: {})",
                a.ran
            )),
        }
    };
    match expect {
        Expect::Allow => match airlock {
            Some((code, m)) => Err(format!("expected allow, got {code} {m}")),
            None => Ok(()),
        },
        Expect::Deny(rule) => refused(&format!("airlock: statement denied by rule \"{rule}\": ")),
        Expect::Approve(rule) => {
            refused("airlock: statement not run: approval ")?;
            // The approval it waited for, under the expected rule.
            let message = &a.errors[0].1;
            let id = message["airlock: statement not run: approval ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            let body: Value = reqwest::Client::new()
                .get(format!("http://{}/api/v1/approvals/{id}", gw.http))
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match body["rule"].as_str() {
                Some(r) if r == rule => Ok(()),
                other => Err(format!("held under {other:?}, expected {rule}")),
            }
        }
        Expect::Error(code) => Err(format!("MySQL cases expect no SQLSTATE errors ({code})")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_corpus_through_the_gateway() {
    let started = Instant::now();
    let cases = corpus();
    let db = MyDb::create("airlock_mycorpus");
    db.sql(SEED);
    let yaml = policy()
        .replacen(
            "  postgres: 127.0.0.1:0\n",
            "  postgres: 127.0.0.1:0\n  mysql: 127.0.0.1:0\n",
            1,
        )
        .replacen(
            &format!("port: {}, database: test", common::LOCAL_PG_PORT),
            &format!("port: {LOCAL_MARIADB_PORT}, database: {}", db.name),
            1,
        )
        .replace("{user: postgres}", "{user: root}");
    assert!(yaml.contains(&db.name), "the harness config changed shape");
    let gw = Gateway::start(&yaml).await;
    let agent = gw.token(Who::Agent.sub(), Who::Agent.groups());
    let dba = gw.token(Who::Dba.sub(), Who::Dba.groups());
    let word = regex_lite_test();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        // The session's sql_mode is the server's: cases for another mode
        // are checked through explain (and mode tracking by the door's
        // own tests).
        if case.mode != airlock_sql::mysql::Mode::default() {
            continue;
        }
        ran += 1;
        let token = match case.who {
            Who::Agent => &agent,
            Who::Dba => &dba,
        };
        // The corpus names the database `test`: here it is the run's own.
        let sql = word(&case.sql, &db.name);
        let before = fingerprint(&db);
        let outcome = match send(&gw, case.who, token, &sql).await {
            Ok(a) => check(&gw, &dba, case.end_to_end(), &a).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", case.label()));
        }
        let changed = fingerprint(&db) != before;
        if changed && !(case.changes && *case.end_to_end() == Expect::Allow) {
            failures.push(format!("{}: the database changed", case.label()));
            db.sql(&format!("DROP TABLE IF EXISTS t, customers, big; {SEED}"));
        }
    }
    eprintln!(
        "mysql corpus through the gateway: {ran} of {} cases, {} failed, {:?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(ran >= 80, "only {ran} cases ran");
    finish("through the MySQL door", ran, failures);
    gw.stop().await;
}

/// Replaces the word `test` (the corpus's database) with `db`.
fn regex_lite_test() -> impl Fn(&[u8], &str) -> Vec<u8> {
    |sql: &[u8], db: &str| {
        let mut out = Vec::with_capacity(sql.len());
        let mut i = 0;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        while i < sql.len() {
            if sql[i..].starts_with(b"test")
                && (i == 0 || !word(sql[i - 1]))
                && sql.get(i + 4).is_none_or(|&b| !word(b))
            {
                out.extend_from_slice(db.as_bytes());
                i += 4;
            } else {
                out.push(sql[i]);
                i += 1;
            }
        }
        out
    }
}
