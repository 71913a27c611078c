//! The web console in a real browser: Debian's Chromium, headless, driven
//! by playwright-core (`tests/drivers/browser.mjs`), against the real
//! gateway with the dev issuer's login page, real psql clients held and
//! released, and the real store.
//!
//! With `AIRLOCK_CONSOLE_SCREENSHOTS=<dir>` the tests save a screenshot of
//! each main page there (`docs/console/` is made that way).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    Cleanup, Gateway, count_rows, direct, local_config, spawn_psql, stderr, unique,
};

/// One headless Chromium, several users (one browser context each).
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn launch() -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/browser.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (scripts/setup.sh installs it and playwright-core)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.contains("\"ready\":true"),
            "the browser did not start: {line}"
        );
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs a command; the driver's answer, `ok` or not.
    fn try_cmd(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Runs a command that must succeed.
    #[track_caller]
    fn cmd(&mut self, cmd: Value) -> Value {
        let answer = self.try_cmd(cmd.clone());
        assert_eq!(answer["ok"], true, "{cmd} -> {answer}");
        answer
    }

    /// Logs `user` (its own context) in through the dev issuer's page.
    fn login(&mut self, gw: &Gateway, user: &str, groups: &str) {
        let at = self
            .cmd(json!({"cmd": "goto", "ctx": user, "url": format!("http://{}/console", gw.http)}));
        assert!(
            at["url"].as_str().unwrap().contains("/dev/authorize?"),
            "{at}"
        );
        self.cmd(json!({"cmd": "fill", "ctx": user, "selector": "#subject", "value": user}));
        self.cmd(json!({"cmd": "fill", "ctx": user, "selector": "#groups", "value": groups}));
        let at = self.cmd(json!({"cmd": "submit", "ctx": user, "selector": "#login"}));
        assert!(
            at["url"].as_str().unwrap().ends_with("/console/approvals"),
            "{at}"
        );
        let me = self.cmd(json!({"cmd": "text", "ctx": user, "selector": "#whoami"}));
        assert_eq!(me["text"], user);
    }

    fn goto(&mut self, ctx: &str, gw: &Gateway, path: &str) -> Value {
        self.cmd(json!({"cmd": "goto", "ctx": ctx, "url": format!("http://{}{path}", gw.http)}))
    }

    fn text(&mut self, ctx: &str, selector: &str) -> String {
        self.cmd(json!({"cmd": "text", "ctx": ctx, "selector": selector}))["text"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn count(&mut self, ctx: &str, selector: &str) -> u64 {
        self.cmd(json!({"cmd": "count", "ctx": ctx, "selector": selector}))["count"]
            .as_u64()
            .unwrap()
    }

    /// The session's CSRF token, from the logout form of the page shown.
    fn csrf(&mut self, ctx: &str) -> String {
        self.cmd(
            json!({"cmd": "attr", "ctx": ctx, "selector": "input[name=csrf]", "name": "value"}),
        )["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Saves a screenshot when `AIRLOCK_CONSOLE_SCREENSHOTS` names a dir.
    fn screenshot(&mut self, ctx: &str, name: &str) {
        if let Ok(dir) = std::env::var("AIRLOCK_CONSOLE_SCREENSHOTS") {
            let path = format!("{dir}/{name}.png");
            self.cmd(json!({"cmd": "screenshot", "ctx": ctx, "path": path, "full_page": false}));
        }
    }

    /// No script error and no CSP violation in `ctx` so far.
    #[track_caller]
    fn no_errors(&mut self, ctx: &str) {
        let errors = self.cmd(json!({"cmd": "console_errors", "ctx": ctx}));
        assert_eq!(errors["errors"], json!([]), "{errors}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // EOF ends the driver and its browser.
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's shape on the machine's PostgreSQL: holds for unbounded
/// writes (approvers `dba`), a JIT role for `oncall`, email masked,
/// auditors `security`, admins `admins`, and the console on the dev issuer.
fn config() -> String {
    local_config(
        r#"  - name: writers
    groups: [writers]
    connections: [test]
    roles: [admin]
  - name: oncall-jit
    groups: [oncall]
    connections: [test]
    roles: [admin]
    jit: {max_duration: 1h, approvers: [dba], min_approvals: 1}
guardrails:
  - name: review-unbounded-writes
    match: {statements: [update, delete], where: absent}
    action: approve
    approvers: [dba]
  - name: review-targeted-updates
    match: {statements: [update], where: present}
    action: review_commit
    approvers: [dba]
masking:
  rules:
    - name: email
      columns: ["*.email"]
      strategy: email
api:
  auditor_groups: [security]
  admin_groups: [admins]
console:
  issuer: dev
"#,
    )
}

/// A table of `n` rows with an email column, dropped with the guard.
fn table(n: u32) -> (String, Cleanup) {
    let t = unique("console");
    direct(&format!(
        "CREATE TABLE {t} (id int, email text); \
         INSERT INTO {t} SELECT g, 'person' || g || '@example.com' FROM generate_series(1, {n}) g"
    ));
    (t.clone(), Cleanup::sql(format!("DROP TABLE IF EXISTS {t}")))
}

/// Waits for `child` on a blocking thread.
async fn exited(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// Flows 1 and 2: a psql client held on a DELETE without WHERE appears in
/// the live queue without a reload; approving it releases psql (the time
/// from the click to psql's exit is printed); denying with a reason shows
/// psql the reason. HTML in the statement is shown as text.
#[tokio::test(flavor = "multi_thread")]
async fn an_approver_releases_and_refuses_held_statements_in_the_browser() {
    let gw = Gateway::start(&config()).await;
    let (t, _drop) = table(5);
    let mut b = Browser::launch();
    b.login(&gw, "reviewer", "dba");
    assert_eq!(b.count("reviewer", "#queue-empty"), 1);
    // A marker that a reload would lose.
    b.cmd(json!({"cmd": "eval", "ctx": "reviewer", "js": "window.__noReload = 1"}));

    let writer = gw.token("writer", &["writers"]);
    // Comments are redacted from the record; a quoted alias is kept.
    let script = "\"<script>x</script><img src=x onerror=window.__xss=2>\"";
    let held = spawn_psql(
        &gw,
        &writer,
        "admin",
        &format!("DELETE FROM {t} AS {script}"),
    );
    b.cmd(json!({"cmd": "wait", "ctx": "reviewer", "selector": "tr[data-approval]", "timeout_ms": 15000}));
    let marker = b.cmd(json!({"cmd": "eval", "ctx": "reviewer", "js": "window.__noReload"}));
    assert_eq!(marker["value"], 1, "the queue updated without a reload");
    let row = b.text("reviewer", "tr[data-approval]");
    // Swapped in by the live update, the alias is text.
    assert!(row.contains("<img src=x onerror=window.__xss=2>"), "{row}");
    assert!(
        row.contains("writer") && row.contains("review-unbounded-writes"),
        "{row}"
    );
    b.screenshot("reviewer", "approvals");

    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "tr[data-approval] td.stmt a"}));
    let statement = b.text("reviewer", "#statement");
    assert!(
        statement.contains(script),
        "the statement is shown as text: {statement}"
    );
    let xss = b.cmd(json!({"cmd": "eval", "ctx": "reviewer", "js": "window.__xss === undefined"}));
    assert_eq!(xss["value"], true, "nothing in the statement ran");
    assert_eq!(b.text("reviewer", "#kinds"), "delete");
    assert!(b.text("reviewer", "#effects").contains("write"));
    assert_eq!(b.count("reviewer", "#estimate"), 1);
    assert!(b.text("reviewer", "#votes").starts_with("0 of 1"));
    b.screenshot("reviewer", "approval");

    let clicked = Instant::now();
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "#approve"}));
    let out = exited(held).await;
    let released = clicked.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count_rows(&t), 0);
    eprintln!(
        "console: psql released {} ms after the approve click",
        released.as_millis()
    );
    assert_eq!(b.text("reviewer", "#status"), "approved");

    // Denied with a reason (which is HTML): psql shows the reason.
    direct(&format!("INSERT INTO {t} VALUES (1, 'a@example.com')"));
    let held = spawn_psql(&gw, &writer, "admin", &format!("DELETE FROM {t}"));
    b.goto("reviewer", &gw, "/console/approvals");
    b.cmd(json!({"cmd": "wait", "ctx": "reviewer", "selector": "tr[data-approval]", "timeout_ms": 15000}));
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "tr[data-approval] td.stmt a"}));
    // A deny without a reason is not sent (the field is required) …
    let required = b.cmd(
        json!({"cmd": "attr", "ctx": "reviewer", "selector": "#deny-reason", "name": "required"}),
    );
    assert_eq!(required["value"], "");
    let reason = "<img src=x onerror=\"window.__xss=3\"> not during business hours";
    b.cmd(json!({"cmd": "fill", "ctx": "reviewer", "selector": "#deny-reason", "value": reason}));
    let clicked = Instant::now();
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "#deny"}));
    let out = exited(held).await;
    eprintln!(
        "console: psql refused {} ms after the deny click",
        clicked.elapsed().as_millis()
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not during business hours"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_rows(&t), 1);
    assert_eq!(b.text("reviewer", "#status"), "denied");
    assert_eq!(b.text("reviewer", "#decision-reason"), reason);
    let xss = b.cmd(json!({"cmd": "eval", "ctx": "reviewer", "js": "window.__xss === undefined"}));
    assert_eq!(xss["value"], true, "nothing in the reason ran");
    b.no_errors("reviewer");
    drop(b);
    gw.stop().await;
}

