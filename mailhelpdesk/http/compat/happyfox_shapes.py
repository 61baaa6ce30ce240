"""HappyFox's ticket object (the document's "Ticket detail page" answer), built from the native
ticket object (services/views.py) and the ticket's history (services/history.py): the adapter
reads what the native API reads, and only renames and regroups it.

`updates` are the history regrouped: consecutive events by the same actor through the same
channel within UPDATE_WINDOW_S form one update (a staff update that replies, closes and
re-prioritises is one update, as HappyFox shows it); a message event gives the update its
`message`, the other events its `*_change` members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.models import Agent
from mailhelpdesk.errors import ContactNotFoundError
from mailhelpdesk.http.compat.happyfox_route import PREFIX
from mailhelpdesk.http.compat.happyfox_vocab import Vocabulary, timestamp
from mailhelpdesk.services import contacts, directory, history

UPDATE_WINDOW_S = 2.0
MESSAGE_EVENTS = ("created", "customer_reply", "agent_response", "note", "held")


@dataclass
class Lookups:
    """What several tickets of one answer share, read once per request."""

    session: Session
    vocab: Vocabulary
    agents: dict[str, Agent] = field(default_factory=dict)  # lower-cased email -> agent
    queues: dict[int, str] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session, vocab: Vocabulary) -> Lookups:
        agents = {a.email.lower(): a for a in directory.agents(session)}
        return cls(session, vocab, agents, directory.queues(session))

    def agent(self, email: str | None) -> Agent | None:
        return self.agents.get((email or "").lower())

    def agent_id(self, email: str | None) -> int | None:
        agent = self.agent(email)
        return agent.id if agent else None


def category_object(queue_id: int, name: str) -> dict[str, Any]:
    return {
        "prepopulate_cc": "",
        "description": "",
        "time_spent_mandatory": False,
        "public": True,
        "id": queue_id,
        "name": name,
    }


def staff_object(agent: Agent, lookups: Lookups) -> dict[str, Any]:
    own = [q.strip().lower() for q in agent.queues.replace(",", " ").split() if q.strip()]
    categories = sorted(
        qid for qid, name in lookups.queues.items() if not own or name.lower() in own
    )
    return {
        "name": agent.name or agent.email,
        "is_account_admin": False,
        "email": agent.email,
        "role": {"name": "Agent", "id": 1},
        "active": True,
        "id": agent.id,
        "categories": categories,
        "permissions": [],
    }


def subscriber_object(agent: Agent) -> dict[str, Any]:
    first, _, last = (agent.name or agent.email).partition(" ")
    return {"first_name": first, "last_name": last, "id": agent.id, "email": agent.email}


def user_object(lookups: Lookups, contact_id: int | None, email: str, name: str) -> dict[str, Any]:
    if contact_id is not None and contact_id in lookups.users:
        return lookups.users[contact_id]
    try:
        found = contacts.show(lookups.session, contact_id=contact_id) if contact_id else None
    except ContactNotFoundError:
        found = None
    phone = (found or {}).get("phone") or ""
    phones = [{"type": "o", "number": phone, "id": 1}] if phone else []
    pending = 0
    if found is not None:
        listed = contacts.tickets(lookups.session, contact_id=found["id"], page=1, per_page=1000)[
            "tickets"
        ]
        pending = sum(1 for t in listed if t["status"] != "closed")
    user = {
        "name": (found or {}).get("name") or name,
        "primary_phone": phones[0] if phones else None,
        "phones": phones,
        "created_at": timestamp((found or {}).get("created_at")),
        "updated_at": timestamp((found or {}).get("updated_at")),
        "pending_tickets_count": pending,
        "contact_groups": [],
        "tickets_count": (found or {}).get("ticket_count", 0),
        "id": contact_id,
        "email": (found or {}).get("email") or email,
        "custom_fields": [],
    }
    if contact_id is not None:
        lookups.users[contact_id] = user
    return user


def _attachment(number: int, a: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": f"{PREFIX}/api/1.1/json/ticket/{number}/attachments/{a['id']}/",
        "id": int(a["id"]),
        "filename": a["name"],
    }


def _message(
    number: int, response: dict[str, Any], forward: list[str] | None = None
) -> dict[str, Any]:
    return {
        "attachments": [_attachment(number, a) for a in response["attachments"]],
        "bcc_list": "",
        "text": response["plain_text"],
        "cc_list": "",
        "customer_updated": response["kind"] == "agent" and not response["is_internal"],
        "html": response["html"],
        "forward_list": ", ".join(forward) if forward else None,
        "message_type": "private_note" if response["is_internal"] else None,
        "subject": response["subject"],
    }


def _change(old: Any, new: Any, old_name: Any, new_name: Any) -> dict[str, Any]:
    return {"new_name": new_name, "new": new, "old": old, "old_name": old_name}


def _by(event: dict[str, Any], lookups: Lookups, ticket: dict[str, Any]) -> dict[str, Any]:
    actor = event["actor"]
    kind = actor["kind"]
    if kind == "agent":
        return {
            "email": actor["email"],
            "type": "staff",
            "id": lookups.agent_id(actor["email"]),
            "name": actor["name"],
        }
    if kind == "customer":
        own = (actor["email"] or "").lower() == ticket["originator_email"]
        return {
            "email": actor["email"],
            "type": "user",
            "id": ticket["contact_id"] if own else None,
            "name": actor["name"],
        }
    return {"email": None, "type": kind, "id": None, "name": actor["name"]}


def _blank_update(event: dict[str, Any], by: dict[str, Any]) -> dict[str, Any]:
    return {
        "priority_change": None,
        "category_change": None,
        "custom_field_change": None,
        "timestamp": timestamp(event["at"]),
        "due_date_change": None,
        "by": by,
        "time_spent": 0,
        "update_id": int(event["id"]),
        "message": None,
        "assignee_change": None,
        "status_change": None,
        "satisfaction_survey": None,
    }


def updates(
    ticket: dict[str, Any], events: Sequence[dict[str, Any]], lookups: Lookups, *, cf: bool
) -> list[dict[str, Any]]:
    """The ticket's updates, oldest first (see the module doc); custom field changes only
    with `cf` (the document's `show_cf_changes=true`)."""
    vocab, number = lookups.vocab, ticket["number"]
    responses = {r["id"]: r for r in ticket["responses"]}
    queue_ids = {name.lower(): qid for qid, name in lookups.queues.items()}
    found: list[dict[str, Any]] = []
    last: tuple[Any, ...] | None = None
    last_at: datetime | None = None
    for event in events:
        at = datetime.fromisoformat(event["at"])
        actor = (event["actor"]["kind"], event["actor"]["email"], event["channel"])
        data, kind = event["data"], event["type"]
        joins = (
            found
            and last == actor
            and last_at is not None
            and (at - last_at).total_seconds() <= UPDATE_WINDOW_S
        )
        message_id = str(data.get("response_id")) if kind in MESSAGE_EVENTS else None
        if joins and message_id is not None and found[-1]["message"] is not None:
            joins = False  # one message per update
        if not joins:
            found.append(_blank_update(event, _by(event, lookups, ticket)))
        update = found[-1]
        last, last_at = actor, at
        if message_id is not None and message_id in responses:
            update["message"] = _message(number, responses[message_id])
        elif kind == "status":
            update["status_change"] = _change(
                vocab.status_id(data.get("from")),
                vocab.status_id(data.get("to")),
                vocab.status_object(data["from"])["name"] if data.get("from") else None,
                vocab.status_object(data["to"])["name"] if data.get("to") else None,
            )
        elif kind == "priority":
            old, new = vocab.priority_named(data.get("from")), vocab.priority_named(data.get("to"))
            update["priority_change"] = _change(
                old.id if old else None,
                new.id if new else None,
                old.name if old else None,
                new.name if new else None,
            )
        elif kind == "assigned":
            old_agent, new_agent = lookups.agent(data.get("from")), lookups.agent(data.get("to"))
            update["assignee_change"] = _change(
                old_agent.id if old_agent else None,
                new_agent.id if new_agent else None,
                (old_agent.name or old_agent.email) if old_agent else None,
                (new_agent.name or new_agent.email) if new_agent else None,
            )
        elif kind == "queue":
            update["category_change"] = _change(
                queue_ids.get(str(data.get("from") or "").lower()),
                queue_ids.get(str(data.get("to") or "").lower()),
                data.get("from"),
                data.get("to"),
            )
        elif kind == "due_date":
            update["due_date_change"] = {
                "new": (data.get("to") or "")[:10] or None,
                "old": (data.get("from") or "")[:10] or None,
            }
        elif kind == "time_entry":
            update["time_spent"] += int(data.get("minutes") or 0)
        elif kind == "custom_field" and cf:
            field = next((f for f in vocab.fields if f.name == data.get("name")), None)
            change = {
                "id": vocab.field_id(field.name) if field else None,
                "name": (field.label or field.name) if field else data.get("name"),
                "old": data.get("from"),
                "new": data.get("to"),
            }
            update["custom_field_change"] = [*(update["custom_field_change"] or []), change]
        elif kind == "forwarded":
            update["message"] = {
                **_blank_forward(),
                "forward_list": ", ".join(data.get("to", [])),
                "text": data.get("note") or "",
            }
    return found


def _blank_forward() -> dict[str, Any]:
    return {
        "attachments": [],
        "bcc_list": "",
        "text": "",
        "cc_list": "",
        "customer_updated": False,
        "html": None,
        "forward_list": None,
        "message_type": "forward",
        "subject": "",
    }


def ticket_detail(
    ticket: dict[str, Any],
    lookups: Lookups,
    *,
    with_updates: bool = True,
    cf: bool = False,
) -> dict[str, Any]:
    """HappyFox's ticket object for a native ticket object (services/views.py)."""
    vocab = lookups.vocab
    number = ticket["number"]
    responses = ticket["responses"]
    ordered = sorted(responses, key=lambda r: (r["created_at"] or "", int(r["id"])))
    public = [r for r in ordered if not r["is_internal"]]
    customer = [r for r in public if r["kind"] == "customer"]
    staff = [r for r in public if r["kind"] == "agent"]
    last_user = customer[-1]["created_at"] if customer else None
    last_staff = staff[-1]["created_at"] if staff else None
    replies = [t for t in (last_user, last_staff) if t]
    events = history.history(lookups.session, ticket_number=number)["events"]
    created = next((e for e in events if e["type"] == "created"), None)
    assignee = lookups.agent(ticket["assigned_to_email"])
    values = ticket["custom_fields"]
    merged_in = [
        int(e["data"]["from"]) for e in events if e["type"] == "merged" and e["data"].get("from")
    ]
    result: dict[str, Any] = {
        "status": vocab.status_object(ticket["status"]),
        "first_message": ordered[0]["plain_text"] if ordered else "",
        "last_user_reply_at": timestamp(last_user),
        "time_spent": ticket["time_spent_minutes"],
        "id": number,
        "messages_count": len(public),
        "subject": ticket["subject"],
        "category": category_object(int(ticket["queue_id"]), ticket["queue"]),
        "attachments_count": sum(len(r["attachments"]) for r in responses),
        "last_updated_at": timestamp(max(replies)) if replies else timestamp(ticket["created_at"]),
        "priority": vocab.priority_object(int(ticket["priority"])),
        "last_staff_reply_at": timestamp(last_staff),
        "custom_fields": [vocab.field_view(f, values.get(f.name)) for f in vocab.fields],
        "sla_breaches": sum(1 for e in events if e["type"] == "sla_breach"),
        "merged_tickets": merged_in,
        "visible_only_staff": bool(ordered and ordered[0]["is_internal"]),
        "display_id": vocab.display_id(number),
        "due_date": (ticket["due_at"] or "")[:10] or None,
        "tags": ", ".join(ticket["tags"]),
        "last_modified": timestamp(ticket["updated_at"]),
        "user": user_object(
            lookups, ticket["contact_id"], ticket["originator_email"], ticket["originator_name"]
        ),
        "subscribers": [
            subscriber_object(a) for email in ticket["watchers"] if (a := lookups.agent(email))
        ],
        "unresponded": bool(public) and public[-1]["kind"] == "customer",
        "created_at": timestamp(ticket["created_at"]),
        "source": created["channel"] if created else None,
        "assigned_to": staff_object(assignee, lookups) if assignee else None,
        "merged_to": ticket["merged_into"],
    }
    if with_updates:
        result["updates"] = updates(ticket, events, lookups, cf=cf)
    return result
