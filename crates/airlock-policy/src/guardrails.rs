//! Guardrails: decisions on statements.
//!
//! Order of evaluation for one statement:
//! 1. An `unknown` statement is denied (rule `unknown`), whatever the
//!    guardrails say: what cannot be classified cannot be allowed.
//! 2. On a `read-only` route, any effect other than `read` and
//!    `transaction_control` is denied (rule `read-only`), except
//!    `session_config` when the analyzer found every setting changed
//!    harmless ([`Statement::harmless_config`]).
//! 3. Every guardrail is matched; the strictest matching action wins
//!    (deny, then approve, then review_commit, then allow), the first in
//!    file order among equals.
//!    No match allows.
//!
//! A message with several statements gets the strictest of their
//! decisions, so one denied statement stops the whole message.

use crate::AccessMode;
use crate::hint::Hint;
use crate::statement::{Effect, Effects, Statement, StatementKind};

/// What a guardrail does when it matches. Ordered by strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    /// Run inside the client's transaction; its COMMIT waits for approval
    /// of what the transaction measurably did (SPEC §14).
    Review,
    Approve,
    Deny,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review_commit",
            Action::Approve => "approve",
            Action::Deny => "deny",
        }
    }
}

/// One guardrail. Every condition given must hold; a list condition holds
/// when any of its entries does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrail {
    pub name: String,
    /// Matches a statement having any of these effects.
    pub effects: Effects,
    /// Matches a statement that is, or runs, any of these kinds (a DELETE in
    /// a CTE, the statement under EXPLAIN ANALYZE, an EXECUTEd PREPARE).
    pub statements: Vec<StatementKind>,
    /// `Some(false)`: matches when an UPDATE/DELETE lacks a WHERE clause;
    /// `Some(true)`: when all have one.
    pub where_present: Option<bool>,
    /// Matches when the planner's row estimate exceeds this.
    pub estimated_rows_over: Option<u64>,
    pub action: Action,
    pub message: Option<String>,
    /// What to do instead, for a denial's hint (default: derived from the
    /// match).
    pub hint: Option<String>,
    pub approvers: Vec<String>,
    /// Distinct approvers an `approve` needs.
    pub min_approvals: u32,
}

/// A decision on a statement or a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        rule: String,
        message: String,
    },
    Approve {
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
    },
    /// Runs now; the transaction's COMMIT is held for approval.
    Review {
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
    },
}

impl Decision {
    fn action(&self) -> Action {
        match self {
            Decision::Allow => Action::Allow,
            Decision::Review { .. } => Action::Review,
            Decision::Approve { .. } => Action::Approve,
            Decision::Deny { .. } => Action::Deny,
        }
    }

    /// The stricter of two decisions; `self` on a tie.
    #[must_use]
    pub fn stricter(self, other: Decision) -> Decision {
        if other.action() > self.action() {
            other
        } else {
            self
        }
    }

    /// The rule that decided, when a rule did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow => None,
            Decision::Deny { rule, .. }
            | Decision::Approve { rule, .. }
            | Decision::Review { rule, .. } => Some(rule),
        }
    }
}

/// The planner's row estimate for an UPDATE/DELETE, when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// Not fetched (yet).
    NotFetched,
    /// The estimate could not be had: treated as over every threshold.
    Unavailable,
    Rows(u64),
}

/// The outcome of evaluating one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    Decided(Decision),
    /// A guardrail with `estimated_rows_over` could make the decision
    /// stricter: fetch the estimate and evaluate again.
    NeedsEstimate,
}

/// Compiled guardrails.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    rules: Vec<Guardrail>,
}

/// One matched rule, for `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: String,
    pub action: Action,
}

impl Guardrails {
    pub fn new(rules: Vec<Guardrail>) -> Self {
        Guardrails { rules }
    }

