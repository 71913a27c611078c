//! Name tracking: the prepared statements and portals the client's messages
//! refer to, as its messages left them and as the upstream's answers
//! confirmed them, so that each answer (and each Bind) is tied to the
//! statement it belongs to even when an error makes the upstream skip what
//! changed a name.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::expect::Expect;
use super::{Inspector, Relay, cstr};
use crate::error::ProtocolError;

/// A prepared statement: the id of the Parse that created it, shared by
/// everything that refers to it (its name, the portals bound to it, the
/// answers still due). The inspector forgets it once nothing does.
pub(super) type Statement = Arc<u64>;

/// A portal as one Bind created it. The answers due for it hold it, not its
/// name: a Bind or Close of the same name queued behind them must not change
/// what they refer to.
pub(super) struct Bound<M> {
    /// Its statement; `None` when the relay saw no Bind for it (a cursor
    /// declared in SQL).
    pub(super) id: Option<Statement>,
    /// The last answered Describe of it: the epoch the Describe was sent in,
    /// and how to mask the rows.
    answer: Mutex<Option<(u64, Option<Arc<M>>)>>,
}

impl<M> Bound<M> {
    pub(super) fn new(id: Option<Statement>) -> Arc<Self> {
        Arc::new(Bound {
            id,
            answer: Mutex::new(None),
        })
    }

    pub(super) fn answer(&self) -> MutexGuard<'_, Option<(u64, Option<Arc<M>>)>> {
        // Never locked across a call out of the relay: cannot be poisoned.
        self.answer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A portal name, as the client's messages left it.
pub(super) struct Portal<M> {
    pub(super) bound: Arc<Bound<M>>,
    /// The last Describe sent for it.
    pub(super) described: Option<Described>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Described {
    /// The epoch the Describe was sent in.
    epoch: u64,
    /// The epoch its answer still holds in (moved on by the portal's own
    /// Executes).
    pub(super) valid: u64,
    /// The batch it was sent in.
    batch: u64,
}

impl<I: Inspector> Relay<I> {
    /// The portal `name`; one the client did not bind (a cursor declared in
    /// SQL, or nothing the upstream knows) is noted with no statement.
    pub(super) fn portal(&mut self, name: &[u8]) -> &mut Portal<I::Mask> {
        self.portals.entry(name.to_vec()).or_insert_with(|| Portal {
            bound: Bound::new(None),
            described: None,
        })
    }

