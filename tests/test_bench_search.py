"""benchmarks/bench_search.py runs end to end at a smoke size: it generates a desk through the
store, migrates it (the search backfill), serves it, and times every one of its 12 requests over
HTTP and directly, each answering 200 (the benchmark raises on anything else)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_search.py"


def test_search_benchmark_runs_at_a_small_size() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH), "--tickets", "300", "--engine", "sqlite"),
            *("--rounds", "1", "--samples", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any("300 tickets" in line for line in lines), done.stdout
    timed = [line for line in lines if line.split() and line.split()[-1].isdigit()]
    assert len(timed) == 12, done.stdout
