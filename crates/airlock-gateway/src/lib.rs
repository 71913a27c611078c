//! airlock's data path: the tokio driver around the sans-IO PostgreSQL
//! machines of `airlock-pgwire`.
//!
//! [`Gateway`] accepts client connections, runs each session's handshake,
//! verifies its token with `airlock-identity`, asks `airlock-policy` for a
//! route, logs in upstream with the credential only airlock holds, and then
//! relays with one [`pump::Pump`] per session. It also routes cancel
//! requests and holds the current configuration [`Snapshot`], swapped
//! atomically on reload.
//!
//! What it deliberately does not do: parse configuration files (the binary
//! does, with `airlock-config`), serve HTTP (`airlock-api`), or make policy
//! decisions of its own (it asks `airlock-policy`).
#![forbid(unsafe_code)]

pub(crate) mod cancel;
pub(crate) mod catalog;
pub(crate) mod inspect;
pub(crate) mod lifetime;
pub(crate) mod mask;
pub(crate) mod mcp;
pub mod metrics;
pub(crate) mod mysql;
pub(crate) mod pump;
pub(crate) mod record;
pub(crate) mod review;
mod session;
pub mod snapshot;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use airlock_config::Config;
use airlock_identity::{IssuerSpec, JwksBearer, Verifier, VerifierOptions, dev::DevIssuer};
use airlock_pgwire::sqlstate;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use mcp::AccessRequests;
pub use snapshot::Snapshot;

/// The issuers a configuration trusts, the dev issuer included when enabled:
/// its JWKS is fetched from `dev_jwks_uri` (the HTTP listener) like any
/// other issuer's. Reads each issuer's CA bundle, and a `jwks_auth` token
/// given in the environment (one in a file is read at each fetch).
pub fn issuer_specs(
    config: &Config,
    dev_jwks_uri: Option<&str>,
) -> Result<Vec<IssuerSpec>, LoadError> {
    let mut errors = Vec::new();
    let mut specs: Vec<IssuerSpec> = config
        .identity
        .issuers
        .iter()
        .map(|i| {
            let at = format!("identity.issuers.{}", i.name);
            let ca_pem = i.ca.as_ref().and_then(|ca| {
                ca.resolve_bytes()
                    .map(|pem| pem.expose().clone())
                    .map_err(|e| errors.push(format!("{at}.ca: {e}")))
                    .ok()
            });
            let jwks_bearer = i.jwks_auth.as_ref().and_then(|auth| match &auth.bearer {
                airlock_config::Secret::File(path) => Some(JwksBearer::File(path.clone())),
                env => env
                    .resolve_string()
                    .map(|t| JwksBearer::Token(t.expose().clone()))
                    .map_err(|e| errors.push(format!("{at}.jwks_auth.bearer: {e}")))
                    .ok(),
            });
            IssuerSpec {
                name: i.name.clone(),
                issuer: i.issuer.clone(),
                audience: i.audience.clone(),
                groups_claim: i.groups_claim.clone(),
                jwks_uri: i.jwks_uri.clone(),
                ca_pem,
                jwks_bearer,
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(LoadError(errors));
    }
    if config.identity.dev_issuer
        && let Some(uri) = dev_jwks_uri
    {
        specs.push(DevIssuer::issuer_spec(
            uri,
            config.identity.dev_issuer_audience.clone(),
        ));
    }
    Ok(specs)
}

/// An address this process can connect to for a listener bound to `addr`
/// (a wildcard bind is reached on loopback).
pub fn local_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

/// A configuration that could not be turned into a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct LoadError(pub Vec<String>);

/// The running gateway: current snapshot, cancel keys, session slots.
pub struct Gateway {
    snapshot: RwLock<Arc<Snapshot>>,
    /// The issuers the current verifier was built for, to keep its key cache
    /// across reloads that do not change them.
    issuers: Mutex<Vec<IssuerSpec>>,
    dev_jwks_uri: Option<String>,
    cancels: Arc<cancel::CancelRegistry>,
    sessions: Arc<Semaphore>,
    metrics: metrics::Metrics,
    /// The journal every session reports to; set once by the binary before
    /// serving. Without it sessions are refused (nothing runs unrecorded).
    recorder: std::sync::OnceLock<Arc<airlock_audit::Recorder>>,
    /// Held statements and grants; set once by the binary. Without it,
    /// statements that need approval are refused and JIT roles unusable.
    approvals: std::sync::OnceLock<Arc<airlock_engine::approvals::Approvals>>,
    /// The wall clock sessions verify tokens and time lifetimes by; set
    /// once (tests), the system's otherwise.
    clock: std::sync::OnceLock<Arc<dyn airlock_engine::clock::Clock>>,
    /// The MySQL upstreams' version string and kind, for the greeting
    /// (read once from the first MySQL connection's upstream).
    mysql_version: tokio::sync::OnceCell<(Vec<u8>, bool)>,
    /// MySQL sessions by airlock's connection id, for `KILL QUERY`.
    mysql_sessions: mysql::Sessions,
    /// Session slots in all (`limits.max_sessions`).
    max_sessions: usize,
    /// Set on shutdown: `/readyz` says not ready.
    draining: std::sync::atomic::AtomicBool,
    /// Set when sessions must end (a shutdown's grace is over).
    terminate: tokio::sync::watch::Sender<bool>,
    /// Sessions open per principal and per connection, for their caps.
    limiter: Arc<airlock_engine::limits::Limiter>,
    /// Wire sessions open now, by session id: each ends when told why
    /// ([`Gateway::terminate_session`]).
    live: Mutex<std::collections::HashMap<uuid::Uuid, tokio::sync::watch::Sender<Option<String>>>>,
}

/// A session's place in [`Gateway`]'s live sessions, left when dropped.
pub(crate) struct Tracked<'a> {
    gateway: &'a Gateway,
    id: uuid::Uuid,
    /// Says why, when an administrator ends the session.
    pub(crate) ended: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.gateway.live_map().remove(&self.id);
    }
}

