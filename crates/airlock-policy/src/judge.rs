//! The judge: the one place a message's statements are decided.
//!
//! Every door (the PostgreSQL door's Query, Parse, Bind and FunctionCall)
//! and `airlock policy explain` ask [`judge`]; none folds decisions of its
//! own. It combines, in this order:
//! 1. the guardrails (built-in `unknown` and `read-only`, then the strictest
//!    matching rule; several statements get the strictest of their
//!    decisions), with a statement that pins a unique key counted as one row;
//! 2. whether a row estimate is still missing, and what then happens
//!    ([`Fetch`]);
//! 3. whether an `approve` can be held (approvals configured; the door able
//!    to wait);
//! 4. the masking checks: what masking cannot make safe.
//!
//! What only the door can see (its encoding, its prepared-statement names,
//! whether a value looks like a masking placeholder) it reports as
//! [`Facts`]; the judge decides what they mean.

use crate::access::{AccessMode, Writes};
use crate::bounds::UniqueKeys;
use crate::guardrails::{Decision, Estimate, Evaluation, Guardrails, strictest};
use crate::hint::Hint;
use crate::masking::{MaskingPolicy, PLACEHOLDER, SensitiveCatalog};
use crate::statement::{Disclosure, Effect, Effects, Statement, StatementKind, TimeoutChange};

/// What the judge knows of a session.
#[derive(Clone, Copy)]
pub struct Session<'a> {
    pub guardrails: &'a Guardrails,
    pub mode: AccessMode,
    /// The access rule that granted the route, for messages.
    pub access_rule: &'a str,
    /// Whether statements needing approval can be held (an approvals
    /// service is configured); otherwise they are refused.
    pub approvals: bool,
    /// Result masking, unless the session is exempt or nothing is masked.
    pub masking: Option<Masked<'a>>,
    /// The connection's unique keys, while they are trusted.
    pub keys: Option<&'a UniqueKeys>,
    /// On a read-only route: how the principal could write instead, for
    /// the hint of a refused write ([`Route::writes`](crate::Route::writes)).
    pub writes: Option<&'a Writes>,
    /// On a schema-only route: the fewest rows an aggregate's group must
    /// hold ([`Route::schema_only`](crate::Route::schema_only)).
    pub schema_only: Option<u32>,
    /// The route's ceiling on the statement timeout
    /// ([`Route::statement_timeout`](crate::Route::statement_timeout)).
    pub statement_timeout: Option<std::time::Duration>,
    /// The route's budgets cap estimated planner cost (`max_cost`): each
    /// statement that runs a plan needs its estimate, which the door
    /// charges.
    pub costed: bool,
}

/// A masked session's rules and the connection's catalog.
#[derive(Clone, Copy)]
pub struct Masked<'a> {
    pub policy: &'a MaskingPolicy,
    pub catalog: &'a SensitiveCatalog,
}

/// What happens when a rule's row estimate has not been fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The door can fetch it now: [`Ruling::NeedsEstimate`].
    Now,
    /// The statement runs later, with parameters not known yet (a Parse):
    /// allowed now, estimated at each execution.
    AtExecution,
    /// None can be had: a missing estimate counts as over every threshold.
    Never,
}

/// One question to the judge.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub statements: &'a [Statement],
    pub estimate: Estimate,
    pub fetch: Fetch,
    /// Whether the door can wait for an approver (a FunctionCall cannot).
    pub can_hold: bool,
    /// Whether the door can run a statement and hold its transaction's
    /// COMMIT for review ([`Ruling::Review`]): the PostgreSQL door's Query
    /// and Parse.
    pub can_review: bool,
    /// Whether the masking checks run (a Bind's ran at its Parse).
    pub masking_checks: bool,
    /// The result cannot be masked (a FunctionCall's).
    pub unmaskable_result: bool,
}

impl<'a> Ask<'a> {
    /// A message run as it is sent (a simple Query).
    pub fn message(statements: &'a [Statement], estimate: Estimate) -> Ask<'a> {
        Ask {
            statements,
            estimate,
            fetch: Fetch::Now,
            can_hold: true,
            can_review: false,
            masking_checks: true,
            unmaskable_result: false,
        }
    }
}

/// What only a door can see about a message.
pub trait Facts {
    /// A SQL PREPARE in the message names a statement already prepared
    /// (in the session, or earlier in the same message).
    fn prepares_again(&self) -> bool {
        false
    }
    /// `name` was prepared with the wire protocol's own Parse.
    fn protocol_name(&self, _name: &str) -> bool {
        false
    }
    /// The client encoding keeps ASCII bytes ASCII, so COPY rows can be
    /// split on delimiter bytes.
    fn copy_splittable(&self) -> bool {
        true
    }
    /// The message's text or values hold something that looks like a
    /// masking placeholder. Asked only of a masked message that writes.
    fn writes_placeholder(&self) -> bool {
        false
    }
}

/// A door with nothing to report.
pub struct NoFacts;
impl Facts for NoFacts {}

/// The judge's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    Allow {
        /// The statement whose estimate each execution fetches first
        /// ([`Fetch::AtExecution`]).
        estimate_at_execution: Option<usize>,
    },
    Deny(Denial),
    Approve {
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
        /// The estimate approvers see.
        estimate: Option<u64>,
    },
    /// Run it inside the client's transaction block ([`crate::review`]);
    /// the block's COMMIT waits for approval of its measured effect.
    Review {
        rule: String,
        approvers: Vec<String>,
        min_approvals: u32,
    },
    /// Fetch the row estimate of statement `index` and ask again.
    NeedsEstimate {
        index: usize,
    },
}

/// Why a message is refused, with the client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub by: DeniedBy,
    pub message: String,
    /// What the client could do instead.
    pub hint: Hint,
}

/// Who refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedBy {
    /// A guardrail (or the built-in `unknown` or `read-only`).
    Rule(String),
    /// Rule `rule` needs approval, which cannot be had here.
    Unapprovable(String),
    /// Masking cannot make it safe.
    Masking,
}

