//! A PostgreSQL cluster of its own, for a test that needs particular
//! authentication or TLS upstream.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::os::{as_user, chown, is_root, temp_dir_for};

/// How a throwaway cluster authenticates TCP clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAuth {
    Trust,
    Md5,
    Scram,
    /// `password`: the server asks for the password in cleartext.
    Password,
}

/// A PostgreSQL cluster made with `initdb` in a temp dir and started with
/// `pg_ctl` on a free port of 127.0.0.1 (its Unix socket in the temp dir),
/// run as the `postgres` user when the tests run as root. Stopped
/// (`immediate`) and removed on drop. `initdb` and `pg_ctl` must be on
/// `PATH` (`scripts/setup.sh` links them).
pub struct Cluster {
    dir: TempDir,
    pub port: u16,
    pub ssl: bool,
    /// The server options `pg_ctl start` was given, for a start again.
    options: String,
}

fn as_postgres(cmd: &str, args: &[&str]) -> Command {
    as_user("postgres", cmd, args)
}

impl Cluster {
    /// Starts a cluster whose TCP clients authenticate with `auth`; with
    /// `ssl`, it also serves TLS with a self-signed certificate for
    /// `localhost`/127.0.0.1 (at [`Cluster::ca_path`]). The superuser is
    /// `postgres`, trusted over the Unix socket.
    pub fn start(auth: HostAuth, ssl: bool) -> Cluster {
        let dir = temp_dir_for("postgres", "airlock-pg");
        let data = dir.path().join("data");
        let method = match auth {
            HostAuth::Trust => "trust",
            HostAuth::Md5 => "md5",
            HostAuth::Scram => "scram-sha-256",
            HostAuth::Password => "password",
        };
        let out = as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                &format!("--auth-host={method}"),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if auth == HostAuth::Md5 {
            append(&data.join("postgresql.conf"), "password_encryption = md5");
        }
        if ssl {
            let cert =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                    .unwrap();
            std::fs::write(data.join("server.crt"), cert.cert.pem()).unwrap();
            std::fs::write(data.join("server.key"), cert.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
            append(&data.join("postgresql.conf"), "ssl = on");
            chown("postgres", dir.path());
            if is_root() {
                Command::new("chmod")
                    .arg("600")
                    .arg(data.join("server.key"))
                    .status()
                    .unwrap();
            }
        }
        let port = crate::free_port();
        let sock = dir.path().to_str().unwrap().to_string();
        let options = format!("-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off");
        let cluster = Cluster {
            dir,
            port,
            ssl,
            options,
        };
        cluster.start_again();
        cluster
    }

    /// Starts the server (again, after [`Cluster::stop`]) on the same port.
    pub fn start_again(&self) {
        self.pg_ctl(&["-o", &self.options, "start"]);
    }

    /// Stops the server as `pg_ctl -m fast` does: sessions are terminated
    /// (`57P01`), new connections refused until [`Cluster::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("pg.log");
        let mut all = vec![
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
        ];
        all.extend_from_slice(args);
        let out = as_postgres("pg_ctl", &all).output().expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Runs SQL as the superuser over the cluster's Unix socket (trust) and
    /// returns what psql printed (`-A -t`), trimmed. Panics if it fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = as_postgres(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.dir.path().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "cluster SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The self-signed certificate the cluster serves, when `ssl`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

fn append(conf: &Path, line: &str) {
    let mut text = std::fs::read_to_string(conf).unwrap();
    text.push('\n');
    text.push_str(line);
    text.push('\n');
    std::fs::write(conf, text).unwrap();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
    }
}
