"""Trash, restore, purge and merge (resources.md §2 and §5).

**Trash.** `trash` sets `deleted_at` and records a `deleted` event; from then on the ticket is
absent to every read and write (store/tickets.py `get_ticket_by_number` leaves it out, so GET,
PATCH, history and the lists say 404 / leave it out) until `restore` brings it back (a
`restored` event). `purge_trashed`, a scheduler job, deletes tickets trashed longer than
`[lifecycle] purge_trashed_after` with every row that hangs off them.

Mail that threads to a trashed ticket (its signed reply address, a Message-ID it knows, its
subject tag) does NOT reach it: the ticket is absent, so the mail opens a new ticket as mail
about an unknown ticket does. That is the same before and after the purge, never brings spam
back out of the trash, and loses nothing: the customer's message is on the new ticket.

**Merge.** `merge` moves every response of the source to the target, records a `merged` event on
both (`{into}` on the source, `{from}` on the target, each with `responses_moved`), then closes
the source through the one status path with the resolution "Merged into #M" and no closing notice
to its customer (their conversation goes on in the target). The source keeps `merged_into`;
ingest follows it (store/tickets.py `follow_merges`), so a reply to one of the source's notices
(its signed Reply-To, or a Message-ID it knows) lands on the target from then on. The source's
CCs are not copied (merged tickets may be different customers' reports of one problem; the
target's customers must not start getting each other's mail); the source's customer is a party
of the target through their moved messages, so their mail with only the subject tag lands too.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.enums import TicketStatus
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.errors import ConflictError, NotFoundError
from mailhelpdesk.services import events, ticket_changes
from mailhelpdesk.services.api_requests import FieldError
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.views import ticket_object
from mailhelpdesk.store import housekeeping as store
from mailhelpdesk.store import tickets as ticket_store

log = logging.getLogger(__name__)


def _ticket(session: Session, number: int) -> Ticket:
    ticket = ticket_store.get_ticket_by_number(session, number)
    if ticket is None:
        raise NotFoundError(f"Ticket {number} not found.")
    return ticket


def trash(session: Session, *, ticket_number: int, change: ChangeContext) -> dict[str, Any]:
    """Put the ticket in the trash (NotFoundError when it is unknown or already there)."""
    ticket = _ticket(session, ticket_number)
    now = change.clock.now()
    ticket.deleted_at = now
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    events.record(session, ticket, EventType.deleted, {}, change=change)
    return {"ticket_number": ticket.number, "deleted": True}


def restore(session: Session, *, ticket_number: int, change: ChangeContext) -> dict[str, Any]:
    """Take the ticket out of the trash; ConflictError when it is not in it."""
    ticket = ticket_store.get_ticket_in_trash(session, ticket_number)
    if ticket is None:
        if ticket_store.get_ticket_by_number(session, ticket_number) is not None:
            raise ConflictError(f"Ticket {ticket_number} is not in the trash.")
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    ticket.deleted_at = None
    ticket.updated_at = change.clock.now()
    session.add(ticket)
    session.flush()
    events.record(session, ticket, EventType.restored, {}, change=change)
    return ticket_object(session, ticket, public_url=change.notices.public_url)


def purge_trashed(
    session: Session, *, change: ChangeContext, older_than_s: int, limit: int = 200
) -> list[int]:
    """Delete, for good, tickets in the trash for longer than `older_than_s`; returns their
    numbers. Safe from several daemons: the rows are locked (SKIP LOCKED on PostgreSQL)."""
    cutoff = change.clock.now() - timedelta(seconds=older_than_s)
    purged = []
    for ticket in store.trashed_before(session, cutoff, limit=limit):
        number = ticket.number
        store.purge_ticket(session, ticket)
        log.info("trashed ticket purged ticket=%s", number)
        purged.append(number)
    return purged


def purge_unreferenced_blobs(session: Session) -> int:
    """Delete attachment bytes no attachment uses (the scheduler's job, `[lifecycle]
    purge_unreferenced_blobs`); returns how many. Idempotent, so safe from several daemons."""
    purged = store.purge_unreferenced_blobs(session)
    if purged:
        log.info("unreferenced blobs purged count=%s", purged)
    return purged


MERGED_RESOLUTION = "Merged into #{number}"


def check_merge(session: Session, *, ticket_number: int, into: int) -> tuple[Ticket, Ticket]:
    """(source, target), or the error: 404 unknown source, 422 unknown target, 409 merging a
    ticket into itself, into a trashed ticket, or a ticket already merged (or into one)."""
    source = _ticket(session, ticket_number)
    if into == ticket_number:
        raise ConflictError(f"Ticket {ticket_number} cannot be merged into itself.")
    target = ticket_store.get_ticket_by_number(session, into)
    if target is None:
        if ticket_store.get_ticket_in_trash(session, into) is not None:
            raise ConflictError(f"Ticket {into} is in the trash.")
        raise FieldError("into", f"ticket {into} not found")
    if source.merged_into is not None:
        raise ConflictError(
            f"Ticket {ticket_number} was already merged into #{source.merged_into}."
        )
    if target.merged_into is not None:
        raise ConflictError(f"Ticket {into} was merged into #{target.merged_into}.")
    return source, target


def merge(
    session: Session, *, ticket_number: int, into: int, change: ChangeContext
) -> dict[str, Any]:
    """Merge ticket `ticket_number` into `into` (see the module doc); returns the target's
    ticket object."""
    source, target = check_merge(session, ticket_number=ticket_number, into=into)
    moved = store.move_responses(session, source_id=source.id or 0, target_id=target.id or 0)
    now = change.clock.now()
    source.merged_into = target.number
    source.updated_at = target.updated_at = now
    session.add(source)
    session.add(target)
    session.flush()
    events.record(
        session,
        source,
        EventType.merged,
        {"into": target.number, "responses_moved": moved},
        change=change,
    )
    events.record(
        session,
        target,
        EventType.merged,
        {"from": source.number, "responses_moved": moved},
        change=change,
    )
    if source.status != TicketStatus.closed:
        ticket_changes.set_status(
            session,
            source,
            TicketStatus.closed.value,
            resolution=MERGED_RESOLUTION.format(number=target.number),
            notify_customer=False,
            change=change,
        )
    else:
        source.resolution = MERGED_RESOLUTION.format(number=target.number)
        session.add(source)
        session.flush()
    log.info("ticket merged ticket=%s into=%s responses=%s", source.number, target.number, moved)
    return ticket_object(session, target, public_url=change.notices.public_url)
