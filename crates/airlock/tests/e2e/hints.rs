//! Refusals carry a machine-readable hint (SPEC §14): PostgreSQL's HINT
//! field, one JSON object. Each test does what the hint says and checks
//! that it then passes: a hint that points nowhere fails here.

use std::process::Command;

use serde_json::Value;

use crate::common::{self, Cleanup, Gateway, direct, stderr, stdout};

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

/// `local_config` plus a JIT write role for the agents (at most 10
/// minutes) and three guardrails: a derived hint, a rule's own hint and
/// an approval.
fn config() -> String {
    common::local_config(
        r#"  - name: agents-write-jit
    groups: [ai-agents]
    connections: [test]
    roles: [admin]
    jit: {max_duration: 10m, approvers: [dba], min_approvals: 1}
guardrails:
  - name: require-where
    match: {statements: [update, delete], where: absent}
    action: deny
  - name: no-truncate
    match: {statements: [truncate]}
    action: deny
    hint: delete the rows you mean, with a WHERE clause
"#,
    )
}

/// The hint of a server error, parsed.
fn hint_of(e: &tokio_postgres::Error) -> Value {
    let db = e.as_db_error().expect("a server error");
    let hint = db.hint().unwrap_or_else(|| panic!("no hint: {db:?}"));
    serde_json::from_str(hint).unwrap_or_else(|e| panic!("{e}: {hint}"))
}

/// Runs a hint's `command` as a shell would split it, with `<why>` filled
/// in, as the holder of `token`.
fn run_hinted(gw: &Gateway, token: &str, command: &str) -> std::process::Output {
    let words: Vec<String> = command
        .replace("\"<why>\"", "<why>")
        .split_whitespace()
        .map(|w| w.replace("<why>", "following the hint"))
        .collect();
    assert_eq!(words[0], "airlock", "{command}");
    Command::new(AIRLOCK)
        .args(&words[1..])
        .args(["--server", &format!("http://{}", gw.http)])
        .env("AIRLOCK_TOKEN", token)
        .output()
        .expect("airlock runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refusals_carry_hints_that_lead_to_what_passes() {
    let t = common::unique("hints");
    direct(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v int); INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 5) g"
    ));
    let _cleanup = Cleanup::sql(format!("DROP TABLE IF EXISTS {t}"));
    let gw = Gateway::start(&config()).await;
    let bob = gw.token("bob", &["dba"]);
    let devin = gw.token("devin", &["ai-agents"]);

    // A derived hint, over the extended protocol: add a WHERE clause.
    let dba = gw.client("admin", &bob).await.unwrap();
    let e = dba
        .execute(&format!("DELETE FROM {t}"), &[])
        .await
        .unwrap_err();
    let hint = hint_of(&e);
    assert_eq!(hint["rule"], "require-where", "{hint}");
    assert_eq!(hint["retry"], false, "{hint}");
    assert!(
        hint["try"].as_str().unwrap().contains("add a WHERE clause"),
        "{hint}"
    );
    let deleted = dba
        .execute(&format!("DELETE FROM {t} WHERE id = $1"), &[&5i32])
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // A rule's own hint, through psql's simple protocol, as psql shows it.
    let out = gw.psql(&bob, "test", "admin", &format!("TRUNCATE {t}"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"HINT:  {"rule":"no-truncate","retry":false,"try":"delete the rows you mean, with a WHERE clause"}"#
        ),
        "{}",
        stderr(&out)
    );

    // Read-only: the hint is the exact JIT request for the write role,
    // within the rule's max_duration.
    let agent = gw.client("readonly", &devin).await.unwrap();
    let e = agent
        .execute(&format!("UPDATE {t} SET v = $1 WHERE id = 1"), &[&7i32])
        .await
        .unwrap_err();
    let hint = hint_of(&e);
    assert_eq!(hint["rule"], "read-only", "{hint}");
    let command = hint["command"].as_str().unwrap().to_string();
    assert_eq!(
        command,
        r#"airlock access request test --role admin --for 10m --reason "<why>""#
    );
    // Connecting as that role before a grant: the same command.
    let e = gw.client("admin", &devin).await.unwrap_err();
    assert_eq!(hint_of(&e)["command"], command.as_str());

    // Following it: the request is filed, an approver grants it, and the
    // write passes as the role.
    let out = run_hinted(&gw, &devin, &command);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out)
        .split_whitespace()
        .nth(2)
        .expect("the request's id")
        .to_string();
    let approve = Command::new(AIRLOCK)
        .args(["access", "approve", &id])
        .args(["--server", &format!("http://{}", gw.http)])
        .env("AIRLOCK_TOKEN", &bob)
        .output()
        .unwrap();
    assert!(approve.status.success(), "{}", stderr(&approve));
    // A read-only session opened now names the role to connect as.
    let agent = gw.client("readonly", &devin).await.unwrap();
    let e = agent
        .execute(&format!("UPDATE {t} SET v = 7 WHERE id = 1"), &[])
        .await
        .unwrap_err();
    let hint = hint_of(&e);
    assert!(
        hint["try"].as_str().unwrap().contains("\"admin\""),
        "{hint}"
    );
    assert!(hint.get("command").is_none(), "{hint}");
    let writer = gw.client("admin", &devin).await.unwrap();
    let updated = writer
        .execute(&format!("UPDATE {t} SET v = $1 WHERE id = 1"), &[&7i32])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    assert_eq!(
        direct(&format!("SELECT v FROM {t} WHERE id = 1")).trim(),
        "7"
    );
    gw.stop().await;
}