    /// Notes a Describe of portal `name` about to be sent.
    pub(super) fn describe_portal(&mut self, name: &[u8], injected: bool) -> Expect<I::Mask> {
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
    pub(super) fn described(&self, name: &[u8]) -> bool {
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
    pub(super) fn unsettled(&self, tag: u8, body: &[u8]) -> Result<bool, ProtocolError> {
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

    /// After an error, what the names refer to: what the upstream
    /// confirmed, changed by what it still owes (later batches included),
    /// and by nothing it skipped.
    pub(super) fn rebuild_names(&mut self) {
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

    /// Tells the inspector to forget the retired statements nothing refers
    /// to any more.
    pub(super) fn release(&mut self) {
        let inspector = &mut self.inspector;
        self.retired.retain(|id| {
            if Arc::strong_count(id) > 1 {
                return true;
            }
            inspector.forget(**id);
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::super::testing::*;

    /// Each name refers to what the client's messages made of it, unless an
    /// error made the upstream skip them.
    #[test]
    fn names_follow_what_the_upstream_did() {
        let masked = row(&["***"]);
        let exists = error("42P05", "prepared statement \"s1\" already exists");
        let secret_rows = || {
            vec![
                row_description(&["ssn"]),
                row(&["123-45-6789"]),
                complete("SELECT 1"),
            ]
        };
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                // tokio-postgres: prepare (Parse, Describe S, Sync), then
                // query (Bind of the unnamed portal, Execute, Sync).
                "a statement described, then bound later",
                vec![
                    sent_as_is(vec![
                        parse_msg("s0", "select secret from t where a = $1"),
                        describe_msg(b'S', "s0"),
                        sync_msg(),
                    ]),
                    // A statement's description passes as it is.
                    answered_as_is(vec![
                        parse_complete(),
                        msg(b't', b"\0\x01\0\0\0\x17"),
                        row_description(&["ssn"]),
                        ready(b'I'),
                    ]),
                    Step::Described(vec![]),
                    Step::Send(
                        vec![bind_with("", "s0", "1"), execute_msg("", 0), sync_msg()],
                        vec![
                            bind_with("", "s0", "1"),
                            describe_msg(b'P', ""),
                            execute_msg("", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        [vec![bind_complete()], secret_rows(), vec![ready(b'I')]].concat(),
                        vec![
                            bind_complete(),
                            masked.clone(),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Bound(vec![1]),
                    Step::DescribedAt(vec![(1, 0)]),
                ],
            ),
            (
                // The relay does not know the cursor's statement: 0.
                "a cursor declared in SQL",
                vec![
                    sent_as_is(vec![query_msg(
                        "declare c cursor with hold for select secret from t",
                    )]),
                    answered_as_is(vec![complete("DECLARE CURSOR"), ready(b'I')]),
                    Step::Send(
                        vec![execute_msg("c", 0), sync_msg()],
                        vec![describe_msg(b'P', "c"), execute_msg("c", 0), sync_msg()],
                    ),
                    Step::Answer(
                        vec![
                            row_description(&["secret"]),
                            row(&["123-45-6789"]),
                            complete("FETCH 1"),
                            ready(b'I'),
                        ],
                        vec![masked.clone(), complete("FETCH 1"), ready(b'I')],
                    ),
                    Step::DescribedAt(vec![(0, 0)]),
                ],
            ),
            (
                // Portal c is described as harmless; SQL then closes it and
                // declares a cursor of the same name over secret data: it is
                // described again.
                "a description does not outlive other statements",
                vec![
                    sent_as_is(vec![
                        parse_msg("", "select 1"),
                        bind_msg("c", ""),
                        describe_msg(b'P', "c"),
                        execute_msg("c", 1),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![
                        parse_complete(),
                        bind_complete(),
                        row_description(&["a"]),
                        row(&["1"]),
                        suspended(),
                        ready(b'T'),
                    ]),
                    sent_as_is(vec![query_msg(
                        "close c; declare c cursor for select secret from t",
                    )]),
                    answered_as_is(vec![
                        complete("CLOSE CURSOR"),
                        complete("DECLARE CURSOR"),
                        ready(b'T'),
                    ]),
                    Step::Send(
                        vec![execute_msg("c", 0), sync_msg()],
                        vec![describe_msg(b'P', "c"), execute_msg("c", 0), sync_msg()],
                    ),
                    Step::Answer(
                        vec![
                            row_description(&["secret"]),
                            row(&["123-45-6789"]),
                            complete("FETCH 1"),
                            ready(b'T'),
                        ],
                        vec![masked.clone(), complete("FETCH 1"), ready(b'T')],
                    ),
                ],
            ),
            (
                "a failed re-Parse leaves the name on the old statement",
                vec![
                    sent_as_is(vec![parse_msg("s1", "select secret from t"), sync_msg()]),
                    answered_as_is(vec![parse_complete(), ready(b'I')]),
                    sent_as_is(vec![parse_msg("s1", "select 1"), sync_msg()]),
                    answered_as_is(vec![exists.clone(), ready(b'I')]),
                    // The failed Parse.
                    Step::Forgotten(vec![2]),
                    Step::Send(
                        vec![bind_msg("p", "s1"), execute_msg("p", 0), sync_msg()],
                        vec![
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        [vec![bind_complete()], secret_rows(), vec![ready(b'I')]].concat(),
                        vec![
                            bind_complete(),
                            masked.clone(),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Bound(vec![1]),
                    Step::DescribedAt(vec![(1, 0)]),
                ],
            ),
            (
                // Pipelined: a re-Parse that fails, then a Close and a Parse
                // that succeed; then, in a transaction, the unnamed portal
                // bound in a failing batch and again in the next.
                "an error does not undo what later batches did",
                vec![
                    sent_as_is(vec![parse_msg("s1", "select 1"), sync_msg()]),
                    answered_as_is(vec![parse_complete(), ready(b'I')]),
                    sent_as_is(vec![
                        parse_msg("s1", "select x"),
                        sync_msg(),
                        close_msg(b'S', "s1"),
                        parse_msg("s1", "select secret from t"),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![
                        exists.clone(),
                        ready(b'I'),
                        close_complete(),
                        parse_complete(),
                        ready(b'I'),
                    ]),
                    Step::Forgotten(vec![2, 1]),
                    Step::Send(
                        vec![bind_msg("p", "s1"), execute_msg("p", 0), sync_msg()],
                        vec![
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        [vec![bind_complete()], secret_rows(), vec![ready(b'I')]].concat(),
                        vec![
                            bind_complete(),
                            masked.clone(),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Bound(vec![3]),
                    Step::DescribedAt(vec![(3, 0)]),
                    sent_as_is(vec![
                        parse_msg("", "select ("),
                        bind_msg("", ""),
                        sync_msg(),
                        bind_msg("", "s1"),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![
                        error("42601", "syntax error at end of input"),
                        ready(b'E'),
                        bind_complete(),
                        ready(b'T'),
                    ]),
                    Step::Send(
                        vec![execute_msg("", 0), sync_msg()],
                        vec![describe_msg(b'P', ""), execute_msg("", 0), sync_msg()],
                    ),
                    Step::Answer(
                        [secret_rows(), vec![ready(b'T')]].concat(),
                        vec![masked.clone(), complete("SELECT 1"), ready(b'T')],
                    ),
                    Step::DescribedAt(vec![(3, 0), (3, 0)]),
                ],
            ),
            (
                "a closed statement is remembered while a portal uses it",
                vec![
                    sent_as_is(vec![
                        parse_msg("s1", "select secret from t"),
                        bind_msg("p", "s1"),
                        close_msg(b'S', "s1"),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![
                        parse_complete(),
                        bind_complete(),
                        close_complete(),
                        ready(b'T'),
                    ]),
                    // Portal p uses it.
                    Step::Forgotten(vec![]),
                    Step::Send(
                        vec![execute_msg("p", 0), sync_msg()],
                        vec![describe_msg(b'P', "p"), execute_msg("p", 0), sync_msg()],
                    ),
                    Step::Answer(
                        [secret_rows(), vec![ready(b'T')]].concat(),
                        vec![masked.clone(), complete("SELECT 1"), ready(b'T')],
                    ),
                    sent_as_is(vec![close_msg(b'P', "p"), sync_msg()]),
                    answered_as_is(vec![close_complete(), ready(b'T')]),
                    Step::Forgotten(vec![1]),
                ],
            ),
            (
                // "s9" was prepared with SQL PREPARE: the relay saw no Parse.
                // The Bind is refused, not sent.
                "a Bind of a statement no Parse created is judged too",
                vec![
                    Step::Send(
                        vec![bind_with("p", "s9", "***"), execute_msg("p", 0), sync_msg()],
                        vec![
                            msg(b'B', b"p\0AIRLOCK_REFUSED_1\0\0\x02\0\0\0\0\0\0\0\0"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Binds(vec![(0, bind_with("p", "s9", "***"))]),
                ],
            ),
        ];
        for (case, steps) in cases {
            converse(case, &mut masking(), &steps);
        }
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
}
