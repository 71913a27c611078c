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
//!   transaction block, so inside the block they only grow (bar a
//!   TRUNCATE), and the difference at COMMIT is what the transaction did
//!   since: rows inserted, updated and deleted per table, triggers and
//!   cascades included.
//! - at COMMIT, those statistics again, which name each changed table by
//!   its OID and schema-qualified name; then a sample of the rows the
//!   transaction wrote (their new versions: `xmin` is the transaction's id)
//!   in each changed table, every value cut to 200 characters by the
//!   upstream and masked by the session's masking rules.
//!
//! Whether the session is inside a block is what PostgreSQL last said
//! (ReadyForQuery), lowered by every COMMIT and ROLLBACK forwarded since,
//! and raised only by a BEGIN executed earlier in the same extended batch
//! (an error before it skips the rest of the batch too). A BEGIN in a
//! simple Query may fail with an earlier statement of its message, so it
//! counts only once PostgreSQL confirms it; a reviewed simple Query waits
//! for that (its lookup runs once the upstream is idle).

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::{Statement, Transaction};
use serde_json::{Value, json};

use crate::inspect::SessionMasking;

/// Rows sampled per table.
pub const SAMPLE_ROWS: usize = 5;
/// Tables sampled per transaction.
const SAMPLE_TABLES: usize = 8;
/// Rows kept as they were before the reviewed statements, per transaction.
const BEFORE_ROWS: usize = 40;
/// Portal names (and SQL-prepared names) remembered per session: past
/// this, Binds and PREPAREs that would need remembering are refused.
pub const MAX_PORTALS: usize = 4096;
/// Statement texts an approver is shown per transaction.
const SHOWN_STATEMENTS: usize = 20;
/// The longest sampled value shown, in characters.
const VALUE_CHARS: usize = 200;
/// How much of each sampled value is fetched, in characters: masked
/// whole, then cut to [`VALUE_CHARS`] (a value cut before masking could
/// hide a token from the detectors).
const FETCHED_CHARS: usize = 1024;

/// The transaction statistics, as `[relid, inserted, updated, deleted]` per
/// table with any.
const BASELINE: &str = "SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_array(s.relid::pg_catalog.int8, s.n_tup_ins, s.n_tup_upd, s.n_tup_del)), '[]') FROM pg_catalog.pg_stat_xact_user_tables s WHERE (s.n_tup_ins OPERATOR(pg_catalog.+) s.n_tup_upd OPERATOR(pg_catalog.+) s.n_tup_del) OPERATOR(pg_catalog.>) 0";

/// The lookup as a reviewed statement arrives: the statistics' baseline
/// (`stats`), and for an UPDATE or DELETE whose rows can be selected
/// (`airlock_sql::image::before`), those rows as they are (`before`:
/// `[table oid, table name, {column: attnum}, {column: value}]` each, values
/// cut by the upstream).
pub fn arrival_sql(before: Option<&str>) -> String {
    let before = match before {
        Some(select) => format!(
            "(SELECT pg_catalog.json_agg(pg_catalog.json_build_array(x.airlock_tableoid::pg_catalog.int8, \
             x.airlock_tableoid::pg_catalog.regclass::pg_catalog.text, {}, {})) FROM ({select}) x)",
            attnums("x.airlock_tableoid"),
            row_json(
                "x",
                "WHERE e.key OPERATOR(pg_catalog.<>) 'airlock_tableoid'"
            ),
        ),
        None => "NULL".into(),
    };
    format!("SELECT pg_catalog.json_build_object('stats', ({BASELINE}), 'before', {before})")
}

/// The transaction statistics at COMMIT, as `[relid, schema, name,
/// inserted, updated, deleted, relkind]` per table with any.
pub const COUNTS: &str = "SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_array(s.relid::pg_catalog.int8, s.schemaname, s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del, c.relkind::pg_catalog.text) ORDER BY s.schemaname, s.relname), '[]') FROM pg_catalog.pg_stat_xact_user_tables s JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.relid WHERE (s.n_tup_ins OPERATOR(pg_catalog.+) s.n_tup_upd OPERATOR(pg_catalog.+) s.n_tup_del) OPERATOR(pg_catalog.>) 0";

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
    /// The statistics as the first reviewed statement arrived, by relid;
    /// `None` when they could not be read.
    pub baseline: Option<HashMap<u64, [i64; 3]>>,
    /// Rows the reviewed UPDATEs and DELETEs were about to change, as they
    /// were (unmasked until shown).
    pub before: Vec<Before>,
    /// Whether every reviewed UPDATE and DELETE had its rows sampled.
    pub before_complete: bool,
    /// Some changed more rows than `before` keeps.
    pub before_more: bool,
}

