//! SQL analyzers: a door's statements mapped to the policy core's
//! [`airlock_policy::Statement`] model.
//!
//! [`pg`] uses PostgreSQL's own parser (`pg_query`). Its companion [`scs`]
//! makes the parser see strings the way a session with
//! `standard_conforming_strings = off` does. [`cache`] keeps analyses by
//! query text, per thread.
//!
//! Architecture invariant: no I/O, no clock, no wire protocol. A statement
//! that does not parse, or whose node is not mapped, is `unknown`: a
//! decision the policy core denies, not an error.
#![forbid(unsafe_code)]

pub mod cache;
mod lineage;
pub mod literals;
pub mod pg;
pub mod scs;
pub mod shape;
mod walk;

pub use pg::{Analyzer, SessionState, resolve};
