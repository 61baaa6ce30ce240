"""SMTP ingest throughput: the daemon (250 only after commit, tickets filed) next to a bare
aiosmtpd sink that only answers 250, measured in the same run on the same machine.

    python benchmarks/bench_smtp.py [--messages 2000] [--connections 8] [--sizes 4096,102400]

Figures: messages/s, p50/p99 from the end of DATA to "ticket committed" (processed_at in the
store minus the client's clock just before it sent DATA; same machine, same clock), peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import smtplib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosmtpd.controller import Controller

from tests.helpers import Daemon, crlf, free_port, make_mail


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def _messages(count: int, size: int, tag: str) -> list[tuple[str, bytes]]:
    filler = ("lorem ipsum dolor sit amet " * 3).strip() + "\n"
    body = (filler * (size // len(filler) + 1))[: max(size - 400, 10)]
    return [
        (
            f"<bench-{tag}-{i}@customer.test>",
            crlf(
                make_mail(
                    subject=f"bench {tag} {i}",
                    message_id=f"<bench-{tag}-{i}@customer.test>",
                    sender=f"c{i % 97}@customer.test",
                    body=body,
                )
            ),
        )
        for i in range(count)
    ]


def _send_all(
    port: int, messages: list[tuple[str, bytes]], connections: int
) -> tuple[float, dict[str, float]]:
    """Send over `connections` parallel sessions; return (seconds until the last 250, DATA start times)."""
    started: dict[str, float] = {}
    lock = threading.Lock()
    chunks = [messages[i::connections] for i in range(connections)]

    def worker(chunk: list[tuple[str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo()
            for mid, raw in chunk:
                smtp.mail("c@customer.test")
                smtp.rcpt("support@helpdesk.test")
                t0 = time.time()
                code, _ = smtp.data(raw)
                if code != 250:
                    raise RuntimeError(f"refused {code}")
                with lock:
                    started[mid] = t0

    t_begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(worker, chunks))
    return time.perf_counter() - t_begin, started


def bench_sink(messages: list[tuple[str, bytes]], connections: int) -> float:
    port = free_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        elapsed, _ = _send_all(port, messages, connections)
    finally:
        controller.stop()
    return len(messages) / elapsed


def bench_daemon(messages: list[tuple[str, bytes]], connections: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp), extra_config="")
        daemon.start()
        try:
            t_begin = time.perf_counter()
            acked, started = _send_all(daemon.smtp_port, messages, connections)
            daemon.wait_idle(timeout=600)
            filed = time.perf_counter() - t_begin
            with open(f"/proc/{daemon.proc.pid}/status") as status:  # type: ignore[union-attr]
                rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        finally:
            daemon.stop()
        with sqlite3.connect(Path(tmp) / "helpdesk.db") as conn:
            rows = conn.execute("SELECT message_id, processed_at FROM inbound_messages").fetchall()
            tickets = conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
    if tickets != len(messages):
        raise RuntimeError(f"{tickets} tickets for {len(messages)} messages")
    latencies = sorted(
        datetime.fromisoformat(done).timestamp() - started[mid]
        for mid, done in rows
        if mid in started and done
    )
    return {
        "acked_per_s": len(messages) / acked,
        "filed_per_s": len(messages) / filed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rss_mb": rss_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--sizes", default="4096,102400")
    args = parser.parse_args()
    print(
        f"SMTP ingest, {args.messages} messages, {args.connections} connections, {os.cpu_count()} CPUs"
    )
    print(
        f"{'size':>8} {'sink msg/s':>11} {'acked msg/s':>12} {'filed msg/s':>12} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        messages = _messages(args.messages, size, f"{size}-{time.time_ns()}")
        sink = bench_sink(messages, args.connections)
        daemon = bench_daemon(messages, args.connections)
        print(
            f"{size:>8} {sink:>11.0f} {daemon['acked_per_s']:>12.0f} {daemon['filed_per_s']:>12.0f} "
            f"{daemon['filed_per_s'] / sink:>6.2f} {daemon['p50_ms']:>8.1f} {daemon['p99_ms']:>8.1f} {daemon['rss_mb']:>7.1f}"
        )
    print(
        "ratio = filed msg/s (250 after commit, every message a ticket) / bare sink msg/s, same run"
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
