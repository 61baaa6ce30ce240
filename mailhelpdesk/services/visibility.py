"""Which tickets an API request may see (resources.md §1): a token owned by an agent sees only
that agent's queues (`[[agents]] queues`, empty: all); every other token sees every queue.

A ticket outside the visible queues is as unknown as a ticket nobody has: 404 on every route that
names it, left out of every list. The HTTP layer asks `require_visible` before a ticket route's
handler runs (http/endpoint.py `guarded`) and passes `Viewer.queues` to the list queries, so the
rule lives here once and the routes cannot each get it slightly wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.store import lookups
from mailhelpdesk.store import tickets as store


@dataclass(frozen=True)
class Viewer:
    """The queues a request sees, lower-cased; None: every queue."""

    queues: frozenset[str] | None = None

    def sees_queue(self, name: str) -> bool:
        return self.queues is None or name.strip().lower() in self.queues


EVERYONE = Viewer()


def agent_queues(text: str) -> frozenset[str] | None:
    """An agent row's stored queue list (one name a line) as a visibility set; None: all."""
    names = frozenset(line.strip().lower() for line in text.splitlines() if line.strip())
    return names or None


def viewer_for(session: Session, token: AuthenticatedToken | None) -> Viewer:
    """What `token` sees: its owner agent's queues, or everything (no owner, an owner who is
    not an agent, or an agent without a queue list)."""
    if token is None or not token.owner_email:
        return EVERYONE
    agent = store.find_agent(session, token.owner_email)
    if agent is None:
        return EVERYONE
    return Viewer(agent_queues(agent.queues))


def require_visible(session: Session, viewer: Viewer, ticket_number: int) -> None:
    """NotFoundError when the ticket exists but lies outside `viewer`'s queues (an unknown ticket
    is left to the route, whose own 404 reads the same)."""
    if viewer.queues is None:
        return
    ticket = store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        return
    if not viewer.sees_queue(lookups.queue_name(session, ticket.queue_id)):
        raise NotFoundError(f"Ticket {ticket_number} not found.")
