"""What the ingest steps share: the settings of a batch and one message's context on its way
through the steps (ingest/pipeline.py runs them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import Outcome
from mailhelpdesk.domain.events import Actor, channel_of_source
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.mail.forwarded import ForwardedOriginal
from mailhelpdesk.mail.parsed import Classification, ParsedMail, Verdict
from mailhelpdesk.mail.understood import UnderstandSettings, Understood
from mailhelpdesk.services.cc_policy import CcLimits
from mailhelpdesk.services.context import ChangeContext, MailPolicy
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.store.spool import Envelope

if TYPE_CHECKING:
    from mailhelpdesk.ingest.batch_lookups import BatchLookups


class SenderRole(enum.StrEnum):
    """Who a message is from, as far as the ticket is concerned (DESIGN.md §2)."""

    customer = "customer"  # the customer side: originator, a party of the ticket, or a new one
    agent = "agent"  # a verified agent
    stranger = "stranger"  # not a party, or an agent's address without verification: held


class ThreadVia(enum.StrEnum):
    """How a message found its ticket, in the order the thread step tries them."""

    signed_address = "signed_address"
    references = "references"
    subject_tag = "subject_tag"
    bounce = "bounce"  # a bounce of our own mail: the ticket of the mail that bounced
    # a reply to a forward of the ticket to a third party (its reply address or Message-ID):
    # kept internal, never the customer's (services/forwarding.py)
    forward = "forward"


class Verification(enum.StrEnum):
    """How an agent's mail was verified (the response's `verified`)."""

    signed_address = "signed_address"
    authentication_results = "authentication_results"


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
    notify: NotifySettings
    agents: tuple[AgentIdentity, ...] = ()
    # lower-case authserv-ids whose topmost Authentication-Results header verifies an agent
    trusted_authserv_ids: frozenset[str] = frozenset()
    # `[smtp_listener] trusted_relays`: the SMTP peers whose Authentication-Results count
    trusted_relays: tuple[str, ...] = ()
    suppress_bouncing_s: int = 604800
    cc_limits: CcLimits = field(default_factory=CcLimits)
    allow_remote_images: bool = False

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(self.inbound_addresses)

    @property
    def understand(self) -> UnderstandSettings:
        """What understanding a message (mail/understood.py) needs of these settings."""
        return UnderstandSettings(
            own_addresses=self.own_addresses, allow_remote_images=self.allow_remote_images
        )

    @property
    def agent_addresses(self) -> frozenset[str]:
        return frozenset(a for agent in self.agents for a in agent.addresses)

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
    inbound_id: int  # the kept message's row (store/spool.py)
    envelope: Envelope
    # the message understood ahead of the transaction (ingest/understanding.py); the steps
    # take its parse, classification and derived texts instead of computing them again
    understood: Understood
    # the batch's threading maps (ingest/batch_lookups.py): the steps' only threading reads
    lookups: BatchLookups
    parsed: ParsedMail | None = None
    classification: Classification | None = None
    ticket: Ticket | None = None
    thread_via: ThreadVia | None = None
    signed_agent_id: int | None = None
    sender_role: SenderRole | None = None
    agent: AgentIdentity | None = None
    verified: Verification | None = None
    forwarded: ForwardedOriginal | None = None  # an agent's forward: the ticket is the sender's
    outcome: Outcome | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.classification.verdict if self.classification else Verdict.normal

    @property
    def is_automatic(self) -> bool:
        """A bounce or an auto-reply: recorded, never a ticket, never a notice of its own."""
        return self.verdict in (Verdict.bounce, Verdict.auto_reply)

    @property
    def change(self) -> ChangeContext:
        """The service layer's view of this message: its channel (smtp, imap, import), who it
        is from, and whether it may cause mail (never for an imported archive)."""
        return ChangeContext.of(
            clock=self.clock,
            channel=channel_of_source(self.envelope.source),
            actor=self.actor,
            notices=self.settings.notify,
            mail=MailPolicy.silent if self.envelope.source == "import" else MailPolicy.send,
        )

    @property
    def actor(self) -> Actor:
        if self.agent is not None and self.sender_role == SenderRole.agent:
            return Actor.agent(self.agent.email, self.agent.name)
        if self.verdict == Verdict.bounce:
            return Actor.system("mailer-daemon")
        parsed = self.parsed
        sender = None
        name = ""
        if parsed is not None and parsed.from_ is not None:
            sender, name = parsed.from_.email, parsed.from_.name
        elif parsed is not None and parsed.reply_to:
            sender = parsed.reply_to[0].email
        return Actor.customer(sender, name)


class Discard(Exception):
    """Stop the pipeline: the message is fully handled with this outcome."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
