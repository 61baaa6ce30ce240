"""Webhook subscriptions: the `[[webhooks]]` of the config, kept in a table so the service layer
finds subscribers inside its own transaction, with no config passed down to it.

Synced at start (`mailhelpdesk serve`, `mailhelpdesk init`) like the config's agents: entries
removed from the file are removed from the store. The HMAC keys stay in the config; a row only
says whether it is signed. Subscriptions made by API (origin "api",
services/webhook_subscriptions.py) live beside them, untouched by the sync except for the
delivery settings; their rows hold the salt their key is derived from, never the key.
These functions flush, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from mailhelpdesk.config import WebhookConfig
from mailhelpdesk.domain.models import WebhookSubscription


def secret_ref_for(name: str) -> str:
    """The name under which the sender asks for a subscription's HMAC key."""
    return f"webhook:{name}"


DERIVED_REF_PREFIX = "webhook-key:"


def derived_secret_ref(salt: str) -> str:
    """The secret_ref of an API-made subscription: its key is derived from the salt (and the
    helpdesk secret) by the sender's resolver, so no key is stored anywhere."""
    return f"{DERIVED_REF_PREFIX}{salt}"


def sync_subscriptions(
    session: Session,
    hooks: Sequence[WebhookConfig],
    *,
    timeout_s: float = 10,
    max_attempts: int = 10,
) -> None:
    configured = {h.name: h for h in hooks}
    for row in session.exec(select(WebhookSubscription)):
        if row.origin == "config" and row.name not in configured:
            session.delete(row)
        elif row.origin != "config":  # API-made: only the delivery settings follow the config
            row.timeout_s, row.max_attempts = float(timeout_s), int(max_attempts)
            session.add(row)
    session.flush()
    for name, hook in configured.items():
        found = session.exec(
            select(WebhookSubscription).where(WebhookSubscription.name == name)
        ).first()
        row = (
            found
            if found is not None
            else WebhookSubscription(name=name, url=hook.url, origin="config")
        )
        row.url = hook.url
        row.events = " ".join(hook.events)
        row.signed = bool(hook.secret or hook.secret_file)
        row.timeout_s, row.max_attempts = float(timeout_s), int(max_attempts)
        session.add(row)
    session.flush()


@dataclass(frozen=True)
class Subscriber:
    id: int
    name: str
    url: str
    events: frozenset[str]  # empty: every event
    signed: bool
    timeout_s: float
    max_attempts: int
    secret_ref: str = ""  # what the sender resolves to the HMAC key ("" = unsigned)
    payload_format: str = ""  # a seed adapter's payload shape ("" = native)
    payload_options: str = "{}"  # that shape's vocabulary, JSON

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


_CACHE_KEY = "webhook_subscribers"
_ALL_SUBSCRIPTIONS = select(WebhookSubscription).order_by(col(WebhookSubscription.id))


def subscribers(session: Session, event: str) -> list[Subscriber]:
    """Subscriptions that want `event`. One small SELECT per transaction (cached on the session
    for the rest of it), so a write that emits several events pays for it once, and a helpdesk
    without webhooks pays one query that finds nothing."""
    transaction = session.get_transaction()
    cached = session.info.get(_CACHE_KEY)
    if cached is None or cached[0] is not transaction:
        rows = session.exec(_ALL_SUBSCRIPTIONS).all()
        found = [
            Subscriber(
                r.id or 0,
                r.name,
                r.url,
                frozenset(r.events.split()),
                r.signed,
                r.timeout_s,
                r.max_attempts,
                _secret_ref(r),
                r.payload_format,
                r.payload_options,
            )
            for r in rows
        ]
        cached = (transaction, found)
        session.info[_CACHE_KEY] = cached
    return [s for s in cached[1] if s.wants(event)]


def _secret_ref(row: WebhookSubscription) -> str:
    if row.secret_salt:
        return derived_secret_ref(row.secret_salt)
    return secret_ref_for(row.name) if row.signed else ""


def get_subscription(session: Session, subscription_id: int) -> WebhookSubscription | None:
    return session.get(WebhookSubscription, subscription_id)


def get_by_name(session: Session, name: str) -> WebhookSubscription | None:
    return session.exec(select(WebhookSubscription).where(WebhookSubscription.name == name)).first()


def list_subscriptions(session: Session) -> Sequence[WebhookSubscription]:
    return session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.id))).all()
