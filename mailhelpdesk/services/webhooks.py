"""Webhook events: one HTTP delivery per subscriber, queued in the transaction of the change.

The ticket services call `emit` as they change things, so mail, the HTTP API and the CLI raise
the same events: `ticket.created`, `response.created`, `ticket.status_changed`,
`ticket.assigned`. Nothing is sent from here (services never talk to the network): rows go to
the HTTP outbox and transports/http_sender.py POSTs them, signed, retried, at least once.
Receivers dedupe on the `Idempotency-Key: webhook:<event_id>` header every retry repeats.

Cheap when nobody subscribed: one small SELECT per transaction (store/webhooks.subscribers),
and the payload (the ticket header costs a few queries) is built only when someone wants it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.models import Response, Ticket, as_utc
from mailhelpdesk.services import hook_formats
from mailhelpdesk.services.views import ticket_headers
from mailhelpdesk.store import http_outbox
from mailhelpdesk.store import webhooks as store

KIND = "webhook"

Payload = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def emit(
    session: Session,
    event: str,
    payload: Payload,
    *,
    ticket_id: int | None,
    now: datetime,
    source: hook_formats.HookSource | None = None,
) -> str | None:
    """Queue `event` for every subscriber that wants it; returns the event id (None: nobody
    wanted it). `payload` (or what the callable returns) is merged under the envelope
    {"event", "event_id", "occurred_at"}. A subscriber a seed adapter made gets its seed's
    body instead, built from `source` (services/hook_formats.py), or nothing when its seed
    has no trigger for the event."""
    wanted = store.subscribers(session, event)
    if not wanted:
        return None
    event_id = str(uuid.uuid4())
    native: bytes | None = None
    for sub in wanted:
        if sub.payload_format:
            shaped = hook_formats.payload(
                session, sub.payload_format, sub.payload_options, event, source
            )
            if shaped is None:
                continue
            body = _encode(shaped)
        else:
            if native is None:
                native = _encode(
                    {
                        "event": event,
                        "event_id": event_id,
                        "occurred_at": now.isoformat(),
                        **(payload() if callable(payload) else payload),
                    }
                )
            body = native
        http_outbox.enqueue(
            session,
            kind=KIND,
            ref=f"webhook:{sub.id}",
            ticket_id=ticket_id,
            url=sub.url,
            body=body,
            headers={"Idempotency-Key": f"webhook:{event_id}"},
            secret_ref=sub.secret_ref,
            timeout_s=sub.timeout_s,
            max_attempts=sub.max_attempts,
            now=now,
        )
    return event_id


def _encode(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def about(
    session: Session, ticket: Ticket, response: Response | None = None, **extra: Any
) -> Callable[[], dict[str, Any]]:
    """A lazy payload: the ticket header (as the API shows it), the response when there is one,
    and `extra` (e.g. the previous status)."""

    def build() -> dict[str, Any]:
        (header,) = ticket_headers(session, [ticket])
        data: dict[str, Any] = {"ticket": header, **extra}
        if response is not None:
            data["response"] = response_view(response)
        return data

    return build


def response_view(response: Response) -> dict[str, Any]:
    created = as_utc(response.created_at)
    return {
        "id": str(response.id),
        "kind": response.kind,
        "is_internal": response.is_internal,
        "staff_response": response.staff_response,
        "is_email_sourced": response.is_email_sourced,
        "created_by_email": response.created_by_email,
        "created_by_name": response.created_by_name,
        "created_at": created.isoformat() if created else None,
        "subject": response.subject,
        "visible_text": response.visible_text,
    }
