//! `airlock serve`: wires configuration, identity, the gateway and the HTTP
//! listener together, and reloads the configuration on SIGHUP or when its
//! files change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use airlock_api::ApiState;
use airlock_config::Config;
use airlock_gateway::Gateway;
use airlock_identity::dev::DevIssuer;
use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How often the configuration and secret files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A running gateway.
pub struct Running {
    pub postgres: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and waits for the listeners to close.
    pub async fn stop(self) {
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
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; the handle then
            // renders nothing, which is visible and harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
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
    let mut tasks = Vec::new();

    if let Some(listener) = http_listener {
        let state = ApiState {
            metrics: metrics_handle(),
            ready: Arc::new(|| Ok(())),
            dev_issuer,
        };
        let stop = stopped(shutdown_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = airlock_api::serve(listener, state, stop).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        }));
    }
    if let Some(listener) = pg_listener {
        let gw = Arc::clone(&gateway);
        let stop = stopped(shutdown_rx.clone());
        tasks.push(tokio::spawn(gw.serve_postgres(listener, stop)));
    }
    if let Some(path) = config_path {
        tasks.push(tokio::spawn(watch_config(
            Arc::clone(&gateway),
            path,
            config.watched_files(),
            shutdown_rx,
        )));
    }
    tracing::info!(?postgres, ?http, "airlock is serving");
    Ok(Running {
        postgres,
        http,
        gateway,
        shutdown,
        tasks,
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Reloads on SIGHUP and when the configuration file or a secret file it
/// names changes (checked every second, which also catches the symlink swap
/// Kubernetes uses to update mounted ConfigMaps and Secrets).
async fn watch_config(
    gateway: Arc<Gateway>,
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
        match reload(&gateway, &path) {
            Ok(config) => {
                files = config.watched_files();
                seen = fingerprint(&path, &files);
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
