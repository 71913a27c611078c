//! End-to-end tests of the data path: upstream authentication and TLS,
//! credential rotation and reloads, cancel, real drivers (tokio-postgres,
//! psql, pgbench), asynchronous messages, session lifetime, read-only mode,
//! startup parameters and the HTTP listener; and the driver matrix
//! (`data_path/drivers.rs`, its scripts in `tests/drivers/`: psql, psycopg,
//! asyncpg, node-postgres and pgjdbc as read-only and read-write
//! principals).

mod drivers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use airlock_identity::dev::{DevIssuer, MintRequest};
use airlock_testkit::{Cluster, HostAuth};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

use crate::common::{self, Gateway, Received};

// ---------------------------------------------------------------------------
// Helpers local to this file.

/// Runs a blocking closure (psql, pgbench, initdb) off the runtime's workers,
/// so the in-process gateway keeps serving.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

async fn start_cluster(auth: HostAuth, ssl: bool) -> Arc<Cluster> {
    Arc::new(blocking(move || Cluster::start(auth, ssl)).await)
}

async fn cluster_sql(cluster: &Arc<Cluster>, sql: &str) -> String {
    let (c, sql) = (Arc::clone(cluster), sql.to_string());
    blocking(move || c.sql(&sql)).await
}

async fn direct(sql: &str) -> String {
    let sql = sql.to_string();
    blocking(move || common::direct(&sql)).await
}

/// [`direct`] in database `db`.
async fn direct_in(db: &str, sql: &str) -> String {
    let (db, sql) = (db.to_string(), sql.to_string());
    blocking(move || {
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname={db} user=postgres",
            common::LOCAL_PG_PORT
        );
        let o = common::psql(&conninfo, "", &sql);
        assert!(
            o.status.success(),
            "direct SQL failed: {}",
            common::stderr(&o)
        );
        common::stdout(&o)
    })
    .await
}

/// psql through the gateway, off the runtime's workers.
async fn psql(gw: &Gateway, token: &str, dbname: &str, user: &str, sql: &str) -> Output {
    psql_env(gw, token, dbname, user, &["-c", sql], &[]).await
}

/// psql through the gateway with several arguments (`-c`s) and extra
/// environment variables.
async fn psql_env(
    gw: &Gateway,
    token: &str,
    dbname: &str,
    user: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let conninfo = gw.conninfo(dbname, user);
    let token = token.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    blocking(move || {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", &conninfo])
            .args(&args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .envs(env)
            .output()
            .expect("psql runs")
    })
    .await
}

#[track_caller]
fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout: {}",
        common::stderr(o),
        common::stdout(o)
    );
    common::stdout(o)
}

/// A tokio-postgres configuration for `dbname`/`user` through the gateway.
fn pg_config(gw: &Gateway, dbname: &str, user: &str, token: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(gw.pg.ip().to_string())
        .port(gw.pg.port())
        .dbname(dbname)
        .user(user)
        .password(token)
        .ssl_mode(SslMode::Disable)
        .connect_timeout(Duration::from_secs(10));
    c
}

type ConnTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// Connects with tokio-postgres and drives the connection on its own task.
async fn connect(gw: &Gateway, dbname: &str, user: &str, token: &str) -> (Client, ConnTask) {
    let (client, conn) = pg_config(gw, dbname, user, token)
        .connect(NoTls)
        .await
        .expect("tokio-postgres connects through the gateway");
    (client, tokio::spawn(conn))
}

/// The first column of the first row of a simple query, as text.
async fn scalar(client: &Client, sql: &str) -> String {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[track_caller]
fn assert_sqlstate(e: &tokio_postgres::Error, want: &SqlState) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error {want:?}, got {e:?}"));
    assert_eq!(db.code(), want, "unexpected error: {db:?}");
}

/// StartupMessage and PasswordMessage in one write; the messages the gateway
/// answers with, up to its closing the connection.
async fn raw_login(gw: &Gateway, dbname: &str, user: &str, token: &str) -> Vec<Received> {
    let mut bytes = common::startup_message(&[("user", user), ("database", dbname)]);
    bytes.extend_from_slice(&common::password_message(token));
    let (msgs, closed) = common::exchange(gw.pg, &bytes, Duration::from_secs(15)).await;
    assert!(closed, "the gateway closes a failed login; got {msgs:?}");
    msgs
}

/// Reads messages until a ReadyForQuery, or panics after `timeout`.
async fn read_until_ready(s: &mut TcpStream, timeout: Duration) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    loop {
        while buf.len() >= 5 {
            let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < len + 1 {
                break;
            }
            let msg = buf.split_to(len + 1);
            let received = Received {
                tag: msg[0],
                body: msg[5..].to_vec(),
            };
            let ready = received.tag == b'Z';
            out.push(received);
            if ready {
                assert!(buf.is_empty(), "nothing follows ReadyForQuery unasked");
                return out;
            }
        }
        match tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) => panic!("connection closed before ReadyForQuery; got {out:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("read failed: {e}; got {out:?}"),
            Err(_) => panic!("no ReadyForQuery within {timeout:?}; got {out:?}"),
        }
    }
}

/// A logged-in raw session: the socket and the BackendKeyData the gateway
/// gave the client.
async fn raw_session(gw: &Gateway, dbname: &str, user: &str, token: &str) -> (TcpStream, i32, i32) {
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    let mut bytes = common::startup_message(&[("user", user), ("database", dbname)]);
    bytes.extend_from_slice(&common::password_message(token));
    s.write_all(&bytes).await.unwrap();
    let msgs = read_until_ready(&mut s, Duration::from_secs(15)).await;
    let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    let pid = i32::from_be_bytes(key.body[0..4].try_into().unwrap());
    let secret = i32::from_be_bytes(key.body[4..8].try_into().unwrap());
    (s, pid, secret)
}

fn cancel_request(pid: i32, secret: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i32(16);
    buf.put_i32(80_877_102);
    buf.put_i32(pid);
    buf.put_i32(secret);
    buf
}

fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A gateway configuration: `connections` verbatim (indented two spaces),
/// the rule `dba` (group dba, every connection, `roles`, read-write), and
/// `identity_extra` lines under `identity:`.
fn config(identity_extra: &str, connections: &str, roles: &str) -> String {
    format!(
        r#"listen:
  postgres: 127.0.0.1:0
  http: 127.0.0.1:0
identity:
  dev_issuer: true
{identity_extra}connections:
{connections}access:
  - name: dba
    groups: [dba]
    connections: ["*"]
    roles: [{roles}]
"#
    )
}

