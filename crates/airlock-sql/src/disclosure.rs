//! What a PostgreSQL statement's result can show of the data
//! ([`Disclosure`]), for schema-only access rules, and the rewrite that
//! makes an aggregate's groups hold at least `k` rows ([`at_least`]).
//!
//! A statement shows no individual row value when it reads only the system
//! catalog, or when it is a plain aggregate over one table: its outputs are
//! `count`, `sum`, `avg`, `stddev` or `variance` of plain columns (or
//! arithmetic on them), or columns it groups by, and the door adds
//! `HAVING count(*) >= k`. Everything else is [`Disclosure::Rows`], with
//! why: joins, subqueries in FROM, CTEs and set operations can pad a
//! single row to `k`; `min`, `max`, `string_agg` and window functions
//! return a row's own value; a function airlock does not know as a
//! built-in may read anything. The catalog views that quote data
//! (`pg_stats`, `pg_stat_activity`…) are not catalog here.

use airlock_policy::statement::Disclosure;
use airlock_policy::{Relation, StatementKind};
use pg_query::protobuf::{self, Node, node::Node as N};

use crate::pg::matches;
use crate::walk::Facts;

/// Catalog relations that quote table data or other sessions' statements
/// (matched on the name, whatever the schema).
const DATA_CATALOG: &[&str] = &[
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_stat_activity",
    "pg_stat_statements*",
    "pg_largeobject",
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
    "user_mapping_options",
    "pg_subscription",
    "pg_settings",
    "pg_db_role_setting",
    "pg_file_settings",
    // Advisory lock keys another query set.
    "pg_locks",
];

/// Built-in functions that read data, files or other sessions' statements,
/// or run SQL text: refused even when written `pg_catalog.`-qualified.
const DATA_FUNCTIONS: &[&str] = &[
    "lo_get",
    "loread",
    "lo_export",
    "lo_import",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_*",
    "pg_stat_file",
    "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
    "pg_stat_statements*",
    "query_to_xml*",
    "query_to_xmlschema",
    "table_to_xml*",
    "cursor_to_xml*",
    "schema_to_xml*",
    "database_to_xml*",
    "ts_stat",
    "ts_rewrite",
    "dblink*",
    "pg_logical_slot_*",
    "set_config",
    "current_setting",
    "pg_show_all_settings",
    "pg_show_all_file_settings",
    "pg_hba_file_rules",
    "pg_stat_get_*",
    // A delay is a channel: `pg_sleep(salary / 1000)`.
    "pg_sleep*",
];

/// Built-in functions a schema-only statement may call unqualified: the
/// catalog helpers of psql, drivers and ORMs, aggregates, and common
/// scalar functions. Any other function must be written
/// `pg_catalog.name` (a user cannot create functions there), since an
/// unqualified name may be a user's function, which may read anything.
const KNOWN_BUILT_INS: &[&str] = &[
    // Catalog helpers.
    "format_type",
    "pg_get_*",
    "pg_*_is_visible",
    "has_*_privilege",
    "pg_has_role",
    "obj_description",
    "col_description",
    "shobj_description",
    "pg_size_pretty",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_encoding_to_char",
    "pg_relation_is_updatable",
    "pg_column_is_updatable",
    "pg_backend_pid",
    "pg_postmaster_start_time",
    "pg_is_in_recovery",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regprocedure",
    "to_regnamespace",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_user",
    "session_user",
    "version",
    "quote_ident",
    "quote_literal",
    "generate_series",
    "generate_subscripts",
    "unnest",
    "array_*",
    "row_number",
    "string_agg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    // And SAFE_AGGREGATES. Scalars:
    "lower",
    "upper",
    "length",
    "char_length",
    "octet_length",
    "btrim",
    "ltrim",
    "rtrim",
    "substring",
    "substr",
    "position",
    "replace",
    "concat",
    "concat_ws",
    "left",
    "right",
    "split_part",
    "regexp_replace",
    "date_trunc",
    "date_part",
    "extract",
    "now",
    "age",
    "abs",
    "round",
    "trunc",
    "ceil",
    "ceiling",
    "floor",
    "sqrt",
    "power",
    "ln",
    "log",
    "exp",
    "sign",
    "mod",
    "greatest",
    "least",
];

/// Aggregates whose value over `k` rows is not one row's value.
const SAFE_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
];

