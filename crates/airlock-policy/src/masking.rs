//! Masking rules and the per-result mask plan.
//!
//! A rule names sensitive columns by `[schema.]table.column` globs, or
//! content [`Detector`]s that apply to any column, and the [`Strategy`] that
//! hides their values. For each result, [`MaskingPolicy::plan`] decides per
//! output column whether its values pass or are masked, from three facts:
//! where the wire protocol says the column comes from (table OID and
//! attribute number, which defeats aliases), the statement's [`Lineage`]
//! for computed columns, and a [`SensitiveCatalog`] built from the
//! upstream's own catalog. When lineage cannot be determined and the value
//! may come from a sensitive column, the column is masked: over-masking is
//! acceptable, leaking is not.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::lineage::{CopyFormat, Lineage, Output, Source};
use crate::statement::{Relation, Statement};

/// How a sensitive value is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A fixed placeholder for text values, NULL for others.
    Redact,
    /// Keep the first or last characters, mask the rest.
    Partial { keep_first: u16, keep_last: u16 },
    /// `j***@example.com`: first character of the local part and the domain.
    Email,
    /// A keyed HMAC pseudonym: the same input gives the same output, so
    /// values can still be joined and grouped on.
    Hash,
    /// NULL.
    Null,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Redact => f.write_str("redact"),
            Strategy::Partial {
                keep_first,
                keep_last,
            } => write!(f, "partial(keep_first {keep_first}, keep_last {keep_last})"),
            Strategy::Email => f.write_str("email"),
            Strategy::Hash => f.write_str("hash"),
            Strategy::Null => f.write_str("null"),
        }
    }
}

/// A content detector: recognizes a kind of sensitive value in any text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// 13–19 digits, optionally separated by spaces or dashes, passing the
    /// Luhn check.
    CreditCard,
    /// A US social security number, `123-45-6789`.
    Ssn,
    Email,
    Phone,
    /// An IBAN passing the mod-97 check.
    Iban,
    /// A JSON Web Token: three base64url segments, the first starting `eyJ`.
    Jwt,
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// Text that reads like instructions to an agent (prompt-injection
    /// phrases, tool-call-shaped JSON, hidden Unicode): the whole value.
    PlantedInstructions,
}

impl Detector {
    pub const ALL: &'static [Detector] = &[
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Email,
        Detector::Phone,
        Detector::Iban,
        Detector::Jwt,
        Detector::AwsAccessKeyId,
        Detector::PlantedInstructions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::CreditCard => "credit_card",
            Detector::Ssn => "ssn",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKeyId => "aws_access_key_id",
            Detector::PlantedInstructions => "planted_instructions",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Whether it judges a whole result value and never a span inside
    /// longer text: what a client sent (its statements, parameters, errors
    /// quoting them) is never masked by it.
    pub fn value_only(self) -> bool {
        matches!(self, Detector::PlantedInstructions)
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `[schema.]table.column` glob. `*` matches any run of characters within
/// one part; a two-part pattern matches the table in any schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    schema: Option<String>,
    table: String,
    column: String,
}

impl ColumnPattern {
    pub fn parse(text: &str) -> Result<ColumnPattern, String> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("\"{text}\" has an empty part"));
        }
        let own = |s: &str| s.to_string();
        match parts.as_slice() {
            [table, column] => Ok(ColumnPattern {
                schema: None,
                table: own(table),
                column: own(column),
            }),
            [schema, table, column] => Ok(ColumnPattern {
                schema: Some(own(schema)),
                table: own(table),
                column: own(column),
            }),
            _ => Err(format!(
                "\"{text}\" is not [schema.]table.column (use \"*.{text}\" for a column of any table)"
            )),
        }
    }

    /// Whether the pattern matches a relation's column. `schema` is `None`
    /// when the statement did not qualify the relation: it could be in any
    /// schema, so any schema matches.
    fn matches(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        self.matches_relation(schema, table) && glob(&self.column, column)
    }

    /// Whether the pattern can match some column of the relation.
    fn matches_relation(&self, schema: Option<&str>, table: &str) -> bool {
        let schema_ok = match (&self.schema, schema) {
            (Some(p), Some(s)) => glob(p, s),
            _ => true,
        };
        schema_ok && glob(&self.table, table)
    }
}

impl fmt::Display for ColumnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.schema {
            write!(f, "{s}.")?;
        }
        write!(f, "{}.{}", self.table, self.column)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One masking rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRule {
    pub name: String,
    pub columns: Vec<ColumnPattern>,
    pub detect: Vec<Detector>,
    pub strategy: Strategy,
}

/// How one value is masked, and which rule says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mask {
    /// Index of the rule in the policy, or [`Mask::LINEAGE`].
    pub rule: u16,
    pub strategy: Strategy,
}

impl Mask {
    /// The rule index of masks applied because a value's lineage could not
    /// be traced while it may come from a sensitive column.
    pub const LINEAGE: u16 = u16::MAX;

    /// The mask for a value whose lineage stops at something that may hide
    /// sensitive data.
    pub const UNTRACED: Mask = Mask {
        rule: Mask::LINEAGE,
        strategy: Strategy::Redact,
    };

    /// One mask for a value computed from several masked ones: the same
    /// mask when they agree, otherwise NULL when any says NULL, else redact.
    fn combine(a: Option<Mask>, b: Mask) -> Mask {
        match a {
            None => b,
            Some(a) if a == b => a,
            Some(a) => {
                let null = a.strategy == Strategy::Null || b.strategy == Strategy::Null;
                Mask {
                    rule: a.rule.min(b.rule),
                    strategy: if null {
                        Strategy::Null
                    } else {
                        Strategy::Redact
                    },
                }
            }
        }
    }
}

