use airlock_policy::lineage::{Output, Source};
use airlock_policy::{Effect, Relation, StatementKind as K};

use super::*;

fn a(sql: &str) -> Vec<Statement> {
    Analyzer::default().analyze(sql, Mode::default())
}

fn one(sql: &str) -> Statement {
    let mut v = a(sql);
    assert_eq!(v.len(), 1, "{sql}: {v:#?}");
    v.remove(0)
}

fn kinds(sql: &str) -> Vec<K> {
    a(sql).iter().map(|s| s.kind).collect()
}

fn rel(name: &str) -> Relation {
    match name.split_once('.') {
        Some((s, n)) => Relation {
            schema: Some(s.into()),
            name: n.into(),
        },
        None => Relation {
            schema: None,
            name: name.into(),
        },
    }
}

fn col(table: &str, column: &str) -> Source {
    Source::Column {
        relation: rel(table),
        column: column.into(),
    }
}

// ---------------------------------------------------------------------------
// The pre-lexer.

#[test]
fn statements_split_on_semicolons_outside_quotes_and_comments() {
    assert_eq!(kinds("select 1; delete from t"), [K::Select, K::Delete]);
    assert_eq!(kinds("select 1;delete from t;"), [K::Select, K::Delete]);
    assert_eq!(kinds("select ';', \";\", `a;b` from t"), [K::Select]);
    assert_eq!(kinds("select 1 /* ; delete */"), [K::Select]);
    assert_eq!(kinds("select 1 # ; delete from t"), [K::Select]);
    assert_eq!(
        kinds("select 1 # x\n; delete from t"),
        [K::Select, K::Delete]
    );
    assert_eq!(kinds("select 1 -- ; delete from t"), [K::Select]);
    assert_eq!(kinds(";;select 1;;"), [K::Empty, K::Empty, K::Select]);
    assert_eq!(kinds(""), [K::Empty]);
    assert_eq!(kinds(";"), [K::Empty]);
    // Spans cut each statement out of the text, comments before it aside.
    let sql = "select 1; /* c */ delete from t ;";
    let spans: Vec<&str> = a(sql).iter().map(|s| &sql[s.span.0..s.span.1]).collect();
    assert_eq!(spans, ["select 1", "delete from t"]);
}

#[test]
fn dash_dash_is_a_comment_only_before_whitespace() {
    // `--1` is minus minus one: the delete is code.
    assert_eq!(kinds("select 2 --1; delete from t"), [K::Select, K::Delete]);
    assert_eq!(kinds("select 2 --\t; delete from t"), [K::Select]);
    assert_eq!(
        kinds("select 2 --\n; delete from t"),
        [K::Select, K::Delete]
    );
    assert_eq!(kinds("select 2 --"), [K::Select]);
    // Only `\n` ends a line comment.
    assert_eq!(kinds("select 1 # x\r delete from t"), [K::Select]);
}

#[test]
fn executable_comments_are_code() {
    assert_eq!(kinds("/*!50000 DROP DATABASE x*/")[0], K::Ddl);
    assert!(
        one("/*!50000 DROP DATABASE x*/")
            .effects
            .contains(Effect::DropDatabase)
    );
    assert_eq!(kinds("/*! delete from t */"), [K::Delete]);
    assert_eq!(kinds("/*!100100 delete from t */"), [K::Delete]);
    assert_eq!(kinds("/*M! delete from t */"), [K::Delete]);
    assert_eq!(kinds("/*M!100500 delete from t */"), [K::Delete]);
    assert_eq!(
        kinds("del/*!*/ete from t"),
        [K::Unknown],
        "two words: `del ete`"
    );
    assert_eq!(kinds("select /*!*/ 1"), [K::Select]);
    let s = one("select 1 /*!50000 , load_file('/etc/passwd') */");
    assert!(s.effects.contains(Effect::UnsafeFunction));
    // What the server would split or read differently is refused.
    for sql in [
        "select 1 /*!; drop table t */",
        "/*! select 1 /*! drop table t */ */",
        "/*! select /* c */ 1 */",
        "select 1 /*! , 2",
        "/*!5000 select 1 */",
        "/*!1234567 select 1 */",
        "select 1 /* c",
        "select /*+ SET_VAR(sql_mode='') */ 1",
    ] {
        assert_eq!(kinds(sql), [K::Unknown], "{sql}");
    }
    // Hints are comments.
    assert_eq!(kinds("select /*+ BKA(t) */ * from t"), [K::Select]);
}

