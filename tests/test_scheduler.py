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


SLA_CONFIG = """
[[sla]]
queue = "*"
priority = "*"
first_response = "4h"
"""


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def _wait_for(db: Path, sql: str, want: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _rows(db, sql)[0][0] < want:
        time.sleep(0.2)
    assert _rows(db, sql)[0][0] == want


def test_daemon_escalates_a_breach_once_across_restarts(tmp_path: Path) -> None:
    """A breach found by the daemon's job is recorded and mailed once; the job of the next start
    (proved to have run by a second ticket's breach) does not send the first again."""
    db = tmp_path / "helpdesk.db"
    daemon = Daemon(tmp_path, extra_config=SLA_CONFIG)
    daemon.start(timeout=120)
    daemon.send(make_mail(subject="first"))
    daemon.send(make_mail(subject="second"))
    daemon.wait_idle()
    daemon.stop()
    due = _rows(db, "SELECT count(*) FROM ticket_sla WHERE first_response_due_at IS NOT NULL")
    assert due == [(2,)]
    past = "UPDATE ticket_sla SET first_response_due_at = '2020-01-01 10:00:00', "
    past += "first_response_warn_at = '2020-01-01 09:00:00' WHERE ticket_id = "
    breaches = "SELECT count(*) FROM ticket_events WHERE type = 'sla_breach'"
    with sqlite3.connect(db) as conn:
        conn.execute(past + "(SELECT id FROM tickets WHERE number = 100001)")
    daemon.start(timeout=120)  # the escalation job runs at start, then every minute
    try:
        _wait_for(db, breaches, 1)
    finally:
        daemon.stop()
    with sqlite3.connect(db) as conn:
        conn.execute(past + "(SELECT id FROM tickets WHERE number = 100002)")
    daemon.start(timeout=120)
    try:
        _wait_for(db, breaches, 2)
    finally:
        daemon.stop()
    per_ticket = _rows(
        db,
        "SELECT t.number, count(*) FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id "
        "WHERE e.type = 'sla_breach' GROUP BY t.number ORDER BY t.number",
    )
    assert per_ticket == [(100001, 1), (100002, 1)]
    notices = _rows(db, "SELECT count(*) FROM outbox WHERE kind = 'sla_breach'")
    assert notices == [(2,)]  # one to Alice per ticket
    assert _rows(db, "SELECT count(*) FROM outbox WHERE kind = 'sla_warning'") == [(0,)]
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
