"""What the ingest steps read off a message and its context, shared by steps.py and agent_mail.py."""

from __future__ import annotations

import logging
import re
from email.utils import getaddresses

from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.ingest.context import IngestContext
from mailhelpdesk.mail.forwarded import ForwardedOriginal, find_forwarded
from mailhelpdesk.mail.parsed import ParsedMail
from mailhelpdesk.mail.reply_text import visible_text
from mailhelpdesk.mail.request_text import request_text
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.mail.understood import Understood
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.tickets import NewAttachment, NewResponse

log = logging.getLogger(__name__)


def parsed_of(ctx: IngestContext) -> ParsedMail:
    assert ctx.parsed is not None, "parse must run first"
    return ctx.parsed


def _understood_for(ctx: IngestContext, parsed: ParsedMail) -> Understood | None:
    """The message's understanding, when `parsed` is the message itself (not, say, a
    forwarded original parsed from it)."""
    understood = ctx.understood
    if not understood.derived or understood.parsed is not parsed:
        return None
    return understood


def visible_of(ctx: IngestContext, parsed: ParsedMail) -> str:
    """visible_text(parsed.text), as understood ahead when it was."""
    understood = _understood_for(ctx, parsed)
    return understood.visible_text if understood is not None else visible_text(parsed.text)


def request_of(ctx: IngestContext, parsed: ParsedMail) -> str:
    """request_text(parsed), as understood ahead when it was."""
    understood = _understood_for(ctx, parsed)
    return understood.request_text if understood is not None else request_text(parsed)


def forwarded_of(ctx: IngestContext, parsed: ParsedMail) -> ForwardedOriginal | None:
    """find_forwarded(parsed), as understood ahead when it was."""
    understood = _understood_for(ctx, parsed)
    return understood.forwarded if understood is not None else find_forwarded(parsed)


# a ticket's number in a subject, as our notices write it ("[#100042]")
SUBJECT_TAG = re.compile(r"\[#(\d{6,12})\]")


def thread_candidates(parsed: ParsedMail) -> list[str]:
    """The Message-IDs the thread step tries, in its order: In-Reply-To, then References from
    the most recent back."""
    return [c[:998] for c in (*parsed.in_reply_to, *reversed(parsed.references))]


def sender_email(parsed: ParsedMail) -> str | None:
    if parsed.from_ and parsed.from_.email:
        return parsed.from_.email
    if parsed.reply_to:
        return parsed.reply_to[0].email
    return None


def recipient_addresses(ctx: IngestContext, parsed: ParsedMail) -> list[str]:
    """Where the message was sent: the envelope first, then the headers that name recipients."""
    found = [a.lower() for a in ctx.envelope.rcpt_tos]
    found += [a.email for a in parsed.to + parsed.cc]
    for name in ("delivered-to", "x-original-to", "envelope-to"):
        found += [addr.lower() for _n, addr in getaddresses(parsed.header_all(name)) if addr]
    return list(dict.fromkeys(found))


def queue_for(ctx: IngestContext, parsed: ParsedMail) -> str:
    if ctx.envelope.queue_hint:
        return ctx.envelope.queue_hint
    for address in recipient_addresses(ctx, parsed):
        queue = ctx.settings.inbound_addresses.get(split_plus(address)[0])
        if queue:
            return queue
    return ticket_service.DEFAULT_QUEUE


def response_from(
    ctx: IngestContext, parsed: ParsedMail, kind: ResponseKind, *, internal: bool = False
) -> NewResponse:
    sender = sender_email(parsed)
    return NewResponse(
        kind=kind,
        plain_text=parsed.text,
        visible_text=visible_of(ctx, parsed) if kind != ResponseKind.system else parsed.text,
        html=parsed.html,
        is_internal=internal,
        created_by_email=sender,
        created_by_name=ctx.agent.name
        if ctx.agent
        else (parsed.from_.name if parsed.from_ else ""),
        subject=parsed.subject,
        message_id=parsed.message_id[:998] if parsed.message_id else None,
        is_email_sourced=True,
        verified=ctx.verified,
        inbound_id=ctx.inbound_id,
        attachments=[
            NewAttachment(a.filename, a.content_type, a.data, a.is_inline, a.content_id)
            for a in parsed.attachments
        ],
    )
