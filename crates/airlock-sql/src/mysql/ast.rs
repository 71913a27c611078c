//! Queries, DML and `CREATE TABLE … SELECT` through sqlparser: relations,
//! functions, WHERE clauses, pinned keys and lineage.
//!
//! Lineage follows the PostgreSQL analyzer's rules: column references are
//! resolved through table aliases, derived tables, CTEs, set operations and
//! joins; `*` is a `Star` of each relation's `WholeRow` (derived tables and
//! CTEs expanded); an expression node this walker does not model
//! contributes every column reference, function and relation under it.

use std::ops::ControlFlow;

use airlock_policy::lineage::{Output, Source};
use airlock_policy::{Effect, Effects, Pinned, Relation, Statement, StatementKind as K};
use sqlparser::ast::{
    self as sp, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select,
    SelectItem, SetExpr, TableFactor, TableWithJoins, Visit, Visitor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::lex::{self, Kind, Token};
use super::{Analyzer, Mode, fixed};

/// sqlparser's nesting limit: deeper texts are `unknown`.
const RECURSION_LIMIT: usize = 50;

/// What a depth-0 `INTO` of a query writes to.
enum Into {
    /// `INTO OUTFILE`/`DUMPFILE`: a file on the server.
    File,
    /// `INTO @var, …`: variables.
    Variables,
}

/// A query, DML or CREATE TABLE statement, from its tokens.
pub(super) fn analyze(an: &Analyzer, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
    let _ = mode;
    let head = t[0].text.to_ascii_lowercase();
    let is_query =
        t[0].is_punct("(") || matches!(head.as_str(), "select" | "with" | "table" | "values");
    // SELECT … INTO: sqlparser reads it as PostgreSQL's SELECT INTO a new
    // table; MySQL writes a file or variables. Taken out here.
    let mut into = None;
    let mut owned;
    let mut t = t;
    if is_query && let Some((at, end, what)) = find_into(t) {
        into = Some(what);
        owned = t[..at].to_vec();
        owned.extend_from_slice(&t[end..]);
        t = &owned;
    }
    // Locking reads sqlparser does not know: `LOCK IN SHARE MODE`.
    if is_query && t.len() > 4 && {
        let n = t.len();
        t[n - 4].is("lock") && t[n - 3].is("in") && t[n - 2].is("share") && t[n - 1].is("mode")
    } {
        owned = t[..t.len() - 4].to_vec();
        t = &owned;
    }
    let rewritten = rewrite(t);
    let t = rewritten.as_deref().unwrap_or(t);
    let mut strings = Vec::new();
    let text = lex::render(t, &mut strings);
    let parsed = Parser::new(&MySqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_statements());
    let stmt = match parsed {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        Ok(_) => return Statement::unknown("it does not parse as one statement", span),
        Err(e) => return Statement::unknown(format!("it does not parse: {e}"), span),
    };
    let mut s = statement(an, &head, &stmt, span);
    if s.kind == K::Unknown {
        return s;
    }
    match into {
        Some(Into::File) => {
            s.effects
                .extend(Effects::of(&[Effect::CopyFile, Effect::Export]));
            s.lineage.outputs.clear();
        }
        Some(Into::Variables) => {
            for o in std::mem::take(&mut s.lineage.outputs) {
                let (Output::Column(src) | Output::Star(src)) = o;
                s.lineage.written.extend(src);
            }
        }
        None => {}
    }
    s
}

/// MySQL forms sqlparser does not read, rewritten into ones it reads the
/// same way: `TABLE t` → `SELECT * FROM t`; `a MOD b` → `a % b`;
/// `UPDATE a, b SET` → `UPDATE a CROSS JOIN b SET`.
fn rewrite(t: &[Token]) -> Option<Vec<Token>> {
    let word = |text: &str, like: &Token| Token {
        kind: Kind::Word,
        text: text.into(),
        span: like.span,
        space_before: true,
    };
    let mut out: Vec<Token> = Vec::with_capacity(t.len() + 2);
    let mut changed = false;
    let update = t[0].is("update");
    let mut depth = 0i32;
    let mut in_update_targets = update;
    for (i, tok) in t.iter().enumerate() {
        if tok.is_punct("(") {
            depth += 1;
        } else if tok.is_punct(")") {
            depth -= 1;
        }
        if i == 0 && tok.is("table") {
            out.push(word("SELECT", tok));
            out.push(Token {
                kind: Kind::Punct,
                text: "*".into(),
                span: tok.span,
                space_before: true,
            });
            out.push(word("FROM", tok));
            changed = true;
            continue;
        }
        if tok.is("mod") && !t.get(i + 1).is_some_and(|n| n.is_punct("(")) && i > 0 {
            out.push(Token {
                kind: Kind::Punct,
                text: "%".into(),
                ..tok.clone()
            });
            changed = true;
            continue;
        }
        if in_update_targets && depth == 0 && tok.is("set") {
            in_update_targets = false;
        }
        if in_update_targets && depth == 0 && tok.is_punct(",") {
            out.push(word("CROSS", tok));
            out.push(word("JOIN", tok));
            changed = true;
            continue;
        }
        out.push(tok.clone());
    }
    changed.then_some(out)
}

/// `SELECT expr, …` from the tokens of the expressions (for `DO` and `SET`).
pub(super) fn expression(
    an: &Analyzer,
    t: &[Token],
    span: (usize, usize),
    mode: Mode,
) -> Statement {
    if t.is_empty() {
        return Statement::unknown("an empty expression", span);
    }
    let mut tokens = vec![Token {
        kind: Kind::Word,
        text: "SELECT".into(),
        span: (0, 0),
        space_before: false,
    }];
    tokens.extend_from_slice(t);
    tokens[1].space_before = true;
    let s = analyze(an, &tokens, span, mode);
    if s.kind != K::Select && s.kind != K::Unknown {
        return Statement::unknown("not an expression", span);
    }
    s
}

/// A depth-0 `INTO` in a query: its token range and what it writes.
fn find_into(t: &[Token]) -> Option<(usize, usize, Into)> {
    let mut depth = 0i32;
    let mut at = None;
    for (i, tok) in t.iter().enumerate() {
        if tok.is_punct("(") {
            depth += 1;
        } else if tok.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && tok.is("into") {
            at = Some(i);
            break;
        }
    }
    let at = at?;
    const ENDS: &[&str] = &[
        "from",
        "where",
        "group",
        "having",
        "order",
        "limit",
        "for",
        "lock",
        "union",
        "window",
        "except",
        "intersect",
    ];
    let mut end = t.len();
    let mut depth = 0i32;
    for (i, tok) in t.iter().enumerate().skip(at + 1) {
        if tok.is_punct("(") {
            depth += 1;
        } else if tok.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && ENDS.iter().any(|w| tok.is(w)) {
            end = i;
            break;
        }
    }
    let what = match t.get(at + 1) {
        Some(w) if w.is("outfile") || w.is("dumpfile") => Into::File,
        _ => Into::Variables,
    };
    Some((at, end, what))
}

/// The statement sqlparser made of the text, which must be what its first
/// word said.
fn statement(an: &Analyzer, head: &str, stmt: &sp::Statement, span: (usize, usize)) -> Statement {
    let mut w = Walker::default();
    let mut s = fixed(K::Unknown, &[], span);
    s.unknown_reason = None;
    let kind = match (head, stmt) {
        ("select" | "with" | "table" | "values" | "(", sp::Statement::Query(q)) => {
            s.lineage.outputs = outputs(w.query(q));
            // WITH … UPDATE/DELETE/INSERT: the DML is the statement.
            match w.top_dml {
                Some(k) => k,
                None => {
                    s.effects.insert(Effect::Read);
                    K::Select
                }
            }
        }
        ("insert" | "replace", sp::Statement::Insert(i)) => {
            s.lineage.outputs = outputs(w.insert(i));
            K::Insert
        }
        ("update", sp::Statement::Update(u)) => {
            s.lineage.outputs = outputs(w.update(u));
            s.pinned = pinned_update(u);
            K::Update
        }
        ("delete", sp::Statement::Delete(d)) => {
            s.lineage.outputs = outputs(w.delete(d));
            s.pinned = pinned_delete(d);
            K::Delete
        }
        ("with", sp::Statement::Update(u)) => {
            s.lineage.outputs = outputs(w.update(u));
            K::Update
        }
        ("with", sp::Statement::Delete(d)) => {
            s.lineage.outputs = outputs(w.delete(d));
            K::Delete
        }
        ("create", sp::Statement::CreateTable(ct)) => {
            w.relation(&ct.name);
            if let Some(q) = &ct.query {
                let out = w.query(q);
                w.written
                    .extend(out.into_iter().flat_map(|(_, o)| sources(o)));
                s.effects.insert(Effect::Read);
            }
            K::Ddl
        }
        ("call", sp::Statement::Call(f)) => {
            let name = function_name(&f.name);
            let mut src = vec![Source::Function(name.clone())];
            w.functions.push(name);
            src.extend(w.function_args(f));
            s.lineage.outputs = vec![Output::Star(src)];
            K::Call
        }
        _ => {
            return Statement::unknown(
                format!(
                    "it does not parse as the {} statement it starts as",
                    head.to_uppercase()
                ),
                span,
            );
        }
    };
    if w.bad {
        return Statement::unknown(
            "a SELECT … INTO inside a statement, or a query form airlock does not follow",
            span,
        );
    }
    // Safety nets: every relation and every call in the tree.
    let mut all = Everything::default();
    let _ = stmt.visit(&mut all);
    for r in all.relations {
        let rel = relation(&r);
        if !w.cte_names.contains(&rel.name.to_lowercase()) || rel.schema.is_some() {
            w.add_relation(rel);
        }
    }
    for f in all.functions {
        if !w.functions.contains(&f) {
            w.functions.push(f);
        }
    }
    s.kind = kind;
    match kind {
        K::Insert => s.effects.insert(Effect::Write),
        K::Update | K::Delete => s
            .effects
            .extend(Effects::of(&[Effect::Read, Effect::Write])),
        _ => {}
    }
    if w.reads && kind != K::Select {
        s.effects.insert(Effect::Read);
    }
    for k in &w.dml {
        if *k != kind && !s.nested.contains(k) {
            s.nested.push(*k);
        }
    }
    if !w.dml.is_empty() {
        s.effects.insert(Effect::Write);
    }
    if w.has_where.is_some() {
        s.has_where = w.has_where;
    }
    for f in &w.functions {
        let base = f.rsplit('.').next().unwrap_or(f);
        if super::matches(&an.unsafe_functions, base) {
            s.effects.insert(Effect::UnsafeFunction);
        }
        if super::matches(super::WRITING_FUNCTIONS, base) {
            s.effects.insert(Effect::Write);
        }
    }
    s.relations = w.relations;
    s.functions = w.functions;
    s.lineage.predicates = dedup(w.predicates);
    s.lineage.written = dedup(w.written);
    s
}

fn dedup(v: Vec<Source>) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A result column: its name when it has one, and where it comes from.
type Col = (Option<String>, Output);

fn outputs(cols: Vec<Col>) -> Vec<Output> {
    cols.into_iter().map(|(_, o)| o).collect()
}

fn sources(o: Output) -> Vec<Source> {
    let (Output::Column(s) | Output::Star(s)) = o;
    s
}

/// One name in a FROM clause.
#[derive(Clone, Debug)]
enum Entry {
    Table { alias: String, relation: Relation },
    Derived { alias: String, cols: Vec<Col> },
}

impl Entry {
    fn alias(&self) -> &str {
        match self {
            Entry::Table { alias, .. } | Entry::Derived { alias, .. } => alias,
        }
    }

    /// Where column `col` of this entry comes from (`None`: not here).
    fn column(&self, col: &str) -> Option<Vec<Source>> {
        match self {
            Entry::Table { relation, .. } => Some(vec![Source::Column {
                relation: relation.clone(),
                column: col.to_string(),
            }]),
            Entry::Derived { cols, .. } => {
                let mut found = None::<Vec<Source>>;
                for (name, o) in cols {
                    match o {
                        Output::Column(s)
                            if name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(col)) =>
                        {
                            found.get_or_insert_with(Vec::new).extend(s.iter().cloned());
                        }
                        // A star may hold it.
                        Output::Star(s) => {
                            found.get_or_insert_with(Vec::new).extend(s.iter().cloned())
                        }
                        _ => {}
                    }
                }
                found
            }
        }
    }

    /// `alias.*` or `*`.
    fn star(&self) -> Vec<Col> {
        match self {
            Entry::Table { relation, .. } => {
                vec![(None, Output::Star(vec![Source::WholeRow(relation.clone())]))]
            }
            Entry::Derived { cols, .. } => cols.clone(),
        }
    }

    /// Every source of the entry (a whole-row reference).
    fn whole(&self) -> Vec<Source> {
        match self {
            Entry::Table { relation, .. } => vec![Source::WholeRow(relation.clone())],
            Entry::Derived { cols, .. } => {
                cols.iter().flat_map(|(_, o)| sources(o.clone())).collect()
            }
        }
    }
}