/// Commit review in the console: a transaction's held COMMIT shows the
/// measured effect (rows per table, the masked sample) on its page, and
/// the approve click commits it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reviewed_commit_shows_its_measured_effect_in_the_browser() {
    let gw = Gateway::start(&config()).await;
    let (t, _drop) = table(3);
    let mut b = Browser::launch();
    b.login(&gw, "reviewer", "dba");
    let writer = gw.token("writer", &["writers"]);
    let mut held = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .arg(gw.conninfo("test", "admin"))
        .env("PGPASSWORD", &writer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    held.stdin
        .take()
        .unwrap()
        .write_all(
            format!("BEGIN;\nUPDATE {t} SET id = id + 10 WHERE id <= 2;\nCOMMIT;\n").as_bytes(),
        )
        .unwrap();
    b.cmd(json!({"cmd": "wait", "ctx": "reviewer", "selector": "tr[data-approval]", "timeout_ms": 15000}));
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "tr[data-approval] td.stmt a"}));
    assert_eq!(b.text("reviewer", "#rule"), "review-targeted-updates");
    let effect = b.text("reviewer", "#effect");
    assert!(effect.contains(&format!("public.{t}")), "{effect}");
    assert!(
        effect.contains("Updated") && effect.contains('2'),
        "{effect}"
    );
    let sample = b.text("reviewer", "ul.sample:not(.before)");
    assert_eq!(
        b.count("reviewer", "ul.sample:not(.before) li"),
        2,
        "{sample}"
    );
    // The rows as they were, before the UPDATE.
    let before = b.text("reviewer", "ul.sample.before");
    assert_eq!(b.count("reviewer", "ul.sample.before li"), 2, "{before}");
    assert!(before.contains("\"id\":\"1\""), "{before}");
    assert!(!before.contains("person1@example.com"), "masked: {before}");
    assert!(sample.contains("\"id\":\"11\""), "{sample}");
    assert!(!sample.contains("person1@example.com"), "masked: {sample}");
    assert!(sample.contains("@example.com"), "{sample}");
    b.screenshot("reviewer", "commit-review");
    // Not committed while it waits.
    assert_eq!(
        direct(&format!("SELECT count(*) FROM {t} WHERE id > 10")).trim(),
        "0"
    );
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "#approve"}));
    let out = exited(held).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        direct(&format!("SELECT count(*) FROM {t} WHERE id > 10")).trim(),
        "2"
    );
    assert_eq!(b.text("reviewer", "#status"), "approved");
    b.no_errors("reviewer");
    drop(b);
    gw.stop().await;
}