impl Denial {
    /// The server's own error for a refusal by `unknown` of a text that does
    /// not parse: every door answers it as the server would (PostgreSQL's
    /// `42601` with its position), not as a policy refusal.
    pub fn syntax_error<'s>(
        &self,
        statements: &'s [Statement],
    ) -> Option<&'s crate::statement::SyntaxError> {
        (self.rule() == Some("unknown"))
            .then(|| statements.iter().find_map(|s| s.syntax_error.as_deref()))
            .flatten()
    }

    /// The rule that refused, when one did.
    pub fn rule(&self) -> Option<&str> {
        match &self.by {
            DeniedBy::Rule(r) | DeniedBy::Unapprovable(r) => Some(r),
            DeniedBy::Masking => None,
        }
    }
}

impl Ruling {
    /// The guardrail decision it amounts to (a masking refusal has no
    /// rule; one that could not be held stays an approval).
    pub fn decision(&self) -> Decision {
        match self {
            Ruling::Allow { .. } | Ruling::NeedsEstimate { .. } => Decision::Allow,
            Ruling::Deny(d) => match &d.by {
                DeniedBy::Rule(rule) => Decision::Deny {
                    rule: rule.clone(),
                    message: d.message.clone(),
                },
                DeniedBy::Unapprovable(rule) => Decision::Approve {
                    rule: rule.clone(),
                    approvers: Vec::new(),
                    min_approvals: 0,
                },
                DeniedBy::Masking => Decision::Deny {
                    rule: "masking".into(),
                    message: d.message.clone(),
                },
            },
            Ruling::Approve {
                rule,
                approvers,
                min_approvals,
                ..
            } => Decision::Approve {
                rule: rule.clone(),
                approvers: approvers.clone(),
                min_approvals: *min_approvals,
            },
            Ruling::Review {
                rule,
                approvers,
                min_approvals,
            } => Decision::Review {
                rule: rule.clone(),
                approvers: approvers.clone(),
                min_approvals: *min_approvals,
            },
        }
    }
}

/// Judges one message.
pub fn judge(session: &Session<'_>, ask: &Ask<'_>, facts: &dyn Facts) -> Ruling {
    let statements = ask.statements;
    if session.masking.is_some() && ask.masking_checks && facts.prepares_again() {
        return masking_denial(
            "a statement of that name is already prepared; DEALLOCATE it first",
            "DEALLOCATE the statement first, or prepare it under another name",
        );
    }
    if let Some(ceiling) = session.statement_timeout
        && let Some(denial) = statements.iter().find_map(|s| {
            // A DO block or a procedure can change it where no analysis
            // sees.
            let unseen = s.effects.contains(Effect::DynamicSql) || s.kind == StatementKind::Call;
            let change = if unseen {
                Some(TimeoutChange::Unknown)
            } else {
                s.statement_timeout
            };
            timeout_refusal(ceiling, change?)
        })
    {
        return Ruling::Deny(denial);
    }
    if let Some(k) = session.schema_only
        && let Some(denial) = schema_only_refusal(statements, k, session.masking.map(|m| m.catalog))
    {
        return Ruling::Deny(denial);
    }
    // A statement that pins a unique key changes at most one row: no
    // estimate is needed. Not after a schema change in the same message
    // (a new relation may shadow a keyed one).
    let ddl = statements.iter().any(|s| s.effects.contains(Effect::Ddl));
    let fetched = match (ask.estimate, ask.fetch) {
        (Estimate::NotFetched, Fetch::Never) => Estimate::Unavailable,
        (e, _) => e,
    };
    let estimate_of = |s: &Statement| match session.keys {
        Some(k) if !ddl && k.at_most_one_row(s) => Estimate::Rows(1),
        _ => fetched,
    };
    let estimate = match statements {
        [s] => estimate_of(s),
        _ => fetched,
    };
    let (g, mode, rule) = (session.guardrails, session.mode, session.access_rule);
    let mut estimate_at_execution = None;
    let decision = match statements {
        // Only a single statement gets a real estimate: EXPLAIN takes one.
        [s] if estimate == Estimate::NotFetched => match g.evaluate(s, mode, rule, estimate) {
            Evaluation::Decided(d) => d,
            Evaluation::NeedsEstimate => match ask.fetch {
                Fetch::Now => return Ruling::NeedsEstimate { index: 0 },
                // Runs nothing now: decided at each execution.
                Fetch::AtExecution | Fetch::Never => {
                    estimate_at_execution = Some(0);
                    Decision::Allow
                }
            },
        },
        _ => strictest(
            statements
                .iter()
                .map(|s| g.decide(s, mode, rule, estimate_of(s))),
        ),
    };
    // A reviewed statement runs before anyone approves it, and its
    // measurement and an estimate cannot share its message's lookups:
    // under `max_cost`, one that runs a plan is refused.
    if session.costed
        && let Decision::Review { rule, .. } = &decision
        && statements.iter().any(costs)
    {
        return Ruling::Deny(cost_denial(
            &format!(
                "rule \"{rule}\" reviews its commit, and a reviewed statement cannot have its cost estimated"
            ),
            "run it under an access rule without max_cost",
        ));
    }
    if session.costed && matches!(decision, Decision::Allow | Decision::Approve { .. }) {
        match cost_need(statements, ask) {
            None => {}
            Some(Ok(Fetch::Now)) => return Ruling::NeedsEstimate { index: 0 },
            Some(Ok(_)) => estimate_at_execution = Some(0),
            Some(Err(denial)) => return Ruling::Deny(*denial),
        }
    }
    match decision {
        Decision::Allow => {
            if ask.unmaskable_result && session.masking.is_some_and(|m| m.catalog.any_sensitive) {
                return masking_denial(
                    "a FunctionCall's result cannot be masked; call the function in a SQL statement",
                    "call the function in a SELECT, whose result is masked",
                );
            }
            if let Some(denial) = masking_refusal(session, ask, facts) {
                return Ruling::Deny(denial);
            }
            Ruling::Allow {
                estimate_at_execution,
            }
        }
        Decision::Deny { rule, message } => Ruling::Deny(Denial {
            message: denied_by(&rule, &message),
            // The built-in rules decide before any guardrail (which may
            // share their names).
            hint: match rule.as_str() {
                "unknown" if statements.iter().any(|s| s.kind == StatementKind::Unknown) => {
                    unknown_hint()
                }
                "read-only" if mode == AccessMode::ReadOnly => Writes::hint(session.writes),
                _ => g.hint(&rule, matches!(estimate, Estimate::Rows(_))),
            },
            by: DeniedBy::Rule(rule),
        }),
        Decision::Review {
            rule,
            approvers,
            min_approvals,
        } => {
            if !ask.can_review {
                return Ruling::Deny(unreviewable(&rule));
            }
            if !session.approvals {
                return Ruling::Deny(no_approvals(rule));
            }
            if let Some(denial) = masking_refusal(session, ask, facts) {
                return Ruling::Deny(denial);
            }
            Ruling::Review {
                rule,
                approvers,
                min_approvals,
            }
        }
        Decision::Approve {
            rule,
            approvers,
            min_approvals,
        } => {
            if !ask.can_hold {
                return Ruling::Deny(Denial {
                    message: format!(
                        "airlock: approval required (rule \"{rule}\"), which a FunctionCall cannot wait for; call the function in a SQL statement"
                    ),
                    hint: Hint::never(
                        &rule,
                        "call the function in a SQL statement, which can be held for approval",
                    ),
                    by: DeniedBy::Unapprovable(rule),
                });
            }
            if !session.approvals {
                return Ruling::Deny(no_approvals(rule));
            }
            // Approvers see the planner's estimate of an UPDATE or DELETE.
            if let ([s], Estimate::NotFetched, Fetch::Now) = (statements, estimate, ask.fetch)
                && matches!(s.kind, StatementKind::Update | StatementKind::Delete)
            {
                return Ruling::NeedsEstimate { index: 0 };
            }
            if let Some(denial) = masking_refusal(session, ask, facts) {
                return Ruling::Deny(denial);
            }
            Ruling::Approve {
                rule,
                approvers,
                min_approvals,
                estimate: match estimate {
                    Estimate::Rows(n) => Some(n),
                    _ => None,
                },
            }
        }
    }
}

