"""Ticket events: appended, never changed (services/events.py writes them). These functions
flush, never commit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailhelpdesk.domain.events import EventType, Origin
from mailhelpdesk.domain.models import TicketEvent
from mailhelpdesk.store import rows


def append(
    session: Session,
    *,
    ticket_id: int,
    type: EventType,
    at: datetime,
    origin: Origin,
    data: Mapping[str, Any],
) -> TicketEvent:
    """One Core INSERT (store/rows.py): an event is never changed after it is written."""
    return rows.insert_one(
        session,
        TicketEvent,
        {
            "ticket_id": ticket_id,
            "type": type.value,
            "at": at,
            "actor_kind": origin.actor.kind.value,
            "actor_email": origin.actor.email,
            "actor_name": origin.actor.name[:400],
            "channel": origin.channel.value,
            "data": json.dumps(dict(data), ensure_ascii=False, sort_keys=True, default=str),
        },
    )


def for_ticket(session: Session, ticket_id: int) -> Sequence[TicketEvent]:
    """The ticket's events in the order they happened (ids grow with every append)."""
    return session.exec(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(col(TicketEvent.id))
    ).all()


def data_of(row: TicketEvent) -> dict[str, Any]:
    value = json.loads(row.data or "{}")
    return value if isinstance(value, dict) else {}
