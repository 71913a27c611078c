//! The seed corpora's sources (see `write_seed_corpora`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use crate::{Side, conversation};

type Recording = Vec<(Side, Vec<u8>)>;

pub(super) fn write_all() {
    pg();
    mysql();
    sql();
    jwt();
    copy_rows();
    journal();
    config();
    mcp();
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn save(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Runs `client` against a tee on a free port that relays to `upstream`
/// and records every read, in order, with its side. The client connects
/// `connections` times (pgbench opens one connection before its clients);
/// the last connection's recording is returned.
fn record(upstream: &str, connections: usize, client: impl FnOnce(u16)) -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.to_string();
    let tee = std::thread::spawn(move || {
        let mut last = Vec::new();
        for _ in 0..connections {
            let log: Arc<Mutex<Recording>> = Arc::default();
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(&upstream).unwrap();
            let pump = |mut from: TcpStream, mut to: TcpStream, side: Side| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = from.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                            return;
                        }
                        log.lock().unwrap().push((side, buf[..n].to_vec()));
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                })
            };
            let a = pump(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Side::Client,
            );
            let b = pump(server, client, Side::Upstream);
            last.push((a, b, log));
        }
        let mut recordings: Vec<Recording> = last
            .into_iter()
            .map(|(a, b, log)| {
                a.join().unwrap();
                b.join().unwrap();
                Arc::try_unwrap(log).unwrap().into_inner().unwrap()
            })
            .collect();
        recordings.pop().unwrap()
    });
    client(port);
    tee.join().unwrap()
}

/// Runs a client to its end; a session may end in an error on purpose,
/// but it must have connected.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("connect"), "{cmd:?}: {err}");
}

/// The stream of one side.
fn stream(rec: &Recording, side: Side) -> Vec<u8> {
    rec.iter()
        .filter(|(s, _)| *s == side)
        .flat_map(|(_, b)| b.clone())
        .collect()
}

/// The recording without each side's first `skip` bytes.
fn after(rec: &Recording, skip_client: usize, skip_upstream: usize) -> Recording {
    let (mut c, mut u) = (skip_client, skip_upstream);
    rec.iter()
        .filter_map(|(side, bytes)| {
            let skip = if *side == Side::Client {
                &mut c
            } else {
                &mut u
            };
            let n = (*skip).min(bytes.len());
            *skip -= n;
            (n < bytes.len()).then(|| (*side, bytes[n..].to_vec()))
        })
        .collect()
}

fn encode(rec: &Recording) -> Vec<u8> {
    conversation(rec.iter().map(|(s, b)| (*s, b.as_slice())))
}

/// Offset just past the first PostgreSQL backend message tagged `tag`.
fn pg_after(stream: &[u8], tag: u8) -> usize {
    let mut at = 0;
    while at + 5 <= stream.len() {
        let len = u32::from_be_bytes(stream[at + 1..at + 5].try_into().unwrap()) as usize;
        at += 1 + len;
        if stream[at - 1 - len] == tag {
            return at;
        }
    }
    panic!("no {} message", tag as char);
}

