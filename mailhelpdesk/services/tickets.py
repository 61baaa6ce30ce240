"""The one code path that changes tickets: mail, HTTP and CLI all call these functions.

Services take the session and a ChangeContext (the clock, who acts through which channel, the
notice settings), flush but never commit (the caller owns the transaction), and never talk to
the network. Every change is recorded as a ticket event (services/events.py), which is what
writes the notices and webhooks it causes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from mailhelpdesk.domain.enums import Priority, ResponseKind, TicketStatus
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Response, Ticket
from mailhelpdesk.services import contacts, events
from mailhelpdesk.services.cc_policy import CcLimits, capped
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.reactions import REPLY_CAUSE, Thread
from mailhelpdesk.store import tickets as store

DEFAULT_QUEUE = "Inbox"
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True)
class NewAttachment:
    name: str
    mime_type: str
    data: bytes
    is_inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True)
class NewResponse:
    """A message to put on a ticket, whatever it came from."""

    kind: ResponseKind
    plain_text: str
    visible_text: str = ""
    html: str | None = None
    is_internal: bool = False
    created_by_email: str | None = None
    created_by_name: str = ""
    subject: str = ""
    message_id: str | None = None
    is_email_sourced: bool = False
    verified: str | None = None
    inbound_id: int | None = None
    attachments: Sequence[NewAttachment] = field(default_factory=tuple)


def new_secure_id() -> str:
    """32 lowercase hex characters from a CSPRNG (api-contract.md §4.1 `secure_id`): the key to
    the ticket's status page, so never derived from anything a stranger could know."""
    return secrets.token_hex(16)


def create_ticket(
    session: Session,
    *,
    subject: str,
    originator_email: str,
    originator_name: str = "",
    queue_name: str = DEFAULT_QUEUE,
    first: NewResponse,
    cc: Sequence[tuple[str, str]] = (),
    priority: Priority = Priority.normal,
    change: ChangeContext,
    thread: Thread | None = None,
    cc_limits: CcLimits | None = None,
) -> Ticket:
    """Open a ticket with its first message: one `created` event (the acknowledgement and
    `new_ticket` notices follow from it; `thread` threads them on the customer's mail). The
    CCs are bounded by `cc_limits` (services/cc_policy.py)."""
    now = change.clock.now()
    queue = queue_name or DEFAULT_QUEUE
    ticket = store.insert_ticket(
        session,
        {
            "number": store.next_ticket_number(session),
            "subject": _clean_subject(subject),
            "status": TicketStatus.open.value,
            "priority": int(priority),
            "queue_id": store.queue_id_for(session, queue),
            "originator_email": originator_email.lower(),
            "originator_name": originator_name,
            "created_at": now,
            "updated_at": now,
            "secure_id": new_secure_id(),
            "contact_id": contacts.contact_for(
                session, originator_email, name=originator_name, now=now
            ),
        },
    )
    store.add_new_ccs(
        session,
        ticket_id=ticket.id or 0,
        ccs=capped(
            cc,
            present=set(),
            skip={ticket.originator_email},
            limits=cc_limits or CcLimits(),
            ticket_number=ticket.number,
        ),
    )
    response = _store_response(session, ticket, first, now=now)
    events.record(
        session,
        ticket,
        EventType.created,
        {
            "response_id": response.id,
            "public": not response.is_internal,
            "subject": ticket.subject,
            "queue": queue,
            "priority": Priority(ticket.priority).name.capitalize(),
            "originator_email": ticket.originator_email,
            **({"message_id": response.message_id} if response.message_id else {}),
        },
        change=change,
        thread=thread,
    )
    return ticket


def message_event(new: NewResponse) -> EventType:
    """The event a message on a ticket is, by its kind and visibility."""
    internal = new.is_internal or new.kind == ResponseKind.note
    if new.kind == ResponseKind.customer:
        return EventType.held if internal else EventType.customer_reply
    if new.kind == ResponseKind.agent and not internal:
        return EventType.agent_response
    if new.kind == ResponseKind.system:
        return EventType.bounce
    return EventType.note


