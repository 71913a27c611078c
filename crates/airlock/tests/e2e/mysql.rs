//! The MySQL door end to end: the in-process gateway in front of the
//! machine's MariaDB (a database of its own per test), with real clients:
//! the `mysql` CLI (MariaDB's), PyMySQL and mysql-connector-python, and the
//! raw wire where a client cannot produce the bytes (a 16 MiB packet, a
//! client that leaves while held).

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use airlock_mywire::codec::{self, Framer};
use airlock_testkit::{LOCAL_MARIADB_PORT, MyDb};
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Gateway, self_signed, stderr, stdout};

const SSN: &str = "123-45-6789";
const EMAIL: &str = "ada@example.com";

/// A gateway whose connection `shop` is `db` on the machine's MariaDB,
/// with the SPEC §3 guardrails and masking of `*.ssn` and `*.email`.
/// `access` is appended to the access rules, `extra` to the file.
async fn gateway(db: &MyDb, access: &str, extra: &str) -> Gateway {
    let yaml = format!(
        r#"listen:
  postgres: 127.0.0.1:0
  mysql: 127.0.0.1:0
  http: 127.0.0.1:0
identity:
  dev_issuer: true
connections:
  shop:
    protocol: mysql
    upstream: {{host: 127.0.0.1, port: {LOCAL_MARIADB_PORT}, database: {db}, tls: disable}}
    roles:
      readonly: {{user: root}}
      admin: {{user: root}}
access:
  - name: agents
    groups: [ai-agents]
    connections: [shop]
    roles: [readonly]
    mode: read-only
  - name: dba
    groups: [dba]
    connections: ["*"]
    roles: [readonly, admin]
{access}masking:
  rules:
    - name: ssn
      columns: ["*.ssn"]
      strategy: {{partial: {{keep_last: 4}}}}
    - name: email
      columns: ["*.email"]
      strategy: email
guardrails:
  - name: no-drop-database
    match: {{effects: [drop_database, alter_system, copy_program, copy_file, unsafe_function]}}
    action: deny
    message: "not allowed through airlock"
  - name: review-unbounded-writes
    match: {{statements: [update, delete], where: absent}}
    action: approve
    approvers: [dba]
  - name: unknown
    match: {{statements: [unknown]}}
    action: deny
{extra}"#,
        db = db.name
    );
    Gateway::start(&yaml).await
}

fn seeded() -> MyDb {
    let db = MyDb::create("airlock_my");
    db.sql(&format!(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40), ssn VARCHAR(20), email VARCHAR(60));
         INSERT INTO customers VALUES (1, 'Ada', '{SSN}', '{EMAIL}'), (2, 'Bob', '987-65-4321', 'bob@example.org');"
    ));
    db
}

pub(crate) fn mysql_addr(gw: &Gateway) -> SocketAddr {
    gw.mysql.expect("the gateway listens for MySQL")
}

/// The MariaDB `mysql` CLI through the gateway, batch mode, the token as
/// the password (it offers `mysql_clear_password` when asked).
fn mysql_cli(gw: &Gateway, token: &str, user: &str, database: &str, sql: &str) -> Output {
    let addr = mysql_addr(gw);
    Command::new("mysql")
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string()])
        .args(["-u", user, "-N", "-B", "--connect-timeout=10", database])
        .args(["-e", sql])
        .env("MYSQL_PWD", token)
        .output()
        .expect("the mysql client runs")
}

