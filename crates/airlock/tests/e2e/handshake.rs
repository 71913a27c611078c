//! The client-facing handshake end to end: hostile and broken clients, every
//! kind of bad token, routing refusals, upstream failures, TLS, and the few
//! protocol messages the gateway itself answers. Each test checks the
//! client's error with its SQLSTATE, then that the same gateway still serves
//! a good client.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_identity::dev::{self, DevIssuer, MintRequest};
use airlock_testkit::{Cluster, HostAuth, free_port};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{
    self, Gateway, LOCAL_PG_PORT, Received, error_code, error_message, exchange, message,
    password_message, raw_login, raw_login_with, read_until, read_until_close, self_signed,
    startup_message, startup_with_version,
};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers

/// The harness's configuration with room for more: `identity` lines (under
/// `identity:`, after `dev_issuer: true`), more connections, more access
/// rules, then more top-level keys. Each part ends with a newline.
fn config(identity: &str, connections: &str, access: &str, extra: &str) -> String {
    format!(
        r#"listen:
  postgres: 127.0.0.1:0
  http: 127.0.0.1:0
identity:
  dev_issuer: true
{identity}connections:
  test:
    upstream: {{host: 127.0.0.1, port: {LOCAL_PG_PORT}, database: test, tls: disable}}
    roles:
      readonly: {{user: postgres}}
      admin: {{user: postgres}}
{connections}access:
  - name: agents
    groups: [ai-agents]
    connections: [test]
    roles: [readonly]
    mode: read-only
  - name: dba
    groups: [dba]
    connections: ["*"]
    roles: [readonly, admin]
{access}{extra}"#
    )
}

/// Runs psql off the runtime's threads (it blocks).
async fn psql_at(conninfo: String, password: &str, sql: &str) -> Output {
    let (password, sql) = (password.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || common::psql(&conninfo, &password, &sql))
        .await
        .unwrap()
}

async fn psql(gw: &Gateway, token: &str, dbname: &str, user: &str, sql: &str) -> Output {
    psql_at(gw.conninfo(dbname, user), token, sql).await
}

/// A fresh agent token runs `select 1` through `conninfo`.
async fn assert_serves_at(gw: &Gateway, conninfo: String) {
    let token = gw.token("good-client", &["ai-agents"]);
    let out = psql_at(conninfo, &token, "select 1").await;
    assert!(
        out.status.success(),
        "the gateway no longer serves a good client: {}",
        common::stderr(&out)
    );
    assert_eq!(common::stdout(&out), "1");
}

/// The gateway still serves a good client.
async fn assert_serves(gw: &Gateway) {
    assert_serves_at(gw, gw.conninfo("test", "readonly")).await;
}

/// psql fails with a FATAL containing `text`.
fn assert_psql_fatal(out: &Output, text: &str) {
    let err = common::stderr(out);
    assert!(!out.status.success(), "psql succeeded; stderr: {err}");
    assert!(err.contains("FATAL:"), "no FATAL in: {err}");
    assert!(err.contains(text), "{text:?} not in: {err}");
}

/// The single FATAL ErrorResponse among `msgs`: its code, its message.
fn assert_fatal(msgs: &[Received], code: &str, text: &str) {
    let errors: Vec<&Received> = msgs.iter().filter(|m| m.tag == b'E').collect();
    assert_eq!(errors.len(), 1, "one ErrorResponse expected: {msgs:?}");
    assert_eq!(errors[0].field(b'S').as_deref(), Some("FATAL"), "{msgs:?}");
    assert_eq!(
        error_code(msgs).as_deref(),
        Some(code),
        "{:?}",
        error_message(msgs)
    );
    let message = error_message(msgs).unwrap();
    assert!(message.contains(text), "{text:?} not in {message:?}");
}

/// Startup, then `token` as the password; what the gateway answers until
/// it closes.
async fn raw_auth(
    addr: SocketAddr,
    user: &str,
    dbname: &str,
    token: &str,
) -> (Vec<Received>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup_message(&[("user", user), ("database", dbname)]))
        .await
        .unwrap();
    let auth = read_until(&mut s, b'R').await;
    assert_eq!(auth.last().unwrap().body, 3i32.to_be_bytes());
    s.write_all(&password_message(token)).await.unwrap();
    read_until_close(&mut s, WAIT).await
}

/// psql and a raw client are both refused with 28000 and `text`; the
/// gateway serves a good client afterwards.
async fn assert_login_refused(gw: &Gateway, token: &str, dbname: &str, user: &str, text: &str) {
    let out = psql(gw, token, dbname, user, "select 1").await;
    assert_psql_fatal(&out, text);
    let (msgs, closed) = raw_auth(gw.pg, user, dbname, token).await;
    assert_fatal(&msgs, "28000", text);
    assert!(closed, "the gateway closes after a FATAL");
    // The token never comes back to the client.
    let message = error_message(&msgs).unwrap();
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(
            !message.contains(part),
            "the error echoes the token: {message}"
        );
    }
    assert_serves(gw).await;
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exactly this header and these claims.
fn jwt(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(message.as_bytes());
    format!("{message}.{}", b64(signature))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims for `iss`, with `groups` in claim `groups_claim`.
fn claims(iss: &str, groups_claim: &str, groups: Value) -> Value {
    let now = unix_now();
    json!({
        "iss": iss,
        "sub": "mallory",
        "aud": "airlock",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": common::unique("jti"),
        groups_claim: groups,
    })
}

/// The gateway's own dev-issuer signing key, read from its data dir.
fn dev_key(gw: &Gateway) -> (Ed25519KeyPair, String) {
    let pkcs8 = std::fs::read(gw.data_dir().join(dev::KEY_FILE)).unwrap();
    let kid = DevIssuer::open_or_create(gw.data_dir())
        .unwrap()
        .kid()
        .to_owned();
    (Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap(), kid)
}

fn ed25519_sign(key: &Ed25519KeyPair) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    |m| key.sign(m).as_ref().to_vec()
}