    /// Whether any rule reviews commits (`review_commit`).
    pub fn reviews(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Review)
    }

    /// Whether any rule decides by the planner's row estimate.
    pub fn use_estimates(&self) -> bool {
        self.rules.iter().any(|r| r.estimated_rows_over.is_some())
    }

    /// Evaluates one statement on a route with `mode` (`access_rule` names
    /// the access rule, for the message).
    pub fn evaluate(
        &self,
        stmt: &Statement,
        mode: AccessMode,
        access_rule: &str,
        estimate: Estimate,
    ) -> Evaluation {
        if let Some(d) = built_in(stmt, mode, access_rule) {
            return Evaluation::Decided(d);
        }
        let mut decision = Decision::Allow;
        // The strictest action among rules only the row estimate can decide.
        let mut waiting = Action::Allow;
        for rule in &self.rules {
            match rule_matches(rule, stmt, estimate) {
                Some(true) => decision = decision.stricter(self.decision(rule)),
                Some(false) => {}
                None => waiting = waiting.max(rule.action),
            }
        }
        if waiting > decision.action() {
            Evaluation::NeedsEstimate
        } else {
            Evaluation::Decided(decision)
        }
    }

    /// [`Guardrails::evaluate`] when no (further) estimate can be fetched:
    /// a missing estimate counts as over every threshold.
    pub fn decide(
        &self,
        stmt: &Statement,
        mode: AccessMode,
        access_rule: &str,
        estimate: Estimate,
    ) -> Decision {
        let estimate = match estimate {
            Estimate::NotFetched => Estimate::Unavailable,
            e => e,
        };
        match self.evaluate(stmt, mode, access_rule, estimate) {
            Evaluation::Decided(d) => d,
            Evaluation::NeedsEstimate => {
                unreachable!("rules decide once the estimate is known or unavailable")
            }
        }
    }

    /// Every rule that matches `stmt` (the estimate taken as given), for
    /// `policy explain`.
    pub fn matches(&self, stmt: &Statement, estimate: Estimate) -> Vec<Match> {
        self.rules
            .iter()
            .filter(|r| rule_matches(r, stmt, estimate) == Some(true))
            .map(|r| Match {
                rule: r.name.clone(),
                action: r.action,
            })
            .collect()
    }

    /// The hint of a denial by guardrail `name`: the rule's own `hint`,
    /// else what its match implies would pass. `estimated`: the statement's
    /// rows were estimated (else a row threshold counted it over).
    pub fn hint(&self, name: &str, estimated: bool) -> Hint {
        let Some(rule) = self.rules.iter().find(|r| r.name == name) else {
            return Hint::never(name, "leave out the statements this rule refuses");
        };
        if let Some(h) = &rule.hint {
            return Hint::never(name, h.clone());
        }
        let instead = if rule.where_present == Some(false) {
            "add a WHERE clause that names the rows to change".to_string()
        } else if let Some(n) = rule.estimated_rows_over {
            if estimated {
                format!(
                    "change at most {n} rows per statement: narrow the WHERE clause, or work in batches"
                )
            } else {
                format!(
                    "its rows could not be estimated, which counts as over {n}: send it alone, as a plain statement, with a WHERE clause that changes at most {n} rows"
                )
            }
        } else if !rule.statements.is_empty() {
            let kinds: Vec<&str> = rule.statements.iter().map(|k| k.name()).collect();
            format!(
                "leave out statements of kind {}: rule \"{name}\" refuses them, and no approval lifts it",
                kinds.join(", ")
            )
        } else if !rule.effects.is_empty() {
            format!(
                "leave out statements with effects {}: rule \"{name}\" refuses them, and no approval lifts it",
                rule.effects
            )
        } else {
            format!("rule \"{name}\" refuses every statement here")
        };
        Hint::never(name, instead)
    }

    fn decision(&self, rule: &Guardrail) -> Decision {
        match rule.action {
            Action::Allow => Decision::Allow,
            Action::Approve => Decision::Approve {
                rule: rule.name.clone(),
                approvers: rule.approvers.clone(),
                min_approvals: rule.min_approvals,
            },
            Action::Review => Decision::Review {
                rule: rule.name.clone(),
                approvers: rule.approvers.clone(),
                min_approvals: rule.min_approvals,
            },
            Action::Deny => Decision::Deny {
                rule: rule.name.clone(),
                message: rule
                    .message
                    .clone()
                    .unwrap_or_else(|| "denied by policy".to_string()),
            },
        }
    }
}

