#!/usr/bin/env bash
# PostgreSQL 15's own regression suite, directly and through airlock: which
# tests' output does the gateway change? A transparency check, run by hand
# (never in CI: it downloads the PostgreSQL sources and takes minutes).
#
#   bench/pg_regress.sh [WORKDIR]             # permissive policy (default)
#   bench/pg_regress.sh --masking [WORKDIR]   # masking rules on, principal not exempt
#   bench/pg_regress.sh --both [WORKDIR]      # one direct run, both airlock modes
#   bench/pg_regress.sh --control [WORKDIR]   # a second direct run, compared the same
#                                             # way: the suite's own run-to-run noise
# (flags combine: --both --control runs direct, direct-control, airlock,
# airlock-masking)
#
# WORKDIR defaults to /tmp/airlock-pg-regress and is kept: the sources and the
# build are reused by the next run, and each run leaves its outputs and diffs
# there (see "Output" below). Run as root on Debian 12 with PostgreSQL 15
# installed (it uses apt-get and runuser; see docs/benchmarks.md).
#
# What it does:
#   1. Sources: `apt-get source postgresql-15` (the installed version when the
#      mirror still has it, else the newest it has) into WORKDIR/src, after
#      enabling deb-src (a file of its own in /etc/apt/sources.list.d) and
#      installing dpkg-dev and postgresql-server-dev-15 when missing.
#   2. Build: regress.so from src/test/regress/regress.c with pgxs, into
#      WORKDIR/lib next to links to the packaged autoinc.so and refint.so
#      (the suite loads all three from --dlpath). pg_regress itself comes
#      with postgresql-server-dev-15 (…/pgxs/src/test/regress/pg_regress).
#      airlock: `cargo build -p airlock` (debug) unless NO_BUILD=1; the
#      binary is copied to WORKDIR/airlock-under-test, so a rebuild of
#      target/ during the run cannot change it between modes.
#   3. For each run (direct, then direct-control, airlock, airlock-masking): a fresh
#      throwaway cluster (initdb as postgres, C locale, UTF8, trust auth,
#      127.0.0.1 on a free port, max_prepared_transactions=2 as in `make
#      check`), database `regression` created directly with the statements
#      pg_regress itself uses, then `pg_regress --use-existing` with
#      parallel_schedule as user postgres. Through airlock, PGHOST/PGPORT
#      point at the gateway and PGPASSWORD is a dev-issuer token (`airlock
#      token --sub regress --groups regress --ttl 12h`); dbname `regression`
#      is the airlock connection of that name and user `postgres` its role
#      profile (upstream user postgres, a superuser), read-write, no
#      guardrails, no masking. The suite connects to no other database (it
#      creates and drops some, and `\c` reconnects to the same one), so one
#      connection is enough. airlock-masking adds masking rules (*.ssn
#      partial, *.email email, the credit_card and ssn detectors); the
#      access rule has no unmask.
#   4. Compare each test's output through airlock with the direct run's (not
#      with the expected files). The connection has `startup_notice: never`;
#      the per-connection startup notice (`NOTICE:  airlock: connection "…"
#      as role …, session <uuid>`) is still deleted, for builds before it.
#      A test whose output is missing on one side counts as different.
#
# Output, in WORKDIR/<mode> for mode direct, direct-control, airlock,
# airlock-masking:
#   results/*.out, regression.diffs   pg_regress's own (against expected/)
#   pg_regress.log, cluster.log, airlock.log, airlock.yaml
# and, for every mode but direct, WORKDIR/<mode>/vs-direct/<test>.diff (one per
# differing test), WORKDIR/<mode>/vs-direct.diffs (all of them) and
# WORKDIR/<mode>/vs-direct.txt (the summary), plus WORKDIR/summary.txt.
#
# Environment knobs:
#   SCHEDULE   serial (default: parallel_schedule's tests in its order, one
#              at a time, written to WORKDIR/serial_schedule) or parallel
#              (its groups run concurrently, as `make check` does: faster;
#              concurrent tests can make outputs vary between runs)
#   TESTS      run these tests instead of the schedule, e.g.
#              "test_setup create_index" (test_setup must come first)
#   NO_BUILD=1 skip cargo build (use AIRLOCK_BIN as it is)
#   AIRLOCK_BIN          the gateway (target/debug/airlock); a note in
#                        AIRLOCK_BIN.txt, if any, goes into the report
#   PG_VERSION_WANTED    source version for apt-get source (the installed
#                        postgresql-15's)
#   RUN_TIMEOUT          seconds allowed per pg_regress run (5400)
#   COMPARE_ONLY=1       run nothing: compare the outputs of the last run in
#                        WORKDIR again (same flags as that run)

