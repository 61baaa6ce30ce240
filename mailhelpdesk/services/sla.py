"""Keeping each ticket's SLA due times (domain/sla.py) in step with its history.

`track` runs inside services/events.py `record`, in the transaction of every change: an event
that can move a due time (created, an agent's answer, a status, priority or queue change)
recomputes the ticket's `TicketSla` row from the ticket's own events, so the row can never
disagree with the history. The rule is looked up again each time: a ticket moved to another
queue or priority gets that rule's targets, counted from its opening.

`recompute_open` does the same for every ticket not closed when the policy changed (a new
`[[sla]]` target, other business hours): the daemon runs it at start, and only when the
policy's fingerprint differs from the one stored, so most starts cost one SELECT.
What the escalation job already sent (`*_warned_at`, `*_breached_at`) is kept: a changed
target never sends a warning twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.enums import Priority, TicketStatus
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Setting, Ticket, TicketEvent, TicketSla, as_utc
from mailhelpdesk.domain.sla import Mark, SlaPolicy, Target, deadlines
from mailhelpdesk.store import events as event_store
from mailhelpdesk.store import lookups
from mailhelpdesk.store import sla as store

log = logging.getLogger(__name__)

# the events that can move a due time
MOVING = frozenset(
    {
        EventType.created,
        EventType.agent_response,
        EventType.status,
        EventType.priority,
        EventType.queue,
    }
)
_POLICY_KEY = "sla_policy"
_STATUS_MARKS = {
    TicketStatus.open.value: Mark.opened,
    TicketStatus.on_hold.value: Mark.held,
    TicketStatus.closed.value: Mark.closed,
}


def timeline(rows: Sequence[TicketEvent]) -> list[tuple[datetime, Mark]]:
    """The clock marks of a ticket's events, in order."""
    marks: list[tuple[datetime, Mark]] = []
    for row in rows:
        at = as_utc(row.at)
        assert at is not None
        if row.type == EventType.created:
            marks.append((at, Mark.opened))
        elif row.type == EventType.agent_response:
            marks.append((at, Mark.answered))
        elif row.type == EventType.status:
            mark = _STATUS_MARKS.get(str(event_store.data_of(row).get("to")))
            if mark is not None:
                marks.append((at, mark))
    return marks


def track(
    session: Session, ticket: Ticket, event: EventType, policy: SlaPolicy, now: datetime
) -> None:
    """Recompute the ticket's due times if `event` can move them (see the module doc).

    A `created` event is a new ticket's first (services/tickets.create_ticket records it right
    after writing the ticket, and nothing else records one): it has no `ticket_sla` row yet and
    its timeline is that one event, so its row is computed from what is in hand and written with
    one INSERT, without reading the row or the events (the primary key would refuse a second
    row, so a broken assumption fails loudly instead of keeping two)."""
    if event == EventType.created:
        store.insert(session, _due_times(session, ticket, policy, [(_utc(now), Mark.opened)], now))
    elif event in MOVING:
        refresh(session, ticket, policy, now)


def refresh(session: Session, ticket: Ticket, policy: SlaPolicy, now: datetime) -> TicketSla:
    """Recompute and store the ticket's due times from its events."""
    ticket_id = ticket.id or 0
    row = store.get(session, ticket_id) or TicketSla(ticket_id=ticket_id, computed_at=now)
    values = _due_times(
        session, ticket, policy, timeline(event_store.for_ticket(session, ticket_id)), now
    )
    for name, value in values.items():
        setattr(row, name, value)
    store.save(session, row)
    return row


def _due_times(
    session: Session,
    ticket: Ticket,
    policy: SlaPolicy,
    marks: list[tuple[datetime, Mark]],
    now: datetime,
) -> dict[str, Any]:
    """The `ticket_sla` row's computed columns for a ticket with these clock marks."""
    queue = lookups.queue_name(session, ticket.queue_id)
    rule = policy.rule_for(queue, Priority(ticket.priority).name.capitalize())
    found = deadlines(policy, rule, marks) if rule is not None else {}
    values: dict[str, Any] = {
        "ticket_id": ticket.id or 0,
        "rule": rule.name if rule is not None else "",
        "computed_at": now,
    }
    for target in Target:
        due = found.get(target)
        values[f"{target.value}_due_at"] = due.due_at if due else None
        values[f"{target.value}_warn_at"] = due.warn_at if due else None
    return values


def _utc(at: datetime) -> datetime:
    aware = as_utc(at)
    assert aware is not None
    return aware


def policy_is_current(session: Session, policy: SlaPolicy) -> bool:
    """Whether the open tickets' due times were computed under this policy."""
    stored = session.get(Setting, _POLICY_KEY)
    return stored is not None and stored.value == policy.fingerprint()


def recompute_slice(
    session: Session, policy: SlaPolicy, now: datetime, *, after_id: int, limit: int
) -> tuple[int, int] | None:
    """Recompute the next `limit` open tickets after `after_id`: (the last id, how many), or
    None when none are left. A daemon walks a large desk a slice per transaction, so ingest and
    the API write between slices instead of waiting for the whole desk."""
    ids = store.open_ticket_ids(session, after_id=after_id, limit=limit)
    for ticket_id in ids:
        ticket = session.get(Ticket, ticket_id)
        if ticket is not None:
            refresh(session, ticket, policy, now)
    return (ids[-1], len(ids)) if ids else None


def mark_policy_current(session: Session, policy: SlaPolicy) -> None:
    """Every open ticket is computed under `policy` (recorded after the last slice; a daemon
    stopped half-way recomputes from the start next time, which refresh makes harmless)."""
    session.merge(Setting(key=_POLICY_KEY, value=policy.fingerprint()))
    session.flush()


def recompute_open(session: Session, policy: SlaPolicy, now: datetime) -> int | None:
    """Recompute every open or on-hold ticket when the policy changed since the last run, in
    one transaction; returns how many, or None when nothing changed."""
    if policy_is_current(session, policy):
        return None
    count, after = 0, 0
    while (done := recompute_slice(session, policy, now, after_id=after, limit=500)) is not None:
        after, count = done[0], count + done[1]
    mark_policy_current(session, policy)
    log.info("sla due times recomputed tickets=%s", count)
    return count


def sla_view(row: TicketSla | None) -> dict[str, Any]:
    """The ticket object's `sla` (resources.md §2): due times and the targets already missed."""

    def iso(value: datetime | None) -> str | None:
        aware = as_utc(value)
        return aware.isoformat() if aware else None

    if row is None:
        return {"first_response_due_at": None, "resolution_due_at": None, "breached": []}
    return {
        "first_response_due_at": iso(row.first_response_due_at),
        "resolution_due_at": iso(row.resolution_due_at),
        "breached": [
            target.value
            for target in Target
            if getattr(row, f"{target.value}_breached_at") is not None
        ],
    }
