"""Idempotency-Key rows (api-contract.md §3.3). These functions flush, never commit.

The unique index on (token_id, key) decides which of several concurrent requests owns a key:
`INSERT … ON CONFLICT DO NOTHING` on SQLite ≥ 3.35 and PostgreSQL alike. A claim carries a
random `lease`; only the holder of the current lease can complete or release it, so a request
whose lease ran out and was taken over cannot overwrite the new owner's outcome.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, text, update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import KeyState
from mailhelpdesk.domain.models import IdempotencyKey
from mailhelpdesk.store import rows

CLAIM_WAIT_MS = 5000


def insert_claim(
    session: Session,
    *,
    token_id: int,
    key: str,
    action: str,
    fingerprint: str,
    lease: str,
    now: datetime,
    locked_until: datetime,
    expires_at: datetime,
) -> int | None:
    """Try to claim (token_id, key); the new row's id if this call inserted it, else None."""
    values = {
        "token_id": token_id,
        "key": key,
        "action": action,
        "fingerprint": fingerprint,
        "state": KeyState.in_progress,
        "lease": lease,
        "locked_until": locked_until,
        "created_at": now,
        "expires_at": expires_at,
    }
    dialect = rows.dialect_of(session)
    stmt = rows.per_dialect(
        session,
        "idempotency.insert_claim",
        lambda: (
            rows.conflict_insert(session, IdempotencyKey)
            .on_conflict_do_nothing(index_elements=["token_id", "key"])
            .returning(rows.table_of(IdempotencyKey).c.id)
        ),
    )
    if dialect == "postgresql":
        # a claim held by another daemon's open transaction makes this INSERT wait for it; wait
        # a bounded time (then the caller answers 409 in progress), never as long as a stuck peer
        session.execute(text(f"SET LOCAL lock_timeout = '{CLAIM_WAIT_MS}ms'"))
    inserted = session.connection().execute(stmt, values).first()
    if dialect == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = 0"))
    return int(inserted[0]) if inserted is not None else None


# the statements of every create, built once (store/rows.py says why)
_GET = select(IdempotencyKey).where(
    IdempotencyKey.token_id == bindparam("token_id"), IdempotencyKey.key == bindparam("key")
)
# run on the connection (Core, from the table): no ORM bulk-statement work on every request
_KEYS = rows.table_of(IdempotencyKey)
_TAKE_MINTED = (
    delete(_KEYS)
    .where(
        _KEYS.c.token_id.is_(None),
        _KEYS.c.key == bindparam("key"),
        _KEYS.c.state == KeyState.minted,
    )
    .returning(_KEYS.c.action)
)
_COMPLETE = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("row_id"),
        _KEYS.c.lease == bindparam("b_lease"),
        _KEYS.c.state == KeyState.in_progress,
    )
    .values(
        state=KeyState.completed,
        status=bindparam("b_status"),
        body=bindparam("b_body"),
        completed_at=bindparam("b_completed_at"),
        expires_at=bindparam("b_expires_at"),
        locked_until=None,
    )
)


def is_claim_wait_exceeded(exc: BaseException) -> bool:
    """The error `insert_claim` ends with when another transaction held the key too long."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"  # lock_not_available


def get(session: Session, *, token_id: int, key: str) -> IdempotencyKey | None:
    return session.exec(_GET, params={"token_id": token_id, "key": key}).first()


def take_minted(session: Session, *, key: str) -> str | None:
    """The action a minted, never-used key with this value was bound to ('' = any), or None.
    The row is removed in the same statement, so of two daemons using it only one gets it."""
    found = session.connection().execute(_TAKE_MINTED, {"key": key}).first()
    return None if found is None else str(found[0] or "")


def take_over(
    session: Session, *, row_id: int, lease: str, now: datetime, locked_until: datetime
) -> bool:
    """Take an in-progress claim whose lease expired; True for the one winner."""
    result = session.execute(
        update(IdempotencyKey)
        .where(
            col(IdempotencyKey.id) == row_id,
            col(IdempotencyKey.state) == KeyState.in_progress,
            col(IdempotencyKey.locked_until) < now,
        )
        .values(lease=lease, locked_until=locked_until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def complete(
    session: Session,
    *,
    row_id: int,
    lease: str,
    status: int,
    body: bytes,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Store the outcome; False if the lease is no longer ours (then the caller must roll back)."""
    result = session.connection().execute(
        _COMPLETE,
        {
            "row_id": row_id,
            "b_lease": lease,
            "b_status": status,
            "b_body": body,
            "b_completed_at": now,
            "b_expires_at": expires_at,
        },
    )
    return bool(result.rowcount)


def count_minted(session: Session, *, now: datetime) -> int:
    """Minted keys not yet used nor expired (the bound of the unauthenticated mint endpoint)."""
    return session.exec(
        select(func.count())
        .select_from(IdempotencyKey)
        .where(
            col(IdempotencyKey.state) == KeyState.minted,
            col(IdempotencyKey.expires_at) >= now,
        )
    ).one()


def mint(session: Session, *, key: str, action: str, now: datetime, expires_at: datetime) -> None:
    session.add(
        IdempotencyKey(
            token_id=None,
            key=key,
            action=action,
            state=KeyState.minted,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()


def purge(session: Session, *, now: datetime) -> int:
    """Delete completed and minted rows past their expiry, and abandoned claims long expired."""
    result = session.execute(
        delete(IdempotencyKey)
        .where(col(IdempotencyKey.expires_at) < now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
