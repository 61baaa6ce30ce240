"""Rows behind the ticket housekeeping of resources.md §2: watchers, moving a merged ticket's
messages, and purging trashed tickets for good. They flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import (
    Attachment,
    Blob,
    InterventionInstance,
    KnownMessageId,
    Response,
    Ticket,
    TicketCC,
    TicketEvent,
    TicketFieldValue,
    TicketSla,
    TicketTag,
    TicketWatcher,
    TimeEntry,
)


def watchers_of(session: Session, ticket_id: int) -> list[str]:
    return [
        w.email
        for w in session.exec(
            select(TicketWatcher)
            .where(TicketWatcher.ticket_id == ticket_id)
            .order_by(col(TicketWatcher.email))
        )
    ]


def add_watcher(session: Session, *, ticket_id: int, email: str, now: datetime) -> bool:
    """Add `email` (lower-case) unless it already watches; True when added."""
    if email in watchers_of(session, ticket_id):
        return False
    session.add(TicketWatcher(ticket_id=ticket_id, email=email, created_at=now))
    session.flush()
    return True


def remove_watcher(session: Session, *, ticket_id: int, email: str) -> bool:
    row = session.exec(
        select(TicketWatcher).where(
            TicketWatcher.ticket_id == ticket_id, TicketWatcher.email == email
        )
    ).first()
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def move_responses(session: Session, *, source_id: int, target_id: int) -> int:
    """Every response of the source ticket now belongs to the target; returns how many."""
    ids = list(session.exec(select(Response.id).where(Response.ticket_id == source_id)))
    if ids:
        session.execute(
            update(Response).where(col(Response.id).in_(ids)).values(ticket_id=target_id)
        )
        session.expire_all()  # loaded Response objects must not keep their old ticket
    session.flush()
    return len(ids)


def trashed_before(session: Session, cutoff: datetime, *, limit: int) -> Sequence[Ticket]:
    """Tickets in the trash since before `cutoff`, oldest first, locked for the purge."""
    return session.exec(
        select(Ticket)
        .where(col(Ticket.deleted_at).is_not(None), col(Ticket.deleted_at) < cutoff)
        .order_by(col(Ticket.deleted_at), col(Ticket.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def purge_ticket(session: Session, ticket: Ticket) -> None:
    """Delete the ticket and every row that hangs off it; attachment bytes no other attachment
    uses go too. (Outbox and delivery rows keep their ticket id as a plain number: they are the
    record of what was sent.)"""
    ticket_id = ticket.id or 0
    response_ids = list(session.exec(select(Response.id).where(Response.ticket_id == ticket_id)))
    shas = set(
        session.exec(select(Attachment.sha256).where(col(Attachment.response_id).in_(response_ids)))
    )
    session.execute(delete(Attachment).where(col(Attachment.response_id).in_(response_ids)))
    for table in (
        Response,
        TicketCC,
        TicketTag,
        TicketWatcher,
        KnownMessageId,
        TicketEvent,
        TicketFieldValue,
        TimeEntry,
        TicketSla,
    ):
        session.execute(delete(table).where(col(table.ticket_id) == ticket_id))
    session.execute(
        delete(InterventionInstance).where(col(InterventionInstance.ticket_id) == ticket_id)
    )
    still_used = set(
        session.exec(select(Attachment.sha256).where(col(Attachment.sha256).in_(list(shas))))
    )
    if shas - still_used:
        session.execute(delete(Blob).where(col(Blob.sha256).in_(list(shas - still_used))))
    session.execute(delete(Ticket).where(col(Ticket.id) == ticket_id))
    session.expunge(ticket)
    session.flush()


def purge_unreferenced_blobs(session: Session, *, limit: int = 500) -> int:
    """Delete attachment bytes that no attachment refers to any more; returns how many. A blob
    written by a transaction not yet committed is invisible here, and one that a concurrent
    transaction starts to use again keeps its row (the foreign key refuses the delete, and the
    job tries again next time)."""
    used = select(Attachment.sha256).distinct()
    orphans = list(
        session.exec(select(Blob.sha256).where(col(Blob.sha256).not_in(used)).limit(limit))
    )
    if orphans:
        session.execute(delete(Blob).where(col(Blob.sha256).in_(orphans)))
        session.flush()
    return len(orphans)
