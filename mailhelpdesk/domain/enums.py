"""The vocabulary of the domain (DESIGN.md §3, api-contract.md §6) as string enums."""

from __future__ import annotations

import enum


class TicketStatus(enum.StrEnum):
    open = "open"
    on_hold = "on-hold"
    closed = "closed"


class Priority(enum.IntEnum):
    """Stored as the integer; shown as the string code of api-contract.md §5.2."""

    low = 10
    normal = 20
    high = 30
    urgent = 40

    @classmethod
    def from_name(cls, value: str) -> Priority:
        text = value.strip().lower()
        for member in cls:
            if text in (member.name, str(member.value)):
                return member
        raise ValueError(f"unknown priority {value!r} (Low, Normal, High, Urgent)")


class ResponseKind(enum.StrEnum):
    customer = "customer"
    agent = "agent"
    note = "note"
    system = "system"


class InboundState(enum.StrEnum):
    """Life of a kept raw message: `new` until the worker has applied it, then one of the rest."""

    new = "new"
    done = "done"
    failed = "failed"


class InterventionState(enum.StrEnum):
    """Life of an intervention (api-contract.md §4.9): open → submitted → completed | failed."""

    open = "open"
    submitted = "submitted"
    completed = "completed"
    failed = "failed"


class KeyState(enum.StrEnum):
    """Life of an Idempotency-Key: minted (POST /api/idempotency_key) → in_progress → completed."""

    minted = "minted"
    in_progress = "in_progress"
    completed = "completed"


class Outcome(enum.StrEnum):
    """What applying an inbound message did; shown by `inbound list` and the import summary."""

    ticket_created = "ticket_created"
    reply_added = "reply_added"
    held = "held"  # kept on a ticket as an internal message (unverified or stranger)
    recorded = "recorded"  # bounce / auto-reply recorded on its ticket as a system event
    classified = "classified"  # bounce / auto-reply / loop that belongs to no ticket
    duplicate = "duplicate"


class OutboxState(enum.StrEnum):
    """Life of an outgoing mail row (store/outbox.py): `queued` until the relay's 250 (`sent`), a
    permanent refusal or the deadline (`failed`); `suppressed` rows are kept but never sent."""

    queued = "queued"
    sent = "sent"
    failed = "failed"
    suppressed = "suppressed"


class DeliveryState(enum.StrEnum):
    """Life of an outgoing HTTP POST row (store/http_outbox.py): `queued` until a 2xx
    (`delivered`) or until its max_attempts tries are used up (`failed`)."""

    queued = "queued"
    delivered = "delivered"
    failed = "failed"
