"""The vocabulary of a ticket's history: what happened, who did it, and through which channel.

Every change to a ticket is one `TicketEvent` row (domain/models.py) written by the service
layer in the change's own transaction. The history a user reads, the notices and webhooks a
change causes (services/reactions.py) and the figures reports and SLAs compute all come from
these rows, so they can never disagree with each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventType(enum.StrEnum):
    """What happened to a ticket. The `data` each type carries is documented in docs/api.md."""

    created = "created"  # the ticket and its first message
    customer_reply = "customer_reply"  # a public message from the customer side
    agent_response = "agent_response"  # a public answer mailed to the customer
    note = "note"  # an internal staff note
    held = "held"  # a message kept internal: a stranger, or an agent address not verified
    bounce = "bounce"  # a bounce of our mail recorded on the ticket
    auto_reply = "auto_reply"  # an auto-reply recorded on the ticket
    status = "status"
    assigned = "assigned"
    priority = "priority"
    tag_added = "tag_added"
    tag_removed = "tag_removed"
    queue = "queue"
    subject = "subject"
    intervention = "intervention"  # a step of an intervention: created, edited, submitted, …
    command_refused = "command_refused"  # an agent's mail command that could not be applied
    # the ticket management, SLA and lifecycle work adds these kinds on the same record
    due_date = "due_date"
    custom_field = "custom_field"
    merged = "merged"
    deleted = "deleted"
    restored = "restored"
    forwarded = "forwarded"
    watcher_added = "watcher_added"
    watcher_removed = "watcher_removed"
    time_entry = "time_entry"
    sla_warning = "sla_warning"
    sla_breach = "sla_breach"
    link_revoked = "link_revoked"  # the status page link was replaced; the old one is dead
    reminder = "reminder"  # the assignee was reminded of a ticket nobody touched for a while


class ActorKind(enum.StrEnum):
    customer = "customer"
    agent = "agent"
    token = "token"  # an API token without an agent owner
    system = "system"  # the helpdesk itself: the scheduler, the CLI run by an operator


class Channel(enum.StrEnum):
    """How a change reached the service layer."""

    smtp = "smtp"
    imap = "imap"
    api = "api"
    cli = "cli"
    scheduler = "scheduler"
    import_ = "import"


@dataclass(frozen=True)
class Actor:
    """Who made a change. `email` is set for customers and agents, `name` for what to show."""

    kind: ActorKind
    email: str | None = None
    name: str = ""

    @classmethod
    def system(cls, name: str = "mailhelpdesk") -> Actor:
        return cls(ActorKind.system, None, name)

    @classmethod
    def customer(cls, email: str | None, name: str = "") -> Actor:
        return cls(ActorKind.customer, email.lower() if email else None, name)

    @classmethod
    def agent(cls, email: str, name: str = "") -> Actor:
        return cls(ActorKind.agent, email.lower(), name)

    @classmethod
    def token(cls, name: str) -> Actor:
        return cls(ActorKind.token, None, name)

    def is_agent(self, email: str | None) -> bool:
        """Whether this actor is the agent with `email` (agents are not told of their own acts)."""
        return self.kind == ActorKind.agent and bool(email) and self.email == (email or "").lower()


@dataclass(frozen=True)
class Origin:
    """Where a change came from: the channel and the actor. Everything else about a change is
    the same whichever channel it came through."""

    channel: Channel
    actor: Actor


def channel_of_source(source: str) -> Channel:
    """The channel of a kept inbound message, by its spool `source` (smtp, imap, import, api)."""
    try:
        return Channel(source)
    except ValueError:
        return Channel.smtp
