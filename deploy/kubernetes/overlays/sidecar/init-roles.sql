-- Run by the postgres image's entrypoint (as the superuser, connected to
-- POSTGRES_DB=orders) when the database volume is new: the two roles
-- airlock logs in as, with passwords from the Secret airlock-upstream (the
-- container's environment; clients never see them).
--   airlock_ro     reads every table (pg_read_all_data)
--   airlock_admin  owns the database and its public schema: migrations

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
GRANT pg_read_all_data TO airlock_ro;
ALTER DATABASE orders OWNER TO airlock_admin;
ALTER SCHEMA public OWNER TO airlock_admin;
