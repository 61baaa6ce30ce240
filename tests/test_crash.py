"""SIGKILL at random moments while mail arrives: nothing acknowledged is lost, nothing doubled."""

from __future__ import annotations

import os
import random
import smtplib
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import Daemon, crlf, make_mail

MESSAGES = int(os.environ.get("MAILHELPDESK_CRASH_MESSAGES", "500"))
SENDERS = 4


@pytest.mark.slow
def test_sigkill_during_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.start()
    rng = random.Random(20261123)
    todo = list(range(MESSAGES))
    lock = threading.Lock()
    acknowledged: set[str] = set()
    attempts = Counter[str]()
    stop = threading.Event()

    def sender() -> None:
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            mid = f"<crash-{n}@customer.test>"
            raw = crlf(
                make_mail(
                    subject=f"crash test {n}", message_id=mid, sender=f"c{n % 37}@customer.test"
                )
            )
            while True:  # like an MTA: retry until a 250
                attempts[mid] += 1
                try:
                    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as smtp:
                        smtp.sendmail(f"c{n % 37}@customer.test", ["support@helpdesk.test"], raw)
                    with lock:
                        acknowledged.add(mid)
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)

    # kill at random points of the run (so kills happen however fast the machine is), each a
    # random few milliseconds after that many 250s: mid-session, mid-commit or mid-ingest
    kill_points = sorted(rng.sample(range(5, MESSAGES - 5), k=max(3, MESSAGES // 50)))

    def killer() -> None:
        for point in kill_points:
            while len(acknowledged) < point and not stop.is_set():
                time.sleep(0.002)
            if stop.is_set():
                return
            time.sleep(rng.uniform(0, 0.05))
            daemon.kill()
            kills.append(1)
            daemon.start()

    kills: list[int] = []
    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    chaos = threading.Thread(target=killer)
    for t in threads:
        t.start()
    chaos.start()
    for t in threads:
        t.join(timeout=600)
    stop.set()
    chaos.join()
    daemon.kill()
    daemon.start()
    daemon.wait_idle(timeout=120)
    daemon.stop()

    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        stored = Counter(
            mid
            for (mid,) in conn.execute(
                "SELECT message_id FROM responses WHERE message_id LIKE '<crash-%'"
            )
        )
        failed = conn.execute(
            "SELECT COUNT(*) FROM inbound_messages WHERE state != 'done'"
        ).fetchone()[0]
        tickets = conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0]
    retried = sum(1 for n in attempts.values() if n > 1)
    print(
        f"\ncrash test: {MESSAGES} messages, {len(kills)} SIGKILLs, {retried} resent after errors, "
        f"{len(acknowledged)} acknowledged, {len(stored)} on tickets, {tickets} tickets"
    )
    assert len(kills) >= 3, "the daemon must have been killed several times"
    assert len(acknowledged) == MESSAGES
    lost = acknowledged - set(stored)
    doubled = [m for m, n in stored.items() if n > 1]
    assert not lost, f"lost: {sorted(lost)[:10]}"
    assert not doubled, f"doubled: {doubled[:10]}"
    assert failed == 0
    assert tickets == MESSAGES
