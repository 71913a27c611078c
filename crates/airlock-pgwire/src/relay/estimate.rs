//! The estimate sub-protocol: when an inspector asks for the planner's row
//! estimate (or a lookup), the relay holds the message, runs
//! `EXPLAIN (FORMAT JSON)` (or the lookup) on the upstream with its own
//! statements and portals, swallows the answers and judges the message again
//! with what came back. A simple Query's estimate waits for the upstream to
//! be idle and runs in a batch of its own (in a savepoint inside a
//! transaction block); a Bind's runs inside the client's batch, ahead of it.

use bytes::BytesMut;

use super::expect::Expect;
use super::{Inspector, Relay, Verdict};
use crate::codec;
use crate::sqlstate;

/// The relay's own messages of a Bind's estimate, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Internal {
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

/// The savepoint an estimate runs under inside a transaction block, so that
/// a failing EXPLAIN cannot abort the client's transaction.
const ESTIMATE_SAVEPOINT: &str = "airlock_estimate";

/// A simple Query held while its row estimate is fetched. The message stays
/// at the front of the client input; nothing behind it is read meanwhile.
pub(super) enum Held {
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

impl<I: Inspector> Relay<I> {
    /// Holds the message at the front of the client input while `sql` runs
    /// (an EXPLAIN, a catalog lookup) once the upstream is idle; its first
    /// column is then given back. Returns false when it cannot run (no
    /// answer: judge the message again at once).
    pub(super) fn look_up(&mut self, sql: String, to_upstream: &mut BytesMut) -> bool {
        self.held = Some(Held::WaitingForIdle { sql });
        self.start_estimate(to_upstream);
        self.held.is_some()
    }

    /// Sends the held message's lookup once the upstream has answered
    /// everything before it. In an aborted transaction nothing can run.
    pub(super) fn start_estimate(&mut self, to_upstream: &mut BytesMut) {
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
    pub(super) fn start_bound_estimate(
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
    pub(super) fn on_estimate_message(
        &mut self,
        tag: u8,
        body: &[u8],
        to_upstream: &mut BytesMut,
    ) -> bool {
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
pub(super) fn first_column(body: &[u8]) -> Option<String> {
    let value = codec::data_row_values(body).next()??;
    String::from_utf8(value.to_vec()).ok()
}

/// A message is judged again once with what the upstream answered; a
/// verdict that asks the upstream a second time could loop, so it refuses.
pub(super) fn asked_once<T>(verdict: Verdict, fetched: &Option<T>) -> Verdict {
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