/// Scalar functions an aggregate's result may go through.
const SAFE_SCALARS: &[&str] = &[
    "round", "trunc", "ceil", "ceiling", "floor", "abs", "sqrt", "sign",
];

/// The disclosure of one analyzed statement. `node` is its parse tree;
/// `returns_rows` whether its lineage has outputs (a DML's RETURNING).
pub(crate) fn of(
    node: &N,
    kind: StatementKind,
    facts: &Facts,
    explain_analyze: bool,
    returns_rows: bool,
) -> Disclosure {
    use StatementKind as K;
    if let Some(f) = facts.functions.iter().find(|f| !known_function(f)) {
        return Disclosure::Rows(if data_function(f) {
            "it calls a function that reads data, files or SQL text"
        } else {
            "it calls a function airlock does not know as a built-in that reads no data (write built-ins as pg_catalog.name)"
        });
    }
    if let N::VariableShowStmt(v) = node
        && (v.name.contains('.') || v.name.eq_ignore_ascii_case("all"))
    {
        return Disclosure::Rows(
            "custom settings can hold secrets (SHOW a built-in setting by name)",
        );
    }
    match kind {
        K::Select => select(node, facts),
        K::Explain if explain_analyze => Disclosure::Rows("EXPLAIN ANALYZE runs the statement"),
        K::Insert | K::Update | K::Delete | K::Merge if returns_rows => {
            Disclosure::Rows("RETURNING returns the rows")
        }
        K::Explain
        | K::Insert
        | K::Update
        | K::Delete
        | K::Merge
        | K::Empty
        | K::Transaction
        | K::SetConfig
        | K::Show
        | K::Deallocate
        | K::Ddl
        | K::Truncate
        | K::Grant
        | K::SetRole
        | K::Lock
        | K::Maintenance
        | K::Notify
        | K::CopyIn => Disclosure::Nothing,
        K::CopyOut => Disclosure::Rows("COPY … TO sends the rows"),
        K::Listen => Disclosure::Rows("notifications carry other sessions' data"),
        K::Prepare | K::Execute | K::Cursor => Disclosure::Rows(
            "SQL prepared statements and cursors are not available in schema-only mode",
        ),
        K::Call | K::Do => Disclosure::Rows("a procedure or DO block may return anything"),
        K::LoadData | K::Handler | K::Kill | K::Unknown => {
            Disclosure::Rows("the statement is not understood")
        }
    }
}

/// Whether `name` (as written, lower case, dot-joined) is a built-in that
/// reads no data.
fn known_function(name: &str) -> bool {
    if data_function(name) {
        return false;
    }
    match name.rsplit_once('.') {
        Some(("pg_catalog", _)) => true,
        Some(_) => false,
        None => matches(KNOWN_BUILT_INS, name) || matches(SAFE_AGGREGATES, name),
    }
}

fn data_function(name: &str) -> bool {
    matches(DATA_FUNCTIONS, name.rsplit('.').next().unwrap_or(name))
}

/// A system catalog relation that quotes no data. An unqualified `pg_…`
/// name is taken as the catalog's (which PostgreSQL searches first).
fn catalog_relation(r: &Relation) -> bool {
    let catalog = match r.schema.as_deref() {
        Some(s) => s == "pg_catalog" || s == "information_schema",
        None => r.name.starts_with("pg_"),
    };
    catalog && !matches(DATA_CATALOG, &r.name)
}

fn select(node: &N, facts: &Facts) -> Disclosure {
    // A CTE named like a table hides that table from `relations`.
    if facts.with {
        return Disclosure::Rows("WITH queries can hide a table and pad a group");
    }
    if facts.relations.iter().all(catalog_relation) {
        return Disclosure::Catalog;
    }
    let N::SelectStmt(s) = node else {
        return Disclosure::Rows("the query is not a plain SELECT");
    };
    // `LIMIT 0` returns a result's columns and no row (what MCP's
    // describe_table and ORMs ask); the executor runs nothing under it.
    // (The shape cache keeps a zero apart from other numbers.)
    if let Some(N::AConst(c)) = s.limit_count.as_deref().and_then(|n| n.node.as_ref())
        && matches!(&c.val, Some(protobuf::a_const::Val::Ival(i)) if i.ival == 0)
        && s.locking_clause.is_empty()
        && s.into_clause.is_none()
    {
        return Disclosure::Nothing;
    }
    if facts.sublinks {
        return Disclosure::Rows(
            "a sub-select can read any row (in WHERE, HAVING, ORDER BY or LIMIT as well)",
        );
    }
    match aggregate_form(s) {
        Ok(()) => Disclosure::Aggregates,
        Err(why) => Disclosure::Rows(why),
    }
}

