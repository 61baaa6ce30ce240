"""The one code path that changes tickets: mail, HTTP and CLI all call these functions.

Services take the session and the clock as arguments, flush but never commit (the caller owns
the transaction), and never talk to the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import Priority, ResponseKind, TicketStatus
from mailhelpdesk.domain.models import Attachment, Response, Ticket
from mailhelpdesk.services import webhooks
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
    clock: Clock,
) -> Ticket:
    """Open a ticket with its first message."""
    now = clock.now()
    queue = store.get_or_create_queue(session, queue_name or DEFAULT_QUEUE)
    ticket = Ticket(
        number=store.next_ticket_number(session),
        subject=_clean_subject(subject),
        status=TicketStatus.open,
        priority=int(priority),
        queue_id=queue.id or 0,
        originator_email=originator_email.lower(),
        originator_name=originator_name,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    for email, name in cc:
        if email and email.lower() != ticket.originator_email:
            store.add_cc(session, ticket_id=ticket.id or 0, email=email.lower(), name=name)
    webhooks.emit(
        session, "ticket.created", webhooks.about(session, ticket), ticket_id=ticket.id, now=now
    )
    add_response(session, ticket, first, clock=clock, reopen=False)
    return ticket


def add_response(
    session: Session, ticket: Ticket, new: NewResponse, *, clock: Clock, reopen: bool = True
) -> Response:
    """Put a message on a ticket. A public message from the customer side wakes a closed or
    on-hold ticket (api-contract.md §6: a customer reply reopens at once)."""
    now = clock.now()
    response = Response(
        ticket_id=ticket.id or 0,
        kind=new.kind,
        is_internal=new.is_internal or new.kind == ResponseKind.note,
        staff_response=new.kind in (ResponseKind.agent, ResponseKind.note),
        is_email_sourced=new.is_email_sourced,
        created_by_email=new.created_by_email.lower() if new.created_by_email else None,
        created_by_name=new.created_by_name,
        subject=new.subject,
        message_id=new.message_id,
        plain_text=new.plain_text,
        visible_text=new.visible_text or new.plain_text,
        html=new.html,
        verified=new.verified,
        inbound_id=new.inbound_id,
        created_at=now,
        updated_at=now,
    )
    session.add(response)
    session.flush()
    for item in new.attachments:
        digest = hashlib.sha256(item.data).hexdigest()
        store.store_blob(session, sha256=digest, data=item.data)
        session.add(
            Attachment(
                response_id=response.id or 0,
                name=item.name[:500],
                mime_type=item.mime_type[:200],
                file_size=len(item.data),
                is_inline=item.is_inline,
                content_id=item.content_id,
                sha256=digest,
            )
        )
    if new.message_id:
        store.record_message_id(
            session, message_id=new.message_id, ticket_id=ticket.id or 0, direction="in"
        )
    reopened_from = None
    if reopen and new.kind == ResponseKind.customer and not response.is_internal:
        if ticket.status != TicketStatus.open:
            reopened_from = ticket.status
            ticket.status = TicketStatus.open
            ticket.on_hold_until = None
            ticket.resolved_at = None
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    webhooks.emit(
        session,
        "response.created",
        webhooks.about(session, ticket, response),
        ticket_id=ticket.id,
        now=now,
    )
    if reopened_from is not None:
        webhooks.emit(
            session,
            "ticket.status_changed",
            webhooks.about(session, ticket, previous_status=str(reopened_from)),
            ticket_id=ticket.id,
            now=now,
        )
    return response


def add_ccs(
    session: Session, ticket: Ticket, addresses: Sequence[tuple[str, str]], *, exclude: set[str]
) -> None:
    """Copy the customer's CCs onto the ticket, leaving out our own and known addresses."""
    for email, name in addresses:
        email = email.lower()
        if email and email not in exclude and email != ticket.originator_email:
            store.add_cc(session, ticket_id=ticket.id or 0, email=email, name=name)


def _clean_subject(subject: str) -> str:
    """One line, bounded: a subject folded over many lines or megabytes long is still a ticket."""
    text = " ".join(subject.split())[:MAX_SUBJECT_CHARS]
    return text or "(no subject)"
