//! Shared by the integration tests: a throwaway database per test on each
//! backend. SQLite lives in a temp dir; PostgreSQL is a fresh database on
//! `AIRLOCK_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`),
//! dropped afterwards even if the test panics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;

pub fn pg_base() -> String {
    std::env::var("AIRLOCK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Drops its database on drop, from a thread of its own: `Drop` cannot
/// await, and the test's runtime may be the one unwinding.
pub struct PgDb {
    name: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "airlock_store_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .expect("PostgreSQL for tests (set AIRLOCK_TEST_PG)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        PgDb { name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await?;
                sqlx::query(&sql).execute(&mut c).await.map(drop)
            })
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {res:?}", self.name);
        }
    }
}

/// Keeps the backing database alive for the test's duration.
pub enum Backing {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] PgDb),
}

pub async fn sqlite() -> (String, Backing) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    (url, Backing::Sqlite(dir))
}

pub async fn pg() -> (String, Backing) {
    let db = PgDb::create().await;
    (db.url(), Backing::Pg(db))
}

/// Runs each `async fn name(url: &str)` once per backend, as
/// `name::sqlite` and `name::pg`. `multi_thread:` first runs them on a
/// multi-threaded runtime (for tests racing tasks against each other).
macro_rules! both {
    (@ $attr:meta; $($name:ident),*) => { $(
        mod $name {
            #[$attr]
            async fn sqlite() {
                let (url, _keep) = crate::common::sqlite().await;
                super::$name(&url).await;
            }
            #[$attr]
            async fn pg() {
                let (url, _keep) = crate::common::pg().await;
                super::$name(&url).await;
            }
        }
    )* };
    (multi_thread: $($name:ident),* $(,)?) => {
        both!(@ tokio::test(flavor = "multi_thread", worker_threads = 4); $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        both!(@ tokio::test; $($name),*);
    };
}