/// The refusal of a statement rule `rule` holds (for approval, or its
/// COMMIT for review) on a gateway without an approvals store.
fn no_approvals(rule: String) -> Denial {
    Denial {
        message: format!(
            "airlock: approval required (rule \"{rule}\"), but approvals are not configured; the statement was not run"
        ),
        hint: Hint::never(
            &rule,
            "this gateway cannot hold statements for approval (no approvals store); run it through one that can",
        ),
        by: DeniedBy::Unapprovable(rule),
    }
}

/// Whether a statement runs a plan whose cost `max_cost` charges: all but
/// the kinds known to run none (settings, transaction control, `SHOW`,
/// `LISTEN`, `PREPARE`, `LOCK`, `TRUNCATE`, schema changes that read no
/// table, a plain `EXPLAIN`, a cursor's `FETCH`, charged at its
/// `DECLARE`), so a kind not known fails closed. What `EXPLAIN` cannot
/// estimate (`COPY`, `CALL`, `DO`, `EXPLAIN ANALYZE`, `VACUUM`, `REFRESH`)
/// is then refused under it.
pub fn costs(s: &Statement) -> bool {
    use StatementKind as K;
    if s.effects.contains(Effect::DynamicSql) {
        return true;
    }
    match s.kind {
        K::SetConfig
        | K::SetRole
        | K::Show
        | K::Transaction
        | K::Listen
        | K::Notify
        | K::Prepare
        | K::Deallocate
        | K::Empty
        | K::Grant
        | K::Lock
        | K::Truncate => false,
        K::Ddl => s.effects.contains(Effect::Read),
        K::Explain => s.disclosure != crate::Disclosure::Nothing,
        K::Cursor => matches!(s.lineage.cursor, Some(crate::lineage::Cursor::Declare(_))),
        _ => true,
    }
}

/// What `max_cost` needs of a message: nothing (no statement runs a
/// plan, or its estimate is in), its estimate fetched (`Fetch::Now`) or at
/// each execution, or a refusal (more than one such statement: `EXPLAIN`
/// takes one; or no estimate to be had).
fn cost_need(statements: &[Statement], ask: &Ask<'_>) -> Option<Result<Fetch, Box<Denial>>> {
    let refused = |why: &str, instead: &str| Some(Err(Box::new(cost_denial(why, instead))));
    if statements
        .iter()
        .any(|s| s.effects.contains(Effect::PlannerCost))
    {
        return refused(
            "it changes a planner cost setting, on which the estimates this budget charges rely",
            "leave the planner's cost settings as the server sets them",
        );
    }
    let costed = statements.iter().filter(|s| costs(s)).count();
    match (costed, statements.len(), ask.estimate, ask.fetch) {
        (0, _, _, _) | (1, 1, Estimate::Rows(_), _) => None,
        (1, 1, Estimate::NotFetched, Fetch::Now | Fetch::AtExecution) => Some(Ok(ask.fetch)),
        (1, 1, _, _) => refused(
            "its planner cost could not be estimated (EXPLAIN of it failed, or it is a statement EXPLAIN does not take: COPY, CALL, DO, EXPLAIN ANALYZE)",
            "send a query or a write EXPLAIN can estimate on its own, valid as it stands",
        ),
        _ => refused(
            "a message of several statements cannot have its cost estimated (EXPLAIN takes one statement)",
            "send each statement in a message of its own",
        ),
    }
}

/// A refusal by `max_cost`: `why`, and what to do `instead`.
fn cost_denial(why: &str, instead: &str) -> Denial {
    const RULE: &str = "budgets.max_cost";
    Denial {
        message: format!("airlock: statement denied by rule \"{RULE}\": {why}"),
        hint: Hint::never(RULE, instead),
        by: DeniedBy::Rule(RULE.into()),
    }
}

