//! Webhook notifications about approvals and JIT access grants.
//!
//! # Design
//!
//! **The data path never waits for a webhook.** [`Notifier::send`] is a plain
//! (not `async`) function: it picks the webhooks subscribed to the event and
//! does a `try_send` into each one's bounded queue. When a queue is full (or
//! its worker is gone) the delivery is dropped and counted
//! ([`Stats::dropped`], `airlock_webhook_dropped_total`); it is never awaited,
//! retried or buffered elsewhere. Notifications are best effort: they tell
//! people something happened, the audit journal is the record of it.
//!
//! **Endpoints are isolated.** Every webhook has its own queue (1024 by
//! default) and its own worker task, started by [`Notifier::start`] on the
//! current tokio runtime. The worker spawns one task per delivery, with at
//! most [`MAX_IN_FLIGHT`] in flight per webhook (a semaphore), so a slow or
//! dead endpoint only fills its own slots and then its own queue; the other
//! webhooks, and later notifications to the same webhook, are not held up
//! behind it. Delivery order is therefore not guaranteed.
//!
//! **Retries.** A delivery is one notification to one webhook: one POST per
//! attempt, each with the webhook's own timeout. A 2xx response is success.
//! A connection error, a timeout, a 5xx or a 429 is retried after an
//! exponential backoff (`base`, `2*base`, `4*base`, ... capped at an hour) up
//! to [`Retry::attempts`] attempts in total; `Retry-After` is not honoured.
//! Anything else (3xx, other 4xx) fails at once. Redirects are never
//! followed, so a signed payload cannot be bounced to another host. A
//! delivery that gives up is logged with `tracing::warn!` (event, delivery
//! id, the endpoint's origin and the last error; never the body, the secret
//! or the URL's path, which for Slack is itself a secret).
//!
//! **Wire format.** Every request carries `Content-Type: application/json`,
//! `User-Agent: airlock/<version>`, `X-Airlock-Event`, `X-Airlock-Delivery`
//! (a UUID, the same on every attempt of one delivery so receivers can
//! de-duplicate) and `X-Airlock-Timestamp` (unix seconds of this attempt).
//! [`Format::Json`] bodies are
//! `{"event": ..., "delivery": <uuid>, "at": <RFC 3339 UTC>, "data": ...}`,
//! where `at` is when [`Notifier::send`] was called; [`Format::Slack`] bodies
//! are Slack's incoming-webhook `{"text": <summary>}`.
//!
//! **Signature.** When the webhook has a secret, `X-Airlock-Signature` is
//! `sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, with
//! the timestamp of that attempt, so the signature covers when it was sent as
//! well as what. Receivers check it with [`verify`] (constant time) and
//! should reject timestamps far from their own clock.
//!
//! **Metrics** (via the `metrics` facade): `airlock_webhook_deliveries_total
//! {event, result="ok"|"failed"}`, `airlock_webhook_attempts_total{result=
//! "ok"|"error"|"timeout"|"http_4xx"|"http_5xx"|...}`,
//! `airlock_webhook_retries_total` and `airlock_webhook_dropped_total`. The
//! same numbers are kept in atomic counters, read with [`Notifier::stats`].

mod sign;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use tokio::sync::{Semaphore, mpsc};

pub use sign::{sign, verify};

/// How many deliveries a webhook's queue holds before [`Notifier::send`]
/// drops.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// How many deliveries to one webhook may be in flight (including their
/// backoff waits) at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The longest wait between two attempts, however large the backoff grows.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

const UA: &str = concat!("airlock/", env!("CARGO_PKG_VERSION"));

/// Request header names (lowercase, as HTTP/2 and most servers report them).
pub mod header {
    /// The event name, e.g. `approval.requested`.
    pub const EVENT: &str = "x-airlock-event";
    /// The delivery id (a UUID), the same on every attempt of a delivery.
    pub const DELIVERY: &str = "x-airlock-delivery";
    /// Unix seconds when this attempt was sent; part of the signed message.
    pub const TIMESTAMP: &str = "x-airlock-timestamp";
    /// `sha256=<hex>`, see [`crate::sign`]; only when the webhook has a secret.
    pub const SIGNATURE: &str = "x-airlock-signature";
}