#[derive(Default)]
struct Walker {
    /// FROM scopes, innermost last.
    scopes: Vec<Vec<Entry>>,
    /// CTEs in scope, innermost last.
    ctes: Vec<(String, Vec<Col>)>,
    cte_names: Vec<String>,
    relations: Vec<Relation>,
    functions: Vec<String>,
    predicates: Vec<Source>,
    written: Vec<Source>,
    /// DML statements met (a WITH's body included).
    dml: Vec<K>,
    /// The DML a WITH query's body is.
    top_dml: Option<K>,
    has_where: Option<bool>,
    /// A relation is read (a FROM clause other than a DML target alone).
    reads: bool,
    /// A PostgreSQL-style SELECT INTO met inside a statement.
    bad: bool,
    depth: usize,
}

impl Walker {
    fn add_relation(&mut self, r: Relation) {
        if !self.relations.contains(&r) {
            self.relations.push(r);
        }
    }

    fn relation(&mut self, name: &ObjectName) -> Relation {
        let r = relation(name);
        self.add_relation(r.clone());
        r
    }

    fn query(&mut self, q: &Query) -> Vec<Col> {
        self.depth += 1;
        let ctes_before = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_lowercase();
                self.cte_names.push(name.clone());
                let rename = |mut cols: Vec<Col>| {
                    for (c, alias) in cols.iter_mut().zip(&cte.alias.columns) {
                        c.0 = Some(alias.name.value.to_lowercase());
                    }
                    cols
                };
                let mut cols = Vec::new();
                if with.recursive {
                    // To a fixpoint (bounded): the CTE refers to itself.
                    for _ in 0..4 {
                        self.ctes.push((name.clone(), cols.clone()));
                        let next = rename(self.query(&cte.query));
                        self.ctes.pop();
                        let next = merge(&cols, next);
                        if next == cols {
                            break;
                        }
                        cols = next;
                    }
                } else {
                    cols = rename(self.query(&cte.query));
                }
                self.ctes.push((name, cols));
            }
        }
        let (cols, scope) = self.set_expr(&q.body);
        if let Some(order) = &q.order_by
            && let sp::OrderByKind::Expressions(exprs) = &order.kind
        {
            if let Some(scope) = scope.clone() {
                self.scopes.push(scope);
            }
            for e in exprs {
                let src = self.order_expr(&e.expr, &cols);
                self.predicates.extend(src);
            }
            if scope.is_some() {
                self.scopes.pop();
            }
        }
        self.ctes.truncate(ctes_before);
        self.depth -= 1;
        cols
    }

    /// An ORDER BY item: a result column's name or number, or an
    /// expression over the FROM scope.
    fn order_expr(&mut self, e: &Expr, cols: &[Col]) -> Vec<Source> {
        if let Expr::Identifier(id) = e {
            let name = id.value.to_lowercase();
            let by_name: Vec<Source> = cols
                .iter()
                .filter(|(n, _)| n.as_deref() == Some(name.as_str()))
                .flat_map(|(_, o)| sources(o.clone()))
                .collect();
            if !by_name.is_empty() {
                return by_name;
            }
        }
        if let Expr::Value(v) = e
            && let sp::Value::Number(n, _) = &v.value
            && let Ok(i) = n.parse::<usize>()
            && let Some((_, o)) = cols.get(i.wrapping_sub(1))
        {
            return sources(o.clone());
        }
        self.expr(e)
    }

    fn set_expr(&mut self, e: &SetExpr) -> (Vec<Col>, Option<Vec<Entry>>) {
        match e {
            SetExpr::Select(s) => {
                let (cols, scope) = self.select(s);
                (cols, Some(scope))
            }
            SetExpr::Query(q) => (self.query(q), None),
            SetExpr::SetOperation { left, right, .. } => {
                let (l, _) = self.set_expr(left);
                let (r, _) = self.set_expr(right);
                (union(l, r), None)
            }
            SetExpr::Values(v) => {
                let mut cols: Vec<Col> = Vec::new();
                for row in &v.rows {
                    for (i, e) in row.content.iter().enumerate() {
                        let src = self.expr(e);
                        match cols.get_mut(i) {
                            Some((_, Output::Column(s))) => s.extend(src),
                            _ => cols.push((None, Output::Column(src))),
                        }
                    }
                }
                (cols, None)
            }
            SetExpr::Table(t) => {
                let Some(name) = &t.table_name else {
                    return (vec![(None, Output::Star(vec![Source::Opaque]))], None);
                };
                let name = name.value.clone();
                let lower = name.to_lowercase();
                if t.schema_name.is_none()
                    && let Some((_, cols)) = self.ctes.iter().rev().find(|(n, _)| *n == lower)
                {
                    return (cols.clone(), None);
                }
                let rel = Relation {
                    schema: t.schema_name.as_ref().map(|s| s.value.clone()),
                    name,
                };
                self.add_relation(rel.clone());
                self.reads = true;
                (
                    vec![(None, Output::Star(vec![Source::WholeRow(rel)]))],
                    None,
                )
            }
            SetExpr::Insert(sp::Statement::Insert(i)) => {
                // Only a WITH's body may be DML (MySQL 8); elsewhere the
                // server refuses it.
                if self.depth == 1 {
                    self.top_dml.get_or_insert(K::Insert);
                } else {
                    self.bad = true;
                }
                (self.insert(i), None)
            }
            SetExpr::Update(sp::Statement::Update(u)) => {
                // Only a WITH's body may be DML (MySQL 8); elsewhere the
                // server refuses it.
                if self.depth == 1 {
                    self.top_dml.get_or_insert(K::Update);
                } else {
                    self.bad = true;
                }
                (self.update(u), None)
            }
            SetExpr::Delete(sp::Statement::Delete(d)) => {
                // Only a WITH's body may be DML (MySQL 8); elsewhere the
                // server refuses it.
                if self.depth == 1 {
                    self.top_dml.get_or_insert(K::Delete);
                } else {
                    self.bad = true;
                }
                (self.delete(d), None)
            }
            other => {
                // Not modeled: everything under it.
                self.bad = true;
                let src = self.everything(other);
                (vec![(None, Output::Star(src))], None)
            }
        }
    }

    fn select(&mut self, s: &Select) -> (Vec<Col>, Vec<Entry>) {
        if s.into.is_some() {
            self.bad = true;
        }
        let mut conditions = Vec::new();
        let scope = self.from(&s.from, &mut conditions);
        self.scopes.push(scope);
        for e in conditions {
            let src = self.expr(e);
            self.predicates.extend(src);
        }
        let mut cols = Vec::new();
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let name = match e {
                        Expr::Identifier(i) => Some(i.value.to_lowercase()),
                        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.to_lowercase()),
                        _ => None,
                    };
                    let src = self.expr(e);
                    cols.push((name, Output::Column(src)));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let src = self.expr(expr);
                    cols.push((Some(alias.value.to_lowercase()), Output::Column(src)));
                }
                SelectItem::ExprWithAliases { expr, .. } => {
                    let src = self.expr(expr);
                    cols.push((None, Output::Column(src)));
                }
                SelectItem::Wildcard(_) => {
                    let scope = self.scopes.last().cloned().unwrap_or_default();
                    if scope.is_empty() {
                        cols.push((None, Output::Star(vec![Source::Opaque])));
                    }
                    for entry in &scope {
                        cols.extend(entry.star());
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let parts: Vec<String> = match kind {
                        sp::SelectItemQualifiedWildcardKind::ObjectName(n) => name_parts(n),
                        sp::SelectItemQualifiedWildcardKind::Expr(e) => {
                            let src = self.expr(e);
                            cols.push((None, Output::Star(src)));
                            continue;
                        }
                    };
                    cols.extend(self.qualified_star(&parts));
                }
            }
        }
        if let Some(w) = &s.selection {
            let src = self.expr(w);
            self.predicates.extend(src);
        }
        if let Some(w) = &s.prewhere {
            let src = self.expr(w);
            self.predicates.extend(src);
        }
        if let sp::GroupByExpr::Expressions(exprs, _) = &s.group_by {
            for e in exprs {
                let src = self.order_expr(e, &cols);
                self.predicates.extend(src);
            }
        }
        if let Some(h) = &s.having {
            let src = self.order_expr(h, &cols);
            self.predicates.extend(src);
        }
        for w in &s.named_window {
            let src = self.everything(w);
            self.predicates.extend(src);
        }
        if let Some(sp::Distinct::On(exprs)) = &s.distinct {
            for e in exprs {
                let src = self.expr(e);
                self.predicates.extend(src);
            }
        }
        let scope = self.scopes.pop().unwrap_or_default();
        (cols, scope)
    }

    fn qualified_star(&mut self, parts: &[String]) -> Vec<Col> {
        let found = match parts {
            [alias] => self.find(alias, None),
            [db, table] => self.find(table, Some(db)),
            _ => None,
        };
        match found {
            Some(entry) => entry.star(),
            None => {
                let rel = match parts {
                    [db, t] => Relation {
                        schema: Some(db.clone()),
                        name: t.clone(),
                    },
                    _ => Relation {
                        schema: None,
                        name: parts.last().cloned().unwrap_or_default(),
                    },
                };
                vec![(None, Output::Star(vec![Source::WholeRow(rel)]))]
            }
        }
    }

    /// The entry named `alias` (in `db` when given), innermost scope first.
    fn find(&self, alias: &str, db: Option<&str>) -> Option<Entry> {
        for scope in self.scopes.iter().rev() {
            for e in scope {
                let hit = match (e, db) {
                    (_, None) => e.alias().eq_ignore_ascii_case(alias),
                    (Entry::Table { relation, alias: a }, Some(db)) => {
                        a.eq_ignore_ascii_case(alias)
                            && relation
                                .schema
                                .as_deref()
                                .is_some_and(|s| s.eq_ignore_ascii_case(db))
                    }
                    _ => false,
                };
                if hit {
                    return Some(e.clone());
                }
            }
        }
        None
    }

    /// A FROM list's entries; join conditions go to `conditions`.
    fn from<'a>(
        &mut self,
        from: &'a [TableWithJoins],
        conditions: &mut Vec<&'a Expr>,
    ) -> Vec<Entry> {
        let mut scope = Vec::new();
        for twj in from {
            self.table_with_joins(twj, &mut scope, conditions);
        }
        scope
    }

    fn table_with_joins<'a>(
        &mut self,
        twj: &'a TableWithJoins,
        scope: &mut Vec<Entry>,
        conditions: &mut Vec<&'a Expr>,
    ) {
        self.factor(&twj.relation, scope, conditions);
        for j in &twj.joins {
            self.factor(&j.relation, scope, conditions);
            use sp::JoinOperator as J;
            let constraint = match &j.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c)
                | J::StraightJoin(c)
                | J::Semi(c)
                | J::LeftSemi(c)
                | J::RightSemi(c)
                | J::Anti(c)
                | J::LeftAnti(c)
                | J::RightAnti(c) => Some(c),
                J::AsOf {
                    match_condition,
                    constraint,
                } => {
                    conditions.push(match_condition);
                    Some(constraint)
                }
                _ => None,
            };
            match constraint {
                Some(sp::JoinConstraint::On(e)) => conditions.push(e),
                Some(sp::JoinConstraint::Using(cols) | sp::JoinConstraint::UsingAlias(cols, _)) => {
                    for c in cols {
                        let name = name_parts(c).pop().unwrap_or_default();
                        for e in scope.iter() {
                            if let Some(src) = e.column(&name) {
                                self.predicates.extend(src);
                            }
                        }
                    }
                }
                // NATURAL: any common column.
                Some(sp::JoinConstraint::Natural) => {
                    for e in scope.iter() {
                        self.predicates.extend(e.whole());
                    }
                }
                _ => {}
            }
        }
    }

    fn factor<'a>(
        &mut self,
        f: &'a TableFactor,
        scope: &mut Vec<Entry>,
        conditions: &mut Vec<&'a Expr>,
    ) {
        let alias_of = |a: &Option<sp::TableAlias>| a.as_ref().map(|a| a.name.value.clone());
        let rename = |mut cols: Vec<Col>, a: &Option<sp::TableAlias>| {
            if let Some(a) = a {
                for (c, n) in cols.iter_mut().zip(&a.columns) {
                    c.0 = Some(n.name.value.to_lowercase());
                }
            }
            cols
        };
        match f {
            TableFactor::Table { name, alias, .. } => {
                let parts = name_parts(name);
                if let [single] = &parts[..]
                    && let Some((_, cols)) = self
                        .ctes
                        .iter()
                        .rev()
                        .find(|(n, _)| n.eq_ignore_ascii_case(single))
                {
                    let cols = rename(cols.clone(), alias);
                    scope.push(Entry::Derived {
                        alias: alias_of(alias).unwrap_or_else(|| single.clone()),
                        cols,
                    });
                    return;
                }
                self.reads = true;
                let relation = self.relation(name);
                scope.push(Entry::Table {
                    alias: alias_of(alias).unwrap_or_else(|| relation.name.clone()),
                    relation,
                });
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                // A LATERAL derived table sees the entries before it.
                self.scopes.push(scope.clone());
                let cols = self.query(subquery);
                self.scopes.pop();
                scope.push(Entry::Derived {
                    alias: alias_of(alias).unwrap_or_default(),
                    cols: rename(cols, alias),
                });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let mut inner = Vec::new();
                self.table_with_joins(table_with_joins, &mut inner, conditions);
                match alias_of(alias) {
                    Some(a) => {
                        let cols = inner.iter().flat_map(Entry::star).collect();
                        scope.push(Entry::Derived { alias: a, cols });
                    }
                    None => scope.extend(inner),
                }
            }
            other => {
                // JSON_TABLE and other table functions: their columns come
                // from everything they are given.
                self.scopes.push(scope.clone());
                let src = self.everything(other);
                self.scopes.pop();
                let alias = match other {
                    TableFactor::JsonTable { alias, .. }
                    | TableFactor::Function { alias, .. }
                    | TableFactor::TableFunction { alias, .. } => alias_of(alias),
                    _ => None,
                };
                scope.push(Entry::Derived {
                    alias: alias.unwrap_or_default(),
                    cols: vec![(None, Output::Star(src))],
                });
            }
        }
    }

    /// The sources of an expression's value.
    fn expr(&mut self, e: &Expr) -> Vec<Source> {
        match e {
            Expr::Identifier(i) => self.column(std::slice::from_ref(&i.value)),
            Expr::CompoundIdentifier(parts) => {
                let parts: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
                self.column(&parts)
            }
            Expr::Value(_) => Vec::new(),
            Expr::Nested(e) => self.expr(e),
            Expr::BinaryOp { left, right, .. } => {
                let mut s = self.expr(left);
                s.extend(self.expr(right));
                s
            }
            Expr::UnaryOp { expr, .. } => self.expr(expr),
            Expr::Subquery(q) => {
                let cols = self.query(q);
                cols.into_iter().flat_map(|(_, o)| sources(o)).collect()
            }
            Expr::Exists { subquery, .. } => {
                let cols = self.query(subquery);
                self.predicates
                    .extend(cols.into_iter().flat_map(|(_, o)| sources(o)));
                Vec::new()
            }
            Expr::In {
                expr,
                target: sp::InTarget::Subquery(subquery),
                ..
            } => {
                let mut s = self.expr(expr);
                let cols = self.query(subquery);
                let inner: Vec<Source> = cols.into_iter().flat_map(|(_, o)| sources(o)).collect();
                self.predicates.extend(inner.iter().cloned());
                s.extend(inner);
                s
            }
            Expr::Function(f) => {
                let name = function_name(&f.name);
                if !self.functions.contains(&name) {
                    self.functions.push(name.clone());
                }
                let mut s = vec![Source::Function(name)];
                s.extend(self.function_args(f));
                s
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut s = Vec::new();
                if let Some(o) = operand {
                    let src = self.expr(o);
                    self.predicates.extend(src.iter().cloned());
                    s.extend(src);
                }
                for c in conditions {
                    let src = self.expr(&c.condition);
                    self.predicates.extend(src.iter().cloned());
                    s.extend(src);
                    s.extend(self.expr(&c.result));
                }
                if let Some(e) = else_result {
                    s.extend(self.expr(e));
                }
                s
            }
            other => self.everything(other),
        }
    }

    fn function_args(&mut self, f: &sp::Function) -> Vec<Source> {
        let mut s = Vec::new();
        match &f.args {
            FunctionArguments::List(list) => {
                for a in &list.args {
                    let (FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg)) = a;
                    match arg {
                        FunctionArgExpr::Expr(e) => s.extend(self.expr(e)),
                        FunctionArgExpr::QualifiedWildcard(n) => {
                            for (_, o) in self.qualified_star(&name_parts(n)) {
                                s.extend(sources(o));
                            }
                        }
                        // count(*): no column's value.
                        FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {}
                    }
                }
                // ORDER BY, SEPARATOR… (GROUP_CONCAT).
                for c in &list.clauses {
                    let src = self.everything(c);
                    s.extend(src);
                }
            }
            FunctionArguments::Subquery(q) => {
                let cols = self.query(q);
                s.extend(cols.into_iter().flat_map(|(_, o)| sources(o)));
            }
            FunctionArguments::None => {}
        }
        if let Some(filter) = &f.filter {
            let src = self.expr(filter);
            self.predicates.extend(src);
        }
        if let Some(over) = &f.over {
            let src = self.everything(over);
            self.predicates.extend(src);
        }
        for o in &f.within_group {
            let src = self.expr(&o.expr);
            self.predicates.extend(src);
        }
        s
    }

    /// A column reference: `col`, `t.col`, `db.t.col`.
    fn column(&mut self, parts: &[String]) -> Vec<Source> {
        match parts {
            [name] if name.starts_with('@') => Vec::new(),
            [name] => {
                let col = name.to_lowercase();
                for scope in self.scopes.iter().rev() {
                    let found: Vec<Source> = scope
                        .iter()
                        .filter_map(|e| e.column(&col))
                        .flatten()
                        .collect();
                    if !found.is_empty() {
                        return found;
                    }
                }
                Vec::new()
            }
            [t, col] => {
                let col = col.to_lowercase();
                match self.find(t, None) {
                    Some(e) => e.column(&col).unwrap_or_else(|| e.whole()),
                    None => vec![Source::Column {
                        relation: Relation {
                            schema: None,
                            name: t.clone(),
                        },
                        column: col,
                    }],
                }
            }
            [db, t, col] => {
                let col = col.to_lowercase();
                match self.find(t, Some(db)) {
                    Some(e) => e.column(&col).unwrap_or_else(|| e.whole()),
                    None => vec![Source::Column {
                        relation: Relation {
                            schema: Some(db.clone()),
                            name: t.clone(),
                        },
                        column: col,
                    }],
                }
            }
            _ => vec![Source::Opaque],
        }
    }

    /// Every column, function and relation under a node this walker does
    /// not model, resolved in the current scope.
    fn everything<V: Visit>(&mut self, node: &V) -> Vec<Source> {
        let mut all = Everything::default();
        let _ = node.visit(&mut all);
        let mut s = Vec::new();
        for parts in all.columns {
            s.extend(self.column(&parts));
        }
        for f in all.functions {
            if !self.functions.contains(&f) {
                self.functions.push(f.clone());
            }
            s.push(Source::Function(f));
        }
        for r in all.relations {
            let rel = relation(&r);
            let cte = if rel.schema.is_none() {
                self.ctes
                    .iter()
                    .rev()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&rel.name))
                    .cloned()
            } else {
                None
            };
            match cte {
                Some((_, cols)) => s.extend(cols.into_iter().flat_map(|(_, o)| sources(o))),
                _ => {
                    self.add_relation(rel.clone());
                    self.reads = true;
                    s.push(Source::WholeRow(rel));
                }
            }
        }
        s
    }

    fn target_scope(&mut self, name: &ObjectName, alias: Option<String>) -> Vec<Entry> {
        let relation = self.relation(name);
        vec![Entry::Table {
            alias: alias.unwrap_or_else(|| relation.name.clone()),
            relation,
        }]
    }

    fn insert(&mut self, i: &sp::Insert) -> Vec<Col> {
        self.dml.push(K::Insert);
        let scope = match &i.table {
            sp::TableObject::TableName(n) => {
                self.target_scope(n, i.table_alias.as_ref().map(|a| a.alias.value.clone()))
            }
            other => {
                let src = self.everything(other);
                self.written.extend(src);
                Vec::new()
            }
        };
        let reads_before = self.reads;
        if let Some(q) = &i.source {
            let cols = self.query(q);
            self.written
                .extend(cols.into_iter().flat_map(|(_, o)| sources(o)));
        }
        // INSERT … SET a = expr, and ON DUPLICATE KEY UPDATE, see the row.
        self.scopes.push(scope);
        for a in &i.assignments {
            let src = self.expr(&a.value);
            self.written.extend(src);
        }
        match &i.on {
            Some(sp::OnInsert::DuplicateKeyUpdate(assignments)) => {
                for a in assignments {
                    let src = self.expr(&a.value);
                    self.written.extend(src);
                }
            }
            Some(other) => {
                let src = self.everything(other);
                self.written.extend(src);
            }
            None => {}
        }
        let out = self.returning(i.returning.as_deref());
        self.scopes.pop();
        // A target is not a read; the query's FROM is.
        self.reads = reads_before || self.reads_in(i.source.as_deref());
        out
    }

    fn reads_in(&self, q: Option<&Query>) -> bool {
        let Some(q) = q else { return false };
        let mut all = Everything::default();
        let _ = q.visit(&mut all);
        !all.relations.is_empty()
    }

    fn returning(&mut self, items: Option<&[SelectItem]>) -> Vec<Col> {
        let Some(items) = items else {
            return Vec::new();
        };
        let mut cols = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let src = self.expr(e);
                    cols.push((None, Output::Column(src)));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let src = self.expr(expr);
                    cols.push((Some(alias.value.to_lowercase()), Output::Column(src)));
                }
                SelectItem::Wildcard(_) => {
                    let scope = self.scopes.last().cloned().unwrap_or_default();
                    for e in &scope {
                        cols.extend(e.star());
                    }
                }
                other => {
                    let src = self.everything(other);
                    cols.push((None, Output::Star(src)));
                }
            }
        }
        cols
    }

    fn update(&mut self, u: &sp::Update) -> Vec<Col> {
        self.dml.push(K::Update);
        let mut conditions = Vec::new();
        let mut scope = self.from(std::slice::from_ref(&u.table), &mut conditions);
        if let Some(sp::UpdateTableFromKind::BeforeSet(f) | sp::UpdateTableFromKind::AfterSet(f)) =
            &u.from
        {
            scope.extend(self.from(f, &mut conditions));
        }
        self.scopes.push(scope);
        for c in conditions {
            let src = self.expr(c);
            self.predicates.extend(src);
        }
        for a in &u.assignments {
            let src = self.expr(&a.value);
            self.written.extend(src);
        }
        if let Some(w) = &u.selection {
            let src = self.expr(w);
            self.predicates.extend(src);
        }
        for o in &u.order_by {
            let src = self.expr(&o.expr);
            self.predicates.extend(src);
        }
        let out = self.returning(u.returning.as_deref());
        self.scopes.pop();
        let w = u.selection.is_some();
        self.has_where = Some(self.has_where.unwrap_or(true) && w);
        out
    }

    fn delete(&mut self, d: &sp::Delete) -> Vec<Col> {
        self.dml.push(K::Delete);
        let mut conditions = Vec::new();
        let (sp::FromTable::WithFromKeyword(f) | sp::FromTable::WithoutKeyword(f)) = &d.from;
        let mut scope = self.from(f, &mut conditions);
        if let Some(using) = &d.using {
            scope.extend(self.from(using, &mut conditions));
        }
        for t in &d.tables {
            self.relation(t);
        }
        self.scopes.push(scope);
        for c in conditions {
            let src = self.expr(c);
            self.predicates.extend(src);
        }
        if let Some(w) = &d.selection {
            let src = self.expr(w);
            self.predicates.extend(src);
        }
        for o in &d.order_by {
            let src = self.expr(&o.expr);
            self.predicates.extend(src);
        }
        let out = self.returning(d.returning.as_deref());
        self.scopes.pop();
        let w = d.selection.is_some();
        self.has_where = Some(self.has_where.unwrap_or(true) && w);
        out
    }
}

