# shellcheck shell=bash
# Sourced (not executed: keep this file non-executable) by the mariadb
# image's entrypoint when its data volume is new, before 20-airlock-demo.sql.
# Creates the two upstream users airlock logs in as, with the passwords that
# compose.yaml passes to both this container and airlock. Clients never see
# them. docker_process_sql and docker_sql_escape_string_literal are the
# entrypoint's own functions.

: "${AIRLOCK_RO_PASSWORD:?AIRLOCK_RO_PASSWORD is not set}"
: "${AIRLOCK_ADMIN_PASSWORD:?AIRLOCK_ADMIN_PASSWORD is not set}"
airlock_ro_pw="$(docker_sql_escape_string_literal "${AIRLOCK_RO_PASSWORD}")"
airlock_admin_pw="$(docker_sql_escape_string_literal "${AIRLOCK_ADMIN_PASSWORD}")"

docker_process_sql --database=mysql <<SQL
CREATE DATABASE IF NOT EXISTS demo;
CREATE USER 'airlock_ro'@'%' IDENTIFIED BY '${airlock_ro_pw}';
CREATE USER 'airlock_admin'@'%' IDENTIFIED BY '${airlock_admin_pw}';
GRANT SELECT ON demo.* TO 'airlock_ro'@'%';
GRANT ALL ON demo.* TO 'airlock_admin'@'%';
SQL
unset airlock_ro_pw airlock_admin_pw
