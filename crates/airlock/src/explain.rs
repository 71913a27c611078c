//! `airlock policy explain`: what the gateway would decide for a principal's
//! SQL, without a database. It runs the same analyzer and parse path as the
//! data path and asks the same judge (`airlock_policy::judge`), with no
//! row estimate to fetch and approvals assumed configured. A connection
//! with `protocol: mysql` is analyzed as MySQL/MariaDB, with the default
//! `sql_mode`.

use std::time::SystemTime;

use airlock_config::{Config, Protocol};
use airlock_gateway::snapshot;
use airlock_policy::judge::{self, Ask, Fetch, NoFacts};
use airlock_policy::{Decision, Estimate, Evaluation, Guardrails, Principal, Route, Statement};
use airlock_sql::mysql::Mode;
use airlock_sql::{Analyzer, SessionState};
use anyhow::Result;
use serde_json::{Value, json};

/// One statement, explained.
pub struct StatementReport {
    pub text: String,
    pub statement: Statement,
    pub matched: Vec<(String, &'static str)>,
    pub decision: Decision,
    /// Whether a rule depends on a row estimate, which explain cannot fetch
    /// (no estimate counts as over the threshold, as in the data path).
    pub estimate_unavailable: bool,
}

/// The explanation of one message.
pub struct Report {
    pub route: Route,
    pub statements: Vec<StatementReport>,
    pub decision: Decision,
}

/// The principal a report is for: its subject, groups and other claims.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    pub sub: String,
    pub groups: Vec<String>,
    /// Claims for `claims` matchers (`--claims name=value`).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Asker {
    pub fn new(sub: &str, groups: &[String]) -> Asker {
        Asker {
            sub: sub.into(),
            groups: groups.to_vec(),
            ..Asker::default()
        }
    }
}

/// Explains `sql` for `asker` on `connection` as `role` (or the
/// principal's first allowed role).
pub fn explain(
    config: &Config,
    connection: &str,
    asker: &Asker,
    role: Option<&str>,
    sql: &str,
) -> Result<Report> {
    explain_in_mode(config, connection, asker, role, sql, Mode::default())
}

/// [`explain`], with the `sql_mode` a MySQL connection's session would
/// have (ignored for PostgreSQL connections).
pub fn explain_in_mode(
    config: &Config,
    connection: &str,
    asker: &Asker,
    role: Option<&str>,
    sql: &str,
    mode: Mode,
) -> Result<Report> {
    let mut claims = asker.claims.clone();
    claims.insert("sub".into(), asker.sub.clone().into());
    let principal = Principal {
        issuer_name: "explain".into(),
        issuer: "explain".into(),
        subject: asker.sub.clone(),
        groups: asker.groups.clone(),
        act: None,
        token_id: None,
        expires_at: SystemTime::now(),
        claims: airlock_policy::claims::Claims::new(claims),
        act_chain: Vec::new(),
    };
    // A just-in-time role is explained as if granted: the guardrails are
    // the same once it is.
    let assumed: Vec<airlock_policy::Grant> = role
        .map(|role| airlock_policy::Grant {
            id: "(assumed by explain)".into(),
            connection: connection.into(),
            role: role.into(),
            expires_at: SystemTime::now(),
            by_policy: false,
        })
        .into_iter()
        .collect();
    let route = snapshot::access_policy(config)
        .route(&principal, connection, role.unwrap_or(""), &assumed)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let guardrails = snapshot::guardrails(config);
    let statements = airlock_sql::resolve(
        &analyze(config, connection, sql, mode),
        &mut SessionState::default(),
    );
    let decision = judged(&guardrails, &route, &statements);
    let statements: Vec<StatementReport> = statements
        .into_iter()
        .map(|s| report(&guardrails, &route, sql, s))
        .collect();
    Ok(Report {
        route,
        statements,
        decision,
    })
}

/// The connection's dialect's analysis of `sql`. A MySQL connection's text
/// is read in `mode`: `airlock policy explain` passes the default
/// `sql_mode` (no `ANSI_QUOTES`, backslash escapes on), as it knows no
/// session.
fn analyze(config: &Config, connection: &str, sql: &str, mode: Mode) -> Vec<Statement> {
    let protocol = config.connections.get(connection).map(|c| c.protocol);
    match protocol {
        Some(Protocol::Mysql) => {
            airlock_sql::mysql::Analyzer::new(&config.unsafe_functions).analyze(sql, mode)
        }
        _ => Analyzer::new(&config.unsafe_functions).analyze(sql),
    }
}

