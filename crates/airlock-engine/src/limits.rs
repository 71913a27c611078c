//! Session limits per principal and per connection: how many sessions one
//! principal may have open at once (a runaway agent cannot take every
//! upstream connection), and how many sessions, and so upstream
//! connections, one connection may have (each session holds exactly one
//! upstream connection; the gateway pools none).
//!
//! Every door asks [`Limiter::admit`] once a session is routed, before it
//! opens the upstream, and keeps the [`Permit`] for the session's life; an
//! MCP call is a session of one request and asks per call. The answer is
//! neutral: the door maps [`Exceeded`] to its own error (PostgreSQL
//! `53300`, MySQL errno 1203 or 1040, an MCP tool error).
//!
//! A principal's statements draw on one token bucket
//! (`limits.per_principal.statements_per_second`), shared by its sessions
//! on every door: a door asks [`Budget::spend`] once per statement message
//! it judges, with the time in hand, and refuses the statement (PostgreSQL
//! `54000`, MySQL errno 1226, an MCP tool error) when the bucket is empty.
//!
//! An access rule's budgets (SPEC §14) ride on the same call: the
//! statements of each session, and of each principal under the rule over a
//! window, are counted (`max_statements`, `statements_per_minute`), and a
//! statement is refused once the rows or bytes its session or principal
//! has been returned reached a cap. Doors report each result's rows and
//! bytes as it ends ([`Budget::returned`]): a result is not cut midway for
//! these (the client's and the upstream's states would part), so the
//! statement after the one that reached a cap is the one refused. With
//! `on_exceed: session` that refusal ends the session
//! ([`Exceeded::ends_session`]). The one cap that cuts a result,
//! `max_result_bytes`, therefore always ends the session: a client whose
//! connection is gone knows the statement's fate is unknown, where one that
//! got an error would believe it failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_policy::access::{Budgets, Caps};
use airlock_policy::{Hint, Principal, Route};

/// The configured caps (`limits.per_principal`, `limits.per_connection`);
/// `None` is no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCaps {
    pub per_principal: Option<u32>,
    pub per_connection: Option<u32>,
    /// `limits.per_principal.statements_per_second`.
    pub statements_per_second: Option<u32>,
}

/// Which cap a session would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    /// The principal has `limit` sessions open.
    Principal { subject: String, limit: u32 },
    /// The connection has `limit` sessions (upstream connections) open.
    Connection { connection: String, limit: u32 },
    /// The principal has spent its `limit` statements a second.
    Rate { subject: String, limit: u32 },
    /// A budget of the route's access rule is spent.
    Budget {
        scope: Scope,
        cap: Cap,
        limit: u64,
        /// How long a principal's window lasts.
        window: std::time::Duration,
        /// The rule's `on_exceed` is `session`: the refusal ends it.
        ends_session: bool,
    },
    /// One result reached the rule's `max_result_bytes`: it is cut and the
    /// session ends.
    Result { limit: u64 },
}

/// Whose budget: the session's, or its principal's under the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Session,
    Principal,
}

/// Which budget cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Statements,
    PerMinute,
    Rows,
    Bytes,
    /// Estimated planner cost.
    Cost,
}

impl Exceeded {
    /// The client's message, naming the limit.
    pub fn message(&self) -> String {
        match self {
            Exceeded::Principal { subject, limit } => format!(
                "airlock: {subject} already has {limit} sessions open, the most \
                 limits.per_principal.max_sessions allows; close one and retry"
            ),
            Exceeded::Connection { connection, limit } => format!(
                "airlock: connection \"{connection}\" already has {limit} sessions open, the \
                 most limits.per_connection.max_sessions allows; retry later"
            ),
            Exceeded::Rate { subject, limit } => format!(
                "airlock: {subject} is sending more than {limit} statements a second, the most \
                 limits.per_principal.statements_per_second allows; slow down and retry"
            ),
            Exceeded::Result { limit } => format!(
                "airlock: session ended: one result would pass {limit} bytes, the most {} allows \
                 for a statement (each fetch of a cursor or portal counts alone)",
                self.rule()
            ),
            Exceeded::Budget {
                scope,
                cap,
                limit,
                ends_session,
                ..
            } => {
                let whose = match scope {
                    Scope::Session => "this session has",
                    Scope::Principal => "you, across your sessions under this access rule, have",
                };
                let what = match cap {
                    Cap::Statements => format!("sent {limit} statements"),
                    Cap::PerMinute => format!("sent {limit} statements in the last minute"),
                    Cap::Rows => format!("been returned {limit} rows or more"),
                    Cap::Bytes => format!("been returned {limit} bytes or more"),
                    Cap::Cost => format!(
                        "been allowed {limit} of estimated planner cost, which this statement's estimate would pass"
                    ),
                };
                let ended = if *ends_session {
                    "session ended (budgets.on_exceed: session)"
                } else {
                    "statement refused"
                };
                format!(
                    "airlock: {ended}: {whose} {what}, the most {} allows",
                    self.rule()
                )
            }
        }
    }

