#!/usr/bin/env bash
# Masking throughput and memory, in one run.
#
#   bench/masking.sh                 # ROWS=1000000 ROUNDS=5
#
# 1. Throughput: `SELECT id, name, email, ssn, card_number` of ROWS rows,
#    read by psql (whole result) to /dev/null, directly and through airlock
#    with two column rules (ssn partial, email) and every content detector
#    on; ROUNDS rounds, alternating which goes first. Reports the median
#    wall time of each and their ratio.
# 2. Memory: a result of about BIG_MB MB (ROWS rows with a ~1 KB text
#    column) streamed through airlock to psql with FETCH_COUNT (a cursor,
#    fetched 1000 rows at a time, so the client holds little), while the
#    gateway's RSS is sampled every 100 ms. Reports RSS before, peak and
#    after.
#
# Environment knobs: ROWS (1000000), ROUNDS (5), BIG_MB (1024), PG_HOST,
# PG_PORT (127.0.0.1:5432), NO_BUILD=1, AIRLOCK_BIN (target/release/airlock),
# RESULTS_DIR (bench/results), DETECTORS (the seven value detectors; add
# planted_instructions to price that scan), FLAG (1: also
# masking.flag_planted_instructions, which scans the values that pass
# unmasked for planted instructions). Uses database airlock_bench, table mask_bench
# (re-created when its row count differs).

set -euo pipefail
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-5}
BIG_MB=${BIG_MB:-1024}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
DB=airlock_bench
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
AIRLOCK_BIN=${AIRLOCK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock}
DETECTORS=${DETECTORS:-credit_card, ssn, email, phone, iban, jwt, aws_access_key_id}
FLAG=${FLAG:-}

log() { echo "[masking.sh $(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

if [[ -z "${NO_BUILD:-}" ]]; then
    log "building airlock (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin airlock)
fi
[[ -x "$AIRLOCK_BIN" ]] || die "$AIRLOCK_BIN is missing"

direct() { psql -X -A -t -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$@"; }
direct -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
    || direct -d postgres -c "CREATE DATABASE $DB" >/dev/null
have=$(direct -d "$DB" -c "SELECT count(*) FROM mask_bench" 2>/dev/null || echo 0)
if [[ "$have" != "$ROWS" ]]; then
    log "creating mask_bench with $ROWS rows"
    direct -d "$DB" -q -c "DROP TABLE IF EXISTS mask_bench" -c "
        CREATE TABLE mask_bench AS
        SELECT g AS id,
               'Customer ' || g AS name,
               'user' || g || '@example.com' AS email,
               lpad((g % 899 + 100)::text, 3, '0') || '-' || lpad((g % 99 + 1)::text, 2, '0') || '-' || lpad((g % 9999 + 1)::text, 4, '0') AS ssn,
               '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0') AS card_number,
               repeat('x', 1000) AS padding
        FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE mask_bench"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/airlock.yaml" <<EOF
data_dir: $TMP/data
listen: {postgres: 127.0.0.1:$port, http: 127.0.0.1:$http}
identity: {dev_issuer: true}
connections:
  bench:
    upstream: {host: $PG_HOST, port: $PG_PORT, database: $DB, tls: disable}
    roles: {app: {user: postgres}}
access:
  - {name: bench, groups: [bench], connections: [bench], roles: [app]}
masking:
  flag_planted_instructions: $([[ -n "$FLAG" ]] && echo true || echo false)
  rules:
    - {name: ssn, columns: ["*.ssn"], strategy: {partial: {keep_last: 4}}}
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: detectors, detect: [$DETECTORS], strategy: redact}
EOF
"$AIRLOCK_BIN" serve --config "$TMP/airlock.yaml" 2>"$TMP/airlock.log" &
GW=$!
PIDS+=("$GW")
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
TOKEN=$("$AIRLOCK_BIN" token --config "$TMP/airlock.yaml" --sub bench --groups bench --ttl 2h)
through() { PGPASSWORD=$TOKEN psql -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U app -d bench "$@"; }
through -c "SELECT ssn, email, card_number FROM mask_bench WHERE id = 1" >"$TMP/sample"
grep -q '\*\*\*\*\*' "$TMP/sample" || die "airlock did not mask: $(cat "$TMP/sample")"