/// What a masked value is replaced with by `redact`, and what recordings
/// write for a value they withhold.
pub const PLACEHOLDER: &str = "*****";

/// The `masking` section, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskingPolicy {
    pub rules: Vec<MaskRule>,
    /// Refuse statements whose row choice, joins, grouping or ordering
    /// refer to a masked column (they let a client infer masked values).
    pub deny_predicates: bool,
}

/// The mask a policy applies to one result column.
pub type ColumnMask = Option<Mask>;

/// How to mask one result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaskPlan {
    /// Per result column: pass (`None`) or mask.
    pub columns: Vec<ColumnMask>,
    /// Whether content detectors run over the values of unmasked columns.
    pub detect: bool,
}

impl MaskPlan {
    /// Whether the plan changes nothing, so rows can be forwarded as they
    /// are.
    pub fn is_pass(&self) -> bool {
        !self.detect && self.columns.iter().all(Option::is_none)
    }
}

/// Where a door's wire says a result column comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOrigin {
    /// By identifiers (PostgreSQL's RowDescription: table OID and attribute
    /// number; 0 and 0 for a computed column).
    Oid { table: u32, attnum: i16 },
    /// By name (MySQL's ColumnDefinition: schema, original table and
    /// column; an empty table for a computed column).
    Named {
        schema: String,
        table: String,
        column: String,
    },
}

impl Default for FieldOrigin {
    /// A computed column.
    fn default() -> FieldOrigin {
        FieldOrigin::Oid {
            table: 0,
            attnum: 0,
        }
    }
}

/// Why a statement is refused by the masking policy, and what would be
/// allowed instead (for its hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRefusal(pub String, pub &'static str);

