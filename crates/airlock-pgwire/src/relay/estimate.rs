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
        let rollback = format!("ROLLBACK TO SAVEPOINT {ESTIMATE_SAVEPOINT}");
        let release = format!("RELEASE SAVEPOINT {ESTIMATE_SAVEPOINT}");
        if in_block {
            // Rolled back even when it succeeds: a lookup only reads, and
            // whatever code of the client's it ran (an operator, a cast)
            // keeps nothing.
            internal_batch(&[&savepoint, explain, &rollback, &release], to_upstream);
        } else {
            internal_batch(&[explain], to_upstream);
        }
        self.held = Some(Held::Explaining {
            in_block,
            failed: false,
            plan: None,
        });
    }

    /// Sends a held Bind's estimate or lookup inside its batch, ahead of
    /// it: `sql` (the EXPLAIN of its statement) parsed with `types` and
    /// bound with the Bind's own parameters (`bind`; none when `None`) on
    /// airlock's own statement and portal, then a Flush so that the answers
    /// come before the batch's Sync. Nothing the client sent is held up
    /// behind a Sync it has not sent yet. An error skips the rest of the
    /// batch, as the statement's own error would have. Returns false
    /// (nothing sent) when the Bind is malformed.
    pub(super) fn start_bound_lookup(
        &mut self,
        sql: &str,
        types: &[u8],
        bind: Option<&[u8]>,
        to_upstream: &mut BytesMut,
    ) -> bool {
        let name = BOUND_ESTIMATE_NAME;
        let mut out = BytesMut::new();
        codec::close(b'S', name, &mut out);
        codec::close(b'P', name, &mut out);
        codec::parse_typed(name, sql, types, &mut out);
        match bind {
            Some(bind) => {
                if codec::bind_like(name, name, bind, &mut out).is_none() {
                    return false;
                }
            }
            None => codec::bind(name, name, &mut out),
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
        Verdict::Estimate { .. }
        | Verdict::Lookup { .. }
        | Verdict::EstimateBound { .. }
        | Verdict::LookupBound { .. }
            if fetched.is_some() =>
        {
            Verdict::Refuse {
                code: sqlstate::INSUFFICIENT_PRIVILEGE,
                hint: None,
                message:
                    "airlock: the statement could not be judged (the upstream was asked twice)"
                        .into(),
            }
        }
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::super::testing::*;
    use super::super::{Inspector, Plan, Relay, Verdict};
    use super::*;
    use crate::codec;
    use crate::sqlstate;

    #[test]
    fn a_verdict_asking_the_upstream_again_is_refused() {
        let estimate = Verdict::Estimate {
            statement: "s".into(),
        };
        let lookup = Verdict::Lookup { sql: "s".into() };
        let bound = Verdict::EstimateBound {
            statement: "s".into(),
            param_types: vec![],
        };
        let lookup_bound = Verdict::LookupBound {
            sql: "s".into(),
            param_types: vec![],
            with_params: false,
        };
        // (verdict, whether the upstream was asked already, refused)
        let cases = [
            (estimate.clone(), false, false),
            (estimate, true, true),
            (lookup.clone(), false, false),
            (lookup, true, true),
            (bound.clone(), false, false),
            (bound, true, true),
            (lookup_bound.clone(), false, false),
            (lookup_bound, true, true),
            (Verdict::Forward, true, false),
        ];
        for (verdict, asked, refused) in cases {
            let fetched = asked.then_some(None::<String>);
            let got = asked_once(verdict.clone(), &fetched);
            if refused {
                assert!(
                    matches!(got, Verdict::Refuse { code, .. } if code == sqlstate::INSUFFICIENT_PRIVILEGE),
                    "{verdict:?}: {got:?}"
                );
            } else {
                assert_eq!(got, verdict, "asked already: {asked}");
            }
        }
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
    fn a_held_query_is_judged_again_with_its_estimate() {
        // (transaction status, the EXPLAIN's rows or its failure, forwarded)
        let cases = [
            (b'I', Ok(5), true),
            (b'T', Ok(5), true),
            (b'I', Ok(5000), false),
            (b'I', Err(()), false),
            (b'T', Err(()), false),
        ];
        for (status, answer, forwarded) in cases {
            let case = format!("{} {answer:?}", status as char);
            let (sent, input, relay) = estimate(status, answer);
            let first: &[u8] = if forwarded {
                b"delete from t where a = 1\0"
            } else {
                b"AIRLOCK_REFUSED_1\0"
            };
            assert_eq!(&sent[0].body[..], first, "{case}");
            assert_eq!(&sent[1].body[..], b"select 2\0", "{case}");
            assert!(input.is_empty(), "{case}");
            assert_eq!(relay.transaction_status(), status, "{case}");
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
                    hint: None,
                    message: "too many".into(),
                },
            }
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
    }

    fn bound_estimate_batch() -> (Relay<BindEstimates>, Vec<codec::Message>) {
        bound_batch(BindEstimates::default(), b'I')
    }

    /// A Parse, Bind, Execute and Sync sent to `inspector`, which asks for
    /// something at the Bind: the relay and what it sent.
    fn bound_batch<I: Inspector>(inspector: I, status: u8) -> (Relay<I>, Vec<codec::Message>) {
        let mut relay = Relay::new(inspector, 1 << 16, status);
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

    /// Asks for a lookup before every Query and Bind (as commit review
    /// reads its baseline), records what came back and every
    /// ReadyForQuery's status.
    #[derive(Default)]
    struct Lookups {
        answers: Vec<String>,
        ready: Vec<u8>,
    }

    impl Inspector for Lookups {
        type Mask = ();
        fn query(&mut self, _: u64, _: &[u8], plan: Plan<'_>) -> Verdict {
            self.answers.push(format!("{plan:?}"));
            match plan {
                Plan::NotFetched => Verdict::Lookup {
                    sql: "SELECT stats()".into(),
                },
                _ => Verdict::Forward,
            }
        }
        fn parse(&mut self, _: u64, _: &[u8], _: &[u8], _: &[u8]) -> Verdict {
            Verdict::Forward
        }
        fn bind(&mut self, _: Option<u64>, _: &[u8], plan: Plan<'_>) -> Verdict {
            self.answers.push(format!("{plan:?}"));
            match plan {
                Plan::NotFetched => Verdict::LookupBound {
                    sql: "SELECT stats()".into(),
                    param_types: Vec::new(),
                    with_params: false,
                },
                _ => Verdict::Forward,
            }
        }
        fn ready(&mut self, status: u8, _: bool) {
            self.ready.push(status);
        }
        fn parameter_status(&mut self, _: &str, _: &str) {}
    }

    #[test]
    fn a_query_lookup_runs_as_given_in_a_savepoint_and_the_query_follows() {
        let mut relay = Relay::new(Lookups::default(), 1 << 16, b'T');
        let mut input = query_msg("update t set v = 1");
        let mut to_up = BytesMut::new();
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        assert!(relay.holding());
        let parses: Vec<String> = messages(to_up.split())
            .iter()
            .filter(|m| m.tag == b'P')
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert_eq!(parses.len(), 4, "{parses:?}");
        assert!(
            parses[0].contains("SAVEPOINT airlock_estimate"),
            "{parses:?}"
        );
        assert!(
            parses[1].contains("\0SELECT stats()\0"),
            "verbatim: {parses:?}"
        );
        assert!(
            parses[2].contains("ROLLBACK TO SAVEPOINT airlock_estimate"),
            "{parses:?}"
        );
        assert!(
            parses[3].contains("RELEASE SAVEPOINT airlock_estimate"),
            "{parses:?}"
        );
        let mut up = cat(&[
            row(&["[[1, 0, 2, 0]]"]),
            msg(b'C', b"SELECT 1\0"),
            msg(b'Z', b"T"),
        ]);
        let mut to_client = BytesMut::new();
        assert!(
            relay
                .handle_upstream(&mut up, &mut to_client, &mut to_up)
                .unwrap()
        );
        assert!(
            to_client.is_empty(),
            "the lookup's answers are not the client's"
        );
        assert!(relay.inspector().ready.is_empty(), "nor its ReadyForQuery");
        let _ = relay.handle_client(&mut input, &mut to_up).unwrap();
        let sent = messages(to_up.split());
        assert_eq!(&sent[0].body[..], b"update t set v = 1\0");
        assert_eq!(
            relay.inspector().answers,
            ["NotFetched", "Json(\"[[1, 0, 2, 0]]\")"]
        );
        let mut up = cat(&[msg(b'C', b"UPDATE 1\0"), msg(b'Z', b"T")]);
        relay
            .handle_upstream(&mut up, &mut to_client, &mut to_up)
            .unwrap();
        assert_eq!(
            relay.inspector().ready,
            b"T",
            "the client's own ReadyForQuery"
        );
    }

    #[test]
    fn a_bound_lookup_without_parameters_runs_inside_the_batch() {
        let (_, sent) = bound_batch(Lookups::default(), b'T');
        let tags: Vec<u8> = sent.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"PCCPBECCH");
        assert!(
            sent[3]
                .body
                .starts_with(b"airlock_internal_estimate\0SELECT stats()\0")
        );
        assert!(
            sent[4].body.ends_with(&[0, 0, 0, 0, 0, 0]),
            "no formats, no parameters, no result formats"
        );
    }
}
