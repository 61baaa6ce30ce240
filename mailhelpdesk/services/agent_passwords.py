"""Agents' passwords, for the seed adapters' logins (resources.md §5 and §6: `agent passwd`,
tiHelpdesk's `/api/me`, Tiketti's `/api/v1/auth/login`).

Stored as an Argon2id PHC string (argon2-cffi, its recommended parameters), never logged. A login
for an unknown address or an agent with no password still runs one verification against a fixed
hash, so the answer time does not tell which addresses are agents.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import Agent
from mailhelpdesk.errors import InvalidInputError, NotFoundError
from mailhelpdesk.store import tickets as store

MIN_LENGTH = 8
MAX_LENGTH = 1024  # a bound on the work one login attempt can ask of the hasher


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    """A hash no password in use matches, verified when there is nothing real to verify."""
    return _hasher().hash("decoy: no agent has this password")


def set_password(session: Session, email: str, password: str, *, clock: Clock) -> Agent:
    """Set (or replace) the password of the agent `email`; config agents included."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidInputError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
    agent = store.find_agent(session, email)
    if agent is None:
        raise NotFoundError(f"no agent {email}")
    agent.password_hash = _hasher().hash(password)
    agent.password_changed_at = clock.now()
    session.add(agent)
    return agent


def clear_password(session: Session, email: str) -> None:
    """Remove the agent's password: the adapters' logins refuse the agent from then on."""
    agent = store.find_agent(session, email)
    if agent is None:
        raise NotFoundError(f"no agent {email}")
    agent.password_hash = ""
    session.add(agent)


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The agent whose address (main or alternate) and password match, or None.

    Rehashes in place when argon2-cffi's parameters have grown since the hash was made, so the
    caller's session must be writable for that to stick (a read session simply drops it).
    """
    agent = store.find_agent(session, email) if email else None
    stored = agent.password_hash if agent is not None and agent.password_hash else ""
    if not password or len(password) > MAX_LENGTH:
        _verify(_decoy_hash(), "x")
        return None
    if not _verify(stored or _decoy_hash(), password) or agent is None or not stored:
        return None
    if _hasher().check_needs_rehash(stored):
        agent.password_hash = _hasher().hash(password)
        session.add(agent)
    return agent


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