impl fmt::Display for MaskRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl MaskingPolicy {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule naming each detector, with its mask.
    pub fn detectors(&self) -> Vec<(Detector, Mask)> {
        let mut out: Vec<(Detector, Mask)> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            for d in &r.detect {
                if !out.iter().any(|(x, _)| x == d) {
                    out.push((
                        *d,
                        Mask {
                            rule: i as u16,
                            strategy: r.strategy,
                        },
                    ));
                }
            }
        }
        out
    }

    /// The name of the rule a mask came from.
    pub fn rule_name(&self, mask: Mask) -> &str {
        match self.rules.get(mask.rule as usize) {
            Some(r) => &r.name,
            None => "airlock:untraced-lineage",
        }
    }

    /// The rule masking `column` of a relation, by name (the first rule in
    /// file order wins).
    fn by_name(&self, schema: Option<&str>, table: &str, column: &str) -> Option<Mask> {
        self.rules.iter().enumerate().find_map(|(i, r)| {
            r.columns
                .iter()
                .any(|p| p.matches(schema, table, column))
                .then_some(Mask {
                    rule: i as u16,
                    strategy: r.strategy,
                })
        })
    }

    /// Whether a column rule could cover some column of one of `relations`,
    /// judged by name alone (no catalog: a view over a masked table is not
    /// seen). Recording uses it to decide which statements' literals to hide.
    pub fn may_name_masked(&self, relations: &[crate::statement::Relation]) -> bool {
        relations.iter().any(|r| {
            self.relation_by_name(r.schema.as_deref(), &r.name)
                .is_some()
        })
    }

    /// Every rule that could mask some column of a relation, by name only.
    fn relation_by_name(&self, schema: Option<&str>, table: &str) -> Option<Mask> {
        let mut acc = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.columns.iter().any(|p| p.matches_relation(schema, table)) {
                acc = Some(Mask::combine(
                    acc,
                    Mask {
                        rule: i as u16,
                        strategy: r.strategy,
                    },
                ));
            }
        }
        acc
    }

    /// The mask plan for one result. `fields` are the result's columns as
    /// the wire protocol describes them; `lineage` is the statement's.
    pub fn plan(
        &self,
        catalog: &SensitiveCatalog,
        lineage: &Lineage,
        fields: &[FieldOrigin],
    ) -> MaskPlan {
        let detect = self.rules.iter().any(|r| !r.detect.is_empty());
        if !catalog.any_sensitive && fields.iter().all(|f| catalog.knows_origin(f)) {
            return MaskPlan {
                columns: vec![None; fields.len()],
                detect,
            };
        }
        let union: Vec<Source>;
        let sources = match per_column(&lineage.outputs, fields.len()) {
            Some(s) => s,
            None => {
                union = lineage
                    .outputs
                    .iter()
                    .flat_map(|o| match o {
                        Output::Column(s) | Output::Star(s) => s.iter().cloned(),
                    })
                    .collect();
                vec![union.as_slice(); fields.len()]
            }
        };
        let columns = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if let Some(m) = catalog.origin_of(f) {
                    return m;
                }
                // A computed column, or a relation created after the catalog
                // was read: follow the statement's lineage by name.
                self.sources(catalog, sources.get(i).copied().unwrap_or(&[]), f)
            })
            .collect();
        MaskPlan { columns, detect }
    }

    /// The mask plan for `COPY … TO STDOUT`, whose rows carry no column
    /// origins: everything is resolved by name. `None` when the number of
    /// columns is unknown and some may be sensitive: every column is then
    /// masked with [`Mask::UNTRACED`] (see [`CopyPlan`]).
    pub fn copy_plan(&self, catalog: &SensitiveCatalog, lineage: &Lineage) -> CopyPlan {
        let detect = self.rules.iter().any(|r| !r.detect.is_empty());
        let mut columns = Vec::new();
        for output in &lineage.outputs {
            match output {
                Output::Column(sources) => {
                    columns.push(self.sources(catalog, sources, &FieldOrigin::default()))
                }
                Output::Star(sources) => match sources.as_slice() {
                    [Source::WholeRow(rel)] => match catalog.relation_columns(rel) {
                        Some(cols) => columns.extend(cols.iter().map(|(name, mask)| {
                            mask.or_else(|| self.by_name(rel.schema.as_deref(), &rel.name, name))
                        })),
                        // A relation created since the catalog was read.
                        None if !catalog.knows_name(rel) => {
                            return CopyPlan::Uniform(Mask::UNTRACED, detect);
                        }
                        None => return self.copy_uniform(catalog, sources, detect),
                    },
                    _ => return self.copy_uniform(catalog, sources, detect),
                },
            }
        }
        CopyPlan::Columns(MaskPlan { columns, detect })
    }

    fn copy_uniform(
        &self,
        catalog: &SensitiveCatalog,
        sources: &[Source],
        detect: bool,
    ) -> CopyPlan {
        match self.sources(catalog, sources, &FieldOrigin::default()) {
            Some(m) => CopyPlan::Uniform(m, detect),
            None => CopyPlan::Columns(MaskPlan {
                columns: Vec::new(),
                detect,
            }),
        }
    }

    /// The mask for a value computed from `sources`.
    fn sources(
        &self,
        catalog: &SensitiveCatalog,
        sources: &[Source],
        field: &FieldOrigin,
    ) -> ColumnMask {
        let mut acc: Option<Mask> = None;
        let mut add = |m: Option<Mask>| {
            if let Some(m) = m {
                acc = Some(Mask::combine(acc, m));
            }
        };
        if !catalog.knows_origin(field) {
            // A relation created since the catalog was read: it may hold a
            // copy of anything.
            add(Some(Mask::UNTRACED));
        }
        // Lineage that stops can hide a masked value only if there is one.
        let untraced = catalog.any_sensitive.then_some(Mask::UNTRACED);
        for s in sources {
            match s {
                Source::Column { relation, column } => {
                    if catalog.tainted_name(relation) {
                        add(Some(Mask::UNTRACED));
                    }
                    add(if catalog.knows_name(relation) {
                        catalog.column_by_name(relation, column)
                    } else {
                        self.by_name(relation.schema.as_deref(), &relation.name, column)
                    });
                }
                Source::WholeRow(relation) => {
                    if catalog.tainted_name(relation) {
                        add(Some(Mask::UNTRACED));
                    }
                    // A whole row is a composite: a partial or email
                    // strategy has nothing to keep in it.
                    let whole = self.relation_mask(catalog, relation);
                    add(whole.map(|m| Mask {
                        rule: m.rule,
                        strategy: match m.strategy {
                            Strategy::Null => Strategy::Null,
                            Strategy::Hash => Strategy::Hash,
                            _ => Strategy::Redact,
                        },
                    }));
                }
                Source::Function(name) => {
                    if catalog.is_user_function(name) {
                        add(untraced);
                    }
                }
                Source::Opaque => add(untraced),
            }
        }
        acc
    }

    /// Whether any of `sources` is masked: used for the inference guard and
    /// for values written out of the result path.
    pub fn first_masked<'a>(
        &self,
        catalog: &SensitiveCatalog,
        sources: &'a [Source],
    ) -> Option<(&'a Source, Mask)> {
        if !catalog.any_sensitive {
            return None;
        }
        sources.iter().find_map(|s| {
            self.sources(catalog, std::slice::from_ref(s), &FieldOrigin::default())
                .map(|m| (s, m))
        })
    }

    /// Whether a statement touches a relation with masked columns (or one
    /// whose data may derive from them): its errors and notices are then
    /// scrubbed of quoted values.
    pub fn touches_sensitive(&self, catalog: &SensitiveCatalog, relations: &[Relation]) -> bool {
        catalog.any_sensitive
            && relations
                .iter()
                .any(|r| self.relation_mask(catalog, r).is_some())
    }

    /// One mask covering every masked column of a relation: from the
    /// catalog when it knows the name, else from the rules' patterns (a
    /// relation created since the catalog was read may have any column).
    fn relation_mask(&self, catalog: &SensitiveCatalog, rel: &Relation) -> Option<Mask> {
        if catalog.knows_name(rel) {
            catalog.relation_mask(rel)
        } else {
            self.relation_by_name(rel.schema.as_deref(), &rel.name)
        }
    }

    /// Refuses a statement the masking policy cannot let run: one that
    /// copies masked values out of the result path, one whose predicates
    /// refer to masked columns (with `deny_predicates`), or a binary COPY of
    /// masked data.
    pub fn check(&self, catalog: &SensitiveCatalog, stmt: &Statement) -> Result<(), MaskRefusal> {
        let lineage = &stmt.lineage;
        if !catalog.any_sensitive {
            return Ok(());
        }
        if let Some((source, mask)) = self.first_masked(catalog, &lineage.written) {
            return Err(MaskRefusal(
                format!(
                    "the statement would copy {} (masked by rule \"{}\") somewhere other than its result",
                    describe(source),
                    self.rule_name(mask)
                ),
                "this column is masked for you: read it in a result (masked), or aggregate instead; do not copy it into a table, file or setting",
            ));
        }
        if self.deny_predicates
            && let Some((source, mask)) = self.first_masked(catalog, &lineage.predicates)
        {
            {
                return Err(MaskRefusal(
                    format!(
                        "the statement filters, joins, groups or orders on {} (masked by rule \"{}\"), and masking.deny_predicates is on",
                        describe(source),
                        self.rule_name(mask)
                    ),
                    "this column is masked for you: filter, join, group and order on other columns",
                ));
            }
        }
        if lineage.copy == Some(CopyFormat::Binary) {
            let plan = self.copy_plan(catalog, lineage);
            let masked = match &plan {
                CopyPlan::Uniform(..) => true,
                CopyPlan::Columns(p) => !p.is_pass(),
            };
            if masked {
                return Err(MaskRefusal(
                    "a binary COPY cannot be masked or scanned by content detectors; use FORMAT text or csv".into(),
                    "COPY with FORMAT text or csv",
                ));
            }
        }
        Ok(())
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::Column { relation, column } => format!("column {relation}.{column}"),
        Source::WholeRow(relation) => format!("whole rows of {relation}"),
        Source::Function(name) => format!("the result of {name}()"),
        Source::Opaque => "a value of untraceable origin".into(),
    }
}

