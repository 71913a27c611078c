//! The rules a parsed configuration must follow. Every broken rule is reported, in the order of
//! the file's sections, each with the path of the value to fix.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{
    ByteSize, Config, ConfigError, GuardrailAction, HumanDuration, SessionLifetime, TlsMode,
    UpstreamTls,
};

pub(crate) fn validate(config: &Config, origin: &str) -> Vec<ConfigError> {
    let mut problems = Problems {
        origin,
        errors: Vec::new(),
    };
    listeners(config, &mut problems);
    identity(config, &mut problems);
    connections(config, &mut problems);
    access(config, &mut problems);
    guardrails(config, &mut problems);
    approvals(config, &mut problems);
    masking(config, &mut problems);
    limits(config, &mut problems);
    audit(config, &mut problems);
    notifications(config, &mut problems);
    mcp(config, &mut problems);
    console(config, &mut problems);
    problems.errors
}

struct Problems<'a> {
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        });
    }
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// `http://` to `localhost` or a loopback address.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn listeners(config: &Config, p: &mut Problems) {
    let listen = &config.listen;
    if listen.postgres.is_none() && listen.mysql.is_none() && listen.http.is_none() {
        p.add(
            "listen",
            "at least one of `postgres`, `mysql` or `http` is required",
        );
    }
    if let Some(tls) = &config.tls {
        match (&tls.cert, &tls.key) {
            (Some(_), None) => p.add("tls.key", "required when tls.cert is set"),
            (None, Some(_)) => p.add("tls.cert", "required when tls.key is set"),
            (None, None) if tls.mode != TlsMode::Disabled => p.add(
                "tls",
                "tls.cert and tls.key are required unless tls.mode is disabled",
            ),
            _ => {}
        }
    }
    for (name, addr) in [("postgres", listen.postgres), ("mysql", listen.mysql)] {
        if let Some(addr) = addr.filter(|&a| !is_loopback(a))
            && config.tls_mode() == TlsMode::Disabled
        {
            p.add(
                format!("listen.{name}"),
                format!(
                    "{addr} is not a loopback address and client TLS is disabled; \
                     cleartext token passwords need TLS on a non-loopback listener"
                ),
            );
        }
    }
}

fn identity(config: &Config, p: &mut Problems) {
    let identity = &config.identity;
    if identity.issuers.is_empty() && !identity.dev_issuer {
        p.add(
            "identity",
            "no issuers are configured and dev_issuer is false, so nobody could log in",
        );
    }
    let mut names = HashMap::new();
    for (i, issuer) in identity.issuers.iter().enumerate() {
        if issuer.name == "dev" {
            p.add(
                format!("identity.issuers[{i}].name"),
                "the name \"dev\" is reserved for the dev issuer",
            );
        } else if let Some(first) = names.insert(&issuer.name, i) {
            p.add(
                format!("identity.issuers[{i}].name"),
                format!(
                    "duplicate issuer name {:?} (also identity.issuers[{first}])",
                    issuer.name
                ),
            );
        }
        if issuer.issuer == "airlock-dev" {
            p.add(
                format!("identity.issuers[{i}].issuer"),
                "\"airlock-dev\" is the dev issuer's own URL",
            );
        }
    }
    if identity.dev_issuer {
        if config.listen.http.is_none() {
            p.add(
                "identity.dev_issuer",
                "the dev issuer needs listen.http, where its JWKS is served",
            );
        }
        if !identity.allow_dev_issuer_on_non_loopback {
            for (name, addr) in [
                ("postgres", config.listen.postgres),
                ("mysql", config.listen.mysql),
                ("http", config.listen.http),
            ] {
                if let Some(addr) = addr.filter(|&a| !is_loopback(a)) {
                    p.add(
                        "identity.dev_issuer",
                        format!(
                            "refused on the non-loopback listener listen.{name} ({addr}); set \
                             identity.allow_dev_issuer_on_non_loopback: true to force it"
                        ),
                    );
                }
            }
        }
    }
    if matches!(identity.session_lifetime, SessionLifetime::Fixed(d) if d.is_zero()) {
        p.add("identity.session_lifetime", "must be greater than zero");
    }
}

fn connections(config: &Config, p: &mut Problems) {
    for (name, connection) in &config.connections {
        if name == "*" {
            p.add(
                "connections.*",
                "the name \"*\" is reserved: access rules use it for every connection",
            );
        }
        if connection.roles.is_empty() {
            p.add(
                format!("connections.{name}.roles"),
                "a connection needs at least one role",
            );
        }
        if connection.upstream.ca.is_some() && connection.upstream.tls != UpstreamTls::VerifyFull {
            p.add(
                format!("connections.{name}.upstream.ca"),
                "only used with tls: verify-full",
            );
        }
    }
}

