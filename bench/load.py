#!/usr/bin/env python3
"""Many concurrent PostgreSQL sessions from one asyncio process (bench/load.sh).

    load.py HOST:PORT USER DATABASE PASSWORD --idle N --active M --seconds S [--pid PID]

Opens N idle sessions (logged in, then silent) and M active ones, each
running `select 1` back to back for S seconds, over the raw protocol (no
driver overhead to subtract). Prints one JSON line: sessions opened, login
errors, statement errors, statements, p50/p99/max latency in microseconds,
and, with --pid, that process's RSS before and after the idle sessions
opened. Bounded: every session ends when the run does.
"""
import argparse
import asyncio
import json
import struct
import time


def startup(user, database):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


async def read_message(reader):
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], await reader.readexactly(length - 4)


async def login(host, port, user, database, password):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(startup(user, database))
    while True:
        tag, body = await read_message(reader)
        if tag == b"R" and struct.unpack("!i", body[:4])[0] == 3:
            writer.write(message(b"p", password.encode() + b"\0"))
        elif tag == b"E":
            writer.close()
            raise RuntimeError(body.decode(errors="replace"))
        elif tag == b"Z":
            return reader, writer


async def query(reader, writer, sql):
    writer.write(message(b"Q", sql + b"\0"))
    failed = False
    while True:
        tag, _ = await read_message(reader)
        if tag == b"E":
            failed = True
        if tag == b"Z":
            return not failed


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("user")
    p.add_argument("database")
    p.add_argument("password")
    p.add_argument("--idle", type=int, default=0)
    p.add_argument("--active", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--pid", type=int)
    p.add_argument("--opening", type=int, default=200, help="logins in flight at once")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    out = {"idle": a.idle, "active": a.active, "login_errors": 0, "errors": 0}
    if a.pid:
        out["rss_kib_before"] = rss_kib(a.pid)
    gate = asyncio.Semaphore(a.opening)
    errors = []

    async def open_one():
        async with gate:
            try:
                return await login(host, port, a.user, a.database, a.password)
            except Exception as e:  # counted, and the first one reported
                errors.append(str(e)[:200])
                return None

    t0 = time.monotonic()
    idle = await asyncio.gather(*(open_one() for _ in range(a.idle)))
    out["idle_open_seconds"] = round(time.monotonic() - t0, 2)
    if a.pid:
        out["rss_kib_idle"] = rss_kib(a.pid)
    active = await asyncio.gather(*(open_one() for _ in range(a.active)))
    out["login_errors"] = len(errors)
    if errors:
        out["first_error"] = errors[0]
    latencies = []
    stop = time.monotonic() + a.seconds

    async def run(conn):
        if conn is None:
            return 0
        reader, writer = conn
        failed = 0
        while time.monotonic() < stop:
            t = time.perf_counter_ns()
            ok = await query(reader, writer, b"select 1")
            latencies.append((time.perf_counter_ns() - t) // 1000)
            failed += not ok
        return failed

    out["errors"] = sum(await asyncio.gather(*(run(c) for c in active)))
    # The idle sessions are still up: one statement each proves it.
    idle_ok = await asyncio.gather(*(query(*c, b"select 1") for c in idle if c))
    out["errors"] += sum(1 for ok in idle_ok if not ok)
    if a.pid:
        out["rss_kib_end"] = rss_kib(a.pid)
    latencies.sort()
    out["statements"] = len(latencies)
    if latencies:
        out["p50_us"] = latencies[len(latencies) // 2]
        out["p99_us"] = latencies[int(len(latencies) * 0.99)]
        out["max_us"] = latencies[-1]
        out["qps"] = round(len(latencies) / a.seconds)
    for c in idle + active:
        if c:
            c[1].close()
    print(json.dumps(out))


asyncio.run(main())
