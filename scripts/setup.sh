#!/usr/bin/env bash
# Installs what airlock's build, tests and demo need on a Debian machine and
# starts the local PostgreSQL and MariaDB when they are down. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

need=()
command -v pg_ctl >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
command -v pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# airlock-testkit's throwaway MariaDB: mariadb-install-db and mariadbd, and
# the mysql client.
command -v mariadb-install-db >/dev/null 2>&1 || need+=(mariadb-server)
command -v mysql >/dev/null 2>&1 || need+=(mariadb-client)
# The driver matrix (crates/airlock/tests/e2e/data_path/drivers.rs, its
# scripts in crates/airlock/tests/drivers): pgjdbc run
# with `java File.java` (single-file launch needs the JDK's compiler), and
# node-postgres.
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
[ -f /usr/share/java/mariadb-java-client.jar ] || need+=(libmariadb-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The web console's browser tests (crates/airlock/tests/drivers/browser.mjs).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# deploy/check.py: promtool checks and unit-tests the alerting rules
# (deploy/observability). It comes with Debian's prometheus package, which
# installs in seconds; in a container its service is not started (no init,
# policy-rc.d), on a systemd host it is: `systemctl disable --now prometheus`.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# cargo-deny, for the dependency policy `make test` checks (deny.toml), built
# from crates.io once (about two minutes on two cores).
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked --quiet cargo-deny

# psycopg, for the Python driver tests.
python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install -q 'psycopg[binary]>=3.1,<4'
# asyncpg, for the driver matrix.
python3 -c 'import asyncpg' 2>/dev/null || python3 -m pip install -q 'asyncpg>=0.29,<1'
# The MySQL door's driver tests: PyMySQL and mysql-connector-python.
python3 -c 'import pymysql' 2>/dev/null || python3 -m pip install -q 'PyMySQL>=1.1,<2'
python3 -c 'import mysql.connector' 2>/dev/null || python3 -m pip install -q 'mysql-connector-python>=8,<10'
# The MCP endpoint's client tests: the Python MCP SDK, 2.x (both protocol
# eras: `Client(mode=...)`).
python3 -c 'from mcp import Client; import httpx2' 2>/dev/null || python3 -m pip install -q 'mcp>=2.3,<3'
# deploy/check.py: Kubernetes schemas (kubernetes-validate) and the Compose
# and GitHub workflow schemas (check-jsonschema's vendored ones).
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install -q 'kubernetes-validate>=1.30,<2'
python3 -c 'import check_jsonschema' 2>/dev/null || python3 -m pip install -q 'check-jsonschema>=0.33,<1'
# node-postgres, mysql2 and playwright-core (the console's browser tests drive
# Debian's chromium with it; it never downloads a browser of its own), for the
# driver tests, at the versions package-lock.json pins.
drivers="$root/crates/airlock/tests/drivers"
if ! (cd "$drivers" && node -e 'require("pg"); require("mysql2"); require("playwright-core")' >/dev/null 2>&1) \
  || ! cmp -s "$drivers/package-lock.json" "$drivers/node_modules/.airlock-lock"; then
  echo "setup: installing node-postgres, mysql2 and playwright-core"
  (cd "$drivers" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$drivers/package-lock.json" "$drivers/node_modules/.airlock-lock"
fi

# A German locale, so that a test can prove refusals do not depend on the
# upstream's lc_messages (PostgreSQL's German messages ship with it).
if ! locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$'; then
  command -v localedef >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales >/dev/null; }
  localedef -i de_DE -c -f UTF-8 de_DE.UTF-8
fi

# initdb/pg_ctl/postgres are not on PATH in Debian's packaging.
if ! command -v initdb >/dev/null 2>&1; then
  for f in /usr/lib/postgresql/*/bin/{initdb,pg_ctl,postgres}; do
    [ -e "$f" ] && ln -sf "$f" /usr/local/bin/
  done
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
psql -X -q -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "create database test"

if command -v mariadbd >/dev/null 2>&1 && ! (echo > /dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  echo "setup: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