fn access(config: &Config, p: &mut Problems) {
    let mut names = HashMap::new();
    for (i, rule) in config.access.iter().enumerate() {
        let at = format!("access[{i}]");
        match names.entry(&rule.name) {
            Entry::Occupied(first) => p.add(
                format!("{at}.name"),
                format!(
                    "duplicate access rule name {:?} (also access[{}])",
                    rule.name,
                    first.get()
                ),
            ),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
        match (rule.mode, rule.min_group_rows) {
            (crate::AccessMode::SchemaOnly, Some(k)) if !(2..=1_000_000).contains(&k) => p.add(
                format!("{at}.min_group_rows"),
                "must be between 2 and 1000000",
            ),
            (crate::AccessMode::SchemaOnly, _) | (_, None) => {}
            (_, Some(_)) => p.add(
                format!("{at}.min_group_rows"),
                "applies only to `mode: schema-only`",
            ),
        }
        // What is enforced on PostgreSQL only: a rule that reaches a MySQL
        // connection must not seem to cap it.
        let mysql = config.connections.iter().find(|(name, c)| {
            c.protocol == crate::Protocol::Mysql
                && rule.connections.iter().any(|r| r == "*" || r == *name)
        });
        if let Some(t) = rule.statement_timeout {
            if t.0 < std::time::Duration::from_millis(1)
                || t.0 > std::time::Duration::from_secs(86_400)
            {
                p.add(
                    format!("{at}.statement_timeout"),
                    "must be between 1ms and 24h",
                );
            }
            if let Some((name, _)) = mysql {
                p.add(
                    format!("{at}.statement_timeout"),
                    format!("applies to PostgreSQL connections only, and this rule reaches the MySQL connection {name:?}"),
                );
            }
        }
        if let Some(b) = &rule.budgets {
            let window = b.window.0;
            if window < std::time::Duration::from_secs(1)
                || window > std::time::Duration::from_secs(30 * 86_400)
            {
                p.add(format!("{at}.budgets.window"), "must be between 1s and 30d");
            }
            if let Some((name, _)) = mysql
                && (b.session.max_cost.is_some() || b.principal.max_cost.is_some())
            {
                p.add(
                    format!("{at}.budgets"),
                    format!("max_cost applies to PostgreSQL connections only (MariaDB's EXPLAIN gives no cost), and this rule reaches the MySQL connection {name:?}"),
                );
            }
            if b.max_result_bytes.is_some_and(|m| m.0 == 0) {
                p.add(
                    format!("{at}.budgets.max_result_bytes"),
                    "must be greater than zero (leave it out for no cap)",
                );
            }
            for (scope, caps) in [("session", &b.session), ("principal", &b.principal)] {
                let zero = [
                    ("max_statements", caps.max_statements == Some(0)),
                    (
                        "statements_per_minute",
                        caps.statements_per_minute == Some(0),
                    ),
                    ("max_rows", caps.max_rows == Some(0)),
                    ("max_bytes", caps.max_bytes.is_some_and(|b| b.0 == 0)),
                    ("max_cost", caps.max_cost == Some(0)),
                ];
                for (name, _) in zero.iter().filter(|(_, z)| *z) {
                    p.add(
                        format!("{at}.budgets.{scope}.{name}"),
                        "must be greater than zero (leave it out for no cap)",
                    );
                }
            }
        }
        if rule.groups.is_empty() && rule.subjects.is_empty() && rule.claims.is_empty() {
            p.add(
                &at,
                "needs at least one of `groups`, `subjects` or `claims`",
            );
        }
        let preapprove = rule.jit.iter().flat_map(|j| &j.preapprove);
        for (path, values) in rule.claims.iter().chain(preapprove) {
            if airlock_policy::claims::ClaimPath::parse(path).is_none() {
                p.add(
                    format!("{at}.claims.{path}"),
                    "is not a claim path: names separated by dots, none empty; `\\.` is a dot inside a name",
                );
            }
            if values.values().is_empty() {
                p.add(
                    format!("{at}.claims.{path}"),
                    "must accept at least one value",
                );
            }
        }
        if rule.connections.is_empty() {
            p.add(
                format!("{at}.connections"),
                "must name at least one connection, or \"*\"",
            );
        }
        if rule.roles.is_empty() {
            p.add(format!("{at}.roles"), "must name at least one role");
        }
        if let Some(jit) = &rule.jit {
            duration_within(
                p,
                format!("{at}.jit.max_duration"),
                jit.max_duration,
                (Duration::from_secs(7 * 86400), "7d"),
            );
            for (j, a) in jit.approvers.iter().enumerate() {
                if let Err(e) = airlock_policy::approval::check_approver(a) {
                    p.add(format!("{at}.jit.approvers[{j}]"), e);
                }
            }
            if jit.approvers.is_empty() {
                p.add(
                    format!("{at}.jit.approvers"),
                    "must name at least one group",
                );
            }
            approval_count(p, format!("{at}.jit.min_approvals"), jit.min_approvals);
        }

        let mut targets = Vec::new();
        for (j, name) in rule.connections.iter().enumerate() {
            if name == "*" {
                targets.extend(&config.connections);
            } else if let Some(target) = config.connections.get_key_value(name) {
                targets.push(target);
            } else {
                p.add(
                    format!("{at}.connections[{j}]"),
                    format!("unknown connection {name:?}"),
                );
            }
        }
        if targets.is_empty() {
            continue;
        }
        targets.sort_by_key(|(name, _)| *name);
        targets.dedup_by_key(|(name, _)| *name);
        for (j, role) in rule.roles.iter().enumerate() {
            if !targets.iter().any(|(_, c)| c.roles.contains_key(role)) {
                let names: Vec<&str> = targets.iter().map(|(name, _)| name.as_str()).collect();
                p.add(
                    format!("{at}.roles[{j}]"),
                    format!("role {role:?} is not defined on {}", names.join(", ")),
                );
            }
        }
    }
}

fn limits(config: &Config, p: &mut Problems) {
    let limits = &config.limits;
    if !(ByteSize::KIB..=ByteSize::GIB).contains(&limits.max_message_size) {
        p.add(
            "limits.max_message_size",
            format!(
                "{} is out of range: it must be between 1KiB and 1GiB",
                limits.max_message_size
            ),
        );
    }
    for (name, timeout) in [
        ("startup_timeout", limits.startup_timeout),
        ("message_timeout", limits.message_timeout),
        ("upstream_connect_timeout", limits.upstream_connect_timeout),
    ] {
        if timeout.0.is_zero() {
            p.add(format!("limits.{name}"), "must be greater than zero");
        }
    }
    if limits.max_sessions == 0 {
        p.add("limits.max_sessions", "must be at least 1");
    }
    for (key, value) in [
        (
            "limits.per_principal.max_sessions",
            limits.per_principal.max_sessions,
        ),
        (
            "limits.per_connection.max_sessions",
            limits.per_connection.max_sessions,
        ),
        (
            "limits.per_principal.statements_per_second",
            limits.per_principal.statements_per_second,
        ),
    ] {
        if value == Some(0) {
            p.add(key, "must be at least 1 (leave it out for no cap)");
        }
    }
}

fn mcp(config: &Config, p: &mut Problems) {
    let mcp = &config.mcp;
    if !mcp.enabled {
        return;
    }
    if config.listen.http.is_none() {
        p.add(
            "mcp.enabled",
            "the MCP endpoint is served on listen.http, which is not set",
        );
    }
    if mcp.max_rows == 0 {
        p.add("mcp.max_rows", "must be at least 1");
    }
    if mcp.max_bytes < ByteSize::KIB {
        p.add("mcp.max_bytes", "must be at least 1KiB");
    }
    if !(ByteSize::KIB..=ByteSize(64 * ByteSize::MIB.0)).contains(&mcp.max_request_size) {
        p.add(
            "mcp.max_request_size",
            format!(
                "{} is out of range: it must be between 1KiB and 64MiB",
                mcp.max_request_size
            ),
        );
    }
    if mcp.statement_timeout.0.is_zero() {
        p.add("mcp.statement_timeout", "must be greater than zero");
    }
    for (i, origin) in mcp.allowed_origins.iter().enumerate() {
        let ok = origin == "null"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
            });
        if !ok {
            p.add(
                format!("mcp.allowed_origins[{i}]"),
                format!("{origin:?} is not an origin: write scheme://host[:port], such as https://app.example.com"),
            );
        }
    }
}

