use super::*;

fn a(sql: &str) -> Vec<Statement> {
    Analyzer::default().analyze(sql, Mode::default())
}

#[test]
fn scratch() {
    for sql in [
        "select 1; drop table t",
        "/*!50000 DROP DATABASE x*/",
        "select 1 /*M!100100 ; drop table t */",
        "select --1",
        "select 1 -- ; drop table t",
        "select 1 # ; drop table t\n; delete from t",
        "select '\\''; drop table t -- '",
        "select * from t for update",
        "select * from t lock in share mode",
        "select ssn into outfile '/tmp/x' from customers",
        "select ssn from customers into @x",
        "set @x = (select ssn from customers limit 1)",
        "set names utf8mb4",
        "set names big5",
        "set global max_connections = 1",
        "set @@global.x = 1",
        "set sql_mode = 'ANSI_QUOTES'",
        "set session time_zone = '+00:00', autocommit = 1",
        "use shop",
        "prepare s from 'delete from t'",
        "prepare s from @v",
        "execute s using @a",
        "deallocate prepare s",
        "do sleep(5)",
        "do load_file('/etc/passwd')",
        "handler t open as h",
        "handler h read first",
        "load data local infile '/tmp/x' into table db.t",
        "kill query 42",
        "kill 7",
        "explain select * from t",
        "explain analyze delete from t where id = 1",
        "analyze delete from t",
        "analyze table t",
        "update t set a = 1 where id = 5 and b = ?",
        "update t1, t2 set t1.a = t2.b",
        "delete t1 from t1 join t2 on t1.id = t2.id",
        "with d as (select id from t) delete from t where id in (select id from d)",
        "create table x as select ssn from customers",
        "create definer=`root`@`%` procedure p() select 1",
        "lock tables t read",
        "insert into t select * from customers",
        "select c.ssn, d.x from customers c join (select ssn as x from customers) d on c.id = d.x",
        "table customers",
        "",
        ";",
        "start transaction read write",
        "begin not atomic select 1; end",
    ] {
        for s in a(sql) {
            eprintln!(
                "{sql:?}\n   {} [{}] nested {:?} where {:?} rel {:?} fn {:?} name {:?} harmless {} pinned {:?} why {:?}\n   lineage {:?}",
                s.kind,
                s.effects,
                s.nested,
                s.has_where,
                s.relations,
                s.functions,
                s.name,
                s.harmless_config,
                s.pinned.as_ref().map(|p| &p.columns),
                s.unknown_reason,
                s.lineage
            );
        }
    }
}
