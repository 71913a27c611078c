#!/usr/bin/env bash
# Builds airlock as the Dockerfile does (a static glibc binary, release) and
# runs it in an empty root: no shared libraries, no /etc, nothing but the
# binary and a policy file. The container image's final stage is exactly
# that plus CA certificates and a passwd line, so this is the check that
# stands in for `docker build` where no container runtime exists. By hand
# (a release build takes minutes); results in docs/deploy.md.
#
#   bench/static_root.sh            # CARGO_TARGET_DIR defaults to target/static
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target/static}"
triple=x86_64-unknown-linux-gnu
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target "$triple" --bin airlock --target-dir "$target_dir")
bin="$target_dir/$triple/release/airlock"

echo "== file"
file "$bin"
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "FAIL: $bin links shared libraries:"; ldd "$bin"; exit 1
fi

jail="$(mktemp -d)"
trap 'rm -rf "$jail"' EXIT
install -m 0755 "$bin" "$jail/airlock"
# The image's final stage carries the CA bundle (distroless ships it): the
# issuers' HTTPS clients need roots to be built at all.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$jail/etc/ssl/certs/ca-certificates.crt"
# What every container runtime mounts: /dev/null, /dev/random and
# /dev/urandom. A static binary finds no getrandom() in libc at run time,
# so random ids and keys come from these files.
mkdir -p "$jail/dev"
mknod -m 666 "$jail/dev/null" c 1 3
mknod -m 444 "$jail/dev/urandom" c 1 9
mknod -m 444 "$jail/dev/random" c 1 8
cp "$root/deploy/compose/airlock.yaml" "$jail/airlock.yaml"
echo "== in an empty root: $(find "$jail" | wc -l) entries"
chroot "$jail" /airlock --version
# The shipped policy names secret files that do not exist in the jail: the
# check must fail cleanly, naming them, rather than crash.
if chroot "$jail" /airlock policy check /airlock.yaml > "$jail/out" 2>&1; then
  echo "unexpected: the policy check passed without its secret files"; cat "$jail/out"; exit 1
fi
cat "$jail/out"
grep -q 'secret' "$jail/out" || { echo "FAIL: no secret error"; exit 1; }
# A minimal policy that needs no file checks clean.
cat > "$jail/min.yaml" <<'YAML'
listen: {http: 127.0.0.1:0}
identity: {issuers: [{name: corp, issuer: "https://login.example.com/", audience: airlock}]}
YAML
chroot "$jail" /airlock policy check /min.yaml
# And it serves: the HTTP listener answers /healthz from outside the jail.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$jail/serve.yaml" <<YAML
listen: {http: 127.0.0.1:$port}
data_dir: /data
identity: {dev_issuer: true}
YAML
mkdir -p "$jail/data"
chroot "$jail" /airlock serve --config /serve.yaml > "$jail/serve.log" 2>&1 &
server=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" || { cat "$jail/serve.log"; kill "$server"; exit 1; }
kill -TERM "$server"; wait "$server" || true
echo "ok: the static binary runs and serves in an empty root"
