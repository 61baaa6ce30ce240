"""HappyFox's vocabulary and ours (docs/compat.md): statuses and priorities by the configured
tables (`[compat.happyfox]`), categories as our queues (by their id), custom fields by their
position in `[[custom_fields]]` (1-based, choices likewise), display ids from the ticket number.

Every translation between the two lives here, so the routes and the response shapes agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailhelpdesk.config import (
    CustomFieldConfig,
    HappyFoxConfig,
    HappyFoxPriorityConfig,
    HappyFoxStatusConfig,
)
from mailhelpdesk.domain.enums import Priority
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import custom_fields

# our custom field types as HappyFox names them
FIELD_TYPES = {
    "text": "text",
    "number": "number",
    "date": "date",
    "choice": "choice",
    "multi_choice": "multiple_choice",
    "toggle": "checkbox",
}
BEHAVIOR = {"open": "pending", "on-hold": "pending", "closed": "completed"}
_DISPLAY = re.compile(r"#?([A-Za-z]{0,10})(\d{1,12})")


def timestamp(value: datetime | str | None) -> str | None:
    """HappyFox's "YYYY-MM-DD HH:MM:SS" (UTC) for an ISO time."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class VocabularyError(ValueError):
    """A HappyFox value that names nothing we have (the route says which field)."""


