"""The steps of the ingest pipeline, in the order `STEPS` runs them."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from email.utils import getaddresses

from mailhelpdesk.domain.enums import Outcome, ResponseKind
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.ingest.pipeline import Discard, IngestContext, Step
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.mail.authres_check import check_authentication_results
from mailhelpdesk.mail.classify import classify as classify_mail
from mailhelpdesk.mail.compose import OutgoingAttachment
from mailhelpdesk.mail.dsn import bounce_details
from mailhelpdesk.mail.commands import Command, CommandBlock, CommandError, parse_commands
from mailhelpdesk.mail.forwarded import find_forwarded
from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import ParsedMail, Verdict
from mailhelpdesk.mail.reply_text import visible_text
from mailhelpdesk.mail.tokens import split_plus, verify_token
from mailhelpdesk.services import bounces as bounce_service
from mailhelpdesk.services import notify
from mailhelpdesk.services import ticket_changes
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
    parsed = _parsed(ctx)
    sender = _sender_email(parsed)
    agent = ctx.settings.agent_for(sender)
    if agent is not None:
        from_email = parsed.from_.email.lower() if parsed.from_ and parsed.from_.email else ""
        from_is_agent = from_email in agent.addresses
        if from_is_agent and ctx.thread_via == "signed_address" and ctx.signed_agent_id == agent.id:
            ctx.sender_role, ctx.agent, ctx.verified = "agent", agent, "signed_address"
        elif from_is_agent:
            verdict = check_authentication_results(
                parsed.headers, domain=from_email.rpartition("@")[2], trusted_authserv_ids=ctx.settings.trusted_authserv_ids
            )
            if verdict.verified:
                ctx.sender_role, ctx.agent, ctx.verified = "agent", agent, "authentication_results"
            else:
                ctx.notes.append(f"not verified: {verdict.reason}")
        if ctx.ticket is None:
            forwarded = find_forwarded(parsed)
            if forwarded is not None and ctx.settings.agent_for(forwarded.sender.email) is None \
                    and forwarded.sender.email not in ctx.settings.own_addresses:
                ctx.forwarded = forwarded
                ctx.sender_role = ctx.sender_role or "customer"
                return
        if ctx.sender_role == "agent":
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
    if ctx.ticket is None and ctx.forwarded is not None:
        _open_forwarded(ctx, parsed)
        return
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
    if ctx.sender_role == "agent":
        _apply_agent_mail(ctx, parsed)
        return
    kind = ResponseKind.customer
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
    does mail brought in with `mailhelpdesk import`. An agent's mail sends its notices from
    `apply` (`_apply_agent_mail`), so the answer is queued before a status notice it causes."""
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
            ctx.session, ctx.ticket, settings=settings, clock=ctx.clock, agents=agents,
            customer_message_id=original, customer_references=[], message_text=ctx.forwarded.text,
        )
    elif ctx.outcome == Outcome.ticket_created:
        notify.notify_ticket_created(
            ctx.session, ctx.ticket, settings=settings, clock=ctx.clock, agents=agents,
            customer_message_id=message_id, customer_references=references, message_text=parsed.text,
        )
    elif ctx.outcome == Outcome.reply_added and ctx.sender_role == "customer":
        notify.notify_customer_reply(
            ctx.session, ctx.ticket, settings=settings, clock=ctx.clock, agents=agents,
            customer_message_id=message_id, customer_references=references, message_text=visible_text(parsed.text),
        )


def _notify_settings(ctx: IngestContext) -> notify.NotifySettings | None:
    """Notice settings when this message may cause mail (not for imported archives)."""
    if ctx.envelope.source == "import":
        return None
    return ctx.settings.notify