/// The rules no policy can turn off.
fn built_in(stmt: &Statement, mode: AccessMode, access_rule: &str) -> Option<Decision> {
    if stmt.kind == StatementKind::Unknown {
        let why = stmt
            .unknown_reason
            .as_deref()
            .unwrap_or("it cannot be classified");
        return Some(Decision::Deny {
            rule: "unknown".into(),
            message: format!("statement refused because {why}"),
        });
    }
    let mut allowed = Effects::of(&[Effect::Read, Effect::TransactionControl]);
    if stmt.config_is_harmless() {
        allowed.insert(Effect::SessionConfig);
        allowed.insert(Effect::PlannerCost);
    }
    if mode == AccessMode::ReadOnly {
        let forbidden = stmt.effects.minus(allowed);
        if !forbidden.is_empty() {
            return Some(Decision::Deny {
                rule: "read-only".into(),
                message: format!(
                    "access rule \"{access_rule}\" is read-only; this statement has effects: {forbidden}"
                ),
            });
        }
    }
    None
}

/// `Some(true)` if `rule` matches, `Some(false)` if it does not, `None` if
/// only the row estimate (not yet fetched) can tell.
fn rule_matches(rule: &Guardrail, stmt: &Statement, estimate: Estimate) -> Option<bool> {
    if !rule.effects.is_empty() && !rule.effects.intersects(stmt.effects) {
        return Some(false);
    }
    if !rule.statements.is_empty()
        && !rule
            .statements
            .iter()
            .any(|k| *k == stmt.kind || stmt.nested.contains(k))
    {
        return Some(false);
    }
    if let Some(present) = rule.where_present
        && stmt.has_where != Some(present)
    {
        return Some(false);
    }
    match (rule.estimated_rows_over, estimate) {
        (None, _) => Some(true),
        // Only statements that modify rows are estimated.
        (Some(_), _) if !stmt.modifies_rows() => Some(false),
        (Some(_), Estimate::NotFetched) => None,
        (Some(_), Estimate::Unavailable) => Some(true),
        (Some(limit), Estimate::Rows(n)) => Some(n > limit),
    }
}

