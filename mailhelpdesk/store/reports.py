"""Reads behind the reports (services/reports.py): events, first answers, SLA targets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, func, select

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket, TicketEvent, TicketSla, as_utc

_CHUNK = 500  # ids per IN (...) list


def events_before(session: Session, end: datetime) -> Sequence[TicketEvent]:
    """Every event before `end` of the tickets not in the trash, in the order they happened."""
    return session.exec(
        select(TicketEvent)
        .join(Ticket, col(Ticket.id) == col(TicketEvent.ticket_id))
        .where(col(TicketEvent.at) < end, col(Ticket.deleted_at).is_(None))
        .order_by(col(TicketEvent.id))
    ).all()


def first_answers(session: Session, ticket_ids: Sequence[int]) -> dict[int, datetime]:
    """Ticket id -> the time of its first public agent answer, for those answered."""
    found: dict[int, datetime] = {}
    for i in range(0, len(ticket_ids), _CHUNK):
        chunk = list(ticket_ids[i : i + _CHUNK])
        rows = session.exec(
            select(TicketEvent.ticket_id, func.min(TicketEvent.at))
            .where(
                TicketEvent.type == EventType.agent_response.value,
                col(TicketEvent.ticket_id).in_(chunk),
            )
            .group_by(col(TicketEvent.ticket_id))
        )
        for ticket_id, at in rows:
            aware = as_utc(at)
            if aware is not None:
                found[ticket_id] = aware
    return found


def tickets_with_sla(session: Session, ticket_ids: Sequence[int]) -> set[int]:
    """The tickets among `ticket_ids` that an `[[sla]]` rule applies to."""
    found: set[int] = set()
    for i in range(0, len(ticket_ids), _CHUNK):
        chunk = list(ticket_ids[i : i + _CHUNK])
        found.update(
            session.exec(
                select(TicketSla.ticket_id).where(
                    col(TicketSla.ticket_id).in_(chunk), TicketSla.rule != ""
                )
            )
        )
    return found
