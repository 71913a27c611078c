//! Commit review on the PostgreSQL door (SPEC §14; the rules are
//! `airlock_policy::review`): a statement ruled `Review` runs inside the
//! client's transaction block, and the block's COMMIT is held until an
//! approver has seen what the transaction measurably did.
//!
//! The effect is measured on the session's own upstream, inside the
//! transaction, with the relay's lookups (in a savepoint):
//! - a *baseline* of the transaction statistics
//!   (`pg_stat_xact_user_tables`) as the first reviewed statement arrives.
//!   A backend flushes those statistics only when idle outside a
//!   transaction block, so inside the block they only grow, and the
//!   difference at COMMIT is what the transaction did since: rows inserted,
//!   updated and deleted per table, triggers and cascades included.
//! - at COMMIT, those statistics again and a sample of the rows the
//!   transaction wrote (their new versions: `xmin` is the transaction's
//!   id) in each table a reviewed statement wrote, masked by the session's
//!   masking rules.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::{Relation, Statement, StatementKind, Transaction};
use serde_json::{Value, json};

use crate::inspect::SessionMasking;

/// Rows sampled per table.
pub const SAMPLE_ROWS: usize = 5;
/// Tables sampled per transaction.
const SAMPLE_TABLES: usize = 8;
/// Statement texts an approver is shown per transaction.
const SHOWN_STATEMENTS: usize = 20;
/// The longest sampled value shown, in characters.
const VALUE_CHARS: usize = 200;

/// The transaction statistics, as `[relid, inserted, updated, deleted]` per
/// table with any.
pub const BASELINE: &str = "SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_array(s.relid::pg_catalog.int8, s.n_tup_ins, s.n_tup_upd, s.n_tup_del)), '[]') FROM pg_catalog.pg_stat_xact_user_tables s WHERE s.n_tup_ins + s.n_tup_upd + s.n_tup_del > 0";

/// A statement ruled `Review` by its Parse: what each execution adds to
/// the pending review.
pub struct Need {
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub text: Arc<str>,
    pub statements: Arc<[Statement]>,
}

/// The review the open transaction block is pending.
pub struct Pending {
    pub rule: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// The reviewed statements' texts, redacted as recorded.
    pub texts: Vec<String>,
    /// How many more ran than `texts` shows.
    pub more: usize,
    pub statements: Vec<Statement>,
    /// The tables the reviewed statements wrote, sampled at COMMIT.
    pub targets: Vec<Relation>,
    /// The statistics as the first reviewed statement arrived, by relid;
    /// `None` when they could not be read.
    pub baseline: Option<HashMap<u64, [i64; 3]>>,
}

/// What one session knows for commit review.
#[derive(Default)]
pub struct Review {
    /// The session's guardrails review some commits: otherwise nothing here
    /// is ever filled.
    pub enabled: bool,
    /// The transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub status: u8,
    /// Whether the client's next statement runs inside a transaction
    /// block: the last status, and the BEGINs and ROLLBACKs forwarded
    /// since.
    pub in_block: bool,
    pub pending: Option<Pending>,
    /// The message id whose lookup was asked for, and whether it was the
    /// measurement of a COMMIT (else a baseline).
    pub asked: Option<(u64, bool)>,
    /// A Bind's baseline lookup was asked for: its answer comes with the
    /// Bind judged again.
    pub bound_asked: bool,
    /// The review a Bind judged with its row estimate needs, for its
    /// portal.
    pub bind_need: Option<Arc<Need>>,
    /// The baseline a Bind's lookup read, for its Execute.
    pub bound_baseline: Option<Option<HashMap<u64, [i64; 3]>>>,
    /// Transaction control was forwarded since the last ReadyForQuery: the
    /// status no longer says where the session is.
    pub moved: bool,
    /// Parse id → its review, or its transaction control.
    pub parses: HashMap<u64, Arc<Need>>,
    pub tx_parses: HashMap<u64, Transaction>,
    /// Portal → the same, as its Bind bound it.
    pub portals: HashMap<Vec<u8>, Arc<Need>>,
    pub tx_portals: HashMap<Vec<u8>, Transaction>,
}

impl Review {
    pub fn new(enabled: bool) -> Review {
        Review {
            enabled,
            status: b'I',
            ..Review::default()
        }
    }

    /// A ReadyForQuery: outside a block, no review is pending.
    pub fn ready(&mut self, status: u8) {
        self.status = status;
        self.moved = false;
        self.in_block = status != b'I';
        if status == b'I' {
            self.pending = None;
        }
    }

    /// Statements forwarded to run: their BEGINs and ROLLBACKs move the
    /// block the next statement runs in.
    pub fn ran(&mut self, statements: &[Statement]) {
        for s in statements {
            self.ran_op(s.transaction);
        }
    }

    pub fn ran_op(&mut self, op: Option<Transaction>) {
        self.moved |= op.is_some();
        match op {
            Some(Transaction::Begin) => self.in_block = true,
            Some(Transaction::Rollback | Transaction::Commit) => self.in_block = false,
            _ => {}
        }
    }

