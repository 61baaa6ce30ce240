"""Changes to a ticket's state: status, assignee, priority, tags.

The one code path for them: agents' mail commands (ingest), the HTTP API and the CLI call these
functions. Like every service they take the session and the clock, flush but never commit, and
write the notices a change causes to the outbox in the same transaction: closing a ticket sends
`ticket_closed` to the customer, reopening a closed one `ticket_reopened` (pass `notify=None`
to change state silently, e.g. for imported archives).

`check_*` functions validate without changing anything, so a caller holding several changes
(one agent mail with `#assign` and `#status`) can refuse them all before applying any. Every
error is an `InvalidInputError` with a short message meant for the person who asked.
"""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, select

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import Priority, TicketStatus
from mailhelpdesk.domain.models import Agent, Ticket, TicketTag
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import notify, webhooks
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.store import tickets as store

MAX_TAG_CHARS = 100


def check_status(status: str, on_hold_until: date | None = None) -> TicketStatus:
    try:
        value = TicketStatus(status)
    except ValueError:
        raise InvalidInputError(f"unknown status {status!r} (open, closed, on-hold)") from None
    if value == TicketStatus.on_hold and on_hold_until is None:
        raise InvalidInputError("on-hold needs a date (YYYY-MM-DD) until which the ticket waits")
    if value != TicketStatus.on_hold and on_hold_until is not None:
        raise InvalidInputError(f"{value} takes no on-hold date")
    return value


def set_status(
    session: Session,
    ticket: Ticket,
    status: str,
    *,
    on_hold_until: date | None = None,
    clock: Clock,
    notify_settings: NotifySettings | None = None,
) -> bool:
    """Set the status; True when it changed. Closing sends `ticket_closed`, opening a closed
    ticket `ticket_reopened` (both automatic notices to the customer) when `notify_settings`."""
    value = check_status(status, on_hold_until)
    before = TicketStatus(ticket.status)
    if before == value and ticket.on_hold_until == on_hold_until:
        return False
    now = clock.now()
    ticket.status = value.value
    ticket.on_hold_until = on_hold_until if value == TicketStatus.on_hold else None
    ticket.resolved_at = now if value == TicketStatus.closed else None
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    webhooks.emit(
        session,
        "ticket.status_changed",
        webhooks.about(session, ticket, previous_status=before.value),
        ticket_id=ticket.id,
        now=now,
    )
    if notify_settings is not None and before != value:
        if value == TicketStatus.closed:
            notify.notify_status_change(
                session, ticket, notice="ticket_closed", settings=notify_settings, clock=clock
            )
        elif before == TicketStatus.closed:
            notify.notify_status_change(
                session, ticket, notice="ticket_reopened", settings=notify_settings, clock=clock
            )
    return True


def check_assignee(session: Session, email: str | None) -> Agent | None:
    """The agent for `email` (None for nobody), or InvalidInputError when no agent has it."""
    if email is None or not email.strip():
        return None
    agent = store.get_agent_by_email(session, email.strip().lower())
    if agent is None:
        agent = next(
            (
                a
                for a in store.list_agents(session)
                if email.strip().lower() in a.alternate_addresses.lower().split()
            ),
            None,
        )
    if agent is None:
        raise InvalidInputError(f"{email} is not an agent")
    return agent


def assign(session: Session, ticket: Ticket, email: str | None, *, clock: Clock) -> bool:
    """Assign the ticket to the agent with `email` (None: unassign); True when it changed."""
    agent = check_assignee(session, email)
    new = agent.email.lower() if agent else None
    if ticket.assigned_to_email == new:
        return False
    previous, ticket.assigned_to_email = ticket.assigned_to_email, new
    _touch(session, ticket, clock)
    webhooks.emit(
        session,
        "ticket.assigned",
        webhooks.about(session, ticket, previous_assignee=previous),
        ticket_id=ticket.id,
        now=ticket.updated_at,
    )
    return True


def check_priority(priority: str | int | Priority) -> Priority:
    if isinstance(priority, Priority):
        return priority
    try:
        return Priority.from_name(str(priority))
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def set_priority(
    session: Session, ticket: Ticket, priority: str | int | Priority, *, clock: Clock
) -> bool:
    value = check_priority(priority)
    if ticket.priority == int(value):
        return False
    ticket.priority = int(value)
    _touch(session, ticket, clock)
    return True


def check_tag(name: str) -> str:
    tag = " ".join(name.split())
    if not tag:
        raise InvalidInputError("a tag needs a name")
    if len(tag) > MAX_TAG_CHARS:
        raise InvalidInputError(f"a tag is at most {MAX_TAG_CHARS} characters")
    return tag


def tag(session: Session, ticket: Ticket, name: str, *, clock: Clock) -> bool:
    """Add a tag (idempotent); True when it was not there."""
    value = check_tag(name)
    if value in store.tags_of(session, ticket.id or 0):
        return False
    session.add(TicketTag(ticket_id=ticket.id or 0, name=value))
    _touch(session, ticket, clock)
    return True


def untag(session: Session, ticket: Ticket, name: str, *, clock: Clock) -> bool:
    """Remove a tag; True when it was there (removing an absent tag is not an error)."""
    value = check_tag(name)
    row = session.exec(
        select(TicketTag).where(TicketTag.ticket_id == ticket.id, TicketTag.name == value)
    ).first()
    if row is None:
        return False
    session.delete(row)
    _touch(session, ticket, clock)
    return True


def _touch(session: Session, ticket: Ticket, clock: Clock) -> None:
    ticket.updated_at = clock.now()
    session.add(ticket)
    session.flush()