/// A top-level section of examples/airlock.yaml, as shipped.
fn example_section(key: &str) -> String {
    let example = include_str!("../../../../examples/airlock.yaml");
    let start = example
        .find(&format!("\n{key}:"))
        .unwrap_or_else(|| panic!("the example has no {key}"))
        + 1;
    let rest = &example[start..];
    // Up to the next top-level key.
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].starts_with(|c: char| c.is_ascii_lowercase()))
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

// ---------------------------------------------------------------------------
// 1. Upstream authentication methods.

async fn upstream_auth(auth: HostAuth) {
    let cluster = start_cluster(auth, false).await;
    cluster_sql(&cluster, "create role app login password 'pw1'").await;
    if auth == HostAuth::Md5 {
        assert_eq!(
            cluster_sql(
                &cluster,
                "select rolpassword like 'md5%' from pg_authid where rolname = 'app'"
            )
            .await,
            "t",
            "the md5 cluster stores an md5 verifier"
        );
    }
    let secrets = tempfile::tempdir().unwrap();
    let good = write_file(secrets.path(), "good", "pw1\n");
    let bad = write_file(secrets.path(), "bad", "wrong\n");
    let connections = format!(
        "  c:\n    upstream: {{host: 127.0.0.1, port: {}, database: postgres, tls: disable}}\n    roles:\n      app: {{user: app, password: {{file: {}}}}}\n      bad: {{user: app, password: {{file: {}}}}}\n",
        cluster.port,
        good.display(),
        bad.display()
    );
    let gw = Gateway::start(&config("", &connections, "app, bad")).await;
    let token = gw.token("alice", &["dba"]);

    let out = psql(&gw, &token, "c", "app", "select current_user").await;
    assert_eq!(ok_stdout(&out), "app", "{auth:?}");

    // The wrong password proves the cluster really asks for one (except trust).
    if auth == HostAuth::Trust {
        let out = psql(&gw, &token, "c", "bad", "select current_user").await;
        assert_eq!(ok_stdout(&out), "app", "trust ignores the password");
    } else {
        let msgs = raw_login(&gw, "c", "bad", &token).await;
        assert_eq!(
            common::error_code(&msgs).as_deref(),
            Some("08004"),
            "{auth:?}: {msgs:?}"
        );
        let text = common::error_message(&msgs).unwrap();
        assert!(
            !text.contains("wrong"),
            "the credential never reaches the client: {text}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_scram() {
    upstream_auth(HostAuth::Scram).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_md5() {
    upstream_auth(HostAuth::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_cleartext_password() {
    upstream_auth(HostAuth::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_trust() {
    upstream_auth(HostAuth::Trust).await;
}

// ---------------------------------------------------------------------------
// 2. Upstream TLS modes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes() {
    // SCRAM over TLS: the server also offers SCRAM-SHA-256-PLUS then.
    let (tls, plain) = tokio::join!(
        start_cluster(HostAuth::Scram, true),
        start_cluster(HostAuth::Trust, false)
    );
    for c in [&tls, &plain] {
        cluster_sql(c, "create role app login password 'pw1'").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let password = write_file(dir.path(), "pw", "pw1\n");
    let other =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let other_ca = write_file(dir.path(), "other-ca.pem", &other.cert.pem());
    let ca = cluster_ca(&tls);
    let conn = |name: &str, host: &str, port: u16, tls: &str, ca: Option<&Path>| {
        let ca = ca
            .map(|p| format!(", ca: {{file: {}}}", p.display()))
            .unwrap_or_default();
        format!(
            "  {name}:\n    upstream: {{host: {host}, port: {port}, database: postgres, tls: {tls}{ca}}}\n    roles:\n      app: {{user: app, password: {{file: {}}}}}\n",
            password.display()
        )
    };
    let connections = [
        conn("req", "127.0.0.1", tls.port, "require", None),
        conn("vf_ip", "127.0.0.1", tls.port, "verify-full", Some(&ca)),
        conn("vf_name", "localhost", tls.port, "verify-full", Some(&ca)),
        conn(
            "vf_bad",
            "127.0.0.1",
            tls.port,
            "verify-full",
            Some(&other_ca),
        ),
        conn("pref", "127.0.0.1", tls.port, "prefer", None),
        conn("plain_req", "127.0.0.1", plain.port, "require", None),
        conn("plain_pref", "127.0.0.1", plain.port, "prefer", None),
    ]
    .concat();
    let gw = Gateway::start(&config("", &connections, "app")).await;
    let token = gw.token("alice", &["dba"]);
    let ssl_sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

    for (db, want) in [
        ("req", "t"),
        ("vf_ip", "t"),
        ("vf_name", "t"),
        ("pref", "t"),
        ("plain_pref", "f"),
    ] {
        let out = psql(&gw, &token, db, "app", ssl_sql).await;
        assert_eq!(
            ok_stdout(&out),
            want,
            "connection {db}: upstream TLS in use"
        );
    }
    for db in ["vf_bad", "plain_req"] {
        let msgs = raw_login(&gw, db, "app", &token).await;
        assert_eq!(
            common::error_code(&msgs).as_deref(),
            Some("08006"),
            "{db}: {msgs:?}"
        );
        let fatal = msgs.iter().find(|m| m.tag == b'E').unwrap();
        assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"), "{db}");
        assert!(msgs.iter().all(|m| m.tag != b'Z'), "{db}: no session opens");
    }

    // A server that accepts the SSLRequest but whose handshake fails (it
    // speaks only TLS versions nothing accepts any more): `prefer` falls
    // back to plaintext, as libpq does; `require` fails.
    cluster_sql(&tls, "alter system set ssl_min_protocol_version = 'TLSv1'").await;
    cluster_sql(
        &tls,
        "alter system set ssl_max_protocol_version = 'TLSv1.1'",
    )
    .await;
    cluster_sql(&tls, "select pg_reload_conf()").await;
    let out = psql(&gw, &token, "pref", "app", ssl_sql).await;
    assert_eq!(ok_stdout(&out), "f", "prefer falls back to plaintext");
    let msgs = raw_login(&gw, "req", "app", &token).await;
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("08006"),
        "{msgs:?}"
    );
    gw.stop().await;
}

/// A refusal reaches the client as airlock's own error whatever language
/// the upstream speaks: with `lc_messages` German (scripts/setup.sh
/// generates the locale; a fresh cluster sees it), the stand-in's syntax
/// error is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_depend_on_the_upstream_language() {
    let cluster = start_cluster(HostAuth::Trust, false).await;
    let connections = format!(
        "  de:\n    upstream: {{host: 127.0.0.1, port: {}, database: postgres, tls: disable}}\n    roles:\n      admin: {{user: postgres}}\n",
        cluster.port
    );
    let yaml = config("", &connections, "admin").replace(
        "access:",
        "guardrails:\n  - name: no-drops\n    match: {effects: [drop]}\n    action: deny\n    message: no drops here\naccess:",
    );
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("alice", &["dba"]);
    let out = psql_env(
        &gw,
        &token,
        "de",
        "admin",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "set lc_messages = 'de_DE.UTF-8'",
            "-c",
            "drop table if exists nothing_here",
            "-c",
            "select 1/0",
        ],
        &[("PGOPTIONS", "")],
    )
    .await;
    let err = common::stderr(&out);
    assert!(
        err.contains("airlock: statement denied by rule \"no-drops\": no drops here"),
        "{err}"
    );
    // The upstream does speak German: its own errors say so.
    assert!(err.contains("Division durch Null"), "{err}");
    assert!(!err.contains("AIRLOCK_REFUSED"), "{err}");
    gw.stop().await;
}

fn cluster_ca(c: &Cluster) -> PathBuf {
    let p = c.ca_path();
    assert!(p.exists(), "the ssl cluster wrote its certificate");
    p
}

// ---------------------------------------------------------------------------
// 3. Credential rotation and reloads.

/// Retries a psql login until it succeeds or `within` passes; returns how long it took.
async fn login_eventually(
    gw: &Gateway,
    token: &str,
    dbname: &str,
    user: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let out = psql(gw, token, dbname, user, "select current_user").await;
        if out.status.success() {
            assert_eq!(common::stdout(&out), "app");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no successful login within {within:?}: {}",
            common::stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_rotation_and_invalid_reloads() {
    let cluster = start_cluster(HostAuth::Scram, false).await;
    cluster_sql(&cluster, "create role app login password 'old'").await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = write_file(secrets.path(), "app-password", "old\n");
    let connections = format!(
        "  c:\n    upstream: {{host: 127.0.0.1, port: {}, database: postgres, tls: disable}}\n    roles:\n      app: {{user: app, password: {{file: {}}}}}\n",
        cluster.port,
        secret.display()
    );
    let gw = Gateway::start(&config("", &connections, "app")).await;
    let token = gw.token("alice", &["dba"]);

    // Session A, opened with the old password, stays open throughout.
    let (a, _a_conn) = connect(&gw, "c", "app", &token).await;
    assert_eq!(scalar(&a, "select current_user").await, "app");

    // Rotate upstream first: until the secret file changes, new logins fail.
    cluster_sql(&cluster, "alter role app password 'new'").await;
    let msgs = raw_login(&gw, "c", "app", &token).await;
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("08004"),
        "{msgs:?}"
    );

    std::fs::write(&secret, "new\n").unwrap();
    let took = login_eventually(&gw, &token, "c", "app", Duration::from_secs(10)).await;
    println!("rotated credential picked up after {took:?}");
    assert_eq!(
        scalar(&a, "select 1").await,
        "1",
        "session A survives the reload"
    );

    // Garbage YAML: refused, the current policy stays.
    std::fs::write(&gw.config_path, "listen: [this is: not yaml\n  :::\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = psql(&gw, &token, "c", "app", "select current_user").await;
    assert_eq!(ok_stdout(&out), "app", "after a garbage config");

    // Valid YAML whose secret cannot be read (the gateway's own check fails):
    // refused as well, the rotated credential stays in force.
    let missing = secrets.path().join("does-not-exist");
    let broken = format!(
        "data_dir: {}\n{}",
        gw.data_dir().display(),
        config(
            "",
            &connections.replace(
                &secret.display().to_string(),
                &missing.display().to_string()
            ),
            "app"
        )
    );
    std::fs::write(&gw.config_path, broken).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = psql(&gw, &token, "c", "app", "select current_user").await;
    assert_eq!(
        ok_stdout(&out),
        "app",
        "after a config whose secret is missing"
    );
    assert_eq!(scalar(&a, "select 2").await, "2", "session A is untouched");
    gw.stop().await;
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn psql_blocking(conninfo: &str, token: &str) -> Output {
    common::psql(conninfo, token, "select current_user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary() {
    let cluster = start_cluster(HostAuth::Scram, false).await;
    cluster_sql(&cluster, "create role app login password 'old'").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "app-password", "old\n");
    let data_dir = dir.path().join("data");
    let (pg_port, http_port) = (airlock_testkit::free_port(), airlock_testkit::free_port());
    let yaml = format!(
        "data_dir: {}\n{}",
        data_dir.display(),
        config(
            "",
            &format!(
                "  c:\n    upstream: {{host: 127.0.0.1, port: {}, database: postgres, tls: disable}}\n    roles:\n      app: {{user: app, password: {{file: {}}}}}\n",
                cluster.port,
                secret.display()
            ),
            "app"
        )
        .replace("127.0.0.1:0\n  http: 127.0.0.1:0", &format!("127.0.0.1:{pg_port}\n  http: 127.0.0.1:{http_port}"))
    );
    assert!(yaml.contains(&format!("127.0.0.1:{http_port}")));
    let config_path = write_file(dir.path(), "airlock.yaml", &yaml);
    // The key exists before the binary starts, so both use the same one.
    let token = DevIssuer::open_or_create(&data_dir).unwrap().mint(
        MintRequest {
            subject: "alice".into(),
            groups: vec!["dba".into()],
            ttl: Duration::from_secs(900),
            act: None,
            audience: "airlock".into(),
        },
        SystemTime::now(),
    );
    let log = dir.path().join("airlock.log");
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("AIRLOCK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the airlock binary starts"),
    );
    let pid = child.0.id();
    let conninfo = format!(
        "host=127.0.0.1 port={pg_port} dbname=c user=app sslmode=disable connect_timeout=10"
    );

    // Wait for the listener: the first successful login uses 'old'.
    let start = Instant::now();
    loop {
        let (ci, t) = (conninfo.clone(), token.clone());
        let out = blocking(move || psql_blocking(&ci, &t)).await;
        if out.status.success() {
            assert_eq!(common::stdout(&out), "app");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the binary did not serve within 30 s: {}\nlog: {}",
            common::stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Rotate, and swap the secret file in with the same length and mtime, so
    // that the file watcher cannot see the change: only SIGHUP can.
    cluster_sql(&cluster, "alter role app password 'new'").await;
    let mtime = std::fs::metadata(&secret).unwrap().modified().unwrap();
    let staged = write_file(dir.path(), "app-password.next", "new\n");
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&staged, &secret).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ci, t) = (conninfo.clone(), token.clone());
    let out = blocking(move || psql_blocking(&ci, &t)).await;
    assert!(
        !out.status.success(),
        "before SIGHUP the binary still logs in with the old password"
    );

    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        let (ci, t) = (conninfo.clone(), token.clone());
        let out = blocking(move || psql_blocking(&ci, &t)).await;
        if out.status.success() {
            assert_eq!(common::stdout(&out), "app");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no login with the rotated password after SIGHUP: {}\nlog: {}",
            common::stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("SIGHUP reload picked up after {:?}", start.elapsed());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("configuration reloaded") && l.contains("SIGHUP")),
        "the log names the SIGHUP reload:\n{text}"
    );
    drop(child);
}

// ---------------------------------------------------------------------------
// 4. Cancel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_routed_to_the_upstream() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let (client, _conn) = connect(&gw, "test", "admin", &token).await;
    let cancel = client.cancel_token();
    let query = tokio::spawn(async move {
        let r = client.simple_query("select pg_sleep(30)").await;
        (r.map(|_| ()), Instant::now(), client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    cancel
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let (result, done, client) = tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .expect("the query ends after the cancel")
        .unwrap();
    let took = done.saturating_duration_since(sent);
    println!("query canceled {took:?} after the cancel request");
    assert_sqlstate(&result.unwrap_err(), &SqlState::QUERY_CANCELED);
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
    assert_eq!(
        scalar(&client, "select 1").await,
        "1",
        "the session goes on"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_secret_is_ignored() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let (mut s, pid, secret) = raw_session(&gw, "test", "admin", &token).await;
    let mut q = BytesMut::new();
    airlock_pgwire::codec::query("select pg_sleep(1.5)", &mut q);
    s.write_all(&q).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (p, k) in [
        (pid, secret ^ 1),
        (pid, secret.wrapping_add(1 << 20)),
        (pid ^ 1, secret),
    ] {
        let mut c = TcpStream::connect(gw.pg).await.unwrap();
        c.write_all(&cancel_request(p, k)).await.unwrap();
        // The gateway closes the cancel connection without an answer.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the gateway closes a cancel connection")
            .ok();
        assert!(rest.is_empty(), "no answer to a CancelRequest");
    }
    let msgs = read_until_ready(&mut s, Duration::from_secs(15)).await;
    assert_eq!(
        common::error_code(&msgs),
        None,
        "the query was not canceled: {msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.tag == b'C'),
        "the query completed: {msgs:?}"
    );
    // The right key still works afterwards.
    s.write_all(&q).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = TcpStream::connect(gw.pg).await.unwrap();
    c.write_all(&cancel_request(pid, secret)).await.unwrap();
    let msgs = read_until_ready(&mut s, Duration::from_secs(15)).await;
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("57014"),
        "{msgs:?}"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 5. tokio-postgres.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_extended_protocol() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let (client, _conn) = connect(&gw, "test", "admin", &token).await;

    // Parameters.
    let row = client
        .query_one("select $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    // A prepared statement, reused.
    let stmt = client
        .prepare("select $1::text || '!', $2::int8 * 2")
        .await
        .unwrap();
    for i in 0..5i64 {
        let row = client
            .query_one(&stmt, &[&format!("n{i}"), &i])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("n{i}!"));
        assert_eq!(row.get::<_, i64>(1), i * 2);
    }

    // Binary results of several types.
    let row = client
        .query_one(
            "select '\\x00ff10'::bytea, 1.5::float8, true, array[1,2,3]::int4[], 'héllo'::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), vec![0u8, 0xff, 0x10]);
    assert_eq!(row.get::<_, f64>(1), 1.5);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Vec<i32>>(3), vec![1, 2, 3]);
    assert_eq!(row.get::<_, String>(4), "héllo");

    // A transaction rolled back.
    let table = common::unique("tp_tx");
    client
        .batch_execute(&format!("create table {table} (id int)"))
        .await
        .unwrap();
    let mut client = client;
    {
        let tx = client.transaction().await.unwrap();
        tx.execute(
            &format!("insert into {table} values ($1), ($2)"),
            &[&1i32, &2i32],
        )
        .await
        .unwrap();
        let n: i64 = tx
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "visible inside the transaction");
        tx.rollback().await.unwrap();
    }
    let n: i64 = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "rolled back");

    // An error inside a transaction aborts it, and the session recovers.
    {
        let tx = client.transaction().await.unwrap();
        let e = tx.query_one("select 1/0", &[]).await.unwrap_err();
        assert_sqlstate(&e, &SqlState::DIVISION_BY_ZERO);
        let e = tx.query_one("select 1", &[]).await.unwrap_err();
        assert_sqlstate(&e, &SqlState::IN_FAILED_SQL_TRANSACTION);
    }
    assert_eq!(scalar(&client, "select 3").await, "3");

    // Pipelining: these are all in flight on the one connection at once.
    let (a, b, c, d) = tokio::join!(
        client.query("select $1::int, pg_sleep(0.2)", &[&1i32]),
        client.query("select $1::text", &[&"two"]),
        client.query("select generate_series(1, $1)", &[&1000i32]),
        client.query("select $1::int8 + 1", &[&3i64]),
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 1);
    assert_eq!(b.unwrap()[0].get::<_, String>(0), "two");
    let c = c.unwrap();
    assert_eq!(c.len(), 1000);
    assert_eq!(c[999].get::<_, i32>(0), 1000);
    assert_eq!(d.unwrap()[0].get::<_, i64>(0), 4);

    // A pipelined failure in the middle does not disturb its neighbours.
    let (a, b, c) = tokio::join!(
        client.query("select 10", &[]),
        client.query("select * from no_such_table_anywhere", &[]),
        client.query("select 30", &[]),
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 10);
    assert_sqlstate(&b.unwrap_err(), &SqlState::UNDEFINED_TABLE);
    assert_eq!(c.unwrap()[0].get::<_, i32>(0), 30);

    // Simple protocol, two statements in one Query.
    let msgs = client.simple_query("select 1; select 2").await.unwrap();
    let rows: Vec<&str> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "2"]);
    let completes = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 2);

    client
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 6. psql: multi-statement -c, \copy both ways, server-side COPY TO STDOUT.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_multi_statement_and_copy() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let table = common::unique("psql_copy");

    let out = psql(
        &gw,
        &token,
        "test",
        "admin",
        &format!("create table {table} (id int primary key, name text); insert into {table} values (-1, 'a'), (-2, 'b'); select count(*) from {table}; select 'done'"),
    )
    .await;
    let text = ok_stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"done"), "{text}");
    assert!(lines.contains(&"2"), "{text}");
    let out = psql(
        &gw,
        &token,
        "test",
        "admin",
        &format!("delete from {table}"),
    )
    .await;
    ok_stdout(&out);

    // COPY FROM STDIN: 10,000 rows from a file.
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!(
            "{i}\trow {i} with tab\\tand café \\\\ {}\n",
            "x".repeat(i % 50)
        ));
    }
    let input = write_file(dir.path(), "in.tsv", &data);
    let output = dir.path().join("out.tsv");
    let out = psql_env(
        &gw,
        &token,
        "test",
        "admin",
        &[
            "-c",
            &format!("\\copy {table} from '{}'", input.display()),
            "-c",
            &format!("select count(*) from {table}"),
            "-c",
            &format!(
                "\\copy (select * from {table} order by id) to '{}'",
                output.display()
            ),
        ],
        &[],
    )
    .await;
    let text = ok_stdout(&out);
    assert!(text.lines().any(|l| l == "10000"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        data,
        "COPY TO STDOUT returns what COPY FROM STDIN stored"
    );

    // Server-side COPY TO STDOUT of 100,000 rows.
    let out = psql(
        &gw,
        &token,
        "test",
        "readonly",
        "COPY (select generate_series(1,100000)) TO STDOUT",
    )
    .await;
    let text = ok_stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100_000);
    assert_eq!((lines[0], lines[99_999]), ("1", "100000"));

    let out = psql(&gw, &token, "test", "admin", &format!("drop table {table}")).await;
    ok_stdout(&out);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 7. LISTEN/NOTIFY and notices.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_arrive() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let (client, mut connection) = pg_config(&gw, "test", "admin", &token)
        .connect(NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(stream);
        while let Some(m) = stream.next().await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an async message within 10 s")
            .expect("the connection is alive")
            .expect("no connection error")
    };

    // The welcome notice names the route.
    match next().await {
        AsyncMessage::Notice(n) => {
            assert!(
                n.message()
                    .contains("connection \"test\" as role \"admin\""),
                "{n:?}"
            )
        }
        other => panic!("expected the welcome notice, got {other:?}"),
    }

    let channel = common::unique("chan");
    client
        .batch_execute(&format!("listen {channel}"))
        .await
        .unwrap();
    direct(&format!("notify {channel}, 'payload from outside'")).await;
    match next().await {
        AsyncMessage::Notification(n) => {
            assert_eq!(n.channel(), channel);
            assert_eq!(n.payload(), "payload from outside");
        }
        other => panic!("expected a notification, got {other:?}"),
    }

    client
        .batch_execute("do $$ begin raise notice 'hello'; end $$")
        .await
        .unwrap();
    match next().await {
        AsyncMessage::Notice(n) => {
            assert_eq!(n.message(), "hello");
            assert_eq!(n.code(), &SqlState::SUCCESSFUL_COMPLETION);
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 8. pgbench.

async fn pgbench(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    let (host, port, token) = (
        gw.pg.ip().to_string(),
        gw.pg.port().to_string(),
        token.to_string(),
    );
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    blocking(move || {
        Command::new("pgbench")
            .args(["-h", &host, "-p", &port, "-U", "admin"])
            .args(&args)
            .arg("bench")
            .env("PGPASSWORD", token)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("pgbench runs")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_gateway() {
    let pg = common::local_db("airlock_bench").await;
    let db = pg.name();
    let connections = format!(
        "  bench:\n    upstream: {{host: 127.0.0.1, port: {}, database: {db}, tls: disable}}\n    roles:\n      admin: {{user: postgres}}\n",
        common::LOCAL_PG_PORT
    );
    let gw = Gateway::start(&config("", &connections, "admin")).await;
    let token = gw.token("alice", &["dba"]);

    let started = Instant::now();
    let out = pgbench(&gw, &token, &["-i", "-s", "1", "-q"]).await;
    assert!(
        out.status.success(),
        "pgbench -i: {}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    println!("pgbench -i took {:?}", started.elapsed());

    let out = psql(
        &gw,
        &token,
        "bench",
        "admin",
        "select count(*) from pgbench_accounts",
    )
    .await;
    assert_eq!(
        ok_stdout(&out),
        "100000",
        "pgbench -i loaded scale 1 through the gateway"
    );

    for mode in ["simple", "extended", "prepared"] {
        // Each run starts by truncating pgbench_history; TPC-B goes last so
        // its inserts can be counted.
        for select_only in [true, false] {
            let mut args = vec!["-c", "2", "-j", "1", "-t", "100", "-M", mode];
            if select_only {
                args.push("-S");
            }
            let started = Instant::now();
            let out = pgbench(&gw, &token, &args).await;
            let (so, se) = (common::stdout(&out), common::stderr(&out));
            assert!(out.status.success(), "pgbench {args:?}: {so}\n{se}");
            assert!(
                so.contains("number of transactions actually processed: 200/200"),
                "pgbench {args:?}: {so}"
            );
            assert!(
                so.contains("number of failed transactions: 0 "),
                "pgbench {args:?}: {so}"
            );
            assert!(
                !se.to_lowercase().contains("error"),
                "pgbench {args:?}: {se}"
            );
            println!("pgbench {args:?} took {:?}", started.elapsed());
            if !select_only {
                let out = psql(
                    &gw,
                    &token,
                    "bench",
                    "admin",
                    "select count(*) from pgbench_history",
                )
                .await;
                assert_eq!(
                    ok_stdout(&out),
                    "200",
                    "-M {mode}: one history row per TPC-B transaction"
                );
            }
        }
    }
    gw.stop().await;
}

/// pgbench's TPC-B-like script as a read-write principal that is masked,
/// under the example policy's guardrails (unbounded and large writes held
/// for approval, by `estimated_rows_over`): every UPDATE pins a primary
/// key, so nothing is held and no estimate is fetched, in every protocol
/// mode; every committed transaction is in the recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_under_the_example_guardrails_holds_nothing() {
    let pg = common::local_db("airlock_tpcb").await;
    let db = pg.name();
    let init = {
        let db = db.to_string();
        blocking(move || {
            Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &common::LOCAL_PG_PORT.to_string()])
                .args(["-U", "postgres", "-i", "-s", "1", "-q", &db])
                .output()
                .expect("pgbench runs")
        })
        .await
    };
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        common::stderr(&init)
    );
    // The example policy's guardrails, as shipped; a principal without
    // `unmask`, so its session is masked.
    let connections = format!(
        "  bench:\n    upstream: {{host: 127.0.0.1, port: {}, database: {db}, tls: disable}}\n    roles:\n      admin: {{user: postgres}}\n",
        common::LOCAL_PG_PORT
    );
    let yaml = format!(
        "{}masking:\n  rules:\n    - {{name: email, columns: [\"*.email\"], strategy: email}}\n    - {{name: cards, detect: [credit_card], strategy: redact}}\n{}approvals: {{timeout: 100ms, timeout_in_transaction: 100ms}}\n",
        config("", &connections, "admin"),
        example_section("guardrails")
    );
    assert!(yaml.contains("estimated_rows_over: 1000"), "{yaml}");
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("ci-writer", &["dba"]);
    let transactions = 50;
    for mode in ["simple", "extended", "prepared"] {
        // -n: no vacuum and no TRUNCATE of pgbench_history first (a TRUNCATE
        // would rightly be held).
        let t = transactions.to_string();
        let args = ["-n", "-c", "4", "-j", "2", "-t", &t, "-M", mode];
        let out = pgbench(&gw, &token, &args).await;
        let (so, se) = (common::stdout(&out), common::stderr(&out));
        assert!(out.status.success(), "pgbench {args:?}: {so}\n{se}");
        let all = 4 * transactions;
        assert!(
            so.contains(&format!(
                "number of transactions actually processed: {all}/{all}"
            )),
            "pgbench {args:?}: {so}\n{se}"
        );
        assert!(
            so.contains("number of failed transactions: 0 "),
            "pgbench {args:?}: {so}"
        );
        assert!(
            !se.to_lowercase().contains("held for approval"),
            "pgbench {args:?}: {se}"
        );
    }
    let committed: usize = direct_in(db, "select count(*) from pgbench_history")
        .await
        .parse()
        .unwrap();
    assert_eq!(committed, 3 * 4 * transactions);
    // Every statement's event was journaled before it ran.
    let events: Vec<airlock_audit::event::Event> =
        airlock_journal::Reader::open(&gw.data_dir().join("journal"))
            .unwrap()
            .map(|r| airlock_audit::event::Event::decode(&r.unwrap().payload).unwrap())
            .collect();
    gw.stop().await;
    use airlock_audit::event::{Body, Decision};
    let inserts = events
        .iter()
        .filter(|e| {
            matches!(&e.body, Body::Statement(s)
            if s.text.starts_with("INSERT INTO pgbench_history") && s.decision == Decision::Allow)
        })
        .count();
    assert_eq!(
        inserts, committed,
        "every committed transaction is recorded"
    );
    let held = events
        .iter()
        .filter(|e| matches!(&e.body, Body::Approval(_)))
        .count();
    assert_eq!(held, 0, "nothing was held");
}

/// Extended-protocol UPDATEs that no key bounds are estimated at each Bind
/// with that Bind's own parameters: the same prepared statement is allowed
/// for a few rows and held for many, in and out of a transaction block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_writes_are_estimated_with_their_parameters() {
    let table = common::unique("est_bind");
    direct(&format!(
        "create table {table} (id int primary key, grp int, v int); \
         insert into {table} select g, g % 500, 0 from generate_series(1, 5000) g; \
         analyze {table}"
    ))
    .await;
    let _drop = common::Cleanup::sql(format!("drop table if exists {table}"));
    let yaml = common::local_config(
        "guardrails:\n  - name: review-large-writes\n    match: {statements: [update, delete], estimated_rows_over: 1000}\n    action: approve\n    approvers: [dba]\napprovals: {timeout: 100ms, timeout_in_transaction: 100ms}\n",
    );
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("alice", &["dba"]);
    let (client, _conn) = connect(&gw, "test", "admin", &token).await;
    let by_group = client
        .prepare(&format!("update {table} set v = $1 where grp = $2"))
        .await
        .unwrap();
    let above = client
        .prepare(&format!("update {table} set v = $1 where id > $2"))
        .await
        .unwrap();
    // A few rows: allowed, repeatedly (past any driver's prepare threshold).
    for g in 0..7 {
        assert_eq!(client.execute(&by_group, &[&1i32, &g]).await.unwrap(), 10);
    }
    assert_eq!(
        client.execute(&above, &[&2i32, &4990i32]).await.unwrap(),
        10
    );
    // The same statement over thousands of rows: held, and refused when
    // nobody approves.
    let e = client.execute(&above, &[&3i32, &0i32]).await.unwrap_err();
    assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("approval") && message.contains("timed out"),
        "{message}"
    );
    // Its hint: nobody decided, so the same statement may pass later.
    let hint: serde_json::Value =
        serde_json::from_str(e.as_db_error().unwrap().hint().unwrap()).unwrap();
    assert_eq!(
        (&hint["rule"], &hint["retry"]),
        (&"approval".into(), &true.into())
    );
    assert_eq!(
        direct(&format!("select count(*) from {table} where v = 3")).await,
        "0"
    );
    // Inside a transaction block.
    client.batch_execute("begin").await.unwrap();
    assert_eq!(client.execute(&above, &[&4i32, &4995i32]).await.unwrap(), 5);
    client.batch_execute("commit").await.unwrap();
    assert_eq!(
        direct(&format!("select count(*) from {table} where v = 4")).await,
        "5"
    );
    gw.stop().await;
}