def _apply_agent_mail(ctx: IngestContext, parsed: ParsedMail) -> None:
    """A verified agent's mail on a ticket: mail commands at the top (mail/commands.py), then the
    answer. All commands are checked before anything is applied: one bad line and nothing
    happens (no response, no change) except one `command_error` notice to the agent. Otherwise
    the answer is stored (`agent`, public, mailed to the customer and CCs) or, with `#note`, kept
    as an internal note; then the commands change the ticket (services/ticket_changes.py).
    A forward that reached the ticket other than through a signed reply address is kept as an
    internal note too (an agent passing ticket mail on is not answering the customer).

    The command lines are removed from what is stored and shown: `plain_text` is the text
    without them, `visible_text` that without quoted history, and the HTML part (which still
    holds them) is not kept when there were commands (the raw message stays reachable)."""
    assert ctx.ticket is not None and ctx.agent is not None
    ticket, agent = ctx.ticket, ctx.agent
    block = parse_commands(parsed.text)
    error = block.error or _check_commands(ctx, block)
    if error is not None:
        settings = _notify_settings(ctx)
        if settings is not None:
            notify.notify_command_error(
                ctx.session, ticket, settings=settings, clock=ctx.clock,
                agent=notify.Recipient(agent.email, agent.name, agent.id),
                error=error.message, line=f"line {error.line_number}: {error.line}",
                in_reply_to=parsed.message_id[:998] if parsed.message_id else None,
            )
        log.warning("agent mail command refused agent=%s ticket=%s %s", agent.email, ticket.number, error.describe())
        ctx.outcome = Outcome.held
        ctx.reason = f"mail command refused, nothing applied on ticket {ticket.number}: {error.describe()}"
        return
    visible = parse_commands(visible_text(parsed.text)).body.strip() if block.commands else visible_text(parsed.text).strip()
    body = block.body if block.commands else parsed.text
    html = None if block.commands else parsed.html
    base = _response(ctx, parsed, ResponseKind.agent)
    # a verified agent forwarding ticket mail to the support address (linked by References or
    # the subject tag, not by answering a notice) is passing it on, not answering the customer
    forward_of_ticket_mail = ctx.thread_via != "signed_address" and find_forwarded(parsed) is not None
    if block.is_note or not visible or forward_of_ticket_mail:
        if body.strip():
            text = body.strip()
        elif block.commands:
            text = "Mail commands: " + "; ".join(c.line for c in block.commands)
        else:
            text = "(no text)"
        note = replace(base, kind=ResponseKind.note, plain_text=text, visible_text=visible or text, html=html, is_internal=True)
        ticket_service.add_response(ctx.session, ticket, note, clock=ctx.clock, reopen=False)
        what = "note"
    else:
        answer = replace(base, plain_text=body, visible_text=visible, html=html)
        ticket_service.add_response(ctx.session, ticket, answer, clock=ctx.clock, reopen=False)
        settings = _notify_settings(ctx)
        if settings is not None:
            last_id, references = _customer_thread(ctx)
            notify.notify_agent_response(
                ctx.session, ticket, settings=settings, clock=ctx.clock, agent_name=agent.name or agent.email,
                message_text=visible, in_reply_to=last_id, references=references,
                attachments=[
                    OutgoingAttachment(a.filename, a.content_type, a.data)
                    for a in _parsed(ctx).attachments if not a.is_inline
                ],
            )
        what = "answer"
    for command in block.changes:
        _run_command(ctx, command)
    done = "; ".join(c.line for c in block.commands)
    ctx.outcome = Outcome.reply_added
    ctx.reason = f"agent {what} on ticket {ticket.number} ({ctx.verified})" + (f", commands: {done}" if done else "")


def _check_commands(ctx: IngestContext, block: CommandBlock) -> CommandError | None:
    """What the parser cannot know: is the assignee an agent? (The rest is checked again by the
    services, which refuse what they cannot apply.)"""
    for command in block.changes:
        try:
            if command.name == "assign" and command.argument != "none":
                ticket_changes.check_assignee(ctx.session, _assignee(ctx, command.argument))
            elif command.name == "status":
                ticket_changes.check_status(command.argument, command.on_hold_until)
            elif command.name == "priority":
                ticket_changes.check_priority(command.argument)
            elif command.name in ("tag", "untag"):
                ticket_changes.check_tag(command.argument)
        except InvalidInputError as exc:
            return CommandError(command.line_number, command.line, str(exc))
    return None


def _assignee(ctx: IngestContext, argument: str) -> str | None:
    if argument == "none":
        return None
    if argument == "me":
        return ctx.agent.email if ctx.agent else None
    return argument


