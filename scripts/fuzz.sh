#!/usr/bin/env bash
# Coverage-guided fuzzing of airlock's parsers and sans-IO machines with
# cargo-fuzz (libFuzzer, AddressSanitizer), by hand: `make fuzz`.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     run each target SECONDS (60)
#   scripts/fuzz.sh --minimize [TARGET...]    merge what runs found into the
#                                             committed corpus, minimized
#
# New inputs go to target/fuzz-work/corpus/<target>, crashes to
# target/fuzz-work/artifacts/<target>; the committed seeds in
# fuzz/corpus/<target> are read, not written. One line per target is
# printed: executions, edges covered, features, corpus size, crashes.
# `cargo test -p airlock-fuzz` replays fuzz/corpus on stable (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/fuzz-work
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target/fuzz}

rustup toolchain list | grep -q '^nightly' || { echo "fuzz: needs the nightly toolchain (rustup toolchain list)" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

targets() { grep -o '^name = "[a-z_]*"' fuzz/Cargo.toml | sed 's/name = "\(.*\)"/\1/' | grep -v '^airlock'; }

if [[ ${1:-} == --minimize ]]; then
  shift
  for t in ${@:-$(targets)}; do
    mkdir -p "$work/min/$t"
    (cd fuzz && cargo +nightly fuzz cmin -O "$t" "$work/corpus/$t" 2>/dev/null || true)
    (cd fuzz && cargo +nightly fuzz run -O "$t" "$work/min/$t" "corpus/$t" "$work/corpus/$t" -- -merge=1 >/dev/null 2>&1)
    rm -rf "fuzz/corpus/$t" && mv "$work/min/$t" "fuzz/corpus/$t"
    echo "$t: $(ls "fuzz/corpus/$t" | wc -l) inputs"
  done
  exit 0
fi

secs=${1:-60}; [[ $# -gt 0 ]] && shift
printf '%-20s %12s %8s %8s %8s %8s\n' target execs cov ft corpus crashes
for t in ${@:-$(targets)}; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log=$work/$t.log
  (cd fuzz && cargo +nightly fuzz run -O "$t" "$work/corpus/$t" "corpus/$t" -- \
      -max_total_time="$secs" -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1) >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  corp=$(ls "$work/corpus/$t" | wc -l)
  crashes=$(ls "$work/artifacts/$t" | wc -l)
  printf '%-20s %12s %8s %8s %8s %8s\n' "$t" "$execs" "$cov" "$ft" "$corp" "$crashes"
done