impl Pending {
    fn new(
        rule: &str,
        approvers: &[String],
        min_approvals: u32,
        baseline: Option<HashMap<u64, [i64; 3]>>,
    ) -> Pending {
        Pending {
            rule: rule.to_string(),
            approvers: approvers.to_vec(),
            min_approvals,
            texts: Vec::new(),
            more: 0,
            statements: Vec::new(),
            baseline,
            before: Vec::new(),
            before_complete: true,
            before_more: false,
        }
    }
}

/// What a lookup read as a reviewed statement arrived.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Arrival {
    stats: Vec<(u64, i64, i64, i64)>,
    before: Option<Vec<Before>>,
}

/// A row as it was before a reviewed statement changed it: its table's
/// OID and name, the table's attribute numbers, the row.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Before(
    u32,
    String,
    Option<HashMap<String, i16>>,
    Option<serde_json::Map<String, Value>>,
);

/// A table the transaction changed since the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub relid: u32,
    pub schema: String,
    pub name: String,
    /// Inserted, updated, deleted.
    pub rows: [i64; 3],
    /// An ordinary table (whose rows can be sampled).
    pub plain: bool,
}

/// What the inspector asked the upstream for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Baseline,
    Counts,
    Samples,
}

/// What one session knows for commit review.
#[derive(Default)]
pub struct Review {
    /// The session's guardrails review some commits: otherwise nothing here
    /// is ever filled.
    pub enabled: bool,
    /// The transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub status: u8,
    /// Inside a transaction block, as the last ReadyForQuery said, unless a
    /// COMMIT or ROLLBACK was forwarded since.
    in_block: bool,
    /// A BEGIN was executed earlier in the extended batch being sent.
    batch_begin: bool,
    /// Transaction control was forwarded since the last ReadyForQuery: the
    /// status no longer says where the session is.
    moved: bool,
    /// A savepoint was used in the block: rows written under it carry its
    /// own transaction id, and are not sampled.
    savepoints: bool,
    pub pending: Option<Pending>,
    /// The message id whose lookup was asked for, and which.
    pub asked: Option<(u64, Asked)>,
    /// A held COMMIT's tables, and the statistics as its first lookup read
    /// them, between its two lookups.
    pub measured: Option<(Vec<Changed>, String)>,
    /// A Bind's baseline lookup was asked for: its answer comes with the
    /// Bind judged again.
    pub bound_asked: bool,
    /// What a Bind's lookup read, for its Execute.
    pub bound_arrival: Option<Option<Arrival>>,
    /// The review a Bind judged with its row estimate needs, for its
    /// portal.
    pub bind_need: Option<Arc<Need>>,
    /// Parse id → its review, or its transaction control.
    pub parses: HashMap<u64, Arc<Need>>,
    pub tx_parses: HashMap<u64, Transaction>,
    /// Portal → the same, as its Bind bound it (until the block ends,
    /// which drops every portal a Bind made).
    pub portals: HashMap<Vec<u8>, Arc<Need>>,
    pub tx_portals: HashMap<Vec<u8>, Transaction>,
    /// Portal names bound in this block to a reviewed statement or to
    /// transaction control, by any Bind the inspector judged.
    tainted: std::collections::HashSet<Vec<u8>>,
    /// Names prepared with SQL PREPARE in the session: with review, never
    /// prepared again (a protocol Parse of `EXECUTE name` was judged by
    /// what the name was).
    pub sql_names: std::collections::HashSet<String>,
}

impl Review {
    pub fn new(enabled: bool) -> Review {
        Review {
            enabled,
            status: b'I',
            ..Review::default()
        }
    }

    /// A ReadyForQuery: where the session is, for sure. Outside a block,
    /// no review is pending.
    pub fn ready(&mut self, status: u8, settled: bool) {
        if !settled {
            // An earlier point's status: it can only say a block ended.
            // The review stays, but its baseline may be flushed already:
            // counted from zero instead (more, never less).
            if status == b'I' {
                self.in_block = false;
                if let Some(p) = self.pending.as_mut() {
                    p.baseline = None;
                }
            }
            return;
        }
        self.status = status;
        self.in_block = status != b'I';
        self.batch_begin = false;
        self.moved = false;
        self.bound_arrival = None;
        if status == b'I' {
            self.pending = None;
            self.savepoints = false;
            self.portals.clear();
            self.tx_portals.clear();
            self.tainted.clear();
        }
    }