def _run_command(ctx: IngestContext, command: Command) -> None:
    assert ctx.ticket is not None
    ticket, clock = ctx.ticket, ctx.clock
    if command.name == "status":
        ticket_changes.set_status(
            ctx.session, ticket, command.argument, on_hold_until=command.on_hold_until, clock=clock,
            notify_settings=_notify_settings(ctx),
        )
    elif command.name == "assign":
        ticket_changes.assign(ctx.session, ticket, _assignee(ctx, command.argument), clock=clock)
    elif command.name == "priority":
        ticket_changes.set_priority(ctx.session, ticket, command.argument, clock=clock)
    elif command.name == "tag":
        ticket_changes.tag(ctx.session, ticket, command.argument, clock=clock)
    elif command.name == "untag":
        ticket_changes.untag(ctx.session, ticket, command.argument, clock=clock)


def _customer_thread(ctx: IngestContext) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for an answer to the customer: their last public message and
    the ones before it (at most 20), so it threads in the customer's own client."""
    assert ctx.ticket is not None
    ids = [
        r.message_id for r in store.responses_of(ctx.session, ctx.ticket.id or 0)
        if r.kind == ResponseKind.customer and not r.is_internal and r.message_id
    ]
    ids = list(dict.fromkeys(ids))[-20:]
    return (ids[-1] if ids else None), ids


def _open_forwarded(ctx: IngestContext, parsed: ParsedMail) -> None:
    """An agent's forward: a ticket for the original sender, whose message is the first (public,
    customer) response; the forwarder's own text above it becomes an internal note."""
    forwarded = ctx.forwarded
    assert forwarded is not None
    sender = forwarded.sender
    agent_addresses = {a for agent in ctx.settings.agents for a in agent.addresses}
    subject = _FORWARD_PREFIX.sub("", forwarded.subject or parsed.subject) or parsed.subject
    attachments = forwarded.attachments if forwarded.shape == "rfc822" else parsed.attachments
    first = NewResponse(
        kind=ResponseKind.customer,
        plain_text=forwarded.text,
        visible_text=visible_text(forwarded.text),
        created_by_email=sender.email,
        created_by_name=sender.name,
        subject=subject,
        message_id=parsed.message_id[:998] if parsed.message_id else None,
        is_email_sourced=True,
        inbound_id=ctx.inbound.id,
        attachments=[NewAttachment(a.filename, a.content_type, a.data, a.is_inline, a.content_id) for a in attachments],
    )
    ticket = ticket_service.create_ticket(
        ctx.session,
        subject=subject,
        originator_email=sender.email,
        originator_name=sender.name,
        queue_name=_queue_for(ctx, parsed),
        first=first,
        cc=[(a.email, a.name) for a in forwarded.cc
            if a.email not in agent_addresses and split_plus(a.email)[0] not in ctx.settings.own_addresses],
        clock=ctx.clock,
    )
    if forwarded.message_id:
        store.record_message_id(ctx.session, message_id=forwarded.message_id[:998], ticket_id=ticket.id or 0, direction="in")
    forwarder = _sender_email(parsed)
    if forwarded.note:
        ticket_service.add_response(
            ctx.session, ticket,
            NewResponse(
                kind=ResponseKind.note, plain_text=forwarded.note, visible_text=forwarded.note, is_internal=True,
                created_by_email=forwarder, created_by_name=ctx.agent.name if ctx.agent else (parsed.from_.name if parsed.from_ else ""),
                subject=parsed.subject, is_email_sourced=True, verified=ctx.verified, inbound_id=ctx.inbound.id,
            ),
            clock=ctx.clock, reopen=False,
        )
    ctx.ticket, ctx.outcome = ticket, Outcome.ticket_created
    ctx.reason = (f"ticket {ticket.number} for {sender.email}, forwarded ({forwarded.shape}) by {forwarder}"
                  f" ({ctx.verified or 'unverified'})")


_FORWARD_PREFIX = re.compile(r"^\s*((fwd?|fw|tr|wg|rv|doorst)\s*:\s*)+", re.IGNORECASE)


def record_bounce(ctx: IngestContext) -> None:
    """A bounce of mail we sent fails its outbox row and holds back automatic mail to the dead
    address; the bounce is then recorded on the ticket the bounced mail belonged to."""
    if ctx.classification is None or ctx.classification.verdict != Verdict.bounce:
        return
    details = bounce_details(_parsed(ctx))
    ticket_ids = bounce_service.record_bounce(
        ctx.session, details, clock=ctx.clock, suppress_s=ctx.settings.suppress_bouncing_s,
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