fn console(config: &Config, p: &mut Problems) {
    let Some(console) = &config.console else {
        return;
    };
    if config.listen.http.is_none() {
        p.add(
            "console",
            "the console is served on listen.http, which is not set",
        );
    }
    let issuer = config
        .identity
        .issuers
        .iter()
        .find(|i| i.name == console.issuer);
    let known = if console.issuer == "dev" {
        config.identity.dev_issuer
    } else {
        issuer.is_some()
    };
    // The code, its verifier and the client secret go to the endpoints its
    // discovery document names: over TLS, or to this machine.
    if let Some(i) = issuer
        && !(i.issuer.starts_with("https://") || is_loopback_http(&i.issuer))
    {
        p.add(
            "console.issuer",
            format!(
                "issuer {:?} is neither https nor http on a loopback address; the console's login would send its code and client secret in the clear",
                i.issuer
            ),
        );
    }
    if !known {
        p.add(
            "console.issuer",
            format!(
                "{:?} is neither an identity.issuers name nor \"dev\" (with identity.dev_issuer on)",
                console.issuer
            ),
        );
    }
    if console.client_id.trim().is_empty() {
        p.add("console.client_id", "must not be empty");
    }
    if let Some(url) = &console.redirect_url {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.ends_with("/console/callback")
            && !url.contains(['?', '#']);
        if !ok {
            p.add(
                "console.redirect_url",
                format!("{url:?} must be an http(s) URL whose path ends in /console/callback"),
            );
        }
    }
    if console.session_ttl.0 < Duration::from_secs(60) {
        p.add("console.session_ttl", "must be at least 1m");
    }
}

fn audit(config: &Config, p: &mut Problems) {
    let url = &config.store.url;
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("sqlite") => {
            if config.store.password.is_some() {
                p.add("store.password", "only a PostgreSQL store takes a password");
            }
        }
        Some("postgres" | "postgresql") => {
            let authority = url["postgres://".len()..]
                .split(['/', '?'])
                .next()
                .unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && userinfo.contains(':')
            {
                p.add(
                    "store.url",
                    "holds a password; secrets are never written inline: use store.password: {env: NAME} or {file: PATH}",
                );
            }
        }
        _ => p.add(
            "store.url",
            format!("\"{url}\" is not a sqlite:// or postgres:// URL"),
        ),
    }
    if let crate::JournalFsync::Interval(d) = config.journal.fsync
        && !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(&d)
    {
        p.add(
            "journal.fsync",
            "an interval must be between 1ms and 10s (or write `always`)",
        );
    }
    let r = &config.recording;
    if r.result_sample.max_rows > 10_000 {
        p.add("recording.result_sample.max_rows", "must be at most 10000");
    }
    if r.result_sample.max_bytes > ByteSize(16 * ByteSize::MIB.0) {
        p.add("recording.result_sample.max_bytes", "must be at most 16MiB");
    }
    if !(ByteSize::KIB..=ByteSize(8 * ByteSize::MIB.0)).contains(&r.max_statement_bytes) {
        p.add(
            "recording.max_statement_bytes",
            "must be between 1KiB and 8MiB",
        );
    }
    if let Some(d) = r.retention
        && d.0 < Duration::from_secs(3600)
    {
        p.add("recording.retention", "must be at least 1h");
    }
}

fn guardrails(config: &Config, p: &mut Problems) {
    let mut names = HashMap::new();
    for (i, g) in config.guardrails.iter().enumerate() {
        let at = |key: &str| format!("guardrails[{i}]{key}");
        if let Some(first) = names.insert(g.name.as_str(), i) {
            p.add(
                at(".name"),
                format!("{:?} is already the name of guardrails[{first}]", g.name),
            );
        }
        let m = &g.matches;
        for (j, e) in m.effects.iter().enumerate() {
            if airlock_policy::Effect::from_name(e).is_none() {
                p.add(
                    at(&format!(".match.effects[{j}]")),
                    format!("unknown effect {e:?}"),
                );
            }
        }
        for (j, k) in m.statements.iter().enumerate() {
            if airlock_policy::StatementKind::from_name(k).is_none() {
                p.add(
                    at(&format!(".match.statements[{j}]")),
                    format!("unknown statement kind {k:?}"),
                );
            }
        }
        if m.effects.is_empty()
            && m.statements.is_empty()
            && m.where_clause.is_none()
            && m.estimated_rows_over.is_none()
        {
            p.add(
                at(".match"),
                "matches every statement; give at least one condition",
            );
        }
        for (j, a) in g.approvers.iter().enumerate() {
            if let Err(e) = airlock_policy::approval::check_approver(a) {
                p.add(at(&format!(".approvers[{j}]")), e);
            }
        }
        let approved = matches!(
            g.action,
            GuardrailAction::Approve | GuardrailAction::ReviewCommit
        );
        if approved && g.approvers.is_empty() {
            p.add(
                at(".approvers"),
                "required with action: approve or review_commit",
            );
        }
        if !approved && !g.approvers.is_empty() {
            p.add(
                at(".approvers"),
                "only meaningful with action: approve or review_commit",
            );
        }
        match &g.hint {
            Some(_) if g.action != GuardrailAction::Deny => {
                p.add(at(".hint"), "only meaningful with action: deny");
            }
            Some(h) if h.trim().is_empty() || h.contains(['\n', '\r']) || h.len() > 200 => {
                p.add(at(".hint"), "must be one line of at most 200 bytes");
            }
            _ => {}
        }
        if let Some(n) = g.min_approvals {
            if approved {
                approval_count(p, at(".min_approvals"), n);
            } else {
                p.add(
                    at(".min_approvals"),
                    "only meaningful with action: approve or review_commit",
                );
            }
        }
    }
    for (i, f) in config.unsafe_functions.iter().enumerate() {
        if f.is_empty() || f.trim() != f {
            p.add(format!("unsafe_functions[{i}]"), "must be a function name");
        }
    }
}

/// A duration that must be more than zero and at most `max.0`, which messages spell `max.1`.
fn duration_within(p: &mut Problems, key: String, d: HumanDuration, max: (Duration, &str)) {
    if d.0.is_zero() {
        p.add(key, "must be greater than zero");
    } else if d.0 > max.0 {
        p.add(key, format!("must be at most {}", max.1));
    }
}

/// A number of distinct approvers.
fn approval_count(p: &mut Problems, key: String, n: u32) {
    if !(1..=MAX_APPROVALS).contains(&n) {
        p.add(key, format!("must be between 1 and {MAX_APPROVALS}"));
    }
}

const MAX_APPROVALS: u32 = 10;

fn approvals(config: &Config, p: &mut Problems) {
    let a = &config.approvals;
    let day = (Duration::from_secs(86400), "24h");
    duration_within(p, "approvals.timeout".into(), a.timeout, day);
    duration_within(
        p,
        "approvals.timeout_in_transaction".into(),
        a.timeout_in_transaction,
        day,
    );
}