    /// The rule a refusal is recorded under.
    pub fn rule(&self) -> &'static str {
        match self {
            Exceeded::Principal { .. } | Exceeded::Connection { .. } => "max-sessions",
            Exceeded::Rate { .. } => RATE_RULE,
            Exceeded::Result { .. } => "budgets.max_result_bytes",
            Exceeded::Budget { scope, cap, .. } => match (scope, cap) {
                (Scope::Session, Cap::Statements) => "budgets.session.max_statements",
                (Scope::Session, Cap::PerMinute) => "budgets.session.statements_per_minute",
                (Scope::Session, Cap::Rows) => "budgets.session.max_rows",
                (Scope::Session, Cap::Bytes) => "budgets.session.max_bytes",
                (Scope::Session, Cap::Cost) => "budgets.session.max_cost",
                (Scope::Principal, Cap::Statements) => "budgets.principal.max_statements",
                (Scope::Principal, Cap::PerMinute) => "budgets.principal.statements_per_minute",
                (Scope::Principal, Cap::Rows) => "budgets.principal.max_rows",
                (Scope::Principal, Cap::Bytes) => "budgets.principal.max_bytes",
                (Scope::Principal, Cap::Cost) => "budgets.principal.max_cost",
            },
        }
    }

    /// What the client could do instead.
    pub fn hint(&self) -> Hint {
        match self {
            Exceeded::Principal { .. } => Hint::later(
                "max-sessions",
                "close one of your sessions (or reuse it), then connect again",
            ),
            Exceeded::Connection { .. } => Hint::later(
                "max-sessions",
                "the connection is at its session cap; connect again later",
            ),
            Exceeded::Rate { limit, .. } => Hint::later(
                RATE_RULE,
                format!(
                    "send at most {limit} statements a second: wait a second, then send it again"
                ),
            ),
            Exceeded::Result { .. } => Hint::never(
                self.rule(),
                "ask for less (a WHERE clause, a LIMIT, fewer columns), or read the result in pages (a cursor's FETCH, or the driver's fetch size): each page counts alone",
            ),
            Exceeded::Budget {
                scope,
                cap,
                limit,
                window,
                ..
            } => match (scope, cap) {
                (_, Cap::PerMinute) => Hint::later(
                    self.rule(),
                    format!("send at most {limit} statements a minute: wait, then send it again"),
                ),
                (Scope::Session, Cap::Cost) => Hint::never(
                    self.rule(),
                    "make the statement cheaper (a WHERE clause on an indexed column, a LIMIT), or end the session: a new one gets a new budget (your budget across sessions still counts)",
                ),
                (Scope::Session, _) => Hint::never(
                    self.rule(),
                    "this session's budget is spent: end it; a new session gets a new one (your budget across sessions still counts)",
                ),
                (Scope::Principal, _) => Hint::later(
                    self.rule(),
                    format!(
                        "your budget under this access rule starts again when its window ({}) ends; ask an administrator for a larger one",
                        humantime::format_duration(*window)
                    ),
                ),
            },
        }
    }

    /// The metric's label.
    pub fn limit(&self) -> &'static str {
        match self {
            Exceeded::Principal { .. } => "per_principal_sessions",
            Exceeded::Connection { .. } => "per_connection_sessions",
            Exceeded::Rate { .. } => "per_principal_statements",
            Exceeded::Result { .. } => "budget_result_bytes",
            Exceeded::Budget { scope, cap, .. } => match (scope, cap) {
                (Scope::Session, Cap::Statements | Cap::PerMinute) => "budget_session_statements",
                (Scope::Session, Cap::Rows | Cap::Bytes) => "budget_session_results",
                (Scope::Principal, Cap::Statements | Cap::PerMinute) => {
                    "budget_principal_statements"
                }
                (Scope::Principal, Cap::Rows | Cap::Bytes) => "budget_principal_results",
                (Scope::Session, Cap::Cost) => "budget_session_cost",
                (Scope::Principal, Cap::Cost) => "budget_principal_cost",
            },
        }
    }

    /// Whether the session ends with the refusal: a rule with
    /// `on_exceed: session`, or a result cut by `max_result_bytes`.
    pub fn ends_session(&self) -> bool {
        match self {
            Exceeded::Budget { ends_session, .. } => *ends_session,
            Exceeded::Result { .. } => true,
            _ => false,
        }
    }
}

/// Open sessions by principal (issuer and subject) and by connection.
#[derive(Debug, Default)]
pub struct Limiter {
    open: Mutex<Counts>,
    /// Statement buckets by principal. Each session's [`Budget`] holds its
    /// principal's bucket, so a statement locks that bucket only; this map
    /// is locked at admission. A bucket no session holds and that has
    /// refilled is the same as none: such buckets are dropped when the map
    /// grows.
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    /// What each principal spent under each access rule with budgets, by
    /// (rule, issuer, subject); kept like the buckets.
    ledgers: Mutex<HashMap<(String, String, String), Spending>>,
}

/// Spending counted against one scope's caps.
type Spending = Arc<Mutex<Spent>>;

#[derive(Debug, Default)]
struct Spent {
    statements: u64,
    rows: u64,
    bytes: u64,
    /// Estimated planner cost.
    cost: f64,
    /// The per-minute bucket: tokens left and when counted.
    minute: (f64, Option<Instant>),
    /// A principal's window began (at its first statement or result).
    since: Option<Instant>,
    /// How long its window lasts (a principal's spending is evicted by its
    /// own rule's window).
    window: Option<std::time::Duration>,
}

