"""The steps of the ingest pipeline, in the order `STEPS` runs them."""

from __future__ import annotations

import logging
import re

from mailhelpdesk.domain.enums import Outcome, ResponseKind
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.ingest.agent_mail import apply_agent_mail, open_forwarded
from mailhelpdesk.ingest.facts import (
    parsed_of,
    queue_for,
    recipient_addresses,
    response_from,
    sender_email,
)
from mailhelpdesk.ingest.pipeline import Discard, IngestContext, Step
from mailhelpdesk.mail.authres_check import check_authentication_results
from mailhelpdesk.mail.classify import classify as classify_mail
from mailhelpdesk.mail.dsn import bounce_details
from mailhelpdesk.mail.forwarded import find_forwarded
from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import Verdict
from mailhelpdesk.mail.reply_text import visible_text
from mailhelpdesk.mail.tokens import split_plus, verify_token
from mailhelpdesk.services import bounces as bounce_service
from mailhelpdesk.services import notify
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.store import spool
from mailhelpdesk.store import tickets as store

log = logging.getLogger(__name__)

SUBJECT_TAG = re.compile(r"\[#(\d{6,12})\]")


def parse(ctx: IngestContext) -> None:
    """Bytes to a ParsedMail; the parser never raises, it records defects instead."""
    ctx.parsed = parse_message(ctx.inbound.raw)
    ctx.inbound.message_id = ctx.parsed.message_id[:998] if ctx.parsed.message_id else None
    ctx.inbound.fingerprint = ctx.parsed.fingerprint


def dedupe(ctx: IngestContext) -> None:
    """The same message twice (same Message-ID and content) is applied once. A different message
    that reuses a Message-ID has another fingerprint and goes on."""
    parsed = parsed_of(ctx)
    earlier = spool.find_applied(ctx.session, parsed.fingerprint)
    if earlier is not None:
        raise Discard(Outcome.duplicate, f"same message as inbound #{earlier.inbound_id}")
    # the primary key on the fingerprint refuses a concurrent second apply (another daemon)
    spool.mark_applied(ctx.session, fingerprint=parsed.fingerprint, inbound_id=ctx.inbound.id or 0)


def classify(ctx: IngestContext) -> None:
    """Bounce, auto-reply or our own mail coming back: never a ticket, never a notice."""
    ctx.classification = classify_mail(
        parsed_of(ctx),
        envelope_from=ctx.envelope.mail_from,
        own_addresses=ctx.settings.own_addresses,
    )
    if ctx.classification.verdict == Verdict.loop:
        raise Discard(Outcome.classified, f"loop: {ctx.classification.reason}")


def thread(ctx: IngestContext) -> None:
    """Find the ticket: signed reply address, then In-Reply-To/References, then the subject tag."""
    parsed = parsed_of(ctx)
    for address in recipient_addresses(ctx, parsed):
        base, tag = split_plus(address)
        if tag is None or base not in ctx.settings.inbound_addresses:
            continue
        token = verify_token(ctx.settings.secret, tag)
        if token is None:
            ctx.notes.append(f"bad reply token on {address}")
            continue
        ticket = store.get_ticket_by_number(ctx.session, token.ticket_number)
        if ticket is not None:
            ctx.ticket, ctx.thread_via, ctx.signed_agent_id = (
                ticket,
                "signed_address",
                token.agent_id,
            )
            return
    candidates = list(parsed.in_reply_to) + list(reversed(parsed.references))
    found = store.find_ticket_by_message_ids(ctx.session, [c[:998] for c in candidates])
    if found is not None:
        ctx.ticket, ctx.thread_via = found[0], "references"
        return
    for match in SUBJECT_TAG.finditer(parsed.subject):
        ticket = store.get_ticket_by_number(ctx.session, int(match.group(1)))
        if ticket is not None:
            ctx.ticket, ctx.thread_via = ticket, "subject_tag"
            return


