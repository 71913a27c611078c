//! The real `airlock` binary, run as a child process: `policy check`,
//! `token` and `demo`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

fn airlock() -> Command {
    let mut cmd = Command::new(AIRLOCK);
    cmd.env_remove("AIRLOCK_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// `policy check examples/airlock.yaml`, with its secrets available: the
/// environment variables set and `secrets/orders-admin` under the working
/// directory.
fn check_example(envs: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("secrets")).unwrap();
    std::fs::write(cwd.path().join("secrets/orders-admin"), "s3cret\n").unwrap();
    let mut cmd = airlock();
    cmd.current_dir(cwd.path())
        .args(["policy", "check"])
        .arg(example("airlock.yaml"))
        .env_remove("ORDERS_RO_PASSWORD")
        .env_remove("BILLING_RO_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn policy_check_accepts_the_standalone_example() {
    let out = check_example(&[
        ("ORDERS_RO_PASSWORD", "ro"),
        ("BILLING_RO_PASSWORD", "billing"),
    ]);
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("airlock.yaml: ok"),
        "{}",
        text(&out.stdout)
    );

    // The secrets are really resolved: one missing variable fails the check.
    let out = check_example(&[("ORDERS_RO_PASSWORD", "ro")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("BILLING_RO_PASSWORD"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_check_locates_an_unknown_key() {
    // A misspelled section (`guardrails` itself is becoming a real one).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "listen:\n  postgres: 127.0.0.1:6432\nidentity: {dev_issuer: true}\ngaurdrails:\n  - name: no-drop\n",
    )
    .unwrap();
    let out = airlock()
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken.yaml:4:1:") && stderr.contains("unknown field `gaurdrails`"),
        "{stderr}"
    );
}

#[test]
fn token_mints_a_dev_issuer_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{postgres: 127.0.0.1:0, http: 127.0.0.1:0}}\nidentity: {{dev_issuer: true}}\ndata_dir: {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = airlock()
        .args(["token", "--config"])
        .arg(&config)
        .args(["--sub", "x", "--groups", "a,b"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], "x", "{payload}");
    assert_eq!(
        payload["groups"],
        serde_json::json!(["a", "b"]),
        "{payload}"
    );
    assert_eq!(payload["iss"], "airlock-dev", "{payload}");
    assert!(
        dir.path().join("data").is_dir(),
        "the key is kept in data_dir"
    );
}

/// A running `airlock demo`: on drop (a failed test), interrupted and, if
/// it does not exit, killed.
struct DemoProcess {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl DemoProcess {
    fn start() -> DemoProcess {
        let mut child = airlock()
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        DemoProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// Stdout lines up to and including the one containing `last`.
    fn read_until(&mut self, last: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(last);
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(e) => panic!(
                    "no {last:?} from airlock demo ({e}); stdout so far:\n{}\nexit: {:?}",
                    lines.join("\n"),
                    self.child.try_wait()
                ),
            }
        }
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.interrupt();
            if self.wait_for_exit(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Runs a pasted line with bash.
fn paste(line: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(line)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn demo_prints_working_lines_and_cleans_up() {
    let mut demo = DemoProcess::start();
    let mut lines = demo.read_until("Paste these", Duration::from_secs(60));
    lines.extend(demo.read_until("Press Ctrl-C", Duration::from_secs(5)));
    let printed = lines.join("\n");

    let line_after = |comment: &str| -> String {
        let at = lines
            .iter()
            .position(|l| l.trim() == comment)
            .unwrap_or_else(|| panic!("no {comment:?} in:\n{printed}"));
        lines[at + 1].trim().to_owned()
    };
    let agent = line_after("# an AI agent (group ai-agents): read-only");
    let dba = line_after("# a DBA (group dba): read-write");
    assert!(
        agent.starts_with("PGPASSWORD=$(/"),
        "an absolute path to the binary: {agent}"
    );
    assert!(agent.contains("--sub agent --groups ai-agents"), "{agent}");
    assert!(agent.ends_with("dbname=demo user=readonly\""), "{agent}");
    assert!(dba.contains("--sub dba --groups dba"), "{dba}");
    assert!(dba.ends_with("dbname=demo user=admin\""), "{dba}");

    let config = agent
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1)
        .unwrap_or_else(|| panic!("no --config in {agent}"));
    let dir = Path::new(config).parent().unwrap().to_path_buf();
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("airlock-demo-"),
        "{}",
        dir.display()
    );
    assert!(dir.is_dir());

    // The agent reads...
    let out = paste(&format!(r#"{agent} -c "select count(*) from customers""#));
    assert!(out.status.success(), "{agent}\n{}", text(&out.stderr));
    let count: i64 = text(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", text(&out.stdout)));
    assert!(count > 1000, "{count} customers");
    // ...sees sensitive columns masked...
    let out = paste(&format!(
        r#"{agent} -A -t -c "select ssn, email, card_number from customers order by id limit 1""#
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = text(&out.stdout);
    let masked: Vec<&str> = row.trim().rsplit('\n').next().unwrap().split('|').collect();
    assert!(
        masked.len() == 3
            && masked[0].starts_with("*****")
            && masked[1].contains("***@")
            && masked[2] == "*****",
        "{row}"
    );
    // ...but may not write; the DBA may.
    let out = paste(&format!(r#"{agent} -c "delete from orders""#));
    assert!(
        !out.status.success(),
        "the agent deleted: {}",
        text(&out.stdout)
    );
    let out = paste(&format!(
        r#"{dba} -c "begin" -c "delete from orders where id = 1" -c "rollback""#
    ));
    assert!(out.status.success(), "{dba}\n{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("DELETE 1"),
        "{}",
        text(&out.stdout)
    );
    // An unbounded delete is held for approval even for the DBA; the
    // reviewer's lines deny it, and nothing is deleted.
    let held = Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"{dba} -v VERBOSITY=verbose -c "delete from orders""#
        ))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reviewer = lines
        .iter()
        .find(|l| l.contains("--sub reviewer --groups dba"))
        .unwrap_or_else(|| panic!("no reviewer line in:\n{printed}"))
        .trim()
        .to_owned();
    let exe = reviewer
        .split_whitespace()
        .find_map(|w| w.strip_prefix("AIRLOCK_TOKEN=$("))
        .unwrap_or_else(|| panic!("no binary in {reviewer}"));
    let mut id = String::new();
    for _ in 0..200 {
        let out = paste(&format!("{reviewer}; {exe} approvals list --json"));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(found) = list["approvals"][0]["id"].as_str() {
            id = found.to_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!id.is_empty(), "the delete was not held");
    let out = paste(&format!(
        "{reviewer}; {exe} approvals deny {id} --reason 'demo says no'"
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = held.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "statement held for approval {id} (rule review-unbounded-writes)"
        )),
        "{err}"
    );
    assert!(
        err.contains("42501") && err.contains("demo says no"),
        "{err}"
    );
    let out = paste(&format!(r#"{agent} -c "select count(*) from orders""#));
    assert!(text(&out.stdout).contains("6000"), "{}", text(&out.stdout));

    // The MySQL lines: the same data in MariaDB, masked for the agent.
    let my_agent = lines
        .iter()
        .find(|l| l.contains("--sub agent") && l.contains("mysql -h"))
        .unwrap_or_else(|| panic!("no MySQL agent line in:\n{printed}"))
        .trim()
        .to_owned();
    let out = paste(&format!(
        r#"{my_agent} -N -B -e "select count(*), max(ssn) from customers; select ssn, email from customers order by id limit 1""#
    ));
    assert!(out.status.success(), "{my_agent}\n{}", text(&out.stderr));
    let rows = text(&out.stdout);
    assert!(rows.starts_with("2500\t"), "{rows}");
    assert!(rows.contains("*****") && rows.contains("***@"), "{rows}");
    let out = paste(&format!(r#"{my_agent} -e "delete from orders""#));
    assert!(
        text(&out.stderr).contains("ERROR 1227"),
        "{}",
        text(&out.stderr)
    );

    // The MCP lines: a real MCP client with the printed URL and token
    // reads the same customers, masked.
    let url = line_after(
        "# an agent over MCP (Streamable HTTP; docs/mcp.md shows Claude Code, Cursor, Devin)",
    );
    let url = url
        .strip_prefix("MCP URL: ")
        .unwrap_or_else(|| panic!("{url}"));
    let bearer = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("Authorization: Bearer "))
        .unwrap_or_else(|| panic!("no bearer line in:\n{printed}"));
    let token = paste(&format!("echo {bearer}"));
    let token = text(&token.stdout).trim().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/mcp_client.py");
    let mut client = Command::new("python3")
        .args([script, url, &token, "2026-07-28"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().unwrap();
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"tool": "query", "args": {"connection": "demo",
                "sql": "select ssn, email from customers order by id limit 1"}})
        )
        .unwrap();
    }
    let out = client.wait_with_output().unwrap();
    let answers = text(&out.stdout);
    let answer: serde_json::Value = answers
        .lines()
        .nth(1)
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no answer from the MCP client: {answers}"));
    let row = &answer["structured"]["rows"][0];
    assert!(
        row[0].as_str().is_some_and(|s| s.starts_with("*****"))
            && row[1].as_str().is_some_and(|s| s.contains("***@")),
        "{answer}"
    );

    demo.interrupt();
    let status = demo.wait_for_exit(Duration::from_secs(20));
    let status =
        status.unwrap_or_else(|| panic!("airlock demo did not exit within 20 s of SIGINT"));
    let stderr = std::mem::replace(&mut demo.stderr, std::thread::spawn(String::new))
        .join()
        .unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(!dir.exists(), "{} was not removed\n{stderr}", dir.display());
}
