//! `airlock serve`: wires configuration, identity, the gateway and the HTTP
//! listener together, and reloads the configuration on SIGHUP or when its
//! files change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use airlock_api::ApiState;
use airlock_audit::Recorder;
use airlock_audit::ship::{self, StoreSlot};
use airlock_config::{Config, JournalFsync};
use airlock_engine::approvals::Approvals;
use airlock_gateway::Gateway;
use airlock_identity::dev::DevIssuer;
use airlock_notify::Notifier;
use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How often the configuration and secret files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A running gateway.
pub struct Running {
    pub postgres: Option<SocketAddr>,
    pub mysql: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    /// Closes the database listeners.
    listeners: watch::Sender<bool>,
    /// Stops everything else (HTTP, approvals, the journal's shipping).
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// `shutdown_grace`.
    grace: std::time::Duration,
}

impl Running {
    /// Shuts down gracefully (SIGTERM): `/readyz` says not ready and the
    /// database listeners close at once; open sessions may finish within
    /// `shutdown_grace`, then those left are ended with a message naming the
    /// shutdown (their ends recorded); then the HTTP listener and the
    /// background work stop, the shipper shipping the journal one last time.
    pub async fn stop(self) {
        let grace = self.grace;
        self.stop_within(grace).await;
    }

    /// [`Running::stop`] with another grace period.
    pub async fn stop_within(self, grace: std::time::Duration) {
        self.gateway.start_draining();
        let _ = self.listeners.send(true);
        let open = self.gateway.active_sessions();
        if open > 0 {
            tracing::info!(sessions = open, ?grace, "waiting for sessions to finish");
        }
        if tokio::time::timeout(grace, self.gateway.sessions_ended())
            .await
            .is_err()
        {
            tracing::info!(
                sessions = self.gateway.active_sessions(),
                "shutdown grace over: ending the sessions left"
            );
            self.gateway.end_sessions();
            // Each ends at its next step; a stuck one is not waited for long.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.gateway.sessions_ended(),
            )
            .await;
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(airlock_gateway::metrics::UPSTREAM_LOGIN_SECONDS.into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("static buckets are valid")
                // Approvals wait for people: seconds to the approval timeout.
                .set_buckets_for_metric(
                    Matcher::Full(airlock_engine::hold::APPROVAL_WAIT_SECONDS.into()),
                    &[
                        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                    ],
                )
                .expect("static buckets are valid")
                // A journal append is a write(2), or an fdatasync.
                .set_buckets_for_metric(
                    Matcher::Full("airlock_journal_append_seconds".into()),
                    &[
                        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                        0.01, 0.025, 0.05, 0.1,
                    ],
                )
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; the handle then
            // renders nothing, which is visible and harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The journal's write options from `journal`.
pub fn journal_options(config: &Config) -> airlock_journal::Options {
    airlock_journal::Options {
        fsync: match config.journal.fsync {
            JournalFsync::Always => airlock_journal::Fsync::Always,
            JournalFsync::Interval(d) => airlock_journal::Fsync::Interval(d),
        },
        ..airlock_journal::Options::default()
    }
}

/// The store URL to connect to: an SQLite file is created (with its
/// directory) when missing; a PostgreSQL store gets `store.password`.
pub fn store_url(config: &Config) -> Result<String> {
    let url = &config.store.url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the store's directory {}", dir.display()))?;
        }
        if url.contains("mode=") {
            return Ok(url.clone());
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        return Ok(format!("{url}{sep}mode=rwc"));
    }
    let Some(password) = &config.store.password else {
        return Ok(url.clone());
    };
    let password = password
        .resolve_string()
        .map_err(|e| anyhow::anyhow!("store.password: {e}"))?;
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (user, host) = rest
        .split_once('@')
        .context("store.url names no user for store.password")?;
    let encoded: String = password
        .expose()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}"))
}

/// Loads and validates a configuration file, formatting every error.
pub fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(config_errors)
}

