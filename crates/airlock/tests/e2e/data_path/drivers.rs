//! The driver matrix: real clients through the gateway, no mocks. psql,
//! psycopg 3, asyncpg, node-postgres and pgjdbc each run twice, once as a
//! read-only principal (access rule `agents`, `mode: read-only`) and once as
//! a read-write one (rule `dba`); masking (`*.email`, strategy `email`)
//! applies to both, neither is exempt.
//!
//! Each run is one script in `tests/drivers/` (`*_matrix.*`), started as a
//! child process with the gateway's address, a token and a table of its own
//! in the environment. A script runs these steps and prints one JSON line
//! with what its driver decoded in each (or `{"error": {"sqlstate",
//! "message"}}` when a step failed), which [`expected`] spells out:
//!
//! - `connect`: the driver's own login and session setup;
//! - `param_select`: a parameterised query (the email comes back masked);
//! - `prepared_reuse`: one prepared statement executed 7 times, past
//!   pgjdbc's and psycopg's `prepareThreshold` of 5, so the last executions
//!   run a named server-side statement; `server_prepared` reads
//!   `pg_prepared_statements` to show it is one;
//! - `read_only_tx`: a read-only transaction (`setReadOnly(true)` in JDBC,
//!   `BEGIN READ ONLY` or the driver's equivalent elsewhere); for the
//!   read-write principal a write inside it fails upstream (`ro_tx_write`,
//!   `25006`);
//! - `types_select` and `types_params`: numeric, timestamptz, text[] and
//!   int[], bytea, json and jsonb decoded from a seeded row and round-tripped
//!   as bound parameters;
//! - read-write: a parameterised INSERT of the same typed values, read back
//!   (`inserted`, email masked), UPDATE and DELETE `WHERE id = $1`, each
//!   with its row count, then checked on the upstream directly;
//! - read-only: a parameterised UPDATE refused with `42501` by the
//!   read-only rule, as the driver reports it (`write_refused`), the
//!   session still usable afterwards (`after_refusal`), and the table
//!   unchanged upstream.
//!
//! psql 15 has no `\bind`: its script uses SQL `PREPARE`/`EXECUTE` and
//! prints sections the test turns into the same JSON ([`psql_result`]).
//!
//! What the scripts need is installed by `scripts/setup.sh` (psycopg and
//! asyncpg with pip, `pg` with `npm ci` there, pgjdbc from Debian's
//! `libpostgresql-jdbc-java`); a missing one fails the test, never skips it.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use super::{blocking, direct};
use crate::common::{self, Cleanup, Gateway};

/// The only masking rule: every `email` column.
const MASKING: &str = r#"masking:
  rules:
    - {name: email, columns: ["*.email"], strategy: email}
"#;

/// The seeded rows' names, ids 1 to 7; each email is `name@example.org`.
const NAMES: [&str; 7] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
];

// The typed values every driver decodes and round-trips. The numeric has
// more digits than a double holds; the array elements need quoting.
const AMOUNT: &str = "1234567890123.456789";
const AT_TEXT: &str = "2024-02-29 12:34:56.789+00";
const AT_MS: i64 = 1_709_210_096_789;
const TAGS: [&str; 3] = ["alpha", "b,c", "d \"e\""];
const TAGS_LITERAL: &str = r#"{alpha,"b,c","d \"e\""}"#;
const NUMS: [i32; 3] = [1, -2, 3];
const NUMS_LITERAL: &str = "{1,-2,3}";
const PAYLOAD_HEX: &str = "00ff10deadbeef";
/// ASCII only (a JSON escape for the non-ASCII character), so it passes
/// through any locale's environment and command line unchanged.
const DOC: &str = r#"{"k": [1, 2.5, "x"], "u": "\u00e9"}"#;

/// How long one script may run: a JVM compiling its source on a busy
/// two-core machine takes a few seconds; a hung driver is cut here.
const RUN_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy)]
enum Driver {
    Psql,
    Psycopg,
    Asyncpg,
    NodePg,
    Pgjdbc,
}

impl Driver {
    /// The name the script reports as `driver`.
    fn name(self) -> &'static str {
        match self {
            Driver::Psql => "psql",
            Driver::Psycopg => "psycopg",
            Driver::Asyncpg => "asyncpg",
            Driver::NodePg => "node-postgres",
            Driver::Pgjdbc => "pgjdbc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadOnly,
    ReadWrite,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ReadOnly => "read-only",
            Mode::ReadWrite => "read-write",
        }
    }
}

/// The directory of the scripts (and of node-postgres' `node_modules`).
fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// A schema of this test's own with the seeded table `items`, dropped
/// however the test ends.
struct Fixture {
    table: String,
    _cleanup: Cleanup,
}