#[test]
fn strings_follow_the_sql_mode() {
    let m = |ansi_quotes, no_backslash_escapes| Mode {
        ansi_quotes,
        no_backslash_escapes,
    };
    let k = |sql: &str, mode| -> Vec<K> {
        Analyzer::default()
            .analyze(sql, mode)
            .iter()
            .map(|s| s.kind)
            .collect()
    };
    let sql = "select '\\'; delete from t; -- '";
    assert_eq!(k(sql, m(false, false)), [K::Select]);
    assert_eq!(k(sql, m(false, true)), [K::Select, K::Delete]);
    let sql = "select '\\\\'; delete from t -- '";
    assert_eq!(k(sql, m(false, false)), [K::Select, K::Delete]);
    assert_eq!(
        k("select 'a''; delete from t; '''", m(false, false)),
        [K::Select]
    );
    // Double quotes: a string, or a name under ANSI_QUOTES (no escapes).
    let sql = "select \"a\\\"; delete from t; -- \"";
    assert_eq!(k(sql, m(false, false)), [K::Select]);
    assert_eq!(k(sql, m(true, false)), [K::Select, K::Delete]);
    let s = &Analyzer::default().analyze("select \"ssn\" from \"customers\"", m(true, false))[0];
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("customers", "ssn")])]
    );
    let s = one("select \"ssn\" from customers");
    assert_eq!(s.lineage.outputs, [Output::Column(vec![])], "a string");
    // Unterminated.
    assert_eq!(kinds("select 'abc"), [K::Unknown]);
    assert_eq!(kinds("select `abc"), [K::Unknown]);
    assert_eq!(kinds("select 'abc\\'"), [K::Unknown]);
}

#[test]
fn literals_the_dialect_spells_its_own_way() {
    let s = one(
        "select _utf8mb4'a;b', N'c;d', _latin1 X'41', x'3b', 0x3b, b'01', 0b1, _binary 0x41, 'a' ';' 'b'",
    );
    assert_eq!(s.kind, K::Select);
    assert_eq!(s.lineage.outputs.len(), 9);
    // `_word` that is no character set is a name.
    assert_eq!(
        one("select _foo from t").lineage.outputs,
        [Output::Column(vec![col("t", "_foo")])]
    );
    // Numbers run into names, and backslashes outside strings, are refused.
    for sql in [
        "select 1e from t",
        "select 2abc",
        "select 0x1g",
        "select 1 \\; delete from t",
        "select 1\0",
    ] {
        assert_eq!(kinds(sql), [K::Unknown], "{sql:?}");
    }
    assert_eq!(kinds("select 1e5, .5, 1.5e-3, \\N"), [K::Select]);
    // A hex literal right before a string: two literals (an alias here).
    assert_eq!(one("select x'41''b'").lineage.outputs.len(), 1);
    assert_eq!(one("select x'41''b'").kind, K::Select);
}

#[test]
fn value_spans_cover_literals_and_comments() {
    let sql = "select 'a''b', 42, x'41', 0x42 /* c */ from t where n = _utf8mb4'z' # end";
    let spans = value_spans(sql, Mode::default()).unwrap();
    let texts: Vec<&str> = spans.iter().map(|&(s, e)| &sql[s..e]).collect();
    assert_eq!(
        texts,
        ["'a''b'", "42", "x'41'", "0x42", "/* c */", "'z'", "# end"]
    );
    // Executable comments are code: their literals only.
    let sql = "select /*!50000 'secret' */";
    let spans = value_spans(sql, Mode::default()).unwrap();
    assert_eq!(
        spans.iter().map(|&(s, e)| &sql[s..e]).collect::<Vec<_>>(),
        ["'secret'"]
    );
    assert_eq!(value_spans("select 'x", Mode::default()), None);
    // ANSI_QUOTES: "…" is a name, not a value.
    let ansi = Mode {
        ansi_quotes: true,
        no_backslash_escapes: false,
    };
    assert_eq!(value_spans("select \"a\" from t", ansi).unwrap(), []);
    assert_eq!(
        value_spans("select \"a\" from t", Mode::default()).unwrap(),
        [(7, 10)]
    );
}

#[test]
fn modes_from_sql_mode() {
    assert_eq!(Mode::from_sql_mode(""), Mode::default());
    let m = Mode::from_sql_mode("STRICT_TRANS_TABLES,ansi_quotes");
    assert!(m.ansi_quotes && !m.no_backslash_escapes);
    assert!(Mode::from_sql_mode("ANSI").ansi_quotes);
    assert!(Mode::from_sql_mode("NO_BACKSLASH_ESCAPES").no_backslash_escapes);
    assert_eq!(Mode::from_sql_mode("ANSI_QUOTES_X"), Mode::default());
}

// ---------------------------------------------------------------------------
// Classification.

