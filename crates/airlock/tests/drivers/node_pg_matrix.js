// The driver matrix, node-postgres (`pg`): see crates/airlock/tests/drivers/mod.rs.
//
// Runs every step through the gateway, records what the driver decoded (or
// the error it raised) and prints one JSON line the Rust test compares with
// what it expects. Exits 0 whatever happened: the Rust test decides.
'use strict';

const { Client } = require('pg');

const env = process.env;
const TABLE = env.MATRIX_TABLE;
const READ_WRITE = env.MATRIX_MODE === 'read-write';
const TYPED = JSON.parse(env.MATRIX_TYPED);
const TYPED_COLUMNS = 'amount, at, tags, nums, payload, doc, docb';

const result = { driver: 'node-postgres' };

function error(e) {
  return { error: { sqlstate: e.code === undefined ? null : e.code, message: String(e.message) } };
}

async function step(name, fn) {
  try {
    result[name] = await fn();
  } catch (e) {
    result[name] = error(e);
  }
}

// The SQLSTATE and message `fn` fails with, or what it returned instead.
async function expectError(fn) {
  try {
    return { unexpected_success: String(await fn()) };
  } catch (e) {
    return e.code === undefined ? error(e) : { sqlstate: e.code, message: String(e.message) };
  }
}

// pg's default parsers: numeric as a string, timestamptz as a Date, arrays
// as arrays, bytea as a Buffer, json and jsonb parsed.
function canonical(row) {
  return {
    amount: row.amount,
    at_ms: row.at.getTime(),
    tags: row.tags,
    nums: row.nums,
    payload: row.payload.toString('hex'),
    doc: row.doc,
    docb: row.docb,
  };
}

// The typed values as this driver's native JavaScript values (objects are
// sent as JSON text, arrays as PostgreSQL array literals).
function params() {
  return [
    TYPED.amount,
    new Date(TYPED.at_ms),
    TYPED.tags,
    TYPED.nums,
    Buffer.from(TYPED.payload, 'hex'),
    TYPED.doc,
    TYPED.docb,
  ];
}

async function main() {
  const client = new Client({
    host: env.MATRIX_HOST,
    port: Number(env.MATRIX_PORT),
    database: env.MATRIX_DB,
    user: env.MATRIX_USER,
    password: env.MATRIX_PASSWORD,
    ssl: false,
    connectionTimeoutMillis: 10000,
  });
  // An error on the idle connection must not crash the process unreported.
  client.on('error', (e) => {
    result.connection_error = error(e);
  });
  try {
    await client.connect();
  } catch (e) {
    result.connect = error(e);
    return;
  }
  result.connect = 'ok';

  await step('param_select', async () => {
    const r = await client.query(`SELECT id, name, email FROM ${TABLE} WHERE id = $1`, [1]);
    const row = r.rows[0];
    return { id: row.id, name: row.name, email: row.email };
  });

  await step('prepared_reuse', async () => {
    // A named statement: parsed once, then bound and executed 7 times.
    const out = [];
    for (let i = 1; i <= 7; i++) {
      const r = await client.query({
        name: 'matrix_reuse',
        text: `SELECT name AS reuse_probe_name, email, amount FROM ${TABLE} WHERE id = $1`,
        values: [i],
      });
      const row = r.rows[0];
      out.push([row.reuse_probe_name, row.email, row.amount]);
    }
    return out;
  });

  await step('server_prepared', async () => {
    const r = await client.query(
      "SELECT count(*) > 0 AS found FROM pg_prepared_statements WHERE statement LIKE '%reuse' || '_probe_name%'",
    );
    return r.rows[0].found;
  });

  await step('read_only_tx', async () => {
    await client.query('BEGIN READ ONLY');
    try {
      const ro = (await client.query('SHOW transaction_read_only')).rows[0].transaction_read_only;
      const n = (await client.query(`SELECT count(*) AS n FROM ${TABLE} WHERE id <= $1`, [100])).rows[0].n;
      if (READ_WRITE) {
        result.ro_tx_write = await expectError(async () => {
          const r = await client.query(`UPDATE ${TABLE} SET name = $2 WHERE id = $1`, [1, 'nope']);
          return r.rowCount;
        });
        await client.query('ROLLBACK');
      } else {
        await client.query('COMMIT');
      }
      return { transaction_read_only: ro, count: Number(n) };
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    }
  });

  await step('types_select', async () => {
    const r = await client.query(`SELECT ${TYPED_COLUMNS} FROM ${TABLE} WHERE id = $1`, [1]);
    return canonical(r.rows[0]);
  });

  await step('types_params', async () => {
    const r = await client.query(
      'SELECT $1::numeric AS amount, $2::timestamptz AS at, $3::text[] AS tags, $4::int[] AS nums,' +
        ' $5::bytea AS payload, $6::json AS doc, $7::jsonb AS docb',
      params(),
    );
    return canonical(r.rows[0]);
  });

  if (READ_WRITE) {
    await step('insert', async () => {
      const r = await client.query(
        `INSERT INTO ${TABLE} (id, name, email, ${TYPED_COLUMNS})` +
          ' VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
        [100, 'zulu', 'zed@example.com', ...params()],
      );
      return r.rowCount;
    });
    await step('inserted', async () => {
      const r = await client.query(
        `SELECT id, name, email, ${TYPED_COLUMNS} FROM ${TABLE} WHERE id = $1`,
        [100],
      );
      const row = r.rows[0];
      return { id: row.id, name: row.name, email: row.email, values: canonical(row) };
    });
    await step('update', async () => {
      const r = await client.query(`UPDATE ${TABLE} SET name = $2 WHERE id = $1`, [2, 'bravo-updated']);
      return r.rowCount;
    });
    await step('delete', async () => {
      const r = await client.query(`DELETE FROM ${TABLE} WHERE id = $1`, [3]);
      return r.rowCount;
    });
  } else {
    await step('write_refused', () =>
      expectError(async () => {
        const r = await client.query(`UPDATE ${TABLE} SET name = $2 WHERE id = $1`, [1, 'nope']);
        return r.rowCount;
      }),
    );
    await step('after_refusal', async () => {
      const r = await client.query(`SELECT count(*) AS n FROM ${TABLE} WHERE id <= $1`, [100]);
      return Number(r.rows[0].n);
    });
  }
  await client.end();
}

main()
  .catch((e) => {
    result.script_error = error(e);
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(result) + '\n');
  });