    /// Whether the transaction is known to be aborted, so that its COMMIT
    /// can only roll it back.
    pub fn aborted(&self) -> bool {
        self.status == b'E' && !self.moved
    }

    /// A Bind of Parse `id` (`None`: not a Parse airlock saw) to `portal`:
    /// the portal's Executes do what the statement does.
    pub fn bound(&mut self, portal: &[u8], id: Option<u64>) {
        let need = self.bind_need.take();
        match need
            .as_ref()
            .or_else(|| id.and_then(|id| self.parses.get(&id)))
        {
            Some(need) => {
                self.portals.insert(portal.to_vec(), Arc::clone(need));
            }
            None => {
                self.portals.remove(portal);
            }
        }
        match id.and_then(|id| self.tx_parses.get(&id)) {
            Some(op) => {
                self.tx_portals.insert(portal.to_vec(), *op);
            }
            None => {
                self.tx_portals.remove(portal);
            }
        }
    }

    /// Adds reviewed statements to the pending review (the first begins
    /// it, with `baseline`).
    pub fn add(&mut self, need: &Need, text: String, baseline: Option<HashMap<u64, [i64; 3]>>) {
        let pending = self.pending.get_or_insert_with(|| Pending {
            rule: need.rule.clone(),
            approvers: need.approvers.clone(),
            min_approvals: need.min_approvals,
            texts: Vec::new(),
            more: 0,
            statements: Vec::new(),
            targets: Vec::new(),
            baseline,
        });
        if pending.texts.len() < SHOWN_STATEMENTS {
            pending.texts.push(text);
            pending.statements.extend(need.statements.iter().cloned());
        } else {
            pending.more += 1;
        }
        for t in need.statements.iter().filter_map(target) {
            if pending.targets.len() < SAMPLE_TABLES && !pending.targets.contains(t) {
                pending.targets.push(t.clone());
            }
        }
    }
}

/// The table a write statement names first (its target, unless a WITH
/// clause names others before it).
fn target(s: &Statement) -> Option<&Relation> {
    match s.kind {
        StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete
        | StatementKind::Merge => s.relations.first(),
        _ => None,
    }
}

/// A baseline as [`BASELINE`] returned it.
pub fn parse_baseline(json: &str) -> Option<HashMap<u64, [i64; 3]>> {
    let rows: Vec<(u64, i64, i64, i64)> = serde_json::from_str(json).ok()?;
    Some(
        rows.into_iter()
            .map(|(r, i, u, d)| (r, [i, u, d]))
            .collect(),
    )
}

/// The measurement of a pending review's COMMIT: the statistics, and the
/// rows this transaction wrote in each target.
pub fn measure_sql(pending: &Pending) -> String {
    let samples: Vec<String> = pending
        .targets
        .iter()
        .map(|t| {
            let quoted = quote_relation(t);
            let name = e_literal(&quoted);
            format!(
                "pg_catalog.json_build_object('oid', {name}::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int8, \
                 'attnums', (SELECT pg_catalog.json_object_agg(a.attname, a.attnum) FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = {name}::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped), \
                 'rows', (SELECT pg_catalog.json_agg(airlock_sample) FROM (SELECT * FROM {quoted} \
                 WHERE xmin OPERATOR(pg_catalog.=) pg_catalog.xid(pg_catalog.pg_current_xact_id()) LIMIT {}) airlock_sample))",
                SAMPLE_ROWS + 1
            )
        })
        .collect();
    format!(
        "SELECT pg_catalog.json_build_object('tables', COALESCE((SELECT pg_catalog.json_agg(\
         pg_catalog.json_build_array(s.relid::pg_catalog.int8, s.schemaname, s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del) \
         ORDER BY s.schemaname, s.relname) \
         FROM pg_catalog.pg_stat_xact_user_tables s WHERE s.n_tup_ins + s.n_tup_upd + s.n_tup_del > 0), '[]'), \
         'samples', pg_catalog.json_build_array({}))",
        samples.join(", ")
    )
}

