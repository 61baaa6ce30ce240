"""Leases: which daemon works a resource that only one daemon may work at a time.

Several daemons may share one PostgreSQL database. Rows (kept mail, outbox, deliveries) are
shared out by claiming them (SKIP LOCKED, conditional UPDATEs); what cannot be split into rows -
reading one IMAP mailbox, running one scheduled job - is leased: a row naming the resource
(`imap:<mailbox>`, `job:<job>`), the daemon holding it and when the lease ends.

A lease is taken and renewed by one conditional statement (INSERT … ON CONFLICT DO UPDATE …
WHERE the row is ours or has expired), so two daemons racing for it can never both win: the
database serialises the statements on the primary key, and the loser's update matches no row.
The same statement runs on SQLite, where there is only ever one daemon (store/daemon_lock.py)
and it trivially wins. A daemon that stops cleanly releases its leases; one that dies keeps them
until they expire, then another daemon takes them over.

Times come from the caller's clock: the daemons' hosts must agree on the time to well within a
lease's length (NTP does). These functions never commit; the caller owns the transaction, so a
renewal can be part of the transaction whose work it guards (the IMAP poller keeps a batch and
renews its lease together, and a daemon that lost the lease keeps nothing).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

from sqlalchemy import case, delete, or_
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Lease, as_utc
from mailhelpdesk.store import rows

_LEASES = rows.table_of(Lease)


class LeaseLostError(Exception):
    """The lease is not (or no longer) ours: another daemon holds it."""


def daemon_id() -> str:
    """A name for this daemon process, unique across hosts and restarts: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def take(session: Session, resource: str, *, holder: str, now: datetime, ttl_s: float) -> bool:
    """Take or renew `resource` for `holder` until `now + ttl_s`; True when it is ours. It is
    ours when nobody holds it, when we already do (renewed), or when the holder's lease has
    expired (taken over). One statement: no read-then-write window for another daemon."""
    table = _LEASES
    stmt = rows.conflict_insert(session, Lease).values(
        resource=resource,
        holder=holder,
        acquired_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=["resource"],
        set_={
            "holder": stmt.excluded.holder,
            "expires_at": stmt.excluded.expires_at,
            # renewing keeps the time it was first taken; a takeover starts a new one
            "acquired_at": case(
                (table.c.holder == stmt.excluded.holder, table.c.acquired_at),
                else_=stmt.excluded.acquired_at,
            ),
        },
        where=or_(table.c.holder == holder, table.c.expires_at <= now),
    ).returning(table.c.holder)
    return session.execute(upsert).first() is not None


def hold(session: Session, resource: str, *, holder: str, now: datetime, ttl_s: float) -> None:
    """Renew a lease the caller believes it holds, inside the transaction it guards; raises
    LeaseLostError (the caller rolls back) when another daemon has taken it."""
    if not take(session, resource, holder=holder, now=now, ttl_s=ttl_s):
        raise LeaseLostError(f"lease {resource} is held by another daemon")


def release(session: Session, resource: str, *, holder: str) -> bool:
    """Give the lease up (a clean stop, a job done), if it is still ours; True when it was."""
    table = _LEASES
    result = session.execute(
        delete(table).where(table.c.resource == resource).where(table.c.holder == holder)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_all(session: Session, *, holder: str) -> int:
    """Give up every lease of `holder` (the daemon stops cleanly); returns how many."""
    table = _LEASES
    result = session.execute(delete(table).where(table.c.holder == holder))
    return int(result.rowcount)  # type: ignore[attr-defined]


def clear(session: Session) -> int:
    """Forget every lease. Only for a daemon that knows it is the only one (SQLite, under the
    daemon lock): the holders of any leases left are dead, and waiting for their leases to
    expire would only delay the mailboxes after a crash. Returns how many there were."""
    table = _LEASES
    return int(session.execute(delete(table)).rowcount)  # type: ignore[attr-defined]


def held(session: Session, *, holder: str, now: datetime) -> list[Lease]:
    """The unexpired leases of `holder`, by resource (what /healthz shows)."""
    rows = session.exec(
        select(Lease)
        .where(Lease.holder == holder)
        .where(col(Lease.expires_at) > now)
        .order_by(col(Lease.resource))
    ).all()
    return list(rows)


def all_leases(session: Session) -> list[Lease]:
    """Every lease row, expired ones included (the CLI's view of the fleet)."""
    return list(session.exec(select(Lease).order_by(col(Lease.resource))).all())


def describe(lease: Lease, now: datetime) -> dict[str, object]:
    expires = as_utc(lease.expires_at)
    acquired = as_utc(lease.acquired_at)
    return {
        "resource": lease.resource,
        "holder": lease.holder,
        "acquired_at": acquired.isoformat() if acquired else None,
        "expires_at": expires.isoformat() if expires else None,
        "expired": bool(expires and expires <= now),
    }