/// Whether `s` is an aggregate over one table: why not, if it is not.
fn aggregate_form(s: &protobuf::SelectStmt) -> Result<(), &'static str> {
    if s.op != protobuf::SetOperation::SetopNone as i32 {
        return Err("set operations (UNION, INTERSECT, EXCEPT) can pad a group");
    }
    if s.with_clause.is_some() {
        return Err("WITH queries can pad a group");
    }
    if !s.values_lists.is_empty() {
        return Err("VALUES returns its rows");
    }
    if !s.window_clause.is_empty() {
        return Err("window functions return rows' own values");
    }
    if !s.distinct_clause.is_empty() {
        return Err("DISTINCT returns rows' own values");
    }
    if s.into_clause.is_some() || !s.locking_clause.is_empty() {
        return Err("SELECT INTO and FOR UPDATE are not reads");
    }
    match s.from_clause.as_slice() {
        [one] if matches!(one.node, Some(N::RangeVar(_))) => {}
        [] => return Err("a query without FROM is not an aggregate over a table"),
        [_] => {
            return Err(
                "only a table may be aggregated: subqueries, functions and joins in FROM can pad a group",
            );
        }
        _ => return Err("only one table may be aggregated: a join can pad a group"),
    }
    if s.group_distinct {
        return Err("GROUP BY DISTINCT is not supported in schema-only mode");
    }
    let mut groups = Vec::new();
    for g in &s.group_clause {
        match &g.node {
            Some(N::ColumnRef(c)) if !c.fields.iter().any(is_star) => groups.push(&c.fields),
            _ => {
                return Err(
                    "only plain columns may be grouped by (no expressions, ROLLUP, CUBE or GROUPING SETS)",
                );
            }
        }
    }
    if s.target_list.is_empty() {
        return Err("the query returns nothing to aggregate");
    }
    for t in &s.target_list {
        let Some(N::ResTarget(t)) = &t.node else {
            return Err("the target list is not understood");
        };
        match t.val.as_deref() {
            Some(v) => output(v, &groups)?,
            None => return Err(OUTPUTS),
        }
    }
    Ok(())
}

const OUTPUTS: &str = "each output must be count, sum, avg, stddev or variance of plain columns, arithmetic on them, or a grouped column";

fn is_star(node: &Node) -> bool {
    matches!(node.node, Some(N::AStar(_)))
}

/// Whether an output expression shows no single row's value: why not.
fn output(node: &Node, groups: &[&Vec<Node>]) -> Result<(), &'static str> {
    let all = |nodes: &[Node]| nodes.iter().try_for_each(|n| output(n, groups));
    let opt = |n: &Option<Box<Node>>| n.as_deref().map_or(Ok(()), |n| output(n, groups));
    match &node.node {
        Some(N::AConst(_)) => Ok(()),
        Some(N::TypeCast(c)) => opt(&c.arg),
        Some(N::AExpr(e)) => opt(&e.lexpr).and(opt(&e.rexpr)),
        Some(N::CoalesceExpr(c)) => all(&c.args),
        Some(N::NullTest(n)) => opt(&n.arg),
        Some(N::ColumnRef(c)) if groups.iter().any(|g| **g == c.fields) => Ok(()),
        Some(N::ColumnRef(_)) => {
            Err("a column outside an aggregate (and not grouped by) shows each row's value")
        }
        Some(N::FuncCall(f)) => {
            let name = name_of(&f.funcname);
            if f.over.is_some() {
                Err("window functions return rows' own values")
            } else if matches(SAFE_AGGREGATES, name) {
                if f.agg_filter.is_some() || f.agg_within_group {
                    Err("FILTER and WITHIN GROUP can single out a row")
                } else if f.agg_distinct && name != "count" {
                    Err("DISTINCT inside sum, avg, stddev or variance can single out a row")
                } else if !f.args.iter().all(plain) {
                    Err(
                        "an aggregate's arguments must be plain columns or constants (CASE can single out a row)",
                    )
                } else {
                    Ok(())
                }
            } else if matches(SAFE_SCALARS, name) {
                all(&f.args)
            } else {
                Err(
                    "only count, sum, avg, stddev and variance aggregate without showing a row (min, max, string_agg and array_agg return rows' own values)",
                )
            }
        }
        _ => Err(OUTPUTS),
    }
}

