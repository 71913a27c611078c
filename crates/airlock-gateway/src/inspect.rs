//! The PostgreSQL door's statement judge: the relay's [`Inspector`] backed by
//! the SQL analyzer and the policy core.
//!
//! Runs on the hot path, once per simple Query and once per Parse. Analyses
//! come from the per-thread parse cache; the decision itself is a walk over
//! the guardrails. Logs carry the decision, the rule, the statement kinds and
//! effects, never the statement text (its literals may be sensitive).

use std::sync::Arc;

use airlock_pgwire::relay::{Inspector, Verdict};
use airlock_pgwire::sqlstate;
use airlock_policy::{AccessMode, Decision, Estimate, Evaluation, Guardrails, Statement, StatementKind};
use airlock_sql::{Analyzer, SessionState};

/// Client encodings whose bytes airlock can read as UTF-8.
fn utf8_compatible(encoding: &str) -> bool {
    matches!(encoding.to_ascii_uppercase().as_str(), "UTF8" | "UTF-8" | "UNICODE" | "SQL_ASCII")
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

    fn judge(&mut self, bytes: &[u8]) -> Verdict {
        let text = match self.text(bytes) {
            Ok(t) => t,
            Err(refusal) => return refusal,
        };
        let text: std::borrow::Cow<'_, str> = if self.standard_conforming_strings {
            text.into()
        } else {
            match airlock_sql::scs::to_conforming(text) {
                Some(t) => t,
                None => return deny_unknown("it uses a Unicode or national string with a backslash while standard_conforming_strings is off"),
            }
        };
        let analyzed = airlock_sql::cache::analyze(&self.policy.analyzer, &text);
        let needs_session = analyzed
            .iter()
            .any(|s| matches!(s.kind, StatementKind::Prepare | StatementKind::Execute | StatementKind::Deallocate));
        let resolved;
        let statements: &[Statement] = if needs_session {
            resolved = airlock_sql::resolve(&analyzed, &mut self.sql_state);
            &resolved
        } else {
            &analyzed
        };
        let decision = airlock_policy::guardrails::strictest(statements.iter().map(|s| self.decide(s)));
        match decision {
            Decision::Allow => {
                tracing::debug!(kinds = %kinds(statements), "allowed");
                Verdict::Forward
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

    fn decide(&self, s: &Statement) -> Decision {
        let p = &self.policy;
        match p.guardrails.evaluate(s, p.mode, &p.access_rule, Estimate::NotFetched) {
            Evaluation::Decided(d) => d,
            // Row estimates are not fetched yet: no estimate counts as over
            // the threshold.
            Evaluation::NeedsEstimate => match p.guardrails.evaluate(s, p.mode, &p.access_rule, Estimate::Unavailable) {
                Evaluation::Decided(d) => d,
                Evaluation::NeedsEstimate => unreachable!("an unavailable estimate decides"),
            },
        }
    }

    /// The statement text, or the refusal for bytes airlock cannot read.
    fn text<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, Verdict> {
        if !self.utf8 && !bytes.is_ascii() {
            return Err(deny_unknown("the session's client_encoding is not UTF8; airlock reads non-ASCII statements only in UTF8"));
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
        message: format!("airlock: statement denied by rule \"unknown\": statement refused because {why}"),
    }
}

fn kinds(statements: &[Statement]) -> String {
    statements.iter().map(|s| s.kind.name()).collect::<Vec<_>>().join(",")
}

impl Inspector for PolicyInspector {
    fn query(&mut self, sql: &[u8]) -> Verdict {
        self.judge(sql)
    }

    fn parse(&mut self, _name: &[u8], sql: &[u8]) -> Verdict {
        self.judge(sql)
    }

    fn parameter_status(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self.standard_conforming_strings = value == "on",
            "client_encoding" => self.utf8 = utf8_compatible(value),
            _ => {}
        }
    }
}
