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