/// The refusal of a statement rule `rule` reviews the commit of, where the
/// door cannot run it in a transaction and hold the COMMIT (MCP, a MySQL
/// prepared statement).
pub fn unreviewable(rule: &str) -> Denial {
    Denial {
        message: format!(
            "airlock: rule \"{rule}\" reviews the commit of this statement, which only a client on the wire can have (a PostgreSQL query, or a MySQL text query); the statement was not run"
        ),
        hint: Hint::never(
            rule,
            "connect with a PostgreSQL or MySQL driver and run it as a query inside BEGIN … COMMIT; or leave it out",
        ),
        by: DeniedBy::Unapprovable(rule.to_string()),
    }
}

/// Judges the values an execution binds to `statements` (`None`: a
/// statement airlock did not see prepared, which may write): masking
/// placeholders may not be written back.
pub fn bound(
    session: &Session<'_>,
    statements: Option<&[Statement]>,
    facts: &dyn Facts,
) -> Option<Denial> {
    session.masking?;
    let writes = statements.is_none_or(|s| s.iter().any(|s| s.effects.contains(Effect::Write)));
    (writes && facts.writes_placeholder()).then(masked_write)
}

/// Whether a message may change how the next one parses (a setting, or SQL
/// the analyzer cannot see): a door then waits for its answer before
/// judging the next.
pub fn may_reconfigure(statements: &[Statement]) -> bool {
    let may = Effects::of(&[Effect::SessionConfig, Effect::DynamicSql]);
    statements.iter().any(|s| s.effects.intersects(may))
}

/// Judges a session setting the client asked for at login (PostgreSQL's
/// startup parameters), which no statement carries: a read-only route takes
/// only settings the door's analyzer deems `harmless`, as it does for SET.
/// `why` is the dialect's reason, for the message.
pub fn setting(
    mode: AccessMode,
    name: &str,
    value: &str,
    harmless: bool,
    why: &str,
) -> Option<Denial> {
    (mode == AccessMode::ReadOnly && !harmless).then(|| Denial {
        message: format!(
            "airlock: startup parameter \"{name}\" = \"{value}\" is not allowed on a read-only route: {why}"
        ),
        by: DeniedBy::Rule("read-only".into()),
        hint: Hint::never(
            "read-only",
            format!("connect without the startup parameter \"{name}\""),
        ),
    })
}

/// The refusal of a statement that cannot be classified, for a reason a
/// door found before analysis (its encoding, say).
pub fn unknown(why: &str) -> Denial {
    Denial {
        message: denied_by("unknown", &format!("statement refused because {why}")),
        by: DeniedBy::Rule("unknown".into()),
        hint: unknown_hint(),
    }
}

/// What to do about a statement airlock cannot classify.
fn unknown_hint() -> Hint {
    Hint::never(
        "unknown",
        "airlock runs only what it can parse and classify: rewrite it as plain SQL, one statement at a time",
    )
}

/// The rule a statement timeout over its route's ceiling is refused under.
pub const TIMEOUT_RULE: &str = "statement-timeout";

/// The refusal of a change of the statement timeout past `ceiling`: a
/// longer one, zero (no limit), or one that cannot be read. A reset goes
/// back to the session's start, which the door keeps within the ceiling.
pub fn timeout_refusal(ceiling: std::time::Duration, change: TimeoutChange) -> Option<Denial> {
    let over = match change {
        TimeoutChange::Reset => return None,
        TimeoutChange::To(d) if d.is_zero() => "0 turns it off".to_string(),
        TimeoutChange::To(d) if d > ceiling => {
            format!("{} is longer", humantime::format_duration(d))
        }
        TimeoutChange::To(_) => return None,
        TimeoutChange::Unknown => "its value cannot be read".to_string(),
    };
    let ceiling = humantime::format_duration(ceiling);
    Some(Denial {
        message: denied_by(
            TIMEOUT_RULE,
            &format!("this access rule caps statement_timeout at {ceiling}, and {over}"),
        ),
        hint: Hint::never(
            TIMEOUT_RULE,
            format!("set statement_timeout to a literal between 1ms and {ceiling}, or RESET it"),
        ),
        by: DeniedBy::Rule(TIMEOUT_RULE.into()),
    })
}

/// The rule a schema-only route's refusals are recorded under.
pub const SCHEMA_ONLY_RULE: &str = "schema-only";

/// On a schema-only route, the first statement that would show individual
/// row values, refused. The analyzer trusts an unqualified name that looks
/// built-in (`pg_class`, `lower`); `catalog` (the connection's) tells
/// whether a user's relation or function of that name exists, which the
/// name could then mean: refused without one.
fn schema_only_refusal(
    statements: &[Statement],
    k: u32,
    catalog: Option<&SensitiveCatalog>,
) -> Option<Denial> {
    // What is not understood gets the built-in `unknown` refusal (and a
    // text that does not parse, the server's own syntax error).
    if statements.iter().any(|s| s.kind == StatementKind::Unknown) {
        return None;
    }
    let shadowed = |s: &Statement| {
        // Only the unqualified names it took for built-ins.
        let relations = s
            .relations
            .iter()
            .filter(|r| r.schema.is_none() && r.name.starts_with("pg_"));
        let functions = s.functions.iter().filter(|f| !f.contains('.'));
        match catalog {
            Some(c) => relations
                .map(|r| r.name.as_str())
                .chain(functions.map(String::as_str))
                .any(|n| c.shadows(n)),
            None => relations.count() > 0,
        }
    };
    let why = statements.iter().find_map(|s| match s.disclosure {
        Disclosure::Rows(why) => Some(why),
        Disclosure::Catalog | Disclosure::Aggregates if shadowed(s) => Some(
            "it names a relation or function unqualified that one of yours shares a name with (write pg_catalog.name for the built-in)",
        ),
        _ => None,
    })?;
    Some(Denial {
        by: DeniedBy::Rule(SCHEMA_ONLY_RULE.into()),
        message: denied_by(
            SCHEMA_ONLY_RULE,
            &format!("this access shows the schema, not the data: {why}"),
        ),
        hint: Hint::never(
            SCHEMA_ONLY_RULE,
            format!(
                "read the catalog (information_schema, pg_catalog), EXPLAIN without ANALYZE, or aggregate one table: count, sum, avg, stddev or variance of columns, grouped by plain columns if at all; groups of fewer than {k} rows are left out"
            ),
        ),
    })
}

