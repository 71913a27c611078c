#!/usr/bin/env bash
# MySQL point selects: directly to MariaDB and through airlock's MySQL door,
# in one run, with mysqlslap (MariaDB's client package).
#
#   bench/mysqlslap.sh               # QUERIES=20000 ROUNDS=3 CLIENTS="1 10"
#
# Configurations: plain (no guardrails, no masking; recording is always on)
# and full (the SPEC §3 guardrails, masking rules on ssn/email and every
# content detector, journal fsync every 100ms). For scale, a bare TCP
# forwarder (socat, one process per connection) in front of the same
# MariaDB: the cost of one more hop and nothing else. Each round runs
# direct, forward, plain and full in a rotating order, QUERIES point selects
# (`select v from t where id = 42`) spread over the clients; each client
# logs in once. Reports the median queries per second of each and the
# ratios to direct.
#
# Needs the machine's MariaDB on 127.0.0.1:3306 (root, no password), socat,
# and a release build (built unless NO_BUILD=1; AIRLOCK_BIN overrides).
set -euo pipefail
QUERIES=${QUERIES:-20000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1 10}
MY_HOST=127.0.0.1
MY_PORT=${MY_PORT:-3306}
DB=airlock_bench_my
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${AIRLOCK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[mysqlslap.sh $(date +%H:%M:%S)] $*" >&2; }

if [[ ${NO_BUILD:-} != 1 && -z ${AIRLOCK_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bin airlock)
fi

mysql -h "$MY_HOST" -P "$MY_PORT" -u root -e "CREATE DATABASE IF NOT EXISTS $DB;
  CREATE TABLE IF NOT EXISTS $DB.t (id INT PRIMARY KEY, v VARCHAR(40), ssn VARCHAR(11), email VARCHAR(60));
  USE $DB;
  INSERT IGNORE INTO t SELECT seq, CONCAT('row ', seq), CONCAT('123-45-', LPAD(seq, 4, '0')), CONCAT('u', seq, '@example.com') FROM seq_1_to_1000;"

config() { # name port http extra
    cat >"$TMP/$1.yaml" <<EOF
data_dir: $TMP/$1-data
listen: {mysql: 127.0.0.1:$2, http: 127.0.0.1:$3}
identity: {dev_issuer: true}
connections:
  bench:
    protocol: mysql
    upstream: {host: $MY_HOST, port: $MY_PORT, database: $DB, tls: disable}
    roles: {readonly: {user: root}}
access:
  - {name: agents, groups: [ai-agents], connections: [bench], roles: [readonly], mode: read-only}
$4
EOF
}
config plain 16033 16080 ""
config full 16034 16081 'masking:
  rules:
    - {name: ssn, columns: ["*.ssn"], strategy: {partial: {keep_last: 4}}}
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: detectors, detect: [credit_card, ssn, email, phone, iban, jwt, aws_access_key_id], strategy: redact}
journal: {fsync: 100ms}
guardrails:
  - {name: no-drop-database, match: {effects: [drop_database, alter_system, copy_program, copy_file, unsafe_function]}, action: deny}
  - {name: review-unbounded-writes, match: {statements: [update, delete], where: absent}, action: approve, approvers: [dba]}
  - {name: unknown, match: {statements: [unknown]}, action: deny}'

socat TCP-LISTEN:16035,bind=127.0.0.1,reuseaddr,fork "TCP:$MY_HOST:$MY_PORT" &
PIDS+=($!)
for c in plain full; do
    RUST_LOG=warn "$BIN" serve --config "$TMP/$c.yaml" >"$TMP/$c.log" 2>&1 &
    PIDS+=($!)
done
for port in 16080 16081; do
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
done
TOKEN=$("$BIN" token --config "$TMP/plain.yaml" --sub bench --groups ai-agents --ttl 1h)
TOKEN_FULL=$("$BIN" token --config "$TMP/full.yaml" --sub bench --groups ai-agents --ttl 1h)

slap() { # port user password schema clients -> queries per second
    local secs
    secs=$(MYSQL_PWD=$3 mysqlslap -h 127.0.0.1 -P "$1" -u "$2" --create-schema="$4" \
        --query="select v from t where id = 42" --concurrency="$5" \
        --number-of-queries="$QUERIES" --iterations=1 |
        awk '/Average number of seconds/ {print $(NF-1)}')
    awk -v q="$QUERIES" -v s="$secs" 'BEGIN {printf "%.0f", q / s}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for clients in $CLIENTS; do
    : >"$TMP/direct" ; : >"$TMP/forward" ; : >"$TMP/plain" ; : >"$TMP/full"
    for round in $(seq "$ROUNDS"); do
        order=(direct forward plain full)
        for _ in $(seq $((round % 4))); do order=("${order[@]:1}" "${order[0]}"); done
        for who in "${order[@]}"; do
            case $who in
                direct) qps=$(slap "$MY_PORT" root "" "$DB" "$clients") ;;
                forward) qps=$(slap 16035 root "" "$DB" "$clients") ;;
                plain) qps=$(slap 16033 readonly "$TOKEN" bench "$clients") ;;
                full) qps=$(slap 16034 readonly "$TOKEN_FULL" bench "$clients") ;;
            esac
            echo "$qps" >>"$TMP/$who"
            log "clients=$clients round=$round $who: $qps q/s"
        done
    done
    d=$(median <"$TMP/direct"); w=$(median <"$TMP/forward")
    p=$(median <"$TMP/plain"); f=$(median <"$TMP/full")
    printf 'clients=%s direct=%s forward=%s (%.2f x direct) plain=%s (%.2f x direct, %.2f x forward) full=%s (%.2f x direct, %.2f x forward)\n' \
        "$clients" "$d" "$w" "$(echo "$w / $d" | bc -l)" "$p" "$(echo "$p / $d" | bc -l)" \
        "$(echo "$p / $w" | bc -l)" "$f" "$(echo "$f / $d" | bc -l)" "$(echo "$f / $w" | bc -l)"
done
