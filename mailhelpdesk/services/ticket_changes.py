"""Changes to a ticket's state: status, assignee, priority, tags.

The one code path for them: agents' mail commands (ingest), the HTTP API, the CLI and the
scheduler call these functions. Like every service they take the session and a ChangeContext,
flush but never commit, and record each change as one ticket event; what the event causes
(closing a ticket sends `ticket_closed` to the customer, reopening a closed one
`ticket_reopened`, webhooks) is decided in services/reactions.py, the same for every channel.

`check_*` functions validate without changing anything, so a caller holding several changes
(one agent mail with `#assign` and `#status`) can refuse them all before applying any. Every
error is an `InvalidInputError` with a short message meant for the person who asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlmodel import Session, select

from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.domain.enums import Priority, TicketStatus
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Agent, Queue, Ticket, TicketTag, as_utc
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import custom_fields, events
from mailhelpdesk.services.context import ChangeContext
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
    change: ChangeContext,
    resolution: str | None = None,
    comment: str | None = None,
    notify_customer: bool = True,
    cause: str | None = None,
) -> bool:
    """Set the status; True when it changed (one `status` event with from, to and what was
    said with it). `cause` "reply" marks a change a message made (a reply reactivating the
    ticket), which mails nothing of its own (services/reactions.py)."""
    value = check_status(status, on_hold_until)
    before = TicketStatus(ticket.status)
    was_until = ticket.on_hold_until
    if before == value and ticket.on_hold_until == on_hold_until:
        return False
    if value == TicketStatus.closed:  # every channel closes here: custom_fields required_to_close
        missing = custom_fields.closing_errors(session, ticket, change.notices.custom_fields)
        if missing:
            raise custom_fields.CustomFieldErrors(missing)
    now = change.clock.now()
    ticket.status = value.value
    ticket.on_hold_until = on_hold_until if value == TicketStatus.on_hold else None
    ticket.resolved_at = now if value == TicketStatus.closed else None
    if value == TicketStatus.closed:
        ticket.resolution = resolution or None  # the ticket object shows the last close's
    ticket.updated_at = now
    session.add(ticket)
    session.flush()
    data: dict[str, object] = {"from": before.value, "to": value.value}
    if on_hold_until is not None:
        data["on_hold_until"] = on_hold_until.isoformat()
    if was_until is not None and before == TicketStatus.on_hold:
        data["was_on_hold_until"] = was_until.isoformat()
    if resolution:
        data["resolution"] = resolution
    if comment:
        data["comment"] = comment
    if not notify_customer:
        data["notify_customer"] = False
    if cause:
        data["cause"] = cause
    events.record(session, ticket, EventType.status, data, change=change)
    return True


def check_assignee(session: Session, email: str | None) -> Agent | None:
    """The agent for `email` (None for nobody), or InvalidInputError when no agent has it."""
    if email is None or not email.strip():
        return None
    agent = store.find_agent(session, email)
    if agent is None:
        raise InvalidInputError(f"{email} is not an agent")
    return agent


def assign(session: Session, ticket: Ticket, email: str | None, *, change: ChangeContext) -> bool:
    """Assign the ticket to the agent with `email` (None: unassign); True when it changed."""
    agent = check_assignee(session, email)
    new = agent.email.lower() if agent else None
    if ticket.assigned_to_email == new:
        return False
    previous, ticket.assigned_to_email = ticket.assigned_to_email, new
    _touch(session, ticket, change)
    events.record(session, ticket, EventType.assigned, {"from": previous, "to": new}, change=change)
    return True


def check_priority(priority: str | int | Priority) -> Priority:
    if isinstance(priority, Priority):
        return priority
    try:
        return Priority.from_name(str(priority))
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def set_priority(
    session: Session, ticket: Ticket, priority: str | int | Priority, *, change: ChangeContext
) -> bool:
    value = check_priority(priority)
    if ticket.priority == int(value):
        return False
    before = Priority(ticket.priority) if ticket.priority in Priority._value2member_map_ else None
    ticket.priority = int(value)
    _touch(session, ticket, change)
    events.record(
        session,
        ticket,
        EventType.priority,
        {"from": _priority_name(before), "to": _priority_name(value)},
        change=change,
    )
    return True


def _priority_name(value: Priority | None) -> str | None:
    return value.name.capitalize() if value is not None else None


def check_tag(name: str) -> str:
    tag = " ".join(name.split())
    if not tag:
        raise InvalidInputError("a tag needs a name")
    if len(tag) > MAX_TAG_CHARS:
        raise InvalidInputError(f"a tag is at most {MAX_TAG_CHARS} characters")
    return tag


def tag(session: Session, ticket: Ticket, name: str, *, change: ChangeContext) -> bool:
    """Add a tag (idempotent); True when it was not there."""
    value = check_tag(name)
    if value in store.tags_of(session, ticket.id or 0):
        return False
    session.add(TicketTag(ticket_id=ticket.id or 0, name=value))
    _touch(session, ticket, change)
    events.record(session, ticket, EventType.tag_added, {"tag": value}, change=change)
    return True


def untag(session: Session, ticket: Ticket, name: str, *, change: ChangeContext) -> bool:
    """Remove a tag; True when it was there (removing an absent tag is not an error)."""
    value = check_tag(name)
    row = session.exec(
        select(TicketTag).where(TicketTag.ticket_id == ticket.id, TicketTag.name == value)
    ).first()
    if row is None:
        return False
    session.delete(row)
    _touch(session, ticket, change)
    events.record(session, ticket, EventType.tag_removed, {"tag": value}, change=change)
    return True


def _touch(session: Session, ticket: Ticket, change: ChangeContext) -> None:
    ticket.updated_at = change.clock.now()
    session.add(ticket)
    session.flush()


@dataclass(frozen=True)
class TicketUpdate:
    """Several changes to one ticket, asked for together (CLI `ticket update`, the API's PATCH):
    all are checked before any is applied, so they happen all or not at all. `assign` "none"
    unassigns, as `#assign none` does; None leaves a field as it is."""

    status: str | None = None
    on_hold_until: date | None = None
    resolution: str | None = None
    comment: str | None = None
    priority: str | None = None
    assign: str | None = None
    tags_add: tuple[str, ...] = ()
    tags_remove: tuple[str, ...] = ()
    notify_customer: bool = True
    # custom fields: name -> typed value (None clears); written before the status
    custom_fields: Mapping[str, Any] = field(default_factory=dict)
    # housekeeping (resources.md §2): None leaves each as it is; `clear_due` removes the due date
    subject: str | None = None
    queue: str | None = None
    due_at: datetime | None = None
    clear_due: bool = False


def check_update(
    session: Session,
    ticket: Ticket,
    update: TicketUpdate,
    *,
    definitions: Sequence[CustomFieldConfig] = (),
) -> dict[str, str]:
    """What is wrong with `update`, by field (empty: it can be applied). `definitions` are the
    custom fields the values of `update.custom_fields` are checked against."""
    errors: dict[str, str] = _check_custom_fields(session, ticket, update, definitions)
    checks: list[tuple[str, Callable[[], object]]] = [
        ("tags", lambda name=name: check_tag(name))  # type: ignore[misc]
        for name in (*update.tags_add, *update.tags_remove)
    ]
    if update.status is not None or update.on_hold_until is not None:
        status = update.status if update.status is not None else ticket.status
        checks.append(("status", lambda: check_status(status, update.on_hold_until)))
    if update.priority is not None:
        checks.append(("priority", lambda: check_priority(update.priority or "")))
    if update.assign is not None and update.assign.lower() != "none":
        checks.append(("assign", lambda: check_assignee(session, update.assign)))
    if update.subject is not None:
        checks.append(("subject", lambda: check_subject(update.subject or "")))
    if update.queue is not None:
        checks.append(("queue", lambda: check_queue(session, update.queue or "")))
    if update.due_at is not None and update.clear_due:
        checks.append(("due_at", lambda: _refuse("a due date, or none, not both")))
    for field_name, check in checks:
        try:
            check()
        except InvalidInputError as exc:
            errors.setdefault(field_name, str(exc))
    return errors


def update(
    session: Session, ticket: Ticket, changes: TicketUpdate, *, change: ChangeContext
) -> list[str]:
    """Apply `changes` through the one path of each (each an event of its own); returns the
    names of what changed. Raises InvalidInputError (naming the fields) before changing
    anything. The status goes last, so a closing notice shows the ticket as it ends up."""
    errors = check_update(session, ticket, changes, definitions=change.notices.custom_fields)
    if errors:
        raise InvalidInputError("; ".join(f"{k}: {v}" for k, v in errors.items()))
    changed: list[str] = []
    if changes.custom_fields:
        changed += [
            f"custom_fields.{name}"
            for name in custom_fields.set_values(
                session, ticket, changes.custom_fields, change=change
            )
        ]
    if changes.assign is not None:
        who = None if changes.assign.lower() == "none" else changes.assign
        if assign(session, ticket, who, change=change):
            changed.append("assign")
    if changes.priority is not None and set_priority(
        session, ticket, changes.priority, change=change
    ):
        changed.append("priority")
    if changes.subject is not None and set_subject(session, ticket, changes.subject, change=change):
        changed.append("subject")
    if changes.queue is not None and move(session, ticket, changes.queue, change=change):
        changed.append("queue")
    if (changes.due_at is not None or changes.clear_due) and set_due(
        session, ticket, changes.due_at, change=change
    ):
        changed.append("due_at")
    changed += [
        f"+{check_tag(name)}"
        for name in changes.tags_add
        if tag(session, ticket, name, change=change)
    ]
    changed += [
        f"-{check_tag(name)}"
        for name in changes.tags_remove
        if untag(session, ticket, name, change=change)
    ]
    if changes.status is not None or changes.on_hold_until is not None:
        status = changes.status if changes.status is not None else ticket.status
        if set_status(
            session,
            ticket,
            status,
            on_hold_until=changes.on_hold_until,
            resolution=changes.resolution,
            comment=changes.comment,
            notify_customer=changes.notify_customer,
            change=change,
        ):
            changed.append("status")
    return changed


def _check_custom_fields(
    session: Session,
    ticket: Ticket,
    update: TicketUpdate,
    definitions: Sequence[CustomFieldConfig],
) -> dict[str, str]:
    """The custom field values of `update`, and a close that would leave a field unset that is
    `required_to_close` (the values written with the close count)."""
    checked, errors = custom_fields.check_values(definitions, update.custom_fields)
    closing = update.status == TicketStatus.closed and ticket.status != TicketStatus.closed
    if closing and not errors:
        errors.update(custom_fields.closing_errors(session, ticket, definitions, checked))
    return errors


# -- housekeeping: subject, queue, due date (resources.md §2) -----------------------------------

MAX_SUBJECT_CHARS = 998


def _refuse(message: str) -> None:
    raise InvalidInputError(message)


def check_subject(subject: str) -> str:
    value = " ".join(subject.split())
    if not value:
        raise InvalidInputError("a subject must not be empty")
    if len(value) > MAX_SUBJECT_CHARS:
        raise InvalidInputError(f"a subject is at most {MAX_SUBJECT_CHARS} characters")
    return value


def set_subject(session: Session, ticket: Ticket, subject: str, *, change: ChangeContext) -> bool:
    """Rename the ticket (one `subject` event with from and to); True when it changed."""
    value = check_subject(subject)
    if ticket.subject == value:
        return False
    previous, ticket.subject = ticket.subject, value
    _touch(session, ticket, change)
    events.record(
        session, ticket, EventType.subject, {"from": previous, "to": value}, change=change
    )
    return True


def check_queue(session: Session, name: str) -> Queue:
    """The queue called `name` (any case), or InvalidInputError: queues come from the config."""
    wanted = name.strip().lower()
    found = next((q for q in session.exec(select(Queue)) if q.name.lower() == wanted), None)
    if found is None:
        raise InvalidInputError(f"unknown queue {name!r}")
    return found


def move(session: Session, ticket: Ticket, name: str, *, change: ChangeContext) -> bool:
    """Move the ticket to the queue `name` (one `queue` event); True when it moved."""
    queue = check_queue(session, name)
    if ticket.queue_id == queue.id:
        return False
    before = session.get(Queue, ticket.queue_id)
    ticket.queue_id = queue.id or 0
    _touch(session, ticket, change)
    data = {"from": before.name if before else None, "to": queue.name}
    events.record(session, ticket, EventType.queue, data, change=change)
    return True


def set_due(
    session: Session, ticket: Ticket, due_at: datetime | None, *, change: ChangeContext
) -> bool:
    """Set (or with None clear) the due date: one `due_date` event with from and to (ISO 8601,
    UTC); True when it changed."""
    value = as_utc(due_at)
    before = as_utc(ticket.due_at)
    if value == before:
        return False
    ticket.due_at = value
    _touch(session, ticket, change)
    data = {
        "from": before.isoformat() if before else None,
        "to": value.isoformat() if value else None,
    }
    events.record(session, ticket, EventType.due_date, data, change=change)
    return True


def end_of_day(day: date) -> datetime:
    """A due *date* (CLI `--due`, mail `#due`) is due by the end of that day, UTC."""
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
