"""Webhook subscriptions by API (resources.md §3): `GET/POST/DELETE /api/v1/webhooks`, ability
`admin`. The signing key is in the create answer only (services/webhook_subscriptions.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.endpoint import Endpoint, Runtime
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import webhook_subscriptions
from mailhelpdesk.services.api_tokens import ADMIN

PATH = "/api/v1/webhooks"


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(default_factory=list, max_length=20)  # empty: every event
    name: str | None = Field(default=None, min_length=1, max_length=200)


class NoBodyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")


def check_create(m: WebhookIn, _params: dict[str, Any]) -> WebhookIn:
    return m


def check_delete(_m: NoBodyIn, params: dict[str, Any]) -> int:
    raw = params.get("id")
    if not isinstance(raw, int) or not 1 <= raw <= MAX_INTEGER:
        raise ApiError(404, "webhook_not_found", f"Webhook subscription {str(raw)[:20]} not found.")
    return raw


def list_route(session: Session, _params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/webhooks: every subscription, config and API-made, never a key."""
    return webhook_subscriptions.list_all(session)


def endpoints(rt: Runtime) -> list[Endpoint]:
    s = rt.settings

    def create(session: Session, m: WebhookIn) -> dict[str, Any]:
        return webhook_subscriptions.create(
            session,
            url=m.url,
            events=m.events,
            name=m.name,
            helpdesk_secret=s.notify.secret,
            now=rt.clock.now(),
            timeout_s=s.webhook_timeout_s,
            max_attempts=s.webhook_max_attempts,
        )

    def delete(session: Session, subscription_id: int) -> dict[str, Any]:
        return webhook_subscriptions.delete(session, subscription_id=subscription_id)

    return [
        Endpoint(
            PATH,
            "v1_webhooks_create",
            ADMIN,
            "optional",
            WebhookIn,
            check_create,
            create,
            "Subscribe a URL to webhook events; the answer holds the signing key, shown once",
        ),
        Endpoint(
            PATH + "/{id:int}",
            "v1_webhooks_delete",
            ADMIN,
            "optional",
            NoBodyIn,
            check_delete,
            delete,
            "Remove a webhook subscription made by API",
            method="DELETE",
        ),
    ]
