"""On-hold tickets wake up on their date and the assignee hears of it, once."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import select

from mailhelpdesk.domain.events import Channel
from mailhelpdesk.domain.models import OutboxItem, Ticket
from mailhelpdesk.services.lifecycle import wake_on_hold
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import make_mail


def test_on_hold_ticket_wakes_on_its_date_and_tells_the_assignee_once(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    desk.feed(make_mail(subject="Waiting for parts"))
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.status, ticket.on_hold_until, ticket.assigned_to_email = (
            "on-hold",
            date(2026, 11, 25),
            "alice@helpdesk.test",
        )
        session.add(ticket)

    def run() -> list[int]:
        with session_scope(desk.engine) as session:
            return wake_on_hold(session, change=desk.change(Channel.scheduler))

    assert run() == []  # 2026-11-23: not yet
    desk.clock.advance(days=2)
    assert run() == [100001]
    assert run() == []  # never twice
    assert desk.compose_notices() == 1
    with read_scope(desk.engine) as session:
        woken = session.exec(select(Ticket)).one()
        notices = session.exec(select(OutboxItem).where(OutboxItem.kind == "on_hold_woke")).all()
    assert (woken.status, woken.on_hold_until) == ("open", None)
    (notice,) = notices
    assert notice.primary_rcpt == "alice@helpdesk.test"
    assert b"[reopened] [#100001] Waiting for parts" in notice.raw
