//! End-to-end test harness: the real gateway started in-process on port 0,
//! real PostgreSQL (the machine's server, or a throwaway cluster from
//! `airlock_testkit`), real clients (psql, pgbench, tokio-postgres) and
//! tokens really signed by the dev issuer and verified through its HTTP
//! JWKS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use airlock::serve::Running;
use airlock_identity::dev::{DevIssuer, MintRequest};
use airlock_testkit::PgDb;
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The machine's PostgreSQL (trust auth), used when a test needs no
/// particular upstream authentication.
pub const LOCAL_PG_PORT: u16 = 5432;

/// A gateway running in this process, with its own temp dir.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub pg: SocketAddr,
    /// The MySQL listener, when the configuration has one.
    pub mysql: Option<SocketAddr>,
    pub http: SocketAddr,
    pub running: Option<Running>,
}

/// A configuration for the machine's PostgreSQL: connection `test` with
/// roles `readonly` and `admin` (both upstream user `postgres`), rules
/// `agents` (group ai-agents, readonly, read-only) and `dba` (group dba,
/// every role, read-write). `extra` is appended verbatim (more top-level
/// keys, such as `limits:`).
pub fn local_config(extra: &str) -> String {
    format!(
        r#"listen:
  postgres: 127.0.0.1:0
  http: 127.0.0.1:0
identity:
  dev_issuer: true
connections:
  test:
    upstream: {{host: 127.0.0.1, port: {LOCAL_PG_PORT}, database: test, tls: disable}}
    roles:
      readonly: {{user: postgres}}
      admin: {{user: postgres}}
access:
  - name: agents
    groups: [ai-agents]
    connections: [test]
    roles: [readonly]
    mode: read-only
  - name: dba
    groups: [dba]
    connections: ["*"]
    roles: [readonly, admin]
{extra}"#
    )
}

