//! Schema-only access (SPEC §14, docs/agents.md): the catalog, plain
//! EXPLAIN and aggregates over groups of at least `k` rows pass; every
//! query that would show a row's own value is refused or returns nothing
//! of it. Through psql (simple protocol), tokio-postgres (extended
//! protocol, parameters bound) and MCP's `query`.

use serde_json::{Value, json};

use crate::common::{self, Cleanup, Gateway, direct, stderr, stdout};
use crate::mcp::Mcp;

/// `local_config` plus a schema-only rule for group `schema` (k = 10),
/// MCP on.
fn config() -> String {
    common::local_config(
        r#"  - name: schema-readers
    groups: [schema]
    connections: [test]
    roles: [readonly]
    mode: schema-only
mcp: {enabled: true}
"#,
    )
}

/// Table `t`: 25 rows, 15 in `north`, 9 in `south`, 1 in `east`, each
/// with its own ssn; `salary` 1000 + id; `bonus` 777 for id 5, NULL
/// otherwise. And a table of the user's named like the catalog's,
/// `pg_<t>`.
fn seed(t: &str) -> Cleanup {
    direct(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, ssn text, region text, salary int, bonus int);
         INSERT INTO {t} SELECT g, lpad(g::text, 3, '0') || '-45-6789',
           CASE WHEN g <= 15 THEN 'north' WHEN g <= 24 THEN 'south' ELSE 'east' END, 1000 + g,
           CASE WHEN g = 5 THEN 777 END
         FROM generate_series(1, 25) g;
         CREATE TABLE pg_{t} AS SELECT * FROM {t}"
    ));
    Cleanup::sql(format!(
        "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS pg_{t}"
    ))
}

