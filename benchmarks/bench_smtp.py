"""SMTP ingest throughput: the daemon (250 only after commit, tickets filed) next to a bare
aiosmtpd sink that only answers 250, measured in the same run on the same machine.

    python benchmarks/bench_smtp.py [--messages 1000] [--connections 8] [--sizes 4096,102400]
                                    [--corpus DIR] [--rounds 3] [--config "[ingest] ..."]

Each case (a generated size, or with --corpus the realistic mail of
`../shared/bench/gen_corpus.py DIR -n 1000 --seed 1 --ref-format '[#{mhd}]'`, its *.eml in name
order) runs `--rounds` times, the bare sink and the daemon alternated, on the same messages; the
ratio is taken per round and its median reported. Messages are handed to the connections from
one queue in order, so they arrive in (about) file order, which a corpus of replies needs.

Figures: messages/s, p50/p99 from the end of DATA to "ticket committed" (processed_at in the
store minus the client's clock just before it sent DATA; same machine, same clock), and peak
RSS: VmHWM of the daemon plus every process under it (the understanding pool and its fork
server), summed (shared pages counted in each, so an upper bound).

CPU per message, from /proc and getrusage: the sink with its clients (one process), the daemon
(every process under it, from the first DATA until every message is filed), its main process
alone, and the clients. The main process answers SMTP and runs the writer on one interpreter:
when it is busy all the time, its figure sets the rate. Each case ends with a ceiling: the most
a daemon doing that much work could file, its CPU spread perfectly over every core beside the
clients, and the ratio that would be. A goal above that ceiling needs less work, not a better
spread.
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

from tests.helpers import (
    CpuWindow,
    Daemon,
    cpu_ceiling,
    crlf,
    free_port,
    make_mail,
    own_cpu_s,
    tree_memory_kb,
)


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
    queue = iter(messages)  # one queue in order, so messages arrive in about that order

    def next_message() -> tuple[str, bytes] | None:
        with lock:
            return next(queue, None)

    def worker(_n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo()
            while (item := next_message()) is not None:
                mid, raw = item
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
        list(pool.map(worker, range(connections)))
    return time.perf_counter() - t_begin, started


def bench_sink(messages: list[tuple[str, bytes]], connections: int) -> tuple[float, float]:
    """(messages/s, CPU ms per message of this process: the sink and its clients together)."""
    port = free_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cpu = own_cpu_s()  # the clients' threads and the sink's
        elapsed, _ = _send_all(port, messages, connections)
        cpu = own_cpu_s() - cpu
    finally:
        controller.stop()
    return len(messages) / elapsed, cpu / len(messages) * 1000


def _wait_idle(daemon: Daemon, timeout: float) -> None:
    """Daemon.wait_idle, but a slow /healthz answer (a busy machine) is asked again, not fatal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if daemon.health()["data"]["inbound_pending"] == 0:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("ingest did not finish")


def bench_daemon(
    messages: list[tuple[str, bytes]], connections: int, extra_config: str = ""
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp), extra_config=extra_config)
        daemon.start()
        try:
            assert daemon.proc is not None
            cpu = CpuWindow(daemon.proc.pid)
            cpu.start()
            t_begin = time.perf_counter()
            acked, started = _send_all(daemon.smtp_port, messages, connections)
            _wait_idle(daemon, timeout=1800)
            filed = time.perf_counter() - t_begin
            cpu.stop(len(messages))
            rss_kb = tree_memory_kb(daemon.proc.pid, "VmHWM")
        finally:
            daemon.stop()
        with sqlite3.connect(Path(tmp) / "helpdesk.db") as conn:
            rows = conn.execute("SELECT message_id, processed_at FROM inbound_messages").fetchall()
            outcomes = dict(
                conn.execute(
                    "SELECT state || ':' || outcome, COUNT(*) FROM inbound_messages GROUP BY 1"
                ).fetchall()
            )
    filed_ok = sum(n for k, n in outcomes.items() if k.startswith("done:"))
    if filed_ok != len(messages):
        raise RuntimeError(f"{outcomes} for {len(messages)} messages")
    latencies = sorted(
        datetime.fromisoformat(done).timestamp() - started[mid]
        for mid, done in rows
        if mid in started and done
    )
    return {
        "acked_per_s": len(messages) / acked,
        "filed_per_s": len(messages) / filed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000 if latencies else 0.0,
        "rss_mb": rss_kb / 1024,
        "tickets": outcomes.get("done:ticket_created", 0),
        "replies": outcomes.get("done:reply_added", 0),
        # CPU per message until every message is filed (notices sent meanwhile included)
        "daemon_cpu_ms": cpu.tree,
        "main_cpu_ms": cpu.main,  # its own process: SMTP, the writer
        "client_cpu_ms": cpu.own,
    }