/// One error listing every configuration error, one per line.
pub fn config_errors(errors: Vec<airlock_config::ConfigError>) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// Binds the listeners of `config` and starts serving. `config_path`, when
/// given, is watched for reloads.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running> {
    let http_listener = match config.listen.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding listen.http {addr}"))?,
        ),
        None => None,
    };
    let http = http_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let pg_listener = match config.listen.postgres {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding listen.postgres {addr}"))?,
        ),
        None => None,
    };
    let postgres = pg_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let my_listener = match config.listen.mysql {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding listen.mysql {addr}"))?,
        ),
        None => None,
    };
    let mysql = my_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    // The dev issuer's keys are served by this process's HTTP listener and
    // fetched from there, like any issuer's.
    let dev_issuer = match (config.identity.dev_issuer, http) {
        (true, Some(bound)) => {
            let dev = DevIssuer::open_or_create(&config.data_dir)
                .context("opening the dev issuer key")?;
            let jwks_uri = format!(
                "http://{}/.well-known/jwks.json",
                airlock_gateway::local_addr(bound)
            );
            Some((Arc::new(dev), jwks_uri))
        }
        _ => None,
    };
    let gateway = Gateway::new(&config, dev_issuer.as_ref().map(|(_, uri)| uri.clone()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (listeners, listeners_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The recorder: a journal that cannot be opened does not stop the
    // gateway (health and metrics stay up), but every session is refused
    // with 58000 and /readyz says why until it can be.
    let recorder = Recorder::open(&config.journal.dir, journal_options(&config));
    gateway.set_recorder(Arc::clone(&recorder));
    let store_slot = Arc::new(StoreSlot::new());
    tasks.push(tokio::spawn(
        Arc::clone(&recorder).run_sync_timer(stopped(shutdown_rx.clone())),
    ));
    {
        let url = store_url(&config)?;
        let recorder = Arc::clone(&recorder);
        let slot = Arc::clone(&store_slot);
        let retention = config.recording.retention.map(|d| d.0);
        let rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // The store of the HTTP API and of approvals (which held
            // statements wait on) is connected here, at normal priority;
            // first, so that its migrations have run before the shipper
            // opens a pool of its own on its low-priority thread.
            let timeout = airlock_store::Store::DEFAULT_CONNECT_TIMEOUT;
            let connected = ship::connect(&recorder, &url, timeout, stopped(rx.clone())).await;
            let Some(store) = connected else { return };
            slot.set(store);
            let shipper = ship::run(Arc::clone(&recorder), url, timeout, retention, stopped(rx));
            match spawn_low_priority("airlock-ship", shipper) {
                Ok(done) => {
                    let _ = done.await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the audit shipper");
                    recorder.set_store_status(Err(format!("the shipper did not start: {e}")));
                }
            }
        }));
    }

    // Approvals and grants: held statements wait on the store, shared with
    // every replica on it; webhooks are delivered in the background.
    let notifier = notifier(&config)?;
    let approvals = Approvals::new(
        Arc::clone(&store_slot),
        notifier,
        Some(Arc::clone(&recorder)),
    );
    gateway.set_approvals(Arc::clone(&approvals));
    tasks.push(tokio::spawn(
        Arc::clone(&approvals).run(stopped(shutdown_rx.clone())),
    ));

    // The configuration in force, for the API's policy view, explain and
    // verification (a reload swaps it).
    let current = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let hooks = Arc::new(Hooks {
        gateway: Arc::clone(&gateway),
        approvals: Arc::clone(&approvals),
        config: Arc::clone(&current),
        store: Arc::clone(&store_slot),
    });
    if let (Some(listener), Some(bound)) = (http_listener, http) {
        let auth: Arc<dyn airlock_api::Authenticate> = Arc::new(ApiAuth {
            gateway: Arc::clone(&gateway),
            auditor_groups: config.api.auditor_groups.clone(),
            admin_groups: config.api.admin_groups.clone(),
        });
        let state = ApiState {
            metrics: metrics_handle(),
            ready: {
                let recorder = Arc::clone(&recorder);
                let gateway = Arc::clone(&gateway);
                let store = Arc::clone(&store_slot);
                Arc::new(move || {
                    if gateway.draining() {
                        return Err("shutting down".into());
                    }
                    recorder.ready()?;
                    // Held statements and JIT requests need the store: not
                    // ready before it has connected once.
                    match store.get() {
                        Some(_) => Ok(()),
                        None => Err("audit store: not connected yet".into()),
                    }
                })
            },
            dev_issuer: dev_issuer.clone(),
            audit: Some(airlock_api::AuditApi::new(
                Some(Arc::clone(&auth)),
                Arc::clone(&store_slot),
            )),
            approvals: Some(airlock_api::ApprovalsApi {
                hooks: Arc::clone(&hooks) as Arc<dyn airlock_api::ApprovalHooks>,
            }),
            gateway: Some(airlock_api::GatewayApi::new(
                Arc::clone(&hooks) as Arc<dyn airlock_api::GatewayHooks>
            )),
        };
        let api = airlock_api::router(state);
        // The MCP endpoint is mounted always: it answers 404 while
        // `mcp.enabled` is off, so a reload can turn it on.
        let mut app = api.clone().merge(
            gateway.mcp_router(Arc::clone(&hooks) as Arc<dyn airlock_gateway::AccessRequests>),
        );
        let console = console_settings(&config, bound)?;
        if let Some((dev, _)) = &dev_issuer {
            let client = match (&config.console, &console) {
                (Some(c), Some(settings)) if c.issuer == "dev" => {
                    Some((settings.client_id.clone(), settings.redirect_url.clone()))
                }
                _ => None,
            };
            let login = airlock_console::dev::DevLogin::new(
                Arc::clone(dev),
                config.identity.dev_issuer_audience.clone(),
                client,
            );
            app = app.merge(airlock_console::dev::router(Arc::new(login)));
        }
        if let Some(settings) = console {
            app = app.merge(airlock_console::router(settings, api, auth));
        }
        let stop = stopped(shutdown_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = airlock_api::serve(listener, app, stop).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        }));
    }
    if let Some(listener) = pg_listener {
        let gw = Arc::clone(&gateway);
        let stop = stopped(listeners_rx.clone());
        tasks.push(tokio::spawn(gw.serve_postgres(listener, stop)));
    }
    if let Some(listener) = my_listener {
        let gw = Arc::clone(&gateway);
        let stop = stopped(listeners_rx.clone());
        tasks.push(tokio::spawn(gw.serve_mysql(listener, stop)));
    }
    if let Some(path) = config_path {
        tasks.push(tokio::spawn(watch_config(
            Arc::clone(&gateway),
            current,
            path,
            config.watched_files(),
            shutdown_rx,
        )));
    }
    tracing::info!(?postgres, ?mysql, ?http, "airlock is serving");
    Ok(Running {
        postgres,
        mysql,
        http,
        gateway,
        listeners,
        shutdown,
        tasks,
        grace: config.shutdown_grace.0,
    })
}

