//! The audit commands.
//!
//! - `airlock sessions list|show|replay`: clients of the HTTP API
//!   (through [`airlock_api::Client`]), so an auditor needs a token, not
//!   the store's credentials. Readable tables by default; `--json` prints
//!   the API's answer as JSON.
//! - `airlock audit verify|export`: local, on the host that has the
//!   configuration: the journal directory and the store.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use airlock::verify_report::redact_url;
use airlock_api::Client;
use airlock_api::audit::{SessionEvents, SessionSummary, SessionsQuery};
use airlock_api::client::{self, TIMEOUT};
use airlock_audit::event::{Body, Decision, Event};
use airlock_audit::export::{Ocsf, jsonl_line, parse_since};
use airlock_audit::verify::VerifyError;
use airlock_store::Store;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

/// Where the API is, when neither `--server` nor `AIRLOCK_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Store events read per query by `audit export`.
const EXPORT_PAGE: u32 = 1000;

/// The API server and the caller's token.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct Server {
    /// The airlock HTTP API.
    #[arg(long, global = true, env = "AIRLOCK_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// An OIDC token of the caller; its groups decide what the API lets it
    /// see and do (sessions: auditor or admin; approvals: the rule's
    /// approvers).
    #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum SessionsCommand {
    /// List recorded sessions, newest first.
    List {
        /// Only this principal (the token subject).
        #[arg(long)]
        principal: Option<String>,
        /// Only this connection.
        #[arg(long)]
        connection: Option<String>,
        /// Only sessions started since: a duration (30m, 1h, 7d) or an
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only sessions with a statement that got this decision.
        #[arg(long, value_enum)]
        decision: Option<DecisionArg>,
        /// At most this many sessions (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one session's events.
    Show {
        /// The session id.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one session as a psql-like transcript, with decisions and
    /// masked results.
    Replay {
        /// The session id.
        id: String,
    },
    /// End a live session (admins): its client is told who ended it and
    /// why, and the session's end records it.
    Terminate {
        /// The session id.
        id: String,
        /// Why, for the client and the record.
        #[arg(long)]
        reason: String,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionArg {
    Allow,
    Deny,
    Approve,
}

impl DecisionArg {
    fn name(self) -> &'static str {
        match self {
            DecisionArg::Allow => "allow",
            DecisionArg::Deny => "deny",
            DecisionArg::Approve => "approve",
        }
    }
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum AuditCommand {
    /// Check the hash chain of every recorded event, in the journal and in
    /// the store; exit 1 naming the first broken link.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write the store's events to stdout, one JSON object per line.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// `jsonl`: the events with their chain position; `ocsf`: OCSF
        /// Datastore Activity events for a SIEM.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only events recorded since: a duration (1h, 7d) or an RFC 3339
        /// time.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

/// Runs a `sessions` command.
pub fn sessions(server: Server, command: SessionsCommand) -> Result<ExitCode> {
    let client = connect(server)?;
    let out = &mut io::stdout().lock();
    match command {
        SessionsCommand::List {
            principal,
            connection,
            since,
            decision,
            limit,
            json,
        } => {
            let query = SessionsQuery {
                principal,
                connection,
                since,
                decision: decision.map(|d| d.name().to_string()),
                limit: limit.map(|l| l.to_string()),
            };
            let list = call(&client, None, client.sessions(&query))?;
            if json {
                print_json(out, &list)?;
            } else if list.sessions.is_empty() {
                eprintln!("No sessions found.");
            } else {
                write_str(out, &sessions_table(&list.sessions))?;
            }
        }
        SessionsCommand::Show { id, json } => {
            let session = call(&client, Some(&not_found(&id)), client.session(&id))?;
            if json {
                print_json(out, &session)?;
            } else {
                write_str(out, &session_text(&session))?;
            }
        }
        SessionsCommand::Terminate { id, reason } => {
            let body = airlock_api::approvals::DecisionRequest {
                reason: Some(reason),
            };
            let ended = call(&client, None, client.terminate(&id, &body))?;
            let reason = printable(&ended.reason);
            write_str(out, &format!("ended session {}: {reason}\n", ended.id))?;
        }
        SessionsCommand::Replay { id } => {
            let session = call(&client, Some(&not_found(&id)), client.session(&id))?;
            let (events, unreadable) = decode_events(&session);
            let mut text = String::new();
            airlock_audit::replay::transcript(&events, &mut text)
                .map_err(|_| anyhow!("rendering the transcript failed"))?;
            write_str(out, &text)?;
            if unreadable > 0 {
                eprintln!(
                    "airlock: {unreadable} event(s) of this session are not readable as events \
                     of this airlock version and are left out (see `airlock sessions show {id} \
                     --json`)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a 404 about session `id` means.
fn not_found(id: &str) -> String {
    format!("session {} not found", printable(id))
}

/// Writes, treating a closed stdout (`| head`) as the end.
pub(crate) fn write_str(out: &mut impl Write, s: &str) -> Result<()> {
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(crate) fn print_json(out: &mut impl Write, body: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(body)?;
    text.push('\n');
    write_str(out, &text)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// An API client for `server`, once it names an API and a token.
pub(crate) fn connect(server: Server) -> Result<Client> {
    let token = server.token.filter(|t| !t.trim().is_empty()).context(
        "no token: pass --token or set AIRLOCK_TOKEN to an OIDC token of a caller in a \
         group the API allows (with the dev issuer: airlock token --sub NAME --groups GROUP)",
    )?;
    let base = server.server.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--server {base:?}: give an http:// or https:// URL");
    }
    Ok(Client::new(base, token.trim())?)
}

/// Runs one request of `client` to its end; a failure is an error that says
/// what to do. `not_found` is what a 404 means, when the request names one
/// object.
pub(crate) fn call<T>(
    client: &Client,
    not_found: Option<&str>,
    request: impl Future<Output = Result<T, client::Error>>,
) -> Result<T> {
    runtime()?
        .block_on(request)
        .map_err(|e| failed(client.base(), e, not_found))
}

/// A failed request, said plainly.
fn failed(base: &str, e: client::Error, not_found: Option<&str>) -> anyhow::Error {
    match e {
        // The server's words are untrusted too.
        client::Error::Api { status, message } => {
            api_error(status, &printable(&message), not_found)
        }
        client::Error::Unreachable { source, .. } => unreachable(base, &source),
        client::Error::Read { url, source } => {
            anyhow::Error::new(source).context(format!("reading the answer of {url}"))
        }
        e @ (client::Error::Build(_)
        | client::Error::NotJson { .. }
        | client::Error::Shape { .. }) => e.into(),
    }
}

/// An error answer of the API, saying what to do. `not_found` is what a
/// 404 means, when the request named one object.
pub(crate) fn api_error(status: u16, message: &str, not_found: Option<&str>) -> anyhow::Error {
    match (status, not_found) {
        (401, _) => anyhow!(
            "the API refused the token ({message}): pass a valid, unexpired token with --token \
             or AIRLOCK_TOKEN (with the dev issuer, mint one: airlock token --sub NAME --groups \
             GROUP)"
        ),
        (400, _) => anyhow!("the API refused the request: {message}"),
        (403, _) => anyhow!("not allowed: {message}"),
        (404, Some(what)) => anyhow!("{what}"),
        (404, None) => {
            anyhow!("not found ({message}): is --server an airlock API of this version?")
        }
        // Already decided, timed out, voted twice: the server says which.
        (409, _) => anyhow!("{message}"),
        (503, _) => anyhow!("the API cannot answer now: {message}"),
        (status, _) => anyhow!("the API answered {status}: {message}"),
    }
}

/// A request that got no answer, said plainly.
pub(crate) fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::ConnectionRefused
        {
            return anyhow!(
                "cannot reach the airlock API at {base}: connection refused (is `airlock serve` \
                 running with listen.http there? set --server or AIRLOCK_SERVER)"
            );
        }
        cause = c.source();
    }
    if e.is_timeout() {
        return anyhow!("the airlock API at {base} did not answer within {TIMEOUT:?}");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    anyhow!("cannot reach the airlock API at {base}: {text}")
}

/// The events of a session that decode, and how many did not.
fn decode_events(session: &SessionEvents) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut unreadable = 0;
    for e in &session.events {
        match e.decode() {
            Some(event) => events.push(event),
            None => unreadable += 1,
        }
    }
    (events, unreadable)
}

/// A value for a terminal: control characters escaped, `-` for none.
pub(crate) fn cell(v: Option<&str>) -> String {
    v.map_or_else(|| "-".into(), printable)
}

/// `s` with control characters escaped, so that recorded text cannot drive
/// the terminal.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\t' => "\\t".to_string(),
            '\r' => "\\r".to_string(),
            c if c.is_control() => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// Columns separated by two spaces, left-aligned, headers in capitals.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            l.extend(std::iter::repeat_n(' ', width[i] - c.chars().count()));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The session list as a table.
fn sessions_table(sessions: &[SessionSummary]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                cell(s.id.as_deref()),
                printable(&s.started_at),
                cell(s.principal.as_deref()),
                cell(s.act.as_deref()),
                cell(s.connection.as_deref()),
                cell(s.role.as_deref()),
                cell(s.client_addr.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STARTED",
            "PRINCIPAL",
            "ACT",
            "CONNECTION",
            "ROLE",
            "CLIENT",
        ],
        &rows,
    )
}

/// A session's summary and its events, one line each.
fn session_text(session: &SessionEvents) -> String {
    let (events, unreadable) = decode_events(session);
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("{name:<12}{value}\n"));
    };
    field(&mut out, "Session:", session.id.to_string());
    let mut statements = 0;
    let mut denied = 0;
    for e in &events {
        match &e.body {
            Body::SessionStart(s) => {
                let mut who = printable(&s.principal);
                if let Some(act) = &s.act {
                    who.push_str(&format!(" (via {})", printable(act)));
                }
                field(&mut out, "Principal:", who);
                field(&mut out, "Issuer:", printable(&s.issuer));
                field(
                    &mut out,
                    "Connection:",
                    format!(
                        "{} as {} (rule \"{}\", {}{})",
                        printable(&s.connection),
                        printable(&s.role),
                        printable(&s.access_rule),
                        printable(&s.mode),
                        if s.unmask { ", unmasked" } else { "" }
                    ),
                );
                field(
                    &mut out,
                    "Client:",
                    format!(
                        "{}{}, TLS {}",
                        printable(&s.client_addr),
                        s.application_name
                            .as_deref()
                            .map(|a| format!(", {}", printable(a)))
                            .unwrap_or_default(),
                        if s.tls { "on" } else { "off" }
                    ),
                );
                field(&mut out, "Started:", printable(&e.at));
            }
            Body::SessionEnd(s) => field(
                &mut out,
                "Ended:",
                format!("{} ({})", printable(&e.at), printable(&s.reason)),
            ),
            Body::Statement(s) => {
                statements += 1;
                if s.decision == Decision::Deny {
                    denied += 1;
                }
            }
            _ => {}
        }
    }
    field(
        &mut out,
        "Statements:",
        format!("{statements} ({denied} denied)"),
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = events.iter().map(event_row).collect();
    out.push_str(&table(&["AT", "KIND", "SEQ", "DETAIL"], &rows));
    if unreadable > 0 {
        out.push_str(&format!(
            "\n{unreadable} event(s) not readable by this airlock version (see --json)\n"
        ));
    }
    out
}

/// How long a statement's text may be on a line of `sessions show`.
const TEXT_WIDTH: usize = 80;

fn event_row(e: &Event) -> Vec<String> {
    let (seq, detail) = match &e.body {
        Body::SessionStart(s) => (
            String::new(),
            format!(
                "{} on {} as {}",
                printable(&s.principal),
                printable(&s.connection),
                printable(&s.role)
            ),
        ),
        Body::Statement(s) => {
            let mut d = s.decision.name().to_string();
            if let Some(rule) = &s.rule {
                d.push_str(&format!(" ({})", printable(rule)));
            }
            let text = printable(
                s.text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_str(),
            );
            let short: String = text.chars().take(TEXT_WIDTH).collect();
            d.push_str("  ");
            d.push_str(&short);
            if text.chars().count() > TEXT_WIDTH || s.truncated.is_some() {
                d.push('…');
            }
            (s.seq.to_string(), d)
        }
        Body::Result(r) => {
            let mut d = match (&r.error, &r.tag) {
                (Some(err), _) => {
                    format!("ERROR {} {}", printable(&err.code), printable(&err.message))
                }
                (None, Some(tag)) => printable(tag),
                (None, None) => "-".into(),
            };
            d.push_str(&format!(
                ", {} row{}, {:.1} ms",
                r.rows,
                if r.rows == 1 { "" } else { "s" },
                r.duration_us as f64 / 1000.0
            ));
            let seq = if r.index > 0 {
                format!("{}.{}", r.seq, r.index)
            } else {
                r.seq.to_string()
            };
            (seq, d)
        }
        Body::SessionEnd(s) => (String::new(), printable(&s.reason)),
        Body::PolicyReload(p) => (
            String::new(),
            if p.ok { "ok".into() } else { "refused".into() },
        ),
        Body::Approval(a) => {
            let what = if a.request == "access" {
                "access request"
            } else {
                "approval"
            };
            let mut d = format!("{what} {} {}", a.id, printable(&a.action.replace('_', " ")));
            if let Some(by) = &a.by {
                d.push_str(&format!(" by {}", printable(by)));
            }
            if a.action == "requested" {
                d.push_str(&format!(" (rule {})", printable(&a.rule)));
            }
            if let Some(reason) = &a.reason {
                d.push_str(&format!(": {}", printable(reason)));
            }
            (a.seq.map(|s| s.to_string()).unwrap_or_default(), d)
        }
    };
    vec![printable(&e.at), e.kind().to_string(), seq, detail]
}

/// Runs an `audit` command.
pub fn audit(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { config } => {
            let cfg = airlock::serve::load(&config)?;
            runtime()?.block_on(verify(&cfg))
        }
        AuditCommand::Export {
            config,
            format,
            since,
        } => {
            let since_ms = since
                .map(|s| parse_since(&s, SystemTime::now()).map_err(|e| anyhow!("--since: {e}")))
                .transpose()?;
            let cfg = airlock::serve::load(&config)?;
            runtime()?.block_on(export(&cfg, format, since_ms))
        }
    }
}

/// The SQLite file a `sqlite://` URL names, if it does.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let file = path.split('?').next().unwrap_or(path);
    (!file.is_empty() && !file.starts_with(':')).then(|| PathBuf::from(file))
}

/// The configured store; `None` when it is an SQLite file that does not
/// exist yet (nothing was ever shipped, and a read must not create it).
async fn open_store(cfg: &airlock_config::Config) -> Result<Option<Store>> {
    if let Some(file) = sqlite_file(&cfg.store.url)
        && !file.exists()
    {
        return Ok(None);
    }
    let url = airlock::serve::store_url(cfg)?;
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("connecting to the store ({})", redact_url(&cfg.store.url)))?;
    Ok(Some(store))
}

async fn verify(cfg: &airlock_config::Config) -> Result<ExitCode> {
    let store = open_store(cfg).await?;
    let journal = &cfg.journal.dir;
    let report = match airlock_audit::verify::verify(journal, store.as_ref()).await {
        Ok(report) => report,
        Err(VerifyError::Broken(broken)) => {
            eprintln!("airlock: audit verify: broken link: {broken}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => bail!("audit verify could not finish: {e}"),
    };
    let store_url = redact_url(&cfg.store.url);
    let mut out = String::new();
    for line in airlock::verify_report::lines(journal, &store_url, store.is_some(), &report) {
        out.push_str(&line);
        out.push('\n');
    }
    write_str(&mut io::stdout().lock(), &out)?;
    Ok(ExitCode::SUCCESS)
}

async fn export(
    cfg: &airlock_config::Config,
    format: ExportFormat,
    since_ms: Option<i64>,
) -> Result<ExitCode> {
    let Some(store) = open_store(cfg).await? else {
        bail!(
            "no store at {}: nothing was shipped yet",
            redact_url(&cfg.store.url)
        );
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut ocsf = Ocsf::new();
    let mut line = Vec::new();
    for stream in store
        .streams()
        .await
        .context("listing the store's streams")?
    {
        let mut after = 0;
        loop {
            let page = store
                .events(stream, after, EXPORT_PAGE)
                .await
                .with_context(|| format!("reading stream {stream} after seq {after}"))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in &page {
                let wanted = since_ms.is_none_or(|t| row.recorded_at >= t);
                line.clear();
                match format {
                    ExportFormat::Jsonl if wanted => jsonl_line(row, &mut line),
                    ExportFormat::Jsonl => {}
                    ExportFormat::Ocsf if wanted => {
                        serde_json::to_writer(&mut line, &ocsf.map(row))?;
                        line.push(b'\n');
                    }
                    // Earlier events still tell later ones their session.
                    ExportFormat::Ocsf => ocsf.remember(row),
                }
                match out.write_all(&line) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(ExitCode::SUCCESS);
                    }
                    other => other?,
                }
            }
            if page.len() < EXPORT_PAGE as usize {
                break;
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => {
            other?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        server: Server,
        #[command(subcommand)]
        command: SessionsCommand,
    }

    #[test]
    fn sessions_arguments() {
        let cli = Cli::try_parse_from([
            "sessions",
            "list",
            "--principal",
            "ci-bot",
            "--since",
            "1h",
            "--decision",
            "deny",
            "--limit",
            "5",
            "--json",
            "--server",
            "http://gw:8080/",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.server.server, "http://gw:8080/");
        assert_eq!(cli.server.token.as_deref(), Some("t"));
        assert_eq!(
            cli.command,
            SessionsCommand::List {
                principal: Some("ci-bot".into()),
                connection: None,
                since: Some("1h".into()),
                decision: Some(DecisionArg::Deny),
                limit: Some(5),
                json: true,
            }
        );
        assert!(Cli::try_parse_from(["sessions", "list", "--decision", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["sessions", "show"]).is_err());
    }

    #[test]
    fn api_errors_say_what_to_do() {
        assert!(
            api_error(401, "invalid token: expired", None)
                .to_string()
                .contains("--token")
        );
        assert_eq!(
            api_error(404, "no session x", Some(&not_found("x"))).to_string(),
            "session x not found"
        );
        assert!(
            api_error(403, "bob may not", None)
                .to_string()
                .starts_with("not allowed")
        );
        assert!(
            connect(Server {
                server: DEFAULT_SERVER.into(),
                token: None
            })
            .is_err()
        );
        assert!(
            connect(Server {
                server: "gw:8080".into(),
                token: Some("t".into())
            })
            .is_err()
        );
        let client = connect(Server {
            server: "http://gw:8080/".into(),
            token: Some(" t ".into()),
        })
        .unwrap();
        assert_eq!(client.base(), "http://gw:8080");
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            sqlite_file("sqlite://data/a.db?mode=rwc"),
            Some("data/a.db".into())
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn tables_are_aligned_and_printable() {
        let sessions: Vec<SessionSummary> = serde_json::from_value(serde_json::json!([
            {"id": "s1", "started_at": "2024-05-01T12:00:00.000Z", "principal": "ci-bot", "act": null, "connection": "app", "role": "ro", "client_addr": "10.0.0.5:1", "stream": uuid::Uuid::nil(), "seq": 1},
            {"id": "s2", "started_at": "2024-05-01T12:00:01.000Z", "principal": "evil\u{1b}[2J", "act": "alice", "connection": "billing", "role": "rw", "client_addr": "[::1]:2", "stream": uuid::Uuid::nil(), "seq": 2},
            // What the list says of a session start this version cannot read.
            {"id": null, "started_at": "2024-05-01T12:00:02.000Z", "principal": null, "act": null, "connection": null, "stream": uuid::Uuid::nil(), "seq": 3},
        ]))
        .unwrap();
        assert_eq!(
            sessions_table(&sessions),
            "ID  STARTED                   PRINCIPAL    ACT    CONNECTION  ROLE  CLIENT\n\
             s1  2024-05-01T12:00:00.000Z  ci-bot       -      app         ro    10.0.0.5:1\n\
             s2  2024-05-01T12:00:01.000Z  evil\\x1b[2J  alice  billing     rw    [::1]:2\n\
             -   2024-05-01T12:00:02.000Z  -            -      -           -     -\n"
        );
    }

    #[test]
    fn show_lists_each_event() {
        use airlock_api::audit::StoredEvent;
        use airlock_audit::event::{Protocol, SessionStart, Statement, StatementResult};
        let id = uuid::Uuid::nil();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_000);
        let events = [
            Event::at(
                at,
                Body::SessionStart(SessionStart {
                    session: id,
                    principal: "ci-bot".into(),
                    issuer: "https://i".into(),
                    groups: vec![],
                    act: None,
                    act_chain: Vec::new(),
                    connection: "app".into(),
                    role: "ro".into(),
                    access_rule: "agents".into(),
                    mode: "read-only".into(),
                    unmask: false,
                    client_addr: "10.0.0.5:1".into(),
                    application_name: None,
                    tls: false,
                    door: airlock_audit::event::Door::Postgres,
                    grant: None,
                }),
            ),
            Event::at(
                at,
                Body::Statement(Statement {
                    session: id,
                    seq: 1,
                    protocol: Protocol::Simple,
                    text: "select\n  1".into(),
                    truncated: None,
                    params: vec![],
                    kinds: vec!["select".into()],
                    effects: vec!["read".into()],
                    decision: Decision::Allow,
                    rule: None,
                    refusal: None,
                    approval: None,
                }),
            ),
            Event::at(
                at,
                Body::Result(StatementResult {
                    session: id,
                    seq: 1,
                    index: 0,
                    duration_us: 800,
                    rows: 1,
                    tag: Some("SELECT 1".into()),
                    suspended: false,
                    error: None,
                    flags: Vec::new(),
                    sample: None,
                }),
            ),
        ];
        let stored = |seq: u64, event: Option<&Event>| StoredEvent {
            event: event.map(|e| serde_json::to_value(e).unwrap()),
            hash: "01".repeat(32),
            payload_b64: event.is_none().then(|| "AA==".into()),
            prev: "00".repeat(32),
            recorded_at: 1_714_564_800_000,
            seq,
            stream: id,
        };
        let mut list: Vec<StoredEvent> = (1..)
            .zip(&events)
            .map(|(seq, e)| stored(seq, Some(e)))
            .collect();
        list.push(stored(4, None));
        let body = SessionEvents { id, events: list };
        let text = session_text(&body);
        assert_eq!(
            text,
            "Session:    00000000-0000-0000-0000-000000000000\n\
             Principal:  ci-bot\n\
             Issuer:     https://i\n\
             Connection: app as ro (rule \"agents\", read-only)\n\
             Client:     10.0.0.5:1, TLS off\n\
             Started:    2024-05-01T12:00:00.000Z\n\
             Statements: 1 (0 denied)\n\
             \n\
             AT                        KIND           SEQ  DETAIL\n\
             2024-05-01T12:00:00.000Z  session_start       ci-bot on app as ro\n\
             2024-05-01T12:00:00.000Z  statement      1    allow  select 1\n\
             2024-05-01T12:00:00.000Z  result         1    SELECT 1, 1 row, 0.8 ms\n\
             \n\
             1 event(s) not readable by this airlock version (see --json)\n"
        );
    }

    #[test]
    fn approval_events_are_one_line() {
        use airlock_audit::event::Approval;
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_000);
        let approval = |action: &str, by: Option<&str>, reason: Option<&str>| Approval {
            id: uuid::Uuid::nil(),
            request: "statement".into(),
            action: action.into(),
            session: None,
            seq: Some(3),
            rule: "review\u{1b}".into(),
            connection: "app".into(),
            role: "rw".into(),
            requester: Some("devin".into()),
            act: None,
            by: by.map(Into::into),
            reason: reason.map(Into::into),
            approvers: vec!["dba".into()],
            min_approvals: Some(1),
            estimate: Some(10),
            until: None,
        };
        let row = event_row(&Event::at(
            at,
            Body::Approval(approval("requested", None, None)),
        ));
        assert_eq!(
            row,
            [
                "2024-05-01T12:00:00.000Z",
                "approval",
                "3",
                "approval 00000000-0000-0000-0000-000000000000 requested (rule review\\x1b)"
            ]
        );
        let mut denied = approval("denied", Some("bob"), Some("not now\n"));
        denied.request = "access".into();
        denied.seq = None;
        let row = event_row(&Event::at(at, Body::Approval(denied)));
        assert_eq!(row[2], "");
        assert_eq!(
            row[3],
            "access request 00000000-0000-0000-0000-000000000000 denied by bob: not now\\n"
        );
    }
}