fn pg_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn pg() {
    let sessions: &[(&str, &[&str])] = &[
        (
            "simple",
            &[
                "-c",
                "select 1 as one, 'x' as two; select null",
                "-c",
                "create temp table t(a int, b text); insert into t values (1, 'a\tb'), (2, null); copy t to stdout; copy t to stdout with (format csv, header)",
                "-c",
                "selec oops",
                "-c",
                "begin; select pg_sleep(0); rollback",
            ],
        ),
        (
            "notice",
            &[
                "-c",
                "do $$ begin raise notice 'hi %', 1; end $$; set application_name = 'x'",
            ],
        ),
    ];
    for (name, args) in sessions {
        let rec = record("127.0.0.1:5432", 1, |port| {
            run(Command::new("psql")
                .arg(format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable gssencmode=disable"))
                .args(*args));
        });
        save_pg(name, &rec);
    }
    let script = std::env::temp_dir().join("airlock-fuzz-seed.sql");
    std::fs::write(
        &script,
        "\\set x random(1, 9)\nselect :x::int + 1, 'v' || :x;\n",
    )
    .unwrap();
    for mode in ["extended", "prepared"] {
        let rec = record("127.0.0.1:5432", 2, |port| {
            run(Command::new("pgbench")
                .env("PGSSLMODE", "disable")
                .env("PGGSSENCMODE", "disable")
                .args([
                    "-n",
                    "-M",
                    mode,
                    "-t",
                    "3",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .arg(format!("-p{port}"))
                .arg("-f")
                .arg(&script)
                .arg("postgres"));
        });
        save_pg(mode, &rec);
    }
    // Logins the trust-auth server never asks for.
    let auth = |code: u32, extra: &[u8]| {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(extra);
        pg_message(b'R', &body)
    };
    let ready = [
        auth(0, b""),
        pg_message(b'S', b"server_version\x0015.19\x00"),
        pg_message(b'K', &[0, 0, 0, 7, 0, 0, 0, 9]),
        pg_message(b'Z', b"I"),
    ]
    .concat();
    for (name, first) in [
        ("cleartext", auth(3, b"")),
        ("md5", auth(5, b"salt")),
        ("scram", auth(10, b"SCRAM-SHA-256\x00\x00")),
        (
            "rejected",
            pg_message(
                b'E',
                b"SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00",
            ),
        ),
    ] {
        let mut seed = vec![0];
        seed.extend(conversation([(
            Side::Upstream,
            [first, ready.clone()].concat().as_slice(),
        )]));
        save("pg_upstream_login", name, &seed);
    }
}

fn save_pg(name: &str, rec: &Recording) {
    let client = stream(rec, Side::Client);
    let server = stream(rec, Side::Upstream);
    let startup_len = u32::from_be_bytes(client[..4].try_into().unwrap()) as usize;
    let login_len = pg_after(&server, b'Z');
    // The client's startup, then the token a gateway asks it for; and one
    // preceded by an SSLRequest.
    let token = pg_message(b'p', b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJkZXZpbiJ9.c2ln\x00");
    let startup = [&client[..startup_len], &token].concat();
    save(
        "pg_startup",
        name,
        &[
            &[1u8][..],
            &conversation([(Side::Client, startup.as_slice())]),
        ]
        .concat(),
    );
    let ssl = [&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f][..], &startup].concat();
    save(
        "pg_startup",
        &format!("{name}-ssl"),
        &[&[5u8][..], &conversation([(Side::Client, ssl.as_slice())])].concat(),
    );
    save(
        "pg_upstream_login",
        name,
        &[
            &[1u8][..],
            &conversation([(Side::Upstream, &server[..login_len])]),
        ]
        .concat(),
    );
    save(
        "pg_relay",
        name,
        &encode(&after(rec, startup_len, login_len)),
    );
}

/// MySQL packets of a stream: (seq, payload).
fn my_packets(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= stream.len() {
        let len = usize::from(stream[at])
            | usize::from(stream[at + 1]) << 8
            | usize::from(stream[at + 2]) << 16;
        out.push((stream[at + 3], stream[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    out
}

fn my_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut p = len.to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(payload);
    p
}

fn mysql() {
    let sessions: &[(&str, &str)] = &[
        (
            "simple",
            "select 1 as one, 'x' as two, null; show databases like 'test'",
        ),
        (
            "multi",
            "create temporary table test.t (a int primary key, b varchar(9)); insert into test.t values (1, 'a'), (2, null); select * from test.t; update test.t set b = 'c' where a = 1; select oops",
        ),
    ];
    for (name, sql) in sessions {
        let rec = record("127.0.0.1:3306", 1, |port| {
            run(Command::new("mariadb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "--skip-ssl",
                    "--force",
                    "-e",
                    sql,
                ])
                .arg(format!("-P{port}")));
        });
        let client = stream(&rec, Side::Client);
        let server = stream(&rec, Side::Upstream);
        save("my_framer", name, &encode(&rec));
        let sp = my_packets(&server);
        let cp = my_packets(&client);
        // Login: the greeting and the server's answer to the response.
        let login: Vec<u8> = sp[..2].iter().flat_map(|(s, p)| my_packet(*s, p)).collect();
        save(
            "my_upstream_login",
            name,
            &[
                &[0u8][..],
                &conversation([(Side::Upstream, login.as_slice())]),
            ]
            .concat(),
        );
        // The client's response to a greeting, then the cleartext token
        // after airlock's switch.
        let response = my_packet(cp[0].0, &cp[0].1);
        let token = my_packet(3, b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJkZXZpbiJ9.c2ln\x00");
        let hs = [response, token].concat();
        save(
            "my_handshake",
            name,
            &[&[4u8][..], &conversation([(Side::Client, hs.as_slice())])].concat(),
        );
        // Answers: each command expects results, then one chunk per packet.
        let mut parts: Vec<(Side, Vec<u8>)> = Vec::new();
        for (_, payload) in &sp[2..] {
            if parts.is_empty() || payload.first() == Some(&0x01) && payload.len() <= 2 {
                parts.push((Side::Client, vec![0]));
            }
            parts.push((Side::Upstream, payload.clone()));
        }
        let mut seed = vec![1];
        seed.extend(conversation(parts.iter().map(|(s, b)| (*s, b.as_slice()))));
        save("my_response", name, &seed);
    }
}

/// Each case's SQL from a corpus file (`-- case:` blocks).
fn cases(file: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("crates/airlock/tests/corpus").join(file)).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n-- case:").skip(1) {
        let sql: Vec<&str> = block
            .lines()
            .skip(1)
            .skip_while(|l| l.starts_with("-- "))
            .collect();
        let sql = sql.join("\n").trim_end().to_string();
        if !sql.is_empty() {
            out.push(sql);
        }
    }
    out
}

fn sql() {
    for (i, sql) in cases("policy.txt").iter().enumerate() {
        save("sql_pg", &format!("policy-{i:03}"), sql.as_bytes());
    }
    for (i, sql) in cases("mysql.txt").iter().enumerate() {
        let mode = [0u8, 1, 2][i % 3];
        save(
            "sql_mysql",
            &format!("mysql-{i:03}"),
            &[&[mode][..], sql.as_bytes()].concat(),
        );
    }
}

fn jwt() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = airlock_identity::dev::DevIssuer::open_or_create(dir.path()).unwrap();
    let jwks = issuer.jwks().to_string();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 60);
    for (name, groups, act) in [
        ("plain", vec!["ai-agents".to_string()], None),
        ("act", vec![], Some("devin".to_string())),
    ] {
        let token = issuer.mint(
            airlock_identity::dev::MintRequest {
                subject: "alice".into(),
                groups,
                ttl: Duration::from_secs(3600),
                act,
                audience: "airlock".into(),
            },
            now,
        );
        save("jwt", name, format!("{jwks}\0{token}").as_bytes());
    }
}

fn copy_rows() {
    for (name, first, row) in [
        ("text", 0u8, &b"1\talice@example.com\t\\N\ta\\tb\\\\c\n"[..]),
        ("csv", 5, b"1,\"a,b\",,\"q\"\"x\"\n"),
        ("csv-escape", 21, b"2;'it\\'s';x\n"),
        ("text-pipe", 2, b"x|y\\|z|\\N\n"),
    ] {
        save("copy_rows", name, &[&[first][..], row].concat());
    }
}

fn journal() {
    save("journal", "flip", &[1, 0, 60, 0xFF]);
    save("journal", "cut", &[2, 0, 90]);
    save("journal", "replace", &[0, 0, 0, b'A', b'L', b'J']);
}

fn config() {
    for name in ["airlock.yaml", "demo.yaml"] {
        let text = std::fs::read(root().join("examples").join(name)).unwrap();
        save("config", name, &text);
    }
    save(
        "config",
        "bad",
        b"listen: {postgres: nope}\nconnections: []\n",
    );
}

fn mcp() {
    for (name, body) in [
        (
            "initialize",
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
        ),
        (
            "tools-list",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        ),
        (
            "call",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query","arguments":{"connection":"orders","sql":"select 1"}}}"#,
        ),
        (
            "notification",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    ] {
        save("mcp_jsonrpc", name, body.as_bytes());
    }
}