/// The refusal of a message whose aggregates the door could not rewrite
/// to [`group_floor`] (it does not parse or deparse as it was judged, or
/// cannot be sent in the session's encoding).
pub fn unfloored() -> Denial {
    unknown("its aggregates could not be rewritten to leave out small groups")
}

/// On a schema-only route, the fewest rows each group of the message's
/// aggregates must hold, when it has any ([`Disclosure::Aggregates`]): the
/// door rewrites the text so (`airlock_sql::disclosure::at_least`) before
/// it runs, and refuses it when it cannot.
pub fn group_floor(schema_only: Option<u32>, statements: &[Statement]) -> Option<u32> {
    schema_only.filter(|_| {
        statements
            .iter()
            .any(|s| s.disclosure == Disclosure::Aggregates)
    })
}

/// The client's message for a statement rule `rule` denies.
fn denied_by(rule: &str, message: &str) -> String {
    format!("airlock: statement denied by rule \"{rule}\": {message}")
}

fn masking_denial(why: &str, instead: &str) -> Ruling {
    Ruling::Deny(masking(why, instead))
}

fn masking(why: &str, instead: &str) -> Denial {
    Denial {
        by: DeniedBy::Masking,
        message: format!("airlock: statement denied by masking: {why}"),
        hint: Hint::never("masking", instead),
    }
}

fn masked_write() -> Denial {
    masking(
        &format!(
            "it writes a value that looks like a masking placeholder (\"{PLACEHOLDER}\" or a hash_ pseudonym); writing masked values back would corrupt the data"
        ),
        "write real values, not the masked ones you read; or change rows in place (UPDATE … SET col = expression) without reading them",
    )
}