Q="SELECT id, name, email, ssn, card_number FROM mask_bench"
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
# The gateway's own CPU time (user + system, in clock ticks).
cpu() { awk '{print $14 + $15}' "/proc/$GW/stat"; }
TICKS=$(getconf CLK_TCK)
CPU0=$(cpu)
declare -a T_DIRECT T_AIRLOCK
for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then
        T_DIRECT+=("$(ms direct -d "$DB" -o /dev/null -c "$Q")")
        T_AIRLOCK+=("$(ms through -o /dev/null -c "$Q")")
    else
        T_AIRLOCK+=("$(ms through -o /dev/null -c "$Q")")
        T_DIRECT+=("$(ms direct -d "$DB" -o /dev/null -c "$Q")")
    fi
    log "round $r: direct ${T_DIRECT[-1]} ms, airlock ${T_AIRLOCK[-1]} ms"
done
CPU_MS=$((($(cpu) - CPU0) * 1000 / TICKS / ROUNDS))
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
MD=$(median "${T_DIRECT[@]}")
MA=$(median "${T_AIRLOCK[@]}")

rss() { awk '/VmRSS/ {print $2}' "/proc/$GW/status"; }
RSS_BEFORE=$(rss)
BIG_ROWS=$((BIG_MB * 1024 / 1))
BIG_ROWS=$((BIG_ROWS < ROWS ? BIG_ROWS : ROWS))
(
    peak=0
    while kill -0 "$GW" 2>/dev/null && [[ ! -e "$TMP/done" ]]; do
        v=$(rss); ((v > peak)) && peak=$v
        echo "$peak" >"$TMP/peak"
        sleep 0.1
    done
) &
SAMPLER=$!
BIG_MS=$(ms through -v FETCH_COUNT=1000 -o /dev/null \
    -c "SELECT id, name, email, ssn, card_number, padding FROM mask_bench WHERE id <= $BIG_ROWS")
touch "$TMP/done"
wait "$SAMPLER" || true
RSS_PEAK=$(cat "$TMP/peak")
RSS_AFTER=$(rss)

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/masking-$(date -u +%Y-%m-%d-%H%M).md"
{
    echo "# Masking benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, $(uname -r); PostgreSQL $(direct -d "$DB" -c 'SHOW server_version')."
    echo "Rules: ssn partial, email; detectors: $DETECTORS; flag: ${FLAG:-off}. ROWS=$ROWS ROUNDS=$ROUNDS."
    echo
    echo "| | median ms | all rounds (ms) |"
    echo "|---|---|---|"
    echo "| direct | $MD | ${T_DIRECT[*]} |"
    echo "| airlock, masking | $MA | ${T_AIRLOCK[*]} |"
    echo
    echo "Ratio airlock/direct: $(awk -v a="$MA" -v d="$MD" 'BEGIN {printf "%.2f", a / d}')"
    echo "Gateway CPU per masked SELECT: $CPU_MS ms ($(awk -v c="$CPU_MS" -v r="$ROWS" 'BEGIN {printf "%.0f", c * 1e6 / r}') ns per row)."
    echo "(Masked values are shorter than the originals, so psql has less to read and print through airlock.)"
    echo
    echo "Streaming $BIG_ROWS rows of ~1.1 KB (about $((BIG_ROWS * 1100 / 1048576)) MiB) with FETCH_COUNT=1000 in $BIG_MS ms:"
    echo "gateway RSS before $((RSS_BEFORE / 1024)) MiB, peak $((RSS_PEAK / 1024)) MiB, after $((RSS_AFTER / 1024)) MiB."
} | tee "$OUT"
log "report written to $OUT"
