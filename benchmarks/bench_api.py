"""API throughput: POST /api/create_ticket on a real daemon (auth, idempotency claim, ticket,
notices to the outbox, completion; durable SQLite commits) next to a bare FastAPI endpoint on
uvicorn doing one SQLite insert per request (same pragmas: WAL, synchronous=FULL), at 1, 16
and 64 concurrent clients, same run. Both servers run in processes of their own, apart from the
load generator, so neither shares its interpreter with the clients.

    python benchmarks/bench_api.py [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn
from fastapi import FastAPI

from tests.helpers import Daemon, free_port


def bare_app(db: Path) -> FastAPI:
    app = FastAPI()
    local = threading.local()

    def conn() -> sqlite3.Connection:
        if not hasattr(local, "c"):
            c = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            local.c = c
        return local.c

    conn().execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")

    @app.post("/insert")
    def insert(body: dict) -> dict:  # type: ignore[type-arg]
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        cur = c.execute("INSERT INTO t (body) VALUES (?)", (str(body),))
        c.execute("COMMIT")
        return {"ok": True, "data": {"id": cur.lastrowid}}

    return app


async def drive(
    url: str, bodies: list[dict], headers_for, clients: int
) -> tuple[float, list[float], int]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=clients)
    ) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                resp = await client.post(url, json=bodies[i], headers=headers_for(i))
                latencies.append(time.perf_counter() - started)
                errors += resp.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, latencies, errors


def report(name: str, clients: int, n: int, elapsed: float, lat: list[float], errors: int) -> None:
    lat.sort()
    p50, p99 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000
    print(
        f"{name:<22} clients={clients:<3} {n / elapsed:8.0f} req/s  p50={p50:6.1f} ms  p99={p99:7.1f} ms  errors={errors}"
    )


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/insert", json={"warm": 1}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the bare endpoint did not start")


def serve_bare(port: int, db: Path) -> None:
    uvicorn.run(bare_app(db), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), Path(args.serve_bare[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp), extra_config="[api]\nrate_limit_requests = 100000000\n")
        daemon.start()
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(port), str(Path(tmp) / "bare.db")]
        )
        wait_listening(port)
        try:
            token = (
                daemon.cli("token", "create", "--name", "bench", "--ability", "all")
                .stdout.strip()
                .splitlines()[-1]
            )
            for clients in (1, 16, 64):
                n = args.requests
                bodies = [
                    {
                        "originator_email_address": f"c{i % 50}@customer.test",
                        "data": {"subject": f"Bench {i}", "content": "<p>hello</p>"},
                    }
                    for i in range(n)
                ]
                keys = [str(uuid.uuid4()) for _ in range(n)]
                elapsed, lat, errors = asyncio.run(
                    drive(
                        f"http://127.0.0.1:{daemon.http_port}/api/create_ticket",
                        bodies,
                        lambda i, keys=keys: {
                            "Authorization": f"Bearer {token}",
                            "Idempotency-Key": keys[i],
                        },
                        clients,
                    )
                )
                report("mailhelpdesk create", clients, n, elapsed, lat, errors)
                elapsed, lat, errors = asyncio.run(
                    drive(f"http://127.0.0.1:{port}/insert", bodies, lambda i: {}, clients)
                )
                report("bare fastapi insert", clients, n, elapsed, lat, errors)
        finally:
            bare.terminate()
            bare.wait(10)
            daemon.stop()


if __name__ == "__main__":
    main()
