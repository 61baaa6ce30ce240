"""The steps of the ingest pipeline before `apply` (ingest/apply.py), in the order
`pipeline.STEPS` runs them. They find out what a message is; only `apply` changes tickets."""

from __future__ import annotations

import logging
from dataclasses import replace

from mailhelpdesk.domain.enums import Outcome
from mailhelpdesk.domain.models import Agent, Ticket
from mailhelpdesk.ingest.context import (
    Discard,
    IngestContext,
    SenderRole,
    ThreadVia,
    Verification,
)
from mailhelpdesk.ingest.facts import (
    SUBJECT_TAG,
    forwarded_of,
    parsed_of,
    recipient_addresses,
    sender_email,
    thread_candidates,
)
from mailhelpdesk.mail import verp
from mailhelpdesk.mail.authres_check import check_authentication_results, relay_trusted
from mailhelpdesk.mail.dsn import bounce_details
from mailhelpdesk.mail.parsed import Verdict
from mailhelpdesk.mail.tokens import split_plus, verify_token
from mailhelpdesk.services import bounces as bounce_service
from mailhelpdesk.store import spool
from mailhelpdesk.store import tickets as store

log = logging.getLogger(__name__)


def parse(ctx: IngestContext) -> None:
    """The ParsedMail understanding made of the bytes (ingest/understanding.py; the parser
    never raises, it records defects instead). What the inbound row keeps of it (Message-ID,
    fingerprint) is written with the row's outcome, in one UPDATE (ingest/worker.py)."""
    ctx.parsed = ctx.understood.parsed


def dedupe(ctx: IngestContext) -> None:
    """The same message twice (same Message-ID and content) is applied once. A different message
    that reuses a Message-ID has another fingerprint and goes on."""
    parsed = parsed_of(ctx)
    earlier_id = ctx.lookups.applied_fingerprints.get(parsed.fingerprint)
    if earlier_id is not None:
        raise Discard(Outcome.duplicate, f"same message as inbound #{earlier_id}")
    # the primary key on the fingerprint refuses a concurrent second apply (another daemon)
    if not spool.claim_applied(
        ctx.session, fingerprint=parsed.fingerprint, inbound_id=ctx.inbound_id
    ):
        raise Discard(Outcome.duplicate, "same message applied concurrently")


def classify(ctx: IngestContext) -> None:
    """Bounce, auto-reply or our own mail coming back: never a ticket, never a notice."""
    ctx.classification = ctx.understood.classification
    if ctx.classification.verdict == Verdict.loop:
        raise Discard(Outcome.classified, f"loop: {ctx.classification.reason}")


def agent_key(ctx: IngestContext, agent_id: int) -> str | None:
    """The reply key of the agent a signed address names (None: no such agent any more)."""
    agent = ctx.session.get(Agent, agent_id)
    return agent.reply_key if agent is not None else None


def thread(ctx: IngestContext) -> None:
    """Find the ticket: signed reply address, then In-Reply-To/References, then the subject tag.
    A trashed ticket is not found (the mail opens a new ticket, services/housekeeping.py); a
    merged ticket leads to the ticket it was merged into. A forward's reply address or
    Message-ID marks the mail as a third party's reply to a forward."""
    parsed = parsed_of(ctx)
    bounce_base = verp.bounce_base(ctx.settings.notify.helpdesk_address)
    for address in recipient_addresses(ctx, parsed):
        base, tag = split_plus(address)
        if tag is None or base not in ctx.settings.inbound_addresses or base == bounce_base:
            continue  # a return path (record-bounce's) is no reply address
        token = verify_token(ctx.settings.secret, tag, agent_key=lambda i: agent_key(ctx, i))
        if token is None:
            ctx.notes.append(f"bad reply token on {address}")
            continue
        ticket = ctx.lookups.ticket_by_number(token.ticket_number)
        if ticket is not None:
            ctx.ticket, ctx.thread_via, ctx.signed_agent_id = (
                store.follow_merges(ctx.session, ticket),
                ThreadVia.forward if token.forward else ThreadVia.signed_address,
                token.agent_id,
            )
            return
    found = ctx.lookups.ticket_by_message_ids(thread_candidates(parsed))
    if found is not None:
        ctx.ticket = store.follow_merges(ctx.session, found[0])
        forward = ctx.lookups.is_forward_message_id(found[1])
        ctx.thread_via = ThreadVia.forward if forward else ThreadVia.references
        return
    for match in SUBJECT_TAG.finditer(parsed.subject):
        ticket = ctx.lookups.ticket_by_number(int(match.group(1)))
        if ticket is not None:
            ctx.ticket, ctx.thread_via = (
                store.follow_merges(ctx.session, ticket),
                ThreadVia.subject_tag,
            )
            return


