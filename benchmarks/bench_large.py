"""Large messages at once (issue 17, point 5): what `[smtp_listener] large_messages_in_flight`
bounds. N concurrent sessions each send one message of S MB to a running daemon; the daemon's
RSS is sampled from /proc every 50 ms and `/healthz` is asked every 200 ms throughout.

    python benchmarks/bench_large.py [--messages 20] [--mb 20] [--slots 4] [--rounds 3]

Each round runs the product (the configured `--slots`, default 4 as shipped) and a baseline
with as many slots as messages (no bound: every body in memory at once), alternating, each on a
fresh daemon. Figures per run: RSS before, peak until the last 250, peak until every message is
ingested, RSS after idle; the slowest `/healthz` answer; seconds until the last 250. The summary
gives the medians and the median ratio product/baseline of the peak growth. Exits 1 when a
message was not answered 250 and kept, or `/healthz` took 1 s or more.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import smtplib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Daemon, tree_memory_kb

SUPPORT = "support@helpdesk.test"


def wait_ingested(db: Path, count: int, timeout: float) -> None:
    """Until `count` inbound rows are done, read from the store (not /healthz, which may be
    slower than a client's patience while 20 MB messages are parsed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(db, timeout=30) as conn:
            done = conn.execute(
                "SELECT COUNT(*) FROM inbound_messages WHERE state = 'done'"
            ).fetchone()[0]
            if done >= count:
                return
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} messages ingested after {timeout} s")


