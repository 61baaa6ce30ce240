"""Jobs that change tickets because time passed, not because someone wrote: the on-hold
wake-up, the auto-close of tickets waiting on their customer, and the reminder of tickets
nobody touched (`[lifecycle]`). Each keeps what it did in the store (the ticket's status, or
`TicketSla.reminded_at`), so a restart or a second daemon never does it twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import TicketStatus
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket, as_utc
from mailhelpdesk.services import custom_fields, events, sla, ticket_changes
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import lifecycle as lifecycle_store
from mailhelpdesk.store import sla as sla_store

log = logging.getLogger(__name__)


def wake_on_hold(session: Session, *, change: ChangeContext, limit: int = 500) -> list[int]:
    """Open every on-hold ticket whose on-hold-until date has come (today, UTC). Returns the
    woken ticket numbers. Each is one `status` event through the one status path, so its
    assignee (else every agent) hears of it as services/reactions.py decides for any channel.
    Safe to run often and from several daemons: the due rows are locked (SKIP LOCKED on
    PostgreSQL) and a woken ticket is no longer on hold, so it is never woken twice."""
    today = change.clock.now().date()
    due = session.exec(
        select(Ticket)
        .where(Ticket.status == TicketStatus.on_hold, col(Ticket.on_hold_until) <= today)
        .order_by(col(Ticket.on_hold_until), col(Ticket.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    woken = []
    for ticket in due:
        until = ticket.on_hold_until.isoformat() if ticket.on_hold_until else ""
        # the same change as an agent's `#status open`: the scheduler channel says who did it
        ticket_changes.set_status(session, ticket, TicketStatus.open.value, change=change)
        log.info("on-hold ticket woke ticket=%s was_until=%s", ticket.number, until)
        woken.append(ticket.number)
    return woken


AUTO_CLOSE_RESOLUTION = "Closed automatically: no reply from the customer for {days} days."


def auto_close(
    session: Session, *, change: ChangeContext, after_s: int, limit: int = 200
) -> list[int]:
    """Close every open ticket that waits on its customer (its last public message is an
    agent's answer) with no reply for `after_s` seconds; returns their numbers. Each is closed
    through the one status path, so the customer gets the closing notice. Safe to run again
    and from several daemons: a closed ticket is no longer a candidate, and the rows are locked
    (SKIP LOCKED on PostgreSQL). A ticket that cannot be closed (a custom field required to
    close is unset) is left open and logged."""
    now = change.clock.now()
    cutoff = now - timedelta(seconds=after_s)
    days = max(1, round(after_s / 86400))
    closed = []
    for ticket in lifecycle_store.quiet_tickets(
        session, status=TicketStatus.open, cutoff=cutoff, limit=limit
    ):
        last = lifecycle_store.last_public_message(session, ticket.id or 0)
        if (
            last is None
            or last.type != EventType.agent_response
            or (as_utc(last.at) or now) > cutoff
        ):
            continue
        try:
            ticket_changes.set_status(
                session,
                ticket,
                TicketStatus.closed.value,
                resolution=AUTO_CLOSE_RESOLUTION.format(days=days),
                change=change,
            )
        except custom_fields.CustomFieldErrors as exc:
            log.warning("auto-close refused ticket=%s reason=%s", ticket.number, exc)
            continue
        log.info("ticket closed automatically ticket=%s", ticket.number)
        closed.append(ticket.number)
    return closed


def remind_untouched(
    session: Session, *, change: ChangeContext, after_s: int, limit: int = 200
) -> list[int]:
    """Remind the assignee (else every agent) of each open ticket nobody changed for `after_s`
    seconds: one `reminder` event, whose notice services/reactions.py sends. Once per quiet
    spell: `TicketSla.reminded_at` is claimed with a conditional UPDATE, and a ticket is
    reminded of again only after a change and another `after_s` of quiet. Returns the numbers."""
    now = change.clock.now()
    cutoff = now - timedelta(seconds=after_s)
    reminded = []
    for ticket in lifecycle_store.quiet_tickets(
        session, status=TicketStatus.open, cutoff=cutoff, limit=limit
    ):
        row = sla_store.get(session, ticket.id or 0) or sla.refresh(
            session, ticket, change.notices.sla, now
        )
        updated = as_utc(ticket.updated_at)
        last = as_utc(row.reminded_at)
        if last is not None and updated is not None and last >= updated:
            continue
        if not sla_store.claim_reminder(
            session, ticket_id=row.ticket_id, previous=row.reminded_at, now=now
        ):
            continue
        quiet_days = (now - updated).days if updated else 0
        events.record(
            session, ticket, EventType.reminder, {"untouched_days": quiet_days}, change=change
        )
        log.info("untouched ticket reminder ticket=%s days=%s", ticket.number, quiet_days)
        reminded.append(ticket.number)
    return reminded
