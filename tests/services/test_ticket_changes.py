"""Status, assignee, priority and tags: one service for mail commands, HTTP and CLI."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlmodel import select

from mailhelpdesk.domain.models import OutboxItem, Ticket
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import ticket_changes
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import make_mail


@pytest.fixture
def desk(desk_factory: Any) -> Desk:
    d: Desk = desk_factory()
    d.feed(make_mail())
    return d


def kinds(desk: Desk) -> list[str]:
    with read_scope(desk.engine) as session:
        return [o.kind for o in session.exec(select(OutboxItem).order_by(OutboxItem.id))]


def test_close_and_reopen_send_status_notices(desk: Desk) -> None:
    before = kinds(desk)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        assert ticket_changes.set_status(session, ticket, "closed", change=desk.change())
        assert ticket.resolved_at is not None
        assert not ticket_changes.set_status(session, ticket, "closed", change=desk.change())
        assert ticket_changes.set_status(session, ticket, "open", change=desk.change())
        assert ticket.resolved_at is None
    assert kinds(desk)[len(before) :] == ["ticket_closed", "ticket_reopened"]


def test_on_hold_needs_a_date_and_sends_nothing(desk: Desk) -> None:
    before = kinds(desk)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        with pytest.raises(InvalidInputError, match="needs a date"):
            ticket_changes.set_status(session, ticket, "on-hold", change=desk.change())
        with pytest.raises(InvalidInputError, match="unknown status"):
            ticket_changes.set_status(session, ticket, "pending", change=desk.change())
        ticket_changes.set_status(
            session,
            ticket,
            "on-hold",
            on_hold_until=date(2026, 12, 1),
            change=desk.change(),
        )
        assert (ticket.status, ticket.on_hold_until) == ("on-hold", date(2026, 12, 1))
    assert kinds(desk) == before


def test_assign_priority_tags(desk: Desk) -> None:
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        assert ticket_changes.assign(session, ticket, "Alice@helpdesk.test", change=desk.change())
        assert ticket.assigned_to_email == "alice@helpdesk.test"
        with pytest.raises(InvalidInputError, match="not an agent"):
            ticket_changes.assign(session, ticket, "mallory@evil.test", change=desk.change())
        assert ticket.assigned_to_email == "alice@helpdesk.test"
        assert (
            ticket_changes.assign(session, ticket, None, change=desk.change())
            and ticket.assigned_to_email is None
        )
        assert (
            ticket_changes.set_priority(session, ticket, "Urgent", change=desk.change())
            and ticket.priority == 40
        )
        with pytest.raises(InvalidInputError):
            ticket_changes.set_priority(session, ticket, "extreme", change=desk.change())
        assert ticket_changes.tag(session, ticket, "vip", change=desk.change())
        assert not ticket_changes.tag(session, ticket, " vip ", change=desk.change())
        assert ticket_changes.tag(session, ticket, "billing", change=desk.change())
        assert store.tags_of(session, ticket.id or 0) == ["billing", "vip"]
        assert ticket_changes.untag(session, ticket, "vip", change=desk.change())
        assert not ticket_changes.untag(session, ticket, "vip", change=desk.change())
        assert store.tags_of(session, ticket.id or 0) == ["billing"]
        with pytest.raises(InvalidInputError):
            ticket_changes.tag(session, ticket, "   ", change=desk.change())
