"""benchmarks/bench_smtp.py and bench_api.py run end to end at a smoke size and print what each
message or request cost in CPU (the daemon's process tree, its main process, the clients) and
the ceiling that work sets: figures read from /proc, which a wrong field or a process left out
would make zero or inconsistent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NUMBER = r"([0-9.]+)"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _ceiling_holds(ceiling: float, daemon_ms: float, client_ms: float) -> None:
    """The ceiling printed is every core's time over the work a message or request costs."""
    expected = (os.cpu_count() or 1) * 1000 / (daemon_ms + client_ms)
    assert abs(ceiling - expected) <= max(1.0, expected * 0.01), (ceiling, expected)


def test_the_smtp_benchmark_prints_cpu_per_message_and_the_ceiling() -> None:
    out = _run("bench_smtp.py", "--messages", "100", "--rounds", "1")
    found = re.search(
        rf"daemon \(every process\) {NUMBER} ms, of it its main process {NUMBER} ms, its "
        rf"clients {NUMBER} ms; on \d+ CPUs that work allows at most {NUMBER} msg/s",
        out,
    )
    assert found is not None, out
    daemon, main, clients, ceiling = (float(g) for g in found.groups())
    # the tree holds the main process and its understanding pool, which did work too (100
    # messages: enough clock ticks in each that neither reads as zero)
    assert daemon > main > 0, out
    assert clients > 0, out
    _ceiling_holds(ceiling, daemon, clients)


def test_the_api_benchmark_prints_cpu_per_request_and_the_ceiling() -> None:
    out = _run("bench_api.py", "--requests", "200", "--rounds", "1", "--clients", "2")
    servers = re.findall(rf"CPU ms/req: server {NUMBER} \(main {NUMBER}\), client {NUMBER}", out)
    assert len(servers) == 2, out  # the daemon's line and the bare endpoint's
    for server, main, client in servers:
        assert float(server) >= float(main) > 0, out
        assert float(client) > 0, out
    found = re.search(
        rf"daemon {NUMBER} ms \(its main process {NUMBER}\), bare endpoint {NUMBER} ms, "
        rf"clients {NUMBER} / {NUMBER} ms; on \d+ CPUs the daemon's work allows at most "
        rf"{NUMBER} req/s",
        out,
    )
    assert found is not None, out
    daemon, _main, bare, clients, _bare_clients, ceiling = (float(g) for g in found.groups())
    # the daemon checks a token, a key and writes a ticket with its notices; the bare endpoint
    # writes one row
    assert daemon > bare > 0, out
    _ceiling_holds(ceiling, daemon, clients)
