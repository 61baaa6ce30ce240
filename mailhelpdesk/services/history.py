"""A ticket's history as users read it (resources.md §2 `…/history`, §5 `ticket history`):
its events, in the order they happened, each with who, through which channel, and what."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.models import TicketEvent, as_utc
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.store import events as store
from mailhelpdesk.store import tickets as ticket_store


def event_view(row: TicketEvent) -> dict[str, Any]:
    at = as_utc(row.at)
    return {
        "id": str(row.id),
        "type": row.type,
        "at": at.isoformat() if at else None,
        "actor": {"kind": row.actor_kind, "email": row.actor_email, "name": row.actor_name},
        "channel": row.channel,
        "data": store.data_of(row),
    }


def history(session: Session, *, ticket_number: int) -> dict[str, Any]:
    """`{ticket_number, events: [...]}`, oldest first; NotFoundError for an unknown ticket."""
    ticket = ticket_store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    rows = store.for_ticket(session, ticket.id or 0)
    return {"ticket_number": ticket.number, "events": [event_view(row) for row in rows]}


def describe(event: dict[str, Any]) -> str:
    """One line of `ticket history` for a person: what happened, in words."""
    data = event["data"]
    kind = event["type"]
    if kind == "created":
        return f"created in {data.get('queue')}: {data.get('subject')}"
    if kind == "status":
        text = f"status {data.get('from')} -> {data.get('to')}"
        if data.get("on_hold_until"):
            text += f" until {data['on_hold_until']}"
        if data.get("cause"):
            text += f" ({data['cause']})"
        for key in ("resolution", "comment"):
            if data.get(key):
                text += f"; {key}: {data[key]}"
        return text
    if kind in ("assigned", "priority", "queue", "subject"):
        return f"{kind} {data.get('from') or 'none'} -> {data.get('to') or 'none'}"
    if kind in ("tag_added", "tag_removed"):
        return f"{kind.replace('_', ' ')}: {data.get('tag')}"
    if kind == "intervention":
        return f"intervention {data.get('name')} ({data.get('uid')}): {data.get('step')}"
    if kind == "custom_field":
        return f"field {data.get('name')}: {data.get('from')} -> {data.get('to')}"
    if kind == "time_entry":
        text = f"time {data.get('minutes')} min" + (" billable" if data.get("billable") else "")
        return text + (f": {data['description']}" if data.get("description") else "")
    if kind == "due_date":
        return f"due {data.get('from') or 'none'} -> {data.get('to') or 'none'}"
    if kind == "merged":
        if data.get("into"):
            return f"merged into #{data['into']} ({data.get('responses_moved')} messages)"
        return f"merged #{data.get('from')} in ({data.get('responses_moved')} messages)"
    if kind == "forwarded":
        return "forwarded to " + ", ".join(str(a) for a in data.get("to", []))
    if kind in ("watcher_added", "watcher_removed"):
        return f"{kind.replace('_', ' ')}: {data.get('email')}"
    if kind == "command_refused":
        return f"mail command refused: {data.get('line')}: {data.get('error')}"
    if "response_id" in data:
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return f"{kind.replace('_', ' ')} #{data['response_id']}{reason}"
    return str(kind)