#[test]
fn classification_table() {
    use Effect::*;
    // (text, kind, effects it must have, effects it must not have)
    let rows: &[(&str, K, &[Effect], &[Effect])] = &[
        ("select * from t", K::Select, &[Read], &[Write]),
        ("select * from t for update", K::Select, &[Read], &[Write]),
        (
            "select * from t lock in share mode",
            K::Select,
            &[Read],
            &[Write],
        ),
        (
            "with c as (select 1) select * from c",
            K::Select,
            &[Read],
            &[Write],
        ),
        ("(select 1) union (select 2)", K::Select, &[Read], &[Write]),
        ("table t", K::Select, &[Read], &[Write]),
        ("insert into t values (1)", K::Insert, &[Write], &[Ddl]),
        (
            "insert into t values (1) on duplicate key update a = 2",
            K::Insert,
            &[Write],
            &[],
        ),
        ("replace into t values (1)", K::Insert, &[Write], &[]),
        (
            "insert into t select * from u",
            K::Insert,
            &[Write, Read],
            &[],
        ),
        ("update t set a = 1", K::Update, &[Read, Write], &[]),
        (
            "update t1, t2 set t1.a = t2.b where t1.id = t2.id",
            K::Update,
            &[Write],
            &[],
        ),
        (
            "delete t1, t2 from t1 join t2 on t1.id = t2.id",
            K::Delete,
            &[Write],
            &[],
        ),
        (
            "with c as (select 1) update t set a = 1",
            K::Update,
            &[Write],
            &[],
        ),
        (
            "with c as (select 1) delete from t",
            K::Delete,
            &[Write],
            &[],
        ),
        ("show tables", K::Show, &[Read], &[]),
        ("show binlog events", K::Show, &[Read, UnsafeFunction], &[]),
        ("describe t", K::Show, &[Read], &[]),
        ("explain select 1", K::Explain, &[Read], &[Write]),
        ("explain delete from t", K::Explain, &[Read], &[Write]),
        (
            "explain analyze delete from t",
            K::Explain,
            &[Read, Write],
            &[],
        ),
        ("analyze delete from t", K::Explain, &[Write], &[]),
        ("analyze table t", K::Maintenance, &[Write], &[]),
        ("check table t", K::Maintenance, &[Read], &[Write]),
        ("use db", K::SetConfig, &[SessionConfig], &[]),
        (
            "begin",
            K::Transaction,
            &[TransactionControl],
            &[SessionConfig],
        ),
        ("begin work", K::Transaction, &[TransactionControl], &[]),
        (
            "start transaction read only",
            K::Transaction,
            &[TransactionControl],
            &[SessionConfig],
        ),
        (
            "start transaction read write",
            K::Transaction,
            &[TransactionControl, SessionConfig],
            &[],
        ),
        (
            "commit and chain",
            K::Transaction,
            &[TransactionControl],
            &[],
        ),
        (
            "rollback to savepoint a",
            K::Transaction,
            &[TransactionControl],
            &[],
        ),
        ("savepoint a", K::Transaction, &[TransactionControl], &[]),
        (
            "release savepoint a",
            K::Transaction,
            &[TransactionControl],
            &[],
        ),
        (
            "xa start 'x'",
            K::Transaction,
            &[TransactionControl],
            &[Write],
        ),
        (
            "xa commit 'x'",
            K::Transaction,
            &[TransactionControl, Write],
            &[],
        ),
        (
            "set names utf8mb4",
            K::SetConfig,
            &[SessionConfig],
            &[AlterSystem],
        ),
        (
            "set global x = 1",
            K::SetConfig,
            &[SessionConfig, AlterSystem],
            &[],
        ),
        ("set persist x = 1", K::SetConfig, &[AlterSystem], &[]),
        ("set persist_only x = 1", K::SetConfig, &[AlterSystem], &[]),
        ("set @@global.x = 1", K::SetConfig, &[AlterSystem], &[]),
        ("set @@persist.x = 1", K::SetConfig, &[AlterSystem], &[]),
        (
            "set @x = (select a from t)",
            K::SetConfig,
            &[SessionConfig, Read],
            &[],
        ),
        ("set password = 'x'", K::Grant, &[Privilege], &[]),
        ("set role r", K::SetRole, &[Privilege], &[]),
        ("set default role r to u", K::Grant, &[Privilege], &[]),
        ("create table t (a int)", K::Ddl, &[Ddl], &[Write]),
        (
            "create table t as select * from u",
            K::Ddl,
            &[Ddl, Write, Read],
            &[],
        ),
        (
            "create table t select * from u",
            K::Ddl,
            &[Ddl, Write, Read],
            &[],
        ),
        (
            "create table t (a int) data directory = '/tmp'",
            K::Ddl,
            &[Ddl, CopyFile],
            &[],
        ),
        ("create unique index i on t (a)", K::Ddl, &[Ddl], &[]),
        (
            "create or replace algorithm = merge definer = `a`@`b` sql security invoker view v as select 1",
            K::Ddl,
            &[Ddl],
            &[DynamicSql],
        ),
        (
            "create definer = current_user procedure p() select 1",
            K::Ddl,
            &[Ddl, DynamicSql],
            &[],
        ),
        (
            "create trigger tr before insert on t for each row set new.a = 1",
            K::Ddl,
            &[Ddl, DynamicSql],
            &[],
        ),
        (
            "create event e on schedule every 1 day do delete from t",
            K::Ddl,
            &[Ddl, DynamicSql],
            &[],
        ),
        (
            "create function f returns string soname 'x.so'",
            K::Ddl,
            &[AlterSystem, UnsafeFunction],
            &[],
        ),
        ("alter table t add column b int", K::Ddl, &[Ddl], &[]),
        (
            "alter user u identified by 'x'",
            K::Grant,
            &[Privilege],
            &[],
        ),
        ("drop table t", K::Ddl, &[Ddl, Drop], &[DropDatabase]),
        ("drop database d", K::Ddl, &[Drop, DropDatabase], &[]),
        ("drop schema if exists d", K::Ddl, &[DropDatabase], &[]),
        ("drop user u", K::Grant, &[Privilege, Drop], &[]),
        ("rename table a to b", K::Ddl, &[Ddl], &[]),
        ("rename user a to b", K::Grant, &[Privilege], &[]),
        ("truncate table t", K::Truncate, &[Truncate, Write], &[]),
        ("truncate t", K::Truncate, &[Truncate, Write], &[]),
        ("grant select on *.* to u", K::Grant, &[Privilege], &[]),
        ("revoke all on *.* from u", K::Grant, &[Privilege], &[]),
        ("create user u", K::Grant, &[Privilege, Ddl], &[]),
        (
            "load data local infile 'f' into table t",
            K::LoadData,
            &[Write, CopyFile],
            &[],
        ),
        (
            "load xml infile 'f' into table t",
            K::LoadData,
            &[Write, CopyFile],
            &[],
        ),
        (
            "select * from t into outfile '/tmp/x'",
            K::Select,
            &[Read, CopyFile, Export],
            &[],
        ),
        (
            "select * into dumpfile '/tmp/x' from t",
            K::Select,
            &[CopyFile, Export],
            &[],
        ),
        (
            "select a into @x from t",
            K::Select,
            &[Read],
            &[CopyFile, Write],
        ),
        (
            "select load_file('/etc/passwd')",
            K::Select,
            &[UnsafeFunction],
            &[],
        ),
        ("select sleep(1)", K::Select, &[UnsafeFunction], &[]),
        ("select benchmark(1, 1)", K::Select, &[UnsafeFunction], &[]),
        (
            "select master_pos_wait('f', 1)",
            K::Select,
            &[UnsafeFunction],
            &[],
        ),
        ("select get_lock('a', 1)", K::Select, &[Write], &[]),
        ("select nextval(s)", K::Select, &[Write], &[]),
        ("handler t open", K::Handler, &[Read], &[Write]),
        (
            "handler t read first where load_file('x')",
            K::Handler,
            &[Read, UnsafeFunction],
            &[],
        ),
        ("do 1", K::Do, &[], &[DynamicSql, UnsafeFunction]),
        ("do sleep(1)", K::Do, &[UnsafeFunction], &[]),
        ("do load_file('x')", K::Do, &[UnsafeFunction], &[]),
        (
            "install plugin p soname 'x.so'",
            K::Maintenance,
            &[AlterSystem],
            &[],
        ),
        ("uninstall soname 'x'", K::Maintenance, &[AlterSystem], &[]),
        ("shutdown", K::Maintenance, &[AlterSystem], &[]),
        ("restart", K::Maintenance, &[AlterSystem], &[]),
        ("flush privileges", K::Maintenance, &[AlterSystem], &[]),
        ("reset master", K::Maintenance, &[AlterSystem], &[]),
        ("reset slave all", K::Maintenance, &[AlterSystem], &[]),
        (
            "change master to master_host = 'h'",
            K::Maintenance,
            &[AlterSystem],
            &[],
        ),
        (
            "change replication source to source_host = 'h'",
            K::Maintenance,
            &[AlterSystem],
            &[],
        ),
        ("start slave", K::Maintenance, &[AlterSystem], &[]),
        ("stop replica", K::Maintenance, &[AlterSystem], &[]),
        (
            "purge binary logs to 'x'",
            K::Maintenance,
            &[AlterSystem],
            &[],
        ),
        ("binlog 'AAAA'", K::Maintenance, &[AlterSystem, Write], &[]),
        ("kill 1", K::Kill, &[Privilege], &[]),
        ("kill query 1", K::Kill, &[Privilege], &[]),
        ("prepare s from @v", K::Prepare, &[DynamicSql], &[]),
        (
            "prepare s from 'delete from t'",
            K::Prepare,
            &[Write],
            &[DynamicSql],
        ),
        ("execute s", K::Execute, &[], &[]),
        ("execute s using @a, @b", K::Execute, &[], &[]),
        ("deallocate prepare s", K::Deallocate, &[], &[]),
        ("drop prepare s", K::Deallocate, &[], &[]),
        ("call p(1)", K::Call, &[Write, DynamicSql], &[]),
        ("lock tables t read", K::Lock, &[Read], &[Write]),
        ("lock tables t write, u read", K::Lock, &[Write], &[]),
        ("unlock tables", K::Lock, &[TransactionControl], &[Write]),
        (
            "lock instance for backup",
            K::Maintenance,
            &[AlterSystem],
            &[],
        ),
        ("help 'select'", K::Show, &[Read], &[]),
    ];
    for (sql, kind, with, without) in rows {
        let s = one(sql);
        assert_eq!(s.kind, *kind, "{sql}: {s:#?}");
        for e in *with {
            assert!(s.effects.contains(*e), "{sql}: {} lacks {e}", s.effects);
        }
        for e in *without {
            assert!(!s.effects.contains(*e), "{sql}: {} has {e}", s.effects);
        }
    }
}

