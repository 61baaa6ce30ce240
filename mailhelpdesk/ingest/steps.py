"""The steps of the ingest pipeline, in the order `STEPS` runs them."""

from __future__ import annotations

import logging
import re
from email.utils import getaddresses

from mailhelpdesk.domain.enums import Outcome, ResponseKind
from mailhelpdesk.ingest.pipeline import Discard, IngestContext, Step
from mailhelpdesk.mail.classify import classify as classify_mail
from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import ParsedMail, Verdict
from mailhelpdesk.mail.reply_text import visible_text
from mailhelpdesk.mail.tokens import split_plus, verify_token
from mailhelpdesk.services import notify
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.tickets import NewAttachment, NewResponse
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
    parsed = _parsed(ctx)
    earlier = spool.find_applied(ctx.session, parsed.fingerprint)
    if earlier is not None:
        raise Discard(Outcome.duplicate, f"same message as inbound #{earlier.inbound_id}")
    # the primary key on the fingerprint refuses a concurrent second apply (another daemon)
    spool.mark_applied(ctx.session, fingerprint=parsed.fingerprint, inbound_id=ctx.inbound.id or 0)


def classify(ctx: IngestContext) -> None:
    """Bounce, auto-reply or our own mail coming back: never a ticket, never a notice."""
    ctx.classification = classify_mail(
        _parsed(ctx), envelope_from=ctx.envelope.mail_from, own_addresses=ctx.settings.own_addresses
    )
    if ctx.classification.verdict == Verdict.loop:
        raise Discard(Outcome.classified, f"loop: {ctx.classification.reason}")


def thread(ctx: IngestContext) -> None:
    """Find the ticket: signed reply address, then In-Reply-To/References, then the subject tag."""
    parsed = _parsed(ctx)
    for address in _recipient_addresses(ctx, parsed):
        base, tag = split_plus(address)
        if tag is None or base not in ctx.settings.inbound_addresses:
            continue
        token = verify_token(ctx.settings.secret, tag)
        if token is None:
            ctx.notes.append(f"bad reply token on {address}")
            continue
        ticket = store.get_ticket_by_number(ctx.session, token.ticket_number)
        if ticket is not None:
            ctx.ticket, ctx.thread_via, ctx.signed_agent_id = ticket, "signed_address", token.agent_id
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
    """Customer, agent or stranger. Mail claiming an agent's address counts as the agent's only
    when it came to a reply address signed for that agent; anything else is a stranger."""
    sender = _sender_email(_parsed(ctx))
    agent = ctx.settings.agent_for(sender)
    if agent is not None:
        if ctx.thread_via == "signed_address" and ctx.signed_agent_id == agent.id:
            ctx.sender_role, ctx.agent, ctx.verified = "agent", agent, "signed_address"
            return
        if ctx.ticket is not None:
            ctx.sender_role = "stranger"
            ctx.notes.append(f"claims agent address {sender} without verification")
            log.warning("unverified mail from agent address sender=%s inbound_id=%s", sender, ctx.inbound.id)
            return
    if ctx.ticket is None:
        ctx.sender_role = "customer"
        return
    if ctx.thread_via == "subject_tag" and sender not in store.participant_emails(ctx.session, ctx.ticket):
        # the party rule: a subject tag alone does not make a stranger a party to the ticket
        ctx.sender_role = "stranger"
        ctx.notes.append(f"{sender or 'unknown sender'} is not on ticket and only the subject tag links it")
        return
    ctx.sender_role = "customer"


