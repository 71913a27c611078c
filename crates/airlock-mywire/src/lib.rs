//! The MySQL/MariaDB client/server protocol, without I/O.
//!
//! - [`codec`]: framing (packets of 16 MiB and more are split and
//!   reassembled), length-encoded values, the OK/ERR/EOF packets airlock
//!   writes, text-row values.
//! - [`handshake::ClientHandshake`]: the connection phase with airlock as
//!   the server: greeting, SSLRequest, HandshakeResponse, and the token,
//!   always through `mysql_clear_password`.
//! - [`upstream::UpstreamLogin`]: airlock as the upstream's client, with
//!   the credential only airlock holds.
//! - [`response::Response`]: what each packet of an answer is.
//!
//! Packet types and auth scrambles come from `mysql_common`; framing and
//! row values are our own, because the relay handles every row and must not
//! decode it into values to pass it on.
//!
//! Architecture invariant: no sockets, no clock, no tokio. The one
//! randomness is the RSA padding of `caching_sha2_password`'s full
//! authentication without TLS (drawn inside `mysql_common`).
#![forbid(unsafe_code)]

pub mod codec;
pub mod errno;
pub mod handshake;
pub mod response;
pub mod upstream;