def add_response(
    session: Session,
    ticket: Ticket,
    new: NewResponse,
    *,
    change: ChangeContext,
    reopen: bool = True,
    event: EventType | None = None,
    thread: Thread | None = None,
    reason: str = "",
) -> Response:
    """Put a message on a ticket, as one event (`event`, else by the message's kind). A public
    message from the customer side wakes a closed or on-hold ticket (api-contract.md §6: a
    customer reply reopens at once): a `status` event caused by the reply, which mails nothing
    of its own. `reason` says why a held or recorded message is not public."""
    now = change.clock.now()
    response = _store_response(session, ticket, new, now=now)
    reopened_from = None
    public_from_customer = new.kind == ResponseKind.customer and not response.is_internal
    if reopen and public_from_customer and ticket.status != TicketStatus.open:
        reopened_from = ticket.status
        ticket.status = TicketStatus.open
        ticket.on_hold_until = None
        ticket.resolved_at = None
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    data: dict[str, object] = {"response_id": response.id}
    if response.message_id:
        data["message_id"] = response.message_id
    if reason:
        data["reason"] = reason[:500]
    events.record(session, ticket, event or message_event(new), data, change=change, thread=thread)
    if reopened_from is not None:
        events.record(
            session,
            ticket,
            EventType.status,
            {
                "from": str(reopened_from),
                "to": TicketStatus.open.value,
                "cause": REPLY_CAUSE,
                "response_id": response.id,
            },
            change=change,
        )
    return response


def _store_response(
    session: Session, ticket: Ticket, new: NewResponse, *, now: datetime
) -> Response:
    response = store.insert_response(
        session,
        {
            "ticket_id": ticket.id or 0,
            "kind": str(new.kind),
            "is_internal": new.is_internal or new.kind == ResponseKind.note,
            "is_pinned": False,
            "staff_response": new.kind in (ResponseKind.agent, ResponseKind.note),
            "is_email_sourced": new.is_email_sourced,
            "created_by_email": new.created_by_email.lower() if new.created_by_email else None,
            "created_by_name": new.created_by_name,
            "subject": new.subject,
            "message_id": new.message_id,
            "plain_text": new.plain_text,
            "visible_text": new.visible_text or new.plain_text,
            "html": new.html,
            "verified": new.verified,
            "inbound_id": new.inbound_id,
            "created_at": now,
            "updated_at": now,
        },
        files=bool(new.attachments),
    )
    files = []
    for item in new.attachments:
        digest = hashlib.sha256(item.data).hexdigest()
        store.store_blob(session, sha256=digest, data=item.data)
        files.append(
            {
                "response_id": response.id or 0,
                "name": item.name[:500],
                "mime_type": item.mime_type[:200],
                "file_size": len(item.data),
                "is_inline": item.is_inline,
                "content_id": item.content_id,
                "sha256": digest,
            }
        )
    store.insert_attachments(session, files)
    if new.message_id:
        store.record_message_id(
            session, message_id=new.message_id, ticket_id=ticket.id or 0, direction="in"
        )
    return response


def refuse_command(
    session: Session,
    ticket: Ticket,
    *,
    error: str,
    line: str,
    change: ChangeContext,
    thread: Thread | None = None,
) -> None:
    """An agent's mail command that could not be applied: nothing changed, but the refusal is
    on the record, and the agent is told which line and why (`command_error`)."""
    events.record(
        session,
        ticket,
        EventType.command_refused,
        {"error": error[:1000], "line": line[:1000]},
        change=change,
        thread=thread,
    )


def add_ccs(
    session: Session,
    ticket: Ticket,
    addresses: Sequence[tuple[str, str]],
    *,
    exclude: set[str],
    limits: CcLimits | None = None,
) -> None:
    """Copy a party's CCs onto the ticket, leaving out our own and known addresses, within
    the CC limits (services/cc_policy.py)."""
    for email, name in capped(
        addresses,
        present={cc.email for cc in store.ccs_of(session, ticket.id or 0)},
        skip={*(e.lower() for e in exclude), ticket.originator_email},
        limits=limits or CcLimits(),
        ticket_number=ticket.number,
    ):
        store.add_cc(session, ticket_id=ticket.id or 0, email=email, name=name)


def _clean_subject(subject: str) -> str:
    """One line, bounded: a subject folded over many lines or megabytes long is still a ticket."""
    text = " ".join(subject.split())[:MAX_SUBJECT_CHARS]
    return text or "(no subject)"
