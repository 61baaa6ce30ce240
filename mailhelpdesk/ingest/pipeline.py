"""The ingest pipeline: one ordered table of named steps, read top to bottom.

Every kept message goes through the same steps whether it came by SMTP, IMAP or `import`:

    parse → dedupe → classify → thread → identify_sender → apply

A step may end the run early by raising `Discard` with the outcome and its reason (a duplicate,
a bounce that belongs to no ticket); any other exception sets the message aside as failed, with
the error, for `mailhelpdesk inbound list|retry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import Outcome
from mailhelpdesk.domain.models import InboundMessage, Ticket
from mailhelpdesk.mail.forwarded import ForwardedOriginal
from mailhelpdesk.mail.parsed import Classification, ParsedMail
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.store.spool import Envelope


@dataclass(frozen=True)
class AgentIdentity:
    id: int
    email: str
    name: str
    addresses: frozenset[str]


@dataclass(frozen=True)
class IngestSettings:
    """What the steps need to know about this helpdesk, fixed for one batch."""

    secret: bytes
    inbound_addresses: dict[str, str]  # lower-case address -> queue name
    agents: tuple[AgentIdentity, ...] = ()
    notify: NotifySettings | None = None  # None: the pipeline schedules no notices
    # lower-case authserv-ids whose topmost Authentication-Results header verifies an agent
    trusted_authserv_ids: frozenset[str] = frozenset()
    suppress_bouncing_s: int = 604800

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(self.inbound_addresses)

    def agent_for(self, email: str | None) -> AgentIdentity | None:
        if not email:
            return None
        email = email.lower()
        return next((a for a in self.agents if email in a.addresses), None)


@dataclass
class IngestContext:
    """One message on its way through the steps; each step fills in what it found."""

    session: Session
    clock: Clock
    settings: IngestSettings
    inbound: InboundMessage
    envelope: Envelope
    parsed: ParsedMail | None = None
    classification: Classification | None = None
    ticket: Ticket | None = None
    thread_via: str | None = None  # signed_address | references | subject_tag
    signed_agent_id: int | None = None
    sender_role: str | None = None  # customer | agent | stranger
    agent: AgentIdentity | None = None
    verified: str | None = None  # signed_address | authentication_results
    forwarded: ForwardedOriginal | None = (
        None  # an agent's forward: the ticket is the original sender's
    )
    outcome: Outcome | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


class Discard(Exception):
    """Stop the pipeline: the message is fully handled with this outcome."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


Step = Callable[[IngestContext], None]


def run_pipeline(steps: tuple[tuple[str, Step], ...], ctx: IngestContext) -> None:
    """Run the steps in order; a Discard ends the run with its outcome recorded on the context."""
    for _name, step in steps:
        try:
            step(ctx)
        except Discard as stop:
            ctx.outcome = stop.outcome
            ctx.reason = stop.reason
            return
