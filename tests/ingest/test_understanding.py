"""Understanding ahead of the writer (issue 16): the process pool and its bounds, the batch's
threading maps, and the `[ingest] understand_workers` key."""

from __future__ import annotations

import os
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from mailhelpdesk.config import ConfigError, config_from_dict
from mailhelpdesk.domain.models import InboundMessage, Response
from mailhelpdesk.ingest import worker
from mailhelpdesk.ingest.understanding import Understander
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import Daemon, make_mail
from tests.understand_hooks import hang_or_crash, pid_or_fail


@pytest.fixture
def desk(desk_factory: Any) -> Desk:
    return desk_factory()  # type: ignore[no-any-return]


def keep(desk: Desk, *raws: bytes) -> list[int]:
    """Keep messages as a transport would, without running the worker."""
    ids = []
    with session_scope(desk.engine) as session:
        for raw in raws:
            row = spool.add_inbound(
                session,
                raw=raw,
                envelope=spool.Envelope(
                    source="smtp",
                    mail_from="priya@customer.test",
                    rcpt_tos=("support@helpdesk.test",),
                ),
                now=desk.clock.now(),
            )
            ids.append(row.id or 0)
    return ids


def inbound(desk: Desk) -> list[InboundMessage]:
    with read_scope(desk.engine) as session:
        return list(session.exec(select(InboundMessage).order_by(col(InboundMessage.id))))


def ticket_of_response(desk: Desk, message_id: str) -> int:
    with read_scope(desk.engine) as session:
        response = session.exec(select(Response).where(Response.message_id == message_id)).one()
        return response.ticket_id


@pytest.mark.parametrize("workers", [0, 2])
def test_reply_in_the_same_batch_as_its_first_message_lands_on_that_ticket(
    desk: Desk, workers: int
) -> None:
    """Ordering per ticket: the batch's threading maps learn each ticket the batch opens, so a
    reply by References and one by subject tag, in the very batch that opens the ticket, land
    on it (and the same mail twice in one batch is applied once)."""
    first = make_mail(subject="Printer on fire", message_id="<first@customer.test>")
    by_reference = make_mail(
        subject="Re: Printer on fire",
        message_id="<second@customer.test>",
        headers={"In-Reply-To": "<first@customer.test>", "References": "<first@customer.test>"},
    )
    # a fresh desk numbers its first ticket 100001
    by_tag = make_mail(subject="[#100001] still burning", message_id="<third@customer.test>")
    keep(desk, first, by_reference, by_tag, first)
    understander = Understander(workers)
    try:
        result = worker.process_batch(
            desk.engine, desk.settings, desk.clock, limit=10, understander=understander
        )
    finally:
        understander.close()
    assert result.processed == 4
    outcomes = [(row.state, row.outcome) for row in inbound(desk)]
    assert outcomes == [
        ("done", "ticket_created"),
        ("done", "reply_added"),
        ("done", "reply_added"),
        ("done", "duplicate"),
    ]
    (ticket,) = desk.tickets()
    assert ticket.number == 100001
    for message_id in ("<first@customer.test>", "<second@customer.test>", "<third@customer.test>"):
        assert ticket_of_response(desk, message_id) == ticket.id


@pytest.mark.parametrize("how", ["hang", "crash"])
def test_a_message_that_hangs_or_kills_understanding_is_set_aside_and_the_rest_filed(
    desk: Desk, how: str
) -> None:
    """A message whose understanding overruns its time limit, or kills its worker process, is
    set aside with that reason; the pool is rebuilt and the others of its batch are filed."""
    good = [make_mail(subject=f"Question {n}") for n in range(4)]
    bad = make_mail(subject="Poison", headers={"X-Test-Understand": how})
    ids = keep(desk, good[0], good[1], bad, good[2], good[3])
    understander = Understander(2, time_limit_s=3, function=hang_or_crash)
    try:
        understander.start()
        result = worker.process_batch(
            desk.engine, desk.settings, desk.clock, limit=10, understander=understander
        )
        assert understander.rebuilds >= 1
        # the rebuilt pool works
        keep(desk, make_mail(subject="After the rebuild"))
        again = worker.process_batch(
            desk.engine, desk.settings, desk.clock, limit=10, understander=understander
        )
    finally:
        understander.close()
    assert result.processed == 5 and again.processed == 1
    rows = {row.id: row for row in inbound(desk)}
    poison = rows[ids[2]]
    assert poison.state == "failed"
    expected = "took longer than 3 s" if how == "hang" else "killed its worker process"
    assert poison.reason.startswith("step understand: ") and expected in poison.reason
    others = [row for row in rows.values() if row.id != ids[2]]
    assert [(r.state, r.outcome) for r in others] == [("done", "ticket_created")] * 5
    assert sorted(t.subject for t in desk.tickets()) == sorted(
        [f"Question {n}" for n in range(4)] + ["After the rebuild"]
    )