@dataclass(frozen=True)
class Vocabulary:
    config: HappyFoxConfig
    fields: tuple[CustomFieldConfig, ...]

    # -- statuses ---------------------------------------------------------------------------

    def _status_for(self, ours: str) -> HappyFoxStatusConfig:
        matching = [s for s in self.config.statuses if s.status == ours]
        return next((s for s in matching if s.default), matching[0])

    def status_object(self, ours: str) -> dict[str, Any]:
        found = self._status_for(ours)
        return {
            "name": found.name,
            "color": found.color,
            "order": self.config.statuses.index(found) + 1,
            "default": found.default,
            "behavior": BEHAVIOR[found.status],
            "id": found.id,
        }

    def status_id(self, ours: str | None) -> int | None:
        return None if ours is None else self._status_for(ours).id

    def status_by_id(self, value: Any) -> HappyFoxStatusConfig:
        for s in self.config.statuses:
            if str(s.id) == str(value).strip():
                return s
        raise VocabularyError(f"{str(value)[:40]!r} is not a status id")

    def statuses_named(self, names: Sequence[str]) -> list[str]:
        """Our statuses for HappyFox status names (any case)."""
        found: list[str] = []
        for name in names:
            matches = [s.status for s in self.config.statuses if s.name.lower() == name.lower()]
            if not matches:
                raise VocabularyError(f"{name[:40]!r} is not a status")
            found.extend(m for m in matches if m not in found)
        return found

    # -- priorities -------------------------------------------------------------------------

    def _priority_for(self, ours: int) -> HappyFoxPriorityConfig:
        name = Priority(ours).name if ours in Priority._value2member_map_ else "normal"
        matching = [p for p in self.config.priorities if p.priority == name]
        return next((p for p in matching if p.default), matching[0])

    def priority_object(self, ours: int) -> dict[str, Any]:
        found = self._priority_for(ours)
        return {
            "default": found.default,
            "id": found.id,
            "name": found.name,
            "order": self.config.priorities.index(found) + 1,
        }

    def priority_by_id(self, value: Any) -> HappyFoxPriorityConfig:
        for p in self.config.priorities:
            if str(p.id) == str(value).strip():
                return p
        raise VocabularyError(f"{str(value)[:40]!r} is not a priority id")

    def priority_named(self, name: str | None) -> HappyFoxPriorityConfig | None:
        """The priority for one of our names (Low, Normal …, as history records them)."""
        if not name:
            return None
        try:
            return self._priority_for(int(Priority.from_name(name)))
        except ValueError:
            return None

    def priorities_named(self, names: Sequence[str]) -> list[str]:
        found: list[str] = []
        for name in names:
            matches = [p.priority for p in self.config.priorities if p.name.lower() == name.lower()]
            if not matches:
                raise VocabularyError(f"{name[:40]!r} is not a priority")
            found.extend(m for m in matches if m not in found)
        return found

    # -- display ids ------------------------------------------------------------------------

    def display_id(self, number: int) -> str:
        return f"#{self.config.display_prefix}{number:08d}"

    def ticket_ref(self, text: str) -> int:
        """A ticket number from "42", "MH00000042" or "#MH00000042"."""
        match = _DISPLAY.fullmatch(text.strip())
        if match is None or match.group(1).upper() not in ("", self.config.display_prefix.upper()):
            raise VocabularyError(f"{text[:40]!r} is not a ticket id or display id")
        return int(match.group(2))

    # -- custom fields ----------------------------------------------------------------------

    def field_id(self, name: str) -> int:
        return next(i for i, f in enumerate(self.fields, start=1) if f.name == name)

    def field_by_id(self, value: Any) -> CustomFieldConfig:
        text = str(value).strip()
        if text.isascii() and text.isdigit() and 1 <= int(text) <= len(self.fields):
            return self.fields[int(text) - 1]
        raise VocabularyError("is not a ticket custom field id")

    def field_by_name(self, name: str) -> CustomFieldConfig | None:
        return next(
            (f for f in self.fields if name.lower() in (f.name.lower(), f.label.lower())), None
        )

    def field_value_in(self, field: CustomFieldConfig, raw: Any) -> Any:
        """A HappyFox value (choice ids for dropdowns) as services/custom_fields.py takes it;
        text (every value of a multipart/form-data body) is read as the CLI's text is."""
        if isinstance(raw, str) and field.type in ("number", "toggle"):
            try:
                return custom_fields.from_text(field, raw)
            except InvalidInputError as exc:
                raise VocabularyError(str(exc)) from None
        if raw is None or field.type not in ("choice", "multi_choice"):
            return raw
        if field.type == "multi_choice":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            return [self._choice(field, item) for item in items if str(item).strip()]
        return self._choice(field, raw)

    def _choice(self, field: CustomFieldConfig, raw: Any) -> str:
        text = str(raw).strip()
        if text.isascii() and text.isdigit() and 1 <= int(text) <= len(field.choices):
            return field.choices[int(text) - 1]
        raise VocabularyError(f"{text[:40]!r} is not a choice id of {field.name}")

    def choice_ids(self, field: CustomFieldConfig, value: Any) -> Any:
        """The value_id HappyFox shows: the choice's id (a list of them for multiple choice)."""
        if value is None or field.type not in ("choice", "multi_choice"):
            return None
        if field.type == "multi_choice":
            return [field.choices.index(v) + 1 for v in value if v in field.choices]
        return field.choices.index(value) + 1 if value in field.choices else None

    def field_view(self, field: CustomFieldConfig, value: Any) -> dict[str, Any]:
        return {
            "compulsory_on_complete": field.required_to_close,
            "name": field.label or field.name,
            "value": value,
            "value_id": self.choice_ids(field, value),
            "type": FIELD_TYPES.get(field.type, field.type),
            "id": self.field_id(field.name),
            "visible_to_staff_only": False,
        }

    def field_definition(
        self, field: CustomFieldConfig, category_ids: Sequence[int]
    ) -> dict[str, Any]:
        position = self.field_id(field.name)
        return {
            "name": field.label or field.name,
            "depends_on_choice": None,
            "required": False,
            "compulsory_on_completed": field.required_to_close,
            "choices": (
                [
                    {"text": choice, "id": i, "dependant_fields": []}
                    for i, choice in enumerate(field.choices, start=1)
                ]
                if field.type in ("choice", "multi_choice")
                else None
            ),
            "compulsory_on_move": False,
            "type": FIELD_TYPES.get(field.type, field.type),
            "id": position,
            "categories": [{"category": c, "order": position} for c in category_ids],
            "visible_to_staff_only": False,
        }
