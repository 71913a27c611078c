//! airlock's policy core: who may reach which database, as which role, and
//! how.
//!
//! It is protocol-neutral: every door (PostgreSQL today) asks it the same
//! questions with the same types. It holds the [`Principal`] a verified token
//! maps to, the access rules that route a principal to a connection and role
//! profile, the [`Statement`] model a door's analyzer maps SQL to, and the
//! [`Guardrails`] that decide on statements.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and knows
//! no wire protocol. Its inputs are values; its outputs are decisions.
#![forbid(unsafe_code)]

pub mod access;
pub mod approval;
pub mod bounds;
pub mod claims;
pub mod guardrails;
pub mod hint;
pub mod judge;
pub mod lineage;
pub mod masking;
pub mod principal;
pub mod review;
pub mod statement;

pub use access::{AccessMode, AccessPolicy, AccessRule, Grant, JitRule, Route, RouteError, Writes};
pub use bounds::UniqueKeys;
pub use guardrails::{Action, Decision, Estimate, Evaluation, Guardrail, Guardrails};
pub use hint::Hint;
pub use judge::{Ask, Denial, DeniedBy, Facts, Fetch, Ruling, judge};
pub use principal::Principal;
pub use statement::{
    Disclosure, Effect, Effects, Pinned, Relation, Statement, StatementKind, SyntaxError,
    TimeoutChange, Transaction,
};