impl Gateway {
    /// Writes `yaml` (with `data_dir` set to the temp dir) and starts it.
    pub async fn start(yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let yaml = format!("data_dir: {}\n{yaml}", data_dir.display());
        let config_path = dir.path().join("airlock.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let config = airlock::serve::load(&config_path).expect("test config is valid");
        let running = airlock::serve::start(config, Some(config_path.clone()))
            .await
            .expect("gateway starts");
        // Ready: the store connected (approvals need it). On a loaded
        // machine its migrations can take seconds. A gateway that is not
        // ready for another reason (a test of a broken journal) is
        // returned as it is.
        if let Some(http) = running.http {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                let settled = match reqwest::get(format!("http://{http}/readyz")).await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => !r.text().await.unwrap_or_default().contains("audit store"),
                    Err(_) => false,
                };
                if settled {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Gateway {
            pg: running.postgres.unwrap(),
            mysql: running.mysql,
            http: running.http.unwrap(),
            dir,
            config_path,
            running: Some(running),
        }
    }

    /// Gives the gateway a wall clock the test moves (sessions opened from
    /// now on verify tokens and time their lifetimes by it).
    pub fn manual_clock(&self) -> std::sync::Arc<airlock_engine::clock::ManualClock> {
        let clock = std::sync::Arc::new(airlock_engine::clock::ManualClock::new(
            std::time::SystemTime::now(),
        ));
        let running = self.running.as_ref().expect("the gateway runs");
        running.gateway.set_clock(clock.clone());
        clock
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A dev-issuer token valid for 15 minutes.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.token_with(sub, groups, Duration::from_secs(900))
    }

    pub fn token_with(&self, sub: &str, groups: &[&str], ttl: Duration) -> String {
        let dev = DevIssuer::open_or_create(self.data_dir()).unwrap();
        dev.mint(
            MintRequest {
                subject: sub.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ttl,
                act: None,
                audience: "airlock".into(),
            },
            SystemTime::now(),
        )
    }

    /// The gateway's `/metrics` page.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A libpq connection string for `dbname`/`user` through the gateway.
    pub fn conninfo(&self, dbname: &str, user: &str) -> String {
        format!(
            "host={} port={} dbname={dbname} user={user} sslmode=disable connect_timeout=10",
            self.pg.ip(),
            self.pg.port()
        )
    }

    /// A tokio-postgres session through the gateway on connection `test`
    /// as `role`, its connection task spawned.
    pub async fn client(
        &self,
        role: &str,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(
            &format!("{} password={token}", self.conninfo("test", role)),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Every event in the gateway's journal, as text (for searching).
    pub fn journal_texts(&self) -> Vec<String> {
        airlock_journal::Reader::open(&self.data_dir().join("journal"))
            .unwrap()
            .map(|r| String::from_utf8_lossy(&r.unwrap().payload).into_owned())
            .collect()
    }

    /// Runs psql through the gateway with `token` as the password.
    pub fn psql(&self, token: &str, dbname: &str, user: &str, sql: &str) -> Output {
        psql(&self.conninfo(dbname, user), token, sql)
    }

    /// Stops the gateway without a grace period: open sessions are ended
    /// at once (as after `shutdown_grace`), their ends recorded.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop_within(Duration::ZERO).await;
        }
    }
}

/// The rows of table `t`, counted directly.
pub fn count_rows(t: &str) -> u32 {
    direct(&format!("SELECT count(*) FROM {t}"))
        .trim()
        .parse()
        .unwrap()
}

/// psql through the gateway in the background, as `user` on connection
/// `test`, errors verbose (SQLSTATEs shown): a held statement's client.
pub fn spawn_psql(gw: &Gateway, token: &str, user: &str, sql: &str) -> std::process::Child {
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .arg(gw.conninfo("test", user))
        .args(["-c", sql])
        .env("PGPASSWORD", token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs")
}

/// Runs `psql -X -A -t -v ON_ERROR_STOP=1 -c sql` against `conninfo`.
pub fn psql(conninfo: &str, password: &str, sql: &str) -> Output {
    psql_each(conninfo, password, &[sql])
}

/// [`psql`] with a `-c` for each of `sqls`: each a Query message of its
/// own, on one session.
pub fn psql_each(conninfo: &str, password: &str, sqls: &[&str]) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo])
        .args(sqls.iter().flat_map(|s| ["-c", s]))
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

/// GET `path` of the gateway's HTTP API (`/api/v1/…`) as `token`'s bearer.
pub async fn api_get(gw: &Gateway, token: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}/api/v1/{path}", gw.http))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs SQL directly on the machine's PostgreSQL, bypassing the gateway.
pub fn direct(sql: &str) -> String {
    let o = psql(
        &format!("host=127.0.0.1 port={LOCAL_PG_PORT} dbname=test user=postgres"),
        "",
        sql,
    );
    assert!(o.status.success(), "direct SQL failed: {}", stderr(&o));
    stdout(&o)
}

/// A throwaway database on the machine's PostgreSQL, dropped however the
/// test ends.
pub async fn local_db(prefix: &str) -> PgDb {
    PgDb::create_on(
        &format!("postgres://postgres@127.0.0.1:{LOCAL_PG_PORT}"),
        prefix,
    )
    .await
}

/// Runs SQL directly on the machine's PostgreSQL when dropped, however the
/// test ends: cleanup of databases and tables a test made.
pub struct Cleanup(String);

impl Cleanup {
    pub fn sql(sql: String) -> Cleanup {
        Cleanup(sql)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = psql(
            &format!("host=127.0.0.1 port={LOCAL_PG_PORT} dbname=test user=postgres"),
            "",
            &self.0,
        );
    }
}

/// A name unique within this test run, for tables and roles.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// Raw wire helpers, for inputs no real driver would send.

/// A StartupMessage for protocol 3.0 with `params`.
pub fn startup_message(params: &[(&str, &str)]) -> BytesMut {
    startup_with_version(196_608, params)
}

pub fn startup_with_version(version: i32, params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(version);
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.put_u8(0);
        body.extend_from_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut buf = BytesMut::new();
    buf.put_i32(body.len() as i32 + 4);
    buf.extend_from_slice(&body);
    buf
}

/// A PasswordMessage carrying `password`.
pub fn password_message(password: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(b'p');
    buf.put_i32(password.len() as i32 + 5);
    buf.extend_from_slice(password.as_bytes());
    buf.put_u8(0);
    buf
}

/// A typed message.
pub fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.extend_from_slice(body);
    buf
}