impl Gateway {
    /// Builds the gateway for a validated configuration. `dev_jwks_uri` is
    /// where the HTTP listener serves the dev issuer's keys.
    pub fn new(config: &Config, dev_jwks_uri: Option<String>) -> Result<Arc<Gateway>, LoadError> {
        let specs = issuer_specs(config, dev_jwks_uri.as_deref())?;
        let verifier = build_verifier(&specs)?;
        let snapshot = build_snapshot(config, verifier)?;
        Ok(Arc::new(Gateway {
            snapshot: RwLock::new(Arc::new(snapshot)),
            issuers: Mutex::new(specs),
            dev_jwks_uri,
            cancels: Arc::default(),
            sessions: Arc::new(Semaphore::new(config.limits.max_sessions as usize)),
            metrics: metrics::Metrics,
            recorder: std::sync::OnceLock::new(),
            approvals: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
            mysql_version: tokio::sync::OnceCell::new(),
            mysql_sessions: mysql::Sessions::default(),
            max_sessions: config.limits.max_sessions as usize,
            draining: std::sync::atomic::AtomicBool::new(false),
            terminate: tokio::sync::watch::channel(false).0,
            live: Mutex::default(),
            limiter: Arc::default(),
        }))
    }

    /// Starts a shutdown: readiness says no from now on (the listeners are
    /// closed by whoever stops them).
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a shutdown has started.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sessions open now (wire sessions and MCP calls).
    pub fn active_sessions(&self) -> usize {
        self.max_sessions - self.sessions.available_permits()
    }

    /// Ends every session: each is cut with a message naming the shutdown
    /// (PostgreSQL `57P01`, MySQL 1053), its end recorded.
    pub fn end_sessions(&self) {
        self.terminate.send_replace(true);
    }

    /// A place under `limits.per_principal` and `limits.per_connection`
    /// for a routed session, kept for its life; a refusal is counted
    /// (`airlock_limit_refusals_total`).
    pub(crate) fn admit(
        &self,
        snapshot: &Snapshot,
        authorized: &airlock_engine::open::Authorized,
        door: &'static str,
    ) -> Result<airlock_engine::limits::Permit, airlock_engine::limits::Exceeded> {
        self.limiter
            .admit_route(
                snapshot.limits.sessions,
                &authorized.principal,
                &authorized.route,
                std::time::Instant::now(),
            )
            .inspect_err(|e| {
                tracing::info!(limit = e.limit(), "session refused by a limit");
                self.metrics.limit_refusal(door, e.limit());
            })
    }

    /// The ids of the wire sessions open now.
    pub fn live_sessions(&self) -> Vec<uuid::Uuid> {
        self.live_map().keys().copied().collect()
    }

