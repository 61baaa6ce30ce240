"""API throughput: POST /api/create_ticket on a real daemon (auth, idempotency claim, ticket,
notices to the outbox, completion; durable SQLite commits) next to a bare FastAPI endpoint on
uvicorn doing one SQLite insert per request (same pragmas: WAL, synchronous=FULL), at 1, 16
and 64 concurrent clients, same run. Both servers run in processes of their own, apart from the
load generator, so neither shares its interpreter with the clients.

    python benchmarks/bench_api.py [--requests 600] [--rounds 3] [--clients 1,16,64]
        [--profile DIR]   # py-spy collapsed stacks of the daemon, first round

Each client count alternates the daemon and the bare endpoint `--rounds` times and prints
the medians of the rate ratio and of the p99 ratio, then the CPU each request cost while the
clients ran (from /proc and getrusage: each server's process tree, the daemon's main process
alone, and the load generator) and the ceiling that work sets: the most a daemon doing as much
could answer with its CPU spread perfectly over every core beside the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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

from tests.helpers import CpuWindow, Daemon, cpu_ceiling, free_port


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
                try:
                    resp = await client.post(url, json=bodies[i], headers=headers_for(i))
                    errors += resp.status_code != 200
                except httpx.TransportError:  # an overloaded server drops the connection
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, latencies, errors


def _ceiling(
    clients: int, ours: list[CpuWindow], base: list[CpuWindow], base_rates: list[float]
) -> str:
    """The medians of the CPU figures, and the most a daemon doing this much work a request
    could answer here with its CPU spread perfectly over every core beside the clients (the
    notices it sends after the window are left out, so this bounds it from above)."""
    server = statistics.median(c.tree for c in ours)
    main = statistics.median(c.main for c in ours)
    client = statistics.median(c.own for c in ours)
    ceiling = cpu_ceiling(server + client)
    return (
        f"clients={clients:<3} median CPU per request: daemon {server:.2f} ms (its main process "
        f"{main:.2f}), bare endpoint {statistics.median(c.tree for c in base):.2f} ms, "
        f"clients {client:.2f} / {statistics.median(c.own for c in base):.2f} ms; on "
        f"{os.cpu_count()} CPUs the daemon's work allows at most {ceiling:.0f} req/s, a ratio of "
        f"{ceiling / statistics.median(base_rates):.2f}"
    )


def summarise(elapsed: float, lat: list[float], n: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one run."""
    lat = sorted(lat)
    return n / elapsed, statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000


def report(
    name: str, clients: int, rate: float, p50: float, p99: float, errors: int, cpu: CpuWindow
) -> None:
    print(
        f"{name:<22} clients={clients:<3} {rate:8.1f} req/s  p50={p50:6.1f} ms  "
        f"p99={p99:7.1f} ms  errors={errors}  CPU ms/req: server {cpu.tree:.2f} "
        f"(main {cpu.main:.2f}), client {cpu.own:.2f}",
        flush=True,
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


def profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the daemon's GIL holder (collapsed stacks) until SIGINT."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--gil",  # only the thread holding the GIL: where the interpreter's time goes
            "--rate",
            "200",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3, help="product/bare alternations")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated client counts")
    parser.add_argument(
        "--profile",
        type=Path,
        help="folder for py-spy collapsed stacks of the daemon (one file per client count, "
        "taken during the first round)",
    )
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
            summary = []
            for clients in (int(c) for c in args.clients.split(",")):
                n = args.requests
                bodies = [
                    {
                        "originator_email_address": f"c{i % 50}@customer.test",
                        "data": {"subject": f"Bench {i}", "content": "<p>hello</p>"},
                    }
                    for i in range(n)
                ]
                rate_ratios, p99_ratios, base_rates = [], [], []
                cpu_ours: list[CpuWindow] = []
                cpu_base: list[CpuWindow] = []
                for round_ in range(args.rounds):
                    keys = [str(uuid.uuid4()) for _ in range(n)]
                    spy = None
                    if args.profile is not None and round_ == 0:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        assert daemon.proc is not None
                        spy = profile(daemon.proc.pid, args.profile / f"create-{clients}.txt")
                        time.sleep(1)  # py-spy attaches
                    assert daemon.proc is not None
                    cpu = CpuWindow(daemon.proc.pid)
                    cpu.start()
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
                    cpu.stop(n)
                    cpu_ours.append(cpu)
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                    ours = summarise(elapsed, lat, n)
                    report("mailhelpdesk create", clients, *ours, errors, cpu)
                    cpu = CpuWindow(bare.pid)
                    cpu.start()
                    elapsed, lat, errors = asyncio.run(
                        drive(f"http://127.0.0.1:{port}/insert", bodies, lambda i: {}, clients)
                    )
                    cpu.stop(n)
                    cpu_base.append(cpu)
                    base = summarise(elapsed, lat, n)
                    report("bare fastapi insert", clients, *base, errors, cpu)
                    base_rates.append(base[0])
                    rate_ratios.append(ours[0] / base[0])
                    p99_ratios.append(ours[2] / base[2])
                summary.append(
                    f"clients={clients:<3} median rate ratio {statistics.median(rate_ratios):.2f} "
                    f"(rounds {', '.join(f'{r:.2f}' for r in rate_ratios)}), median p99 ratio "
                    f"{statistics.median(p99_ratios):.2f} "
                    f"(rounds {', '.join(f'{r:.2f}' for r in p99_ratios)})"
                )
                summary.append(_ceiling(clients, cpu_ours, cpu_base, base_rates))
            print("\n".join(summary))
        finally:
            bare.terminate()
            bare.wait(10)
            daemon.stop()


if __name__ == "__main__":
    main()