/// Flow 3: the requester sees the held statement but no buttons, and a
/// forged POST is refused: by the API with a CSRF token, by the console
/// without one or with a wrong one.
#[tokio::test(flavor = "multi_thread")]
async fn a_requester_gets_no_buttons_and_forged_posts_are_refused() {
    let gw = Gateway::start(&config()).await;
    let (t, _drop) = table(3);
    let mut b = Browser::launch();
    // The requester is an approver too (group dba), and a writer: only
    // self-approval stands in the way.
    let requester = "<b>mallory</b>";
    b.login(&gw, requester, "dba, writers");
    let token = gw.token(requester, &["dba", "writers"]);
    let held = spawn_psql(&gw, &token, "admin", &format!("UPDATE {t} SET id = 0"));
    b.cmd(json!({"cmd": "wait", "ctx": requester, "selector": "tr[data-approval]", "timeout_ms": 15000}));
    assert!(
        b.text(requester, "tr[data-approval]").contains(requester),
        "the name is text"
    );
    b.cmd(json!({"cmd": "submit", "ctx": requester, "selector": "tr[data-approval] td.stmt a"}));
    assert_eq!(b.count(requester, "#approve"), 0);
    assert_eq!(b.count(requester, "#deny"), 0);
    assert!(
        b.text(requester, "#no-vote")
            .contains("someone else must decide")
    );
    let url = b.cmd(json!({"cmd": "url", "ctx": requester}))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let approve = format!("{url}/approve");
    let csrf = b.csrf(requester);
    let form = "application/x-www-form-urlencoded";
    // With the right CSRF token: the API refuses a self-approval.
    let forged = b.cmd(
        json!({"cmd": "fetch", "ctx": requester, "method": "POST", "url": approve,
        "headers": {"content-type": form}, "body": format!("csrf={csrf}")}),
    );
    assert_eq!(forged["status"], 403, "{forged}");
    assert!(
        forged["body"]
            .as_str()
            .unwrap()
            .contains("cannot decide a request you made"),
        "{forged}"
    );
    // Without one, or with another: the console refuses before the API.
    for body in [
        String::new(),
        "csrf=forged".to_string(),
        format!("csrf={csrf}x"),
    ] {
        let forged = b.cmd(
            json!({"cmd": "fetch", "ctx": requester, "method": "POST", "url": approve,
            "headers": {"content-type": form}, "body": body}),
        );
        assert_eq!(forged["status"], 403, "{forged}");
        assert!(
            forged["body"].as_str().unwrap().contains("CSRF"),
            "{forged}"
        );
    }
    // Logging out needs the token too.
    let forged = b.cmd(json!({"cmd": "fetch", "ctx": requester, "method": "POST",
        "url": format!("http://{}/console/logout", gw.http), "headers": {"content-type": form}, "body": ""}));
    assert_eq!(forged["status"], 403, "{forged}");
    // Still pending: another approver decides.
    b.login(&gw, "reviewer", "dba");
    b.goto(
        "reviewer",
        &gw,
        &url.replace(&format!("http://{}", gw.http), ""),
    );
    b.cmd(json!({"cmd": "fill", "ctx": "reviewer", "selector": "#deny-reason", "value": "no"}));
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "#deny"}));
    assert!(!exited(held).await.status.success());
    // Logged out, the pages send the browser back to the login.
    b.goto(requester, &gw, "/console/approvals");
    b.cmd(json!({"cmd": "submit", "ctx": requester, "selector": "form[action='/console/logout'] button"}));
    let at = b.goto(requester, &gw, "/console/sessions");
    assert!(
        at["url"].as_str().unwrap().contains("/dev/authorize?"),
        "{at}"
    );
    b.no_errors(requester);
    drop(b);
    gw.stop().await;
}

