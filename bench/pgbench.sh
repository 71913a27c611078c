#!/usr/bin/env bash
# pgbench -S through airlock and the usual baselines, in one run.
#
#   bench/pgbench.sh                      # DURATION=10 ROUNDS=3
#   DURATION=5 ROUNDS=3 bench/pgbench.sh
#
# Targets, all in front of the same PostgreSQL (PG_HOST:PG_PORT, trust auth,
# superuser postgres):
#   direct     pgbench -> PostgreSQL
#   pgbouncer  pgbench -> pgbouncer (pool_mode=transaction) -> PostgreSQL
#   forwarder  pgbench -> bare tokio TCP forwarder (examples/tcp_forwarder.rs) -> PostgreSQL
#   airlock    pgbench -> airlock serve (dev-issuer token as password) -> PostgreSQL
#   airlock-b  the same with a second airlock binary (only with COMPARE_BIN)
#   airlock-policy  the same binary with the example policy's guardrails loaded
#   airlock-masking the same binary with masking rules loaded (two column
#                   rules and every content detector)
#   airlock-full    full policy: the guardrails and the masking rules above,
#                   recording with journal fsync every 100ms to the default
#                   SQLite store
#   airlock-full-b  full policy with the COMPARE_BIN binary
#
# Every (mode, clients) cell runs all targets back to back, the start target
# rotating each round, for ROUNDS rounds; the report gives the median TPS and
# median average latency per cell, ratios to direct and to pgbouncer, each
# proxy's own CPU time per transaction (from /proc/<pid>/stat), and the
# per-round airlock/pgbouncer and airlock/forwarder ratios (each from two runs
# seconds apart). See docs/benchmarks.md.
#
# Environment knobs:
#   DURATION  seconds per pgbench run (10)
#   ROUNDS    rounds over all cells (3)
#   MODES     pgbench -M values ("simple extended prepared")
#   CLIENTS   client counts ("1 10"); -j is 1 for one client, 2 otherwise
#   TARGETS   ("direct pgbouncer forwarder airlock")
#   SCALE     pgbench -i scale of database airlock_bench (10)
#   PG_HOST, PG_PORT   the PostgreSQL under test (127.0.0.1, 5432)
#   NO_BUILD=1         skip cargo build (use the binaries already in target/)
#   AIRLOCK_BIN        the airlock binary to measure (target/release/airlock)
#   COMPARE_BIN        a second airlock binary (say, another commit's build),
#                      measured in the same run as target "airlock-b" (and
#                      "airlock-full-b" when TARGETS names it)
#   RESULTS_DIR        where the markdown report goes (bench/results)
#
# Writes the report to stdout and to $RESULTS_DIR/<UTC date-time>.md. Every
# process it starts and its temp dir are removed on exit. The database
# airlock_bench is kept (re-initialised only when its scale differs).

set -euo pipefail

# Which knobs came from the environment (for the report).
declare -A ORIG_KNOBS
for knob in MODES CLIENTS TARGETS SCALE AIRLOCK_BIN COMPARE_BIN; do
    [[ -n "${!knob:-}" ]] && ORIG_KNOBS[$knob]=1
done

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-simple extended prepared}
CLIENTS=${CLIENTS:-1 10}
TARGETS=${TARGETS:-direct pgbouncer forwarder airlock}
SCALE=${SCALE:-10}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
DB=airlock_bench

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AIRLOCK_BIN_GIVEN=${AIRLOCK_BIN:+1}
AIRLOCK_BIN=${AIRLOCK_BIN:-$TARGET_DIR/release/airlock}
COMPARE_BIN=${COMPARE_BIN:-}
if [[ -n "$COMPARE_BIN" && " $TARGETS " != *" airlock-b "* && " $TARGETS " != *" airlock-full-b "* ]]; then
    TARGETS="$TARGETS airlock-b"
fi
FORWARDER_BIN=$TARGET_DIR/release/examples/tcp_forwarder

