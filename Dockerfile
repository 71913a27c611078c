# syntax=docker/dockerfile:1
#
# The airlock gateway as a container image: one static binary on a distroless
# base, running as a non-root user. See docs/deploy.md.
#
#   docker build -t airlock:dev .
#   docker run --rm -v $PWD/airlock.yaml:/etc/airlock/airlock.yaml:ro -p 6432:6432 airlock:dev
#
# The default command is `airlock serve --config /etc/airlock/airlock.yaml`.
# The entrypoint is the binary itself, so other subcommands work too:
#   docker run --rm -v $PWD/airlock.yaml:/etc/airlock/airlock.yaml:ro airlock:dev policy check /etc/airlock/airlock.yaml

# ---------------------------------------------------------------------------
# Builder: Debian bookworm with Rust. The workspace needs Rust 1.88 or newer
# (edition 2024); RUST_IMAGE pins another builder when a release must be
# reproducible.
ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE} AS builder

# libclang-dev: pg_query's build script runs bindgen over libpg_query's
# headers. clang and cmake: C code of pg_query and aws-lc-sys.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libclang-dev clang cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# A fully static binary: glibc linked in (crt-static), so the final stage
# needs no libc at all. The explicit --target keeps RUSTFLAGS away from build
# scripts and proc macros, which must stay dynamic.
ENV RUSTFLAGS='-C target-feature=+crt-static'
ARG TARGET=x86_64-unknown-linux-gnu
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" --bin airlock \
 && install -D -m 0755 "target/${TARGET}/release/airlock" /out/usr/local/bin/airlock

# Refuse to ship a binary that is not static or does not run.
# (`file` says "static-pie linked" or "statically linked".)
RUN file /out/usr/local/bin/airlock | grep -Eq 'static(-pie|ally) linked' \
 && /out/usr/local/bin/airlock --version

# The data dir (dev issuer key, mask key, journal, SQLite store) and the
# config dir, made here because distroless has no shell; the final stage
# gives the data dir to its non-root user (65532, distroless "nonroot").
RUN install -d -m 0750 /out/var/lib/airlock \
 && install -d -m 0755 /out/etc/airlock

# ---------------------------------------------------------------------------
# Final stage: distroless static, nonroot variant: CA certificates (for
# HTTPS to the issuers' JWKS and for upstream verify-full), /etc/passwd with
# the nonroot user (uid 65532), tzdata, and no shell or package manager.
FROM gcr.io/distroless/static-debian12:nonroot

# (--chown: COPY gives what it creates to root unless told otherwise.)
COPY --from=builder /out/usr/local/bin/airlock /usr/local/bin/airlock
COPY --from=builder /out/etc/airlock /etc/airlock
COPY --from=builder --chown=65532:65532 /out/var/lib/airlock /var/lib/airlock

USER 65532:65532
WORKDIR /var/lib/airlock
VOLUME ["/var/lib/airlock"]

# 6432: PostgreSQL door; 6033: MySQL/MariaDB door;
# 8080: HTTP (API, MCP at /mcp, /metrics, /healthz, /readyz).
EXPOSE 6432 6033 8080

ENTRYPOINT ["/usr/local/bin/airlock"]
CMD ["serve", "--config", "/etc/airlock/airlock.yaml"]