#[test]
fn unknown_is_the_default() {
    for sql in [
        "selec 1",
        "select 1 from t where",
        "frobnicate",
        "begin not atomic select 1",
        "execute immediate 'select 1'",
        "set statement x = 1 for select 1",
        "select * from (update t set a = 1) d",
        "prepare s from 'select 1; select 2'",
        "prepare s from 'execute t'",
        "prepare s from concat('a')",
        "execute s using 1",
        "use a b",
        "create frobnicator x",
        "drop frobnicator x",
        "alter frobnicator x",
        "set",
        "set x",
        "explain",
        "analyze frobnicate",
    ] {
        let s = one(sql);
        assert_eq!(s.kind, K::Unknown, "{sql}: {s:#?}");
        assert!(s.unknown_reason.is_some());
    }
    // A nesting sqlparser refuses.
    let deep = format!("select {}1{}", "(".repeat(300), ")".repeat(300));
    assert_eq!(one(&deep).kind, K::Unknown);
}

#[test]
fn where_clauses_and_pinned_keys() {
    let s = one("update t set a = 1 where id = 5 and k = ?");
    assert_eq!(s.has_where, Some(true));
    let p = s.pinned.unwrap();
    assert_eq!(p.relation, rel("t"));
    assert_eq!(p.columns, ["k", "id"]);
    let s = one("delete from db.t as x where x.id = '7' and x.v > 3");
    assert_eq!(s.pinned.unwrap().columns, ["id"]);
    // Floats and expressions pin nothing.
    assert_eq!(
        one("delete from t where id = 1.0").pinned.unwrap().columns,
        Vec::<String>::new()
    );
    assert_eq!(
        one("delete from t where id = a + 1")
            .pinned
            .unwrap()
            .columns,
        Vec::<String>::new()
    );
    // Multi-table forms pin nothing.
    assert!(
        one("update t1, t2 set t1.a = 1 where t1.id = 1")
            .pinned
            .is_none()
    );
    assert!(
        one("delete t1 from t1 join t2 on t1.a = t2.a where t1.id = 1")
            .pinned
            .is_none()
    );
    assert_eq!(one("delete from t").has_where, Some(false));
    assert_eq!(one("delete from t limit 1").has_where, Some(false));
    assert_eq!(
        one("update t1 join t2 on t1.id = t2.id set t1.a = t2.a").has_where,
        Some(false)
    );
    assert_eq!(one("insert into t values (1)").has_where, None);
    assert_eq!(
        one("explain analyze delete from t where a = 1").has_where,
        Some(true)
    );
    assert_eq!(one("explain delete from t").has_where, None);
}