/// How to mask the rows of a `COPY … TO STDOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlan {
    /// Per column, as for a result with a RowDescription.
    Columns(MaskPlan),
    /// Mask every column with this mask (the column count is unknown);
    /// `bool` is whether detectors run.
    Uniform(Mask, bool),
}

/// For each result column, the lineage sources of its value. With one star
/// of unknown width, the star spans whatever the fixed entries leave; with
/// more, or a count that does not fit, `None`: any column may come from any
/// output.
fn per_column(outputs: &[Output], n: usize) -> Option<Vec<&[Source]>> {
    let stars = outputs
        .iter()
        .filter(|o| matches!(o, Output::Star(_)))
        .count();
    let fixed = outputs.len() - stars;
    let fits = match stars {
        0 => fixed == n,
        1 => fixed <= n,
        _ => false,
    };
    if fits {
        let mut out = Vec::with_capacity(n);
        for o in outputs {
            match o {
                Output::Column(s) => out.push(s.as_slice()),
                Output::Star(s) => out.extend(std::iter::repeat_n(s.as_slice(), n - fixed)),
            }
        }
        return Some(out);
    }
    if outputs.is_empty() {
        // Statements that return no table data (SHOW, EXPLAIN…).
        return Some(vec![&[]; n]);
    }
    None
}

/// One relation of the upstream's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRelation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `(attnum, name)` of its live columns, in attnum order.
    pub columns: Vec<(i16, String)>,
    /// The attnums of its generated columns, which `COPY table TO` leaves
    /// out.
    pub generated: Vec<i16>,
    pub kind: RelationKind,
}

/// What a catalog source knows of a relation beyond its columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RelationKind {
    /// A user relation: the masking rules apply to it.
    #[default]
    User,
    /// The server's own: no rule applies.
    BuiltIn,
    /// A relation (the server's, or an extension's) that shows values of
    /// other relations (statistics, query texts): every column (`None`), or
    /// the one named, is masked whole. It does not by itself turn masking
    /// on.
    Exposes {
        column: Option<String>,
        built_in: bool,
    },
}

/// What the masking plan needs from the upstream's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFacts {
    /// User relations (tables, views, materialized views, foreign and
    /// partitioned tables), plus the built-in relations that expose values
    /// ([`RelationKind::Exposes`]).
    pub relations: Vec<CatalogRelation>,
    /// Relation identifiers below this are the server's own (built in),
    /// whether listed or not (PostgreSQL: 16384); 0 when there are none.
    pub first_user_id: u32,
    /// `(view, relation, attnum)`: the view's (or materialized view's)
    /// query reads that column (`pg_depend` through `pg_rewrite`).
    pub view_reads: Vec<(u32, u32, i16)>,
    /// Views (and materialized views) whose query calls a user-defined
    /// function: what they return cannot be traced.
    pub view_functions: Vec<u32>,
    /// `(child, parent)` from `pg_inherits`.
    pub inherits: Vec<(u32, u32)>,
    /// User-defined functions and procedures, `(schema, name)`, not
    /// counting those of extensions.
    pub user_functions: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct RelationInfo {
    schema: String,
    /// `(attnum, name, mask)` of its columns, in attnum order.
    columns: Vec<(i16, String, Option<Mask>)>,
    generated: Vec<i16>,
    /// Every column is masked with [`Mask::UNTRACED`]: a view over masked
    /// columns, or a relation that exposes every column.
    tainted: bool,
    /// Its masked columns turn masking on ([`RelationKind::User`]).
    counts: bool,
}

impl RelationInfo {
    /// The mask of column `attnum`; attnum 0 is the whole row.
    fn mask(&self, attnum: i16) -> Option<Mask> {
        if self.tainted {
            return Some(Mask::UNTRACED);
        }
        if attnum == 0 {
            return self.combined();
        }
        self.columns
            .iter()
            .find(|(a, _, _)| *a == attnum)
            .and_then(|(_, _, m)| *m)
    }