/// The hint of a refusal, parsed, after checking it is schema-only's.
fn schema_only_refusal(e: &tokio_postgres::Error, sql: &str) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    assert_eq!(db.code().code(), "42501", "{sql}: {db:?}");
    assert!(
        db.message().contains("rule \"schema-only\""),
        "{sql}: {db:?}"
    );
    let hint: Value = serde_json::from_str(db.hint().expect("a hint")).unwrap();
    assert_eq!(hint["rule"], "schema-only", "{sql}: {hint}");
    assert_eq!(hint["retry"], false, "{sql}: {hint}");
    assert!(
        hint["try"].as_str().unwrap().contains("fewer than 10 rows"),
        "{sql}: {hint}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_only_shows_the_schema_and_large_aggregates_and_no_row() {
    let t = common::unique("schema_only");
    let _cleanup = seed(&t);
    let gw = Gateway::start(&config()).await;
    let token = gw.token("devin", &["schema"]);

    // psql: the catalog, \d, EXPLAIN, and aggregates; small groups left out.
    let psql = |sql: &str| gw.psql(&token, "test", "readonly", sql);
    let out = psql(&format!(
        "SELECT column_name FROM information_schema.columns WHERE table_name = '{t}' ORDER BY ordinal_position"
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "id\nssn\nregion\nsalary\nbonus");
    let out = psql(&format!("\\d {t}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ssn"), "{}", stdout(&out));
    let out = psql(&format!(
        "EXPLAIN SELECT * FROM {t} WHERE ssn = '001-45-6789'"
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Scan"), "{}", stdout(&out));
    let out = psql(&format!(
        "SELECT count(*), sum(salary) FROM {t}; SELECT region, count(*), avg(salary)::int FROM {t} GROUP BY region ORDER BY 1"
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    // `south` (9 rows) and `east` (1) are under k = 10.
    assert_eq!(stdout(&out), "25|25325\nnorth|15|1008");

    // Evasions: refused, or nothing identifying comes back.
    for sql in [
        format!("SELECT * FROM {t}"),
        format!("SELECT ssn FROM {t} LIMIT 1"),
        format!("SELECT min(ssn) FROM {t}"),
        format!("SELECT string_agg(ssn, ',') FROM {t}"),
        format!("SELECT ssn, row_number() OVER () FROM {t}"),
        format!("SELECT count(*) FILTER (WHERE ssn = '001-45-6789') FROM {t}"),
        format!("SELECT avg(x) FROM (SELECT salary AS x FROM {t} WHERE id = 5) s"),
        format!("EXPLAIN ANALYZE SELECT count(*) FROM {t}"),
        format!("COPY {t} TO STDOUT"),
        "SELECT most_common_vals::text FROM pg_stats".to_string(),
        // A CTE named like the table; a sub-select reading one row.
        format!("WITH {t} AS (SELECT * FROM {t}) SELECT * FROM {t}"),
        format!(
            "SELECT count(*) FROM {t} WHERE id <= (SELECT salary - 1000 FROM {t} WHERE id = 5)"
        ),
        // The user's table named like the catalog's.
        format!("SELECT * FROM pg_{t}"),
        "SHOW ALL".to_string(),
        // Settings by another name; a delay as a channel.
        "SELECT * FROM pg_catalog.pg_show_all_settings()".to_string(),
        format!("SELECT count(*) FROM {t} WHERE pg_catalog.pg_sleep(0) IS NULL"),
    ] {
        let out = psql(&sql);
        assert!(!out.status.success(), "{sql}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("schema-only"),
            "{sql}: {}",
            stderr(&out)
        );
    }
    for sql in [
        format!("SELECT ssn, count(*) FROM {t} GROUP BY ssn HAVING count(*) >= 1"),
        format!("SELECT avg(salary) FROM {t} WHERE id = 5 LIMIT 1"),
        format!("SELECT count(*) FROM {t} WHERE ssn = '001-45-6789'"),
        // 24 NULLs do not make one bonus a group of 25.
        format!("SELECT avg(bonus) FROM {t}"),
    ] {
        let out = psql(&sql);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{sql}");
    }
    // An error does not quote a value the query could not return.
    let out = psql(&format!("SELECT count(*) FROM {t} WHERE ssn::int > 0"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hidden on a schema-only route"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("45-6789"), "{}", stderr(&out));
    // Nor one that names a `reg*` cast's text (class 42, `42883`).
    let out = psql(&format!(
        "SELECT count(*) FROM {t} WHERE ssn::regoper IS NULL"
    ));
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("45-6789"), "{}", stderr(&out));
    // Nor does one that quotes nothing (a date out of range, built from a
    // row's value).
    let out = psql(&format!(
        "SELECT count(*) FROM {t} WHERE id = 5 AND pg_catalog.make_date(salary, 13, 1) IS NULL"
    ));
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("1005"), "{}", stderr(&out));

    // The extended protocol: a prepared aggregate, executed with each
    // parameter, is rewritten once at its Parse.
    let client = gw.client("readonly", &token).await.unwrap();
    let by_region = client
        .prepare(&format!("SELECT count(*) FROM {t} WHERE region = $1"))
        .await
        .unwrap();
    let north = client.query(&by_region, &[&"north"]).await.unwrap();
    assert_eq!(north.len(), 1);
    assert_eq!(north[0].get::<_, i64>(0), 15);
    for small in ["south", "east"] {
        assert!(
            client
                .query(&by_region, &[&small])
                .await
                .unwrap()
                .is_empty()
        );
    }
    for sql in [
        format!("SELECT ssn FROM {t} WHERE id = $1"),
        format!("SELECT max(salary) FROM {t} WHERE id = $1"),
    ] {
        let e = client.query(&sql, &[&5i32]).await.unwrap_err();
        schema_only_refusal(&e, &sql);
    }
    // The session goes on after a refusal.
    let rows = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_name = $1",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);

    // Recorded: each refusal under its rule.
    let journal = gw.journal_texts().join("\n");
    assert!(
        journal.contains("\"rule\":\"schema-only\""),
        "no refusal recorded"
    );

    // MCP's query runs through the same judge and the same rewrite.
    let mut mcp = Mcp::connect(&gw, &token, "legacy").await;
    let answer = mcp
        .call(
            "query",
            json!({"connection": "test", "sql": format!("SELECT region, count(*) FROM {t} GROUP BY region ORDER BY 1")}),
        )
        .await;
    assert_eq!(answer["is_error"], false, "{answer}");
    let rows = answer["structured"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{answer}");
    let answer = mcp
        .call(
            "query",
            json!({"connection": "test", "sql": format!("SELECT ssn FROM {t}")}),
        )
        .await;
    assert_eq!(answer["is_error"], true, "{answer}");
    assert_eq!(
        answer["structured"]["hint"]["rule"], "schema-only",
        "{answer}"
    );
    // describe_table's `SELECT * … LIMIT 0` shows columns, no row.
    let answer = mcp
        .call("describe_table", json!({"connection": "test", "table": t}))
        .await;
    assert_eq!(answer["is_error"], false, "{answer}");
    assert!(answer.to_string().contains("\"ssn\""), "{answer}");
    assert!(!answer.to_string().contains("45-6789"), "{answer}");
    mcp.close().await;
}
