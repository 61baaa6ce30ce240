"""The HTTP outbox: outgoing POSTs as rows, written in the transaction of the change that caused
them (a webhook event, an intervention's epilog) and drained by transports/http_sender.py.

Life of a row: `queued` → `delivered` (any 2xx), or `failed` (max_attempts tries without a 2xx).
Claiming, backoff and release are the shared delivery mechanism of store/deliveries.py (the mail
outbox uses the same), so of two senders on one database (SQLite or PostgreSQL) exactly one gets
a row, and a row claimed by a sender that crashed is due again once the lease runs out: delivery
is at least once, never lost. This table's own policy is when to give up: after max_attempts
tries. These functions flush, never commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlmodel import Session, col, select

# the state enum lives in domain/enums.py; callers keep using it as http_outbox.DeliveryState
from mailhelpdesk.domain.enums import DeliveryState
from mailhelpdesk.domain.models import HttpDelivery
from mailhelpdesk.store import deliveries

# the shared backoff, under the name callers (and tests) know it by here
retry_delay_s = deliveries.retry_delay_s

MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_CHARS = deliveries.MAX_ERROR_CHARS
# set on a session that queued rows, so the sender can be woken right after its commit
ENQUEUED_FLAG = "http_outbox_enqueued"

STATES = tuple(DeliveryState)


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
    """Queued rows whose time has come, oldest first; each is leased to the caller with its
    attempt counted (store/deliveries.py: exclusive on SQLite and PostgreSQL)."""
    return deliveries.claim_due(session, HttpDelivery, now=now, limit=limit, lease_s=lease_s)


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
    return deliveries.schedule_retry(
        session,
        HttpDelivery,
        row_id,
        now=now,
        error=error,
        base_s=base_s,
        max_s=max_s,
        give_up=_out_of_attempts,
    )


def _out_of_attempts(row: HttpDelivery, _next_try_at: datetime) -> str | None:
    """A receiver is tried max_attempts times, however long that takes (the row's own limit:
    an epilog and a webhook may differ); "" adds no reason to "gave up after N attempts"."""
    return "" if row.attempts >= row.max_attempts else None


def release(session: Session, row_id: int, *, at: datetime) -> None:
    """Give back a claimed row that was not tried (the sender is stopping): due again at `at`,
    without counting an attempt."""
    deliveries.release(session, HttpDelivery, row_id, at=at)


def next_due_at(session: Session) -> datetime | None:
    return deliveries.next_due_at(session, HttpDelivery)


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
