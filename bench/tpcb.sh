#!/usr/bin/env bash
# pgbench TPC-B-like, direct vs airlock, by protocol mode (4 clients, scale 10):
# airlock with the example policy guardrails (estimated_rows_over included),
# a masked read-write principal, recording with fsync 100ms. Run by hand:
#   cargo build --release -p airlock && DUR=10 bench/tpcb.sh
# At the end it checks that every committed transaction is in the recording:
# each one inserts one pgbench_history row, and each of those INSERTs must be
# a statement event in the store once shipping has caught up.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/airlock}
WORK=$(mktemp -d)
cd "$WORK"
DUR=${DUR:-10}
psql -X -q -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='airlock_tpcb'" | grep -q 1 \
  || { psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "create database airlock_tpcb"; pgbench -q -i -s 10 -h 127.0.0.1 -U postgres airlock_tpcb; }
cat > airlock.yaml <<YAML
listen: {postgres: 127.0.0.1:16433, http: 127.0.0.1:18081}
identity: {dev_issuer: true}
data_dir: $WORK/data
connections:
  airlock_tpcb:
    upstream: {host: 127.0.0.1, port: 5432, database: airlock_tpcb, tls: disable}
    roles: {admin: {user: postgres}}
access:
  - {name: writers, groups: [writers], connections: [airlock_tpcb], roles: [admin]}
masking:
  rules:
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: cards, detect: [credit_card], strategy: redact}
journal: {fsync: 100ms}
$(sed -n '/^guardrails:/,/^$/p' $ROOT/examples/airlock.yaml)
approvals: {timeout: 1s, timeout_in_transaction: 1s}
YAML
: ; "$BIN" serve --config airlock.yaml > serve.log 2>&1 & GW=$!
trap 'kill $GW 2>/dev/null; rm -rf "$WORK"' EXIT
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/16433) 2>/dev/null && break; sleep 0.1; done
TOKEN=$("$BIN" token --config airlock.yaml --sub bench --groups writers --ttl 1h)
history() { psql -X -q -h 127.0.0.1 -U postgres -d airlock_tpcb -tAc "select count(*) from pgbench_history"; }
H0=$(history)
for mode in simple extended prepared; do
  d=$(pgbench -n -c 4 -j 2 -T $DUR -M $mode -h 127.0.0.1 -U postgres airlock_tpcb 2>&1 | grep -oP 'tps = \K[0-9.]+(?= \(without)')
  a=$(PGPASSWORD=$TOKEN PGSSLMODE=disable pgbench -n -c 4 -j 2 -T $DUR -M $mode -h 127.0.0.1 -p 16433 -U admin airlock_tpcb 2>&1 | tee airlock-$mode.log | grep -oP 'tps = \K[0-9.]+(?= \(without)')
  f=$(grep -oP 'number of failed transactions: \K[0-9]+' airlock-$mode.log)
  echo "$mode direct=$d airlock=$a ratio=$(python3 -c "print(round($a/$d,2))") failed=$f"
done
echo "held: $(grep -c 'held for approval' serve.log || true)"
# Only airlock's transactions are counted: the direct runs come first in each
# mode, so count what airlock added by the store's statement events instead.
recorded() {
  "$BIN" audit export --config airlock.yaml 2>/dev/null \
    | grep -c '"kind":"statement".*"text":"INSERT INTO pgbench_history' || true
}
THROUGH=$(( $(grep -h -oP 'number of transactions actually processed: \K[0-9]+' airlock-*.log | paste -sd+) ))
for _ in $(seq 120); do
  [[ $(recorded) -ge $THROUGH ]] && break
  sleep 1
done
echo "committed through airlock: $THROUGH; INSERTs recorded: $(recorded) (history rows added in all: $(( $(history) - H0 )))"