set -euo pipefail

MODES=()
WORK=
for arg in "$@"; do
    case $arg in
        --permissive) MODES+=(airlock) ;;
        --masking) MODES+=(airlock-masking) ;;
        --both) MODES+=(airlock airlock-masking) ;;
        --control) MODES+=(direct-control) ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $arg (try --help)" >&2; exit 2 ;;
        *) WORK=$arg ;;
    esac
done
WORK=${WORK:-/tmp/airlock-pg-regress}
((${#MODES[@]})) || MODES=(airlock)
# Modes in a fixed order, each once.
read -r -a MODES <<<"$(for m in direct-control airlock airlock-masking; do
    [[ " ${MODES[*]} " == *" $m "* ]] && printf '%s ' "$m"; done)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AIRLOCK_BIN_GIVEN=${AIRLOCK_BIN:+1}
AIRLOCK_BIN=${AIRLOCK_BIN:-$TARGET_DIR/debug/airlock}
SCHEDULE=${SCHEDULE:-serial}
TESTS=${TESTS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-5400}
PGBIN=/usr/lib/postgresql/15/bin
PGXS_DIR=/usr/lib/postgresql/15/lib/pgxs
PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
PKGLIB=/usr/lib/postgresql/15/lib

log() { echo "[pg_regress.sh $(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (apt-get, and runuser -u postgres for the cluster)"
[[ -x $PGBIN/initdb ]] || die "PostgreSQL 15 is not installed ($PGBIN/initdb)"
id postgres >/dev/null 2>&1 || die "there is no postgres user"
for tool in python3 runuser timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
case $SCHEDULE in serial | parallel) ;; *) die "SCHEDULE is serial or parallel" ;; esac

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
chmod 755 "$WORK"
SRC=$WORK/src
REGRESS_SRC=$SRC/src/test/regress
LIB=$WORK/lib
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$(date +%s)

# --- cleanup -----------------------------------------------------------------

PIDS=()          # airlock gateways we started
CLUSTERS=()      # data directories of clusters we started
cleanup() {
    local pid d
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout 20 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    for d in "${CLUSTERS[@]}"; do
        if [[ -f $d/postmaster.pid ]]; then
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -t 60 stop >/dev/null 2>&1 || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port name pid
    local i
    for i in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || die "$2 exited during startup"
        sleep 0.1
    done
    die "$2 did not listen on port $1"
}

# --- 1. sources --------------------------------------------------------------

ensure_packages() {
    local missing=() p
    for p in dpkg-dev postgresql-server-dev-15; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        timeout 900 apt-get install -y -q "${missing[@]}" >&2
    fi
}

# deb-src entries mirroring the system's deb entries, in a file of our own.
enable_deb_src() {
    local f=/etc/apt/sources.list.d/airlock-deb-src.sources g
    if [[ -n $(apt-cache showsrc postgresql-15 2>/dev/null | head -1) ]]; then
        return 0
    fi
    log "enabling deb-src in $f"
    : >"$f.tmp"
    for g in /etc/apt/sources.list.d/*.sources; do
        [[ $g == "$f" ]] && continue
        # deb822 stanzas whose Types include deb, turned into deb-src.
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /(^|\n)Types:[^\n]*(^|[ \t])deb([ \t\n]|$)/ && !/(^|\n)Enabled: *no/ {
                 sub(/Types:[^\n]*/, "Types: deb-src"); print
             }' "$g" >>"$f.tmp"
    done
    if [[ -f /etc/apt/sources.list ]]; then
        # one-line entries: written as a separate .list file
        sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list >"${f%.sources}.list"
        [[ -s ${f%.sources}.list ]] || rm -f "${f%.sources}.list"
    fi
    { echo "# Added by airlock bench/pg_regress.sh for apt-get source postgresql-15"; cat "$f.tmp"; } >"$f"
    rm -f "$f.tmp"
    timeout 600 apt-get update -q >&2 || log "warning: apt-get update failed"
}

