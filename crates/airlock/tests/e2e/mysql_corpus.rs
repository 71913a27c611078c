//! The MySQL/MariaDB evasion corpus (`tests/corpus/mysql.txt`): SQL texts an
//! attacker would try on a `protocol: mysql` connection, each with the
//! decision airlock must reach. Same format and parser as the PostgreSQL
//! corpus ([`crate::corpus`]), with a `mode` header for the session's
//! `sql_mode`.
//!
//! [`mysql_corpus_through_explain`] checks every case offline through
//! `airlock::explain` and reports every failing case at once. (The run
//! through the MySQL door reuses [`corpus`] and [`policy`].)

use std::time::Instant;

use crate::common;
use crate::corpus::{self, Case, Dialect, Who, explain_case, finish, parse_corpus};

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
