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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
/// The error PostgreSQL raises for a refused Bind's stand-in.
const UNDEFINED_STATEMENT: &str = "26000";

/// What replaces a refused message upstream.
enum Standin {
    Query,
    Parse(Vec<u8>),
    Bind(Vec<u8>),
    /// An Execute: a Parse of the token into a statement named after it,
    /// which fails before any statement is created or replaced. (An Execute
    /// of a portal that does not exist would do, but a client can declare a
    /// cursor of any name.)
    Execute,
}

impl Standin {
    /// The stand-in of a refused message with tag `tag` and body `body`.
    fn of(tag: u8, body: &[u8]) -> Result<Standin, ProtocolError> {
        Ok(match tag {
            b'P' => Standin::Parse(cstr(body)?.to_vec()),
            b'B' => Standin::Bind(cstr(body)?.to_vec()),
            b'E' => Standin::Execute,
            _ => Standin::Query,
        })
    }
}

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
    /// Refuse the whole message as the upstream's own parser would: an
    /// ERROR with `code`, `message` and the cursor `position` (a statement
    /// that does not parse).
    SyntaxError {
        code: &'static str,
        message: String,
        position: Option<u32>,
        detail: Option<&'static str>,
        hint: Option<&'static str>,
    },
    /// Fetch the planner's estimate for `statement` (one SQL statement) on
    /// the session's upstream, then judge the message again with the plan.
    /// Only valid when the inspector was given [`Plan::NotFetched`].
    Estimate {
        statement: String,
    },
    /// For a FunctionCall: run `sql` (one statement) on the session's
    /// upstream, then judge the message again with the first column of its
    /// first row (as [`Plan::Json`]).
    Lookup {
        sql: String,
    },
    /// For a Bind: fetch the planner's estimate for `statement` (its Parse's
    /// text, with parameter types `param_types` as that Parse gave them,
    /// see [`codec::parse_types`]) bound with this Bind's own parameters,
    /// then judge the Bind again with the plan. Only valid when the
    /// inspector was given [`Plan::NotFetched`].
    EstimateBound {
        statement: String,
        param_types: Vec<u8>,
    },
    /// Hold the message (a simple Query, or an Execute) and everything
    /// behind it until the driver calls [`Relay::release_hold`], then judge it
    /// again. The inspector keeps what it needs to answer the second time
    /// (the approval's outcome).
    Hold,
}

/// What the relay fetched for a held message: the upstream's plan, as
/// `EXPLAIN (FORMAT JSON)` returned it ([`Verdict::Estimate`],
/// [`Verdict::EstimateBound`]), or a lookup's answer ([`Verdict::Lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan<'a> {
    NotFetched,
    /// Nothing could be had (the transaction is aborted, the query failed
    /// or returned no row).
    Unavailable,
    /// The first column of the first row.
    Json(&'a str),
}

impl<'a> Plan<'a> {
    /// What the relay fetched for a held message: nothing yet, nothing to
    /// be had, or the first column of the first row.
    fn of(fetched: &'a Option<Option<String>>) -> Plan<'a> {
        match fetched {
            None => Plan::NotFetched,
            Some(None) => Plan::Unavailable,
            Some(Some(text)) => Plan::Json(text),
        }
    }
}

/// The statement a result belongs to: the Query or Parse message the relay
/// numbered `id` when it passed it to the inspector, and for a simple Query,
/// the statement's position in its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementRef {
    pub id: u64,
    pub index: usize,
}

/// Judges statements and masks results for a [`Relay`]. Implemented by the
/// gateway with the policy core; the relay knows nothing of SQL. The masking
/// methods have pass-through defaults.
pub trait Inspector {
    /// How one result's rows are masked, as the inspector decided from its
    /// RowDescription or CopyOutResponse.
    type Mask;

