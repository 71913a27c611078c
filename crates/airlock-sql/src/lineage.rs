//! Where a PostgreSQL statement's values come from: the [`Lineage`] of a
//! parse tree.
//!
//! The analysis follows PostgreSQL's name resolution without a catalog, so
//! wherever the catalog would decide, it takes every candidate (it
//! over-approximates, never under-approximates: the lineage decides what is
//! masked):
//!
//! - FROM items make scopes: a relation (unless its unqualified name is a
//!   CTE in an enclosing WITH, whose outputs it then has), a subquery (its
//!   outputs, renamed by column aliases), a function (width unknown: its
//!   arguments' sources and the function), a join (both sides; its alias
//!   names the combined columns and hides theirs).
//! - A column reference `a.b` resolves in the nearest query level with an
//!   item named `a`. An unqualified `b` resolves in *every* visible level
//!   (a sub-select's unqualified name may be an outer column: only the
//!   catalog knows), as a column of each relation, the matching column of
//!   each subquery or CTE (all of them when names are unknown), every
//!   function item, and also as a whole-row reference when `b` names an
//!   item. A qualified `x.b` also yields `Function(b)` unless `b` is a known
//!   column of a subquery or CTE: PostgreSQL reads `x.b` as `b(x)` when `x`
//!   has no column `b` (attribute notation).
//! - A value's sources are everything it is computed from. Conditions that
//!   only decide (WHERE, JOIN, GROUP/ORDER BY, CASE WHEN, FILTER,
//!   EXISTS/IN/ANY/ALL sub-selects…) go to `predicates` instead. Node types
//!   not handled below are walked generically ([`crate::walk`]): every
//!   column reference, function and relation under them counts.
//! - Nothing here reads a literal's value (analyses are shared by shape),
//!   except the COPY options, which pg.rs already reports.

use std::rc::Rc;

use airlock_policy::Relation;
use airlock_policy::lineage::{CopyFormat, Cursor, Lineage, Output, Source};
use pg_query::protobuf::{self, Node, a_const, node::Node as N};

use crate::walk::Facts;

/// Functions whose arguments are stored or sent somewhere other than the
/// result (settings, notifications, large objects, other databases, the
/// WAL, sequences and lock keys other sessions can see, files). Matched on
/// the last name part; `prefix*` matches a prefix.
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_notify",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_import",
    "lo_export",
    "lo_create",
    "lo_truncate",
    "lo_truncate64",
    "dblink*",
    "pg_logical_emit_message",
    "setval",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "pg_file_write",
];

/// Iterations of a recursive CTE before its columns are merged into one
/// set of sources (which converges at once), and the hard stop after which
/// its outputs are opaque.
const RECURSION_MERGE: u32 = 4;
const RECURSION_LIMIT: u32 = 12;

fn side_effect(name: &str) -> bool {
    let base = name.rsplit('.').next().unwrap_or(name);
    crate::pg::matches(SIDE_EFFECT_FUNCTIONS, base)
}

/// The lineage of one statement. `inner` is the already analyzed lineage
/// of the query of a PREPARE, EXPLAIN, COPY or DECLARE; `functions` are the
/// statement's function names (to skip the generic walk of statements that
/// call no side-effect function).
pub(crate) fn of(
    node: &N,
    inner: Option<&Lineage>,
    explain_analyze: bool,
    functions: &[String],
) -> Lineage {
    let mut b = Builder::default();
    let mut lin = Lineage::default();
    let cols = match node {
        N::SelectStmt(s) => {
            let cols = b.select(s);
            if s.into_clause.is_some() {
                b.write(&cols);
                None
            } else {
                Some(cols)
            }
        }
        N::InsertStmt(s) => Some(b.insert(s)),
        N::UpdateStmt(s) => Some(b.update(s)),
        N::DeleteStmt(s) => Some(b.delete(s)),
        N::MergeStmt(s) => Some(b.merge(s)),
        N::CopyStmt(c) => return b.copy(c, inner),
        N::DeclareCursorStmt(d) => {
            lin.cursor = Some(Cursor::Declare(d.portalname.clone()));
            match inner {
                Some(i) => {
                    lin.outputs = i.outputs.clone();
                    lin.predicates = i.predicates.clone();
                    lin.written = i.written.clone();
                    return lin;
                }
                None => d.query.as_deref().map(|q| b.query(q)),
            }
        }
        N::FetchStmt(f) => {
            lin.cursor = Some(Cursor::Fetch(f.portalname.clone()));
            None
        }
        N::CallStmt(c) => {
            let mut v = Vec::new();
            match &c.funccall {
                Some(f) => {
                    for a in &f.args {
                        b.expr(a, &mut v);
                    }
                    // A procedure may store its arguments anywhere.
                    b.written.extend_from_slice(&v);
                    v.push(Source::Function(func_name(&f.funcname)));
                }
                None => v.push(Source::Opaque),
            }
            Some(vec![Col::star(finish(v))])
        }
        N::ExecuteStmt(e) => {
            // The parameters' sources, carried in `written` until `resolve`
            // merges them into the prepared statement's lineage.
            let mut v = Vec::new();
            for p in &e.params {
                b.expr(p, &mut v);
            }
            b.written.append(&mut v);
            None
        }
        N::PrepareStmt(_) => return inner.cloned().unwrap_or_default(),
        N::ExplainStmt(_) => {
            // No rows of data; ANALYZE runs the statement and its side
            // effects, and row counts and estimates tell about predicates.
            if let Some(i) = inner {
                lin.predicates = i.predicates.clone();
                if explain_analyze {
                    lin.written = i.written.clone();
                }
            }
            return lin;
        }
        N::CreateTableAsStmt(c) => {
            if let Some(q) = c.query.as_deref() {
                let cols = b.query(q);
                b.write(&cols);
            }
            None
        }
        N::ViewStmt(v) => {
            // A view's columns are read later under its own name.
            if let Some(q) = v.query.as_deref() {
                let cols = b.query(q);
                b.write(&cols);
            }
            None
        }
        _ => {
            if functions.iter().any(|f| side_effect(f)) {
                let mut v = Vec::new();
                b.loose(node, &mut v);
                b.written.append(&mut v);
            }
            None
        }
    };
    lin.outputs = cols
        .map(|c| c.into_iter().map(|c| c.out).collect())
        .unwrap_or_default();
    lin.predicates = finish(b.predicates);
    lin.written = finish(b.written);
    lin
}

/// The lineage of `EXECUTE` once its prepared statement is known: the
/// prepared statement's, with the sources of the EXECUTE's parameters
/// (carried in its `written`) added wherever a parameter may flow.
pub(crate) fn execute(prepared: &Lineage, execute: &Lineage) -> Lineage {
    let mut lin = prepared.clone();
    let params = &execute.written;
    if params.is_empty() && execute.predicates.is_empty() {
        return lin;
    }
    for o in &mut lin.outputs {
        let (Output::Column(v) | Output::Star(v)) = o;
        v.extend_from_slice(params);
        sort_dedup(v);
    }
    lin.written.extend_from_slice(params);
    sort_dedup(&mut lin.written);
    lin.predicates.extend_from_slice(params);
    lin.predicates.extend_from_slice(&execute.predicates);
    sort_dedup(&mut lin.predicates);
    lin
}

/// The lineage of `EXPLAIN ANALYZE EXECUTE` once the statement it runs is
/// known: the predicates and side effects of what it runs.
pub(crate) fn explain_execute(explain: &Lineage, executed: &Lineage) -> Lineage {
    let mut lin = explain.clone();
    lin.predicates.extend_from_slice(&executed.predicates);
    sort_dedup(&mut lin.predicates);
    lin.written.extend_from_slice(&executed.written);
    sort_dedup(&mut lin.written);
    lin
}

fn sort_dedup(v: &mut Vec<Source>) {
    v.sort_unstable();
    v.dedup();
}