    /// A Sync was forwarded: a BEGIN of the batch no longer vouches for
    /// what follows.
    pub fn sync(&mut self) {
        self.batch_begin = false;
    }

    /// A portal bound in an earlier batch was executed: whatever it runs,
    /// the block may have ended.
    pub fn unknown_executed(&mut self) {
        self.ran_op(Some(Transaction::Rollback), true);
    }

    /// The statements of a simple Query forwarded to run.
    pub fn ran(&mut self, statements: &[Statement]) {
        for s in statements {
            self.ran_op(s.transaction, false);
        }
    }

    /// The transaction control of an extended-protocol Execute forwarded.
    pub fn executed(&mut self, op: Transaction) {
        self.ran_op(Some(op), true);
    }

    fn ran_op(&mut self, op: Option<Transaction>, in_batch: bool) {
        let Some(op) = op else { return };
        self.moved = true;
        match op {
            Transaction::Begin if in_batch => self.batch_begin = true,
            Transaction::Begin | Transaction::Prepared => {}
            Transaction::Commit | Transaction::Rollback | Transaction::Prepare => {
                self.in_block = false;
                self.batch_begin = false;
            }
            Transaction::Savepoint => self.savepoints = true,
        }
    }

    /// Whether the client's next statement runs inside a transaction block,
    /// as far as can be known without waiting.
    pub fn open(&self) -> bool {
        self.in_block || self.batch_begin
    }

    /// Whether the transaction is known to be aborted, so that its COMMIT
    /// can only roll it back.
    pub fn aborted(&self) -> bool {
        self.status == b'E' && !self.moved
    }

    /// The reviewed COMMIT was approved and forwarded: the review is over,
    /// whatever block (`AND CHAIN`) follows.
    pub fn committed(&mut self) {
        self.pending = None;
        self.measured = None;
        self.ran_op(Some(Transaction::Commit), false);
    }

    /// A Bind of Parse `id` (`None`: not a Parse airlock saw) to `portal`:
    /// the portal's Executes do what the statement does.
    /// Returns false, recording nothing, when the portal would have to be
    /// remembered and the session's maps are full: the Bind is refused.
    pub fn bound(&mut self, portal: &[u8], id: Option<u64>) -> bool {
        let need = self
            .bind_need
            .take()
            .or_else(|| id.and_then(|id| self.parses.get(&id)).cloned());
        let op = id.and_then(|id| self.tx_parses.get(&id)).copied();
        if (need.is_some() || op.is_some())
            && !self.tainted.contains(portal)
            && self.tainted.len() >= MAX_PORTALS
        {
            return false;
        }
        // A Bind that fails upstream leaves the name as it was: whatever a
        // name was bound to in the block stays marked, for an Execute that
        // does not follow its Bind.
        if need.is_some() || op.is_some() {
            self.tainted.insert(portal.to_vec());
        }
        match need {
            Some(need) => {
                self.portals.insert(portal.to_vec(), need);
            }
            None => {
                self.portals.remove(portal);
            }
        }
        match op {
            Some(op) => {
                self.tx_portals.insert(portal.to_vec(), op);
            }
            None => {
                self.tx_portals.remove(portal);
            }
        }
        true
    }

    /// Whether `portal` was bound, in this block, to a reviewed statement
    /// or to transaction control (by a Bind that may have failed).
    pub fn tainted(&self, portal: &[u8]) -> bool {
        self.tainted.contains(portal)
    }

    /// Whether another name may be prepared with SQL PREPARE.
    pub fn sql_name_room(&self) -> bool {
        self.sql_names.len() < MAX_PORTALS
    }

