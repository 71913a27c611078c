//! The fuzz targets under `cargo test`: every committed corpus input
//! replayed, then a short deterministic mutation smoke around them (the
//! real fuzzing is `fuzz/`'s, by hand; docs/security.md).

use std::path::PathBuf;

use crate::TARGETS;

/// Mutants tried per target: enough to shake out a shallow regression,
/// little enough to take about a second in a debug build.
const MUTANTS: usize = 300;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs.into_iter().map(|(_, b)| b).collect()
}

/// xorshift64*: the same mutants on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One of libFuzzer's simpler moves on `input`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0, 0xFF, 0x7F, 0x80, b'\'', b'"', b'\\', b';'][rng.below(8)];
            }
            2 => out.truncate(at),
            3 => {
                let n = rng.below(16);
                out.splice(at..at, (0..n).map(|_| rng.next() as u8));
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let to = (from + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
        }
    }
    out
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_wrapper() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
        let wrapper = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(
            wrapper.contains(&format!("airlock_fuzz::run(\"{name}\"")),
            "fuzz_targets/{name}.rs runs another target"
        );
        assert!(
            cargo.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml lacks {name}"
        );
    }
}

#[test]
fn corpora_replay_and_mutants_pass() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        for input in &inputs {
            target(input);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        for _ in 0..MUTANTS {
            let input = &inputs[rng.below(inputs.len())];
            let other = &inputs[rng.below(inputs.len())];
            let mutant = mutate(&mut rng, input, other);
            let result = std::panic::catch_unwind(|| target(&mutant));
            assert!(result.is_ok(), "{name} failed on {mutant:?}");
        }
    }
}

/// Writes the seed corpora: recorded exchanges of real clients with the
/// local PostgreSQL and MariaDB (through a recording tee), the policy
/// corpora's SQL, tokens from the dev issuer, the example configs. Run by
/// hand, then minimize with `cargo fuzz cmin` (docs/security.md):
/// `cargo test -p airlock-fuzz -- --ignored write_seed_corpora`.
#[test]
#[ignore = "writes fuzz/corpus from live databases; run by hand"]
fn write_seed_corpora() {
    seeds::write_all();
}

mod seeds;