fn report(guardrails: &Guardrails, route: &Route, sql: &str, s: Statement) -> StatementReport {
    let text = sql
        .get(s.span.0..s.span.1)
        .unwrap_or_default()
        .trim()
        .to_string();
    // Explain has no database: no estimate counts as over the threshold.
    let estimate_unavailable = matches!(
        guardrails.evaluate(&s, route.mode, &route.rule, Estimate::NotFetched),
        Evaluation::NeedsEstimate
    );
    let estimate = if estimate_unavailable {
        Estimate::Unavailable
    } else {
        Estimate::NotFetched
    };
    let decision = judged(guardrails, route, std::slice::from_ref(&s));
    let matched = guardrails
        .matches(&s, estimate)
        .into_iter()
        .map(|m| (m.rule, m.action.name()))
        .collect();
    StatementReport {
        text,
        statement: s,
        matched,
        decision,
        estimate_unavailable,
    }
}

/// The judge's decision on `statements`, as the data path would ask it with
/// no estimate to be had.
pub fn judged(guardrails: &Guardrails, route: &Route, statements: &[Statement]) -> Decision {
    let session = judge::Session {
        guardrails,
        mode: route.mode,
        access_rule: &route.rule,
        writes: route.writes.as_ref(),
        schema_only: route.schema_only,
        statement_timeout: route.statement_timeout,
        approvals: true,
        masking: None,
        keys: None,
        // Budgets are spent at run time: not explained.
        costed: false,
    };
    // As the PostgreSQL door judges a simple Query.
    let ask = Ask {
        fetch: Fetch::Never,
        can_review: true,
        ..Ask::message(statements, Estimate::NotFetched)
    };
    judge::judge(&session, &ask, &NoFacts).decision()
}

fn decision_json(d: &Decision) -> Value {
    match d {
        Decision::Allow => json!({"action": "allow"}),
        Decision::Deny { rule, message } => {
            json!({"action": "deny", "rule": rule, "message": message})
        }
        Decision::Approve {
            rule, approvers, ..
        } => {
            json!({"action": "approve", "rule": rule, "approvers": approvers})
        }
        Decision::Review {
            rule, approvers, ..
        } => {
            json!({"action": "review_commit", "rule": rule, "approvers": approvers})
        }
    }
}

