//! airlock's session engine: what every door does the same way, without
//! knowing any wire protocol.
//!
//! A door (the PostgreSQL door in `airlock-gateway` today) reads its
//! client's bytes, turns them into the protocol-neutral model, and asks:
//! - [`open`]: the credential it read → a verified principal → a route with
//!   live just-in-time grants → when the session must end → the
//!   session-start event;
//! - the judge (`airlock_policy::judge`), for every statement;
//! - [`limits`]: a place for the session under the per-principal and
//!   per-connection caps, kept for its life;
//! - [`hold`]: a statement held for approval, from request to a neutral
//!   [`hold::HoldOutcome`] the door maps to its own error;
//! - [`recording::RecordingSession`]: the statement, result and approval
//!   events of the session, redacted by the door's dialect;
//! - [`approvals::Approvals`]: the one background worker per process that
//!   wakes held statements and cuts sessions whose grant ends.
//!
//! Architecture invariants: the engine depends on no door and knows no wire
//! format (no SQLSTATE, no message tag). Wall-clock time comes in as an
//! argument (a door reads its [`clock::Clock`]); the engine reads it itself
//! only for event stamps and the hold's tokio timer, which tests pause.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod clock;
pub mod hold;
pub mod limits;
pub mod open;
pub mod recording;