    /// Ends wire session `id`, telling its client `why` (PostgreSQL
    /// `57P01`, MySQL 1927); its end event records `why`. False when no
    /// such session is open.
    pub fn terminate_session(&self, id: uuid::Uuid, why: String) -> bool {
        match self.live_map().get(&id) {
            Some(tx) => {
                tx.send_replace(Some(why));
                true
            }
            None => false,
        }
    }

    /// Adds session `id` to the live sessions until the guard is dropped.
    pub(crate) fn track(&self, id: uuid::Uuid) -> Tracked<'_> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.live_map().insert(id, tx);
        Tracked {
            gateway: self,
            id,
            ended: Some(rx),
        }
    }

    fn live_map(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<uuid::Uuid, tokio::sync::watch::Sender<Option<String>>>,
    > {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once no session is open (every slot is free again).
    pub async fn sessions_ended(&self) {
        let all = u32::try_from(self.max_sessions).unwrap_or(u32::MAX);
        let _ = self.sessions.acquire_many(all).await;
    }

    /// Connects the gateway to the process's recorder (once).
    pub fn set_recorder(&self, recorder: Arc<airlock_audit::Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    pub fn recorder(&self) -> Option<&Arc<airlock_audit::Recorder>> {
        self.recorder.get()
    }

    /// Connects the gateway to the process's approvals worker (once).
    pub fn set_approvals(&self, approvals: Arc<airlock_engine::approvals::Approvals>) {
        let _ = self.approvals.set(approvals);
    }

    pub fn approvals(&self) -> Option<&Arc<airlock_engine::approvals::Approvals>> {
        self.approvals.get()
    }

    /// Sets the wall clock of sessions opened from now on (once; tests).
    pub fn set_clock(&self, clock: Arc<dyn airlock_engine::clock::Clock>) {
        let _ = self.clock.set(clock);
    }

    fn clock(&self) -> Arc<dyn airlock_engine::clock::Clock> {
        match self.clock.get() {
            Some(c) => Arc::clone(c),
            None => Arc::new(airlock_engine::clock::SystemClock),
        }
    }

    /// Records a reload attempt (the policy in force is part of the trail).
    pub fn record_reload(&self, result: Result<(), String>, config_sha256: Option<String>) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        let event = airlock_audit::Event::now(airlock_audit::Body::PolicyReload(
            airlock_audit::event::PolicyReload {
                ok: result.is_ok(),
                error: result.err(),
                config_sha256,
            },
        ));
        if let Err(e) = recorder.record(&event) {
            tracing::error!(error = %e, "a policy reload could not be recorded");
        }
    }

    /// Swaps in a new configuration for sessions that start from now on.
    /// On error the current snapshot stays in force. Listener addresses and
    /// `limits.max_sessions` are fixed at start.
    pub fn reload(&self, config: &Config) -> Result<(), LoadError> {
        let specs = issuer_specs(config, self.dev_jwks_uri.as_deref())?;
        let mut issuers = self
            .issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let verifier = if *issuers == specs {
            Arc::clone(&self.snapshot().verifier)
        } else {
            build_verifier(&specs)?
        };
        let snapshot = build_snapshot(config, verifier)?;
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snapshot);
        *issuers = specs;
        Ok(())
    }

    /// The configuration new sessions use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The version string MySQL clients are greeted with: the upstream's,
    /// read from the greeting of the first MySQL connection (by name); a
    /// MariaDB-like default while none answers (clients pick features by
    /// it, and the login fails anyway when the upstream is down).
    async fn mysql_version(&self, snapshot: &Snapshot) -> (Vec<u8>, bool) {
        if let Some(v) = self.mysql_version.get() {
            return v.clone();
        }
        let mut names: Vec<_> = snapshot
            .connections
            .iter()
            .filter(|(_, c)| c.protocol == airlock_config::Protocol::Mysql)
            .collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        if let Some((_, conn)) = names.first() {
            let probe = tokio::time::timeout(
                snapshot.limits.upstream_connect_timeout,
                mysql::upstream::probe(&conn.target),
            );
            if let Ok(Ok(v)) = probe.await {
                let _ = self.mysql_version.set(v.clone());
                return v;
            }
        }
        (b"5.5.5-10.11.0-MariaDB-airlock".to_vec(), false)
    }

    /// Accepts MySQL/MariaDB clients on `listener` until `shutdown` completes.
    pub async fn serve_mysql(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        self.accept(listener, shutdown, Door::Mysql).await
    }

    /// Accepts PostgreSQL clients on `listener` until `shutdown` completes.
    pub async fn serve_postgres(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        self.accept(listener, shutdown, Door::Postgres).await
    }

    /// One listener's accept loop: each client gets a session slot and a
    /// task of `door`'s, or, with every slot taken, the door's own
    /// "too many connections" error.
    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        door: Door,
    ) {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let gateway = Arc::clone(&self);
            match Arc::clone(&self.sessions).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        match door {
                            Door::Postgres => session::serve(gateway, tcp, peer, loopback).await,
                            Door::Mysql => {
                                mysql::session::serve(gateway, tcp, peer, loopback).await
                            }
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    tokio::spawn(async move {
                        let mut tcp = tcp;
                        let mut out = bytes::BytesMut::new();
                        let message = "airlock: too many sessions (limits.max_sessions)";
                        match door {
                            Door::Postgres => airlock_pgwire::startup::fatal(
                                &mut out,
                                sqlstate::TOO_MANY_CONNECTIONS,
                                message,
                            ),
                            Door::Mysql => airlock_mywire::codec::err(
                                &mut out,
                                &mut 0,
                                airlock_mywire::errno::CON_COUNT,
                                "08004",
                                message,
                            ),
                        }
                        let _ = tcp.write_all(&out).await;
                    });
                }
            }
        }
    }
}