/// Runs a Python driver script with the gateway's address and a token in
/// its environment; prints JSON.
fn python(gw: &Gateway, token: &str, script: &str) -> Value {
    let addr = mysql_addr(gw);
    let out = Command::new("python3")
        .args(["-c", script])
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("TOKEN", token)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mysql_cli_logs_in_with_a_token_reads_masked_rows_and_is_refused_writes() {
    let db = seeded();
    let gw = gateway(&db, "", "api: {auditor_groups: [security]}\n").await;
    let agent = gw.token("devin", &["ai-agents"]);

    let out = mysql_cli(
        &gw,
        &agent,
        "readonly",
        "shop",
        "select id, name, ssn, email from customers order by id",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = stdout(&out);
    assert!(!rows.contains(SSN) && !rows.contains(EMAIL), "{rows}");
    assert!(rows.contains("Ada") && rows.contains("6789"), "{rows}");
    assert!(rows.contains("a***@example.com"), "{rows}");

    // Computed columns follow lineage; a view of them does too.
    for sql in [
        "select concat(ssn) from customers",
        "select hex(ssn) from customers",
        "select group_concat(ssn) from customers",
        "select json_object('k', email) from customers",
        "select x.s from (select ssn as s from customers) x",
        "select ssn from customers union select 'a'",
    ] {
        let out = mysql_cli(&gw, &agent, "readonly", "shop", sql);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains(SSN) && !text.contains(EMAIL) && !text.contains("3132332D"),
            "{sql}: {text}"
        );
    }

    // Writes: refused by the read-only rule, with the MySQL error number.
    for sql in [
        "delete from customers where id = 1",
        "drop table customers",
        "insert into customers values (3, 'Eve', '1', 'e@x')",
    ] {
        let out = mysql_cli(&gw, &agent, "readonly", "shop", sql);
        assert!(!out.status.success(), "{sql}");
        assert!(
            stderr(&out).contains("ERROR 1227"),
            "{sql}: {}",
            stderr(&out)
        );
    }
    assert_eq!(db.sql("select count(*) from customers"), "2");

    // Another database than the route's.
    let out = mysql_cli(&gw, &agent, "readonly", "shop", "use mysql");
    assert!(stderr(&out).contains("ERROR 1044"), "{}", stderr(&out));

    // Recorded, and replayed like the mysql CLI, masked.
    let auditor = gw.token("audrey", &["security"]);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(args)
            .args(["--server", &format!("http://{}", gw.http)])
            .env("AIRLOCK_TOKEN", &auditor)
            .output()
            .unwrap()
    };
    let mut transcript = String::new();
    for _ in 0..150 {
        let listed = cli(&["sessions", "list", "--principal", "devin", "--json"]);
        let list: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        let sessions = list["sessions"].as_array().cloned().unwrap_or_default();
        // The first session: the masked select.
        if let Some(first) = sessions.last().and_then(|s| s["id"].as_str()) {
            transcript = stdout(&cli(&["sessions", "replay", first]));
            if transcript.contains("rows in set") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        transcript.contains("mysql [shop]> select id, name, ssn, email from customers"),
        "{transcript}"
    );
    assert!(
        transcript.contains("2 rows in set") && transcript.contains("| Ada "),
        "{transcript}"
    );
    assert!(
        !transcript.contains(SSN) && !transcript.contains(EMAIL),
        "{transcript}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_wrong_doors_and_unknown_connections_are_refused_at_login() {
    let db = seeded();
    let gw = gateway(&db, "", "").await;
    let out = mysql_cli(&gw, "not-a-token", "readonly", "shop", "select 1");
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    let agent = gw.token("devin", &["ai-agents"]);
    let out = mysql_cli(&gw, &agent, "readonly", "nosuch", "select 1");
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    // The PostgreSQL door refuses a MySQL connection.
    let pg = gw.psql(&agent, "shop", "readonly", "select 1");
    assert!(!pg.status.success());
    assert!(stderr(&pg).contains("MySQL connection"), "{}", stderr(&pg));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pymysql_reads_masked_rows_runs_multi_statements_and_gets_refusals() {
    let db = seeded();
    let gw = gateway(&db, "", "").await;
    let agent = gw.token("devin", &["ai-agents"]);
    let got = python(
        &gw,
        &agent,
        r#"
import json, os, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="readonly",
                    password=os.environ["TOKEN"], database="shop", client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
cur.execute("select name, ssn, email from customers where id = %s", (1,))
row = cur.fetchone()
try:
    cur.execute("update customers set name = 'x' where id = %s", (1,))
    err = None
except pymysql.err.MySQLError as e:
    err = e.args[0]
cur.execute("select 1; select ssn from customers where id = 2")
more = [cur.fetchall()]
while cur.nextset():
    more.append(cur.fetchall())
print(json.dumps({"row": list(row), "err": err, "more": [[list(r) for r in s] for s in more]}))
"#,
    );
    assert_eq!(got["row"][0], "Ada");
    assert_ne!(got["row"][1], SSN);
    assert_ne!(got["row"][2], EMAIL);
    assert_eq!(got["err"], 1227);
    assert_eq!(got["more"][0], json!([[1]]));
    assert!(!got["more"].to_string().contains("987-65-4321"), "{got}");

    assert_eq!(db.sql("select count(*) from customers"), "2");

    // The session's lexing is followed: with ANSI_QUOTES a double-quoted
    // name is a column, masked; a character set airlock cannot lex ends
    // the session; USE of another database is refused. (A read-only
    // principal may change none of these.)
    let dba = gw.token("dana", &["dba"]);
    let got = python(
        &gw,
        &dba,
        r#"
import json, os, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="admin",
                    password=os.environ["TOKEN"], database="shop")
cur = c.cursor()
cur.execute("set sql_mode = 'ANSI_QUOTES'")
cur.execute('select "ssn" from customers where id = 1')
quoted = cur.fetchone()[0]
try:
    cur.execute("use mysql")
    use = None
except pymysql.err.MySQLError as e:
    use = e.args[0]
try:
    cur.execute("set names big5")
    cur.execute("select 1")
    charset = None
except pymysql.err.MySQLError as e:
    charset = e.args[0]
print(json.dumps({"quoted": quoted, "use": use, "charset": charset}))
"#,
    );
    assert_ne!(got["quoted"], SSN, "{got}");
    assert!(got["quoted"].as_str().unwrap().ends_with("6789"), "{got}");
    assert_eq!(got["use"], 1044);
    assert!(got["charset"].is_number(), "{got}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_insist_on_tls_for_cleartext_use_the_gateways_tls() {
    let db = seeded();
    let (_dir, cert, key) = self_signed();
    let tls = format!(
        "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: required}}\n",
        cert.display(),
        key.display()
    );
    let gw = gateway(&db, "", &tls).await;
    let agent = gw.token("devin", &["ai-agents"]);
    // mysql-connector-python sends a cleartext password only over TLS.
    let got = python(
        &gw,
        &agent,
        r#"
import json, os, mysql.connector
c = mysql.connector.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="readonly",
                            password=os.environ["TOKEN"], database="shop", ssl_verify_cert=False,
                            auth_plugin="mysql_clear_password")
cur = c.cursor()
cur.execute("select name, ssn from customers order by id")
rows = cur.fetchall()
try:
    cur.execute("drop table customers")
    err = None
except mysql.connector.Error as e:
    err = e.errno
print(json.dumps({"rows": [list(r) for r in rows], "err": err}))
"#,
    );
    assert_eq!(got["rows"][0][0], "Ada");
    assert!(!got.to_string().contains(SSN), "{got}");
    assert_eq!(got["err"], 1227);
    // The mysql CLI over TLS (MariaDB's client asks for it by default);
    // without it the listener refuses the token.
    let addr = mysql_addr(&gw);
    let out = Command::new("mysql")
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string()])
        .args([
            "--skip-ssl",
            "-u",
            "readonly",
            "-N",
            "-B",
            "shop",
            "-e",
            "select 1",
        ])
        .env("MYSQL_PWD", &agent)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("ERROR 1045") && stderr(&out).contains("requires TLS"),
        "{}",
        stderr(&out)
    );
    let out = Command::new("mysql")
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string()])
        .args([
            "--ssl",
            "--skip-ssl-verify-server-cert",
            "-u",
            "readonly",
            "-N",
            "-B",
            "shop",
        ])
        .args(["-e", "select name, ssn from customers where id = 1"])
        .env("MYSQL_PWD", &agent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Ada") && !stdout(&out).contains(SSN),
        "{}",
        stdout(&out)
    );
    gw.stop().await;
}

/// Reads one packet from a raw client socket.
pub(crate) async fn read_packet(s: &mut TcpStream, input: &mut BytesMut) -> codec::Packet {
    let framer = Framer::new(64 << 20);
    loop {
        if let Some(p) = framer.next(input).unwrap() {
            return p;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read_buf(input))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the gateway closed the connection");
    }
}

/// Logs in over the raw wire to connection `shop` with the token in a
/// cleartext response.
async fn raw_login(gw: &Gateway, user: &str, token: &str) -> (TcpStream, BytesMut) {
    raw_login_to(gw, "shop", user, token).await
}

/// Logs in over the raw wire (multi-statements on) with the token in a
/// cleartext response; panics unless the login succeeds.
pub(crate) async fn raw_login_to(
    gw: &Gateway,
    database: &str,
    user: &str,
    token: &str,
) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(mysql_addr(gw)).await.unwrap();
    let mut input = BytesMut::new();
    let greeting = read_packet(&mut s, &mut input).await;
    assert_eq!(greeting.payload[0], 10);
    let caps: u32 =
        0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0020_0000 | 0x0002_0000 | 0x0000_0008;
    let mut p = BytesMut::new();
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(64u32 << 20).to_le_bytes());
    p.extend_from_slice(&[45]);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.extend_from_slice(&[0]);
    let mut auth = token.as_bytes().to_vec();
    auth.push(0);
    codec::put_lenenc_bytes(&mut p, &auth);
    p.extend_from_slice(database.as_bytes());
    p.extend_from_slice(b"\0mysql_clear_password\0");
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 1, &p);
    s.write_all(&out).await.unwrap();
    let ok = read_packet(&mut s, &mut input).await;
    assert_eq!(
        ok.payload[0],
        0,
        "login OK: {:?}",
        String::from_utf8_lossy(&ok.payload)
    );
    (s, input)
}

