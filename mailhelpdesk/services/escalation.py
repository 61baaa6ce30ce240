"""The SLA escalation job: a notice at 80% of a target and one at its breach, each once.

Run by the scheduler every minute (and safe to run from several daemons at once). It reads the
due instants services/sla.py keeps in `TicketSla` and, for each one that has come, first claims
it with a conditional UPDATE (`*_warned_at` / `*_breached_at` set only while still empty), then
records an `sla_warning` or `sla_breach` event in the same transaction; services/reactions.py
turns the event into the notice to the assignee (else the queue's agents). A crash before the
commit undoes both; a second daemon's UPDATE matches nothing. So each notice is sent once, and
the history holds exactly one event per warning and breach: the `breached` list filter reads it.

A job that runs late (the daemon was down) and finds a target already breached records the
breach only: the warning is claimed without an event, as a warning after the fact tells nobody
anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket, TicketSla, as_utc
from mailhelpdesk.domain.sla import Target
from mailhelpdesk.services import events
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import sla as store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Escalation:
    ticket_number: int
    target: Target
    kind: EventType  # sla_warning or sla_breach


def escalate(session: Session, *, change: ChangeContext, limit: int = 200) -> list[Escalation]:
    """Record the warnings and breaches that have come (see the module doc); returns them."""
    now = change.clock.now()
    done: list[Escalation] = []
    for target in Target:
        prefix = target.value
        for row in store.pending(
            session,
            at_column=f"{prefix}_due_at",
            done_column=f"{prefix}_breached_at",
            now=now,
            limit=limit,
        ):
            if store.claim(
                session, ticket_id=row.ticket_id, done_column=f"{prefix}_breached_at", now=now
            ):
                store.claim(
                    session, ticket_id=row.ticket_id, done_column=f"{prefix}_warned_at", now=now
                )
                done.extend(_record(session, row, target, EventType.sla_breach, change))
        for row in store.pending(
            session,
            at_column=f"{prefix}_warn_at",
            done_column=f"{prefix}_warned_at",
            now=now,
            limit=limit,
        ):
            if store.claim(
                session, ticket_id=row.ticket_id, done_column=f"{prefix}_warned_at", now=now
            ):
                done.extend(_record(session, row, target, EventType.sla_warning, change))
    return done


def _record(
    session: Session, row: TicketSla, target: Target, kind: EventType, change: ChangeContext
) -> list[Escalation]:
    ticket = session.get(Ticket, row.ticket_id)
    if ticket is None:
        return []
    due = as_utc(getattr(row, f"{target.value}_due_at"))
    events.record(
        session,
        ticket,
        kind,
        {"target": target.value, "due_at": due.isoformat() if due else None, "rule": row.rule},
        change=change,
    )
    log.info("sla %s ticket=%s target=%s", kind.value, ticket.number, target.value)
    return [Escalation(ticket.number, target, kind)]
