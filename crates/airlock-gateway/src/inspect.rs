//! The PostgreSQL door's statement judge: the relay's [`Inspector`] backed by
//! the SQL analyzer and the policy core.
//!
//! Runs on the hot path, once per simple Query and once per Parse. Analyses
//! come from the per-thread parse cache; the decision itself is a walk over
//! the guardrails. Logs carry the decision, the rule, the statement kinds and
//! effects, never the statement text (its literals may be sensitive).

use std::sync::Arc;

use airlock_pgwire::relay::{Inspector, Plan, Verdict};
use airlock_pgwire::sqlstate;
use airlock_policy::{
    AccessMode, Decision, Effect, Effects, Estimate, Evaluation, Guardrails, Statement,
    StatementKind,
};
use airlock_sql::{Analyzer, SessionState};

/// Client encodings whose bytes airlock can read as UTF-8.
fn utf8_compatible(encoding: &str) -> bool {
    matches!(
        encoding.to_ascii_uppercase().as_str(),
        "UTF8" | "UTF-8" | "UNICODE" | "SQL_ASCII"
    )
}

/// The policy a session runs under.
pub struct SessionPolicy {
    pub analyzer: Arc<Analyzer>,
    pub guardrails: Arc<Guardrails>,
    pub mode: AccessMode,
    /// The access rule that granted the route, for messages.
    pub access_rule: String,
}

/// One session's judge.
pub struct PolicyInspector {
    policy: SessionPolicy,
    sql_state: SessionState,
    standard_conforming_strings: bool,
    utf8: bool,
}

impl PolicyInspector {
    pub fn new(policy: SessionPolicy) -> Self {
        PolicyInspector {
            policy,
            sql_state: SessionState::default(),
            standard_conforming_strings: true,
            utf8: true,
        }
    }

    /// Judges one message. `plan` is the upstream's plan when one was asked
    /// for; `None` for a Parse, whose parameters are not known yet, so no
    /// estimate can be had.
    fn judge(&mut self, bytes: &[u8], plan: Option<Plan<'_>>) -> Verdict {
        let text = match self.text(bytes) {
            Ok(t) => t,
            Err(refusal) => return refusal,
        };
        let text: std::borrow::Cow<'_, str> = if self.standard_conforming_strings {
            text.into()
        } else {
            match airlock_sql::scs::to_conforming(text) {
                Some(t) => t,
                None => {
                    return deny_unknown(
                        "it uses a Unicode or national string with a backslash while standard_conforming_strings is off",
                    );
                }
            }
        };
        let cached = airlock_sql::cache::analyze(&self.policy.analyzer, &text);
        let analyzed = cached.statements;
        let needs_session = analyzed.iter().any(|s| {
            matches!(
                s.kind,
                StatementKind::Prepare | StatementKind::Execute | StatementKind::Deallocate
            ) || s.nested.contains(&StatementKind::Execute)
        });
        let resolved;
        let statements: &[Statement] = if needs_session {
            resolved = airlock_sql::resolve(&analyzed, &mut self.sql_state);
            &resolved
        } else {
            &analyzed
        };
        let estimate = match plan {
            Some(Plan::NotFetched) => Estimate::NotFetched,
            Some(Plan::Json(json)) => plan_rows(json).map_or(Estimate::Unavailable, Estimate::Rows),
            Some(Plan::Unavailable) | None => Estimate::Unavailable,
        };
        let p = &self.policy;
        let decision = match statements {
            // Only a single-statement Query gets a real estimate: EXPLAIN
            // takes one statement.
            [s] if estimate == Estimate::NotFetched => {
                match p.guardrails.evaluate(s, p.mode, &p.access_rule, estimate) {
                    Evaluation::Decided(d) => d,
                    Evaluation::NeedsEstimate => {
                        // A shared analysis's span belongs to another text.
                        let span = if cached.exact {
                            s.span
                        } else {
                            p.analyzer.analyze(&text)[0].span
                        };
                        return Verdict::Estimate {
                            statement: text[span.0..span.1].to_string(),
                        };
                    }
                }
            }
            _ => statements.iter().fold(Decision::Allow, |d, s| {
                d.stricter(p.guardrails.decide(s, p.mode, &p.access_rule, estimate))
            }),
        };
        match decision {
            Decision::Allow => {
                tracing::debug!(kinds = %kinds(statements), "allowed");
                // A setting change (or SQL the analyzer cannot see) may alter
                // how the next statement parses: `standard_conforming_strings`
                // and `client_encoding` arrive by ParameterStatus after it
                // runs, so later messages wait for its answer.
                let may_reconfigure = Effects::of(&[Effect::SessionConfig, Effect::DynamicSql]);
                if statements
                    .iter()
                    .any(|s| s.effects.intersects(may_reconfigure))
                {
                    Verdict::ForwardAndWait
                } else {
                    Verdict::Forward
                }
            }
            Decision::Deny { rule, message } => {
                tracing::info!(kinds = %kinds(statements), rule = %rule, "statement denied");
                Verdict::Refuse {
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                    message: format!("airlock: statement denied by rule \"{rule}\": {message}"),
                }
            }
            Decision::Approve { rule, .. } => {
                tracing::info!(kinds = %kinds(statements), rule = %rule, "statement needs approval; approvals are not configured");
                Verdict::Refuse {
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                    message: format!(
                        "airlock: approval required (rule \"{rule}\"), but approvals are not configured; the statement was not run"
                    ),
                }
            }
        }
    }

    /// The statement text, or the refusal for bytes airlock cannot read.
    fn text<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, Verdict> {
        if !self.utf8 && !bytes.is_ascii() {
            return Err(deny_unknown(
                "the session's client_encoding is not UTF8; airlock reads non-ASCII statements only in UTF8",
            ));
        }
        std::str::from_utf8(bytes).map_err(|_| Verdict::Refuse {
            code: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            message: "airlock: invalid byte sequence for encoding \"UTF8\" in the statement".into(),
        })
    }
}