/// Two column lists of the same query position (a set operation's arms,
/// a recursive CTE's rounds): column by column when they line up, else
/// one star of everything.
fn union(l: Vec<Col>, r: Vec<Col>) -> Vec<Col> {
    let stars = l
        .iter()
        .chain(&r)
        .any(|(_, o)| matches!(o, Output::Star(_)));
    if l.len() == r.len() && !stars {
        return l
            .into_iter()
            .zip(r)
            .map(|((n, a), (_, b))| {
                let mut s = sources(a);
                for x in sources(b) {
                    if !s.contains(&x) {
                        s.push(x);
                    }
                }
                (n, Output::Column(s))
            })
            .collect();
    }
    let all: Vec<Source> = dedup(
        l.into_iter()
            .chain(r)
            .flat_map(|(_, o)| sources(o))
            .collect(),
    );
    vec![(None, Output::Star(all))]
}

fn merge(old: &[Col], new: Vec<Col>) -> Vec<Col> {
    if old.is_empty() {
        return new;
    }
    union(old.to_vec(), new)
}

fn name_parts(n: &ObjectName) -> Vec<String> {
    n.0.iter()
        .map(|p| match p {
            sp::ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn relation(n: &ObjectName) -> Relation {
    let mut parts = name_parts(n);
    let name = parts.pop().unwrap_or_default();
    Relation {
        schema: parts.pop(),
        name,
    }
}

fn function_name(n: &ObjectName) -> String {
    name_parts(n).join(".").to_lowercase()
}

/// Everything under a node: column references, calls (and the
/// function-like expressions sqlparser gives nodes of their own), relations.
#[derive(Default)]
struct Everything {
    columns: Vec<Vec<String>>,
    functions: Vec<String>,
    relations: Vec<ObjectName>,
}

impl Visitor for Everything {
    type Break = ();

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.relations.push(r.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let f = match e {
            Expr::Identifier(i) => {
                self.columns.push(vec![i.value.clone()]);
                None
            }
            Expr::CompoundIdentifier(p) => {
                self.columns
                    .push(p.iter().map(|i| i.value.clone()).collect());
                None
            }
            Expr::Function(f) => Some(function_name(&f.name)),
            Expr::Cast { .. } => Some("cast".to_string()),
            Expr::Convert { .. } => Some("convert".to_string()),
            Expr::Substring { .. } => Some("substring".to_string()),
            Expr::Trim { .. } => Some("trim".to_string()),
            Expr::Extract { .. } => Some("extract".to_string()),
            Expr::Position { .. } => Some("position".to_string()),
            Expr::Overlay { .. } => Some("overlay".to_string()),
            Expr::Ceil { .. } => Some("ceil".to_string()),
            Expr::Floor { .. } => Some("floor".to_string()),
            _ => None,
        };
        if let Some(f) = f
            && !self.functions.contains(&f)
        {
            self.functions.push(f);
        }
        ControlFlow::Continue(())
    }
}

/// The columns of `target` a WHERE clause pins: `col = value` (a literal,
/// not a float, or `?`) joined by AND at the top.
fn pins(target: &str, relation: Relation, selection: Option<&Expr>) -> Option<Box<Pinned>> {
    let mut columns = Vec::new();
    let mut pending = vec![selection?];
    while let Some(e) = pending.pop() {
        match e {
            Expr::Nested(e) => pending.push(e),
            Expr::BinaryOp {
                left,
                op: sp::BinaryOperator::And,
                right,
            } => {
                pending.push(left);
                pending.push(right);
            }
            Expr::BinaryOp {
                left,
                op: sp::BinaryOperator::Eq,
                right,
            } => {
                let col = match (column_of(left, target), column_of(right, target)) {
                    (Some(c), None) if is_value(right) => c,
                    (None, Some(c)) if is_value(left) => c,
                    _ => continue,
                };
                if !columns.contains(&col) {
                    columns.push(col);
                }
            }
            _ => {}
        }
    }
    Some(Box::new(Pinned { relation, columns }))
}

fn column_of(e: &Expr, target: &str) -> Option<String> {
    match e {
        Expr::Identifier(i) if !i.value.starts_with('@') => Some(i.value.to_lowercase()),
        Expr::CompoundIdentifier(p) => match &p[..] {
            [t, c] if t.value.eq_ignore_ascii_case(target) => Some(c.value.to_lowercase()),
            _ => None,
        },
        _ => None,
    }
}

/// One value: a literal that is not a floating-point number, or `?`.
fn is_value(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            sp::Value::Number(n, _) => n.bytes().all(|b| b.is_ascii_digit()),
            sp::Value::SingleQuotedString(_) | sp::Value::Placeholder(_) => true,
            _ => false,
        },
        _ => false,
    }
}

fn pinned_update(u: &sp::Update) -> Option<Box<Pinned>> {
    if !u.table.joins.is_empty() || u.from.is_some() {
        return None;
    }
    let TableFactor::Table { name, alias, .. } = &u.table.relation else {
        return None;
    };
    let rel = relation(name);
    let target = alias
        .as_ref()
        .map_or(rel.name.clone(), |a| a.name.value.clone());
    pins(&target, rel, u.selection.as_ref())
}

fn pinned_delete(d: &sp::Delete) -> Option<Box<Pinned>> {
    let (sp::FromTable::WithFromKeyword(f) | sp::FromTable::WithoutKeyword(f)) = &d.from;
    if !d.tables.is_empty() || d.using.is_some() || f.len() != 1 || !f[0].joins.is_empty() {
        return None;
    }
    let TableFactor::Table { name, alias, .. } = &f[0].relation else {
        return None;
    };
    let rel = relation(name);
    let target = alias
        .as_ref()
        .map_or(rel.name.clone(), |a| a.name.value.clone());
    pins(&target, rel, d.selection.as_ref())
}
