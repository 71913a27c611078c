//! The ready phase: messages between an authenticated client and its
//! upstream session.
//!
//! [`Relay`] frames both directions and forwards whole messages. It is the
//! one place that sees every frontend message after login, so it is where
//! statements are judged: each simple Query and each Parse goes to the
//! session's [`Inspector`] before anything reaches the upstream. It also
//! refuses, on its own, what breaks or bypasses the protocol: message types
//! that have no business after login, messages over the size limit, and
//! FunctionCall, which calls a function by OID without any SQL to inspect.
//!
//! A refusal must reach the client in order with the other responses, and
//! must leave the transaction exactly as PostgreSQL would after an error
//! (aborted, inside a block; the rest of an extended-protocol batch skipped
//! until Sync). The relay gets all of that from the upstream itself: it
//! replaces the refused message with one that fails to parse upstream
//! (`AIRLOCK_REFUSED_<n>`), and rewrites the resulting syntax error into the
//! refusal on its way back. Nothing of the refused message reaches the
//! upstream.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use crate::codec::{self, Notice, Severity};
use crate::error::ProtocolError;
use crate::sqlstate;

/// Frontend message types a client may send after login.
const FRONTEND_TAGS: &[u8] = b"QPBEDCSHFdcfX";

/// The token a refused message is replaced with, followed by its number.
const REFUSED_TOKEN: &str = "AIRLOCK_REFUSED_";

/// The syntax error PostgreSQL raises for a refusal's stand-in.
const SYNTAX_ERROR: &str = "42601";

/// How long refusals wait for their error before being forgotten (their
/// stand-in was skipped because an earlier error aborted the batch).
const MAX_PENDING: usize = 64;

/// What to do with one statement-carrying message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Forward, then judge no further Query or Parse until the upstream has
    /// answered: the statement may change how later ones parse (a SET of
    /// `standard_conforming_strings` or `client_encoding` reported by
    /// ParameterStatus).
    ForwardAndWait,
    /// Refuse the whole message with an ERROR carrying `code` and `message`.
    Refuse {
        code: &'static str,
        message: String,
    },
    /// Fetch the planner's estimate for `statement` (one SQL statement) on
    /// the session's upstream, then judge the message again with the plan.
    /// Only valid when the inspector was given [`Plan::NotFetched`].
    Estimate {
        statement: String,
    },
}

/// The upstream's plan for a held statement, as `EXPLAIN (FORMAT JSON)`
/// returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan<'a> {
    NotFetched,
    /// The plan could not be had (the transaction is aborted, EXPLAIN
    /// failed).
    Unavailable,
    Json(&'a str),
}

/// Judges statements for a [`Relay`]. Implemented by the gateway with the
/// policy core; the relay knows nothing of SQL.
pub trait Inspector {
    /// The text of a simple Query message (all its statements), as bytes in
    /// the session's client encoding, with the plan fetched for it when the
    /// inspector asked for one.
    fn query(&mut self, sql: &[u8], plan: Plan<'_>) -> Verdict;
    /// The statement text of a Parse message creating statement `name`.
    fn parse(&mut self, name: &[u8], sql: &[u8]) -> Verdict;
    /// A ParameterStatus the upstream reported (`standard_conforming_strings`,
    /// `client_encoding`…).
    fn parameter_status(&mut self, name: &str, value: &str);
}

/// An inspector that forwards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Inspector for PassThrough {
    fn query(&mut self, _: &[u8], _: Plan<'_>) -> Verdict {
        Verdict::Forward
    }
    fn parse(&mut self, _: &[u8], _: &[u8]) -> Verdict {
        Verdict::Forward
    }
    fn parameter_status(&mut self, _: &str, _: &str) {}
}

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

struct Refusal {
    id: u64,
    code: &'static str,
    message: String,
}

/// The savepoint an estimate runs under inside a transaction block, so that
/// a failing EXPLAIN cannot abort the client's transaction.
const ESTIMATE_SAVEPOINT: &str = "airlock_estimate";

/// A simple Query held while its row estimate is fetched. The message stays
/// at the front of the client input; nothing behind it is read meanwhile.
enum Held {
    /// Earlier messages are still being answered.
    WaitingForIdle { statement: String },
    /// The EXPLAIN (inside a savepoint when `in_block`) is running.
    Explaining {
        in_block: bool,
        failed: bool,
        plan: Option<String>,
    },
    /// The EXPLAIN failed inside a block: rolling back to the savepoint.
    Restoring,
}