impl Spent {
    /// A principal's window that ended by `now` starts again.
    fn roll(&mut self, window: std::time::Duration, now: Instant) {
        if self
            .since
            .is_some_and(|s| now.saturating_duration_since(s) >= window)
        {
            *self = Spent::default();
        }
        self.window = Some(window);
    }

    /// Whether its window has ended by `now` (or never began): nothing it
    /// holds counts any more.
    fn lapsed(&self, now: Instant) -> bool {
        match (self.since, self.window) {
            (Some(since), Some(window)) => now.saturating_duration_since(since) >= window,
            _ => true,
        }
    }

    /// Whether `n` more statements stay within `caps` at `now`.
    fn check(
        &self,
        caps: &Caps,
        scope: Scope,
        n: u64,
        now: Instant,
        window: std::time::Duration,
    ) -> Result<(), Exceeded> {
        let over = |cap, limit| {
            Err(Exceeded::Budget {
                scope,
                cap,
                limit,
                window,
                ends_session: false,
            })
        };
        if let Some(max) = caps.max_rows.filter(|m| self.rows >= *m) {
            return over(Cap::Rows, max);
        }
        if let Some(max) = caps.max_bytes.filter(|m| self.bytes >= *m) {
            return over(Cap::Bytes, max);
        }
        if let Some(max) = caps.max_statements.filter(|m| self.statements + n > *m) {
            return over(Cap::Statements, max);
        }
        if let Some(rate) = caps.statements_per_minute {
            let per_minute = f64::from(rate);
            let tokens = refilled(self.minute, per_minute / 60.0, per_minute, now);
            if tokens < (n as f64).min(per_minute) {
                return over(Cap::PerMinute, u64::from(rate));
            }
        }
        Ok(())
    }

    fn take(&mut self, caps: &Caps, n: u64, now: Instant) {
        self.statements += n;
        self.since.get_or_insert(now);
        if let Some(rate) = caps.statements_per_minute {
            let per_minute = f64::from(rate);
            let tokens = refilled(self.minute, per_minute / 60.0, per_minute, now);
            self.minute = (
                tokens - (n as f64).min(per_minute),
                Some(self.minute.1.map_or(now, |at| at.max(now))),
            );
        }
    }
}

/// A session's budgets under its access rule, and its principal's.
#[derive(Debug, Clone)]
struct Ledger {
    budgets: Budgets,
    session: Spending,
    principal: Spending,
}

impl Ledger {
    fn take(&self, statements: usize, now: Instant) -> Result<(), Exceeded> {
        let n = statements as u64;
        let b = &self.budgets;
        // Only a result cap: nothing per statement (and no lock).
        if b.session.is_empty() && b.principal.is_empty() {
            return Ok(());
        }
        let mut session = lock(&self.session);
        let mut principal = lock(&self.principal);
        principal.roll(b.window, now);
        session
            .check(&b.session, Scope::Session, n, now, b.window)
            .and_then(|()| principal.check(&b.principal, Scope::Principal, n, now, b.window))
            .map_err(|e| self.ending(e))?;
        session.take(&b.session, n, now);
        principal.take(&b.principal, n, now);
        Ok(())
    }

    /// Charges a statement's estimated `cost`, unless it would pass a
    /// cost cap (then nothing is charged).
    fn cost(&self, cost: f64, now: Instant) -> Result<(), Exceeded> {
        let b = &self.budgets;
        let mut session = lock(&self.session);
        let mut principal = lock(&self.principal);
        principal.roll(b.window, now);
        for (spent, caps, scope) in [
            (&session, &b.session, Scope::Session),
            (&principal, &b.principal, Scope::Principal),
        ] {
            if let Some(max) = caps.max_cost.filter(|m| spent.cost + cost > *m as f64) {
                return Err(self.ending(Exceeded::Budget {
                    scope,
                    cap: Cap::Cost,
                    limit: max,
                    window: b.window,
                    ends_session: false,
                }));
            }
        }
        session.cost += cost;
        principal.since.get_or_insert(now);
        principal.cost += cost;
        Ok(())
    }

    /// Whether a rows or bytes cap is reached; no statement is taken.
    fn results(&self, now: Instant) -> Result<(), Exceeded> {
        let b = &self.budgets;
        let results = |c: &Caps| Caps {
            max_rows: c.max_rows,
            max_bytes: c.max_bytes,
            ..Caps::default()
        };
        let session = lock(&self.session);
        let mut principal = lock(&self.principal);
        principal.roll(b.window, now);
        session
            .check(&results(&b.session), Scope::Session, 0, now, b.window)
            .and_then(|()| {
                principal.check(&results(&b.principal), Scope::Principal, 0, now, b.window)
            })
            .map_err(|e| self.ending(e))
    }

    /// A spent budget as the rule's `on_exceed` has it end.
    fn ending(&self, mut e: Exceeded) -> Exceeded {
        if let Exceeded::Budget { ends_session, .. } = &mut e {
            *ends_session = self.budgets.ends_session;
        }
        e
    }

