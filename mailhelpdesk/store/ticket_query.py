"""The ticket list query behind the API's perspectives and criteria. Flushes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Queue, Response, Ticket, TicketCC, TicketTag

TEXT_MODES = ("subject", "content", "subject_content")


@dataclass(frozen=True)
class TicketFilter:
    """Each field is a set of alternatives (OR-ed); different fields are AND-ed."""

    statuses: Sequence[str] = ()
    queues: Sequence[str] = ()
    raised: Sequence[str] = ()
    numbers: Sequence[int] = ()
    priorities: Sequence[int] = ()
    assigned: Sequence[str] = ()
    # text mode -> phrases (OR-ed) -> words (AND-ed); a word matches a substring, any case
    phrases: Mapping[str, Sequence[Sequence[str]]] = field(default_factory=dict)
    participants: Sequence[str] = ()  # originator, a CC or the author of any response
    hashtags: Sequence[str] = ()
    unassigned: bool = False
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # the queues the asking token sees, lower-cased (services/visibility.py); None: every queue
    visible_queues: frozenset[str] | None = None
    order: str = "number"  # number: newest number first | priority: most urgent first, then number


def query_tickets(
    session: Session, flt: TicketFilter, *, offset: int, limit: int
) -> tuple[list[Ticket], int]:
    """One page of tickets, newest number first, and the total matching."""
    query = select(Ticket).where(col(Ticket.deleted_at).is_(None))  # the trash is not listed
    if flt.statuses:
        query = query.where(col(Ticket.status).in_(list(flt.statuses)))
    if flt.queues:
        ids = select(Queue.id).where(func.lower(Queue.name).in_([q.lower() for q in flt.queues]))
        query = query.where(col(Ticket.queue_id).in_(ids))
    if flt.visible_queues is not None:
        query = query.where(col(Ticket.queue_id).in_(_queue_ids(flt.visible_queues)))
    if flt.raised:
        query = query.where(col(Ticket.originator_email).in_([r.lower() for r in flt.raised]))
    if flt.numbers:
        query = query.where(col(Ticket.number).in_(list(flt.numbers)))
    if flt.priorities:
        query = query.where(col(Ticket.priority).in_(list(flt.priorities)))
    if flt.assigned:
        query = query.where(
            func.lower(col(Ticket.assigned_to_email)).in_([a.lower() for a in flt.assigned])
        )
    if flt.unassigned:
        query = query.where(col(Ticket.assigned_to_email).is_(None))
    for mode, phrases in flt.phrases.items():
        if phrases:
            query = query.where(or_(*[and_(*[_word(mode, w) for w in words]) for words in phrases]))
    if flt.participants:
        emails = [p.lower() for p in flt.participants]
        query = query.where(
            or_(
                col(Ticket.originator_email).in_(emails),
                exists().where(
                    col(TicketCC.ticket_id) == col(Ticket.id),
                    func.lower(col(TicketCC.email)).in_(emails),
                ),
                exists().where(
                    col(Response.ticket_id) == col(Ticket.id),
                    func.lower(col(Response.created_by_email)).in_(emails),
                ),
            )
        )
    if flt.hashtags:
        tags = [t.lower() for t in flt.hashtags]
        query = query.where(
            exists().where(
                col(TicketTag.ticket_id) == col(Ticket.id),
                func.lower(col(TicketTag.name)).in_(tags),
            )
        )
    for column, bound, op in (
        (Ticket.created_at, flt.created_from, "ge"),
        (Ticket.created_at, flt.created_to, "le"),
        (Ticket.updated_at, flt.updated_from, "ge"),
        (Ticket.updated_at, flt.updated_to, "le"),
    ):
        if bound is not None:
            query = query.where(col(column) >= bound if op == "ge" else col(column) <= bound)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    order = [col(Ticket.number).desc()]
    if flt.order == "priority":
        order.insert(0, col(Ticket.priority).desc())
    rows = session.exec(query.order_by(*order).offset(offset).limit(limit)).all()
    return list(rows), int(total)


def _queue_ids(names: frozenset[str]) -> Any:
    """The ids of the queues named (lower-cased names), as a subquery."""
    return select(Queue.id).where(func.lower(Queue.name).in_(sorted(names)))


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _word(mode: str, word: str) -> Any:
    """One word of a text criterion: in the subject, in any response's text, or either."""
    in_subject = col(Ticket.subject).ilike(_like(word), escape="\\")
    in_body = exists().where(
        col(Response.ticket_id) == col(Ticket.id),
        col(Response.plain_text).ilike(_like(word), escape="\\"),
    )
    return {"subject": in_subject, "content": in_body}.get(mode, or_(in_subject, in_body))


def queue_exists(session: Session, name: str) -> bool:
    return session.exec(select(Queue.id).where(Queue.name == name)).first() is not None