fn seed() -> Fixture {
    let schema = common::unique("drivers");
    let cleanup = Cleanup::sql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let table = format!("{schema}.items");
    let names = NAMES.map(|n| format!("'{n}'")).join(", ");
    common::direct(&format!(
        r#"CREATE SCHEMA {schema};
CREATE TABLE {table} (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text,
    amount numeric,
    at timestamptz,
    tags text[],
    nums int[],
    payload bytea,
    doc json,
    docb jsonb
);
INSERT INTO {table} (id, name, email, amount, at, tags, nums, payload, doc, docb)
SELECT i, n, n || '@example.org', '{AMOUNT}', '{AT_TEXT}', '{TAGS_LITERAL}', '{NUMS_LITERAL}',
       '\x{PAYLOAD_HEX}', '{DOC}', '{DOC}'
FROM unnest(ARRAY[{names}]) WITH ORDINALITY AS u(n, i);"#
    ));
    Fixture {
        table,
        _cleanup: cleanup,
    }
}

/// The typed values as every script reports them.
fn typed() -> Value {
    let doc: Value = serde_json::from_str(DOC).unwrap();
    json!({
        "amount": AMOUNT,
        "at_ms": AT_MS,
        "tags": TAGS,
        "nums": NUMS,
        "payload": PAYLOAD_HEX,
        "doc": doc,
        "docb": doc,
    })
}

/// What the `email` strategy shows of `local@domain`.
fn masked_email(local: &str, domain: &str) -> String {
    format!("{}***@{domain}", &local[..1])
}

/// The JSON a script must print for `driver` as a `mode` principal.
fn expected(driver: Driver, mode: Mode) -> Value {
    let reused: Vec<Value> = NAMES
        .iter()
        .map(|n| json!([n, masked_email(n, "example.org"), AMOUNT]))
        .collect();
    let mut want = json!({
        "driver": driver.name(),
        "connect": "ok",
        "param_select": {"id": 1, "name": "alpha", "email": masked_email("alpha", "example.org")},
        "prepared_reuse": reused,
        "server_prepared": true,
        "read_only_tx": {"transaction_read_only": "on", "count": NAMES.len()},
        "types_select": typed(),
        "types_params": typed(),
    });
    let more = match mode {
        Mode::ReadWrite => json!({
            "ro_tx_write": "25006",
            "insert": 1,
            "inserted": {
                "id": 100,
                "name": "zulu",
                "email": masked_email("zed", "example.com"),
                "values": typed(),
            },
            "update": 1,
            "delete": 1,
        }),
        Mode::ReadOnly => json!({
            "write_refused": "42501",
            "after_refusal": NAMES.len(),
        }),
    };
    want.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    want
}

/// JSON text with every non-ASCII character escaped, for the environment.
fn ascii_json(v: &Value) -> String {
    let mut out = String::new();
    for c in serde_json::to_string(v).unwrap().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Runs `driver`'s script through the gateway and returns its output.
async fn run_script(gw: &Gateway, driver: Driver, mode: Mode, token: &str, table: &str) -> Output {
    let user = match mode {
        Mode::ReadOnly => "readonly",
        Mode::ReadWrite => "admin",
    };
    let dir = scripts();
    let mut cmd = match driver {
        Driver::Psql => {
            let mut c = tokio::process::Command::new("psql");
            c.arg("-X").arg(gw.conninfo("test", user));
            let rw = if mode == Mode::ReadWrite {
                "true"
            } else {
                "false"
            };
            let payload = format!("\\x{PAYLOAD_HEX}");
            for (k, v) in [
                ("tbl", table),
                ("rw", rw),
                ("amount", AMOUNT),
                ("at", AT_TEXT),
                ("tags", TAGS_LITERAL),
                ("nums", NUMS_LITERAL),
                ("payload", payload.as_str()),
                ("doc", DOC),
            ] {
                c.arg("-v").arg(format!("{k}={v}"));
            }
            c.arg("-f").arg(dir.join("psql_matrix.sql"));
            c.env("PGPASSWORD", token)
                .env("PGTZ", "UTC")
                .env("PGCLIENTENCODING", "UTF8");
            c
        }
        Driver::Psycopg | Driver::Asyncpg => {
            let mut c = tokio::process::Command::new("python3");
            c.arg(dir.join(match driver {
                Driver::Psycopg => "psycopg_matrix.py",
                _ => "asyncpg_matrix.py",
            }));
            c
        }
        Driver::NodePg => {
            let mut c = tokio::process::Command::new("node");
            c.arg(dir.join("node_pg_matrix.js"));
            c
        }
        Driver::Pgjdbc => {
            let mut c = tokio::process::Command::new("java");
            c.args(["-cp", "/usr/share/java/postgresql.jar"])
                .arg(dir.join("PgjdbcMatrix.java"));
            c
        }
    };
    cmd.current_dir(&dir)
        .env("MATRIX_HOST", gw.pg.ip().to_string())
        .env("MATRIX_PORT", gw.pg.port().to_string())
        .env("MATRIX_DB", "test")
        .env("MATRIX_USER", user)
        .env("MATRIX_PASSWORD", token)
        .env("MATRIX_TABLE", table)
        .env("MATRIX_MODE", mode.name())
        .env("MATRIX_TYPED", ascii_json(&typed()))
        // The same values one by one, for the script that parses no JSON.
        .env("MATRIX_AMOUNT", AMOUNT)
        .env("MATRIX_AT_MS", AT_MS.to_string())
        .env("MATRIX_TAGS", TAGS.join("\n"))
        .env("MATRIX_NUMS", NUMS.map(|n| n.to_string()).join(","))
        .env("MATRIX_PAYLOAD", PAYLOAD_HEX)
        .env("MATRIX_DOC", DOC)
        .kill_on_drop(true);
    match tokio::time::timeout(RUN_LIMIT, cmd.output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{} does not start: {e}", driver.name())),
        Err(_) => panic!(
            "{} ({}) did not finish within {RUN_LIMIT:?}",
            driver.name(),
            mode.name()
        ),
    }
}

/// The result line a script printed: its last line of output.
fn script_result(out: &Output) -> Option<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str(last).ok()
}

