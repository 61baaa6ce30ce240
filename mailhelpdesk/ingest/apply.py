"""The `apply` step: what a message does to the tickets, as a decision table.

The first row whose condition holds decides (Mailman's chain of rule → action):

    condition                               action
    bounce or auto-reply, no ticket         discard (classified)
    bounce or auto-reply on a ticket        record it on the ticket, internal (recorded)
    an agent's forward, no ticket           open a ticket for the original sender
    no ticket                               open a ticket
    a stranger on a ticket                  hold it on the ticket, internal
    a verified agent on a ticket            the agent's answer, note and commands (agent_mail)
    anyone else on a ticket                 the customer's reply

Every action goes through the service layer, which records the change as ticket events; the
notices and webhooks those events cause are decided in services/reactions.py. The message's own
Message-ID and References go along as threading hints only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mailhelpdesk.domain.enums import Outcome, ResponseKind
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.ingest.agent_mail import apply_agent_mail, open_forwarded
from mailhelpdesk.ingest.context import Discard, IngestContext, SenderRole
from mailhelpdesk.ingest.facts import (
    parsed_of,
    queue_for,
    request_of,
    response_from,
    sender_email,
)
from mailhelpdesk.mail.parsed import ParsedMail, Verdict
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.reactions import Thread

Action = Callable[[IngestContext, ParsedMail], None]


def _classification_reason(ctx: IngestContext) -> str:
    return f"{ctx.verdict.value}: {ctx.classification.reason if ctx.classification else ''}"


def discard_classified(ctx: IngestContext, _parsed: ParsedMail) -> None:
    raise Discard(Outcome.classified, _classification_reason(ctx))


def record_on_ticket(ctx: IngestContext, parsed: ParsedMail) -> None:
    """A bounce or an auto-reply that belongs to a ticket: kept on it as an internal system
    message (a `bounce` or `auto_reply` event, which mails nobody)."""
    assert ctx.ticket is not None
    reason = _classification_reason(ctx)
    ticket_service.add_response(
        ctx.session,
        ctx.ticket,
        response_from(ctx, parsed, ResponseKind.system, internal=True),
        change=ctx.change,
        reopen=False,
        event=EventType.bounce if ctx.verdict == Verdict.bounce else EventType.auto_reply,
        reason=reason,
    )
    raise Discard(Outcome.recorded, reason)


def customer_thread_hint(parsed: ParsedMail) -> Thread:
    """Notices answering this message thread on it and what it referred to."""
    message_id = parsed.message_id[:998] if parsed.message_id else None
    references = [r[:998] for r in parsed.references[-20:]]
    return Thread(message_id, (*references, *([message_id] if message_id else [])))


def open_ticket(ctx: IngestContext, parsed: ParsedMail) -> None:
    sender = sender_email(parsed) or ""
    own = ctx.settings.own_addresses
    ticket = ticket_service.create_ticket(
        ctx.session,
        subject=parsed.subject,
        originator_email=sender,
        originator_name=parsed.from_.name if parsed.from_ else "",
        queue_name=queue_for(ctx, parsed),
        # a new request keeps what it forwards in its visible text (mail/request_text.py)
        first=replace(
            response_from(ctx, parsed, ResponseKind.customer), visible_text=request_of(ctx, parsed)
        ),
        cc=[
            (a.email, a.name)
            for a in parsed.cc + parsed.to
            if a.email not in own and split_plus(a.email)[0] not in own and a.email != sender
        ],
        change=ctx.change,
        thread=customer_thread_hint(parsed),
        cc_limits=ctx.settings.cc_limits,
    )
    ctx.ticket, ctx.outcome, ctx.reason = ticket, Outcome.ticket_created, f"ticket {ticket.number}"


def hold(ctx: IngestContext, parsed: ParsedMail) -> None:
    """The party rule: kept on the ticket, internal, never a public reply."""
    assert ctx.ticket is not None
    why = "; ".join(ctx.notes)
    ticket_service.add_response(
        ctx.session,
        ctx.ticket,
        response_from(ctx, parsed, ResponseKind.customer, internal=True),
        change=ctx.change,
        reopen=False,
        reason=why,
    )
    ctx.outcome, ctx.reason = Outcome.held, f"held on ticket {ctx.ticket.number}: {why}"


def customer_reply(ctx: IngestContext, parsed: ParsedMail) -> None:
    """A party's reply (identify-sender made everyone else a held stranger): public, reopens
    the ticket, and its CCs join the ticket within the CC limits."""
    assert ctx.ticket is not None
    ticket_service.add_response(
        ctx.session,
        ctx.ticket,
        response_from(ctx, parsed, ResponseKind.customer),
        change=ctx.change,
        thread=customer_thread_hint(parsed),
    )
    sender = sender_email(parsed) or ""
    own = ctx.settings.own_addresses
    ticket_service.add_ccs(
        ctx.session,
        ctx.ticket,
        [(a.email, a.name) for a in parsed.cc if split_plus(a.email)[0] not in own],
        exclude={sender, *ctx.settings.agent_addresses},
        limits=ctx.settings.cc_limits,
    )
    via = ctx.thread_via.value if ctx.thread_via else "-"
    ctx.outcome = Outcome.reply_added
    ctx.reason = f"reply on ticket {ctx.ticket.number} via {via}"


APPLY_TABLE: tuple[tuple[str, Callable[[IngestContext], bool], Action], ...] = (
    ("bounce or auto-reply, no ticket", lambda c: c.is_automatic and c.ticket is None,
     discard_classified),
    ("bounce or auto-reply on a ticket", lambda c: c.is_automatic, record_on_ticket),
    ("an agent's forward, no ticket", lambda c: c.ticket is None and c.forwarded is not None,
     open_forwarded),
    ("no ticket", lambda c: c.ticket is None, open_ticket),
    ("a stranger on a ticket", lambda c: c.sender_role == SenderRole.stranger, hold),
    ("a verified agent on a ticket", lambda c: c.sender_role == SenderRole.agent, apply_agent_mail),
    ("anyone else on a ticket", lambda _c: True, customer_reply),
)  # fmt: skip


def decide(ctx: IngestContext) -> tuple[str, Action]:
    """The first row of APPLY_TABLE that holds for this message: (its condition, its action)."""
    return next((name, action) for name, holds, action in APPLY_TABLE if holds(ctx))


def apply(ctx: IngestContext) -> None:
    """Through the service layer: a new ticket, a reply, a held message or a recorded event."""
    _condition, action = decide(ctx)
    action(ctx, parsed_of(ctx))
