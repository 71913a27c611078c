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
//!
//! The machine is [`Relay`], here; its concerns are in submodules:
//! `inspector` (the [`Inspector`] API it judges and masks through),
//! `expect` (what the upstream owes for each forwarded message, and which
//! statement each answer belongs to), `names` (prepared statements and
//! portals, as sent and as confirmed), `estimate` (the EXPLAIN and lookup
//! sub-protocol) and `refusal` (the `AIRLOCK_REFUSED_<n>` stand-ins).

mod estimate;
mod expect;
mod inspector;
mod names;
mod refusal;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use crate::codec;
use crate::error::ProtocolError;

use estimate::{Held, asked_once};
use expect::{Expect, Route};
pub use inspector::{Inspector, PassThrough, Plan, StatementRef, Verdict};
use names::{Bound, Portal, Statement};
use refusal::{Refusal, Standin};

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
pub struct Relay<I: Inspector> {
    inspector: I,
    /// Whether results are masked (the inspector's [`Inspector::masks`]).
    masks: bool,
    /// [`Inspector::records`], asked once.
    records: bool,
    /// The id of the last Query or Parse passed to the inspector.
    next_id: u64,
    /// Prepared statements and portals by name, as the client's messages
    /// left them: what the messages it sends next refer to, unless an error
    /// makes the upstream skip some of those already sent.
    statements: HashMap<Vec<u8>, Statement>,
    portals: HashMap<Vec<u8>, Portal<I::Mask>>,
    /// The same, as the upstream's answers left them.
    confirmed_statements: HashMap<Vec<u8>, Statement>,
    confirmed_portals: HashMap<Vec<u8>, Arc<Bound<I::Mask>>>,
    /// Statements no name refers to any more: forgotten once nothing else
    /// does.
    retired: Vec<Statement>,
    /// Counts the messages that may run SQL, which may close any portal and
    /// declare a cursor under its name.
    epoch: u64,
    /// Counts the Syncs sent.
    batch: u64,
    expect: VecDeque<Expect<I::Mask>>,
    /// After an error in an extended batch, the upstream ignores every
    /// message until Sync: those owe nothing.
    skipping: bool,
    /// The mask of the result being relayed.
    current: Option<Arc<I::Mask>>,
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
    /// A [`Verdict::Hold`] began that the driver has not been told of.
    new_hold: bool,
    /// A held Bind's estimate ended while the upstream's answers were
    /// followed: judge it again.
    resume_pending: bool,
}

impl<I: Inspector> Relay<I> {
    /// `status` is the transaction status of the upstream's first
    /// ReadyForQuery; `max_message` bounds every message in both directions.
    pub fn new(inspector: I, max_message: usize, status: u8) -> Self {
        Relay {
            masks: inspector.masks(),
            records: inspector.records(),
            inspector,
            next_id: 0,
            statements: HashMap::new(),
            portals: HashMap::new(),
            confirmed_statements: HashMap::new(),
            confirmed_portals: HashMap::new(),
            retired: Vec::new(),
            epoch: 0,
            batch: 0,
            expect: VecDeque::new(),
            skipping: false,
            current: None,
            max_message,
            status,
            next_refusal: 0,
            pending: VecDeque::new(),
            unanswered: 0,
            unsynced: false,
            held: None,
            fetched: None,
            barrier: false,
            new_hold: false,
            resume_pending: false,
        }
    }

    /// Whether a message is held while its row estimate is fetched: the
    /// driver must not read more from the client meanwhile.
    pub fn holding(&self) -> bool {
        self.held.is_some() || (self.barrier && self.unanswered > 0)
    }

    /// Whether the upstream has answered everything, outside a transaction
    /// block, with nothing held: a query of airlock's own would run alone
    /// in its own implicit transaction.
    pub fn idle_outside_transaction(&self) -> bool {
        self.held.is_none() && !self.busy() && self.status == b'I' && !self.barrier
    }

    /// Whether the inspector holds a message ([`Verdict::Hold`]).
    pub fn held_by_inspector(&self) -> bool {
        matches!(self.held, Some(Held::Inspector))
    }

    /// Whether a [`Verdict::Hold`] began since the last call.
    pub fn take_new_hold(&mut self) -> bool {
        std::mem::take(&mut self.new_hold)
    }

    /// Ends a [`Verdict::Hold`]: the held message is judged again by the
    /// next [`Relay::handle_client`].
    pub fn release_hold(&mut self) {
        if self.held_by_inspector() {
            self.held = None;
        }
    }