fn notifications(config: &Config, p: &mut Problems) {
    for (i, hook) in config.notifications.webhooks.iter().enumerate() {
        let at = |key: &str| format!("notifications.webhooks[{i}]{key}");
        if let Some(problem) = crate::approvals::webhook_url_problem(&hook.url) {
            p.add(at(".url"), problem);
        }
        if hook.events.is_empty() {
            p.add(
                at(".events"),
                "must name at least one event (leave it out for every event)",
            );
        }
        for (j, event) in hook.events.iter().enumerate() {
            if hook.events[..j].contains(event) {
                p.add(
                    at(&format!(".events[{j}]")),
                    format!("{:?} is listed twice", event.name()),
                );
            }
        }
        duration_within(
            p,
            at(".timeout"),
            hook.timeout,
            (Duration::from_secs(60), "60s"),
        );
    }
}

fn masking(config: &Config, p: &mut Problems) {
    use airlock_policy::masking::{ColumnPattern, Detector};
    // Rules are numbered in 16 bits, one number reserved.
    const MAX_RULES: usize = 10_000;
    if config.masking.rules.len() > MAX_RULES {
        p.add("masking.rules", format!("at most {MAX_RULES} rules"));
    }
    let mut names = HashMap::new();
    for (i, r) in config.masking.rules.iter().enumerate() {
        let at = |key: &str| format!("masking.rules[{i}]{key}");
        if let Some(first) = names.insert(r.name.as_str(), i) {
            p.add(
                at(".name"),
                format!("{:?} is already the name of masking.rules[{first}]", r.name),
            );
        }
        if r.columns.is_empty() && r.detect.is_empty() {
            p.add(at(""), "give columns, detect or both");
        }
        for (j, c) in r.columns.iter().enumerate() {
            if let Err(e) = ColumnPattern::parse(c) {
                p.add(at(&format!(".columns[{j}]")), e);
            }
        }
        for (j, d) in r.detect.iter().enumerate() {
            if Detector::from_name(d).is_none() {
                p.add(
                    at(&format!(".detect[{j}]")),
                    format!("unknown detector {d:?}"),
                );
            }
        }
        if let crate::MaskStrategy::Partial(k) = r.strategy
            && k.keep_first == 0
            && k.keep_last == 0
        {
            p.add(
                at(".strategy.partial"),
                "keeps nothing; give keep_first or keep_last, or use redact",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Config;

    const LISTEN: &str = "listen: {postgres: 127.0.0.1:6432, http: 127.0.0.1:8080}\n";
    const IDENTITY: &str = "identity: {issuers: [{name: corp, issuer: https://x/, audience: a}]}\n";
    const CONNECTIONS: &str = "connections:
  orders:
    upstream: {host: h, database: orders}
    roles: {ro: {user: u}, rw: {user: w}}
  billing:
    upstream: {host: h, database: billing}
    roles: {ro: {user: u}, audit: {user: a}}
";

    #[track_caller]
    fn check(yaml: &str, want: &[&str]) {
        let got: Vec<String> = match Config::from_yaml_str(yaml, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, want, "\n{yaml}");
    }

    #[test]
    fn the_console_logs_in_over_tls_or_on_this_machine() {
        let with = |iss: &str| {
            format!(
                "listen: {{postgres: 127.0.0.1:6432, http: 127.0.0.1:8080}}\nidentity: {{issuers: [{{name: corp, issuer: \"{iss}\", audience: a}}]}}\nconsole: {{issuer: corp}}\n"
            )
        };
        for ok in [
            "https://idp.example",
            "http://127.0.0.1:9000",
            "http://localhost/realms/x",
            "http://[::1]:80",
        ] {
            check(&with(ok), &[]);
        }
        for bad in [
            "http://idp.example",
            "http://127.0.0.1.evil.example",
            "http://user@127.0.0.1",
        ] {
            check(
                &with(bad),
                &[&format!(
                    "t.yaml: console.issuer: issuer {bad:?} is neither https nor http on a loopback address; the console's login would send its code and client secret in the clear"
                )],
            );
        }
    }

    fn with_access(rules: &str) -> String {
        format!("{LISTEN}{IDENTITY}{CONNECTIONS}access:\n{rules}")
    }

    #[test]
    fn listeners_and_tls() {
        let cert = "cert: {file: c.pem}, key: {file: k.pem}";
        for (yaml, want) in [
            (
                IDENTITY.to_owned(),
                &["t.yaml: listen: at least one of `postgres`, `mysql` or `http` is required"][..],
            ),
            (format!("listen: {{http: 0.0.0.0:8080}}\n{IDENTITY}"), &[]),
            (
                format!("listen: {{postgres: '[::1]:6432'}}\n{IDENTITY}"),
                &[],
            ),
            (
                format!("listen: {{postgres: '[::ffff:127.0.0.1]:6432'}}\n{IDENTITY}"),
                &[],
            ),
            (
                format!("listen: {{postgres: 0.0.0.0:6432}}\n{IDENTITY}"),
                &[
                    "t.yaml: listen.postgres: 0.0.0.0:6432 is not a loopback address and client TLS is disabled; cleartext token passwords need TLS on a non-loopback listener",
                ],
            ),
            (
                format!(
                    "listen: {{postgres: 10.0.0.1:6432}}\ntls: {{{cert}, mode: disabled}}\n{IDENTITY}"
                ),
                &[
                    "t.yaml: listen.postgres: 10.0.0.1:6432 is not a loopback address and client TLS is disabled; cleartext token passwords need TLS on a non-loopback listener",
                ],
            ),
            (
                format!("listen: {{postgres: 10.0.0.1:6432}}\ntls: {{{cert}}}\n{IDENTITY}"),
                &[],
            ),
            (
                format!(
                    "listen: {{postgres: 10.0.0.1:6432}}\ntls: {{{cert}, mode: optional}}\n{IDENTITY}"
                ),
                &[],
            ),
            (
                format!("{LISTEN}tls: {{mode: required}}\n{IDENTITY}"),
                &["t.yaml: tls: tls.cert and tls.key are required unless tls.mode is disabled"],
            ),
            (
                format!("{LISTEN}tls: {{mode: optional, cert: {{env: C}}}}\n{IDENTITY}"),
                &["t.yaml: tls.key: required when tls.cert is set"],
            ),
            (
                format!("{LISTEN}tls: {{mode: disabled, key: {{env: K}}}}\n{IDENTITY}"),
                &["t.yaml: tls.cert: required when tls.key is set"],
            ),
            (format!("{LISTEN}tls: {{mode: disabled}}\n{IDENTITY}"), &[]),
        ] {
            check(&yaml, want);
        }
    }

    #[test]
    fn identity() {
        let issuer =
            |name: &str, url: &str| format!("{{name: {name}, issuer: '{url}', audience: a}}");
        for (yaml, want) in [
            (
                LISTEN.to_owned(),
                &["t.yaml: identity: no issuers are configured and dev_issuer is false, so nobody could log in"][..],
            ),
            (format!("{LISTEN}identity: {{dev_issuer: true}}\n"), &[]),
            (
                format!(
                    "{LISTEN}identity:\n  issuers: [{}, {}, {}, {}]\n",
                    issuer("corp", "https://a/"),
                    issuer("dev", "https://b/"),
                    issuer("corp", "https://c/"),
                    issuer("x", "airlock-dev"),
                ),
                &[
                    "t.yaml: identity.issuers[1].name: the name \"dev\" is reserved for the dev issuer",
                    "t.yaml: identity.issuers[2].name: duplicate issuer name \"corp\" (also identity.issuers[0])",
                    "t.yaml: identity.issuers[3].issuer: \"airlock-dev\" is the dev issuer's own URL",
                ],
            ),
            (
                "listen: {postgres: 127.0.0.1:6432}\nidentity: {dev_issuer: true}\n".to_owned(),
                &["t.yaml: identity.dev_issuer: the dev issuer needs listen.http, where its JWKS is served"],
            ),
            (
                "listen: {postgres: 0.0.0.0:6432, http: 0.0.0.0:8080}\ntls: {cert: {env: C}, key: {env: K}}\nidentity: {dev_issuer: true}\n".to_owned(),
                &[
                    "t.yaml: identity.dev_issuer: refused on the non-loopback listener listen.postgres (0.0.0.0:6432); set identity.allow_dev_issuer_on_non_loopback: true to force it",
                    "t.yaml: identity.dev_issuer: refused on the non-loopback listener listen.http (0.0.0.0:8080); set identity.allow_dev_issuer_on_non_loopback: true to force it",
                ],
            ),
            (
                "listen: {http: 0.0.0.0:8080}\nidentity: {dev_issuer: true, allow_dev_issuer_on_non_loopback: true}\n".to_owned(),
                &[],
            ),
            (
                format!("{LISTEN}identity: {{dev_issuer: true, session_lifetime: 0s}}\n"),
                &["t.yaml: identity.session_lifetime: must be greater than zero"],
            ),
        ] {
            check(&yaml, want);
        }
    }

    #[test]
    fn connections() {
        let upstream = "upstream: {host: h, database: d";
        for (yaml, want) in [
            (
                format!(
                    "{LISTEN}{IDENTITY}connections:\n  orders: {{{upstream}}}, roles: {{}}}}\n"
                ),
                &["t.yaml: connections.orders.roles: a connection needs at least one role"][..],
            ),
            (
                format!(
                    "{LISTEN}{IDENTITY}connections:\n  '*': {{{upstream}}}, roles: {{r: {{user: u}}}}}}\n"
                ),
                &[
                    "t.yaml: connections.*: the name \"*\" is reserved: access rules use it for every connection",
                ],
            ),
            (
                format!(
                    "{LISTEN}{IDENTITY}connections:\n  orders: {{{upstream}, tls: require, ca: {{file: ca.pem}}}}, roles: {{r: {{user: u}}}}}}\n"
                ),
                &["t.yaml: connections.orders.upstream.ca: only used with tls: verify-full"],
            ),
            (
                format!(
                    "{LISTEN}{IDENTITY}connections:\n  orders: {{{upstream}, tls: verify-full, ca: {{file: ca.pem}}}}, roles: {{r: {{user: u}}}}}}\n"
                ),
                &[],
            ),
        ] {
            check(&yaml, want);
        }
    }

    #[test]
    fn access_rules() {
        for (rules, want) in [
            (
                "  - {name: a, groups: [g], connections: [orders, billing], roles: [rw, audit]}
  - {name: b, subjects: [alice], connections: ['*'], roles: [ro, audit], mode: read-only}
",
                &[][..],
            ),
            (
                "  - {name: a, groups: [g], connections: [ordrs], roles: [nope]}\n",
                &["t.yaml: access[0].connections[0]: unknown connection \"ordrs\""],
            ),
            (
                "  - {name: a, groups: [g], connections: [orders, ordrs], roles: [ro, audit]}\n",
                &[
                    "t.yaml: access[0].connections[1]: unknown connection \"ordrs\"",
                    "t.yaml: access[0].roles[1]: role \"audit\" is not defined on orders",
                ],
            ),
            (
                "  - {name: a, groups: [g], connections: ['*', orders], roles: [admin]}\n",
                &["t.yaml: access[0].roles[0]: role \"admin\" is not defined on billing, orders"],
            ),
            (
                "  - {name: a, groups: [g], connections: [orders], roles: [ro]}
  - {name: b, groups: [g], connections: [orders], roles: [ro]}
  - {name: a, groups: [g], connections: [orders], roles: [ro]}
",
                &["t.yaml: access[2].name: duplicate access rule name \"a\" (also access[0])"],
            ),
            (
                "  - {name: a, groups: [], connections: [], roles: []}\n",
                &[
                    "t.yaml: access[0]: needs at least one of `groups`, `subjects` or `claims`",
                    "t.yaml: access[0].connections: must name at least one connection, or \"*\"",
                    "t.yaml: access[0].roles: must name at least one role",
                ],
            ),
            (
                "  - {name: a, claims: {repository: acme/app, kubernetes.io.namespace: [a, b]}, connections: [orders], roles: [ro]}\n",
                &[],
            ),
            (
                "  - {name: a, claims: {\"a..b\": x, ref: []}, connections: [orders], roles: [ro]}\n",
                &[
                    "t.yaml: access[0].claims.a..b: is not a claim path: names separated by dots, none empty; `\\.` is a dot inside a name",
                    "t.yaml: access[0].claims.ref: must accept at least one value",
                ],
            ),
        ] {
            check(&with_access(rules), want);
        }
    }

    #[test]
    fn approvers_entries() {
        check(
            &format!(
                "{LISTEN}{IDENTITY}guardrails:\n  - {{name: g, match: {{effects: [ddl]}}, action: approve, approvers: [dba, \"subject:alice@*\", \"claim:team=dba\", \"claim:team\", \"subject:\"]}}\n"
            ),
            &[
                "t.yaml: guardrails[0].approvers[3]: claim: needs path=value, such as claim:team=dba",
                "t.yaml: guardrails[0].approvers[4]: subject: needs a glob, such as subject:alice@example.com",
            ],
        );
    }

    #[test]
    fn mcp() {
        for (mcp, want) in [
            ("{enabled: true}", &[][..]),
            ("{enabled: false, max_rows: 0}", &[]),
            (
                "{enabled: true, max_rows: 0, max_bytes: 10, statement_timeout: 0s, max_request_size: 2GiB}",
                &[
                    "t.yaml: mcp.max_rows: must be at least 1",
                    "t.yaml: mcp.max_bytes: must be at least 1KiB",
                    "t.yaml: mcp.max_request_size: 2GiB is out of range: it must be between 1KiB and 64MiB",
                    "t.yaml: mcp.statement_timeout: must be greater than zero",
                ],
            ),
            (
                "{enabled: true, allowed_origins: [\"https://ok.example\", \"ok.example\", \"null\", \"https://a/b\"]}",
                &[
                    "t.yaml: mcp.allowed_origins[1]: \"ok.example\" is not an origin: write scheme://host[:port], such as https://app.example.com",
                    "t.yaml: mcp.allowed_origins[3]: \"https://a/b\" is not an origin: write scheme://host[:port], such as https://app.example.com",
                ],
            ),
        ] {
            check(&format!("{LISTEN}{IDENTITY}mcp: {mcp}\n"), want);
        }
        check(
            &format!("listen: {{postgres: 127.0.0.1:6432}}\n{IDENTITY}mcp: {{enabled: true}}\n"),
            &["t.yaml: mcp.enabled: the MCP endpoint is served on listen.http, which is not set"],
        );
    }

    #[test]
    fn limits() {
        for (limits, want) in [
            ("{max_message_size: 1KiB}", &[][..]),
            ("{max_message_size: 1GiB}", &[]),
            (
                "{max_message_size: 1023}",
                &[
                    "t.yaml: limits.max_message_size: 1023B is out of range: it must be between 1KiB and 1GiB",
                ],
            ),
            (
                "{max_message_size: 2GB}",
                &[
                    "t.yaml: limits.max_message_size: 2GB is out of range: it must be between 1KiB and 1GiB",
                ],
            ),
            (
                "{startup_timeout: 0s, upstream_connect_timeout: 0ms, max_sessions: 0}",
                &[
                    "t.yaml: limits.startup_timeout: must be greater than zero",
                    "t.yaml: limits.upstream_connect_timeout: must be greater than zero",
                    "t.yaml: limits.max_sessions: must be at least 1",
                ],
            ),
            (
                "{per_principal: {max_sessions: 1}, per_connection: {max_sessions: 1}}",
                &[],
            ),
            (
                "{per_principal: {max_sessions: 0, statements_per_second: 0}, per_connection: {max_sessions: 0}}",
                &[
                    "t.yaml: limits.per_principal.max_sessions: must be at least 1 (leave it out for no cap)",
                    "t.yaml: limits.per_connection.max_sessions: must be at least 1 (leave it out for no cap)",
                    "t.yaml: limits.per_principal.statements_per_second: must be at least 1 (leave it out for no cap)",
                ],
            ),
        ] {
            check(&format!("{LISTEN}{IDENTITY}limits: {limits}\n"), want);
        }
    }

    #[test]
    fn audit_sections() {
        for (yaml, want) in [
            (
                "store: {url: 'sqlite:///var/lib/a.db'}\njournal: {fsync: always}\n",
                &[][..],
            ),
            (
                "store: {url: 'postgres://airlock@db/audit', password: {env: P}}\n",
                &[],
            ),
            (
                "store: {url: 'postgres://airlock:hunter2@db/audit'}\n",
                &[
                    "t.yaml: store.url: holds a password; secrets are never written inline: use store.password: {env: NAME} or {file: PATH}",
                ],
            ),
            (
                "store: {url: 'mysql://db/audit'}\n",
                &["t.yaml: store.url: \"mysql://db/audit\" is not a sqlite:// or postgres:// URL"],
            ),
            (
                "store: {password: {env: P}}\n",
                &["t.yaml: store.password: only a PostgreSQL store takes a password"],
            ),
            (
                "journal: {fsync: 0ms}\nrecording: {result_sample: {max_rows: 10001, max_bytes: 17MiB}, max_statement_bytes: 100, retention: 10m}\n",
                &[
                    "t.yaml: journal.fsync: an interval must be between 1ms and 10s (or write `always`)",
                    "t.yaml: recording.result_sample.max_rows: must be at most 10000",
                    "t.yaml: recording.result_sample.max_bytes: must be at most 16MiB",
                    "t.yaml: recording.max_statement_bytes: must be between 1KiB and 8MiB",
                    "t.yaml: recording.retention: must be at least 1h",
                ],
            ),
        ] {
            check(&format!("{LISTEN}{IDENTITY}{yaml}"), want);
        }
        let bad = Config::from_yaml_str(
            &format!("{LISTEN}{IDENTITY}journal: {{fsync: sometimes}}\n"),
            "t.yaml",
        );
        assert!(
            bad.unwrap_err()[0]
                .to_string()
                .contains("write `always` or an interval")
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let yaml = "tls: {mode: optional}
connections:
  orders: {upstream: {host: h, database: d}, roles: {}}
access:
  - {name: a, connections: [orders], roles: [ro]}
limits: {max_sessions: 0}
";
        check(
            yaml,
            &[
                "t.yaml: listen: at least one of `postgres`, `mysql` or `http` is required",
                "t.yaml: tls: tls.cert and tls.key are required unless tls.mode is disabled",
                "t.yaml: identity: no issuers are configured and dev_issuer is false, so nobody could log in",
                "t.yaml: connections.orders.roles: a connection needs at least one role",
                "t.yaml: access[0]: needs at least one of `groups`, `subjects` or `claims`",
                "t.yaml: access[0].roles[0]: role \"ro\" is not defined on orders",
                "t.yaml: limits.max_sessions: must be at least 1",
            ],
        );
        check(
            "# nothing yet\n",
            &[
                "t.yaml: listen: at least one of `postgres`, `mysql` or `http` is required",
                "t.yaml: identity: no issuers are configured and dev_issuer is false, so nobody could log in",
            ],
        );
    }

    #[test]
    fn guardrails() {
        let base = format!("{LISTEN}{IDENTITY}");
        check(
            &format!(
                "{base}guardrails:
  - {{name: a, match: {{effects: [write, teleport]}}, action: deny}}
  - {{name: a, match: {{statements: [delete, erase]}}, action: approve}}
  - {{name: c, match: {{}}, action: deny}}
  - {{name: d, match: {{where: absent}}, action: deny, approvers: [dba]}}
  - {{name: e, match: {{where: absent}}, action: approve, approvers: [dba], hint: wait}}
  - {{name: f, match: {{where: absent}}, action: deny, hint: \"  \"}}
unsafe_functions: ['']
"
            ),
            &[
                "t.yaml: guardrails[0].match.effects[1]: unknown effect \"teleport\"",
                "t.yaml: guardrails[1].name: \"a\" is already the name of guardrails[0]",
                "t.yaml: guardrails[1].match.statements[1]: unknown statement kind \"erase\"",
                "t.yaml: guardrails[1].approvers: required with action: approve or review_commit",
                "t.yaml: guardrails[2].match: matches every statement; give at least one condition",
                "t.yaml: guardrails[3].approvers: only meaningful with action: approve or review_commit",
                "t.yaml: guardrails[4].hint: only meaningful with action: deny",
                "t.yaml: guardrails[5].hint: must be one line of at most 200 bytes",
                "t.yaml: unsafe_functions[0]: must be a function name",
            ],
        );
        check(
            &format!(
                "{base}guardrails:
  - {{name: ok, match: {{statements: [update, delete], where: absent, estimated_rows_over: 10}}, action: approve, approvers: [dba]}}
"
            ),
            &[],
        );
    }

    #[test]
    fn guardrail_approvals() {
        let base = format!("{LISTEN}{IDENTITY}");
        let rows = "match: {statements: [delete]}";
        check(
            &format!(
                "{base}guardrails:
  - {{name: a, {rows}, action: approve, approvers: [dba], min_approvals: 0}}
  - {{name: b, {rows}, action: approve, approvers: [dba], min_approvals: 11}}
  - {{name: c, {rows}, action: deny, min_approvals: 2}}
  - {{name: d, {rows}, action: approve, approvers: [], min_approvals: 2}}
  - {{name: e, {rows}, action: review_commit}}
  - {{name: f, {rows}, action: review_commit, approvers: [dba], min_approvals: 11}}
  - {{name: g, {rows}, action: review_commit, approvers: [dba], min_approvals: 2}}
"
            ),
            &[
                "t.yaml: guardrails[0].min_approvals: must be between 1 and 10",
                "t.yaml: guardrails[1].min_approvals: must be between 1 and 10",
                "t.yaml: guardrails[2].min_approvals: only meaningful with action: approve or review_commit",
                "t.yaml: guardrails[3].approvers: required with action: approve or review_commit",
                "t.yaml: guardrails[4].approvers: required with action: approve or review_commit",
                "t.yaml: guardrails[5].min_approvals: must be between 1 and 10",
            ],
        );
        let config = Config::from_yaml_str(
            &format!(
                "{base}guardrails:
  - {{name: a, {rows}, action: approve, approvers: [dba], min_approvals: 10}}
  - {{name: b, {rows}, action: approve, approvers: [dba]}}
"
            ),
            "t.yaml",
        )
        .unwrap();
        let counts: Vec<Option<u32>> = config.guardrails.iter().map(|g| g.min_approvals).collect();
        assert_eq!(counts, [Some(10), None]);
    }

    #[test]
    fn schema_only() {
        let rule = "{name: s, groups: [g], connections: [orders], roles: [rw]";
        for (more, want) in [
            ("mode: schema-only", &[][..]),
            ("mode: schema-only, min_group_rows: 2", &[]),
            ("mode: schema-only, min_group_rows: 1000000", &[]),
            (
                "mode: schema-only, min_group_rows: 1",
                &["t.yaml: access[0].min_group_rows: must be between 2 and 1000000"],
            ),
            (
                "mode: read-only, min_group_rows: 10",
                &["t.yaml: access[0].min_group_rows: applies only to `mode: schema-only`"],
            ),
            (
                "min_group_rows: 10",
                &["t.yaml: access[0].min_group_rows: applies only to `mode: schema-only`"],
            ),
        ] {
            check(&with_access(&format!("  - {rule}, {more}}}\n")), want);
        }
    }

    #[test]
    fn statement_timeout_ceiling() {
        let rule = "{name: t, groups: [g], connections: [orders], roles: [rw], statement_timeout:";
        for (value, want) in [
            ("30s", &[][..]),
            (
                "0s",
                &["t.yaml: access[0].statement_timeout: must be between 1ms and 24h"][..],
            ),
            (
                "25h",
                &["t.yaml: access[0].statement_timeout: must be between 1ms and 24h"],
            ),
        ] {
            check(&with_access(&format!("  - {rule} {value}}}\n")), want);
        }
    }

    #[test]
    fn budgets() {
        let rule = "{name: b, groups: [g], connections: [orders], roles: [rw], budgets:";
        for (budgets, want) in [
            (
                "{session: {max_statements: 100, statements_per_minute: 30, max_rows: 1000, max_bytes: 1MiB}, principal: {max_rows: 100000}, window: 1d}",
                &[][..],
            ),
            ("{}", &[]),
            (
                "{session: {max_rows: 0}, principal: {statements_per_minute: 0}}",
                &[
                    "t.yaml: access[0].budgets.session.max_rows: must be greater than zero (leave it out for no cap)",
                    "t.yaml: access[0].budgets.principal.statements_per_minute: must be greater than zero (leave it out for no cap)",
                ],
            ),
            (
                "{window: 31d}",
                &["t.yaml: access[0].budgets.window: must be between 1s and 30d"],
            ),
            ("{on_exceed: session, max_result_bytes: 4MiB}", &[]),
            ("{principal: {max_cost: 100000}}", &[]),
            (
                "{session: {max_cost: 0}}",
                &[
                    "t.yaml: access[0].budgets.session.max_cost: must be greater than zero (leave it out for no cap)",
                ],
            ),
            (
                "{max_result_bytes: 0}",
                &[
                    "t.yaml: access[0].budgets.max_result_bytes: must be greater than zero (leave it out for no cap)",
                ],
            ),
        ] {
            check(&with_access(&format!("  - {rule} {budgets}}}\n")), want);
        }
    }

    #[test]
    fn jit() {
        let rule = "{name: j, groups: [g], connections: [orders], roles: [rw], jit:";
        for (jit, want) in [
            (
                "{max_duration: 7d, approvers: [dba], min_approvals: 10}",
                &[][..],
            ),
            ("{max_duration: 1h, approvers: [dba]}", &[]),
            (
                "{max_duration: 0s, approvers: [dba]}",
                &["t.yaml: access[0].jit.max_duration: must be greater than zero"],
            ),
            (
                "{max_duration: 7d 1s, approvers: [dba]}",
                &["t.yaml: access[0].jit.max_duration: must be at most 7d"],
            ),
            (
                "{max_duration: 1h, approvers: []}",
                &["t.yaml: access[0].jit.approvers: must name at least one group"],
            ),
            (
                "{max_duration: 1h, approvers: [], min_approvals: 0}",
                &[
                    "t.yaml: access[0].jit.approvers: must name at least one group",
                    "t.yaml: access[0].jit.min_approvals: must be between 1 and 10",
                ],
            ),
            (
                "{max_duration: 1h, approvers: [dba], min_approvals: 11}",
                &["t.yaml: access[0].jit.min_approvals: must be between 1 and 10"],
            ),
        ] {
            check(&with_access(&format!("  - {rule} {jit}}}\n")), want);
        }
        let config = Config::from_yaml_str(
            &with_access(&format!(
                "  - {rule} {{max_duration: 1h, approvers: [dba]}}}}\n"
            )),
            "t.yaml",
        )
        .unwrap();
        let jit = config.access[0].jit.as_ref().unwrap();
        assert_eq!(
            (jit.max_duration.0, jit.min_approvals),
            (Duration::from_secs(3600), 1)
        );
    }

    #[test]
    fn approvals() {
        for (approvals, want) in [
            ("{timeout: 24h, timeout_in_transaction: 1s}", &[][..]),
            (
                "{timeout: 0s, timeout_in_transaction: 0ms}",
                &[
                    "t.yaml: approvals.timeout: must be greater than zero",
                    "t.yaml: approvals.timeout_in_transaction: must be greater than zero",
                ],
            ),
            (
                "{timeout: 24h 1s, timeout_in_transaction: 2d}",
                &[
                    "t.yaml: approvals.timeout: must be at most 24h",
                    "t.yaml: approvals.timeout_in_transaction: must be at most 24h",
                ],
            ),
        ] {
            check(&format!("{LISTEN}{IDENTITY}approvals: {approvals}\n"), want);
        }
        let defaults = Config::from_yaml_str(&format!("{LISTEN}{IDENTITY}"), "t.yaml").unwrap();
        assert_eq!(
            (
                defaults.approvals.timeout.0,
                defaults.approvals.timeout_in_transaction.0
            ),
            (Duration::from_secs(300), Duration::from_secs(60))
        );
        let partial = Config::from_yaml_str(
            &format!("{LISTEN}{IDENTITY}approvals: {{timeout: 10m}}\n"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            (
                partial.approvals.timeout.0,
                partial.approvals.timeout_in_transaction.0
            ),
            (Duration::from_secs(600), Duration::from_secs(60))
        );
    }

    #[test]
    fn webhooks() {
        let base = format!("{LISTEN}{IDENTITY}notifications:\n  webhooks:\n");
        check(
            &format!(
                "{base}    - {{url: 'ftp://example.com/hook'}}
    - {{url: 'https://u:pw@example.com/hook'}}
    - {{url: 'http://127.0.0.1:9000/hook', events: []}}
    - {{url: 'http://127.0.0.1:9000/hook', events: [access.granted, approval.decided, access.granted]}}
    - {{url: 'http://127.0.0.1:9000/hook', timeout: 0s}}
    - {{url: 'http://127.0.0.1:9000/hook', timeout: 61s}}
"
            ),
            &[
                "t.yaml: notifications.webhooks[0].url: \"ftp://example.com/hook\" is not an http:// or https:// URL with a host",
                "t.yaml: notifications.webhooks[1].url: holds credentials (user@); deliveries are authenticated by their signature: use `secret`",
                "t.yaml: notifications.webhooks[2].events: must name at least one event (leave it out for every event)",
                "t.yaml: notifications.webhooks[3].events[2]: \"access.granted\" is listed twice",
                "t.yaml: notifications.webhooks[4].timeout: must be greater than zero",
                "t.yaml: notifications.webhooks[5].timeout: must be at most 60s",
            ],
        );
        let config = Config::from_yaml_str(
            &format!(
                "{base}    - {{url: 'https://hooks.example.com/a', timeout: 60s, format: slack}}
    - url: http://[::1]:9000/b
      events: [access.expired]
      secret: {{file: hook.key}}
"
            ),
            "t.yaml",
        )
        .unwrap();
        let hooks = &config.notifications.webhooks;
        assert_eq!(hooks[0].events, crate::WebhookEvent::ALL);
        assert_eq!(
            (hooks[0].format, hooks[0].timeout.0, &hooks[0].secret),
            (crate::WebhookFormat::Slack, Duration::from_secs(60), &None)
        );
        assert_eq!(hooks[1].events, [crate::WebhookEvent::AccessExpired]);
        assert_eq!(
            (hooks[1].format, hooks[1].timeout.0),
            (crate::WebhookFormat::Json, Duration::from_secs(5))
        );
        assert_eq!(
            config.watched_files(),
            [std::path::PathBuf::from("hook.key")]
        );
    }

    #[test]
    fn masking() {
        let base = format!("{LISTEN}{IDENTITY}");
        check(
            &format!(
                "{base}masking:
  rules:
    - {{name: a, columns: [ssn, \"*.ssn\"], strategy: redact}}
    - {{name: a, detect: [credit_card, dna], strategy: hash}}
    - {{name: c, strategy: null}}
    - {{name: d, columns: [\"x.y\"], strategy: {{partial: {{}}}}}}
"
            ),
            &[
                "t.yaml: masking.rules[0].columns[0]: \"ssn\" is not [schema.]table.column (use \"*.ssn\" for a column of any table)",
                "t.yaml: masking.rules[1].name: \"a\" is already the name of masking.rules[0]",
                "t.yaml: masking.rules[1].detect[1]: unknown detector \"dna\"",
                "t.yaml: masking.rules[2]: give columns, detect or both",
                "t.yaml: masking.rules[3].strategy.partial: keeps nothing; give keep_first or keep_last, or use redact",
            ],
        );
        check(
            &format!(
                "{base}masking:
  deny_predicates: true
  rules:
    - {{name: ssn, columns: [\"*.ssn\", public.customers.tax_id], strategy: {{partial: {{keep_last: 4}}}}}}
    - {{name: email, columns: [\"*.email\"], strategy: email}}
    - {{name: cards, detect: [credit_card], strategy: redact}}
"
            ),
            &[],
        );
    }

    #[test]
    fn masking_rule_count_is_bounded() {
        let base = format!("{LISTEN}{IDENTITY}");
        let rules: String = (0..10_001)
            .map(|i| format!("    - {{name: r{i}, columns: [\"*.c{i}\"], strategy: redact}}\n"))
            .collect();
        check(
            &format!("{base}masking:\n  rules:\n{rules}"),
            &["t.yaml: masking.rules: at most 10000 rules"],
        );
    }
}