fn finish(mut v: Vec<Source>) -> Vec<Source> {
    sort_dedup(&mut v);
    v
}

fn sval(node: &Node) -> Option<&str> {
    match &node.node {
        Some(N::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// A function's name as written: lower case, dot-joined.
fn func_name(parts: &[Node]) -> String {
    let mut name = String::new();
    for p in parts.iter().filter_map(sval) {
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(p);
    }
    name.make_ascii_lowercase();
    name
}

fn relation(rv: &protobuf::RangeVar) -> Relation {
    Relation {
        schema: (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone()),
        name: rv.relname.clone(),
    }
}

fn is_star(node: &Node) -> bool {
    matches!(node.node, Some(N::AStar(_)))
}

/// The column name PostgreSQL gives a target, when it is sure to be this
/// one (`None` means any name: never wrong, only less precise).
fn figure(rt: &protobuf::ResTarget) -> Option<&str> {
    if !rt.name.is_empty() {
        return Some(&rt.name);
    }
    rt.val.as_deref().and_then(figure_node)
}

fn figure_node(n: &Node) -> Option<&str> {
    match n.node.as_ref()? {
        N::ColumnRef(c) => c.fields.last().and_then(sval),
        N::FuncCall(f) => f.funcname.last().and_then(sval),
        // The last field name anywhere in the indirection, as PostgreSQL
        // names `(c).addr[1]` "addr".
        N::AIndirection(i) => match i.indirection.iter().rev().find_map(sval) {
            Some(s) => Some(s),
            None if i.indirection.iter().any(is_star) => None,
            None => i.arg.as_deref().and_then(figure_node),
        },
        N::TypeCast(t) => t.arg.as_deref().and_then(figure_node),
        N::CollateClause(c) => c.arg.as_deref().and_then(figure_node),
        _ => None,
    }
}

/// One output column of a query, with the name it is known by.
#[derive(Debug, Clone, PartialEq)]
struct Col<'a> {
    name: Option<&'a str>,
    out: Output,
}

impl<'a> Col<'a> {
    fn star(sources: Vec<Source>) -> Col<'a> {
        Col {
            name: None,
            out: Output::Star(sources),
        }
    }

    fn sources(&self) -> &[Source] {
        match &self.out {
            Output::Column(s) | Output::Star(s) => s,
        }
    }

    fn is_star(&self) -> bool {
        matches!(self.out, Output::Star(_))
    }
}

fn all_sources(cols: &[Col<'_>], out: &mut Vec<Source>) {
    for c in cols {
        out.extend_from_slice(c.sources());
    }
}

/// Appends a star, merged into a star just before it (their boundary is
/// unknown anyway).
fn push_star(cols: &mut Vec<Col<'_>>, sources: &[Source]) {
    if let Some(Col {
        name: None,
        out: Output::Star(v),
    }) = cols.last_mut()
    {
        v.extend_from_slice(sources);
        sort_dedup(v);
    } else {
        cols.push(Col::star(finish(sources.to_vec())));
    }
}

/// Renames columns positionally (`AS s(a, b)`). Past a star, positions are
/// unknown: the names after it are forgotten.
fn rename<'a>(cols: &mut [Col<'a>], aliases: &'a [Node]) {
    if aliases.is_empty() {
        return;
    }
    let mut names = aliases.iter();
    let mut lost = false;
    for c in cols.iter_mut() {
        if lost || c.is_star() {
            lost = true;
            c.name = None;
            continue;
        }
        match names.next() {
            Some(n) => c.name = sval(n),
            None => break,
        }
    }
}

/// The columns of a set operation (or of a recursive CTE's iterations):
/// the left arm's shape, each column the union of both arms'; when a star
/// makes positions unknown, every column gets every source.
fn merge_arms<'a>(left: Vec<Col<'a>>, right: Vec<Col<'a>>) -> Vec<Col<'a>> {
    let stars = left.iter().chain(&right).any(Col::is_star);
    if !stars && left.len() == right.len() {
        return left
            .into_iter()
            .zip(right)
            .map(|(mut l, r)| {
                if let Output::Column(v) = &mut l.out {
                    v.extend_from_slice(r.sources());
                    sort_dedup(v);
                }
                l
            })
            .collect();
    }
    let mut all = Vec::new();
    all_sources(&left, &mut all);
    all_sources(&right, &mut all);
    collapse(left, finish(all))
}

/// Every column computed from `all`.
fn collapse<'a>(cols: Vec<Col<'a>>, all: Vec<Source>) -> Vec<Col<'a>> {
    if cols.iter().any(Col::is_star) {
        return vec![Col::star(all)];
    }
    cols.into_iter()
        .map(|c| Col {
            name: c.name,
            out: Output::Column(all.clone()),
        })
        .collect()
}

type Cols<'a> = Rc<Vec<Col<'a>>>;

enum Kind<'a> {
    /// A relation named in FROM; `aliases` rename its first columns.
    Base { rel: Relation, aliases: &'a [Node] },
    /// A subquery or CTE, whose columns are known.
    Derived(Cols<'a>),
    /// A function, XMLTABLE, JSON_TABLE…: columns unknown, each computed
    /// from these sources; `names` are column names it certainly has
    /// (column aliases, column definitions).
    Opaque {
        sources: Rc<Vec<Source>>,
        names: &'a [Node],
    },
    /// A named join: the items `start..end` of the same level.
    Join {
        start: usize,
        end: usize,
        aliases: &'a [Node],
    },
}

struct Item<'a> {
    /// The alias, or the relation's (or CTE's) name.
    name: Option<&'a str>,
    /// The schema written before an unaliased relation's name.
    schema: Option<&'a str>,
    aliased: bool,
    /// Inside a join with an alias: its name is hidden.
    hidden: bool,
    kind: Kind<'a>,
}

impl Item<'_> {
    fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        if self.hidden || self.name != Some(name) {
            return false;
        }
        match schema {
            None => true,
            Some(s) => {
                !self.aliased
                    && matches!(self.kind, Kind::Base { .. })
                    && self.schema.is_none_or(|x| x == s)
            }
        }
    }

    fn is_join(&self) -> bool {
        matches!(self.kind, Kind::Join { .. })
    }
}

/// The FROM items of one query level.
struct Level<'a> {
    items: Vec<Item<'a>>,
    /// False while the level's own non-LATERAL FROM items are analyzed.
    visible: bool,
    /// Items before this one are out of sight (a JOIN's ON clause sees
    /// only the join's own items).
    from: usize,
    /// A join with USING or NATURAL is among the items: PostgreSQL's `*`
    /// then puts the merged columns first, in an order the items do not
    /// tell.
    merged: bool,
}

impl<'a> Level<'a> {
    fn new(visible: bool) -> Level<'a> {
        Level {
            items: Vec::new(),
            visible,
            from: 0,
            merged: false,
        }
    }

    /// The items names resolve against.
    fn in_sight(&self) -> &[Item<'a>] {
        self.items.get(self.from..).unwrap_or_default()
    }
}

/// Every source of an item's row.
fn whole_row(level: &Level<'_>, item: &Item<'_>, out: &mut Vec<Source>) {
    match &item.kind {
        Kind::Base { rel, .. } => out.push(Source::WholeRow(rel.clone())),
        Kind::Derived(cols) => all_sources(cols, out),
        Kind::Opaque { sources, .. } => out.extend_from_slice(sources),
        Kind::Join { start, end, .. } => {
            for it in level.items[*start..*end].iter().filter(|i| !i.is_join()) {
                whole_row(level, it, out);
            }
        }
    }
}

