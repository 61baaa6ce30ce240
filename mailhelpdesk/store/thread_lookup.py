"""Set-based reads for threading a whole ingest batch at once (issue 16).

Per message, "was this content applied?", "which ticket knows one of these Message-IDs?" and
"which ticket has this number?" would each cost a query; these answer them for every message of
a batch in one query each. ingest/batch_lookups.py keeps the answers and applies the rules
(the first recorded row of a Message-ID wins, a trashed ticket is never found).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TypeVar

from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import AppliedMessage, KnownMessageId, Ticket

# well under every database's limit on bound parameters in one statement
CHUNK = 500

T = TypeVar("T")


def _chunks(items: Collection[T]) -> Iterator[list[T]]:
    values = list(items)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def applied_fingerprints(session: Session, fingerprints: Collection[str]) -> dict[str, int]:
    """fingerprint -> inbound id, for the fingerprints already applied."""
    found: dict[str, int] = {}
    for chunk in _chunks(fingerprints):
        rows = session.exec(
            select(AppliedMessage.fingerprint, AppliedMessage.inbound_id).where(
                col(AppliedMessage.fingerprint).in_(chunk)
            )
        )
        found.update((fingerprint, inbound_id) for fingerprint, inbound_id in rows)
    return found


def message_id_rows(
    session: Session, message_ids: Collection[str]
) -> Sequence[tuple[int, str, int, str]]:
    """(row id, Message-ID, ticket id, direction) of every known row for `message_ids`, in the
    order they were recorded (the first row of a Message-ID wins for threading)."""
    rows: list[tuple[int, str, int, str]] = []
    for chunk in _chunks(message_ids):
        rows += [
            (row_id or 0, message_id, ticket_id, direction)
            for row_id, message_id, ticket_id, direction in session.exec(
                select(
                    KnownMessageId.id,
                    KnownMessageId.message_id,
                    KnownMessageId.ticket_id,
                    KnownMessageId.direction,
                ).where(col(KnownMessageId.message_id).in_(chunk))
            )
        ]
    rows.sort()
    return rows


def tickets_by_number(session: Session, numbers: Collection[int]) -> dict[int, Ticket]:
    """number -> ticket, for the numbers of tickets not in the trash."""
    found: dict[int, Ticket] = {}
    for chunk in _chunks(numbers):
        for ticket in session.exec(
            select(Ticket).where(col(Ticket.number).in_(chunk), col(Ticket.deleted_at).is_(None))
        ):
            found.setdefault(ticket.number, ticket)
    return found