/// A message the server sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Received {
    /// The field `code` of an ErrorResponse or NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        airlock_pgwire::codec::notice_fields(&self.body)
            .into_iter()
            .find(|(f, _)| *f == code)
            .map(|(_, v)| v)
    }
}

/// Sends `bytes` to `addr` and reads messages until the server closes the
/// connection or `timeout` passes. Single-byte answers (`S`/`N` to an
/// SSLRequest) are not expected here.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> (Vec<Received>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s, timeout).await
}

/// Reads messages until EOF (returns `closed = true`) or `timeout`.
pub async fn read_until_close<R: tokio::io::AsyncRead + Unpin>(
    s: &mut R,
    timeout: Duration,
) -> (Vec<Received>, bool) {
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        if buf.len() < len + 1 {
            break;
        }
        let tag = buf[0];
        buf.advance(5);
        out.push(Received {
            tag,
            body: buf.split_to(len - 4).to_vec(),
        });
    }
    (out, closed)
}

/// The SQLSTATE of the first ErrorResponse among `msgs`.
pub fn error_code(msgs: &[Received]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'C'))
}

/// The message text of the first ErrorResponse among `msgs`.
pub fn error_message(msgs: &[Received]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'M'))
}

/// Reads exactly one message off `s`, never past its end.
pub async fn read_message(s: &mut TcpStream) -> std::io::Result<Received> {
    let mut header = [0u8; 5];
    s.read_exact(&mut header).await?;
    let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
    if len < 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message length {len}"),
        ));
    }
    let mut body = vec![0; len as usize - 4];
    s.read_exact(&mut body).await?;
    Ok(Received {
        tag: header[0],
        body,
    })
}

/// Reads messages up to and including the first one tagged `tag`. Panics,
/// showing what arrived, when the server closes first or 10 s pass.
pub async fn read_until(s: &mut TcpStream, tag: u8) -> Vec<Received> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, read_message(s)).await {
            Ok(Ok(m)) => {
                let done = m.tag == tag;
                got.push(m);
                if done {
                    return got;
                }
            }
            Ok(Err(e)) => panic!(
                "connection ended ({e}) before a '{}' message; got {got:?} (error: {:?} {:?})",
                char::from(tag),
                error_code(&got),
                error_message(&got)
            ),
            Err(_) => panic!("no '{}' message within 10 s; got {got:?}", char::from(tag)),
        }
    }
}

/// Logs in over the raw wire as `user` on `dbname` with `token`, and returns
/// the socket once the gateway is ready for queries.
pub async fn raw_login(addr: SocketAddr, user: &str, dbname: &str, token: &str) -> TcpStream {
    raw_login_with(addr, &[("user", user), ("database", dbname)], token).await
}

/// [`raw_login`] with any startup parameters.
pub async fn raw_login_with(addr: SocketAddr, params: &[(&str, &str)], token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup_message(params)).await.unwrap();
    let auth = read_until(&mut s, b'R').await;
    assert_eq!(
        auth.last().unwrap().body,
        3i32.to_be_bytes(),
        "the gateway asks for a cleartext password"
    );
    s.write_all(&password_message(token)).await.unwrap();
    let ready = read_until(&mut s, b'Z').await;
    assert!(
        ready.iter().all(|m| m.tag != b'E'),
        "login failed: {:?}",
        error_message(&ready)
    );
    s
}

/// A self-signed certificate for localhost and 127.0.0.1: (dir, cert, key).
pub fn self_signed() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (dir, cert_path, key_path)
}
