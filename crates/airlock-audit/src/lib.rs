//! airlock's recorder: what every door reports to.
//!
//! - [`event`]: the audit event schema (SPEC §9), one JSON object per event.
//! - [`recorder`]: the process's journal writer. A statement's event is
//!   appended (the `write(2)` has returned) before the statement goes
//!   upstream; a failed append makes the door refuse it with `58000`.
//! - [`ship`]: the background shipper from the journal to the store, with
//!   tamper alarms where the two disagree, and retention.
//! - [`replay`]: a session as a psql-like transcript.
//! - [`export`]: stored events as JSON lines or OCSF.
//! - [`verify`](mod@verify): `airlock audit verify`, the journal, the
//!   store's copy and one against the other, naming the first broken link.
//!
//! Protocol adapters build events (redacting values first: nothing masking
//! would hide is ever recorded) and call [`Recorder::record`]; they make no
//! recording decisions of their own beyond what to put in an event.
#![forbid(unsafe_code)]

pub mod event;
pub mod export;
pub mod recorder;
pub mod replay;
pub mod ship;
pub mod verify;

pub use event::{Body, Event};
pub use recorder::{RecordError, Recorder};
pub use ship::{
    PruneReport, ShipError, ShipReport, Shipper, StoreSlot, TamperAlarm, connect, run, ship_once,
};
pub use verify::{Broken, Problem, Report, StoreBroken, VerifyError, verify};
