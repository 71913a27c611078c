//! The demo's MariaDB: `mariadb-install-db` in `<temp dir>/mysql`, run by
//! `mariadbd` on a free port of 127.0.0.1 (as the `mysql` user when the demo
//! runs as root), with a `demo` database holding the same customers and
//! orders as the PostgreSQL one (copied from it) and the same two upstream
//! users, whose passwords only airlock holds. Optional: without MariaDB's
//! programs the demo runs PostgreSQL alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running MariaDB; killed (and waited for) on drop.
pub struct MariaDb {
    pub port: u16,
    socket: PathBuf,
    server: Child,
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // SIGTERM: a clean shutdown; then wait for it.
        let _ = Command::new("kill")
            .arg(self.server.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.server.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Whether MariaDB's programs are on PATH.
pub fn available() -> bool {
    ["mariadb-install-db", "mariadbd", "mysql"]
        .iter()
        .all(|p| which(p).is_some())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Starts MariaDB in `dir` (created) on `port`.
pub fn start(dir: &Path, port: u16, as_mysql: bool) -> Result<MariaDb> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if as_mysql {
        let ok = Command::new("chown").arg("mysql").arg(dir).status()?;
        if !ok.success() {
            bail!("chown mysql {} failed", dir.display());
        }
    }
    let data = dir.join("data");
    let user: &[&str] = if as_mysql { &["--user=mysql"] } else { &[] };
    let out = Command::new(which("mariadb-install-db").context("mariadb-install-db")?)
        .arg("--no-defaults")
        .args(user)
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running mariadb-install-db")?;
    if !out.status.success() {
        bail!(
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let socket = dir.join("mysqld.sock");
    let server = Command::new(which("mariadbd").context("mariadbd")?)
        .arg("--no-defaults")
        .args(user)
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running mariadbd")?;
    let mut db = MariaDb {
        port,
        socket,
        server,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = db.server.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            bail!("mariadbd exited ({status}):\n{}", log.trim_end());
        }
        if db.sql("SELECT 1").is_ok() {
            return Ok(db);
        }
        if Instant::now() > deadline {
            bail!("MariaDB did not get ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl MariaDb {
    /// Runs `sql` as root over the Unix socket.
    pub fn sql(&self, sql: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new("mysql")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-N", "-B"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running the mysql client")?;
        child
            .stdin
            .take()
            .context("the mysql client's stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "MariaDB SQL failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates the `demo` database, the two users, and the tables with
    /// `customers` and `orders` rows as tab-separated text (psql's
    /// unaligned output of the PostgreSQL demo's tables).
    pub fn seed(&self, users: [(&str, &str); 2], customers: &str, orders: &str) -> Result<()> {
        let [(ro, ro_pw), (admin, admin_pw)] = users;
        let mut sql = format!(
            "CREATE DATABASE demo;
USE demo;
CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL UNIQUE,
  ssn VARCHAR(11) NOT NULL, card_number VARCHAR(19) NOT NULL, external_id CHAR(36) NOT NULL UNIQUE);
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers (id),
  amount DECIMAL(10, 2) NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME NOT NULL, KEY (customer_id));
CREATE USER '{ro}'@'127.0.0.1' IDENTIFIED BY '{ro_pw}';
CREATE USER '{admin}'@'127.0.0.1' IDENTIFIED BY '{admin_pw}';
GRANT SELECT ON demo.* TO '{ro}'@'127.0.0.1';
GRANT ALL ON demo.* TO '{admin}'@'127.0.0.1';
"
        );
        for (table, rows) in [("customers", customers), ("orders", orders)] {
            for chunk in rows.lines().collect::<Vec<_>>().chunks(500) {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|line| {
                        let fields: Vec<String> = line
                            .split('\t')
                            .map(|f| format!("'{}'", f.replace('\\', "\\\\").replace('\'', "''")))
                            .collect();
                        format!("({})", fields.join(", "))
                    })
                    .collect();
                if !values.is_empty() {
                    sql.push_str(&format!(
                        "INSERT INTO {table} VALUES {};\n",
                        values.join(",\n")
                    ));
                }
            }
        }
        self.sql(&sql).map(drop)
    }
}
