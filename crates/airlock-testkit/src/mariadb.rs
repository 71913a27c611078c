//! A MariaDB server of its own, for tests of the MySQL protocol door.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::os::{is_root, temp_dir_for};

/// A MariaDB server made with `mariadb-install-db` in a temp dir and run by
/// `mariadbd` on a free port of 127.0.0.1 (its Unix socket in the temp
/// dir), as the `mysql` user when the tests run as root (`--user=mysql`:
/// the server drops root itself, so the child process is the server).
/// `root` has no password, from any local host. Killed and removed on drop.
///
/// Needs `mariadb-install-db`, `mariadbd` and the `mysql` client
/// (`scripts/setup.sh` installs them).
pub struct MariaDb {
    dir: TempDir,
    pub port: u16,
    server: Child,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        MariaDb::start_with(&[])
    }

    /// A server started with `extra` server options (`--max-allowed-packet=64M`).
    pub fn start_with(extra: &[&str]) -> MariaDb {
        let dir = temp_dir_for("mysql", "airlock-mariadb");
        let data = dir.path().join("data");
        let as_mysql: &[&str] = if is_root() { &["--user=mysql"] } else { &[] };
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .args(as_mysql)
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let log = dir.path().join("error.log");
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .args(as_mysql)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                // A throwaway server: no flush per commit.
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd runs");
        // Killed on drop from here on, also when it never gets ready.
        let mut db = MariaDb { dir, port, server };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = db.server.try_wait().unwrap() {
                panic!(
                    "mariadbd exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if db.client("SELECT 1").status.success() {
                return db;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready within 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Runs SQL as `root` over the Unix socket with the `mysql` client and
    /// returns what it printed (`-N -B`: no headers, tab-separated),
    /// trimmed. Panics if it fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.client(sql);
        assert!(
            out.status.success(),
            "MariaDB SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn client(&self, sql: &str) -> Output {
        Command::new("mysql")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .expect("the mysql client runs")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The machine's MariaDB (trust for `root` from 127.0.0.1, no password).
pub const LOCAL_MARIADB_PORT: u16 = 3306;

/// A database of its own on the machine's MariaDB, created empty and
/// dropped on drop (also when the test panics): a test never sees what
/// another left.
pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub fn create(prefix: &str) -> MyDb {
        let name = format!("{prefix}_{}", uuid_like());
        local_sql(&format!("CREATE DATABASE `{name}`"));
        MyDb { name }
    }

    /// Runs SQL as `root` in this database over TCP; what it printed
    /// (`-N -B`), trimmed. Panics if it fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = local_client(&["-D", &self.name], sql);
        assert!(
            out.status.success(),
            "MariaDB SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = local_client(&[], &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos & 0xFFFF_FFFF_FFFF, std::process::id())
}

fn local_sql(sql: &str) -> String {
    let out = local_client(&[], sql);
    assert!(
        out.status.success(),
        "MariaDB SQL failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn local_client(args: &[&str], sql: &str) -> Output {
    Command::new("mysql")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &LOCAL_MARIADB_PORT.to_string()])
        .args(["-u", "root", "-N", "-B"])
        .args(args)
        .args(["-e", sql])
        .output()
        .expect("the mysql client runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `mysql` client logs in over TCP, as a client of the door would
    /// reach the upstream, and the server runs as `mysql` under root.
    #[test]
    fn starts_and_takes_tcp_clients() {
        let db = MariaDb::start();
        let out = Command::new("mysql")
            .args(["--no-defaults", "-h", "127.0.0.1", "-P"])
            .arg(db.port.to_string())
            .args(["-u", "root", "-N", "-B", "-e"])
            .arg("SELECT CONCAT(VERSION() LIKE '%MariaDB%', ' ', CURRENT_USER())")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "1 root@127.0.0.1"
        );
        assert_eq!(db.sql("SELECT @@port"), db.port.to_string());
        if is_root() {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", db.server.id())).unwrap();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(!uid.split_whitespace().any(|u| u == "0"), "{uid}");
        }
        let pid = db.server.id();
        drop(db);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the server is gone"
        );
    }
}