/// Event names.
pub mod event {
    /// Someone asked for an approval.
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    /// An approval was granted or denied.
    pub const APPROVAL_DECIDED: &str = "approval.decided";
    /// Someone asked for just-in-time access.
    pub const ACCESS_REQUESTED: &str = "access.requested";
    /// Just-in-time access was granted.
    pub const ACCESS_GRANTED: &str = "access.granted";
    /// A just-in-time grant ran out.
    pub const ACCESS_EXPIRED: &str = "access.expired";
    /// All of the above.
    pub const ALL: [&str; 5] = [
        APPROVAL_REQUESTED,
        APPROVAL_DECIDED,
        ACCESS_REQUESTED,
        ACCESS_GRANTED,
        ACCESS_EXPIRED,
    ];
}

/// The body a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `{"event", "delivery", "at", "data"}`.
    #[default]
    Json,
    /// `{"text": <summary>}`, a Slack incoming webhook.
    Slack,
}

/// One endpoint and what it wants.
#[derive(Clone)]
pub struct Webhook {
    /// `http` or `https` URL to POST to.
    pub url: String,
    /// Event names it is sent; others are skipped.
    pub events: Vec<String>,
    pub format: Format,
    /// HMAC key for `X-Airlock-Signature`; no header without one.
    pub secret: Option<Vec<u8>>,
    /// Per attempt, from connecting to the response status.
    pub timeout: Duration,
}