    fn returned(&self, rows: u64, bytes: u64, now: Instant) {
        for (spent, roll) in [(&self.session, false), (&self.principal, true)] {
            let mut spent = lock(spent);
            if roll {
                spent.roll(self.budgets.window, now);
                spent.since.get_or_insert(now);
            }
            spent.rows += rows;
            spent.bytes += bytes;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tokens left, and when they were counted (`None`: never spent, full).
type Bucket = Arc<Mutex<(f64, Option<Instant>)>>;

/// Buckets kept before unheld, refilled ones are dropped.
const BUCKETS_KEPT: usize = 1024;

/// The rule a statement refused by its principal's budget is recorded
/// under.
pub const RATE_RULE: &str = "limits.per_principal.statements_per_second";

#[derive(Debug, Default)]
struct Counts {
    principals: HashMap<(String, String), u32>,
    connections: HashMap<String, u32>,
}

/// A session's place under the caps, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    principal: (String, String),
    connection: String,
    budget: Option<Budget>,
}

impl Permit {
    /// The session's statement budget, when `statements_per_second` is
    /// set: what the door's statement path keeps.
    pub fn budget(&self) -> Option<Budget> {
        self.budget.clone()
    }
}

/// A principal's statement budget (`statements_per_second`) and its access
/// rule's budgets, as one of its sessions holds them.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The principal's bucket and its rate, when one is set.
    rate: Option<(Bucket, u32)>,
    ledger: Option<Ledger>,
    subject: String,
}

impl Budget {
    /// Takes `statements` (a message's count; at most the burst is asked,
    /// so a long message can still run) from the principal's bucket at
    /// `now`: the bucket gains `rate` statements a second and holds at most
    /// `rate` (a burst of one second's worth). Nothing is taken when they
    /// are not all there.
    /// Then the access rule's budgets: the session's and the principal's
    /// statements, and whether a rows or bytes cap was reached.
    pub fn spend(&self, statements: usize, now: Instant) -> Result<(), Exceeded> {
        if let Some((bucket, limit)) = &self.rate {
            let rate = f64::from(*limit);
            let cost = (statements.max(1) as f64).min(rate);
            let mut bucket = lock(bucket);
            let tokens = refilled(*bucket, rate, rate, now);
            if tokens < cost {
                return Err(Exceeded::Rate {
                    subject: self.subject.clone(),
                    limit: *limit,
                });
            }
            *bucket = (tokens - cost, Some(bucket.1.map_or(now, |at| at.max(now))));
        }
        match &self.ledger {
            Some(l) => l.take(statements.max(1), now),
            None => Ok(()),
        }
    }

    /// Whether a rows or bytes cap is already reached, without charging a
    /// statement: for more of a result already begun (an Execute of a
    /// suspended portal, a cursor fetch).
    pub fn results_spent(&self, now: Instant) -> Result<(), Exceeded> {
        match &self.ledger {
            // Nothing to check (and no lock to take) without a cap on them.
            Some(l) if self.counts_results() => l.results(now),
            _ => Ok(()),
        }
    }

    /// Whether statements' estimated planner costs are charged
    /// ([`Budget::spend_cost`]): a `max_cost` cap is set.
    pub fn counts_cost(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| {
            l.budgets.session.max_cost.is_some() || l.budgets.principal.max_cost.is_some()
        })
    }

    /// Charges a statement's estimated planner `cost` at `now`; refused
    /// (nothing charged) when it would pass a `max_cost` cap.
    pub fn spend_cost(&self, cost: f64, now: Instant) -> Result<(), Exceeded> {
        match &self.ledger {
            Some(l) if self.counts_cost() => l.cost(cost, now),
            _ => Ok(()),
        }
    }

    /// The rule's `max_result_bytes`: the most one result may return.
    pub fn max_result_bytes(&self) -> Option<u64> {
        self.ledger.as_ref()?.budgets.max_result_bytes
    }

    /// Whether the rows and bytes of results count ([`Tally`]).
    fn counts_results(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| {
            let (s, p) = (&l.budgets.session, &l.budgets.principal);
            s.max_rows
                .or(s.max_bytes)
                .or(p.max_rows)
                .or(p.max_bytes)
                .is_some()
        })
    }

    /// A result ended having returned `rows` rows of `bytes` bytes to the
    /// client: counted against the rows and bytes caps.
    pub fn returned(&self, rows: u64, bytes: u64, now: Instant) {
        if let Some(l) = &self.ledger
            && (rows > 0 || bytes > 0)
        {
            l.returned(rows, bytes, now);
        }
    }
}

/// The rows and bytes of one result as a door returns them, counted against
/// the budgets when it is dropped: when the result ends, and when the
/// session does mid-result (a client that leaves halfway is charged what it
/// was sent). With `max_result_bytes` it also refuses the message that
/// would take the result past it ([`Tally::row`], [`Tally::sent`]).
pub struct Tally {
    /// The budget charged, when it caps rows or bytes.
    budget: Option<Budget>,
    /// `max_result_bytes`: the most one result may return.
    max_result: Option<u64>,
    rows: u64,
    bytes: u64,
}

impl Tally {
    /// A tally for `budget`; `None` when neither a rows or bytes cap nor a
    /// result cap applies (nothing to count).
    pub fn new(budget: Option<&Budget>) -> Option<Tally> {
        let budget = budget?;
        let max_result = budget.max_result_bytes();
        let charged = budget.counts_results().then(|| budget.clone());
        if charged.is_none() && max_result.is_none() {
            return None;
        }
        Some(Tally {
            budget: charged,
            max_result,
            rows: 0,
            bytes: 0,
        })
    }