def large_message(index: int, mb: float, blob: bytes) -> bytes:
    """A mail with one attachment of about `mb` MB as sent (base64 in 76-character lines)."""
    head = (
        f"From: Big Sender <big{index}@customer.test>\r\nTo: {SUPPORT}\r\n"
        f"Subject: large {index}\r\nMessage-ID: <large-{index}-{time.time_ns()}@customer.test>\r\n"
        "Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="LARGE"\r\n\r\n'
        "--LARGE\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe scan is attached.\r\n"
        "--LARGE\r\nContent-Type: application/pdf; name=scan.pdf\r\n"
        "Content-Disposition: attachment; filename=scan.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + blob + b"\r\n--LARGE--\r\n"


def encoded_blob(mb: float) -> bytes:
    data = base64.b64encode(os.urandom(int(mb * 1024 * 1024 * 3 / 4)))
    return b"\r\n".join(data[i : i + 76] for i in range(0, len(data), 76))


def run_once(tmp: Path, *, messages: int, mb: float, slots: int, blob: bytes) -> dict[str, Any]:
    daemon = Daemon(
        tmp,
        extra_config="",
    )
    daemon.config.write_text(
        daemon.config.read_text().replace(
            "max_message_bytes = 2000000",
            f"max_message_bytes = {int(mb * 1024 * 1024 * 1.2) + 65536}\n"
            f"large_messages_in_flight = {slots}\nmax_sessions_per_client = {messages + 5}",
        )
    )
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    mails = [large_message(i, mb, blob) for i in range(messages)]
    daemon.wait_idle(timeout=60)
    before = tree_memory_kb(pid, "VmRSS")
    samples: list[tuple[float, int]] = []
    health: list[float] = []
    stop = threading.Event()
    sent_at: dict[int, float] = {}

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append((time.monotonic(), tree_memory_kb(pid, "VmRSS")))

    def probe() -> None:
        url = f"http://127.0.0.1:{daemon.http_port}/healthz"
        while not stop.wait(0.2):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    resp.read()
                health.append(time.monotonic() - started)
            except OSError:
                health.append(99.0)

    def send(i: int) -> str:
        try:
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=600) as smtp:
                smtp.sendmail(f"big{i}@customer.test", [SUPPORT], mails[i])
            sent_at[i] = time.monotonic()
            return "250"
        except (OSError, smtplib.SMTPException) as exc:
            return f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for t in threads:
        t.start()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(messages) as pool:
            answers = list(pool.map(send, range(messages)))
        accepted_s = time.monotonic() - start
        last_250 = max(sent_at.values()) if sent_at else time.monotonic()
        peak_data_hwm = tree_memory_kb(pid, "VmHWM")
        wait_ingested(tmp / "helpdesk.db", answers.count("250"), timeout=3600)
        idle_s = time.monotonic() - start
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = tree_memory_kb(pid, "VmRSS")
    peak_hwm = tree_memory_kb(pid, "VmHWM")
    daemon.stop()
    with sqlite3.connect(tmp / "helpdesk.db") as conn:
        kept = conn.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0]
        done = conn.execute(
            "SELECT COUNT(*) FROM inbound_messages WHERE state = 'done'"
        ).fetchone()[0]
    during_data = [kb for t, kb in samples if t <= last_250] or [before]
    return {
        "slots": slots,
        "answers_250": answers.count("250"),
        "errors": [a for a in answers if a != "250"][:3],
        "kept": kept,
        "done": done,
        "rss_before_mb": round(before / 1024, 1),
        "peak_data_mb": round(max([*during_data, peak_data_hwm]) / 1024, 1),
        "peak_mb": round(max([before, peak_hwm, *(kb for _t, kb in samples)]) / 1024, 1),
        "rss_after_idle_mb": round(after / 1024, 1),
        "healthz_max_s": round(max(health), 3) if health else None,
        "healthz_p50_s": round(statistics.median(health), 3) if health else None,
        "healthz_over_1s": sum(1 for h in health if h >= 1.0),
        "healthz_probes": len(health),
        "all_250_s": round(accepted_s, 1),
        "idle_s": round(idle_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--mb", type=float, default=20.0)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--product-only", action="store_true", help="no baseline (a quick check)")
    a = p.parse_args(argv)
    blob = encoded_blob(a.mb)
    runs: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="mailhelpdesk-large-"))
    for round_no in range(a.rounds):
        # alternate which goes first, so neither always meets a warmer machine
        order = [a.slots, a.messages] if round_no % 2 == 0 else [a.messages, a.slots]
        if a.product_only:
            order = [a.slots]
        for slots in order:
            tmp = root / f"r{round_no}-s{slots}"
            tmp.mkdir()
            run = run_once(tmp, messages=a.messages, mb=a.mb, slots=slots, blob=blob)
            run["round"] = round_no
            runs.append(run)
            print(json.dumps(run), flush=True)
    product = [r for r in runs if r["slots"] == a.slots]
    baseline = [r for r in runs if r["slots"] == a.messages]

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    if a.product_only:
        baseline = product
    ratios = [
        (p_["peak_mb"] - p_["rss_before_mb"]) / max(1.0, b["peak_mb"] - b["rss_before_mb"])
        for p_, b in zip(product, baseline, strict=True)
    ]
    summary = {
        "messages": a.messages,
        "mb": a.mb,
        "slots": a.slots,
        "load": os.getloadavg(),
        "product": {
            k: med(product, k)
            for k in ("rss_before_mb", "peak_data_mb", "peak_mb", "rss_after_idle_mb")
        }
        | {"healthz_max_s": max(r["healthz_max_s"] or 99 for r in product)},
        "baseline_unbounded": {
            k: med(baseline, k)
            for k in ("rss_before_mb", "peak_data_mb", "peak_mb", "rss_after_idle_mb")
        }
        | {"healthz_max_s": max(r["healthz_max_s"] or 99 for r in baseline)},
        "median_ratio_peak_growth": round(statistics.median(ratios), 3),
        "runs": runs,
    }
    print(
        f"{a.messages} concurrent messages of {a.mb} MB, {a.rounds} rounds, load {summary['load']}\n"
        f"  slots {a.slots}: {summary['product']}\n"
        f"  slots {a.messages} (unbounded): {summary['baseline_unbounded']}\n"
        f"  peak growth, bounded / unbounded (median of rounds): {summary['median_ratio_peak_growth']}"
    )
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2))
    bad = [
        r
        for r in runs
        if r["answers_250"] != a.messages
        or r["kept"] != a.messages
        or r["done"] != a.messages
        or (r["healthz_max_s"] or 99) >= 1.0
    ]
    for r in bad:
        print(f"FAILED: {r}")
    shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