/// The webhook notifier of `notifications.webhooks`.
fn notifier(config: &Config) -> Result<Notifier> {
    if config.notifications.webhooks.is_empty() {
        return Ok(Notifier::disabled());
    }
    let secrets = config.resolve_secrets().map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let webhooks = config
        .notifications
        .webhooks
        .iter()
        .enumerate()
        .map(|(i, w)| airlock_notify::Webhook {
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.name().to_string()).collect(),
            format: match w.format {
                airlock_config::WebhookFormat::Json => airlock_notify::Format::Json,
                airlock_config::WebhookFormat::Slack => airlock_notify::Format::Slack,
            },
            secret: secrets
                .webhook_secrets
                .get(i)
                .and_then(Option::as_ref)
                .map(|s| s.expose().clone()),
            timeout: w.timeout.0,
        })
        .collect();
    Ok(Notifier::start(webhooks, airlock_notify::Retry::default()))
}

/// The console's settings from the `console` section (`None` without
/// one); `http` is the HTTP listener's address.
fn console_settings(
    config: &Config,
    http: SocketAddr,
) -> Result<Option<airlock_console::Settings>> {
    let Some(c) = &config.console else {
        return Ok(None);
    };
    let base = format!("http://{}", airlock_gateway::local_addr(http));
    let (issuer, discovery) = if c.issuer == "dev" {
        (
            airlock_identity::dev::ISSUER.to_string(),
            format!("{base}/.well-known/openid-configuration"),
        )
    } else {
        let issuer = config
            .identity
            .issuers
            .iter()
            .find(|i| i.name == c.issuer)
            .context("console.issuer names no issuer")?;
        (
            issuer.issuer.clone(),
            format!(
                "{}/.well-known/openid-configuration",
                issuer.issuer.trim_end_matches('/')
            ),
        )
    };
    let client_secret = match &c.client_secret {
        Some(secret) => Some(
            String::from_utf8(secret.resolve_bytes()?.expose().clone())
                .context("console.client_secret is not UTF-8")?,
        ),
        None => None,
    };
    Ok(Some(airlock_console::Settings {
        issuer,
        discovery_url: discovery,
        client_id: c.client_id.clone(),
        client_secret,
        redirect_url: c
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("{base}/console/callback")),
        session_ttl: c.session_ttl.0,
    }))
}