/// psql's large-object commands use the FunctionCall message: each call is
/// looked up by OID, judged as the SELECT it is equivalent to and recorded;
/// a read-only principal's writing calls are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_are_judged_like_their_select() {
    let gw = Gateway::start(&common::local_config("")).await;
    let dba = gw.token("alice", &["dba"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &content).unwrap();
    // Written by the client, read back through the gateway.
    let out = psql_env(
        &gw,
        &dba,
        "test",
        "admin",
        &["-c", &format!("\\lo_import {}", input.display())],
        &[],
    )
    .await;
    let stdout = ok_stdout(&out);
    let oid = stdout
        .trim()
        .strip_prefix("lo_import ")
        .expect(&stdout)
        .to_string();
    let _unlink = common::Cleanup::sql(format!(
        "select lo_unlink({oid}) from pg_largeobject_metadata where oid = {oid}"
    ));
    let out = psql_env(
        &gw,
        &dba,
        "test",
        "admin",
        &["-c", &format!("\\lo_export {oid} {}", output.display())],
        &[],
    )
    .await;
    assert_eq!(ok_stdout(&out), "lo_export");
    assert_eq!(std::fs::read(&output).unwrap(), content);
    // A read-only principal may not write a large object.
    let agent = gw.token("agent-7", &["ai-agents"]);
    let out = psql_env(
        &gw,
        &agent,
        "test",
        "readonly",
        &["-c", &format!("\\lo_import {}", input.display())],
        &[],
    )
    .await;
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{}", common::stdout(&out));
    assert!(err.contains("read-only"), "{err}");
    let out = psql_env(
        &gw,
        &dba,
        "test",
        "admin",
        &["-c", &format!("\\lo_unlink {oid}")],
        &[],
    )
    .await;
    assert_eq!(ok_stdout(&out), format!("lo_unlink {oid}"));
    assert_eq!(
        direct(&format!(
            "select count(*) from pg_largeobject_metadata where oid = {oid}"
        ))
        .await,
        "0"
    );
    // Each call is in the recording, as the SELECT it stands for.
    let events: Vec<airlock_audit::event::Event> =
        airlock_journal::Reader::open(&gw.data_dir().join("journal"))
            .unwrap()
            .map(|r| airlock_audit::event::Event::decode(&r.unwrap().payload).unwrap())
            .collect();
    let calls: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.body {
            airlock_audit::event::Body::Statement(s) if s.text.ends_with("-- FunctionCall") => {
                Some(s.text.clone())
            }
            _ => None,
        })
        .collect();
    assert!(
        calls
            .iter()
            .any(|t| t.starts_with("SELECT pg_catalog.lowrite(")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|t| t.starts_with("SELECT pg_catalog.loread(")),
        "{calls:?}"
    );
    gw.stop().await;
}

