"""API token rows. These functions flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import ApiToken


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


def get(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


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
