"""Time spent on tickets (resources.md §2 `…/time_entries`, §5 `time add|list`, the mail
command `#time`): entries of whole minutes, billable or not, with what was done, by which agent
and on which day. Each entry is one `time_entry` event; the ticket object shows the sum as
`time_spent_minutes`. Entries are only ever added (a correction is another entry's business,
not an edit), so the history and the totals cannot disagree."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.events import ActorKind, EventType
from mailhelpdesk.domain.models import Ticket, TimeEntry, as_utc
from mailhelpdesk.errors import InvalidInputError, NotFoundError
from mailhelpdesk.services import events
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import tickets as ticket_store
from mailhelpdesk.store import time_entries as store

MAX_MINUTES = 10_080  # one entry is at most a week of work
MAX_DESCRIPTION_CHARS = 2000


class TimeEntryError(InvalidInputError):
    """A time entry that cannot be recorded, naming the request field (422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_entry(
    session: Session, *, minutes: int, description: str, agent_email: str | None
) -> str | None:
    """The agent's stored address (or None), or TimeEntryError naming what is wrong."""
    if isinstance(minutes, bool) or not 1 <= minutes <= MAX_MINUTES:
        raise TimeEntryError("minutes", f"must be a whole number from 1 to {MAX_MINUTES}")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise TimeEntryError("description", f"is at most {MAX_DESCRIPTION_CHARS} characters")
    if agent_email is None or not agent_email.strip():
        return None
    agent = ticket_store.find_agent(session, agent_email.strip())
    if agent is None:
        raise TimeEntryError("agent_email", f"{agent_email[:320]} is not an agent")
    return agent.email.lower()


def add(
    session: Session,
    ticket: Ticket,
    *,
    minutes: int,
    billable: bool,
    description: str = "",
    agent_email: str | None = None,
    on: date | None = None,
    change: ChangeContext,
) -> TimeEntry:
    """Record time on the ticket. Without `agent_email` the acting agent's time is meant (None
    when no agent acts: a script's token, the helpdesk itself); without `on`, today (UTC)."""
    if agent_email is None and change.origin.actor.kind == ActorKind.agent:
        agent_email = change.origin.actor.email
    who = check_entry(
        session, minutes=minutes, description=description.strip(), agent_email=agent_email
    )
    now = change.clock.now()
    entry = store.add(
        session,
        TimeEntry(
            ticket_id=ticket.id or 0,
            minutes=minutes,
            billable=billable,
            description=description.strip(),
            agent_email=who,
            date=on or now.date(),
            created_at=now,
        ),
    )
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    events.record(
        session,
        ticket,
        EventType.time_entry,
        {
            "entry_id": entry.id,
            "minutes": entry.minutes,
            "billable": entry.billable,
            "description": entry.description,
            "agent_email": entry.agent_email,
            "date": entry.date.isoformat(),
        },
        change=change,
    )
    return entry


def entry_view(entry: TimeEntry) -> dict[str, Any]:
    created = as_utc(entry.created_at)
    return {
        "id": str(entry.id),
        "minutes": entry.minutes,
        "billable": entry.billable,
        "description": entry.description,
        "agent_email": entry.agent_email,
        "date": entry.date.isoformat(),
        "created_at": created.isoformat() if created else None,
    }


def _ticket(session: Session, ticket_number: int) -> Ticket:
    ticket = ticket_store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    return ticket


def listing(session: Session, *, ticket_number: int) -> dict[str, Any]:
    """`{ticket_number, time_entries: [...], summary: {total_minutes, billable_minutes}}`."""
    ticket = _ticket(session, ticket_number)
    entries = store.for_ticket(session, ticket.id or 0)
    return {
        "ticket_number": ticket.number,
        "time_entries": [entry_view(e) for e in entries],
        "summary": {
            "total_minutes": sum(e.minutes for e in entries),
            "billable_minutes": sum(e.minutes for e in entries if e.billable),
        },
    }


def add_by_number(
    session: Session,
    *,
    ticket_number: int,
    minutes: int,
    billable: bool,
    description: str,
    agent_email: str | None,
    on: date | None,
    change: ChangeContext,
) -> dict[str, Any]:
    """POST …/time_entries and `time add`: the entry as recorded."""
    ticket = _ticket(session, ticket_number)
    entry = add(
        session,
        ticket,
        minutes=minutes,
        billable=billable,
        description=description,
        agent_email=agent_email,
        on=on,
        change=change,
    )
    return entry_view(entry)


def minutes_spent(session: Session, ticket: Ticket) -> int:
    return store.minutes_spent(session, ticket.id or 0)
