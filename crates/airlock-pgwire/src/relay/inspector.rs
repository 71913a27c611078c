//! The inspector API: the seam where the session plugs its policy into the
//! relay. The relay hands every statement-carrying message to an
//! [`Inspector`] and acts on its [`Verdict`]; results are reported against
//! the [`StatementRef`] they answer.

use std::sync::Arc;

use bytes::BytesMut;

use crate::sqlstate;

/// How a session that reached a limit ends ([`Inspector::ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// At once: a result went past a limit mid-way.
    Now,
    /// Once the upstream has answered what was sent (a refusal is
    /// delivered in its place, and what ran before it is reported).
    AfterAnswers,
}

/// What to do with one statement-carrying message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Forward, then judge no further Query or Parse until the upstream has
    /// answered: the statement may change how later ones parse (a SET of
    /// `standard_conforming_strings` or `client_encoding` reported by
    /// ParameterStatus).
    ForwardAndWait,
    /// Forward a Query or Parse with its statement text replaced by `sql`
    /// (the same statements, made to enforce what the policy asked), then
    /// as [`Verdict::ForwardAndWait`] when `wait`.
    Rewrite {
        sql: String,
        wait: bool,
    },
    /// Refuse the whole message with an ERROR carrying `code`, `message`
    /// and, when given, a HINT.
    Refuse {
        code: &'static str,
        message: String,
        hint: Option<String>,
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
    /// For a FunctionCall or a simple Query: run `sql` (one statement) on
    /// the session's upstream once it has answered everything before (in a
    /// savepoint inside a transaction block), then judge the message again
    /// with the first column of its first row (as [`Plan::Json`]). Only
    /// valid when the inspector was given [`Plan::NotFetched`].
    Lookup {
        sql: String,
    },
    /// For a Bind: fetch the planner's estimate for `statement` (its Parse's
    /// text, with parameter types `param_types` as that Parse gave them,
    /// see [`codec::parse_types`](crate::codec::parse_types)) bound with this Bind's own parameters,
    /// then judge the Bind again with the plan. Only valid when the
    /// inspector was given [`Plan::NotFetched`].
    EstimateBound {
        statement: String,
        param_types: Vec<u8>,
    },
    /// For a Bind: run `sql` inside the client's batch, ahead of the Bind,
    /// parsed with `param_types` and bound with this Bind's own parameters
    /// when `with_params` (else with none), then judge the Bind again with
    /// the first column of its last row ([`Plan::Json`]). Only valid when
    /// the inspector was given [`Plan::NotFetched`].
    LookupBound {
        sql: String,
        param_types: Vec<u8>,
        with_params: bool,
    },
    /// Hold the message (a simple Query, or an Execute) and everything
    /// behind it until the driver calls [`Relay::release_hold`](super::Relay::release_hold), then judge it
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
    pub(super) fn of(fetched: &'a Option<Option<String>>) -> Plan<'a> {
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

/// Judges statements and masks results for a [`Relay`](super::Relay). Implemented by the
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
            hint: None,
            message: "airlock: the FunctionCall protocol message is not supported; call the function in a SQL statement".into(),
        }
    }
    /// An Execute of portal `portal`. Asked only for Executes the upstream
    /// will run (not after an error in their batch); on the hot path, so it
    /// should answer fast when nothing is held. `fresh`: the message just
    /// before it (but for Describes and Flushes) was its Bind, so it runs
    /// what that Bind bound (had the Bind failed, the Execute would be
    /// skipped); otherwise the name may stand for anything by now (a
    /// transaction's end drops portals, SQL may declare a cursor of it).
    fn execute(&mut self, _portal: &[u8], _fresh: bool) -> Verdict {
        Verdict::Forward
    }
    /// The upstream answered the client's messages up to here with
    /// ReadyForQuery: the transaction status (`I`, `T` or `E`). `settled`:
    /// nothing the client sent since is unanswered, so the status is the
    /// session's now (otherwise it is that of an earlier point).
    fn ready(&mut self, _status: u8, _settled: bool) {}
    /// A Sync is forwarded: the client's extended batch ends (an error in
    /// it skips the rest of the batch only up to here).
    fn sync(&mut self) {}
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
    /// Whether the inspector writes ahead of a masked result's end
    /// ([`Inspector::result_end`]). Asked once.
    fn notes_result_ends(&self) -> bool {
        false
    }
    /// A result whose rows were masked ends (its CommandComplete,
    /// PortalSuspended or ErrorResponse comes next), answering statement
    /// `at` when known: messages written to `out` reach the client ahead
    /// of that end (a notice about its rows).
    fn result_end(&mut self, _at: Option<StatementRef>, _out: &mut BytesMut) {}
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
    /// Whether a limit that ends the session was reached, and how: the
    /// relay takes nothing more from the client, and the driver ends the
    /// session at once ([`Ending::Now`]: nothing more of the upstream's is
    /// passed on either) or once everything sent has been answered.
    fn ending(&self) -> Option<Ending> {
        None
    }
    /// Whether an answer to statement `at` (a row, COPY data, an error, a
    /// notice, a notification or a function's result; `len` bytes of
    /// body) may be passed on. Asked before it is, when the inspector
    /// records; `false` when it would pass a limit that ends the session
    /// ([`Inspector::ending`] then says [`Ending::Now`]).
    fn admit(&mut self, _at: StatementRef, _tag: u8, _len: usize) -> bool {
        true
    }
    /// Whether the inspector records results or counts them: the relay
    /// then shows it ([`Inspector::observe`]) every RowDescription,
    /// DataRow, CopyData, CommandComplete, EmptyQueryResponse,
    /// PortalSuspended and ErrorResponse that answers a statement, and asks
    /// it ([`Inspector::admit`]) before passing on those that carry data
    /// (and notices, notifications and function results).
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
