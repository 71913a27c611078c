//! SQL analyzers: a door's statements mapped to the policy core's
//! [`airlock_policy::Statement`] model.
//!
//! [`pg`] uses PostgreSQL's own parser (`pg_query`); [`mysql`] reads
//! MySQL and MariaDB texts with a pre-lexer of its own in front of
//! sqlparser. Its companion [`scs`]
//! makes the parser see strings the way a session with
//! `standard_conforming_strings = off` does. [`cache`] keeps analyses by
//! query text, per thread.
//!
//! Architecture invariant: no I/O, no clock, no wire protocol. A statement
//! that does not parse, or whose node is not mapped, is `unknown`: a
//! decision the policy core denies, not an error; [`syntax`] gives it the
//! error PostgreSQL itself would report.
//!
//! `unsafe` is denied everywhere but in [`syntax`], which calls libpg_query's
//! C API for what pg_query's Rust API leaves out (a parse error's cursor
//! position).
#![deny(unsafe_code)]

pub mod cache;
pub mod disclosure;
pub mod image;
mod lineage;
pub mod literals;
pub mod mysql;
mod parse_sqlstate;
pub mod pg;
pub mod scs;
pub mod shape;
pub mod syntax;
mod walk;

pub use pg::{Analyzer, SessionState, resolve};

/// A new analyzer's identity (both dialects' share one sequence), so
/// that caches keep apart the analyses of different policies.
pub(crate) fn next_analyzer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
