"""The HTTP outbox: outgoing POSTs as rows, written in the transaction of the change that caused
them (a webhook event, an intervention's epilog) and drained by transports/http_sender.py.

Life of a row: `queued` → `delivered` (any 2xx), or `failed` (max_attempts tries without a 2xx).
A sender claims a due row with one conditional UPDATE that pushes `next_attempt_at` one lease
ahead and counts the attempt; the UPDATE only matches while the row is still due, so of two
senders on one database (SQLite or PostgreSQL, whose row lock makes the second UPDATE re-check
its WHERE) exactly one gets the row. A row claimed by a sender that crashed is due again once the
lease runs out: delivery is at least once, never lost. These functions flush, never commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import HttpDelivery, as_utc

MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
# set on a session that queued rows, so the sender can be woken right after its commit
ENQUEUED_FLAG = "http_outbox_enqueued"


class DeliveryState:
    queued = "queued"
    delivered = "delivered"
    failed = "failed"


STATES = (DeliveryState.queued, DeliveryState.delivered, DeliveryState.failed)


def enqueue(
    session: Session,
    *,
    kind: str,
    ref: str,
    ticket_id: int | None,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    secret_ref: str,
    timeout_s: float,
    max_attempts: int,
    now: datetime,
    bearer_from_secret: bool = False,
) -> HttpDelivery:
    """Queue one POST of `body` to `url`, due at once. The sender adds Content-Type, User-Agent
    and (when `secret_ref` is set) the signature, and with `bearer_from_secret` an
    `Authorization: Bearer` of the same key; `headers` are sent as given on every attempt."""
    row = HttpDelivery(
        created_at=now,
        kind=kind,
        ref=ref,
        ticket_id=ticket_id,
        url=url,
        body=body,
        headers=json.dumps(dict(headers), sort_keys=True),
        secret_ref=secret_ref,
        bearer_from_secret=bearer_from_secret and bool(secret_ref),
        timeout_s=float(timeout_s),
        state=DeliveryState.queued,
        attempts=0,
        max_attempts=max(int(max_attempts), 1),
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    session.info[ENQUEUED_FLAG] = True
    return row


def headers_of(row: HttpDelivery) -> dict[str, str]:
    """The static headers stored with a row."""
    data = json.loads(row.headers or "{}")
    return {str(k): str(v) for k, v in data.items()}


def claim_due(session: Session, *, now: datetime, limit: int, lease_s: float) -> list[HttpDelivery]:
    """Queued rows whose time has come, oldest first; each is leased to the caller (attempt counted).
    On PostgreSQL the candidates are locked with SKIP LOCKED, as the spool's are, so two daemons
    claiming at once take different rows instead of colliding on the same ones; a row another
    sender claimed between our SELECT and our UPDATE is left out all the same."""
    query = (
        select(HttpDelivery.id)
        .where(HttpDelivery.state == DeliveryState.queued, col(HttpDelivery.next_attempt_at) <= now)
        .order_by(col(HttpDelivery.next_attempt_at), col(HttpDelivery.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    candidates = list(session.exec(query))
    lease_until = now + timedelta(seconds=lease_s)
    claimed: list[int] = []
    for row_id in candidates:
        result = session.execute(
            update(HttpDelivery)
            .where(
                col(HttpDelivery.id) == row_id,
                HttpDelivery.state == DeliveryState.queued,
                col(HttpDelivery.next_attempt_at) <= now,
            )
            .values(attempts=HttpDelivery.attempts + 1, next_attempt_at=lease_until)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(int(row_id or 0))
    if not claimed:
        return []
    rows = session.exec(
        select(HttpDelivery)
        .where(col(HttpDelivery.id).in_(claimed))
        .order_by(col(HttpDelivery.id))
        .execution_options(populate_existing=True)
    )
    return list(rows)


def mark_delivered(
    session: Session, row_id: int, *, now: datetime, status: int, body: bytes
) -> HttpDelivery | None:
    """The receiver answered 2xx. A row no longer queued (failed meanwhile) is left as it is."""
    row = session.get(HttpDelivery, row_id)
    if row is None or row.state != DeliveryState.queued:
        return None
    row.state, row.delivered_at, row.last_status = DeliveryState.delivered, now, status
    row.response_body = body[:MAX_RESPONSE_BYTES]
    row.last_error = ""
    session.add(row)
    session.flush()
    return row


def retry_delay_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """Backoff after the `attempts`-th failed try: base_s, doubling, capped at max_s (no jitter,
    so the schedule is predictable: 60 s, 120 s, 240 s … 6 h with the defaults)."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), max_s))


def record_failure(
    session: Session,
    row_id: int,
    *,
    now: datetime,
    error: str,
    status: int | None,
    body: bytes | None,
    base_s: float,
    max_s: float,
) -> HttpDelivery | None:
    """A try that got no 2xx: due again after the backoff, or `failed` once max_attempts tries
    are used up. Returns the row (its `state` says which), or None when it was not queued."""
    row = session.get(HttpDelivery, row_id)
    if row is None or row.state != DeliveryState.queued:
        return None
    row.last_status = status
    row.response_body = body[:MAX_RESPONSE_BYTES] if body is not None else None
    if row.attempts >= row.max_attempts:
        row.state = DeliveryState.failed
        row.last_error = f"gave up after {row.attempts} attempts: {error}"[:MAX_ERROR_CHARS]
    else:
        row.next_attempt_at = now + timedelta(
            seconds=retry_delay_s(row.attempts, base_s=base_s, max_s=max_s)
        )
        row.last_error = error[:MAX_ERROR_CHARS]
    session.add(row)
    session.flush()
    return row


def release(session: Session, row_id: int, *, at: datetime) -> None:
    """Give back a claimed row that was not tried (the sender is stopping): due again at `at`,
    without counting an attempt."""
    row = session.get(HttpDelivery, row_id)
    if row is not None and row.state == DeliveryState.queued:
        row.attempts = max(row.attempts - 1, 0)
        row.next_attempt_at = at
        session.add(row)
        session.flush()


def next_due_at(session: Session) -> datetime | None:
    found = session.exec(
        select(func.min(HttpDelivery.next_attempt_at)).where(
            HttpDelivery.state == DeliveryState.queued
        )
    ).one()
    return as_utc(found)


def get(session: Session, row_id: int) -> HttpDelivery | None:
    return session.get(HttpDelivery, row_id)


def list_items(
    session: Session,
    *,
    state: str | None = None,
    kind: str | None = None,
    ref: str | None = None,
    limit: int = 100,
) -> Sequence[HttpDelivery]:
    """Newest first, optionally filtered."""
    query = select(HttpDelivery).order_by(col(HttpDelivery.id).desc()).limit(limit)
    if state:
        query = query.where(HttpDelivery.state == state)
    if kind:
        query = query.where(HttpDelivery.kind == kind)
    if ref:
        query = query.where(HttpDelivery.ref == ref)
    return session.exec(query).all()
