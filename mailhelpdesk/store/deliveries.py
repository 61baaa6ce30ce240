"""One delivery queue mechanism for both outboxes: claim, backoff, retry, release, next due time.

The mail outbox (store/outbox.py, OutboxItem rows) and the HTTP outbox (store/http_outbox.py,
HttpDelivery rows) are the same kind of queue: rows with `id, state, attempts, next_attempt_at,
last_error` that stay `queued` until a sender is done with them. Each used to carry its own copy
of this code, and the copies drifted: only one locked its candidates on PostgreSQL, so two
daemons could both send the same notice. What really differs between the tables is small and
stays with each table as a policy passed in here:

    extra_where  which queued rows may be claimed at all (mail: not those still holding a
                 compose spec, which the sender composes first)
    give_up      when a row that failed for now is failed for good instead of retried
                 (mail: the next try would fall after its deadline; HTTP: max_attempts used)

Why a claim is exclusive, on SQLite and on PostgreSQL:

1. SELECT the ids of due queued rows, oldest first (next_attempt_at, id). On PostgreSQL with
   `FOR UPDATE SKIP LOCKED`, as the spool does, so two senders claiming at once take different
   rows instead of queueing behind (and then colliding on) each other's locks.
2. One conditional UPDATE over the candidates (each still queued, still due) that pushes
   next_attempt_at one lease ahead and counts the attempt, RETURNING the ids it matched; only
   those rows are returned. SQLite has one writer at a time; PostgreSQL re-checks the WHERE of
   an UPDATE for each row that waited for another transaction's row lock (READ COMMITTED).
   Either way a row the other claimer took first is not matched, whatever happened between the
   SELECT and the UPDATE. (It used to be one UPDATE per candidate: 15 % of the database
   thread's time while a burst of notices went out.)

A claimed row is its claimer's until the lease runs out; the rows of a sender that crashed are
claimed again after that: delivery is at least once, never lost. A claimed row that was not
tried is given back with `release`, without counting an attempt.

These functions flush (or execute), never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol, TypeVar

from sqlalchemy import ColumnElement, func, update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import as_utc

# the states the mechanism itself moves rows between; OutboxState and DeliveryState
# (domain/enums.py) both spell them this way, and their other states are the tables' own
QUEUED: Final = "queued"
FAILED: Final = "failed"
MAX_ERROR_CHARS: Final = 2000


class Deliverable(Protocol):
    """What a row of a delivery table has (OutboxItem, HttpDelivery)."""

    id: int | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str


RowT = TypeVar("RowT", bound=Deliverable)

# (row, when its next try would be) -> None to retry then, or why it is given up instead
# ("" for no reason worth adding to "gave up after N attempts")
GiveUp = Callable[[RowT, datetime], str | None]


def claim_due(
    session: Session,
    table: type[RowT],
    *,
    now: datetime,
    limit: int,
    lease_s: float,
    extra_where: Sequence[ColumnElement[bool]] = (),
) -> list[RowT]:
    """Queued rows whose time has come, oldest first, each leased to the caller until
    now + lease_s with its attempt counted. See the module docstring for why two claimers on
    one database never get the same row."""
    lease_until = now + timedelta(seconds=lease_s)
    due = _due_ids(session, table, now=now, limit=limit, extra_where=extra_where)
    if not due:
        return []
    leased = set(_lease(session, table, due, now=now, until=lease_until, extra_where=extra_where))
    claimed = [row_id for row_id in due if row_id in leased]
    if not claimed:
        return []
    rows = session.exec(
        select(table)
        .where(col(table.id).in_(claimed))
        .execution_options(populate_existing=True)  # the UPDATE bypassed the identity map
    )
    by_id = {row.id: row for row in rows}
    return [by_id[row_id] for row_id in claimed if row_id in by_id]


def _due_ids(
    session: Session,
    table: type[RowT],
    *,
    now: datetime,
    limit: int,
    extra_where: Sequence[ColumnElement[bool]],
) -> list[int]:
    query = (
        select(col(table.id))
        .where(col(table.state) == QUEUED, col(table.next_attempt_at) <= now, *extra_where)
        .order_by(col(table.next_attempt_at), col(table.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [int(row_id or 0) for row_id in session.exec(query)]


def _lease(
    session: Session,
    table: type[RowT],
    row_ids: Sequence[int],
    *,
    now: datetime,
    until: datetime,
    extra_where: Sequence[ColumnElement[bool]],
) -> list[int]:
    """Claim the candidates still queued and due; the ids this UPDATE got."""
    result = session.execute(
        update(table)
        .where(
            col(table.id).in_(row_ids),
            col(table.state) == QUEUED,
            col(table.next_attempt_at) <= now,
            *extra_where,
        )
        .values(attempts=col(table.attempts) + 1, next_attempt_at=until)
        .returning(col(table.id))
        .execution_options(synchronize_session=False)
    )
    return [int(row_id) for row_id in result.scalars()]


def retry_delay_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """Backoff after the `attempts`-th failed try: base_s, doubling, capped at max_s. No jitter,
    so the schedule is predictable (mail: 30 s, 60 s, 120 s … 1 h; HTTP: 60 s … 6 h)."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), max_s))


def schedule_retry(
    session: Session,
    table: type[RowT],
    row_id: int,
    *,
    now: datetime,
    error: str,
    base_s: float,
    max_s: float,
    give_up: GiveUp[RowT],
) -> RowT | None:
    """A try that failed for now: due again after the backoff, or `failed` when the table's
    `give_up` policy says so. Returns the row (its `state` says which), or None when it is not
    queued any more (a bounce or an operator failed it meanwhile: left as it is)."""
    row = session.get(table, row_id)
    if row is None or row.state != QUEUED:
        return None
    when = now + timedelta(seconds=retry_delay_s(row.attempts, base_s=base_s, max_s=max_s))
    why = give_up(row, when)
    if why is None:
        row.next_attempt_at, row.last_error = when, error[:MAX_ERROR_CHARS]
    else:
        row.state = FAILED
        because = f" ({why})" if why else ""
        row.last_error = f"gave up after {row.attempts} attempts{because}: {error}"[
            :MAX_ERROR_CHARS
        ]
    session.add(row)
    session.flush()
    return row


def release(session: Session, table: type[RowT], row_id: int, *, at: datetime) -> None:
    """Give back a claimed row that was not tried (the relay went away first, the sender is
    stopping): due again at `at`, without counting an attempt."""
    row = session.get(table, row_id)
    if row is not None and row.state == QUEUED:
        row.attempts = max(row.attempts - 1, 0)
        row.next_attempt_at = at
        session.add(row)
        session.flush()


def next_due_at(session: Session, table: type[RowT]) -> datetime | None:
    """When the earliest queued row is due (None: nothing queued), for a caller deciding how long
    it may sleep."""
    found = session.exec(
        select(func.min(col(table.next_attempt_at))).where(col(table.state) == QUEUED)
    ).one()
    return as_utc(found)