    /// Adds reviewed statements to the pending review (the first begins
    /// it, with the baseline) with what their lookup read as they arrived
    /// (`None`: nothing could be read).
    pub fn add(&mut self, need: &Need, text: String, arrival: Option<Arrival>) {
        let (baseline, before) = match arrival {
            Some(a) => (
                Some(
                    a.stats
                        .into_iter()
                        .map(|(r, i, u, d)| (r, [i, u, d]))
                        .collect(),
                ),
                a.before,
            ),
            None => (None, None),
        };
        let changes_rows = need.statements.iter().any(Statement::modifies_rows);
        let pending = self.pending.get_or_insert_with(|| {
            Pending::new(&need.rule, &need.approvers, need.min_approvals, baseline)
        });
        match before {
            Some(rows) => {
                let room = BEFORE_ROWS
                    .saturating_sub(pending.before.len())
                    .min(SAMPLE_ROWS);
                pending.before_more |= rows.len() > room;
                pending.before.extend(rows.into_iter().take(room));
            }
            None => pending.before_complete &= !changes_rows,
        }
        if pending.texts.len() < SHOWN_STATEMENTS {
            pending.texts.push(text);
            pending.statements.extend(need.statements.iter().cloned());
        } else {
            pending.more += 1;
        }
    }

    /// The tables a held COMMIT's transaction changed since the baseline,
    /// from its [`COUNTS`] lookup.
    pub fn changed(&self, counts: &str) -> Option<Vec<Changed>> {
        let rows: Vec<(u32, String, String, i64, i64, i64, String)> =
            serde_json::from_str(counts).ok()?;
        let baseline = self.pending.as_ref()?.baseline.as_ref();
        Some(
            rows.into_iter()
                .filter_map(|(relid, schema, name, i, u, d, relkind)| {
                    let before = baseline
                        .and_then(|b| b.get(&u64::from(relid)))
                        .unwrap_or(&[0; 3]);
                    let rows = [i - before[0], u - before[1], d - before[2]];
                    rows.iter().any(|n| *n != 0).then_some(Changed {
                        relid,
                        schema,
                        name,
                        rows,
                        plain: relkind == "r",
                    })
                })
                .collect(),
        )
    }
}

/// Whether the statistics a sample lookup read again (its `recount`) are
/// those the COMMIT's first lookup read (`counts`).
pub fn unchanged(counts: &str, samples: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Recount {
        recount: Value,
    }
    match (
        serde_json::from_str::<Value>(counts),
        serde_json::from_str::<Recount>(samples),
    ) {
        (Ok(before), Ok(after)) => before == after.recount,
        _ => false,
    }
}

/// A table's `{column: attnum}`, the table's OID being `relid` (SQL).
fn attnums(relid: &str) -> String {
    format!(
        "(SELECT pg_catalog.json_object_agg(a.attname, a.attnum) FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid OPERATOR(pg_catalog.=) {relid} AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped)"
    )
}

/// Row `alias` as `{column: text}`, each value cut to [`FETCHED_CHARS`];
/// `filter` (a WHERE clause on `e.key`) leaves columns out.
fn row_json(alias: &str, filter: &str) -> String {
    format!(
        "(SELECT pg_catalog.json_object_agg(e.key, pg_catalog.left(e.value, {FETCHED_CHARS})) \
         FROM pg_catalog.json_each_text(pg_catalog.row_to_json({alias})) e {filter})"
    )
}

/// What [`arrival_sql`] returned.
pub fn parse_arrival(json: &str) -> Option<Arrival> {
    serde_json::from_str(json).ok()
}

/// The lookup sampling the rows this transaction wrote in each ordinary
/// table it changed (at most [`SAMPLE_TABLES`]), by OID and qualified name;
/// `None` when there is none.
pub fn samples_sql(changed: &[Changed]) -> Option<String> {
    let samples: Vec<String> = changed
        .iter()
        .filter(|c| c.plain)
        .take(SAMPLE_TABLES)
        .map(|c| {
            let relid = c.relid;
            let table = format!("{}.{}", ident(&c.schema), ident(&c.name));
            format!(
                "pg_catalog.json_build_object('relid', {relid}, 'attnums', {}, \
                 'rows', (SELECT pg_catalog.json_agg(y.r) FROM (SELECT {} AS r FROM (SELECT * FROM {table} \
                 WHERE xmin OPERATOR(pg_catalog.=) pg_catalog.xid(pg_catalog.pg_current_xact_id()) LIMIT {}) x) y))",
                attnums(&format!("{relid}::pg_catalog.oid")),
                row_json("x", ""),
                SAMPLE_ROWS + 1
            )
        })
        .collect();
    // The statistics again, after sampling: a sample that ran code of the
    // client's (a cast, a row security policy) must not have written.
    (!samples.is_empty()).then(|| {
        format!(
            "SELECT pg_catalog.json_build_object('samples', pg_catalog.json_build_array({}), 'recount', ({COUNTS}))",
            samples.join(", ")
        )
    })
}

