//! The bodies of airlock's fuzz targets: one function per parser or
//! sans-IO machine that reads bytes an attacker (a client, an upstream, a
//! token issuer, a damaged disk, a config author) chooses.
//!
//! Each function takes arbitrary bytes and must return without panicking,
//! hanging or growing without bound; where the code under test promises
//! more (an unparsable statement is `unknown`, a relay writes whole
//! messages), the function asserts it. `fuzz/` wraps each one in a
//! libFuzzer target for `cargo fuzz`; `cargo test` replays the committed
//! corpora (`fuzz/corpus/<target>/`) and a short deterministic mutation
//! smoke over them (the tests below), so a crash found once stays fixed.
#![forbid(unsafe_code)]

pub mod config;
pub mod copy;
pub mod journal;
pub mod jwt;
pub mod mcp;
pub mod my;
pub mod pg;
pub mod sql;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` use.
pub const TARGETS: &[(&str, Target)] = &[
    ("pg_startup", pg::startup),
    ("pg_upstream_login", pg::upstream_login),
    ("pg_relay", pg::relay),
    ("my_framer", my::framer),
    ("my_handshake", my::handshake),
    ("my_upstream_login", my::upstream_login),
    ("my_response", my::response),
    ("sql_pg", sql::pg),
    ("sql_mysql", sql::mysql),
    ("copy_rows", copy::rows),
    ("journal", journal::segment),
    ("jwt", jwt::token),
    ("config", config::text),
    ("mcp_jsonrpc", mcp::message),
];

/// Runs target `name` on `data`: what each libFuzzer wrapper calls.
pub fn run(name: &str, data: &[u8]) {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    target(data);
}

/// Which peer sent a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// Reads fuzz input as a conversation: chunks, each led by one byte whose
/// low bit names the side (0 client, 1 upstream) and whose other seven bits
/// are the chunk's length (the last chunk may be shorter). The fuzzer so
/// picks both what each side says and where the reads cut it.
#[derive(Debug, Clone)]
pub struct Chunks<'a>(pub &'a [u8]);

impl<'a> Iterator for Chunks<'a> {
    type Item = (Side, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&lead, rest) = self.0.split_first()?;
        let len = usize::from(lead >> 1).min(rest.len());
        let (chunk, rest) = rest.split_at(len);
        self.0 = rest;
        let side = if lead & 1 == 0 {
            Side::Client
        } else {
            Side::Upstream
        };
        Some((side, chunk))
    }
}

/// Encodes a conversation in [`Chunks`]' format: how the seed corpora are
/// written from recorded exchanges.
pub fn conversation<'a>(parts: impl IntoIterator<Item = (Side, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (side, bytes) in parts {
        let bit = u8::from(side == Side::Upstream);
        for piece in bytes.chunks(127) {
            out.push((piece.len() as u8) << 1 | bit);
            out.extend_from_slice(piece);
        }
    }
    out
}

#[cfg(test)]
mod tests;
