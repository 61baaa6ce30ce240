"""Custom field values per ticket (services/custom_fields.py decides what may be written).
These functions flush, never commit."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import TicketFieldValue


def values_of(session: Session, ticket_id: int) -> dict[str, Any]:
    """The ticket's set fields, by name, in name order."""
    rows = session.exec(
        select(TicketFieldValue)
        .where(TicketFieldValue.ticket_id == ticket_id)
        .order_by(col(TicketFieldValue.name))
    ).all()
    return {row.name: json.loads(row.value) for row in rows}


def put(session: Session, *, ticket_id: int, name: str, value: Any, now: datetime) -> None:
    """Set (`value` not None) or clear (None) one field of one ticket."""
    row = session.exec(
        select(TicketFieldValue).where(
            TicketFieldValue.ticket_id == ticket_id, TicketFieldValue.name == name
        )
    ).first()
    if value is None:
        if row is not None:
            session.delete(row)
            session.flush()
        return
    text = json.dumps(value, ensure_ascii=False)
    if row is None:
        row = TicketFieldValue(ticket_id=ticket_id, name=name, value=text, updated_at=now)
    else:
        row.value, row.updated_at = text, now
    session.add(row)
    session.flush()