/// psql's `@step` sections, as the JSON the other scripts print. A section
/// that does not read as expected is kept as `{"unparsed": [lines]}`.
fn psql_result(stdout: &str) -> Value {
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix('@') {
            sections.push((name, Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("driver".into(), json!("psql"));
    for (name, lines) in sections {
        let value = psql_section(name, &lines).unwrap_or_else(|| json!({ "unparsed": lines }));
        out.insert(name.into(), value);
    }
    Value::Object(out)
}

fn psql_section(name: &str, lines: &[&str]) -> Option<Value> {
    let fields = |l: &str| l.split('|').map(str::to_string).collect::<Vec<_>>();
    let one = || match lines {
        [l] => Some(*l),
        _ => None,
    };
    Some(match name {
        "connect" => json!(one()?),
        "ro_tx_write" | "write_refused" => match lines {
            [code, message] => json!({"sqlstate": code, "message": message}),
            _ => return None,
        },
        "server_prepared" => match one()? {
            "t" => json!(true),
            "f" => json!(false),
            _ => return None,
        },
        "insert" | "update" | "delete" | "after_refusal" => json!(one()?.parse::<i64>().ok()?),
        "param_select" => match fields(one()?).as_slice() {
            [id, name, email] => {
                json!({"id": id.parse::<i64>().ok()?, "name": name, "email": email})
            }
            _ => return None,
        },
        "prepared_reuse" => json!(lines.iter().map(|l| fields(l)).collect::<Vec<_>>()),
        "read_only_tx" => match lines {
            [ro, n] => json!({"transaction_read_only": ro, "count": n.parse::<i64>().ok()?}),
            _ => return None,
        },
        "types_select" | "types_params" => psql_typed(&fields(one()?))?,
        "inserted" => {
            let f = fields(one()?);
            if f.len() != 10 {
                return None;
            }
            json!({
                "id": f[0].parse::<i64>().ok()?,
                "name": f[1],
                "email": f[2],
                "values": psql_typed(&f[3..])?,
            })
        }
        _ => return None,
    })
}

/// psql's text forms of the typed columns, as the other scripts report them.
fn psql_typed(f: &[String]) -> Option<Value> {
    let [amount, at, tags, nums, payload, doc, docb] = f else {
        return None;
    };
    let nums = pg_array(nums)?
        .iter()
        .map(|n| n.parse::<i64>().ok())
        .collect::<Option<Vec<_>>>()?;
    Some(json!({
        "amount": amount,
        "at_ms": utc_timestamp_ms(at)?,
        "tags": pg_array(tags)?,
        "nums": nums,
        "payload": payload.strip_prefix("\\x")?,
        "doc": serde_json::from_str::<Value>(doc).ok()?,
        "docb": serde_json::from_str::<Value>(docb).ok()?,
    }))
}

/// A one-dimensional array literal (`{a,"b,c","d \"e\""}`) split into its
/// elements.
fn pg_array(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// Milliseconds since the epoch of a timestamptz as PostgreSQL prints it
/// with `TimeZone=UTC` and `DateStyle=ISO`: `2024-02-29 12:34:56.789+00`.
fn utc_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix("+00")?;
    let (date, time) = s.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [y, m, day] = d[..] else { return None };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, min, sec] = t[..] else { return None };
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + ms)
}

/// Replaces each expected refusal's `{sqlstate, message}` by its SQLSTATE
/// alone when the message gives the expected reason; anything else stays
/// whole, for the report.
fn settle_refusals(got: &mut Value) {
    for (key, reason) in [
        // airlock's read-only rule.
        ("write_refused", "is read-only"),
        // The upstream, inside BEGIN READ ONLY.
        ("ro_tx_write", "read-only transaction"),
    ] {
        let Some(v) = got.get_mut(key) else { continue };
        let settled = match (v["sqlstate"].as_str(), v["message"].as_str()) {
            (Some(code), Some(message)) if message.contains(reason) => Some(code.to_string()),
            _ => None,
        };
        if let Some(code) = settled {
            *v = json!(code);
        }
    }
}

/// Every key on which `got` differs from `want`, with both values.
fn differences(want: &Value, got: &Value) -> Vec<String> {
    let (Some(w), Some(g)) = (want.as_object(), got.as_object()) else {
        return vec![format!("expected an object, got {got}")];
    };
    let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| w.get(*k) != g.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(missing)".to_string(), Value::to_string);
            format!(
                "{k}:\n    expected {}\n    got      {}",
                show(w.get(k)),
                show(g.get(k))
            )
        })
        .collect()
}

