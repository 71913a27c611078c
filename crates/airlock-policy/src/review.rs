//! Commit review (SPEC §14): a guardrail with `action: review_commit` lets a
//! write run inside the client's transaction block, and holds that block's
//! COMMIT until an approver has seen what the transaction measurably did.
//!
//! The judge rules such a message [`Ruling::Review`](crate::Ruling::Review).
//! The door keeps, per session, whether a review is pending (a reviewed
//! statement ran in the open block; cleared when the block ends) and asks
//! here:
//! - [`placement`]: may a message ruled `Review` run where the session is?
//!   Only inside a transaction block that it does not end: outside one, its
//!   statements would commit with the message.
//! - [`at_commit`]: what a message does to a pending review: a COMMIT sent
//!   alone is held; a COMMIT among other statements, or a PREPARE
//!   TRANSACTION, is refused, since neither could be held.

use crate::hint::Hint;
use crate::judge::{Denial, DeniedBy};
use crate::statement::{Effect, Statement, Transaction};

/// What a pending review does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtCommit {
    /// It does not end the transaction with its work kept.
    Pass,
    /// A COMMIT sent alone: measure the transaction's effect and hold it.
    Hold,
    /// It would commit (or persist) the work where it cannot be held.
    Refuse(Denial),
}

/// The refusal of a message the judge ruled `Review` (by rule `rule`) in a
/// session that is inside a transaction block (`in_block`) or not, if it
/// may not run: every statement must run inside an explicit block (the
/// session's, or one the message begins), and none may commit it.
pub fn placement(statements: &[Statement], in_block: bool, rule: &str) -> Option<Denial> {
    let mut open = in_block;
    for s in statements {
        match s.transaction {
            Some(Transaction::Begin) => open = true,
            Some(Transaction::Rollback) => open = false,
            Some(Transaction::Commit | Transaction::Prepare) => {
                return Some(alone(rule));
            }
            _ if s.effects.contains(Effect::TransactionControl) => {}
            _ if !open => {
                return Some(held(
                    rule,
                    format!(
                        "airlock: rule \"{rule}\" reviews the commit of this statement, which needs a transaction block; the statement was not run"
                    ),
                    "run it inside BEGIN … COMMIT: it runs at once, and the COMMIT waits for an approver who sees what the transaction did",
                ));
            }
            _ => {}
        }
    }
    None
}

/// What a message does while a review by rule `rule` is pending.
pub fn at_commit(statements: &[Statement], rule: &str) -> AtCommit {
    match statements {
        [s] if s.transaction == Some(Transaction::Commit) => AtCommit::Hold,
        _ if statements.iter().any(|s| {
            matches!(
                s.transaction,
                Some(Transaction::Commit | Transaction::Prepare)
            )
        }) =>
        {
            AtCommit::Refuse(alone(rule))
        }
        _ => AtCommit::Pass,
    }
}

/// What a message does while a review by rule `rule` is pending on a
/// MySQL session: as [`at_commit`], and MySQL commits the transaction
/// implicitly around most statements that neither read nor write rows nor
/// control the transaction (DDL, `LOCK TABLES`, `SET autocommit = 1`,
/// `START TRANSACTION`, administration), so those are refused as a COMMIT
/// among other statements is: their work could not be held.
pub fn at_commit_mysql(statements: &[Statement], rule: &str) -> AtCommit {
    use crate::StatementKind as K;
    let verdict = at_commit(statements, rule);
    if verdict != AtCommit::Pass {
        return verdict;
    }
    let commits = statements.iter().any(|s| match s.kind {
        K::Select | K::Insert | K::Update | K::Delete | K::Show | K::Explain | K::Empty => false,
        K::Transaction => !matches!(
            s.transaction,
            Some(Transaction::Rollback | Transaction::Savepoint)
        ),
        K::SetConfig => !s.harmless_config,
        _ => true,
    });
    if commits {
        AtCommit::Refuse(held(
            rule,
            format!(
                "airlock: rule \"{rule}\" holds this transaction's COMMIT for review, and MySQL would commit the transaction before or after this statement; the statement was not run"
            ),
            "COMMIT (held for review) or ROLLBACK first; then run it",
        ))
    } else {
        AtCommit::Pass
    }
}

/// A statement rule `rule` reviews that writes `table`, whose storage
/// engine (`engine`; none for a view) keeps a write the moment it runs:
/// no COMMIT could hold it back.
pub fn untransactional(rule: &str, table: &str, engine: Option<&str>) -> Denial {
    held(
        rule,
        format!(
            "airlock: rule \"{rule}\" reviews the commit of this statement, but table {table} is not transactional (its engine: {}), so its writes could not be held back; the statement was not run",
            engine.unwrap_or("none: a view, or unknown")
        ),
        "write a transactional (InnoDB) table, or name the base table rather than a view",
    )
}

/// A pending review's COMMIT whose effect the door could not measure.
pub fn unmeasured(rule: &str, why: &str) -> Denial {
    held(
        rule,
        format!(
            "airlock: rule \"{rule}\" holds this COMMIT for review, but {why}; nothing was committed"
        ),
        "send COMMIT alone, as a simple query, once earlier statements have been answered; or ROLLBACK",
    )
}