#[test]
fn set_statements_and_harmless_settings() {
    for sql in [
        "set names utf8mb4",
        "set names 'utf8mb4' collate 'utf8mb4_bin'",
        "set character set utf8mb4",
        "set session time_zone = '+00:00', autocommit = 0",
        "set @@sql_select_limit = 10",
        "set @@session.max_execution_time = 1000",
        "set transaction isolation level read committed",
        "set session transaction_read_only = on",
        "set @a = 1, @b := 'x'",
        "set @a = (select ssn from customers)",
        "use shop",
        // sql_mode values that name no mode changing how a text lexes (the
        // door reads the session's mode again after them).
        "set sql_mode = ''",
        "set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",
    ] {
        let s = one(sql);
        assert!(s.effects.contains(Effect::SessionConfig), "{sql}");
        assert!(s.harmless_config, "{sql} should be harmless");
    }
    for sql in [
        "set sql_mode = concat(@@sql_mode, ',ANSI_QUOTES')",
        "set sql_mode = 'no_backslash_escapes'",
        "set sql_mode = @m",
        "set sql_mode = upper(@m)",
        "set @@sql_mode = 'ANSI'",
        "set session sql_mode = 'ANSI'",
        "set names big5",
        "set character_set_client = sjis",
        "set transaction read write",
        "set session transaction_read_only = 0",
        "set foreign_key_checks = 0",
        "set global time_zone = '+00:00'",
        "set @a = 1, sql_log_bin = 0",
        "start transaction read write",
    ] {
        let s = one(sql);
        assert!(!s.config_is_harmless(), "{sql} should not be harmless");
    }
    // USE names its database for the door to check.
    assert_eq!(one("use `shop`").name.as_deref(), Some("shop"));
}