    /// One mask covering every masked column.
    fn combined(&self) -> Option<Mask> {
        if self.tainted {
            return Some(Mask::UNTRACED);
        }
        self.columns
            .iter()
            .filter_map(|(_, _, m)| *m)
            .fold(None, |acc, m| Some(Mask::combine(acc, m)))
    }
}

/// The upstream's catalog seen through the masking rules: which columns of
/// which relations are masked. Built once per upstream and policy, looked up
/// per result.
#[derive(Debug, Clone, Default)]
pub struct SensitiveCatalog {
    /// Whether anything is masked at all; when not, plans are pass-through.
    pub any_sensitive: bool,
    relations: HashMap<u32, RelationInfo>,
    by_name: HashMap<String, Vec<u32>>,
    user_functions: HashSet<String>,
    /// Every schema and column name of its relations.
    names: HashSet<String>,
    /// [`CatalogFacts::first_user_id`].
    first_user_id: u32,
}

impl SensitiveCatalog {
    /// Whether `name` names something in the catalog: a relation, one of
    /// its columns, its schema, or a user function. Errors quote such names,
    /// which masking need not hide.
    pub fn names_object(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
            || self.user_functions.contains(name)
            || self.names.contains(name)
    }

    /// Whether an unqualified `name` may mean a user's relation or function
    /// (one of that name exists), not the built-in it looks like.
    pub fn shadows(&self, name: &str) -> bool {
        self.user_functions.contains(name)
            || self.by_name.get(name).is_some_and(|oids| {
                oids.iter()
                    .any(|o| self.relations.get(o).is_some_and(|r| r.counts))
            })
    }

    pub fn build(policy: &MaskingPolicy, facts: CatalogFacts) -> SensitiveCatalog {
        let mut cat = SensitiveCatalog {
            first_user_id: facts.first_user_id,
            ..SensitiveCatalog::default()
        };
        for rel in facts.relations {
            let (exposes, built_in) = match &rel.kind {
                RelationKind::User => (None, false),
                RelationKind::BuiltIn => (None, true),
                RelationKind::Exposes { column, built_in } => (Some(column), *built_in),
            };
            let columns: Vec<(i16, String, Option<Mask>)> = rel
                .columns
                .into_iter()
                .map(|(attnum, col)| {
                    let mask = match exposes {
                        Some(None) => Some(Mask::UNTRACED),
                        Some(Some(c)) if *c == col => Some(Mask::UNTRACED),
                        _ if built_in => None,
                        _ => policy.by_name(Some(&rel.schema), &rel.name, &col),
                    };
                    (attnum, col, mask)
                })
                .collect();
            cat.by_name
                .entry(rel.name.clone())
                .or_default()
                .push(rel.oid);
            cat.names.insert(rel.schema.clone());
            cat.names.extend(columns.iter().map(|(_, c, _)| c.clone()));
            cat.relations.insert(
                rel.oid,
                RelationInfo {
                    schema: rel.schema,
                    columns,
                    generated: rel.generated,
                    tainted: matches!(exposes, Some(None)),
                    counts: rel.kind == RelationKind::User,
                },
            );
        }
        // Inheritance children and partitions: a column named like a masked
        // column of an ancestor is masked the same way. Views over masked
        // columns (or over such views) mask everything.
        for view in &facts.view_functions {
            if let Some(v) = cat.relations.get_mut(view) {
                v.tainted = true;
            }
        }
        let mut changed = true;
        while changed {
            changed = false;
            for (child, parent) in &facts.inherits {
                let Some(p) = cat.relations.get(parent) else {
                    continue;
                };
                let inherited: Vec<(String, Mask)> = p
                    .columns
                    .iter()
                    .filter_map(|(_, n, m)| m.map(|m| (n.clone(), m)))
                    .collect();
                let Some(c) = cat.relations.get_mut(child) else {
                    continue;
                };
                for (name, mask) in inherited {
                    for col in c
                        .columns
                        .iter_mut()
                        .filter(|c| c.1 == name && c.2.is_none())
                    {
                        col.2 = Some(mask);
                        changed = true;
                    }
                }
            }
            for (view, rel, attnum) in &facts.view_reads {
                let reads_masked = cat
                    .relations
                    .get(rel)
                    .is_some_and(|r| r.mask(*attnum).is_some());
                if let Some(v) = cat.relations.get_mut(view)
                    && reads_masked
                    && !v.tainted
                {
                    v.tainted = true;
                    changed = true;
                }
            }
        }
        // Relations that only expose others' values do not turn masking on.
        cat.any_sensitive = cat
            .relations
            .values()
            .any(|r| r.counts && r.combined().is_some());
        // Names as written in statements are folded to lower case unless
        // quoted; a quoted mixed-case name counts under both spellings.
        for (schema, name) in facts.user_functions {
            for n in [name.clone(), name.to_lowercase()] {
                cat.user_functions.insert(format!("{schema}.{n}"));
                cat.user_functions
                    .insert(format!("{}.{n}", schema.to_lowercase()));
                cat.user_functions.insert(n);
            }
        }
        cat
    }

    /// The mask of a result column by its wire origin: `Some(None)` for a
    /// known column that passes, `None` when the relation is unknown (created
    /// after the catalog was read).
    fn origin(&self, oid: u32, attnum: i16) -> Option<ColumnMask> {
        match self.relations.get(&oid) {
            Some(r) => Some(r.mask(attnum)),
            None if oid < self.first_user_id => Some(None),
            None => None,
        }
    }

