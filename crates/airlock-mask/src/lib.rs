//! airlock's protocol-neutral value masking.
//!
//! The policy core decides *which* values are masked and with which
//! [`Strategy`]; this crate does the masking, for any door: content
//! [`Detectors`] that find sensitive values in any text, a [`Masker`] that
//! applies strategies to values and spans, [`scrub`] for server error texts
//! that quote values back, [`looks_masked`] to refuse writing masks back,
//! and [`copy`] to rewrite `COPY … TO STDOUT` rows field by field.
//!
//! Architecture invariant: no I/O except reading or creating the masking
//! key file ([`Masker::load_or_create`]), no async, no regex: detectors are
//! hand-written scanners with a cheap prefilter, because they run on every
//! value of every result that has content detection enabled.
#![forbid(unsafe_code)]

pub mod copy;
mod detect;
mod mask;
mod masking;
pub mod planted;
mod scrub;

pub use airlock_policy::masking::{Detector, Strategy};
pub use detect::Detectors;
pub use mask::{Masked, Masker, PLACEHOLDER, looks_masked};
pub use masking::Masking;
pub use scrub::{Keep, Quote, scrub};
