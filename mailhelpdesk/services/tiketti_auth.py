"""Tiketti's logins (seed 003, resources.md §6): a short-lived JWT access token (PyJWT, HS256,
signed with a key derived from the helpdesk secret) and a rotating, revocable refresh token.

Refresh tokens are random; only their SHA-256 is stored (domain/models.RefreshToken). Using one
marks it used and issues the next of its family; presenting a used one again (a replayed or
stolen copy) revokes the whole family, so both holders must log in again. Logging out revokes
the family of the token presented. An agent removed or whose password is cleared
(`agent passwd --clear`) can refresh no more; an access token already issued lives out its
short lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import RefreshToken, as_utc
from mailhelpdesk.store import tickets as ticket_store

ISSUER = "mailhelpdesk"
AUDIENCE = "tiketti"
ALGORITHM = "HS256"


def signing_key(helpdesk_secret: bytes) -> bytes:
    """The JWT key: derived from the helpdesk secret, so changing the secret ends every session."""
    return hmac.new(helpdesk_secret, b"tiketti-jwt", hashlib.sha256).digest()


def organization_id(helpdesk_secret: bytes) -> str:
    """The one organisation the desk is, as a stable UUID (when the config names none)."""
    digest = hmac.new(helpdesk_secret, b"tiketti-organization", hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


def access_token(key: bytes, email: str, *, now: datetime, ttl_s: int) -> str:
    claims = {
        "sub": email,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl_s,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_access(key: bytes, token: str, *, now: datetime) -> str | None:
    """The agent address a valid, unexpired access token names, else None."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iat"], "verify_iat": False},
            leeway=0,
        )
    except jwt.PyJWTError:
        return None
    if int(claims["exp"]) <= int(now.timestamp()):
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue(
    session: Session,
    key: bytes,
    email: str,
    *,
    now: datetime,
    access_ttl_s: int,
    refresh_ttl_s: int,
    family: str | None = None,
) -> Tokens:
    """A new access token and the next refresh token of `family` (a new family: a login)."""
    refresh = "rt_" + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            token_sha256=_digest(refresh),
            family=family or secrets.token_hex(16),
            agent_email=email,
            created_at=now,
            expires_at=now + timedelta(seconds=refresh_ttl_s),
        )
    )
    session.flush()
    return Tokens(access_token(key, email, now=now, ttl_s=access_ttl_s), refresh, access_ttl_s)


def _find(session: Session, presented: str) -> RefreshToken | None:
    return session.exec(
        select(RefreshToken).where(RefreshToken.token_sha256 == _digest(presented))
    ).first()


def _revoke_family(session: Session, family: str, now: datetime) -> None:
    for row in session.exec(
        select(RefreshToken).where(
            RefreshToken.family == family, col(RefreshToken.revoked_at).is_(None)
        )
    ):
        row.revoked_at = now
        session.add(row)
    session.flush()


def rotate(
    session: Session,
    key: bytes,
    presented: str,
    *,
    now: datetime,
    access_ttl_s: int,
    refresh_ttl_s: int,
) -> Tokens | None:
    """New tokens for a valid refresh token (which is used up); None when it is unknown,
    expired, revoked or already used (the last also revokes its family)."""
    row = _find(session, presented)
    if row is None or row.revoked_at is not None:
        return None
    if row.used_at is not None:
        _revoke_family(session, row.family, now)
        return None
    expires = as_utc(row.expires_at)
    if expires is None or expires <= now:
        return None
    agent = ticket_store.find_agent(session, row.agent_email)
    if agent is None or not agent.password_hash:  # removed, or its password cleared
        _revoke_family(session, row.family, now)
        return None
    row.used_at = now
    session.add(row)
    return issue(
        session,
        key,
        row.agent_email,
        now=now,
        access_ttl_s=access_ttl_s,
        refresh_ttl_s=refresh_ttl_s,
        family=row.family,
    )


def revoke(session: Session, presented: str, *, now: datetime) -> bool:
    """Log out: the family of `presented` can be refreshed no more."""
    row = _find(session, presented)
    if row is None:
        return False
    _revoke_family(session, row.family, now)
    return True