/// What the HTTP API and the MCP endpoint need from this process.
struct Hooks {
    gateway: Arc<Gateway>,
    approvals: Arc<Approvals>,
    /// The configuration in force.
    config: Arc<std::sync::RwLock<Arc<Config>>>,
    store: Arc<StoreSlot>,
}

impl Hooks {
    fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl airlock_api::GatewayHooks for Hooks {
    fn live_sessions(&self) -> Vec<uuid::Uuid> {
        self.gateway.live_sessions()
    }

    fn terminate(&self, id: uuid::Uuid, why: String) -> bool {
        self.gateway.terminate_session(id, why)
    }

    fn policy(&self) -> serde_json::Value {
        crate::policy_view::policy_json(&self.config())
    }

    fn explain(
        &self,
        request: &airlock_api::ExplainRequest,
    ) -> std::result::Result<serde_json::Value, String> {
        let asker = crate::explain::Asker::new(
            request.subject.as_deref().unwrap_or("explain"),
            &request.groups,
        );
        crate::explain::explain(
            &self.config(),
            &request.connection,
            &asker,
            request.role.as_deref(),
            &request.sql,
        )
        .map(|report| report.to_json())
        .map_err(|e| e.to_string())
    }

    fn verify(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<Vec<String>, String>> + Send + '_>>
    {
        Box::pin(async move {
            let config = self.config();
            let store = self.store.get();
            let journal = &config.journal.dir;
            match airlock_audit::verify::verify(journal, store).await {
                Ok(report) => Ok(crate::verify_report::lines(
                    journal,
                    &crate::verify_report::redact_url(&config.store.url),
                    store.is_some(),
                    &report,
                )),
                Err(airlock_audit::VerifyError::Broken(broken)) => {
                    Err(format!("broken link: {broken}"))
                }
                Err(e) => Err(format!("the check could not finish: {e}")),
            }
        })
    }
}

impl airlock_api::ApprovalHooks for Hooks {
    fn jit_terms(
        &self,
        p: &airlock_policy::Principal,
        connection: &str,
        role: &str,
    ) -> Option<airlock_api::JitTerms> {
        let snapshot = self.gateway.snapshot();
        let rule = snapshot.access.jit_rule(p, connection, role)?;
        let jit = rule.jit.as_ref()?;
        Some(airlock_api::JitTerms {
            rule: rule.name.clone(),
            approvers: jit.approvers.clone(),
            min_approvals: jit.min_approvals,
            max_duration: jit.max_duration,
            preapproved: jit.preapproves(p),
        })
    }

    fn nudge(&self) {
        self.approvals.nudge();
    }

    fn record(&self, event: airlock_audit::event::Approval) {
        self.approvals.record(event);
    }

    fn notify(&self, event: &'static str, data: serde_json::Value, summary: String) {
        self.approvals.notifier.send(airlock_notify::Notification {
            event,
            data,
            summary,
        });
    }
}

/// The MCP endpoint's `request_access` tool files requests as the API does.
impl airlock_gateway::AccessRequests for Hooks {
    fn request<'a>(
        &'a self,
        principal: &'a airlock_policy::Principal,
        connection: &'a str,
        role: &'a str,
        duration: &'a str,
        reason: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<serde_json::Value, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            let Some(store) = self.approvals.store() else {
                return Err("airlock: the approvals store is unavailable".into());
            };
            let request = airlock_api::AccessRequest {
                connection: connection.into(),
                role: role.into(),
                duration: duration.into(),
                reason: reason.into(),
            };
            airlock_api::file_access_request(store, self, principal, &request)
                .await
                .map(|a| serde_json::to_value(a).unwrap_or_default())
                .map_err(|e| format!("airlock: {e}"))
        })
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice
/// 19), with a current-thread runtime, so that it never competes with the
/// data path for the cores: shipping to the store inserts every event into
/// SQLite, which costs more CPU than relaying the statement did. Threads it
/// starts (sqlx-sqlite's connection workers) inherit the priority. It still
/// gets a share of a busy machine (about 1/70 of a core's time against a
/// nice-0 thread), so the store catches up and never stops; the journal
/// holds what it has not shipped yet. The receiver resolves when `work`
/// is done.
fn spawn_low_priority(
    name: &str,
    work: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // On Linux the nice value is per thread: this one only.
            if let Err(e) = rustix::process::setpriority_process(None, 19) {
                tracing::warn!(error = %e, "cannot lower the shipper's priority");
            }
            runtime.block_on(work);
            let _ = done.send(());
        })?;
    Ok(finished)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Reloads on SIGHUP and when the configuration file or a secret file it
