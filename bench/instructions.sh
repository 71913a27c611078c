#!/usr/bin/env bash
# The gateway's own instructions per pgbench -S transaction, with and without
# masking rules, counted by callgrind: deterministic, so a few-percent cost
# can be measured on a noisy machine where TPS cannot resolve it.
#
#   bench/instructions.sh     # MODES="simple extended prepared" LOW=200 HIGH=1200
#   CONFIGS="full" AIRLOCK_BIN=/tmp/airlock-old bench/instructions.sh
#
# Configurations (CONFIGS, default "plain masking"): plain (no policy),
# masking (the masking rules below), full (the example guardrails, the
# masking rules, journal fsync every 100ms). Every thread of the gateway is
# counted, the shipper's included.
#
# For each mode and configuration it runs the gateway under callgrind twice,
# once with LOW and once with HIGH transactions of one pgbench client, and
# reports (Ir(HIGH) - Ir(LOW)) / (HIGH - LOW): startup and login cancel out.
# Needs valgrind, pgbench and the airlock_bench database of bench/pgbench.sh.
set -euo pipefail
MODES=${MODES:-simple extended prepared}
CONFIGS=${CONFIGS:-plain masking}
LOW=${LOW:-200}
HIGH=${HIGH:-1200}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${AIRLOCK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock}
TMP=$(mktemp -d)
trap 'pkill -f "$TMP" 2>/dev/null || true; rm -rf "$TMP"' EXIT

MASKING='masking:
  rules:
    - {name: ssn, columns: ["*.ssn"], strategy: {partial: {keep_last: 4}}}
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: detectors, detect: [credit_card, ssn, email, phone, iban, jwt, aws_access_key_id], strategy: redact}'

config() { # name port [extra]
    cat >"$TMP/$1.yaml" <<EOF
data_dir: $TMP/$1-data
listen: {postgres: 127.0.0.1:$2, http: 127.0.0.1:$(($2 + 100))}
identity: {dev_issuer: true}
connections:
  bench:
    upstream: {host: 127.0.0.1, port: 5432, database: airlock_bench, tls: disable}
    roles: {app: {user: postgres}}
access:
  - {name: bench, groups: [bench], connections: [bench], roles: [app]}
${3:-}
EOF
}

ir() { # name port mode transactions -> total instructions
    local out=$TMP/$1-$3-$4.out pid
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve --config "$TMP/$1.yaml" 2>/dev/null &
    pid=$!
    for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null || { echo "the gateway did not start" >&2; exit 1; }
    local token
    token=$("$BIN" token --config "$TMP/$1.yaml" --sub bench --groups bench --ttl 1h)
    PGPASSWORD=$token pgbench -n -S -M "$3" -c 1 -t "$4" -h 127.0.0.1 -p "$2" -U app bench >"$out.pgbench" 2>&1 || { cat "$out.pgbench" >&2; exit 1; }
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^summary:/ {print $2}' "$out"
}

GUARDRAILS='guardrails:
  - {name: no-drop-database, match: {effects: [drop_database, alter_system, copy_program, unsafe_function]}, action: deny}
  - {name: review-schema-changes, match: {effects: [ddl, truncate]}, action: approve, approvers: [dba]}
  - {name: review-unbounded-writes, match: {statements: [update, delete], where: absent}, action: approve, approvers: [dba]}
  - {name: review-large-writes, match: {statements: [update, delete], estimated_rows_over: 1000}, action: approve, approvers: [dba]}'

declare -A PORT=([plain]=7501 [masking]=7502 [full]=7503)
config plain 7501
config masking 7502 "$MASKING"
config full 7503 "$GUARDRAILS
$MASKING
journal: {fsync: 100ms}"
echo "| mode | configuration | instructions per transaction |"
echo "|---|---|---:|"
for mode in $MODES; do
    for name in $CONFIGS; do
        port=${PORT[$name]}
        # A first run creates the dev issuer's key; it is not measured.
        ir "$name" "$port" "$mode" 10 >/dev/null
        lo=$(ir "$name" "$port" "$mode" "$LOW")
        hi=$(ir "$name" "$port" "$mode" "$HIGH")
        echo "| $mode | $name | $(((hi - lo) / (HIGH - LOW))) |"
    done
done
