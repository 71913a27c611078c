//! Cost of `Journal::append` for a ~300-byte event, the recording hot path
//! (goal: ≤ 5 µs p50 with an interval fsync), and with `Fsync::Always` for
//! reference. Criterion reports means over batches; the goal is a median
//! of single appends, so `cargo bench` also prints percentiles of single
//! appends first. `cargo bench -p airlock-journal --bench append`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use airlock_journal::{Fsync, Journal, Options};
use criterion::{Criterion, Throughput, criterion_group};

/// A statement event as recording will write it (canonical JSON).
const EVENT: &[u8] = br#"{"connection":"orders","decision":"allow","kind":"statement","params":["***"],"principal":"agent:ci-bot","role":"readonly","rule":"agents-read","seq":42,"session":"0190f3c2-7d4e-7a51-9c1e-2b7f4a9d0e11","started_at":"2025-06-01T12:00:00Z","text":"SELECT id, status, total FROM orders WHERE customer_id = $1 LIMIT 50"}"#;

fn open(fsync: Fsync) -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(
        dir.path(),
        Options {
            fsync,
            ..Options::default()
        },
    )
    .unwrap();
    (dir, journal)
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_300b");
    group.throughput(Throughput::Bytes(EVENT.len() as u64));
    {
        let (_dir, mut journal) = open(Fsync::Interval(Duration::from_millis(100)));
        group.bench_function("interval_100ms", |b| {
            b.iter(|| journal.append(black_box(EVENT)).unwrap())
        });
    }
    {
        let (_dir, mut journal) = open(Fsync::Always);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        group.bench_function("always", |b| {
            b.iter(|| journal.append(black_box(EVENT)).unwrap())
        });
    }
    group.finish();
}

/// Single-append latency percentiles. With the interval, the caller's timer
/// runs between appends (as the gateway's would), outside the timing.
fn percentiles(name: &str, fsync: Fsync, n: usize) {
    let (_dir, mut journal) = open(fsync);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        journal.append(black_box(EVENT)).unwrap();
        times.push(start.elapsed());
        journal.sync_if_due(Instant::now()).unwrap();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "append_300b/{name} single appends (n={n}): p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
}

criterion_group!(benches, append);

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    if std::env::args().any(|a| a == "--bench") {
        println!("event: {} bytes", EVENT.len());
        percentiles(
            "interval_100ms",
            Fsync::Interval(Duration::from_millis(100)),
            200_000,
        );
        percentiles("always", Fsync::Always, 2_000);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
