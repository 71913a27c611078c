//! The ready phase: messages between an authenticated client and its
//! upstream session.
//!
//! [`Relay`] frames both directions and forwards whole messages. It is the
//! one place that sees every frontend message after login, so it is where
//! the gateway refuses what it must: message types that have no business
//! after login, messages over the size limit, and FunctionCall, which calls
//! a function by OID without any SQL for the gateway to inspect.
//!
//! Refusals that PostgreSQL would answer with an ERROR (not FATAL) must
//! reach the client in order with the other responses, and must leave the
//! transaction exactly as PostgreSQL would (aborted, inside a block). The
//! relay gets both for free by substituting the refused message with a
//! statement that raises the same error upstream: the upstream answers it in
//! sequence and aborts the transaction itself.

use bytes::{Buf, BytesMut};

use crate::codec;
use crate::error::ProtocolError;
use crate::sqlstate;

/// Frontend message types a client may send after login.
const FRONTEND_TAGS: &[u8] = b"QPBEDCSHFdcfX";

/// What the driver must do after [`Relay::handle_client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum ClientFlow {
    /// Keep relaying.
    Continue,
    /// The client sent Terminate (already queued for the upstream): flush
    /// and close both sides.
    Terminate,
}

/// The ready-phase state machine of one session.
#[derive(Debug)]
pub struct Relay {
    max_message: usize,
    status: u8,
}

impl Relay {
    /// `status` is the transaction status of the upstream's first
    /// ReadyForQuery; `max_message` bounds every message in both directions.
    pub fn new(max_message: usize, status: u8) -> Self {
        Relay {
            max_message,
            status,
        }
    }

    /// The transaction status of the last ReadyForQuery relayed: `I`, `T` or
    /// `E`.
    pub fn transaction_status(&self) -> u8 {
        self.status
    }

    /// Moves every whole client message from `input` to `to_upstream`.
    pub fn handle_client(
        &mut self,
        input: &mut BytesMut,
        to_upstream: &mut BytesMut,
    ) -> Result<ClientFlow, ProtocolError> {
        let mut flow = ClientFlow::Continue;
        // `end` is the end of a run of messages forwarded as they are; the
        // run is copied in one piece when it ends.
        let mut end = 0;
        while let Some(h) = codec::peek_header(&input[end..], self.max_message)? {
            if input.len() - end < h.total_len {
                break;
            }
            match h.tag {
                b'F' => {
                    to_upstream.extend_from_slice(&input[..end]);
                    input.advance(end + h.total_len);
                    end = 0;
                    refuse_upstream(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "airlock: the FunctionCall protocol message is not supported; call the function in a SQL statement",
                        to_upstream,
                    );
                    continue;
                }
                b'X' => {
                    end += h.total_len;
                    flow = ClientFlow::Terminate;
                    break;
                }
                tag if FRONTEND_TAGS.contains(&tag) => end += h.total_len,
                tag => {
                    return Err(ProtocolError::UnexpectedMessage {
                        tag,
                        context: "invalid frontend message type",
                    });
                }
            }
        }
        to_upstream.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(flow)
    }

    /// Moves every whole upstream message from `input` to `to_client`.
    pub fn handle_upstream(
        &mut self,
        input: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        let mut end = 0;
        while let Some(h) = codec::peek_header(&input[end..], self.max_message)? {
            if input.len() - end < h.total_len {
                break;
            }
            if h.tag == b'Z' && h.total_len == 6 {
                self.status = input[end + 5];
            }
            end += h.total_len;
        }
        to_client.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(())
    }
}

/// Queues, in place of a refused message, a statement that makes the
/// upstream raise `code` with `message`.
fn refuse_upstream(code: &str, message: &str, to_upstream: &mut BytesMut) {
    debug_assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    let sql = format!(
        "DO $airlock$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{}'; END$airlock$",
        message.replace('\'', "''").replace("$airlock$", "")
    );
    codec::query(&sql, to_upstream);
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn msg(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn forwards_whole_messages_and_keeps_partial_ones() {
        let mut relay = Relay::new(1024, b'I');
        let mut input = BytesMut::new();
        input.extend_from_slice(&msg(b'P', b"\0select 1\0\0\0"));
        input.extend_from_slice(&msg(b'B', b"\0\0\0\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'E', b"\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'S', b""));
        let whole = input.len();
        let next = msg(b'Q', b"select 2\0");
        input.extend_from_slice(&next[..3]);
        let mut out = BytesMut::new();
        assert_eq!(relay.handle_client(&mut input, &mut out).unwrap(), ClientFlow::Continue);
        assert_eq!(out.len(), whole);
        assert_eq!(&input[..], &next[..3]);
        input.extend_from_slice(&next[3..]);
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert_eq!(&out[whole..], &next[..]);
        assert!(input.is_empty());
    }

    #[test]
    fn terminate_stops_the_relay() {
        let mut relay = Relay::new(1024, b'I');
        let mut input = msg(b'X', b"");
        input.extend_from_slice(&msg(b'Q', b"select 1\0"));
        let mut out = BytesMut::new();
        assert_eq!(relay.handle_client(&mut input, &mut out).unwrap(), ClientFlow::Terminate);
        assert_eq!(&out[..], &msg(b'X', b"")[..]);
    }

    #[test]
    fn function_call_is_replaced_by_an_upstream_raise() {
        let mut relay = Relay::new(1024, b'I');
        let mut input = msg(b'Q', b"select 1\0");
        input.extend_from_slice(&msg(b'F', b"\0\0\x04\xd2\0\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let first = codec::parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(&first.body[..], b"select 1\0");
        let sub = codec::parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(sub.tag, b'Q');
        let sql = String::from_utf8(sub.body.to_vec()).unwrap();
        assert!(sql.starts_with("DO $airlock$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'"));
        let last = codec::parse_message(&mut out, 1024).unwrap().unwrap();
        assert_eq!(&last.body[..], b"select 2\0");
    }

    #[test]
    fn refuses_unknown_and_login_messages() {
        for tag in [b'p', b'Z', b'?', 0] {
            let mut relay = Relay::new(1024, b'I');
            let mut out = BytesMut::new();
            let err = relay
                .handle_client(&mut msg(tag, b"x\0"), &mut out)
                .unwrap_err();
            assert!(matches!(err, ProtocolError::UnexpectedMessage { .. }), "{tag}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn enforces_the_size_limit_on_the_header() {
        let mut relay = Relay::new(64, b'I');
        let mut input = BytesMut::new();
        input.put_u8(b'Q');
        input.put_i32(65);
        let mut out = BytesMut::new();
        assert_eq!(
            relay.handle_client(&mut input, &mut out),
            Err(ProtocolError::TooLarge { len: 65, max: 64 })
        );
        let mut up = BytesMut::new();
        up.put_u8(b'D');
        up.put_i32(1 << 30);
        assert!(relay.handle_upstream(&mut up, &mut out).is_err());
    }

    #[test]
    fn tracks_transaction_status() {
        let mut relay = Relay::new(1024, b'I');
        let mut input = msg(b'C', b"BEGIN\0");
        input.extend_from_slice(&msg(b'Z', b"T"));
        let mut out = BytesMut::new();
        relay.handle_upstream(&mut input, &mut out).unwrap();
        assert_eq!(relay.transaction_status(), b'T');
        assert_eq!(out.len(), 17);
    }
}