impl fmt::Debug for Webhook {
    // The secret, and the URL's path and query (a Slack webhook URL is a
    // credential), stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redacted_origin(&self.url))
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Retry policy, shared by all webhooks of a [`Notifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in total, the first included (0 is taken as 1). Default 5.
    pub attempts: u32,
    /// Wait before the second attempt, doubling after each. Default 1s.
    pub base: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_secs(1),
        }
    }
}

/// Something worth telling people about.
#[derive(Debug, Clone)]
pub struct Notification {
    /// One of [`event`]'s names.
    pub event: &'static str,
    /// The JSON format's `data`.
    pub data: serde_json::Value,
    /// One human-readable line, the Slack format's `text`.
    pub summary: String,
}

/// Counters since the notifier started. Delivery counts are per webhook:
/// one notification sent to two webhooks is two deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Deliveries accepted into a queue.
    pub queued: u64,
    /// Deliveries that got a 2xx.
    pub delivered: u64,
    /// Deliveries given up on (out of attempts, or not retryable).
    pub failed: u64,
    /// Attempts made because the one before failed in a retryable way.
    pub retries: u64,
    /// Deliveries not queued because the queue was full (or closed).
    pub dropped: u64,
    /// HTTP requests made, successful or not.
    pub attempts: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed)
}

/// Sends [`Notification`]s to webhooks in the background. Cheap to clone;
/// the workers stop once every clone is dropped and their queues are drained.
#[derive(Clone)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    lanes: Vec<LaneTx>,
    counters: Arc<Counters>,
}

/// The sending end of one webhook's queue.
struct LaneTx {
    events: Vec<String>,
    endpoint: String,
    tx: mpsc::Sender<Arc<Queued>>,
}

struct Queued {
    n: Notification,
    at: SystemTime,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self
            .inner
            .iter()
            .flat_map(|i| i.lanes.iter().map(|l| l.endpoint.as_str()))
            .collect();
        f.debug_struct("Notifier")
            .field("endpoints", &endpoints)
            .finish()
    }
}

impl Notifier {
    /// Spawns the delivery workers on the current tokio runtime, with
    /// [`DEFAULT_QUEUE_CAPACITY`] per webhook.
    ///
    /// Webhooks whose URL does not parse as `http`/`https` are skipped with a
    /// warning. With no usable webhooks this is [`Notifier::disabled`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, if there is a webhook to start.
    pub fn start(webhooks: Vec<Webhook>, retry: Retry) -> Notifier {
        Self::start_with_capacity(webhooks, retry, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`Notifier::start`] with `capacity` deliveries per webhook queue
    /// (at least 1).
    pub fn start_with_capacity(webhooks: Vec<Webhook>, retry: Retry, capacity: usize) -> Notifier {
        let mut usable = Vec::with_capacity(webhooks.len());
        for (i, w) in webhooks.into_iter().enumerate() {
            match reqwest::Url::parse(&w.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                    usable.push((w, url));
                }
                _ => tracing::warn!(
                    webhook = i,
                    endpoint = %redacted_origin(&w.url),
                    "webhook URL is not an http(s) URL; skipping it"
                ),
            }
        }
        if usable.is_empty() {
            return Self::disabled();
        }
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot build the webhook HTTP client; notifications are off");
                return Self::disabled();
            }
        };
        let counters = Arc::new(Counters::default());
        let lanes = usable
            .into_iter()
            .map(|(w, url)| {
                let endpoint = url.origin().ascii_serialization();
                let (tx, rx) = mpsc::channel(capacity.max(1));
                let lane = Arc::new(Lane {
                    client: client.clone(),
                    url,
                    endpoint: endpoint.clone(),
                    format: w.format,
                    key: w
                        .secret
                        .as_deref()
                        .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
                    timeout: w.timeout,
                    retry,
                    counters: counters.clone(),
                });
                tokio::spawn(run_lane(lane, rx));
                LaneTx {
                    events: w.events,
                    endpoint,
                    tx,
                }
            })
            .collect();
        Notifier {
            inner: Some(Arc::new(Inner { lanes, counters })),
        }
    }

    /// A notifier with no webhooks: [`Notifier::send`] does nothing.
    pub fn disabled() -> Notifier {
        Notifier { inner: None }
    }

    /// Whether any webhook is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `n` for every webhook subscribed to `n.event`. Never blocks or
    /// awaits: a delivery whose queue is full is dropped and counted.
    pub fn send(&self, n: Notification) {
        let Some(inner) = &self.inner else {
            return;
        };
        let wants = |lane: &LaneTx| lane.events.iter().any(|e| e == n.event);
        if !inner.lanes.iter().any(wants) {
            return;
        }
        let event = n.event;
        let item = Arc::new(Queued {
            n,
            at: SystemTime::now(),
        });
        for lane in inner
            .lanes
            .iter()
            .filter(|l| l.events.iter().any(|e| e == event))
        {
            match lane.tx.try_send(item.clone()) {
                Ok(()) => {
                    bump(&inner.counters.queued);
                }
                Err(e) => {
                    let before = bump(&inner.counters.dropped);
                    metrics::counter!("airlock_webhook_dropped_total").increment(1);
                    // The first drop, then every thousandth: enough to notice
                    // without a flood of log lines on the data path.
                    if before.is_multiple_of(1000) {
                        let why = match e {
                            mpsc::error::TrySendError::Full(_) => "queue full",
                            mpsc::error::TrySendError::Closed(_) => "worker stopped",
                        };
                        tracing::warn!(
                            event,
                            endpoint = %lane.endpoint,
                            dropped_total = before + 1,
                            "webhook notification dropped: {why}"
                        );
                    }
                }
            }
        }
    }

    /// A snapshot of the counters (all zero when disabled).
    pub fn stats(&self) -> Stats {
        let Some(inner) = &self.inner else {
            return Stats::default();
        };
        let c = &inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            queued: get(&c.queued),
            delivered: get(&c.delivered),
            failed: get(&c.failed),
            retries: get(&c.retries),
            dropped: get(&c.dropped),
            attempts: get(&c.attempts),
        }
    }
}

/// One webhook's delivery side.
struct Lane {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Scheme, host and port only, for logs.
    endpoint: String,
    format: Format,
    key: Option<hmac::Key>,
    timeout: Duration,
    retry: Retry,
    counters: Arc<Counters>,
}

async fn run_lane(lane: Arc<Lane>, mut rx: mpsc::Receiver<Arc<Queued>>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(item) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let lane = lane.clone();
        tokio::spawn(async move {
            lane.deliver(&item).await;
            drop(permit);
        });
    }
}

/// How one attempt went.
enum Outcome {
    Ok,
    /// Worth another attempt.
    Retry(&'static str, String),
    /// Not worth another attempt.
    Fail(&'static str, String),
}

impl Lane {
    async fn deliver(&self, item: &Queued) {
        let event = item.n.event;
        let id = uuid::Uuid::new_v4().to_string();
        let body = self.body(item, &id);
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let (label, reason, retryable) = match self.attempt(event, &id, &body).await {
                Outcome::Ok => ("ok", String::new(), false),
                Outcome::Retry(label, reason) => (label, reason, true),
                Outcome::Fail(label, reason) => (label, reason, false),
            };
            bump(&self.counters.attempts);
            metrics::counter!("airlock_webhook_attempts_total", "result" => label).increment(1);
            if label == "ok" {
                bump(&self.counters.delivered);
                metrics::counter!("airlock_webhook_deliveries_total", "event" => event, "result" => "ok")
                    .increment(1);
                return;
            }
            if !retryable || attempt == attempts {
                bump(&self.counters.failed);
                metrics::counter!("airlock_webhook_deliveries_total", "event" => event, "result" => "failed")
                    .increment(1);
                tracing::warn!(
                    event,
                    delivery = %id,
                    endpoint = %self.endpoint,
                    attempts = attempt,
                    result = label,
                    error = %reason,
                    "webhook delivery failed"
                );
                return;
            }
            bump(&self.counters.retries);
            metrics::counter!("airlock_webhook_retries_total").increment(1);
            let wait = backoff(self.retry.base, attempt - 1);
            tracing::debug!(
                event,
                delivery = %id,
                endpoint = %self.endpoint,
                attempt,
                result = label,
                error = %reason,
                retry_in = ?wait,
                "webhook attempt failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn body(&self, item: &Queued, id: &str) -> Vec<u8> {
        let value = match self.format {
            Format::Json => serde_json::json!({
                "event": item.n.event,
                "delivery": id,
                "at": humantime::format_rfc3339_millis(item.at).to_string(),
                "data": item.n.data,
            }),
            Format::Slack => serde_json::json!({ "text": item.n.summary }),
        };
        serde_json::to_vec(&value).expect("a serde_json::Value always serializes")
    }

    async fn attempt(&self, event: &str, id: &str, body: &[u8]) -> Outcome {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, UA)
            .header(header::EVENT, event)
            .header(header::DELIVERY, id)
            .header(header::TIMESTAMP, timestamp.to_string());
        if let Some(key) = &self.key {
            req = req.header(header::SIGNATURE, sign::sign_with(key, timestamp, body));
        }
        match req.body(body.to_vec()).send().await {
            // The response body is not read: only the status matters.
            Ok(resp) => classify(resp.status()),
            Err(e) if e.is_timeout() => Outcome::Retry("timeout", error_chain(&e.without_url())),
            Err(e) => Outcome::Retry("error", error_chain(&e.without_url())),
        }
    }
}

fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        return Outcome::Ok;
    }
    let label = match status.as_u16() / 100 {
        1 => "http_1xx",
        3 => "http_3xx",
        4 => "http_4xx",
        5 => "http_5xx",
        _ => "http_other",
    };
    let reason = format!("HTTP {status}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Retry(label, reason)
    } else {
        Outcome::Fail(label, reason)
    }
}

/// `base * 2^n`, capped at [`MAX_BACKOFF`].
fn backoff(base: Duration, n: u32) -> Duration {
    2u32.checked_pow(n)
        .and_then(|f| base.checked_mul(f))
        .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
}

/// An error and its sources, `: `-separated (reqwest's own `Display` leaves
/// out the cause, e.g. "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_str = s.to_string();
        if !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        cur = s.source();
    }
    out
}

/// The scheme, host and port of `url`, or a placeholder: never the path or
/// query, which may hold a token.
fn redacted_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.has_host() => u.origin().ascii_serialization(),
        _ => "<invalid URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 0), Duration::from_millis(100));
        assert_eq!(backoff(b, 1), Duration::from_millis(200));
        assert_eq!(backoff(b, 3), Duration::from_millis(800));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(1), 20), MAX_BACKOFF);
    }

    #[test]
    fn classification() {
        let kind = |s: u16| match classify(StatusCode::from_u16(s).unwrap()) {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Retry(l, _) => format!("retry {l}"),
            Outcome::Fail(l, _) => format!("fail {l}"),
        };
        assert_eq!(kind(200), "ok");
        assert_eq!(kind(204), "ok");
        assert_eq!(kind(302), "fail http_3xx");
        assert_eq!(kind(400), "fail http_4xx");
        assert_eq!(kind(404), "fail http_4xx");
        assert_eq!(kind(429), "retry http_4xx");
        assert_eq!(kind(500), "retry http_5xx");
        assert_eq!(kind(503), "retry http_5xx");
    }

    #[test]
    fn debug_redacts_secret_and_path() {
        let w = Webhook {
            url: "https://hooks.slack.com/services/T0/B0/token?x=y".into(),
            events: vec![event::ACCESS_GRANTED.into()],
            format: Format::Slack,
            secret: Some(b"hunter2".to_vec()),
            timeout: Duration::from_secs(5),
        };
        let s = format!("{w:?}");
        assert!(s.contains("https://hooks.slack.com"), "{s}");
        assert!(!s.contains("token") && !s.contains("services"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send(Notification {
            event: event::APPROVAL_REQUESTED,
            data: serde_json::json!({}),
            summary: String::new(),
        });
        assert_eq!(n.stats(), Stats::default());
    }
}
