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
        self.rebuild_names();
    }
}
