//! Commit review on the MySQL door (SPEC §14): a statement a
//! `review_commit` rule matches runs at once inside the client's
//! transaction, and the transaction's COMMIT is held until an approver has
//! seen its measured effect. The rules are the policy core's
//! ([`airlock_policy::review`]); this is the door's state.
//!
//! MySQL tells exactly where a session stands: every OK packet carries
//! whether a transaction is open (`SERVER_STATUS_IN_TRANS`) and whether
//! autocommit is on, and the door relays one command at a time. What a
//! statement changed is measured from its OK packet's affected-row count,
//! by the table it writes; MySQL has no per-transaction row marker (like
//! PostgreSQL's `xmin`), so no rows are sampled.

use airlock_policy::{Effect, Statement, StatementKind};
use serde_json::{Value, json};

/// The statements kept to show the approver.
const TEXTS: usize = 20;

/// A transaction whose COMMIT waits for review: the rule that asked, and
/// what ran since its first reviewed statement.
pub(super) struct Pending {
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// Rows by table: inserted, updated, deleted.
    tables: Vec<(String, [u64; 3])>,
    texts: Vec<String>,
    more: usize,
}

impl Pending {
    pub fn new(rule: String, approvers: Vec<String>, min_approvals: u32) -> Pending {
        Pending {
            rule,
            approvers,
            min_approvals,
            tables: Vec::new(),
            texts: Vec::new(),
            more: 0,
        }
    }

    /// Statement `s` ran, and its answer said it changed `rows` rows (its
    /// OK's affected rows, or the rows of its `RETURNING`). Whether it
    /// writes (and was counted).
    pub fn ran(&mut self, s: &Statement, rows: u64) -> bool {
        let column = match s.kind {
            StatementKind::Insert => 0,
            StatementKind::Update => 1,
            StatementKind::Delete => 2,
            _ if s.effects.contains(Effect::Write) => 1,
            _ => return false,
        };
        // The tables it names: one, or those of a multi-table statement
        // together (which of them it writes is not told apart).
        let table = match &s.relations[..] {
            [] => "?".to_string(),
            relations => relations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        match self.tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, counts)) => counts[column] += rows,
            None => {
                let mut counts = [0; 3];
                counts[column] = rows;
                self.tables.push((table, counts));
            }
        }
        true
    }

    /// A message whose writes were counted, as recorded (literals
    /// redacted).
    pub fn shown(&mut self, text: String) {
        if self.texts.len() < TEXTS {
            self.texts.push(text);
        } else {
            self.more += 1;
        }
    }

    /// The measured effect an approver sees, in the form the PostgreSQL
    /// door gives (no rows sampled: `sample_complete` is false).
    pub fn effect(&self) -> Value {
        let tables: Vec<Value> = self
            .tables
            .iter()
            .map(|(table, [i, u, d])| {
                json!({"table": table, "inserted": i, "updated": u, "deleted": d})
            })
            .collect();
        let mut statements = self.texts.clone();
        if self.more > 0 {
            statements.push(format!("… and {} more", self.more));
        }
        json!({
            "tables": tables,
            "rows_before": [],
            "written_rows": [],
            "statements": statements,
            "baseline": true,
            "sample_complete": false,
            "before_more": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_by_table_and_kind() {
        let a = airlock_sql::mysql::Analyzer::new(&[]);
        let mode = airlock_sql::mysql::Mode::default();
        let mut p = Pending::new("r".into(), vec!["dba".into()], 1);
        for (sql, rows, writes) in [
            ("UPDATE shop.orders SET total = 0 WHERE id < 10", 9, true),
            ("INSERT INTO audit_log VALUES (1)", 1, true),
            ("DELETE FROM shop.orders WHERE id = 3", 1, true),
            ("SELECT * FROM shop.orders", 0, false),
        ] {
            let s = &a.analyze(sql, mode)[0];
            assert_eq!(p.ran(s, rows), writes, "{sql}");
            if writes {
                p.shown(sql.into());
            }
        }
        let e = p.effect();
        assert_eq!(e["tables"][0]["updated"], 9, "{e}");
        assert_eq!(e["tables"][0]["deleted"], 1, "{e}");
        assert_eq!(e["tables"][1]["inserted"], 1, "{e}");
        assert_eq!(
            e["statements"].as_array().unwrap().len(),
            3,
            "a read is not shown"
        );
        assert_eq!(e["sample_complete"], false);
    }
}
