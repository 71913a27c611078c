//! Where a statement's result values come from, by name, as the statement
//! wrote them.
//!
//! A door's analyzer fills a [`Lineage`] from the parse tree: for each
//! result column, the relation columns, whole rows and functions its value is
//! computed from, with aliases, subqueries, CTEs, set operations and joins
//! already followed back to the relations named in FROM. The masking plan
//! ([`crate::masking`]) resolves those names against the upstream's catalog.
//! Lineage is a pure function of the statement text, so it is cached with the
//! rest of the analysis.

use crate::statement::Relation;

/// One thing a result value is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A column of a relation the statement names (a table, view,
    /// materialized view or foreign table; never a CTE or subquery alias,
    /// which are followed through). An unqualified column reference that
    /// could belong to several relations in scope yields one `Column` per
    /// candidate relation.
    Column { relation: Relation, column: String },
    /// Every column of a relation: a whole-row reference (`t`, `t.*` inside
    /// an expression, `row_to_json(t)`, `t::text`, `json_agg(t)`), or a star
    /// over the relation.
    WholeRow(Relation),
    /// The result of calling this function, as written (lower case,
    /// schema-qualified when written so). Every call is listed, built-in or
    /// not: the catalog tells which functions are user-defined, whose
    /// results airlock cannot see through.
    Function(String),
    /// Lineage stops here for another reason: a node the analyzer does not
    /// follow, an `EXECUTE` of an unknown prepared statement, a procedure's
    /// output.
    Opaque,
}

/// One entry of a result's column list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// One result column computed from these sources (empty for a
    /// constant; only `Function`s for a value that reads no column, such as
    /// `count(*)` or `now()`).
    Column(Vec<Source>),
    /// A star that expands to a number of columns the statement text does
    /// not tell (`*` or `t.*` over a relation), each computed from these
    /// sources. A star over a subquery or CTE whose columns are known is
    /// expanded by the analyzer into `Column`s instead.
    Star(Vec<Source>),
}

/// How `COPY … TO STDOUT` formats its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyFormat {
    /// `FORMAT text` (the default): columns split by `delimiter`. (A
    /// `HEADER` line in text format, PostgreSQL 15 and later, is masked as if
    /// it were data.)
    Text {
        delimiter: u8,
    },
    /// `FORMAT csv`.
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
        header: bool,
    },
    Binary,
}

/// A cursor a statement declares or reads from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// `DECLARE name CURSOR FOR query`: the statement's outputs are the
    /// query's.
    Declare(String),
    /// `FETCH`/`MOVE … name`: the rows come from what `name` declared.
    Fetch(String),
}

/// The lineage of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Lineage {
    /// The result's columns, in order: the target list of a SELECT (the
    /// leftmost arm's shape for set operations, each column the union of the
    /// arms' sources), the RETURNING list of a DML statement, the query of
    /// `COPY (query) TO`, the columns of `COPY table [(cols)] TO`, the query
    /// of `DECLARE … CURSOR FOR`, the prepared query of an `EXECUTE` when
    /// known. `[Star([Function(procedure), …its arguments' sources])]` for
    /// `CALL`, `[Star([Opaque])]` when the statement returns rows the
    /// analyzer cannot trace (an unknown `EXECUTE`); empty when it returns no
    /// table data (`SHOW`, `EXPLAIN`, DDL, DML without RETURNING).
    pub outputs: Vec<Output>,
    /// Columns that choose, join, group or order rows, at any depth: WHERE,
    /// JOIN … ON/USING, GROUP BY, HAVING, ORDER BY, DISTINCT ON, window
    /// PARTITION BY/ORDER BY, and the conditions of CASE, FILTER, and
    /// EXISTS/IN/ANY sub-selects. Used by the inference guard.
    pub predicates: Vec<Source>,
    /// Sources of values the statement writes somewhere other than its
    /// result: INSERT values and queries, UPDATE SET and MERGE expressions,
    /// `CREATE TABLE AS`/`SELECT INTO` queries, and arguments of functions
    /// with side effects (`set_config`, `pg_notify`, large-object writers).
    pub written: Vec<Source>,
    /// For `COPY … TO STDOUT`: how its rows are formatted.
    pub copy: Option<CopyFormat>,
    pub cursor: Option<Cursor>,
}

impl Lineage {
    /// Lineage for a statement that returns rows nobody can trace.
    pub fn opaque() -> Lineage {
        Lineage {
            outputs: vec![Output::Star(vec![Source::Opaque])],
            ..Lineage::default()
        }
    }
}