/// The ready-phase state machine of one session.
pub struct Relay<I> {
    inspector: I,
    max_message: usize,
    status: u8,
    next_refusal: u64,
    pending: VecDeque<Refusal>,
    /// Query, Sync and FunctionCall messages sent upstream and not yet
    /// answered by ReadyForQuery.
    unanswered: usize,
    /// Messages sent upstream since the last Sync or Query (an extended
    /// batch still being built, possibly already executing after a Flush).
    unsynced: bool,
    held: Option<Held>,
    /// The outcome of the last estimate, for the held message.
    fetched: Option<Option<String>>,
    /// A forwarded statement may change session settings: wait for its
    /// answers before judging more.
    barrier: bool,
}

impl<I: Inspector> Relay<I> {
    /// `status` is the transaction status of the upstream's first
    /// ReadyForQuery; `max_message` bounds every message in both directions.
    pub fn new(inspector: I, max_message: usize, status: u8) -> Self {
        Relay {
            inspector,
            max_message,
            status,
            next_refusal: 0,
            pending: VecDeque::new(),
            unanswered: 0,
            unsynced: false,
            held: None,
            fetched: None,
            barrier: false,
        }
    }

    /// Whether a message is held while its row estimate is fetched: the
    /// driver must not read more from the client meanwhile.
    pub fn holding(&self) -> bool {
        self.held.is_some() || (self.barrier && self.unanswered > 0)
    }

    /// Whether the upstream may be executing something for the client: a
    /// message was sent that its ReadyForQuery has not answered. When a
    /// session is cut, a busy upstream must be cancelled, or its statement
    /// would run on (and commit) after the cut.
    pub fn busy(&self) -> bool {
        self.unanswered > 0 || self.unsynced
    }

    /// The transaction status of the last ReadyForQuery relayed: `I`, `T` or
    /// `E`.
    pub fn transaction_status(&self) -> u8 {
        self.status
    }

    pub fn inspector(&self) -> &I {
        &self.inspector
    }

    /// Moves every whole client message from `input` to `to_upstream`,
    /// judging statements on the way.
    pub fn handle_client(
        &mut self,
        input: &mut BytesMut,
        to_upstream: &mut BytesMut,
    ) -> Result<ClientFlow, ProtocolError> {
        let mut flow = ClientFlow::Continue;
        if self.held.is_some() {
            return Ok(flow);
        }
        // `end` is the end of a run of messages forwarded as they are; the
        // run is copied in one piece when it ends.
        let mut end = 0;
        while let Some(h) = codec::peek_header(&input[end..], self.max_message)? {
            if input.len() - end < h.total_len {
                break;
            }
            if self.barrier && matches!(h.tag, b'Q' | b'P') {
                if self.unanswered > 0 {
                    break;
                }
                self.barrier = false;
            }
            let body = &input[end + 5..end + h.total_len];
            let verdict = match h.tag {
                b'Q' => {
                    let fetched = self.fetched.take();
                    let plan = match &fetched {
                        None => Plan::NotFetched,
                        Some(None) => Plan::Unavailable,
                        Some(Some(json)) => Plan::Json(json),
                    };
                    match self.inspector.query(cstr(body)?, plan) {
                        Verdict::Estimate { .. } if fetched.is_some() => Verdict::Refuse {
                            code: sqlstate::INSUFFICIENT_PRIVILEGE,
                            message: "airlock: the statement could not be judged (estimate asked twice)".into(),
                        },
                        Verdict::Estimate { statement } => {
                            // Hold the message where it is, behind what was
                            // forwarded, until the estimate is in.
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            self.held = Some(Held::WaitingForIdle { statement });
                            self.start_estimate(to_upstream);
                            if self.held.is_some() {
                                return Ok(flow);
                            }
                            // Decided on the spot (no plan can be had):
                            // judge the same message again.
                            end = 0;
                            continue;
                        }
                        v => v,
                    }
                }
                b'P' => {
                    let name = cstr(body)?;
                    let sql = cstr(&body[name.len() + 1..])?;
                    self.inspector.parse(name, sql)
                }
                b'F' => Verdict::Refuse {
                    code: sqlstate::FEATURE_NOT_SUPPORTED,
                    message: "airlock: the FunctionCall protocol message is not supported; call the function in a SQL statement".into(),
                },
                b'X' => {
                    end += h.total_len;
                    flow = ClientFlow::Terminate;
                    break;
                }
                tag if FRONTEND_TAGS.contains(&tag) => Verdict::Forward,
                tag => {
                    return Err(ProtocolError::UnexpectedMessage {
                        tag,
                        context: "invalid frontend message type",
                    });
                }
            };
            match h.tag {
                b'Q' | b'S' | b'F' => {
                    self.unanswered += 1;
                    self.unsynced = false;
                }
                _ => self.unsynced = true,
            }
            match verdict {
                Verdict::Forward => end += h.total_len,
                Verdict::ForwardAndWait => {
                    end += h.total_len;
                    self.barrier = true;
                }
                Verdict::Estimate { .. } => {
                    return Err(ProtocolError::Malformed(
                        "an estimate is only for simple queries",
                    ));
                }
                Verdict::Refuse { code, message } => {
                    let name = (h.tag == b'P')
                        .then(|| cstr(body).map(<[u8]>::to_vec))
                        .transpose()?;
                    to_upstream.extend_from_slice(&input[..end]);
                    input.advance(end + h.total_len);
                    end = 0;
                    self.refuse(name.as_deref(), code, message, to_upstream);
                }
            }
        }
        to_upstream.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(flow)
    }

