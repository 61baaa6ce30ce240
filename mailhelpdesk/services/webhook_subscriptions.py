"""Webhook subscriptions made by API (resources.md §3: `GET/POST/DELETE /api/v1/webhooks`),
beside the `[[webhooks]]` of the config, and receiving the same events the same way
(services/webhooks.py `emit` reads both from one table).

Keys. An API-made subscription is always signed. Its HMAC key is never stored: the row keeps a
random salt, and the key is HMAC-SHA256(helpdesk secret, "webhook-subscription:" + salt),
returned once by the create call and recomputed by the HTTP sender's resolver when it signs
(app.py `delivery_secret`, from the row's secret_ref "webhook-key:<salt>"). So a listing never
shows it, a copy of the database alone does not reveal it when the helpdesk secret is configured
(`[helpdesk] secret` / `secret_file`), and it changes when that secret changes (recreate the
subscription to learn the new key). Config subscriptions are listed too, read-only: they are
changed in the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.config import WEBHOOK_EVENTS, ConfigError, check_http_url
from mailhelpdesk.domain.models import WebhookSubscription, as_utc
from mailhelpdesk.errors import ConflictError, NotFoundError
from mailhelpdesk.services.api_requests import FieldError
from mailhelpdesk.store import webhooks as store

API_ORIGIN = "api"
KEY_PREFIX = "whsec_"


class SubscriptionNotFoundError(NotFoundError):
    """No webhook subscription with that id."""


def derive_key(helpdesk_secret: bytes, salt: str) -> str:
    """The signing key of an API-made subscription (see the module doc)."""
    digest = hmac.new(
        helpdesk_secret, f"webhook-subscription:{salt}".encode(), hashlib.sha256
    ).digest()
    return KEY_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def resolve(helpdesk_secret: bytes, secret_ref: str) -> bytes | None:
    """The key a delivery row's secret_ref names when it is a derived one, else None."""
    if not secret_ref.startswith(store.DERIVED_REF_PREFIX):
        return None
    salt = secret_ref.removeprefix(store.DERIVED_REF_PREFIX)
    return derive_key(helpdesk_secret, salt).encode("ascii") if salt else None


def view(row: WebhookSubscription) -> dict[str, Any]:
    """A subscription as the API shows it: never its key."""
    created = as_utc(row.created_at)
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "events": row.events.split(),
        "origin": row.origin,
        "signed": row.signed,
        "created_at": created.isoformat() if created else None,
    }


def list_all(session: Session) -> dict[str, Any]:
    return {"webhooks": [view(r) for r in store.list_subscriptions(session)]}


def create(
    session: Session,
    *,
    url: str,
    events: Sequence[str],
    name: str | None,
    helpdesk_secret: bytes,
    now: datetime,
    timeout_s: float,
    max_attempts: int,
    payload_format: str = "",
    payload_options: str = "{}",
) -> dict[str, Any]:
    """A new signed subscription; the answer holds its key, the only time it is shown.
    `payload_format` names a seed adapter's body shape (services/hook_formats.py)."""
    try:
        check_http_url(url, "url")
    except ConfigError as exc:
        raise FieldError("url", str(exc).removeprefix("url: ")) from None
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown:
        raise FieldError(
            "events", f"unknown event {', '.join(unknown)} (known: {', '.join(WEBHOOK_EVENTS)})"
        )
    salt = secrets.token_hex(16)
    name = name or f"api-{salt[:12]}"
    if store.get_by_name(session, name) is not None:
        raise ConflictError(f"a webhook subscription named {name!r} already exists")
    row = WebhookSubscription(
        name=name,
        url=url,
        events=" ".join(dict.fromkeys(events)),
        signed=True,
        timeout_s=float(timeout_s),
        max_attempts=int(max_attempts),
        origin=API_ORIGIN,
        secret_salt=salt,
        created_at=now,
        payload_format=payload_format,
        payload_options=payload_options,
    )
    session.add(row)
    session.flush()
    return {**view(row), "secret": derive_key(helpdesk_secret, salt)}


def delete(session: Session, *, subscription_id: int) -> dict[str, Any]:
    """Remove an API-made subscription; deliveries already queued for it still go out (signed:
    their key is derived from the salt they carry). A config subscription is changed in the
    file, never here (409)."""
    row = store.get_subscription(session, subscription_id)
    if row is None:
        raise SubscriptionNotFoundError(f"Webhook subscription {subscription_id} not found.")
    if row.origin != API_ORIGIN:
        raise ConflictError(
            f"Webhook subscription {subscription_id} comes from the config file; "
            "remove it there (a [[webhooks]] entry)."
        )
    shown = view(row)
    session.delete(row)
    session.flush()
    return {"deleted": shown}
