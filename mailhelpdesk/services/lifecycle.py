"""Jobs that change tickets because time passed, not because someone wrote."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import TicketStatus
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.services import notify, ticket_changes
from mailhelpdesk.store import tickets as store

log = logging.getLogger(__name__)


def wake_on_hold(
    session: Session, *, clock: Clock, settings: notify.NotifySettings | None, limit: int = 500
) -> list[int]:
    """Open every on-hold ticket whose on-hold-until date has come (today, UTC) and tell its
    assignee (else all agents). Returns the woken ticket numbers. Safe to run often and from
    several daemons: a woken ticket is no longer on hold, so it is never woken twice."""
    today = clock.now().date()
    due = session.exec(
        select(Ticket)
        .where(Ticket.status == TicketStatus.on_hold, col(Ticket.on_hold_until) <= today)
        .order_by(col(Ticket.on_hold_until), col(Ticket.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    agents = [notify.Recipient(a.email, a.name, a.id) for a in store.list_agents(session)]
    woken = []
    for ticket in due:
        until = ticket.on_hold_until.isoformat() if ticket.on_hold_until else ""
        # through the one status path, so the change raises its webhook like any other
        ticket_changes.set_status(session, ticket, TicketStatus.open.value, clock=clock)
        if settings is not None and agents:
            notify.notify_on_hold_woke(
                session,
                ticket,
                settings=settings,
                clock=clock,
                agents=agents,
                was_on_hold_until=until,
            )
        log.info("on-hold ticket woke ticket=%s was_until=%s", ticket.number, until)
        woken.append(ticket.number)
    return woken