    /// One row of `bytes` to be sent: counted, or an error when it would
    /// take the result past `max_result_bytes` (the door cuts the result
    /// before it and ends the session; it is not counted).
    pub fn row(&mut self, bytes: usize) -> Result<(), Exceeded> {
        self.sent(bytes)?;
        self.rows += 1;
        Ok(())
    }

    /// Bytes of the result's other answers to be sent (an error's or a
    /// notice's text, which can quote data): counted as [`Tally::row`]'s,
    /// without a row.
    pub fn sent(&mut self, bytes: usize) -> Result<(), Exceeded> {
        let bytes = bytes as u64;
        match self.max_result {
            Some(limit) if self.bytes + bytes > limit => Err(Exceeded::Result { limit }),
            _ => {
                self.bytes += bytes;
                Ok(())
            }
        }
    }

    /// The result ended: what it sent is counted, and the tally starts
    /// again for the next.
    pub fn end(&mut self) {
        // A result with no row (an INSERT, a SET) charges nothing.
        if (self.rows, self.bytes) == (0, 0) {
            return;
        }
        if let Some(budget) = &self.budget {
            budget.returned(self.rows, self.bytes, Instant::now());
        }
        (self.rows, self.bytes) = (0, 0);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.end();
    }
}

/// A bucket's tokens at `now`: it gains `rate` a second and holds at most
/// `burst`.
fn refilled((tokens, at): (f64, Option<Instant>), rate: f64, burst: f64, now: Instant) -> f64 {
    match at {
        None => burst,
        Some(at) => (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst),
    }
}

impl Limiter {
    /// A place for a session of `principal` on `connection` under `caps`,
    /// or which cap it would exceed. Both counts move together or not at
    /// all.
    pub fn admit(
        self: &Arc<Self>,
        caps: SessionCaps,
        principal: &Principal,
        connection: &str,
        now: Instant,
    ) -> Result<Permit, Exceeded> {
        let key = (principal.issuer.clone(), principal.subject.clone());
        let mut open = self.lock();
        let by_principal = open.principals.get(&key).copied().unwrap_or(0);
        let by_connection = open.connections.get(connection).copied().unwrap_or(0);
        if let Some(limit) = caps.per_principal
            && by_principal >= limit
        {
            return Err(Exceeded::Principal {
                subject: principal.subject.clone(),
                limit,
            });
        }
        if let Some(limit) = caps.per_connection
            && by_connection >= limit
        {
            return Err(Exceeded::Connection {
                connection: connection.to_string(),
                limit,
            });
        }
        *open.principals.entry(key.clone()).or_default() += 1;
        *open.connections.entry(connection.to_string()).or_default() += 1;
        drop(open);
        let budget = caps.statements_per_second.map(|rate| Budget {
            rate: Some((self.bucket(&key, f64::from(rate), now), rate)),
            ledger: None,
            subject: principal.subject.clone(),
        });
        Ok(Permit {
            limiter: Arc::clone(self),
            principal: key,
            connection: connection.to_string(),
            budget,
        })
    }

    /// [`Limiter::admit`] for a session on `route`, with the budgets of
    /// its access rule: the session's own, and its principal's under the
    /// rule, shared with its other sessions.
    pub fn admit_route(
        self: &Arc<Self>,
        caps: SessionCaps,
        principal: &Principal,
        route: &Route,
        now: Instant,
    ) -> Result<Permit, Exceeded> {
        let mut permit = self.admit(caps, principal, &route.connection, now)?;
        if let Some(budgets) = route.budgets.filter(|b| {
            !b.session.is_empty() || !b.principal.is_empty() || b.max_result_bytes.is_some()
        }) {
            let key = (
                route.rule.clone(),
                principal.issuer.clone(),
                principal.subject.clone(),
            );
            let ledger = Ledger {
                budgets,
                session: Spending::default(),
                principal: self.ledger(key, now),
            };
            let budget = permit.budget.get_or_insert_with(|| Budget {
                rate: None,
                ledger: None,
                subject: principal.subject.clone(),
            });
            budget.ledger = Some(ledger);
        }
        Ok(permit)
    }

    /// A principal's spending under a rule. When many are kept, those no
    /// session holds whose window has ended go first.
    fn ledger(&self, key: (String, String, String), now: Instant) -> Spending {
        let mut ledgers = lock(&self.ledgers);
        if ledgers.len() >= BUCKETS_KEPT && !ledgers.contains_key(&key) {
            ledgers.retain(|_, spent| Arc::strong_count(spent) > 1 || !lock(spent).lapsed(now));
        }
        Arc::clone(ledgers.entry(key).or_default())
    }

    /// `principal`'s bucket, made full when it has none. When many
    /// principals have one, those no session holds that have refilled by
    /// `now` go first.
    fn bucket(&self, principal: &(String, String), rate: f64, now: Instant) -> Bucket {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(principal) {
            buckets.retain(|_, bucket| {
                Arc::strong_count(bucket) > 1
                    || bucket
                        .lock()
                        .map_or(true, |b| refilled(*b, rate, rate, now) < rate)
            });
        }
        Arc::clone(buckets.entry(principal.clone()).or_default())
    }