/// What masking cannot make safe in an allowed (or approvable) message.
fn masking_refusal(session: &Session<'_>, ask: &Ask<'_>, facts: &dyn Facts) -> Option<Denial> {
    let m = session.masking.filter(|_| ask.masking_checks)?;
    let statements = ask.statements;
    for s in statements {
        if let Err(refusal) = m.policy.check(m.catalog, s) {
            return Some(masking(&refusal.0, refusal.1));
        }
        if !m.catalog.any_sensitive {
            continue;
        }
        // SQL airlock cannot see (DO, function and trigger bodies, SQL
        // passed as text) could read masked columns out of lineage's sight;
        // DDL on a relation with masked columns could copy them (a
        // generated column, a rule).
        if s.effects.contains(Effect::DynamicSql) {
            return Some(masking(
                "it runs SQL airlock cannot see into (DO, a function body, SQL text), which could read masked columns",
                "write the SQL out as plain statements, which airlock can see into",
            ));
        }
        if s.effects.contains(Effect::Ddl) && m.policy.touches_sensitive(m.catalog, &s.relations) {
            return Some(masking(
                "it changes the schema of a relation with masked columns",
                "schema changes to relations with masked columns need a role whose results are not masked",
            ));
        }
        if s.lineage.copy.is_some() && !facts.copy_splittable() {
            return Some(masking(
                "COPY output cannot be masked in this client_encoding; use UTF8 or a single-byte encoding",
                "SET client_encoding TO 'UTF8', then COPY again",
            ));
        }
    }
    // A SQL PREPARE may not replace, behind the door's back, a statement the
    // wire protocol prepared (its results would be described with the wrong
    // lineage). DEALLOCATE alone is harmless: executing the name then fails.
    let shadows = |s: &Statement| {
        s.kind == StatementKind::Prepare
            && s.name.as_deref().is_some_and(|n| facts.protocol_name(n))
    };
    if statements.iter().any(shadows) {
        return Some(masking(
            "SQL PREPARE may not reuse the name of a statement prepared with the extended protocol in a masked session",
            "PREPARE it under a name of its own",
        ));
    }
    let writes = statements.iter().any(|s| s.effects.contains(Effect::Write));
    (writes && facts.writes_placeholder()).then(masked_write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::{Action, Guardrail};

    fn stmt(kind: StatementKind, effects: &[Effect]) -> Statement {
        let mut s = Statement::unknown("", (0, 0));
        s.kind = kind;
        s.unknown_reason = None;
        s.effects = Effects::of(effects);
        if kind == StatementKind::Update {
            s.has_where = Some(true);
        }
        s
    }

    fn rails() -> Guardrails {
        Guardrails::new(rail_rules())
    }

    fn rail_rules() -> Vec<Guardrail> {
        vec![
            Guardrail {
                name: "no-drop".into(),
                effects: Effects::of(&[Effect::DropDatabase]),
                statements: vec![],
                where_present: None,
                estimated_rows_over: None,
                action: Action::Deny,
                message: Some("never".into()),
                hint: None,
                approvers: vec![],
                min_approvals: 1,
            },
            Guardrail {
                name: "big-writes".into(),
                effects: Effects::default(),
                statements: vec![StatementKind::Update, StatementKind::Delete],
                where_present: None,
                estimated_rows_over: Some(10),
                action: Action::Approve,
                message: None,
                hint: None,
                approvers: vec!["dba".into()],
                min_approvals: 1,
            },
        ]
    }

    fn session(g: &Guardrails, approvals: bool) -> Session<'_> {
        Session {
            guardrails: g,
            mode: AccessMode::ReadWrite,
            access_rule: "agents",
            writes: None,
            schema_only: None,
            statement_timeout: None,
            approvals,
            masking: None,
            keys: None,
            costed: false,
        }
    }

    #[test]
    fn commit_review_is_given_only_to_a_door_that_can_hold_a_commit() {
        let g = Guardrails::new(vec![Guardrail {
            name: "review".into(),
            effects: Effects::default(),
            statements: vec![StatementKind::Delete],
            where_present: None,
            estimated_rows_over: None,
            action: Action::Review,
            message: None,
            hint: None,
            approvers: vec!["dba".into()],
            min_approvals: 2,
        }]);
        let delete = [stmt(StatementKind::Delete, &[Effect::Write])];
        let ask = Ask {
            can_review: true,
            ..Ask::message(&delete, Estimate::NotFetched)
        };
        assert_eq!(
            judge(&session(&g, true), &ask, &NoFacts),
            Ruling::Review {
                rule: "review".into(),
                approvers: vec!["dba".into()],
                min_approvals: 2,
            }
        );
        // MySQL and MCP do not ask for it: refused, with a hint.
        let Ruling::Deny(d) = judge(
            &session(&g, true),
            &Ask::message(&delete, Estimate::NotFetched),
            &NoFacts,
        ) else {
            panic!("a door that cannot review is refused");
        };
        assert_eq!(d.by, DeniedBy::Unapprovable("review".into()));
        assert!(d.hint.instead.contains("BEGIN"), "{:?}", d.hint);
        // Without an approvals store, nothing can be held.
        let Ruling::Deny(d) = judge(&session(&g, false), &ask, &NoFacts) else {
            panic!("no approvals store");
        };
        assert!(
            d.message.contains("approvals are not configured"),
            "{}",
            d.message
        );
        // A statement the rule does not match is allowed.
        let select = [stmt(StatementKind::Select, &[Effect::Read])];
        assert!(matches!(
            judge(
                &session(&g, true),
                &Ask::message(&select, Estimate::NotFetched),
                &NoFacts
            ),
            Ruling::Allow { .. }
        ));
    }

    #[test]
    fn max_cost_asks_for_one_estimate_and_refuses_what_it_cannot_have() {
        let g = Guardrails::default();
        let costed = Session {
            costed: true,
            ..session(&g, true)
        };
        let select = [stmt(StatementKind::Select, &[Effect::Read])];
        let at = |fetch, estimate| {
            let ask = Ask {
                fetch,
                ..Ask::message(&select, estimate)
            };
            judge(&costed, &ask, &NoFacts)
        };
        assert_eq!(
            at(Fetch::Now, Estimate::NotFetched),
            Ruling::NeedsEstimate { index: 0 }
        );
        // A Parse: estimated (and charged) at each execution.
        assert_eq!(
            at(Fetch::AtExecution, Estimate::NotFetched),
            Ruling::Allow {
                estimate_at_execution: Some(0)
            }
        );
        assert!(matches!(
            at(Fetch::Now, Estimate::Rows(3)),
            Ruling::Allow { .. }
        ));
        for (fetch, estimate) in [
            (Fetch::Never, Estimate::NotFetched),
            (Fetch::Now, Estimate::Unavailable),
        ] {
            let Ruling::Deny(d) = at(fetch, estimate) else {
                panic!("no estimate: refused");
            };
            assert_eq!(d.rule(), Some("budgets.max_cost"));
            assert!(
                d.message.contains("could not be estimated"),
                "{}",
                d.message
            );
        }
        // EXPLAIN takes one statement.
        let two = [select[0].clone(), select[0].clone()];
        let Ruling::Deny(d) = judge(&costed, &Ask::message(&two, Estimate::NotFetched), &NoFacts)
        else {
            panic!("two statements: refused");
        };
        assert!(d.message.contains("several statements"), "{}", d.message);
        // A planner cost setting changed would change later estimates.
        let mut set = stmt(StatementKind::SetConfig, &[Effect::SessionConfig]);
        set.effects.insert(Effect::PlannerCost);
        let Ruling::Deny(d) = judge(
            &costed,
            &Ask::message(&[set], Estimate::NotFetched),
            &NoFacts,
        ) else {
            panic!("a cost setting: refused");
        };
        assert!(d.message.contains("planner cost setting"), "{}", d.message);
        // What runs no plan needs none, alone or with others.
        let set = [
            stmt(StatementKind::SetConfig, &[]),
            stmt(StatementKind::Show, &[]),
        ];
        assert!(matches!(
            judge(&costed, &Ask::message(&set, Estimate::NotFetched), &NoFacts),
            Ruling::Allow { .. }
        ));
    }

    #[test]
    fn an_empty_message_is_allowed() {
        let g = rails();
        let ask = Ask::message(&[], Estimate::NotFetched);
        assert_eq!(
            judge(&session(&g, true), &ask, &NoFacts),
            Ruling::Allow {
                estimate_at_execution: None
            }
        );
    }

    #[test]
    fn a_statement_timeout_ceiling_refuses_longer_zero_and_unread_values() {
        use std::time::Duration;
        let g = rails();
        let s = Session {
            statement_timeout: Some(Duration::from_secs(30)),
            ..session(&g, true)
        };
        let set = |t: TimeoutChange| Statement {
            statement_timeout: Some(t),
            ..stmt(StatementKind::SetConfig, &[Effect::SessionConfig])
        };
        for (change, allowed) in [
            (TimeoutChange::To(Duration::from_secs(30)), true),
            (TimeoutChange::To(Duration::from_millis(1)), true),
            (TimeoutChange::Reset, true),
            (TimeoutChange::To(Duration::from_secs(31)), false),
            (TimeoutChange::To(Duration::ZERO), false),
            (TimeoutChange::Unknown, false),
        ] {
            let statements = [set(change)];
            let ruling = judge(
                &s,
                &Ask::message(&statements, Estimate::NotFetched),
                &NoFacts,
            );
            match ruling {
                Ruling::Allow { .. } => assert!(allowed, "{change:?}"),
                Ruling::Deny(d) => {
                    assert!(!allowed, "{change:?}");
                    assert_eq!(d.rule(), Some(TIMEOUT_RULE));
                    assert!(
                        d.message.contains("caps statement_timeout at 30s"),
                        "{}",
                        d.message
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        // A DO block or a procedure may change it unseen.
        for unseen in [
            stmt(StatementKind::Do, &[Effect::DynamicSql]),
            stmt(StatementKind::Call, &[Effect::Write]),
        ] {
            let statements = [unseen];
            let ruling = judge(
                &s,
                &Ask::message(&statements, Estimate::NotFetched),
                &NoFacts,
            );
            assert!(
                matches!(ruling, Ruling::Deny(ref d) if d.rule() == Some(TIMEOUT_RULE)),
                "{ruling:?}"
            );
        }
        // No ceiling, no refusal.
        let statements = [set(TimeoutChange::To(Duration::ZERO))];
        assert!(matches!(
            judge(
                &session(&g, true),
                &Ask::message(&statements, Estimate::NotFetched),
                &NoFacts
            ),
            Ruling::Allow { .. }
        ));
    }

    #[test]
    fn schema_only_refuses_rows_and_floors_aggregates() {
        let g = rails();
        let s = Session {
            mode: AccessMode::ReadOnly,
            schema_only: Some(12),
            ..session(&g, true)
        };
        let with = |d: Disclosure| Statement {
            disclosure: d,
            ..stmt(StatementKind::Select, &[Effect::Read])
        };
        let aggregate = [with(Disclosure::Catalog), with(Disclosure::Aggregates)];
        assert!(matches!(
            judge(
                &s,
                &Ask::message(&aggregate, Estimate::NotFetched),
                &NoFacts
            ),
            Ruling::Allow { .. }
        ));
        assert_eq!(group_floor(s.schema_only, &aggregate), Some(12));
        assert_eq!(group_floor(s.schema_only, &aggregate[..1]), None);
        assert_eq!(group_floor(None, &aggregate), None);
        // One statement that shows rows refuses the message.
        let rows = [
            with(Disclosure::Catalog),
            with(Disclosure::Rows("min() returns a row's value")),
        ];
        let Ruling::Deny(d) = judge(&s, &Ask::message(&rows, Estimate::NotFetched), &NoFacts)
        else {
            panic!("not refused");
        };
        assert_eq!(d.by, DeniedBy::Rule(SCHEMA_ONLY_RULE.into()));
        assert!(
            d.message.contains("min() returns a row's value"),
            "{}",
            d.message
        );
        assert!(
            d.hint.to_json().contains("fewer than 12 rows"),
            "{}",
            d.hint.to_json()
        );
        // Not on another route.
        let open = Session {
            schema_only: None,
            ..s
        };
        assert!(matches!(
            judge(&open, &Ask::message(&rows, Estimate::NotFetched), &NoFacts),
            Ruling::Allow { .. }
        ));
        // What is not understood keeps the built-in refusal.
        let unknown = [Statement::unknown("it does not parse", (0, 1))];
        let Ruling::Deny(d) = judge(&s, &Ask::message(&unknown, Estimate::NotFetched), &NoFacts)
        else {
            panic!("not refused");
        };
        assert_eq!(d.rule(), Some("unknown"));
    }

    #[test]
    fn a_missing_estimate_is_fetched_deferred_or_counted_over() {
        let g = rails();
        let update = [stmt(StatementKind::Update, &[Effect::Write])];
        let s = session(&g, true);
        let mut ask = Ask::message(&update, Estimate::NotFetched);
        assert_eq!(
            judge(&s, &ask, &NoFacts),
            Ruling::NeedsEstimate { index: 0 }
        );
        ask.fetch = Fetch::AtExecution;
        assert_eq!(
            judge(&s, &ask, &NoFacts),
            Ruling::Allow {
                estimate_at_execution: Some(0)
            }
        );
        ask.fetch = Fetch::Never;
        assert!(matches!(
            judge(&s, &ask, &NoFacts),
            Ruling::Approve { estimate: None, .. }
        ));
        let ask = Ask::message(&update, Estimate::Rows(3));
        assert_eq!(
            judge(&s, &ask, &NoFacts),
            Ruling::Allow {
                estimate_at_execution: None
            }
        );
    }

    #[test]
    fn an_approval_that_cannot_be_held_is_refused_with_its_rule() {
        let g = rails();
        let update = [stmt(StatementKind::Update, &[Effect::Write])];
        let ask = Ask::message(&update, Estimate::Rows(100));
        let Ruling::Deny(d) = judge(&session(&g, false), &ask, &NoFacts) else {
            panic!("not refused");
        };
        assert_eq!(d.by, DeniedBy::Unapprovable("big-writes".into()));
        assert!(
            d.message.contains("approvals are not configured"),
            "{}",
            d.message
        );
        let ask = Ask {
            can_hold: false,
            ..ask
        };
        let Ruling::Deny(d) = judge(&session(&g, true), &ask, &NoFacts) else {
            panic!("not refused");
        };
        assert!(d.message.contains("cannot wait"), "{}", d.message);
    }

    #[test]
    fn a_read_only_route_takes_only_harmless_startup_settings() {
        let why = "the dialect's reason";
        assert_eq!(judge_setting(AccessMode::ReadWrite, false), None);
        assert_eq!(judge_setting(AccessMode::ReadOnly, true), None);
        let denial = judge_setting(AccessMode::ReadOnly, false).unwrap();
        assert_eq!(denial.rule(), Some("read-only"));
        assert!(denial.message.ends_with(why), "{}", denial.message);

        fn judge_setting(mode: AccessMode, harmless: bool) -> Option<Denial> {
            setting(
                mode,
                "search_path",
                "evil",
                harmless,
                "the dialect's reason",
            )
        }
    }

    #[test]
    fn the_strictest_statement_decides_a_message() {
        let g = rails();
        let message = [
            stmt(StatementKind::Select, &[Effect::Read]),
            stmt(StatementKind::Update, &[Effect::Write]),
            stmt(StatementKind::Ddl, &[Effect::DropDatabase]),
        ];
        let ask = Ask::message(&message, Estimate::NotFetched);
        let Ruling::Deny(d) = judge(&session(&g, true), &ask, &NoFacts) else {
            panic!("not refused");
        };
        assert_eq!(d.rule(), Some("no-drop"));
        assert_eq!(
            d.message,
            "airlock: statement denied by rule \"no-drop\": never"
        );
    }

    /// Every refusal the judge makes carries a hint naming its rule, and
    /// what it says would pass does pass.
    #[test]
    fn every_refusal_carries_a_hint_that_points_at_what_passes() {
        let mut rules = rail_rules();
        rules.push(Guardrail {
            name: "require-where".into(),
            effects: Effects::default(),
            statements: vec![StatementKind::Update, StatementKind::Delete],
            where_present: Some(false),
            estimated_rows_over: None,
            action: Action::Deny,
            message: None,
            hint: None,
            approvers: vec![],
            min_approvals: 1,
        });
        rules.push(Guardrail {
            name: "no-truncate".into(),
            statements: vec![StatementKind::Truncate],
            where_present: None,
            hint: Some("DELETE in batches of 1000 instead".into()),
            ..rules[rules.len() - 1].clone()
        });
        rules.push(Guardrail {
            name: "no-huge-writes".into(),
            statements: vec![StatementKind::Update],
            where_present: None,
            estimated_rows_over: Some(500),
            hint: None,
            ..rules[rules.len() - 1].clone()
        });
        let g = Guardrails::new(rules);
        let denied = |s: &Session<'_>, stmts: &[Statement], estimate| match judge(
            s,
            &Ask::message(stmts, estimate),
            &NoFacts,
        ) {
            Ruling::Deny(d) => d,
            other => panic!("not refused: {other:?}"),
        };
        let rw = session(&g, true);
        let mut update = stmt(StatementKind::Update, &[Effect::Write]);
        let rows = Estimate::Rows(5);

        // A guardrail on a missing WHERE: add one, and it passes.
        update.has_where = Some(false);
        let d = denied(&rw, &[update.clone()], rows);
        assert_eq!(d.hint.rule, "require-where");
        assert!(!d.hint.retry);
        assert!(
            d.hint.instead.contains("add a WHERE clause"),
            "{:?}",
            d.hint
        );
        update.has_where = Some(true);
        assert!(matches!(
            judge(&rw, &Ask::message(&[update.clone()], rows), &NoFacts),
            Ruling::Allow { .. }
        ));
        // By estimate: the threshold is named.
        let d = denied(&rw, &[update.clone()], Estimate::Rows(501));
        assert_eq!(d.hint.rule, "no-huge-writes");
        assert!(d.hint.instead.contains("at most 500 rows"), "{:?}", d.hint);
        // Without an estimate (several statements, a prepared one): say so.
        let d = denied(&rw, &[update.clone()], Estimate::Unavailable);
        assert!(
            d.hint.instead.contains("could not be estimated"),
            "{:?}",
            d.hint
        );
        // The rule's own hint wins.
        let d = denied(
            &rw,
            &[stmt(StatementKind::Truncate, &[Effect::Write])],
            rows,
        );
        assert_eq!(d.hint.instead, "DELETE in batches of 1000 instead");
        // By effect, naming it.
        let drop = stmt(StatementKind::Ddl, &[Effect::DropDatabase]);
        let d = denied(&rw, std::slice::from_ref(&drop), rows);
        assert_eq!(d.hint.rule, "no-drop");
        assert!(d.hint.instead.contains("drop_database"), "{:?}", d.hint);

        // Unknown: the built-in rule.
        let d = denied(&rw, &[Statement::unknown("it is odd", (0, 0))], rows);
        assert_eq!(d.hint.rule, "unknown");
        assert!(d.hint.instead.contains("plain SQL"), "{:?}", d.hint);

        // Read-only, with each way to writes the route found.
        let insert = [stmt(StatementKind::Insert, &[Effect::Write])];
        let by_request = Writes::Request {
            connection: "orders".into(),
            role: "admin".into(),
            max: std::time::Duration::from_secs(3600),
        };
        let by_role = Writes::Role("writer".into());
        for (writes, expect) in [
            (None, "only reads are allowed"),
            (Some(&by_role), "\"writer\""),
            (Some(&by_request), "request write access"),
        ] {
            let ro = Session {
                mode: AccessMode::ReadOnly,
                writes,
                ..rw
            };
            let d = denied(&ro, &insert, rows);
            assert_eq!(d.hint.rule, "read-only");
            assert!(d.hint.instead.contains(expect), "{:?}", d.hint);
            assert_eq!(
                d.hint.command.is_some(),
                matches!(writes, Some(Writes::Request { .. }))
            );
        }
        let ro = Session {
            mode: AccessMode::ReadOnly,
            writes: Some(&by_request),
            ..rw
        };
        assert_eq!(
            denied(&ro, &insert, rows).hint.command.as_deref(),
            Some("airlock access request orders --role admin --for 30m --reason \"<why>\"")
        );

        // Approvals that cannot be had.
        let update = [stmt(StatementKind::Update, &[Effect::Write])];
        let d = denied(&session(&g, false), &update, Estimate::Rows(100));
        assert_eq!(d.hint.rule, "big-writes");
        assert!(
            d.hint.instead.contains("no approvals store"),
            "{:?}",
            d.hint
        );
        let ask = Ask {
            can_hold: false,
            ..Ask::message(&update, Estimate::Rows(100))
        };
        let Ruling::Deny(d) = judge(&rw, &ask, &NoFacts) else {
            panic!("not refused");
        };
        assert!(d.hint.instead.contains("SQL statement"), "{:?}", d.hint);

        // A startup setting on a read-only route.
        let d = setting(AccessMode::ReadOnly, "search_path", "evil", false, "why").unwrap();
        assert_eq!(d.hint.rule, "read-only");
        assert!(d.hint.instead.contains("search_path"), "{:?}", d.hint);
    }
}
