"""tiHelpdesk's shapes of our tickets, replies and time (seed 000; docs/compat.md): what its
actions answer and what its four Zapier triggers deliver. One module for both, so an action's
answer and a trigger's payload can never disagree about a field.

People are `{first_name, last_name, email}` (plus `company_name` for the customer): a name is
split at its first space. Times are `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, dates `YYYY-MM-DD`.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import Response, Ticket, as_utc
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.services import contacts
from mailhelpdesk.services.compat_vocab import Vocabulary
from mailhelpdesk.store import contacts as contact_store
from mailhelpdesk.store import field_values as field_value_store
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store import time_entries as time_entry_store

# our webhook events -> tiHelpdesk's trigger names (and back, for /api/subscribe)
TRIGGERS = {
    "ticket_new": "ticket.created",
    "reply_new": "response.created",
    "ticket_status_changed": "ticket.status_changed",
    "ticket_assignment_changed": "ticket.assigned",
}


def stamp(value: datetime | None) -> str | None:
    aware = as_utc(value)
    return aware.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if aware else None


def _split(name: str, email: str) -> tuple[str, str]:
    name = " ".join(name.split()) or email.split("@", 1)[0]
    first, _, last = name.partition(" ")
    return first, last


def person(session: Session, email: str | None, *, with_company: bool = False) -> Any:
    """An agent or a customer as tiHelpdesk shows people; None without an address."""
    if not email:
        return None
    agent = store.find_agent(session, email)
    contact = None if agent is not None else contact_store.by_address(session, email)
    name = agent.name if agent is not None else (contact.name if contact is not None else "")
    first, last = _split(name, email)
    shown: dict[str, Any] = {"first_name": first, "last_name": last, "email": email}
    if with_company:
        shown["company_name"] = contact.company if contact is not None else ""
    return shown


def _customer(session: Session, ticket: Ticket) -> dict[str, Any]:
    contact = contact_store.get(session, ticket.contact_id) if ticket.contact_id else None
    name = ticket.originator_name or (contact.name if contact is not None else "")
    first, last = _split(name, ticket.originator_email)
    return {
        "first_name": first,
        "last_name": last,
        "email": ticket.originator_email,
        "company_name": contact.company if contact is not None else "",
    }


def as_html(response: Response | None) -> str:
    """A message as tiHelpdesk carries it: its HTML, else its text in paragraphs."""
    if response is None:
        return ""
    if response.html:
        return response.html
    paragraphs = [p.strip() for p in (response.visible_text or response.plain_text).split("\n\n")]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p)


def _ordered(session: Session, ticket: Ticket) -> list[Response]:
    return sorted(
        store.responses_of(session, ticket.id or 0), key=lambda r: (r.created_at, r.id or 0)
    )


def ticket_view(session: Session, ticket: Ticket, vocab: Vocabulary) -> dict[str, Any]:
    """The ticket as `get-ticket-details` answers it and `ticket_new` delivers it."""
    responses = _ordered(session, ticket)
    latest = responses[-1] if len(responses) > 1 else None
    values = field_value_store.values_of(session, ticket.id or 0)
    created, updated, due = (
        as_utc(ticket.created_at),
        as_utc(ticket.updated_at),
        as_utc(ticket.due_at),
    )
    return {
        "subject": ticket.subject,
        "description": as_html(responses[0] if responses else None),
        "created_by": _customer(session, ticket),
        "updated_by": (
            person(session, latest.created_by_email, with_company=True) if latest else None
        ),
        "status": vocab.status_out(ticket.status),
        "created_at": stamp(created),
        "updated_at": stamp(updated) if updated and updated != created else None,
        "type": _field(values, vocab, "type"),
        "deleted": ticket.deleted_at is not None,
        "ticket_number": ticket.number,
        "assigned_to": person(session, ticket.assigned_to_email),
        "due_date": due.date().isoformat() if due else None,
        "priority": vocab.priority_out(ticket.priority),
        "product": _field(values, vocab, "product"),
        "ticket_tags": store.tags_of(session, ticket.id or 0),
    }


def ticket(session: Session, number: int) -> Ticket:
    """The ticket with this number (not in the trash), or NotFoundError (404)."""
    found = store.get_ticket_by_number(session, number)
    if found is None:
        raise NotFoundError(f"Ticket {number} not found.")
    return found


def name_customer(session: Session, number: int, *, name: str, company: str, clock: Clock) -> None:
    """Give the customer of a ticket made by `create-ticket` the name (and company) the action
    named, where their contact has none yet (a known customer keeps theirs)."""
    found = ticket(session, number)
    if found.contact_id is None:
        return
    current = contact_store.get(session, found.contact_id)
    if current is None:
        return
    fields = contacts.ContactFields(
        name=name if name and not current.name else None,
        company=company if company and not current.company else None,
    )
    if fields != contacts.ContactFields():
        contacts.update(session, contact_id=found.contact_id, fields=fields, clock=clock)


def _field(values: dict[str, Any], vocab: Vocabulary, seed_name: str) -> Any:
    name = vocab.fields.get(seed_name, "")
    return values.get(name) if name else None


def billable_view(session: Session, ticket: Ticket, vocab: Vocabulary) -> dict[str, Any]:
    """`get-billable-time`: the ticket plus its billable time entries."""
    view = ticket_view(session, ticket, vocab)
    items = [
        {
            "billable": True,
            "bill_code": None,
            "creator": person(session, e.agent_email),
            "minutes_logged": e.minutes,
            "invoiced": False,
            "description": e.description,
            "updater": person(session, e.agent_email),
        }
        for e in time_entry_store.for_ticket(session, ticket.id or 0)
        if e.billable
    ]
    return {
        **view,
        "accounting_number": ticket.originator_email,
        "billable_items_count": len(items),
        "billable_items": items,
    }


def reply_view(session: Session, ticket: Ticket, response: Response) -> dict[str, Any]:
    """The `reply_new` payload."""
    return {
        "ticket_subject": ticket.subject,
        "ticket_created_by": _customer(session, ticket),
        "ticket_number": ticket.number,
        "ticket_assigned_to": person(session, ticket.assigned_to_email),
        "reply_type": "note" if response.is_internal else "reply",
        "reply_created_by": person(session, response.created_by_email),
        "reply_data": as_html(response),
        "reply_created_at": stamp(response.created_at),
    }


def _short_customer(session: Session, ticket: Ticket) -> dict[str, Any]:
    shown = _customer(session, ticket)
    shown.pop("company_name")
    return shown


def hook_payload(
    session: Session,
    event: str,
    ticket: Ticket,
    response: Response | None,
    *,
    opening: bool,
    vocab: Vocabulary,
) -> dict[str, Any] | None:
    """What a tiHelpdesk trigger delivers for our webhook `event`; None when the trigger does
    not fire (the opening message of a new ticket is `ticket_new`, never also `reply_new`)."""
    if event == "ticket.created":
        return ticket_view(session, ticket, vocab)
    if event == "response.created":
        return None if opening or response is None else reply_view(session, ticket, response)
    if event == "ticket.status_changed":
        return {
            "ticket_subject": ticket.subject,
            "ticket_created_by": _short_customer(session, ticket),
            "ticket_number": ticket.number,
            "ticket_status": vocab.status_out(ticket.status),
        }
    if event == "ticket.assigned":
        return {
            "ticket_subject": ticket.subject,
            "ticket_created_by": _short_customer(session, ticket),
            "ticket_number": ticket.number,
            "assigned_to": person(session, ticket.assigned_to_email),
        }
    return None