log() { echo "[pgbench.sh $(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in pgbench psql python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ " $TARGETS " == *" pgbouncer "* ]]; then
    command -v pgbouncer >/dev/null || die "pgbouncer is not installed (apt-get install pgbouncer)"
fi

# --- cleanup -----------------------------------------------------------------

TMP=$(mktemp -d /tmp/airlock-bench.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU time (user + system, all threads) of process $1, in clock ticks.
cpu_ticks() {
    if [[ -n "$1" ]]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi
}
CLK_TCK=$(getconf CLK_TCK)

wait_port() { # port name pid
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || die "$2 exited during startup (see its log above)"
        sleep 0.1
    done
    die "$2 did not listen on port $1"
}

# --- build -------------------------------------------------------------------

if [[ -z "${NO_BUILD:-}" ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p airlock --bin airlock --example tcp_forwarder) >&2
fi
[[ -x "$FORWARDER_BIN" ]] || die "$FORWARDER_BIN is missing"

# --- database ----------------------------------------------------------------

export PGSSLMODE=disable PGCONNECT_TIMEOUT=10
PGADMIN=(psql -X -A -t -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres)
"${PGADMIN[@]}" -d postgres -c 'select 1' >/dev/null || die "PostgreSQL at $PG_HOST:$PG_PORT is not reachable as postgres"
if [[ -z $("${PGADMIN[@]}" -d postgres -c "select 1 from pg_database where datname = '$DB'") ]]; then
    log "creating database $DB"
    "${PGADMIN[@]}" -d postgres -c "create database $DB" >/dev/null
fi
have_scale=$("${PGADMIN[@]}" -d "$DB" -c "select count(*) from pgbench_branches" 2>/dev/null || echo 0)
if [[ "$have_scale" != "$SCALE" ]]; then
    log "pgbench -i -s $SCALE $DB"
    pgbench -i -q -s "$SCALE" -h "$PG_HOST" -p "$PG_PORT" -U postgres "$DB" >&2
fi

# --- targets -----------------------------------------------------------------

IS_ROOT=0
[[ $(id -u) == 0 ]] && IS_ROOT=1

# conninfo arguments and password per target
declare -A T_PORT T_USER T_DB T_PASS T_PID
T_PORT[direct]=$PG_PORT; T_USER[direct]=postgres; T_DB[direct]=$DB; T_PASS[direct]=; T_PID[direct]=

BOUNCER_VERSION=n/a
BOUNCER_PREPARED=0
PREPARED_NOTE=
if [[ " $TARGETS " == *" pgbouncer "* ]]; then
    BOUNCER_VERSION=$(pgbouncer --version | awk 'NR==1 {print $2}')
    # Protocol-level prepared statements in transaction mode: pgbouncer >= 1.21
    # with max_prepared_statements > 0.
    if [[ "$(printf '%s\n1.21\n' "$BOUNCER_VERSION" | sort -V | head -1)" == "1.21" ]]; then
        BOUNCER_PREPARED=1
    else
        PREPARED_NOTE="pgbouncer $BOUNCER_VERSION has no max_prepared_statements (added in 1.21): in transaction mode a statement prepared on one server connection is missing on the next, so -M prepared is not run through it."
    fi
    BDIR=$TMP/pgbouncer
    mkdir -p "$BDIR"
    BPORT=$(free_port)
    echo '"postgres" ""' >"$BDIR/userlist.txt"
    cat >"$BDIR/pgbouncer.ini" <<EOF
[databases]
$DB = host=$PG_HOST port=$PG_PORT dbname=$DB user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = trust
auth_file = $BDIR/userlist.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = $BDIR/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
    if [[ $BOUNCER_PREPARED == 1 ]]; then
        echo "max_prepared_statements = 100" >>"$BDIR/pgbouncer.ini"
    fi
    BOUNCER_ARGS=()
    if [[ $IS_ROOT == 1 ]]; then
        # pgbouncer refuses to run as root; -u switches to postgres.
        chown -R postgres:postgres "$BDIR"
        BOUNCER_ARGS=(-u postgres)
    fi
    T_PORT[pgbouncer]=$BPORT; T_USER[pgbouncer]=postgres; T_DB[pgbouncer]=$DB; T_PASS[pgbouncer]=
fi

# Starting (and, should one die mid-run, restarting) the proxies.
start_pgbouncer() {
    pgbouncer "${BOUNCER_ARGS[@]}" "$BDIR/pgbouncer.ini" >>"$BDIR/stdout.log" 2>&1 &
    T_PID[pgbouncer]=$!
    PIDS+=($!)
    wait_port "$BPORT" pgbouncer $! || { cat "$BDIR"/*.log >&2; exit 1; }
}
start_forwarder() {
    "$FORWARDER_BIN" "127.0.0.1:$FPORT" "$PG_HOST:$PG_PORT" 2>>"$TMP/forwarder.log" &
    T_PID[forwarder]=$!
    PIDS+=($!)
    wait_port "$FPORT" forwarder $!
}
start_airlock() { # name (airlock or airlock-b)
    "${T_BIN[$1]}" serve --config "$TMP/$1.yaml" 2>>"$TMP/$1.log" &
    T_PID[$1]=$!
    PIDS+=($!)
    wait_port "${T_PORT[$1]}" "$1" $! || { tail -20 "$TMP/$1.log" >&2; exit 1; }
}
RESTARTS=
ensure_up() { # target
    local pid=${T_PID[$1]:-}
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
        log "warning: $1 (pid $pid) is gone, killed by something else; restarting it"
        RESTARTS="$RESTARTS $1@$(date -u +%H:%M:%S)"
        case $1 in
            airlock*) start_airlock "$1" ;;
            *) "start_$1" ;;
        esac
    fi
}

if [[ " $TARGETS " == *" pgbouncer "* ]]; then
    start_pgbouncer
fi

if [[ " $TARGETS " == *" forwarder "* ]]; then
    FPORT=$(free_port)
    start_forwarder
    T_PORT[forwarder]=$FPORT; T_USER[forwarder]=postgres; T_DB[forwarder]=$DB; T_PASS[forwarder]=
fi

# An airlock instance with its own config, dev issuer and token: connection
# `bench` (the database), role `app` (user postgres), read-write for group
# `bench`.
setup_airlock() { # name binary [extra yaml]
    local name=$1 port http
    [[ -x "$2" ]] || die "$2 is missing"
    port=$(free_port)
    http=$(free_port)
    cat >"$TMP/$name.yaml" <<EOF
data_dir: $TMP/$name-data
listen:
  postgres: 127.0.0.1:$port
  http: 127.0.0.1:$http
identity:
  dev_issuer: true
connections:
  bench:
    upstream: {host: $PG_HOST, port: $PG_PORT, database: $DB, tls: disable}
    roles:
      app: {user: postgres}
access:
  - name: bench
    groups: [bench]
    connections: [bench]
    roles: [app]
    mode: read-write
${3:-}
EOF
    T_BIN[$name]=$2
    T_PORT[$name]=$port; T_USER[$name]=app; T_DB[$name]=bench
    start_airlock "$name"
    T_PASS[$name]=$("$2" token --config "$TMP/$name.yaml" --sub bench --groups bench --ttl 2h)
}
declare -A T_BIN
if [[ " $TARGETS " == *" airlock "* ]]; then
    setup_airlock airlock "$AIRLOCK_BIN"
fi
# The guardrails of the product contract's example policy: what a realistic
# deployment evaluates on every statement.
GUARDRAILS='guardrails:
  - {name: no-drop-database, match: {effects: [drop_database, alter_system, copy_program, unsafe_function]}, action: deny}
  - {name: review-schema-changes, match: {effects: [ddl, truncate]}, action: approve, approvers: [dba]}
  - {name: review-unbounded-writes, match: {statements: [update, delete], where: absent}, action: approve, approvers: [dba]}
  - {name: review-large-writes, match: {statements: [update, delete], estimated_rows_over: 1000}, action: approve, approvers: [dba]}'
if [[ " $TARGETS " == *" airlock-policy "* ]]; then
    setup_airlock airlock-policy "$AIRLOCK_BIN" "$GUARDRAILS"
fi
# Two column rules and every detector: every text value pgbench reads is
# scanned.
MASKING='masking:
  rules:
    - {name: ssn, columns: ["*.ssn"], strategy: {partial: {keep_last: 4}}}
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: detectors, detect: [credit_card, ssn, email, phone, iban, jwt, aws_access_key_id], strategy: redact}'
if [[ " $TARGETS " == *" airlock-masking "* ]]; then
    setup_airlock airlock-masking "$AIRLOCK_BIN" "$MASKING"
fi
if [[ " $TARGETS " == *" airlock-b "* ]]; then
    [[ -n "$COMPARE_BIN" ]] || die "target airlock-b needs COMPARE_BIN"
    setup_airlock airlock-b "$COMPARE_BIN"
fi
# Full policy: what a production deployment runs on every statement.
FULL="$GUARDRAILS
$MASKING
journal: {fsync: 100ms}"
if [[ " $TARGETS " == *" airlock-full "* ]]; then
    setup_airlock airlock-full "$AIRLOCK_BIN" "$FULL"
fi
if [[ " $TARGETS " == *" airlock-full-b "* ]]; then
    [[ -n "$COMPARE_BIN" ]] || die "target airlock-full-b needs COMPARE_BIN"
    setup_airlock airlock-full-b "$COMPARE_BIN" "$FULL"
fi

read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    [[ -n "${T_PORT[$t]:-}" ]] || die "unknown target $t"
    PGPASSWORD=${T_PASS[$t]} psql -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${T_PORT[$t]}" \
        -U "${T_USER[$t]}" -d "${T_DB[$t]}" -c 'select count(*) from pgbench_branches' >"$TMP/check.log" 2>&1 \
        || { cat "$TMP/check.log" "$TMP"/*.log >&2 2>/dev/null; die "target $t does not answer"; }
done
log "targets up: $(for t in "${TARGET_LIST[@]}"; do printf '%s=%s ' "$t" "${T_PORT[$t]}"; done)"

# --- machine info --------------------------------------------------------------

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP=$(date -u +%Y-%m-%d-%H%M)
NPROC=$(nproc)
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
PG_VERSION=$("${PGADMIN[@]}" -d postgres -c 'show server_version')
PGBENCH_VERSION=$(pgbench --version | awk '{print $3}')
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi
describe_bin() { # binary: when it was built, and the note left next to it (binary.txt), if any
    local d
    d="$1 built $(date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ)"
    [[ -f "$1.txt" ]] && d="$d ($(cat "$1.txt"))"
    echo "$d"
}
if [[ -n "$AIRLOCK_BIN_GIVEN" ]]; then
    AIRLOCK_VERSION=$(describe_bin "$AIRLOCK_BIN")
else
    AIRLOCK_VERSION="$COMMIT, $(describe_bin "$AIRLOCK_BIN")"
fi
COMPARE_VERSION=
[[ -n "$COMPARE_BIN" ]] && COMPARE_VERSION=$(describe_bin "$COMPARE_BIN")
# The knobs this run was given, for the report's command line.
INVOCATION="DURATION=$DURATION ROUNDS=$ROUNDS"
for knob in MODES CLIENTS TARGETS SCALE AIRLOCK_BIN COMPARE_BIN; do
    [[ -n "${!knob:-}" && -n "${ORIG_KNOBS[$knob]:-}" ]] && INVOCATION="$INVOCATION $knob=\"${!knob}\""
done
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')

# --- runs --------------------------------------------------------------------

RAW=$TMP/raw.tsv
: >"$RAW"
read -r -a MODE_LIST <<<"$MODES"
read -r -a CLIENT_LIST <<<"$CLIENTS"
ntargets=${#TARGET_LIST[@]}
total=$((ROUNDS * ${#MODE_LIST[@]} * ${#CLIENT_LIST[@]} * ntargets))
n=0
log "running $total pgbench runs of ${DURATION}s (about $((total * (DURATION + 1) / 60)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in "${MODE_LIST[@]}"; do
        for c in "${CLIENT_LIST[@]}"; do
            j=2
            ((c == 1)) && j=1
            for ((k = 0; k < ntargets; k++)); do
                # Rotate which target goes first, so none always runs right
                # after the same neighbour.
                t=${TARGET_LIST[$(((k + round - 1) % ntargets))]}
                n=$((n + 1))
                if [[ $t == pgbouncer && $mode == prepared && $BOUNCER_PREPARED == 0 ]]; then
                    printf '%s\t%s\t%s\t%s\tna\tna\tna\n' "$round" "$mode" "$c" "$t" >>"$RAW"
                    continue
                fi
                out=$TMP/run-$n.log
                ensure_up "$t"
                cpu0=$(cpu_ticks "${T_PID[$t]}")
                if PGPASSWORD=${T_PASS[$t]} pgbench -S -n -T "$DURATION" -M "$mode" -c "$c" -j "$j" \
                    -h 127.0.0.1 -p "${T_PORT[$t]}" -U "${T_USER[$t]}" "${T_DB[$t]}" >"$out" 2>&1; then
                    tps=$(awk '/^tps = / {print $3; exit}' "$out")
                    lat=$(awk '/^latency average = / {print $4; exit}' "$out")
                    txns=$(awk '/^number of transactions actually processed: / {print $6; exit}' "$out")
                    cpu1=$(cpu_ticks "${T_PID[$t]}")
                    # The proxy's own CPU time per transaction, in µs (none for direct).
                    cpu=na
                    if [[ -n "${T_PID[$t]}" && -n "$txns" && "$txns" != 0 ]]; then
                        cpu=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
                    fi
                else
                    log "pgbench failed for $t $mode c=$c:"
                    tail -5 "$out" >&2
                    tps=fail lat=fail cpu=na
                fi
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$c" "$t" "${tps:-fail}" "${lat:-fail}" "$cpu" >>"$RAW"
                log "[$n/$total] round $round $mode c=$c $t: tps=${tps:-fail} lat=${lat:-fail}ms proxy-cpu=${cpu}us/txn"
            done
        done
    done
done
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

# --- report ------------------------------------------------------------------

mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/$STAMP.md
export INVOCATION RAW STARTED DURATION ROUNDS NPROC CPU KERNEL PG_VERSION PGBENCH_VERSION BOUNCER_VERSION \
    COMMIT AIRLOCK_VERSION COMPARE_VERSION LOAD_BEFORE LOAD_AFTER PREPARED_NOTE RESTARTS TARGETS MODES CLIENTS SCALE
python3 - >"$REPORT" <<'PY'
import os, statistics
from collections import defaultdict

env = os.environ
rows = [l.rstrip("\n").split("\t") for l in open(env["RAW"]) if l.strip()]
targets = env["TARGETS"].split()
modes = env["MODES"].split()
clients = env["CLIENTS"].split()

runs = defaultdict(list)          # (mode, c, target) -> [(round, tps, lat)]
def num(v):
    try:
        return float(v)
    except ValueError:
        return v

for rnd, mode, c, t, tps, lat, cpu in rows:
    runs[(mode, c, t)].append((int(rnd), num(tps), num(lat), num(cpu)))

def med(mode, c, t, i):
    vals = [r[i] for r in runs[(mode, c, t)] if not isinstance(r[i], str)]
    if not vals:
        marks = {r[i] for r in runs[(mode, c, t)]}
        return "n/a" if "fail" not in marks else "fail"
    return statistics.median(vals)

def ratio(a, b):
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) and b else "–"

def fmt(v, spec):
    return format(v, spec) if isinstance(v, float) else v

p = print
p(f"# pgbench -S: direct, pgbouncer, bare forwarder, airlock ({env['STARTED']})")
p()
p(f"`{env['INVOCATION']} bench/pgbench.sh` — "
  f"`pgbench -S -n -T {env['DURATION']} -M <mode> -c <clients> -j <1|2>`, scale {env['SCALE']}, "
  f"targets run back to back per cell, first target rotating per round; medians over {env['ROUNDS']} rounds.")
p()
p(f"- Machine: {env['NPROC']} CPUs ({env['CPU']}), Linux {env['KERNEL']}, loopback TCP")
p(f"- PostgreSQL {env['PG_VERSION']}, pgbench {env['PGBENCH_VERSION']}, pgbouncer {env['BOUNCER_VERSION']}")
p(f"- airlock: {env['AIRLOCK_VERSION']}")
if env.get("COMPARE_VERSION"):
    p(f"- airlock-b: {env['COMPARE_VERSION']}")
p(f"- Load average (1, 5, 15 min) before: {env['LOAD_BEFORE']}; after: {env['LOAD_AFTER']}")
if env.get("RESTARTS"):
    p(f"- Proxies that died mid-run (killed from outside) and were restarted before the next run: {env['RESTARTS'].strip()}")
if env.get("PREPARED_NOTE"):
    p(f"- {env['PREPARED_NOTE']}")
p()
p("| mode | clients | target | TPS (median) | avg latency ms (median) | × direct | × pgbouncer | proxy CPU µs/txn (median) |")
p("|---|---:|---|---:|---:|---:|---:|---:|")
for mode in modes:
    for c in clients:
        d = med(mode, c, "direct", 1) if "direct" in targets else None
        b = med(mode, c, "pgbouncer", 1) if "pgbouncer" in targets else None
        for t in targets:
            tps, lat = med(mode, c, t, 1), med(mode, c, t, 2)
            cpu = med(mode, c, t, 3) if t != "direct" else ""
            vs_b = ratio(tps, b) if t not in ("direct", "pgbouncer") else ""
            p(f"| {mode} | {c} | {t} | {fmt(tps, '.0f')} | {fmt(lat, '.3f')} | {ratio(tps, d)} | {vs_b} | {fmt(cpu, '.1f')} |")
p()

def paired(mode, c, a, b):
    ra = {r[0]: r[1] for r in runs[(mode, c, a)] if isinstance(r[1], float)}
    rb = {r[0]: r[1] for r in runs[(mode, c, b)] if isinstance(r[1], float)}
    return [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]

for al in [t for t in targets if t.startswith("airlock")]:
    p(f"{al} per round, paired with the run of the same cell and round (seconds apart):")
    p()
    p(f"| mode | clients | {al} / pgbouncer per round | median | {al} / forwarder per round | median | extra µs/query vs direct (1 client) |")
    p("|---|---:|---|---:|---|---:|---:|")
    for mode in modes:
        for c in clients:
            cols = []
            for base in ("pgbouncer", "forwarder"):
                rs = paired(mode, c, al, base) if base in targets else []
                cols.append(", ".join(f"{r:.2f}" for r in rs) or "n/a")
                cols.append(f"{statistics.median(rs):.2f}" if rs else "n/a")
            extra = ""
            if c == "1" and "direct" in targets:
                la, ld = med(mode, c, al, 2), med(mode, c, "direct", 2)
                if isinstance(la, float) and isinstance(ld, float):
                    extra = f"{(la - ld) * 1000:.0f}"
            p(f"| {mode} | {c} | {cols[0]} | {cols[1]} | {cols[2]} | {cols[3]} | {extra} |")
    p()

p("<details><summary>All runs</summary>")
p()
p("| round | mode | clients | target | TPS | avg latency ms | proxy CPU µs/txn |")
p("|---:|---|---:|---|---:|---:|---:|")
for rnd, mode, c, t, tps, lat, cpu in rows:
    p(f"| {rnd} | {mode} | {c} | {t} | {tps} | {lat} | {cpu} |")
p()
p("</details>")
PY
cat "$REPORT"
log "report written to $REPORT"
