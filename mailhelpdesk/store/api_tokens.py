"""API token rows. These functions flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Row
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import ApiToken
from mailhelpdesk.store import rows

_TOKENS = rows.table_of(ApiToken)
_CREDENTIALS = sa_select(
    _TOKENS.c.id,
    _TOKENS.c.name,
    _TOKENS.c.secret_sha256,
    _TOKENS.c.abilities,
    _TOKENS.c.revoked_at,
    _TOKENS.c.expires_at,
    _TOKENS.c.owner_email,
).where(_TOKENS.c.id == bindparam("token_id"))


def add(
    session: Session,
    *,
    name: str,
    secret_sha256: str,
    abilities: Sequence[str],
    now: datetime,
    expires_at: datetime | None = None,
    owner_email: str | None = None,
) -> ApiToken:
    row = ApiToken(
        name=name,
        secret_sha256=secret_sha256,
        abilities=" ".join(abilities),
        created_at=now,
        expires_at=expires_at,
        owner_email=owner_email,
    )
    session.add(row)
    session.flush()
    return row


def credentials(session: Session, token_id: int) -> Row[*tuple[Any, ...]] | None:
    """What checking a presented token needs of its row, as plain columns (id, name,
    secret_sha256, abilities, revoked_at, expires_at, owner_email): every request asks, and an
    ORM object per request cost more than the lookup (docs/performance.md, "Search")."""
    return session.connection().execute(_CREDENTIALS, {"token_id": token_id}).first()


def get_by_name(session: Session, name: str) -> ApiToken | None:
    return session.exec(select(ApiToken).where(ApiToken.name == name)).first()


def list_all(session: Session) -> Sequence[ApiToken]:
    return session.exec(select(ApiToken).order_by(col(ApiToken.id))).all()


def touch(session: Session, token_id: int, *, now: datetime) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = now
        session.add(row)
        session.flush()


def revoke(session: Session, token: ApiToken, *, now: datetime) -> None:
    token.revoked_at = now
    session.add(token)
    session.flush()