/// Flow 4: request a JIT role in the browser; a second user approves it;
/// the role works; revoking it in the browser cuts the open session.
#[tokio::test(flavor = "multi_thread")]
async fn jit_access_is_requested_granted_and_revoked_in_the_browser() {
    let gw = Gateway::start(&config()).await;
    let mut b = Browser::launch();
    b.login(&gw, "carol", "oncall");
    b.goto("carol", &gw, "/console/access");
    b.cmd(json!({"cmd": "fill", "ctx": "carol", "selector": "#connection", "value": "test"}));
    b.cmd(json!({"cmd": "fill", "ctx": "carol", "selector": "#role", "value": "admin"}));
    b.cmd(json!({"cmd": "fill", "ctx": "carol", "selector": "#duration", "value": "30m"}));
    b.cmd(json!({"cmd": "fill", "ctx": "carol", "selector": "#reason", "value": "incident 7"}));
    b.cmd(json!({"cmd": "submit", "ctx": "carol", "selector": "#request"}));
    assert!(b.text("carol", "#grants").contains("pending"));
    assert_eq!(b.count("carol", "#grants button.approve"), 0, "not her own");

    b.login(&gw, "reviewer", "dba");
    b.goto("reviewer", &gw, "/console/access");
    assert!(b.text("reviewer", "#grants").contains("incident 7"));
    b.cmd(json!({"cmd": "submit", "ctx": "reviewer", "selector": "#grants button.approve"}));
    assert!(b.text("reviewer", "#grants").contains("granted"));
    b.screenshot("reviewer", "access");

    let carol = gw.token("carol", &["oncall"]);
    let (client, connection) = tokio_postgres::connect(
        &format!("{} password={carol}", gw.conninfo("test", "admin")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(connection);
    client.query_one("select 1", &[]).await.unwrap();

    b.goto("carol", &gw, "/console/access");
    b.cmd(json!({"cmd": "fill", "ctx": "carol", "selector": "#grants input[name=reason]", "value": "done"}));
    b.cmd(json!({"cmd": "submit", "ctx": "carol", "selector": "#grants button.deny"}));
    let err = conn.await.unwrap().expect_err("the session is cut");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("revoked by carol: done"), "{message}");
    b.no_errors("carol");
    b.no_errors("reviewer");
    drop(b);
    gw.stop().await;
}

/// Flow 5 and the admin's termination: an auditor replays a session and
/// sees masked values only; an admin ends a live session and its client
/// gets a FATAL naming the admin and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn auditors_replay_masked_sessions_and_admins_end_live_ones() {
    let gw = Gateway::start(&config()).await;
    let (t, _drop) = table(3);
    let agent = gw.token("agent", &["ai-agents"]);
    let out = gw.psql(
        &agent,
        "test",
        "readonly",
        &format!("SELECT id, email FROM {t} ORDER BY id"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut b = Browser::launch();
    b.login(&gw, "auditor", "security, admins");

    // The session reaches the store shortly after it ends.
    let mut found = false;
    for _ in 0..100 {
        b.goto("auditor", &gw, "/console/sessions?principal=agent");
        if b.count("auditor", "#sessions tbody tr") > 0 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the agent's session is listed");
    b.screenshot("auditor", "sessions");
    b.cmd(json!({"cmd": "submit", "ctx": "auditor", "selector": "#sessions tbody tr a"}));
    let transcript = b.text("auditor", "#transcript");
    assert!(transcript.contains(&format!("FROM {t}")), "{transcript}");
    assert!(transcript.contains("@example.com"), "{transcript}");
    for n in 1..=3 {
        assert!(
            !transcript.contains(&format!("person{n}@")),
            "unmasked: {transcript}"
        );
    }
    b.screenshot("auditor", "replay");

    // A live session, ended by an admin.
    let dba = gw.token("dba-bob", &["dba"]);
    let live = spawn_psql(&gw, &dba, "admin", "SELECT pg_sleep(60)");
    let mut id = None;
    for _ in 0..100 {
        b.goto("auditor", &gw, "/console/sessions?principal=dba-bob");
        if b.count("auditor", "#sessions .live") > 0 {
            id = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(id.is_some(), "the live session is marked live");
    b.cmd(json!({"cmd": "submit", "ctx": "auditor", "selector": "#sessions tbody tr a"}));
    let url = b.cmd(json!({"cmd": "url", "ctx": "auditor"}))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let session_id = url.rsplit('/').next().unwrap().to_string();
    b.cmd(json!({"cmd": "fill", "ctx": "auditor", "selector": "#terminate-reason", "value": "runaway query"}));
    b.cmd(json!({"cmd": "submit", "ctx": "auditor", "selector": "#terminate"}));
    let out = exited(live).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("57P01"), "{err}");
    // The statement it was running is cancelled upstream.
    let mut running = String::new();
    for _ in 0..100 {
        running = direct(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'",
        );
        if running.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.trim(), "0", "pg_sleep was cancelled");
    assert!(
        err.contains("an administrator (auditor) ended this session: runaway query"),
        "{err}"
    );
    // The session's end records it (once shipped to the store).
    let mut recorded = false;
    for _ in 0..100 {
        b.goto("auditor", &gw, &format!("/console/sessions/{session_id}"));
        if b.text("auditor", "#transcript")
            .contains("ended this session: runaway query")
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "the termination is in the session's record");
    assert_eq!(
        b.count("auditor", "#terminate"),
        0,
        "an ended session has no button"
    );
    // Ended: the CLI cannot end it again, and a non-admin may not try.
    let admin = gw.token("auditor", &["security", "admins"]);
    let auditor = gw.token("auditor-only", &["security"]);
    let server = format!("http://{}", gw.http);
    for (token, wanted) in [
        (&admin, "not open on this gateway"),
        (&auditor, "may not end sessions"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["sessions", "terminate", &session_id, "--reason", "again"])
            .env("AIRLOCK_SERVER", &server)
            .env("AIRLOCK_TOKEN", token)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains(wanted), "{}", stderr(&out));
    }
    b.no_errors("auditor");
    drop(b);
    gw.stop().await;
}

/// Flow 6, the policy page and the audit page: the playground classifies
/// a data-modifying CTE as a write; verification reports an intact trail.
/// Every main page loads in the browser (times printed), and none may run
/// inline script.
#[tokio::test(flavor = "multi_thread")]
async fn the_playground_explains_and_pages_are_fast_and_script_free() {
    let gw = Gateway::start(&config()).await;
    let (t, _drop) = table(1);
    let mut b = Browser::launch();
    b.login(&gw, "auditor", "security");
    b.goto("auditor", &gw, "/console/policy");
    assert!(
        b.text("auditor", "#policy-guardrails")
            .contains("review-unbounded-writes")
    );
    b.cmd(json!({"cmd": "fill", "ctx": "auditor", "selector": "#x-groups", "value": "dba"}));
    b.cmd(
        json!({"cmd": "fill", "ctx": "auditor", "selector": "#x-sql",
        "value": format!("WITH d AS (DELETE FROM {t} RETURNING *) SELECT 1")}),
    );
    b.cmd(json!({"cmd": "submit", "ctx": "auditor", "selector": "#explain"}));
    let effects = b.text("auditor", "#explain-result td.effects");
    assert!(effects.contains("write"), "{effects}");
    assert_eq!(b.text("auditor", "#explain-decision"), "approve");
    b.screenshot("auditor", "policy");

    b.goto("auditor", &gw, "/console/audit");
    b.cmd(json!({"cmd": "submit", "ctx": "auditor", "selector": "#verify"}));
    assert!(b.text("auditor", "#verify-status").starts_with("Intact"));
    b.screenshot("auditor", "audit");

    // Page loads: the navigation's duration, in the browser.
    for path in [
        "/console/approvals",
        "/console/access",
        "/console/sessions",
        "/console/audit",
        "/console/policy",
    ] {
        let t = b.cmd(
            json!({"cmd": "timing", "ctx": "auditor", "url": format!("http://{}{path}", gw.http)}),
        );
        eprintln!(
            "console: {path} loaded in {} ms (response {} ms)",
            t["duration_ms"], t["response_ms"]
        );
        // No inline script on the page, and the policy refuses one added.
        let inline = b.cmd(json!({"cmd": "eval", "ctx": "auditor",
            "js": "(() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.appendChild(s); return [document.querySelectorAll('script:not([src])').length, window.__inline === undefined]; })()"}));
        assert_eq!(inline["value"], json!([1, true]), "{path}: {inline}");
    }
    let errors = b.cmd(json!({"cmd": "console_errors", "ctx": "auditor"}));
    let errors = errors["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.as_str().unwrap().contains("Content Security Policy")),
        "{errors:?}"
    );
    drop(b);
    gw.stop().await;
}

/// What a browser without a login gets, and the login's own checks: no
/// cookie or a forged one, a callback whose state is not this browser's,
/// a code exchanged with the wrong PKCE verifier, and a `next` that leaves
/// the console.
#[tokio::test(flavor = "multi_thread")]
async fn logins_are_checked_and_pages_need_one() {
    let gw = Gateway::start(&config()).await;
    let base = format!("http://{}", gw.http);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, cookie: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Pages redirect to the login, coming back after; fragments and the
    // event stream answer 401; so with a forged cookie.
    for cookie in [None, Some("airlock_console=forged")] {
        let r = get("/console/sessions?principal=a", cookie).await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(
            r.headers()["location"],
            "/console/login?next=%2Fconsole%2Fsessions%3Fprincipal%3Da"
        );
        for path in ["/console/approvals/queue", "/console/events"] {
            assert_eq!(get(path, cookie).await.unwrap().status(), 401, "{path}");
        }
    }
    // A cross-site logout (no cookie) changes nothing, not even the cookie.
    let r = http
        .post(format!("{base}/console/logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    let r = get("/", None).await.unwrap();
    assert_eq!(r.headers()["location"], "/console");
    let page = get("/console/login", None).await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // The login, by hand.
    let begin = get("/console/login?next=https://evil.example/", None)
        .await
        .unwrap();
    assert_eq!(begin.status(), 303);
    let login_cookie = begin.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"),
        "{login_cookie}"
    );
    let login_cookie = login_cookie.split(';').next().unwrap().to_string();
    let authorize = url::Url::parse(begin.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    // The dev issuer redirects only to the console's callback.
    let mut elsewhere = authorize.clone();
    elsewhere
        .query_pairs_mut()
        .clear()
        .extend_pairs(q.iter().map(|(k, v)| {
            (
                k.as_str(),
                if k == "redirect_uri" {
                    "https://evil.example/cb"
                } else {
                    v.as_str()
                },
            )
        }));
    let r = http.get(elsewhere.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let code_for = |sub: &'static str| {
        let mut form: Vec<(String, String)> = q.clone().into_iter().collect();
        form.push(("subject".into(), sub.into()));
        form.push(("groups".into(), "dba, security".into()));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        http.post(format!("{base}/dev/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let back = code_for("alice").await.unwrap();
    assert_eq!(back.status(), 303);
    let callback = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let cq: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();
    let callback_path = format!("{}?{}", callback.path(), callback.query().unwrap());
    // Another browser (no login cookie), or another state: refused.
    let r = get(&callback_path, None).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no login in progress"));
    // This browser's login cookie with another state, or a forged cookie.
    let other_state = format!("/console/callback?code={}&state=forged", cq["code"]);
    let r = get(&other_state, Some(&login_cookie)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state does not match"));
    let r = get(&callback_path, Some("airlock_login=forged"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("login in progress"));
    // The right one: logged in, and sent to the console, not to evil.example.
    let r = get(&callback_path, Some(&login_cookie)).await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(r.headers()["location"], "/console/approvals");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("airlock_console="))
        .unwrap();
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && !session.contains("Secure"),
        "{session}"
    );
    let session = session.split(';').next().unwrap();
    assert_eq!(
        get("/console/policy", Some(session))
            .await
            .unwrap()
            .status(),
        200
    );
    // The state is good once.
    let r = get(&callback_path, Some(&login_cookie)).await.unwrap();
    assert_eq!(r.status(), 400);

    // A code exchanged with the wrong verifier is refused, and spent.
    let back = code_for("alice").await.unwrap();
    let callback = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code: String = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let exchange = |verifier: &str| {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &q["redirect_uri"])
            .append_pair("client_id", &q["client_id"])
            .append_pair("code_verifier", verifier)
            .finish();
        http.post(format!("{base}/dev/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = exchange("not-the-verifier").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier")
    );
    let r = exchange("not-the-verifier").await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error_description"],
        "unknown or used code"
    );
    gw.stop().await;
}
