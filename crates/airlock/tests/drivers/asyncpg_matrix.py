"""The driver matrix, asyncpg: see crates/airlock/tests/drivers/mod.rs.

Runs every step through the gateway, records what the driver decoded (or the
error it raised) and prints one JSON line the Rust test compares with what it
expects. Exits 0 whatever happened: the Rust test decides.
"""

import asyncio
import datetime
import decimal
import json
import os
import sys

import asyncpg

ENV = os.environ
TABLE = ENV["MATRIX_TABLE"]
READ_WRITE = ENV["MATRIX_MODE"] == "read-write"
TYPED = json.loads(ENV["MATRIX_TYPED"])
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
TYPED_COLUMNS = "amount, at, tags, nums, payload, doc, docb"

result = {"driver": "asyncpg"}


def error(e):
    return {"error": {"sqlstate": getattr(e, "sqlstate", None), "message": str(e)}}


async def step(name, fn):
    try:
        result[name] = await fn()
    except Exception as e:  # recorded for the Rust test to show
        result[name] = error(e)


async def expect_error(fn):
    """The SQLSTATE and message `fn` fails with, or what it returned instead."""
    try:
        return {"unexpected_success": repr(await fn())}
    except asyncpg.PostgresError as e:
        return {"sqlstate": e.sqlstate, "message": str(e)}


def canonical(amount, at, tags, nums, payload, doc, docb):
    # asyncpg hands json and jsonb over as text unless a codec is set.
    return {
        "amount": str(amount),
        "at_ms": (at - EPOCH) // datetime.timedelta(milliseconds=1),
        "tags": list(tags),
        "nums": list(nums),
        "payload": bytes(payload).hex(),
        "doc": json.loads(doc),
        "docb": json.loads(docb),
    }


def params():
    """The typed values as this driver's native Python objects."""
    return (
        decimal.Decimal(TYPED["amount"]),
        EPOCH + datetime.timedelta(milliseconds=TYPED["at_ms"]),
        TYPED["tags"],
        TYPED["nums"],
        bytes.fromhex(TYPED["payload"]),
        json.dumps(TYPED["doc"]),
        json.dumps(TYPED["docb"]),
    )


def rowcount(status):
    """The row count of a command tag such as `UPDATE 1`."""
    return int(status.split()[-1])


async def main():
    try:
        conn = await asyncpg.connect(
            host=ENV["MATRIX_HOST"],
            port=int(ENV["MATRIX_PORT"]),
            database=ENV["MATRIX_DB"],
            user=ENV["MATRIX_USER"],
            password=ENV["MATRIX_PASSWORD"],
            ssl=False,
            timeout=10,
        )
    except Exception as e:
        result["connect"] = error(e)
        return
    result["connect"] = "ok"
    kept = []

    async def param_select():
        row = await conn.fetchrow(
            f"SELECT id, name, email FROM {TABLE} WHERE id = $1", 1
        )
        return {"id": row[0], "name": row[1], "email": row[2]}

    await step("param_select", param_select)

    async def prepared_reuse():
        # An explicitly prepared (named) statement, executed 7 times. Kept
        # referenced: asyncpg closes a statement once it is garbage.
        stmt = await conn.prepare(
            f"SELECT name AS reuse_probe_name, email, amount FROM {TABLE} WHERE id = $1"
        )
        out = []
        for i in range(1, 8):
            row = await stmt.fetchrow(i)
            out.append([row[0], row[1], str(row[2])])
        kept.append(stmt)
        return out

    await step("prepared_reuse", prepared_reuse)

    async def server_prepared():
        return await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_prepared_statements"
            " WHERE statement LIKE '%reuse' || '_probe_name%'"
        )

    await step("server_prepared", server_prepared)

    async def read_only_tx():
        tx = conn.transaction(readonly=True)
        await tx.start()
        ended = False
        try:
            ro = await conn.fetchval("SHOW transaction_read_only")
            n = await conn.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE id <= $1", 100
            )
            if READ_WRITE:
                result["ro_tx_write"] = await expect_error(
                    lambda: conn.execute(
                        f"UPDATE {TABLE} SET name = $2 WHERE id = $1", 1, "nope"
                    )
                )
                ended = True
                await tx.rollback()
            else:
                ended = True
                await tx.commit()
        finally:
            if not ended:
                await tx.rollback()
        return {"transaction_read_only": ro, "count": n}

    await step("read_only_tx", read_only_tx)

    async def types_select():
        row = await conn.fetchrow(
            f"SELECT {TYPED_COLUMNS} FROM {TABLE} WHERE id = $1", 1
        )
        return canonical(*row)

    await step("types_select", types_select)

    async def types_params():
        row = await conn.fetchrow(
            "SELECT $1::numeric, $2::timestamptz, $3::text[], $4::int[],"
            " $5::bytea, $6::json, $7::jsonb",
            *params(),
        )
        return canonical(*row)

    await step("types_params", types_params)

    if READ_WRITE:

        async def insert():
            return rowcount(
                await conn.execute(
                    f"INSERT INTO {TABLE} (id, name, email, {TYPED_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    100,
                    "zulu",
                    "zed@example.com",
                    *params(),
                )
            )

        await step("insert", insert)

        async def inserted():
            row = await conn.fetchrow(
                f"SELECT id, name, email, {TYPED_COLUMNS} FROM {TABLE} WHERE id = $1",
                100,
            )
            return {
                "id": row[0],
                "name": row[1],
                "email": row[2],
                "values": canonical(*list(row)[3:]),
            }

        await step("inserted", inserted)

        async def update():
            return rowcount(
                await conn.execute(
                    f"UPDATE {TABLE} SET name = $2 WHERE id = $1", 2, "bravo-updated"
                )
            )

        await step("update", update)

        async def delete():
            return rowcount(
                await conn.execute(f"DELETE FROM {TABLE} WHERE id = $1", 3)
            )

        await step("delete", delete)
    else:

        async def write_refused():
            return await expect_error(
                lambda: conn.execute(
                    f"UPDATE {TABLE} SET name = $2 WHERE id = $1", 1, "nope"
                )
            )

        await step("write_refused", write_refused)
        await step(
            "after_refusal",
            lambda: conn.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE id <= $1", 100
            ),
        )
    await conn.close()


asyncio.run(main())
sys.stdout.write(json.dumps(result) + "\n")
