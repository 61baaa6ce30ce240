"""API tokens (api-contract.md §2): minted by the CLI, shown once as `id|secret`, stored as the
SHA-256 of the secret and compared in constant time. A token is never logged.

Abilities are the four legacy Tickiti abilities plus the v1 `family:read|write` pairs. Two
equivalences hold (§2.2): `tickets:write` satisfies `create-ticket` and `ticket-respond`, and
`tickets:read` satisfies `ticket-index`; every `x:write` satisfies `x:read`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.events import Actor
from mailhelpdesk.domain.models import as_utc
from mailhelpdesk.errors import ConflictError, InvalidInputError, NotFoundError
from mailhelpdesk.store import api_tokens as store
from mailhelpdesk.store import tickets as ticket_store

LEGACY_ABILITIES = ("create-ticket", "ticket-respond", "send-email", "ticket-index")
_FAMILIES = (
    "tickets",
    "mail",
    "templates",
    "settings",
    "workflow",
    "administration",
    "supervisor",
    "contacts",  # resources.md §1: contacts:read, contacts:write
)
V1_ABILITIES = (*(f"{f}:{m}" for f in _FAMILIES for m in ("read", "write")), "reports:read")
# resources.md §1: webhook subscriptions and custom-field definitions; `all` grants it
ADMIN = "admin"
ABILITIES = LEGACY_ABILITIES + V1_ABILITIES + (ADMIN,)
ALL = "all"

_IMPLIED = {
    "tickets:write": ("tickets:read", "create-ticket", "ticket-respond", "ticket-index"),
    "tickets:read": ("ticket-index",),
    **{f"{f}:write": (f"{f}:read",) for f in _FAMILIES if f != "tickets"},
}


@dataclass(frozen=True)
class AuthenticatedToken:
    id: int
    name: str
    abilities: frozenset[str]
    owner_email: str | None = None  # the agent the v1 family acts as; None: the system user

    def allows(self, ability: str) -> bool:
        return ability in self.abilities


@dataclass(frozen=True)
class TokenInfo:
    name: str
    abilities: tuple[str, ...]
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None
    owner_email: str | None = None


def normalise_abilities(requested: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The abilities to store, in table order; `all` expands to every ability."""
    names = [a.strip() for a in requested if a.strip()]
    if not names:
        raise InvalidInputError("at least one --ability is required")
    unknown = [a for a in names if a != ALL and a not in ABILITIES]
    if unknown:
        raise InvalidInputError(
            f"unknown ability {', '.join(unknown)} (known: {ALL}, {', '.join(ABILITIES)})"
        )
    if ALL in names:
        return ABILITIES
    return tuple(a for a in ABILITIES if a in names)


def effective(abilities: str) -> frozenset[str]:
    granted = set(abilities.split())
    for ability in list(granted):
        granted.update(_IMPLIED.get(ability, ()))
    return frozenset(granted)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(
    session: Session,
    *,
    name: str,
    abilities: list[str] | tuple[str, ...],
    clock: Clock,
    expires_at: datetime | None = None,
    owner_email: str | None = None,
) -> str:
    """Store a new token and return its plaintext `id|secret` (the only time it exists)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInputError("token name: 1-200 characters required")
    granted = normalise_abilities(abilities)
    if expires_at is not None and expires_at <= clock.now():
        raise InvalidInputError("the expiry must be in the future")
    if owner_email is not None:
        owner_email = owner_email.strip().lower()
        if "@" not in owner_email or len(owner_email) > 320:
            raise InvalidInputError(f"owner {owner_email!r} is not an email address")
    if store.get_by_name(session, name) is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    secret = secrets.token_urlsafe(32)
    try:
        with session.begin_nested():
            row = store.add(
                session,
                name=name,
                secret_sha256=_digest(secret),
                abilities=granted,
                now=clock.now(),
                expires_at=expires_at,
                owner_email=owner_email,
            )
    except IntegrityError:
        raise ConflictError(f"a token named {name!r} already exists") from None
    return f"{row.id}|{secret}"


def list_tokens(session: Session) -> list[TokenInfo]:
    return [
        TokenInfo(
            t.name,
            tuple(t.abilities.split()),
            as_utc(t.created_at),
            as_utc(t.last_used_at),
            as_utc(t.revoked_at),
            as_utc(t.expires_at),
            t.owner_email,
        )
        for t in store.list_all(session)
    ]


def revoke_token(session: Session, *, name: str, clock: Clock) -> None:
    row = store.get_by_name(session, name)
    if row is None:
        raise NotFoundError(f"no token named {name!r}")
    if row.revoked_at is None:
        store.revoke(session, row, now=clock.now())


def verify(session: Session, presented: str, *, now: datetime) -> AuthenticatedToken | None:
    """The token for a presented `id|secret`, or None when unknown, wrong, revoked or expired."""
    token_id, bar, secret = presented.partition("|")
    if (
        not bar
        or not (token_id.isascii() and token_id.isdigit())
        or len(token_id) > 18
        or not secret
    ):
        return None
    row = store.credentials(session, int(token_id))
    # compare even when the row is missing, so timing does not reveal which ids exist
    expected = row.secret_sha256 if row is not None else "0" * 64
    matches = hmac.compare_digest(expected, _digest(secret))
    if row is None or not matches or row.revoked_at is not None:
        return None
    expires = as_utc(row.expires_at)
    if expires is not None and expires <= now:
        return None
    return AuthenticatedToken(row.id, row.name, effective(row.abilities), row.owner_email)


def touch(session: Session, token_id: int, *, clock: Clock) -> None:
    store.touch(session, token_id, now=clock.now())


def actor_for(session: Session, token: AuthenticatedToken | None) -> Actor:
    """Who a request acts as in history: the token's owner when that is an agent, else the
    token itself (by name); the helpdesk itself without a token."""
    if token is None:
        return Actor.system()
    if token.owner_email:
        agent = ticket_store.find_agent(session, token.owner_email)
        if agent is not None:
            return Actor.agent(agent.email, agent.name)
    return Actor.token(token.name)
