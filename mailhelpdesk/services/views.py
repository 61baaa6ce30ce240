"""The ticket object of DESIGN.md §7: one shape for the CLI's --json and the HTTP API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.links import status_url
from mailhelpdesk.domain.models import Attachment, Response, Ticket
from mailhelpdesk.services import sla
from mailhelpdesk.store import field_values as field_value_store
from mailhelpdesk.store import housekeeping as housekeeping_store
from mailhelpdesk.store import interventions as intervention_store
from mailhelpdesk.store import lookups, rows
from mailhelpdesk.store import sla as sla_store
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store import time_entries as time_entry_store
from mailhelpdesk.store.ticket_query import TicketRow


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite's naive UTC: the same text as as_utc(value).isoformat()
        return value.isoformat() + "+00:00"
    return value.astimezone(UTC).isoformat()


# a ticket's columns by name: ORM attributes are fast, a list's plain rows are read by position
# (a Row's attribute lookup costs as much as the rest of the header together)
_TICKET_COLUMNS = tuple(rows.table_of(Ticket).columns.keys())


def _columns(ticket: Ticket | TicketRow, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ticket's columns by name; `fields`, a page's rows' names, asked once per page."""
    if isinstance(ticket, Ticket):
        return {name: getattr(ticket, name) for name in _TICKET_COLUMNS}
    return dict(zip(fields or ticket._fields, ticket, strict=True))


def _header(
    t: dict[str, Any], *, queue_name: str, tags: list[str], cc: list[str]
) -> dict[str, Any]:
    on_hold_until = t["on_hold_until"]
    return {
        "id": str(t["id"]),
        "number": t["number"],
        "subject": t["subject"],
        "status": t["status"],
        "priority": str(t["priority"]),
        "queue_id": str(t["queue_id"]),
        "originator_email": t["originator_email"],
        "assigned_to_email": t["assigned_to_email"],
        "resolved": _iso(t["resolved_at"]),
        "on_hold_until": on_hold_until.isoformat() if on_hold_until else None,
        "created_at": _iso(t["created_at"]),
        "updated_at": _iso(t["updated_at"]),
        "queue": queue_name,
        "originator_name": t["originator_name"],
        "tags": tags,
        "cc": cc,
        "contact_id": t["contact_id"],  # resources.md §2: the customer (services/contacts.py)
        # housekeeping (resources.md §2 ticket object additions)
        "due_at": _iso(t["due_at"]),
        "resolution": t["resolution"],
        "merged_into": t["merged_into"],
    }


def ticket_headers(
    session: Session, tickets: Sequence[Ticket] | Sequence[TicketRow]
) -> list[dict[str, Any]]:
    """The headers of a page of tickets: tags and CCs read for the whole page at once (one
    statement, not two per ticket: a list page stays a few milliseconds); queue names from the
    process's cache (queues are never renamed)."""
    fields = None if not tickets or isinstance(tickets[0], Ticket) else tickets[0]._fields
    columns = [_columns(t, fields) for t in tickets]
    names = {qid: lookups.queue_name(session, qid) for qid in {t["queue_id"] for t in columns}}
    ids = [t["id"] for t in columns if t["id"] is not None]
    tags, ccs = store.tags_and_ccs_by_ticket(session, ids)
    return [
        _header(
            t,
            queue_name=names.get(t["queue_id"], ""),
            tags=tags.get(t["id"] or 0, []),
            cc=ccs.get(t["id"] or 0, []),
        )
        for t in columns
    ]


def response_object(r: Response, attachments: list[Attachment]) -> dict[str, Any]:
    """One response as api-contract.md §5.2 shows it, plus the EXT fields of DESIGN.md §7."""
    return {
        "id": str(r.id),
        "is_internal": r.is_internal,
        "is_pinned": r.is_pinned,
        "staff_response": r.staff_response,
        "created_by_email": r.created_by_email,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
        "is_email_sourced": r.is_email_sourced,
        "html": r.html,
        "plain_text": r.plain_text,
        "attachments": [
            {
                "id": str(a.id),
                "name": a.name,
                "mime_type": a.mime_type,
                "file_size": a.file_size,
                "is_inline": a.is_inline,
                "sha256": a.sha256,
            }
            for a in attachments
        ],
        "created_by_name": r.created_by_name,
        "kind": r.kind,
        "visible_text": r.visible_text,
        "subject": r.subject,
        "message_id": r.message_id,
        "verified": r.verified,
    }


def ticket_object(session: Session, ticket: Ticket, *, public_url: str = "") -> dict[str, Any]:
    """Header plus every response (internal notes included), pinned first, then oldest first;
    `public_url` (`[http] public_url`) makes `secure_url` the customer's status page link."""
    (data,) = ticket_headers(session, [ticket])
    data["secure_id"] = ticket.secure_id
    data["secure_url"] = status_url(public_url, ticket.secure_id)
    responses = store.responses_of(session, ticket.id or 0)
    attachments = store.attachments_of(session, [r.id for r in responses if r.id is not None])
    data["responses"] = [response_object(r, attachments.get(r.id or 0, [])) for r in responses]
    data["watchers"] = housekeeping_store.watchers_of(session, ticket.id or 0)
    found = intervention_store.for_ticket(session, ticket.id or 0)  # EXT: api-contract.md §4.9
    data["intervention"] = (
        {
            "name": found.name,
            "uid": found.uid,
            "state": found.state,
            "data": intervention_store.data_of(found),
        }
        if found
        else None
    )
    _add_fields_and_time(session, ticket, data)
    # resources.md §2: due times of the ticket's SLA targets and the ones missed (services/sla.py)
    data["sla"] = sla.sla_view(sla_store.get(session, ticket.id or 0))
    return data


def _add_fields_and_time(session: Session, ticket: Ticket, data: dict[str, Any]) -> None:
    """EXT (resources.md §2): the set custom fields by name, and the minutes recorded."""
    data["custom_fields"] = field_value_store.values_of(session, ticket.id or 0)
    data["time_spent_minutes"] = time_entry_store.minutes_spent(session, ticket.id or 0)