pub(crate) async fn raw_query(s: &mut TcpStream, sql: &[u8]) {
    let mut payload = vec![codec::command::QUERY];
    payload.extend_from_slice(sql);
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 0, &payload);
    s.write_all(&out).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn packets_of_16_mib_and_more_pass_whole_and_unknown_commands_are_refused() {
    // A server of its own that takes packets of 64 MiB, with a database.
    let server = airlock_testkit::MariaDb::start_with(&["--max-allowed-packet=64M"]);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.customers (id INT PRIMARY KEY, name TEXT, ssn TEXT, email TEXT)");
    let db = seeded();
    let yaml = format!(
        "listen: {{postgres: 127.0.0.1:0, mysql: 127.0.0.1:0, http: 127.0.0.1:0}}
identity: {{dev_issuer: true}}
connections:
  shop:
    protocol: mysql
    upstream: {{host: 127.0.0.1, port: {}, database: shop, tls: disable}}
    roles: {{admin: {{user: root}}}}
access:
  - {{name: dba, groups: [dba], connections: [shop], roles: [admin]}}
",
        server.port
    );
    let big = Gateway::start(&yaml).await;
    let token = big.token("dba", &["dba"]);
    let (mut s, mut input) = raw_login(&big, "admin", &token).await;
    // A 17 MiB query, split into two frames on the way in; a 17 MiB value
    // back, split on the way out.
    let filler = "x".repeat(17 << 20);
    raw_query(
        &mut s,
        format!("select length('{filler}'), '{filler}'").as_bytes(),
    )
    .await;
    let mut response = airlock_mywire::response::Response::new(false);
    response.expect(airlock_mywire::response::Expect::Results { binary: false });
    let mut packets = Vec::new();
    while !response.done() {
        let p = read_packet(&mut s, &mut input).await;
        assert_ne!(
            p.payload[0],
            0xFF,
            "{:?}",
            String::from_utf8_lossy(&p.payload)
        );
        response.next(&p.payload).unwrap();
        packets.push(p.payload);
    }
    let row = packets
        .iter()
        .find(|p| p.len() > 17 << 20)
        .expect("the big row");
    let mut b = &row[..];
    assert_eq!(codec::text_value(&mut b).unwrap(), Some(&b"17825792"[..]));
    assert_eq!(
        codec::text_value(&mut b).unwrap().map(<[u8]>::len),
        Some(17 << 20)
    );
    big.stop().await;

    let gw = gateway(&db, "", "").await;
    let token = gw.token("dba", &["dba"]);
    // COM_CHANGE_USER and a replication command get clean errors, and the
    // session goes on.
    let (mut s, mut input) = raw_login(&gw, "admin", &token).await;
    for cmd in [0x11u8, 0x12, 0x04] {
        let mut out = BytesMut::new();
        codec::write(&mut out, &mut 0, &[cmd, 0]);
        s.write_all(&out).await.unwrap();
        let e = read_packet(&mut s, &mut input).await;
        assert_eq!(
            codec::err_info(&e.payload).map(|e| e.code),
            Some(1047),
            "command {cmd:#x}"
        );
    }
    // A statement that is not UTF-8 cannot be classified: MySQL's own
    // "invalid character string" error, and the session goes on.
    raw_query(&mut s, b"select '\xff\xfe'").await;
    let e = read_packet(&mut s, &mut input).await;
    assert_eq!(codec::err_info(&e.payload).map(|e| e.code), Some(1300));
    raw_query(&mut s, b"select 41 + 1").await;
    let mut got = Vec::new();
    loop {
        let p = read_packet(&mut s, &mut input).await;
        if codec::is_eof(&p.payload) && !got.is_empty() && got.len() >= 3 {
            break;
        }
        got.push(p.payload);
    }
    assert!(got.iter().any(|p| &p[..] == b"\x0242"), "{got:?}");
    gw.stop().await;
}

