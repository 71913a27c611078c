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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_policy::{Hint, Principal};

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
        }
    }

    /// The metric's label.
    pub fn limit(&self) -> &'static str {
        match self {
            Exceeded::Principal { .. } => "per_principal_sessions",
            Exceeded::Connection { .. } => "per_connection_sessions",
            Exceeded::Rate { .. } => "per_principal_statements",
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

/// A principal's statement budget, as one of its sessions holds it.
#[derive(Debug, Clone)]
pub struct Budget {
    bucket: Bucket,
    subject: String,
    rate: u32,
}

impl Budget {
    /// Takes `statements` (a message's count; at most the burst is asked,
    /// so a long message can still run) from the principal's bucket at
    /// `now`: the bucket gains `rate` statements a second and holds at most
    /// `rate` (a burst of one second's worth). Nothing is taken when they
    /// are not all there.
    pub fn spend(&self, statements: usize, now: Instant) -> Result<(), Exceeded> {
        let rate = f64::from(self.rate);
        let cost = (statements.max(1) as f64).min(rate);
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = refilled(*bucket, rate, now);
        if tokens < cost {
            return Err(Exceeded::Rate {
                subject: self.subject.clone(),
                limit: self.rate,
            });
        }
        *bucket = (tokens - cost, Some(bucket.1.map_or(now, |at| at.max(now))));
        Ok(())
    }
}

/// A bucket's tokens at `now`.
fn refilled((tokens, at): (f64, Option<Instant>), rate: f64, now: Instant) -> f64 {
    match at {
        None => rate,
        Some(at) => (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(rate),
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
            bucket: self.bucket(&key, f64::from(rate), now),
            subject: principal.subject.clone(),
            rate,
        });
        Ok(Permit {
            limiter: Arc::clone(self),
            principal: key,
            connection: connection.to_string(),
            budget,
        })
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
                        .map_or(true, |b| refilled(*b, rate, now) < rate)
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
    use std::time::SystemTime;

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
}
