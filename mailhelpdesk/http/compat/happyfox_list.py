"""The HappyFox ticket list (the document's topics 1, 2, 2.1 and 19): its query parameters and
search string translated onto the native list query (services/ticket_reads.py `query`).

`translate` is the one place that turns HappyFox filters into ours, so the list can be pointed
at another query layer by changing it alone. The keys the Tickiti criteria have no mode for
(`unresponded`, `breached`, `has_attachments`, `duedate`, the last-reply dates, custom fields)
become native list filters (store/ticket_query.TicketFilter, through services/list_terms where
the native list has the same filter). What has no filter at all (`group`: there are no contact
groups; the last-closed dates) is refused with a 400 naming the key (docs/compat.md lists
them), never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.http.compat.happyfox_vocab import Vocabulary, VocabularyError
from mailhelpdesk.services import contacts, directory
from mailhelpdesk.services.api_requests import FieldErrors
from mailhelpdesk.services.list_terms import (
    ListFilter,
    Terms,
    any_of,
    awaiting_reply,
    due_within,
    filter_for,
    last_reply_within,
)

DEFAULT_SIZE, MAX_SIZE = 10, 50
SORT_CAP = 500  # sorts the native query cannot do are done over at most this many matches
NATIVE_SORTS = ("", "ticketd", "created")  # newest number first: the native order
SORTS = (
    "categorya",
    "categoryd",
    "subjecta",
    "subjectd",
    "due",
    "statusd",
    "statusa",
    "prioritya",
    "priorityd",
    "updated",
    "updatea",
    "unresponded",
    "createa",
    "created",
    "assigneea",
    "assigneed",
    "last_modifieda",
    "last_modifiedd",
    "ticketa",
    "ticketd",
    "clienta",
    "clientd",
)
DATE_KEYS = {
    "created-on": ("created_from", "created_to", 0, 0),
    "created-on-or-before": (None, "created_to", 0, 0),
    "created-on-or-after": ("created_from", None, 0, 0),
    "created-before": (None, "created_to", 0, -1),
    "created-after": ("created_from", None, 1, 0),
    "last-modified-on-or-before": (None, "updated_to", 0, 0),
    "last-modified-on-or-after": ("updated_from", None, 0, 0),
    "last-modified-before": (None, "updated_to", 0, -1),
    "last-modified-after": ("updated_from", None, 1, 0),
}
# the last-reply keys: (staff or contact, the date's first instant is a lower bound, its last
# instant an upper bound, each shifted by whole days as DATE_KEYS does)
REPLY_KEYS = {
    f"last-{who}-replied-{how}": (who, low, high, low_shift, high_shift)
    for who in ("staff", "contact")
    for how, low, high, low_shift, high_shift in (
        ("on", True, True, 0, 0),
        ("on-or-before", False, True, 0, 0),
        ("on-or-after", True, False, 0, 0),
        ("before", False, True, 0, -1),
        ("after", True, False, 1, 0),
    )
}
BOOLEAN_KEYS = ("unresponded", "breached", "has_attachments")
DUE_WORDS = ("today", "yesterday", "tomorrow", "overdue", "next 7 days")
NOT_SERVED = ("group", "last-closed-on-or-after", "last-closed-on-or-before")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"'})
_ITEM = re.compile(
    r'\s*(?:"([^"]*)"|([\w-]+))\s*:\s*((?:"[^"]*"|[^\s",]+)(?:\s*,\s*(?:"[^"]*"|[^\s",]+))*)'
)
_VALUE = re.compile(r'"([^"]*)"|([^\s",]+)')


class ListQueryIn(BaseModel):
    """The list's documented query parameters (all text on the wire)."""

    model_config = ConfigDict(extra="ignore")
    minify_response: str | None = Field(default=None, max_length=10)
    show_updates: str | None = Field(default=None, max_length=10)
    status: str | None = Field(default=None, max_length=40)
    category: str | None = Field(default=None, max_length=40)
    q: str | None = Field(default=None, max_length=2000)
    sort: str | None = Field(default=None, max_length=40)
    size: int = Field(default=DEFAULT_SIZE, ge=1, le=MAX_SIZE)
    page: int = Field(default=1, ge=1, le=1_000_000)
    fields: str | None = Field(default=None, max_length=2000)


@dataclass
class Search:
    """A HappyFox list request in the native query's terms."""

    perspective: str = "All"
    criteria: list[tuple[str, list[str]]] = field(default_factory=list)
    sort: str = ""
    nothing: bool = False  # the filters cannot match any ticket
    # native list filters AND-ed with the criteria (what the Tickiti criteria have no mode for)
    native: list[ListFilter] = field(default_factory=list)