    pub fn inspector_mut(&mut self) -> &mut I {
        &mut self.inspector
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

    /// Holds the message at the front of the client input for the
    /// inspector.
    fn hold(&mut self) {
        self.held = Some(Held::Inspector);
        self.new_hold = true;
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
            if self.unanswered > 0 && self.unsettled(h.tag, &input[end + 5..end + h.total_len])? {
                // Wait until the name is settled, as behind a barrier.
                self.barrier = true;
                break;
            }
            if h.tag == b'E' && self.masks && !self.skipping {
                // Rows are masked by their description: make sure the
                // portal has one, asked for by the relay if the client did
                // not ask itself.
                let portal = cstr(&input[end + 5..end + h.total_len])?.to_vec();
                if !self.described(&portal) {
                    to_upstream.extend_from_slice(&input[..end]);
                    input.advance(end);
                    end = 0;
                    codec::describe(b'P', &portal, to_upstream);
                    let expect = self.describe_portal(&portal, true);
                    self.expect.push_back(expect);
                }
            }
            let body = &input[end + 5..end + h.total_len];
            let id = self.next_id + 1;
            let verdict = match h.tag {
                b'Q' => {
                    let fetched = self.fetched.take();
                    let plan = Plan::of(&fetched);
                    match asked_once(self.inspector.query(id, cstr(body)?, plan), &fetched) {
                        Verdict::Hold => {
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            self.hold();
                            return Ok(flow);
                        }
                        Verdict::Estimate { statement } => {
                            // Hold the message where it is, behind what was
                            // forwarded, until the estimate is in.
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            let sql = format!("EXPLAIN (FORMAT JSON) {statement}");
                            if self.look_up(sql, to_upstream) {
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
                b'F' => {
                    let fetched = self.fetched.take();
                    let answer = Plan::of(&fetched);
                    match asked_once(self.inspector.function_call(id, body, answer), &fetched) {
                        Verdict::Lookup { sql } => {
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            if self.look_up(sql, to_upstream) {
                                return Ok(flow);
                            }
                            end = 0;
                            continue;
                        }
                        v => v,
                    }
                }
                b'P' => {
                    let name = cstr(body)?;
                    let sql = cstr(&body[name.len() + 1..])?;
                    let types = codec::parse_types(body).ok_or(ProtocolError::Malformed(
                        "Parse with malformed parameter types",
                    ))?;
                    self.inspector.parse(id, name, sql, types)
                }
                b'B' => {
                    let portal = cstr(body)?;
                    let statement = cstr(&body[portal.len() + 1..])?;
                    let id = self.statements.get(statement).map(|sid| **sid);
                    let fetched = self.fetched.take();
                    let plan = Plan::of(&fetched);
                    match asked_once(self.inspector.bind(id, body, plan), &fetched) {
                        Verdict::EstimateBound {
                            statement,
                            param_types,
                        } => {
                            let bind = body.to_vec();
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            end = 0;
                            // After an error the upstream skips the batch:
                            // no estimate can be had.
                            if self.skipping
                                || !self.start_bound_estimate(
                                    &statement,
                                    &param_types,
                                    &bind,
                                    to_upstream,
                                )
                            {
                                self.fetched = Some(None);
                            }
                            if self.held.is_some() {
                                return Ok(flow);
                            }
                            // Judge the same Bind again.
                            continue;
                        }
                        v => v,
                    }
                }
                b'E' if !self.skipping => match self.inspector.execute(cstr(body)?) {
                    Verdict::Hold => {
                        to_upstream.extend_from_slice(&input[..end]);
                        input.advance(end);
                        self.hold();
                        return Ok(flow);
                    }
                    v => v,
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
            if matches!(h.tag, b'Q' | b'P' | b'F') {
                self.next_id = id;
            }
            self.track_client(h.tag, body, id)?;
            match h.tag {
                // Ignored by the upstream until Sync: nothing will answer it.
                b'Q' | b'F' if self.skipping => {}
                b'Q' | b'S' | b'F' => {
                    self.unanswered += 1;
                    self.unsynced = false;
                }
                // COPY data belongs to a Query or Execute already counted:
                // once it is answered, nothing is left unsynced.
                b'd' | b'c' | b'f' => {}
                _ => self.unsynced = true,
            }
            match verdict {
                Verdict::Forward => end += h.total_len,
                Verdict::ForwardAndWait => {
                    end += h.total_len;
                    self.barrier = true;
                }
                Verdict::Estimate { .. }
                | Verdict::EstimateBound { .. }
                | Verdict::Lookup { .. } => {
                    return Err(ProtocolError::Malformed(
                        "an estimate is only for a simple query or a Bind, a lookup for a FunctionCall",
                    ));
                }
                Verdict::Hold => {
                    return Err(ProtocolError::Malformed(
                        "only a simple query or an Execute can be held",
                    ));
                }
                refusal @ (Verdict::Refuse { .. } | Verdict::SyntaxError { .. }) => {
                    to_upstream.extend_from_slice(&input[..end]);
                    let standin = Standin::of(h.tag, body)?;
                    input.advance(end + h.total_len);
                    end = 0;
                    self.refuse(standin, refusal, to_upstream);
                }
            }
        }
        to_upstream.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(flow)
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
            let scrub_at = match h.tag {
                b'E' | b'N' | b'A' | b'S' if self.masks => Some(self.answering()),
                _ => None,
            };
            let observe_at = match h.tag {
                b'T' | b'D' | b'C' | b'I' | b's' | b'E' if self.records => self.answering(),
                _ => None,
            };
            let route = self.track_upstream(h.tag, body);
            resume |= std::mem::take(&mut self.resume_pending);
            match route {
                Route::Forward => {}
                route => {
                    to_client.extend_from_slice(&input[..end]);
                    let start = to_client.len();
                    match (route, self.current.as_deref()) {
                        (Route::Row, Some(mask)) => self.inspector.mask_row(mask, body, to_client),
                        (Route::Copy, Some(mask)) => {
                            self.inspector.mask_copy(mask, body, to_client)
                        }
                        _ => {}
                    }
                    if let Some(at) = observe_at {
                        let sent = to_client
                            .get(start + 5..)
                            .filter(|_| to_client.len() > start);
                        self.inspector.observe(at, h.tag, sent.unwrap_or(body));
                    }
                    input.advance(end + h.total_len);
                    end = 0;
                    continue;
                }
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
                        refusal.write(to_client);
                        continue;
                    }
                }
                _ => {}
            }
            if let Some(at) = scrub_at {
                to_client.extend_from_slice(&input[..end]);
                let start = to_client.len();
                if !self.inspector.scrub(at, h.tag, body, to_client) {
                    to_client.extend_from_slice(&input[end..end + h.total_len]);
                }
                if let Some(at) = observe_at {
                    self.inspector.observe(
                        at,
                        h.tag,
                        to_client.get(start + 5..).unwrap_or_default(),
                    );
                }
                input.advance(end + h.total_len);
                end = 0;
                continue;
            }
            if let Some(at) = observe_at {
                self.inspector.observe(at, h.tag, body);
            }
            end += h.total_len;
        }
        to_client.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(resume)
    }
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

    use super::estimate::asked_once;
    use super::*;
    use crate::codec::{Notice, Severity};
    use crate::sqlstate;

    #[test]
    fn a_verdict_asking_the_upstream_again_is_refused() {
        let asks = [
            Verdict::Estimate {
                statement: "s".into(),
            },
            Verdict::Lookup { sql: "s".into() },
            Verdict::EstimateBound {
                statement: "s".into(),
                param_types: vec![],
            },
        ];
        for verdict in asks {
            assert!(matches!(
                asked_once(verdict.clone(), &Some(None::<String>)),
                Verdict::Refuse { code, .. } if code == sqlstate::INSUFFICIENT_PRIVILEGE
            ));
            assert_eq!(
                asked_once(verdict.clone(), &None::<Option<String>>),
                verdict
            );
        }
        assert_eq!(
            asked_once(Verdict::Forward, &Some(None::<String>)),
            Verdict::Forward
        );
    }

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
        type Mask = ();
        fn query(&mut self, _: u64, sql: &[u8], plan: Plan<'_>) -> Verdict {
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
        fn parse(&mut self, _: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
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
            } else if sql.starts_with("selec ") {
                Verdict::SyntaxError {
                    code: "42601",
                    message: "syntax error at or near \"selec\"".into(),
                    position: Some(1),
                    detail: None,
                    hint: Some("a hint"),
                }
            } else {
                Verdict::Forward
            }
        }
    }

    fn relay() -> Relay<NoDrops> {
        Relay::new(NoDrops::default(), 1024, b'I')
    }

    /// An upstream error; a syntax error at position 1, as a stand-in's.
    fn error(code: &str, message: &str) -> BytesMut {
        let mut b = BytesMut::new();
        let position = (code == "42601").then_some(1);
        codec::notice_message(
            &Notice::new(Severity::Error, code, message).position(position),
            &mut b,
        );
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

    /// One refused Query answered by the upstream with `error`: what the
    /// client gets.
    fn refused_and_answered(sql: &[u8], code: &str, message: &str) -> Vec<(u8, String)> {
        let mut relay = relay();
        let mut input = msg(b'Q', sql);
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert_eq!(&messages(out)[0].body[..], b"AIRLOCK_REFUSED_1\0");
        let mut up = error(code, message);
        up.extend_from_slice(&msg(b'Z', b"I"));
        let mut to_client = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        codec::notice_fields(&messages(to_client)[0].body)
    }

    #[test]
    fn refusals_are_recognised_in_any_message_language() {
        for message in [
            "syntax error at or near \"AIRLOCK_REFUSED_1\"",
            "erreur de syntaxe sur ou près de « AIRLOCK_REFUSED_1 »",
            "Syntaxfehler bei »AIRLOCK_REFUSED_1«",
            "AIRLOCK_REFUSED_1",
        ] {
            let fields = refused_and_answered(b"drop table t\0", "42601", message);
            assert!(fields.contains(&(b'C', "42501".into())), "{message}");
            assert!(fields.contains(&(b'M', "no drops".into())), "{message}");
        }
        // Another refusal's number is not this one's.
        let fields = refused_and_answered(b"drop table t\0", "42601", "near AIRLOCK_REFUSED_12");
        assert!(fields.contains(&(b'C', "42601".into())));
        // A syntax error elsewhere than at the stand-in's first character
        // (a function's, at run time) is not the stand-in's.
        let mut relay = relay();
        let mut out = BytesMut::new();
        let _ = relay
            .handle_client(&mut msg(b'Q', b"drop x\0"), &mut out)
            .unwrap();
        let mut up = BytesMut::new();
        codec::notice_message(
            &Notice::new(
                Severity::Error,
                "42601",
                "syntax error in tsquery: \"AIRLOCK_REFUSED_1 &\"",
            ),
            &mut up,
        );
        let mut to_client = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        let fields = codec::notice_fields(&messages(to_client)[0].body);
        assert!(fields.contains(&(b'C', "42601".into())), "{fields:?}");
    }

    #[test]
    fn a_syntax_error_carries_its_position() {
        let fields = refused_and_answered(b"selec 1\0", "42601", "x AIRLOCK_REFUSED_1 x");
        assert!(fields.contains(&(b'C', "42601".into())));
        assert!(fields.contains(&(b'M', "syntax error at or near \"selec\"".into())));
        assert!(fields.contains(&(b'P', "1".into())));
        assert!(fields.contains(&(b'H', "a hint".into())));
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

    /// Holds queries starting with "delete" and Executes of portal "h";
    /// once released, forwards or refuses them as `outcome` says.
    #[derive(Default)]
    struct Holder {
        outcome: Option<bool>,
        judged: usize,
    }

    impl Holder {
        fn decide(&mut self) -> Verdict {
            self.judged += 1;
            match self.outcome.take() {
                None => Verdict::Hold,
                Some(true) => Verdict::Forward,
                Some(false) => Verdict::Refuse {
                    code: "42501",
                    message: "denied by bob".into(),
                },
            }
        }
    }

    impl Inspector for Holder {
        type Mask = ();
        fn query(&mut self, _: u64, sql: &[u8], _: Plan<'_>) -> Verdict {
            if sql.starts_with(b"delete") {
                self.decide()
            } else {
                Verdict::Forward
            }
        }
        fn parse(&mut self, _: u64, _: &[u8], _: &[u8], _: &[u8]) -> Verdict {
            Verdict::Forward
        }
        fn execute(&mut self, portal: &[u8]) -> Verdict {
            if portal == b"h" {
                self.decide()
            } else {
                Verdict::Forward
            }
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
    }

    #[test]
    fn a_held_query_and_what_follows_wait_in_order_until_released() {
        let mut relay = Relay::new(Holder::default(), 1024, b'I');
        let mut input = msg(b'Q', b"select 1\0");
        input.extend_from_slice(&msg(b'Q', b"delete from t\0"));
        input.extend_from_slice(&msg(b'Q', b"select 2\0"));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out.split());
        assert_eq!(sent.len(), 1, "only what came before is forwarded");
        assert_eq!(&sent[0].body[..], b"select 1\0");
        assert!(relay.holding() && relay.held_by_inspector());
        assert!(relay.take_new_hold());
        assert!(!relay.take_new_hold(), "told once");
        // Nothing behind the held message is read while it is held, and the
        // upstream's answers to earlier messages still flow.
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert!(out.is_empty());
        let mut up = msg(b'C', b"SELECT 1\0");
        up.extend_from_slice(&msg(b'Z', b"I"));
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        assert!(!resume, "an answer does not release a hold");
        assert_eq!(messages(to_client).len(), 2);
        assert!(relay.holding());

        relay.inspector_mut().outcome = Some(true);
        relay.release_hold();
        assert!(!relay.holding());
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out);
        assert_eq!(&sent[0].body[..], b"delete from t\0");
        assert_eq!(&sent[1].body[..], b"select 2\0");
        assert_eq!(relay.inspector().judged, 2, "judged again once released");
    }

    #[test]
    fn a_held_execute_refused_fails_its_batch_with_the_refusal() {
        let mut relay = Relay::new(Holder::default(), 1024, b'I');
        let mut input = msg(b'P', b"\0delete from t\0\0\0");
        input.extend_from_slice(&msg(b'B', b"h\0\0\0\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'E', b"h\0\0\0\0\0"));
        input.extend_from_slice(&msg(b'S', b""));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out.split());
        assert_eq!(
            sent.iter().map(|m| m.tag).collect::<Vec<_>>(),
            b"PB",
            "held at Execute, after Bind"
        );
        assert!(relay.take_new_hold());
        assert_eq!(input.len(), 11 + 5, "Execute and Sync wait");

        relay.inspector_mut().outcome = Some(false);
        relay.release_hold();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let sent = messages(out);
        assert_eq!(sent.iter().map(|m| m.tag).collect::<Vec<_>>(), b"PS");
        assert_eq!(
            &sent[0].body[..],
            b"AIRLOCK_REFUSED_1\0AIRLOCK_REFUSED_1\0\0\0",
            "the stand-in creates nothing: it fails to parse"
        );
        let mut up = msg(b'1', b"");
        up.extend_from_slice(&msg(b'2', b""));
        up.extend_from_slice(&error(
            "42601",
            "syntax error at or near \"AIRLOCK_REFUSED_1\"",
        ));
        up.extend_from_slice(&msg(b'Z', b"I"));
        let mut to_client = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        let got = messages(to_client);
        assert_eq!(got.iter().map(|m| m.tag).collect::<Vec<_>>(), b"12EZ");
        let fields = codec::notice_fields(&got[2].body);
        assert!(fields.contains(&(b'C', "42501".into())), "{fields:?}");
        assert!(
            fields.contains(&(b'M', "denied by bob".into())),
            "{fields:?}"
        );
        assert!(!relay.busy());
    }

    #[test]
    fn an_execute_after_an_error_in_its_batch_is_not_judged() {
        let mut relay = Relay::new(Holder::default(), 1024, b'I');
        let mut input = msg(b'P', b"\0delete from t\0\0\0");
        input.extend_from_slice(&msg(b'B', b"h\0\0\0\0\0\0\0\0"));
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let mut up = error("42P01", "relation \"t\" does not exist");
        relay
            .handle_upstream(&mut up, &mut BytesMut::new(), &mut BytesMut::new())
            .unwrap();
        let mut input = msg(b'E', b"h\0\0\0\0\0");
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert!(!relay.holding(), "the upstream skips it anyway");
        assert_eq!(relay.inspector().judged, 0);
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
        type Mask = ();
        fn query(&mut self, _: u64, sql: &[u8], _: Plan<'_>) -> Verdict {
            if sql.starts_with(b"set") {
                Verdict::ForwardAndWait
            } else {
                Verdict::Forward
            }
        }
        fn parse(&mut self, id: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
            self.query(id, sql, Plan::NotFetched)
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

    // ---- Result masking ----

    /// Masks the results of statements whose text contains "secret", and of
    /// results whose description names a column "secret" (the way a real
    /// inspector knows a table's columns); the mask is the statement's id.
    /// Scrubs errors and notices showing "123-45-6789", refuses Binds
    /// carrying "***", and records every call. Referring to a statement after
    /// it was forgotten, or forgetting it twice, fails the test. `plain`
    /// turns masking off.
    #[derive(Default)]
    struct Masking {
        plain: bool,
        /// (id, text) of every Query and Parse.
        seen: Vec<(u64, String)>,
        binds: Vec<(u64, Vec<u8>)>,
        forgotten: Vec<u64>,
        described: Vec<(StatementRef, Vec<u8>)>,
        copies: Vec<StatementRef>,
        scrubbed: Vec<(Option<StatementRef>, u8)>,
        /// Every observed answer, as the client got it.
        observed: Vec<(StatementRef, u8, Vec<u8>)>,
    }

    impl Masking {
        fn live(&self, id: u64) {
            assert!(
                !self.forgotten.contains(&id),
                "statement {id} referred to after it was forgotten"
            );
        }

        fn decide(&self, at: StatementRef, fields: &[u8]) -> Option<Arc<u64>> {
            self.live(at.id);
            let text = self
                .seen
                .iter()
                .find(|(id, _)| *id == at.id)
                .and_then(|(_, sql)| sql.split(';').nth(at.index))
                .unwrap_or_default();
            let secret = text.contains("secret") || fields.windows(7).any(|w| w == b"secret\0");
            secret.then(|| Arc::new(at.id))
        }

        fn described_at(&self) -> Vec<(u64, usize)> {
            self.described
                .iter()
                .map(|(at, _)| (at.id, at.index))
                .collect()
        }

        fn bound(&self) -> Vec<u64> {
            self.binds.iter().map(|(id, _)| *id).collect()
        }
    }

    impl Inspector for Masking {
        type Mask = u64;
        fn query(&mut self, id: u64, sql: &[u8], _: Plan<'_>) -> Verdict {
            self.seen
                .push((id, String::from_utf8_lossy(sql).into_owned()));
            Verdict::Forward
        }
        fn parse(&mut self, id: u64, _: &[u8], sql: &[u8], _: &[u8]) -> Verdict {
            self.seen
                .push((id, String::from_utf8_lossy(sql).into_owned()));
            Verdict::Forward
        }
        fn bind(&mut self, id: Option<u64>, body: &[u8], _: Plan<'_>) -> Verdict {
            if let Some(id) = id {
                self.live(id);
            }
            self.binds.push((id.unwrap_or(0), body.to_vec()));
            if body.windows(3).any(|w| w == b"***") {
                Verdict::Refuse {
                    code: "42501",
                    message: "airlock: a masked value cannot be bound".into(),
                }
            } else {
                Verdict::Forward
            }
        }
        fn forget(&mut self, id: u64) {
            assert!(
                !self.forgotten.contains(&id),
                "statement {id} forgotten twice"
            );
            self.forgotten.push(id);
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
        fn masks(&self) -> bool {
            !self.plain
        }
        fn records(&self) -> bool {
            true
        }
        fn observe(&mut self, at: StatementRef, tag: u8, body: &[u8]) {
            self.live(at.id);
            self.observed.push((at, tag, body.to_vec()));
        }
        fn describe(&mut self, at: StatementRef, fields: &[u8]) -> Option<Arc<u64>> {
            self.described.push((at, fields.to_vec()));
            self.decide(at, fields)
        }
        fn copy_out(&mut self, at: StatementRef, _: &[u8]) -> Option<Arc<u64>> {
            self.copies.push(at);
            self.decide(at, b"")
        }
        fn mask_row(&mut self, _: &u64, body: &[u8], out: &mut BytesMut) {
            let count = i16::from_be_bytes([body[0], body[1]]) as usize;
            out.extend_from_slice(&row(&vec!["***"; count]));
        }
        fn mask_copy(&mut self, _: &u64, _: &[u8], out: &mut BytesMut) {
            out.extend_from_slice(&msg(b'd', b"***\n"));
        }
        fn scrub(
            &mut self,
            at: Option<StatementRef>,
            tag: u8,
            body: &[u8],
            out: &mut BytesMut,
        ) -> bool {
            if let Some(at) = at {
                self.live(at.id);
            }
            self.scrubbed.push((at, tag));
            let fields = codec::notice_fields(body);
            let field = |c: u8| {
                fields
                    .iter()
                    .find(|(f, _)| *f == c)
                    .map(|(_, v)| v.as_str())
            };
            if !matches!(tag, b'E' | b'N')
                || !field(b'M').is_some_and(|m| m.contains("123-45-6789"))
            {
                return false;
            }
            let severity = if tag == b'E' {
                Severity::Error
            } else {
                Severity::Notice
            };
            let code = field(b'C').unwrap_or("XX000");
            codec::notice_message(&Notice::new(severity, code, "[scrubbed]"), out);
            true
        }
    }

    fn masking() -> Relay<Masking> {
        Relay::new(Masking::default(), 1 << 16, b'I')
    }

    fn cat(parts: &[BytesMut]) -> BytesMut {
        let mut b = BytesMut::new();
        for p in parts {
            b.extend_from_slice(p);
        }
        b
    }

    fn query_msg(sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::query(sql, &mut b);
        b
    }

    fn parse_msg(name: &str, sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::parse(name, sql, &mut b);
        b
    }

    fn bind_msg(portal: &str, statement: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::bind(portal, statement, &mut b);
        b
    }

    /// A Bind with one text parameter.
    fn bind_with(portal: &str, statement: &str, value: &str) -> BytesMut {
        let mut b = BytesMut::new();
        for name in [portal, statement] {
            b.extend_from_slice(name.as_bytes());
            b.put_u8(0);
        }
        b.put_i16(0);
        b.put_i16(1);
        b.put_i32(value.len() as i32);
        b.extend_from_slice(value.as_bytes());
        b.put_i16(0);
        msg(b'B', &b)
    }

    fn execute_msg(portal: &str, max_rows: i32) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(portal.as_bytes());
        b.put_u8(0);
        b.put_i32(max_rows);
        msg(b'E', &b)
    }

    fn describe_msg(kind: u8, name: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::describe(kind, name, &mut b);
        b
    }

    fn close_msg(kind: u8, name: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::close(kind, name, &mut b);
        b
    }

    fn sync_msg() -> BytesMut {
        msg(b'S', b"")
    }

    fn parse_complete() -> BytesMut {
        msg(b'1', b"")
    }

    fn bind_complete() -> BytesMut {
        msg(b'2', b"")
    }

    fn close_complete() -> BytesMut {
        msg(b'3', b"")
    }

    fn suspended() -> BytesMut {
        msg(b's', b"")
    }

    fn complete(tag: &str) -> BytesMut {
        msg(b'C', format!("{tag}\0").as_bytes())
    }

    fn ready(status: u8) -> BytesMut {
        msg(b'Z', &[status])
    }

    fn notice(code: &str, message: &str) -> BytesMut {
        let mut b = BytesMut::new();
        codec::notice_message(&Notice::new(Severity::Notice, code, message), &mut b);
        b
    }

    /// A RowDescription of text columns of table 16384.
    fn row_description(names: &[&str]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(names.len() as i16);
        for (i, name) in names.iter().enumerate() {
            b.extend_from_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(16384);
            b.put_i16(i as i16 + 1);
            b.put_i32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        msg(b'T', &b)
    }

    fn row(values: &[&str]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(v.len() as i32);
            b.extend_from_slice(v.as_bytes());
        }
        msg(b'D', &b)
    }

    fn body(m: &BytesMut) -> Vec<u8> {
        m[5..].to_vec()
    }

    /// Hands the client's messages to the relay, which must take them all;
    /// returns what it sends upstream.
    fn send<I: Inspector>(relay: &mut Relay<I>, parts: &[BytesMut]) -> BytesMut {
        let mut input = cat(parts);
        let mut out = BytesMut::new();
        assert_eq!(
            relay.handle_client(&mut input, &mut out).unwrap(),
            ClientFlow::Continue
        );
        assert!(input.is_empty(), "every message was relayed");
        out
    }

    /// Hands the upstream's messages to the relay; returns what the client
    /// gets.
    fn answer<I: Inspector>(relay: &mut Relay<I>, parts: &[BytesMut]) -> BytesMut {
        let mut input = cat(parts);
        let mut to_client = BytesMut::new();
        let mut to_upstream = BytesMut::new();
        relay
            .handle_upstream(&mut input, &mut to_client, &mut to_upstream)
            .unwrap();
        assert!(input.is_empty());
        assert!(to_upstream.is_empty());
        to_client
    }

    #[test]
    fn simple_query_masks_each_statement_by_its_own_description() {
        let mut relay = masking();
        let q = query_msg("select 1; select secret, b from t");
        assert_eq!(send(&mut relay, std::slice::from_ref(&q)), q);
        let first = row_description(&["?column?"]);
        let second = row_description(&["ssn", "b"]);
        let got = answer(
            &mut relay,
            &[
                first.clone(),
                row(&["1"]),
                complete("SELECT 1"),
                second.clone(),
                row(&["123-45-6789", "x"]),
                row(&["987-65-4321", "y"]),
                complete("SELECT 2"),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                first.clone(),
                row(&["1"]),
                complete("SELECT 1"),
                second.clone(),
                row(&["***", "***"]),
                row(&["***", "***"]),
                complete("SELECT 2"),
            ])
        );
        let i = relay.inspector();
        assert_eq!(
            i.seen,
            vec![(1, "select 1; select secret, b from t".into())]
        );
        assert_eq!(
            i.described,
            vec![
                (StatementRef { id: 1, index: 0 }, body(&first)),
                (StatementRef { id: 1, index: 1 }, body(&second)),
            ]
        );
        assert!(i.forgotten.is_empty(), "the query is still being answered");
        assert_eq!(answer(&mut relay, &[ready(b'I')]), ready(b'I'));
        assert_eq!(relay.inspector().forgotten, vec![1]);
        assert!(!relay.busy());
    }

    #[test]
    fn the_recorder_sees_each_answer_as_the_client_got_it() {
        let mut relay = masking();
        let q = query_msg("select 1; select secret from t; select oops");
        send(&mut relay, std::slice::from_ref(&q));
        let failed = error("42703", "column 123-45-6789 does not exist");
        answer(
            &mut relay,
            &[
                row_description(&["?column?"]),
                row(&["1"]),
                complete("SELECT 1"),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                failed,
                ready(b'I'),
            ],
        );
        let at = |index| StatementRef { id: 1, index };
        let observed: Vec<_> = relay
            .inspector()
            .observed
            .iter()
            .map(|(at, tag, body)| (*at, *tag as char, body.clone()))
            .collect();
        let scrubbed = codec::notice_fields(&observed[6].2);
        assert!(
            scrubbed.contains(&(b'M', "[scrubbed]".into())),
            "{scrubbed:?}"
        );
        assert_eq!(
            observed[..6],
            [
                (at(0), 'T', body(&row_description(&["?column?"]))),
                (at(0), 'D', body(&row(&["1"]))),
                (at(0), 'C', b"SELECT 1\0".to_vec()),
                (at(1), 'T', body(&row_description(&["ssn"]))),
                (at(1), 'D', body(&row(&["***"]))),
                (at(1), 'C', b"SELECT 1\0".to_vec()),
            ]
        );
        assert_eq!((observed[6].0, observed[6].1), (at(2), 'E'));
        assert_eq!(observed.len(), 7, "ReadyForQuery is not an answer");

        // A refusal is airlock's own: the recorder already has it.
        let mut relay = masking();
        send(
            &mut relay,
            &[parse_msg("s1", "update t set secret = $1"), sync_msg()],
        );
        answer(&mut relay, &[parse_complete(), ready(b'I')]);
        send(
            &mut relay,
            &[bind_with("p", "s1", "***"), execute_msg("p", 0), sync_msg()],
        );
        let got = answer(
            &mut relay,
            &[
                error(
                    "26000",
                    "prepared statement \"AIRLOCK_REFUSED_1\" does not exist",
                ),
                ready(b'I'),
            ],
        );
        assert!(codec::notice_fields(&got[5..]).contains(&(b'C', "42501".into())));
        assert!(relay.inspector().observed.is_empty());
    }

    #[test]
    fn an_execute_without_describe_gets_one_whose_answer_is_swallowed() {
        let mut relay = masking();
        let sent = send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                execute_msg("p", 0),
                sync_msg(),
            ],
        );
        assert_eq!(
            sent,
            cat(&[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                describe_msg(b'P', "p"),
                execute_msg("p", 0),
                sync_msg(),
            ])
        );
        let fields = row_description(&["ssn"]);
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                fields.clone(),
                row(&["123-45-6789"]),
                row(&["987-65-4321"]),
                complete("SELECT 2"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                row(&["***"]),
                row(&["***"]),
                complete("SELECT 2"),
                ready(b'I'),
            ]),
            "no RowDescription the client did not ask for"
        );
        let i = relay.inspector();
        assert_eq!(i.binds, vec![(1, body(&bind_msg("p", "s1")))]);
        assert_eq!(
            i.described,
            vec![(StatementRef { id: 1, index: 0 }, body(&fields))]
        );
        assert!(i.forgotten.is_empty(), "s1 still exists");
        assert!(!relay.busy());

        // A NoData answer to an injected Describe is swallowed too.
        let sent = send(
            &mut relay,
            &[
                parse_msg("", "insert into t values (1)"),
                bind_msg("", ""),
                execute_msg("", 0),
                sync_msg(),
            ],
        );
        assert_eq!(messages(sent).iter().filter(|m| m.tag == b'D').count(), 1);
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                msg(b'n', b""),
                complete("INSERT 0 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                complete("INSERT 0 1"),
                ready(b'I'),
            ])
        );
    }

    #[test]
    fn the_clients_own_describe_is_answered_to_it_and_masks() {
        let mut relay = masking();
        let batch = [
            parse_msg("", "select secret from t"),
            bind_msg("", ""),
            describe_msg(b'P', ""),
            execute_msg("", 0),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &batch), cat(&batch), "nothing injected");
        let fields = row_description(&["ssn"]);
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                fields.clone(),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                fields,
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().described_at(), vec![(1, 0)]);
    }

    #[test]
    fn a_statement_described_then_bound_later_is_masked() {
        // tokio-postgres: prepare (Parse, Describe S, Sync), then query
        // (Bind of the unnamed portal, Execute, Sync).
        let mut relay = masking();
        let prepare = [
            parse_msg("s0", "select secret from t where a = $1"),
            describe_msg(b'S', "s0"),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &prepare), cat(&prepare));
        let fields = row_description(&["ssn"]);
        let answers = [
            parse_complete(),
            msg(b't', b"\0\x01\0\0\0\x17"),
            fields.clone(),
            ready(b'I'),
        ];
        assert_eq!(
            answer(&mut relay, &answers),
            cat(&answers),
            "a statement's description passes as it is"
        );
        assert!(relay.inspector().described.is_empty());

        let run = [bind_with("", "s0", "1"), execute_msg("", 0), sync_msg()];
        assert_eq!(
            send(&mut relay, &run),
            cat(&[
                run[0].clone(),
                describe_msg(b'P', ""),
                run[1].clone(),
                run[2].clone(),
            ])
        );
        let got = answer(
            &mut relay,
            &[
                bind_complete(),
                fields,
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().bound(), vec![1]);
        assert_eq!(relay.inspector().described_at(), vec![(1, 0)]);
    }

    #[test]
    fn a_suspended_portal_stays_masked_without_a_second_describe() {
        let mut relay = masking();
        let sent = send(
            &mut relay,
            &[
                parse_msg("", "select secret from t"),
                bind_msg("c", ""),
                execute_msg("c", 1),
                sync_msg(),
            ],
        );
        assert_eq!(
            sent,
            cat(&[
                parse_msg("", "select secret from t"),
                bind_msg("c", ""),
                describe_msg(b'P', "c"),
                execute_msg("c", 1),
                sync_msg(),
            ])
        );
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                row_description(&["ssn"]),
                row(&["1"]),
                suspended(),
                ready(b'T'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                row(&["***"]),
                suspended(),
                ready(b'T'),
            ])
        );
        // The next fetch in a batch of its own (JDBC), then two in one.
        let fetch = [execute_msg("c", 1), sync_msg()];
        assert_eq!(send(&mut relay, &fetch), cat(&fetch), "no second Describe");
        assert_eq!(
            answer(&mut relay, &[row(&["2"]), suspended(), ready(b'T')]),
            cat(&[row(&["***"]), suspended(), ready(b'T')])
        );
        let fetch = [execute_msg("c", 1), execute_msg("c", 0), sync_msg()];
        assert_eq!(send(&mut relay, &fetch), cat(&fetch));
        assert_eq!(
            answer(
                &mut relay,
                &[
                    row(&["3"]),
                    suspended(),
                    row(&["4"]),
                    complete("SELECT 4"),
                    ready(b'T'),
                ]
            ),
            cat(&[
                row(&["***"]),
                suspended(),
                row(&["***"]),
                complete("SELECT 4"),
                ready(b'T'),
            ])
        );
        assert_eq!(relay.inspector().described_at(), vec![(1, 0)]);
    }

    #[test]
    fn pipelined_statements_on_the_unnamed_statement_keep_their_own_masks() {
        for secret_first in [true, false] {
            let texts = if secret_first {
                ["select secret from t", "select 1"]
            } else {
                ["select 1", "select secret from t"]
            };
            let mut relay = masking();
            let mut batch = Vec::new();
            let mut upstream = Vec::new();
            for sql in texts {
                batch.extend([parse_msg("", sql), bind_msg("", ""), execute_msg("", 0)]);
                upstream.extend([
                    parse_msg("", sql),
                    bind_msg("", ""),
                    describe_msg(b'P', ""),
                    execute_msg("", 0),
                ]);
            }
            batch.push(sync_msg());
            upstream.push(sync_msg());
            assert_eq!(send(&mut relay, &batch), cat(&upstream));
            let fields = [row_description(&["a"]), row_description(&["b"])];
            let mut answers = Vec::new();
            let mut expected = Vec::new();
            for (i, sql) in texts.iter().enumerate() {
                answers.extend([
                    parse_complete(),
                    bind_complete(),
                    fields[i].clone(),
                    row(&["123-45-6789"]),
                    complete("SELECT 1"),
                ]);
                let shown = if sql.contains("secret") {
                    row(&["***"])
                } else {
                    row(&["123-45-6789"])
                };
                expected.extend([
                    parse_complete(),
                    bind_complete(),
                    shown,
                    complete("SELECT 1"),
                ]);
            }
            answers.push(ready(b'I'));
            expected.push(ready(b'I'));
            assert_eq!(
                answer(&mut relay, &answers),
                cat(&expected),
                "secret first: {secret_first}"
            );
            assert_eq!(
                relay.inspector().described,
                vec![
                    (StatementRef { id: 1, index: 0 }, body(&fields[0])),
                    (StatementRef { id: 2, index: 0 }, body(&fields[1])),
                ]
            );
            assert_eq!(
                relay.inspector().forgotten,
                vec![1],
                "the replaced unnamed statement"
            );
        }
    }

    #[test]
    fn a_portal_closed_behind_its_execute_is_still_masked() {
        let mut relay = masking();
        let sent = send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                execute_msg("p", 0),
                close_msg(b'P', "p"),
                sync_msg(),
            ],
        );
        assert_eq!(messages(sent).iter().filter(|m| m.tag == b'D').count(), 1);
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                close_complete(),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                close_complete(),
                ready(b'I'),
            ])
        );
    }

    #[test]
    fn a_cursor_declared_in_sql_is_described_and_masked() {
        let mut relay = masking();
        send(
            &mut relay,
            &[query_msg(
                "declare c cursor with hold for select secret from t",
            )],
        );
        answer(&mut relay, &[complete("DECLARE CURSOR"), ready(b'I')]);
        let sent = send(&mut relay, &[execute_msg("c", 0), sync_msg()]);
        assert_eq!(
            sent,
            cat(&[describe_msg(b'P', "c"), execute_msg("c", 0), sync_msg()])
        );
        let got = answer(
            &mut relay,
            &[
                row_description(&["secret"]),
                row(&["123-45-6789"]),
                complete("FETCH 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(got, cat(&[row(&["***"]), complete("FETCH 1"), ready(b'I')]));
        assert_eq!(
            relay.inspector().described_at(),
            vec![(0, 0)],
            "the relay does not know the cursor's statement"
        );
    }

    #[test]
    fn a_description_does_not_outlive_other_statements() {
        // Portal c is described as harmless; SQL then closes it and declares
        // a cursor of the same name over secret data.
        let mut relay = masking();
        send(
            &mut relay,
            &[
                parse_msg("", "select 1"),
                bind_msg("c", ""),
                describe_msg(b'P', "c"),
                execute_msg("c", 1),
                sync_msg(),
            ],
        );
        answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                row_description(&["a"]),
                row(&["1"]),
                suspended(),
                ready(b'T'),
            ],
        );
        send(
            &mut relay,
            &[query_msg(
                "close c; declare c cursor for select secret from t",
            )],
        );
        answer(
            &mut relay,
            &[
                complete("CLOSE CURSOR"),
                complete("DECLARE CURSOR"),
                ready(b'T'),
            ],
        );
        let sent = send(&mut relay, &[execute_msg("c", 0), sync_msg()]);
        assert_eq!(
            sent,
            cat(&[describe_msg(b'P', "c"), execute_msg("c", 0), sync_msg()]),
            "described again"
        );
        let got = answer(
            &mut relay,
            &[
                row_description(&["secret"]),
                row(&["123-45-6789"]),
                complete("FETCH 1"),
                ready(b'T'),
            ],
        );
        assert_eq!(got, cat(&[row(&["***"]), complete("FETCH 1"), ready(b'T')]));
    }

    #[test]
    fn a_failed_reparse_leaves_the_name_on_the_old_statement() {
        let mut relay = masking();
        send(
            &mut relay,
            &[parse_msg("s1", "select secret from t"), sync_msg()],
        );
        answer(&mut relay, &[parse_complete(), ready(b'I')]);
        let again = [parse_msg("s1", "select 1"), sync_msg()];
        assert_eq!(send(&mut relay, &again), cat(&again));
        let exists = error("42P05", "prepared statement \"s1\" already exists");
        assert_eq!(
            answer(&mut relay, &[exists.clone(), ready(b'I')]),
            cat(&[exists, ready(b'I')])
        );
        assert_eq!(relay.inspector().forgotten, vec![2], "the failed Parse");
        send(
            &mut relay,
            &[bind_msg("p", "s1"), execute_msg("p", 0), sync_msg()],
        );
        let got = answer(
            &mut relay,
            &[
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().bound(), vec![1]);
        assert_eq!(relay.inspector().described_at(), vec![(1, 0)]);
    }

    #[test]
    fn a_bind_waits_while_an_earlier_batch_may_revert_its_statement() {
        // The same three batches, pipelined: when the Bind is read, the
        // re-Parse's failure is not known yet.
        let mut relay = masking();
        let batches = [
            parse_msg("s1", "select secret from t"),
            sync_msg(),
            parse_msg("s1", "select 1"),
            sync_msg(),
            bind_msg("p", "s1"),
            execute_msg("p", 0),
            sync_msg(),
        ];
        let mut input = cat(&batches);
        let mut to_upstream = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_upstream).unwrap();
        assert_eq!(to_upstream, cat(&batches[..4]));
        assert_eq!(input, cat(&batches[4..]));
        assert!(relay.holding());

        let exists = error("42P05", "prepared statement \"s1\" already exists");
        let mut up = cat(&[parse_complete(), ready(b'I')]);
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut to_upstream)
            .unwrap();
        assert!(
            !resume && relay.holding(),
            "the re-Parse is not answered yet"
        );
        let mut up = cat(&[exists.clone(), ready(b'I')]);
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut to_upstream)
            .unwrap();
        assert!(resume && !relay.holding());
        assert_eq!(
            to_client,
            cat(&[parse_complete(), ready(b'I'), exists, ready(b'I')])
        );
        to_upstream.clear();
        let _ = relay.handle_client(&mut input, &mut to_upstream).unwrap();
        assert!(input.is_empty());
        assert_eq!(
            to_upstream,
            cat(&[
                bind_msg("p", "s1"),
                describe_msg(b'P', "p"),
                execute_msg("p", 0),
                sync_msg(),
            ])
        );
        let got = answer(
            &mut relay,
            &[
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().bound(), vec![1]);
        assert_eq!(relay.inspector().described_at(), vec![(1, 0)]);
    }

    #[test]
    fn an_error_does_not_undo_what_later_batches_did() {
        let mut relay = masking();
        send(&mut relay, &[parse_msg("s1", "select 1"), sync_msg()]);
        answer(&mut relay, &[parse_complete(), ready(b'I')]);
        // Pipelined: a re-Parse that fails, then a Close and a Parse that
        // succeed; then, in a transaction, the unnamed portal bound in a
        // failing batch and again in the next.
        let batches = [
            parse_msg("s1", "select x"),
            sync_msg(),
            close_msg(b'S', "s1"),
            parse_msg("s1", "select secret from t"),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &batches), cat(&batches));
        answer(
            &mut relay,
            &[
                error("42P05", "prepared statement \"s1\" already exists"),
                ready(b'I'),
                close_complete(),
                parse_complete(),
                ready(b'I'),
            ],
        );
        assert_eq!(relay.inspector().forgotten, vec![2, 1]);
        send(
            &mut relay,
            &[bind_msg("p", "s1"), execute_msg("p", 0), sync_msg()],
        );
        let got = answer(
            &mut relay,
            &[
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().bound(), vec![3]);
        assert_eq!(relay.inspector().described_at(), vec![(3, 0)]);

        let batches = [
            parse_msg("", "select ("),
            bind_msg("", ""),
            sync_msg(),
            bind_msg("", "s1"),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &batches), cat(&batches));
        answer(
            &mut relay,
            &[
                error("42601", "syntax error at end of input"),
                ready(b'E'),
                bind_complete(),
                ready(b'T'),
            ],
        );
        let sent = send(&mut relay, &[execute_msg("", 0), sync_msg()]);
        assert_eq!(
            sent,
            cat(&[describe_msg(b'P', ""), execute_msg("", 0), sync_msg()])
        );
        let got = answer(
            &mut relay,
            &[
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'T'),
            ],
        );
        assert_eq!(
            got,
            cat(&[row(&["***"]), complete("SELECT 1"), ready(b'T')])
        );
        assert_eq!(relay.inspector().described_at(), vec![(3, 0), (3, 0)]);
    }

    #[test]
    fn a_closed_statement_is_remembered_while_a_portal_uses_it() {
        let mut relay = masking();
        send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                close_msg(b'S', "s1"),
                sync_msg(),
            ],
        );
        answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                close_complete(),
                ready(b'T'),
            ],
        );
        assert!(relay.inspector().forgotten.is_empty(), "portal p uses it");
        send(&mut relay, &[execute_msg("p", 0), sync_msg()]);
        let got = answer(
            &mut relay,
            &[
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'T'),
            ],
        );
        assert_eq!(
            got,
            cat(&[row(&["***"]), complete("SELECT 1"), ready(b'T')])
        );
        send(&mut relay, &[close_msg(b'P', "p"), sync_msg()]);
        answer(&mut relay, &[close_complete(), ready(b'T')]);
        assert_eq!(relay.inspector().forgotten, vec![1]);
    }

    #[test]
    fn messages_after_an_error_owe_nothing_until_sync() {
        let mut relay = masking();
        // The client flushes, sees the error, then finishes its batch.
        send(
            &mut relay,
            &[parse_msg("s1", "select secret from"), msg(b'H', b"")],
        );
        let syntax = error("42601", "syntax error at end of input");
        assert_eq!(answer(&mut relay, std::slice::from_ref(&syntax)), syntax);
        assert_eq!(
            relay.inspector().scrubbed,
            vec![(Some(StatementRef { id: 1, index: 0 }), b'E')]
        );
        assert!(
            relay.inspector().forgotten.is_empty(),
            "forgotten with the batch's ReadyForQuery"
        );
        let rest = [
            bind_msg("p", "s1"),
            execute_msg("p", 0),
            parse_msg("s2", "select secret from t"),
            query_msg("select 1"),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &rest), cat(&rest), "nothing injected");
        assert_eq!(
            relay.inspector().forgotten,
            vec![2, 3],
            "a Parse or Query the upstream ignores is not referred to again"
        );
        assert_eq!(answer(&mut relay, &[ready(b'I')]), ready(b'I'));
        assert_eq!(relay.inspector().forgotten, vec![2, 3, 1]);
        assert!(!relay.busy(), "the ignored Query is not awaited");

        // The next batch is tracked from scratch.
        let sent = send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                execute_msg("p", 0),
                sync_msg(),
            ],
        );
        assert_eq!(messages(sent).iter().filter(|m| m.tag == b'D').count(), 1);
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                row(&["***"]),
                complete("SELECT 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(relay.inspector().described_at(), vec![(4, 0)]);
    }

    #[test]
    fn messages_skipped_after_an_error_leave_no_trace() {
        // Sent before the error arrived, skipped by the upstream: a Query
        // inside the batch, and a Describe an Execute in the next batch
        // counted on.
        let mut relay = masking();
        send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                sync_msg(),
            ],
        );
        answer(
            &mut relay,
            &[parse_complete(), bind_complete(), ready(b'T')],
        );
        let batches = [
            parse_msg("", "select ("),
            query_msg("select 1"),
            describe_msg(b'P', "p"),
            sync_msg(),
            execute_msg("p", 0),
            sync_msg(),
        ];
        let sent = send(&mut relay, &batches);
        assert_eq!(
            sent,
            cat(&[
                batches[0].clone(),
                batches[1].clone(),
                batches[2].clone(),
                batches[3].clone(),
                describe_msg(b'P', "p"),
                batches[4].clone(),
                batches[5].clone(),
            ]),
            "the Describe in the previous batch may be skipped"
        );
        let syntax = error("42601", "syntax error at end of input");
        let got = answer(&mut relay, &[syntax.clone(), ready(b'T')]);
        assert_eq!(got, cat(&[syntax, ready(b'T')]));
        assert_eq!(
            relay.inspector().forgotten,
            vec![2, 3],
            "the skipped Parse and Query"
        );
        let got = answer(
            &mut relay,
            &[
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
                ready(b'T'),
            ],
        );
        assert_eq!(
            got,
            cat(&[row(&["***"]), complete("SELECT 1"), ready(b'T')])
        );
        assert!(!relay.busy(), "no answer is awaited for the skipped Query");
    }

    #[test]
    fn copy_out_data_is_masked_for_secret_statements_only() {
        for (sql, secret) in [
            ("copy (select secret from t) to stdout", true),
            ("copy t to stdout", false),
        ] {
            let mut relay = masking();
            send(&mut relay, &[query_msg(sql)]);
            let header = msg(b'H', b"\0\0\x01\0\0");
            let data = [msg(b'd', b"123-45-6789\n"), msg(b'd', b"987-65-4321\n")];
            let tail = [msg(b'c', b""), complete("COPY 2"), ready(b'I')];
            let got = answer(
                &mut relay,
                &[
                    header.clone(),
                    data[0].clone(),
                    data[1].clone(),
                    tail[0].clone(),
                    tail[1].clone(),
                    tail[2].clone(),
                ],
            );
            let shown = if secret {
                [msg(b'd', b"***\n"), msg(b'd', b"***\n")]
            } else {
                data
            };
            assert_eq!(
                got,
                cat(&[
                    header,
                    shown[0].clone(),
                    shown[1].clone(),
                    tail[0].clone(),
                    tail[1].clone(),
                    tail[2].clone(),
                ]),
                "{sql}"
            );
            assert_eq!(
                relay.inspector().copies,
                vec![StatementRef { id: 1, index: 0 }]
            );
        }

        // Through the extended protocol: the injected Describe's NoData is
        // swallowed, the data masked.
        let mut relay = masking();
        let sent = send(
            &mut relay,
            &[
                parse_msg("", "copy (select secret from t) to stdout"),
                bind_msg("", ""),
                execute_msg("", 0),
                sync_msg(),
            ],
        );
        assert_eq!(messages(sent).iter().filter(|m| m.tag == b'D').count(), 1);
        let header = msg(b'H', b"\0\0\x01\0\0");
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                msg(b'n', b""),
                header.clone(),
                msg(b'd', b"123-45-6789\n"),
                msg(b'c', b""),
                complete("COPY 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                header,
                msg(b'd', b"***\n"),
                msg(b'c', b""),
                complete("COPY 1"),
                ready(b'I'),
            ])
        );
        assert_eq!(
            relay.inspector().copies,
            vec![StatementRef { id: 1, index: 0 }]
        );
    }

    #[test]
    fn errors_and_notices_are_scrubbed_with_their_statement() {
        let mut relay = masking();
        send(&mut relay, &[query_msg("select 1; select secret from t")]);
        let leak = notice("01000", "value 123-45-6789");
        let harmless = notice("01000", "nothing to see");
        let failure = error(
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
        );
        let got = answer(
            &mut relay,
            &[
                leak.clone(),
                complete("SELECT 1"),
                harmless.clone(),
                failure.clone(),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                notice("01000", "[scrubbed]"),
                complete("SELECT 1"),
                harmless.clone(),
                error("22P02", "[scrubbed]"),
                ready(b'I'),
            ])
        );
        let at = |index| Some(StatementRef { id: 1, index });
        assert_eq!(
            relay.inspector().scrubbed,
            vec![(at(0), b'N'), (at(1), b'N'), (at(1), b'E')]
        );

        // In an extended batch, the statement is the Execute's.
        send(
            &mut relay,
            &[
                parse_msg("s1", "select secret from t"),
                bind_msg("p", "s1"),
                execute_msg("p", 0),
                sync_msg(),
            ],
        );
        let got = answer(
            &mut relay,
            &[
                parse_complete(),
                bind_complete(),
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                failure,
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                parse_complete(),
                bind_complete(),
                row(&["***"]),
                error("22P02", "[scrubbed]"),
                ready(b'I'),
            ])
        );
        assert_eq!(
            relay.inspector().scrubbed[3..],
            [(Some(StatementRef { id: 2, index: 0 }), b'E')]
        );
        // A notice with nothing owed.
        assert_eq!(answer(&mut relay, &[leak]), notice("01000", "[scrubbed]"));
        assert_eq!(relay.inspector().scrubbed[4], (None, b'N'));
    }

    #[test]
    fn errors_and_notices_pass_untouched_without_masking() {
        let leak = notice("01000", "value 123-45-6789");
        let failure = error(
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
        );
        let mut relay = relay();
        send(&mut relay, &[query_msg("select secret from t")]);
        let answers = [leak.clone(), failure.clone(), ready(b'I')];
        assert_eq!(answer(&mut relay, &answers), cat(&answers));

        let mut relay = Relay::new(
            Masking {
                plain: true,
                ..Masking::default()
            },
            1024,
            b'I',
        );
        let batch = [
            parse_msg("", "select secret from t"),
            bind_msg("", ""),
            execute_msg("", 0),
            sync_msg(),
        ];
        assert_eq!(send(&mut relay, &batch), cat(&batch), "nothing injected");
        let answers = [
            parse_complete(),
            bind_complete(),
            row(&["123-45-6789"]),
            leak,
            failure,
            ready(b'I'),
        ];
        assert_eq!(answer(&mut relay, &answers), cat(&answers));
        assert!(relay.inspector().scrubbed.is_empty());
        assert!(relay.inspector().described.is_empty());
    }

    #[test]
    fn a_bind_of_a_statement_no_parse_created_is_judged_too() {
        // "s9" was prepared with SQL PREPARE: the relay saw no Parse.
        let mut relay = masking();
        let refused = bind_with("p", "s9", "***");
        let sent = send(
            &mut relay,
            &[refused.clone(), execute_msg("p", 0), sync_msg()],
        );
        assert!(!sent.windows(3).any(|w| w == b"***"), "refused, not sent");
        assert_eq!(relay.inspector().binds, vec![(0, body(&refused))]);
    }

    #[test]
    fn a_refused_bind_is_replaced_and_its_error_rewritten() {
        let mut relay = masking();
        send(
            &mut relay,
            &[parse_msg("s1", "update t set secret = $1"), sync_msg()],
        );
        answer(&mut relay, &[parse_complete(), ready(b'I')]);
        let refused = bind_with("p", "s1", "***");
        let sent = send(
            &mut relay,
            &[refused.clone(), execute_msg("p", 0), sync_msg()],
        );
        // Fails whether or not the client created a statement of that name:
        // two parameter formats for no parameter.
        let standin = msg(b'B', b"p\0AIRLOCK_REFUSED_1\0\0\x02\0\0\0\0\0\0\0\0");
        assert_eq!(
            sent,
            cat(&[
                standin,
                describe_msg(b'P', "p"),
                execute_msg("p", 0),
                sync_msg(),
            ])
        );
        assert!(!sent.windows(3).any(|w| w == b"***"));
        assert_eq!(relay.inspector().binds, vec![(1, body(&refused))]);
        let got = answer(
            &mut relay,
            &[
                error(
                    "26000",
                    "prepared statement \"AIRLOCK_REFUSED_1\" does not exist",
                ),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[
                error("42501", "airlock: a masked value cannot be bound"),
                ready(b'I'),
            ])
        );

        // While another refusal waits (its stand-in skipped behind an
        // error), an unrelated 26000 passes untouched.
        send(
            &mut relay,
            &[
                bind_msg("q", "nope"),
                bind_with("r", "s1", "***"),
                sync_msg(),
            ],
        );
        let missing = error("26000", "prepared statement \"nope\" does not exist");
        assert_eq!(
            answer(&mut relay, &[missing.clone(), ready(b'I')]),
            cat(&[missing, ready(b'I')])
        );

        // The statement is still usable.
        send(
            &mut relay,
            &[bind_with("p", "s1", "x"), execute_msg("p", 0), sync_msg()],
        );
        let got = answer(
            &mut relay,
            &[
                bind_complete(),
                msg(b'n', b""),
                complete("UPDATE 1"),
                ready(b'I'),
            ],
        );
        assert_eq!(
            got,
            cat(&[bind_complete(), complete("UPDATE 1"), ready(b'I')])
        );
        // The Bind of "nope", which no Parse created, was judged too (as 0).
        assert_eq!(relay.inspector().bound(), vec![1, 0, 1, 1]);
    }

    #[test]
    fn upstream_bytes_one_at_a_time_give_the_same_answer() {
        let client = [
            query_msg("select 1; select secret from t"),
            parse_msg("s1", "select secret from t"),
            bind_msg("p", "s1"),
            execute_msg("p", 0),
            bind_with("r", "s1", "***"),
            sync_msg(),
            query_msg("copy (select secret from t) to stdout"),
        ];
        let upstream = cat(&[
            row_description(&["a"]),
            row(&["1"]),
            complete("SELECT 1"),
            row_description(&["ssn", "b"]),
            row(&["123-45-6789", "x"]),
            notice("01000", "123-45-6789"),
            complete("SELECT 1"),
            ready(b'I'),
            parse_complete(),
            bind_complete(),
            row_description(&["ssn"]),
            row(&["123-45-6789"]),
            msg(b'S', b"application_name\0x\0"),
            complete("SELECT 1"),
            error(
                "26000",
                "prepared statement \"AIRLOCK_REFUSED_1\" does not exist",
            ),
            ready(b'I'),
            msg(b'H', b"\0\0\x01\0\0"),
            msg(b'd', b"123-45-6789\n"),
            msg(b'c', b""),
            complete("COPY 1"),
            ready(b'I'),
        ]);
        let run = |dribble: bool| {
            let mut relay = masking();
            send(&mut relay, &client);
            let mut input = BytesMut::new();
            let mut to_client = BytesMut::new();
            let mut to_upstream = BytesMut::new();
            if dribble {
                for &b in upstream.iter() {
                    input.put_u8(b);
                    relay
                        .handle_upstream(&mut input, &mut to_client, &mut to_upstream)
                        .unwrap();
                }
            } else {
                input.extend_from_slice(&upstream);
                relay
                    .handle_upstream(&mut input, &mut to_client, &mut to_upstream)
                    .unwrap();
            }
            assert!(input.is_empty() && to_upstream.is_empty());
            let i = relay.inspector();
            (
                to_client,
                i.described.clone(),
                i.scrubbed.clone(),
                i.forgotten.clone(),
            )
        };
        let whole = run(false);
        assert_eq!(
            messages(whole.0.clone())
                .iter()
                .map(|m| m.tag)
                .collect::<Vec<_>>(),
            b"TDCTDNCZ12DSCEZHdcCZ"
        );
        assert!(!whole.0.windows(11).any(|w| w == b"123-45-6789"));
        assert_eq!(whole, run(true));
    }

    #[test]
    fn copy_in_data_does_not_leave_the_session_unsynced() {
        let mut relay = relay();
        send(&mut relay, &[query_msg("copy t from stdin")]);
        answer(&mut relay, &[msg(b'G', b"\0\0\x01\0\0")]);
        send(&mut relay, &[msg(b'd', b"1\n"), msg(b'c', b"")]);
        answer(&mut relay, &[complete("COPY 1"), ready(b'I')]);
        assert!(!relay.busy());
        // An estimate can be had.
        let mut to_upstream = BytesMut::new();
        let _ = relay
            .handle_client(
                &mut query_msg("delete from t where a = 1"),
                &mut to_upstream,
            )
            .unwrap();
        assert!(relay.holding(), "holding for the estimate");
    }

    /// Asks for an estimate at every Bind; forwards it when the plan says
    /// 5 rows, refuses it otherwise.
    #[derive(Default)]
    struct BindEstimates {
        plans: Vec<String>,
    }

    impl Inspector for BindEstimates {
        type Mask = ();
        fn query(&mut self, _: u64, _: &[u8], _: Plan<'_>) -> Verdict {
            Verdict::Forward
        }
        fn parse(&mut self, _: u64, _: &[u8], _: &[u8], _: &[u8]) -> Verdict {
            Verdict::Forward
        }
        fn bind(&mut self, _: Option<u64>, _: &[u8], plan: Plan<'_>) -> Verdict {
            self.plans.push(format!("{plan:?}"));
            match plan {
                Plan::NotFetched => Verdict::EstimateBound {
                    statement: "update t set v = $1".into(),
                    param_types: vec![0, 1, 0, 0, 0, 23],
                },
                Plan::Json("5") => Verdict::Forward,
                _ => Verdict::Refuse {
                    code: "42501",
                    message: "too many".into(),
                },
            }
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
    }

    fn bound_estimate_batch() -> (Relay<BindEstimates>, Vec<codec::Message>) {
        let mut relay = Relay::new(BindEstimates::default(), 1 << 16, b'I');
        let mut input = cat(&[
            parse_msg("s1", "update t set v = $1"),
            bind_with("", "s1", "7"),
            execute_msg("", 0),
            sync_msg(),
        ]);
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert!(relay.holding(), "the Bind waits for its estimate");
        assert_eq!(
            input[0], b'B',
            "the Bind and what follows stay in the input"
        );
        (relay, messages(out))
    }

    #[test]
    fn a_bind_is_estimated_inside_its_batch_with_its_own_parameters() {
        let (mut relay, sent) = bound_estimate_batch();
        let tags: Vec<u8> = sent.iter().map(|m| m.tag).collect();
        assert_eq!(
            tags, b"PCCPBECCH",
            "the client's Parse, then the estimate and a Flush"
        );
        assert!(sent[3].body.starts_with(
            b"airlock_internal_estimate\0EXPLAIN (FORMAT JSON) update t set v = $1\0"
        ));
        assert!(
            sent[3].body.ends_with(&[0, 1, 0, 0, 0, 23]),
            "the Parse's parameter types"
        );
        assert!(
            sent[4]
                .body
                .ends_with(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]),
            "the Bind's own parameter, results in text"
        );
        // The upstream answers the client's Parse, then the estimate.
        let mut up = cat(&[parse_complete(), close_complete(), close_complete()]);
        up.extend_from_slice(&parse_complete());
        up.extend_from_slice(&bind_complete());
        up.extend_from_slice(&row(&["5"]));
        up.extend_from_slice(&msg(b'C', b"EXPLAIN\0"));
        up.extend_from_slice(&cat(&[close_complete(), close_complete()]));
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        assert!(resume);
        let got: Vec<u8> = messages(to_client).iter().map(|m| m.tag).collect();
        assert_eq!(got, b"1", "the client sees only its own answers");
        // Judged again with the plan: the batch goes on.
        let mut input = cat(&[bind_with("", "s1", "7"), execute_msg("", 0), sync_msg()]);
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        let tags: Vec<u8> = messages(out).iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"BES");
        assert_eq!(relay.inspector().plans, ["NotFetched", "Json(\"5\")"]);
    }

    #[test]
    fn a_failed_bind_estimate_reaches_the_client_and_the_batch_is_skipped() {
        let (mut relay, _) = bound_estimate_batch();
        let mut up = cat(&[parse_complete(), close_complete(), close_complete()]);
        up.extend_from_slice(&error("42P01", "relation \"t\" does not exist"));
        let mut to_client = BytesMut::new();
        let resume = relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        assert!(resume, "judged again without an estimate");
        let got: Vec<u8> = messages(to_client).iter().map(|m| m.tag).collect();
        assert_eq!(got, b"1E");
        let mut input = cat(&[bind_with("", "s1", "7"), execute_msg("", 0), sync_msg()]);
        let mut out = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut out).unwrap();
        assert_eq!(relay.inspector().plans, ["NotFetched", "Unavailable"]);
        // The refusal's stand-in and the rest go; the upstream skips them
        // until Sync, and its ReadyForQuery ends the batch.
        let tags: Vec<u8> = messages(out).iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"BES");
        let mut up = msg(b'Z', b"I");
        let mut to_client = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut to_client, &mut BytesMut::new())
            .unwrap();
        assert!(!relay.busy());
    }
}
