//! The approvals commands, clients of the HTTP API:
//!
//! - `airlock approvals list|show|approve|deny`: statements held for
//!   approval (`/api/v1/approvals`).
//! - `airlock access request|list|show|approve|deny|revoke`: just-in-time
//!   access requests and grants (`/api/v1/access`).
//!
//! Requests go through [`airlock_api::Client`]. Readable output by
//! default; `--json` prints the API's answer as JSON. Everything the API
//! returns is untrusted text: it goes through [`printable`] before it
//! reaches the terminal.

use std::io;
use std::process::ExitCode;

use airlock_api::approvals::{
    AccessRequest, Approval, ApprovalsQuery, DecisionRequest, VoteAnswer, VoteResult,
};
use airlock_audit::event::Value;
use anyhow::Result;
use clap::Subcommand;
use clap::builder::NonEmptyStringValueParser;

use crate::audit_cli::{Server, call, cell, connect, print_json, printable, table, write_str};

/// How much of a statement or a reason a table shows.
const CELL_WIDTH: usize = 60;

/// The width of the labels of `show`.
const LABEL_WIDTH: usize = 17;

#[derive(Subcommand, Debug, PartialEq)]
pub enum ApprovalsCommand {
    /// List statements held for approval (pending ones unless --all).
    List {
        /// Every approval, decided ones too.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one held statement: who asked, the statement, its
    /// classification, the rule and the votes.
    Show {
        /// The approval id.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held statement (it runs once enough approvers agree).
    Approve {
        /// The approval id.
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a held statement: the client gets an error naming you and the
    /// reason.
    Deny {
        /// The approval id.
        id: String,
        /// Why (required).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        reason: String,
    },
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum AccessCommand {
    /// Request a just-in-time grant of a role on a connection.
    Request {
        /// The connection (the client's dbname).
        connection: String,
        /// The role profile to be granted.
        #[arg(long)]
        role: String,
        /// How long the grant lasts once approved, such as 30m or 1h.
        #[arg(long = "for", value_name = "DURATION", value_parser = duration_arg)]
        duration: String,
        /// Why, for the approvers and the record.
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        reason: String,
        /// Wait for the decision: exit 0 once granted (printing the grant),
        /// 1 when denied or when --timeout passes first. For CI jobs.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// List access requests and grants (pending and granted unless --all).
    List {
        /// Every request, ended ones too.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one access request or grant.
    Show {
        /// The request id.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve an access request: it becomes a grant once enough approvers
    /// agree.
    Approve {
        /// The request id.
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny an access request.
    Deny {
        /// The request id.
        id: String,
        /// Why (required).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        reason: String,
    },
    /// End a grant now: every session using it is cut.
    Revoke {
        /// The request id.
        id: String,
        /// Why (required).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        reason: String,
    },
}

/// `--for`: a duration as the API reads it, passed on as written.
fn duration_arg(s: &str) -> Result<String, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(s.trim().to_string()),
        Ok(_) => Err("a grant needs a duration longer than zero".into()),
        Err(e) => Err(format!("{e} (write e.g. 30m or 1h)")),
    }
}

/// The two kinds of request the API keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Statement,
    Access,
}

impl Kind {
    /// What one is called.
    fn noun(self) -> &'static str {
        match self {
            Kind::Statement => "approval",
            Kind::Access => "access request",
        }
    }

    /// The command group.
    fn command(self) -> &'static str {
        match self {
            Kind::Statement => "approvals",
            Kind::Access => "access",
        }
    }

    /// What a 404 about `id` means.
    fn not_found(self, id: &str) -> String {
        format!(
            "unknown {} id {} (see airlock {} list --all)",
            self.noun(),
            printable(id),
            self.command()
        )
    }
}

/// A decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Approve(Kind),
    Deny(Kind),
    /// Ending a grant (access requests only).
    Revoke,
}

impl Action {
    fn kind(self) -> Kind {
        match self {
            Action::Approve(kind) | Action::Deny(kind) => kind,
            Action::Revoke => Kind::Access,
        }
    }
}

/// Runs an `approvals` command.
pub fn approvals(server: Server, command: ApprovalsCommand) -> Result<ExitCode> {
    let kind = Kind::Statement;
    match command {
        ApprovalsCommand::List { all, json } => list(server, kind, all, json),
        ApprovalsCommand::Show { id, json } => show(server, kind, &id, json),
        ApprovalsCommand::Approve { id, reason } => {
            decide(server, Action::Approve(kind), &id, reason)
        }
        ApprovalsCommand::Deny { id, reason } => {
            decide(server, Action::Deny(kind), &id, Some(reason))
        }
    }
}

/// Runs an `access` command.
pub fn access(server: Server, command: AccessCommand) -> Result<ExitCode> {
    let kind = Kind::Access;
    match command {
        AccessCommand::Request {
            connection,
            role,
            duration,
            reason,
            wait,
            timeout,
        } => {
            let client = connect(server)?;
            let request = AccessRequest {
                connection,
                role,
                duration,
                reason,
            };
            let created = call(&client, None, client.request_access(&request))?;
            let line = if created.status == "granted" {
                format!(
                    "access request {} granted at once by the policy (jit.preapprove) until {}\n",
                    created.id,
                    printable(created.expires_at.as_deref().unwrap_or("?"))
                )
            } else {
                requested_line(&created, &request)
            };
            write_str(&mut io::stdout().lock(), &line)?;
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            wait_for_grant(&client, &created.id.to_string(), timeout)
        }
        AccessCommand::List { all, json } => list(server, kind, all, json),
        AccessCommand::Show { id, json } => show(server, kind, &id, json),
        AccessCommand::Approve { id, reason } => decide(server, Action::Approve(kind), &id, reason),
        AccessCommand::Deny { id, reason } => decide(server, Action::Deny(kind), &id, Some(reason)),
        AccessCommand::Revoke { id, reason } => decide(server, Action::Revoke, &id, Some(reason)),
    }
}

fn list(server: Server, kind: Kind, all: bool, json: bool) -> Result<ExitCode> {
    let client = connect(server)?;
    let query = ApprovalsQuery {
        status: all.then(|| "all".to_string()),
        limit: None,
    };
    let out = &mut io::stdout().lock();
    let items = match kind {
        Kind::Statement => {
            let list = call(&client, None, client.approvals(&query))?;
            if json {
                return print_json(out, &list).map(|()| ExitCode::SUCCESS);
            }
            list.approvals
        }
        Kind::Access => {
            let list = call(&client, None, client.access_requests(&query))?;
            if json {
                return print_json(out, &list).map(|()| ExitCode::SUCCESS);
            }
            list.requests
        }
    };
    if items.is_empty() {
        eprintln!("{}", empty_list(kind, all));
    } else {
        let text = match kind {
            Kind::Statement => approvals_table(&items),
            Kind::Access => access_table(&items),
        };
        write_str(out, &text)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn empty_list(kind: Kind, all: bool) -> &'static str {
    match (kind, all) {
        (Kind::Statement, false) => "No pending approvals (--all lists decided ones too).",
        (Kind::Statement, true) => "No approvals.",
        (Kind::Access, false) => {
            "No pending access requests or live grants (--all lists ended ones too)."
        }
        (Kind::Access, true) => "No access requests.",
    }
}

fn show(server: Server, kind: Kind, id: &str, json: bool) -> Result<ExitCode> {
    let client = connect(server)?;
    let not_found = kind.not_found(id);
    let approval = match kind {
        Kind::Statement => call(&client, Some(&not_found), client.approval(id))?,
        Kind::Access => call(&client, Some(&not_found), client.access_request(id))?,
    };
    let out = &mut io::stdout().lock();
    if json {
        print_json(out, &approval)?;
    } else {
        write_str(out, &show_text(kind, &approval))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(server: Server, action: Action, id: &str, reason: Option<String>) -> Result<ExitCode> {
    let client = connect(server)?;
    let body = DecisionRequest { reason };
    let kind = action.kind();
    let not_found = Some(kind.not_found(id));
    let not_found = not_found.as_deref();
    let answer = match action {
        Action::Approve(Kind::Statement) => call(&client, not_found, client.approve(id, &body))?,
        Action::Deny(Kind::Statement) => call(&client, not_found, client.deny(id, &body))?,
        Action::Approve(Kind::Access) => {
            call(&client, not_found, client.approve_access(id, &body))?
        }
        Action::Deny(Kind::Access) => call(&client, not_found, client.deny_access(id, &body))?,
        Action::Revoke => call(&client, not_found, client.revoke_access(id, &body))?,
    };
    write_str(&mut io::stdout().lock(), &decision_line(kind, &answer))?;
    Ok(ExitCode::SUCCESS)
}

/// The line `approve`, `deny` and `revoke` print.
fn decision_line(kind: Kind, answer: &VoteAnswer) -> String {
    let approval = &answer.approval;
    let head = format!("{} {}", kind.noun(), approval.id);
    let text = match answer.result {
        VoteResult::Approved => "approved".to_string(),
        VoteResult::Denied => "denied".to_string(),
        VoteResult::Revoked => "revoked; sessions using the grant are cut".to_string(),
        VoteResult::Counted => format!(
            "approval counted ({} of {})",
            approval.approvals, approval.min_approvals
        ),
        VoteResult::Granted => {
            let mut t = format!(
                "granted: {} may use role {} on {}",
                printable(&approval.requester),
                printable(&approval.role),
                printable(&approval.connection),
            );
            if let Some(until) = &approval.expires_at {
                t.push_str(&format!(" until {}", printable(until)));
            }
            t
        }
    };
    format!("{head}: {text}\n")
}

/// How often `access request --wait` asks.
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until request `id` is decided: exit 0 once granted, 1 when
/// denied (or ended otherwise) or after `timeout`.
fn wait_for_grant(
    client: &airlock_api::Client,
    id: &str,
    timeout: std::time::Duration,
) -> Result<ExitCode> {
    let deadline = std::time::Instant::now() + timeout;
    let out = &mut io::stdout().lock();
    loop {
        // A gateway restarting (a rolling deploy) or a blip is waited out
        // until the deadline.
        let a = match call(client, None, client.access_request(id)) {
            Ok(a) => a,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "asking again");
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => return Err(e),
        };
        match a.status.as_str() {
            "pending" if std::time::Instant::now() < deadline => std::thread::sleep(POLL),
            "pending" => {
                write_str(
                    out,
                    &format!(
                        "access request {id} is still pending after {}; giving up\n",
                        humantime::format_duration(timeout)
                    ),
                )?;
                return Ok(ExitCode::FAILURE);
            }
            "granted" => {
                write_str(
                    out,
                    &format!(
                        "granted: {id} until {}\n",
                        printable(a.expires_at.as_deref().unwrap_or("?"))
                    ),
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                write_str(
                    out,
                    &format!(
                        "access request {id} is {}{}\n",
                        printable(other),
                        a.reason
                            .as_deref()
                            .map(|r| format!(": {}", printable(r)))
                            .unwrap_or_default()
                    ),
                )?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

/// The line `access request` prints.
fn requested_line(created: &Approval, request: &AccessRequest) -> String {
    let id = created.id;
    format!(
        "access request {id} created for role {} on {} (for {}); an approver runs: airlock \
         access approve {id}\n",
        printable(&request.role),
        printable(&request.connection),
        printable(&request.duration)
    )
}

/// The requester (on whose behalf), and the party acting for it.
fn requester(a: &Approval) -> String {
    let mut who = printable(&a.requester);
    if let Some(act) = &a.act {
        let actors = airlock_policy::approval::decode_actors(Some(act));
        who.push_str(&format!(" (via {})", printable(&actors.join(", then "))));
    }
    who
}

/// The first non-blank line of `s`, at most `width` characters, with `…`
/// when anything was left out; printable.
fn first_line(s: &str, width: usize) -> String {
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines.next().unwrap_or_default();
    let mut short: String = line.chars().take(width).collect();
    let cut = line.chars().count() > width || lines.next().is_some();
    short = printable(&short);
    if cut {
        short.push('…');
    }
    short
}

/// A short text cell: `-` for none.
fn text_cell(v: Option<&str>) -> String {
    v.map_or_else(|| "-".into(), |s| first_line(s, CELL_WIDTH))
}

/// `30m`, `1h30m`, `2d`: seconds as the `--for` that asked for them.
fn human_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

fn duration_cell(secs: Option<i64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => u64::try_from(s).map_or_else(|_| s.to_string(), human_duration),
    }
}

/// The held statements as a table.
fn approvals_table(items: &[Approval]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                printable(&a.status),
                requester(a),
                printable(&a.connection),
                printable(&a.role),
                printable(&a.rule),
                format!("{}/{}", a.approvals, a.min_approvals),
                printable(&a.created_at),
                text_cell(a.detail().statement.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "REQUESTER",
            "CONNECTION",
            "ROLE",
            "RULE",
            "APPROVALS",
            "CREATED",
            "STATEMENT",
        ],
        &rows,
    )
}

/// The access requests as a table.
fn access_table(items: &[Approval]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                printable(&a.status),
                requester(a),
                printable(&a.connection),
                printable(&a.role),
                duration_cell(a.duration_seconds),
                cell(a.expires_at.as_deref()),
                text_cell(a.detail().reason.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "REQUESTER",
            "CONNECTION",
            "ROLE",
            "FOR",
            "EXPIRES",
            "REASON",
        ],
        &rows,
    )
}

/// Multi-line text, indented, with control characters other than newlines
/// and tabs escaped.
fn block(s: &str, indent: &str) -> String {
    let mut out = String::new();
    for line in s.trim_end().lines() {
        out.push_str(indent);
        let line: Vec<String> = line.split('\t').map(printable).collect();
        out.push_str(&line.join("\t"));
        out.push('\n');
    }
    out
}

/// A commit review's measured effect: rows per table, then each sample.
fn effect_text(effect: &airlock_api::approvals::Effect) -> String {
    let mut out = String::from("\nMeasured effect (the COMMIT is held):\n");
    if effect.tables.is_empty() {
        out.push_str("  no rows changed\n");
    }
    for t in &effect.tables {
        out.push_str(&format!(
            "  {}: inserted {}, updated {}, deleted {}\n",
            printable(&t.table),
            t.inserted,
            t.updated,
            t.deleted
        ));
    }
    if !effect.baseline {
        out.push_str("  (counts may include earlier unflushed writes of the session)\n");
    }
    if !effect.sample_complete {
        out.push_str("  (the sample is incomplete: rows written under a savepoint, or beyond 8 tables, are not shown)\n");
    }
    for w in &effect.rows_before {
        out.push_str(&format!(
            "\nRows of {} before the reviewed statements (masked sample):\n",
            printable(&w.table)
        ));
        for row in &w.rows {
            out.push_str(&block(
                &serde_json::Value::Object(row.clone()).to_string(),
                "  ",
            ));
        }
    }
    for w in &effect.written_rows {
        out.push_str(&format!(
            "\nRows written to {} (masked sample):\n",
            printable(&w.table)
        ));
        if w.rows.is_empty() {
            out.push_str("  none left (deleted rows are counted above)\n");
        }
        for row in &w.rows {
            out.push_str(&block(
                &serde_json::Value::Object(row.clone()).to_string(),
                "  ",
            ));
        }
        if w.more {
            out.push_str("  …\n");
        }
    }
    out
}

/// A list of strings, comma-separated; `-` for none.
fn list_cell(items: Option<&[String]>) -> String {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| printable(i))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

/// A bound parameter, as SQL would write it.
fn parameter(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Text(s) => format!("'{}'", printable(&s.replace('\'', "''"))),
        Value::Bytes { hex } => format!("'\\x{}' (binary)", printable(hex)),
    }
}

/// An approval or access request, readably.
fn show_text(kind: Kind, a: &Approval) -> String {
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("{name:<LABEL_WIDTH$}{value}\n"));
    };
    let detail = a.detail();
    let title = match kind {
        Kind::Statement => "Approval:",
        Kind::Access => "Access request:",
    };
    field(&mut out, title, a.id.to_string());
    field(&mut out, "Status:", printable(&a.status));
    field(&mut out, "Requester:", requester(a));
    field(
        &mut out,
        "Connection:",
        format!("{} as {}", printable(&a.connection), printable(&a.role)),
    );
    field(&mut out, "Rule:", printable(&a.rule));
    field(
        &mut out,
        "Approvers:",
        format!(
            "{} ({} of {} approvals)",
            list_cell(Some(&a.approvers)),
            a.approvals,
            a.min_approvals
        ),
    );
    if kind == Kind::Access {
        field(&mut out, "For:", duration_cell(a.duration_seconds));
        field(&mut out, "Reason:", cell(detail.reason.as_deref()));
    }
    field(&mut out, "Created:", printable(&a.created_at));
    if let Some(deadline) = &a.deadline {
        field(&mut out, "Deadline:", printable(deadline));
    }
    if a.decided_at.is_some() || a.decided_by.is_some() {
        let mut decided = cell(a.decided_at.as_deref());
        if let Some(by) = &a.decided_by {
            decided.push_str(&format!(" by {}", printable(by)));
        }
        field(&mut out, "Decided:", decided);
    }
    if let Some(reason) = &a.reason {
        field(&mut out, "Decision reason:", printable(reason));
    }
    if kind == Kind::Access
        && let Some(expires) = &a.expires_at
    {
        field(&mut out, "Expires:", printable(expires));
    }
    if kind == Kind::Statement {
        field(&mut out, "Kinds:", list_cell(detail.kinds.as_deref()));
        field(&mut out, "Effects:", list_cell(detail.effects.as_deref()));
        if let Some(rows) = detail.estimated_rows {
            field(&mut out, "Estimated rows:", rows.to_string());
        }
        out.push_str("\nStatement:\n");
        match &detail.statement {
            Some(s) => out.push_str(&block(s, "  ")),
            None => out.push_str("  -\n"),
        }
        if let Some(effect) = &detail.effect {
            out.push_str(&effect_text(effect));
        }
        if let Some(params) = &detail.parameters
            && !params.is_empty()
        {
            out.push_str("\nParameters:\n");
            for (i, p) in params.iter().enumerate() {
                out.push_str(&format!("  ${}  {}\n", i + 1, parameter(p)));
            }
        }
    }
    if a.votes.is_empty() {
        out.push_str("\nVotes: none\n");
    } else {
        out.push_str("\nVotes:\n");
        let rows: Vec<Vec<String>> = a
            .votes
            .iter()
            .map(|v| {
                let mut voter = printable(&v.voter);
                if v.human != v.voter {
                    voter.push_str(&format!(" (for {})", printable(&v.human)));
                }
                vec![
                    printable(&v.at),
                    voter,
                    printable(&v.vote),
                    cell(v.reason.as_deref()),
                ]
            })
            .collect();
        for line in table(&["AT", "VOTER", "VOTE", "REASON"], &rows).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::audit_cli::{DEFAULT_SERVER, api_error};

    const HELD: &str = "6f1c2a3b-0000-4000-8000-000000000001";
    const GRANT: &str = "9a2b4c5d-0000-4000-8000-000000000002";

    #[derive(Parser, Debug)]
    struct ApprovalsCli {
        #[command(flatten)]
        server: Server,
        #[command(subcommand)]
        command: ApprovalsCommand,
    }

    #[derive(Parser, Debug)]
    struct AccessCli {
        #[command(flatten)]
        server: Server,
        #[command(subcommand)]
        command: AccessCommand,
    }

    #[test]
    fn approvals_arguments() {
        let cli = ApprovalsCli::try_parse_from(["approvals", "list"]).unwrap();
        assert_eq!(
            cli.command,
            ApprovalsCommand::List {
                all: false,
                json: false
            }
        );
        let cli = ApprovalsCli::try_parse_from([
            "approvals",
            "list",
            "--all",
            "--json",
            "--server",
            "http://gw:8080",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            ApprovalsCommand::List {
                all: true,
                json: true
            }
        );
        assert_eq!(cli.server.server, "http://gw:8080");
        assert_eq!(cli.server.token.as_deref(), Some("t"));
        assert_eq!(
            ApprovalsCli::try_parse_from(["approvals", "show", "abc", "--json"])
                .unwrap()
                .command,
            ApprovalsCommand::Show {
                id: "abc".into(),
                json: true
            }
        );
        assert_eq!(
            ApprovalsCli::try_parse_from(["approvals", "approve", "abc"])
                .unwrap()
                .command,
            ApprovalsCommand::Approve {
                id: "abc".into(),
                reason: None
            }
        );
        assert_eq!(
            ApprovalsCli::try_parse_from(["approvals", "approve", "abc", "--reason", "ok"])
                .unwrap()
                .command,
            ApprovalsCommand::Approve {
                id: "abc".into(),
                reason: Some("ok".into())
            }
        );
        assert_eq!(
            ApprovalsCli::try_parse_from(["approvals", "deny", "abc", "--reason", "no"])
                .unwrap()
                .command,
            ApprovalsCommand::Deny {
                id: "abc".into(),
                reason: "no".into()
            }
        );
        // A denial needs a reason; every command but list needs an id.
        assert!(ApprovalsCli::try_parse_from(["approvals", "deny", "abc"]).is_err());
        assert!(
            ApprovalsCli::try_parse_from(["approvals", "deny", "abc", "--reason", ""]).is_err()
        );
        assert!(ApprovalsCli::try_parse_from(["approvals", "show"]).is_err());
        assert!(ApprovalsCli::try_parse_from(["approvals", "approve"]).is_err());
    }

    #[test]
    fn access_arguments() {
        let cli = AccessCli::try_parse_from([
            "access",
            "request",
            "orders",
            "--role",
            "admin",
            "--for",
            "30m",
            "--reason",
            "fix ticket 42",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            AccessCommand::Request {
                connection: "orders".into(),
                role: "admin".into(),
                duration: "30m".into(),
                reason: "fix ticket 42".into(),
                wait: false,
                timeout: std::time::Duration::from_secs(1800),
            }
        );
        assert_eq!(cli.server.server, DEFAULT_SERVER);
        // Everything is required, and --for must be a duration.
        for args in [
            &[
                "access", "request", "orders", "--role", "admin", "--for", "30m",
            ][..],
            &[
                "access", "request", "orders", "--for", "30m", "--reason", "r",
            ],
            &[
                "access", "request", "orders", "--role", "admin", "--reason", "r",
            ],
            &[
                "access", "request", "--role", "admin", "--for", "30m", "--reason", "r",
            ],
            &[
                "access", "request", "orders", "--role", "admin", "--for", "soon", "--reason", "r",
            ],
            &[
                "access", "request", "orders", "--role", "admin", "--for", "0s", "--reason", "r",
            ],
        ] {
            assert!(AccessCli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert_eq!(
            AccessCli::try_parse_from(["access", "list", "--all"])
                .unwrap()
                .command,
            AccessCommand::List {
                all: true,
                json: false
            }
        );
        assert_eq!(
            AccessCli::try_parse_from(["access", "show", "x", "--json"])
                .unwrap()
                .command,
            AccessCommand::Show {
                id: "x".into(),
                json: true
            }
        );
        assert_eq!(
            AccessCli::try_parse_from(["access", "approve", "x"])
                .unwrap()
                .command,
            AccessCommand::Approve {
                id: "x".into(),
                reason: None
            }
        );
        assert_eq!(
            AccessCli::try_parse_from(["access", "revoke", "x", "--reason", "done"])
                .unwrap()
                .command,
            AccessCommand::Revoke {
                id: "x".into(),
                reason: "done".into()
            }
        );
        assert!(AccessCli::try_parse_from(["access", "deny", "x"]).is_err());
        assert!(AccessCli::try_parse_from(["access", "revoke", "x"]).is_err());
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = api_error(404, "no approval x", Some(&Kind::Statement.not_found("x"))).to_string();
        assert_eq!(
            e,
            "unknown approval id x (see airlock approvals list --all)"
        );
        let e = api_error(
            404,
            "no access request x",
            Some(&Kind::Access.not_found("x\u{1b}")),
        )
        .to_string();
        assert_eq!(
            e,
            "unknown access request id x\\x1b (see airlock access list --all)"
        );
        let e = api_error(401, "invalid token: expired", None).to_string();
        assert!(e.contains("--token") && e.contains("airlock token"), "{e}");
        assert_eq!(
            api_error(409, "approval x is already approved", None).to_string(),
            "approval x is already approved"
        );
        assert_eq!(
            api_error(400, "a denial needs a reason", None).to_string(),
            "the API refused the request: a denial needs a reason"
        );
        assert!(
            api_error(403, "bob may not approve his own request", None)
                .to_string()
                .starts_with("not allowed: ")
        );
        assert!(
            api_error(503, "approvals are not enabled on this gateway", None)
                .to_string()
                .contains("cannot answer now")
        );
    }

    fn approval(json: serde_json::Value) -> Approval {
        serde_json::from_value(json).unwrap()
    }

    fn held() -> Approval {
        approval(json!({
            "id": HELD,
            "kind": "statement",
            "status": "pending",
            "requester": "devin",
            "requester_issuer": "https://issuer.example",
            "act": "alice",
            "connection": "orders",
            "role": "rw",
            "rule": "review-unbounded-writes",
            "approvers": ["dba", "sre"],
            "min_approvals": 2,
            "approvals": 1,
            "created_at": "2024-05-01T12:00:00.000Z",
            "deadline": "2024-05-01T12:05:00.000Z",
            "decided_at": null,
            "decided_by": null,
            "reason": null,
            "duration_seconds": null,
            "expires_at": null,
            "detail": {
                "statement": "DELETE FROM orders\n\tWHERE id = $1 OR note = $2 OR b = $3",
                "parameters": ["100", null, {"hex": "ff00"}],
                "kinds": ["delete"],
                "effects": ["write"],
                "estimated_rows": 1234,
                "in_transaction": false
            },
            "votes": [
                {"voter": "bob", "human": "bob", "vote": "approve", "reason": null, "at": "2024-05-01T12:01:00.000Z"}
            ]
        }))
    }

    fn grant() -> Approval {
        approval(json!({
            "id": GRANT,
            "kind": "access",
            "status": "granted",
            "requester": "devin",
            "requester_issuer": "https://issuer.example",
            "act": null,
            "connection": "orders",
            "role": "admin",
            "rule": "agents-write-jit",
            "approvers": ["dba"],
            "min_approvals": 1,
            "approvals": 1,
            "created_at": "2024-05-01T12:00:00.000Z",
            "deadline": null,
            "decided_at": "2024-05-01T12:02:00.000Z",
            "decided_by": "bob",
            "reason": null,
            "duration_seconds": 1800,
            "expires_at": "2024-05-01T12:32:00.000Z",
            "detail": {"reason": "fix ticket 42"},
            "votes": [
                {"voter": "claude", "human": "bob", "vote": "approve", "reason": "ok", "at": "2024-05-01T12:02:00.000Z"}
            ]
        }))
    }

    /// An id column of a table: the width of a UUID and the gap.
    fn id_col(id: &str) -> String {
        format!("{id:<36}  ")
    }

    #[test]
    fn approvals_table_is_aligned_and_printable() {
        let long = format!("UPDATE t SET a = '{}'", "x".repeat(80));
        let mut denied = held();
        denied.id = "7e3d0000-0000-4000-8000-000000000003".parse().unwrap();
        denied.status = "denied".into();
        denied.requester = "evil\u{1b}[2J".into();
        denied.act = None;
        denied.connection = "billing".into();
        denied.role = "ro".into();
        denied.rule = "r".into();
        denied.min_approvals = 1;
        denied.approvals = 0;
        denied.created_at = "2024-05-01T12:00:01.000Z".into();
        denied.detail = json!({ "statement": long });
        // A detail that says nothing readable.
        let mut unreadable = held();
        unreadable.id = "8f4e0000-0000-4000-8000-000000000004".parse().unwrap();
        unreadable.act = None;
        unreadable.detail = serde_json::Value::Null;
        let items = vec![held(), denied, unreadable];
        assert_eq!(
            approvals_table(&items),
            format!(
                "{}STATUS   REQUESTER          CONNECTION  ROLE  RULE                     APPROVALS  CREATED                   STATEMENT\n\
                 {}pending  devin (via alice)  orders      rw    review-unbounded-writes  1/2        2024-05-01T12:00:00.000Z  DELETE FROM orders…\n\
                 {}denied   evil\\x1b[2J        billing     ro    r                        0/1        2024-05-01T12:00:01.000Z  UPDATE t SET a = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\n\
                 {}pending  devin              orders      rw    review-unbounded-writes  1/2        2024-05-01T12:00:00.000Z  -\n",
                id_col("ID"),
                id_col(HELD),
                id_col("7e3d0000-0000-4000-8000-000000000003"),
                id_col("8f4e0000-0000-4000-8000-000000000004"),
            )
        );
    }

    #[test]
    fn access_table_is_aligned_and_printable() {
        let mut pending = grant();
        pending.id = "a1000000-0000-4000-8000-000000000005".parse().unwrap();
        pending.status = "pending".into();
        pending.requester = "ci".into();
        pending.act = Some("carol".into());
        pending.duration_seconds = Some(5400);
        pending.expires_at = None;
        pending.detail = json!({ "reason": "line one\nline two" });
        let items = vec![grant(), pending];
        assert_eq!(
            access_table(&items),
            format!(
                "{}STATUS   REQUESTER       CONNECTION  ROLE   FOR    EXPIRES                   REASON\n\
                 {}granted  devin           orders      admin  30m    2024-05-01T12:32:00.000Z  fix ticket 42\n\
                 {}pending  ci (via carol)  orders      admin  1h30m  -                         line one…\n",
                id_col("ID"),
                id_col(GRANT),
                id_col("a1000000-0000-4000-8000-000000000005"),
            )
        );
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(1800), "30m");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(3661), "1h1m1s");
        assert_eq!(human_duration(2 * 86_400), "2d");
        assert_eq!(duration_cell(None), "-");
        assert_eq!(duration_cell(Some(90)), "1m30s");
        assert_eq!(duration_arg(" 30m "), Ok("30m".to_string()));
        assert!(duration_arg("1 fortnight").is_err());
    }

    #[test]
    fn first_lines_are_cut() {
        assert_eq!(first_line("select 1", 60), "select 1");
        assert_eq!(first_line("\n  select 1\n from t", 60), "select 1…");
        assert_eq!(first_line("abcdef", 3), "abc…");
        assert_eq!(first_line("a\u{7}b", 60), "a\\x07b");
        assert_eq!(first_line("", 60), "");
    }

    #[test]
    fn show_a_held_statement() {
        assert_eq!(
            show_text(Kind::Statement, &held()),
            format!(
                "Approval:        {HELD}\n\
                 Status:          pending\n\
                 Requester:       devin (via alice)\n\
                 Connection:      orders as rw\n\
                 Rule:            review-unbounded-writes\n\
                 Approvers:       dba, sre (1 of 2 approvals)\n\
                 Created:         2024-05-01T12:00:00.000Z\n\
                 Deadline:        2024-05-01T12:05:00.000Z\n\
                 Kinds:           delete\n\
                 Effects:         write\n\
                 Estimated rows:  1234\n\
                 \n\
                 Statement:\n  \
                   DELETE FROM orders\n  \
                   \tWHERE id = $1 OR note = $2 OR b = $3\n\
                 \n\
                 Parameters:\n  \
                   $1  '100'\n  \
                   $2  NULL\n  \
                   $3  '\\xff00' (binary)\n\
                 \n\
                 Votes:\n  \
                   AT                        VOTER  VOTE     REASON\n  \
                   2024-05-01T12:01:00.000Z  bob    approve  -\n"
            )
        );
    }

    #[test]
    fn show_escapes_what_the_api_says() {
        let mut a = held();
        a.detail["statement"] = json!("select 1; -- \u{1b}]0;pwned\u{7}\nselect 2");
        a.detail["parameters"] = json!(["it's\u{1b}[2J", {"hex": "0a\u{1b}"}]);
        a.status = "denied".into();
        a.decided_at = Some("2024-05-01T12:03:00.000Z".into());
        a.decided_by = Some("carol".into());
        a.reason = Some("not now\nreally".into());
        a.detail["estimated_rows"] = serde_json::Value::Null;
        let text = show_text(Kind::Statement, &a);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains("  select 1; -- \\x1b]0;pwned\\x07\n  select 2\n"),
            "{text}"
        );
        assert!(
            text.contains("  $1  'it''s\\x1b[2J'\n  $2  '\\x0a\\x1b' (binary)\n"),
            "{text}"
        );
        assert!(
            text.contains("Decided:         2024-05-01T12:03:00.000Z by carol\n"),
            "{text}"
        );
        assert!(
            text.contains("Decision reason: not now\\nreally\n"),
            "{text}"
        );
        assert!(!text.contains("Estimated rows"), "{text}");
        // A detail it cannot read shows as nothing known.
        a.detail = json!("not an object");
        let text = show_text(Kind::Statement, &a);
        assert!(
            text.contains("Kinds:           -\nEffects:         -\n\nStatement:\n  -\n\nVotes:"),
            "{text}"
        );
    }

    #[test]
    fn show_a_grant() {
        assert_eq!(
            show_text(Kind::Access, &grant()),
            format!(
                "Access request:  {GRANT}\n\
                 Status:          granted\n\
                 Requester:       devin\n\
                 Connection:      orders as admin\n\
                 Rule:            agents-write-jit\n\
                 Approvers:       dba (1 of 1 approvals)\n\
                 For:             30m\n\
                 Reason:          fix ticket 42\n\
                 Created:         2024-05-01T12:00:00.000Z\n\
                 Decided:         2024-05-01T12:02:00.000Z by bob\n\
                 Expires:         2024-05-01T12:32:00.000Z\n\
                 \n\
                 Votes:\n  \
                   AT                        VOTER             VOTE     REASON\n  \
                   2024-05-01T12:02:00.000Z  claude (for bob)  approve  ok\n"
            )
        );
        let mut pending = grant();
        pending.votes = Vec::new();
        assert!(show_text(Kind::Access, &pending).ends_with("\nVotes: none\n"));
    }

    #[test]
    fn decision_lines() {
        let answer = |result, approval| VoteAnswer { approval, result };
        assert_eq!(
            decision_line(Kind::Statement, &answer(VoteResult::Approved, held())),
            format!("approval {HELD}: approved\n")
        );
        assert_eq!(
            decision_line(Kind::Statement, &answer(VoteResult::Counted, held())),
            format!("approval {HELD}: approval counted (1 of 2)\n")
        );
        assert_eq!(
            decision_line(Kind::Statement, &answer(VoteResult::Denied, held())),
            format!("approval {HELD}: denied\n")
        );
        assert_eq!(
            decision_line(Kind::Access, &answer(VoteResult::Granted, grant())),
            format!(
                "access request {GRANT}: granted: devin may use role admin on orders until \
                 2024-05-01T12:32:00.000Z\n"
            )
        );
        assert_eq!(
            decision_line(Kind::Access, &answer(VoteResult::Revoked, grant())),
            format!("access request {GRANT}: revoked; sessions using the grant are cut\n")
        );
        let mut odd = grant();
        odd.requester = "x\u{1b}".into();
        odd.expires_at = None;
        assert_eq!(
            decision_line(Kind::Access, &answer(VoteResult::Granted, odd)),
            format!("access request {GRANT}: granted: x\\x1b may use role admin on orders\n")
        );
    }

    #[test]
    fn request_line() {
        let request = AccessRequest {
            connection: "orders".into(),
            role: "admin".into(),
            duration: "30m".into(),
            reason: "fix ticket 42".into(),
        };
        assert_eq!(
            requested_line(&grant(), &request),
            format!(
                "access request {GRANT} created for role admin on orders (for 30m); an approver \
                 runs: airlock access approve {GRANT}\n"
            )
        );
    }

    #[test]
    fn empty_lists_say_so() {
        assert!(empty_list(Kind::Statement, false).contains("--all"));
        assert_eq!(empty_list(Kind::Access, true), "No access requests.");
    }
}
