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
echo "ok: the static binary runs in an empty root"
