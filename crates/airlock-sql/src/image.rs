//! The rows an UPDATE or DELETE is about to change, as a SELECT: commit
//! review shows an approver a sample of them as they were (SPEC §14).
//!
//! `UPDATE t [AS a] SET … [FROM f] WHERE w` becomes
//! `SELECT a.tableoid AS airlock_tableoid, a.* FROM t [AS a][, f] WHERE w
//! LIMIT n` (each row's own table, which masks it), and `DELETE FROM t …
//! USING u WHERE w` the same with `u`: the statement's own parse tree, its
//! target and WHERE clause kept as parsed, deparsed by PostgreSQL's
//! deparser. A
//! statement with a WITH clause or `WHERE CURRENT OF` has none: its rows
//! depend on more than its text.

use pg_query::protobuf::{self, Node, node::Node as N};

/// The SELECT of at most `rows` rows that `sql` (one UPDATE or DELETE)
/// would change, as they are now; `None` for any other text.
pub fn before(sql: &str, rows: i32) -> Option<String> {
    let parsed = pg_query::parse(sql).ok()?;
    let [raw] = &parsed.protobuf.stmts[..] else {
        return None;
    };
    let (relation, mut from, filter) = match raw.stmt.as_ref()?.node.as_ref()? {
        N::UpdateStmt(u) if u.with_clause.is_none() => (
            u.relation.clone()?,
            u.from_clause.clone(),
            u.where_clause.clone(),
        ),
        N::DeleteStmt(d) if d.with_clause.is_none() => (
            d.relation.clone()?,
            d.using_clause.clone(),
            d.where_clause.clone(),
        ),
        _ => return None,
    };
    if matches!(
        filter.as_deref().and_then(|w| w.node.as_ref()),
        Some(N::CurrentOfExpr(_))
    ) {
        return None;
    }
    // `a.*` for the target's alias, or its name as written.
    let named = match &relation.alias {
        Some(a) => a.aliasname.clone(),
        None => relation.relname.clone(),
    };
    let column = |last: N, name: &str| Node {
        node: Some(N::ResTarget(Box::new(protobuf::ResTarget {
            name: name.into(),
            val: Some(Box::new(Node {
                node: Some(N::ColumnRef(protobuf::ColumnRef {
                    fields: vec![
                        Node {
                            node: Some(N::String(protobuf::String {
                                sval: named.clone(),
                            })),
                        },
                        Node { node: Some(last) },
                    ],
                    location: -1,
                })),
            })),
            location: -1,
            ..Default::default()
        }))),
    };
    let target_list = vec![
        column(
            N::String(protobuf::String {
                sval: "tableoid".into(),
            }),
            "airlock_tableoid",
        ),
        column(N::AStar(protobuf::AStar {}), ""),
    ];
    from.insert(
        0,
        Node {
            node: Some(N::RangeVar(relation)),
        },
    );
    let select = protobuf::SelectStmt {
        target_list,
        from_clause: from,
        where_clause: filter,
        limit_count: Some(Box::new(Node {
            node: Some(N::AConst(protobuf::AConst {
                val: Some(protobuf::a_const::Val::Ival(protobuf::Integer {
                    ival: rows,
                })),
                ..Default::default()
            })),
        })),
        limit_option: protobuf::LimitOption::Count as i32,
        op: protobuf::SetOperation::SetopNone as i32,
        ..Default::default()
    };
    let mut out = parsed.protobuf.clone();
    out.stmts[0].stmt = Some(Box::new(Node {
        node: Some(N::SelectStmt(Box::new(select))),
    }));
    out.stmts[0].stmt_len = 0;
    pg_query::deparse(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_and_deletes_become_the_select_of_their_rows() {
        let cases = [
            (
                "UPDATE accounts SET balance = balance - 10 WHERE id <= 2",
                "SELECT accounts.tableoid AS airlock_tableoid, accounts.* FROM accounts WHERE id <= 2 LIMIT 6",
            ),
            (
                "update public.t as a set x = b.x from b where a.id = b.id and b.flag",
                "SELECT a.tableoid AS airlock_tableoid, a.* FROM public.t a, b WHERE a.id = b.id AND b.flag LIMIT 6",
            ),
            (
                "DELETE FROM \"Odd\" o USING u WHERE o.k = u.k",
                "SELECT o.tableoid AS airlock_tableoid, o.* FROM \"Odd\" o, u WHERE o.k = u.k LIMIT 6",
            ),
            (
                "DELETE FROM t",
                "SELECT t.tableoid AS airlock_tableoid, t.* FROM t LIMIT 6",
            ),
            (
                "UPDATE ONLY t SET a = 1 WHERE b IN (SELECT c FROM d)",
                "SELECT t.tableoid AS airlock_tableoid, t.* FROM ONLY t WHERE b IN (SELECT c FROM d) LIMIT 6",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(before(sql, 6).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn what_depends_on_more_than_its_text_has_none() {
        for sql in [
            "WITH x AS (SELECT 1) UPDATE t SET a = 1",
            "DELETE FROM t WHERE CURRENT OF c",
            "UPDATE t SET a = 1; UPDATE t SET a = 2",
            "INSERT INTO t VALUES (1)",
            "SELECT 1",
            "UPDATE t SET",
        ] {
            assert_eq!(before(sql, 6), None, "{sql}");
        }
    }
}