def identify_sender(ctx: IngestContext) -> None:
    """Customer, agent or stranger (DESIGN.md §2, no impersonation). Mail claiming an agent's
    address counts as the agent's only when its From is that agent's (main or alternate) address
    AND either it came to a reply address signed for that agent (`verified = signed_address`) or
    the topmost Authentication-Results header, from a trusted authserv-id, shows DKIM or DMARC
    pass for the From's domain (`authentication_results`, mail/authres_check.py). Anything else
    claiming an agent's address on a ticket is a stranger: held internal, logged.

    The party rule (issue 17, CC hijack): on an existing ticket, a sender who is not a party
    (`_is_party`) is a stranger whatever linked the message (signed reply address, References,
    subject tag): held internal, and its CCs are never added.

    Forwards (mail/forwarded.py): mail from an agent's address that reaches no existing ticket
    and carries a forwarded message (inline Gmail/Outlook/Apple shape or message/rfc822) opens
    the ticket for the ORIGINAL sender. This is accepted for unverified agent addresses too,
    because an agent forwards to the plain support address (no signed token) and most sites have
    no trusted Authentication-Results. The risk: someone forging an agent's From can open a
    ticket in a third party's name and so cause one acknowledgement to that party. That is no
    more than anyone can do by writing From the third party directly (customers are never
    verified), and it grants nothing on existing tickets: a forward linked to an existing ticket
    (signed address, References, subject tag) is not treated as a forward, and an unverified
    agent address on a ticket stays a held stranger. The forwarder's own text above the forward
    is kept as an internal note, never public."""
    parsed = parsed_of(ctx)
    sender = sender_email(parsed)
    agent = ctx.settings.agent_for(sender)
    if agent is not None:
        from_email = parsed.from_.email.lower() if parsed.from_ and parsed.from_.email else ""
        from_is_agent = from_email in agent.addresses
        signed = ctx.thread_via == ThreadVia.signed_address and ctx.signed_agent_id == agent.id
        if from_is_agent and signed:
            ctx.sender_role, ctx.agent = SenderRole.agent, agent
            ctx.verified = Verification.signed_address
        elif from_is_agent:
            verdict = relay_trusted(
                ctx.envelope.source, ctx.envelope.source_ref, ctx.settings.trusted_relays
            )
            if verdict.verified:
                verdict = check_authentication_results(
                    parsed.headers,
                    domain=from_email.rpartition("@")[2],
                    trusted_authserv_ids=ctx.settings.trusted_authserv_ids,
                )
            if verdict.verified:
                ctx.sender_role, ctx.agent = SenderRole.agent, agent
                ctx.verified = Verification.authentication_results
            else:
                ctx.notes.append(f"not verified: {verdict.reason}")
        if ctx.ticket is None:
            forwarded = forwarded_of(ctx, parsed)
            if (
                forwarded is not None
                and ctx.settings.agent_for(forwarded.sender.email) is None
                and forwarded.sender.email not in ctx.settings.own_addresses
            ):
                ctx.forwarded = forwarded
                ctx.sender_role = ctx.sender_role or SenderRole.customer
                return
        if ctx.sender_role == SenderRole.agent:
            return
        if ctx.ticket is not None:
            ctx.sender_role = SenderRole.stranger
            ctx.notes.append(f"claims agent address {sender} without verification")
            log.warning(
                "unverified mail from agent address sender=%s inbound_id=%s", sender, ctx.inbound_id
            )
            return
    if ctx.ticket is None:
        ctx.sender_role = SenderRole.customer
        return
    if ctx.thread_via == ThreadVia.forward:
        # a third party answering a forward: kept on the ticket, internal, for the agents only
        ctx.sender_role = SenderRole.stranger
        ctx.notes.append(f"{sender or 'unknown sender'} replied to a forward of the ticket")
        return
    if not _is_party(ctx, sender):
        # the party rule: however the message links (signed reply address, In-Reply-To or
        # References naming the customer's mail, the subject tag), a link is not a party.
        # Anyone could copy a Message-ID or a Reply-To off mail they were shown.
        ctx.sender_role = SenderRole.stranger
        via = ctx.thread_via.value if ctx.thread_via else "-"
        ctx.notes.append(f"{sender or 'unknown sender'} is not a party to the ticket (via {via})")
        return
    ctx.sender_role = SenderRole.customer


def _is_party(ctx: IngestContext, sender: str | None) -> bool:
    """A party to the ticket: its originator, an address of its contact, a CC (only a party's
    message or an agent adds CCs), anyone who already wrote publicly on it, or an agent."""
    if not sender or ctx.ticket is None:
        return False
    email = sender.lower()
    return email in ctx.settings.agent_addresses or store.is_participant(
        ctx.session, ctx.ticket, email
    )


def record_bounce(ctx: IngestContext) -> None:
    """A bounce of mail we sent (it came back to the signed return path of an outbox row,
    mail/verp.py) fails that row and holds back automatic mail to its dead recipients; the
    bounce is then recorded on the ticket the bounced mail belonged to. A bounce that does not
    verify suppresses nothing: it stays classified, and the reason says why."""
    if ctx.classification is None or ctx.classification.verdict != Verdict.bounce:
        return
    parsed = parsed_of(ctx)
    bounce_base = verp.bounce_base(ctx.settings.notify.helpdesk_address)
    tags = [
        tag
        for base, tag in map(split_plus, recipient_addresses(ctx, parsed))
        if base == bounce_base and tag
    ]
    outcome = bounce_service.record_bounce(
        ctx.session,
        ctx.understood.bounce if ctx.understood.bounce is not None else bounce_details(parsed),
        secret=ctx.settings.secret,
        return_path_tags=tags,
        clock=ctx.clock,
        suppress_s=ctx.settings.suppress_bouncing_s,
        summary=ctx.classification.reason,
    )
    if outcome.unverified:
        ctx.classification = replace(
            ctx.classification,
            reason=f"{ctx.classification.reason}; nothing suppressed: {outcome.unverified}",
        )
    if outcome.ticket_id is not None and ctx.ticket is None:
        ctx.ticket = ctx.session.get(Ticket, outcome.ticket_id)
        ctx.thread_via = ThreadVia.bounce
