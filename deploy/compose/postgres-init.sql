-- The sample database of the Compose sandbox, run once by the postgres
-- image's entrypoint (as the superuser, connected to POSTGRES_DB=demo) when
-- its data volume is new. The same schema and data as `airlock demo`
-- (crates/airlock/src/demo.rs): fake but shaped like the real thing.
--
-- The two upstream roles get the passwords that compose.yaml passes to both
-- this container and airlock; clients never see them.

\getenv ro_password AIRLOCK_RO_PASSWORD
\getenv admin_password AIRLOCK_ADMIN_PASSWORD
\if :{?ro_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'AIRLOCK_RO_PASSWORD is not set'; END $$;
\endif
\if :{?admin_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'AIRLOCK_ADMIN_PASSWORD is not set'; END $$;
\endif

CREATE ROLE airlock_ro LOGIN PASSWORD :'ro_password';
CREATE ROLE airlock_admin LOGIN PASSWORD :'admin_password';

-- The tables and their data: examples/demo-data.sql, run next (20-…).
