//! Fixtures shared by airlock's test suites, one copy each: a throwaway
//! PostgreSQL database per test ([`PgDb`]), a store URL on each backend
//! ([`backends`], [`both!`]), a PostgreSQL cluster of its own
//! ([`Cluster`]), a MariaDB server of its own ([`MariaDb`]), a database of
//! its own on the machine's MariaDB ([`MyDb`]), free ports
//! and temp dirs.
//!
//! Everything a fixture starts or creates is stopped or dropped when the
//! fixture is dropped, also when the test panics. Servers run as their
//! service user (`postgres`, `mysql`) when the tests run as root, since
//! neither agrees to run as root.
//!
//! Only ever a `[dev-dependencies]` entry; it depends on no airlock crate,
//! so changing one never rebuilds it.

pub mod backends;
mod cluster;
mod mariadb;
mod os;
mod pg;

pub use cluster::{Cluster, HostAuth};
pub use mariadb::{LOCAL_MARIADB_PORT, MariaDb, MyDb};
pub use os::{free_port, temp_dir};
pub use pg::{PgDb, pg_base};