fn spawn_cli(gw: &Gateway, token: &str, sql: &str) -> Child {
    let addr = mysql_addr(gw);
    Command::new("mysql")
        .arg("--no-defaults")
        .args(["-h", &addr.ip().to_string(), "-P", &addr.port().to_string()])
        .args(["-u", "admin", "-N", "-B", "shop", "-e", sql])
        .env("MYSQL_PWD", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn pending(gw: &Gateway, token: &str) -> Value {
    for _ in 0..200 {
        let body: Value = reqwest::Client::new()
            .get(format!("http://{}/api/v1/approvals", gw.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(first) = body["approvals"].as_array().and_then(|l| l.first()) {
            return first.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval became pending");
}

async fn decide(gw: &Gateway, token: &str, id: &str, verb: &str, reason: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/approvals/{id}/{verb}", gw.http))
        .bearer_auth(token)
        .json(&json!({"reason": reason}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_delete_waits_inline_and_runs_only_once_approved() {
    let db = seeded();
    let gw = gateway(
        &db,
        "  - name: writers\n    groups: [writers]\n    connections: [shop]\n    roles: [admin]\n",
        "approvals: {timeout: 60s}\n",
    )
    .await;
    let writer = gw.token("wes", &["writers"]);
    let dba = gw.token("dana", &["dba"]);

    // Denied: the client gets 1227 with the approval id; nothing ran.
    let child = spawn_cli(&gw, &writer, "delete from customers");
    let held = pending(&gw, &dba).await;
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["rule"], "review-unbounded-writes");
    decide(&gw, &dba, &id, "deny", "not today").await;
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).contains("ERROR 1227"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&id) && stderr(&out).contains("not today"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.sql("select count(*) from customers"), "2");

    // Approved: it runs.
    let child = spawn_cli(&gw, &writer, "delete from customers");
    let held = pending(&gw, &dba).await;
    decide(&gw, &dba, held["id"].as_str().unwrap(), "approve", "ok").await;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.sql("select count(*) from customers"), "0");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_while_held_cancels_its_approval() {
    let db = seeded();
    let gw = gateway(&db, "", "approvals: {timeout: 60s}\n").await;
    let dba = gw.token("dana", &["dba"]);
    let (mut s, _input) = raw_login(&gw, "admin", &dba).await;
    raw_query(&mut s, b"delete from customers").await;
    let other = gw.token("olga", &["dba"]);
    let held = pending(&gw, &other).await;
    let id = held["id"].as_str().unwrap().to_string();
    drop(s);
    let mut status = String::new();
    for _ in 0..200 {
        let body: Value = reqwest::Client::new()
            .get(format!("http://{}/api/v1/approvals/{id}", gw.http))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = body["status"].as_str().unwrap_or_default().to_string();
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "cancelled");
    assert_eq!(db.sql("select count(*) from customers"), "2");
    gw.stop().await;
}

/// `limits.per_principal` and `limits.per_connection`: sessions over a cap
/// are refused naming it, with errno 1203 (the principal's) or 1040 (the
/// connection's).
#[tokio::test(flavor = "multi_thread")]
async fn sessions_over_a_cap_get_errno_1203_or_1040() {
    let db = seeded();
    let gw = gateway(
        &db,
        "",
        "limits: {per_principal: {max_sessions: 1}, per_connection: {max_sessions: 2}}\n",
    )
    .await;
    let dana = gw.token("dana", &["dba"]);
    let (_dana, _input) = raw_login(&gw, "admin", &dana).await;
    let out = mysql_cli(&gw, &dana, "admin", "shop", "select 1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR 1203"), "{err}");
    assert!(err.contains("limits.per_principal.max_sessions"), "{err}");
    // Another principal gets in: the connection's second session.
    let olga = gw.token("olga", &["dba"]);
    let (_olga, _input) = raw_login(&gw, "admin", &olga).await;
    let pia = gw.token("pia", &["dba"]);
    let out = mysql_cli(&gw, &pia, "admin", "shop", "select 1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR 1040"), "{err}");
    assert!(err.contains("limits.per_connection.max_sessions"), "{err}");
    gw.stop().await;
}

/// The statement rate budget through the mysql client: one `-e` text of
/// five statements against a budget of two a second gets errno 1226 naming
/// the limit, with the statements before it run.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_statements_over_the_rate_get_1226() {
    let db = seeded();
    let gw = gateway(
        &db,
        "",
        "limits: {per_principal: {statements_per_second: 2}}\n",
    )
    .await;
    let dana = gw.token("dana", &["dba"]);
    let out = mysql_cli(
        &gw,
        &dana,
        "admin",
        "shop",
        "select 'one'; select 'two'; select 'three'; select 'four'; select 'five'",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR 1226"), "{err}");
    assert!(
        err.contains("limits.per_principal.statements_per_second"),
        "{err}"
    );
    assert!(stdout(&out).contains("one"), "{}", stdout(&out));
    // The hint says when to try again.
    let hint = err.split(" HINT: ").nth(1).expect("a hint");
    let hint: Value = serde_json::from_str(hint.trim()).unwrap();
    assert_eq!(hint["rule"], "limits.per_principal.statements_per_second");
    assert_eq!(hint["retry"], true);
    gw.stop().await;
}

/// MySQL's ERR packet has no hint field: a refusal's message ends with
/// ` HINT: ` and the JSON hint, whole, in what clients keep (511 bytes).
#[tokio::test(flavor = "multi_thread")]
async fn mysql_refusals_end_with_their_hint() {
    let db = seeded();
    let gw = gateway(
        &db,
        "  - name: agents-write-jit\n    groups: [ai-agents]\n    connections: [shop]\n    roles: [admin]\n    jit: {max_duration: 1h, approvers: [dba], min_approvals: 1}\n",
        "  - name: no-truncate\n    match: {statements: [truncate]}\n    action: deny\n",
    )
    .await;
    let agent = gw.token("devin", &["ai-agents"]);
    let dana = gw.token("dana", &["dba"]);
    let script = r#"
import json, os, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user=os.environ["ROLE"],
                    password=os.environ["TOKEN"], database="shop")
try:
    c.cursor().execute(os.environ["SQL"])
    print(json.dumps(None))
except pymysql.err.MySQLError as e:
    print(json.dumps({"errno": e.args[0], "message": e.args[1]}))
"#;
    let refused = |token: &str, role: &str, sql: &str| {
        let script = script
            .replace("os.environ[\"ROLE\"]", &format!("{role:?}"))
            .replace("os.environ[\"SQL\"]", &format!("{sql:?}"));
        let got = python(&gw, token, &script);
        let message = got["message"]
            .as_str()
            .unwrap_or_else(|| panic!("not refused: {got}"));
        assert!(message.len() <= 511, "{message}");
        let (_, hint) = message.split_once(" HINT: ").expect("a hint");
        let hint: Value = serde_json::from_str(hint).unwrap();
        (got["errno"].clone(), hint)
    };
    // Read-only: the exact JIT request for the write role.
    let (errno, hint) = refused(
        &agent,
        "readonly",
        "update customers set name = 'x' where id = 1",
    );
    assert_eq!(errno, 1227);
    assert_eq!(hint["rule"], "read-only");
    assert_eq!(
        hint["command"],
        r#"airlock access request shop --role admin --for 30m --reason "<why>""#
    );
    // A guardrail by kind, its hint derived from the rule.
    let (_, hint) = refused(&dana, "admin", "truncate table customers");
    assert_eq!(hint["rule"], "no-truncate");
    assert!(
        hint["try"]
            .as_str()
            .unwrap()
            .contains("statements of kind truncate"),
        "{hint}"
    );
    // At login: the role needs a grant.
    let out = mysql_cli(&gw, &agent, "admin", "shop", "select 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#""command":"airlock access request shop --role admin"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.sql("select count(*) from customers"), "2");
    gw.stop().await;
}

/// An admin ends a MySQL session whose statement is held: the hold is
/// cancelled (nothing runs, even if someone approves after), and the client
/// gets errno 1927 naming the admin and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_ends_a_held_mysql_session_and_its_statement_never_runs() {
    let db = seeded();
    let gw = gateway(
        &db,
        "",
        "approvals: {timeout: 60s}\napi: {admin_groups: [admins]}\n",
    )
    .await;
    let dba = gw.token("dana", &["dba"]);
    let child = spawn_cli(&gw, &dba, "delete from customers");
    let other = gw.token("olga", &["dba", "admins"]);
    let held = pending(&gw, &other).await;
    let id = held["id"].as_str().unwrap().to_string();
    let session = held["session"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/sessions/{session}/terminate",
            gw.http
        ))
        .bearer_auth(&other)
        .json(&json!({"reason": "wrong database"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).contains("ERROR 1927"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("an administrator (olga) ended this session: wrong database"),
        "{}",
        stderr(&out)
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/approvals/{id}/approve", gw.http))
        .bearer_auth(&other)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the hold ended with the session");
    assert_eq!(db.sql("select count(*) from customers"), "2");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_prepared_statements_are_judged_masked_and_checked() {
    let db = seeded();
    let (_dir, cert, key) = self_signed();
    let tls = format!(
        "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: optional}}\n",
        cert.display(),
        key.display()
    );
    let gw = gateway(&db, "", &tls).await;
    let agent = gw.token("devin", &["ai-agents"]);
    // mysql-connector-python's prepared cursor: COM_STMT_PREPARE, EXECUTE
    // with binary parameters, binary rows.
    let got = python(
        &gw,
        &agent,
        r#"
import json, os, mysql.connector
c = mysql.connector.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="readonly",
                            password=os.environ["TOKEN"], database="shop", ssl_verify_cert=False,
                            auth_plugin="mysql_clear_password")
cur = c.cursor(prepared=True)
cur.execute("select id, name, ssn, email from customers where id = %s", (1,))
row = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in cur.fetchone()]
cur.execute("select id, ssn from customers where id = %s", (2,))
row2 = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in cur.fetchone()]
try:
    cur.execute("delete from customers where id = %s", (1,))
    err = None
except mysql.connector.Error as e:
    err = e.errno
print(json.dumps({"row": row, "row2": row2, "err": err}))
"#,
    );
    assert_eq!(got["row"][0], 1);
    assert_eq!(got["row"][1], "Ada");
    assert!(got["row"][2].as_str().unwrap().ends_with("6789"), "{got}");
    assert!(
        !got.to_string().contains(SSN) && !got.to_string().contains(EMAIL),
        "{got}"
    );
    assert!(!got.to_string().contains("987-65-4321"), "{got}");
    assert_eq!(got["err"], 1227);
    assert_eq!(db.sql("select count(*) from customers"), "2");

    // The raw wire: an unknown statement id, and a wrong parameter count.
    let dba = gw.token("dba", &["dba"]);
    let (mut s, mut input) = raw_login(&gw, "admin", &dba).await;
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 0, &[0x17, 99, 0, 0, 0, 0, 1, 0, 0, 0]);
    s.write_all(&out).await.unwrap();
    let e = read_packet(&mut s, &mut input).await;
    assert_eq!(codec::err_info(&e.payload).map(|e| e.code), Some(1243));
    let mut prepare = vec![0x16];
    prepare.extend_from_slice(b"select name from customers where id = ? and name = ?");
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 0, &prepare);
    s.write_all(&out).await.unwrap();
    let ok = read_packet(&mut s, &mut input).await;
    assert_eq!(ok.payload[0], 0, "{:?}", ok.payload);
    let id = u32::from_le_bytes(ok.payload[1..5].try_into().unwrap());
    // Two parameter definitions and an EOF, one column and an EOF.
    for _ in 0..5 {
        read_packet(&mut s, &mut input).await;
    }
    // One parameter where two are owed.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0x08, 0]);
    exec.extend_from_slice(&1u64.to_le_bytes());
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 0, &exec);
    s.write_all(&out).await.unwrap();
    let e = read_packet(&mut s, &mut input).await;
    assert_eq!(codec::err_info(&e.payload).map(|e| e.code), Some(1210));
    gw.stop().await;
}

