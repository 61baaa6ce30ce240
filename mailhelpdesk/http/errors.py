"""The one table from errors to HTTP answers, and the `{ok:false, error, message}` envelope.

Every error response of the API (api-contract.md §1.1, §1.3) is built here: `ApiError` for what
the HTTP layer decides itself, and `from_exception` for what the services raise.
"""

from __future__ import annotations

import json
from typing import Any

from mailhelpdesk.errors import (
    AddressTakenError,
    AttachmentBlockedError,
    AttachmentNotFoundError,
    AttachmentReviewRequiredError,
    AttachmentTooLargeError,
    ConflictError,
    ContactNotFoundError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from mailhelpdesk.mail.render import NoticeRenderError
from mailhelpdesk.services.interventions import InterventionNotOpen, InterventionUidExists
from mailhelpdesk.services.webhook_subscriptions import SubscriptionNotFoundError

JSON_TYPE = "application/json; charset=utf-8"


class ApiError(Exception):
    """An error answer: status, stable code, one human sentence, optional field errors."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers, self.data = errors, headers or {}, data

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        if self.data is not None:
            body["data"] = self.data
        return body


def validation_failed(errors: dict[str, list[str]], message: str | None = None) -> ApiError:
    first = next(iter(errors.items()), ("request", ["is invalid"]))
    return ApiError(
        422, "validation_failed", message or f"The {first[0]} field {first[1][0]}.", errors=errors
    )


# the mapping table: service error -> (status, code); the first matching class wins
_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (AttachmentNotFoundError, 404, "attachment_not_found"),
    (AttachmentReviewRequiredError, 422, "attachment_review_required"),
    (AttachmentBlockedError, 403, "attachment_blocked"),
    (AttachmentTooLargeError, 413, "attachment_too_large"),
    (ContactNotFoundError, 404, "contact_not_found"),
    (SubscriptionNotFoundError, 404, "webhook_not_found"),
    (NotFoundError, 404, "ticket_not_found"),
    (NoticeRenderError, 422, "validation_failed"),
    (InvalidInputError, 422, "validation_failed"),
    (
        InterventionUidExists,
        409,
        "intervention_uid_exists",
    ),  # data.ticket_number: the existing ticket
    (InterventionNotOpen, 409, "intervention_not_open"),  # data.state: submitted | completed
    (AddressTakenError, 409, "email_taken"),  # errors names the field, data.contact_id the owner
    (ConflictError, 409, "conflict"),
    (ForbiddenError, 403, "forbidden"),
)


def from_exception(exc: BaseException) -> ApiError:
    """The answer for an exception raised below the HTTP layer (unknown ones are 500)."""
    if isinstance(exc, ApiError):
        return exc
    for cls, status, code in _TABLE:
        if isinstance(exc, cls):
            field = getattr(exc, "field", None)
            message = _one_line(str(exc))
            named = code in ("validation_failed", "email_taken")
            errors = {field: [message]} if field and named else None
            fields = getattr(exc, "fields", None)
            if code == "validation_failed" and isinstance(fields, dict):
                errors = fields
            if code == "validation_failed" and errors is None:
                errors = {"request": [message]}
            return ApiError(status, code, message, errors=errors, data=getattr(exc, "data", None))
    return ApiError(
        500,
        "internal_error",
        "An unexpected error occurred; it is safe to retry with the same key.",
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def dumps(body: dict[str, Any]) -> bytes:
    """The exact bytes of a JSON answer (stored as-is for idempotent replays)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def ok(data: Any) -> bytes:
    return dumps({"ok": True, "data": data})
