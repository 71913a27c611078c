use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use airlock_identity::dev::{DevIssuer, MintRequest};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod approvals_cli;
mod audit_cli;

/// airlock: an identity-aware gateway between AI agents, CI jobs, people and
/// production databases.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained sandbox: an ephemeral PostgreSQL with sample
    /// data, the gateway and the dev issuer. Ctrl-C cleans up.
    Demo,
    /// Mint a token from the built-in dev issuer.
    Token {
        /// The token's subject.
        #[arg(long)]
        sub: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, such as 15m or 1h.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The party acting for the subject (RFC 8693 `act.sub`): the agent, with
        /// --sub naming the human it acts for.
        #[arg(long)]
        act: Option<String>,
        /// The configuration whose data_dir holds the dev issuer key; without
        /// it, ./airlock-data is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Statements held for approval, through the HTTP API: list, show,
    /// approve, deny.
    Approvals {
        #[command(flatten)]
        server: audit_cli::Server,
        #[command(subcommand)]
        command: approvals_cli::ApprovalsCommand,
    },
    /// Just-in-time access, through the HTTP API: request a role, list,
    /// show, approve, deny, revoke grants.
    Access {
        #[command(flatten)]
        server: audit_cli::Server,
        #[command(subcommand)]
        command: approvals_cli::AccessCommand,
    },
    /// Recorded sessions, through the HTTP API (auditor or admin token).
    Sessions {
        #[command(flatten)]
        server: audit_cli::Server,
        #[command(subcommand)]
        command: audit_cli::SessionsCommand,
    },
    /// The audit trail on this host: verify its hash chains, export it.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a configuration file, secrets and TLS material included;
    /// exit 1 with located errors.
    Check { file: PathBuf },
    /// Show, without running it, how each statement is classified, which
    /// rules match and what is decided. Needs no database.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The connection (the client's dbname).
        #[arg(long)]
        connection: String,
        /// The principal's subject.
        #[arg(long)]
        sub: String,
        /// The principal's groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The token's other claims, `name=value`, comma-separated or repeated
        /// (`--claims repository=acme/app,ref=refs/heads/main`); a name may be a
        /// dotted path such as `kubernetes.io.namespace`.
        #[arg(long, value_delimiter = ',', value_parser = claim_arg)]
        claims: Vec<(String, String)>,
        /// The role profile (the client's user); the first allowed one when absent.
        #[arg(long)]
        role: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The SQL, as a client would send it in one message.
        sql: String,
    },
}

/// A `--claims` item: `name=value`.
fn claim_arg(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?}: write name=value")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    init_tracing_as(airlock_config::LogFormat::Text);
}

/// Logs to standard error, filtered by `AIRLOCK_LOG` (default `info`), as
/// text or one JSON object per line (`log.format`).
fn init_tracing_as(format: airlock_config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        airlock_config::LogFormat::Text => builder.init(),
        airlock_config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = airlock::serve::load(&config)?;
            init_tracing_as(cfg.log.format);
            runtime()?.block_on(async {
                let running = airlock::serve::start(cfg, Some(config)).await?;
                shutdown_signal().await;
                tracing::info!("shutting down");
                running.stop().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            init_tracing();
            runtime()?.block_on(airlock::demo::run())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            sub,
            groups,
            ttl,
            act,
            config,
        } => {
            let (data_dir, audience) = match config {
                Some(path) => {
                    let cfg = airlock::serve::load(&path)?;
                    anyhow::ensure!(
                        cfg.identity.dev_issuer,
                        "{}: identity.dev_issuer is not enabled, so the gateway would refuse this token",
                        path.display()
                    );
                    (cfg.data_dir, cfg.identity.dev_issuer_audience)
                }
                None => (PathBuf::from("airlock-data"), "airlock".to_string()),
            };
            let dev = DevIssuer::open_or_create(&data_dir).context("opening the dev issuer key")?;
            let token = dev.mint(
                MintRequest {
                    subject: sub,
                    groups,
                    ttl,
                    act,
                    audience,
                },
                SystemTime::now(),
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    connection,
                    sub,
                    groups,
                    claims,
                    role,
                    json,
                    sql,
                },
        } => {
            let cfg = airlock::serve::load(&config)?;
            let asker = airlock::explain::Asker {
                claims: claims
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
                ..airlock::explain::Asker::new(&sub, &groups)
            };
            let report =
                airlock::explain::explain(&cfg, &connection, &asker, role.as_deref(), &sql)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { server, command } => approvals_cli::approvals(server, command),
        Command::Access { server, command } => approvals_cli::access(server, command),
        Command::Sessions { server, command } => audit_cli::sessions(server, command),
        Command::Audit { command } => audit_cli::audit(command),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            // Every file and secret error at once, then what only building
            // the gateway checks (TLS material, issuers).
            let checked = airlock_config::check_file(&file)
                .map_err(airlock::serve::config_errors)
                .and_then(|cfg| {
                    // The dev issuer's JWKS address is only known once serving.
                    airlock_gateway::Gateway::new(&cfg, None).map_err(|e| anyhow::anyhow!("{e}"))
                });
            match checked {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { term.as_mut()?.recv().await } => {}
    }
}
