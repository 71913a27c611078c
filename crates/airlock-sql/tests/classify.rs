//! The PostgreSQL analyzer on the statements the classifier must get right.
//! Each row: SQL, expected kinds (top-level first, one per statement),
//! effects that must be present, effects that must be absent.

use airlock_policy::{Effect, StatementKind};
use airlock_sql::{Analyzer, SessionState, resolve};

#[track_caller]
fn check(sql: &str, kinds: &[&str], present: &[&str], absent: &[&str]) {
    let a = Analyzer::default();
    let stmts = resolve(&a.analyze(sql), &mut SessionState::default());
    let got: Vec<&str> = stmts.iter().map(|s| s.kind.name()).collect();
    assert_eq!(got, kinds, "kinds of {sql:?}: {stmts:#?}");
    let mut effects = airlock_policy::Effects::EMPTY;
    for s in &stmts {
        effects.extend(s.effects);
    }
    for e in present {
        assert!(
            effects.contains(Effect::from_name(e).unwrap()),
            "{sql:?} lacks {e}: has {effects}"
        );
    }
    for e in absent {
        assert!(
            !effects.contains(Effect::from_name(e).unwrap()),
            "{sql:?} has {e}: {effects}"
        );
    }
}

#[test]
fn reads_and_writes() {
    check("select 1", &["select"], &["read"], &["write"]);
    check(
        "SELECT * FROM public.customers c JOIN orders o ON o.cid = c.id",
        &["select"],
        &["read"],
        &["write"],
    );
    check("insert into t values (1)", &["insert"], &["write"], &[]);
    check("update t set a = 1", &["update"], &["write"], &[]);
    check("delete from t where id = 1", &["delete"], &["write"], &[]);
    check(
        "with d as (delete from t returning *) select * from d",
        &["select"],
        &["read", "write"],
        &[],
    );
    check(
        "with x as (select 1) update t set a = (select * from x)",
        &["update"],
        &["write"],
        &[],
    );
    check(
        "select * into newt from t",
        &["select"],
        &["write", "ddl"],
        &[],
    );
    check("select * from t for update", &["select"], &["write"], &[]);
    check("select nextval('s')", &["select"], &["write"], &[]);
    check(
        "merge into t using s on t.id = s.id when matched then delete",
        &["merge"],
        &["write"],
        &[],
    );
}

#[test]
fn where_clauses() {
    let a = Analyzer::default();
    let w = |sql: &str| a.analyze(sql)[0].has_where;
    assert_eq!(w("delete from t"), Some(false));
    assert_eq!(w("delete from t where a = 1"), Some(true));
    assert_eq!(w("update t set a = 1 where current of c"), Some(true));
    assert_eq!(w("with d as (delete from t) select 1"), Some(false));
    assert_eq!(
        w("with d as (delete from t where a=1) update u set b = 2"),
        Some(false)
    );
    assert_eq!(w("select 1"), None);
    let s = &a.analyze("with d as (delete from t) select 1")[0];
    assert_eq!(s.nested, vec![StatementKind::Delete]);
}

