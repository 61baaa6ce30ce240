"""Look-ups by id for the seed adapters (resources.md §6), whose APIs name agents, queues and
tickets by number where the native API names them by address or name. Nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from mailhelpdesk.domain.models import Agent, Ticket
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.store import tickets as store


def agents(session: Session) -> Sequence[Agent]:
    """Every agent, by address."""
    return store.list_agents(session)


def agent(session: Session, agent_id: int) -> Agent | None:
    return session.get(Agent, agent_id)


def queues(session: Session) -> dict[int, str]:
    """Every queue: id -> name."""
    return store.queue_names(session)


def ticket(session: Session, number: int) -> Ticket:
    """The ticket with this number (not in the trash), or NotFoundError."""
    found = store.get_ticket_by_number(session, number)
    if found is None:
        raise NotFoundError(f"Ticket {number} not found.")
    return found


def last_staff_response_id(session: Session, number: int) -> int:
    """The id of the ticket's latest staff message (0: none yet)."""
    responses = store.responses_of(session, ticket(session, number).id or 0)
    return max((r.id or 0 for r in responses if r.staff_response or r.kind == "agent"), default=0)