    /// Whether the catalog knows the relation (built-in relations and
    /// computed columns, OID 0, always).
    pub fn knows(&self, oid: u32) -> bool {
        oid < self.first_user_id || self.relations.contains_key(&oid)
    }

    /// Whether the catalog knows where a result column comes from
    /// (computed columns always).
    pub fn knows_origin(&self, origin: &FieldOrigin) -> bool {
        match origin {
            FieldOrigin::Oid { table, .. } => self.knows(*table),
            FieldOrigin::Named { schema, table, .. } => {
                table.is_empty() || self.named_in(schema, table).next().is_some()
            }
        }
    }

    /// The mask of a result column by its wire origin: `Some(None)` for a
    /// known column that passes, `None` for a computed column or an unknown
    /// relation (lineage decides).
    fn origin_of(&self, origin: &FieldOrigin) -> Option<ColumnMask> {
        match origin {
            FieldOrigin::Oid { table: 0, .. } => None,
            FieldOrigin::Oid { table, attnum } => self.origin(*table, *attnum),
            FieldOrigin::Named { table, .. } if table.is_empty() => None,
            FieldOrigin::Named {
                schema,
                table,
                column,
            } => {
                let mut found = self.named_in(schema, table).peekable();
                found.peek()?;
                Some(found.fold(None, |acc, r| {
                    let m = if r.tainted {
                        Some(Mask::UNTRACED)
                    } else {
                        r.columns.iter().find(|c| c.1 == *column).and_then(|c| c.2)
                    };
                    m.map(|m| Mask::combine(acc, m)).or(acc)
                }))
            }
        }
    }

