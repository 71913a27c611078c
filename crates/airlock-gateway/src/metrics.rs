//! The gateway's metrics, through the `metrics` facade. Handles are looked up
//! once per session, never per message.

use std::time::Duration;

use crate::pump::ByteCounters;

/// Metric names, for the exporter and the docs.
pub const SESSIONS_ACTIVE: &str = "airlock_sessions_active";
pub const SESSIONS_TOTAL: &str = "airlock_sessions_total";
pub const BYTES_TOTAL: &str = "airlock_bytes_total";
pub const AUTH_FAILURES_TOTAL: &str = "airlock_auth_failures_total";
pub const UPSTREAM_LOGIN_SECONDS: &str = "airlock_upstream_login_seconds";
pub const LIMIT_REFUSALS_TOTAL: &str = "airlock_limit_refusals_total";

#[derive(Debug, Default)]
pub struct Metrics;

/// Decrements the active-session gauge when the session ends.
pub struct ActiveSession(metrics::Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Metrics {
    /// A session of `door` (`postgres`, `mysql`, `mcp`) started.
    pub fn session_started(&self, door: &'static str) -> ActiveSession {
        metrics::counter!(SESSIONS_TOTAL, "door" => door).increment(1);
        let gauge = metrics::gauge!(SESSIONS_ACTIVE, "door" => door);
        gauge.increment(1.0);
        ActiveSession(gauge)
    }

    pub fn byte_counters(&self) -> ByteCounters {
        ByteCounters {
            client_to_upstream: metrics::counter!(BYTES_TOTAL, "direction" => "client_to_upstream"),
            upstream_to_client: metrics::counter!(BYTES_TOTAL, "direction" => "upstream_to_client"),
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        metrics::counter!(AUTH_FAILURES_TOTAL, "reason" => reason).increment(1);
    }

    /// A session of `door` refused by `limit`.
    pub fn limit_refusal(&self, door: &'static str, limit: &'static str) {
        metrics::counter!(LIMIT_REFUSALS_TOTAL, "door" => door, "limit" => limit).increment(1);
    }

    pub fn upstream_login(&self, took: Duration) {
        metrics::histogram!(UPSTREAM_LOGIN_SECONDS).record(took.as_secs_f64());
    }
}
