"""Forwarding a ticket's conversation to a third party (resources.md §2 `…/forward`).

`forward` checks the addresses and records one `forwarded` event (`{to, note,
include_attachments}`); services/reactions.py turns it into one `forward` mail per address,
written to the outbox like every notice. Each goes out with a forward reply address
(mail/tokens.py, `ReplyToken.forward`) and its Message-ID recorded as a forward, so the third
party's answer, by the Reply-To or by References, is kept on the ticket as an internal message
(ingest/steps.py) and reaches no customer. The party rule is unchanged: the third party becomes
no party of the ticket, so their mail with only the subject tag is held too.
"""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.services import events
from mailhelpdesk.services.api_requests import FieldErrors
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import tickets as ticket_store

MAX_RECIPIENTS = 10
MAX_NOTE_CHARS = 10_000
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def check_recipients(to: list[str], own_addresses: frozenset[str]) -> list[str]:
    """The lower-cased, de-duplicated addresses, or FieldErrors on `to` (422)."""
    if not to:
        raise FieldErrors({"to": "name at least one address"})
    if len(to) > MAX_RECIPIENTS:
        raise FieldErrors({"to": f"at most {MAX_RECIPIENTS} addresses"})
    found: list[str] = []
    for raw in to:
        email = raw.strip().lower()
        if not _EMAIL.match(email):
            raise FieldErrors({"to": f"{raw[:100]!r} is not an email address"})
        if email in own_addresses or split_plus(email)[0] in own_addresses:
            raise FieldErrors({"to": f"{email} is one of the helpdesk's own addresses"})
        if email not in found:
            found.append(email)
    return found


def forward(
    session: Session,
    *,
    ticket_number: int,
    to: list[str],
    note: str | None,
    include_attachments: bool,
    change: ChangeContext,
) -> dict[str, Any]:
    ticket = ticket_store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    recipients = check_recipients(to, change.notices.own_addresses)
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise FieldErrors({"note": f"at most {MAX_NOTE_CHARS} characters"})
    data: dict[str, Any] = {"to": recipients, "include_attachments": include_attachments}
    if note:
        data["note"] = note
    row = events.record(session, ticket, EventType.forwarded, data, change=change)
    return {"ticket_number": ticket.number, "event_id": str(row.id), "to": recipients}