#[test]
fn what_follows_a_lexing_change_in_one_message_is_unknown() {
    let a = Analyzer::default();
    let got = a.analyze(
        "set sql_mode = 'NO_BACKSLASH_ESCAPES'; select 'a\\'; drop table t; -- '",
        Mode::default(),
    );
    assert_eq!(got[0].kind, StatementKind::SetConfig);
    assert!(
        got[1..].iter().all(|s| s.kind == StatementKind::Unknown),
        "{got:?}"
    );
    let got = a.analyze("set names utf8mb4; select 1", Mode::default());
    assert_eq!(got[1].kind, StatementKind::Unknown);
    // Last in its message, or before nothing, it is judged as itself.
    let got = a.analyze("select 1; set sql_mode = ''", Mode::default());
    assert!(
        got.iter().all(|s| s.kind != StatementKind::Unknown),
        "{got:?}"
    );
}

#[test]
fn tracked_settings() {
    let t = |sql: &str| tracked(sql, Mode::default());
    assert_eq!(
        t("set sql_mode = 'ANSI'"),
        Tracked {
            sql_mode: true,
            charset: false
        }
    );
    assert!(t("set @@session.sql_mode = ''").sql_mode);
    assert!(t("set @@global.sql_mode = ''").sql_mode);
    assert_eq!(
        t("set names latin1"),
        Tracked {
            sql_mode: false,
            charset: true
        }
    );
    assert!(t("set character set utf8mb4").charset);
    assert!(t("set character_set_client = big5").charset);
    assert_eq!(t("set autocommit = 1"), Tracked::default());
    assert_eq!(t("select 'set sql_mode = 1'"), Tracked::default());
    assert!(t("select 1; set sql_mode = ''").sql_mode);
    // Fails closed.
    assert_eq!(
        t("set"),
        Tracked {
            sql_mode: true,
            charset: true
        }
    );
    assert_eq!(
        t("set 'x"),
        Tracked {
            sql_mode: true,
            charset: true
        }
    );
}

#[test]
fn prepare_and_execute() {
    let s = one("prepare s from 'delete from t where id = ?'");
    assert_eq!(s.name.as_deref(), Some("s"));
    let inner = s.inner.as_ref().unwrap();
    assert_eq!(inner.kind, K::Delete);
    assert!(s.effects.contains(Effect::Write));
    // Resolved like PostgreSQL's: EXECUTE takes the prepared statement's
    // class; a PREPARE FROM @var forgets an earlier one of the same name.
    let mut session = crate::SessionState::default();
    let stmts = crate::resolve(
        &a("prepare s from 'delete from t'; execute s"),
        &mut session,
    );
    assert_eq!(stmts[1].kind, K::Execute);
    assert_eq!(stmts[1].nested, [K::Delete]);
    assert!(stmts[1].effects.contains(Effect::Write));
    let stmts = crate::resolve(&a("prepare s from @v; execute s"), &mut session);
    assert_eq!(stmts[1].kind, K::Unknown);
    let stmts = crate::resolve(&a("execute s"), &mut session);
    assert_eq!(stmts[0].kind, K::Unknown);
}

#[test]
fn kill_targets() {
    assert_eq!(kill_target(&one("kill 7")), Some(KillTarget::Connection(7)));
    assert_eq!(
        kill_target(&one("kill connection 7")),
        Some(KillTarget::Connection(7))
    );
    assert_eq!(
        kill_target(&one("kill query 7")),
        Some(KillTarget::Query(7))
    );
    assert_eq!(
        kill_target(&one("kill hard query 7")),
        Some(KillTarget::Query(7))
    );
    assert_eq!(kill_target(&one("kill query id 7")), None);
    assert_eq!(kill_target(&one("kill user bob")), None);
    assert_eq!(kill_target(&one("select 7")), None);
    assert_eq!(one("kill user bob").kind, K::Kill);
}

