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
#[cfg(test)]
mod split_tests;
#[cfg(test)]
mod testing;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BytesMut};

use crate::codec;
use crate::error::ProtocolError;

use estimate::{Held, asked_once};
use expect::{Expect, Route};
pub use inspector::{Ending, Inspector, PassThrough, Plan, StatementRef, Verdict};
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
    /// [`Inspector::notes_result_ends`], asked once.
    notes_ends: bool,
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
    /// Lookups run for the Query at the front of the input.
    lookups: u8,
    /// The portal the last Bind named, valid unless a message other than
    /// a Describe or a Flush followed it.
    last_bind: Vec<u8>,
    last_bind_valid: bool,
}

impl<I: Inspector> Relay<I> {
    /// `status` is the transaction status of the upstream's first
    /// ReadyForQuery; `max_message` bounds every message in both directions.
    pub fn new(inspector: I, max_message: usize, status: u8) -> Self {
        Relay {
            masks: inspector.masks(),
            records: inspector.records(),
            notes_ends: inspector.notes_result_ends(),
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
            lookups: 0,
            last_bind: Vec::new(),
            last_bind_valid: false,
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
            // A limit that ends the session was reached: nothing more is
            // taken.
            if input.len() - end < h.total_len || self.inspector.ending().is_some() {
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
                    let verdict = self.inspector.query(id, cstr(body)?, plan);
                    // A Query may be looked up twice (commit review reads
                    // the tables a transaction changed, then samples them);
                    // never a third time.
                    let asked = std::mem::take(&mut self.lookups);
                    let verdict = if asked < 2 {
                        verdict
                    } else {
                        asked_once(verdict, &fetched)
                    };
                    if matches!(verdict, Verdict::Estimate { .. } | Verdict::Lookup { .. }) {
                        self.lookups = asked + 1;
                    }
                    match verdict {
                        Verdict::Hold => {
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            self.hold();
                            return Ok(flow);
                        }
                        v @ (Verdict::Estimate { .. } | Verdict::Lookup { .. }) => {
                            // Hold the message where it is, behind what was
                            // forwarded, until the estimate is in.
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            let sql = match v {
                                Verdict::Estimate { statement } => {
                                    format!("EXPLAIN (FORMAT JSON) {statement}")
                                }
                                Verdict::Lookup { sql } => sql,
                                _ => unreachable!("matched above"),
                            };
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
                        v @ (Verdict::EstimateBound { .. } | Verdict::LookupBound { .. }) => {
                            let (sql, param_types, with_params) = match v {
                                Verdict::EstimateBound {
                                    statement,
                                    param_types,
                                } => (
                                    format!("EXPLAIN (FORMAT JSON) {statement}"),
                                    param_types,
                                    true,
                                ),
                                Verdict::LookupBound {
                                    sql,
                                    param_types,
                                    with_params,
                                } => (sql, param_types, with_params),
                                _ => unreachable!("matched above"),
                            };
                            let bind = body.to_vec();
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            end = 0;
                            // After an error the upstream skips the batch:
                            // no estimate can be had.
                            if self.skipping
                                || !self.start_bound_lookup(
                                    &sql,
                                    &param_types,
                                    with_params.then_some(&bind[..]),
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
                b'E' if !self.skipping => {
                    let portal = cstr(body)?;
                    let fresh = self.last_bind_valid && self.last_bind == portal;
                    match self.inspector.execute(portal, fresh) {
                        Verdict::Hold => {
                            to_upstream.extend_from_slice(&input[..end]);
                            input.advance(end);
                            self.hold();
                            return Ok(flow);
                        }
                        v => v,
                    }
                }
                b'X' => {
                    end += h.total_len;
                    flow = ClientFlow::Terminate;
                    break;
                }
                b'S' => {
                    self.inspector.sync();
                    Verdict::Forward
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
            // The portal the last message bound, while only a Describe or
            // a Flush follows it.
            match h.tag {
                b'B' => {
                    // The buffer is reused: no allocation per Bind.
                    self.last_bind.clear();
                    self.last_bind.extend_from_slice(cstr(body)?);
                    self.last_bind_valid = true;
                }
                b'D' | b'H' => {}
                _ => self.last_bind_valid = false,
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
                Verdict::Rewrite { sql, wait } => {
                    to_upstream.extend_from_slice(&input[..end]);
                    codec::with_text(h.tag, body, &sql, to_upstream).ok_or(
                        ProtocolError::Malformed("only a Query or Parse can be rewritten"),
                    )?;
                    input.advance(end + h.total_len);
                    end = 0;
                    self.barrier |= wait;
                }
                Verdict::Estimate { .. }
                | Verdict::EstimateBound { .. }
                | Verdict::LookupBound { .. }
                | Verdict::Lookup { .. } => {
                    return Err(ProtocolError::Malformed(
                        "an estimate is only for a simple query or a Bind, a lookup for a simple query or a FunctionCall",
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
            if self.notes_ends
                && self.current.is_some()
                && matches!(h.tag, b'C' | b's' | b'E')
                && !matches!(self.held, Some(Held::Explaining { .. } | Held::Restoring))
            {
                to_client.extend_from_slice(&input[..end]);
                input.advance(end);
                end = 0;
                self.inspector.result_end(self.answering(), to_client);
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
                // CopyData: COPY … TO STDOUT's rows, for budgets.
                b'T' | b'D' | b'd' | b'C' | b'I' | b's' | b'E' if self.records => self.answering(),
                _ => None,
            };
            // Notices, notifications and function results carry data too.
            let admit_at = match h.tag {
                b'N' | b'A' | b'V' if self.records => self.answering(),
                _ => observe_at,
            };
            if let Some(at) = admit_at
                && !self.inspector.admit(at, h.tag, h.total_len - 5)
            {
                // It would pass a limit that ends the session: neither it
                // nor anything after it is passed on.
                break;
            }
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
                    let settled = self.unanswered == 0 && !self.unsynced;
                    self.inspector.ready(body[0], settled);
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
    use bytes::{BufMut, BytesMut};

    use super::testing::*;
    use super::*;

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
    fn a_limit_that_ends_the_session_stops_both_sides_before_the_row_that_would_pass_it() {
        let mut relay = Relay::new(
            Masking {
                plain: true,
                rows_until_end: Some(2),
                ..Masking::default()
            },
            1 << 16,
            b'I',
        );
        send(&mut relay, &[query_msg("select a from t")]);
        let mut up = cat(&[
            row_description(&["a"]),
            row(&["1"]),
            row(&["2"]),
            row(&["3"]),
            complete("SELECT 3"),
            ready(b'I'),
        ]);
        let mut out = BytesMut::new();
        relay
            .handle_upstream(&mut up, &mut out, &mut BytesMut::new())
            .unwrap();
        assert_eq!(relay.inspector().ending(), Some(Ending::Now));
        let tags: Vec<u8> = messages(out).iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"TDD", "cut before the third row");
        assert!(!up.is_empty(), "the rest is left");
        // Nothing more of the client's is taken either.
        let mut input = query_msg("select 1");
        let mut to_upstream = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_upstream).unwrap();
        assert!(to_upstream.is_empty() && !input.is_empty());
    }

    #[test]
    fn the_inspector_writes_ahead_of_a_masked_result_end_only() {
        let mut relay = Relay::new(
            Masking {
                note_result_ends: true,
                ..Masking::default()
            },
            1 << 16,
            b'I',
        );
        send(
            &mut relay,
            &[query_msg("select secret from t; select a from t")],
        );
        let out = answer(
            &mut relay,
            &[
                row_description(&["secret"]),
                row(&["x"]),
                complete("SELECT 1"),
                row_description(&["a"]),
                row(&["y"]),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        let tags: Vec<u8> = messages(out).iter().map(|m| m.tag).collect();
        assert_eq!(
            tags, b"TDNCTDCZ",
            "a notice before the masked result's end alone"
        );
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
    fn client_input_that_breaks_the_protocol_is_an_error() {
        let unexpected = |tag| ProtocolError::UnexpectedMessage {
            tag,
            context: "invalid frontend message type",
        };
        let no_nul = ProtocolError::Malformed("string without its terminating NUL");
        let mut oversized = BytesMut::new();
        oversized.put_u8(b'Q');
        oversized.put_i32(1025);
        let cases = [
            ("a login message", msg(b'p', b"x\0"), unexpected(b'p')),
            ("a backend message", msg(b'Z', b"x\0"), unexpected(b'Z')),
            ("an unknown message", msg(b'?', b"x\0"), unexpected(b'?')),
            ("a NUL tag", msg(0, b"x\0"), unexpected(0)),
            (
                "a Query without its NUL",
                msg(b'Q', b"no nul"),
                no_nul.clone(),
            ),
            (
                "a Parse without its NUL",
                msg(b'P', b"name\0no nul"),
                no_nul,
            ),
            (
                "a header over the size limit",
                oversized,
                ProtocolError::TooLarge {
                    len: 1025,
                    max: 1024,
                },
            ),
        ];
        for (case, mut input, expected) in cases {
            let mut out = BytesMut::new();
            assert_eq!(
                relay().handle_client(&mut input, &mut out),
                Err(expected),
                "{case}"
            );
            assert!(out.is_empty(), "{case}: nothing forwarded");
        }
    }

    #[test]
    fn upstream_input_over_the_size_limit_is_an_error() {
        let mut up = BytesMut::new();
        up.put_u8(b'D');
        up.put_i32(1 << 30);
        assert!(
            relay()
                .handle_upstream(&mut up, &mut BytesMut::new(), &mut BytesMut::new())
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
                    hint: None,
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
        fn execute(&mut self, portal: &[u8], _: bool) -> Verdict {
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
}