    /// The text of a simple Query message (all its statements), as bytes in
    /// the session's client encoding, with the plan fetched for it when the
    /// inspector asked for one. `id` numbers the message for later calls.
    fn query(&mut self, id: u64, sql: &[u8], plan: Plan<'_>) -> Verdict;
    /// The statement text of a Parse message creating statement `name`,
    /// and the Parse's parameter types section (a count, then the OIDs).
    fn parse(&mut self, id: u64, name: &[u8], sql: &[u8], types: &[u8]) -> Verdict;
    /// A Bind, with its body (statement name and parameters included), of
    /// the statement Parse message `id` created; `None` when no Parse the
    /// relay saw created it (a statement prepared with SQL `PREPARE`),
    /// whose answers are then reported with message id 0. `plan` is the
    /// estimate fetched for it when the inspector asked for one
    /// ([`Verdict::EstimateBound`]).
    fn bind(&mut self, _id: Option<u64>, _body: &[u8], _plan: Plan<'_>) -> Verdict {
        Verdict::Forward
    }
    /// Whether the inspector wants the upstream to itself once it is idle
    /// outside a transaction block (to read the catalog again): the driver
    /// then stops feeding the client's messages at such a point, uses the
    /// upstream, and tells the inspector. Asked before every feed.
    fn wants_idle_upstream(&self) -> bool {
        false
    }
    /// A FunctionCall message's body (function OID, argument formats and
    /// values, result format), with the answer of the lookup the inspector
    /// asked for ([`Verdict::Lookup`]), if any. Refused by default: it names
    /// a function by OID, with no SQL to inspect.
    fn function_call(&mut self, _id: u64, _body: &[u8], _answer: Plan<'_>) -> Verdict {
        Verdict::Refuse {
            code: sqlstate::FEATURE_NOT_SUPPORTED,
            message: "airlock: the FunctionCall protocol message is not supported; call the function in a SQL statement".into(),
        }
    }
    /// An Execute of portal `portal` (the inspector saw its Bind). Asked
    /// only for Executes the upstream will run (not after an error in their
    /// batch); on the hot path, so it should answer fast when nothing is
    /// held.
    fn execute(&mut self, _portal: &[u8]) -> Verdict {
        Verdict::Forward
    }
    /// Message `id` will not be referred to again.
    fn forget(&mut self, _id: u64) {}
    /// A ParameterStatus the upstream reported (`standard_conforming_strings`,
    /// `client_encoding`…).
    fn parameter_status(&mut self, name: &str, value: &str);
    /// Whether results may need masking: the relay then makes sure every
    /// Execute's result is described before its rows arrive.
    fn masks(&self) -> bool {
        false
    }
    /// A result's RowDescription body: how to mask its rows (`None`: they
    /// pass).
    fn describe(&mut self, _at: StatementRef, _fields: &[u8]) -> Option<Arc<Self::Mask>> {
        None
    }
    /// A CopyOutResponse body: how to mask the COPY's data rows.
    fn copy_out(&mut self, _at: StatementRef, _body: &[u8]) -> Option<Arc<Self::Mask>> {
        None
    }
    /// Writes DataRow `body`, masked, as a whole message to `out`.
    fn mask_row(&mut self, _mask: &Self::Mask, _body: &[u8], _out: &mut BytesMut) {}
    /// Writes CopyData `body`, masked, as a whole message to `out`.
    fn mask_copy(&mut self, _mask: &Self::Mask, _body: &[u8], _out: &mut BytesMut) {}
    /// An ErrorResponse, NoticeResponse, NotificationResponse or
    /// ParameterStatus (by `tag`) on its way to the client, answering
    /// statement `at` when known. Returns whether it wrote a replacement
    /// message to `out`; otherwise the message is forwarded as it is.
    fn scrub(
        &mut self,
        _at: Option<StatementRef>,
        _tag: u8,
        _body: &[u8],
        _out: &mut BytesMut,
    ) -> bool {
        false
    }
    /// Whether the inspector records results: the relay then shows it every
    /// RowDescription, DataRow, CommandComplete, EmptyQueryResponse,
    /// PortalSuspended and ErrorResponse that answers a statement.
    fn records(&self) -> bool {
        false
    }
    /// One of those messages answering statement `at`, with `body` as the
    /// client gets it (masked, scrubbed). Airlock's own refusals are not
    /// shown.
    fn observe(&mut self, _at: StatementRef, _tag: u8, _body: &[u8]) {}
}

/// An inspector that forwards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Inspector for PassThrough {
    type Mask = ();
    fn query(&mut self, _: u64, _: &[u8], _: Plan<'_>) -> Verdict {
        Verdict::Forward
    }
    fn parse(&mut self, _: u64, _: &[u8], _: &[u8], _: &[u8]) -> Verdict {
        Verdict::Forward
    }
    fn parameter_status(&mut self, _: &str, _: &str) {}
}