/// An aggregate's argument: a column, a constant, or a cast of one.
fn plain(node: &Node) -> bool {
    match &node.node {
        Some(N::ColumnRef(c)) => !c.fields.iter().any(is_star),
        Some(N::AConst(_)) => true,
        Some(N::TypeCast(c)) => c.arg.as_deref().is_some_and(plain),
        _ => false,
    }
}

/// A function's unqualified name, when it is unqualified or
/// `pg_catalog.`-qualified (otherwise empty: it matches nothing).
fn name_of(parts: &[Node]) -> &str {
    let names: Vec<&str> = parts
        .iter()
        .filter_map(|p| match &p.node {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [name] | ["pg_catalog", name] => name,
        _ => "",
    }
}

/// The text with `HAVING pg_catalog.count(*) >= k` added to each of its
/// statements of the aggregate form (ANDed with its own HAVING), and
/// `pg_catalog.count(x) >= k` for each value `x` a `sum`, `avg`, `stddev`
/// or `variance` aggregates (NULLs are left out of those: `k - 1` rows of
/// NULL must not make one row's value a group's), so that no aggregate of
/// fewer than `k` rows is returned. Every other statement is kept as it
/// parses. Errs when the text does not parse or deparse, or when the
/// rewritten text is not judged as the original was.
///
/// Rewrites are kept per thread by text and `k` (a prepared statement's
/// Parse, a query sent again): parsing, deparsing and the second analysis
/// cost about as much as the statement's own run through the gateway.
pub fn at_least(sql: &str, k: u32) -> Result<String, String> {
    const KEPT: usize = 512;
    thread_local! {
        /// Text → the `k` it was rewritten for, and the rewrite.
        static REWRITES: std::cell::RefCell<Rewrites> = Default::default();
    }
    let hit = REWRITES.with_borrow(|r| {
        r.get(sql)
            .filter(|(kept, _)| *kept == k)
            .map(|(_, rewritten)| rewritten.clone())
    });
    if let Some(hit) = hit {
        return hit;
    }
    let rewritten = rewrite(sql, k);
    if sql.len() <= 4096 {
        REWRITES.with_borrow_mut(|r| {
            if r.len() >= KEPT {
                r.clear();
            }
            r.insert(sql.to_string(), (k, rewritten.clone()));
        });
    }
    rewritten
}

type Rewrites = std::collections::HashMap<String, (u32, Result<String, String>)>;

fn rewrite(sql: &str, k: u32) -> Result<String, String> {
    let mut parsed = pg_query::parse(sql).map_err(|e| e.to_string())?;
    for raw in &mut parsed.protobuf.stmts {
        let Some(N::SelectStmt(s)) = raw.stmt.as_mut().and_then(|s| s.node.as_mut()) else {
            continue;
        };
        if aggregate_form(s).is_err() {
            continue;
        }
        let mut counted: Vec<Node> = Vec::new();
        for t in &s.target_list {
            if let Some(N::ResTarget(t)) = &t.node
                && let Some(v) = t.val.as_deref()
            {
                aggregated(v, &mut counted);
            }
        }
        let mut floors = vec![at_least_rows(count(Vec::new(), true), k)];
        floors.extend(
            counted
                .into_iter()
                .map(|x| at_least_rows(count(vec![x], false), k)),
        );
        if let Some(own) = s.having_clause.take() {
            floors.insert(0, *own);
        }
        s.having_clause = Some(Box::new(if floors.len() == 1 {
            floors.remove(0)
        } else {
            Node {
                node: Some(N::BoolExpr(Box::new(protobuf::BoolExpr {
                    boolop: protobuf::BoolExprType::AndExpr as i32,
                    args: floors,
                    ..Default::default()
                }))),
            }
        }));
    }
    let rewritten = pg_query::deparse(&parsed.protobuf).map_err(|e| e.to_string())?;
    // What runs must be judged as what was sent: the same statements,
    // relations and disclosures (which no analyzer setting changes).
    thread_local! {
        static ANALYZER: crate::pg::Analyzer = crate::pg::Analyzer::new(&[]);
    }
    let same = |a: &airlock_policy::Statement, b: &airlock_policy::Statement| {
        a.kind == b.kind && a.relations == b.relations && a.disclosure == b.disclosure
    };
    let (before, after) = ANALYZER.with(|a| (a.analyze(sql), a.analyze(&rewritten)));
    if before.len() != after.len() || before.iter().zip(&after).any(|(a, b)| !same(a, b)) {
        return Err("the rewritten text is not judged as the original".into());
    }
    Ok(rewritten)
}

/// The values `sum`, `avg`, `stddev` and `variance` calls in `node`
/// aggregate, without duplicates.
fn aggregated(node: &Node, out: &mut Vec<Node>) {
    match &node.node {
        Some(N::FuncCall(f)) if matches(SAFE_AGGREGATES, name_of(&f.funcname)) => {
            if name_of(&f.funcname) == "count" {
                return;
            }
            for a in &f.args {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        Some(N::FuncCall(f)) => f.args.iter().for_each(|a| aggregated(a, out)),
        Some(N::TypeCast(c)) => c.arg.iter().for_each(|a| aggregated(a, out)),
        Some(N::AExpr(e)) => e
            .lexpr
            .iter()
            .chain(&e.rexpr)
            .for_each(|a| aggregated(a, out)),
        Some(N::CoalesceExpr(c)) => c.args.iter().for_each(|a| aggregated(a, out)),
        Some(N::NullTest(n)) => n.arg.iter().for_each(|a| aggregated(a, out)),
        _ => {}
    }
}

/// `pg_catalog.count(args)` (`count(*)` when `star`).
fn count(args: Vec<Node>, star: bool) -> Node {
    Node {
        node: Some(N::FuncCall(Box::new(protobuf::FuncCall {
            funcname: vec![string("pg_catalog"), string("count")],
            args,
            agg_star: star,
            funcformat: protobuf::CoercionForm::CoerceExplicitCall as i32,
            ..Default::default()
        }))),
    }
}

/// `counted >= k`.
fn at_least_rows(counted: Node, k: u32) -> Node {
    Node {
        node: Some(N::AExpr(Box::new(protobuf::AExpr {
            kind: protobuf::AExprKind::AexprOp as i32,
            name: vec![string(">=")],
            lexpr: Some(Box::new(counted)),
            rexpr: Some(Box::new(Node {
                node: Some(N::AConst(protobuf::AConst {
                    val: Some(protobuf::a_const::Val::Ival(protobuf::Integer {
                        ival: i32::try_from(k).unwrap_or(i32::MAX),
                    })),
                    ..Default::default()
                })),
            })),
            location: -1,
        }))),
    }
}

fn string(s: &str) -> Node {
    Node {
        node: Some(N::String(protobuf::String { sval: s.into() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Analyzer;

    fn disclosure(sql: &str) -> Disclosure {
        let statements = Analyzer::new(&[]).analyze(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        statements[0].disclosure
    }

    #[test]
    fn the_catalog_and_statements_without_data_pass() {
        for sql in [
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'",
            // psql's \d customers, abridged.
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(customers)$' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a WHERE a.attrelid = '16384' AND a.attnum > 0",
            "SELECT count(*) FROM pg_class",
            "SELECT 1",
            "SELECT version(), current_database()",
            "SELECT pg_catalog.pg_get_viewdef('v'::regclass)",
        ] {
            assert_eq!(disclosure(sql), Disclosure::Catalog, "{sql}");
        }
        for sql in [
            "SHOW search_path",
            "SET search_path = public",
            "BEGIN",
            "EXPLAIN SELECT * FROM customers WHERE ssn = '1'",
            "EXPLAIN (FORMAT JSON) SELECT ssn FROM customers",
            // Columns, no row.
            "SELECT * FROM customers LIMIT 0",
            "SELECT ssn FROM customers WHERE id = 5 LIMIT 0",
            ";",
        ] {
            assert_eq!(disclosure(sql), Disclosure::Nothing, "{sql}");
        }
    }

    #[test]
    fn aggregates_over_one_table_pass() {
        for sql in [
            "SELECT count(*) FROM customers",
            "SELECT count(DISTINCT email), avg(total) FROM orders WHERE total > 10",
            "SELECT status, count(*), sum(total) FROM orders GROUP BY status ORDER BY 2 DESC LIMIT 5",
            "SELECT round(avg(total)::numeric, 2) AS mean, stddev(total) FROM public.orders",
            "SELECT count(*) FROM customers WHERE ssn = $1",
            "SELECT count(*) * 2 + 1 FROM customers",
            // Groups of one row are left out by the rewrite: nothing shows.
            "SELECT ssn, count(*) FROM customers GROUP BY ssn HAVING count(*) >= 1",
            "SELECT avg(salary) FROM employees WHERE id = 5 LIMIT 1",
        ] {
            assert_eq!(disclosure(sql), Disclosure::Aggregates, "{sql}");
        }
    }

    #[test]
    fn what_shows_a_row_is_refused_with_why() {
        for (sql, why) in [
            ("SELECT * FROM customers", "outside an aggregate"),
            ("SELECT ssn FROM customers LIMIT 1", "outside an aggregate"),
            ("SELECT min(ssn) FROM customers", "min, max"),
            ("SELECT max(salary) FROM employees", "min, max"),
            ("SELECT string_agg(ssn, ',') FROM customers", "string_agg"),
            ("SELECT array_agg(ssn) FROM customers", "array_agg"),
            (
                "SELECT count(*) FILTER (WHERE ssn = '1') FROM customers",
                "FILTER",
            ),
            (
                "SELECT sum(CASE WHEN ssn = '1' THEN 1 ELSE 0 END) FROM customers",
                "CASE",
            ),
            ("SELECT count(*) OVER () FROM customers", "window"),
            (
                "SELECT ssn, row_number() OVER () FROM customers",
                "outside an aggregate",
            ),
            (
                "SELECT count(*) OVER w FROM customers WINDOW w AS ()",
                "window",
            ),
            (
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY salary) FROM employees",
                "function",
            ),
            (
                "SELECT lower(ssn), count(*) FROM customers GROUP BY lower(ssn)",
                "plain columns",
            ),
            (
                "SELECT count(*) FROM customers GROUP BY ROLLUP (ssn)",
                "plain columns",
            ),
            (
                "SELECT DISTINCT ON (ssn) count(*) FROM customers GROUP BY ssn",
                "DISTINCT",
            ),
            (
                "SELECT avg(x) FROM (SELECT salary AS x FROM employees WHERE id = 1) s",
                "FROM",
            ),
            (
                "SELECT avg(e.salary) FROM employees e, orders o WHERE e.id = 1",
                "join",
            ),
            (
                "SELECT avg(e.salary) FROM employees e JOIN orders o ON true WHERE e.id = 1",
                "FROM",
            ),
            (
                "SELECT sum(x) FROM generate_series(1, 10) x, employees",
                "join",
            ),
            (
                "WITH x AS (SELECT ssn FROM customers) SELECT count(*) FROM x",
                "WITH",
            ),
            (
                "SELECT count(*) FROM customers UNION ALL SELECT salary FROM employees",
                "set operations",
            ),
            (
                "SELECT count(*) FROM customers TABLESAMPLE SYSTEM (1)",
                "FROM",
            ),
            ("SELECT (SELECT ssn FROM customers LIMIT 1)", "sub-select"),
            ("SELECT * FROM pg_stats", "outside an aggregate"),
            (
                "SELECT most_common_vals FROM pg_catalog.pg_stats",
                "outside an aggregate",
            ),
            ("SELECT query FROM pg_stat_activity", "outside an aggregate"),
            ("SELECT leak(5)", "function"),
            ("SELECT public.count(*) FROM customers", "function"),
            ("SELECT pg_catalog.lo_get(16400)", "reads data"),
            (
                "SELECT query_to_xml('SELECT ssn FROM customers', true, true, '')",
                "reads data",
            ),
            ("SELECT current_setting('app.secret')", "reads data"),
            ("EXPLAIN ANALYZE SELECT count(*) FROM customers", "ANALYZE"),
            ("COPY customers TO STDOUT", "COPY"),
            (
                "DECLARE c CURSOR FOR SELECT count(*) FROM customers",
                "cursors",
            ),
            ("PREPARE p AS SELECT count(*) FROM customers", "prepared"),
            (
                "DELETE FROM customers WHERE id = 1 RETURNING ssn",
                "RETURNING",
            ),
            ("DO $$ BEGIN RAISE NOTICE 'x'; END $$", "DO"),
            ("LISTEN leaks", "notifications"),
            ("SELECT * FROM customers WHERE (", "not understood"),
            // A CTE named like a table hides it; one anywhere counts.
            (
                "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
                "WITH",
            ),
            (
                "SELECT * FROM customers WHERE EXISTS (WITH customers AS (SELECT 1) SELECT 1)",
                "WITH",
            ),
            // Sub-selects in WHERE read rows one query at a time.
            (
                "SELECT count(*) FROM orders WHERE id <= (SELECT salary FROM employees WHERE name = 'CEO')",
                "sub-select",
            ),
            (
                "SELECT count(*) FROM employees WHERE id <= (SELECT max(salary) FROM employees)",
                "sub-select",
            ),
            (
                "SELECT relname FROM pg_class WHERE EXISTS (SELECT 1 FROM customers WHERE ssn = '1')",
                "sub-select",
            ),
            ("SELECT sum(DISTINCT salary) FROM employees", "DISTINCT"),
            ("SHOW app.tenant_key", "custom settings"),
            ("SHOW ALL", "custom settings"),
            ("SELECT * FROM customers LIMIT 1", "outside an aggregate"),
            ("SELECT * FROM customers LIMIT $1", "outside an aggregate"),
            (
                "SELECT name, setting FROM pg_catalog.pg_settings",
                "outside an aggregate",
            ),
        ] {
            match disclosure(sql) {
                Disclosure::Rows(reason) => assert!(reason.contains(why), "{sql}: {reason}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn limit_zero_is_not_shared_with_texts_of_its_shape() {
        let analyzer = Analyzer::new(&[]);
        let of = |sql: &str| crate::cache::analyze(&analyzer, sql).statements[0].disclosure;
        assert_eq!(of("SELECT * FROM customers LIMIT 0"), Disclosure::Nothing);
        assert!(matches!(
            of("SELECT * FROM customers LIMIT 1"),
            Disclosure::Rows(_)
        ));
        // Texts of the LIMIT 1 text's shape and of the LIMIT 0 one's (the
        // shape collapses whitespace): each keeps its own answer.
        assert!(matches!(
            of("SELECT * FROM customers  LIMIT 2"),
            Disclosure::Rows(_)
        ));
        assert_eq!(of("SELECT * FROM customers  LIMIT 00"), Disclosure::Nothing);
        assert_eq!(of("SELECT  * FROM customers LIMIT 0"), Disclosure::Nothing);
    }

    #[test]
    fn the_rewrite_adds_the_floor_to_aggregates_only() {
        let sql = at_least("SELECT count(*) FROM customers WHERE ssn = $1", 10).unwrap();
        assert_eq!(
            sql,
            "SELECT count(*) FROM customers WHERE ssn = $1 HAVING pg_catalog.count(*) >= 10"
        );
        let sql = at_least(
            "SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 1 ORDER BY 2",
            25,
        )
        .unwrap();
        assert!(
            sql.contains("HAVING count(*) > 1 AND pg_catalog.count(*) >= 25 ORDER BY 2"),
            "{sql}"
        );
        // Each statement of a message; the catalog's are left as they are.
        let sql = at_least(
            "SELECT relname FROM pg_class; SELECT sum(total) FROM orders",
            3,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT relname FROM pg_class; SELECT sum(total) FROM orders HAVING pg_catalog.count(*) >= 3 AND pg_catalog.count(total) >= 3"
        );
        // Each aggregated value's own count: NULLs are not counted by avg.
        let sql = at_least(
            "SELECT round(avg(salary)), stddev(bonus::numeric), count(x) FROM employees WHERE id = 5 OR salary IS NULL",
            10,
        )
        .unwrap();
        assert!(
            sql.ends_with("HAVING pg_catalog.count(*) >= 10 AND pg_catalog.count(salary) >= 10 AND pg_catalog.count(bonus::numeric) >= 10"),
            "{sql}"
        );
        // What does not parse is not rewritten.
        assert!(at_least("SELECT count(*) FROM", 3).is_err());
        // The rewritten text is of the same form, and passes again.
        let again = Analyzer::new(&[]).analyze(&at_least("SELECT count(*) FROM t", 10).unwrap());
        assert_eq!(again[0].disclosure, Disclosure::Aggregates);
    }
}
