//! Classification cost: pgbench's statements and a typical OLTP mix, parsed
//! every time (uncached) and from the per-thread cache (cached, by exact
//! text and by shape). `cargo bench -p airlock-sql --bench classify`.

use airlock_sql::{Analyzer, cache};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const STATEMENTS: &[(&str, &str)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + -2913 WHERE aid = 48213;",
    ),
    (
        "pgbench_insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 48213, -2913, CURRENT_TIMESTAMP);",
    ),
    (
        "oltp_join",
        "SELECT o.id, o.amount, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'open' AND o.created_at > now() - interval '1 day' ORDER BY o.created_at DESC LIMIT 50",
    ),
    (
        "oltp_cte_write",
        "WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO done SELECT * FROM moved",
    ),
    (
        "extended_param",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    ),
];

fn classify(c: &mut Criterion) {
    let analyzer = Analyzer::default();
    let mut uncached = c.benchmark_group("uncached");
    for (name, sql) in STATEMENTS {
        uncached.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| analyzer.analyze(std::hint::black_box(sql)))
        });
    }
    uncached.finish();

    let mut cached = c.benchmark_group("cached");
    for (name, sql) in STATEMENTS {
        cache::analyze(&analyzer, sql);
        cached.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| cache::analyze(&analyzer, std::hint::black_box(sql)))
        });
    }
    cached.finish();

    // A new literal every time: found by shape.
    let mut n = 0u64;
    c.bench_function("shape_hit/pgbench_select", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};");
            cache::analyze(&analyzer, &sql)
        })
    });
}

criterion_group!(benches, classify);
criterion_main!(benches);
