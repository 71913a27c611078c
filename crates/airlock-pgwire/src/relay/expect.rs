//! What the upstream owes: an [`Expect`] entry for every forwarded message
//! that will be answered, in order, followed through the upstream's answers
//! so that each RowDescription, DataRow, CopyData and ErrorResponse is known
//! to answer a statement, and rebuilt when an error makes the upstream skip
//! to Sync.

use std::sync::Arc;

use super::estimate::{Held, Internal, first_column};
use super::names::{Bound, Portal, Statement};
use super::{Inspector, Relay, StatementRef, cstr};
use crate::error::ProtocolError;

/// What the upstream owes the client for one forwarded message, in order.
pub(super) enum Expect<M> {
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

/// How a result message is to be passed on.
pub(super) enum Route {
    Forward,
    Swallow,
    /// Masked with the current result's mask.
    Row,
    Copy,
}

impl<I: Inspector> Relay<I> {
    /// Notes what the upstream owes for a client message about to be
    /// forwarded (or replaced by its stand-in), and the statements and
    /// portals it creates or closes. `id` is the number a Query or Parse was
    /// given.
    pub(super) fn track_client(
        &mut self,
        tag: u8,
        body: &[u8],
        id: u64,
    ) -> Result<(), ProtocolError> {
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

    /// The statement the upstream is answering now.
    pub(super) fn answering(&self) -> Option<StatementRef> {
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
    pub(super) fn track_upstream(&mut self, tag: u8, body: &[u8]) -> Route {
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
                if let Some(Held::Bound { .. }) = self.held
                    && let Some(Held::Bound { plan }) = self.held.take()
                {
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
        self.rebuild_names();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Relay, StatementRef};
    use crate::codec;

    fn at(id: u64, index: usize) -> StatementRef {
        StatementRef { id, index }
    }

    /// A batch of statements on the unnamed statement and portal, pipelined:
    /// each is masked by its own description.
    fn pipelined(texts: [&str; 2]) -> Vec<Step> {
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
        let [first, second] = fields;
        vec![
            Step::Send(batch, upstream),
            Step::Answer(answers, expected),
            Step::Described(vec![(at(1, 0), first), (at(2, 0), second)]),
            // The replaced unnamed statement.
            Step::Forgotten(vec![1]),
        ]
    }

    /// COPY TO STDOUT as a simple Query: its data is masked when the
    /// statement is secret.
    fn copy_out(sql: &'static str, secret: bool) -> Vec<Step> {
        let header = msg(b'H', b"\0\0\x01\0\0");
        let data = [msg(b'd', b"123-45-6789\n"), msg(b'd', b"987-65-4321\n")];
        let shown = if secret {
            [msg(b'd', b"***\n"), msg(b'd', b"***\n")]
        } else {
            data.clone()
        };
        let tail = [msg(b'c', b""), complete("COPY 2"), ready(b'I')];
        let mut answers = vec![header.clone()];
        answers.extend(data);
        answers.extend(tail.clone());
        let mut expected = vec![header];
        expected.extend(shown);
        expected.extend(tail);
        vec![
            sent_as_is(vec![query_msg(sql)]),
            Step::Answer(answers, expected),
            Step::Copies(vec![at(1, 0)]),
        ]
    }

    /// Each answer is tied to the statement it answers, and masked (or
    /// scrubbed) by that statement's own description.
    #[test]
    fn answers_are_masked_by_the_statement_they_answer() {
        let masked = row(&["***"]);
        let leak = notice("01000", "value 123-45-6789");
        let harmless = notice("01000", "nothing to see");
        let failure = error(
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
        );
        let syntax = error("42601", "syntax error at end of input");
        let plain = || {
            Relay::new(
                Masking {
                    plain: true,
                    ..Masking::default()
                },
                1024,
                b'I',
            )
        };
        let cases: Vec<(&str, Relay<Masking>, Vec<Step>)> = vec![
            (
                "a simple query, statement by statement",
                masking(),
                vec![
                    sent_as_is(vec![query_msg("select 1; select secret, b from t")]),
                    Step::Answer(
                        vec![
                            row_description(&["?column?"]),
                            row(&["1"]),
                            complete("SELECT 1"),
                            row_description(&["ssn", "b"]),
                            row(&["123-45-6789", "x"]),
                            row(&["987-65-4321", "y"]),
                            complete("SELECT 2"),
                        ],
                        vec![
                            row_description(&["?column?"]),
                            row(&["1"]),
                            complete("SELECT 1"),
                            row_description(&["ssn", "b"]),
                            row(&["***", "***"]),
                            row(&["***", "***"]),
                            complete("SELECT 2"),
                        ],
                    ),
                    Step::Seen(vec![(1, "select 1; select secret, b from t")]),
                    Step::Described(vec![
                        (at(1, 0), row_description(&["?column?"])),
                        (at(1, 1), row_description(&["ssn", "b"])),
                    ]),
                    // The query is still being answered.
                    Step::Forgotten(vec![]),
                    answered_as_is(vec![ready(b'I')]),
                    Step::Forgotten(vec![1]),
                    Step::Idle,
                ],
            ),
            (
                // Its answer is swallowed: no RowDescription the client did
                // not ask for, nor a NoData.
                "an Execute without a Describe gets one",
                masking(),
                vec![
                    Step::Send(
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            row(&["987-65-4321"]),
                            complete("SELECT 2"),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            masked.clone(),
                            masked.clone(),
                            complete("SELECT 2"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Binds(vec![(1, bind_msg("p", "s1"))]),
                    Step::Described(vec![(at(1, 0), row_description(&["ssn"]))]),
                    // s1 still exists.
                    Step::Forgotten(vec![]),
                    Step::Idle,
                    Step::Send(
                        vec![
                            parse_msg("", "insert into t values (1)"),
                            bind_msg("", ""),
                            execute_msg("", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("", "insert into t values (1)"),
                            bind_msg("", ""),
                            describe_msg(b'P', ""),
                            execute_msg("", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            msg(b'n', b""),
                            complete("INSERT 0 1"),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            complete("INSERT 0 1"),
                            ready(b'I'),
                        ],
                    ),
                ],
            ),
            (
                "the client's own Describe is answered to it, and masks",
                masking(),
                vec![
                    sent_as_is(vec![
                        parse_msg("", "select secret from t"),
                        bind_msg("", ""),
                        describe_msg(b'P', ""),
                        execute_msg("", 0),
                        sync_msg(),
                    ]),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            masked.clone(),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::DescribedAt(vec![(1, 0)]),
                ],
            ),
            (
                // The next fetch in a batch of its own (JDBC), then two in
                // one.
                "a suspended portal stays masked without a second Describe",
                masking(),
                vec![
                    Step::Send(
                        vec![
                            parse_msg("", "select secret from t"),
                            bind_msg("c", ""),
                            execute_msg("c", 1),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("", "select secret from t"),
                            bind_msg("c", ""),
                            describe_msg(b'P', "c"),
                            execute_msg("c", 1),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["1"]),
                            suspended(),
                            ready(b'T'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            masked.clone(),
                            suspended(),
                            ready(b'T'),
                        ],
                    ),
                    sent_as_is(vec![execute_msg("c", 1), sync_msg()]),
                    Step::Answer(
                        vec![row(&["2"]), suspended(), ready(b'T')],
                        vec![masked.clone(), suspended(), ready(b'T')],
                    ),
                    sent_as_is(vec![execute_msg("c", 1), execute_msg("c", 0), sync_msg()]),
                    Step::Answer(
                        vec![
                            row(&["3"]),
                            suspended(),
                            row(&["4"]),
                            complete("SELECT 4"),
                            ready(b'T'),
                        ],
                        vec![
                            masked.clone(),
                            suspended(),
                            masked.clone(),
                            complete("SELECT 4"),
                            ready(b'T'),
                        ],
                    ),
                    Step::DescribedAt(vec![(1, 0)]),
                ],
            ),
            (
                "pipelined on the unnamed statement, the secret one first",
                masking(),
                pipelined(["select secret from t", "select 1"]),
            ),
            (
                "pipelined on the unnamed statement, the secret one last",
                masking(),
                pipelined(["select 1", "select secret from t"]),
            ),
            (
                "a portal closed behind its Execute is still masked",
                masking(),
                vec![
                    Step::Send(
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            execute_msg("p", 0),
                            close_msg(b'P', "p"),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            close_msg(b'P', "p"),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            complete("SELECT 1"),
                            close_complete(),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            masked.clone(),
                            complete("SELECT 1"),
                            close_complete(),
                            ready(b'I'),
                        ],
                    ),
                ],
            ),
            (
                // The client flushes, sees the error, then finishes its
                // batch; the next batch is tracked from scratch.
                "messages after an error owe nothing until Sync",
                masking(),
                vec![
                    sent_as_is(vec![parse_msg("s1", "select secret from"), msg(b'H', b"")]),
                    answered_as_is(vec![syntax.clone()]),
                    Step::Scrubbed(vec![(Some(at(1, 0)), b'E')]),
                    // Forgotten with the batch's ReadyForQuery.
                    Step::Forgotten(vec![]),
                    // Nothing injected.
                    sent_as_is(vec![
                        bind_msg("p", "s1"),
                        execute_msg("p", 0),
                        parse_msg("s2", "select secret from t"),
                        query_msg("select 1"),
                        sync_msg(),
                    ]),
                    // A Parse or Query the upstream ignores is not referred
                    // to again.
                    Step::Forgotten(vec![2, 3]),
                    answered_as_is(vec![ready(b'I')]),
                    Step::Forgotten(vec![2, 3, 1]),
                    // The ignored Query is not awaited.
                    Step::Idle,
                    Step::Send(
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            masked.clone(),
                            complete("SELECT 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::DescribedAt(vec![(4, 0)]),
                ],
            ),
            (
                // Sent before the error arrived, skipped by the upstream: a
                // Query inside the batch, and a Describe an Execute in the
                // next batch counted on (so it gets one of its own).
                "messages skipped after an error leave no trace",
                masking(),
                vec![
                    sent_as_is(vec![
                        parse_msg("s1", "select secret from t"),
                        bind_msg("p", "s1"),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![parse_complete(), bind_complete(), ready(b'T')]),
                    Step::Send(
                        vec![
                            parse_msg("", "select ("),
                            query_msg("select 1"),
                            describe_msg(b'P', "p"),
                            sync_msg(),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("", "select ("),
                            query_msg("select 1"),
                            describe_msg(b'P', "p"),
                            sync_msg(),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    answered_as_is(vec![syntax.clone(), ready(b'T')]),
                    // The skipped Parse and Query.
                    Step::Forgotten(vec![2, 3]),
                    Step::Answer(
                        vec![
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            complete("SELECT 1"),
                            ready(b'T'),
                        ],
                        vec![masked.clone(), complete("SELECT 1"), ready(b'T')],
                    ),
                    // No answer is awaited for the skipped Query.
                    Step::Idle,
                ],
            ),
            (
                "COPY of a secret statement",
                masking(),
                copy_out("copy (select secret from t) to stdout", true),
            ),
            (
                "COPY of a harmless statement",
                masking(),
                copy_out("copy t to stdout", false),
            ),
            (
                // The injected Describe's NoData is swallowed, the data
                // masked.
                "COPY through the extended protocol",
                masking(),
                vec![
                    Step::Send(
                        vec![
                            parse_msg("", "copy (select secret from t) to stdout"),
                            bind_msg("", ""),
                            execute_msg("", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("", "copy (select secret from t) to stdout"),
                            bind_msg("", ""),
                            describe_msg(b'P', ""),
                            execute_msg("", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            msg(b'n', b""),
                            msg(b'H', b"\0\0\x01\0\0"),
                            msg(b'd', b"123-45-6789\n"),
                            msg(b'c', b""),
                            complete("COPY 1"),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            msg(b'H', b"\0\0\x01\0\0"),
                            msg(b'd', b"***\n"),
                            msg(b'c', b""),
                            complete("COPY 1"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Copies(vec![at(1, 0)]),
                ],
            ),
            (
                // In an extended batch, the statement is the Execute's; a
                // notice with nothing owed has none.
                "errors and notices are scrubbed with their statement",
                masking(),
                vec![
                    sent_as_is(vec![query_msg("select 1; select secret from t")]),
                    Step::Answer(
                        vec![
                            leak.clone(),
                            complete("SELECT 1"),
                            harmless.clone(),
                            failure.clone(),
                            ready(b'I'),
                        ],
                        vec![
                            notice("01000", "[scrubbed]"),
                            complete("SELECT 1"),
                            harmless,
                            error("22P02", "[scrubbed]"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Scrubbed(vec![
                        (Some(at(1, 0)), b'N'),
                        (Some(at(1, 1)), b'N'),
                        (Some(at(1, 1)), b'E'),
                    ]),
                    Step::Send(
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                        vec![
                            parse_msg("s1", "select secret from t"),
                            bind_msg("p", "s1"),
                            describe_msg(b'P', "p"),
                            execute_msg("p", 0),
                            sync_msg(),
                        ],
                    ),
                    Step::Answer(
                        vec![
                            parse_complete(),
                            bind_complete(),
                            row_description(&["ssn"]),
                            row(&["123-45-6789"]),
                            failure.clone(),
                            ready(b'I'),
                        ],
                        vec![
                            parse_complete(),
                            bind_complete(),
                            masked.clone(),
                            error("22P02", "[scrubbed]"),
                            ready(b'I'),
                        ],
                    ),
                    Step::Scrubbed(vec![
                        (Some(at(1, 0)), b'N'),
                        (Some(at(1, 1)), b'N'),
                        (Some(at(1, 1)), b'E'),
                        (Some(at(2, 0)), b'E'),
                    ]),
                    Step::Answer(vec![leak.clone()], vec![notice("01000", "[scrubbed]")]),
                    Step::Scrubbed(vec![
                        (Some(at(1, 0)), b'N'),
                        (Some(at(1, 1)), b'N'),
                        (Some(at(1, 1)), b'E'),
                        (Some(at(2, 0)), b'E'),
                        (None, b'N'),
                    ]),
                ],
            ),
            (
                // Nothing injected, nothing masked or scrubbed.
                "errors and notices pass untouched when the inspector does not mask",
                plain(),
                vec![
                    sent_as_is(vec![
                        parse_msg("", "select secret from t"),
                        bind_msg("", ""),
                        execute_msg("", 0),
                        sync_msg(),
                    ]),
                    answered_as_is(vec![
                        parse_complete(),
                        bind_complete(),
                        row(&["123-45-6789"]),
                        leak.clone(),
                        failure.clone(),
                        ready(b'I'),
                    ]),
                    Step::Scrubbed(vec![]),
                    Step::Described(vec![]),
                ],
            ),
        ];
        for (case, mut relay, steps) in cases {
            converse(case, &mut relay, &steps);
        }
    }

    #[test]
    fn errors_and_notices_pass_untouched_through_an_inspector_without_masking() {
        let leak = notice("01000", "value 123-45-6789");
        let failure = error(
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
        );
        let mut relay = relay();
        send(&mut relay, &[query_msg("select secret from t")]);
        let answers = [leak, failure, ready(b'I')];
        assert_eq!(answer(&mut relay, &answers), cat(&answers));
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
}