fetch_sources() {
    [[ -f $REGRESS_SRC/parallel_schedule && -f $REGRESS_SRC/regress.c ]] && return 0
    ensure_packages
    enable_deb_src
    command -v dpkg-source >/dev/null || die "dpkg-source is missing (apt-get install dpkg-dev)"
    local installed versions v dl=$WORK/download
    installed=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
    # The installed version first; a snapshot mirror may lack it (security
    # pool), so then every version apt knows, newest first.
    versions=$({
        [[ -n ${PG_VERSION_WANTED:-} ]] && echo "$PG_VERSION_WANTED"
        [[ -n $installed ]] && echo "$installed"
        apt-cache showsrc postgresql-15 | awk '/^Version:/ {print $2}' | sort -r -V
    } | awk '!seen[$0]++')
    [[ -n $versions ]] || die "apt knows no source package postgresql-15 (deb-src not enabled?)"
    rm -rf "$dl" "$SRC"
    mkdir -p "$dl"
    for v in $versions; do
        log "apt-get source postgresql-15=$v"
        if (cd "$dl" && timeout 900 apt-get source -q --download-only "postgresql-15=$v" >&2); then
            log "extracting with dpkg-source"
            (cd "$dl" && dpkg-source -x ./*.dsc "$SRC" >/dev/null)
            echo "$v" >"$WORK/source-version"
            rm -rf "$dl" "$WORK"/postgresql-15_*.orig.tar.*
            return 0
        fi
        rm -f "$dl"/*
    done
    die "apt-get source postgresql-15 failed for every version ($versions)"
}

# --- 2. build ----------------------------------------------------------------

build_regress() {
    ensure_packages
    [[ -x $PG_REGRESS ]] || die "$PG_REGRESS is missing (postgresql-server-dev-15)"
    if [[ -f $LIB/regress.so && $LIB/regress.so -nt $REGRESS_SRC/regress.c ]]; then
        return 0
    fi
    log "building regress.so with pgxs"
    mkdir -p "$LIB"
    cp "$REGRESS_SRC/regress.c" "$LIB/"
    cat >"$LIB/Makefile" <<EOF
MODULES = regress
PG_CONFIG = $PGBIN/pg_config
PGXS := \$(shell \$(PG_CONFIG) --pgxs)
include \$(PGXS)
EOF
    (cd "$LIB" && timeout 600 make -s with_llvm=no >&2)
    # autoinc.so and refint.so (contrib/spi) ship with postgresql-15.
    ln -sf "$PKGLIB/autoinc.so" "$LIB/autoinc.so"
    ln -sf "$PKGLIB/refint.so" "$LIB/refint.so"
}

if [[ -z ${COMPARE_ONLY:-} ]]; then
    fetch_sources
    build_regress
fi
SOURCE_VERSION=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version 2>/dev/null \
    || cat "$WORK/source-version" 2>/dev/null || echo unknown)

# parallel_schedule as is, or one test per line (the same order) for serial.
if [[ $SCHEDULE == serial ]]; then
    SCHEDULE_FILE=$WORK/serial_schedule
    sed -n 's/^test: *//p' "$REGRESS_SRC/parallel_schedule" | tr -s ' ' '\n' | sed '/^$/d; s/^/test: /' >"$SCHEDULE_FILE"
else
    SCHEDULE_FILE=$REGRESS_SRC/parallel_schedule
fi

NEED_AIRLOCK=0
[[ " ${MODES[*]} " == *" airlock"* ]] && NEED_AIRLOCK=1
[[ -n ${COMPARE_ONLY:-} ]] && NEED_AIRLOCK=0
if [[ $NEED_AIRLOCK == 1 && -z ${NO_BUILD:-} ]]; then
    log "cargo build -p airlock (waits for the cargo lock if another build runs)"
    (cd "$ROOT" && timeout 5400 cargo build -p airlock >&2) \
        || die "cargo build -p airlock failed (is the work tree mid-edit? NO_BUILD=1 AIRLOCK_BIN=<a binary> runs another build)"
fi
[[ $NEED_AIRLOCK == 0 || -x $AIRLOCK_BIN ]] || die "$AIRLOCK_BIN is missing"
# A copy, so a rebuild of target/ by someone else during the run cannot
# change the gateway between modes.
GW_BIN=$WORK/airlock-under-test
if [[ $NEED_AIRLOCK == 1 ]]; then
    if [[ -n $AIRLOCK_BIN_GIVEN ]]; then
        AIRLOCK_VERSION="$AIRLOCK_BIN"
        # the note left next to it (binary.txt), as bench/pgbench.sh reads it
        [[ -f $AIRLOCK_BIN.txt ]] && AIRLOCK_VERSION="$AIRLOCK_VERSION ($(cat "$AIRLOCK_BIN.txt"))"
    else
        AIRLOCK_VERSION="$AIRLOCK_BIN, work tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(
            [[ -z $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]] || echo ' with uncommitted changes')"
    fi
    AIRLOCK_VERSION="$AIRLOCK_VERSION, built $(date -u -r "$AIRLOCK_BIN" +%Y-%m-%dT%H:%M:%SZ), sha256 $(sha256sum "$AIRLOCK_BIN" | cut -c1-12)"
    cp "$AIRLOCK_BIN" "$GW_BIN.tmp" && mv "$GW_BIN.tmp" "$GW_BIN"
    echo "$AIRLOCK_VERSION" >"$GW_BIN.txt"
fi

# --- 3. runs -----------------------------------------------------------------

export PGSSLMODE=disable PGCONNECT_TIMEOUT=10

# start_cluster dir: a fresh cluster in dir/data on a free port; sets PG_PORT.
start_cluster() {
    local dir=$1 data=$1/data
    PG_PORT=$(free_port)
    runuser -u postgres -- "$PGBIN/initdb" -D "$data" -U postgres -A trust --no-locale -E UTF8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    mkdir -p "$dir/sock"
    chown postgres: "$dir/sock"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir/sock'
max_prepared_transactions = 2   # as pg_regress's temp instance
fsync = off                     # throwaway
EOF
    CLUSTERS+=("$data")
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$data" -l "$dir/cluster.log" -w -t 120 start >/dev/null \
        || { tail -20 "$dir/cluster.log" >&2; die "the cluster did not start"; }
    # Database regression exactly as pg_regress creates it (create_database()).
    runuser -u postgres -- "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -c 'CREATE DATABASE "regression" TEMPLATE=template0' \
        -c "ALTER DATABASE \"regression\" SET lc_messages TO 'C';
            ALTER DATABASE \"regression\" SET lc_monetary TO 'C';
            ALTER DATABASE \"regression\" SET lc_numeric TO 'C';
            ALTER DATABASE \"regression\" SET lc_time TO 'C';
            ALTER DATABASE \"regression\" SET bytea_output TO 'hex';
            ALTER DATABASE \"regression\" SET timezone_abbreviations TO 'Default';" >&2
}

stop_cluster() { # dir: stop it and delete its data directory (its log stays)
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$1/data" -m fast -t 120 stop >/dev/null 2>&1 || true
    [[ -f $1/data/postmaster.pid ]] || rm -rf "$1/data"
}

# start_airlock dir mode: the gateway in front of the cluster on PG_PORT;
# sets GW_PORT, GW_PID, TOKEN.
start_airlock() {
    local dir=$1 mode=$2 http masking=
    GW_PORT=$(free_port)
    http=$(free_port)
    if [[ $mode == airlock-masking ]]; then
        masking='masking:
  rules:
    - {name: ssn, columns: ["*.ssn"], strategy: {partial: {keep_last: 4}}}
    - {name: email, columns: ["*.email"], strategy: email}
    - {name: detectors, detect: [credit_card, ssn], strategy: redact}'
    fi
    cat >"$dir/airlock.yaml" <<EOF
# Written by bench/pg_regress.sh: a permissive policy for PostgreSQL's
# regression suite. One connection named like the suite's database, whose
# role logs in as the superuser; read-write; no guardrails.
data_dir: $dir/airlock-data
listen:
  postgres: 127.0.0.1:$GW_PORT
  http: 127.0.0.1:$http
identity:
  dev_issuer: true
connections:
  regression:
    upstream: {host: 127.0.0.1, port: $PG_PORT, database: regression, tls: disable}
    roles:
      postgres: {user: postgres}
    startup_notice: never
access:
  - name: regress
    groups: [regress]
    connections: [regression]
    roles: [postgres]
$masking
EOF
    "$GW_BIN" policy check "$dir/airlock.yaml" >&2 || die "invalid $dir/airlock.yaml"
    NO_COLOR=1 "$GW_BIN" serve --config "$dir/airlock.yaml" >>"$dir/airlock.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_port "$GW_PORT" airlock "$GW_PID"
    TOKEN=$("$GW_BIN" token --config "$dir/airlock.yaml" --sub regress --groups regress --ttl 12h)
    PGPASSWORD=$TOKEN timeout 60 "$PGBIN/psql" -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$GW_PORT" \
        -U postgres -d regression -c 'select 1' >/dev/null 2>"$dir/check.log" \
        || { cat "$dir/check.log" >&2; tail -20 "$dir/airlock.log" >&2; die "airlock does not answer"; }
}

stop_airlock() {
    kill "$GW_PID" 2>/dev/null || true
    timeout 20 tail --pid="$GW_PID" -f /dev/null 2>/dev/null || kill -9 "$GW_PID" 2>/dev/null || true
}

declare -A RUN_SECONDS RUN_RC RUN_PASSED
run_suite() { # mode
    local mode=$1 dir=$WORK/$1 host port pass= t0 rc=0
    local args=(--use-existing --bindir="$PGBIN" --inputdir="$REGRESS_SRC" --outputdir="$dir"
        --dlpath="$LIB")
    if [[ -n $TESTS ]]; then
        read -r -a extra <<<"$TESTS"
        args+=("${extra[@]}")
    else
        args+=(--schedule="$SCHEDULE_FILE")
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    # initdb, the server (COPY TO files) and pg_regress (results/) write here.
    chown postgres: "$dir"
    log "$mode: starting a throwaway cluster"
    start_cluster "$dir"
    host=127.0.0.1 port=$PG_PORT
    if [[ $mode == airlock* ]]; then
        start_airlock "$dir" "$mode"
        port=$GW_PORT pass=$TOKEN
        log "$mode: airlock on 127.0.0.1:$GW_PORT in front of 127.0.0.1:$PG_PORT"
    fi
    log "$mode: pg_regress ($( [[ -n $TESTS ]] && echo "tests: $TESTS" || echo "parallel_schedule, $SCHEDULE"))"
    t0=$(date +%s)
    runuser -u postgres -- env PGHOST=$host PGPORT=$port PGUSER=postgres PGPASSWORD="$pass" \
        PGSSLMODE=disable PGCONNECT_TIMEOUT=10 \
        timeout "$RUN_TIMEOUT" "$PG_REGRESS" "${args[@]}" >"$dir/pg_regress.log" 2>&1 || rc=$?
    RUN_SECONDS[$mode]=$(($(date +%s) - t0))
    RUN_RC[$mode]=$rc
    RUN_PASSED[$mode]=$(grep -oE '(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests (failed|passed)(, [0-9]+ of these failures ignored)?)' \
        "$dir/pg_regress.log" | paste -sd ';' || true)
    printf 'seconds=%s rc=%s passed=%q\n' "${RUN_SECONDS[$mode]}" "$rc" "${RUN_PASSED[$mode]}" >"$dir/run.env"
    log "$mode: pg_regress exit $rc after ${RUN_SECONDS[$mode]}s (against expected/: ${RUN_PASSED[$mode]:-no summary})"
    ((rc == 124)) && log "$mode: pg_regress hit RUN_TIMEOUT=$RUN_TIMEOUT"
    ((rc == 2)) && { log "$mode: pg_regress could not run the tests:"; tail -5 "$dir/pg_regress.log" >&2; }
    [[ $mode == airlock* ]] && stop_airlock
    stop_cluster "$dir"
    return 0
}

if [[ -n ${COMPARE_ONLY:-} ]]; then
    # Compare the outputs an earlier run left in WORKDIR again.
    for m in direct "${MODES[@]}"; do
        [[ -f $WORK/$m/run.env ]] || die "no earlier $m run in $WORK"
        seconds= rc= passed=
        source "$WORK/$m/run.env"
        RUN_SECONDS[$m]=$seconds RUN_RC[$m]=$rc RUN_PASSED[$m]=$passed
    done
else
    run_suite direct
    for m in "${MODES[@]}"; do
        run_suite "$m"
    done
fi

# --- 4. compare --------------------------------------------------------------

# The tests in schedule order (or TESTS).
if [[ -n $TESTS ]]; then
    read -r -a TEST_LIST <<<"$TESTS"
else
    read -r -a TEST_LIST <<<"$(sed -n 's/^test: *//p' "$REGRESS_SRC/parallel_schedule" | tr '\n' ' ')"
fi

# The gateway's login notice (one per connection, \c included), and only it.
STARTUP_NOTICE='^NOTICE:  airlock: connection "[^"]*" as role "[^"]*" \(.*\), session [0-9a-f-]{36}(;.*)?$'

# categorise dir test...: one line per test: changed lines and, per hunk of
# its diff, a tag from the lines the gateway's run added. A heuristic for
# reading the report, not a verdict: look at the diffs. Tags:
#   unparsable-refused     airlock refused a statement PostgreSQL also rejects
#                          at parse time, with its own 42501 (no position,
#                          HINT or DETAIL) instead of PostgreSQL's error
#   refused-but-postgres-disagrees  a parse-error refusal whose message is
#                          not the error PostgreSQL gave directly: the
#                          statement ran or failed otherwise there (a cached
#                          analysis of another text: the shape cache), or
#                          both refused it for different reasons
#   function-call-refused  the FunctionCall protocol message (libpq's lo_*
#                          functions, psql's \lo_import) is refused
#   masking:*              refusals by the masking policy
#   masked-error-text      error or notice text masked (*****, "hidden by
#                          airlock masking")
#   masked-values          result cells that became ***** or empty (NULL)
#   knock-on               errors from an object missing after a refusal
#   error-lost-hint-or-detail, other
categorise() {
    python3 - "$@" <<'PY'
import os, re, sys
from collections import Counter

out, tests = sys.argv[1], sys.argv[2:]
RULES = [  # (tag, pattern in an added line), first match wins
    ("function-call-refused", r"FunctionCall protocol message is not supported"),
    ("unparsable-refused", r"statement refused because it (does not parse|uses a Unicode or national string)"),
    ("masking:ddl-refused", r"denied by masking: it changes the schema"),
    ("masking:opaque-sql-refused", r"denied by masking: it runs SQL airlock cannot see into"),
    ("masking:copy-refused", r"denied by masking: the statement would copy"),
    ("masking:other-refusal", r"denied by masking"),
    ("airlock-other-error", r"^\+(ERROR|FATAL|WARNING|NOTICE):  airlock: "),
    ("knock-on", r"^\+ERROR:  .*(does not exist|current transaction is aborted|cannot be dropped because|already exists)"),
    ("masked-error-text", r"^\+(ERROR|DETAIL|CONTEXT|HINT|NOTICE|WARNING|LINE \d+):.*(hidden by airlock masking|\*\*\*\*\*)"),
    ("masked-values", r"\*\*\*\*\*"),
]
def same_errors(removed, added):
    """Whether each parse error airlock gave is the error PostgreSQL gave
    directly. When not, the statement ran, or failed otherwise, on the
    server: airlock judged it by an analysis that is not its own (seen with
    the shape cache: an unparsable text's verdict reused for a valid one of
    the same shape), or both refused it for different reasons."""
    prefixes = ("-ERROR:  ", "-last error message: ")  # psql's \echo :LAST_ERROR_MESSAGE
    theirs = [re.sub(r" at character \d+$", "", l[len(p):])  # VERBOSITY terse
              for l in removed for p in prefixes if l.startswith(p)]
    for l in added:
        m = re.search(r"does not parse: Invalid statement: (.*)$", l)
        if m:
            if m.group(1) not in theirs:
                return False
            theirs.remove(m.group(1))
        elif "Unicode or national string" in l:
            hit = next((x for x in theirs if x.startswith("unsafe use of string constant")), None)
            if hit is None:
                return False
            theirs.remove(hit)
    return True

def masked_rows(removed, added):
    """Result rows whose cells only became empty (NULL) or *****."""
    if not added or len(removed) != len(added):
        return False
    for r, a in zip(removed, added):
        r, a = r[1:], a[1:]
        if re.fullmatch(r"[-+]*", r) and re.fullmatch(r"[-+]*", a):
            continue  # a header's underline, wider or narrower
        rc, ac = r.split("|"), a.split("|")
        if len(rc) != len(ac) or rc == ac:
            return False
        if not all(x.strip() == y.strip() or y.strip() in ("", "*****") for x, y in zip(rc, ac)):
            return False
    return True

totals = Counter()
for t in tests:
    path = os.path.join(out, t + ".diff")
    lines = open(path, errors="replace").read().splitlines()
    if lines and lines[0].startswith("missing:"):
        print(f"    {t:<28} {'-':>5}  output missing")
        totals["output-missing"] += 1
        continue
    hunks, cur = [], None
    for l in lines[2:]:
        if l.startswith("@@"):
            cur = []
            hunks.append(cur)
        elif cur is not None:
            cur.append(l)
    tags = Counter()
    for h in hunks:
        added = [l for l in h if l.startswith("+")]
        removed = [l for l in h if l.startswith("-")]
        tag = next((name for name, pat in RULES if any(re.search(pat, l) for l in added)), None)
        if tag == "unparsable-refused" and not same_errors(removed, added):
            tag = "refused-but-postgres-disagrees"
        if tag is None and masked_rows(removed, added):
            tag = "masked-values"
        if tag is None:
            if not added and all(re.match(r"-(HINT|DETAIL):  ", l) for l in removed):
                tag = "error-lost-hint-or-detail"
            else:
                tag = "other"
        tags[tag] += 1
    changed = sum(1 for l in lines[2:] if l[:1] in "+-")
    print(f"    {t:<28} {changed:>5}  " + ", ".join(f"{k}×{v}" for k, v in tags.most_common()))
    for k in tags:
        totals[k] += 1
if totals:
    print("  tests per hunk tag: " + ", ".join(f"{k} {v}" for k, v in totals.most_common()))
PY
}

SUMMARY=$WORK/summary.txt
{
    echo "PostgreSQL regression suite, direct and through airlock ($STARTED)"
    echo "sources: postgresql-15 $SOURCE_VERSION; server: $($PGBIN/postgres --version)"
    [[ -f $GW_BIN.txt && " ${MODES[*]}" == *" airlock"* ]] && echo "airlock: $(cat "$GW_BIN.txt")"
    echo "schedule: $([[ -n $TESTS ]] && echo "TESTS=$TESTS" || echo "parallel_schedule, $SCHEDULE")"
    echo "direct: ${RUN_SECONDS[direct]}s, exit ${RUN_RC[direct]}, against expected/: ${RUN_PASSED[direct]:-?}"
} >"$SUMMARY"

for m in "${MODES[@]}"; do
    out=$WORK/$m/vs-direct
    rm -rf "$out" "$out.diffs"
    mkdir -p "$out"
    same=0 differ=()
    for t in "${TEST_LIST[@]}"; do
        a=$WORK/direct/results/$t.out b=$WORK/$m/results/$t.out
        if [[ ! -f $a || ! -f $b ]]; then
            differ+=("$t")
            echo "missing: $([[ -f $a ]] || echo "$a ")$([[ -f $b ]] || echo "$b")" >"$out/$t.diff"
            continue
        fi
        if cmp -s "$a" <(sed -E "/$STARTUP_NOTICE/d" "$b"); then
            same=$((same + 1))
        else
            differ+=("$t")
            diff -u --label "direct/results/$t.out" --label "$m/results/$t.out (startup notices removed)" \
                "$a" <(sed -E "/$STARTUP_NOTICE/d" "$b") >"$out/$t.diff" || true
        fi
    done
    for t in "${differ[@]}"; do cat "$out/$t.diff"; done >"$out.diffs"
    notices=$(cat "$WORK/$m"/results/*.out 2>/dev/null | grep -cE "$STARTUP_NOTICE" || true)
    {
        echo
        echo "$m: $same of ${#TEST_LIST[@]} identical to direct; ${#differ[@]} differ"
        echo "  pg_regress: ${RUN_SECONDS[$m]}s, exit ${RUN_RC[$m]}, against expected/: ${RUN_PASSED[$m]:-?}"
        [[ $m == airlock* ]] && echo "    (against expected/ every test fails through airlock: its startup notice is in every output)"
        echo "  startup notices removed: $notices"
        echo "  differing tests, changed lines, and a guess at the cause of each hunk (see below):"
        categorise "$out" "${differ[@]}"
        echo "  diffs: $out/<test>.diff, all in $out.diffs"
    } | tee "$out.txt" >>"$SUMMARY"
done
echo >>"$SUMMARY"
echo "total time: $(($(date +%s) - T0))s; work dir: $WORK" >>"$SUMMARY"

cat "$SUMMARY"
