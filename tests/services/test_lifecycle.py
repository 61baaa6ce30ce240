"""Lifecycle jobs with a frozen clock: on-hold tickets wake up on their date, tickets waiting on
their customer are closed after N days with one notice, untouched tickets are reminded of once
per quiet spell, unused attachment bytes go; a restart in between does nothing twice."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import select

from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import Attachment, Blob, OutboxItem, Response, Ticket
from mailhelpdesk.services import ticket_changes
from mailhelpdesk.services.housekeeping import purge_unreferenced_blobs
from mailhelpdesk.services.lifecycle import auto_close, remind_untouched, wake_on_hold
from mailhelpdesk.services.tickets import NewResponse, add_response
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk, make_desk
from tests.helpers import make_mail

ALICE = "alice@helpdesk.test"


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


LIFECYCLE: dict[str, Any] = {
    "lifecycle": {"auto_close_after": "3d", "remind_untouched_after": "2d"},
}


def _answer(desk: Desk, number: int) -> None:
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        add_response(
            session,
            ticket,
            NewResponse(kind=ResponseKind.agent, plain_text="Try this.", created_by_email=ALICE),
            change=desk.change(Channel.api, Actor.agent(ALICE)),
        )


def _job(desk: Desk, job: Any, after_s: int) -> list[int]:
    with session_scope(desk.engine) as session:
        done: list[int] = job(session, change=desk.change(Channel.scheduler), after_s=after_s)
    desk.compose_notices()
    return done


def test_auto_close_after_days_waiting_on_the_customer_sends_one_notice(
    tmp_path: Path,
) -> None:
    desk = make_desk(tmp_path, LIFECYCLE)
    after = desk.config.lifecycle.auto_close_after_s
    try:
        desk.feed(make_mail(subject="Cannot log in"))
        desk.feed(make_mail(subject="Nobody answered this one yet"))
        _answer(desk, 100001)
        desk.clock.advance(days=2)
        assert _job(desk, auto_close, after) == []  # two days: not yet
        desk.clock.advance(days=1, hours=1)
        assert _job(desk, auto_close, after) == [100001]  # 100002 waits on us, not the customer
        clock = desk.clock
    finally:
        desk.app.close()
    again = make_desk(tmp_path, LIFECYCLE, clock=clock)  # a restart: nothing twice
    try:
        clock.advance(days=5)
        assert _job(again, auto_close, after) == []
        closed, waiting = again.tickets()
        assert (closed.status, waiting.status) == ("closed", "open")
        assert closed.resolution == "Closed automatically: no reply from the customer for 3 days."
        (notice,) = [o for o in again.outbox() if o.kind == "ticket_closed"]
        assert notice.primary_rcpt == "priya@customer.test"
    finally:
        again.app.close()


def test_a_customer_reply_keeps_the_ticket_open(desk_factory: Any) -> None:
    desk: Desk = desk_factory(LIFECYCLE)
    desk.feed(make_mail(subject="Cannot log in", message_id="<first@customer.test>"))
    _answer(desk, 100001)
    desk.clock.advance(days=1)
    desk.feed(
        make_mail(
            subject="Re: [#100001] Cannot log in",
            headers={"In-Reply-To": "<first@customer.test>"},
        )
    )
    desk.clock.advance(days=3)  # quiet since the customer's reply: it waits on us
    assert _job(desk, auto_close, desk.config.lifecycle.auto_close_after_s) == []


def test_untouched_ticket_reminds_the_assignee_once_per_quiet_spell(tmp_path: Path) -> None:
    desk = make_desk(tmp_path, LIFECYCLE)
    after = desk.config.lifecycle.remind_untouched_after_s
    try:
        desk.feed(make_mail(subject="Invoice wrong"))
        with session_scope(desk.engine) as session:
            ticket = session.exec(select(Ticket)).one()
            ticket_changes.assign(session, ticket, ALICE, change=desk.change())
        desk.clock.advance(days=1)
        assert _job(desk, remind_untouched, after) == []
        desk.clock.advance(days=1, hours=1)
        assert _job(desk, remind_untouched, after) == [100001]
        assert _job(desk, remind_untouched, after) == []
        clock = desk.clock
    finally:
        desk.app.close()
    again = make_desk(tmp_path, LIFECYCLE, clock=clock)
    try:
        clock.advance(days=3)
        assert _job(again, remind_untouched, after) == []  # still the same quiet spell
        with session_scope(again.engine) as session:
            ticket = session.exec(select(Ticket)).one()
            ticket_changes.tag(session, ticket, "vip", change=again.change())
        clock.advance(days=2, hours=1)
        assert _job(again, remind_untouched, after) == [100001]  # touched, then quiet again
        reminders = [o for o in again.outbox() if o.kind == "reminder"]
        assert [o.primary_rcpt for o in reminders] == [ALICE, ALICE]
        assert b"[reminder] [#100001] Invoice wrong" in reminders[0].raw
        assert [e.type for e in again.events()].count("reminder") == 2
    finally:
        again.app.close()


def test_unreferenced_blobs_are_purged_and_used_ones_kept(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    with session_scope(desk.engine) as session:
        session.add(Blob(sha256="a" * 64, size=3, data=b"old"))
    desk.feed(make_mail(subject="Hello"))
    with session_scope(desk.engine) as session:
        response = session.exec(select(Response)).first()
        assert response is not None
        session.add(Blob(sha256="b" * 64, size=4, data=b"used"))
        session.flush()
        session.add(
            Attachment(
                response_id=response.id or 0,
                name="x.txt",
                mime_type="text/plain",
                file_size=4,
                sha256="b" * 64,
            )
        )
    with session_scope(desk.engine) as session:
        assert purge_unreferenced_blobs(session) == 1
    with session_scope(desk.engine) as session:
        assert purge_unreferenced_blobs(session) == 0
        assert [b.sha256 for b in session.exec(select(Blob))] == ["b" * 64]
