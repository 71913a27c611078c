//! A store URL on each backend airlock's event store supports: SQLite in a
//! temp dir, and a throwaway PostgreSQL database ([`PgDb`]). [`both!`]
//! runs a check once on each.
//!
//! [`both!`]: crate::both

use tempfile::TempDir;

use crate::PgDb;

/// Keeps the backing database alive for the test's duration; dropping it
/// removes the database.
pub enum Backing {
    Sqlite(TempDir),
    Pg(PgDb),
}

/// `sqlite://…/store.db?mode=rwc` in a temp dir of its own.
pub async fn sqlite() -> (String, Backing) {
    let dir = crate::temp_dir("airlock-store");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    (url, Backing::Sqlite(dir))
}

/// A throwaway PostgreSQL database named after `prefix` (see
/// [`PgDb::create`]).
pub async fn pg(prefix: &str) -> (String, Backing) {
    let db = PgDb::create(prefix).await;
    (db.url(), Backing::Pg(db))
}

/// Runs each `async fn name(url: &str)` of the calling module once per
/// backend, as the tests `name::sqlite` and `name::pg`; the PostgreSQL
/// database is named after the calling package. `multi_thread:` first runs
/// them on a multi-threaded runtime (for tests racing tasks against each
/// other). The caller depends on `tokio` (for `#[tokio::test]`).
#[macro_export]
macro_rules! both {
    (@ $attr:meta; $($name:ident),*) => { $(
        mod $name {
            #[$attr]
            async fn sqlite() {
                let (url, _keep) = $crate::backends::sqlite().await;
                super::$name(&url).await;
            }
            #[$attr]
            async fn pg() {
                let (url, _keep) =
                    $crate::backends::pg(concat!(env!("CARGO_PKG_NAME"), "_test")).await;
                super::$name(&url).await;
            }
        }
    )* };
    (multi_thread: $($name:ident),* $(,)?) => {
        $crate::both!(@ tokio::test(flavor = "multi_thread", worker_threads = 4); $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::both!(@ tokio::test; $($name),*);
    };
}