/// Reads the whole answer to one command from a raw socket: every byte.
async fn raw_answer(s: &mut TcpStream, input: &mut BytesMut) -> Vec<u8> {
    let mut response = airlock_mywire::response::Response::new(false);
    response.expect(airlock_mywire::response::Expect::Results { binary: false });
    let mut bytes = Vec::new();
    while !response.done() {
        let p = read_packet(s, input).await;
        bytes.extend_from_slice(&p.payload);
        response.next(&p.payload).unwrap();
    }
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn no_seeded_value_reaches_a_masked_client_by_any_route() {
    let db = seeded();
    db.sql("CREATE VIEW v AS SELECT id, ssn FROM customers; CREATE TABLE uniq (ssn VARCHAR(20) PRIMARY KEY)");
    db.sql(&format!("INSERT INTO uniq VALUES ('{SSN}')"));
    let gw = gateway(&db, "", "").await;
    let dba = gw.token("dana", &["dba"]);
    let raw: [&[u8]; 4] = [
        SSN.as_bytes(),
        EMAIL.as_bytes(),
        b"987-65-4321",
        b"123456789",
    ];
    let leaks = |what: &str, bytes: &[u8]| -> Vec<String> {
        raw.iter()
            .filter(|r| bytes.windows(r.len()).any(|w| w == **r))
            .map(|r| format!("{what}: leaks {:?}", String::from_utf8_lossy(r)))
            .collect()
    };
    // Each is one COM_QUERY on the raw wire (the session is read-write,
    // masked): every byte the client gets is scanned.
    let queries = [
        "select * from customers",
        "select ssn, email from customers",
        "select concat(ssn, '') from customers",
        "select concat_ws(',', name, ssn) from customers",
        "select upper(email), lower(ssn) from customers",
        "select reverse(ssn) from customers",
        "select replace(ssn, '-', '') from customers",
        "select substring(ssn, 1, 11) from customers",
        "select hex(ssn), unhex(hex(ssn)) from customers",
        "select to_base64(ssn), from_base64(to_base64(ssn)) from customers",
        "select cast(ssn as char) from customers",
        "select convert(ssn using utf8mb4) from customers",
        "select group_concat(ssn separator ';') from customers",
        "select json_object('s', ssn, 'e', email) from customers",
        "select json_arrayagg(ssn) from customers",
        "select x.s from (select ssn as s from customers) as x",
        "with c as (select ssn from customers) select * from c",
        "select ssn from customers union all select email from customers",
        "select (select ssn from customers where id = 1)",
        "select * from v",
        "select id from customers where ssn = '123-45-6789'",
        "set @x = (select ssn from customers where id = 1); select @x",
        "select ssn into @y from customers where id = 1; select @y",
        "select if(id = 1, ssn, email) from customers",
        "select case when id = 1 then ssn else email end from customers",
        "select coalesce(null, ssn) from customers",
        "select t.* from customers t",
        "select * from customers natural join v",
        "insert into uniq values ('123-45-6789')",
        "select cast(ssn as unsigned) from customers; show warnings",
        "select cast(ssn as unsigned) from customers",
        "show warnings",
        "select ssn + 0 from customers",
        "show warnings",
        "select * from information_schema.processlist",
        "select substr(ssn, 1, 3), substr(ssn, 5, 2), substr(ssn, 8) from customers",
    ];
    let mut found = Vec::new();
    let (mut s, mut input) = raw_login(&gw, "admin", &dba).await;
    for sql in queries {
        raw_query(&mut s, sql.as_bytes()).await;
        let bytes = raw_answer(&mut s, &mut input).await;
        found.extend(leaks(sql, &bytes));
    }
    // The same through the mysql CLI, PyMySQL and a prepared statement.
    let all = queries.join(";\n");
    let out = mysql_cli(&gw, &dba, "admin", "shop", &format!("{all};"));
    found.extend(leaks("mysql CLI", &out.stdout));
    found.extend(leaks("mysql CLI stderr", &out.stderr));
    let got = python(
        &gw,
        &dba,
        r#"
import json, os, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="admin",
                    password=os.environ["TOKEN"], database="shop")
cur = c.cursor()
out = []
for q in ["select * from customers", "select concat(ssn) from customers", "select * from v",
          "select json_object('s', ssn) from customers"]:
    cur.execute(q)
    out.append([list(map(str, r)) for r in cur.fetchall()])
try:
    cur.execute("insert into uniq values ('123-45-6789')")
except pymysql.err.MySQLError as e:
    out.append(str(e))
print(json.dumps(out))
"#,
    );
    found.extend(leaks("PyMySQL", got.to_string().as_bytes()));
    assert!(found.is_empty(), "{found:#?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_query_reaches_only_the_principals_own_sessions() {
    let db = seeded();
    let gw = gateway(&db, "", "").await;
    let dba = gw.token("dana", &["dba"]);
    let other = gw.token("olga", &["dba"]);
    let got = python(
        &gw,
        &dba,
        &format!(
            r#"
import json, os, threading, time, pymysql
def connect(token):
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="admin",
                           password=token, database="shop")
a = connect(os.environ["TOKEN"])
victim = a.thread_id()
out = {{}}
def run():
    t = time.time()
    try:
        with a.cursor() as c:
            c.execute("select sleep(30)")
            out["result"] = c.fetchone()[0]
    except pymysql.err.MySQLError as e:
        out["result"] = e.args[0]
    out["took"] = time.time() - t
th = threading.Thread(target=run)
th.start()
time.sleep(1)
stranger = connect("{other}")
try:
    stranger.cursor().execute("kill query %d" % victim)
    out["stranger"] = None
except pymysql.err.MySQLError as e:
    out["stranger"] = e.args[0]
connect(os.environ["TOKEN"]).cursor().execute("kill query %d" % victim)
th.join()
# KILL CONNECTION of one's own idle session ends it.
idle = connect(os.environ["TOKEN"])
connect(os.environ["TOKEN"]).cursor().execute("kill connection %d" % idle.thread_id())
try:
    idle.cursor().execute("select 1")
    out["connection"] = None
except pymysql.err.MySQLError as e:
    out["connection"] = e.args[0]
print(json.dumps(out))
"#
        ),
    );
    assert_eq!(got["stranger"], 1094, "{got}");
    assert!(
        got["connection"].is_number(),
        "the killed session ran on: {got}"
    );
    // Interrupted: SLEEP returns 1 (or the statement fails), long before 30 s.
    assert!(got["took"].as_f64().unwrap() < 20.0, "{got}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_mysql2_with_cleartext_opted_in_reads_masked_text_and_binary_rows() {
    let db = seeded();
    let gw = gateway(&db, "", "").await;
    let agent = gw.token("devin", &["ai-agents"]);
    let addr = mysql_addr(&gw);
    let drivers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers");
    let out = Command::new("node")
        .arg("node_mysql2.js")
        .current_dir(&drivers)
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("TOKEN", &agent)
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let got: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(got["text"][0]["name"], "Ada");
    assert!(
        got["text"][0]["ssn"].as_str().unwrap().ends_with("6789"),
        "{got}"
    );
    assert_eq!(got["prepared"][0]["name"], "Bob");
    assert!(
        got["prepared"][0]["ssn"]
            .as_str()
            .unwrap()
            .ends_with("4321"),
        "{got}"
    );
    let all = got.to_string();
    assert!(
        !all.contains(SSN) && !all.contains(EMAIL) && !all.contains("987-65-4321"),
        "{got}"
    );
    assert_eq!(got["err"], 1227);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_goes_away_mid_result_ends_in_an_error_not_a_short_result() {
    let db = seeded();
    let gw = gateway(&db, "", "").await;
    let dba = gw.token("dana", &["dba"]);
    let (mut s, mut input) = raw_login(&gw, "admin", &dba).await;
    // A result far larger than any socket buffer: the upstream is still
    // sending when it is killed.
    raw_query(
        &mut s,
        b"select seq, repeat('x', 100) from seq_1_to_3000000",
    )
    .await;
    let mut response = airlock_mywire::response::Response::new(false);
    response.expect(airlock_mywire::response::Expect::Results { binary: false });
    // The first rows (MariaDB's sequence engine streams them).
    let mut rows = 0u64;
    while rows < 10 {
        let p = read_packet(&mut s, &mut input).await;
        if response.next(&p.payload).unwrap() == airlock_mywire::response::Part::Row {
            rows += 1;
        }
    }
    let victim = db.sql("select id from information_schema.processlist where info like '%seq_1_to_3000000%' and info not like '%processlist%'");
    assert!(
        !victim.is_empty(),
        "the query runs upstream: {}",
        db.sql("select id, command, state, info from information_schema.processlist")
    );
    db.sql(&format!("kill connection {victim}"));
    let mut last = airlock_mywire::response::Part::Row;
    while !response.done() {
        let p = read_packet(&mut s, &mut input).await;
        last = response.next(&p.payload).unwrap();
        if last == airlock_mywire::response::Part::Row {
            rows += 1;
        }
    }
    assert_eq!(
        last,
        airlock_mywire::response::Part::Err,
        "after {rows} rows"
    );
    assert!(rows < 3_000_000, "{rows}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_connector_j_over_tls_reads_masked_text_and_binary_rows() {
    let db = seeded();
    let (_dir, cert, key) = self_signed();
    let tls = format!(
        "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: required}}\n",
        cert.display(),
        key.display()
    );
    let gw = gateway(&db, "", &tls).await;
    let agent = gw.token("devin", &["ai-agents"]);
    let addr = mysql_addr(&gw);
    let drivers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers");
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/mariadb-java-client.jar"])
        .arg(drivers.join("ConnectorJ.java"))
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("TOKEN", &agent)
        .output()
        .expect("java runs");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    let first: Vec<String> = line("text").split('|').map(str::to_string).collect();
    assert_eq!(first[0], "Ada");
    assert!(first[1].ends_with("6789") && first[1] != SSN, "{text}");
    assert!(first[2] != EMAIL && first[2].contains("***@"), "{text}");
    let prepared: Vec<String> = line("prepared").split('|').map(str::to_string).collect();
    assert_eq!(prepared[0], "Bob");
    assert!(
        prepared[1].ends_with("4321") && prepared[1] != "987-65-4321",
        "{text}"
    );
    assert_eq!(line("write"), "1227");
    assert_eq!(db.sql("select count(*) from customers"), "2");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row_estimates_come_from_the_upstreams_explain() {
    let db = seeded();
    let gw = gateway(
        &db,
        "",
        "  - name: review-large-writes
    match: {statements: [update, delete], estimated_rows_over: 1}
    action: approve
    approvers: [dba]
approvals: {timeout: 60s}
",
    )
    .await;
    let writer = gw.token("wes", &["dba"]);
    let reviewer = gw.token("rita", &["dba"]);
    // One row by the estimate: under the threshold, it runs.
    let out = mysql_cli(
        &gw,
        &writer,
        "admin",
        "shop",
        "delete from customers where id = 2",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(db.sql("select count(*) from customers"), "1");
    // Every row: over it, held, and the approver sees the estimate.
    db.sql("insert into customers values (2, 'Bob', '987-65-4321', 'bob@example.org'), (3, 'Cy', '1', 'c@x')");
    let child = spawn_cli(&gw, &writer, "delete from customers where id > 0");
    let held = pending(&gw, &reviewer).await;
    assert_eq!(held["rule"], "review-large-writes", "{held}");
    assert!(
        held["detail"]["estimated_rows"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{held}"
    );
    decide(
        &gw,
        &reviewer,
        held["id"].as_str().unwrap(),
        "deny",
        "too many",
    )
    .await;
    let out = child.wait_with_output().unwrap();
    assert!(stderr(&out).contains("ERROR 1227"), "{}", stderr(&out));
    assert_eq!(db.sql("select count(*) from customers"), "3");
    gw.stop().await;
}

/// A slowloris after login: a packet begun and left unfinished ends the
/// session at `limits.message_timeout` with errno 1159; the client's
/// other work, and other sessions, are unaffected until then.
#[tokio::test(flavor = "multi_thread")]
async fn a_packet_left_unfinished_ends_the_session_at_the_message_timeout() {
    let db = seeded();
    let gw = gateway(&db, "", "limits: {message_timeout: 1s}\n").await;
    let dana = gw.token("dana", &["dba"]);
    let (mut s, mut input) = raw_login(&gw, "admin", &dana).await;
    // A header announcing 40 bytes, and 3 of them.
    s.write_all(&[40, 0, 0, 0, codec::command::QUERY, b's', b'e'])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = read_packet(&mut s, &mut input).await;
    assert_eq!(err.payload[0], 0xff, "an ERR packet");
    assert_eq!(u16::from_le_bytes([err.payload[1], err.payload[2]]), 1159);
    let text = String::from_utf8_lossy(&err.payload);
    assert!(text.contains("limits.message_timeout"), "{text}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).await.unwrap_or(0), 0, "closed");
    // Another session works.
    let out = mysql_cli(&gw, &dana, "admin", "shop", "select 'still here'");
    assert_eq!(stdout(&out), "still here", "{}", stderr(&out));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_only_on_mysql_reads_the_catalog_and_no_row() {
    let db = seeded();
    let gw = gateway(
        &db,
        "  - name: schema-readers\n    groups: [schema]\n    connections: [shop]\n    roles: [readonly]\n    mode: schema-only\n",
        "",
    )
    .await;
    let token = gw.token("devin", &["schema"]);
    let run = |sql: &str| mysql_cli(&gw, &token, "readonly", "shop", sql);
    let out = run(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'customers' ORDER BY ordinal_position",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "id\nname\nssn\nemail");
    let out = run("SELECT * FROM customers LIMIT 0");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let out = run("DESCRIBE customers");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ssn"), "{}", stdout(&out));
    let out = run("SHOW COLUMNS FROM customers");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ssn"), "{}", stdout(&out));
    let out = run("EXPLAIN SELECT table_name FROM information_schema.tables");
    assert!(out.status.success(), "{}", stderr(&out));
    for (sql, why) in [
        ("SELECT * FROM customers", "description of the schema"),
        ("SELECT min(ssn) FROM customers", "function"),
        ("SELECT count(*) FROM customers", "aggregates"),
        ("SHOW PROCESSLIST", "other sessions"),
        ("ANALYZE SELECT * FROM customers", "ANALYZE"),
        (
            "SELECT info FROM information_schema.processlist",
            "description of the schema",
        ),
        (
            "EXPLAIN SELECT * FROM customers WHERE id = 1 AND ssn LIKE '1%'",
            "EXPLAIN over tables",
        ),
        ("SHOW FULL PROCESSLIST", "other sessions"),
        ("SHOW CREATE USER root", "other sessions"),
    ] {
        let out = run(sql);
        assert!(!out.status.success(), "{sql}: {}", stdout(&out));
        let e = stderr(&out);
        assert!(e.contains("ERROR 1227 (42000)"), "{sql}: {e}");
        assert!(e.contains("rule \"schema-only\""), "{sql}: {e}");
        assert!(e.contains("\"rule\":\"schema-only\""), "{sql}: {e}");
        assert!(e.contains(why), "{sql}: {e}");
        assert!(!e.contains(SSN), "{sql}: {e}");
    }
}

/// Budgets on access rules through the MySQL door (PyMySQL, the mysql
/// CLI): a result's rows count as it ends (the crossing one arrives
/// whole), the next statement gets errno 1226 naming the budget; the
/// principal's rows count across sessions.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_budgets_count_rows_and_refuse_the_next_statement() {
    let db = seeded();
    let gw = gateway(
        &db,
        "  - name: budgeted\n    groups: [budgeted]\n    connections: [shop]\n    roles: [readonly]\n    mode: read-only\n    budgets: {session: {max_rows: 3}, principal: {max_rows: 5}}\n",
        "",
    )
    .await;
    let token = gw.token("devin", &["budgeted"]);
    let got = python(
        &gw,
        &token,
        r#"
import json, os, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="readonly",
                    password=os.environ["TOKEN"], database="shop")
cur = c.cursor()
counts, err = [], None
try:
    for _ in range(3):
        cur.execute("select id from customers")
        counts.append(len(cur.fetchall()))
except pymysql.err.MySQLError as e:
    err = [e.args[0], e.args[1]]
print(json.dumps({"counts": counts, "err": err}))
"#,
    );
    // 2 rows, then 2 more (4 >= 3: delivered whole), then refused.
    assert_eq!(got["counts"], serde_json::json!([2, 2]), "{got}");
    assert_eq!(got["err"][0], 1226, "{got}");
    let message = got["err"][1].as_str().unwrap();
    assert!(message.contains("budgets.session.max_rows"), "{message}");
    assert!(message.contains("\"retry\":false"), "{message}");
    // The principal has 4 of 5: the mysql CLI's next session reads 2 more,
    // and the one after is refused at its first statement.
    let out = mysql_cli(&gw, &token, "readonly", "shop", "select id from customers");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = mysql_cli(&gw, &token, "readonly", "shop", "select 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ERROR 1226"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("budgets.principal.max_rows"),
        "{}",
        stderr(&out)
    );
}

/// `on_exceed: session` and `max_result_bytes` through the MySQL door:
/// the refusal (errno 1226 naming the budget) ends the session, and a
/// result that reaches the cap is cut by an ERR after the rows sent and
/// the session ends (PyMySQL; its connect spends statements too); the
/// mysql CLI's five statements end its session.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_a_spent_budget_can_end_the_session_and_a_result_too_large_is_cut() {
    let db = seeded();
    let gw = gateway(
        &db,
        "  - name: ending\n    groups: [ending]\n    connections: [shop]\n    roles: [readonly]\n    mode: read-only\n    budgets: {session: {max_statements: 4}, on_exceed: session, max_result_bytes: 16KiB}\n",
        "",
    )
    .await;
    let token = gw.token("devin", &["ending"]);
    let got = python(
        &gw,
        &token,
        r#"
import json, os, pymysql
def connect():
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="readonly",
                           password=os.environ["TOKEN"], database="shop")
def err(e):
    return [e.args[0], str(e.args[1]) if len(e.args) > 1 else ""]
out = {}
c = connect()
cur = c.cursor()
# (The driver's own statements at connect count too.)
out["ran"] = 0
try:
    for _ in range(5):
        cur.execute("select 1")
        out["ran"] += 1
except pymysql.err.MySQLError as e:
    out["third"] = err(e)
try:
    c.ping(reconnect=False)
    out["after"] = "alive"
except Exception as e:
    out["after"] = type(e).__name__
big = "select seq, repeat('x', 100) from seq_1_to_1000"
c = connect()
try:
    c.cursor().execute(big)
except pymysql.err.MySQLError as e:
    out["big"] = err(e)
try:
    c.ping(reconnect=False)
    out["after_big"] = "alive"
except Exception as e:
    out["after_big"] = type(e).__name__
# A small result passes.
c = connect()
cur = c.cursor()
cur.execute("select seq from seq_1_to_100")
out["small"] = len(cur.fetchall())
print(json.dumps(out))
"#,
    );
    assert!(got["ran"].as_u64().unwrap() < 4, "{got}");
    assert_eq!(got["third"][0], 1226, "{got}");
    let third = got["third"][1].as_str().unwrap();
    assert!(
        third.contains("session ended") && third.contains("budgets.session.max_statements"),
        "{third}"
    );
    assert_ne!(got["after"], "alive", "{got}");
    assert_eq!(got["big"][0], 1226, "{got}");
    assert!(
        got["big"][1]
            .as_str()
            .unwrap()
            .contains("budgets.max_result_bytes"),
        "{got}"
    );
    assert_ne!(got["after_big"], "alive", "{got}");
    assert_eq!(got["small"], 100, "{got}");
    let out = mysql_cli(
        &gw,
        &token,
        "readonly",
        "shop",
        "select 1; select 2; select 3; select 4; select 5",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 1226") && stderr(&out).contains("session ended"),
        "{}",
        stderr(&out)
    );
}

/// Commit review on the MySQL door: a reviewed UPDATE runs inside the
/// client's transaction and its COMMIT waits for an approver, who sees the
/// rows it changed (the mysql CLI, approved: committed); PyMySQL's COMMIT
/// denied: rolled back, the session goes on; a reviewed write in
/// autocommit or after an error that ended the transaction, one in a text
/// with what would commit it, one on a MyISAM table, and what MySQL would
/// commit implicitly while the review is pending (DDL, START TRANSACTION,
/// a prepared statement), are refused.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_commit_waits_for_an_approver_who_sees_the_rows_changed() {
    let db = seeded();
    db.sql(
        "CREATE TABLE logs (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=MyISAM; INSERT INTO logs VALUES (1, 'a')",
    );
    let gw = gateway(
        &db,
        "  - name: writers\n    groups: [writers]\n    connections: [shop]\n    roles: [admin]\n",
        "  - name: review-updates
    match: {statements: [update], where: present}
    action: review_commit
    approvers: [dba]
approvals: {timeout: 60s}
",
    )
    .await;
    let writer = gw.token("wes", &["writers"]);
    let dba = gw.token("dana", &["dba"]);

    // Approved through the API after reading the measured effect.
    let child = spawn_cli(
        &gw,
        &writer,
        "start transaction; update customers set name = 'Zed' where id <= 2; commit",
    );
    let held = pending(&gw, &dba).await;
    assert_eq!(held["rule"], "review-updates", "{held}");
    let id = held["id"].as_str().unwrap().to_string();
    let detail = crate::common::api_get(&gw, &dba, &format!("approvals/{id}")).await;
    let effect = &detail["detail"]["effect"];
    assert_eq!(effect["tables"][0]["table"], "customers", "{detail}");
    assert_eq!(effect["tables"][0]["updated"], 2, "{detail}");
    assert_eq!(effect["sample_complete"], false, "{detail}");
    assert_eq!(
        effect["statements"],
        json!(["update customers set name = '*****' where id <= '*****'"]),
        "{detail}"
    );
    // Not committed while held.
    assert_eq!(
        db.sql("select count(*) from customers where name = 'Zed'"),
        "0"
    );
    decide(&gw, &dba, &id, "approve", "ok").await;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.sql("select count(*) from customers where name = 'Zed'"),
        "2"
    );

    // Denied: rolled back at once, the session goes on.
    let script = r#"
import json, os, pymysql, sys
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="admin",
                    password=os.environ["TOKEN"], database=os.environ["DB"], autocommit=True)
cur = c.cursor()
out = {}
def err(f):
    try:
        f()
        return None
    except pymysql.err.MySQLError as e:
        return [e.args[0], e.args[1]]
out["autocommit"] = err(lambda: cur.execute("update customers set name = 'Auto' where id = 1"))
# A failed DDL commits the open transaction first: a reviewed write after
# its error is not inside one.
c.begin()
out["ddl"] = err(lambda: cur.execute("create table logs (id int)"))
out["stale"] = err(lambda: cur.execute("update customers set name = 'Stale' where id = 1"))
c.rollback()
# In one message with what would commit it, before or after.
c.begin()
for sql in ["check table customers; update customers set name = 'Chk' where id = 1",
            "update customers set name = 'On' where id = 1; set autocommit = 1"]:
    out[sql] = err(lambda: cur.execute(sql))
# A table whose writes no ROLLBACK undoes.
out["myisam"] = err(lambda: cur.execute("update logs set note = 'x' where id = 1"))
c.rollback()
c.begin()
cur.execute("update customers set name = 'Nope' where id = 1")
for sql in ["create table sneaky (id int)", "start transaction", "prepare s from 'commit'", "select 1; commit"]:
    out[sql] = err(lambda: cur.execute(sql))
print("committing", file=sys.stderr, flush=True)
out["commit"] = err(c.commit)
cur.execute("select name from customers where id = 1")
out["after"] = cur.fetchone()[0]
print(json.dumps(out))
"#;
    let addr = mysql_addr(&gw);
    let child = Command::new("python3")
        .args(["-c", script])
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("TOKEN", &writer)
        .env("DB", "shop")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let held = pending(&gw, &dba).await;
    let id = held["id"].as_str().unwrap().to_string();
    decide(&gw, &dba, &id, "deny", "not this one").await;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(got["autocommit"][0], 1227, "{got}");
    assert!(
        got["autocommit"][1].as_str().unwrap().contains("BEGIN"),
        "{got}"
    );
    for sql in [
        "create table sneaky (id int)",
        "start transaction",
        "prepare s from 'commit'",
        "select 1; commit",
        "check table customers; update customers set name = 'Chk' where id = 1",
        "update customers set name = 'On' where id = 1; set autocommit = 1",
        "stale",
    ] {
        assert_eq!(got[sql][0], 1227, "{sql}: {got}");
    }
    assert_eq!(got["ddl"][0], 1050, "{got}");
    assert!(got["stale"][1].as_str().unwrap().contains("BEGIN"), "{got}");
    assert_eq!(got["myisam"][0], 1227, "{got}");
    assert!(
        got["myisam"][1].as_str().unwrap().contains("MyISAM"),
        "{got}"
    );
    assert_eq!(db.sql("select note from logs"), "a");
    assert_eq!(got["commit"][0], 1227, "{got}");
    assert!(
        got["commit"][1].as_str().unwrap().contains("not this one"),
        "{got}"
    );
    assert_eq!(got["after"], "Zed", "rolled back: {got}");
    assert_eq!(
        db.sql(
            "select count(*) from customers where name in ('Nope', 'Auto', 'Stale', 'Chk', 'On')"
        ),
        "0"
    );
    assert_eq!(
        db.sql("select count(*) from information_schema.tables where table_name = 'sneaky'"),
        "0"
    );
    gw.stop().await;
}
