"""One list filter, `name` = `value`, as the TicketFilter it means (resources.md §2).

The query string of `GET /api/v1/tickets`, the CLI's `ticket list` options and the `field:value`
terms of the `q` language (query_language.py) all come through `filter_for`, so `status:open`
in `q` and `?status=open` cannot drift apart. A value that cannot be read raises ValueError with
a message for the person who typed it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.domain.enums import Priority, TicketStatus
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import custom_fields
from mailhelpdesk.store.ticket_query import AnyOf, Expr, FieldMatch, TicketFilter

# the query-string filters of resources.md §2 (besides cf.<field> and q)
FILTERS = (
    "status",
    "priority",
    "queue",
    "assignee",
    "requester",
    "contact_id",
    "tag",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "due_after",
    "due_before",
    "unresponded",
    "breached",
    "has_attachments",
)
# the q language's names for ranges (`created:2026-11-01..2026-11-30`, `due:<2026-12-01`)
RANGES = ("created", "updated", "due")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_TINY = timedelta(microseconds=1)


# a filter tree of the list layer (store/ticket_query.py), for callers above the services
ListFilter = Expr


@dataclass(frozen=True)
class Terms:
    """What reading a filter needs beyond its text: the custom field definitions."""

    definitions: Sequence[CustomFieldConfig] = ()


def filter_for(name: str, value: str, terms: Terms) -> TicketFilter:
    """The filter of one `name=value` (query string) or `name:value` (q)."""
    name = name.strip().lower() if not name.startswith("cf.") else name.strip()
    value = value.strip()
    if name.startswith("cf."):
        return TicketFilter(fields=(_field(name[3:], value, terms),))
    if not value:
        raise ValueError("needs a value")
    if name == "status":
        statuses = _list(value)
        known = {s.value for s in TicketStatus}
        if any(s.lower() not in known for s in statuses):
            raise ValueError("is a comma list of open, on-hold, closed")
        return TicketFilter(statuses=tuple(s.lower() for s in statuses))
    if name == "priority":
        return TicketFilter(priorities=tuple(int(Priority.from_name(p)) for p in _list(value)))
    if name == "queue":
        return TicketFilter(queues=tuple(_list(value)))
    if name == "assignee":
        if value.lower() == "none":
            return TicketFilter(unassigned=True)
        if value.lower() == "any":
            return TicketFilter(assigned_any=True)
        return TicketFilter(assigned=(_email(value),))
    if name == "requester":
        return TicketFilter(raised=(_email(value),))
    if name == "contact_id":
        return TicketFilter(contact_ids=(_id(value),))
    if name == "tag":
        return TicketFilter(tags_all=(value.lstrip("#"),))
    if name == "unresponded":
        return TicketFilter(unresponded=_bool(value))
    if name == "breached":
        return TicketFilter(breached=_bool(value))
    if name == "has_attachments":
        return TicketFilter(has_attachments=_bool(value))
    if name.endswith(("_after", "_before")):
        what, _, side = name.partition("_")
        if what in RANGES:
            moment = _moment(value)
            if side == "after":  # at or after the moment
                return _bounds(what, moment, None)
            return _bounds(what, None, moment - _TINY)  # strictly before
    if name in RANGES:
        return _range(name, value)
    raise ValueError(f"unknown filter '{name[:40]}'")


def _bounds(what: str, low: datetime | None, high: datetime | None) -> TicketFilter:
    if what == "created":
        return TicketFilter(created_from=low, created_to=high)
    if what == "updated":
        return TicketFilter(updated_from=low, updated_to=high)
    return TicketFilter(due_from=low, due_to=high)


def _range(what: str, value: str) -> TicketFilter:
    """`D` (that day), `A..B` (from the start of A to the end of B; either side may be empty),
    `<D`, `<=D`, `>D`, `>=D`; a side is a date or an ISO 8601 time in UTC."""
    if ".." in value:
        low, _, high = value.partition("..")
        if not low and not high:
            raise ValueError("a range needs at least one side: A..B, A.. or ..B")
        return _bounds(
            what, _moment(low) if low else None, _moment(high, end=True) if high else None
        )
    for op in ("<=", ">=", "<", ">"):
        if value.startswith(op):
            rest = value[len(op) :]
            if op == "<":
                return _bounds(what, None, _moment(rest) - _TINY)
            if op == "<=":
                return _bounds(what, None, _moment(rest, end=True))
            if op == ">":
                return _bounds(what, _moment(rest, end=True) + _TINY, None)
            return _bounds(what, _moment(rest), None)
    return _bounds(what, _moment(value), _moment(value, end=True))


def _moment(value: str, *, end: bool = False) -> datetime:
    """A date (its first instant, or its last with `end`) or an ISO 8601 time (UTC if naive)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(text)  # a trailing Z is read as UTC (Python 3.11)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if not 1900 <= moment.year <= 9000:
            raise ValueError
        return moment
    except (ValueError, OverflowError):
        raise ValueError(f"'{text[:40]}' is not a YYYY-MM-DD date or an ISO 8601 time") from None


