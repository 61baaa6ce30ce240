"""Custom fields (resources.md §3): values per ticket, checked against their `[[custom_fields]]`
definition on every write, whichever channel writes them.

Values arrive typed (JSON from the API) or as text (the CLI's `--field NAME=VALUE`, the mail
command `#field <name> <value>`); `from_text` turns text into the typed value, `check_value`
checks and normalises either. What is stored per type:

    text          a string (surrounding space removed); an empty one clears the field
    number        an integer or a finite decimal (never true/false)
    date          "YYYY-MM-DD"
    choice        one of the choices (matched without regard to case, stored as defined)
    multi_choice  a list of choices, without repeats (text: comma separated); empty clears
    toggle        true or false (text: true/false, yes/no, on/off, 1/0)

None clears a field. Every change is one `custom_field` event `{name, from, to}`. A field with
`required_to_close` must be set before the ticket can be closed: `ticket_changes.set_status`
asks `closing_errors`, so the API, the CLI, mail and the scheduler are all held to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlmodel import Session

from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import events
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import field_values as store

MAX_TEXT_CHARS = 10_000
MAX_NUMBER = 2**53  # larger numbers do not survive a JSON round trip in every client
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
REQUIRED_TO_CLOSE = "is required to close the ticket"


class CustomFieldErrors(InvalidInputError):
    """Custom field values that cannot be written, by `custom_fields.<name>` (422 naming each)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.fields = {k: [v] for k, v in errors.items()}


def error_key(name: str) -> str:
    return f"custom_fields.{name[:64]}"


def definition_view(field: CustomFieldConfig) -> dict[str, Any]:
    return {
        "name": field.name,
        "label": field.label or field.name,
        "type": field.type,
        "choices": list(field.choices),
        "required_to_close": field.required_to_close,
    }


def listing(definitions: Sequence[CustomFieldConfig]) -> dict[str, Any]:
    """GET /api/v1/custom_fields: every definition, in the order of the config."""
    return {"custom_fields": [definition_view(d) for d in definitions]}


def find(definitions: Sequence[CustomFieldConfig], name: str) -> CustomFieldConfig:
    for field in definitions:
        if field.name == name:
            return field
    known = ", ".join(d.name for d in definitions) or "none are defined"
    raise InvalidInputError(f"is not a custom field (known: {known})")


def check_value(field: CustomFieldConfig, value: Any) -> Any:
    """The value as stored (None: the field is cleared), or InvalidInputError saying why not."""
    if value is None:
        return None
    kind = field.type
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidInputError("expected text")
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"is at most {MAX_TEXT_CHARS} characters")
        return value.strip() or None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError("expected a number")
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise InvalidInputError(f"expected a finite number of at most {MAX_NUMBER}")
        return value
    if kind == "date":
        if not isinstance(value, str):
            raise InvalidInputError("expected a date (YYYY-MM-DD)")
        try:
            if len(value) != 10:
                raise ValueError(value)
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise InvalidInputError("expected a date (YYYY-MM-DD)") from None
    if kind == "choice":
        if not isinstance(value, str):
            raise InvalidInputError(f"expected one of: {', '.join(field.choices)}")
        return _choice(field, value)
    if kind == "multi_choice":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInputError(f"expected a list of: {', '.join(field.choices)}")
        chosen = list(dict.fromkeys(_choice(field, v) for v in value))
        return chosen or None
    if kind == "toggle":
        if not isinstance(value, bool):
            raise InvalidInputError("expected true or false")
        return value
    raise InvalidInputError(f"has an unknown type {kind!r}")  # pragma: no cover - config checks


def _choice(field: CustomFieldConfig, value: str) -> str:
    for choice in field.choices:
        if choice.lower() == value.strip().lower():
            return choice
    raise InvalidInputError(f"{value[:100]!r} is not one of: {', '.join(field.choices)}")


def from_text(field: CustomFieldConfig, text: str) -> Any:
    """The typed value a person wrote as text (CLI, mail); empty text clears the field."""
    raw = text.strip()
    if not raw:
        return None
    if field.type == "number":
        try:
            number: int | float = int(raw)
        except ValueError:
            try:
                number = float(raw)
            except ValueError:
                raise InvalidInputError("expected a number") from None
        return check_value(field, number)
    if field.type == "multi_choice":
        return check_value(field, [part for part in raw.split(",") if part.strip()])
    if field.type == "toggle":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise InvalidInputError("expected true or false (yes/no, on/off, 1/0)")
    return check_value(field, raw)


def check_values(
    definitions: Sequence[CustomFieldConfig], values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values as they would be stored, and what is wrong, by `custom_fields.<name>`."""
    checked: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in values.items():
        try:
            checked[name] = check_value(find(definitions, name), value)
        except InvalidInputError as exc:
            errors[error_key(name)] = str(exc)
    return checked, errors


def values_of(session: Session, ticket: Ticket) -> dict[str, Any]:
    return store.values_of(session, ticket.id or 0)


def closing_errors(
    session: Session,
    ticket: Ticket,
    definitions: Sequence[CustomFieldConfig],
    pending: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The `required_to_close` fields that would still be unset, with `pending` (checked values
    about to be written with the close) applied; empty when the ticket may be closed."""
    required = [d.name for d in definitions if d.required_to_close]
    if not required:
        return {}
    current = {**values_of(session, ticket), **dict(pending or {})}
    return {error_key(name): REQUIRED_TO_CLOSE for name in required if current.get(name) is None}


def set_values(
    session: Session, ticket: Ticket, values: Mapping[str, Any], *, change: ChangeContext
) -> list[str]:
    """Write `values` (all checked first: one bad value and nothing is written); one
    `custom_field` event per field that changed; returns their names."""
    checked, errors = check_values(change.notices.custom_fields, values)
    if errors:
        raise CustomFieldErrors(errors)
    current = values_of(session, ticket)
    now = change.clock.now()
    changed: list[str] = []
    for name, value in checked.items():
        before = current.get(name)
        if before == value and type(before) is type(value):
            continue
        store.put(session, ticket_id=ticket.id or 0, name=name, value=value, now=now)
        changed.append(name)
        ticket.updated_at = now
        session.add(ticket)
        session.flush()
        events.record(
            session,
            ticket,
            EventType.custom_field,
            {"name": name, "from": before, "to": value},
            change=change,
        )
    return changed


def from_assignments(
    definitions: Sequence[CustomFieldConfig], pairs: Sequence[str]
) -> dict[str, Any]:
    """`NAME=VALUE` pairs as people write them (CLI `--field`), typed; an empty VALUE clears.
    CustomFieldErrors names every pair that is wrong."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        try:
            if not sep or not name:
                raise InvalidInputError(f"expected NAME=VALUE, not {pair[:100]!r}")
            values[name] = from_text(find(definitions, name), text)
        except InvalidInputError as exc:
            errors[error_key(name or pair)] = str(exc)
    if errors:
        raise CustomFieldErrors(errors)
    return values
