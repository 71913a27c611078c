#!/usr/bin/env bash
# Times the web console's pages in headless Chromium (the same driver as the
# browser tests, crates/airlock/tests/drivers/browser.mjs) on the demo's
# data, after some activity: $SESSIONS recorded psql sessions and $HELD
# statements waiting for approval. Each page is loaded $ROUNDS times; the
# navigation's duration (request start to the load event) is reported as
# median and max. By hand, not in CI.
#
#   bench/console_pages.sh          # ROUNDS=20 SESSIONS=200 HELD=5
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
AIRLOCK=${AIRLOCK:-${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock}
ROUNDS=${ROUNDS:-20}
SESSIONS=${SESSIONS:-200}
HELD=${HELD:-5}
OUT=${OUT:-/tmp/airlock-console-bench}
[ -x "$AIRLOCK" ] || (cd "$ROOT" && cargo build --release -p airlock) || exit 1
mkdir -p "$OUT"
cp "$AIRLOCK" "$OUT/airlock.run"

setsid "$OUT/airlock.run" demo > "$OUT/demo.out" 2>&1 &
DEMO_PID=$!
HELD_PIDS=()
cleanup() {
  for p in "${HELD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  kill -INT "$DEMO_PID" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 1; done
}
trap cleanup EXIT
for _ in $(seq 1 120); do grep -q "airlock demo is running" "$OUT/demo.out" && break; sleep 0.5; done
CONFIG=$(grep -o -- '--config [^ ]*' "$OUT/demo.out" | head -1 | cut -d' ' -f2)
HTTP=$(grep -o 'Console: http://[^ ]*' "$OUT/demo.out" | head -1 | sed 's/Console: //; s#/console##')
[ -n "$CONFIG" ] && [ -n "$HTTP" ] || { cat "$OUT/demo.out"; exit 1; }

agent=$("$OUT/airlock.run" token --config "$CONFIG" --sub agent --groups ai-agents)
dba=$("$OUT/airlock.run" token --config "$CONFIG" --sub dba --groups dba)
for i in $(seq 1 "$SESSIONS"); do
  PGPASSWORD=$agent psql -X -q "host=127.0.0.1 port=6432 dbname=demo user=readonly" \
    -c "select name, email from customers limit 5" > /dev/null 2>&1 || exit 1
done
for i in $(seq 1 "$HELD"); do
  PGPASSWORD=$dba psql -X -q "host=127.0.0.1 port=6432 dbname=demo user=admin" \
    -c "delete from orders" > /dev/null 2>&1 &
  HELD_PIDS+=($!)
done

python3 - "$HTTP" "$ROUNDS" "$ROOT/crates/airlock/tests/drivers/browser.mjs" <<'PY'
import json, statistics, subprocess, sys
http, rounds, driver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = subprocess.Popen(["node", driver], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert "ready" in b.stdout.readline()
def cmd(**c):
    b.stdin.write(json.dumps(c) + "\n"); b.stdin.flush()
    r = json.loads(b.stdout.readline())
    assert r["ok"], (c, r)
    return r
cmd(cmd="goto", url=http + "/console")
cmd(cmd="fill", selector="#subject", value="reviewer")
cmd(cmd="fill", selector="#groups", value="dba, security, admins")
cmd(cmd="submit", selector="#login")
held = cmd(cmd="count", selector="tr[data-approval]")["count"]
sessions = None
print(f"held statements in the queue: {held}")
print(f"{'page':32} {'median ms':>10} {'max ms':>8}")
for path in ["/console/approvals", "/console/access", "/console/sessions", "/console/audit", "/console/policy"]:
    times = [cmd(cmd="timing", url=http + path)["duration_ms"] for _ in range(rounds)]
    if path == "/console/sessions":
        sessions = cmd(cmd="count", selector="#sessions tbody tr")["count"]
    print(f"{path:32} {statistics.median(times):10.1f} {max(times):8.1f}")
print(f"sessions listed: {sessions}")
b.stdin.close(); b.wait()
PY
