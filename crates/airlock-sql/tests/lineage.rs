//! The PostgreSQL analyzer's lineage: where each result column, predicate
//! and written value comes from, asserted exactly.
//!
//! Sources are written compactly (see [`src`]): `customers.ssn` is a column,
//! `customers.*` a whole row, `upper()` a function call, `?` opaque, and
//! `@c.ssn` a qualified reference, which is the column and also
//! `Function("ssn")` (PostgreSQL reads `c.f` as `f(c)` when `c` has no
//! column `f`: attribute notation).

use airlock_policy::Relation;
use airlock_policy::lineage::{CopyFormat, Cursor, Lineage, Output, Source};
use airlock_sql::{Analyzer, SessionState, resolve};

fn relation(name: &str) -> Relation {
    match name.split_once('.') {
        Some((schema, name)) => Relation {
            schema: Some(schema.to_string()),
            name: name.to_string(),
        },
        None => Relation {
            schema: None,
            name: name.to_string(),
        },
    }
}

/// Sources from their compact spelling.
fn src(specs: &[&str]) -> Vec<Source> {
    let mut out = Vec::new();
    for spec in specs {
        if *spec == "?" {
            out.push(Source::Opaque);
        } else if let Some(f) = spec.strip_suffix("()") {
            out.push(Source::Function(f.to_string()));
        } else if let Some(q) = spec.strip_prefix('@') {
            let (rel, column) = q.rsplit_once('.').unwrap();
            out.push(Source::Column {
                relation: relation(rel),
                column: column.to_string(),
            });
            out.push(Source::Function(column.to_string()));
        } else {
            let (rel, column) = spec.rsplit_once('.').unwrap();
            out.push(if column == "*" {
                Source::WholeRow(relation(rel))
            } else {
                Source::Column {
                    relation: relation(rel),
                    column: column.to_string(),
                }
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One result column.
fn c(specs: &[&str]) -> Output {
    Output::Column(src(specs))
}

/// A star of unknown width.
fn s(specs: &[&str]) -> Output {
    Output::Star(src(specs))
}

fn lin(outputs: Vec<Output>, predicates: &[&str], written: &[&str]) -> Lineage {
    Lineage {
        outputs,
        predicates: src(predicates),
        written: src(written),
        copy: None,
        cursor: None,
    }
}

/// The lineage of the last statement of `sql`, after `resolve`.
fn lineage(sql: &str) -> Lineage {
    let a = Analyzer::default();
    let mut stmts = resolve(&a.analyze(sql), &mut SessionState::default());
    let last = stmts.pop().unwrap();
    assert!(last.unknown_reason.is_none(), "{sql}: {last:?}");
    last.lineage
}

#[track_caller]
fn check(sql: &str, expected: Lineage) {
    assert_eq!(lineage(sql), expected, "lineage of {sql:?}");
}

/// Only the outputs, nothing else.
#[track_caller]
fn outputs(sql: &str, expected: Vec<Output>) {
    check(sql, lin(expected, &[], &[]));
}

#[test]
fn columns_and_aliases() {
    outputs("SELECT ssn FROM customers", vec![c(&["customers.ssn"])]);
    outputs(
        "SELECT ssn AS x FROM customers",
        vec![c(&["customers.ssn"])],
    );
    outputs(
        "SELECT c.ssn AS x, c.name FROM customers c",
        vec![c(&["@customers.ssn"]), c(&["@customers.name"])],
    );
    outputs(
        "SELECT customers.ssn FROM customers",
        vec![c(&["@customers.ssn"])],
    );
    outputs(
        "SELECT public.customers.ssn FROM public.customers",
        vec![c(&["@public.customers.ssn"])],
    );
    outputs(
        "SELECT c.ssn FROM public.customers AS c",
        vec![c(&["@public.customers.ssn"])],
    );
    // Quoted identifiers keep their case.
    outputs(
        r#"SELECT "SSN" FROM "Customers""#,
        vec![c(&["Customers.SSN"])],
    );
    // A constant reads nothing.
    outputs("SELECT 1, 'x', $1", vec![c(&[]), c(&[]), c(&[])]);
}

#[test]
fn computed_values() {
    outputs(
        "SELECT upper(ssn) FROM customers",
        vec![c(&["customers.ssn", "upper()"])],
    );
    outputs(
        "SELECT ssn::int, CAST(ssn AS text) FROM customers",
        vec![c(&["customers.ssn"]), c(&["customers.ssn"])],
    );
    outputs(
        "SELECT ssn || ' ' || name FROM customers",
        vec![c(&["customers.ssn", "customers.name"])],
    );
    outputs(
        "SELECT coalesce(ssn, name), greatest(a, b), nullif(ssn, '') FROM customers",
        vec![
            c(&["customers.ssn", "customers.name"]),
            c(&["customers.a", "customers.b"]),
            c(&["customers.ssn"]),
        ],
    );
    outputs(
        "SELECT ARRAY[ssn, name], ROW(ssn, 1) FROM customers",
        vec![
            c(&["customers.ssn", "customers.name"]),
            c(&["customers.ssn"]),
        ],
    );
    outputs(
        "SELECT Public.Mask(ssn) FROM customers",
        vec![c(&["customers.ssn", "public.mask()"])],
    );
    outputs(
        "SELECT substring(ssn FROM 1 FOR 3) FROM customers",
        vec![c(&["customers.ssn", "pg_catalog.substring()"])],
    );
    outputs(
        "SELECT now(), count(*) FROM t",
        vec![c(&["now()"]), c(&["count()"])],
    );
    outputs(
        "SELECT ssn[1], (data->'a')->>'b' FROM customers",
        vec![c(&["customers.ssn"]), c(&["customers.data"])],
    );
    outputs(
        "SELECT ssn COLLATE \"C\", ssn IS NULL, ssn = '1' FROM customers",
        vec![
            c(&["customers.ssn"]),
            c(&["customers.ssn"]),
            c(&["customers.ssn"]),
        ],
    );
}

#[test]
fn aggregates_and_windows() {
    check(
        "SELECT string_agg(ssn, ',' ORDER BY name) FROM customers",
        lin(
            vec![c(&["customers.ssn", "string_agg()"])],
            &["customers.name"],
            &[],
        ),
    );
    outputs(
        "SELECT array_agg(ssn), json_agg(c) FROM customers c",
        vec![
            c(&["customers.ssn", "array_agg()"]),
            c(&["customers.c", "customers.*", "json_agg()"]),
        ],
    );
    check(
        "SELECT count(*) FILTER (WHERE ssn IS NOT NULL) FROM customers",
        lin(vec![c(&["count()"])], &["customers.ssn"], &[]),
    );
    outputs(
        "SELECT mode() WITHIN GROUP (ORDER BY ssn) FROM customers",
        vec![c(&["customers.ssn", "mode()"])],
    );
    check(
        "SELECT lag(ssn) OVER (PARTITION BY region ORDER BY id) FROM customers",
        lin(
            vec![c(&["customers.ssn", "lag()"])],
            &["customers.region", "customers.id"],
            &[],
        ),
    );
    check(
        "SELECT sum(x) OVER w FROM t WINDOW w AS (PARTITION BY y)",
        lin(vec![c(&["t.x", "sum()"])], &["t.y"], &[]),
    );
}

#[test]
fn whole_rows() {
    outputs(
        "SELECT row_to_json(c) FROM customers c",
        vec![c(&["customers.c", "customers.*", "row_to_json()"])],
    );
    outputs(
        "SELECT to_jsonb(c) FROM customers c",
        vec![c(&["customers.c", "customers.*", "to_jsonb()"])],
    );
    outputs(
        "SELECT c::text FROM customers c",
        vec![c(&["customers.c", "customers.*"])],
    );
    outputs(
        "SELECT c FROM customers c",
        vec![c(&["customers.c", "customers.*"])],
    );
    outputs(
        "SELECT customers FROM customers",
        vec![c(&["customers.customers", "customers.*"])],
    );
    outputs(
        "SELECT row_to_json(c.*) FROM customers c",
        vec![c(&["customers.*", "row_to_json()"])],
    );
    // Field selection: the row's sources, and the field as a possible call.
    outputs(
        "SELECT (c).ssn FROM customers c",
        vec![c(&["customers.c", "customers.*", "ssn()"])],
    );
    outputs(
        "SELECT (c.addr).zip FROM customers c",
        vec![c(&["@customers.addr", "zip()"])],
    );
    // `(c).addr[1]` is named "addr" (not "c").
    outputs(
        "SELECT s.addr FROM (SELECT (c).addr[1] FROM customers c) s",
        vec![c(&["customers.c", "customers.*", "addr()"])],
    );
    // Attribute notation: c.fullname may be fullname(c).
    outputs(
        "SELECT c.fullname FROM customers c",
        vec![c(&["@customers.fullname"])],
    );
    // A whole row of a subquery is all of its columns.
    outputs(
        "SELECT to_json(s) FROM (SELECT ssn, name FROM customers) s",
        vec![c(&["customers.ssn", "customers.name", "to_json()"])],
    );
}

#[test]
fn stars() {
    outputs("SELECT * FROM customers", vec![s(&["customers.*"])]);
    outputs("TABLE customers", vec![s(&["customers.*"])]);
    outputs("SELECT c.* FROM customers c", vec![s(&["customers.*"])]);
    check(
        "SELECT * FROM customers c JOIN orders o ON o.cid = c.id",
        lin(
            vec![s(&["customers.*", "orders.*"])],
            &["@orders.cid", "@customers.id"],
            &[],
        ),
    );
    check(
        "SELECT o.*, c.name FROM customers c JOIN orders o USING (id)",
        lin(
            vec![s(&["orders.*"]), c(&["@customers.name"])],
            &["customers.id", "orders.id"],
            &[],
        ),
    );
    // Over a subquery or a CTE: expanded.
    outputs(
        "SELECT * FROM (SELECT ssn, name AS n FROM customers) s",
        vec![c(&["customers.ssn"]), c(&["customers.name"])],
    );
    outputs(
        "WITH x AS (SELECT ssn, 1 FROM customers) SELECT * FROM x",
        vec![c(&["customers.ssn"]), c(&[])],
    );
    outputs(
        "SELECT * FROM customers c, (SELECT total FROM orders) o",
        vec![s(&["customers.*"]), c(&["orders.total"])],
    );
    outputs(
        "SELECT s.* FROM (SELECT * FROM customers) s",
        vec![s(&["customers.*"])],
    );
    outputs(
        "SELECT (c).* FROM customers c",
        vec![s(&["customers.c", "customers.*"])],
    );
}

#[test]
fn subqueries_and_ctes() {
    outputs(
        "SELECT s.x FROM (SELECT ssn x FROM customers) s(x)",
        vec![c(&["customers.ssn"])],
    );
    outputs(
        "SELECT s.y FROM (SELECT ssn, name FROM customers) s(x, y)",
        vec![c(&["customers.name"])],
    );
    outputs(
        "SELECT x FROM (SELECT ssn AS x, name AS y FROM customers) s",
        vec![c(&["customers.ssn"])],
    );
    outputs(
        "WITH x AS (SELECT ssn a FROM customers) SELECT a FROM x",
        vec![c(&["customers.ssn"])],
    );
    outputs(
        "WITH x(a, b) AS (SELECT name, ssn FROM customers) SELECT b FROM x",
        vec![c(&["customers.ssn"])],
    );
    outputs(
        "WITH a AS (SELECT ssn FROM customers), b AS (SELECT upper(ssn) AS u FROM a) \
         SELECT b.u FROM b",
        vec![c(&["customers.ssn", "upper()"])],
    );
    // A CTE shadows a table; inside its own body the name is the table.
    outputs(
        "WITH customers AS (SELECT name FROM customers) SELECT * FROM customers",
        vec![c(&["customers.name"])],
    );
    // Unknown column names: every column.
    outputs(
        "SELECT x FROM (SELECT ssn || '' FROM customers) s",
        vec![c(&["customers.ssn"])],
    );
    // Scalar and ARRAY sub-selects are values.
    outputs(
        "SELECT (SELECT ssn FROM customers LIMIT 1), ARRAY(SELECT name FROM customers)",
        vec![c(&["customers.ssn"]), c(&["customers.name"])],
    );
    // Data-modifying CTE: its RETURNING list.
    check(
        "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING ssn) SELECT * FROM d",
        lin(vec![c(&["customers.ssn"])], &["customers.id"], &[]),
    );
    check(
        "WITH u AS (UPDATE customers SET name = 'x' RETURNING ssn AS s) SELECT s FROM u",
        lin(vec![c(&["customers.ssn"])], &[], &[]),
    );
}

#[test]
fn correlated_and_lateral() {
    check(
        "SELECT (SELECT o.total FROM orders o WHERE o.cid = c.id) FROM customers c",
        lin(
            vec![c(&["@orders.total"])],
            &["@orders.cid", "@customers.id"],
            &[],
        ),
    );
    // An unqualified name in a sub-select may be an outer column.
    outputs(
        "SELECT (SELECT ssn FROM orders LIMIT 1) FROM customers",
        vec![c(&["orders.ssn", "customers.ssn"])],
    );
    check(
        "SELECT c.name, l.total FROM customers c, \
         LATERAL (SELECT sum(o.amount) total FROM orders o WHERE o.cid = c.id) l",
        lin(
            vec![c(&["@customers.name"]), c(&["@orders.amount", "sum()"])],
            &["@orders.cid", "@customers.id"],
            &[],
        ),
    );
    outputs(
        "SELECT e FROM customers c, LATERAL unnest(c.emails) e",
        vec![c(&["@customers.emails", "customers.e", "unnest()"])],
    );
}

#[test]
fn functions_in_from() {
    outputs(
        "SELECT * FROM generate_series(1, 10) g",
        vec![s(&["generate_series()"])],
    );
    outputs(
        "SELECT g.i FROM generate_series(1, 10) AS g(i)",
        vec![c(&["generate_series()"])],
    );
    outputs(
        "SELECT x FROM unnest(ARRAY[1, 2]) AS u(x)",
        vec![c(&["unnest()"])],
    );
    outputs(
        "SELECT r.a FROM docs d, json_to_recordset(d.body) AS r(a text)",
        vec![c(&["@docs.body", "json_to_recordset()"])],
    );
    outputs(
        "SELECT * FROM ROWS FROM (unnest(ARRAY[1]), generate_series(1, 2)) WITH ORDINALITY f",
        vec![s(&["unnest()", "generate_series()"])],
    );
    // Unqualified names may come from a function's columns too.
    outputs(
        "SELECT ssn FROM customers, generate_series(1, 3) g",
        vec![c(&["customers.ssn", "generate_series()"])],
    );
    outputs(
        "SELECT jt.* FROM docs, JSON_TABLE(docs.body, '$' COLUMNS (a text PATH '$.a')) jt",
        vec![s(&["@docs.body"])],
    );
    outputs(
        "SELECT x.a FROM docs, XMLTABLE('/r' PASSING docs.body COLUMNS a text PATH 'a') x",
        vec![c(&["@docs.body"])],
    );
}

#[test]
fn set_operations_and_values() {
    outputs(
        "SELECT ssn, id FROM customers UNION SELECT name, 1 FROM employees",
        vec![
            c(&["customers.ssn", "employees.name"]),
            c(&["customers.id"]),
        ],
    );
    outputs(
        "SELECT a FROM x UNION ALL SELECT b FROM y EXCEPT SELECT c FROM z",
        vec![c(&["x.a", "y.b", "z.c"])],
    );
    // A star makes positions unknown: every column, everything.
    outputs(
        "SELECT ssn FROM customers UNION SELECT * FROM orders",
        vec![c(&["customers.ssn", "orders.*"])],
    );
    outputs(
        "SELECT * FROM customers UNION ALL SELECT ssn FROM x",
        vec![s(&["customers.*", "x.ssn"])],
    );
    outputs(
        "SELECT * FROM (SELECT ssn AS a FROM customers UNION SELECT name FROM employees) u",
        vec![c(&["customers.ssn", "employees.name"])],
    );
    outputs("VALUES (1, 'a'), (2, 'b')", vec![c(&[]), c(&[])]);
    outputs(
        "VALUES ((SELECT ssn FROM customers LIMIT 1), 1)",
        vec![c(&["customers.ssn"]), c(&[])],
    );
    outputs(
        "SELECT t.b FROM (VALUES (1, (SELECT ssn FROM customers LIMIT 1))) AS t(a, b)",
        vec![c(&["customers.ssn"])],
    );
}

#[test]
fn joins() {
    check(
        "SELECT o.id FROM customers c JOIN orders o ON o.cid = c.id AND c.ssn LIKE '1%'",
        lin(
            vec![c(&["@orders.id"])],
            &["@orders.cid", "@customers.id", "@customers.ssn"],
            &[],
        ),
    );
    check(
        "SELECT id FROM customers JOIN orders USING (id)",
        lin(
            vec![c(&["customers.id", "orders.id"])],
            &["customers.id", "orders.id"],
            &[],
        ),
    );
    // A join's alias names its columns and hides the tables'.
    check(
        "SELECT j.ssn FROM (customers JOIN orders USING (id)) AS j",
        lin(
            vec![c(&["customers.ssn", "orders.ssn", "ssn()"])],
            &["customers.id", "orders.id"],
            &[],
        ),
    );
    // Renamed columns of a relation: any of its columns.
    outputs(
        "SELECT a, x.c FROM customers AS x(a, b)",
        vec![c(&["customers.*"]), c(&["@customers.c"])],
    );
    // An ON clause sees only its join's items: `c` is the outer one.
    check(
        "SELECT (SELECT 1 FROM orders c, x JOIN y ON c.ssn = y.a) FROM customers c",
        lin(vec![c(&[])], &["@customers.ssn", "@y.a"], &[]),
    );
    check(
        "SELECT c.name FROM customers c LEFT JOIN LATERAL (SELECT 1) s ON true",
        lin(vec![c(&["@customers.name"])], &[], &[]),
    );
}

#[test]
fn predicates() {
    check(
        "SELECT id FROM customers WHERE ssn = '123'",
        lin(vec![c(&["customers.id"])], &["customers.ssn"], &[]),
    );
    check(
        "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.ssn = c.ssn)",
        lin(
            vec![c(&["customers.id"])],
            &["@orders.ssn", "@customers.ssn"],
            &[],
        ),
    );
    check(
        "SELECT id FROM customers WHERE id IN (SELECT cid FROM orders WHERE total > 10)",
        lin(
            vec![c(&["customers.id"])],
            &[
                "customers.id",
                "orders.cid",
                "customers.cid",
                "orders.total",
                "customers.total",
            ],
            &[],
        ),
    );
    check(
        "SELECT id FROM customers WHERE ssn = ANY (SELECT x FROM blocked)",
        lin(
            vec![c(&["customers.id"])],
            &["customers.ssn", "blocked.x", "customers.x"],
            &[],
        ),
    );
    check(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE ssn = '1')",
        lin(vec![c(&[])], &["customers.ssn"], &[]),
    );
    check(
        "SELECT region, count(*) FROM customers GROUP BY region HAVING max(ssn) > '5'",
        lin(
            vec![c(&["customers.region"]), c(&["count()"])],
            &["customers.region", "customers.ssn", "max()"],
            &[],
        ),
    );
    check(
        "SELECT id FROM customers ORDER BY ssn DESC LIMIT 10 OFFSET 5",
        lin(vec![c(&["customers.id"])], &["customers.ssn"], &[]),
    );
    // ORDER BY an output's name or position is that output.
    check(
        "SELECT upper(ssn) AS u FROM customers ORDER BY u",
        lin(
            vec![c(&["customers.ssn", "upper()"])],
            &["customers.ssn", "upper()", "customers.u"],
            &[],
        ),
    );
    check(
        "SELECT id, ssn FROM customers ORDER BY 2",
        lin(
            vec![c(&["customers.id"]), c(&["customers.ssn"])],
            &["customers.id", "customers.ssn"],
            &[],
        ),
    );
    check(
        "SELECT DISTINCT ON (ssn) id FROM customers",
        lin(vec![c(&["customers.id"])], &["customers.ssn"], &[]),
    );
    check(
        "SELECT CASE WHEN ssn LIKE '1%' THEN name ELSE 'x' END FROM customers",
        lin(vec![c(&["customers.name"])], &["customers.ssn"], &[]),
    );
    check(
        "SELECT CASE ssn WHEN '1' THEN 'a' END FROM customers",
        lin(vec![c(&[])], &["customers.ssn"], &[]),
    );
    check(
        "SELECT id FROM customers LIMIT (SELECT count(*) FROM orders WHERE ssn > '5')",
        lin(
            vec![c(&["customers.id"])],
            &["count()", "orders.ssn", "customers.ssn"],
            &[],
        ),
    );
    // Predicates of subqueries in FROM and of CTEs count too.
    check(
        "WITH x AS (SELECT id FROM customers WHERE ssn = '1') \
         SELECT * FROM x, (SELECT 1 FROM orders WHERE total > 5) o",
        lin(
            vec![c(&["customers.id"]), c(&[])],
            &["customers.ssn", "orders.total"],
            &[],
        ),
    );
}

#[test]
fn dml() {
    check(
        "INSERT INTO archive SELECT ssn, name FROM customers WHERE id = 1",
        lin(
            vec![],
            &["customers.id"],
            &["customers.ssn", "customers.name"],
        ),
    );
    check(
        "INSERT INTO t (a) VALUES ((SELECT ssn FROM customers LIMIT 1))",
        lin(vec![], &[], &["customers.ssn"]),
    );
    check("INSERT INTO t VALUES (1, 'x')", lin(vec![], &[], &[]));
    check(
        "INSERT INTO t (a) VALUES ('x') RETURNING id, a",
        lin(vec![c(&["t.id"]), c(&["t.a"])], &[], &[]),
    );
    check(
        "INSERT INTO t (a, b) SELECT ssn, name FROM customers \
         ON CONFLICT (a) DO UPDATE SET b = excluded.b || t.b RETURNING *",
        lin(
            vec![s(&["t.*"])],
            &[],
            &["customers.ssn", "customers.name", "@t.b"],
        ),
    );
    check(
        "UPDATE customers SET name = upper(ssn) WHERE id = 2 RETURNING id",
        lin(
            vec![c(&["customers.id"])],
            &["customers.id"],
            &["customers.ssn", "upper()"],
        ),
    );
    check(
        "UPDATE t SET a = c.ssn FROM customers c WHERE c.id = t.cid RETURNING t.a, c.name",
        lin(
            vec![c(&["@t.a"]), c(&["@customers.name"])],
            &["@customers.id", "@t.cid"],
            &["@customers.ssn"],
        ),
    );
    // The sub-select's unqualified names may be the target's columns.
    check(
        "UPDATE t SET (a, b) = (SELECT ssn, name FROM customers LIMIT 1)",
        lin(
            vec![],
            &[],
            &["customers.ssn", "customers.name", "t.ssn", "t.name"],
        ),
    );
    check(
        "DELETE FROM customers WHERE id = 1 RETURNING *",
        lin(vec![s(&["customers.*"])], &["customers.id"], &[]),
    );
    check(
        "DELETE FROM orders o USING customers c WHERE o.cid = c.id RETURNING c.ssn",
        lin(
            vec![c(&["@customers.ssn"])],
            &["@orders.cid", "@customers.id"],
            &[],
        ),
    );
    check(
        "MERGE INTO t USING customers c ON t.id = c.id \
         WHEN MATCHED AND c.active THEN UPDATE SET x = c.ssn \
         WHEN NOT MATCHED THEN INSERT (id, x) VALUES (c.id, c.name)",
        lin(
            vec![],
            &["@t.id", "@customers.id", "@customers.active"],
            &["@customers.ssn", "@customers.id", "@customers.name"],
        ),
    );
}

#[test]
fn written_elsewhere() {
    check(
        "CREATE TABLE copy AS SELECT ssn FROM customers",
        lin(vec![], &[], &["customers.ssn"]),
    );
    check(
        "CREATE MATERIALIZED VIEW mv AS SELECT name, ssn FROM customers WHERE id > 1",
        lin(
            vec![],
            &["customers.id"],
            &["customers.name", "customers.ssn"],
        ),
    );
    check(
        "SELECT ssn INTO copy FROM customers",
        lin(vec![], &[], &["customers.ssn"]),
    );
    check(
        "CREATE VIEW v AS SELECT ssn AS x FROM customers",
        lin(vec![], &[], &["customers.ssn"]),
    );
    check(
        "SELECT set_config('my.var', ssn, false) FROM customers",
        lin(
            vec![c(&["customers.ssn", "set_config()"])],
            &[],
            &["customers.ssn"],
        ),
    );
    check(
        "SELECT id FROM customers WHERE pg_notify('ch', ssn) IS NULL",
        lin(
            vec![c(&["customers.id"])],
            &["customers.ssn", "pg_notify()"],
            &["customers.ssn"],
        ),
    );
    check(
        "SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM customers",
        lin(
            vec![c(&["customers.ssn", "convert_to()", "lo_from_bytea()"])],
            &[],
            &["customers.ssn", "convert_to()"],
        ),
    );
    check(
        "SELECT dblink_exec('conn', 'insert ' || c.ssn) FROM customers c",
        lin(
            vec![c(&["@customers.ssn", "dblink_exec()"])],
            &[],
            &["@customers.ssn"],
        ),
    );
    // A condition inside a written value is written too.
    check(
        "SELECT pg_advisory_lock(CASE WHEN ssn LIKE '1%' THEN 1 ELSE 2 END) FROM customers",
        lin(
            vec![c(&["pg_advisory_lock()"])],
            &["customers.ssn"],
            &["customers.ssn"],
        ),
    );
    check(
        "WITH i AS (INSERT INTO log SELECT ssn FROM customers RETURNING id) SELECT count(*) FROM i",
        lin(vec![c(&["count()"])], &[], &["customers.ssn"]),
    );
    check("NOTIFY ch, 'payload'", lin(vec![], &[], &[]));
    // Side-effect functions anywhere, even in DDL.
    check(
        "CREATE TABLE z (a text DEFAULT set_config('a', 'b', false))",
        lin(vec![], &[], &["z.*", "set_config()"]),
    );
}

#[test]
fn recursive_ctes() {
    outputs(
        "WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM customers \
         UNION ALL SELECT n + 1, s FROM r WHERE n < 10) SELECT * FROM r",
        vec![c(&[]), c(&["customers.ssn"])],
    );
    // Columns that rotate through the recursion reach a fixpoint.
    outputs(
        "WITH RECURSIVE r(a, b, c) AS (SELECT ssn, name, email FROM customers \
         UNION ALL SELECT c, a, b FROM r) SELECT a FROM r",
        vec![c(&["customers.ssn", "customers.name", "customers.email"])],
    );
    check(
        "WITH RECURSIVE tree AS (SELECT id, parent, secret FROM nodes WHERE parent IS NULL \
         UNION ALL SELECT n.id, n.parent, t.secret || n.secret FROM nodes n JOIN tree t ON n.parent = t.id) \
         SELECT secret FROM tree",
        lin(
            vec![c(&["nodes.secret", "@nodes.secret", "secret()"])],
            &["nodes.parent", "@nodes.parent", "nodes.id", "id()"],
            &[],
        ),
    );
    // Any CTE of WITH RECURSIVE may refer to a later one.
    outputs(
        "WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT ssn FROM customers) SELECT * FROM a",
        vec![c(&["customers.ssn"])],
    );
    // SEARCH and CYCLE add columns computed from the others.
    outputs(
        "WITH RECURSIVE t(n) AS (SELECT ssn FROM customers UNION ALL SELECT n FROM t) \
         SEARCH DEPTH FIRST BY n SET ord SELECT * FROM t",
        vec![c(&["customers.ssn"]), c(&["customers.ssn"])],
    );
}

#[test]
fn copy() {
    let mut l = lin(vec![s(&["customers.*"])], &[], &[]);
    l.copy = Some(CopyFormat::Text { delimiter: b'\t' });
    check("COPY customers TO STDOUT", l.clone());
    l.copy = Some(CopyFormat::Text { delimiter: b'|' });
    check(
        "COPY customers TO STDOUT (FORMAT text, DELIMITER '|')",
        l.clone(),
    );
    l.copy = Some(CopyFormat::Csv {
        delimiter: b',',
        quote: b'"',
        escape: b'"',
        header: false,
    });
    check("COPY customers TO STDOUT (FORMAT csv)", l.clone());
    l.copy = Some(CopyFormat::Csv {
        delimiter: b';',
        quote: b'\'',
        escape: b'\\',
        header: true,
    });
    check(
        "COPY customers TO STDOUT (FORMAT CSV, HEADER true, DELIMITER ';', QUOTE '''', ESCAPE '\\')",
        l.clone(),
    );
    check(
        "COPY customers TO STDOUT CSV HEADER DELIMITER ';' QUOTE '''' ESCAPE '\\'",
        l.clone(),
    );
    l.copy = Some(CopyFormat::Csv {
        delimiter: b',',
        quote: b'"',
        escape: b'"',
        header: false,
    });
    check(
        "COPY customers TO STDOUT (FORMAT csv, HEADER off)",
        l.clone(),
    );
    check(
        "COPY customers TO STDOUT (FORMAT csv, HEADER match)",
        l.clone(),
    );
    l.copy = Some(CopyFormat::Binary);
    check("COPY customers TO STDOUT (FORMAT binary)", l.clone());
    check("COPY customers TO STDOUT BINARY", l.clone());
    // What a CopyFormat cannot describe is refused as binary.
    check("COPY customers TO STDOUT (ENCODING 'SJIS')", l.clone());
    check(
        "COPY customers TO STDOUT (FORMAT csv, QUOTE '€')",
        l.clone(),
    );
    check("COPY customers TO STDOUT (DELIMITER '||')", l.clone());

    let mut l = lin(
        vec![c(&["customers.ssn"]), c(&["customers.name"])],
        &[],
        &[],
    );
    l.copy = Some(CopyFormat::Text { delimiter: b'\t' });
    check("COPY customers (ssn, name) TO STDOUT", l);

    let mut l = lin(
        vec![c(&["customers.ssn", "upper()"])],
        &["customers.id"],
        &[],
    );
    l.copy = Some(CopyFormat::Text { delimiter: b'\t' });
    check(
        "COPY (SELECT upper(ssn) FROM customers WHERE id > 5) TO STDOUT",
        l,
    );
    // To a server file: nothing comes back, the rows are written.
    check(
        "COPY customers TO '/tmp/out'",
        lin(vec![], &[], &["customers.*"]),
    );
    check(
        "COPY (SELECT ssn FROM customers) TO PROGRAM 'cat'",
        lin(vec![], &[], &["customers.ssn"]),
    );
    check(
        "COPY customers FROM STDIN WHERE ssn > '1'",
        lin(vec![], &["customers.ssn"], &[]),
    );
}

#[test]
fn cursors_calls_and_prepared_statements() {
    let mut l = lin(vec![c(&["customers.ssn"])], &["customers.id"], &[]);
    l.cursor = Some(Cursor::Declare("cur".into()));
    check(
        "DECLARE cur CURSOR FOR SELECT ssn FROM customers WHERE id > 1",
        l,
    );
    let mut l = lin(vec![], &[], &[]);
    l.cursor = Some(Cursor::Fetch("cur".into()));
    check("FETCH 10 FROM cur", l.clone());
    check("FETCH ALL IN cur", l.clone());
    check("MOVE NEXT IN cur", l);
    check("CLOSE cur", lin(vec![], &[], &[]));

    check("CALL p(1, 'x')", lin(vec![s(&["p()"])], &[], &[]));
    check(
        "CALL s.p((SELECT ssn FROM customers LIMIT 1))",
        lin(
            vec![s(&["s.p()", "customers.ssn"])],
            &[],
            &["customers.ssn"],
        ),
    );

    // EXECUTE gets its prepared statement's lineage through resolve.
    check(
        "PREPARE q(int) AS SELECT ssn FROM customers WHERE id = $1; EXECUTE q(1)",
        lin(vec![c(&["customers.ssn"])], &["customers.id"], &[]),
    );
    check(
        "PREPARE q(int) AS SELECT ssn FROM customers WHERE id = $1",
        lin(vec![c(&["customers.ssn"])], &["customers.id"], &[]),
    );
    // …and its parameters flow anywhere.
    check(
        "PREPARE q(text) AS SELECT $1; EXECUTE q((SELECT ssn FROM customers LIMIT 1))",
        lin(
            vec![c(&["customers.ssn"])],
            &["customers.ssn"],
            &["customers.ssn"],
        ),
    );
    check(
        "PREPARE i(text) AS INSERT INTO t VALUES ($1); EXECUTE i((SELECT ssn FROM customers LIMIT 1))",
        lin(vec![], &["customers.ssn"], &["customers.ssn"]),
    );
}

#[test]
fn statements_without_rows() {
    for sql in [
        "SHOW search_path",
        "BEGIN",
        "COMMIT",
        "SET search_path = public",
        "CREATE TABLE t (a int)",
        "DROP TABLE t",
        "TRUNCATE customers",
        "INSERT INTO t VALUES (1)",
        "UPDATE customers SET name = 'x'",
        "DELETE FROM customers",
        "LISTEN ch",
        "VACUUM customers",
        "DO $$ BEGIN END $$",
    ] {
        check(sql, lin(vec![], &[], &[]));
    }
    // EXPLAIN returns no data, but its statement's predicates tell through
    // row counts, and ANALYZE runs its side effects.
    check(
        "EXPLAIN SELECT set_config('a', ssn, false) FROM customers WHERE id = 1",
        lin(vec![], &["customers.id"], &[]),
    );
    check(
        "EXPLAIN ANALYZE SELECT set_config('a', ssn, false) FROM customers WHERE id = 1",
        lin(vec![], &["customers.id"], &["customers.ssn"]),
    );
    check(
        "PREPARE p AS SELECT set_config('a', ssn, false) FROM customers WHERE id = 1; \
         EXPLAIN ANALYZE EXECUTE p",
        lin(vec![], &["customers.id"], &["customers.ssn"]),
    );
}

#[test]
fn unknowns_fail_closed() {
    // A name that resolves to nothing is opaque.
    outputs("SELECT ssn", vec![c(&["?"])]);
    // A function in FROM that names an item not yet in scope.
    outputs(
        "SELECT * FROM json_to_recordset(doc) AS r(a int), docs",
        vec![s(&["json_to_recordset()", "?", "docs.*"])],
    );
    // Node types followed generically: every reference under them counts.
    outputs(
        "SELECT JSON_OBJECT('k': ssn), XMLELEMENT(name x, name) FROM customers",
        vec![c(&["customers.ssn"]), c(&["customers.name"])],
    );
    outputs(
        "SELECT JSON_ARRAY(SELECT ssn FROM customers)",
        vec![c(&["customers.ssn"])],
    );
    // CREATE TABLE AS EXECUTE: whatever the prepared statement returns.
    check("CREATE TABLE t AS EXECUTE q", lin(vec![], &[], &["?"]));
}

#[test]
fn deduplicated_and_sorted() {
    let l = lineage("SELECT ssn || ssn || upper(ssn) FROM customers WHERE ssn = '1' OR ssn = '2'");
    assert_eq!(l.outputs, vec![c(&["customers.ssn", "upper()"])]);
    assert_eq!(l.predicates, src(&["customers.ssn"]));
}

/// Lineage is cached by shape like the rest of the analysis: for every
/// corpus text the cache would share, changing its literals must not change
/// its lineage.
#[test]
fn lineage_ignores_literal_values() {
    const CORPUS: &str = include_str!("../../airlock/tests/corpus/policy.txt");
    let a = Analyzer::default();
    let mut texts = Vec::new();
    let mut current: Option<String> = None;
    for line in CORPUS.lines() {
        if line.starts_with("-- case:") {
            texts.extend(current.take());
            current = Some(String::new());
        } else if let Some(sql) = current.as_mut()
            && !line.starts_with("-- ")
        {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    texts.extend(current);
    let mut checked = 0;
    for sql in texts {
        let Some(key) = airlock_sql::shape::shape(&sql) else {
            continue;
        };
        let (stmts, steered) = a.analyze_reporting(&sql);
        if steered {
            continue;
        }
        let variant: String = {
            let mut in_string = false;
            sql.chars()
                .map(|c| match c {
                    '\'' => {
                        in_string = !in_string;
                        c
                    }
                    '0'..='8' if !in_string => ((c as u8) + 1) as char,
                    'a'..='y' if in_string => ((c as u8) + 1) as char,
                    _ => c,
                })
                .collect()
        };
        if airlock_sql::shape::shape(&variant).as_ref() != Some(&key) {
            continue;
        }
        let other = a.analyze(&variant);
        let l1: Vec<_> = stmts.iter().map(|s| &s.lineage).collect();
        let l2: Vec<_> = other.iter().map(|s| &s.lineage).collect();
        assert_eq!(l1, l2, "{sql:?} vs {variant:?}");
        checked += 1;
    }
    assert!(checked > 50, "only {checked} corpus texts checked");
    // Positions in ORDER BY are not read either.
    assert_eq!(
        lineage("SELECT a, b FROM t ORDER BY 1"),
        lineage("SELECT a, b FROM t ORDER BY 2")
    );
}
