//! The PostgreSQL door of airlock, without I/O.
//!
//! This crate holds the frontend/backend protocol 3.0 codec and the state
//! machines of a gateway session: [`startup::ClientHandshake`] (the client
//! side, up to the token), [`upstream::UpstreamLogin`] (airlock logging in
//! to the database with the credential it holds) and [`relay::Relay`] (the
//! ready phase). Each is fed bytes and returns what to send and what to do
//! next, in the style of `quinn-proto`.
//!
//! What it deliberately does not do: sockets, TLS, timers, randomness and
//! token verification all live in `airlock-gateway`, which drives these
//! machines (SCRAM's client nonce is the caller's: [`scram`]). Policy
//! decisions are not made here either: the relay refuses only what breaks
//! or bypasses the protocol itself.
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod params;
pub mod relay;
pub mod scram;
pub mod sqlstate;
pub mod startup;
pub mod upstream;

pub use error::ProtocolError;
