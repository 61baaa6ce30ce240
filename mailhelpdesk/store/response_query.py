"""Responses across tickets, keyset-paged on (created_at, id), and one attachment's bytes.

Keyset pages stay stable while rows are inserted: a page never repeats a row and never skips
one that sorts after the cursor. Rows are only ever inserted "after" the current end, because
`created_at` is the clock at the time of the write and, on SQLite, every writer of a process
takes it inside the one write transaction (store/db.py; group-committed API writes take it in
commit order too), and a read sees a snapshot of whole commits. On PostgreSQL writers commit
concurrently, so a row can become visible after a later one; `settled_before` (from
`visibility_horizon`) holds back the last few seconds so the cursor never moves past a row that
is still being committed.

There is no index on responses.created_at (no schema change was made for this): a query without
a ticket filter sorts the matching responses on every page. Not measured yet; an index on
(created_at, id) is the fix when it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Attachment, Blob, Queue, Response, Ticket

PG_SETTLE = timedelta(seconds=5)  # longer than any write transaction we run


@dataclass(frozen=True)
class ResponseFilter:
    """Each field narrows the result; within a field the values are alternatives."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    is_internal: bool | None = None
    staff_response: bool | None = None
    queues: Sequence[str] = ()
    queue_ids: Sequence[int] = ()
    ticket_numbers: Sequence[int] = ()
    settled_before: datetime | None = None
    # the queues the asking token sees, lower-cased (services/visibility.py); None: every queue
    visible_queues: frozenset[str] | None = None


def visibility_horizon(session: Session, now: datetime) -> datetime | None:
    """The newest created_at a keyset page may return (None: no limit, see the module doc)."""
    if session.get_bind().dialect.name == "postgresql":
        return now - PG_SETTLE
    return None


def query_responses(
    session: Session,
    flt: ResponseFilter,
    *,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[tuple[Response, int]]:
    """Up to `limit` responses after the cursor, oldest first, each with its ticket number."""
    query = (
        select(Response, Ticket.number)
        .join(Ticket, col(Ticket.id) == col(Response.ticket_id))
        .where(col(Ticket.deleted_at).is_(None))  # a trashed ticket's responses are not listed
    )
    if flt.created_from is not None:
        query = query.where(col(Response.created_at) >= flt.created_from)
    if flt.created_to is not None:
        query = query.where(col(Response.created_at) <= flt.created_to)
    if flt.settled_before is not None:
        query = query.where(col(Response.created_at) <= flt.settled_before)
    if flt.is_internal is not None:
        query = query.where(col(Response.is_internal) == flt.is_internal)
    if flt.staff_response is not None:
        query = query.where(col(Response.staff_response) == flt.staff_response)
    if flt.queues:
        ids = select(Queue.id).where(func.lower(Queue.name).in_([q.lower() for q in flt.queues]))
        query = query.where(col(Ticket.queue_id).in_(ids))
    if flt.queue_ids:
        query = query.where(col(Ticket.queue_id).in_(list(flt.queue_ids)))
    if flt.visible_queues is not None:
        visible = select(Queue.id).where(func.lower(Queue.name).in_(sorted(flt.visible_queues)))
        query = query.where(col(Ticket.queue_id).in_(visible))
    if flt.ticket_numbers:
        query = query.where(col(Ticket.number).in_(list(flt.ticket_numbers)))
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(
                col(Response.created_at) > at,
                and_(col(Response.created_at) == at, col(Response.id) > last_id),
            )
        )
    rows = session.exec(
        query.order_by(col(Response.created_at), col(Response.id)).limit(limit)
    ).all()
    return [(r, int(n)) for r, n in rows]


@dataclass(frozen=True)
class AttachmentRow:
    attachment: Attachment
    ticket_number: int
    head: bytes  # the first bytes of the content, enough to sniff its type


def find_attachment(
    session: Session, attachment_id: int, *, head_bytes: int = 8192
) -> AttachmentRow | None:
    """An attachment with its ticket's number and the start of its bytes (not the whole blob)."""
    row = session.exec(
        select(Attachment, Ticket.number, func.substr(col(Blob.data), 1, head_bytes))
        .join(Response, col(Response.id) == col(Attachment.response_id))
        .join(Ticket, col(Ticket.id) == col(Response.ticket_id))
        .join(Blob, col(Blob.sha256) == col(Attachment.sha256))
        .where(col(Attachment.id) == attachment_id)
    ).first()
    if row is None:
        return None
    attachment, number, head = row
    return AttachmentRow(attachment, int(number), bytes(head or b""))


def blob_data(session: Session, sha256: str) -> bytes:
    data = session.exec(select(Blob.data).where(Blob.sha256 == sha256)).one()
    return bytes(data)