def identify_sender(ctx: IngestContext) -> None:
    """Customer, agent or stranger (DESIGN.md §2, no impersonation). Mail claiming an agent's
    address counts as the agent's only when its From is that agent's (main or alternate) address
    AND either it came to a reply address signed for that agent (`verified = signed_address`) or
    the topmost Authentication-Results header, from a trusted authserv-id, shows DKIM or DMARC
    pass for the From's domain (`authentication_results`, mail/authres_check.py). Anything else
    claiming an agent's address on a ticket is a stranger: held internal, logged.

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
        if from_is_agent and ctx.thread_via == "signed_address" and ctx.signed_agent_id == agent.id:
            ctx.sender_role, ctx.agent, ctx.verified = "agent", agent, "signed_address"
        elif from_is_agent:
            verdict = check_authentication_results(
                parsed.headers,
                domain=from_email.rpartition("@")[2],
                trusted_authserv_ids=ctx.settings.trusted_authserv_ids,
            )
            if verdict.verified:
                ctx.sender_role, ctx.agent, ctx.verified = "agent", agent, "authentication_results"
            else:
                ctx.notes.append(f"not verified: {verdict.reason}")
        if ctx.ticket is None:
            forwarded = find_forwarded(parsed)
            if (
                forwarded is not None
                and ctx.settings.agent_for(forwarded.sender.email) is None
                and forwarded.sender.email not in ctx.settings.own_addresses
            ):
                ctx.forwarded = forwarded
                ctx.sender_role = ctx.sender_role or "customer"
                return
        if ctx.sender_role == "agent":
            return
        if ctx.ticket is not None:
            ctx.sender_role = "stranger"
            ctx.notes.append(f"claims agent address {sender} without verification")
            log.warning(
                "unverified mail from agent address sender=%s inbound_id=%s", sender, ctx.inbound.id
            )
            return
    if ctx.ticket is None:
        ctx.sender_role = "customer"
        return
    if ctx.thread_via == "subject_tag" and sender not in store.participant_emails(
        ctx.session, ctx.ticket
    ):
        # the party rule: a subject tag alone does not make a stranger a party to the ticket
        ctx.sender_role = "stranger"
        ctx.notes.append(
            f"{sender or 'unknown sender'} is not on ticket and only the subject tag links it"
        )
        return
    ctx.sender_role = "customer"


def apply(ctx: IngestContext) -> None:
    """Through the service layer: a new ticket, a reply, a held message or a recorded event."""
    parsed = parsed_of(ctx)
    verdict = ctx.classification.verdict if ctx.classification else Verdict.normal
    if verdict in (Verdict.bounce, Verdict.auto_reply):
        reason = f"{verdict.value}: {ctx.classification.reason if ctx.classification else ''}"
        if ctx.ticket is None:
            raise Discard(Outcome.classified, reason)
        ticket_service.add_response(
            ctx.session,
            ctx.ticket,
            response_from(ctx, parsed, ResponseKind.system, internal=True),
            clock=ctx.clock,
            reopen=False,
        )
        raise Discard(Outcome.recorded, reason)
    if ctx.ticket is None and ctx.forwarded is not None:
        open_forwarded(ctx, parsed)
        return
    if ctx.ticket is None:
        sender = sender_email(parsed) or ""
        ticket = ticket_service.create_ticket(
            ctx.session,
            subject=parsed.subject,
            originator_email=sender,
            originator_name=parsed.from_.name if parsed.from_ else "",
            queue_name=queue_for(ctx, parsed),
            first=response_from(ctx, parsed, ResponseKind.customer),
            cc=[
                (a.email, a.name)
                for a in parsed.cc + parsed.to
                if a.email not in ctx.settings.own_addresses
                and split_plus(a.email)[0] not in ctx.settings.own_addresses
                and a.email != sender
            ],
            clock=ctx.clock,
        )
        ctx.ticket, ctx.outcome, ctx.reason = (
            ticket,
            Outcome.ticket_created,
            f"ticket {ticket.number}",
        )
        return
    if ctx.sender_role == "stranger":
        ticket_service.add_response(
            ctx.session,
            ctx.ticket,
            response_from(ctx, parsed, ResponseKind.customer, internal=True),
            clock=ctx.clock,
            reopen=False,
        )
        ctx.outcome, ctx.reason = (
            Outcome.held,
            f"held on ticket {ctx.ticket.number}: {'; '.join(ctx.notes)}",
        )
        return
    if ctx.sender_role == "agent":
        apply_agent_mail(ctx, parsed)
        return
    kind = ResponseKind.customer
    ticket_service.add_response(
        ctx.session, ctx.ticket, response_from(ctx, parsed, kind), clock=ctx.clock
    )
    if kind == ResponseKind.customer:
        sender = sender_email(parsed) or ""
        ticket_service.add_ccs(
            ctx.session,
            ctx.ticket,
            [
                (a.email, a.name)
                for a in parsed.cc
                if split_plus(a.email)[0] not in ctx.settings.own_addresses
            ],
            exclude={sender, *(a for agent in ctx.settings.agents for a in agent.addresses)},
        )
    ctx.outcome, ctx.reason = (
        Outcome.reply_added,
        f"reply on ticket {ctx.ticket.number} via {ctx.thread_via}",
    )


def schedule_notices(ctx: IngestContext) -> None:
    """Notices the change causes, written to the outbox in this message's transaction: on a new
    ticket the acknowledgement (customer) and `new_ticket` (agents); on a customer's reply
    `customer_reply` (agents). Held, recorded, classified and duplicate mail causes none, and so
    does mail brought in with `mailhelpdesk import`. An agent's mail sends its notices from
    `apply` (`apply_agent_mail`), so the answer is queued before a status notice it causes."""
    settings = ctx.settings.notify
    if settings is None or ctx.ticket is None or ctx.parsed is None:
        return
    if ctx.envelope.source == "import":  # archives: never mail customers about old messages
        return
    if ctx.classification is not None and ctx.classification.verdict != Verdict.normal:
        return
    parsed = ctx.parsed
    agents = [notify.Recipient(a.email, a.name, a.id) for a in ctx.settings.agents]
    message_id = parsed.message_id[:998] if parsed.message_id else None
    references = [r[:998] for r in parsed.references[-20:]]
    if ctx.outcome == Outcome.ticket_created and ctx.forwarded is not None:
        # the original sender never saw the forward: thread on their own message when known
        original = ctx.forwarded.message_id[:998] if ctx.forwarded.message_id else None
        notify.notify_ticket_created(
            ctx.session,
            ctx.ticket,
            settings=settings,
            clock=ctx.clock,
            agents=agents,
            customer_message_id=original,
            customer_references=[],
            message_text=ctx.forwarded.text,
        )
    elif ctx.outcome == Outcome.ticket_created:
        notify.notify_ticket_created(
            ctx.session,
            ctx.ticket,
            settings=settings,
            clock=ctx.clock,
            agents=agents,
            customer_message_id=message_id,
            customer_references=references,
            message_text=parsed.text,
        )
    elif ctx.outcome == Outcome.reply_added and ctx.sender_role == "customer":
        notify.notify_customer_reply(
            ctx.session,
            ctx.ticket,
            settings=settings,
            clock=ctx.clock,
            agents=agents,
            customer_message_id=message_id,
            customer_references=references,
            message_text=visible_text(parsed.text),
        )


def record_bounce(ctx: IngestContext) -> None:
    """A bounce of mail we sent fails its outbox row and holds back automatic mail to the dead
    address; the bounce is then recorded on the ticket the bounced mail belonged to."""
    if ctx.classification is None or ctx.classification.verdict != Verdict.bounce:
        return
    details = bounce_details(parsed_of(ctx))
    ticket_ids = bounce_service.record_bounce(
        ctx.session,
        details,
        clock=ctx.clock,
        suppress_s=ctx.settings.suppress_bouncing_s,
        summary=ctx.classification.reason,
    )
    if ticket_ids and ctx.ticket is None:
        ctx.ticket = ctx.session.get(Ticket, ticket_ids[0])
        ctx.thread_via = "bounce"


STEPS: tuple[tuple[str, Step], ...] = (
    ("parse", parse),
    ("dedupe", dedupe),
    ("classify", classify),
    ("record-bounce", record_bounce),
    ("thread", thread),
    ("identify-sender", identify_sender),
    ("apply", apply),
    ("schedule-notices", schedule_notices),
)
