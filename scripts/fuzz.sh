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
    # Named inputs (crash regressions) stay as they are, beside the merge.
    find "fuzz/corpus/$t" -type f ! -regex '.*/[0-9a-f]\{40\}' -exec cp {} "$work/min/$t/" \;
    rm -rf "fuzz/corpus/$t" && mv "$work/min/$t" "fuzz/corpus/$t"
    echo "$t: $(ls "fuzz/corpus/$t" | wc -l) inputs"
  done
  exit 0
fi

secs=60
if [[ $# -gt 0 ]]; then
  [[ $1 =~ ^[0-9]+$ ]] || { echo "fuzz: the first argument is the seconds per target, not $1" >&2; exit 2; }
  secs=$1; shift
fi
printf '%-20s %12s %8s %8s %8s %8s\n' target execs cov ft corpus crashes
for t in ${@:-$(targets)}; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log=$work/$t.log
  started=$work/$t.started; touch "$started"
  (cd fuzz && cargo +nightly fuzz run -O "$t" "$work/corpus/$t" "corpus/$t" -- \
      -max_total_time="$secs" -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1) >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
  corp=$(ls "$work/corpus/$t" | wc -l)
  # This run's crashes only: earlier ones stay for a look.
  crashes=$(find "$work/artifacts/$t" -type f -newer "$started" | wc -l)
  printf '%-20s %12s %8s %8s %8s %8s\n' "$t" "$execs" "$cov" "$ft" "$corp" "$crashes"
done
