#!/usr/bin/env bash
# Load: many concurrent sessions through one airlock (docs/benchmarks.md,
# "Load").
#
#   bench/load.sh    # IDLE=900 ACTIVE=100 DURATION=20 MANY=10000
#
# airlock holds one upstream connection per session and pools none, so
# airlock and the baseline both sit in front of pgbouncer (transaction
# pooling, 20 server connections to the local PostgreSQL): the upstream can
# take 10,000 sessions and both targets see the same one.
#   1. baseline: load.py -> pgbouncer: IDLE idle + ACTIVE active sessions
#      running `select 1` back to back for SECONDS
#   2. airlock:  load.py -> airlock serve -> pgbouncer, the same mix, with
#      airlock's RSS before and after the idle sessions opened
#   3. airlock with MANY idle sessions: RSS
# Each prints one JSON line (bench/load.py); the added p99 is airlock's p99
# minus the baseline's, from the same run. Needs a release build
# (NO_BUILD=1 to skip it), pgbouncer and python3. Each airlock session
# holds two sockets (client and upstream): MANY idle sessions need 2*MANY
# descriptors, so MANY is capped below half the hard `ulimit -n`.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-900}; ACTIVE=${ACTIVE:-100}; DURATION=${DURATION:-20}; MANY=${MANY:-10000}
ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
if (( 2 * MANY + 500 > FDS )); then
    MANY=$(( (FDS - 500) / 2 ))
    echo "load: ulimit -n is $FDS: $MANY idle sessions at most" >&2
fi
PG_HOST=${PG_HOST:-127.0.0.1}; PG_PORT=${PG_PORT:-5432}
[[ -n "${NO_BUILD:-}" ]] || cargo build --release --quiet --bin airlock
AIRLOCK=${AIRLOCK_BIN:-${CARGO_TARGET_DIR:-target}/release/airlock}
TMP=$(mktemp -d); PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; pkill -f "pgbouncer $TMP/" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

BPORT=$(free_port)
cat >"$TMP/pgbouncer.ini" <<EOF2
[databases]
postgres = host=$PG_HOST port=$PG_PORT dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/users.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = $((MANY + 2000))
ignore_startup_parameters = extra_float_digits,options,application_name,statement_timeout
logfile = $TMP/pgbouncer.log
EOF2
echo '"postgres" ""' >"$TMP/users.txt"
if [[ $EUID -eq 0 ]]; then chown -R postgres "$TMP"; fi
runuser_maybe() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- bash -c "ulimit -n $FDS; exec \"\$@\"" bash "$@"; else "$@"; fi; }
runuser_maybe pgbouncer "$TMP/pgbouncer.ini" >/dev/null 2>&1 &
PIDS+=($!); wait_port "$BPORT"

APORT=$(free_port); HPORT=$(free_port)
cat >"$TMP/airlock.yaml" <<EOF2
data_dir: $TMP/airlock-data
listen: {postgres: 127.0.0.1:$APORT, http: 127.0.0.1:$HPORT}
identity: {dev_issuer: true}
limits: {max_sessions: $((MANY + 1000))}
connections:
  load:
    upstream: {host: 127.0.0.1, port: $BPORT, database: postgres, tls: disable}
    roles:
      app: {user: postgres}
access:
  - {name: load, groups: [load], connections: [load], roles: [app], mode: read-write}
EOF2
"$AIRLOCK" serve --config "$TMP/airlock.yaml" 2>"$TMP/airlock.log" &
APID=$!; PIDS+=($APID); wait_port "$APORT"
TOKEN=$("$AIRLOCK" token --config "$TMP/airlock.yaml" --sub load --groups load --ttl 2h)

echo "baseline (pgbouncer): $IDLE idle + $ACTIVE active, ${DURATION}s"
python3 bench/load.py "127.0.0.1:$BPORT" postgres postgres "" --idle "$IDLE" --active "$ACTIVE" --seconds "$DURATION"
echo "airlock -> pgbouncer: $IDLE idle + $ACTIVE active, ${DURATION}s"
python3 bench/load.py "127.0.0.1:$APORT" app load "$TOKEN" --idle "$IDLE" --active "$ACTIVE" --seconds "$DURATION" --pid "$APID"
echo "airlock -> pgbouncer: $MANY idle"
python3 bench/load.py "127.0.0.1:$APORT" app load "$TOKEN" --idle "$MANY" --active 1 --seconds 2 --pid "$APID"
