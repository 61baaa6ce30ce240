"""Watchers (resources.md §2): agents who follow a ticket and get the notices its assignee gets
(the audience is extended in services/reactions.py). Only agents can watch; adding a watcher
twice or removing one who is not watching changes nothing and records nothing."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.services import events
from mailhelpdesk.services.api_requests import FieldError
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import housekeeping as store
from mailhelpdesk.store import tickets as ticket_store


def _ticket(session: Session, number: int) -> Ticket:
    ticket = ticket_store.get_ticket_by_number(session, number)
    if ticket is None:
        raise NotFoundError(f"Ticket {number} not found.")
    return ticket


def check_watcher(session: Session, email: str) -> str:
    """The agent's main address for `email`, or a FieldError on `email` (422)."""
    agent = ticket_store.find_agent(session, email)
    if agent is None:
        raise FieldError("email", f"{email} is not an agent")
    return agent.email.lower()


def watch(session: Session, ticket: Ticket, email: str, *, change: ChangeContext) -> bool:
    """Add the agent as a watcher (a `watcher_added` event); True when they were not one."""
    who = check_watcher(session, email)
    if not store.add_watcher(session, ticket_id=ticket.id or 0, email=who, now=change.clock.now()):
        return False
    events.record(session, ticket, EventType.watcher_added, {"email": who}, change=change)
    return True


def unwatch(session: Session, ticket: Ticket, email: str, *, change: ChangeContext) -> bool:
    """Remove the watcher (a `watcher_removed` event); True when they were one."""
    agent = ticket_store.find_agent(session, email)
    who = agent.email.lower() if agent else email.strip().lower()
    if not store.remove_watcher(session, ticket_id=ticket.id or 0, email=who):
        return False
    events.record(session, ticket, EventType.watcher_removed, {"email": who}, change=change)
    return True


def listing(session: Session, *, ticket_number: int) -> dict[str, Any]:
    ticket = _ticket(session, ticket_number)
    return {"ticket_number": ticket.number, "watchers": store.watchers_of(session, ticket.id or 0)}


def add(
    session: Session, *, ticket_number: int, email: str, change: ChangeContext
) -> dict[str, Any]:
    """POST …/watchers: add, then the list as it is now."""
    watch(session, _ticket(session, ticket_number), email, change=change)
    return listing(session, ticket_number=ticket_number)


def remove(
    session: Session, *, ticket_number: int, email: str, change: ChangeContext
) -> dict[str, Any]:
    """DELETE …/watchers: remove, then the list as it is now."""
    unwatch(session, _ticket(session, ticket_number), email, change=change)
    return listing(session, ticket_number=ticket_number)