/// What an approver sees of a pending review, from its COMMIT's
/// measurement: rows per table (less the baseline), and each target's
/// sample, masked as the session's results are. `None` when the
/// measurement cannot be read (or a sample cannot be masked).
pub fn effect(
    pending: &Pending,
    measured: &str,
    masking: Option<&SessionMasking>,
    analyzer: &airlock_sql::Analyzer,
) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Measured {
        tables: Vec<(u64, String, String, i64, i64, i64)>,
        samples: Vec<Sample>,
    }
    #[derive(serde::Deserialize)]
    struct Sample {
        oid: Value,
        attnums: Option<HashMap<String, i16>>,
        rows: Option<Vec<serde_json::Map<String, Value>>>,
    }
    let m: Measured = serde_json::from_str(measured).ok()?;
    let zero = [0; 3];
    let tables: Vec<Value> = m
        .tables
        .iter()
        .filter_map(|(relid, schema, name, ins, upd, del)| {
            let before = pending
                .baseline
                .as_ref()
                .and_then(|b| b.get(relid))
                .unwrap_or(&zero);
            let [i, u, d] = [ins - before[0], upd - before[1], del - before[2]];
            (i > 0 || u > 0 || d > 0).then(|| {
                json!({"table": format!("{schema}.{name}"), "inserted": i, "updated": u, "deleted": d})
            })
        })
        .collect();
    let mut samples = Vec::new();
    for (target, sample) in pending.targets.iter().zip(m.samples) {
        let oid = match &sample.oid {
            Value::String(s) => s.parse::<u32>().ok()?,
            v => u32::try_from(v.as_u64()?).ok()?,
        };
        let attnums = sample.attnums.unwrap_or_default();
        let mut rows = sample.rows.unwrap_or_default();
        let more = rows.len() > SAMPLE_ROWS;
        rows.truncate(SAMPLE_ROWS);
        let lineage = analyzer
            .analyze(&format!("SELECT * FROM {}", quote_relation(target)))
            .first()?
            .lineage
            .clone();
        let mut shown = Vec::with_capacity(rows.len());
        for row in rows {
            let (names, mut values): (Vec<String>, Vec<Value>) = row.into_iter().unzip();
            if let Some(m) = masking {
                let origins: Vec<airlock_policy::masking::FieldOrigin> = names
                    .iter()
                    .map(|n| airlock_policy::masking::FieldOrigin::Oid {
                        table: oid,
                        attnum: attnums.get(n).copied().unwrap_or(0),
                    })
                    .collect();
                let plan = m.masking.policy.plan(&m.catalog, &lineage, &origins);
                m.masking.mask_json_row(&plan, &mut values);
            }
            let row: serde_json::Map<String, Value> = names
                .into_iter()
                .zip(values.into_iter().map(shorten))
                .collect();
            shown.push(Value::Object(row));
        }
        samples.push(json!({"table": target.to_string(), "rows": shown, "more": more}));
    }
    let mut statements = pending.texts.clone();
    if pending.more > 0 {
        statements.push(format!("… and {} more", pending.more));
    }
    Some(json!({
        "tables": tables,
        "written_rows": samples,
        "statements": statements,
        "baseline": pending.baseline.is_some(),
    }))
}

/// A long string value cut to [`VALUE_CHARS`] characters.
fn shorten(v: Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > VALUE_CHARS => {
            let mut cut: String = s.chars().take(VALUE_CHARS).collect();
            cut.push('…');
            Value::String(cut)
        }
        v => v,
    }
}

/// A relation as an SQL name, each part quoted.
fn quote_relation(r: &Relation) -> String {
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match &r.schema {
        Some(schema) => format!("{}.{}", ident(schema), ident(&r.name)),
        None => ident(&r.name),
    }
}

/// A string literal read the same whatever `standard_conforming_strings`
/// is.
fn e_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(targets: Vec<Relation>, baseline: Option<HashMap<u64, [i64; 3]>>) -> Pending {
        Pending {
            rule: "r".into(),
            approvers: vec!["dba".into()],
            min_approvals: 1,
            texts: vec!["UPDATE t SET a = ?".into()],
            more: 0,
            statements: Vec::new(),
            targets,
            baseline,
        }
    }

    #[test]
    fn names_are_quoted_and_literals_escaped() {
        let r = Relation {
            schema: Some("we\"ird".into()),
            name: "t'\\x".into(),
        };
        assert_eq!(quote_relation(&r), "\"we\"\"ird\".\"t'\\x\"");
        assert_eq!(e_literal("a'b\\c"), "E'a''b\\\\c'");
        let sql = measure_sql(&pending(vec![r], None));
        assert!(
            sql.contains("FROM \"we\"\"ird\".\"t'\\x\" WHERE xmin"),
            "{sql}"
        );
    }

    #[test]
    fn the_effect_is_the_difference_from_the_baseline() {
        let baseline = parse_baseline("[[16396, 3, 0, 0]]").unwrap();
        let p = pending(
            vec![Relation {
                schema: None,
                name: "t".into(),
            }],
            Some(baseline),
        );
        let measured = r#"{"tables": [[16396, "public", "t", 4, 1, 1], [17000, "public", "u", 2, 0, 0]],
            "samples": [{"oid": "16396", "attnums": {"id": 1, "name": 2},
                         "rows": [{"id": 2, "name": "z"}, {"id": 4, "name": "d"}]}]}"#;
        let analyzer = airlock_sql::Analyzer::new(&[]);
        let e = effect(&p, measured, None, &analyzer).unwrap();
        assert_eq!(
            e["tables"],
            json!([
                {"table": "public.t", "inserted": 1, "updated": 1, "deleted": 1},
                {"table": "public.u", "inserted": 2, "updated": 0, "deleted": 0},
            ])
        );
        assert_eq!(
            e["written_rows"][0]["rows"][1],
            json!({"id": 4, "name": "d"})
        );
        assert_eq!(e["written_rows"][0]["more"], json!(false));
        assert_eq!(e["baseline"], json!(true));
        assert!(effect(&p, "not json", None, &analyzer).is_none());
    }
}
