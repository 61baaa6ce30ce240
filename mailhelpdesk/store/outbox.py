"""The outbox: outgoing mail as rows, written in the transaction of the change that caused it.

Life of a row: `queued` → `sent` (after the relay's 250), or `failed` (a 5xx, or the next try
would fall after the row's deadline), or `suppressed` (written but never to be sent: loop safety
and bouncing addresses, see services/notify.py). Claiming, backoff and release are the shared
delivery mechanism of store/deliveries.py, so two senders on one database (SQLite or PostgreSQL)
never send the same row, and a row claimed by a sender that crashed is sent again once its lease
runs out. What is this table's own is two small policies: a row still holding a compose spec is
not claimable (the sender composes it first), and a row is given up at its deadline.

Addresses whose mail bounced, or that the relay refused for good, are held back from automatic
mail for a while (`suppress`, `suppressed_reason`). These functions flush, never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import bindparam, func, true, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

# the state enum lives in domain/enums.py; callers keep using it as outbox.OutboxState
from mailhelpdesk.domain.enums import OutboxState
from mailhelpdesk.domain.models import OutboxItem, SuppressedAddress, as_utc
from mailhelpdesk.store import deliveries, rows

STATES = tuple(OutboxState)

# a row written as a spec is composed before it can be claimed (services/notify.py)
_CLAIMABLE = (col(OutboxItem.compose_spec).is_(None),)


def enqueue(session: Session, row: dict[str, object]) -> OutboxItem:
    """One Core INSERT (store/rows.py) of a row made by `new_row`; the row as written, with
    its id."""
    return rows.insert_one(session, OutboxItem, row)


def enqueue_many(session: Session, new_rows: Sequence[dict[str, object]]) -> None:
    """Rows made by `new_row` as one executemany (no ids needed back): the notices of one
    event (services/notify.write_notices)."""
    rows.insert_many(session, OutboxItem, new_rows)


def new_row(
    *,
    kind: str,
    ticket_id: int | None,
    message_id: str,
    mail_from: str,
    rcpt_tos: Sequence[str],
    is_automatic: bool,
    raw: bytes,
    now: datetime,
    deadline_at: datetime,
    state: str = OutboxState.queued,
    last_error: str = "",
    compose_spec: str | None = None,
) -> dict[str, object]:
    """Every column of a new outbox row but its id."""
    return {
        "created_at": now,
        "kind": kind,
        "ticket_id": ticket_id,
        "message_id": message_id,
        "mail_from": mail_from,
        "rcpt_tos": " ".join(rcpt_tos),
        "primary_rcpt": rcpt_tos[0].lower(),
        "is_automatic": is_automatic,
        "raw": raw,
        "state": state,
        "attempts": 0,
        "next_attempt_at": now,
        "deadline_at": deadline_at,
        "last_error": last_error,
        "sent_at": None,
        "compose_spec": compose_spec,
    }


# built once, on the table, run on the connection as executemany (store/rows.py says why)
_SPECS = rows.table_of(OutboxItem)
_STILL_A_SPEC = (_SPECS.c.id == bindparam("item_id"), _SPECS.c.compose_spec.is_not(None))
_SET_COMPOSED = (
    update(_SPECS).where(*_STILL_A_SPEC).values(raw=bindparam("b_raw"), compose_spec=None)
)
_SET_UNCOMPOSABLE = (
    update(_SPECS)
    .where(*_STILL_A_SPEC)
    .values(
        state=OutboxState.failed, last_error=bindparam("error"), compose_spec=None, sent_at=None
    )
)


def to_compose(session: Session, *, limit: int) -> list[tuple[int, str]]:
    """(id, spec) of queued rows still to be composed, oldest first."""
    rows = session.exec(
        select(OutboxItem.id, OutboxItem.compose_spec)
        .where(OutboxItem.state == OutboxState.queued, col(OutboxItem.compose_spec).is_not(None))
        .order_by(col(OutboxItem.id))
        .limit(limit)
    ).all()
    return [(int(i or 0), str(spec)) for i, spec in rows]


def store_composed(session: Session, built: Sequence[tuple[int, bytes | None, str]]) -> None:
    """What composing specs gave, (id, message, error) each: the message, or (None) the failure
    and its reason. One executemany for each kind. A second composer's result for the same row
    is ignored: both are the same message with the same Message-ID."""
    composed = [{"item_id": i, "b_raw": raw} for i, raw, _error in built if raw is not None]
    failed = [{"item_id": i, "error": error[:2000]} for i, raw, error in built if raw is None]
    connection = session.connection()
    if composed:
        connection.execute(_SET_COMPOSED, composed)
    if failed:
        connection.execute(_SET_UNCOMPOSABLE, failed)


def claim_due(session: Session, *, now: datetime, limit: int, lease_s: float) -> list[OutboxItem]:
    """Queued, composed rows whose time has come, oldest first; each is leased to the caller with
    its attempt counted (store/deliveries.py: exclusive on SQLite and PostgreSQL)."""
    return deliveries.claim_due(
        session, OutboxItem, now=now, limit=limit, lease_s=lease_s, extra_where=_CLAIMABLE
    )


def next_due_at(session: Session) -> datetime | None:
    return deliveries.next_due_at(session, OutboxItem)


def mark_sent(session: Session, item_id: int, *, now: datetime, reply: str = "") -> None:
    mark_sent_many(session, [(item_id, reply)], now=now)


def mark_sent_many(session: Session, sent: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """Rows the relay accepted, with its reply: one UPDATE statement for the whole batch."""
    if not sent:
        return
    session.execute(
        update(OutboxItem),
        [
            {"id": item_id, "state": OutboxState.sent, "sent_at": now, "last_error": reply[:2000]}
            for item_id, reply in sent
        ],
        execution_options={"synchronize_session": False},
    )


def mark_failed(session: Session, item_id: int, *, now: datetime, error: str) -> None:
    row = session.get(OutboxItem, item_id)
    if row is not None:
        row.state, row.last_error = OutboxState.failed, error[:2000]
        session.add(row)
        session.flush()


def schedule_retry(
    session: Session, item_id: int, *, now: datetime, error: str, base_s: float, max_s: float
) -> str:
    """Try again later (base_s doubling per attempt, capped at max_s), or fail the row if the
    next try would fall after its deadline. Returns the row's new state ("" when the row is not
    queued any more, e.g. a bounce failed it meanwhile: it is left as it is)."""
    row = deliveries.schedule_retry(
        session,
        OutboxItem,
        item_id,
        now=now,
        error=error,
        base_s=base_s,
        max_s=max_s,
        give_up=_past_deadline,
    )
    return row.state if row is not None else ""


def _past_deadline(row: OutboxItem, next_try_at: datetime) -> str | None:
    """Mail is worth sending only until its deadline (a late "we got your mail" confuses more
    than it helps): give up when the next try would come after it."""
    deadline = as_utc(row.deadline_at)
    return "deadline passed" if deadline is not None and next_try_at > deadline else None


_OUTBOX = rows.table_of(OutboxItem)
_SUPPRESSED = rows.table_of(SuppressedAddress)
_SUPPRESSED_AMONG = rows.Among(
    "emails",
    lambda among: sa_select(
        _SUPPRESSED.c.email, _SUPPRESSED.c.reason, _SUPPRESSED.c.until_at
    ).where(_SUPPRESSED.c.email.in_(among)),
)
_RECENT_AUTOMATIC_AMONG = rows.Among(
    "rcpts",
    lambda among: (
        sa_select(_OUTBOX.c.primary_rcpt, func.count())
        .where(
            _OUTBOX.c.primary_rcpt.in_(among),
            _OUTBOX.c.is_automatic == true(),
            _OUTBOX.c.state != OutboxState.suppressed.value,
            _OUTBOX.c.created_at >= bindparam("since"),
        )
        .group_by(_OUTBOX.c.primary_rcpt)
    ),
)


def suppressed_among(session: Session, emails: Collection[str], *, now: datetime) -> dict[str, str]:
    """Of these lower-case addresses, those whose automatic mail is held back now (they
    bounced), with the reason: the one place that decides it, for a batch of notices in one
    query."""
    if not emails:
        return {}
    found = rows.flushed_connection(session).execute(*_SUPPRESSED_AMONG.bind(sorted(emails)))
    held: dict[str, str] = {}
    for email, reason, until_at in found:
        until = as_utc(until_at)
        if until is not None and until > now:
            held[email] = reason or "bouncing"
    return held


def recent_automatic_among(
    session: Session, rcpts: Collection[str], *, since: datetime
) -> dict[str, int]:
    """How many automatic notices were written to each of these lower-case addresses since
    `since` (suppressed ones do not count), in one query; an address without any is absent."""
    if not rcpts:
        return {}
    found = rows.flushed_connection(session).execute(
        *_RECENT_AUTOMATIC_AMONG.bind(sorted(rcpts), since=since)
    )
    return {str(rcpt): int(count) for rcpt, count in found}


def suppressed_reason(session: Session, *, email: str, now: datetime) -> str | None:
    """Why automatic mail to `email` is held back (it bounced), or None."""
    address = email.lower()
    return suppressed_among(session, {address}, now=now).get(address)


def list_items(
    session: Session, *, state: str | None = None, limit: int = 100
) -> Sequence[OutboxItem]:
    query = select(OutboxItem).order_by(col(OutboxItem.id).desc()).limit(limit)
    if state:
        query = query.where(OutboxItem.state == state)
    return session.exec(query).all()


def next_attempt_of(session: Session, item_id: int) -> datetime | None:
    row = session.get(OutboxItem, item_id)
    return (
        as_utc(row.next_attempt_at) if row is not None and row.state == OutboxState.queued else None
    )


def release(session: Session, item_id: int, *, at: datetime) -> None:
    """Give back a claimed row that was not tried (the relay went away first): due again at `at`,
    without counting an attempt."""
    deliveries.release(session, OutboxItem, item_id, at=at)


def find_by_message_ids(session: Session, message_ids: Sequence[str]) -> list[OutboxItem]:
    """Our outgoing mail carrying any of these Message-IDs (what a bounce refers to)."""
    if not message_ids:
        return []
    return list(
        session.exec(select(OutboxItem).where(col(OutboxItem.message_id).in_(list(message_ids))))
    )


def suppress(session: Session, *, email: str, reason: str, until: datetime) -> None:
    """Hold back automatic mail to `email` until `until` (extending an earlier hold)."""
    row = session.get(SuppressedAddress, email.lower())
    if row is None:
        row = SuppressedAddress(email=email.lower(), reason=reason[:2000], until_at=until)
    else:
        current = as_utc(row.until_at)
        row.until_at = max(current, until) if current else until
        row.reason = reason[:2000]
    session.add(row)
    session.flush()
