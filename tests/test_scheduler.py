"""The daemon's scheduled jobs run: an on-hold ticket past its date is opened by the daemon."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.helpers import Daemon, make_mail


def test_daemon_wakes_on_hold_ticket_at_start(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.start()
    daemon.send(make_mail(subject="parts on order"))
    daemon.wait_idle()
    daemon.stop()
    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        conn.execute("UPDATE tickets SET status = 'on-hold', on_hold_until = '2020-01-01'")
    daemon.start()  # the wake-up job runs at start, then every minute
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and daemon.tickets()[0]["status"] != "open":
            time.sleep(0.2)
        (ticket,) = daemon.tickets()
    finally:
        daemon.stop()
    assert ticket["status"] == "open" and ticket["on_hold_until"] is None
    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM outbox")]
    assert "on_hold_woke" in kinds
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
