"""SLA due times on tickets and the escalation job, with a frozen clock: an Urgent ticket gets
the 80% warning and the breach notice once each, a ticket opened on Friday evening is not
breached over the weekend, on-hold time is not counted, and a restart runs nothing twice."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import select

from mailhelpdesk.domain.enums import Priority, ResponseKind
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import OutboxItem, Ticket, TicketEvent
from mailhelpdesk.services import escalation, ticket_changes, tickets
from mailhelpdesk.services.sla import policy_is_current, recompute_open, recompute_slice
from mailhelpdesk.services.tickets import NewResponse
from mailhelpdesk.services.views import ticket_object
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk, make_desk
from tests.helpers import make_mail

SLA: dict[str, Any] = {
    "agents": [
        {"email": "alice@helpdesk.test", "name": "Alice", "queues": ["Inbox"]},
        {"email": "bob@helpdesk.test", "name": "Bob", "queues": ["Billing"]},
    ],
    "sla": [
        {"priority": "Urgent", "first_response": "1h", "resolution": "8h"},
        {"priority": "*", "first_response": "8h"},
    ],
    "business_hours": {
        "timezone": "UTC",
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
        "start": "09:00",
        "end": "17:00",
    },
}


def open_urgent(desk: Desk, subject: str = "Server down") -> int:
    desk.feed(make_mail(subject=subject))
    number = desk.tickets()[-1].number
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        ticket_changes.set_priority(session, ticket, Priority.urgent, change=desk.change())
    return number


def sla_of(desk: Desk, number: int) -> dict[str, Any]:
    with read_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        return dict(ticket_object(session, ticket)["sla"])


def escalate(desk: Desk) -> list[tuple[int, str, str]]:
    with session_scope(desk.engine) as session:
        done = escalation.escalate(session, change=desk.change(Channel.scheduler))
    desk.compose_notices()
    return [(e.ticket_number, e.target.value, e.kind.value) for e in done]


def notices(desk: Desk, kind: str) -> list[OutboxItem]:
    return [item for item in desk.outbox() if item.kind == kind]


def sla_events(desk: Desk) -> list[tuple[str, str]]:
    rows = [e for e in desk.events() if e.type.startswith("sla_")]
    return [(e.type, e.data) for e in rows]


def test_urgent_ticket_is_warned_at_80_percent_and_breached_once_each(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)  # Monday 2026-11-23 10:00 UTC, in business hours
    number = open_urgent(desk)
    sla = sla_of(desk, number)
    assert sla == {
        "first_response_due_at": "2026-11-23T11:00:00+00:00",
        "resolution_due_at": "2026-11-24T10:00:00+00:00",
        "breached": [],
    }
    desk.clock.advance(minutes=40)
    assert escalate(desk) == []
    desk.clock.advance(minutes=8)  # 10:48: 80% of the hour
    assert escalate(desk) == [(number, "first_response", "sla_warning")]
    assert escalate(desk) == []
    desk.clock.advance(minutes=12)  # 11:00: due
    assert escalate(desk) == [(number, "first_response", "sla_breach")]
    desk.clock.advance(minutes=30)
    assert escalate(desk) == []
    (warning,) = notices(desk, "sla_warning")
    (breach,) = notices(desk, "sla_breach")
    # nobody is assigned: the agents who see the queue (Alice: Inbox), not Bob (Billing)
    assert warning.primary_rcpt == breach.primary_rcpt == "alice@helpdesk.test"
    assert b"[SLA warning] [#100001] Server down" in warning.raw
    assert b"missed its first response target" in breach.raw
    assert [kind for kind, _ in sla_events(desk)] == ["sla_warning", "sla_breach"]
    assert sla_of(desk, number)["breached"] == ["first_response"]


def test_notice_goes_to_the_assignee(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    number = open_urgent(desk)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        ticket_changes.assign(session, ticket, "bob@helpdesk.test", change=desk.change())
    desk.clock.advance(minutes=48)
    assert escalate(desk) == [(number, "first_response", "sla_warning")]
    assert [n.primary_rcpt for n in notices(desk, "sla_warning")] == ["bob@helpdesk.test"]


def test_an_answer_in_time_meets_the_first_response_target(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    number = open_urgent(desk)
    desk.clock.advance(minutes=20)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        tickets.add_response(
            session,
            ticket,
            NewResponse(
                kind=ResponseKind.agent,
                plain_text="Looking into it.",
                created_by_email="alice@helpdesk.test",
            ),
            change=desk.change(Channel.api, Actor.agent("alice@helpdesk.test")),
        )
    assert sla_of(desk, number)["first_response_due_at"] is None
    desk.clock.advance(hours=2)
    assert escalate(desk) == []


def test_friday_evening_ticket_is_not_breached_over_the_weekend(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    desk.clock.advance(days=4, hours=8)  # Friday 2026-11-27 18:00 UTC: after hours
    number = open_urgent(desk)
    assert sla_of(desk, number)["first_response_due_at"] == "2026-11-30T10:00:00+00:00"
    for _ in range(6):  # Saturday, Sunday, every eight hours
        desk.clock.advance(hours=8)
        assert escalate(desk) == []
    desk.clock.advance(hours=15, minutes=48)  # Monday 2026-11-30 09:48: 80%
    assert escalate(desk) == [(number, "first_response", "sla_warning")]
    desk.clock.advance(minutes=12)
    assert escalate(desk) == [(number, "first_response", "sla_breach")]


def test_on_hold_time_is_not_counted(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    number = open_urgent(desk)  # Monday 10:00; resolution due Tuesday 10:00 (8 working hours)
    desk.clock.advance(hours=2)  # 12:00: 2 h used
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        ticket_changes.set_status(
            session, ticket, "on-hold", on_hold_until=date(2026, 12, 1), change=desk.change()
        )
    held = sla_of(desk, number)
    assert held["resolution_due_at"] is None  # paused
    desk.clock.advance(days=2)  # Wednesday 12:00
    assert ("resolution", "sla_breach") not in {(t, k) for _, t, k in escalate(desk)}
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        ticket_changes.set_status(session, ticket, "open", change=desk.change())
    # 6 working hours left from Wednesday 12:00: Thursday 10:00
    assert sla_of(desk, number)["resolution_due_at"] == "2026-11-26T10:00:00+00:00"


def test_changed_targets_are_recomputed_and_a_restart_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    desk = make_desk(tmp_path, SLA)
    try:
        number = open_urgent(desk)
        desk.clock.advance(minutes=48)
        assert escalate(desk) == [(number, "first_response", "sla_warning")]
        clock = desk.clock
    finally:
        desk.app.close()
    # the "restart": the same database, a config with a longer first-response target
    longer = {**SLA, "sla": [{"priority": "Urgent", "first_response": "2h", "resolution": "8h"}]}
    again = make_desk(tmp_path, longer, clock=clock)
    try:
        with session_scope(again.engine) as session:
            assert recompute_open(session, again.notify.sla, clock.now()) == 1
        with session_scope(again.engine) as session:
            assert recompute_open(session, again.notify.sla, clock.now()) is None  # unchanged
        assert sla_of(again, number)["first_response_due_at"] == "2026-11-23T12:00:00+00:00"
        assert escalate(again) == []  # warned once already: not again at the new 80%
        clock.advance(hours=1, minutes=12)  # 12:00
        assert escalate(again) == [(number, "first_response", "sla_breach")]
        assert escalate(again) == []
        assert len(notices(again, "sla_warning")) == 1
        assert len(notices(again, "sla_breach")) == 1
    finally:
        again.app.close()


def test_a_changed_policy_is_recomputed_a_slice_at_a_time_and_marked_current_last(
    tmp_path: Path,
) -> None:
    """The daemon walks a large desk in slices (one transaction each, so ingest and the API
    write in between) and records the policy as current only after the last slice."""
    desk = make_desk(tmp_path, SLA)
    try:
        numbers = [open_urgent(desk, f"Down {n}") for n in range(5)]
        clock = desk.clock
    finally:
        desk.app.close()
    longer = {**SLA, "sla": [{"priority": "Urgent", "first_response": "2h", "resolution": "8h"}]}
    again = make_desk(tmp_path, longer, clock=clock)
    try:
        policy = again.notify.sla
        slices = []
        after = 0
        while True:
            with session_scope(again.engine) as session:
                done = recompute_slice(session, policy, clock.now(), after_id=after, limit=2)
                assert not policy_is_current(session, policy)
            if done is None:
                break
            after = done[0]
            slices.append(done[1])
        assert slices == [2, 2, 1]
        # two hours after each was opened (the test clock ticks a second per ticket), not one
        due = [sla_of(again, n)["first_response_due_at"] for n in numbers]
        assert all(d.startswith("2026-11-23T12:00:0") for d in due), due
        # the daemon's own walk: every open ticket, then the policy is current
        assert asyncio.run(again.app.recompute_sla()) == 5
        assert asyncio.run(again.app.recompute_sla()) is None
    finally:
        again.app.close()


def test_history_holds_one_event_per_escalation(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    number = open_urgent(desk)
    desk.clock.advance(days=3)  # the job was down: only the breaches are recorded
    found = escalate(desk)
    assert sorted(found) == [
        (number, "first_response", "sla_breach"),
        (number, "resolution", "sla_breach"),
    ]
    with read_scope(desk.engine) as session:
        rows = session.exec(select(TicketEvent).where(TicketEvent.type == "sla_breach")).all()
    assert len(rows) == 2
    assert notices(desk, "sla_warning") == []
