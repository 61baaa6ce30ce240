"""The ticket list query behind the API's perspectives and criteria. Flushes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Queue, Ticket


@dataclass(frozen=True)
class TicketFilter:
    """Each field is a set of alternatives (OR-ed); different fields are AND-ed."""

    statuses: Sequence[str] = ()
    queues: Sequence[str] = ()
    raised: Sequence[str] = ()
    numbers: Sequence[int] = ()
    priorities: Sequence[int] = ()
    assigned: Sequence[str] = ()
    subject_words: Sequence[str] = ()
    unassigned: bool = False
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


def query_tickets(session: Session, flt: TicketFilter, *, offset: int, limit: int) -> tuple[list[Ticket], int]:
    """One page of tickets, newest number first, and the total matching."""
    query = select(Ticket)
    if flt.statuses:
        query = query.where(col(Ticket.status).in_(list(flt.statuses)))
    if flt.queues:
        ids = select(Queue.id).where(func.lower(Queue.name).in_([q.lower() for q in flt.queues]))
        query = query.where(col(Ticket.queue_id).in_(ids))
    if flt.raised:
        query = query.where(col(Ticket.originator_email).in_([r.lower() for r in flt.raised]))
    if flt.numbers:
        query = query.where(col(Ticket.number).in_(list(flt.numbers)))
    if flt.priorities:
        query = query.where(col(Ticket.priority).in_(list(flt.priorities)))
    if flt.assigned:
        query = query.where(func.lower(col(Ticket.assigned_to_email)).in_([a.lower() for a in flt.assigned]))
    if flt.unassigned:
        query = query.where(col(Ticket.assigned_to_email).is_(None))
    if flt.subject_words:
        query = query.where(or_(*[col(Ticket.subject).ilike(f"%{w}%") for w in flt.subject_words]))
    for column, bound, op in (
        (Ticket.created_at, flt.created_from, "ge"), (Ticket.created_at, flt.created_to, "le"),
        (Ticket.updated_at, flt.updated_from, "ge"), (Ticket.updated_at, flt.updated_to, "le"),
    ):
        if bound is not None:
            query = query.where(col(column) >= bound if op == "ge" else col(column) <= bound)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Ticket.number).desc()).offset(offset).limit(limit)).all()
    return list(rows), int(total)


def queue_exists(session: Session, name: str) -> bool:
    return session.exec(select(Queue.id).where(Queue.name == name)).first() is not None