#[test]
fn relations_and_functions() {
    let s = one("select f(a), db.g(b), LOAD_FILE('x') from db.t join u on t.id = u.id");
    assert_eq!(s.relations, [rel("db.t"), rel("u")]);
    assert_eq!(s.functions, ["f", "db.g", "load_file"]);
    let s = one("with c as (select * from real_t) select * from c");
    assert_eq!(s.relations, [rel("real_t")], "a CTE is no relation");
    let s = Analyzer::new(&["my_evil*".into()]).analyze("select MY_EVIL_fn(1)", Mode::default());
    assert!(s[0].effects.contains(Effect::UnsafeFunction));
    // A call sqlparser reads as a name still counts.
    let s = one("select sleep (1)");
    assert!(s.effects.contains(Effect::UnsafeFunction));
    assert_eq!(
        one("load data infile 'f' into table db.t (a, b)").relations,
        [rel("db.t")]
    );
    assert_eq!(one("truncate table db.t").relations, [rel("db.t")]);
    assert_eq!(
        one("drop table if exists a, db.b").relations,
        [rel("a"), rel("db.b")]
    );
    assert_eq!(
        one("lock tables a read, db.b as x write").relations,
        [rel("a"), rel("db.b")]
    );
}

// ---------------------------------------------------------------------------
// Lineage.

#[test]
fn lineage_of_selects() {
    let s = one("select c.ssn, name as n, 1, count(*) from customers c");
    assert_eq!(
        s.lineage.outputs,
        [
            Output::Column(vec![col("customers", "ssn")]),
            Output::Column(vec![col("customers", "name")]),
            Output::Column(vec![]),
            Output::Column(vec![Source::Function("count".into())]),
        ]
    );
    // Stars: whole rows of tables, derived tables expanded.
    let s = one("select * from t, (select ssn as x from customers) d");
    assert_eq!(
        s.lineage.outputs,
        [
            Output::Star(vec![Source::WholeRow(rel("t"))]),
            Output::Column(vec![col("customers", "ssn")]),
        ]
    );
    let s = one("select d.* from (select ssn from customers) d");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("customers", "ssn")])]
    );
    // Through a derived table's star.
    let s = one("select d.ssn from (select * from customers) d");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![Source::WholeRow(rel("customers"))])]
    );
    // An unqualified column in a join: every candidate.
    let s = one("select ssn from customers join t on customers.id = t.id");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![
            col("customers", "ssn"),
            col("t", "ssn")
        ])]
    );
    assert_eq!(
        s.lineage.predicates,
        [col("customers", "id"), col("t", "id")]
    );
    // Database-qualified.
    let s = one("select shop.customers.ssn from shop.customers");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("shop.customers", "ssn")])]
    );
}

#[test]
fn lineage_through_functions_ctes_and_unions() {
    let s = one(
        "select concat(ssn), hex(ssn), group_concat(ssn order by id), json_object('k', ssn), cast(ssn as char), substring(ssn, 1, 3) from customers",
    );
    let want_fn = [
        "concat",
        "hex",
        "group_concat",
        "json_object",
        "cast",
        "substring",
    ];
    assert_eq!(s.lineage.outputs.len(), 6);
    for (o, f) in s.lineage.outputs.iter().zip(want_fn) {
        let Output::Column(src) = o else {
            panic!("{o:?}")
        };
        assert!(src.contains(&col("customers", "ssn")), "{f}: {src:?}");
        assert!(src.contains(&Source::Function(f.into())), "{f}: {src:?}");
    }
    let s = one("with c (x) as (select ssn from customers) select x from c");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("customers", "ssn")])]
    );
    let s = one("select id from t union all select ssn from customers");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![
            col("t", "id"),
            col("customers", "ssn")
        ])]
    );
    let s = one(
        "with recursive r (n) as (select ssn from customers union all select n from r) select n from r",
    );
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("customers", "ssn")])]
    );
    // A scalar subquery, and a node not modeled: everything under it.
    let s = one("select (select max(ssn) from customers) from t");
    let Output::Column(src) = &s.lineage.outputs[0] else {
        panic!()
    };
    assert!(src.contains(&col("customers", "ssn")));
    let s = one("select ssn between 'a' and name from customers");
    let Output::Column(src) = &s.lineage.outputs[0] else {
        panic!()
    };
    assert!(src.contains(&col("customers", "ssn")) && src.contains(&col("customers", "name")));
    // Predicates: WHERE, GROUP BY, HAVING, ORDER BY, EXISTS.
    let s = one(
        "select count(*) from customers where ssn like 'x%' group by name having max(id) > 1 order by email",
    );
    for c in ["ssn", "name", "id", "email"] {
        assert!(
            s.lineage.predicates.contains(&col("customers", c)),
            "{c}: {:?}",
            s.lineage.predicates
        );
    }
    let s = one("select 1 from t where exists (select 1 from customers where ssn = 'x')");
    assert!(s.lineage.predicates.contains(&col("customers", "ssn")));
}

