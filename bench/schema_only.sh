#!/usr/bin/env bash
# Schema-only aggregates against the same query on a read-only route, one
# gateway, alternating targets (docs/benchmarks.md, "Schema-only mode").
#
#   AIRLOCK_BIN=target/release/airlock bench/schema_only.sh    # ROUNDS=2 SECONDS_EACH=15
#
# Needs the airlock_bench database of bench/pgbench.sh and pgbench.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${AIRLOCK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock}
ROUNDS=${ROUNDS:-2}
SECONDS_EACH=${SECONDS_EACH:-15}
PG_PORT=${PG_PORT:-5432}
TMP=$(mktemp -d)
trap 'pkill -f "$TMP" 2>/dev/null || true; rm -rf "$TMP"' EXIT
cat >"$TMP/airlock.yaml" <<YAML
data_dir: $TMP/data
listen: {postgres: 127.0.0.1:16440, http: 127.0.0.1:18090}
identity: {dev_issuer: true}
connections:
  bench:
    upstream: {host: 127.0.0.1, port: $PG_PORT, database: airlock_bench, tls: disable}
    roles: {readonly: {user: postgres}}
access:
  - {name: schema, groups: [schema], connections: [bench], roles: [readonly], mode: schema-only}
  - {name: reader, groups: [reader], connections: [bench], roles: [readonly], mode: read-only}
YAML
cat >"$TMP/agg.sql" <<'SQL'
\set bid random(1, 10)
SELECT count(*), avg(abalance) FROM pgbench_accounts WHERE bid = :bid AND aid < 2000;
SQL
"$BIN" serve -c "$TMP/airlock.yaml" >"$TMP/serve.log" 2>&1 &
for _ in $(seq 50); do
    curl -fs http://127.0.0.1:18090/readyz >/dev/null 2>&1 && break
    sleep 0.2
done
token() { "$BIN" token -c "$TMP/airlock.yaml" --sub "$1" --groups "$1" --ttl 1h; }
S=$(token schema)
R=$(token reader)
run() { # label token mode
    PGPASSWORD=$2 pgbench -n -h 127.0.0.1 -p 16440 -U readonly -f "$TMP/agg.sql" -M "$3" \
        -c 4 -j 2 -T "$SECONDS_EACH" bench 2>&1 | awk -v l="$1" -v m="$3" '/^tps/ {print m, l, $3}'
}
for round in $(seq "$ROUNDS"); do
    for mode in simple extended prepared; do
        run read-only "$R" "$mode"
        run schema-only "$S" "$mode"
    done
done
