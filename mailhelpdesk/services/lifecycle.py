"""Jobs that change tickets because time passed, not because someone wrote."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import TicketStatus
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.services import ticket_changes
from mailhelpdesk.services.context import ChangeContext

log = logging.getLogger(__name__)


def wake_on_hold(session: Session, *, change: ChangeContext, limit: int = 500) -> list[int]:
    """Open every on-hold ticket whose on-hold-until date has come (today, UTC). Returns the
    woken ticket numbers. Each is one `status` event through the one status path, so its
    assignee (else every agent) hears of it as services/reactions.py decides for any channel.
    Safe to run often and from several daemons: the due rows are locked (SKIP LOCKED on
    PostgreSQL) and a woken ticket is no longer on hold, so it is never woken twice."""
    today = change.clock.now().date()
    due = session.exec(
        select(Ticket)
        .where(Ticket.status == TicketStatus.on_hold, col(Ticket.on_hold_until) <= today)
        .order_by(col(Ticket.on_hold_until), col(Ticket.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    woken = []
    for ticket in due:
        until = ticket.on_hold_until.isoformat() if ticket.on_hold_until else ""
        # the same change as an agent's `#status open`: the scheduler channel says who did it
        ticket_changes.set_status(session, ticket, TicketStatus.open.value, change=change)
        log.info("on-hold ticket woke ticket=%s was_until=%s", ticket.number, until)
        woken.append(ticket.number)
    return woken
