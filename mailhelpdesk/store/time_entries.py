"""Time entries per ticket. These functions flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import TimeEntry


def add(session: Session, entry: TimeEntry) -> TimeEntry:
    session.add(entry)
    session.flush()
    return entry


def for_ticket(session: Session, ticket_id: int) -> Sequence[TimeEntry]:
    """The ticket's entries in the order they were recorded."""
    return session.exec(
        select(TimeEntry).where(TimeEntry.ticket_id == ticket_id).order_by(col(TimeEntry.id))
    ).all()


def minutes_spent(session: Session, ticket_id: int) -> int:
    """Every minute recorded on the ticket, billable or not."""
    total = session.exec(
        select(func.coalesce(func.sum(TimeEntry.minutes), 0)).where(
            TimeEntry.ticket_id == ticket_id
        )
    ).one()
    return int(total)
