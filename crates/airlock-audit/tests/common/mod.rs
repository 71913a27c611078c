//! Helpers shared by the shipper and verify suites (the stores on both
//! backends come from `airlock_testkit`): raw SQL for tampering, events
//! recorded with a real `Recorder`, and a TCP proxy to take PostgreSQL down
//! and up.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use airlock_audit::event::{
    Body, Decision, Protocol, SessionEnd, SessionStart, Statement, StatementResult,
};
use airlock_audit::{Event, Recorder};
use airlock_journal::{Fsync, Options};
use airlock_testkit::pg_base;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// `host:port` of the test PostgreSQL.
pub fn pg_addr() -> String {
    let base = pg_base();
    let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

/// Raw SQL on the store's database, as someone with write access to it.
pub async fn raw(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// Exchanges two stored events' payloads and hashes (their seqs and prevs
/// stay): the events appear reordered.
pub async fn swap(url: &str, stream: Uuid, a: u64, b: u64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut rows = Vec::new();
    for seq in [a, b] {
        let row: (String, String) =
            sqlx::query_as("SELECT payload, hash FROM events WHERE stream = $1 AND seq = $2")
                .bind(stream.to_string())
                .bind(seq as i64)
                .fetch_one(&pool)
                .await
                .unwrap();
        rows.push(row);
    }
    for (seq, (payload, hash)) in [(a, &rows[1]), (b, &rows[0])] {
        sqlx::query("UPDATE events SET payload = $1, hash = $2 WHERE stream = $3 AND seq = $4")
            .bind(payload)
            .bind(hash)
            .bind(stream.to_string())
            .bind(seq as i64)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// No syncs in the way of the test; small segments, so a few dozen events
/// make several.
pub fn options() -> Options {
    Options {
        fsync: Fsync::Interval(Duration::from_secs(3600)),
        segment_bytes: 4096,
    }
}

pub fn recorder(dir: &Path) -> Arc<Recorder> {
    Recorder::open(dir, options())
}

/// Records a session at `at`: its start, one statement per decision (with
/// a result when allowed), and its end. Returns the session id and how many
/// events that was.
pub fn session(
    rec: &Recorder,
    principal: &str,
    connection: &str,
    decisions: &[Decision],
    at: SystemTime,
) -> (Uuid, u64) {
    let session = Uuid::now_v7();
    let mut n = 0;
    let mut record = |body| {
        rec.record(&Event::at(at, body)).unwrap();
        n += 1;
    };
    record(Body::SessionStart(SessionStart {
        session,
        principal: principal.into(),
        issuer: "https://issuer.test".into(),
        groups: vec!["agents".into()],
        act: None,
        act_chain: Vec::new(),
        connection: connection.into(),
        role: "reader".into(),
        access_rule: "agents".into(),
        mode: "read-only".into(),
        unmask: false,
        client_addr: "127.0.0.1:5000".into(),
        grant: None,
        application_name: Some("psql".into()),
        tls: false,
        door: airlock_audit::event::Door::Postgres,
    }));
    for (i, decision) in decisions.iter().enumerate() {
        let seq = i as u64 + 1;
        record(Body::Statement(Statement {
            session,
            seq,
            protocol: Protocol::Simple,
            text: format!("SELECT {seq} FROM customers WHERE id = $1"),
            truncated: None,
            params: Vec::new(),
            kinds: vec!["select".into()],
            effects: vec!["read".into()],
            decision: *decision,
            rule: None,
            refusal: None,
            approval: None,
        }));
        if *decision == Decision::Allow {
            record(Body::Result(StatementResult {
                session,
                seq,
                index: 0,
                duration_us: 120,
                rows: 1,
                tag: Some("SELECT 1".into()),
                suspended: false,
                error: None,
                sample: None,
                flags: Vec::new(),
            }));
        }
    }
    record(Body::SessionEnd(SessionEnd {
        session,
        reason: "client closed".into(),
        statements: decisions.len() as u64,
    }));
    (session, n)
}

/// `n` sessions of one allowed statement each (4 events per session).
pub fn sessions(rec: &Recorder, n: usize, at: SystemTime) -> u64 {
    (0..n)
        .map(|i| session(rec, &format!("agent-{i}"), "prod", &[Decision::Allow], at).1)
        .sum()
}

/// Polls `check` until it is true, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to PostgreSQL on a port of its own, to take the store down
/// (refusing connections, and cutting open ones) and bring it back.
pub struct Proxy {
    pub port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A port nothing listens on yet.
    pub fn closed() -> Proxy {
        Proxy {
            port: airlock_testkit::free_port(),
            tasks: Arc::default(),
        }
    }

    /// `postgres://…` for database `name` through the proxy.
    pub fn url(&self, name: &str) -> String {
        let base = pg_base();
        let at = base.rfind(&pg_addr()).unwrap();
        format!("{}127.0.0.1:{}/{name}", &base[..at], self.port)
    }

    pub async fn start(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(pg_addr()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Stops listening and cuts every connection.
    pub async fn stop(&self) {
        // Again until none is left: the accept loop may add one meanwhile.
        loop {
            let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
        }
    }
}