@pytest.mark.parametrize("how", ["", "hang", "crash"])
def test_offloaded_work_runs_in_a_worker_and_here_when_its_worker_fails(how: str) -> None:
    """Other pure work (the sender's notices) runs in the pool's processes; work that overruns
    the time limit or kills its worker runs here instead, and the pool is rebuilt for the next."""
    understander = Understander(1, time_limit_s=2)
    try:
        understander.start()
        where = understander.offload(pid_or_fail, how, os.getpid())
        after = understander.offload(pid_or_fail, "", os.getpid())
    finally:
        understander.close()
    if how:
        assert where == os.getpid() and understander.rebuilds == 1
    else:
        assert where != os.getpid() and understander.rebuilds == 0
    assert after != os.getpid()


def test_in_process_understanding_sets_aside_what_raises(desk: Desk) -> None:
    """workers=0 (import, tests): understanding runs here; the worker boundary holds."""
    (row_id,) = keep(desk, make_mail(subject="fine"))
    batch = worker.claim(desk.engine, limit=10)
    assert batch.ids == [row_id]
    worker.understand(Understander(0), batch, desk.settings)
    assert batch.jobs == []  # the raw bytes are let go once understood
    result = worker.write(desk.engine, batch, desk.settings, desk.clock)
    assert result.outcomes == {"ticket_created": 1}
    assert batch.ids == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, "from 0"),
        (65, "from 0"),
        ("2", "from 0"),
        (True, "from 0"),
        (1.5, "from 0"),
    ],
)
def test_understand_workers_is_validated(value: object, error: str) -> None:
    with pytest.raises(ConfigError, match=rf"ingest\.understand_workers: .*{error}"):
        config_from_dict(_config(understand_workers=value))


def test_understand_workers_defaults_to_the_cpu_count() -> None:
    assert config_from_dict(_config()).ingest.understand_pool_size() == (os.cpu_count() or 1)
    assert config_from_dict(_config(understand_workers=0)).ingest.understand_pool_size() == 0
    assert config_from_dict(_config(understand_workers=3)).ingest.understand_pool_size() == 3
    with pytest.raises(ConfigError, match=r"ingest\.understand_timeout_s"):
        config_from_dict(_config(understand_timeout_s=0))


def _config(**ingest: object) -> dict[str, Any]:
    return {
        "database": {"url": "sqlite:///:memory:"},
        "helpdesk": {"address": "support@helpdesk.test"},
        "ingest": ingest,
    }


def test_daemon_files_first_messages_and_their_replies_over_smtp(tmp_path: Path) -> None:
    """The daemon's overlapped loop (batch N+1 understood in the pool while batch N is written):
    first messages and their replies sent back to back over one SMTP connection each land on
    their ticket, in order."""
    daemon = Daemon(tmp_path, extra_config="[ingest]\nunderstand_workers = 2\nbatch_size = 4\n")
    daemon.start()
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=60) as smtp:
            for n in range(12):
                first = f"<q{n}@customer.test>"
                smtp.sendmail(
                    "priya@customer.test",
                    ["support@helpdesk.test"],
                    make_mail(subject=f"Question {n}", message_id=first),
                )
                smtp.sendmail(
                    "priya@customer.test",
                    ["support@helpdesk.test"],
                    make_mail(
                        subject=f"Re: Question {n}",
                        message_id=f"<r{n}@customer.test>",
                        headers={"In-Reply-To": first, "References": first},
                    ),
                )
        daemon.wait_idle(timeout=120)
        log = daemon.log.read_text()
    finally:
        daemon.stop()
    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        states = conn.execute("SELECT state, outcome FROM inbound_messages").fetchall()
        pairs = conn.execute(
            "SELECT a.message_id, b.message_id FROM responses a JOIN responses b "
            "ON a.ticket_id = b.ticket_id AND a.id < b.id"
        ).fetchall()
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
    assert sorted(states) == sorted(
        [("done", "ticket_created")] * 12 + [("done", "reply_added")] * 12
    ), log[-2000:]
    assert tickets == 12
    assert sorted(pairs) == sorted(
        (f"<q{n}@customer.test>", f"<r{n}@customer.test>") for n in range(12)
    )


def test_pool_processes_end_when_their_daemon_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no understanding process behind (a pool worker would otherwise wait on
    its queue forever, and the fork server with it)."""
    code = (
        "import sys, time\n"
        "from mailhelpdesk.ingest.understanding import Understander\n"
        "u = Understander(2)\n"
        "u.start()\n"
        "print(' '.join(map(str, u.pids())), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
