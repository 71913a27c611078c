-- The driver matrix, psql: see crates/airlock/tests/drivers/mod.rs.
--
-- psql 15 speaks the simple query protocol only (no \bind), so parameters
-- go through SQL PREPARE/EXECUTE, which airlock resolves by name. Each step
-- prints `@name` and then its rows (unaligned, `|` between fields), or a
-- SQLSTATE and the last error message; the Rust test turns that into the same JSON the other drivers
-- print. Variables: tbl (schema.table), rw (true/false), and the typed
-- values as SQL literals: amount, at, tags, nums, payload, doc.
\set ON_ERROR_STOP off
\set QUIET on
\pset format unaligned
\pset tuples_only on
\pset fieldsep '|'
\pset null '<null>'

\echo @connect
SELECT 'ok';

\echo @param_select
PREPARE param_select(int) AS SELECT id, name, email FROM :tbl WHERE id = $1;
EXECUTE param_select(1);

\echo @prepared_reuse
PREPARE reuse(int) AS SELECT name AS reuse_probe_name, email, amount FROM :tbl WHERE id = $1;
EXECUTE reuse(1);
EXECUTE reuse(2);
EXECUTE reuse(3);
EXECUTE reuse(4);
EXECUTE reuse(5);
EXECUTE reuse(6);
EXECUTE reuse(7);

\echo @server_prepared
SELECT count(*) > 0 FROM pg_prepared_statements WHERE statement LIKE '%reuse' || '_probe_name%';

\echo @read_only_tx
BEGIN READ ONLY;
SHOW transaction_read_only;
PREPARE count_rows(int) AS SELECT count(*) FROM :tbl WHERE id <= $1;
EXECUTE count_rows(100);
\if :rw
\echo @ro_tx_write
PREPARE ro_tx_write(int, text) AS UPDATE :tbl SET name = $2 WHERE id = $1;
\if :ERROR
\echo :SQLSTATE
\echo :LAST_ERROR_MESSAGE
\else
EXECUTE ro_tx_write(1, 'nope');
\echo :SQLSTATE
\echo :LAST_ERROR_MESSAGE
\endif
ROLLBACK;
\else
COMMIT;
\endif

\echo @types_select
PREPARE types_select(int) AS SELECT amount, at, tags, nums, payload, doc, docb FROM :tbl WHERE id = $1;
EXECUTE types_select(1);

\echo @types_params
PREPARE types_params(numeric, timestamptz, text[], int[], bytea, json, jsonb) AS SELECT $1, $2, $3, $4, $5, $6, $7;
EXECUTE types_params(:'amount', :'at', :'tags', :'nums', :'payload', :'doc', :'doc');

\if :rw
\echo @insert
PREPARE ins(int, text, text, numeric, timestamptz, text[], int[], bytea, json, jsonb) AS
    INSERT INTO :tbl (id, name, email, amount, at, tags, nums, payload, doc, docb)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);
EXECUTE ins(100, 'zulu', 'zed@example.com', :'amount', :'at', :'tags', :'nums', :'payload', :'doc', :'doc');
\echo :ROW_COUNT

\echo @inserted
PREPARE inserted(int) AS SELECT id, name, email, amount, at, tags, nums, payload, doc, docb FROM :tbl WHERE id = $1;
EXECUTE inserted(100);

\echo @update
PREPARE upd(int, text) AS UPDATE :tbl SET name = $2 WHERE id = $1;
EXECUTE upd(2, 'bravo-updated');
\echo :ROW_COUNT

\echo @delete
PREPARE del(int) AS DELETE FROM :tbl WHERE id = $1;
EXECUTE del(3);
\echo :ROW_COUNT
\else
\echo @write_refused
PREPARE write_refused(int, text) AS UPDATE :tbl SET name = $2 WHERE id = $1;
\if :ERROR
\echo :SQLSTATE
\echo :LAST_ERROR_MESSAGE
\else
EXECUTE write_refused(1, 'nope');
\echo :SQLSTATE
\echo :LAST_ERROR_MESSAGE
\endif

\echo @after_refusal
EXECUTE count_rows(100);
\endif