/// The strictest of a message's statement decisions (Allow when empty).
pub fn strictest(decisions: impl IntoIterator<Item = Decision>) -> Decision {
    decisions
        .into_iter()
        .fold(Decision::Allow, Decision::stricter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::Effect::*;

    fn stmt(kind: StatementKind, effects: &[Effect], has_where: Option<bool>) -> Statement {
        Statement {
            kind,
            nested: Vec::new(),
            effects: Effects::of(effects),
            relations: Vec::new(),
            functions: Vec::new(),
            has_where,
            inner: None,
            unknown_reason: None,
            syntax_error: None,
            pinned: None,
            name: None,
            span: (0, 0),
            lineage: Default::default(),
            harmless_config: false,
            disclosure: crate::statement::Disclosure::Nothing,
            statement_timeout: None,
            transaction: None,
        }
    }

    fn rule(name: &str, action: Action) -> Guardrail {
        Guardrail {
            name: name.into(),
            effects: Effects::EMPTY,
            statements: Vec::new(),
            where_present: None,
            estimated_rows_over: None,
            action,
            message: None,
            hint: None,
            approvers: vec!["dba".into()],
            min_approvals: 1,
        }
    }

    /// The guardrails of SPEC §3.
    fn spec_rules() -> Guardrails {
        Guardrails::new(vec![
            Guardrail {
                effects: Effects::of(&[DropDatabase, AlterSystem, CopyProgram, UnsafeFunction]),
                message: Some("not allowed through airlock".into()),
                hint: None,
                ..rule("no-drop-database", Action::Deny)
            },
            Guardrail {
                effects: Effects::of(&[Ddl, Truncate]),
                ..rule("review-schema-changes", Action::Approve)
            },
            Guardrail {
                statements: vec![StatementKind::Update, StatementKind::Delete],
                where_present: Some(false),
                ..rule("review-unbounded-writes", Action::Approve)
            },
            Guardrail {
                statements: vec![StatementKind::Update, StatementKind::Delete],
                estimated_rows_over: Some(1000),
                ..rule("review-large-writes", Action::Approve)
            },
        ])
    }

    fn rule_of(e: Evaluation) -> Option<String> {
        match e {
            Evaluation::Decided(d) => d.rule().map(str::to_string),
            Evaluation::NeedsEstimate => Some("?estimate".into()),
        }
    }

    #[test]
    fn decisions() {
        use StatementKind as K;
        let g = spec_rules();
        let mut cte_delete = stmt(K::Select, &[Read, Write], Some(false));
        cte_delete.nested = vec![K::Delete];
        let cases: Vec<(Statement, AccessMode, Estimate, Option<&str>)> = vec![
            (
                stmt(K::Select, &[Read], None),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                None,
            ),
            (
                stmt(K::Select, &[Read], None),
                AccessMode::ReadOnly,
                Estimate::NotFetched,
                None,
            ),
            (
                stmt(K::Insert, &[Write], None),
                AccessMode::ReadOnly,
                Estimate::NotFetched,
                Some("read-only"),
            ),
            (
                stmt(K::Insert, &[Write], None),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                None,
            ),
            (
                stmt(K::Transaction, &[TransactionControl], None),
                AccessMode::ReadOnly,
                Estimate::NotFetched,
                None,
            ),
            (
                stmt(K::Transaction, &[TransactionControl, SessionConfig], None),
                AccessMode::ReadOnly,
                Estimate::NotFetched,
                Some("read-only"),
            ),
            (
                stmt(K::Ddl, &[Ddl, Drop, DropDatabase], None),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("no-drop-database"),
            ),
            (
                stmt(K::Ddl, &[Ddl], None),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("review-schema-changes"),
            ),
            (
                stmt(K::Delete, &[Write], Some(false)),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("review-unbounded-writes"),
            ),
            (
                cte_delete,
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("review-unbounded-writes"),
            ),
            // With a WHERE clause only the estimate can tell.
            (
                stmt(K::Delete, &[Write], Some(true)),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("?estimate"),
            ),
            (
                stmt(K::Delete, &[Write], Some(true)),
                AccessMode::ReadWrite,
                Estimate::Rows(10),
                None,
            ),
            (
                stmt(K::Delete, &[Write], Some(true)),
                AccessMode::ReadWrite,
                Estimate::Rows(5000),
                Some("review-large-writes"),
            ),
            (
                stmt(K::Delete, &[Write], Some(true)),
                AccessMode::ReadWrite,
                Estimate::Unavailable,
                Some("review-large-writes"),
            ),
            (
                stmt(K::Unknown, &[], None),
                AccessMode::ReadWrite,
                Estimate::NotFetched,
                Some("unknown"),
            ),
        ];
        for (s, mode, est, want) in cases {
            let got = rule_of(g.evaluate(&s, mode, "r", est));
            assert_eq!(
                got.as_deref(),
                want,
                "{:?} {:?} {mode:?} {est:?}",
                s.kind,
                s.effects
            );
        }
    }

    #[test]
    fn strictest_wins_and_first_among_equals() {
        let g = Guardrails::new(vec![
            Guardrail {
                effects: Effects::of(&[Write]),
                ..rule("allow-writes", Action::Allow)
            },
            Guardrail {
                effects: Effects::of(&[Write]),
                ..rule("approve-1", Action::Approve)
            },
            Guardrail {
                effects: Effects::of(&[Write]),
                ..rule("approve-2", Action::Approve)
            },
        ]);
        let e = g.evaluate(
            &stmt(StatementKind::Insert, &[Write], None),
            AccessMode::ReadWrite,
            "r",
            Estimate::NotFetched,
        );
        assert_eq!(rule_of(e).as_deref(), Some("approve-1"));
        let denied = Decision::Deny {
            rule: "d".into(),
            message: "m".into(),
        };
        let approve = Decision::Approve {
            rule: "a".into(),
            approvers: vec![],
            min_approvals: 1,
        };
        assert_eq!(
            strictest([Decision::Allow, approve.clone(), denied.clone(), approve]),
            denied
        );
        assert_eq!(strictest([]), Decision::Allow);
    }

    #[test]
    fn estimate_not_needed_when_already_strictest() {
        let g = Guardrails::new(vec![
            Guardrail {
                effects: Effects::of(&[Write]),
                ..rule("deny-writes", Action::Deny)
            },
            Guardrail {
                estimated_rows_over: Some(1),
                ..rule("big", Action::Approve)
            },
        ]);
        let e = g.evaluate(
            &stmt(StatementKind::Delete, &[Write], Some(true)),
            AccessMode::ReadWrite,
            "r",
            Estimate::NotFetched,
        );
        assert_eq!(rule_of(e).as_deref(), Some("deny-writes"));
    }
}
