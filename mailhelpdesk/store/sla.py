"""Rows of the per-ticket SLA and lifecycle state (domain/models.py `TicketSla`). They flush,
never commit. The `claim_*` functions are conditional UPDATEs: of two daemons (or a job run
again after a restart) exactly one sees its UPDATE match, and only that one records the event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Ticket, TicketSla
from mailhelpdesk.store import rows


def get(session: Session, ticket_id: int) -> TicketSla | None:
    return session.get(TicketSla, ticket_id)


def of_tickets(session: Session, ticket_ids: Sequence[int]) -> dict[int, TicketSla]:
    if not ticket_ids:
        return {}
    rows = session.exec(select(TicketSla).where(col(TicketSla.ticket_id).in_(list(ticket_ids))))
    return {row.ticket_id: row for row in rows}


def insert(session: Session, values: dict[str, Any]) -> None:
    """The first row of a new ticket, with one Core INSERT (store/rows.py); the columns not in
    `values` (what the escalation and lifecycle jobs fill in later) take their defaults."""
    rows.insert_many(session, TicketSla, [values])


def save(session: Session, row: TicketSla) -> None:
    session.add(row)
    session.flush()


def column(name: str) -> Any:
    """A TicketSla column by its attribute name (`first_response_due_at`, …)."""
    return getattr(TicketSla, name)


def pending(
    session: Session, *, at_column: str, done_column: str, now: datetime, limit: int
) -> Sequence[TicketSla]:
    """Rows whose `at_column` instant has come and whose `done_column` is still empty, on
    tickets that are not in the trash; the earliest first."""
    at, done = column(at_column), column(done_column)
    return session.exec(
        select(TicketSla)
        .join(Ticket, col(Ticket.id) == col(TicketSla.ticket_id))
        .where(at.is_not(None), at <= now, done.is_(None), col(Ticket.deleted_at).is_(None))
        .order_by(at, col(TicketSla.ticket_id))
        .limit(limit)
    ).all()


def claim(session: Session, *, ticket_id: int, done_column: str, now: datetime) -> bool:
    """Set `done_column` to `now` if it is still empty; True for the one caller that did."""
    done = column(done_column)
    condition: ColumnElement[bool] = (col(TicketSla.ticket_id) == ticket_id) & done.is_(None)
    result = session.execute(update(TicketSla).where(condition).values({done_column: now}))
    session.flush()
    return bool(getattr(result, "rowcount", 0) == 1)


def claim_reminder(
    session: Session, *, ticket_id: int, previous: datetime | None, now: datetime
) -> bool:
    """Set `reminded_at` to `now` if it still holds `previous`; True for the one caller that did."""
    reminded = col(TicketSla.reminded_at)
    same = reminded.is_(None) if previous is None else reminded == previous
    result = session.execute(
        update(TicketSla).where(col(TicketSla.ticket_id) == ticket_id, same).values(reminded_at=now)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0) == 1)


def open_ticket_ids(session: Session, *, after_id: int = 0, limit: int | None = None) -> list[int]:
    """Tickets whose due times may still move: not closed, not in the trash; by id, from
    `after_id` on, at most `limit` of them (a large desk is walked a slice at a time)."""
    query = (
        select(Ticket.id)
        .where(
            Ticket.status != "closed", col(Ticket.deleted_at).is_(None), col(Ticket.id) > after_id
        )
        .order_by(col(Ticket.id))
    )
    if limit is not None:
        query = query.limit(limit)
    return [ticket_id for ticket_id in session.exec(query) if ticket_id is not None]