#[test]
fn escapes_and_dangerous_things() {
    check(
        "commit; delete from t; select 1",
        &["transaction", "delete", "select"],
        &["write", "transaction_control"],
        &[],
    );
    check("/* ; */ delete from t", &["delete"], &["write"], &[]);
    check("-- hi\n delete from t", &["delete"], &["write"], &[]);
    check(
        "/* /* nested */ */ drop table t",
        &["ddl"],
        &["ddl", "drop"],
        &[],
    );
    check("drop database prod", &["ddl"], &["drop_database"], &[]);
    check(
        "explain analyze delete from t",
        &["explain"],
        &["write"],
        &[],
    );
    check("explain delete from t", &["explain"], &["read"], &["write"]);
    check(
        "explain (analyze false) delete from t",
        &["explain"],
        &["read"],
        &["write"],
    );
    check(
        "copy t to program 'curl x'",
        &["copy_out"],
        &["copy_program", "export"],
        &[],
    );
    check(
        "copy t from '/etc/passwd'",
        &["copy_in"],
        &["copy_file", "write"],
        &[],
    );
    check(
        "copy (delete from t returning *) to stdout",
        &["copy_out"],
        &["write", "export"],
        &[],
    );
    check(
        "do $$ begin delete from t; end $$",
        &["do"],
        &["dynamic_sql"],
        &[],
    );
    check(
        "do $tag$ begin perform 1; end $tag$",
        &["do"],
        &["dynamic_sql"],
        &[],
    );
    check(
        "create function f() returns int language sql as 'delete from t returning 1'",
        &["ddl"],
        &["ddl", "dynamic_sql"],
        &[],
    );
    check("set role postgres", &["set_role"], &["privilege"], &[]);
    check(
        "set session authorization postgres",
        &["set_role"],
        &["privilege"],
        &[],
    );
    check("reset role", &["set_role"], &["privilege"], &[]);
    check("grant all on t to public", &["grant"], &["privilege"], &[]);
    check("alter role x superuser", &["grant"], &["privilege"], &[]);
    check(
        "alter system set fsync = off",
        &["set_config"],
        &["alter_system"],
        &[],
    );
    check(
        "select set_config('default_transaction_read_only', 'off', false)",
        &["select"],
        &["session_config"],
        &[],
    );
    check(
        "set default_transaction_read_only = off",
        &["set_config"],
        &["session_config"],
        &[],
    );
    check(
        "set session characteristics as transaction read write",
        &["set_config"],
        &["session_config"],
        &[],
    );
    check(
        "begin read write",
        &["transaction"],
        &["session_config", "transaction_control"],
        &[],
    );
    check(
        "start transaction read write",
        &["transaction"],
        &["session_config"],
        &[],
    );
    check(
        "begin read only",
        &["transaction"],
        &["transaction_control"],
        &["session_config"],
    );
    check(
        "begin",
        &["transaction"],
        &["transaction_control"],
        &["session_config"],
    );
    check("reset all", &["set_config"], &["session_config"], &[]);
    check("call p()", &["call"], &["dynamic_sql"], &[]);
    check("lock table t", &["lock"], &["write"], &[]);
    check("vacuum t", &["maintenance"], &["write"], &[]);
    check("create extension dblink", &["ddl"], &["ddl"], &[]);
    check("listen ch", &["listen"], &["read"], &["write"]);
    check("notify ch", &["notify"], &["write"], &[]);
    check(
        "select pg_read_file('/etc/passwd')",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check(
        "select PG_CATALOG.PG_READ_FILE('/etc/passwd')",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check(
        "select * from dblink('x', 'delete from t') as r(a int)",
        &["select"],
        &["unsafe_function", "dynamic_sql"],
        &[],
    );
    check(
        "select query_to_xml('delete from t', true, true, '')",
        &["select"],
        &["unsafe_function", "dynamic_sql"],
        &[],
    );
    check(
        "select case when true then pg_terminate_backend(1) end",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check("truncate t", &["truncate"], &["truncate"], &[]);
    check("commit prepared 'x'", &["transaction"], &["write"], &[]);
    check("rollback prepared 'x'", &["transaction"], &["write"], &[]);
    check("prepare transaction 'x'", &["transaction"], &["write"], &[]);
    check(
        "commit",
        &["transaction"],
        &["transaction_control"],
        &["write"],
    );
    check(
        "select pg_try_advisory_lock(1)",
        &["select"],
        &["write"],
        &[],
    );
}

#[test]
fn prepare_and_execute() {
    let a = Analyzer::default();
    let mut session = SessionState::default();
    let s = resolve(
        &a.analyze("prepare p as delete from t; execute p"),
        &mut session,
    );
    assert_eq!(s[1].kind, StatementKind::Execute);
    assert!(s[1].effects.contains(Effect::Write));
    assert_eq!(s[1].has_where, Some(false));
    let s = resolve(&a.analyze("execute p"), &mut session);
    assert!(
        s[0].effects.contains(Effect::Write),
        "remembered across messages"
    );
    let s = resolve(&a.analyze("deallocate p; execute p"), &mut session);
    assert_eq!(s[1].kind, StatementKind::Unknown);
    let s = resolve(&a.analyze("execute never_prepared"), &mut session);
    assert_eq!(s[0].kind, StatementKind::Unknown);
}

#[test]
fn unparseable_and_edge_inputs() {
    check("", &["empty"], &[], &[]);
    check(";", &["empty"], &[], &[]);
    check("selec 1", &["unknown"], &[], &[]);
    let deep = format!("select {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    check(&deep, &["unknown"], &[], &[]);
    let long = format!("select '{}'", "x".repeat(1 << 20));
    check(&long, &["select"], &["read"], &["write"]);
}

#[test]
fn attribute_notation_merge_and_explain_analyze() {
    check(
        "select ('/etc/hostname'::text).pg_read_file",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check(
        "select (x).pg_read_file from (select '/f'::text) as q(x)",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check(
        "select q.nextval from (select 's'::regclass) q",
        &["select"],
        &["write"],
        &[],
    );
    check(
        "select ts_rewrite('a'::tsquery, 'select 1')",
        &["select"],
        &["dynamic_sql", "unsafe_function"],
        &[],
    );
    check(
        "select * from ts_stat('select 1')",
        &["select"],
        &["dynamic_sql"],
        &[],
    );
    check(
        "select pg_create_physical_replication_slot('s')",
        &["select"],
        &["unsafe_function"],
        &[],
    );
    check(
        "merge into t using s on true when matched then delete",
        &["merge"],
        &["write"],
        &[],
    );
    let a = Analyzer::default();
    let m = &a.analyze("merge into t using s on true when matched then update set a = 1")[0];
    assert_eq!(
        (m.has_where, m.nested.clone()),
        (Some(false), vec![StatementKind::Update])
    );
    let e = &a.analyze("explain analyze delete from t")[0];
    assert_eq!(
        (e.has_where, e.nested.clone()),
        (Some(false), vec![StatementKind::Delete])
    );
    let e = &a.analyze("explain delete from t")[0];
    assert_eq!(e.has_where, None, "EXPLAIN without ANALYZE runs nothing");
    let mut session = SessionState::default();
    let s = resolve(&a.analyze("explain analyze execute never"), &mut session);
    assert_eq!(s[0].kind, StatementKind::Unknown);
    let s = resolve(
        &a.analyze("prepare p as delete from t; explain analyze execute p"),
        &mut session,
    );
    assert!(s[1].effects.contains(Effect::Write));
    assert_eq!(s[1].has_where, Some(false));
    let s = resolve(&a.analyze("explain execute p"), &mut session);
    assert!(!s[0].effects.contains(Effect::Write));
}

/// What an UPDATE's or DELETE's WHERE clause pins, as (schema, relation,
/// sorted columns).
fn pinned(sql: &str) -> Option<(Option<String>, String, Vec<String>)> {
    let s = Analyzer::default().analyze(sql).remove(0);
    s.pinned.map(|p| {
        let mut columns = p.columns.clone();
        columns.sort();
        (p.relation.schema.clone(), p.relation.name.clone(), columns)
    })
}

#[test]
fn equalities_pin_columns() {
    let cols = |sql: &str| pinned(sql).map(|p| p.2);
    let v = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        pinned("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
        Some((None, "pgbench_accounts".into(), vec!["aid".into()]))
    );
    assert_eq!(
        pinned("delete from s.t as x where x.a = 1 and 'k'::text = b and c > 3"),
        Some((Some("s".into()), "t".into(), vec!["a".into(), "b".into()]))
    );
    assert_eq!(cols("update t set v = 1 where t.\"Id\" = $1"), v(&["Id"]));
    // Not pinned: OR, another relation's column, a computed value, another
    // operator, no WHERE.
    assert_eq!(cols("update t set v = 1 where id = 1 or id = 2"), v(&[]));
    assert_eq!(cols("update t set v = 1 from u where u.id = 1"), v(&[]));
    assert_eq!(cols("update t set v = 1 where id = abs(1)"), v(&[]));
    assert_eq!(cols("update t set v = 1 where id = other"), v(&[]));
    assert_eq!(cols("update t set v = 1 where id >= 1"), v(&[]));
    assert_eq!(cols("update t set v = 1 where id = 1e18::float8"), v(&[]));
    assert_eq!(
        cols("update t set v = 1 where id = $1::double precision"),
        v(&[])
    );
    assert_eq!(cols("update t set v = 1 where id = $1::bigint"), v(&["id"]));
    assert_eq!(cols("update t set v = 1"), None);
    // Not a plain UPDATE or DELETE.
    assert_eq!(
        cols("with x as (select 1) update t set v = 1 where id = 1"),
        None
    );
    assert_eq!(cols("select * from t where id = 1"), None);
}

#[test]
fn statement_timeout_changes() {
    use airlock_policy::TimeoutChange::{Reset, To, Unknown};
    use std::time::Duration;
    let ms = |n| Some(To(Duration::from_millis(n)));
    for (sql, want) in [
        ("SET statement_timeout = 5000", ms(5000)),
        ("SET statement_timeout = '5s'", ms(5000)),
        ("SET LOCAL statement_timeout TO '15 s'", ms(15_000)),
        // Fractions: PostgreSQL rounds them its own way (0.5 to 0).
        ("SET statement_timeout = '1.5s'", Some(Unknown)),
        ("SET statement_timeout = 0.5", Some(Unknown)),
        ("SET statement_timeout = '0.008min'", Some(Unknown)),
        ("SET statement_timeout = '+5s'", Some(Unknown)),
        ("SET statement_timeout = '0x10'", Some(Unknown)),
        ("set Statement_Timeout = '2min'", ms(120_000)),
        ("SET statement_timeout = '1h'", ms(3_600_000)),
        ("SET statement_timeout = 0", ms(0)),
        ("SET statement_timeout = '500us'", Some(Unknown)),
        ("SET statement_timeout = '2000us'", ms(2)),
        ("SET statement_timeout = '5 fortnights'", Some(Unknown)),
        ("SET statement_timeout = -1", Some(Unknown)),
        ("SET statement_timeout TO DEFAULT", Some(Reset)),
        ("RESET statement_timeout", Some(Reset)),
        ("RESET ALL", Some(Reset)),
        ("SET lock_timeout = 0", None),
        (
            "SELECT set_config('statement_timeout', '10s', false)",
            ms(10_000),
        ),
        // The most permissive of several counts.
        (
            "SELECT set_config('statement_timeout', '1s', false), pg_catalog.set_config('statement_timeout', '0', true)",
            ms(0),
        ),
        ("SELECT set_config(name, '1s', false) FROM t", Some(Unknown)),
        (
            "SELECT set_config('statement_timeout', v, false) FROM t",
            Some(Unknown),
        ),
        ("SELECT 1", None),
        // EXPLAIN ANALYZE runs what it explains; EXPLAIN does not.
        (
            "EXPLAIN ANALYZE SELECT set_config('statement_timeout', '0', false)",
            ms(0),
        ),
        (
            "EXPLAIN SELECT set_config('statement_timeout', '0', false)",
            None,
        ),
        // pg_settings' update rule is set_config.
        (
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            Some(Unknown),
        ),
    ] {
        let s = &Analyzer::default().analyze(sql)[0];
        assert_eq!(s.statement_timeout, want, "{sql}");
    }
}
