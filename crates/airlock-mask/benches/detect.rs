//! Cost of content detection per value, all detectors on: plain values
//! must be rejected by the prefilter in tens of nanoseconds, since every
//! value of a result goes through `scan`.
//! `cargo bench -p airlock-mask --bench detect`.

use airlock_mask::{Detector, Detectors};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const VALUES: &[(&str, &str)] = &[
    ("name", "Alice Smith"),
    ("integer", "123456"),
    ("email", "alice.smith@example.com"),
    (
        "sentence_200b",
        "The quarterly report was reviewed by the finance team on Tuesday and, after a \
         short discussion about travel expenses and the new office lease, it was approved \
         without changes for publication next week.",
    ),
    ("card", "4111 1111 1111 1111"),
];

fn scan(c: &mut Criterion) {
    let detectors = Detectors::new(Detector::ALL);
    let mut group = c.benchmark_group("scan");
    for (name, value) in VALUES {
        group.bench_with_input(BenchmarkId::from_parameter(name), value, |b, value| {
            b.iter(|| detectors.scan(std::hint::black_box(value.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