def _list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError("needs a value")
    return items


def _bool(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError("is true or false")


def _id(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise ValueError("is a positive number")
    number = int(value)
    if not 1 <= number <= MAX_INTEGER:
        raise ValueError("is a positive number")
    return number


def _email(value: str) -> str:
    if "@" not in value or len(value) > 320 or any(c.isspace() for c in value):
        raise ValueError(f"'{value[:40]}' is not an email address")
    return value.lower()


def _field(name: str, value: str, terms: Terms) -> FieldMatch:
    """`cf.<name>=<value>`: the value read as the definition reads text (a number, a choice
    in any case, a toggle's yes/no…); for a multi_choice field, tickets holding that choice."""
    try:
        definition = custom_fields.find(terms.definitions, name)
    except InvalidInputError:
        raise ValueError(f"unknown custom field '{name[:40]}'") from None
    try:
        if definition.type == "multi_choice":
            (choice,) = custom_fields.from_text(definition, value)
            return FieldMatch(definition.name, (_json(choice),), element=True)
        typed = custom_fields.from_text(definition, value)
    except (InvalidInputError, ValueError) as exc:
        raise ValueError(f"{exc}") from None
    if typed is None:
        raise ValueError("needs a value")
    candidates = {_json(typed)}
    if isinstance(typed, float) and typed.is_integer():
        candidates.add(_json(int(typed)))
    if isinstance(typed, int) and not isinstance(typed, bool):
        candidates.add(_json(float(typed)))
    return FieldMatch(definition.name, tuple(sorted(candidates)))


def _json(value: object) -> str:
    """A value as services/custom_fields stores it (store/field_values.put)."""
    return json.dumps(value, ensure_ascii=False)


# -- filters other front ends name in their own terms (the HappyFox list) ---------------------


def any_of(filters: Sequence[ListFilter]) -> ListFilter:
    """Tickets matching any of the filters."""
    return filters[0] if len(filters) == 1 else AnyOf(tuple(filters))


def due_within(low: datetime | None, high: datetime | None) -> ListFilter:
    """Due at or after `low` and at or before `high` (either may be open)."""
    return TicketFilter(due_from=low, due_to=high)


def awaiting_reply(flag: bool) -> ListFilter:
    """The last public message is the customer's (True) or an agent's / none (False)."""
    return TicketFilter(awaiting_reply=flag)


def last_reply_within(who: str, low: datetime | None, high: datetime | None) -> ListFilter:
    """The latest public message of an agent (`who` = "agent") or of the customer
    ("customer") is within the bounds (inclusive; either may be open)."""
    if who == "agent":
        return TicketFilter(staff_replied_from=low, staff_replied_to=high)
    return TicketFilter(customer_replied_from=low, customer_replied_to=high)