/// names changes (checked every second, which also catches the symlink swap
/// Kubernetes uses to update mounted ConfigMaps and Secrets).
async fn watch_config(
    gateway: Arc<Gateway>,
    current: Arc<std::sync::RwLock<Arc<Config>>>,
    path: PathBuf,
    mut files: Vec<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut seen = fingerprint(&path, &files);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        let trigger = tokio::select! {
            _ = async { hup.as_mut()?.recv().await } => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&path, &files);
                if now == seen { continue }
                seen = now;
                "file change"
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        let result = reload(&gateway, &path);
        gateway.record_reload(
            result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            file_sha256(&path),
        );
        match result {
            Ok(config) => {
                files = config.watched_files();
                seen = fingerprint(&path, &files);
                *current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                tracing::info!(trigger, "configuration reloaded; new sessions use it");
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "reload refused; the previous configuration stays in force")
            }
        }
    }
}

fn reload(gateway: &Gateway, path: &Path) -> Result<Config> {
    let config = load(path)?;
    gateway
        .reload(&config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
}

/// SHA-256 of a file, hex.
fn file_sha256(path: &Path) -> Option<String> {
    Some(airlock_audit::event::sha256_hex(&std::fs::read(path).ok()?))
}

/// Modification time and length of each file (following symlinks).
fn fingerprint(path: &Path, files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    std::iter::once(path)
        .chain(files.iter().map(PathBuf::as_path))
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// The HTTP API's callers: tokens checked by the gateway's current verifier,
/// rights from the token's groups and `api.auditor_groups` / `api.admin_groups`.
struct ApiAuth {
    gateway: Arc<Gateway>,
    auditor_groups: Vec<String>,
    admin_groups: Vec<String>,
}

impl airlock_api::Authenticate for ApiAuth {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<airlock_api::Caller, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            let verifier = Arc::clone(&self.gateway.snapshot().verifier);
            let authenticated = verifier
                .verify(token, SystemTime::now())
                .await
                .map_err(|e| e.to_string())?;
            let principal = authenticated.principal();
            let member = |groups: &[String]| principal.groups.iter().any(|g| groups.contains(g));
            Ok(airlock_api::Caller {
                subject: principal.subject.clone(),
                auditor: member(&self.auditor_groups),
                admin: member(&self.admin_groups),
                principal: principal.clone(),
            })
        })
    }
}
