"""Issue 17, the mail-meaning defects (1, 2, 3, 4, 9, 10, 13), each replayed as the attack was:
through the SMTP socket of a running `mailhelpdesk serve` (and its HTTP API where the defect
was API-triggered), on SQLite and on PostgreSQL. One daemon per engine serves the module; every
test uses its own addresses and subjects, so the tests do not see each other's tickets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from mailhelpdesk.store.db import make_engine
from tests.helpers import Daemon, make_mail

EXTRA = """
[ingest]
max_ccs_per_message = 5
max_ccs_per_ticket = 8
"""


class Desk:
    """The running daemon, its database (read with SQL) and its outbound maildir."""

    def __init__(self, daemon: Daemon, url: str) -> None:
        self.daemon = daemon
        self.engine: Engine = make_engine(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def send(self, raw: bytes, **kw: Any) -> None:
        self.daemon.send(raw, **kw)
        self.daemon.wait_idle()

    def ticket_of(self, sender: str) -> Any:
        (row,) = self.rows(
            "SELECT id, number, subject FROM tickets WHERE originator_email = :e", e=sender
        )
        return row

    def ccs(self, ticket_id: int) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT email FROM ticket_ccs WHERE ticket_id = :t ORDER BY id", t=ticket_id
            )
        ]

    def responses(self, ticket_id: int) -> list[Any]:
        return self.rows(
            "SELECT id, kind, is_internal, created_by_email, plain_text, visible_text, html "
            "FROM responses WHERE ticket_id = :t ORDER BY id",
            t=ticket_id,
        )

    def inbound(self, message_id: str) -> Any:
        (row,) = self.rows(
            "SELECT outcome, reason, state FROM inbound_messages WHERE message_id = :m", m=message_id
        )
        return row

    def outbox(self, ticket_id: int) -> list[Any]:
        return self.rows(
            "SELECT id, kind, state, last_error, rcpt_tos, mail_from, raw, message_id "
            "FROM outbox WHERE ticket_id = :t ORDER BY id",
            t=ticket_id,
        )

    def sent(self, ticket_id: int, timeout: float = 30) -> list[Any]:
        """The ticket's outbox rows once none is waiting to be composed or sent."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.outbox(ticket_id)
            if rows and all(r.state != "queued" for r in rows):
                return rows
            assert time.monotonic() < deadline, f"outbox still queued: {rows}"
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    tmp: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    daemon = Daemon(tmp, extra_config=EXTRA)
    url = daemon.db_url
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").create_database()
        daemon.config.write_text(
            daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
        )
    daemon.start()
    try:
        yield Desk(daemon, url)
    finally:
        daemon.stop()


# -- 2: CC hijack --------------------------------------------------------------------------------


def test_stranger_linking_by_references_or_signed_reply_to_is_held_and_adds_no_cc(
    desk: Desk,
) -> None:
    """Issue 17 defect 2: a stranger naming the customer's Message-ID in In-Reply-To/References,
    or writing to the customer's signed reply address, is held internal and their CCs are not
    added; later agent answers go to the customer only."""
    desk.send(make_mail(sender="vip2@bigcustomer.test", message_id="<hijack-orig@bigcustomer.test>"))
    ticket = desk.ticket_of("vip2@bigcustomer.test")
    ack = desk.sent(ticket.id)[0]
    reply_to = next(
        line.split("<")[-1].rstrip(">")
        for line in ack.raw.decode().splitlines()
        if line.startswith("Reply-To:")
    )
    desk.send(
        make_mail(
            sender="mallory@evil.test",
            message_id="<hijack-1@evil.test>",
            headers={
                "In-Reply-To": "<hijack-orig@bigcustomer.test>",
                "References": "<hijack-orig@bigcustomer.test>",
                "Cc": "friend1@evil.test, friend2@evil.test",
            },
        ),
        mail_from="mallory@evil.test",
    )
    desk.send(
        make_mail(
            sender="mallory@evil.test",
            to=reply_to,
            message_id="<hijack-2@evil.test>",
            headers={"Cc": "friend3@evil.test"},
        ),
        mail_from="mallory@evil.test",
        rcpt=[reply_to],
    )
    for message_id in ("<hijack-1@evil.test>", "<hijack-2@evil.test>"):
        row = desk.inbound(message_id)
        assert row.outcome == "held" and "not a party" in row.reason
    assert desk.ccs(ticket.id) == []
    mallory = [r for r in desk.responses(ticket.id) if r.created_by_email == "mallory@evil.test"]
    assert len(mallory) == 2 and all(r.is_internal for r in mallory)
    # no notice to the stranger or their friends
    assert not any("evil.test" in r.rcpt_tos for r in desk.sent(ticket.id))


# -- 3: CC amplification -------------------------------------------------------------------------


def test_ccs_are_capped_per_message_and_per_ticket(desk: Desk) -> None:
    """Issue 17 defect 3: a first mail with 5,000 Cc addresses adds max_ccs_per_message (5);
    the customer's next reply adds more only up to max_ccs_per_ticket (8)."""
    many = ", ".join(f"c{i}@amp.test" for i in range(5000))
    desk.send(
        make_mail(
            sender="amp@customer3.test", message_id="<amp-1@customer3.test>", headers={"Cc": many}
        ),
        mail_from="amp@customer3.test",
    )
    ticket = desk.ticket_of("amp@customer3.test")
    assert desk.ccs(ticket.id) == [f"c{i}@amp.test" for i in range(5)]
    desk.send(
        make_mail(
            sender="amp@customer3.test",
            message_id="<amp-2@customer3.test>",
            headers={"In-Reply-To": "<amp-1@customer3.test>", "Cc": many[:1200]},
        ),
        mail_from="amp@customer3.test",
    )
    assert desk.ccs(ticket.id) == [f"c{i}@amp.test" for i in range(8)]
