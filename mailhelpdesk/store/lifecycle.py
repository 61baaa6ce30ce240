"""Queries of the lifecycle jobs (services/lifecycle.py). They flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket, TicketEvent

_PUBLIC_MESSAGES = (
    EventType.created.value,
    EventType.customer_reply.value,
    EventType.agent_response.value,
)


def quiet_tickets(
    session: Session, *, status: str, cutoff: datetime, limit: int
) -> Sequence[Ticket]:
    """Tickets in `status`, not in the trash, unchanged since before `cutoff`; the quietest
    first, locked for the job (SKIP LOCKED on PostgreSQL)."""
    return session.exec(
        select(Ticket)
        .where(
            Ticket.status == status,
            col(Ticket.deleted_at).is_(None),
            col(Ticket.updated_at) <= cutoff,
        )
        .order_by(col(Ticket.updated_at), col(Ticket.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def last_public_message(session: Session, ticket_id: int) -> TicketEvent | None:
    """The ticket's latest opening, customer reply or agent answer event."""
    return session.exec(
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket_id, col(TicketEvent.type).in_(_PUBLIC_MESSAGES))
        .order_by(col(TicketEvent.id).desc())
        .limit(1)
    ).first()