/// What an approver sees of a pending review: rows per changed table, and
/// each sample (from [`samples_sql`]'s answer, `None` when nothing was
/// sampled) masked as the session's results are. `None` when the sample
/// cannot be read.
pub fn effect(
    pending: &Pending,
    changed: &[Changed],
    samples: Option<&str>,
    savepoints: bool,
    masking: Option<&SessionMasking>,
    analyzer: &airlock_sql::Analyzer,
) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Sample {
        relid: u32,
        attnums: Option<HashMap<String, i16>>,
        rows: Option<Vec<serde_json::Map<String, Value>>>,
    }
    #[derive(serde::Deserialize)]
    struct Sampled {
        samples: Vec<Sample>,
    }
    let samples: Vec<Sample> = match samples {
        Some(json) => serde_json::from_str::<Sampled>(json).ok()?.samples,
        None => Vec::new(),
    };
    let tables: Vec<Value> = changed
        .iter()
        .map(|c| {
            let [i, u, d] = c.rows;
            json!({"table": format!("{}.{}", c.schema, c.name), "inserted": i, "updated": u, "deleted": d})
        })
        .collect();
    let mut written = Vec::new();
    for sample in samples {
        let c = changed.iter().find(|c| c.relid == sample.relid)?;
        let attnums = sample.attnums.unwrap_or_default();
        let mut rows = sample.rows.unwrap_or_default();
        let more = rows.len() > SAMPLE_ROWS;
        rows.truncate(SAMPLE_ROWS);
        let table = format!("{}.{}", ident(&c.schema), ident(&c.name));
        let mut shown = Vec::with_capacity(rows.len());
        for row in rows {
            shown.push(masked(row, c.relid, &table, &attnums, masking, analyzer)?);
        }
        written.push(
            json!({"table": format!("{}.{}", c.schema, c.name), "rows": shown, "more": more}),
        );
    }
    // The rows as they were, by table in the order met.
    let mut before: Vec<(String, Vec<Value>)> = Vec::new();
    for Before(relid, table, attnums, row) in &pending.before {
        let row = masked(
            row.clone().unwrap_or_default(),
            *relid,
            table,
            attnums.as_ref().unwrap_or(&HashMap::new()),
            masking,
            analyzer,
        )?;
        match before.iter_mut().find(|(t, _)| t == table) {
            Some((_, rows)) => rows.push(row),
            None => before.push((table.clone(), vec![row])),
        }
    }
    let before: Vec<Value> = before
        .into_iter()
        .map(|(table, rows)| json!({"table": table, "rows": rows}))
        .collect();
    let sampled = changed.iter().filter(|c| c.plain).count();
    let mut statements = pending.texts.clone();
    if pending.more > 0 {
        statements.push(format!("… and {} more", pending.more));
    }
    Some(json!({
        "tables": tables,
        "rows_before": before,
        "written_rows": written,
        "statements": statements,
        "baseline": pending.baseline.is_some(),
        "sample_complete": !savepoints && sampled <= SAMPLE_TABLES && pending.before_complete,
        "before_more": pending.before_more,
    }))
}

/// One sampled row of the table `relid` (named `table`, as SQL), masked as
/// a result of `SELECT * FROM table` would be, each value cut.
fn masked(
    row: serde_json::Map<String, Value>,
    relid: u32,
    table: &str,
    attnums: &HashMap<String, i16>,
    masking: Option<&SessionMasking>,
    analyzer: &airlock_sql::Analyzer,
) -> Option<Value> {
    let (names, mut values): (Vec<String>, Vec<Value>) = row.into_iter().unzip();
    if let Some(m) = masking {
        let analyzed = analyzer.analyze(&format!("SELECT * FROM {table}"));
        let lineage = &analyzed.first()?.lineage;
        let origins: Vec<airlock_policy::masking::FieldOrigin> = names
            .iter()
            .map(|n| airlock_policy::masking::FieldOrigin::Oid {
                table: relid,
                attnum: attnums.get(n).copied().unwrap_or(0),
            })
            .collect();
        let plan = m.masking.policy.plan(&m.catalog, lineage, &origins);
        m.masking.mask_json_row(&plan, &mut values);
    }
    Some(Value::Object(
        names
            .into_iter()
            .zip(values.into_iter().map(shorten))
            .collect(),
    ))
}