/// A prepared statement: the id of the Parse that created it, shared by
/// everything that refers to it (its name, the portals bound to it, the
/// answers still due). The inspector forgets it once nothing does.
type Statement = Arc<u64>;

/// What the upstream owes the client for one forwarded message, in order.
enum Expect<M> {
    /// A simple Query: results, statement by statement, then ReadyForQuery.
    Query {
        id: u64,
        index: usize,
    },
    Parse {
        id: Statement,
        name: Vec<u8>,
    },
    Bind {
        name: Vec<u8>,
        bound: Arc<Bound<M>>,
    },
    DescribeStatement {
        id: Option<Statement>,
    },
    /// A portal's RowDescription or NoData, for a Describe sent in `epoch`;
    /// `injected` when the relay sent the Describe itself (the answer is the
    /// relay's, not the client's).
    DescribePortal {
        bound: Arc<Bound<M>>,
        epoch: u64,
        injected: bool,
    },
    /// `started` once its first answer arrived.
    Execute {
        bound: Arc<Bound<M>>,
        started: bool,
    },
    CloseStatement {
        name: Vec<u8>,
    },
    ClosePortal {
        name: Vec<u8>,
    },
    Sync,
    /// An answer to a message the relay sent itself inside the client's
    /// batch (a Bind's estimate): the client never sees it.
    Internal(Internal),
}

/// The relay's own messages of a Bind's estimate, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    Close,
    Parse,
    Bind,
    Execute,
}

/// What a Bind's estimate sends, in order.
const BOUND_ESTIMATE: [Internal; 7] = [
    Internal::Close,
    Internal::Close,
    Internal::Parse,
    Internal::Bind,
    Internal::Execute,
    Internal::Close,
    Internal::Close,
];

/// The statement and portal name of a Bind's estimate.
const BOUND_ESTIMATE_NAME: &str = "airlock_internal_estimate";

/// A portal as one Bind created it. The answers due for it hold it, not its
/// name: a Bind or Close of the same name queued behind them must not change
/// what they refer to.
struct Bound<M> {
    /// Its statement; `None` when the relay saw no Bind for it (a cursor
    /// declared in SQL).
    id: Option<Statement>,
    /// The last answered Describe of it: the epoch the Describe was sent in,
    /// and how to mask the rows.
    answer: Mutex<Option<(u64, Option<Arc<M>>)>>,
}

impl<M> Bound<M> {
    fn new(id: Option<Statement>) -> Arc<Self> {
        Arc::new(Bound {
            id,
            answer: Mutex::new(None),
        })
    }