    /// The relations named `schema.table` (any schema's when `schema` is
    /// empty).
    fn named_in<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a RelationInfo> + 'a {
        self.by_name
            .get(table)
            .into_iter()
            .flatten()
            .filter_map(|oid| self.relations.get(oid))
            .filter(move |r| schema.is_empty() || r.schema == schema)
    }

    /// The relations a statement's name may refer to: every schema's when
    /// unqualified (the search path is the session's, so any could be
    /// meant).
    fn named<'a>(&'a self, rel: &'a Relation) -> impl Iterator<Item = &'a RelationInfo> + 'a {
        self.named_in(rel.schema.as_deref().unwrap_or(""), &rel.name)
    }

    fn knows_name(&self, rel: &Relation) -> bool {
        self.named(rel).next().is_some()
    }

    fn tainted_name(&self, rel: &Relation) -> bool {
        self.named(rel).any(|r| r.tainted)
    }

    fn column_by_name(&self, rel: &Relation, column: &str) -> Option<Mask> {
        self.named(rel)
            .filter_map(|r| r.columns.iter().find(|c| c.1 == column).and_then(|c| c.2))
            .fold(None, |acc, m| Some(Mask::combine(acc, m)))
    }

    fn relation_mask(&self, rel: &Relation) -> Option<Mask> {
        self.named(rel)
            .filter_map(RelationInfo::combined)
            .fold(None, |acc, m| Some(Mask::combine(acc, m)))
    }

    /// The columns of the one relation a name refers to, with their masks;
    /// `None` unless exactly one relation has the name.
    fn relation_columns(&self, rel: &Relation) -> Option<Vec<(String, Option<Mask>)>> {
        let mut named = self.named(rel);
        let r = named.next()?;
        if named.next().is_some() {
            return None;
        }
        Some(
            r.columns
                .iter()
                .filter(|(a, _, _)| !r.generated.contains(a))
                .map(|(_, n, m)| (n.clone(), if r.tainted { Some(Mask::UNTRACED) } else { *m }))
                .collect(),
        )
    }

    fn is_user_function(&self, name: &str) -> bool {
        self.user_functions.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUSTOMERS: u32 = 16400;
    const ORDERS: u32 = 16401;
    const VIEW: u32 = 16500;
    const CHILD: u32 = 16600;
    const PG_STATS: u32 = 12000;

    fn rel(schema: Option<&str>, name: &str) -> Relation {
        Relation {
            schema: schema.map(str::to_string),
            name: name.into(),
        }
    }

    fn col(t: &str, c: &str) -> Source {
        Source::Column {
            relation: rel(None, t),
            column: c.into(),
        }
    }

    fn policy() -> MaskingPolicy {
        let pat = |s: &str| ColumnPattern::parse(s).unwrap();
        MaskingPolicy {
            rules: vec![
                MaskRule {
                    name: "ssn".into(),
                    columns: vec![pat("*.ssn")],
                    detect: vec![],
                    strategy: Strategy::Partial {
                        keep_first: 0,
                        keep_last: 4,
                    },
                },
                MaskRule {
                    name: "email".into(),
                    columns: vec![pat("public.customers.email")],
                    detect: vec![],
                    strategy: Strategy::Email,
                },
                MaskRule {
                    name: "cards".into(),
                    columns: vec![],
                    detect: vec![Detector::CreditCard],
                    strategy: Strategy::Redact,
                },
            ],
            deny_predicates: false,
        }
    }

    fn relation(oid: u32, schema: &str, name: &str, cols: &[&str]) -> CatalogRelation {
        CatalogRelation {
            oid,
            schema: schema.into(),
            name: name.into(),
            columns: cols
                .iter()
                .enumerate()
                .map(|(i, c)| (i as i16 + 1, c.to_string()))
                .collect(),
            generated: Vec::new(),
            kind: if oid < 16384 {
                RelationKind::BuiltIn
            } else {
                RelationKind::User
            },
        }
    }

    fn catalog(p: &MaskingPolicy) -> SensitiveCatalog {
        SensitiveCatalog::build(
            p,
            CatalogFacts {
                relations: vec![
                    relation(
                        CUSTOMERS,
                        "public",
                        "customers",
                        &["id", "name", "email", "ssn"],
                    ),
                    relation(ORDERS, "public", "orders", &["id", "customer_id", "total"]),
                    relation(VIEW, "public", "customer_names", &["id", "label"]),
                    relation(CHILD, "archive", "customers_2020", &["id", "tax"]),
                    CatalogRelation {
                        kind: RelationKind::Exposes {
                            column: None,
                            built_in: true,
                        },
                        ..relation(
                            PG_STATS,
                            "pg_catalog",
                            "pg_stats",
                            &["attname", "most_common_vals"],
                        )
                    },
                ],
                first_user_id: 16384,
                view_reads: vec![(VIEW, CUSTOMERS, 1), (VIEW, CUSTOMERS, 4)],
                view_functions: vec![],
                inherits: vec![],
                user_functions: vec![("public".into(), "leak".into())],
            },
        )
    }

    const SSN: Mask = Mask {
        rule: 0,
        strategy: Strategy::Partial {
            keep_first: 0,
            keep_last: 4,
        },
    };
    const EMAIL: Mask = Mask {
        rule: 1,
        strategy: Strategy::Email,
    };

    fn origin(table: u32, attnum: i16) -> FieldOrigin {
        FieldOrigin::Oid { table, attnum }
    }

    fn lineage(outputs: Vec<Output>) -> Lineage {
        Lineage {
            outputs,
            ..Lineage::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*.ssn", "x.ssn"));
        assert!(glob("cust*", "customers"));
        assert!(glob("*_id", "tax_id"));
        assert!(!glob("*_id", "tax_idx"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(ColumnPattern::parse("ssn").is_err());
        assert!(ColumnPattern::parse("a..b").is_err());
        let p = ColumnPattern::parse("public.customers.tax_id").unwrap();
        assert!(p.matches(Some("public"), "customers", "tax_id"));
        assert!(p.matches(None, "customers", "tax_id"));
        assert!(!p.matches(Some("other"), "customers", "tax_id"));
    }

    #[test]
    fn wire_origins_defeat_aliases() {
        let p = policy();
        let c = catalog(&p);
        assert!(c.any_sensitive);
        let plan = p.plan(
            &c,
            &lineage(vec![]),
            &[
                origin(CUSTOMERS, 1),
                origin(CUSTOMERS, 4),
                origin(CUSTOMERS, 3),
                origin(ORDERS, 3),
            ],
        );
        assert_eq!(plan.columns, vec![None, Some(SSN), Some(EMAIL), None]);
        assert!(plan.detect);
    }

    #[test]
    fn computed_columns_follow_lineage() {
        let p = policy();
        let c = catalog(&p);
        let l = lineage(vec![
            Output::Column(vec![
                col("customers", "ssn"),
                Source::Function("upper".into()),
            ]),
            Output::Column(vec![Source::Function("count".into())]),
            Output::Column(vec![Source::WholeRow(rel(None, "customers"))]),
            Output::Column(vec![col("customers", "ssn"), col("customers", "email")]),
            Output::Column(vec![Source::Function("leak".into())]),
            Output::Column(vec![Source::Opaque]),
            Output::Column(vec![col("customer_names", "label")]),
        ]);
        let plan = p.plan(&c, &l, &vec![FieldOrigin::default(); 7]);
        let redact = |rule| {
            Some(Mask {
                rule,
                strategy: Strategy::Redact,
            })
        };
        assert_eq!(
            plan.columns,
            vec![
                Some(SSN),
                None,
                redact(0),
                redact(0),
                Some(Mask::UNTRACED),
                Some(Mask::UNTRACED),
                Some(Mask::UNTRACED)
            ]
        );
    }

    #[test]
    fn views_over_masked_columns_and_statistics_are_masked_whole() {
        let p = policy();
        let c = catalog(&p);
        let plan = p.plan(
            &c,
            &lineage(vec![]),
            &[origin(VIEW, 1), origin(PG_STATS, 1), origin(1259, 1)],
        );
        assert_eq!(
            plan.columns,
            vec![Some(Mask::UNTRACED), Some(Mask::UNTRACED), None]
        );
    }

    #[test]
    fn unknown_relations_are_masked_whole() {
        let p = policy();
        let c = catalog(&p);
        // A table created after the catalog was read: masked whole, whatever
        // its columns are called (it may be a renamed copy of anything).
        let l = lineage(vec![
            Output::Column(vec![col("fresh", "ssn")]),
            Output::Column(vec![col("fresh", "x")]),
        ]);
        let plan = p.plan(&c, &l, &[origin(17000, 1), origin(17000, 2)]);
        let redact = Mask {
            rule: 0,
            strategy: Strategy::Redact,
        };
        assert_eq!(plan.columns, vec![Some(redact), Some(Mask::UNTRACED)]);
        // Computed from it, by name, a column still gets the rule it matches.
        let plan = p.plan(&c, &l, &vec![FieldOrigin::default(); 2]);
        assert_eq!(plan.columns, vec![Some(SSN), None]);
        // No lineage at all for an unknown relation: masked.
        let plan = p.plan(&c, &lineage(vec![]), &[origin(17000, 1)]);
        assert_eq!(plan.columns, vec![Some(Mask::UNTRACED)]);
    }

    #[test]
    fn one_star_spans_what_fixed_columns_leave() {
        let p = policy();
        let c = catalog(&p);
        let l = lineage(vec![
            Output::Column(vec![]),
            Output::Star(vec![Source::WholeRow(rel(None, "customers"))]),
            Output::Column(vec![col("customers", "ssn")]),
        ]);
        let plan = p.plan(&c, &l, &vec![FieldOrigin::default(); 4]);
        assert_eq!(plan.columns[0], None);
        assert_eq!(plan.columns[3], Some(SSN));
        // Two stars: any column may come from anywhere.
        let l = lineage(vec![
            Output::Star(vec![Source::WholeRow(rel(None, "orders"))]),
            Output::Star(vec![Source::WholeRow(rel(None, "customers"))]),
        ]);
        let plan = p.plan(&c, &l, &vec![FieldOrigin::default(); 3]);
        assert!(plan.columns.iter().all(Option::is_some));
    }

    #[test]
    fn nothing_sensitive_means_pass() {
        let p = MaskingPolicy {
            rules: vec![MaskRule {
                name: "none".into(),
                columns: vec![ColumnPattern::parse("*.nope").unwrap()],
                detect: vec![],
                strategy: Strategy::Redact,
            }],
            deny_predicates: false,
        };
        let c = catalog(&p);
        assert!(!c.any_sensitive);
        let plan = p.plan(&c, &Lineage::opaque(), &[FieldOrigin::default()]);
        assert!(plan.is_pass());
    }

    #[test]
    fn copy_expands_stars_through_the_catalog() {
        let p = policy();
        let c = catalog(&p);
        let l = lineage(vec![Output::Star(vec![Source::WholeRow(rel(
            None,
            "customers",
        ))])]);
        assert_eq!(
            p.copy_plan(&c, &l),
            CopyPlan::Columns(MaskPlan {
                columns: vec![None, None, Some(EMAIL), Some(SSN)],
                detect: true
            })
        );
        // A relation the catalog has not seen may be a copy of anything.
        let fresh = lineage(vec![Output::Star(vec![Source::WholeRow(rel(
            None, "fresh",
        ))])]);
        assert_eq!(
            p.copy_plan(&c, &fresh),
            CopyPlan::Uniform(Mask::UNTRACED, true)
        );
        let l = lineage(vec![Output::Star(vec![Source::Opaque])]);
        assert_eq!(p.copy_plan(&c, &l), CopyPlan::Uniform(Mask::UNTRACED, true));
    }

    #[test]
    fn refusals() {
        let mut p = policy();
        let c = catalog(&p);
        let mut stmt = Statement::unknown("", (0, 0));
        stmt.lineage.written = vec![col("customers", "ssn")];
        let err = p.check(&c, &stmt).unwrap_err().0;
        assert!(
            err.contains("customers.ssn") && err.contains("\"ssn\""),
            "{err}"
        );
        stmt.lineage.written.clear();
        stmt.lineage.predicates = vec![col("customers", "email")];
        assert!(p.check(&c, &stmt).is_ok());
        p.deny_predicates = true;
        assert!(
            p.check(&c, &stmt)
                .unwrap_err()
                .0
                .contains("deny_predicates")
        );
        stmt.lineage.predicates = vec![col("customers", "name")];
        assert!(p.check(&c, &stmt).is_ok());
        stmt.lineage.copy = Some(CopyFormat::Binary);
        stmt.lineage.outputs = vec![Output::Star(vec![Source::WholeRow(rel(None, "customers"))])];
        assert!(p.check(&c, &stmt).unwrap_err().0.contains("binary COPY"));
        // Content detectors cannot scan binary rows either.
        stmt.lineage.outputs = vec![Output::Star(vec![Source::WholeRow(rel(None, "orders"))])];
        assert!(p.check(&c, &stmt).is_err());
        p.rules.retain(|r| r.detect.is_empty());
        assert!(p.check(&c, &stmt).is_ok());
    }

    #[test]
    fn inheritance_children_inherit_masks() {
        let p = policy();
        let c = SensitiveCatalog::build(
            &MaskingPolicy {
                rules: vec![MaskRule {
                    name: "tax".into(),
                    columns: vec![ColumnPattern::parse("public.people.tax").unwrap()],
                    detect: vec![],
                    strategy: Strategy::Null,
                }],
                deny_predicates: false,
            },
            CatalogFacts {
                relations: vec![
                    relation(16700, "public", "people", &["id", "tax"]),
                    relation(CHILD, "archive", "people_2020", &["id", "tax"]),
                ],
                inherits: vec![(CHILD, 16700)],
                first_user_id: 16384,
                ..CatalogFacts::default()
            },
        );
        let _ = p;
        assert_eq!(
            c.origin(CHILD, 2),
            Some(Some(Mask {
                rule: 0,
                strategy: Strategy::Null
            }))
        );
        assert_eq!(c.origin(CHILD, 1), Some(None));
    }

    #[test]
    fn touching_sensitive_relations() {
        let p = policy();
        let c = catalog(&p);
        assert!(p.touches_sensitive(&c, &[rel(None, "customers")]));
        assert!(p.touches_sensitive(&c, &[rel(None, "customer_names")]));
        assert!(!p.touches_sensitive(&c, &[rel(None, "orders")]));
        // By name alone: a table the catalog has not seen yet.
        assert!(p.touches_sensitive(&c, &[rel(None, "brand_new")]));
    }
}