    /// Queues the stand-in of a refused message: a Parse of statement
    /// `name` for a refused Parse, a Query otherwise.
    fn refuse(
        &mut self,
        parse_name: Option<&[u8]>,
        code: &'static str,
        message: String,
        to_upstream: &mut BytesMut,
    ) {
        self.next_refusal += 1;
        let token = format!("{REFUSED_TOKEN}{}", self.next_refusal);
        match parse_name {
            Some(name) => codec::parse(name, &token, to_upstream),
            None => codec::query(&token, to_upstream),
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Refusal {
            id: self.next_refusal,
            code,
            message,
        });
    }

    /// Sends the held statement's EXPLAIN once the upstream has answered
    /// everything before it. In an aborted transaction there is no plan.
    fn start_estimate(&mut self, to_upstream: &mut BytesMut) {
        let Some(Held::WaitingForIdle { statement }) = &self.held else {
            return;
        };
        if self.unanswered > 0 {
            return;
        }
        // In an aborted transaction there is nothing to plan with; after an
        // unsynced extended batch, answers still due could not be told apart
        // from the estimate's.
        if self.status == b'E' || self.unsynced {
            self.held = None;
            self.fetched = Some(None);
            return;
        }
        let in_block = self.status == b'T';
        // The extended protocol runs exactly one statement per Parse: even a
        // statement text that split differently on the server could not run
        // a second statement under cover of the EXPLAIN.
        let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
        let savepoint = format!("SAVEPOINT {ESTIMATE_SAVEPOINT}");
        let release = format!("RELEASE SAVEPOINT {ESTIMATE_SAVEPOINT}");
        if in_block {
            internal_batch(&[&savepoint, &explain, &release], to_upstream);
        } else {
            internal_batch(&[&explain], to_upstream);
        }
        self.held = Some(Held::Explaining {
            in_block,
            failed: false,
            plan: None,
        });
    }

    /// Consumes one upstream message that answers the estimate's own
    /// queries. Returns whether the estimate is complete.
    fn on_estimate_message(&mut self, tag: u8, body: &[u8], to_upstream: &mut BytesMut) -> bool {
        match (&mut self.held, tag) {
            (Some(Held::Explaining { plan, .. }), b'D') => *plan = first_column(body),
            (Some(Held::Explaining { failed, .. }), b'E') => *failed = true,
            (
                Some(Held::Explaining {
                    in_block,
                    failed,
                    plan,
                }),
                b'Z',
            ) => {
                self.status = body.first().copied().unwrap_or(self.status);
                if *failed && *in_block {
                    internal_batch(
                        &[
                            &format!("ROLLBACK TO SAVEPOINT {ESTIMATE_SAVEPOINT}"),
                            &format!("RELEASE SAVEPOINT {ESTIMATE_SAVEPOINT}"),
                        ],
                        to_upstream,
                    );
                    self.held = Some(Held::Restoring);
                    return false;
                }
                self.fetched = Some(if *failed { None } else { plan.take() });
                self.held = None;
                return true;
            }
            (Some(Held::Restoring), b'Z') => {
                self.status = body.first().copied().unwrap_or(self.status);
                self.fetched = Some(None);
                self.held = None;
                return true;
            }
            _ => {}
        }
        false
    }

