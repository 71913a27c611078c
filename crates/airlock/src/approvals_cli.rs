//! The approvals commands, clients of the HTTP API:
//!
//! - `airlock approvals list|show|approve|deny`: statements held for
//!   approval (`/api/v1/approvals`).
//! - `airlock access request|list|show|approve|deny|revoke`: just-in-time
//!   access requests and grants (`/api/v1/access`).
//!
//! Readable output by default; `--json` prints the API's JSON as it came.
//! Everything the API returns is untrusted text: it goes through
//! [`printable`] before it reaches the terminal.

use std::io;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use clap::builder::NonEmptyStringValueParser;
use serde_json::{Value, json};

use crate::audit_cli::{
    Api, Server, cell, percent_encode, print_json, printable, runtime, table, write_str,
};

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
    /// The collection's path.
    fn base(self) -> &'static str {
        match self {
            Kind::Statement => "/api/v1/approvals",
            Kind::Access => "/api/v1/access",
        }
    }

    /// The key of a list answer.
    fn list_key(self) -> &'static str {
        match self {
            Kind::Statement => "approvals",
            Kind::Access => "requests",
        }
    }

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

    /// `/api/v1/…/{id}[/action]`, the id escaped so that an odd one cannot
    /// reach another route.
    fn path(self, id: &str, action: Option<&str>) -> String {
        let mut p = format!("{}/{}", self.base(), percent_encode(id));
        if let Some(action) = action {
            p.push('/');
            p.push_str(action);
        }
        p
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

/// Runs an `approvals` command.
pub fn approvals(server: Server, command: ApprovalsCommand) -> Result<ExitCode> {
    let kind = Kind::Statement;
    match command {
        ApprovalsCommand::List { all, json } => list(server, kind, all, json),
        ApprovalsCommand::Show { id, json } => show(server, kind, &id, json),
        ApprovalsCommand::Approve { id, reason } => decide(server, kind, &id, "approve", reason),
        ApprovalsCommand::Deny { id, reason } => decide(server, kind, &id, "deny", Some(reason)),
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
        } => {
            let api = Api::new(server)?;
            let body = json!({
                "connection": connection,
                "role": role,
                "duration": duration,
                "reason": reason,
            });
            let created = runtime()?.block_on(api.post("/api/v1/access/requests", &body, None))?;
            let line = requested_line(&created, &connection, &role, &duration);
            write_str(&mut io::stdout().lock(), &line)?;
            Ok(ExitCode::SUCCESS)
        }
        AccessCommand::List { all, json } => list(server, kind, all, json),
        AccessCommand::Show { id, json } => show(server, kind, &id, json),
        AccessCommand::Approve { id, reason } => decide(server, kind, &id, "approve", reason),
        AccessCommand::Deny { id, reason } => decide(server, kind, &id, "deny", Some(reason)),
        AccessCommand::Revoke { id, reason } => decide(server, kind, &id, "revoke", Some(reason)),
    }
}