def split_q(q: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """`key:"v1","v2" "Field name":"value" words` → [(key, values)] and the bare words."""
    text = q.translate(_QUOTES).replace("+", " ").strip()
    if len(text) >= 2 and text == '""':
        return [], []
    items: list[tuple[str, list[str]]] = []
    words: list[str] = []
    pos = 0
    while pos < len(text):
        match = _ITEM.match(text, pos)
        if match is None:
            word = re.match(r'\s*("[^"]*"|\S+)', text[pos:])
            if word is None:
                break
            token = word.group(1).strip('"').strip()
            if token:
                words.append(token)
            pos += word.end()
            continue
        key = match.group(1) if match.group(1) is not None else match.group(2)
        values = [a or b for a, b in _VALUE.findall(match.group(3))]
        items.append((key, [v.strip() for v in values if v.strip()]))
        pos = match.end()
    return items, words


def _day(value: str) -> date:
    text = value.strip()
    try:
        return date.fromisoformat(text.replace("/", "-"))
    except ValueError:
        raise FieldErrors({"q": f"{text[:20]!r} is not a date as yyyy/mm/dd"}) from None


def translate(
    session: Session, vocab: Vocabulary, m: ListQueryIn, *, now: datetime | None = None
) -> Search:
    """The one translation of HappyFox's list filters into the native query's; `now` (the
    desk's clock) places `duedate:today` and its kin, in UTC."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    search = Search(sort=(m.sort or "").strip().lower())
    if search.sort and search.sort not in SORTS:
        raise FieldErrors({"sort": f"{search.sort[:40]!r} is not a sort option"})
    statuses: list[str] | None = None
    status = (m.status or "_all").strip()
    if status == "_pending":
        statuses = ["open", "on-hold"]
    elif status not in ("_all", ""):
        try:
            statuses = [vocab.status_by_id(status).status]
        except VocabularyError as exc:
            raise FieldErrors({"status": str(exc)}) from None
    if m.category not in (None, "", "_all"):
        name = directory.queues(session).get(_int(m.category or "", "category"))
        if name is None:
            raise FieldErrors({"category": f"no category has the id {str(m.category)[:20]}"})
        search.criteria.append(("queue", [name]))
    items, words = split_q(m.q or "")
    if words:
        search.criteria.append(("subject_content", words))
    for key, values in items:
        lowered = key.lower()
        if not values:
            raise FieldErrors({"q": f"{key[:60]!r} needs a value"})
        try:
            if lowered == "status":
                named = vocab.statuses_named(values)
                statuses = [s for s in named if statuses is None or s in statuses]
            elif lowered == "priority":
                search.criteria.append(("priority", vocab.priorities_named(values)))
            elif lowered == "tag":
                search.criteria.append(("hashtag", values))
            elif lowered == "id":
                search.criteria.append(
                    ("ticket_number", [str(vocab.ticket_ref(v)) for v in values])
                )
            elif lowered == "category":
                queues = directory.queues(session)
                search.criteria.append(
                    ("queue", [queues.get(_int(v, "category"), "-none-") for v in values])
                )
            elif lowered == "contact":
                search.criteria.append(("raised", _contact_emails(session, values)))
            elif lowered == "assignee":
                _assignee(session, search, values)
            elif lowered in DATE_KEYS:
                low, high, low_shift, high_shift = DATE_KEYS[lowered]
                day = _day(values[0] if values else "")
                if low:
                    search.criteria.append((low, [(day + timedelta(low_shift)).isoformat()]))
                if high:
                    search.criteria.append((high, [(day + timedelta(high_shift)).isoformat()]))
            elif lowered in BOOLEAN_KEYS:
                # HappyFox's `unresponded` is its ticket object's: the last public message is
                # the customer's (the native `unresponded` means "no agent answer yet")
                flag = filter_for(lowered, values[0], Terms())
                search.native.append(
                    awaiting_reply(bool(flag.unresponded)) if lowered == "unresponded" else flag
                )
            elif lowered == "duedate":
                search.native.append(any_of([_due(v, today) for v in values]))
            elif lowered in REPLY_KEYS:
                search.native.append(_replied(lowered, values[0]))
            elif lowered in NOT_SERVED:
                raise FieldErrors({"q": f"the {key} filter is not served (docs/compat.md)"})
            else:
                search.native.append(_custom_field(vocab, key, values))
        except VocabularyError as exc:
            raise FieldErrors({"q": str(exc)}) from None
        except ValueError as exc:
            raise FieldErrors({"q": f"{key[:60]}: {exc}"}) from None
    if statuses is not None:
        if not statuses:
            search.nothing = True
        search.criteria.append(("status", statuses))
    return search


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _end(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=UTC)


def _due(word: str, today: date) -> ListFilter:
    """`duedate:` today, yesterday, tomorrow, overdue (due before today), next 7 days (due
    from today to the end of the seventh day after it); days in UTC."""
    wanted = " ".join(word.lower().split())
    days = {"today": 0, "yesterday": -1, "tomorrow": 1}
    if wanted in days:
        day = today + timedelta(days[wanted])
        return due_within(_start(day), _end(day))
    if wanted == "overdue":
        return due_within(None, _start(today) - timedelta(microseconds=1))
    if wanted == "next 7 days":
        return due_within(_start(today), _end(today + timedelta(7)))
    raise ValueError(f"{word[:30]!r} is one of {', '.join(DUE_WORDS)}")


def _replied(key: str, value: str) -> ListFilter:
    """`last-staff-replied-on:"2019/01/25"` and its kin: the latest public message of an
    agent (staff) or of the customer (contact) within the date's bounds."""
    who, low, high, low_shift, high_shift = REPLY_KEYS[key]
    day = _day(value)
    start = _start(day + timedelta(low_shift)) if low else None
    end = _end(day + timedelta(high_shift)) if high else None
    return last_reply_within("agent" if who == "staff" else "customer", start, end)


def _custom_field(vocab: Vocabulary, key: str, values: list[str]) -> ListFilter:
    """`"Field name":"value"` (by the field's label or name, any case): the native
    `cf.<name>=<value>` filter; several values (a multiple choice's options) are alternatives;
    a date is the document's mm/dd/yyyy (or yyyy-mm-dd)."""
    definition = vocab.field_by_name(key)
    if definition is None:
        raise FieldErrors({"q": f"{key[:60]!r} is neither a search key nor a custom field"})
    terms = Terms(vocab.fields)
    filters = []
    for value in values:
        text = value
        if definition.type == "date":
            text = _us_date(value)
        filters.append(filter_for(f"cf.{definition.name}", text, terms))
    return any_of(filters)


def _us_date(value: str) -> str:
    """mm/dd/yyyy (the document's date field example) as yyyy-mm-dd; anything else as is."""
    parts = value.strip().split("/")
    if len(parts) == 3 and len(parts[2]) == 4 and all(p.isdigit() for p in parts):
        return f"{parts[2]}-{int(parts[0]):02d}-{int(parts[1]):02d}"
    return value


def _int(value: str, name: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise FieldErrors({name: f"{text[:20]!r} is not an id"})
    return int(text)


def _contact_emails(session: Session, values: list[str]) -> list[str]:
    """Each keyword matched against the contacts (name, email, phone): their addresses."""
    emails: list[str] = []
    for value in values:
        if "@" in value:
            emails.append(value.lower())
            continue
        found = contacts.list_contacts(session, q=value, email=None, page=1, per_page=100)
        emails.extend(c["email"] for c in found["contacts"])
    return emails or ["-nobody-"]


def _assignee(session: Session, search: Search, values: list[str]) -> None:
    agents = directory.agents(session)
    wanted: list[str] = []
    for value in values:
        if value == "none":
            search.perspective = "Unassigned"
            continue
        if value == "any":
            wanted.extend(a.email for a in agents)
            continue
        for a in agents:
            first, _, last = a.name.partition(" ")
            if value in (a.email, a.email.split("@")[0], first, last):
                wanted.append(a.email)
    if wanted or any(v != "none" for v in values):
        search.criteria.append(("assigned", wanted or ["-nobody-"]))


def sort_key(sort: str) -> tuple[Any, bool]:
    """A key over HappyFox ticket objects for a sort option, and whether it descends."""
    direction = sort.endswith("d") and sort not in ("updated", "created", "unresponded")
    pick = {
        "category": lambda t: (t["category"]["name"] or "").lower(),
        "subject": lambda t: t["subject"].lower(),
        "status": lambda t: t["status"]["order"],
        "priority": lambda t: t["priority"]["order"],
        "assignee": lambda t: (t["assigned_to"] or {}).get("email") or "",
        "last_modified": lambda t: t["last_modified"] or "",
        "ticket": lambda t: t["id"],
        "client": lambda t: t["user"]["id"] or 0,
    }
    if sort == "due":
        return (lambda t: (t["due_date"] is None, t["due_date"] or "")), False
    if sort in ("updated", "updatea"):
        return (lambda t: t["last_updated_at"] or ""), sort == "updated"
    if sort in ("created", "createa"):
        return (lambda t: (t["created_at"] or "", t["id"])), sort == "created"
    if sort == "unresponded":
        return (lambda t: (not t["unresponded"], -t["id"])), False
    return pick[sort[:-1]], direction
