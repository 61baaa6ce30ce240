"""The read side of the Tickiti v1 ticket family (api-contract.md §4.6, §5): perspectives and
criteria, one ticket, its responses, responses across tickets (keyset-paged) and one attachment.

Nothing here writes. The HTTP layer has checked types and shapes; what needs the store or the
token is checked here and raised as FieldError (422), NotFoundError (404) or an
AttachmentRefusedError (the policy of mail/attachment_policy.py).

Criteria (§4.6): criteria of the same mode are OR-ed, criteria of different modes AND-ed. In the
text modes (`subject`, `content`, `subject_content`) one criterion is a search phrase: its tokens
are split into words and every word must appear (AND), as a case-insensitive substring; in
`subject_content` each word may be in the subject or in any response. In every other mode a
criterion's tokens are alternatives (OR). `watchlist` is refused with 422: mailhelpdesk has no
watchlists, and matching nothing would pass for "no tickets on it".
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import Priority
from mailhelpdesk.domain.models import MAX_INTEGER, as_utc
from mailhelpdesk.errors import (
    AttachmentBlockedError,
    AttachmentNotFoundError,
    AttachmentReviewRequiredError,
    AttachmentTooLargeError,
    NotFoundError,
)
from mailhelpdesk.mail import attachment_policy as policy
from mailhelpdesk.services import ticket_changes
from mailhelpdesk.services.api_requests import FieldError, FieldErrors
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.ticket_changes import TicketUpdate
from mailhelpdesk.services.views import response_object, ticket_headers, ticket_object
from mailhelpdesk.store import response_query, ticket_query
from mailhelpdesk.store import tickets as store

PERSPECTIVES = {
    1: "All",
    2: "Open",
    3: "On hold",
    4: "Closed",
    5: "Unassigned",
    6: "For my attention",
}
CRITERIA_MODES = (
    "subject",
    "content",
    "subject_content",
    "assigned",
    "participant",
    "raised",
    "priority",
    "queue",
    "status",
    "watchlist",
    "hashtag",
    "ticket_number",
    "created_from",
    "created_to",
    "updated_from",
    "updated_to",
)
RESPONSE_FIELDS = ("html", "plain_text", "attachments")
DEFAULT_LIMIT, MAX_LIMIT = 200, 1000
_STATUSES = ("open", "on-hold", "closed")
# For my attention: what the owner has to act on, i.e. open tickets assigned to them
_PERSPECTIVE_STATUSES = {
    "Open": ["open"],
    "On hold": ["on-hold"],
    "Closed": ["closed"],
    "For my attention": ["open"],
}


def agents(session: Session) -> list[tuple[str, str]]:
    """Every agent as (email, name): who a ticket can be assigned to."""
    return [(a.email, a.name) for a in store.list_agents(session)]


def tag_names(session: Session) -> list[str]:
    """Every tag in use (Teamswork's `/tags`)."""
    return store.all_tag_names(session)


def show(session: Session, *, ticket_number: int, public_url: str = "") -> dict[str, Any]:
    ticket = store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    return ticket_object(session, ticket, public_url=public_url)


def update(
    session: Session, *, ticket_number: int, changes: TicketUpdate, change: ChangeContext
) -> dict[str, Any]:
    """PATCH /api/v1/tickets/{number}: the changes, all or none (422 naming the fields), then
    the ticket object as it is now."""
    ticket = store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    errors = ticket_changes.check_update(
        session, ticket, changes, definitions=change.notices.custom_fields
    )
    if errors:
        raise FieldErrors(errors)
    ticket_changes.update(session, ticket, changes, change=change)
    return ticket_object(session, ticket, public_url=change.notices.public_url)


def responses(session: Session, *, ticket_number: int) -> dict[str, Any]:
    shown = show(session, ticket_number=ticket_number)
    return {"ticket_number": ticket_number, "responses": shown["responses"]}


def query(
    session: Session,
    *,
    perspective: str,
    criteria: Sequence[tuple[str, Sequence[str]]],
    page: int,
    per_page: int,
    owner_email: str | None = None,
    visible_queues: frozenset[str] | None = None,
    extra: Sequence[ticket_query.Expr] = (),
) -> dict[str, Any]:
    """Run a built-in perspective plus criteria, as the token's owner (see the module doc),
    among the tickets of `visible_queues` (None: all; services/visibility.py), AND-ed with
    the native list filters `extra` (the HappyFox list's, http/compat/happyfox_list.py)."""
    names = {v.lower(): v for v in PERSPECTIVES.values()}
    if perspective.lower() not in names:
        raise FieldError(
            "search_object.search_perspective", f"Perspective '{perspective}' not found."
        )
    perspective = names[perspective.lower()]
    if perspective == "For my attention" and not owner_email:
        raise FieldError(
            "search_object.search_perspective",
            "The perspective 'For my attention' needs a token "
            "with an owner (mailhelpdesk token create --owner EMAIL).",
        )
    by_mode: dict[str, list[list[str]]] = {}
    for mode, tokens in criteria:
        if mode not in CRITERIA_MODES:
            raise FieldError("search_object.criteria", f"Unknown criteria mode '{mode}'.")
        if mode == "watchlist":
            raise FieldError(
                "search_object.criteria",
                "Watchlists are not supported by mailhelpdesk; "
                "use the hashtag, assigned or participant modes instead.",
            )
        by_mode.setdefault(mode, []).append([str(t).strip() for t in tokens if str(t).strip()])

    def alternatives(mode: str) -> list[str]:
        return [t for tokens in by_mode.get(mode, []) for t in tokens]

    statuses = _PERSPECTIVE_STATUSES.get(perspective, [])
    if "status" in by_mode:
        wanted = [s.lower() for s in alternatives("status")]
        if any(s not in _STATUSES for s in wanted):
            raise FieldError("search_object.criteria", "status tokens are open, on-hold or closed.")
        statuses = [s for s in wanted if not statuses or s in statuses] or ["-none-"]
    try:
        numbers = [int(n) for n in alternatives("ticket_number")]
        priorities = [int(Priority.from_name(p)) for p in alternatives("priority")]
        dates = {
            m: _day(_one(m, alternatives(m)), end=m.endswith("_to"))
            for m in ("created_from", "created_to", "updated_from", "updated_to")
            if alternatives(m)
        }
    except ValueError as exc:
        raise FieldError("search_object.criteria", str(exc)) from None
    if any(not 0 < n <= MAX_INTEGER for n in numbers):
        raise FieldError("search_object.criteria", "ticket_number tokens are positive numbers.")
    phrases = {
        m: [words for tokens in by_mode[m] if (words := [w for t in tokens for w in t.split()])]
        for m in ticket_query.TEXT_MODES
        if m in by_mode
    }
    assigned = alternatives("assigned")
    if perspective == "For my attention":
        assigned = (
            [a for a in assigned if a.lower() == (owner_email or "").lower()]
            if assigned
            else [owner_email or ""]
        )
        assigned = assigned or ["-nobody-"]
    flt = ticket_query.TicketFilter(
        statuses=statuses,
        queues=alternatives("queue"),
        raised=alternatives("raised"),
        numbers=numbers,
        priorities=priorities,
        assigned=assigned,
        phrases={m: p for m, p in phrases.items() if p},
        participants=alternatives("participant"),
        hashtags=[h.lstrip("#") for h in alternatives("hashtag")],
        unassigned=perspective == "Unassigned",
        order="priority" if perspective == "For my attention" else "number",
        created_from=dates.get("created_from"),
        created_to=dates.get("created_to"),
        updated_from=dates.get("updated_from"),
        updated_to=dates.get("updated_to"),
        visible_queues=visible_queues,
    )
    rows, total = ticket_query.query_tickets(
        session, flt, offset=(page - 1) * per_page, limit=per_page, extra=extra
    )
    return {
        "tickets": ticket_headers(session, rows),
        "meta": {"total": total, "page": page, "per_page": per_page, "perspective": perspective},
    }


def _one(mode: str, values: list[str]) -> str:
    if len(values) != 1:
        raise ValueError(f"{mode} takes exactly one YYYY-MM-DD date")
    return values[0]


def _day(value: str, *, end: bool) -> datetime:
    """The start (or the last instant) of a YYYY-MM-DD day, in UTC."""
    if len(value) != 10:
        raise ValueError(f"'{value}' is not a YYYY-MM-DD date")
    day = date.fromisoformat(value)
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


def moment(value: str, *, end: bool) -> datetime:
    """A bound of §5.3: a bare YYYY-MM-DD (the whole day) or YYYY-MM-DD HH:MM:SS, in UTC."""
    value = value.strip()
    if len(value) == 10:
        return _day(value, end=end)
    if len(value) != 19 or value[10] not in " T":
        raise ValueError(f"'{value}' is not YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")
    return datetime.fromisoformat(value.replace("T", " ")).replace(tzinfo=UTC)


ResponseFilter = response_query.ResponseFilter  # the filters of §5.3, every one optional


@dataclass(frozen=True)
class ResponseQuery:
    """One page request of §5.3: the filters, what to return, and where to continue."""

    filter: ResponseFilter = field(default_factory=ResponseFilter)
    fields: Sequence[str] = RESPONSE_FIELDS
    limit: int = DEFAULT_LIMIT
    cursor: tuple[datetime, int] | None = None
    include_deleted: bool = False  # responses are never deleted: accepted and ignored


def query_responses(session: Session, q: ResponseQuery, *, clock: Clock) -> dict[str, Any]:
    """One page of responses across tickets, oldest first by (created_at, id), each the response
    object of §5.2 plus `ticket_number`; `next_cursor` is null on the last page."""
    flt = replace(q.filter, settled_before=response_query.visibility_horizon(session, clock.now()))
    rows = response_query.query_responses(session, flt, after=q.cursor, limit=q.limit + 1)
    more, rows = len(rows) > q.limit, rows[: q.limit]
    attachments = (
        store.attachments_of(session, [r.id for r, _ in rows if r.id is not None])
        if "attachments" in q.fields
        else {}
    )
    items = []
    for response, number in rows:
        item = response_object(response, attachments.get(response.id or 0, []))
        for name in RESPONSE_FIELDS:
            if name not in q.fields:
                del item[name]
        items.append({"ticket_number": number, **item})
    next_cursor = None
    if more and rows:
        last = rows[-1][0]
        created = as_utc(last.created_at)
        next_cursor = {"created_at": created.isoformat() if created else None, "id": str(last.id)}
    return {"responses": items, "next_cursor": next_cursor, "limit": q.limit}


def attachment(
    session: Session, *, ticket_number: int, attachment_id: int, intent: str | None
) -> dict[str, Any]:
    """One attachment's bytes (base64), if it is on that ticket and the policy lets it out."""
    if store.get_ticket_by_number(session, ticket_number) is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    found = response_query.find_attachment(session, attachment_id, head_bytes=policy.HEAD_BYTES)
    if found is None or found.ticket_number != ticket_number:
        raise AttachmentNotFoundError(
            f"Attachment {attachment_id} not found on ticket {ticket_number}."
        )
    a = found.attachment
    verdict = policy.judge(
        name=a.name, declared=a.mime_type, head=found.head, size=a.file_size, intent=intent
    )
    if verdict.decision == policy.Decision.blocked:
        raise AttachmentBlockedError(f"Attachment {attachment_id} is blocked: {verdict.reason}.")
    if verdict.decision == policy.Decision.too_large:
        raise AttachmentTooLargeError(
            f"Attachment {attachment_id} is too large to return inline: {verdict.reason}."
        )
    if verdict.decision == policy.Decision.review_required:
        raise AttachmentReviewRequiredError(
            f'Attachment {attachment_id} needs review ({verdict.reason}); repeat with intent "review_ok".'
        )
    data = response_query.blob_data(session, a.sha256)
    return {
        "id": str(a.id),
        "response_id": str(a.response_id),
        "name": a.name,
        "mime_type": verdict.mime_type,
        "sha256": a.sha256,
        "file_size": a.file_size,
        "is_inline": a.is_inline,
        "content_base64": base64.b64encode(data).decode("ascii"),
    }