/// The sources of column `name` of an item. `strict`: a subquery whose
/// column names are all known and do not include `name` has nothing (an
/// unqualified name looked up everywhere); otherwise it gives everything (a
/// qualified name that must be there). Returns whether anything was found.
fn column_in(
    level: &Level<'_>,
    item: &Item<'_>,
    name: &str,
    strict: bool,
    out: &mut Vec<Source>,
) -> bool {
    match &item.kind {
        Kind::Base { rel, aliases } => {
            if aliases.iter().any(|a| sval(a) == Some(name)) {
                // A renamed column: which one is for the catalog to say.
                out.push(Source::WholeRow(rel.clone()));
            } else {
                out.push(Source::Column {
                    relation: rel.clone(),
                    column: name.to_string(),
                });
            }
            true
        }
        Kind::Derived(cols) => {
            let mut hit = None;
            let mut hits = 0;
            let mut unknown = false;
            for c in cols.iter() {
                if c.is_star() || c.name.is_none() {
                    unknown = true;
                } else if c.name == Some(name) {
                    hits += 1;
                    hit = Some(c);
                }
            }
            match hit {
                Some(c) if hits == 1 && !cols.iter().any(Col::is_star) => {
                    out.extend_from_slice(c.sources());
                    true
                }
                _ if hits > 0 || unknown || !strict => {
                    all_sources(cols, out);
                    true
                }
                _ => false,
            }
        }
        Kind::Opaque { sources, .. } => {
            out.extend_from_slice(sources);
            true
        }
        Kind::Join {
            start,
            end,
            aliases,
        } => {
            if aliases.iter().any(|a| sval(a) == Some(name)) {
                whole_row(level, item, out);
                return true;
            }
            let mut found = false;
            for it in level.items[*start..*end].iter().filter(|i| !i.is_join()) {
                found |= column_in(level, it, name, true, out);
            }
            if !found && !strict {
                whole_row(level, item, out);
                found = true;
            }
            found
        }
    }
}

/// Whether `name` is a column an item certainly has (so `x.name` is not a
/// function call in attribute notation).
fn known_column(item: &Item<'_>, name: &str) -> bool {
    let named = |nodes: &[Node]| {
        nodes.iter().any(|n| match &n.node {
            Some(N::String(s)) => s.sval == name,
            Some(N::ColumnDef(d)) => d.colname == name,
            Some(N::RangeTableFuncCol(c)) => c.colname == name,
            Some(N::JsonTableColumn(c)) => c.name == name,
            _ => false,
        })
    };
    match &item.kind {
        Kind::Derived(cols) => cols.iter().any(|c| c.name == Some(name)),
        Kind::Base { aliases, .. } | Kind::Join { aliases, .. } => named(aliases),
        Kind::Opaque { names, .. } => named(names),
    }
}

enum CteState<'a> {
    /// In a WITH RECURSIVE list, not analyzed yet.
    Pending,
    /// Being analyzed: a reference to it is a recursive one, bound to the
    /// iteration's current columns (or opaque).
    Busy(Option<Cols<'a>>),
    Done(Cols<'a>),
}

struct CteEntry<'a> {
    name: &'a str,
    cte: &'a protobuf::CommonTableExpr,
    state: CteState<'a>,
}

struct CteFrame<'a> {
    entries: Vec<CteEntry<'a>>,
    /// Query levels visible to the WITH clause's queries.
    depth: usize,
    recursive: bool,
}

#[derive(Default)]
struct Builder<'a> {
    levels: Vec<Level<'a>>,
    ctes: Vec<CteFrame<'a>>,
    predicates: Vec<Source>,
    written: Vec<Source>,
}

impl<'a> Builder<'a> {
    fn write(&mut self, cols: &[Col<'_>]) {
        all_sources(cols, &mut self.written);
    }

    fn push_item(&mut self, item: Item<'a>) {
        if self.levels.is_empty() {
            self.levels.push(Level::new(true));
        }
        if let Some(l) = self.levels.last_mut() {
            l.items.push(item);
        }
    }

    /// Sets the innermost level's visibility; returns the previous one.
    fn set_visible(&mut self, visible: bool) -> bool {
        match self.levels.last_mut() {
            Some(l) => std::mem::replace(&mut l.visible, visible),
            None => true,
        }
    }

    fn pred(&mut self, node: &'a Node) {
        let mut p = std::mem::take(&mut self.predicates);
        self.expr(node, &mut p);
        p.append(&mut self.predicates);
        self.predicates = p;
    }

    fn pred_opt(&mut self, node: &'a Option<Box<Node>>) {
        if let Some(n) = node.as_deref() {
            self.pred(n);
        }
    }

    /// The columns of a query (the RETURNING list of DML).
    fn query(&mut self, node: &'a Node) -> Vec<Col<'a>> {
        match &node.node {
            Some(N::SelectStmt(s)) => self.select(s),
            Some(N::InsertStmt(s)) => self.insert(s),
            Some(N::UpdateStmt(s)) => self.update(s),
            Some(N::DeleteStmt(s)) => self.delete(s),
            Some(N::MergeStmt(s)) => self.merge(s),
            None => Vec::new(),
            Some(_) => {
                // EXECUTE in CREATE TABLE AS, or a query form not followed.
                let mut v = vec![Source::Opaque];
                self.loose(node, &mut v);
                vec![Col::star(finish(v))]
            }
        }
    }

    fn select(&mut self, s: &'a protobuf::SelectStmt) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        let set_op = s.op != protobuf::SetOperation::SetopNone as i32
            && s.op != protobuf::SetOperation::Undefined as i32;
        let cols = if set_op {
            let left = s
                .larg
                .as_deref()
                .map(|l| self.select(l))
                .unwrap_or_default();
            let right = s
                .rarg
                .as_deref()
                .map(|r| self.select(r))
                .unwrap_or_default();
            let cols = merge_arms(left, right);
            self.tail(s, &cols);
            cols
        } else {
            self.levels.push(Level::new(false));
            for f in &s.from_clause {
                self.range_item(f);
            }
            self.set_visible(true);
            let cols = if s.values_lists.is_empty() {
                self.target_list(&s.target_list)
            } else {
                self.values(&s.values_lists)
            };
            self.pred_opt(&s.where_clause);
            for g in &s.group_clause {
                self.sort_or_group(g, &cols);
            }
            self.pred_opt(&s.having_clause);
            for w in &s.window_clause {
                self.pred(w);
            }
            self.tail(s, &cols);
            self.levels.pop();
            cols
        };
        if with {
            self.ctes.pop();
        }
        cols
    }

    /// DISTINCT ON, ORDER BY, LIMIT, OFFSET.
    fn tail(&mut self, s: &'a protobuf::SelectStmt, cols: &[Col<'a>]) {
        for d in &s.distinct_clause {
            self.sort_or_group(d, cols);
        }
        for o in &s.sort_clause {
            self.sort_or_group(o, cols);
        }
        self.pred_opt(&s.limit_offset);
        self.pred_opt(&s.limit_count);
    }

    /// A GROUP BY, ORDER BY or DISTINCT ON item, which may name an output
    /// column or give its position.
    fn sort_or_group(&mut self, node: &'a Node, cols: &[Col<'a>]) {
        match &node.node {
            Some(N::SortBy(sb)) => {
                if let Some(n) = sb.node.as_deref() {
                    self.sort_or_group(n, cols);
                }
            }
            // A position: whichever it is, without reading the literal.
            Some(N::AConst(_)) => all_sources(cols, &mut self.predicates),
            Some(N::ColumnRef(cr)) if cr.fields.len() == 1 && sval(&cr.fields[0]).is_some() => {
                let name = sval(&cr.fields[0]).unwrap_or_default();
                let mut named = false;
                for c in cols {
                    if c.name == Some(name) || c.name.is_none() {
                        named |= c.name == Some(name);
                        self.predicates.extend_from_slice(c.sources());
                    }
                }
                let mut v = Vec::new();
                if !self.column_ref(cr, &mut v) && !named {
                    v.push(Source::Opaque);
                }
                self.predicates.append(&mut v);
            }
            Some(N::GroupingSet(g)) => {
                for c in &g.content {
                    self.sort_or_group(c, cols);
                }
            }
            Some(N::RowExpr(r)) => {
                for a in &r.args {
                    self.sort_or_group(a, cols);
                }
            }
            Some(N::List(l)) => {
                for i in &l.items {
                    self.sort_or_group(i, cols);
                }
            }
            _ => self.pred(node),
        }
    }

