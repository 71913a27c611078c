//! airlock's end-to-end tests, one binary: the real gateway started
//! in-process (or the `airlock` binary, for the CLI), real PostgreSQL, real
//! clients. One binary rather than one per suite, so the harness and the
//! whole dependency tree are compiled and linked once.
//!
//! Data the suites read stays beside this directory: the policy evasion
//! corpora in `tests/corpus/` (`policy.txt`, which the SQL crate's tests
//! read too, and `mysql.txt`; `corpus.rs` parses both) and the driver
//! matrix's scripts in `tests/drivers/` (where `scripts/setup.sh`
//! installs node-postgres).
//!
//! Run one suite with a filter: `cargo test -p airlock --test e2e -- masking::`.

mod common;
mod corpus;

mod approvals;
mod budgets;
mod cli;
mod console;
mod console_oidc;
mod data_path;
mod deploy;
mod faults;
mod handshake;
mod hints;
mod identity;
mod limits;
mod masking;
mod mcp;
mod mysql;
mod mysql_corpus;
mod policy_corpus;
mod recording;
mod review;
mod schema_only;