def _corpus(directory: Path) -> list[tuple[str, bytes]]:
    """(Message-ID, bytes) of every *.eml in name order."""
    found = []
    for path in sorted(directory.glob("*.eml")):
        raw = crlf(path.read_bytes())
        mid = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                if line.lower().startswith(b"message-id:")
            ),
            path.name,
        )
        found.append((mid, raw))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--sizes", default="4096")
    parser.add_argument("--corpus", type=Path, help="a folder of .eml files (gen_corpus.py)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="", help="extra config lines for the daemon")
    args = parser.parse_args()
    cases: list[tuple[str, list[tuple[str, bytes]]]] = []
    if args.corpus:
        cases.append((f"corpus {args.corpus.name}", _corpus(args.corpus)))
    else:
        cases += [
            (f"{size} B", _messages(args.messages, size, f"{size}-{time.time_ns()}"))
            for size in (int(s) for s in args.sizes.split(","))
        ]
    with open("/proc/loadavg") as load:
        print(
            f"SMTP ingest, {args.connections} connections, {os.cpu_count()} CPUs, "
            f"{args.rounds} rounds alternated, load average {load.read().split()[:3]}"
        )
    print(
        f"{'case':>16} {'round':>5} {'n':>5} {'sink msg/s':>11} {'acked msg/s':>12} "
        f"{'filed msg/s':>12} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7} "
        f"{'tickets':>7} {'replies':>7} {'CPU ms/msg: sink':>16} {'daemon':>6} {'main':>5} "
        f"{'client':>6}"
    )
    for name, messages in cases:
        ratios, filed, sinks, rss = [], [], [], []
        cpu: dict[str, list[float]] = {"sink": [], "daemon": [], "main": [], "client": []}
        for round_ in range(1, args.rounds + 1):
            sink, sink_cpu_ms = bench_sink(messages, args.connections)
            daemon = bench_daemon(messages, args.connections, args.config)
            ratio = daemon["filed_per_s"] / sink
            ratios.append(ratio)
            filed.append(daemon["filed_per_s"])
            sinks.append(sink)
            rss.append(daemon["rss_mb"])
            cpu["sink"].append(sink_cpu_ms)
            cpu["daemon"].append(daemon["daemon_cpu_ms"])
            cpu["main"].append(daemon["main_cpu_ms"])
            cpu["client"].append(daemon["client_cpu_ms"])
            print(
                f"{name:>16} {round_:>5} {len(messages):>5} {sink:>11.0f} "
                f"{daemon['acked_per_s']:>12.0f} {daemon['filed_per_s']:>12.0f} {ratio:>6.3f} "
                f"{daemon['p50_ms']:>8.1f} {daemon['p99_ms']:>8.1f} {daemon['rss_mb']:>7.1f} "
                f"{daemon['tickets']:>7.0f} {daemon['replies']:>7.0f} {sink_cpu_ms:>16.2f} "
                f"{daemon['daemon_cpu_ms']:>6.2f} {daemon['main_cpu_ms']:>5.2f} "
                f"{daemon['client_cpu_ms']:>6.2f}",
                flush=True,
            )
        print(
            f"{name:>16} median: sink {statistics.median(sinks):.0f} msg/s, filed "
            f"{statistics.median(filed):.0f} msg/s, ratio {statistics.median(ratios):.3f}, "
            f"peak RSS max {max(rss):.0f} MB",
            flush=True,
        )
        # the most any daemon doing this much work could file here, its CPU spread perfectly
        # over every core beside its clients: what the ratio could reach without less work
        each = {k: statistics.median(v) for k, v in cpu.items()}
        ceiling = cpu_ceiling(each["daemon"] + each["client"])
        print(
            f"{name:>16} median CPU per message: sink with its clients {each['sink']:.2f} ms, "
            f"daemon (every process) {each['daemon']:.2f} ms, of it its main process "
            f"{each['main']:.2f} ms, its clients {each['client']:.2f} ms; on "
            f"{os.cpu_count()} CPUs that work allows at most {ceiling:.0f} msg/s, a ratio of "
            f"{ceiling / statistics.median(sinks):.3f}",
            flush=True,
        )
    print(
        "ratio = filed msg/s (250 after commit, every message filed) / bare sink msg/s, per round"
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