    fn values(&mut self, lists: &'a [Node]) -> Vec<Col<'a>> {
        let mut columns: Vec<Vec<Source>> = Vec::new();
        for row in lists {
            let items = match &row.node {
                Some(N::List(l)) => l.items.as_slice(),
                _ => std::slice::from_ref(row),
            };
            for (i, e) in items.iter().enumerate() {
                if columns.len() <= i {
                    columns.push(Vec::new());
                }
                self.expr(e, &mut columns[i]);
            }
        }
        columns
            .into_iter()
            .map(|v| Col {
                name: None,
                out: Output::Column(finish(v)),
            })
            .collect()
    }

    fn target_list(&mut self, list: &'a [Node]) -> Vec<Col<'a>> {
        let mut cols = Vec::with_capacity(list.len());
        for t in list {
            let (name, val) = match &t.node {
                Some(N::ResTarget(rt)) => match rt.val.as_deref() {
                    Some(v) => (figure(rt), v),
                    None => continue,
                },
                _ => (None, t),
            };
            match &val.node {
                Some(N::ColumnRef(cr)) if cr.fields.last().is_some_and(is_star) => {
                    self.star(cr, &mut cols)
                }
                Some(N::AIndirection(i)) if i.indirection.last().is_some_and(is_star) => {
                    let mut v = Vec::new();
                    if let Some(a) = i.arg.as_deref() {
                        self.expr(a, &mut v);
                    }
                    push_star(&mut cols, &v);
                }
                _ => {
                    let mut v = Vec::new();
                    self.expr(val, &mut v);
                    cols.push(Col {
                        name,
                        out: Output::Column(finish(v)),
                    });
                }
            }
        }
        cols
    }

    /// `*` or `x.*` in a target list: a star over relations, the known
    /// columns of subqueries and CTEs in place.
    fn star(&mut self, cr: &'a protobuf::ColumnRef, cols: &mut Vec<Col<'a>>) {
        let parts: Vec<&str> = cr.fields.iter().filter_map(sval).collect();
        fn expand<'a>(level: &Level<'a>, item: &Item<'a>, cols: &mut Vec<Col<'a>>) {
            match &item.kind {
                Kind::Base { rel, .. } => push_star(cols, &[Source::WholeRow(rel.clone())]),
                Kind::Derived(d) => {
                    for c in d.iter() {
                        match c {
                            Col {
                                name: None,
                                out: Output::Star(s),
                            } => push_star(cols, s),
                            c => cols.push(c.clone()),
                        }
                    }
                }
                Kind::Opaque { sources, .. } => push_star(cols, sources),
                Kind::Join { start, end, .. } => {
                    for it in level.items[*start..*end].iter().filter(|i| !i.is_join()) {
                        expand(level, it, cols);
                    }
                }
            }
        }
        // Over a USING/NATURAL join the expansion's order is unknown: one
        // star of everything.
        fn collapse<'a>(expanded: Vec<Col<'a>>, cols: &mut Vec<Col<'a>>) {
            let mut all = Vec::new();
            for c in expanded {
                match c.out {
                    Output::Column(s) | Output::Star(s) => all.extend(s),
                }
            }
            push_star(cols, &all);
        }
        if parts.is_empty() {
            if let Some(level) = self.levels.last() {
                let mut expanded = Vec::new();
                for it in level.items.iter().filter(|i| !i.is_join()) {
                    expand(level, it, &mut expanded);
                }
                if level.merged {
                    collapse(expanded, cols);
                } else {
                    cols.extend(expanded);
                }
            }
            return;
        }
        let (schema, name) = match parts.as_slice() {
            [.., s, n] => (Some(*s), *n),
            [n] => (None, *n),
            [] => return,
        };
        if let Some(li) = self.find_level(schema, name) {
            let level = &self.levels[li];
            for it in level.items.iter().filter(|i| i.matches(schema, name)) {
                if level.merged && it.is_join() {
                    let mut expanded = Vec::new();
                    expand(level, it, &mut expanded);
                    collapse(expanded, cols);
                } else {
                    expand(level, it, cols);
                }
            }
            return;
        }
        // `x.*` of a composite column x.
        let mut v = Vec::new();
        if !self.unqualified(parts[0], &mut v) {
            v.push(Source::Opaque);
        }
        push_star(cols, &v);
    }

