"""The driver matrix, psycopg 3: see crates/airlock/tests/drivers/mod.rs.

Runs every step through the gateway, records what the driver decoded (or the
error it raised) and prints one JSON line the Rust test compares with what it
expects. Exits 0 whatever happened: the Rust test decides.
"""

import datetime
import decimal
import json
import os
import sys

import psycopg
from psycopg.types.json import Json, Jsonb

ENV = os.environ
TABLE = ENV["MATRIX_TABLE"]
READ_WRITE = ENV["MATRIX_MODE"] == "read-write"
TYPED = json.loads(ENV["MATRIX_TYPED"])
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

result = {"driver": "psycopg"}


def error(e):
    return {"error": {"sqlstate": getattr(e, "sqlstate", None), "message": str(e)}}


def step(name, fn):
    try:
        result[name] = fn()
    except Exception as e:  # recorded for the Rust test to show
        result[name] = error(e)


def expect_error(fn):
    """The SQLSTATE and message `fn` fails with, or what it returned instead."""
    try:
        return {"unexpected_success": repr(fn())}
    except psycopg.Error as e:
        return {"sqlstate": e.sqlstate, "message": str(e)}


def canonical(amount, at, tags, nums, payload, doc, docb):
    return {
        "amount": str(amount),
        "at_ms": (at - EPOCH) // datetime.timedelta(milliseconds=1),
        "tags": list(tags),
        "nums": list(nums),
        "payload": bytes(payload).hex(),
        "doc": doc,
        "docb": docb,
    }


def params():
    """The typed values as this driver's native Python objects."""
    at = EPOCH + datetime.timedelta(milliseconds=TYPED["at_ms"])
    return (
        decimal.Decimal(TYPED["amount"]),
        at,
        TYPED["tags"],
        TYPED["nums"],
        bytes.fromhex(TYPED["payload"]),
        Json(TYPED["doc"]),
        Jsonb(TYPED["docb"]),
    )


TYPED_COLUMNS = "amount, at, tags, nums, payload, doc, docb"


def main():
    try:
        conn = psycopg.connect(
            host=ENV["MATRIX_HOST"],
            port=ENV["MATRIX_PORT"],
            dbname=ENV["MATRIX_DB"],
            user=ENV["MATRIX_USER"],
            password=ENV["MATRIX_PASSWORD"],
            sslmode="disable",
            connect_timeout=10,
            autocommit=True,
        )
    except Exception as e:
        result["connect"] = error(e)
        return
    result["connect"] = "ok"

    def param_select():
        row = conn.execute(
            f"SELECT id, name, email FROM {TABLE} WHERE id = %s", (1,)
        ).fetchone()
        return {"id": row[0], "name": row[1], "email": row[2]}

    step("param_select", param_select)

    def prepared_reuse():
        # psycopg prepares a query server-side once it has run
        # prepare_threshold (5) times.
        assert conn.prepare_threshold == 5, conn.prepare_threshold
        out = []
        for i in range(1, 8):
            row = conn.execute(
                f"SELECT name AS reuse_probe_name, email, amount FROM {TABLE} WHERE id = %s",
                (i,),
            ).fetchone()
            out.append([row[0], row[1], str(row[2])])
        return out

    step("prepared_reuse", prepared_reuse)

    def server_prepared():
        return conn.execute(
            "SELECT count(*) > 0 FROM pg_prepared_statements"
            " WHERE statement LIKE '%reuse' || '_probe_name%'"
        ).fetchone()[0]

    step("server_prepared", server_prepared)

    def read_only_tx():
        conn.read_only = True
        try:
            with conn.transaction():
                ro = conn.execute("SHOW transaction_read_only").fetchone()[0]
                n = conn.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE id <= %s", (100,)
                ).fetchone()[0]
                if READ_WRITE:
                    result["ro_tx_write"] = expect_error(
                        lambda: conn.execute(
                            f"UPDATE {TABLE} SET name = %s WHERE id = %s",
                            ("nope", 1),
                        ).rowcount
                    )
                    raise psycopg.Rollback()
        finally:
            conn.read_only = None
        return {"transaction_read_only": ro, "count": n}

    step("read_only_tx", read_only_tx)

    def types_select():
        row = conn.execute(
            f"SELECT {TYPED_COLUMNS} FROM {TABLE} WHERE id = %s", (1,)
        ).fetchone()
        return canonical(*row)

    step("types_select", types_select)

    def types_params():
        row = conn.execute(
            "SELECT %s::numeric, %s::timestamptz, %s::text[], %s::int[],"
            " %s::bytea, %s::json, %s::jsonb",
            params(),
        ).fetchone()
        return canonical(*row)

    step("types_params", types_params)

    if READ_WRITE:

        def insert():
            return conn.execute(
                f"INSERT INTO {TABLE} (id, name, email, {TYPED_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (100, "zulu", "zed@example.com") + params(),
            ).rowcount

        step("insert", insert)

        def inserted():
            row = conn.execute(
                f"SELECT id, name, email, {TYPED_COLUMNS} FROM {TABLE} WHERE id = %s",
                (100,),
            ).fetchone()
            return {
                "id": row[0],
                "name": row[1],
                "email": row[2],
                "values": canonical(*row[3:]),
            }

        step("inserted", inserted)
        step(
            "update",
            lambda: conn.execute(
                f"UPDATE {TABLE} SET name = %s WHERE id = %s", ("bravo-updated", 2)
            ).rowcount,
        )
        step(
            "delete",
            lambda: conn.execute(
                f"DELETE FROM {TABLE} WHERE id = %s", (3,)
            ).rowcount,
        )
    else:
        step(
            "write_refused",
            lambda: expect_error(
                lambda: conn.execute(
                    f"UPDATE {TABLE} SET name = %s WHERE id = %s", ("nope", 1)
                ).rowcount
            ),
        )
        step(
            "after_refusal",
            lambda: conn.execute(
                f"SELECT count(*) FROM {TABLE} WHERE id <= %s", (100,)
            ).fetchone()[0],
        )
    conn.close()


main()
sys.stdout.write(json.dumps(result) + "\n")
