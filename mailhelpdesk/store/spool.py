"""The inbound spool: raw messages kept before they are acknowledged, and their processing state."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import InboundState
from mailhelpdesk.domain.models import AppliedMessage, InboundMessage
from mailhelpdesk.store import rows


@dataclass(frozen=True)
class Envelope:
    """What the transport knows beyond the bytes: who sent it to whom, and from where."""

    source: str  # smtp | imap | import
    mail_from: str | None = None  # "" is the null reverse-path <>; None: unknown
    rcpt_tos: tuple[str, ...] = ()
    source_ref: str = ""
    queue_hint: str = ""


_INBOUND = rows.table_of(InboundMessage)


def add_inbound(
    session: Session, *, raw: bytes, envelope: Envelope, now: datetime, set_aside: str = ""
) -> InboundMessage:
    """Keep one raw message; the caller commits before acknowledging it. With `set_aside`, it
    is kept already failed for that reason (an IMAP message that could not be fetched).

    One INSERT (store/rows.py), not an ORM unit of work: the SMTP listener keeps each message of
    a burst this way, on the database thread the writer needs. The row handed back is not in
    the session: a change to it is not written."""
    failed = {"state": InboundState.failed.value, "reason": set_aside[:2000], "processed_at": now}
    return rows.insert_one(
        session,
        InboundMessage,
        {
            "received_at": now,
            "source": envelope.source,
            "source_ref": envelope.source_ref[:500],
            "envelope_from": envelope.mail_from,
            "envelope_to": "\n".join(envelope.rcpt_tos),
            "queue_hint": envelope.queue_hint,
            "raw": raw,
            "size": len(raw),
            **(failed if set_aside else {}),
        },
    )


def claim_pending(session: Session, *, limit: int, postgres: bool) -> list[InboundMessage]:
    """The oldest messages still to process. On PostgreSQL rows are locked with SKIP LOCKED, so
    several daemons on one database share the work without processing a message twice."""
    query = (
        select(InboundMessage)
        .where(InboundMessage.state == InboundState.new)
        .order_by(col(InboundMessage.id))
        .limit(limit)
    )
    if postgres:
        query = query.with_for_update(skip_locked=True)
    return list(session.exec(query))


def pending_raw(
    session: Session, *, limit: int, exclude: Collection[int] = ()
) -> list[tuple[int, bytes, str | None]]:
    """(id, raw bytes, envelope reverse-path) of the oldest messages still to process, except
    `exclude` (the ones the caller has in hand): what understanding a message needs."""
    query = (
        select(InboundMessage.id, InboundMessage.raw, InboundMessage.envelope_from)
        .where(InboundMessage.state == InboundState.new)
        .order_by(col(InboundMessage.id))
        .limit(limit)
    )
    if exclude:
        query = query.where(col(InboundMessage.id).not_in(list(exclude)))
    return [(i or 0, raw, sender) for i, raw, sender in session.exec(query)]


@dataclass(frozen=True)
class PendingRow:
    """A kept message the writer is to apply: its id and envelope. Not the ORM object: the
    writer changes the row with one UPDATE (`mark_done`, `set_aside`), and loading 100 ORM
    objects a batch cost the writer more than those UPDATEs (issue 16)."""

    id: int
    envelope: Envelope


_PENDING = sa_select(
    _INBOUND.c.id,
    _INBOUND.c.source,
    _INBOUND.c.source_ref,
    _INBOUND.c.envelope_from,
    _INBOUND.c.envelope_to,
    _INBOUND.c.queue_hint,
).where(_INBOUND.c.id.in_(bindparam("ids", expanding=True)), _INBOUND.c.state == InboundState.new)


def rows_to_write(session: Session, ids: Collection[int]) -> dict[int, PendingRow]:
    """The rows of `ids` that are still to process, by id (their envelopes; not the raw bytes,
    which the writer no longer needs)."""
    if not ids:
        return {}
    found = session.connection().execute(_PENDING, {"ids": list(ids)})
    return {
        row_id: PendingRow(
            row_id,
            Envelope(
                source=source,
                mail_from=mail_from,
                rcpt_tos=tuple(a for a in (rcpt_tos or "").split("\n") if a),
                source_ref=source_ref,
                queue_hint=queue_hint,
            ),
        )
        for row_id, source, source_ref, mail_from, rcpt_tos, queue_hint in found
    }


def count_pending(session: Session) -> int:
    return session.exec(
        select(func.count())
        .select_from(InboundMessage)
        .where(InboundMessage.state == InboundState.new)
    ).one()


def list_inbound(
    session: Session, *, state: str | None = None, limit: int = 100
) -> Sequence[InboundMessage]:
    query = select(InboundMessage).order_by(col(InboundMessage.id).desc()).limit(limit)
    if state:
        query = query.where(InboundMessage.state == state)
    return session.exec(query).all()


def counts_by_outcome(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(InboundMessage.state, InboundMessage.outcome, func.count()).group_by(
            InboundMessage.state, InboundMessage.outcome
        )
    ).all()
    return {f"{state}:{outcome}" if outcome else state: n for state, outcome, n in rows}


def claim_applied(session: Session, *, fingerprint: str, inbound_id: int) -> bool:
    """Claim the fingerprint; False when another transaction has it (a concurrent apply of the
    same message by a second daemon). INSERT … ON CONFLICT DO NOTHING under the primary key:
    the database decides, and no error text has to be read to know it was a duplicate (on
    PostgreSQL the second insert waits for the first transaction, then finds the row). The
    statement is built once per dialect and run on the connection: no autoflush, no ORM."""
    stmt = rows.per_dialect(
        session,
        "spool.claim_applied",
        lambda: (
            rows.conflict_insert(session, AppliedMessage)
            .on_conflict_do_nothing(index_elements=["fingerprint"])
            .returning(rows.table_of(AppliedMessage).c.fingerprint)
        ),
    )
    found = session.connection().execute(
        stmt, {"fingerprint": fingerprint, "inbound_id": inbound_id}
    )
    return found.first() is not None


_MARK_DONE = (
    update(_INBOUND)
    .where(_INBOUND.c.id == bindparam("row_id"))
    .values(
        attempts=_INBOUND.c.attempts + 1,
        state=bindparam("b_state"),
        outcome=bindparam("b_outcome"),
        reason=bindparam("b_reason"),
        ticket_id=bindparam("b_ticket_id"),
        processed_at=bindparam("b_processed_at"),
        message_id=bindparam("b_message_id"),
        fingerprint=bindparam("b_fingerprint"),
    )
)


def _stored_message_id(message_id: str | None) -> str | None:
    """A Message-ID as the inbound row keeps it (the column holds 998 characters, a header
    line's limit)."""
    return message_id[:998] if message_id else None


_SET_ASIDE = (
    update(_INBOUND)
    .where(_INBOUND.c.id == bindparam("row_id"))
    .values(
        attempts=_INBOUND.c.attempts + 1,
        state=InboundState.failed.value,
        outcome="",
        reason=bindparam("b_reason"),
        processed_at=bindparam("b_processed_at"),
    )
)
_SET_ASIDE_PARSED = _SET_ASIDE.values(
    message_id=bindparam("b_message_id"), fingerprint=bindparam("b_fingerprint")
)


def set_aside(
    session: Session,
    row_id: int,
    *,
    reason: str,
    now: datetime,
    parsed: tuple[str | None, str | None] | None = None,
) -> None:
    """Keep the message as failed with `reason` (`inbound retry` puts it back), its attempt
    counted; with `parsed` (Message-ID, fingerprint), what parsing found too. One UPDATE."""
    values: dict[str, object] = {"row_id": row_id, "b_reason": reason[:2000], "b_processed_at": now}
    if parsed is None:
        session.connection().execute(_SET_ASIDE, values)
        return
    message_id, fingerprint = parsed
    values |= {"b_message_id": _stored_message_id(message_id), "b_fingerprint": fingerprint}
    session.connection().execute(_SET_ASIDE_PARSED, values)


def mark_done(
    session: Session,
    row_id: int,
    *,
    outcome: str,
    reason: str,
    ticket_id: int | None,
    now: datetime,
    message_id: str | None,
    fingerprint: str | None,
) -> None:
    """The message is applied: one UPDATE (its attempt counted, what parsing found, its outcome
    and ticket)."""
    values = {
        "state": InboundState.done.value,
        "outcome": outcome,
        "reason": reason[:2000],
        "ticket_id": ticket_id,
        "processed_at": now,
        "message_id": _stored_message_id(message_id),
        "fingerprint": fingerprint,
    }
    session.connection().execute(
        _MARK_DONE, {"row_id": row_id, **{f"b_{k}": v for k, v in values.items()}}
    )
