"""Recording a change: one ticket event, and what it causes, in the change's transaction.

The services call `record` for every change they make; nothing else writes events, notices or
webhooks for a change, so the history, the mail and the webhooks cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket, TicketEvent
from mailhelpdesk.services import reactions, sla
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.reactions import Thread
from mailhelpdesk.store import events as store

log = logging.getLogger(__name__)


def record(
    session: Session,
    ticket: Ticket,
    event: EventType,
    data: Mapping[str, Any],
    *,
    change: ChangeContext,
    thread: Thread | None = None,
) -> TicketEvent:
    """Append the event, keep the ticket's SLA due times (services/sla.py) and write its
    notices and webhook deliveries (services/reactions.py)."""
    row = store.append(
        session,
        ticket_id=ticket.id or 0,
        type=event,
        at=change.clock.now(),
        origin=change.origin,
        data=data,
    )
    # the due times first: the notices and webhooks of this event see the ticket as it now is
    sla.track(session, ticket, event, change.notices.sla, row.at)
    reactions.react(session, ticket, event, data, change=change, thread=thread)
    log.debug(
        "ticket event ticket=%s type=%s channel=%s actor=%s",
        ticket.number,
        event.value,
        change.origin.channel.value,
        change.origin.actor.kind.value,
    )
    return row
