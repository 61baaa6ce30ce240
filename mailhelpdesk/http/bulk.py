"""POST /api/v1/tickets/bulk (resources.md §2): up to 100 create bodies in one call.

Each item is checked and created on its own, as `POST /api/v1/tickets` would (same model, same
check, same handler, so the same events, notices and webhooks): an item that is invalid or that
the service refuses becomes `{ok: false, error, message[, errors]}` in its place, and its work is
undone by its own savepoint, while the other items stand. One Idempotency-Key covers the whole
call: a retry with it replays the stored results, creating nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from mailhelpdesk.http import tickiti
from mailhelpdesk.http.endpoint import TOKEN_PARAM, Acting, Endpoint, pydantic_errors
from mailhelpdesk.http.errors import ApiError, from_exception, validation_failed
from mailhelpdesk.services.api_tokens import AuthenticatedToken

PATH = "/api/v1/tickets/bulk"
MAX_ITEMS = 100

Item = tickiti.CreateArgs | ApiError


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tickets: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS)


def check_bulk(m: BulkIn, params: dict[str, Any]) -> Acting[list[Item]]:
    """Every item checked now; an invalid one is kept as its error, never raised."""
    items: list[Item] = []
    for body in m.tickets:
        try:
            model = tickiti.CreateTicketIn.model_validate(body)
            items.append(tickiti.check_create(model, params))
        except ValidationError as exc:
            items.append(validation_failed(pydantic_errors(exc)))
        except ApiError as exc:
            items.append(exc)
    token = params.get(TOKEN_PARAM)
    return Acting(items, token if isinstance(token, AuthenticatedToken) else None)


def endpoint(create: Callable[[Session, Acting[tickiti.CreateArgs]], Any]) -> Endpoint:
    """The bulk route around the single create handler `create`."""

    def bulk(session: Session, acting: Acting[list[Item]]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for item in acting.args:
            if isinstance(item, ApiError):
                results.append(item.body())
                continue
            try:
                with session.begin_nested():
                    data = create(session, Acting(item, acting.token))
            except Exception as exc:  # mapped like a single create's; a 5xx fails the call
                error = from_exception(exc)
                if error.status >= 500:
                    raise
                results.append(error.body())
            else:
                results.append({"ok": True, "data": data})
        return {"results": results}

    return Endpoint(
        PATH,
        "v1_tickets_bulk",
        "tickets:write",
        "optional",
        BulkIn,
        check_bulk,
        bulk,
        "Create up to 100 tickets; a result per item, each independent of the others",
    )