    /// Sessions `principal` has open now.
    #[cfg(test)]
    fn sessions_of(&self, principal: &Principal) -> u32 {
        let key = (principal.issuer.clone(), principal.subject.clone());
        self.lock().principals.get(&key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        // Entries go when they reach zero: the maps hold only what is open.
        if let Some(n) = open.principals.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                open.principals.remove(&self.principal);
            }
        }
        if let Some(n) = open.connections.get_mut(&self.connection) {
            *n -= 1;
            if *n == 0 {
                open.connections.remove(&self.connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn principal(issuer: &str, subject: &str) -> Principal {
        Principal {
            issuer_name: "test".into(),
            issuer: issuer.into(),
            subject: subject.into(),
            groups: vec![],
            act: None,
            token_id: None,
            expires_at: SystemTime::now(),
            claims: airlock_policy::claims::Claims::default(),
            act_chain: vec![],
        }
    }

    #[test]
    fn a_principal_gets_its_cap_and_a_place_back_when_a_session_ends() {
        let limiter = Arc::new(Limiter::default());
        let caps = SessionCaps {
            per_principal: Some(2),
            ..SessionCaps::default()
        };
        let alice = principal("idp", "alice");
        let a = limiter.admit(caps, &alice, "db", now()).unwrap();
        let _b = limiter.admit(caps, &alice, "other", now()).unwrap();
        let third = limiter.admit(caps, &alice, "db", now()).unwrap_err();
        assert_eq!(
            third,
            Exceeded::Principal {
                subject: "alice".into(),
                limit: 2
            }
        );
        assert!(
            third
                .message()
                .contains("limits.per_principal.max_sessions")
        );
        // Another principal, and the same subject from another issuer, are
        // counted apart.
        let _c = limiter
            .admit(caps, &principal("idp", "bob"), "db", now())
            .unwrap();
        let _d = limiter
            .admit(caps, &principal("other-idp", "alice"), "db", now())
            .unwrap();
        drop(a);
        assert_eq!(limiter.sessions_of(&alice), 1);
        let _e = limiter.admit(caps, &alice, "db", now()).unwrap();
    }

    #[test]
    fn a_connection_gets_its_cap_and_a_refusal_takes_no_place() {
        let limiter = Arc::new(Limiter::default());
        let caps = SessionCaps {
            per_principal: Some(5),
            per_connection: Some(1),
            ..SessionCaps::default()
        };
        let alice = principal("idp", "alice");
        let held = limiter.admit(caps, &alice, "db", now()).unwrap();
        let refused = limiter
            .admit(caps, &principal("idp", "bob"), "db", now())
            .unwrap_err();
        assert_eq!(refused.limit(), "per_connection_sessions");
        assert!(refused.message().contains("connection \"db\""));
        // The refused session counted nowhere.
        assert_eq!(limiter.sessions_of(&principal("idp", "bob")), 0);
        let _other = limiter.admit(caps, &alice, "elsewhere", now()).unwrap();
        drop(held);
        let _again = limiter
            .admit(caps, &principal("idp", "bob"), "db", now())
            .unwrap();
        // No caps: anything goes.
        let free = SessionCaps::default();
        let all: Vec<Permit> = (0..100)
            .map(|_| limiter.admit(free, &alice, "db", now()).unwrap())
            .collect();
        assert_eq!(limiter.sessions_of(&alice), 101);
        drop(all);
        assert_eq!(limiter.sessions_of(&alice), 1);
    }

    #[test]
    fn statements_draw_on_one_bucket_per_principal_refilled_by_the_clock() {
        use std::time::Duration;
        let limiter = Arc::new(Limiter::default());
        let caps = SessionCaps {
            statements_per_second: Some(4),
            ..SessionCaps::default()
        };
        let alice = principal("idp", "alice");
        let one = limiter
            .admit(caps, &alice, "db", now())
            .unwrap()
            .budget()
            .unwrap();
        let other = limiter
            .admit(caps, &alice, "elsewhere", now())
            .unwrap()
            .budget()
            .unwrap();
        let t0 = Instant::now();
        // A burst of one second's worth, shared by both sessions.
        for n in 0..4 {
            let budget = if n % 2 == 0 { &one } else { &other };
            budget.spend(1, t0).unwrap();
        }
        let refused = other.spend(1, t0).unwrap_err();
        assert_eq!(refused.limit(), "per_principal_statements");
        assert!(
            refused
                .message()
                .contains("limits.per_principal.statements_per_second")
        );
        // Another principal has its own bucket.
        let bob = limiter
            .admit(caps, &principal("idp", "bob"), "db", now())
            .unwrap();
        bob.budget().unwrap().spend(1, t0).unwrap();
        // A quarter second gives one statement back, and no more.
        let later = t0 + Duration::from_millis(250);
        one.spend(1, later).unwrap();
        assert!(one.spend(1, later).is_err());
        // A long pause refills to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        // A message of three statements costs three; one of forty costs
        // the burst, not more.
        one.spend(3, much_later).unwrap();
        one.spend(1, much_later).unwrap();
        assert!(one.spend(1, much_later).is_err());
        let refilled = much_later + Duration::from_secs(1);
        one.spend(40, refilled).unwrap();
        assert!(one.spend(1, refilled).is_err());
        // No rate: no budget.
        assert!(
            limiter
                .admit(SessionCaps::default(), &alice, "db", now())
                .unwrap()
                .budget()
                .is_none()
        );
    }

    #[test]
    fn unheld_refilled_buckets_are_dropped_when_many_principals_have_one() {
        let limiter = Arc::new(Limiter::default());
        let caps = SessionCaps {
            statements_per_second: Some(100),
            ..SessionCaps::default()
        };
        let t0 = Instant::now();
        let key = |name: &str| ("idp".to_string(), name.to_string());
        // A session still open, and a principal that spent its burst.
        let held = limiter
            .admit(caps, &principal("idp", "held"), "db", t0)
            .unwrap();
        held.budget().unwrap().spend(1, t0).unwrap();
        let busy = limiter
            .admit(caps, &principal("idp", "busy"), "db", t0)
            .unwrap();
        busy.budget().unwrap().spend(100, t0).unwrap();
        drop(busy);
        for n in 0..3 * BUCKETS_KEPT {
            let permit = limiter
                .admit(caps, &principal("idp", &format!("p{n}")), "db", t0)
                .unwrap();
            permit.budget().unwrap().spend(1, t0).unwrap();
        }
        // Half a second later the one-statement buckets have refilled, the
        // emptied one has not.
        let later = t0 + std::time::Duration::from_millis(500);
        let _late = limiter
            .admit(caps, &principal("idp", "late"), "db", later)
            .unwrap();
        let buckets = limiter.buckets.lock().unwrap();
        assert!(buckets.len() <= 3, "{} buckets kept", buckets.len());
        assert!(buckets.contains_key(&key("held")));
        assert!(buckets.contains_key(&key("busy")));
        drop(buckets);
        // What "busy" did not get back is still owed.
        let again = limiter
            .admit(caps, &principal("idp", "busy"), "db", later)
            .unwrap();
        assert!(again.budget().unwrap().spend(51, later).is_err());
        again.budget().unwrap().spend(50, later).unwrap();
    }

    fn route(budgets: Budgets) -> Route {
        Route {
            connection: "db".into(),
            role: "r".into(),
            rule: "agents".into(),
            mode: airlock_policy::AccessMode::ReadOnly,
            schema_only: None,
            budgets: Some(budgets),
            statement_timeout: None,
            unmask: false,
            role_defaulted: false,
            grant: None,
            writes: None,
        }
    }

    fn budgets(session: Caps, principal: Caps) -> Budgets {
        Budgets {
            session,
            principal,
            window: std::time::Duration::from_secs(3600),
            ends_session: false,
            max_result_bytes: None,
        }
    }

    fn rule(e: Result<(), Exceeded>) -> &'static str {
        e.map_or_else(|e| e.rule(), |()| "ok")
    }

    #[test]
    fn a_session_budget_counts_statements_and_refuses_after_a_result_reaches_a_cap() {
        let limiter = Arc::new(Limiter::default());
        let alice = principal("idp", "alice");
        let caps = Caps {
            max_statements: Some(5),
            max_rows: Some(100),
            ..Caps::default()
        };
        let t0 = now();
        let permit = limiter
            .admit_route(
                SessionCaps::default(),
                &alice,
                &route(budgets(caps, Caps::default())),
                t0,
            )
            .unwrap();
        let b = permit.budget().unwrap();
        assert!(b.counts_results());
        assert_eq!(rule(b.spend(2, t0)), "ok");
        // A result that crosses the cap is not cut; the next statement is
        // refused, and so is more of a result already begun.
        assert_eq!(rule(b.results_spent(t0)), "ok");
        {
            let mut tally = Tally::new(Some(&b)).expect("a rows cap: counted");
            for _ in 0..150 {
                tally.row(60).expect("no result cap");
            }
            // Counted when dropped, as a result cut short by its session is.
        }
        assert_eq!(rule(b.results_spent(t0)), "budgets.session.max_rows");
        let e = b.spend(1, t0).unwrap_err();
        assert_eq!(e.rule(), "budgets.session.max_rows");
        assert!(
            e.message()
                .contains("this session has been returned 100 rows or more"),
            "{}",
            e.message()
        );
        assert_eq!(e.hint().to_value()["retry"], false);
        // Another session of the same principal has its own.
        let other = limiter
            .admit_route(
                SessionCaps::default(),
                &alice,
                &route(budgets(caps, Caps::default())),
                t0,
            )
            .unwrap()
            .budget()
            .unwrap();
        assert_eq!(rule(other.spend(5, t0)), "ok");
        // A message of more statements than are left is refused whole.
        assert_eq!(rule(other.spend(1, t0)), "budgets.session.max_statements");
    }

    #[test]
    fn a_principal_budget_is_shared_by_its_sessions_until_its_window_ends() {
        let limiter = Arc::new(Limiter::default());
        let alice = principal("idp", "alice");
        let bob = principal("idp", "bob");
        let caps = Caps {
            max_bytes: Some(1000),
            statements_per_minute: Some(3),
            ..Caps::default()
        };
        let r = route(budgets(Caps::default(), caps));
        let t0 = now();
        let one = limiter
            .admit_route(SessionCaps::default(), &alice, &r, t0)
            .unwrap();
        let two = limiter
            .admit_route(SessionCaps::default(), &alice, &r, t0)
            .unwrap();
        let (one, two) = (one.budget().unwrap(), two.budget().unwrap());
        assert_eq!(rule(one.spend(2, t0)), "ok");
        assert_eq!(rule(two.spend(1, t0)), "ok");
        // Three a minute across both sessions, refilling at one every 20 s.
        assert_eq!(
            rule(one.spend(1, t0)),
            "budgets.principal.statements_per_minute"
        );
        assert_eq!(rule(two.spend(1, t0 + Duration::from_secs(21))), "ok");
        // Bytes returned through one session close the other.
        one.returned(10, 1500, t0);
        let e = two.spend(1, t0 + Duration::from_secs(60)).unwrap_err();
        assert_eq!(e.rule(), "budgets.principal.max_bytes");
        assert_eq!(e.hint().to_value()["retry"], true);
        assert!(e.hint().to_json().contains("1h"), "{}", e.hint().to_json());
        // Another principal is not charged.
        let b = limiter
            .admit_route(SessionCaps::default(), &bob, &r, t0)
            .unwrap();
        assert_eq!(
            rule(b.budget().unwrap().spend(1, t0 + Duration::from_secs(60))),
            "ok"
        );
        // The window ends an hour after alice's first statement.
        assert_eq!(rule(two.spend(1, t0 + Duration::from_secs(3600))), "ok");
    }

    #[test]
    fn on_exceed_session_and_a_result_cap_end_the_session() {
        let limiter = Arc::new(Limiter::default());
        let alice = principal("idp", "alice");
        let t0 = now();
        let ending = Budgets {
            ends_session: true,
            ..budgets(
                Caps {
                    max_statements: Some(1),
                    ..Caps::default()
                },
                Caps::default(),
            )
        };
        let b = limiter
            .admit_route(SessionCaps::default(), &alice, &route(ending), t0)
            .unwrap()
            .budget()
            .unwrap();
        b.spend(1, t0).unwrap();
        let e = b.spend(1, t0).unwrap_err();
        assert!(e.ends_session());
        assert!(
            e.message().starts_with("airlock: session ended"),
            "{}",
            e.message()
        );
        // Without it, only the statement.
        let b = limiter
            .admit_route(
                SessionCaps::default(),
                &alice,
                &route(budgets(
                    Caps {
                        max_statements: Some(1),
                        ..Caps::default()
                    },
                    Caps::default(),
                )),
                t0,
            )
            .unwrap()
            .budget()
            .unwrap();
        b.spend(1, t0).unwrap();
        assert!(!b.spend(1, t0).unwrap_err().ends_session());
        // A result cap alone: a tally, no charge, each result counted alone.
        let capped = Budgets {
            max_result_bytes: Some(100),
            ..budgets(Caps::default(), Caps::default())
        };
        let b = limiter
            .admit_route(SessionCaps::default(), &alice, &route(capped), t0)
            .unwrap()
            .budget()
            .expect("a result cap is a budget");
        assert!(!b.counts_results());
        let mut tally = Tally::new(Some(&b)).expect("counted");
        tally.row(60).unwrap();
        tally.end();
        tally.row(60).unwrap();
        tally.sent(40).unwrap();
        // The row that would pass it is refused, not counted.
        let e = tally.row(1).unwrap_err();
        assert_eq!(e, Exceeded::Result { limit: 100 });
        assert!(e.ends_session());
        assert_eq!(e.rule(), "budgets.max_result_bytes");
        assert_eq!(e.hint().to_value()["retry"], false);
    }

    #[test]
    fn estimated_cost_is_charged_until_a_statement_would_pass_the_cap() {
        let limiter = Arc::new(Limiter::default());
        let alice = principal("idp", "alice");
        let t0 = now();
        let r = route(budgets(
            Caps {
                max_cost: Some(1000),
                ..Caps::default()
            },
            Caps {
                max_cost: Some(1500),
                ..Caps::default()
            },
        ));
        let b = limiter
            .admit_route(SessionCaps::default(), &alice, &r, t0)
            .unwrap()
            .budget()
            .unwrap();
        assert!(b.counts_cost() && !b.counts_results());
        b.spend_cost(600.5, t0).unwrap();
        // 600.5 + 400 would pass 1000: refused, nothing charged.
        let e = b.spend_cost(400.0, t0).unwrap_err();
        assert_eq!(e.rule(), "budgets.session.max_cost");
        assert_eq!(e.limit(), "budget_session_cost");
        assert!(
            e.message().contains("1000 of estimated planner cost"),
            "{}",
            e.message()
        );
        b.spend_cost(399.5, t0).unwrap();
        // The principal's is shared: a second session has 500 left of it.
        let other = limiter
            .admit_route(SessionCaps::default(), &alice, &r, t0)
            .unwrap()
            .budget()
            .unwrap();
        assert_eq!(
            rule(other.spend_cost(600.0, t0)),
            "budgets.principal.max_cost"
        );
        other.spend_cost(500.0, t0).unwrap();
        // Statements are not charged by it, nor it by them.
        other.spend(10, t0).unwrap();
    }

    #[test]
    fn a_rule_without_budgets_adds_nothing() {
        let limiter = Arc::new(Limiter::default());
        let permit = limiter
            .admit_route(
                SessionCaps::default(),
                &principal("idp", "a"),
                &route(budgets(Caps::default(), Caps::default())),
                now(),
            )
            .unwrap();
        assert!(permit.budget().is_none());
    }
}