/// A statement of review rule `rule` in a transaction whose review by
/// another rule (`pending`) is pending: one transaction, one review.
pub fn another(pending: &str, rule: &str) -> Denial {
    held(
        rule,
        format!(
            "airlock: this transaction's COMMIT is already held for review by rule \"{pending}\", and rule \"{rule}\" reviews this statement; the statement was not run"
        ),
        "COMMIT (or ROLLBACK) first, then run it in a transaction of its own",
    )
}

/// A SQL PREPARE or DEALLOCATE of a name the client prepared with the
/// protocol, on a session whose commits are reviewed: the protocol's Binds
/// of the name would run what airlock did not judge them by.
pub fn renamed() -> Denial {
    Denial {
        by: DeniedBy::Rule("review_commit".into()),
        ..held(
            "review_commit",
            "airlock: commit review is on for this session, and a SQL PREPARE or DEALLOCATE may not reuse a name prepared with the protocol; the statement was not run".into(),
            "prepare it under another name, or with the protocol's Parse",
        )
    }
}

/// An Execute of a portal that does not directly follow its Bind, where
/// the name may stand for a COMMIT or a reviewed write by now.
pub fn stale_portal(rule: &str) -> Denial {
    held(
        rule,
        format!(
            "airlock: rule \"{rule}\" reviews commits on this session, and this portal was not executed right after its Bind, so what it runs cannot be told; the message was not run"
        ),
        "bind the statement again just before executing it",
    )
}

fn alone(rule: &str) -> Denial {
    held(
        rule,
        format!(
            "airlock: rule \"{rule}\" holds this transaction's COMMIT for review, which needs COMMIT sent alone; the message was not run"
        ),
        "send COMMIT as a message of its own (PREPARE TRANSACTION is not available under review): it waits for an approver who sees what the transaction did",
    )
}

/// A refusal by review rule `rule`, which the same statement will meet
/// again.
fn held(rule: &str, message: String, instead: &str) -> Denial {
    Denial {
        message,
        hint: Hint::never(rule, instead),
        by: DeniedBy::Unapprovable(rule.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{Effects, StatementKind};

    fn tx(op: Transaction) -> Statement {
        Statement {
            kind: StatementKind::Transaction,
            effects: Effects::of(&[Effect::TransactionControl]),
            transaction: Some(op),
            ..Statement::unknown("", (0, 0))
        }
    }

    fn write() -> Statement {
        Statement {
            kind: StatementKind::Update,
            effects: Effects::of(&[Effect::Write]),
            ..Statement::unknown("", (0, 0))
        }
    }

    #[test]
    fn on_mysql_what_would_commit_implicitly_is_refused_while_a_review_is_pending() {
        let of = |kind| Statement {
            kind,
            ..Statement::unknown("", (0, 0))
        };
        for ok in [
            vec![write()],
            vec![of(StatementKind::Select), write()],
            vec![tx(Transaction::Savepoint)],
            vec![tx(Transaction::Rollback)],
        ] {
            assert_eq!(at_commit_mysql(&ok, "r"), AtCommit::Pass, "{ok:?}");
        }
        assert_eq!(
            at_commit_mysql(&[tx(Transaction::Commit)], "r"),
            AtCommit::Hold
        );
        for commits in [
            vec![of(StatementKind::Ddl)],
            vec![tx(Transaction::Begin)],
            vec![of(StatementKind::Lock)],
            vec![of(StatementKind::SetConfig)],
            vec![of(StatementKind::Execute)],
            vec![write(), of(StatementKind::Truncate)],
        ] {
            assert!(
                matches!(at_commit_mysql(&commits, "r"), AtCommit::Refuse(_)),
                "{commits:?}"
            );
        }
        // A harmless SET (`USE` of the route's own database) commits nothing.
        let use_db = Statement {
            harmless_config: true,
            ..of(StatementKind::SetConfig)
        };
        assert_eq!(at_commit_mysql(&[use_db], "r"), AtCommit::Pass);
    }

    #[test]
    fn a_reviewed_write_runs_only_inside_a_block_it_does_not_commit() {
        assert!(placement(&[write()], true, "r").is_none());
        assert!(placement(&[tx(Transaction::Begin), write()], false, "r").is_none());
        let outside = placement(&[write()], false, "r").unwrap();
        assert!(
            outside.message.contains("needs a transaction block"),
            "{}",
            outside.message
        );
        assert_eq!(outside.hint.rule, "r");
        assert!(placement(&[write(), tx(Transaction::Commit)], true, "r").is_some());
        assert!(placement(&[write(), tx(Transaction::Prepare)], true, "r").is_some());
        // After a ROLLBACK in the same message, the write would autocommit.
        assert!(placement(&[tx(Transaction::Rollback), write()], true, "r").is_some());
        assert!(placement(&[tx(Transaction::Savepoint), write()], true, "r").is_none());
    }

    #[test]
    fn only_a_lone_commit_is_held() {
        assert_eq!(at_commit(&[tx(Transaction::Commit)], "r"), AtCommit::Hold);
        assert!(matches!(
            at_commit(&[write(), tx(Transaction::Commit)], "r"),
            AtCommit::Refuse(_)
        ));
        assert!(matches!(
            at_commit(&[tx(Transaction::Prepare)], "r"),
            AtCommit::Refuse(_)
        ));
        assert_eq!(at_commit(&[tx(Transaction::Rollback)], "r"), AtCommit::Pass);
        assert_eq!(at_commit(&[write()], "r"), AtCommit::Pass);
    }
}