    fn answer(&self) -> MutexGuard<'_, Option<(u64, Option<Arc<M>>)>> {
        // Never locked across a call out of the relay: cannot be poisoned.
        self.answer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A portal name, as the client's messages left it.
struct Portal<M> {
    bound: Arc<Bound<M>>,
    /// The last Describe sent for it.
    described: Option<Described>,
}

#[derive(Debug, Clone, Copy)]
struct Described {
    /// The epoch the Describe was sent in.
    epoch: u64,
    /// The epoch its answer still holds in (moved on by the portal's own
    /// Executes).
    valid: u64,
    /// The batch it was sent in.
    batch: u64,
}

/// How a result message is to be passed on.
enum Route {
    Forward,
    Swallow,
    /// Masked with the current result's mask.
    Row,
    Copy,
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
    /// What a syntax error adds: position, DETAIL, HINT.
    syntax: Option<Syntax>,
}

/// What a syntax error's ErrorResponse adds to the code and message.
#[derive(Debug, Clone, Copy)]
struct Syntax {
    position: Option<u32>,
    detail: Option<&'static str>,
    hint: Option<&'static str>,
}

/// The savepoint an estimate runs under inside a transaction block, so that
/// a failing EXPLAIN cannot abort the client's transaction.
const ESTIMATE_SAVEPOINT: &str = "airlock_estimate";

/// A simple Query held while its row estimate is fetched. The message stays
/// at the front of the client input; nothing behind it is read meanwhile.
enum Held {
    /// Earlier messages are still being answered.
    WaitingForIdle { sql: String },
    /// The EXPLAIN (inside a savepoint when `in_block`) is running.
    Explaining {
        in_block: bool,
        failed: bool,
        plan: Option<String>,
    },
    /// The EXPLAIN failed inside a block: rolling back to the savepoint.
    Restoring,
    /// A simple Query or an Execute the inspector holds ([`Verdict::Hold`])
    /// until the driver releases it.
    Inspector,
    /// A Bind whose estimate runs inside its batch (before it): the
    /// largest row count of the EXPLAIN so far.
    Bound { plan: Option<String> },
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
                    let (code, message, syntax) = match refusal {
                        Verdict::SyntaxError {
                            code,
                            message,
                            position,
                            detail,
                            hint,
                        } => {
                            let syntax = Syntax {
                                position,
                                detail,
                                hint,
                            };
                            (code, message, Some(syntax))
                        }
                        Verdict::Refuse { code, message } => (code, message, None),
                        _ => unreachable!("matched above"),
                    };
                    to_upstream.extend_from_slice(&input[..end]);
                    let standin = Standin::of(h.tag, body)?;
                    input.advance(end + h.total_len);
                    end = 0;
                    self.refuse(standin, code, message, syntax, to_upstream);
                }
            }
        }
        to_upstream.extend_from_slice(&input[..end]);
        input.advance(end);
        Ok(flow)
    }

    /// Queues the stand-in of a refused message: one the upstream fails
    /// with an error naming the refusal's token.
    fn refuse(
        &mut self,
        standin: Standin,
        code: &'static str,
        message: String,
        syntax: Option<Syntax>,
        to_upstream: &mut BytesMut,
    ) {
        self.next_refusal += 1;
        let token = format!("{REFUSED_TOKEN}{}", self.next_refusal);
        match standin {
            // Fails to parse: 42601.
            Standin::Parse(name) => codec::parse(name, &token, to_upstream),
            Standin::Query => codec::query(&token, to_upstream),
            Standin::Execute => codec::parse(&token, &token, to_upstream),
            // Binds a statement that does not exist: 26000.
            Standin::Bind(portal) => bind_standin(&portal, &token, to_upstream),
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Refusal {
            id: self.next_refusal,
            code,
            message,
            syntax,
        });
    }

    /// Notes what the upstream owes for a client message about to be
    /// forwarded (or replaced by its stand-in), and the statements and
    /// portals it creates or closes. `id` is the number a Query or Parse was
    /// given.
    fn track_client(&mut self, tag: u8, body: &[u8], id: u64) -> Result<(), ProtocolError> {
        if matches!(tag, b'Q' | b'F' | b'P' | b'B' | b'E') {
            // May run SQL (a Bind plans its statement, which may call
            // functions): no portal's description is sure to hold after it.
            self.epoch += 1;
        }
        if self.skipping && tag != b'S' {
            // The upstream ignores it: nothing owed, nothing created, and
            // its id never referred to.
            if matches!(tag, b'Q' | b'P' | b'F') {
                self.inspector.forget(id);
            }
            return Ok(());
        }
        let expect = match tag {
            b'Q' | b'F' => Expect::Query { id, index: 0 },
            b'P' => {
                let name = cstr(body)?.to_vec();
                let id = Arc::new(id);
                self.statements.insert(name.clone(), Arc::clone(&id));
                Expect::Parse { id, name }
            }
            b'B' => {
                let name = cstr(body)?.to_vec();
                let statement = cstr(&body[name.len() + 1..])?;
                let bound = Bound::new(self.statements.get(statement).cloned());
                let portal = Portal {
                    bound: Arc::clone(&bound),
                    described: None,
                };
                self.portals.insert(name.clone(), portal);
                Expect::Bind { name, bound }
            }
            b'D' => {
                let name = cstr(body.get(1..).unwrap_or_default())?;
                match body.first() {
                    Some(b'S') => Expect::DescribeStatement {
                        id: self.statements.get(name).cloned(),
                    },
                    Some(b'P') => self.describe_portal(name, false),
                    _ => return Err(ProtocolError::Malformed("Describe of an unknown kind")),
                }
            }
            b'E' => {
                let epoch = self.epoch;
                let portal = self.portal(cstr(body)?);
                if let Some(d) = &mut portal.described
                    && d.valid + 1 == epoch
                {
                    // The portal's own run leaves it as it was.
                    d.valid = epoch;
                }
                Expect::Execute {
                    bound: Arc::clone(&portal.bound),
                    started: false,
                }
            }
            b'C' => {
                let name = cstr(body.get(1..).unwrap_or_default())?.to_vec();
                match body.first() {
                    Some(b'S') => {
                        self.statements.remove(&name);
                        Expect::CloseStatement { name }
                    }
                    _ => {
                        self.portals.remove(&name);
                        Expect::ClosePortal { name }
                    }
                }
            }
            b'S' => {
                self.skipping = false;
                self.batch += 1;
                Expect::Sync
            }
            _ => return Ok(()),
        };
        self.expect.push_back(expect);
        Ok(())
    }

    /// The portal `name`; one the client did not bind (a cursor declared in
    /// SQL, or nothing the upstream knows) is noted with no statement.
    fn portal(&mut self, name: &[u8]) -> &mut Portal<I::Mask> {
        self.portals.entry(name.to_vec()).or_insert_with(|| Portal {
            bound: Bound::new(None),
            described: None,
        })
    }

    /// Notes a Describe of portal `name` about to be sent.
    fn describe_portal(&mut self, name: &[u8], injected: bool) -> Expect<I::Mask> {
        let (epoch, batch) = (self.epoch, self.batch);
        let portal = self.portal(name);
        portal.described = Some(Described {
            epoch,
            valid: epoch,
            batch,
        });
        Expect::DescribePortal {
            bound: Arc::clone(&portal.bound),
            epoch,
            injected,
        }
    }

    /// Whether an Execute of portal `name` sent now will find a description
    /// of it answered first. That takes a Describe sent since the last
    /// message that may have run SQL (other than the portal's own
    /// Executes), whose answer either came already or comes in this batch:
    /// an error that makes the upstream skip it skips the Execute as well.
    fn described(&self, name: &[u8]) -> bool {
        let Some(portal) = self.portals.get(name) else {
            return false;
        };
        let Some(d) = portal.described else {
            return false;
        };
        d.valid == self.epoch
            && (d.batch == self.batch
                || portal.bound.answer().as_ref().map(|(epoch, _)| *epoch) == Some(d.epoch))
    }

    /// Whether the client message uses a name (a Bind its statement, to be
    /// judged by the inspector; when masking, an Execute or Describe its
    /// portal) that a message of an earlier batch not answered yet changes.
    /// An error in that batch would make the upstream skip the change, so
    /// what the name will refer to is not known yet.
    fn unsettled(&self, tag: u8, body: &[u8]) -> Result<bool, ProtocolError> {
        let (statement, name) = match (tag, body.first()) {
            (b'B', _) => {
                let portal = cstr(body)?;
                (true, cstr(&body[portal.len() + 1..])?)
            }
            (b'E', _) if self.masks => (false, cstr(body)?),
            (b'D', Some(b'P')) if self.masks => (false, cstr(&body[1..])?),
            _ => return Ok(false),
        };
        // Newest first: the last change to the name decides.
        let mut this_batch = true;
        for e in self.expect.iter().rev() {
            let changes = match e {
                Expect::Sync => {
                    this_batch = false;
                    false
                }
                Expect::Parse { name: n, .. } | Expect::CloseStatement { name: n } => {
                    statement && n == name
                }
                Expect::Bind { name: n, .. } | Expect::ClosePortal { name: n } => {
                    !statement && n == name
                }
                _ => false,
            };
            if changes {
                return Ok(!this_batch);
            }
        }
        Ok(false)
    }

    /// The statement the upstream is answering now.
    fn answering(&self) -> Option<StatementRef> {
        let id = match self.expect.front()? {
            Expect::Query { id, index } => {
                return Some(StatementRef {
                    id: *id,
                    index: *index,
                });
            }
            Expect::Parse { id, .. } => Some(&**id),
            Expect::DescribeStatement { id } => id.as_deref(),
            Expect::Bind { bound, .. }
            | Expect::DescribePortal { bound, .. }
            | Expect::Execute { bound, .. } => bound.id.as_deref(),
            Expect::CloseStatement { .. } | Expect::ClosePortal { .. } | Expect::Sync => None,
            Expect::Internal(_) => return None,
        };
        Some(StatementRef {
            id: id.copied().unwrap_or(0),
            index: 0,
        })
    }

    /// Follows one upstream message through what is owed, and says how to
    /// pass it on.
    fn track_upstream(&mut self, tag: u8, body: &[u8]) -> Route {
        if matches!(tag, b'N' | b'A' | b'S') {
            return Route::Forward;
        }
        if let Some(Expect::Execute { bound, started }) = self.expect.front_mut()
            && !*started
        {
            // An Execute's rows are masked as its portal's description
            // said.
            *started = true;
            self.current = bound.answer().as_ref().and_then(|(_, mask)| mask.clone());
        }
        let at = self.answering();
        let Some(head) = self.expect.front_mut() else {
            return Route::Forward;
        };
        let mut done = false;
        let route = match (head, tag) {
            (Expect::Query { .. }, b'T') => {
                self.current = at.and_then(|at| self.inspector.describe(at, body));
                Route::Forward
            }
            (Expect::Query { .. } | Expect::Execute { .. }, b'H') => {
                self.current = at.and_then(|at| self.inspector.copy_out(at, body));
                Route::Forward
            }
            (Expect::Query { .. } | Expect::Execute { .. }, b'D') if self.current.is_some() => {
                Route::Row
            }
            (Expect::Query { .. } | Expect::Execute { .. }, b'd') if self.current.is_some() => {
                Route::Copy
            }
            (Expect::Query { index, .. }, b'C' | b'I') => {
                *index += 1;
                self.current = None;
                Route::Forward
            }
            (Expect::Query { id, .. }, b'Z') => {
                let id = *id;
                self.inspector.forget(id);
                self.current = None;
                done = true;
                Route::Forward
            }
            (Expect::Query { .. }, b'E') => {
                self.current = None;
                Route::Forward
            }
            (Expect::Parse { id, name }, b'1') => {
                if let Some(old) = self
                    .confirmed_statements
                    .insert(name.clone(), Arc::clone(id))
                {
                    self.retired.push(old);
                }
                done = true;
                Route::Forward
            }
            (Expect::Bind { name, bound }, b'2') => {
                self.confirmed_portals
                    .insert(name.clone(), Arc::clone(bound));
                done = true;
                Route::Forward
            }
            (Expect::CloseStatement { name }, b'3') => {
                if let Some(old) = self.confirmed_statements.remove(name) {
                    self.retired.push(old);
                }
                done = true;
                Route::Forward
            }
            (Expect::ClosePortal { name }, b'3') => {
                self.confirmed_portals.remove(name);
                done = true;
                Route::Forward
            }
            (Expect::Sync, b'Z') => {
                done = true;
                Route::Forward
            }
            (Expect::DescribeStatement { .. }, b'T' | b'n') => {
                done = true;
                Route::Forward
            }
            (
                Expect::DescribePortal {
                    bound,
                    epoch,
                    injected,
                },
                b'T' | b'n',
            ) => {
                let mask = match (tag, at) {
                    (b'T', Some(at)) => self.inspector.describe(at, body),
                    _ => None,
                };
                *bound.answer() = Some((*epoch, mask));
                done = true;
                if *injected {
                    Route::Swallow
                } else {
                    Route::Forward
                }
            }
            (Expect::Execute { .. }, b'C' | b'I' | b's') => {
                self.current = None;
                done = true;
                Route::Forward
            }
            (Expect::Internal(Internal::Execute), b'D') => {
                if let Some(Held::Bound { plan }) = &mut self.held {
                    *plan = first_column(body);
                }
                Route::Swallow
            }
            (Expect::Internal(Internal::Execute), b'C') => {
                if let Some(Held::Bound { plan }) = self.held.take() {
                    self.fetched = Some(plan);
                    self.resume_pending = true;
                }
                done = true;
                Route::Swallow
            }
            (Expect::Internal(Internal::Close), b'3')
            | (Expect::Internal(Internal::Parse), b'1')
            | (Expect::Internal(Internal::Bind), b'2') => {
                done = true;
                Route::Swallow
            }
            (_, b'E') => {
                self.current = None;
                self.skip_to_sync();
                return Route::Forward;
            }
            _ => Route::Forward,
        };
        if done {
            self.expect.pop_front();
            if tag == b'Z' {
                self.release();
            }
        }
        route
    }

    /// After an error in an extended batch the upstream skips everything
    /// up to Sync: those messages owe nothing, and the statements and
    /// portals they would have created or closed are as they were.
    fn skip_to_sync(&mut self) {
        while let Some(e) = self.expect.front() {
            if matches!(e, Expect::Sync) {
                break;
            }
            match self.expect.pop_front().expect("front exists") {
                // Forgotten with the batch's ReadyForQuery: the error being
                // relayed still refers to it.
                Expect::Parse { id, .. } => self.retired.push(id),
                Expect::Query { id, .. } => {
                    // Inside the batch, skipped too: no ReadyForQuery of its
                    // own will come.
                    self.retired.push(Arc::new(id));
                    self.unanswered = self.unanswered.saturating_sub(1);
                }
                // A held Bind's estimate that will not come: judged again
                // without one.
                Expect::Internal(_) => {
                    if let Some(Held::Bound { .. }) = self.held {
                        self.held = None;
                        self.fetched = Some(None);
                        self.resume_pending = true;
                    }
                }
                _ => {}
            }
        }
        self.skipping = self.expect.is_empty();
        // What the names refer to: what the upstream confirmed, changed by
        // what it still owes (later batches included), and by nothing it
        // skipped.
        let mut statements = self.confirmed_statements.clone();
        let mut bound = self.confirmed_portals.clone();
        for e in &self.expect {
            match e {
                Expect::Parse { id, name } => {
                    statements.insert(name.clone(), Arc::clone(id));
                }
                Expect::CloseStatement { name } => {
                    statements.remove(name);
                }
                Expect::Bind { name, bound: b } => {
                    bound.insert(name.clone(), Arc::clone(b));
                }
                Expect::ClosePortal { name } => {
                    bound.remove(name);
                }
                _ => {}
            }
        }
        let mut portals = std::mem::take(&mut self.portals);
        self.statements = statements;
        self.portals = bound
            .into_iter()
            .map(|(name, bound)| {
                // A portal left as it was keeps its description.
                let described = portals
                    .remove(&name)
                    .filter(|p| Arc::ptr_eq(&p.bound, &bound))
                    .and_then(|p| p.described);
                (name, Portal { bound, described })
            })
            .collect();
    }

    /// Holds the message at the front of the client input for the
    /// inspector.
    fn hold(&mut self) {
        self.held = Some(Held::Inspector);
        self.new_hold = true;
    }

    /// Tells the inspector to forget the retired statements nothing refers
    /// to any more.
    fn release(&mut self) {
        let inspector = &mut self.inspector;
        self.retired.retain(|id| {
            if Arc::strong_count(id) > 1 {
                return true;
            }
            inspector.forget(**id);
            false
        });
    }

    /// Holds the message at the front of the client input while `sql` runs
    /// (an EXPLAIN, a catalog lookup) once the upstream is idle; its first
    /// column is then given back. Returns false when it cannot run (no
    /// answer: judge the message again at once).
    fn look_up(&mut self, sql: String, to_upstream: &mut BytesMut) -> bool {
        self.held = Some(Held::WaitingForIdle { sql });
        self.start_estimate(to_upstream);
        self.held.is_some()
    }

    /// Sends the held message's lookup once the upstream has answered
    /// everything before it. In an aborted transaction nothing can run.
    fn start_estimate(&mut self, to_upstream: &mut BytesMut) {
        let Some(Held::WaitingForIdle { sql }) = &self.held else {
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
        let explain = sql.as_str();
        let savepoint = format!("SAVEPOINT {ESTIMATE_SAVEPOINT}");
        let release = format!("RELEASE SAVEPOINT {ESTIMATE_SAVEPOINT}");
        if in_block {
            internal_batch(&[&savepoint, explain, &release], to_upstream);
        } else {
            internal_batch(&[explain], to_upstream);
        }
        self.held = Some(Held::Explaining {
            in_block,
            failed: false,
            plan: None,
        });
    }

    /// Sends a held Bind's estimate inside its batch, ahead of it: the
    /// EXPLAIN of `statement` parsed with `types` and bound with the Bind's
    /// own parameters on airlock's own statement and portal, then a Flush
    /// so that the answers come before the batch's Sync. Nothing the client
    /// sent is held up behind a Sync it has not sent yet. An error skips the
    /// rest of the batch, as the statement's own error would have. Returns
    /// false (nothing sent) when the Bind is malformed.
    fn start_bound_estimate(
        &mut self,
        statement: &str,
        types: &[u8],
        bind: &[u8],
        to_upstream: &mut BytesMut,
    ) -> bool {
        let name = BOUND_ESTIMATE_NAME;
        let mut out = BytesMut::new();
        codec::close(b'S', name, &mut out);
        codec::close(b'P', name, &mut out);
        codec::parse_typed(
            name,
            &format!("EXPLAIN (FORMAT JSON) {statement}"),
            types,
            &mut out,
        );
        if codec::bind_like(name, name, bind, &mut out).is_none() {
            return false;
        }
        codec::execute(name, &mut out);
        codec::close(b'P', name, &mut out);
        codec::close(b'S', name, &mut out);
        codec::flush(&mut out);
        to_upstream.extend_from_slice(&out);
        self.expect
            .extend(BOUND_ESTIMATE.iter().map(|i| Expect::Internal(*i)));
        self.held = Some(Held::Bound { plan: None });
        true
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
                        let mut notice =
                            Notice::new(Severity::Error, refusal.code, &refusal.message);
                        if let Some(s) = refusal.syntax {
                            notice.position = s.position;
                            notice.detail = s.detail;
                            notice.hint = s.hint;
                        }
                        codec::notice_message(&notice, to_client);
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

    /// The refusal an upstream ErrorResponse answers, if it is one: a
    /// syntax error (the stand-in of a Query, Parse or Execute) or an
    /// unknown prepared statement (a Bind's) whose message names a pending
    /// refusal's token. The token is looked for anywhere in the message,
    /// so that it is found whatever language the upstream's `lc_messages`
    /// speaks and however it quotes it.
    fn take_refusal(&mut self, body: &[u8]) -> Option<Refusal> {
        let fields = codec::notice_fields(body);
        let field = |c: u8| {
            fields
                .iter()
                .find(|(f, _)| *f == c)
                .map(|(_, v)| v.as_str())
        };
        match field(b'C')? {
            // A stand-in's text is its token alone: the error is at 1, and
            // an error raised at run time (a client's own `to_tsquery` of
            // the token's text) has no position.
            SYNTAX_ERROR if field(b'P') == Some("1") => {}
            UNDEFINED_STATEMENT => {}
            _ => return None,
        }
        let message = field(b'M')?;
        let (_, rest) = message.split_once(REFUSED_TOKEN)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id: u64 = rest[..digits].parse().ok()?;
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

/// A refused Bind's stand-in: binds portal `portal` to statement `token`,
/// which does not exist (26000). The client could have created a statement
/// of that name itself (`PREPARE "AIRLOCK_REFUSED_1"`), so the message also
/// contradicts itself, two parameter formats for no parameter, and fails
/// anyway (08P01, checked once the statement is found).
fn bind_standin(portal: &[u8], token: &str, out: &mut BytesMut) {
    let mut body = Vec::with_capacity(portal.len() + token.len() + 12);
    for name in [portal, token.as_bytes()] {
        body.extend_from_slice(name);
        body.push(0);
    }
    // Two parameter formats (text), no parameter, no result format.
    for n in [2i16, 0, 0, 0, 0] {
        body.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(b"B");
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The first column of a DataRow, as text.
fn first_column(body: &[u8]) -> Option<String> {
    let value = codec::data_row_values(body).next()??;
    String::from_utf8(value.to_vec()).ok()
}

/// The NUL-terminated string at the start of `body`.
/// A message is judged again once with what the upstream answered; a
/// verdict that asks the upstream a second time could loop, so it refuses.
fn asked_once<T>(verdict: Verdict, fetched: &Option<T>) -> Verdict {
    match verdict {
        Verdict::Estimate { .. } | Verdict::Lookup { .. } | Verdict::EstimateBound { .. }
            if fetched.is_some() =>
        {
            Verdict::Refuse {
                code: sqlstate::INSUFFICIENT_PRIVILEGE,
                message:
                    "airlock: the statement could not be judged (the upstream was asked twice)"
                        .into(),
            }
        }
        v => v,
    }
}

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