    /// The innermost visible level with an item named `name`.
    fn find_level(&self, schema: Option<&str>, name: &str) -> Option<usize> {
        self.levels
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, l)| l.visible)
            .find(|(_, l)| l.in_sight().iter().any(|i| i.matches(schema, name)))
            .map(|(i, _)| i)
    }

    /// An unqualified column name, in every visible level.
    fn unqualified(&self, name: &str, out: &mut Vec<Source>) -> bool {
        let mut found = false;
        for level in self.levels.iter().rev().filter(|l| l.visible) {
            for it in level.in_sight() {
                if let Kind::Join { aliases, .. } = &it.kind {
                    if aliases.iter().any(|a| sval(a) == Some(name)) {
                        whole_row(level, it, out);
                        found = true;
                    }
                    continue;
                }
                found |= column_in(level, it, name, true, out);
            }
        }
        found
    }

    /// Column `column` of the items named `[schema.]name`.
    fn qualified(
        &self,
        schema: Option<&str>,
        name: &str,
        column: &str,
        out: &mut Vec<Source>,
    ) -> bool {
        let Some(li) = self.find_level(schema, name) else {
            return false;
        };
        let level = &self.levels[li];
        let mut attribute = false;
        for it in level.in_sight().iter().filter(|i| i.matches(schema, name)) {
            column_in(level, it, column, false, out);
            attribute |= !known_column(it, column);
        }
        if attribute {
            out.push(Source::Function(column.to_ascii_lowercase()));
        }
        true
    }

    /// The whole rows of the items named `name`.
    fn whole_row_named(&self, name: &str, out: &mut Vec<Source>) -> bool {
        let Some(li) = self.find_level(None, name) else {
            return false;
        };
        let level = &self.levels[li];
        for it in level.in_sight().iter().filter(|i| i.matches(None, name)) {
            whole_row(level, it, out);
        }
        true
    }

    /// A column reference by its name parts; `star` for `x.*`. Returns
    /// whether it resolved to anything.
    fn resolve(&self, parts: &[&str], star: bool, out: &mut Vec<Source>) -> bool {
        if star {
            let Some((name, qual)) = parts.split_last() else {
                // `*` inside an expression: every item of the innermost
                // visible level.
                let Some(level) = self.levels.iter().rev().find(|l| l.visible) else {
                    return false;
                };
                for it in level.in_sight().iter().filter(|i| !i.is_join()) {
                    whole_row(level, it, out);
                }
                return !level.in_sight().is_empty();
            };
            let schema = qual.last().copied();
            return self.whole_row_named_in(schema, name, out) || self.resolve(parts, false, out);
        }
        match *parts {
            [] => false,
            [b] => {
                let column = self.unqualified(b, out);
                let row = self.whole_row_named(b, out);
                column || row
            }
            [a, b] => self.qualified(None, a, b, out) || self.field_of(a, &[b], out),
            [s, a, b] => {
                self.qualified(Some(s), a, b, out)
                    || self.qualified(None, s, a, out)
                    || self.field_of(s, &[a, b], out)
            }
            [_, s, a, b, ..] => {
                self.qualified(Some(s), a, b, out)
                    || self.qualified(None, s, a, out)
                    || self.field_of(s, &[a, b], out)
            }
        }
    }

    fn whole_row_named_in(&self, schema: Option<&str>, name: &str, out: &mut Vec<Source>) -> bool {
        let Some(li) = self.find_level(schema, name) else {
            return false;
        };
        let level = &self.levels[li];
        for it in level.in_sight().iter().filter(|i| i.matches(schema, name)) {
            whole_row(level, it, out);
        }
        true
    }

    /// `a.b…` where `a` is a column of composite type: `a`'s sources, and
    /// the field names as possible attribute-notation calls.
    fn field_of(&self, column: &str, fields: &[&str], out: &mut Vec<Source>) -> bool {
        if !self.unqualified(column, out) {
            return false;
        }
        for f in fields {
            out.push(Source::Function(f.to_ascii_lowercase()));
        }
        true
    }

    fn column_ref(&self, cr: &'a protobuf::ColumnRef, out: &mut Vec<Source>) -> bool {
        let mut parts: [&str; 4] = [""; 4];
        let mut n = 0;
        let mut star = false;
        for f in &cr.fields {
            match &f.node {
                Some(N::String(s)) if n < parts.len() => {
                    parts[n] = &s.sval;
                    n += 1;
                }
                Some(N::AStar(_)) => star = true,
                _ => {}
            }
        }
        self.resolve(&parts[..n], star, out)
    }

    /// The sources of an expression's value into `out`; its conditions
    /// into `self.predicates`.
    fn opt_expr(&mut self, node: Option<&'a Node>, out: &mut Vec<Source>) {
        if let Some(n) = node {
            self.expr(n, out);
        }
    }

    fn expr(&mut self, node: &'a Node, out: &mut Vec<Source>) {
        let Some(n) = &node.node else { return };
        match n {
            N::ColumnRef(cr) => {
                if !self.column_ref(cr, out) {
                    out.push(Source::Opaque);
                }
            }
            N::AConst(_)
            | N::ParamRef(_)
            | N::SqlvalueFunction(_)
            | N::SetToDefault(_)
            | N::CurrentOfExpr(_)
            | N::AStar(_)
            | N::String(_)
            | N::Integer(_)
            | N::Float(_)
            | N::Boolean(_)
            | N::BitString(_)
            | N::TypeName(_) => {}
            N::FuncCall(f) => self.func_call(f, out),
            N::AExpr(e) => {
                if let Some(l) = e.lexpr.as_deref() {
                    self.expr(l, out);
                }
                if let Some(r) = e.rexpr.as_deref() {
                    self.expr(r, out);
                }
            }
            N::TypeCast(t) => self.opt_expr(t.arg.as_deref(), out),
            N::CollateClause(c) => self.opt_expr(c.arg.as_deref(), out),
            N::NamedArgExpr(a) => self.opt_expr(a.arg.as_deref(), out),
            N::NullTest(t) => self.opt_expr(t.arg.as_deref(), out),
            N::BooleanTest(t) => self.opt_expr(t.arg.as_deref(), out),
            N::BoolExpr(b) => self.exprs(&b.args, out),
            N::CoalesceExpr(c) => self.exprs(&c.args, out),
            N::MinMaxExpr(m) => self.exprs(&m.args, out),
            N::AArrayExpr(a) => self.exprs(&a.elements, out),
            N::RowExpr(r) => self.exprs(&r.args, out),
            N::GroupingFunc(g) => self.exprs(&g.args, out),
            N::List(l) => self.exprs(&l.items, out),
            N::XmlExpr(x) => {
                self.exprs(&x.named_args, out);
                self.exprs(&x.args, out);
            }
            N::XmlSerialize(x) => {
                if let Some(e) = x.expr.as_deref() {
                    self.expr(e, out);
                }
            }
            N::ResTarget(rt) => {
                if let Some(v) = rt.val.as_deref() {
                    self.expr(v, out);
                }
                self.exprs(&rt.indirection, out);
            }
            N::MultiAssignRef(m) => {
                if let Some(s) = m.source.as_deref() {
                    self.expr(s, out);
                }
            }
            N::AIndirection(i) => {
                if let Some(a) = i.arg.as_deref() {
                    self.expr(a, out);
                }
                for x in &i.indirection {
                    match &x.node {
                        // `(x).f` may be `f(x)`.
                        Some(N::String(s)) => {
                            out.push(Source::Function(s.sval.to_ascii_lowercase()))
                        }
                        _ => self.expr(x, out),
                    }
                }
            }
            N::AIndices(i) => {
                if let Some(l) = i.lidx.as_deref() {
                    self.expr(l, out);
                }
                if let Some(u) = i.uidx.as_deref() {
                    self.expr(u, out);
                }
            }
            N::CaseExpr(c) => {
                self.pred_opt(&c.arg);
                for w in &c.args {
                    self.expr(w, out);
                }
                if let Some(d) = c.defresult.as_deref() {
                    self.expr(d, out);
                }
            }
            N::CaseWhen(w) => {
                self.pred_opt(&w.expr);
                if let Some(r) = w.result.as_deref() {
                    self.expr(r, out);
                }
            }
            N::SubLink(s) => self.sublink(s, out),
            N::SortBy(s) => {
                if let Some(n) = s.node.as_deref() {
                    self.expr(n, out);
                }
            }
            N::WindowDef(w) => self.window(w),
            N::IndexElem(e) => {
                if let Some(x) = e.expr.as_deref() {
                    self.expr(x, out);
                }
            }
            N::JsonArrayQueryConstructor(j) => {
                if let Some(q) = j.query.as_deref() {
                    let cols = self.query(q);
                    all_sources(&cols, out);
                }
            }
            N::SelectStmt(_)
            | N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_) => {
                let cols = self.query(node);
                all_sources(&cols, out);
            }
            _ => self.loose(node, out),
        }
    }

    fn exprs(&mut self, nodes: &'a [Node], out: &mut Vec<Source>) {
        for n in nodes {
            self.expr(n, out);
        }
    }

    fn func_call(&mut self, f: &'a protobuf::FuncCall, out: &mut Vec<Source>) {
        let name = func_name(&f.funcname);
        let (o0, p0) = (out.len(), self.predicates.len());
        self.exprs(&f.args, out);
        if f.agg_within_group {
            // `mode() WITHIN GROUP (ORDER BY x)` returns an x.
            self.exprs(&f.agg_order, out);
        } else {
            for o in &f.agg_order {
                self.pred(o);
            }
        }
        self.pred_opt(&f.agg_filter);
        if let Some(w) = f.over.as_deref() {
            self.window(w);
        }
        if side_effect(&name) {
            self.written.extend_from_slice(&out[o0..]);
            self.written.extend_from_slice(&self.predicates[p0..]);
        }
        out.push(Source::Function(name));
    }

    fn window(&mut self, w: &'a protobuf::WindowDef) {
        for p in &w.partition_clause {
            self.pred(p);
        }
        for o in &w.order_clause {
            self.pred(o);
        }
        self.pred_opt(&w.start_offset);
        self.pred_opt(&w.end_offset);
    }

    fn sublink(&mut self, s: &'a protobuf::SubLink, out: &mut Vec<Source>) {
        use protobuf::SubLinkType as T;
        let cols = match s.subselect.as_deref() {
            Some(q) => self.query(q),
            None => Vec::new(),
        };
        let t = s.sub_link_type;
        if t == T::ExprSublink as i32
            || t == T::ArraySublink as i32
            || t == T::MultiexprSublink as i32
        {
            all_sources(&cols, out);
            if let Some(e) = s.testexpr.as_deref() {
                self.expr(e, out);
            }
        } else {
            // EXISTS, IN, ANY, ALL, row comparisons: they only decide.
            all_sources(&cols, &mut self.predicates);
            self.pred_opt(&s.testexpr);
        }
    }

    /// The generic fallback for a subtree whose node types are not
    /// followed: every column reference in it (resolved in the current
    /// scopes), every function, and the whole rows of every relation it
    /// names; side-effect functions write all of it.
    fn loose<T: serde::Serialize + ?Sized>(&mut self, node: &T, out: &mut Vec<Source>) {
        let facts = Facts::collect_columns(node);
        let start = out.len();
        let mut parts: Vec<&str> = Vec::new();
        for c in &facts.columns {
            parts.clear();
            parts.extend(c.iter().map(String::as_str));
            // References inside a nested query may name its own relations,
            // whose whole rows are counted below.
            if !self.resolve(&parts, parts.is_empty(), out) && facts.relations.is_empty() {
                out.push(Source::Opaque);
            }
        }
        let mut side = false;
        for f in &facts.functions {
            side |= side_effect(f);
            out.push(Source::Function(f.clone()));
        }
        for r in facts.relations {
            if r.schema.is_none()
                && let Some(cte) = self.cte(&r.name)
            {
                match cte {
                    Some(cols) => all_sources(&cols, out),
                    None => out.push(Source::Opaque),
                }
                continue;
            }
            out.push(Source::WholeRow(r));
        }
        if side {
            self.written.extend_from_slice(&out[start..]);
        }
    }

    // --- FROM ---

    fn range_item(&mut self, node: &'a Node) {
        let Some(n) = &node.node else { return };
        match n {
            N::RangeVar(rv) => {
                let item = self.range_var(rv);
                self.push_item(item);
            }
            N::RangeSubselect(rs) => {
                let vis = self.set_visible(rs.lateral);
                let mut cols = match rs.subquery.as_deref() {
                    Some(q) => self.query(q),
                    None => Vec::new(),
                };
                self.set_visible(vis);
                let name = rs.alias.as_ref().map(|a| a.aliasname.as_str());
                if let Some(a) = &rs.alias {
                    rename(&mut cols, &a.colnames);
                }
                self.push_item(Item {
                    name,
                    schema: None,
                    aliased: true,
                    hidden: false,
                    kind: Kind::Derived(Rc::new(cols)),
                });
            }
            N::RangeFunction(rf) => {
                // Functions in FROM may always refer to earlier items.
                let vis = self.set_visible(true);
                let mut v = Vec::new();
                for f in &rf.functions {
                    match &f.node {
                        // [call, column definitions] (ROWS FROM and plain).
                        Some(N::List(l)) => {
                            for i in &l.items {
                                if !matches!(i.node, Some(N::List(_))) {
                                    self.expr(i, &mut v);
                                }
                            }
                        }
                        _ => self.expr(f, &mut v),
                    }
                }
                self.set_visible(vis);
                self.push_opaque(rf.alias.as_ref(), &rf.coldeflist, v);
            }
            N::JoinExpr(j) => self.join(j),
            N::RangeTableSample(t) => {
                if let Some(r) = t.relation.as_deref() {
                    self.range_item(r);
                }
                for a in &t.args {
                    self.pred(a);
                }
                self.pred_opt(&t.repeatable);
            }
            N::RangeTableFunc(t) => {
                let vis = self.set_visible(true);
                let mut v = Vec::new();
                if let Some(d) = t.docexpr.as_deref() {
                    self.expr(d, &mut v);
                }
                if let Some(r) = t.rowexpr.as_deref() {
                    self.expr(r, &mut v);
                }
                self.exprs(&t.namespaces, &mut v);
                for c in &t.columns {
                    match &c.node {
                        Some(N::RangeTableFuncCol(c)) => {
                            if let Some(e) = c.colexpr.as_deref() {
                                self.expr(e, &mut v);
                            }
                            if let Some(e) = c.coldefexpr.as_deref() {
                                self.expr(e, &mut v);
                            }
                        }
                        _ => self.expr(c, &mut v),
                    }
                }
                self.set_visible(vis);
                self.push_opaque(t.alias.as_ref(), &t.columns, v);
            }
            N::JsonTable(t) => {
                let vis = self.set_visible(true);
                let mut v = Vec::new();
                self.loose(&**t, &mut v);
                self.set_visible(vis);
                self.push_opaque(t.alias.as_ref(), &t.columns, v);
            }
            _ => {
                let vis = self.set_visible(true);
                let mut v = vec![Source::Opaque];
                self.loose(node, &mut v);
                self.set_visible(vis);
                self.push_opaque(None, &[], v);
            }
        }
    }

    fn push_opaque(
        &mut self,
        alias: Option<&'a protobuf::Alias>,
        names: &'a [Node],
        sources: Vec<Source>,
    ) {
        // A function's column aliases, else its column definitions.
        let names = match alias {
            Some(a) if !a.colnames.is_empty() => &a.colnames,
            _ => names,
        };
        self.push_item(Item {
            name: alias.map(|a| a.aliasname.as_str()),
            schema: None,
            aliased: true,
            hidden: false,
            kind: Kind::Opaque {
                sources: Rc::new(finish(sources)),
                names,
            },
        });
    }

    fn join(&mut self, j: &'a protobuf::JoinExpr) {
        let start = self.levels.last().map_or(0, |l| l.items.len());
        if let Some(l) = j.larg.as_deref() {
            self.range_item(l);
        }
        if let Some(r) = j.rarg.as_deref() {
            self.range_item(r);
        }
        let Some(level) = self.levels.last_mut() else {
            return;
        };
        let end = level.items.len();
        level.merged |= j.is_natural || !j.using_clause.is_empty();
        if let Some(q) = j.quals.as_deref() {
            let vis = self.set_visible(true);
            let from = self
                .levels
                .last_mut()
                .map(|l| std::mem::replace(&mut l.from, start));
            self.pred(q);
            if let (Some(l), Some(from)) = (self.levels.last_mut(), from) {
                l.from = from;
            }
            self.set_visible(vis);
        }
        for u in j.using_clause.iter().filter_map(sval) {
            if let Some(level) = self.levels.last() {
                for it in level.items[start..end].iter().filter(|i| !i.is_join()) {
                    column_in(level, it, u, true, &mut self.predicates);
                }
            }
        }
        let Some(level) = self.levels.last_mut() else {
            return;
        };
        if let Some(a) = &j.alias {
            for it in &mut level.items[start..end] {
                it.hidden = true;
            }
            level.items.push(Item {
                name: Some(&a.aliasname),
                schema: None,
                aliased: true,
                hidden: false,
                kind: Kind::Join {
                    start,
                    end,
                    aliases: &a.colnames,
                },
            });
        }
        if let Some(a) = &j.join_using_alias {
            level.items.push(Item {
                name: Some(&a.aliasname),
                schema: None,
                aliased: true,
                hidden: false,
                kind: Kind::Join {
                    start,
                    end,
                    aliases: &[],
                },
            });
        }
    }

    fn range_var(&mut self, rv: &'a protobuf::RangeVar) -> Item<'a> {
        let alias = rv.alias.as_ref().filter(|a| !a.aliasname.is_empty());
        let written_name = alias.map_or(rv.relname.as_str(), |a| a.aliasname.as_str());
        if rv.schemaname.is_empty()
            && rv.catalogname.is_empty()
            && let Some(cte) = self.cte(&rv.relname)
        {
            let kind = match cte {
                Some(cols) => match alias {
                    Some(a) if !a.colnames.is_empty() => {
                        let mut cols = (*cols).clone();
                        rename(&mut cols, &a.colnames);
                        Kind::Derived(Rc::new(cols))
                    }
                    _ => Kind::Derived(cols),
                },
                None => Kind::Opaque {
                    sources: Rc::new(vec![Source::Opaque]),
                    names: &[],
                },
            };
            return Item {
                name: Some(written_name),
                schema: None,
                aliased: true,
                hidden: false,
                kind,
            };
        }
        self.base_item(rv)
    }

    fn base_item(&self, rv: &'a protobuf::RangeVar) -> Item<'a> {
        let alias = rv.alias.as_ref().filter(|a| !a.aliasname.is_empty());
        Item {
            name: Some(alias.map_or(rv.relname.as_str(), |a| a.aliasname.as_str())),
            schema: (alias.is_none() && !rv.schemaname.is_empty())
                .then_some(rv.schemaname.as_str()),
            aliased: alias.is_some(),
            hidden: false,
            kind: Kind::Base {
                rel: relation(rv),
                aliases: alias.map_or(&[][..], |a| a.colnames.as_slice()),
            },
        }
    }

    // --- WITH ---

    /// Pushes a WITH clause's frame (analyzing its CTEs); returns whether
    /// one was pushed.
    fn with(&mut self, w: Option<&'a protobuf::WithClause>) -> bool {
        let Some(w) = w else { return false };
        let ctes = w.ctes.iter().filter_map(|c| match &c.node {
            Some(N::CommonTableExpr(c)) => Some(&**c),
            _ => None,
        });
        let depth = self.levels.len();
        if w.recursive {
            // Any CTE may refer to any other: each is analyzed when first
            // needed.
            let entries = ctes
                .map(|cte| CteEntry {
                    name: &cte.ctename,
                    cte,
                    state: CteState::Pending,
                })
                .collect();
            self.ctes.push(CteFrame {
                entries,
                depth,
                recursive: true,
            });
            let fi = self.ctes.len() - 1;
            for ei in 0..self.ctes[fi].entries.len() {
                if matches!(self.ctes[fi].entries[ei].state, CteState::Pending) {
                    self.compute_cte(fi, ei);
                }
            }
        } else {
            // Each CTE sees only the ones before it.
            self.ctes.push(CteFrame {
                entries: Vec::with_capacity(w.ctes.len()),
                depth,
                recursive: false,
            });
            let fi = self.ctes.len() - 1;
            for cte in ctes {
                let cols = self.cte_body(cte, None);
                self.ctes[fi].entries.push(CteEntry {
                    name: &cte.ctename,
                    cte,
                    state: CteState::Done(Rc::new(cols)),
                });
            }
        }
        true
    }

    /// The columns of the CTE `name` visible here: `Some(None)` when they
    /// are unknown (a reference inside its own definition outside of
    /// recursion), `None` when no CTE has that name.
    fn cte(&mut self, name: &str) -> Option<Option<Cols<'a>>> {
        let (fi, ei) = self.ctes.iter().enumerate().rev().find_map(|(fi, f)| {
            f.entries
                .iter()
                .position(|e| e.name == name)
                .map(|ei| (fi, ei))
        })?;
        if matches!(self.ctes[fi].entries[ei].state, CteState::Pending) {
            self.compute_cte(fi, ei);
        }
        Some(match &self.ctes[fi].entries[ei].state {
            CteState::Done(c) | CteState::Busy(Some(c)) => Some(c.clone()),
            _ => None,
        })
    }

    /// Analyzes a pending CTE of a WITH RECURSIVE frame, in the scopes of
    /// its WITH clause.
    fn compute_cte(&mut self, fi: usize, ei: usize) {
        let depth = self.ctes[fi].depth.min(self.levels.len());
        let levels = self.levels.split_off(depth);
        let frames = self.ctes.split_off(fi + 1);
        self.ctes[fi].entries[ei].state = CteState::Busy(None);
        let cte = self.ctes[fi].entries[ei].cte;
        let cols = self.cte_body(cte, Some((fi, ei)));
        self.ctes[fi].entries[ei].state = CteState::Done(Rc::new(cols));
        self.levels.extend(levels);
        self.ctes.extend(frames);
    }

    fn cte_body(
        &mut self,
        cte: &'a protobuf::CommonTableExpr,
        slot: Option<(usize, usize)>,
    ) -> Vec<Col<'a>> {
        let Some(q) = cte.ctequery.as_deref() else {
            return Vec::new();
        };
        let mut cols = match (&q.node, slot) {
            (Some(N::SelectStmt(s)), Some(slot))
                if self.ctes[slot.0].recursive
                    && s.op != protobuf::SetOperation::SetopNone as i32
                    && s.op != protobuf::SetOperation::Undefined as i32 =>
            {
                self.recursive_union(s, slot, &cte.aliascolnames)
            }
            _ => self.query(q),
        };
        rename(&mut cols, &cte.aliascolnames);
        // SEARCH and CYCLE add columns computed from the listed ones.
        let mut extra = Vec::new();
        if let Some(s) = &cte.search_clause {
            extra.push(Some(s.search_seq_column.as_str()));
        }
        if let Some(c) = &cte.cycle_clause {
            extra.push(Some(c.cycle_mark_column.as_str()));
            extra.push(Some(c.cycle_path_column.as_str()));
        }
        if !extra.is_empty() {
            let mut all = Vec::new();
            all_sources(&cols, &mut all);
            let all = finish(all);
            for name in extra {
                cols.push(Col {
                    name,
                    out: Output::Column(all.clone()),
                });
            }
        }
        cols
    }

    /// `non_recursive UNION recursive`: iterated with the CTE's references
    /// bound to the columns so far, until nothing changes.
    fn recursive_union(
        &mut self,
        s: &'a protobuf::SelectStmt,
        (fi, ei): (usize, usize),
        aliases: &'a [Node],
    ) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        let mut cur = s
            .larg
            .as_deref()
            .map(|l| self.select(l))
            .unwrap_or_default();
        rename(&mut cur, aliases);
        let mut round = 0;
        loop {
            self.ctes[fi].entries[ei].state = CteState::Busy(Some(Rc::new(cur.clone())));
            let right = s
                .rarg
                .as_deref()
                .map(|r| self.select(r))
                .unwrap_or_default();
            let mut next = merge_arms(cur.clone(), right);
            if round >= RECURSION_MERGE {
                let mut all = Vec::new();
                all_sources(&next, &mut all);
                next = collapse(next, finish(all));
            }
            if next == cur {
                break;
            }
            cur = next;
            round += 1;
            if round >= RECURSION_LIMIT {
                let mut all = vec![Source::Opaque];
                all_sources(&cur, &mut all);
                cur = vec![Col::star(finish(all))];
                break;
            }
        }
        self.tail(s, &cur);
        if with {
            self.ctes.pop();
        }
        cur
    }

    // --- DML ---

    /// A DML statement's level: its target relation (never a CTE).
    fn target_level(&mut self, rv: Option<&'a protobuf::RangeVar>) {
        let mut level = Level::new(true);
        level.items.extend(rv.map(|rv| self.base_item(rv)));
        self.levels.push(level);
    }

    /// `SET col = value`: the value is written.
    fn assign(&mut self, node: &'a Node) {
        let mut v = Vec::new();
        self.expr(node, &mut v);
        self.written.append(&mut v);
    }

    fn range_items(&mut self, items: &'a [Node]) {
        let vis = self.set_visible(false);
        for f in items {
            self.range_item(f);
        }
        self.set_visible(vis);
    }

    fn insert(&mut self, s: &'a protobuf::InsertStmt) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        let values = match s.select_stmt.as_deref() {
            Some(q) => self.query(q),
            None => Vec::new(),
        };
        self.write(&values);
        self.target_level(s.relation.as_ref());
        if let Some(oc) = &s.on_conflict_clause {
            // EXCLUDED is the row proposed for insertion.
            let mut excluded = values;
            let names: Vec<Option<&'a str>> = s
                .cols
                .iter()
                .map(|c| match &c.node {
                    Some(N::ResTarget(rt)) if rt.indirection.is_empty() => Some(rt.name.as_str()),
                    _ => None,
                })
                .collect();
            let known = !names.is_empty()
                && names.len() == excluded.len()
                && !excluded.iter().any(Col::is_star);
            for (i, c) in excluded.iter_mut().enumerate() {
                c.name = if known { names[i] } else { None };
            }
            self.push_item(Item {
                name: Some("excluded"),
                schema: None,
                aliased: true,
                hidden: false,
                kind: Kind::Derived(Rc::new(excluded)),
            });
            if let Some(infer) = &oc.infer {
                for e in &infer.index_elems {
                    self.pred(e);
                }
                self.pred_opt(&infer.where_clause);
            }
            for t in &oc.target_list {
                self.assign(t);
            }
            self.pred_opt(&oc.where_clause);
            if let Some(l) = self.levels.last_mut() {
                l.items.truncate(1);
            }
        }
        self.dml_end(with, &s.returning_list)
    }

    /// A DML statement's RETURNING list, in the target's scope, which then
    /// closes (with the statement's WITH, if any).
    fn dml_end(&mut self, with: bool, returning: &'a [Node]) -> Vec<Col<'a>> {
        let returning = self.target_list(returning);
        self.levels.pop();
        if with {
            self.ctes.pop();
        }
        returning
    }

    fn update(&mut self, s: &'a protobuf::UpdateStmt) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        self.target_level(s.relation.as_ref());
        self.range_items(&s.from_clause);
        for t in &s.target_list {
            self.assign(t);
        }
        self.pred_opt(&s.where_clause);
        self.dml_end(with, &s.returning_list)
    }

    fn delete(&mut self, s: &'a protobuf::DeleteStmt) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        self.target_level(s.relation.as_ref());
        self.range_items(&s.using_clause);
        self.pred_opt(&s.where_clause);
        self.dml_end(with, &s.returning_list)
    }

    fn merge(&mut self, s: &'a protobuf::MergeStmt) -> Vec<Col<'a>> {
        let with = self.with(s.with_clause.as_ref());
        self.target_level(s.relation.as_ref());
        if let Some(src) = s.source_relation.as_deref() {
            self.range_items(std::slice::from_ref(src));
        }
        self.pred_opt(&s.join_condition);
        for w in &s.merge_when_clauses {
            match &w.node {
                Some(N::MergeWhenClause(w)) => {
                    self.pred_opt(&w.condition);
                    for t in &w.target_list {
                        self.assign(t);
                    }
                    for v in &w.values {
                        self.assign(v);
                    }
                }
                _ => self.assign(w),
            }
        }
        self.dml_end(with, &s.returning_list)
    }

    // --- COPY ---

    fn copy(mut self, c: &'a protobuf::CopyStmt, inner: Option<&Lineage>) -> Lineage {
        let mut lin = Lineage::default();
        if c.is_from {
            if let Some(w) = c.where_clause.as_deref() {
                self.target_level(c.relation.as_ref());
                self.pred(w);
                self.levels.pop();
            }
            lin.predicates = finish(self.predicates);
            return lin;
        }
        let outputs = match (inner, c.query.as_deref(), &c.relation) {
            (Some(i), _, _) => {
                self.predicates.extend_from_slice(&i.predicates);
                self.written.extend_from_slice(&i.written);
                i.outputs.clone()
            }
            (None, Some(q), _) => self.query(q).into_iter().map(|c| c.out).collect(),
            (None, None, Some(rv)) => {
                let rel = relation(rv);
                if c.attlist.is_empty() {
                    vec![Output::Star(vec![Source::WholeRow(rel)])]
                } else {
                    c.attlist
                        .iter()
                        .filter_map(sval)
                        .map(|column| {
                            Output::Column(vec![Source::Column {
                                relation: rel.clone(),
                                column: column.to_string(),
                            }])
                        })
                        .collect()
                }
            }
            (None, None, None) => Vec::new(),
        };
        if c.filename.is_empty() && !c.is_program {
            lin.copy = Some(copy_format(&c.options));
            lin.outputs = outputs;
        } else {
            // To a server file or program: nothing comes back.
            for o in &outputs {
                let (Output::Column(v) | Output::Star(v)) = o;
                self.written.extend_from_slice(v);
            }
        }
        lin.predicates = finish(self.predicates);
        lin.written = finish(self.written);
        lin
    }
}

/// The format of `COPY … TO STDOUT` from its options. Options that change
/// how rows are encoded in ways a `CopyFormat` cannot describe (ENCODING,
/// multi-byte or unknown values, unknown options) give `Binary`, which the
/// masking layer refuses when the data is sensitive.
fn copy_format(options: &[Node]) -> CopyFormat {
    crate::pg::read_literal();
    let mut format = "text";
    let mut delimiter = None;
    let mut quote = None;
    let mut escape = None;
    let mut header = false;
    for o in options {
        let Some(N::DefElem(d)) = &o.node else {
            return CopyFormat::Binary;
        };
        let arg = d.arg.as_deref();
        match d.defname.as_str() {
            "format" => match def_string(arg) {
                Some(f) if f.eq_ignore_ascii_case("text") => format = "text",
                Some(f) if f.eq_ignore_ascii_case("csv") => format = "csv",
                _ => return CopyFormat::Binary,
            },
            "delimiter" => match def_byte(arg) {
                Some(b) => delimiter = Some(b),
                None => return CopyFormat::Binary,
            },
            "quote" => match def_byte(arg) {
                Some(b) => quote = Some(b),
                None => return CopyFormat::Binary,
            },
            "escape" => match def_byte(arg) {
                Some(b) => escape = Some(b),
                None => return CopyFormat::Binary,
            },
            "header" => header = def_true(arg),
            // They change neither how fields are split nor quoted.
            "null" | "force_quote" => {}
            _ => return CopyFormat::Binary,
        }
    }
    if format == "csv" {
        let quote = quote.unwrap_or(b'"');
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            quote,
            escape: escape.unwrap_or(quote),
            header,
        }
    } else {
        CopyFormat::Text {
            delimiter: delimiter.unwrap_or(b'\t'),
        }
    }
}