impl Review {
    /// Whether a savepoint was used in the block (its rows are not
    /// sampled).
    pub fn savepoints(&self) -> bool {
        self.savepoints
    }
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

/// An identifier, quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(baseline: Option<HashMap<u64, [i64; 3]>>) -> Pending {
        Pending {
            texts: vec!["UPDATE t SET a = ?".into()],
            ..Pending::new("r", &["dba".into()], 1, baseline)
        }
    }

    #[test]
    fn samples_name_tables_quoted_and_by_oid() {
        let c = Changed {
            relid: 42,
            schema: "we\"ird".into(),
            name: "t'x".into(),
            rows: [1, 0, 0],
            plain: true,
        };
        let view = Changed {
            relid: 43,
            plain: false,
            ..c.clone()
        };
        let sql = samples_sql(&[c, view]).unwrap();
        assert!(
            sql.contains("FROM \"we\"\"ird\".\"t'x\" WHERE xmin"),
            "{sql}"
        );
        assert!(
            sql.contains("a.attrelid OPERATOR(pg_catalog.=) 42::pg_catalog.oid"),
            "{sql}"
        );
        assert!(
            !sql.contains("43"),
            "only ordinary tables are sampled: {sql}"
        );
        assert!(samples_sql(&[]).is_none());
    }

    #[test]
    fn the_effect_is_the_difference_from_the_baseline() {
        let mut review = Review::new(true);
        review.pending = Some(pending(Some(HashMap::from([(16396, [3, 0, 0])]))));
        let changed = review
            .changed(r#"[[16396, "public", "t", 4, 1, 1, "r"], [17000, "public", "u", 2, 0, 0, "r"], [17001, "public", "v", 0, 0, 0, "r"]]"#)
            .unwrap();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(changed[0].rows, [1, 1, 1]);
        let samples = r#"{"samples": [{"relid": 16396, "attnums": {"id": 1, "name": 2},
                          "rows": [{"id": "2", "name": "z"}, {"id": "4", "name": "d"}]}],
                          "recount": [[1, "public", "t", 1, 0, 0, "r"]]}"#;
        assert!(unchanged(r#"[[1, "public", "t", 1, 0, 0, "r"]]"#, samples));
        assert!(!unchanged(r#"[[1, "public", "t", 2, 0, 0, "r"]]"#, samples));
        let analyzer = airlock_sql::Analyzer::new(&[]);
        let p = review.pending.as_ref().unwrap();
        let e = effect(p, &changed, Some(samples), false, None, &analyzer).unwrap();
        assert_eq!(
            e["tables"],
            json!([
                {"table": "public.t", "inserted": 1, "updated": 1, "deleted": 1},
                {"table": "public.u", "inserted": 2, "updated": 0, "deleted": 0},
            ])
        );
        assert_eq!(e["written_rows"][0]["table"], "public.t");
        assert_eq!(
            e["written_rows"][0]["rows"][1],
            json!({"id": "4", "name": "d"})
        );
        assert_eq!(e["baseline"], json!(true));
        assert_eq!(e["sample_complete"], json!(true));
        assert!(effect(p, &changed, Some("not json"), false, None, &analyzer).is_none());
        let e = effect(p, &changed, None, true, None, &analyzer).unwrap();
        assert_eq!(e["sample_complete"], json!(false));
    }

    #[test]
    fn only_a_confirmed_begin_or_one_earlier_in_the_batch_opens_a_block() {
        let begin = Statement {
            transaction: Some(Transaction::Begin),
            ..Statement::unknown("", (0, 0))
        };
        let mut r = Review::new(true);
        r.ready(b'I', true);
        // A BEGIN in a Query may fail with an earlier statement.
        r.ran(std::slice::from_ref(&begin));
        assert!(!r.open());
        r.executed(Transaction::Begin);
        assert!(r.open(), "a BEGIN earlier in the same batch");
        r.sync();
        assert!(!r.open(), "not past its batch's Sync");
        r.ready(b'T', true);
        assert!(r.open());
        r.executed(Transaction::Rollback);
        assert!(!r.open(), "a forwarded ROLLBACK lowers it at once");
        // A late ReadyForQuery (others still unanswered) says nothing of
        // now: it neither raises the block nor ends a review.
        r.ready(b'T', true);
        r.pending = Some(pending(None));
        r.executed(Transaction::Rollback);
        r.ready(b'T', false);
        assert!(!r.open());
        r.ready(b'I', false);
        assert!(r.pending.is_some(), "only a settled 'I' ends the review");
        r.ready(b'I', true);
        assert!(r.pending.is_none());
    }
}