    /// Moves every whole upstream message from `input` to `to_client`.
    /// Returns whether a held client message may now be judged again (call
    /// [`Relay::handle_client`]).
    pub fn handle_upstream(
        &mut self,
        input: &mut BytesMut,
        to_client: &mut BytesMut,
        to_upstream: &mut BytesMut,
    ) -> Result<bool, ProtocolError> {
        let mut resume = false;
        let mut end = 0;
        while let Some(h) = codec::peek_header(&input[end..], self.max_message)? {
            if input.len() - end < h.total_len {
                break;
            }
            let body = &input[end + 5..end + h.total_len];
            if matches!(self.held, Some(Held::Explaining { .. } | Held::Restoring)) {
                // The estimate's own answers: the client never sees them.
                to_client.extend_from_slice(&input[..end]);
                let done = self.on_estimate_message(h.tag, body, to_upstream);
                input.advance(end + h.total_len);
                end = 0;
                resume |= done;
                continue;
            }
            match h.tag {
                b'Z' if body.len() == 1 => {
                    self.status = body[0];
                    self.unanswered = self.unanswered.saturating_sub(1);
                    if self.barrier && self.unanswered == 0 {
                        self.barrier = false;
                        resume = true;
                    }
                    if matches!(self.held, Some(Held::WaitingForIdle { .. })) {
                        // Forward this answer first; the estimate follows it.
                        end += h.total_len;
                        to_client.extend_from_slice(&input[..end]);
                        input.advance(end);
                        end = 0;
                        self.start_estimate(to_upstream);
                        resume |= self.held.is_none();
                        continue;
                    }
                }
                b'S' => {
                    let name = cstr(body)?;
                    let value = cstr(&body[name.len() + 1..])?;
                    if let (Ok(n), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(value))
                    {
                        self.inspector.parameter_status(n, v);
                    }
                }
                b'E' if !self.pending.is_empty() => {
                    if let Some(refusal) = self.take_refusal(body) {
                        to_client.extend_from_slice(&input[..end]);
                        input.advance(end + h.total_len);
                        end = 0;
                        codec::notice_message(
                            &Notice::new(Severity::Error, refusal.code, &refusal.message),
                            to_client,
                        );
                        continue;
                    }
                }
                _ => {}
            }
            end += h.total_len;
        }
        to_client.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(resume)
    }

    /// The refusal an upstream ErrorResponse answers, if it is one.
    fn take_refusal(&mut self, body: &[u8]) -> Option<Refusal> {
        let fields = codec::notice_fields(body);
        let field = |c: u8| {
            fields
                .iter()
                .find(|(f, _)| *f == c)
                .map(|(_, v)| v.as_str())
        };
        if field(b'C') != Some(SYNTAX_ERROR) {
            return None;
        }
        let message = field(b'M')?;
        let rest = message
            .strip_prefix("syntax error at or near \"")?
            .strip_prefix(REFUSED_TOKEN)?;
        let id: u64 = rest.strip_suffix('"')?.parse().ok()?;
        let at = self.pending.iter().position(|r| r.id == id)?;
        self.pending.remove(at)
    }
}

/// Writes an extended-protocol batch running `statements` in order on
/// airlock's own named statements and portals (never the client's unnamed
/// ones), closing them before and after, then Sync. Closing a name that does
/// not exist is not an error.
fn internal_batch(statements: &[&str], out: &mut BytesMut) {
    let close = |out: &mut BytesMut, name: &str| {
        codec::close(b'S', name, out);
        codec::close(b'P', name, out);
    };
    for (i, sql) in statements.iter().enumerate() {
        let name = format!("airlock_internal_{i}");
        close(out, &name);
        codec::parse(&name, sql, out);
        codec::bind(&name, &name, out);
        codec::execute(&name, out);
        close(out, &name);
    }
    codec::sync(out);
}

