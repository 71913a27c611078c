//! The `airlock` binary's wiring, as a library so that end-to-end tests can
//! start the real gateway in-process. `main.rs` only parses arguments.
//!
//! This is the one crate that knows about every other crate, and the only
//! one that uses `anyhow`.
#![forbid(unsafe_code)]

pub mod demo;
mod demo_mariadb;
pub mod explain;
pub mod policy_view;
pub mod serve;
pub mod verify_report;