def apply(ctx: IngestContext) -> None:
    """Through the service layer: a new ticket, a reply, a held message or a recorded event."""
    parsed = _parsed(ctx)
    verdict = ctx.classification.verdict if ctx.classification else Verdict.normal
    if verdict in (Verdict.bounce, Verdict.auto_reply):
        reason = f"{verdict.value}: {ctx.classification.reason if ctx.classification else ''}"
        if ctx.ticket is None:
            raise Discard(Outcome.classified, reason)
        ticket_service.add_response(
            ctx.session, ctx.ticket, _response(ctx, parsed, ResponseKind.system, internal=True), clock=ctx.clock, reopen=False
        )
        raise Discard(Outcome.recorded, reason)
    if ctx.ticket is None:
        sender = _sender_email(parsed) or ""
        ticket = ticket_service.create_ticket(
            ctx.session,
            subject=parsed.subject,
            originator_email=sender,
            originator_name=parsed.from_.name if parsed.from_ else "",
            queue_name=_queue_for(ctx, parsed),
            first=_response(ctx, parsed, ResponseKind.customer),
            cc=[(a.email, a.name) for a in parsed.cc + parsed.to if a.email not in ctx.settings.own_addresses
                and split_plus(a.email)[0] not in ctx.settings.own_addresses and a.email != sender],
            clock=ctx.clock,
        )
        ctx.ticket, ctx.outcome, ctx.reason = ticket, Outcome.ticket_created, f"ticket {ticket.number}"
        return
    if ctx.sender_role == "stranger":
        ticket_service.add_response(
            ctx.session, ctx.ticket, _response(ctx, parsed, ResponseKind.customer, internal=True), clock=ctx.clock, reopen=False
        )
        ctx.outcome, ctx.reason = Outcome.held, f"held on ticket {ctx.ticket.number}: {'; '.join(ctx.notes)}"
        return
    kind = ResponseKind.agent if ctx.sender_role == "agent" else ResponseKind.customer
    ticket_service.add_response(ctx.session, ctx.ticket, _response(ctx, parsed, kind), clock=ctx.clock)
    if kind == ResponseKind.customer:
        sender = _sender_email(parsed) or ""
        ticket_service.add_ccs(
            ctx.session,
            ctx.ticket,
            [(a.email, a.name) for a in parsed.cc if split_plus(a.email)[0] not in ctx.settings.own_addresses],
            exclude={sender, *(a for agent in ctx.settings.agents for a in agent.addresses)},
        )
    ctx.outcome, ctx.reason = Outcome.reply_added, f"reply on ticket {ctx.ticket.number} via {ctx.thread_via}"


def schedule_notices(ctx: IngestContext) -> None:
    """Notices the change causes, written to the outbox in this message's transaction: on a new
    ticket the acknowledgement (customer) and `new_ticket` (agents); on a customer's reply
    `customer_reply` (agents). Held, recorded, classified and duplicate mail causes none, and so
    does mail brought in with `mailhelpdesk import`."""
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
    if ctx.outcome == Outcome.ticket_created:
        notify.notify_ticket_created(
            ctx.session, ctx.ticket, settings=settings, clock=ctx.clock, agents=agents,
            customer_message_id=message_id, customer_references=references, message_text=parsed.text,
        )
    elif ctx.outcome == Outcome.reply_added and ctx.sender_role == "customer":
        notify.notify_customer_reply(
            ctx.session, ctx.ticket, settings=settings, clock=ctx.clock, agents=agents,
            customer_message_id=message_id, customer_references=references, message_text=visible_text(parsed.text),
        )


STEPS: tuple[tuple[str, Step], ...] = (
    ("parse", parse),
    ("dedupe", dedupe),
    ("classify", classify),
    ("thread", thread),
    ("identify-sender", identify_sender),
    ("apply", apply),
    ("schedule-notices", schedule_notices),
)


def _parsed(ctx: IngestContext) -> ParsedMail:
    assert ctx.parsed is not None, "parse must run first"
    return ctx.parsed


def _sender_email(parsed: ParsedMail) -> str | None:
    if parsed.from_ and parsed.from_.email:
        return parsed.from_.email
    if parsed.reply_to:
        return parsed.reply_to[0].email
    return None


def _recipient_addresses(ctx: IngestContext, parsed: ParsedMail) -> list[str]:
    """Where the message was sent: the envelope first, then the headers that name recipients."""
    found = [a.lower() for a in ctx.envelope.rcpt_tos]
    found += [a.email for a in parsed.to + parsed.cc]
    for name in ("delivered-to", "x-original-to", "envelope-to"):
        found += [addr.lower() for _n, addr in getaddresses(parsed.header_all(name)) if addr]
    return list(dict.fromkeys(found))


def _queue_for(ctx: IngestContext, parsed: ParsedMail) -> str:
    if ctx.envelope.queue_hint:
        return ctx.envelope.queue_hint
    for address in _recipient_addresses(ctx, parsed):
        queue = ctx.settings.inbound_addresses.get(split_plus(address)[0])
        if queue:
            return queue
    return ticket_service.DEFAULT_QUEUE


def _response(ctx: IngestContext, parsed: ParsedMail, kind: ResponseKind, *, internal: bool = False) -> NewResponse:
    sender = _sender_email(parsed)
    return NewResponse(
        kind=kind,
        plain_text=parsed.text,
        visible_text=visible_text(parsed.text) if kind != ResponseKind.system else parsed.text,
        html=parsed.html,
        is_internal=internal,
        created_by_email=sender,
        created_by_name=ctx.agent.name if ctx.agent else (parsed.from_.name if parsed.from_ else ""),
        subject=parsed.subject,
        message_id=parsed.message_id[:998] if parsed.message_id else None,
        is_email_sourced=True,
        verified=ctx.verified,
        inbound_id=ctx.inbound.id,
        attachments=[
            NewAttachment(a.filename, a.content_type, a.data, a.is_inline, a.content_id) for a in parsed.attachments
        ],
    )