fn mint(issuer: &DevIssuer, audience: &str, now: SystemTime, ttl: Duration) -> String {
    issuer.mint(
        MintRequest {
            subject: "devin".into(),
            groups: vec!["ai-agents".into()],
            ttl,
            act: None,
            audience: audience.into(),
        },
        now,
    )
}

/// Waits until no upstream backend has `application_name`; panics after 10 s.
async fn assert_backend_gone(application_name: &str) {
    let sql = format!(
        "select count(*) from pg_stat_activity where application_name = '{application_name}'"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let sql = sql.clone();
        let n = tokio::task::spawn_blocking(move || common::direct(&sql))
            .await
            .unwrap();
        if n == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream backend {application_name} is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// 1-5: broken and hostile clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_get_a_protocol_violation() {
    let gw = Gateway::start(&common::local_config("")).await;
    let (msgs, closed) = exchange(gw.pg, b"GET / HTTP/1.1\r\n\r\n", WAIT).await;
    assert_fatal(&msgs, "08P01", "invalid length of startup packet");
    assert!(closed);
    assert_serves(&gw).await;
}

/// 20 bytes of a startup packet that announces 100, the first of them a
/// valid start.
fn truncated_startup() -> BytesMut {
    let full = startup_message(&[
        ("user", "readonly"),
        ("database", "test"),
        ("application_name", "x".repeat(60).as_str()),
    ]);
    let mut part = BytesMut::new();
    part.put_i32(100);
    part.extend_from_slice(&full[4..20]);
    part
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_startup_then_half_close_is_dropped_quietly() {
    let gw = Gateway::start(&common::local_config("")).await;
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    s.write_all(&truncated_startup()).await.unwrap();
    s.shutdown().await.unwrap();
    let (msgs, closed) = read_until_close(&mut s, WAIT).await;
    assert!(
        closed,
        "the gateway closes a client that went away mid-startup"
    );
    // PostgreSQL says nothing to a client that left ("incomplete startup
    // packet"); anything the gateway does say must be a protocol violation.
    if let Some(code) = error_code(&msgs) {
        assert_eq!(code, "08P01", "{msgs:?}");
    }
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_startup_is_closed_by_the_startup_timeout() {
    let gw = Gateway::start(&common::local_config("limits: {startup_timeout: 1s}\n")).await;
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    s.write_all(&truncated_startup()).await.unwrap();
    let started = Instant::now();
    let (msgs, closed) = read_until_close(&mut s, WAIT).await;
    assert!(closed, "still open after {:?}", started.elapsed());
    assert_fatal(&msgs, "08P01", "timed out");
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_lengths_are_protocol_violations() {
    let gw = Gateway::start(&common::local_config("")).await;
    for len in [-5i32, 0x4000_0001] {
        let mut buf = BytesMut::new();
        buf.put_i32(len);
        buf.put_i32(196_608);
        let (msgs, closed) = exchange(gw.pg, &buf, WAIT).await;
        assert_fatal(
            &msgs,
            "08P01",
            &format!("invalid length of startup packet: {len}"),
        );
        assert!(closed);
    }
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_message_lengths_after_login_are_protocol_violations() {
    let gw = Gateway::start(&common::local_config("")).await;
    for len in [-5i32, i32::MIN /* 2 GiB, read as signed */] {
        let token = gw.token("devin", &["ai-agents"]);
        let mut s = raw_login(gw.pg, "readonly", "test", &token).await;
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_i32(len);
        s.write_all(&buf).await.unwrap();
        let (msgs, closed) = read_until_close(&mut s, WAIT).await;
        assert_fatal(&msgs, "08P01", &format!("invalid message length: {len}"));
        assert!(closed);
    }
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_size_is_program_limit_exceeded() {
    let gw = Gateway::start(&common::local_config("limits: {max_message_size: 1KiB}\n")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let mut s = raw_login(gw.pg, "readonly", "test", &token).await;
    let sql = format!("select '{}'", "x".repeat(1991));
    assert_eq!(sql.len(), 2000);
    let mut q = BytesMut::new();
    q.extend_from_slice(sql.as_bytes());
    q.put_u8(0);
    s.write_all(&message(b'Q', &q)).await.unwrap();
    let (msgs, closed) = read_until_close(&mut s, WAIT).await;
    assert_fatal(&msgs, "54000", "exceeds the limit of 1024 bytes");
    assert!(closed);
    assert!(
        msgs.iter().all(|m| m.tag != b'D'),
        "the query must not run: {msgs:?}"
    );
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_by_the_startup_timeout() {
    let gw = Gateway::start(&common::local_config("limits: {startup_timeout: 1s}\n")).await;
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    let started = Instant::now();
    let (msgs, closed) = read_until_close(&mut s, WAIT).await;
    assert!(
        closed,
        "a client that sends nothing is still connected after {:?}",
        started.elapsed()
    );
    if error_code(&msgs).is_some() {
        assert_fatal(&msgs, "08P01", "timed out");
    }
    assert_serves(&gw).await;
}

/// A slowloris after login: a client that begins a message and stalls, or
/// trickles it a byte at a time, is cut at `limits.message_timeout` with
/// `57P05`, while a session beside it runs on; a client that completes
/// its messages, however slowly it starts them, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_mid_message_is_cut_at_the_message_timeout() {
    // 2 s: room for a loaded machine's late timers in the cases that must
    // not be cut.
    let gw = Gateway::start(&common::local_config("limits: {message_timeout: 2s}\n")).await;
    let token = gw.token("slow", &["ai-agents"]);
    let good = gw.client("readonly", &token).await.unwrap();
    let query = message(b'Q', b"select 1\0");
    let cases: [(&str, usize, Duration); 2] = [
        ("stalls", 3, Duration::from_secs(30)),
        ("trickles", query.len() - 1, Duration::from_millis(300)),
    ];
    for (how, sent, gap) in cases {
        let (mut r, mut w) = raw_login(gw.pg, "readonly", "test", &token)
            .await
            .into_split();
        let started = Instant::now();
        let writer = async {
            for b in &query[..sent] {
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(gap.min(Duration::from_millis(300))).await;
            }
            // Then nothing more: the message stays incomplete.
            tokio::time::sleep(gap).await;
        };
        let reader = async {
            let read = read_until_close(&mut r, WAIT).await;
            (read, started.elapsed())
        };
        let (((msgs, closed), took), ()) = tokio::select! {
            read = reader => (read, ()),
            () = writer => panic!("{how}: the writer finished first"),
        };
        assert!(
            took >= Duration::from_millis(1900) && took < WAIT,
            "{how}: cut after {took:?}"
        );
        assert!(
            closed,
            "{how}: still connected after {:?}",
            started.elapsed()
        );
        assert_fatal(&msgs, "57P05", "limits.message_timeout");
        // The other session was not disturbed.
        assert_eq!(
            good.query_one("select 2", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            2,
            "{how}"
        );
    }
    // A client idle between messages is not stalling, and each message
    // completed starts the count again: two messages of 1.2 s each, the
    // second begun as the first ends (incomplete for 2.4 s in all), under
    // the 2 s limit pass.
    let mut s = raw_login(gw.pg, "readonly", "test", &token).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let two = [&query[..], &query[..]].concat();
    let half = query.len() / 2;
    for part in [&two[..half], &two[half..query.len() + half]] {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    s.write_all(&two[query.len() + half..]).await.unwrap();
    let mut answers = read_until(&mut s, b'Z').await;
    answers.extend(read_until(&mut s, b'Z').await);
    assert!(answers.iter().all(|m| m.tag != b'E'), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_versions_are_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    for (version, shown) in [(2i32 << 16, "2.0"), (4 << 16, "4.0")] {
        let startup = startup_with_version(version, &[("user", "readonly"), ("database", "test")]);
        let (msgs, closed) = exchange(gw.pg, &startup, WAIT).await;
        assert_fatal(
            &msgs,
            "0A000",
            &format!("unsupported frontend protocol {shown}"),
        );
        assert!(closed);
    }
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_is_negotiated_down_to_3_0() {
    let gw = Gateway::start(&common::local_config("")).await;
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    let startup = startup_with_version(
        196_610,
        &[
            ("user", "readonly"),
            ("database", "test"),
            ("_pq_.foo", "bar"),
        ],
    );
    s.write_all(&startup).await.unwrap();
    let msgs = read_until(&mut s, b'R').await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"vR", "{msgs:?}");
    let mut want = BytesMut::new();
    want.put_i32(0); // newest minor version supported: 3.0
    want.put_i32(1); // one unrecognized option
    want.extend_from_slice(b"_pq_.foo\0");
    assert_eq!(msgs[0].body, &want[..]);
    assert_eq!(
        msgs[1].body,
        3i32.to_be_bytes(),
        "a cleartext password request"
    );
    // The session then goes on as 3.0.
    s.write_all(&password_message(&gw.token("devin", &["ai-agents"])))
        .await
        .unwrap();
    let ready = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&ready), None, "{:?}", error_message(&ready));

    // A protocol error on the same gateway still carries its SQLSTATE.
    let (msgs, _) = exchange(
        gw.pg,
        &startup_with_version(5 << 16, &[("user", "x")]),
        WAIT,
    )
    .await;
    assert_eq!(error_code(&msgs).as_deref(), Some("0A000"));
    assert_serves(&gw).await;
}

// ---------------------------------------------------------------------------
// 6-8: tokens and issuers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_token_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    assert_login_refused(
        &gw,
        "not.a.token",
        "test",
        "readonly",
        "airlock: malformed token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let issuer = DevIssuer::open_or_create(gw.data_dir()).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    let token = mint(&issuer, "airlock", two_hours_ago, Duration::from_secs(3600));
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token has expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let issuer = DevIssuer::open_or_create(gw.data_dir()).unwrap();
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let token = mint(&issuer, "airlock", in_an_hour, Duration::from_secs(900));
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token is not valid yet",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_another_dev_issuer_key_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = DevIssuer::open_or_create(other_dir.path()).unwrap();
    assert_ne!(other.kid(), dev_key(&gw).1);
    let token = mint(
        &other,
        "airlock",
        SystemTime::now(),
        Duration::from_secs(900),
    );
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token signing key is not published by issuer \"dev\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_an_untrusted_issuer_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    // Signed with the gateway's own dev key and kid: only `iss` is wrong.
    let (key, kid) = dev_key(&gw);
    let token = jwt(
        &json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid }),
        &claims("https://evil.example/", "groups", json!(["dba"])),
        ed25519_sign(&key),
    );
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token issuer \"https://evil.example/\" is not trusted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let issuer = DevIssuer::open_or_create(gw.data_dir()).unwrap();
    let token = mint(
        &issuer,
        "other",
        SystemTime::now(),
        Duration::from_secs(900),
    );
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token audience does not include \"airlock\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alg_none_token_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(dev::ISSUER, "groups", json!(["dba"])).to_string());
    let token = format!("{header}.{payload}.");
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token algorithm \"none\" is not accepted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    let jwks: Value = reqwest::get(format!("http://{}/.well-known/jwks.json", gw.http))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = &jwks["keys"][0];
    let x = jwk["x"].as_str().unwrap();
    let kid = jwk["kid"].as_str().unwrap();
    assert_eq!(kid, dev_key(&gw).1);
    let raw_public = URL_SAFE_NO_PAD.decode(x).unwrap();
    let jwk_json = jwk.to_string();
    for secret in [raw_public.as_slice(), x.as_bytes(), jwk_json.as_bytes()] {
        let token = jwt(
            &json!({ "alg": "HS256", "typ": "JWT", "kid": kid }),
            &claims(dev::ISSUER, "groups", json!(["dba"])),
            |m| {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, m).as_ref().to_vec()
            },
        );
        assert_login_refused(
            &gw,
            &token,
            "test",
            "admin",
            "airlock: token algorithm \"HS256\" is not accepted",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_an_unknown_kid_is_refused() {
    let gw = Gateway::start(&common::local_config("")).await;
    // The real key and claims; only the kid names no published key.
    let (key, _) = dev_key(&gw);
    let token = jwt(
        &json!({ "alg": "EdDSA", "typ": "JWT", "kid": "nope" }),
        &claims(dev::ISSUER, "groups", json!(["ai-agents"])),
        ed25519_sign(&key),
    );
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: token signing key is not published by issuer \"dev\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_whose_jwks_is_unreachable_fails_closed() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&config(
        &format!("  issuers:\n    - {{name: ext, issuer: \"{issuer}\", audience: airlock, jwks_uri: \"{issuer}/jwks\"}}\n"),
        "",
        "",
        "",
    ))
    .await;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let token = jwt(
        &json!({ "alg": "EdDSA", "typ": "JWT", "kid": "ext-1" }),
        &claims(&issuer, "groups", json!(["ai-agents"])),
        ed25519_sign(&key),
    );
    assert_login_refused(
        &gw,
        &token,
        "test",
        "readonly",
        "airlock: signing keys of issuer \"ext\" cannot be fetched",
    )
    .await;
}

/// A second OpenID provider on 127.0.0.1, found by discovery, with one RS256
/// key.
struct Provider {
    issuer: String,
    key: RsaKeyPair,
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let jwks = json!({ "keys": [{
            "kty": "RSA", "kid": "corp-rsa-1", "use": "sig", "alg": "RS256",
            "n": b64(&public.n), "e": b64(&public.e),
        }] });
        let discovery = json!({
            "issuer": base,
            "jwks_uri": format!("{base}/jwks"),
            "authorization_endpoint": format!("{base}/auth"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || std::future::ready(axum::Json(discovery.clone()))),
            )
            .route(
                "/jwks",
                axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider { issuer: base, key }
    }

    fn token(&self, roles: Value) -> String {
        jwt(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": "corp-rsa-1" }),
            &claims(&self.issuer, "roles", roles),
            |m| {
                let mut sig = vec![0; self.key.public_modulus_len()];
                self.key
                    .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
                    .unwrap();
                sig
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_issuer_found_by_discovery_logs_in() {
    let corp = Provider::start().await;
    let gw = Gateway::start(&config(
        &format!(
            "  issuers:\n    - {{name: corp, issuer: \"{}\", audience: airlock, groups_claim: roles}}\n",
            corp.issuer
        ),
        "",
        "  - name: corp-analysts\n    groups: [analysts]\n    connections: [test]\n    roles: [readonly]\n    mode: read-only\n",
        "",
    ))
    .await;
    for roles in [json!(["analysts", "other"]), json!("analysts")] {
        let out = psql(
            &gw,
            &corp.token(roles.clone()),
            "test",
            "readonly",
            "select current_user",
        )
        .await;
        let err = common::stderr(&out);
        assert!(out.status.success(), "{roles}: {err}");
        assert_eq!(common::stdout(&out), "postgres");
        assert!(
            err.contains("rule \"corp-analysts\""),
            "{roles}: the groups claim decides the rule: {err}"
        );
    }
    // A token of that issuer whose groups match no rule.
    let token = corp.token(json!(["visitors"]));
    assert_login_refused(&gw, &token, "test", "readonly", "you may use no connection").await;
}

// ---------------------------------------------------------------------------
// 9-12: routing and the upstream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dbname_lists_only_the_connections_the_principal_may_use() {
    let gw = Gateway::start(&config(
        "",
        &format!(
            "  hidden:\n    upstream: {{host: 127.0.0.1, port: {LOCAL_PG_PORT}, database: test, tls: disable}}\n    roles:\n      readonly: {{user: postgres}}\n"
        ),
        "  - name: secret-team\n    groups: [secret-team]\n    connections: [hidden]\n    roles: [readonly]\n",
        "",
    ))
    .await;
    let token = gw.token("devin", &["ai-agents"]);
    let text = "no access rule grants you connection \"nope\"; you may use: test (roles: readonly)";
    assert_login_refused(&gw, &token, "nope", "readonly", text).await;
    let (msgs, _) = raw_auth(gw.pg, "readonly", "nope", &token).await;
    let message = error_message(&msgs).unwrap();
    assert!(
        !message.contains("hidden"),
        "another connection is named: {message}"
    );
    // The hidden connection itself is refused the same way, and works for its team.
    let (msgs, _) = raw_auth(gw.pg, "readonly", "hidden", &token).await;
    assert_fatal(&msgs, "28000", "you may use: test (roles: readonly)");
    let team = gw.token("sam", &["secret-team"]);
    let out = psql(&gw, &team, "hidden", "readonly", "select 1").await;
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_profile_not_granted_is_refused_naming_the_allowed_roles() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let text = "role \"admin\" on connection \"test\" is not granted to you; you may use: readonly";
    assert_login_refused(&gw, &token, "test", "admin", text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_naming_no_role_profile_gets_the_first_allowed_role() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let out = psql(
        &gw,
        &token,
        "test",
        "root",
        "show default_transaction_read_only",
    )
    .await;
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        common::stdout(&out),
        "on",
        "the agents rule's read-only mode applies"
    );
    assert!(err.contains("NOTICE:"), "{err}");
    assert!(err.contains("as role \"readonly\""), "{err}");
    assert!(
        err.contains("user \"root\" names no role profile, so your first allowed role is used"),
        "{err}"
    );
    // An agent asking for a profile it is not granted is refused, not defaulted.
    let (msgs, _) = raw_auth(gw.pg, "admin", "test", &token).await;
    assert_fatal(&msgs, "28000", "you may use: readonly");
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_connection_failure() {
    let port = free_port();
    let gw = Gateway::start(&config(
        "",
        &format!("  down:\n    upstream: {{host: 127.0.0.1, port: {port}, database: test, tls: disable}}\n    roles:\n      readonly: {{user: postgres}}\n"),
        "",
        "",
    ))
    .await;
    let token = gw.token("alice", &["dba"]);
    let text = "airlock: connection \"down\" is unavailable";
    let out = psql(&gw, &token, "down", "readonly", "select 1").await;
    assert_psql_fatal(&out, text);
    let (msgs, closed) = raw_auth(gw.pg, "readonly", "down", &token).await;
    assert_fatal(&msgs, "08006", text);
    assert!(closed);
    assert!(
        !error_message(&msgs).unwrap().contains(&port.to_string()),
        "the upstream address is not shown"
    );
    assert_serves(&gw).await;
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

// One thread: the gateway's tasks run where the thread-local subscriber is.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_upstream_credential_is_not_leaked() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // tracing-core caches whether a log line is wanted when the line first
    // runs. While this test's subscriber is the only one registered, a line
    // first run on another test's thread is asked of that thread's
    // subscriber (none), cached as unwanted, and lost here too. With a second
    // one registered for good, every registered subscriber is asked instead.
    static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = Cluster::start(HostAuth::Scram, false);
    cluster.sql("create role app login password 'right'");
    let secrets = tempfile::tempdir().unwrap();
    let wrong = secrets.path().join("wrong-password");
    let right = secrets.path().join("right-password");
    std::fs::File::create(&wrong)
        .unwrap()
        .write_all(b"wrong\n")
        .unwrap();
    std::fs::write(&right, "right\n").unwrap();
    let gw = Gateway::start(&config(
        "",
        &format!(
            "  scram:\n    upstream: {{host: 127.0.0.1, port: {}, database: postgres, tls: disable}}\n    roles:\n      writer: {{user: app, password: {{file: {}}}}}\n      checked: {{user: app, password: {{file: {}}}}}\n",
            cluster.port,
            wrong.display(),
            right.display()
        ),
        "  - name: writers\n    groups: [writers]\n    connections: [scram]\n    roles: [writer, checked]\n",
        "",
    ))
    .await;
    let token = gw.token("wendy", &["writers"]);

    // The cluster and the profile with the right password work.
    let out = psql(&gw, &token, "scram", "checked", "select 1").await;
    assert!(out.status.success(), "{}", common::stderr(&out));

    let text = "refused airlock's login for role \"writer\"";
    let out = psql(&gw, &token, "scram", "writer", "select 1").await;
    assert_psql_fatal(&out, text);
    let (msgs, closed) = raw_auth(gw.pg, "writer", "scram", &token).await;
    assert_fatal(&msgs, "08004", text);
    assert!(closed);
    for shown in [error_message(&msgs).unwrap(), common::stderr(&out)] {
        assert!(
            !has_word(&shown, "app"),
            "the upstream user is shown: {shown}"
        );
        assert!(!shown.contains("wrong"), "the password is shown: {shown}");
        assert!(
            !shown.contains("password authentication failed"),
            "upstream text is shown: {shown}"
        );
    }
    assert_serves(&gw).await;

    let logs = logs.text();
    assert!(
        logs.contains("28P01"),
        "the upstream's SQLSTATE is logged:\n{logs}"
    );
    assert!(logs.contains("upstream login failed"), "{logs}");
    assert!(
        !has_word(&logs, "app"),
        "the upstream user is logged:\n{logs}"
    );
    assert!(!logs.contains("wrong"), "the password is logged:\n{logs}");
    assert!(!logs.contains("right"), "the password is logged:\n{logs}");
}

// ---------------------------------------------------------------------------
// 13-14: TLS and GSSAPI encryption

fn tls_conninfo(gw: &Gateway, ssl: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=test user=readonly connect_timeout=10 {ssl}",
        gw.pg.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plaintext_and_serves_tls() {
    let (_dir, cert, key) = self_signed();
    let gw = Gateway::start(&common::local_config(&format!(
        "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: required}}\n",
        cert.display(),
        key.display()
    )))
    .await;
    let token = gw.token("devin", &["ai-agents"]);
    let text = "airlock requires TLS on this listener";
    let out = psql_at(tls_conninfo(&gw, "sslmode=disable"), &token, "select 1").await;
    assert_psql_fatal(&out, text);
    let startup = startup_message(&[("user", "readonly"), ("database", "test")]);
    let (msgs, closed) = exchange(gw.pg, &startup, WAIT).await;
    assert_fatal(&msgs, "28000", text);
    assert!(closed);

    let out = psql_at(tls_conninfo(&gw, "sslmode=require"), &token, "select 1").await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "1");
    let verified = format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname=test user=readonly connect_timeout=10 sslmode=verify-full sslrootcert={}",
        gw.pg.port(),
        cert.display()
    );
    let out = psql_at(verified, &token, "select 1").await;
    assert!(
        out.status.success(),
        "verify-full: {}",
        common::stderr(&out)
    );
    assert_eq!(common::stdout(&out), "1");
    assert_serves_at(&gw, tls_conninfo(&gw, "sslmode=require")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_optional_allows_plaintext_on_loopback() {
    let (_dir, cert, key) = self_signed();
    let gw = Gateway::start(&common::local_config(&format!(
        "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: optional}}\n",
        cert.display(),
        key.display()
    )))
    .await;
    let token = gw.token("devin", &["ai-agents"]);
    for ssl in ["sslmode=disable", "sslmode=require"] {
        let out = psql_at(tls_conninfo(&gw, ssl), &token, "select 1").await;
        assert!(out.status.success(), "{ssl}: {}", common::stderr(&out));
        assert_eq!(common::stdout(&out), "1");
    }
    // Bytes sent after SSLRequest, before the TLS handshake, could have been
    // injected (CVE-2021-23214): refused.
    let mut buf = BytesMut::new();
    buf.put_i32(8);
    buf.put_i32(80_877_103);
    buf.extend_from_slice(&startup_message(&[
        ("user", "readonly"),
        ("database", "test"),
    ]));
    let (msgs, closed) = exchange(gw.pg, &buf, WAIT).await;
    assert_fatal(&msgs, "08P01", "data received after SSLRequest");
    assert!(closed);
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_optional_off_loopback_refuses_plaintext() {
    let (_dir, cert, key) = self_signed();
    let yaml = config(
        "  allow_dev_issuer_on_non_loopback: true\n",
        "",
        "",
        &format!(
            "tls: {{cert: {{file: {}}}, key: {{file: {}}}, mode: optional}}\n",
            cert.display(),
            key.display()
        ),
    )
    .replace("postgres: 127.0.0.1:0", "postgres: 0.0.0.0:0");
    let gw = Gateway::start(&yaml).await;
    let token = gw.token("devin", &["ai-agents"]);
    // A client on loopback, but the listener is not: the token needs TLS.
    let text = "airlock requires TLS on this listener";
    let out = psql_at(tls_conninfo(&gw, "sslmode=disable"), &token, "select 1").await;
    assert_psql_fatal(&out, text);
    let addr = SocketAddr::from(([127, 0, 0, 1], gw.pg.port()));
    let startup = startup_message(&[("user", "readonly"), ("database", "test")]);
    let (msgs, closed) = exchange(addr, &startup, WAIT).await;
    assert_fatal(&msgs, "28000", text);
    assert!(closed);
    assert_serves_at(&gw, tls_conninfo(&gw, "sslmode=require")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined_and_startup_continues() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let conninfo = format!("{} gssencmode=prefer", gw.conninfo("test", "readonly"));
    let out = psql_at(conninfo, &token, "select 1").await;
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "1");

    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    let mut gssenc = BytesMut::new();
    gssenc.put_i32(8);
    gssenc.put_i32(80_877_104);
    s.write_all(&gssenc).await.unwrap();
    let answer = tokio::time::timeout(WAIT, s.read_u8())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer, b'N',
        "GSSAPI encryption is declined with a single byte"
    );
    s.write_all(&startup_message(&[
        ("user", "readonly"),
        ("database", "test"),
    ]))
    .await
    .unwrap();
    let auth = read_until(&mut s, b'R').await;
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(auth[0].body, 3i32.to_be_bytes());
    s.write_all(&password_message(&token)).await.unwrap();
    let ready = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&ready), None, "{:?}", error_message(&ready));

    // A GSSENCRequest of the wrong length is a protocol violation.
    let mut bad = BytesMut::new();
    bad.put_i32(12);
    bad.put_i32(80_877_104);
    bad.put_i32(0);
    let (msgs, closed) = exchange(gw.pg, &bad, WAIT).await;
    assert_fatal(&msgs, "08P01", "request packet of the wrong length");
    assert!(closed);
    assert_serves(&gw).await;
}

// ---------------------------------------------------------------------------
// 15-17: messages after login

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_closes_the_session_promptly() {
    let gw = Gateway::start(&common::local_config("")).await;
    let app = common::unique("terminate");
    let token = gw.token("devin", &["ai-agents"]);
    let mut s = raw_login_with(
        gw.pg,
        &[
            ("user", "readonly"),
            ("database", "test"),
            ("application_name", &app),
        ],
        &token,
    )
    .await;
    assert_eq!(
        common::direct(&format!(
            "select count(*) from pg_stat_activity where application_name = '{app}'"
        )),
        "1"
    );
    s.write_all(&message(b'X', b"")).await.unwrap();
    let started = Instant::now();
    let (msgs, closed) = read_until_close(&mut s, WAIT).await;
    assert!(closed, "still open {:?} after Terminate", started.elapsed());
    assert_eq!(error_code(&msgs), None, "{msgs:?}");
    assert_backend_gone(&app).await;
    assert_serves(&gw).await;
}

/// A FunctionCall of function `oid` with text arguments.
fn function_call(oid: i32, args: &[&str]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(oid);
    body.put_i16(0); // argument format codes: all text
    body.put_i16(args.len() as i16);
    for a in args {
        body.put_i32(a.len() as i32);
        body.extend_from_slice(a.as_bytes());
    }
    body.put_i16(0); // result format
    message(b'F', &body)
}

/// now(), lo_creat(integer), and an OID no function has.
const NOW: i32 = 1299;
const LO_CREAT: i32 = 957;
const NO_FUNCTION: i32 = 999_999_999;

fn query(sql: &str) -> BytesMut {
    let mut body = BytesMut::from(sql.as_bytes());
    body.put_u8(0);
    message(b'Q', &body)
}

/// The status byte of the ReadyForQuery that ends `msgs`.
fn status(msgs: &[Received]) -> u8 {
    let last = msgs.last().unwrap();
    assert_eq!(last.tag, b'Z');
    last.body[0]
}

/// A FunctionCall names a function by OID, with no SQL: airlock looks the
/// name up and judges the SELECT it stands for. A read-only principal may
/// call a function that reads, not one that writes; an OID no function has
/// is refused; the session goes on after each refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_are_judged_and_the_session_goes_on() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let mut s = raw_login(gw.pg, "readonly", "test", &token).await;

    s.write_all(&function_call(NOW, &[])).await.unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&msgs), None, "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.tag == b'V'),
        "a FunctionCallResponse: {msgs:?}"
    );

    for (call, code, says) in [
        (function_call(LO_CREAT, &["-1"]), "42501", "read-only"),
        (
            function_call(NO_FUNCTION, &[]),
            "42501",
            "cannot be looked up",
        ),
    ] {
        s.write_all(&call).await.unwrap();
        let msgs = read_until(&mut s, b'Z').await;
        assert_eq!(msgs.iter().filter(|m| m.tag == b'E').count(), 1, "{msgs:?}");
        assert_eq!(error_code(&msgs).as_deref(), Some(code));
        let message = error_message(&msgs).unwrap();
        assert!(message.contains(says), "{message}");
        let error = msgs.iter().find(|m| m.tag == b'E').unwrap();
        assert_eq!(
            error.field(b'S').as_deref(),
            Some("ERROR"),
            "an ERROR, not FATAL"
        );
        assert_eq!(status(&msgs), b'I');
    }

    s.write_all(&query("select 42")).await.unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    let rows: Vec<&Received> = msgs.iter().filter(|m| m.tag == b'D').collect();
    assert_eq!(rows.len(), 1, "{msgs:?}");
    // DataRow: 1 column, length 2, "42".
    assert_eq!(rows[0].body, b"\0\x01\0\0\0\x0242");

    // Inside a transaction a refusal aborts the transaction, as PostgreSQL
    // would.
    s.write_all(&query("begin")).await.unwrap();
    assert_eq!(status(&read_until(&mut s, b'Z').await), b'T');
    s.write_all(&function_call(LO_CREAT, &["-1"]))
        .await
        .unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&msgs).as_deref(), Some("42501"));
    assert_eq!(status(&msgs), b'E');
    s.write_all(&query("select 1")).await.unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    assert_eq!(
        error_code(&msgs).as_deref(),
        Some("25P02"),
        "{:?}",
        error_message(&msgs)
    );
    assert!(msgs.iter().all(|m| m.tag != b'D'));
    assert_eq!(status(&msgs), b'E');
    s.write_all(&query("rollback")).await.unwrap();
    assert_eq!(status(&read_until(&mut s, b'Z').await), b'I');
    s.write_all(&query("select 42")).await.unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    assert!(
        msgs.iter()
            .any(|m| m.tag == b'D' && m.body == b"\0\x01\0\0\0\x0242"),
        "{msgs:?}"
    );
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_copy_leaves_no_rows() {
    let gw = Gateway::start(&common::local_config("")).await;
    let table = common::unique("copy_gone");
    let app = common::unique("copy_client");
    common::direct(&format!("create table {table} (a int)"));
    let token = gw.token("alice", &["dba"]);
    let mut s = raw_login_with(
        gw.pg,
        &[
            ("user", "admin"),
            ("database", "test"),
            ("application_name", &app),
        ],
        &token,
    )
    .await;
    s.write_all(&query(&format!("copy {table} from stdin")))
        .await
        .unwrap();
    let msgs = read_until(&mut s, b'G').await;
    assert_eq!(error_code(&msgs), None, "{:?}", error_message(&msgs));
    s.write_all(&message(b'd', b"1\n2\n")).await.unwrap();
    s.flush().await.unwrap();
    drop(s);

    assert_backend_gone(&app).await;
    assert_eq!(
        common::direct(&format!("select count(*) from {table}")),
        "0"
    );
    // The way to abandon a COPY: CopyFail, answered with 57014, no rows.
    let mut s = raw_login(gw.pg, "admin", "test", &token).await;
    s.write_all(&query(&format!("copy {table} from stdin")))
        .await
        .unwrap();
    read_until(&mut s, b'G').await;
    s.write_all(&message(b'd', b"3\n")).await.unwrap();
    s.write_all(&message(b'f', b"client gave up\0"))
        .await
        .unwrap();
    let msgs = read_until(&mut s, b'Z').await;
    assert_eq!(
        error_code(&msgs).as_deref(),
        Some("57014"),
        "{:?}",
        error_message(&msgs)
    );
    assert_eq!(status(&msgs), b'I');
    drop(s);
    assert_eq!(
        common::direct(&format!("select count(*) from {table}")),
        "0"
    );
    common::direct(&format!("drop table {table}"));
    assert_serves(&gw).await;
}

/// PostgreSQL reads the password and whatever follows it from one stream: a
/// client may send its first Query right behind the PasswordMessage (with
/// cleartext authentication nothing else is asked), and the server answers
/// it after ReadyForQuery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_pipelined_behind_the_password_is_answered() {
    let gw = Gateway::start(&common::local_config("")).await;
    let token = gw.token("devin", &["ai-agents"]);
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    s.write_all(&startup_message(&[
        ("user", "readonly"),
        ("database", "test"),
    ]))
    .await
    .unwrap();
    read_until(&mut s, b'R').await;
    let mut pipelined = password_message(&token);
    pipelined.extend_from_slice(&query("select 42"));
    s.write_all(&pipelined).await.unwrap();
    let login = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&login), None, "{:?}", error_message(&login));
    let answer = read_until(&mut s, b'Z').await;
    assert!(
        answer
            .iter()
            .any(|m| m.tag == b'D' && m.body == b"\0\x01\0\0\0\x0242"),
        "{answer:?}"
    );
    assert_serves(&gw).await;
}

/// A token up to 60 s past `exp` passes verification (clock-skew leeway).
/// With `session_lifetime: token` the gateway must then either refuse the
/// login or give a usable session, not log the client in and cut it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expired_within_the_leeway_is_not_logged_in_then_cut() {
    let gw = Gateway::start(&common::local_config("")).await;
    let issuer = DevIssuer::open_or_create(gw.data_dir()).unwrap();
    let minted = SystemTime::now() - Duration::from_secs(930);
    let token = mint(&issuer, "airlock", minted, Duration::from_secs(900));
    let mut s = TcpStream::connect(gw.pg).await.unwrap();
    s.write_all(&startup_message(&[
        ("user", "readonly"),
        ("database", "test"),
    ]))
    .await
    .unwrap();
    read_until(&mut s, b'R').await;
    s.write_all(&password_message(&token)).await.unwrap();
    let (msgs, closed) = read_until_close(&mut s, Duration::from_secs(2)).await;
    let authenticated = msgs
        .iter()
        .any(|m| m.tag == b'R' && m.body == 0i32.to_be_bytes());
    if authenticated {
        assert!(
            !closed && error_code(&msgs).is_none(),
            "AuthenticationOk, then at once {:?} {:?}",
            error_code(&msgs),
            error_message(&msgs)
        );
        s.write_all(&query("select 1")).await.unwrap();
        let answer = read_until(&mut s, b'Z').await;
        assert!(answer.iter().any(|m| m.tag == b'D'), "{answer:?}");
    } else {
        assert_fatal(&msgs, "28000", "token has expired");
        assert!(closed);
    }
    assert_serves(&gw).await;
}

/// A FunctionCall that changes a setting airlock parses by makes the
/// messages behind it wait for its answer, as a SET does: a query pipelined
/// behind `set_config('standard_conforming_strings', 'off')` is parsed as
/// the server will parse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_that_changes_settings_makes_later_messages_wait() {
    const SET_CONFIG: i32 = 2078;
    let table = common::unique("fc_barrier");
    common::direct(&format!("create table {table} (a int)"));
    let _drop = common::Cleanup::sql(format!("drop table if exists {table}"));
    let gw = Gateway::start(&common::local_config(
        "guardrails:\n  - name: no-drops\n    match: {effects: [drop]}\n    action: deny\n",
    ))
    .await;
    let token = gw.token("alice", &["dba"]);
    let mut s = raw_login(gw.pg, "admin", "test", &token).await;
    let mut batch = function_call(SET_CONFIG, &["standard_conforming_strings", "off", "false"]);
    batch.extend_from_slice(&query(&format!("select '\\', '; drop table {table}; -- '")));
    s.write_all(&batch).await.unwrap();
    let first = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&first), None, "{first:?}");
    let second = read_until(&mut s, b'Z').await;
    assert_eq!(error_code(&second).as_deref(), Some("42501"), "{second:?}");
    assert!(error_message(&second).unwrap().contains("no-drops"));
    assert_eq!(
        common::direct(&format!(
            "select count(*) from pg_class where relname = '{table}'"
        )),
        "1",
        "the table is still there"
    );
    assert_serves(&gw).await;
}