fn def_string(arg: Option<&Node>) -> Option<&str> {
    match arg?.node.as_ref()? {
        N::String(s) => Some(&s.sval),
        N::AConst(c) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(&s.sval),
            _ => None,
        },
        _ => None,
    }
}

/// A single one-byte character.
fn def_byte(arg: Option<&Node>) -> Option<u8> {
    match def_string(arg)?.as_bytes() {
        [b] if b.is_ascii() => Some(*b),
        _ => None,
    }
}

/// HEADER's value as PostgreSQL's `parse_bool` reads it; anything it would
/// not read as true (`match`, an error) is false, which at worst masks the
/// header line as if it were data.
fn def_true(arg: Option<&Node>) -> bool {
    let Some(node) = arg.and_then(|a| a.node.as_ref()) else {
        return true;
    };
    match node {
        N::Boolean(b) => b.boolval,
        N::Integer(i) => i.ival == 1,
        N::AConst(c) => match &c.val {
            Some(a_const::Val::Boolval(b)) => b.boolval,
            Some(a_const::Val::Ival(i)) => i.ival == 1,
            Some(a_const::Val::Sval(s)) => parse_bool(&s.sval) == Some(true),
            _ => false,
        },
        N::String(s) => parse_bool(&s.sval) == Some(true),
        _ => false,
    }
}

/// PostgreSQL's `parse_bool`: case-insensitive prefixes of true, false,
/// yes, no, on (2+ letters), off (2+ letters); 1 and 0.
fn parse_bool(s: &str) -> Option<bool> {
    let l = s.to_ascii_lowercase();
    let prefix = |word: &str, min: usize| l.len() >= min && word.starts_with(l.as_str());
    if prefix("true", 1) || prefix("yes", 1) || prefix("on", 2) || l == "1" {
        Some(true)
    } else if prefix("false", 1) || prefix("no", 1) || prefix("off", 2) || l == "0" {
        Some(false)
    } else {
        None
    }
}
