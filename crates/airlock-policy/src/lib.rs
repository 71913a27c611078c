//! airlock's policy core: who may reach which database, as which role, and
//! how.
//!
//! It is protocol-neutral: every door (PostgreSQL today) asks it the same
//! questions with the same types. It holds the [`Principal`] a verified token
//! maps to and the access rules that route a principal to a connection and
//! role profile.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and knows
//! no wire protocol. Its inputs are values; its outputs are decisions.
#![forbid(unsafe_code)]

pub mod access;
pub mod principal;

pub use access::{AccessMode, AccessPolicy, AccessRule, Route, RouteError};
pub use principal::Principal;