/// The first column of a DataRow, as text.
fn first_column(body: &[u8]) -> Option<String> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if count < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let value = body.get(6..6 + usize::try_from(len).ok()?)?;
    String::from_utf8(value.to_vec()).ok()
}

/// The NUL-terminated string at the start of `body`.
fn cstr(body: &[u8]) -> Result<&[u8], ProtocolError> {
    body.iter()
        .position(|&b| b == 0)
        .map(|n| &body[..n])
        .ok_or(ProtocolError::Malformed(
            "string without its terminating NUL",
        ))
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

    /// Refuses statements containing "drop", records what it saw.
    #[derive(Default)]
    struct NoDrops {
        seen: Vec<String>,
        params: Vec<(String, String)>,
    }

    impl Inspector for NoDrops {
        fn query(&mut self, sql: &[u8], plan: Plan<'_>) -> Verdict {
            if sql.starts_with(b"delete") {
                return match plan {
                    Plan::NotFetched => Verdict::Estimate {
                        statement: String::from_utf8_lossy(sql).into_owned(),
                    },
                    Plan::Json(j) if j.contains("\"Plan Rows\": 5}") => Verdict::Forward,
                    _ => Verdict::Refuse {
                        code: "42501",
                        message: format!("too many rows: {plan:?}"),
                    },
                };
            }
            self.judge(sql)
        }
        fn parse(&mut self, _: &[u8], sql: &[u8]) -> Verdict {
            self.judge(sql)
        }
        fn parameter_status(&mut self, name: &str, value: &str) {
            self.params.push((name.into(), value.into()));
        }
    }

    impl NoDrops {
        fn judge(&mut self, sql: &[u8]) -> Verdict {
            let sql = String::from_utf8_lossy(sql).into_owned();
            self.seen.push(sql.clone());
            if sql.contains("drop") {
                Verdict::Refuse {
                    code: "42501",
                    message: "no drops".into(),
                }
            } else {
                Verdict::Forward
            }
        }
    }

    fn relay() -> Relay<NoDrops> {
        Relay::new(NoDrops::default(), 1024, b'I')
    }

    fn error(code: &str, message: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::notice_message(&Notice::new(Severity::Error, code, message), &mut b);
        b
    }

    fn messages(mut buf: BytesMut) -> Vec<codec::Message> {
        std::iter::from_fn(|| codec::parse_message(&mut buf, 1 << 20).unwrap()).collect()
    }

    #[test]
    fn forwards_whole_messages_and_keeps_partial_ones() {
        let mut relay = Relay::new(PassThrough, 1024, b'I');
        let mut input = BytesMut::new();
        input.extend_from_slice(&msg(b'P', b"\0select 1\0\0\0"));
        input.extend_from_slice(&msg(b'B', b"\0\0\0\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'E', b"\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'S', b""));
        let whole = input.len();
        let next = msg(b'Q', b"select 2\0");
        input.extend_from_slice(&next[..3]);
        let mut out = BytesMut::new();
        assert_eq!(
            relay.handle_client(&mut input, &mut out).unwrap(),
            ClientFlow::Continue
        );
        assert_eq!(out.len(), whole);
        assert_eq!(&input[..], &next[..3]);
        input.extend_from_slice(&next[3..]);
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert_eq!(&out[whole..], &next[..]);
        assert!(input.is_empty());
    }

    #[test]
    fn terminate_stops_the_relay() {
        let mut relay = relay();
        let mut input = msg(b'X', b"");
        input.extend_from_slice(&msg(b'Q', b"select 1\0"));
        let mut out = BytesMut::new();
        assert_eq!(
            relay.handle_client(&mut input, &mut out).unwrap(),
            ClientFlow::Terminate
        );
        assert_eq!(&out[..], &msg(b'X', b"")[..]);
    }

    #[test]
    fn refused_query_is_replaced_and_its_error_rewritten() {
        let mut relay = relay();
        let mut input = msg(b'Q', b"select 1\0");
        input.extend_from_slice(&msg(b'Q', b"drop table t\0"));
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out);
        assert_eq!(&sent[0].body[..], b"select 1\0");
        assert_eq!(
            &sent[1].body[..],
            b"AIRLOCK_REFUSED_1\0",
            "the refused text never goes upstream"
        );
        assert_eq!(&sent[2].body[..], b"select 2\0");

        // The upstream answers the first query, fails the stand-in, answers
        // the third.
        let mut up = msg(b'C', b"SELECT 1\0");
        up.extend_from_slice(&msg(b'Z', b"I"));
        up.extend_from_slice(&error(
            "42601",
            "syntax error at or near \"AIRLOCK_REFUSED_1\"",
        ));
        up.extend_from_slice(&msg(b'Z', b"I"));
        up.extend_from_slice(&msg(b'C', b"SELECT 1\0"));
        let mut to_client = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        let got = messages(to_client);
        let tags: Vec<u8> = got.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"CZEZC");
        let fields = codec::notice_fields(&got[2].body);
        assert!(fields.contains(&(b'C', "42501".into())));
        assert!(fields.contains(&(b'M', "no drops".into())));
    }

    #[test]
    fn refused_parse_keeps_its_statement_name() {
        let mut relay = relay();
        let mut input = msg(b'P', b"s1\0drop table t\0\0\x01\0\0\0\x17");
        input.extend_from_slice(&msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'S', b""));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out);
        assert_eq!(sent[0].tag, b'P');
        assert_eq!(&sent[0].body[..], b"s1\0AIRLOCK_REFUSED_1\0\0\0");
        assert_eq!(
            sent[1].tag, b'B',
            "the rest of the batch goes on; the upstream skips it after the error"
        );
        assert_eq!(sent[2].tag, b'S');
    }

    #[test]
    fn other_errors_pass_untouched() {
        let mut relay = relay();
        let mut input = msg(b'Q', b"drop x\0");
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        for e in [
            error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ),
            error("42601", "syntax error at or near \"AIRLOCK_REFUSED_99\""),
            error(
                "22P02",
                "invalid input syntax for type integer: \"AIRLOCK_REFUSED_1\"",
            ),
        ] {
            let mut up = e.clone();
            let mut to_client = BytesMut::new();
            relay
                .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
                .unwrap();
            assert_eq!(to_client, e);
        }
    }

    #[test]
    fn function_call_is_refused() {
        let mut relay = relay();
        let mut input = msg(b'F', b"\0\0\x04\xd2\0\0\0\0\0\0");
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out);
        assert_eq!(sent[0].tag, b'Q');
        assert_eq!(&sent[0].body[..], b"AIRLOCK_REFUSED_1\0");
    }

    #[test]
    fn parameter_status_reaches_the_inspector() {
        let mut relay = relay();
        let mut up = msg(b'S', b"standard_conforming_strings\0off\0");
        let mut out = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut out, &mut BytesMut::new())
            .unwrap();
        assert_eq!(
            relay.inspector().params,
            vec![("standard_conforming_strings".into(), "off".into())]
        );
        assert_eq!(out.len(), 37, "passed through");
    }

    #[test]
    fn refuses_unknown_and_login_messages() {
        for tag in [b'p', b'Z', b'?', 0] {
            let mut relay = relay();
            let mut out = BytesMut::new();
            let err = relay
                .handle_client(&mut msg(tag, b"x\0"), &mut out)
                .unwrap_err();
            assert!(
                matches!(err, ProtocolError::UnexpectedMessage { .. }),
                "{tag}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn malformed_query_and_parse_bodies() {
        for m in [msg(b'Q', b"no nul"), msg(b'P', b"name\0no nul")] {
            let mut out = BytesMut::new();
            assert!(relay().handle_client(&mut m.clone(), &mut out).is_err());
        }
    }

    #[test]
    fn enforces_the_size_limit_on_the_header() {
        let mut relay = relay();
        let mut input = BytesMut::new();
        input.put_u8(b'Q');
        input.put_i32(1025);
        let mut out = BytesMut::new();
        assert_eq!(
            relay.handle_client(&mut input, &mut out),
            Err(ProtocolError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        let mut up = BytesMut::new();
        up.put_u8(b'D');
        up.put_i32(1 << 30);
        assert!(
            relay
                .handle_upstream(&mut up, &mut out, &mut BytesMut::new())
                .is_err()
        );
    }

    #[test]
    fn busy_until_every_sync_point_is_answered() {
        let mut relay = relay();
        assert!(!relay.busy());
        let mut input = msg(b'Q', b"select 1\0");
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let mut z = msg(b'Z', b"I");
        relay
            .handle_upstream(&mut z, &mut out, &mut BytesMut::new())
            .unwrap();
        assert!(relay.busy(), "one of two queries answered");
        let mut z = msg(b'Z', b"I");
        relay
            .handle_upstream(&mut z, &mut out, &mut BytesMut::new())
            .unwrap();
        assert!(!relay.busy());
        let mut batch = msg(b'P', b"\0select 1\0\0\0");
        batch.extend_from_slice(&msg(b'H', b""));
        let _ = relay.handle_client(&mut batch, &mut out).unwrap();
        assert!(
            relay.busy(),
            "a flushed batch without Sync may be executing"
        );
    }

    fn data_row(text: &str) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i16(1);
        body.put_i32(text.len() as i32);
        body.extend_from_slice(text.as_bytes());
        msg(b'D', &body)
    }

    /// Drives an estimate: the held query, the EXPLAIN it causes, the
    /// upstream's answer (`rows`, or an error), and the resumed judgement.
    fn estimate(
        status: u8,
        answer: Result<u64, ()>,
    ) -> (Vec<codec::Message>, BytesMut, Relay<NoDrops>) {
        let mut relay = Relay::new(NoDrops::default(), 1 << 20, status);
        let mut input = msg(b'Q', b"delete from t where a = 1\0");
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert!(relay.holding());
        let explain = messages(to_up.split());
        let parses: Vec<String> = explain
            .iter()
            .filter(|m| m.tag == b'P')
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert!(
            parses
                .iter()
                .any(|p| p.contains("EXPLAIN (FORMAT JSON) delete from t where a = 1")),
            "{parses:?}"
        );
        assert_eq!(
            parses
                .iter()
                .any(|p| p.contains("SAVEPOINT airlock_estimate")),
            status == b'T',
            "{parses:?}"
        );
        assert!(
            explain.iter().all(|m| b"CPBES".contains(&m.tag)),
            "extended protocol only"
        );
        assert_eq!(explain.last().unwrap().tag, b'S');
        // More client input is not looked at while holding.
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert!(to_up.is_empty());

        let mut up = BytesMut::new();
        match answer {
            Ok(rows) => {
                up.extend_from_slice(&msg(
                    b'T',
                    b"\0\x01QUERY PLAN\0\0\0\0\0\0\0\0\0\0r\xff\xff\xff\xff\0\0",
                ));
                up.extend_from_slice(&data_row(&format!(
                    "[{{\"Plan\": {{\"Plan Rows\": {rows}}}}}]"
                )));
                up.extend_from_slice(&msg(b'C', b"EXPLAIN\0"));
            }
            Err(()) => up.extend_from_slice(&error("42P01", "relation \"t\" does not exist")),
        }
        up.extend_from_slice(&msg(
            b'Z',
            &[if answer.is_err() && status == b'T' {
                b'E'
            } else {
                status
            }],
        ));
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut to_up)
            .unwrap();
        assert!(
            to_client.is_empty(),
            "the estimate's answers are not the client's"
        );
        if answer.is_err() && status == b'T' {
            assert!(!resume);
            let restore = messages(to_up.split());
            let parse = restore.iter().find(|m| m.tag == b'P').unwrap();
            assert!(
                String::from_utf8_lossy(&parse.body)
                    .contains("ROLLBACK TO SAVEPOINT airlock_estimate")
            );
            let resume = relay
                .handle_upstream(&mut msg(b'Z', b"T"), &mut to_client, &mut to_up)
                .unwrap();
            assert!(resume && to_client.is_empty());
        } else {
            assert!(resume);
        }
        assert!(!relay.holding());
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        (messages(to_up), input, relay)
    }

    #[test]
    fn estimate_small_enough_forwards_the_held_query() {
        for status in [b'I', b'T'] {
            let (sent, input, relay) = estimate(status, Ok(5));
            assert_eq!(&sent[0].body[..], b"delete from t where a = 1\0");
            assert_eq!(&sent[1].body[..], b"select 2\0");
            assert!(input.is_empty());
            assert_eq!(relay.transaction_status(), status);
        }
    }

    #[test]
    fn estimate_too_large_or_failed_refuses() {
        for (status, answer) in [(b'I', Ok(5000)), (b'I', Err(())), (b'T', Err(()))] {
            let (sent, _, _) = estimate(status, answer);
            assert_eq!(
                &sent[0].body[..],
                b"AIRLOCK_REFUSED_1\0",
                "{status} {answer:?}"
            );
            assert_eq!(&sent[1].body[..], b"select 2\0");
        }
    }

    #[test]
    fn no_estimate_in_an_aborted_transaction() {
        let mut relay = Relay::new(NoDrops::default(), 1024, b'E');
        let mut input = msg(b'Q', b"delete from t where a = 1\0");
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert!(!relay.holding());
        assert!(
            input.is_empty(),
            "judged at once, without waiting for more input"
        );
        let sent = messages(to_up);
        assert_eq!(&sent[0].body[..], b"AIRLOCK_REFUSED_1\0");
        assert_eq!(&sent[1].body[..], b"select 2\0");
    }

    #[test]
    fn estimate_waits_for_earlier_answers() {
        let mut relay = relay();
        let mut input = msg(b'Q', b"select 1\0");
        input.extend_from_slice(&msg(b'Q', b"delete from t where a = 1\0"));
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        let sent = messages(to_up.split());
        assert_eq!(sent.len(), 1, "only the first query until it is answered");
        let mut up = msg(b'C', b"SELECT 1\0");
        up.extend_from_slice(&msg(b'Z', b"I"));
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut to_up)
            .unwrap();
        assert!(!resume);
        assert_eq!(
            messages(to_client).len(),
            2,
            "the first answer reaches the client"
        );
        let explain = messages(to_up);
        assert!(
            explain
                .iter()
                .any(|m| m.tag == b'P' && String::from_utf8_lossy(&m.body).contains("EXPLAIN"))
        );
    }

    /// Forwards everything; asks to wait after statements starting "set".
    struct Setter;

    impl Inspector for Setter {
        fn query(&mut self, sql: &[u8], _: Plan<'_>) -> Verdict {
            if sql.starts_with(b"set") {
                Verdict::ForwardAndWait
            } else {
                Verdict::Forward
            }
        }
        fn parse(&mut self, _: &[u8], sql: &[u8]) -> Verdict {
            self.query(sql, Plan::NotFetched)
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
    }

    #[test]
    fn statements_after_a_setting_change_wait_for_its_answer() {
        let mut relay = Relay::new(Setter, 1024, b'I');
        let mut input = msg(b'Q', b"set standard_conforming_strings = off\0");
        input.extend_from_slice(&msg(b'Q', b"select '\\'\0"));
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert_eq!(messages(to_up.split()).len(), 1, "the second query waits");
        assert!(relay.holding());
        let mut up = msg(b'S', b"standard_conforming_strings\0off\0");
        up.extend_from_slice(&msg(b'C', b"SET\0"));
        up.extend_from_slice(&msg(b'Z', b"I"));
        let resume = relay
            .handle_upstream(&mut up, &mut BytesMut::new(), &mut to_up)
            .unwrap();
        assert!(resume, "the answer lets the held query be judged");
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert_eq!(messages(to_up).len(), 1);
        assert!(input.is_empty());
        assert!(!relay.holding());
        let mut z = msg(b'Z', b"I");
        let _ = relay.handle_upstream(&mut z, &mut BytesMut::new(), &mut BytesMut::new());

        // With nothing behind it, the answer alone ends the wait: the
        // driver must go back to reading the client.
        let mut input = msg(b'Q', b"set search_path = x\0");
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert!(relay.holding());
        let mut up = msg(b'C', b"SET\0");
        up.extend_from_slice(&msg(b'Z', b"I"));
        let _ = relay
            .handle_upstream(&mut up, &mut BytesMut::new(), &mut to_up)
            .unwrap();
        assert!(!relay.holding());
    }

    #[test]
    fn tracks_transaction_status() {
        let mut relay = relay();
        let mut input = msg(b'C', b"BEGIN\0");
        input.extend_from_slice(&msg(b'Z', b"T"));
        let mut out = BytesMut::new();
        relay
            .handle_upstream(&mut input, &mut out, &mut BytesMut::new())
            .unwrap();
        assert_eq!(relay.transaction_status(), b'T');
        assert_eq!(out.len(), 17);
    }
}