fn list(server: Server, kind: Kind, all: bool, json: bool) -> Result<ExitCode> {
    let api = Api::new(server)?;
    let query: Vec<(&str, String)> = if all {
        vec![("status", "all".to_string())]
    } else {
        Vec::new()
    };
    let body = runtime()?.block_on(api.get(kind.base(), &query, None))?;
    let out = &mut io::stdout().lock();
    if json {
        print_json(out, &body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let items = body[kind.list_key()]
        .as_array()
        .cloned()
        .unwrap_or_default();
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
    let api = Api::new(server)?;
    let body =
        runtime()?.block_on(api.get(&kind.path(id, None), &[], Some(&kind.not_found(id))))?;
    let out = &mut io::stdout().lock();
    if json {
        print_json(out, &body)?;
    } else {
        write_str(out, &show_text(kind, &body))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(
    server: Server,
    kind: Kind,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> Result<ExitCode> {
    let api = Api::new(server)?;
    let body = json!({ "reason": reason });
    let answer = runtime()?.block_on(api.post(
        &kind.path(id, Some(action)),
        &body,
        Some(&kind.not_found(id)),
    ))?;
    write_str(&mut io::stdout().lock(), &decision_line(kind, id, &answer))?;
    Ok(ExitCode::SUCCESS)
}

/// The line `approve`, `deny` and `revoke` print, from the API's
/// `{"result", "approval"}`.
fn decision_line(kind: Kind, id: &str, answer: &Value) -> String {
    let approval = &answer["approval"];
    let id = approval["id"].as_str().unwrap_or(id);
    let head = format!("{} {}", kind.noun(), printable(id));
    let result = answer["result"].as_str().unwrap_or_default();
    let text = match result {
        "approved" => "approved".to_string(),
        "denied" => "denied".to_string(),
        "revoked" => "revoked; sessions using the grant are cut".to_string(),
        "counted" => format!(
            "approval counted ({} of {})",
            count(&approval["approvals"]),
            count(&approval["min_approvals"])
        ),
        "granted" => {
            let mut t = format!(
                "granted: {} may use role {} on {}",
                printable(approval["requester"].as_str().unwrap_or("the requester")),
                cell(&approval["role"]),
                cell(&approval["connection"]),
            );
            if let Some(until) = approval["expires_at"].as_str() {
                t.push_str(&format!(" until {}", printable(until)));
            }
            t
        }
        "" => cell(&answer["result"]),
        other => printable(other),
    };
    format!("{head}: {text}\n")
}

/// The line `access request` prints.
fn requested_line(created: &Value, connection: &str, role: &str, duration: &str) -> String {
    let id = cell(&created["id"]);
    format!(
        "access request {id} created for role {} on {} (for {}); an approver runs: airlock \
         access approve {id}\n",
        printable(role),
        printable(connection),
        printable(duration)
    )
}

/// A count, `-` for none.
fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), |n| n.to_string())
}

/// The requester, and the human it acts for.
fn requester(a: &Value) -> String {
    let mut who = cell(&a["requester"]);
    if let Some(act) = a["act"].as_str() {
        who.push_str(&format!(" (for {})", printable(act)));
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
fn text_cell(v: &Value) -> String {
    match v.as_str() {
        Some(s) => first_line(s, CELL_WIDTH),
        None => cell(v),
    }
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

fn duration_cell(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), human_duration)
}

/// The held statements as a table.
fn approvals_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                cell(&a["id"]),
                cell(&a["status"]),
                requester(a),
                cell(&a["connection"]),
                cell(&a["role"]),
                cell(&a["rule"]),
                format!("{}/{}", count(&a["approvals"]), count(&a["min_approvals"])),
                cell(&a["created_at"]),
                text_cell(&a["detail"]["statement"]),
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
fn access_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                cell(&a["id"]),
                cell(&a["status"]),
                requester(a),
                cell(&a["connection"]),
                cell(&a["role"]),
                duration_cell(&a["duration_seconds"]),
                cell(&a["expires_at"]),
                text_cell(&a["detail"]["reason"]),
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

/// A list of strings, comma-separated; `-` for none.
fn list_cell(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Some(_) => "-".into(),
        None => cell(v),
    }
}

/// A bound parameter, as SQL would write it.
fn parameter(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => format!("'{}'", printable(&s.replace('\'', "''"))),
        Value::Object(o) => match o.get("hex").and_then(Value::as_str) {
            Some(hex) => format!("'\\x{}' (binary)", printable(hex)),
            None => printable(&v.to_string()),
        },
        other => printable(&other.to_string()),
    }
}

/// An approval or access request, readably.
fn show_text(kind: Kind, a: &Value) -> String {
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("{name:<LABEL_WIDTH$}{value}\n"));
    };
    let present = |v: &Value| !v.is_null();
    let detail = &a["detail"];
    let title = match kind {
        Kind::Statement => "Approval:",
        Kind::Access => "Access request:",
    };
    field(&mut out, title, cell(&a["id"]));
    field(&mut out, "Status:", cell(&a["status"]));
    field(&mut out, "Requester:", requester(a));
    field(
        &mut out,
        "Connection:",
        format!("{} as {}", cell(&a["connection"]), cell(&a["role"])),
    );
    field(&mut out, "Rule:", cell(&a["rule"]));
    field(
        &mut out,
        "Approvers:",
        format!(
            "{} ({} of {} approvals)",
            list_cell(&a["approvers"]),
            count(&a["approvals"]),
            count(&a["min_approvals"])
        ),
    );
    if kind == Kind::Access {
        field(&mut out, "For:", duration_cell(&a["duration_seconds"]));
        field(&mut out, "Reason:", cell(&detail["reason"]));
    }
    field(&mut out, "Created:", cell(&a["created_at"]));
    if present(&a["deadline"]) {
        field(&mut out, "Deadline:", cell(&a["deadline"]));
    }
    if present(&a["decided_at"]) || present(&a["decided_by"]) {
        let mut decided = cell(&a["decided_at"]);
        if present(&a["decided_by"]) {
            decided.push_str(&format!(" by {}", cell(&a["decided_by"])));
        }
        field(&mut out, "Decided:", decided);
    }
    if present(&a["reason"]) {
        field(&mut out, "Decision reason:", cell(&a["reason"]));
    }
    if kind == Kind::Access && present(&a["expires_at"]) {
        field(&mut out, "Expires:", cell(&a["expires_at"]));
    }
    if kind == Kind::Statement {
        field(&mut out, "Kinds:", list_cell(&detail["kinds"]));
        field(&mut out, "Effects:", list_cell(&detail["effects"]));
        if present(&detail["estimated_rows"]) {
            field(&mut out, "Estimated rows:", cell(&detail["estimated_rows"]));
        }
        out.push_str("\nStatement:\n");
        match detail["statement"].as_str() {
            Some(s) => out.push_str(&block(s, "  ")),
            None => out.push_str(&format!("  {}\n", cell(&detail["statement"]))),
        }
        if let Some(params) = detail["parameters"].as_array()
            && !params.is_empty()
        {
            out.push_str("\nParameters:\n");
            for (i, p) in params.iter().enumerate() {
                out.push_str(&format!("  ${}  {}\n", i + 1, parameter(p)));
            }
        }
    }
    let votes = a["votes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if votes.is_empty() {
        out.push_str("\nVotes: none\n");
    } else {
        out.push_str("\nVotes:\n");
        let rows: Vec<Vec<String>> = votes
            .iter()
            .map(|v| {
                let mut voter = cell(&v["voter"]);
                if let Some(human) = v["human"].as_str()
                    && Some(human) != v["voter"].as_str()
                {
                    voter.push_str(&format!(" (for {})", printable(human)));
                }
                vec![cell(&v["at"]), voter, cell(&v["vote"]), cell(&v["reason"])]
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

    use super::*;
    use crate::audit_cli::{DEFAULT_SERVER, api_error};

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
    fn paths_escape_the_id() {
        assert_eq!(
            Kind::Statement.path("6f1c-1", Some("approve")),
            "/api/v1/approvals/6f1c-1/approve"
        );
        assert_eq!(Kind::Access.path("x", None), "/api/v1/access/x");
        assert_eq!(
            Kind::Access.path("../requests", Some("deny")),
            "/api/v1/access/..%2Frequests/deny"
        );
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

    fn held() -> Value {
        json!({
            "id": "6f1c",
            "kind": "statement",
            "status": "pending",
            "requester": "devin",
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
        })
    }

    fn grant() -> Value {
        json!({
            "id": "9a2b",
            "kind": "access",
            "status": "granted",
            "requester": "devin",
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
        })
    }

    #[test]
    fn approvals_table_is_aligned_and_printable() {
        let long = format!("UPDATE t SET a = '{}'", "x".repeat(80));
        let items = vec![
            held(),
            json!({
                "id": "7e3d",
                "status": "denied",
                "requester": "evil\u{1b}[2J",
                "act": null,
                "connection": "billing",
                "role": "ro",
                "rule": "r",
                "min_approvals": 1,
                "approvals": 0,
                "created_at": "2024-05-01T12:00:01.000Z",
                "detail": {"statement": long}
            }),
            json!({"id": "8f4e", "detail": {}}),
        ];
        assert_eq!(
            approvals_table(&items),
            "ID    STATUS   REQUESTER          CONNECTION  ROLE  RULE                     APPROVALS  CREATED                   STATEMENT\n\
             6f1c  pending  devin (for alice)  orders      rw    review-unbounded-writes  1/2        2024-05-01T12:00:00.000Z  DELETE FROM orders…\n\
             7e3d  denied   evil\\x1b[2J        billing     ro    r                        0/1        2024-05-01T12:00:01.000Z  UPDATE t SET a = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\n\
             8f4e  -        -                  -           -     -                        -/-        -                         -\n"
        );
    }

    #[test]
    fn access_table_is_aligned_and_printable() {
        let items = vec![
            grant(),
            json!({
                "id": "a1",
                "status": "pending",
                "requester": "ci",
                "act": "carol",
                "connection": "orders",
                "role": "admin",
                "duration_seconds": 5400,
                "expires_at": null,
                "detail": {"reason": "line one\nline two"}
            }),
        ];
        assert_eq!(
            access_table(&items),
            "ID    STATUS   REQUESTER       CONNECTION  ROLE   FOR    EXPIRES                   REASON\n\
             9a2b  granted  devin           orders      admin  30m    2024-05-01T12:32:00.000Z  fix ticket 42\n\
             a1    pending  ci (for carol)  orders      admin  1h30m  -                         line one…\n"
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
        assert_eq!(duration_cell(&Value::Null), "-");
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
            "Approval:        6f1c\n\
             Status:          pending\n\
             Requester:       devin (for alice)\n\
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
        );
    }

    #[test]
    fn show_escapes_what_the_api_says() {
        let mut a = held();
        a["detail"]["statement"] = json!("select 1; -- \u{1b}]0;pwned\u{7}\nselect 2");
        a["detail"]["parameters"] = json!(["it's\u{1b}[2J", 5]);
        a["status"] = json!("denied");
        a["decided_at"] = json!("2024-05-01T12:03:00.000Z");
        a["decided_by"] = json!("carol");
        a["reason"] = json!("not now\nreally");
        a["detail"]["estimated_rows"] = Value::Null;
        let text = show_text(Kind::Statement, &a);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains("  select 1; -- \\x1b]0;pwned\\x07\n  select 2\n"),
            "{text}"
        );
        assert!(text.contains("  $1  'it''s\\x1b[2J'\n  $2  5\n"), "{text}");
        assert!(
            text.contains("Decided:         2024-05-01T12:03:00.000Z by carol\n"),
            "{text}"
        );
        assert!(
            text.contains("Decision reason: not now\\nreally\n"),
            "{text}"
        );
        assert!(!text.contains("Estimated rows"), "{text}");
    }

    #[test]
    fn show_a_grant() {
        assert_eq!(
            show_text(Kind::Access, &grant()),
            "Access request:  9a2b\n\
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
        );
        let mut pending = grant();
        pending["votes"] = json!([]);
        assert!(show_text(Kind::Access, &pending).ends_with("\nVotes: none\n"));
    }

    #[test]
    fn decision_lines() {
        let answer =
            |result: &str, approval: Value| json!({"result": result, "approval": approval});
        assert_eq!(
            decision_line(Kind::Statement, "6f1c", &answer("approved", held())),
            "approval 6f1c: approved\n"
        );
        assert_eq!(
            decision_line(Kind::Statement, "6f1c", &answer("counted", held())),
            "approval 6f1c: approval counted (1 of 2)\n"
        );
        assert_eq!(
            decision_line(Kind::Statement, "6f1c", &answer("denied", held())),
            "approval 6f1c: denied\n"
        );
        assert_eq!(
            decision_line(Kind::Access, "9a2b", &answer("granted", grant())),
            "access request 9a2b: granted: devin may use role admin on orders until \
             2024-05-01T12:32:00.000Z\n"
        );
        assert_eq!(
            decision_line(Kind::Access, "9a2b", &answer("revoked", grant())),
            "access request 9a2b: revoked; sessions using the grant are cut\n"
        );
        assert_eq!(
            decision_line(Kind::Access, "x\u{1b}", &json!({"result": "odd\u{7}"})),
            "access request x\\x1b: odd\\x07\n"
        );
    }

    #[test]
    fn request_line() {
        assert_eq!(
            requested_line(&json!({"id": "9a2b"}), "orders", "admin", "30m"),
            "access request 9a2b created for role admin on orders (for 30m); an approver \
             runs: airlock access approve 9a2b\n"
        );
    }

    #[test]
    fn empty_lists_say_so() {
        assert!(empty_list(Kind::Statement, false).contains("--all"));
        assert_eq!(empty_list(Kind::Access, true), "No access requests.");
    }
}