#[test]
fn lineage_written_out_of_the_result() {
    let s = one("insert into t (v) select ssn from customers");
    assert_eq!(s.lineage.written, [col("customers", "ssn")]);
    let s = one("update t join customers c on c.id = t.id set t.v = c.ssn");
    assert_eq!(s.lineage.written, [col("customers", "ssn")]);
    let s = one(
        "insert into t (id, v) values (1, 'a') on duplicate key update v = (select ssn from customers limit 1)",
    );
    assert!(s.lineage.written.contains(&col("customers", "ssn")));
    let s = one("select ssn into @x from customers");
    assert_eq!(s.lineage.outputs, []);
    assert_eq!(s.lineage.written, [col("customers", "ssn")]);
    let s = one("select ssn from customers into outfile '/tmp/x'");
    assert_eq!(s.lineage.outputs, []);
    let s = one("create table x as select ssn from customers");
    assert_eq!(s.lineage.written, [col("customers", "ssn")]);
    let s = one("set @x = (select ssn from customers where id = 1)");
    assert_eq!(s.lineage.written, [col("customers", "ssn")]);
    assert_eq!(s.lineage.outputs, []);
    let s = one("do @x := (select ssn from customers limit 1)");
    assert!(
        s.lineage.written.contains(&col("customers", "ssn")),
        "{:?}",
        s.lineage
    );
    // MariaDB's RETURNING is a result.
    let s = one("delete from customers where id = 1 returning ssn");
    assert_eq!(
        s.lineage.outputs,
        [Output::Column(vec![col("customers", "ssn")])]
    );
    // HANDLER READ: every column of what it names, and nothing traceable.
    let s = one("handler customers read first");
    assert_eq!(
        s.lineage.outputs,
        [Output::Star(vec![
            Source::WholeRow(rel("customers")),
            Source::Opaque
        ])]
    );
    // CALL: the procedure's output.
    let s = one("call p(ssn)");
    let Output::Star(src) = &s.lineage.outputs[0] else {
        panic!()
    };
    assert!(src.contains(&Source::Function("p".into())));
}

// ---------------------------------------------------------------------------
// Properties.

/// Comments and whitespace between tokens never change a classification:
/// every space of each text replaced by a comment, a line comment, an
/// empty executable comment or other whitespace classifies the same.
#[test]
fn separators_do_not_change_classification() {
    let texts = [
        "select a from t where b = 1",
        "delete from t where id = 2",
        "update t set a = 1",
        "insert into t values (1, 'a b')",
        "drop database d",
        "set global x = 1",
        "select load_file ( 'x' )",
        "load data infile 'f' into table t",
        "prepare s from 'delete from t'",
        "select 1 ; delete from t",
    ];
    let seps = [
        " /* c */ ",
        "\n# c\n",
        "-- c\n",
        " /*!*/ ",
        "\t\r\n",
        " /*+ hint */ ",
    ];
    for text in texts {
        let base: Vec<(K, Effects)> = a(text).iter().map(|s| (s.kind, s.effects)).collect();
        for sep in seps {
            // Outside strings only: split on the quotes.
            let varied: String = text
                .split('\'')
                .enumerate()
                .map(|(i, part)| {
                    if i % 2 == 0 {
                        part.replace(' ', sep)
                    } else {
                        part.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("'");
            let got: Vec<(K, Effects)> = a(&varied).iter().map(|s| (s.kind, s.effects)).collect();
            assert_eq!(got, base, "{varied:?}");
        }
    }
}

/// Every prefix of a text lexes or fails cleanly: no panic, spans inside
/// the text, and no prefix of a write is a read of the whole.
#[test]
fn every_prefix_is_handled() {
    let text =
        "select 'a\\'b', `c``d`, \"e\" /*! , 0x41 */ from t # x\n; delete from t where id = ? -- z";
    for end in 0..=text.len() {
        let prefix = &text[..end];
        for s in a(prefix) {
            assert!(
                s.span.0 <= s.span.1 && s.span.1 <= prefix.len(),
                "{prefix:?}"
            );
        }
        let _ = value_spans(prefix, Mode::default());
        let _ = tracked(prefix, Mode::default());
    }
}