/// The seeded table as `id:name` pairs, in id order, read upstream.
async fn rows_upstream(table: &str) -> String {
    direct(&format!(
        "SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM {table}"
    ))
    .await
}

/// A digest of every value of the table, read upstream.
async fn digest_upstream(table: &str) -> String {
    direct(&format!(
        "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
    ))
    .await
}

/// One cell of the matrix: seeds a table, starts a gateway, runs the
/// driver's script as a `mode` principal, and checks what it printed and
/// what it left on the upstream.
async fn matrix(driver: Driver, mode: Mode) {
    let fixture = blocking(seed).await;
    let table = fixture.table.clone();
    let before = digest_upstream(&table).await;
    // Started after the seed, so the masked sessions' catalog knows the table.
    let gw = Gateway::start(&common::local_config(MASKING)).await;
    let token = match mode {
        Mode::ReadOnly => gw.token("agent-7", &["ai-agents"]),
        Mode::ReadWrite => gw.token("alice", &["dba"]),
    };
    let out = run_script(&gw, driver, mode, &token, &table).await;
    let mut got = match driver {
        Driver::Psql => Some(psql_result(&String::from_utf8_lossy(&out.stdout))),
        _ => script_result(&out),
    };
    if let Some(got) = &mut got {
        settle_refusals(got);
    }
    let mut problems = match &got {
        Some(got) => differences(&expected(driver, mode), got),
        None => vec!["the script printed no JSON result line".to_string()],
    };

    // What the session left upstream.
    let mut names: Vec<String> = NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}:{n}", i + 1))
        .collect();
    match mode {
        Mode::ReadWrite => {
            names[1] = "2:bravo-updated".into();
            names.remove(2);
            names.push("100:zulu".into());
            let row = direct(&format!(
                "SELECT concat_ws('|', email, amount::text, (extract(epoch FROM at) * 1000)::bigint, \
                 tags::text, nums::text, encode(payload, 'hex'), doc::jsonb = '{DOC}'::jsonb, \
                 docb = '{DOC}'::jsonb) FROM {table} WHERE id = 100"
            ))
            .await;
            let want = format!(
                "zed@example.com|{AMOUNT}|{AT_MS}|{TAGS_LITERAL}|{NUMS_LITERAL}|{PAYLOAD_HEX}|t|t"
            );
            if row != want {
                problems.push(format!(
                    "upstream row 100:\n    expected {want}\n    got      {row}"
                ));
            }
        }
        Mode::ReadOnly => {
            let after = digest_upstream(&table).await;
            if after != before {
                problems.push("the read-only session changed the table upstream".into());
            }
        }
    }
    let rows = rows_upstream(&table).await;
    if rows != names.join(",") {
        problems.push(format!(
            "upstream rows:\n    expected {}\n    got      {rows}",
            names.join(",")
        ));
    }
    gw.stop().await;

    assert!(
        problems.is_empty(),
        "{} as a {} principal (exit {:?}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
        driver.name(),
        mode.name(),
        out.status.code(),
        problems.join("\n"),
        common::stdout(&out),
        common::stderr(&out),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_read_only() {
    matrix(Driver::Psql, Mode::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_read_write() {
    matrix(Driver::Psql, Mode::ReadWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_read_only() {
    matrix(Driver::Psycopg, Mode::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_read_write() {
    matrix(Driver::Psycopg, Mode::ReadWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_read_only() {
    matrix(Driver::Asyncpg, Mode::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_read_write() {
    matrix(Driver::Asyncpg, Mode::ReadWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_read_only() {
    matrix(Driver::NodePg, Mode::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_read_write() {
    matrix(Driver::NodePg, Mode::ReadWrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_read_only() {
    matrix(Driver::Pgjdbc, Mode::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_read_write() {
    matrix(Driver::Pgjdbc, Mode::ReadWrite).await;
}