/// An estimate the upstream cannot give (EXPLAIN fails, or hits the
/// session's statement_timeout) counts as over every threshold: the
/// statement is held for approval, never allowed on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_timed_out_estimate_holds_the_statement() {
    let table = common::unique("est_fail");
    direct(&format!(
        "create table {table} (id int, v int); insert into {table} select g, 0 from generate_series(1, 10) g; \
         create function {table}_boom() returns int immutable language plpgsql as $$begin raise exception 'no plan'; end$$; \
         create function {table}_slow() returns int immutable language plpgsql as $$begin perform pg_sleep(5); return 0; end$$"
    ))
    .await;
    let _drop = common::Cleanup::sql(format!(
        "drop table if exists {table}; drop function if exists {table}_boom(); drop function if exists {table}_slow()"
    ));
    let yaml = common::local_config(
        "guardrails:\n  - name: review-large-writes\n    match: {statements: [update, delete], estimated_rows_over: 1000}\n    action: approve\n    approvers: [dba]\napprovals: {timeout: 100ms, timeout_in_transaction: 100ms}\n",
    );
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("alice", &["dba"]);
    // Each statement is its own message (a multi-statement message gets no
    // estimate at all).
    for (setup, function) in [
        ("select 1", "boom"),
        ("set statement_timeout = '200ms'", "slow"),
    ] {
        let sql = format!("update {table} set v = 1 where id > {table}_{function}()");
        let out = psql_env(
            &gw,
            &token,
            "test",
            "admin",
            &["-c", setup, "-c", &sql],
            &[],
        )
        .await;
        let err = common::stderr(&out);
        assert!(!out.status.success(), "{sql}: {}", common::stdout(&out));
        assert!(
            err.contains("approval") && err.contains("review-large-writes"),
            "{sql}: held for approval, then refused: {err}"
        );
    }
    assert_eq!(
        direct(&format!("select count(*) from {table} where v <> 0")).await,
        "0"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 10. session_lifetime.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_cut_when_the_token_expires() {
    let yaml = common::local_config("").replace(
        "  dev_issuer: true\n",
        "  dev_issuer: true\n  session_lifetime: token\n",
    );
    let gw = Gateway::start(&yaml).await;
    // The gateway's wall clock moves when the test says: nothing sleeps.
    let clock = gw.manual_clock();
    let token = gw.token_with("alice", &["dba"], Duration::from_secs(3));
    let (client, conn) = connect(&gw, "test", "admin", &token).await;
    assert_eq!(scalar(&client, "select 1").await, "1");
    clock.advance(Duration::from_secs(5));

    // The FATAL reaches the client while it is idle; the connection
    // surfaces it and ends.
    let conn_end = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection task ended")
        .unwrap();
    let e = conn_end.expect_err("the connection ended with the FATAL");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a FATAL, got {e:?}"));
    assert_eq!(
        db.code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        "{db:?}"
    );
    assert_eq!(db.severity(), "FATAL");
    assert!(db.message().contains("token expired"), "{db:?}");
    let e = client.simple_query("select 1").await.unwrap_err();
    assert!(e.is_closed() || e.as_db_error().is_some(), "{e:?}");
    assert!(client.is_closed(), "the connection is closed");

    // The same, seen on the wire: the FATAL comes at expiry, then the close.
    let token = gw.token_with("alice", &["dba"], Duration::from_secs(10));
    let (mut s, _, _) = raw_session(&gw, "test", "admin", &token).await;
    clock.advance(Duration::from_secs(6));
    let (msgs, closed) = common::read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the gateway closed the session: {msgs:?}");
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("28000"),
        "{msgs:?}"
    );
    assert!(
        common::error_message(&msgs)
            .unwrap()
            .contains("token expired")
    );
    gw.stop().await;
}

