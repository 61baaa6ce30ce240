"""The words a seed API uses for our statuses and priorities (resources.md §6, docs/compat.md).

A map is the seed's word -> ours, from the `[compat.<seed>]` table of the config. Incoming words
match without regard to case; what we show for one of ours is the first seed word naming it, so
a site that maps two of their words to one of ours decides which one is shown by their order.
A map travels as JSON with a seed webhook subscription (its deliveries are built in the
transaction of the change, where no config is at hand).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from mailhelpdesk.domain.enums import Priority, TicketStatus
from mailhelpdesk.errors import InvalidInputError


class FieldError(InvalidInputError):
    """A seed word the map does not know: 422 naming the request's field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Vocabulary:
    statuses: Mapping[str, str] = field(default_factory=dict)
    priorities: Mapping[str, str] = field(default_factory=dict)
    on_hold_days: int = 7
    # seed fields kept in custom fields (tiHelpdesk `product`, `type`): seed name -> field name
    fields: Mapping[str, str] = field(default_factory=dict)

    def status_in(self, word: str, *, today: date, name: str = "status") -> tuple[str, date | None]:
        """Our status (and on-hold date) for the seed's `word`; 422 naming `name` if unknown."""
        ours = _lookup(self.statuses, word)
        if ours is None:
            raise FieldError(name, f"unknown status {word!r} (known: {', '.join(self.statuses)})")
        if ours == TicketStatus.on_hold:
            return ours, today + timedelta(days=max(1, self.on_hold_days))
        return ours, None

    def status_out(self, ours: str) -> str:
        return _first(self.statuses, ours) or ours

    def priority_in(self, word: str, *, name: str = "priority") -> str:
        ours = _lookup(self.priorities, word)
        if ours is None:
            raise FieldError(
                name, f"unknown priority {word!r} (known: {', '.join(self.priorities)})"
            )
        return ours

    def priority_out(self, value: int) -> str:
        try:
            ours = Priority(value).name
        except ValueError:
            return str(value)
        return _first(self.priorities, ours) or ours.capitalize()

    def to_json(self) -> str:
        return json.dumps(
            {
                "statuses": dict(self.statuses),
                "priorities": dict(self.priorities),
                "on_hold_days": self.on_hold_days,
                "fields": dict(self.fields),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data: Any = json.loads(text or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            statuses=dict(data.get("statuses") or {}),
            priorities=dict(data.get("priorities") or {}),
            on_hold_days=int(data.get("on_hold_days") or 7),
            fields=dict(data.get("fields") or {}),
        )


def _lookup(table: Mapping[str, str], word: str) -> str | None:
    wanted = word.strip().lower()
    for theirs, ours in table.items():
        if theirs.lower() == wanted:
            return ours
    return None


def _first(table: Mapping[str, str], ours: str) -> str | None:
    return next((theirs for theirs, mine in table.items() if mine == ours), None)
