//! A throwaway database on a running PostgreSQL server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;

/// The test PostgreSQL server: `AIRLOCK_TEST_PG`, by default
/// `postgres://postgres@127.0.0.1:5432` (trust auth). No database part.
pub fn pg_base() -> String {
    std::env::var("AIRLOCK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own for one test, dropped (`WITH (FORCE)`, so open
/// connections do not keep it) when this is dropped, however the test ends.
pub struct PgDb {
    server: String,
    name: String,
}

impl PgDb {
    /// A fresh database on [`pg_base`], named `<prefix>_<pid>_<n>_<nanos>`
    /// (`prefix` lowercased, anything but letters and digits made `_`).
    pub async fn create(prefix: &str) -> PgDb {
        PgDb::create_on(&pg_base(), prefix).await
    }

    /// A fresh database on `server` (`postgres://user@host:port`, no
    /// database part), as [`PgDb::create`].
    pub async fn create_on(server: &str, prefix: &str) -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL for tests at {server} (AIRLOCK_TEST_PG): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        PgDb {
            server: server.to_string(),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://…/<name>`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for PgDb {
    /// From a thread of its own: `Drop` cannot await, and the test's
    /// runtime may be the one unwinding.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = format!("{}/postgres", self.server);
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&sql).execute(&mut c).await.map(drop)
            })
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {res:?}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(name: &str) -> bool {
        let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap();
        n == 1
    }

    #[tokio::test]
    async fn the_database_is_dropped_even_when_the_test_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let panicked = tokio::spawn(async move {
            let db = PgDb::create("airlock-testkit").await;
            tx.send(db.name().to_string()).unwrap();
            // Open while dropped: FORCE cuts it.
            let _c = sqlx::PgConnection::connect(&db.url()).await.unwrap();
            panic!("the test fails");
        })
        .await;
        assert!(panicked.unwrap_err().is_panic());
        let name = rx.recv().unwrap();
        assert!(name.starts_with("airlock_testkit_"), "{name}");
        assert!(!exists(&name).await, "{name} was dropped");
    }
}