/// Which wire a listener speaks.
#[derive(Debug, Clone, Copy)]
enum Door {
    Postgres,
    Mysql,
}

fn build_verifier(specs: &[IssuerSpec]) -> Result<Arc<Verifier>, LoadError> {
    Verifier::new(specs.to_vec(), VerifierOptions::default())
        .map(Arc::new)
        .map_err(|e| LoadError(vec![format!("identity: {e}")]))
}

fn build_snapshot(config: &Config, verifier: Arc<Verifier>) -> Result<Snapshot, LoadError> {
    let secrets = config
        .resolve_secrets()
        .map_err(|errors| LoadError(errors.iter().map(ToString::to_string).collect()))?;
    Snapshot::build(config, &secrets, verifier).map_err(|e| LoadError(vec![e.to_string()]))
}

/// How long a session's last words to its client (a FATAL, the close) may
/// take: a client that reads nothing more does not keep the session.
pub(crate) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether more rows of a result already begun (a suspended portal's
/// Execute, a cursor fetch) are refused: a rows or bytes budget is spent.
/// Counted; no statement is charged.
pub(crate) fn results_spent(
    budget: Option<&airlock_engine::limits::Budget>,
    door: &'static str,
) -> Option<airlock_engine::limits::Exceeded> {
    let exceeded = budget?.results_spent(std::time::Instant::now()).err()?;
    metrics::Metrics.limit_refusal(door, exceeded.limit());
    Some(exceeded)
}

/// Charges a statement's estimated planner `cost` (`None`: none could be
/// read, over every cap) to `max_cost`: `Some` (counted) when it would pass
/// a cap, and nothing is charged.
pub(crate) fn over_cost(
    budget: Option<&airlock_engine::limits::Budget>,
    cost: Option<f64>,
    door: &'static str,
) -> Option<airlock_engine::limits::Exceeded> {
    let exceeded = budget?
        .spend_cost(cost.unwrap_or(f64::INFINITY), std::time::Instant::now())
        .err()?;
    metrics::Metrics.limit_refusal(door, exceeded.limit());
    Some(exceeded)
}

/// Charges a message of `statements` to the principal's rate and the access
/// rule's budgets, if the session has any: `Some` (counted and logged) when
/// one is over, which the door turns into its refusal and records under
/// [`Exceeded::rule`](airlock_engine::limits::Exceeded::rule).
pub(crate) fn over_budget(
    budget: Option<&airlock_engine::limits::Budget>,
    statements: usize,
    door: &'static str,
) -> Option<airlock_engine::limits::Exceeded> {
    let exceeded = budget?.spend(statements, std::time::Instant::now()).err()?;
    // Debug, not info: an agent over its rate can be refused thousands of
    // times a second; the metric counts them.
    tracing::debug!(limit = exceeded.limit(), "statement refused by a limit");
    metrics::Metrics.limit_refusal(door, exceeded.limit());
    Some(exceeded)
}