fn decision_text(d: &Decision) -> String {
    match d {
        Decision::Allow => "allow".into(),
        Decision::Deny { rule, message } => format!("deny (rule \"{rule}\": {message})"),
        Decision::Approve {
            rule, approvers, ..
        } => format!(
            "approve (rule \"{rule}\", approvers: {})",
            approvers.join(", ")
        ),
        Decision::Review {
            rule, approvers, ..
        } => format!(
            "runs, and its COMMIT is held for review (rule \"{rule}\", approvers: {})",
            approvers.join(", ")
        ),
    }
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "route": {
                "connection": self.route.connection,
                "role": self.route.role,
                "access_rule": self.route.rule,
                "mode": self.route.mode.name(),
            },
            "statements": self.statements.iter().map(|r| {
                let s = &r.statement;
                json!({
                    "text": r.text,
                    "kind": s.kind.name(),
                    "nested": s.nested.iter().map(|k| k.name()).collect::<Vec<_>>(),
                    "effects": s.effects.iter().map(|e| e.name()).collect::<Vec<_>>(),
                    "relations": s.relations.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "functions": s.functions,
                    "has_where": s.has_where,
                    "unknown_reason": s.unknown_reason,
                    "matched_rules": r.matched.iter().map(|(rule, action)| json!({"rule": rule, "action": action})).collect::<Vec<_>>(),
                    "estimate_unavailable": r.estimate_unavailable,
                    "decision": decision_json(&r.decision),
                })
            }).collect::<Vec<_>>(),
            "decision": decision_json(&self.decision),
        })
    }

    pub fn to_text(&self) -> String {
        let r = &self.route;
        let mut out = format!(
            "route: connection \"{}\" as role \"{}\" ({}, access rule \"{}\")\n",
            r.connection,
            r.role,
            r.mode.name(),
            r.rule
        );
        for (i, st) in self.statements.iter().enumerate() {
            let s = &st.statement;
            out.push_str(&format!("\nstatement {}: {}\n", i + 1, st.text));
            let mut kind = s.kind.name().to_string();
            if !s.nested.is_empty() {
                let nested: Vec<&str> = s.nested.iter().map(|k| k.name()).collect();
                kind.push_str(&format!(" (runs: {})", nested.join(", ")));
            }
            out.push_str(&format!("  kind:      {kind}\n"));
            out.push_str(&format!(
                "  effects:   {}\n",
                if s.effects.is_empty() {
                    "none".to_string()
                } else {
                    s.effects.to_string()
                }
            ));
            if let Some(why) = &s.unknown_reason {
                out.push_str(&format!("  unknown:   {why}\n"));
            }
            if !s.relations.is_empty() {
                let rels: Vec<String> = s.relations.iter().map(ToString::to_string).collect();
                out.push_str(&format!("  relations: {}\n", rels.join(", ")));
            }
            if !s.functions.is_empty() {
                out.push_str(&format!("  functions: {}\n", s.functions.join(", ")));
            }
            if let Some(w) = s.has_where {
                out.push_str(&format!(
                    "  where:     {}\n",
                    if w { "present" } else { "absent" }
                ));
            }
            if st.matched.is_empty() {
                out.push_str("  rules:     none\n");
            } else {
                let rules: Vec<String> = st
                    .matched
                    .iter()
                    .map(|(rule, action)| format!("{rule} ({action})"))
                    .collect();
                out.push_str(&format!("  rules:     {}\n", rules.join(", ")));
            }
            if st.estimate_unavailable {
                out.push_str(
                    "  estimate:  not fetched (no database); counted as over the threshold\n",
                );
            }
            out.push_str(&format!("  decision:  {}\n", decision_text(&st.decision)));
        }
        out.push_str(&format!("\ndecision: {}\n", decision_text(&self.decision)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(protocol: &str) -> Config {
        let yaml = format!(
            "listen: {{mysql: 127.0.0.1:6033, http: 127.0.0.1:0}}
identity: {{dev_issuer: true}}
connections:
  shop:
    protocol: {protocol}
    upstream: {{host: 127.0.0.1, database: shop}}
    roles:
      readonly: {{user: ro}}
access:
  - name: agents
    groups: [ai-agents]
    connections: [shop]
    roles: [readonly]
    mode: read-only
guardrails:
  - name: no-drop-database
    match: {{effects: [drop_database]}}
    action: deny
"
        );
        Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn explained(protocol: &str, sql: &str) -> Report {
        explain(
            &config(protocol),
            "shop",
            &Asker::new("a", &["ai-agents".into()]),
            None,
            sql,
        )
        .unwrap()
    }

    #[test]
    fn a_mysql_connection_is_explained_as_mysql() {
        // An executable comment is code to MySQL, a comment to PostgreSQL.
        let sql = "select 1 /*!50000 , 2; drop database shop */";
        let r = explained("mysql", sql);
        let kinds: Vec<&str> = r
            .statements
            .iter()
            .map(|s| s.statement.kind.name())
            .collect();
        assert_eq!(kinds, ["unknown"], "a `;` inside an executable comment");
        let r = explained("mysql", "/*!50000 drop database shop */");
        assert_eq!(r.statements[0].statement.kind.name(), "ddl");
        assert!(matches!(&r.decision, Decision::Deny { rule, .. } if rule == "read-only"));
        // The same text on PostgreSQL is one SELECT.
        let r = explained("postgres", "select 1 /*!50000 drop database shop */");
        assert_eq!(r.statements[0].statement.kind.name(), "select");
        assert!(matches!(r.decision, Decision::Allow));
        // MySQL's `#` comment and backquoted names.
        let r = explained("mysql", "select `id` from t # ; delete from t");
        assert_eq!(r.statements.len(), 1);
        assert!(matches!(r.decision, Decision::Allow));
        let text = r.to_text();
        assert!(text.contains("kind:      select"), "{text}");
        assert!(text.contains("relations: t"), "{text}");
    }
}