fn deny_unknown(why: &str) -> Verdict {
    Verdict::Refuse {
        code: sqlstate::INSUFFICIENT_PRIVILEGE,
        message: format!(
            "airlock: statement denied by rule \"unknown\": statement refused because {why}"
        ),
    }
}

fn kinds(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| s.kind.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// The planner's largest row estimate in an `EXPLAIN (FORMAT JSON)` plan.
/// The largest node is taken, not the top one: a ModifyTable node without
/// RETURNING estimates 0 rows while its scan estimates what it will change.
fn plan_rows(json: &str) -> Option<u64> {
    fn walk(v: &serde_json::Value, max: &mut Option<u64>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "Plan Rows"
                        && let Some(n) = v.as_f64()
                    {
                        *max = Some(max.unwrap_or(0).max(n as u64));
                    }
                    walk(v, max);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, max)),
            _ => {}
        }
    }
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut max = None;
    walk(&value, &mut max);
    max
}

impl Inspector for PolicyInspector {
    fn query(&mut self, sql: &[u8], plan: Plan<'_>) -> Verdict {
        self.judge(sql, Some(plan))
    }

    fn parse(&mut self, _name: &[u8], sql: &[u8]) -> Verdict {
        self.judge(sql, None)
    }

    fn parameter_status(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value == "on",
            "client_encoding" => self.utf8 = utf8_compatible(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plan_rows;

    #[test]
    fn plan_rows_takes_the_largest_node() {
        let plan = r#"[{"Plan": {"Node Type": "ModifyTable", "Plan Rows": 0,
            "Plans": [{"Node Type": "Seq Scan", "Plan Rows": 1234.0}]}}]"#;
        assert_eq!(plan_rows(plan), Some(1234));
        assert_eq!(plan_rows("not json"), None);
        assert_eq!(plan_rows("[]"), None);
    }
}