/// Cutting a session must also stop what it is running upstream: a
/// statement still executing when the token expires is canceled, so
/// nothing it would do later (here, an INSERT) commits under an expired
/// identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_session_stops_its_running_statement() {
    let gw = Gateway::start(&common::local_config("")).await;
    let table = common::unique("cut_write");
    direct(&format!("create table {table} (id int)")).await;
    let _drop = common::Cleanup::sql(format!("drop table if exists {table}"));
    let token = gw.token_with("alice", &["dba"], Duration::from_secs(2));
    let (client, _conn) = connect(&gw, "test", "admin", &token).await;
    let started = Instant::now();
    let e = client
        .simple_query(&format!(
            "select pg_sleep(8); insert into {table} values (1)"
        ))
        .await
        .expect_err("the session is cut while the statement runs");
    let cut = started.elapsed();
    assert_sqlstate(&e, &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert!(
        cut < Duration::from_secs(5),
        "cut at the token's expiry, not after the statement ({cut:?})"
    );

    let running = format!(
        "select count(*) from pg_stat_activity where query like '%insert into {table}%' and pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while direct(&running).await != "0" {
        if Instant::now() > deadline {
            // Let the statement finish, to report what it did.
            tokio::time::sleep(
                (started + Duration::from_secs(9)).saturating_duration_since(Instant::now()),
            )
            .await;
            let rows = direct(&format!("select count(*) from {table}")).await;
            panic!(
                "the upstream statement kept running more than 3 s after the session was cut at {cut:?}; \
                 after it finished, {table} holds {rows} row(s) (want 0)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(direct(&format!("select count(*) from {table}")).await, "0");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_sessions_outlive_the_token() {
    let yaml = common::local_config("").replace(
        "  dev_issuer: true\n",
        "  dev_issuer: true\n  session_lifetime: unlimited\n",
    );
    let gw = Gateway::start(&yaml).await;
    let clock = gw.manual_clock();
    let token = gw.token_with("alice", &["dba"], Duration::from_secs(3));
    let (client, conn) = connect(&gw, "test", "admin", &token).await;
    assert_eq!(scalar(&client, "select 1").await, "1");
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        scalar(&client, "select 2").await,
        "2",
        "the session outlives its token"
    );
    assert!(!conn.is_finished());
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 11. Read-only mode upstream.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_is_enforced_by_the_parser_and_upstream() {
    let gw = Gateway::start(&common::local_config("")).await;
    let agent = gw.token("agent-7", &["ai-agents"]);
    let (client, _conn) = connect(&gw, "test", "readonly", &agent).await;
    // Upstream: the session runs read-only whatever gets past the parser.
    assert_eq!(
        scalar(&client, "show default_transaction_read_only").await,
        "on"
    );
    // The parser refuses writes before they reach the upstream.
    let table = common::unique("ro_probe");
    let e = client
        .batch_execute(&format!("create table {table} (id int)"))
        .await
        .unwrap_err();
    assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);
    let e = client
        .execute("create temp table tmp_ro (id int)", &[])
        .await
        .unwrap_err();
    assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);

    // Harmless settings may be changed through the extended protocol too
    // (drivers do at connect); the ones enforcement depends on may not,
    // however they are spelled.
    client
        .execute("SET extra_float_digits = 3", &[])
        .await
        .unwrap();
    client
        .execute("SET application_name = 'x'", &[])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT set_config('jit', 'off', false)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "off");
    for sql in [
        "SET default_transaction_read_only = off",
        "SET transaction_read_only = off",
        "SET session_replication_role = replica",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SET search_path = public, pg_catalog",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT set_config('search_path', 'public, pg_catalog', false)",
        "SELECT set_config($1, 'off', false)",
        "ALTER ROLE current_user SET default_transaction_read_only = off",
        "RESET ALL",
    ] {
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if sql.contains("$1") {
            &[&"default_transaction_read_only"]
        } else {
            &[]
        };
        let e = client.execute(sql, params).await.unwrap_err();
        assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);
    }
    // Inside a transaction block, as SET LOCAL, and behind a harmless SET in
    // one message.
    client.batch_execute("BEGIN").await.unwrap();
    let e = client
        .execute("SET LOCAL default_transaction_read_only = off", &[])
        .await
        .unwrap_err();
    assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);
    client.batch_execute("ROLLBACK").await.unwrap();
    let e = client
        .batch_execute("SET jit = off; SET LOCAL transaction_read_only = off")
        .await
        .unwrap_err();
    assert_sqlstate(&e, &SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(
        scalar(&client, "show default_transaction_read_only").await,
        "on"
    );
    assert_eq!(scalar(&client, "show jit").await, "off");

    let dba = gw.token("alice", &["dba"]);
    let (client, _conn) = connect(&gw, "test", "admin", &dba).await;
    assert_eq!(
        scalar(&client, "show default_transaction_read_only").await,
        "off"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 12. Startup parameters.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_filtered() {
    let gw = Gateway::start(&common::local_config("")).await;
    let agent = gw.token("agent-7", &["ai-agents"]);

    // A search_path at startup, as with SET: pg_catalog first or not named.
    for (path, ok) in [
        ("public", true),
        ("pg_catalog,public", true),
        ("evil,pg_catalog", false),
    ] {
        let out = psql_env(
            &gw,
            &agent,
            "test",
            "readonly",
            &["-c", "show search_path"],
            &[("PGOPTIONS", &format!("-c search_path={path}"))],
        )
        .await;
        assert_eq!(out.status.success(), ok, "{path}: {}", common::stderr(&out));
        if !ok {
            assert!(common::stderr(&out).contains("pg_catalog must come first"));
        }
    }

    let out = psql_env(
        &gw,
        &agent,
        "test",
        "readonly",
        &["-c", "show default_transaction_read_only"],
        &[("PGOPTIONS", "-c default_transaction_read_only=off")],
    )
    .await;
    assert!(
        !out.status.success(),
        "PGOPTIONS must not undo read-only: {}",
        common::stdout(&out)
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("default_transaction_read_only")
            && err.contains("not allowed through airlock"),
        "{err}"
    );
    // On the wire: 42501, before any password is asked for.
    let (msgs, closed) = common::exchange(
        gw.pg,
        &common::startup_message(&[
            ("user", "readonly"),
            ("database", "test"),
            ("options", "-c default_transaction_read_only=off"),
        ]),
        Duration::from_secs(10),
    )
    .await;
    assert!(closed);
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("42501"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().all(|m| m.tag != b'R'),
        "no password request: {msgs:?}"
    );

    let out = psql_env(
        &gw,
        &agent,
        "test",
        "readonly",
        &["-c", "select current_setting('application_name')"],
        &[("PGAPPNAME", "myapp")],
    )
    .await;
    assert_eq!(ok_stdout(&out), "myapp");

    // An allowed setting passed in options reaches the upstream too.
    let out = psql_env(
        &gw,
        &agent,
        "test",
        "readonly",
        &["-c", "show statement_timeout"],
        &[("PGOPTIONS", "-c statement_timeout=4321")],
    )
    .await;
    assert_eq!(ok_stdout(&out), "4321ms");
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 13. The HTTP listener.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metrics_health_and_jwks() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("alice", &["dba"]);
    let out = psql(&gw, &token, "test", "admin", "select 1").await;
    assert_eq!(ok_stdout(&out), "1");
    let agent = gw.token("devin", &["ai-agents"]);
    let out = psql(&gw, &agent, "test", "readonly", "delete from nothing").await;
    assert!(!out.status.success());
    let msgs = raw_login(&gw, "test", "admin", "not-a-jwt").await;
    assert_eq!(
        common::error_code(&msgs).as_deref(),
        Some("28000"),
        "{msgs:?}"
    );

    let base = format!("http://{}", gw.http);
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // The shipper reports its first round in the background.
    let mut metrics = String::new();
    for _ in 0..200 {
        let (status, text) = get("/metrics").await;
        assert_eq!(status, 200);
        metrics = text;
        if metrics.contains("airlock_ship_last_success_timestamp_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for want in [
        "airlock_sessions_total{door=\"postgres\"}",
        "airlock_sessions_active{door=\"postgres\"}",
        "airlock_statements_total{door=\"postgres\",decision=\"allow\",rule=\"none\"}",
        "airlock_statements_total{door=\"postgres\",decision=\"deny\",rule=\"read-only\"}",
        "airlock_ship_last_success_timestamp_seconds",
        "airlock_journal_bytes",
        "airlock_bytes_total{direction=\"client_to_upstream\"}",
        "airlock_bytes_total{direction=\"upstream_to_client\"}",
        "airlock_auth_failures_total{reason=\"malformed\"}",
        "airlock_upstream_login_seconds_bucket",
    ] {
        assert!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
    }
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value for {prefix}:\n{metrics}"))
    };
    assert!(value("airlock_sessions_total{door=\"postgres\"}") >= 1.0);
    assert!(value("airlock_journal_bytes ") > 0.0);
    assert!(value("airlock_auth_failures_total{reason=\"malformed\"}") >= 1.0);
    assert!(value("airlock_bytes_total{direction=\"client_to_upstream\"}") > 0.0);

    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, body) = get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys = jwks["keys"].as_array().expect("a key set");
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert!(keys[0]["x"].as_str().is_some_and(|x| !x.is_empty()));
    assert!(keys[0].get("d").is_none(), "never the private key");
    gw.stop().await;
}
