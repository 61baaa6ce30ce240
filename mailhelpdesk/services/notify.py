"""Which notices a change causes, and writing them to the outbox in the change's transaction.

A notice is rendered (mail/render.py), composed (mail/compose.py) and written as an OutboxItem
with the session of the change, so a rolled-back change sends nothing; the sender drains the
outbox later. Its Message-ID is recorded on the ticket so replies to it thread.

Loop safety lives in one pure function, `auto_reply_refusal`: no automatic notice to our own
addresses, to `noreply`/`mailer-daemon`/`postmaster`-style addresses, to a suppressed (bouncing)
address, or to a customer who already got `max_auto_notices_per_window` automatic notices within
the sliding window. A refused notice is still written, with state `suppressed` and the reason in
`last_error`, so `mailhelpdesk outbox list --state suppressed` shows what was held back and why;
it is never sent and its Message-ID is not recorded. (Bounces, auto-replies, lists and our own
mail never reach this module: the pipeline stops them before `schedule_notices`.)

Agents are exempt from the per-recipient rate limit (a busy queue legitimately sends an agent
many `new_ticket` notices an hour); the other rules apply to them too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import OutboxItem, Queue, Ticket
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.mail.compose import (
    AUTO_GENERATED,
    AUTO_REPLIED,
    Outgoing,
    OutgoingAttachment,
    as_bytes,
    compose,
    domain_of,
    is_message_id,
    make_message_id,
)
from mailhelpdesk.mail.render import render_notice
from mailhelpdesk.mail.tokens import ReplyToken, reply_address, split_plus
from mailhelpdesk.store import outbox
from mailhelpdesk.store import tickets as ticket_store

log = logging.getLogger(__name__)

_ROBOT_LOCAL = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|mailer[-_.]?daemon|postmaster|"
    r"bounces?|listserv|majordomo|autoresponder|auto[-_.]?reply|.+-(request|bounces?|owner)|owner-.+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class NotifySettings:
    """What notices need to know about this helpdesk."""

    helpdesk_name: str
    helpdesk_address: str
    secret: bytes
    own_addresses: frozenset[str]
    no_ack_queues: frozenset[str] = frozenset()
    max_auto_notices_per_window: int = 10
    auto_notice_window_s: int = 3600
    deadline_s: int = 172800
    template_dir: str = ""
    agent_name_format: str = "{agent} via {helpdesk}"
    # [[interventions]] (config.InterventionConfig) and the tries an epilog call gets
    # (services/interventions.py renders their templates from template_dir like the notices)
    interventions: tuple[Any, ...] = ()
    epilog_max_attempts: int = 10
    # automatic notices are written as a spec and composed by the sender (see compose_pending)
    compose_in_sender: bool = False

    @classmethod
    def from_config(cls, config: Any, secret: bytes) -> NotifySettings:
        return cls(
            helpdesk_name=config.helpdesk.name,
            helpdesk_address=config.helpdesk.address.lower(),
            secret=secret,
            own_addresses=frozenset(config.inbound_addresses()),
            no_ack_queues=frozenset(q.name for q in config.queues if not q.acknowledge),
            max_auto_notices_per_window=config.outbound.max_auto_notices_per_window,
            auto_notice_window_s=config.outbound.auto_notice_window_s,
            deadline_s=config.smtp_relay.deadline_s,
            template_dir=config.templates.dir,
            agent_name_format=config.helpdesk.agent_name_format,
            interventions=tuple(config.interventions),
            epilog_max_attempts=config.http_deliveries.max_attempts,
            compose_in_sender=config.outbound.compose_in_sender,
        )


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""
    agent_id: int | None = None  # set for agents: their Reply-To is signed for them


def is_robot_address(address: str) -> bool:
    """noreply@, mailer-daemon@, postmaster@, list -request/-bounces addresses and the like."""
    local = split_plus(address)[0].rpartition("@")[0]
    return bool(_ROBOT_LOCAL.match(local))


def auto_reply_refusal(
    address: str,
    *,
    own_addresses: frozenset[str],
    suppressed: str | None,
    recent_automatic: int,
    max_per_window: int,
    rate_limited: bool = True,
) -> str | None:
    """May we send an automatic notice to `address`? None if yes, else the reason why not."""
    email = address.strip().lower()
    if not email or "@" not in email:
        return "no usable address"
    if email in own_addresses or split_plus(email)[0] in own_addresses:
        return f"{email} is one of our own addresses"
    if is_robot_address(email):
        return f"{email} is an automatic (no-reply) address"
    if suppressed is not None:
        return f"{email} is suppressed: {suppressed}"
    if rate_limited and recent_automatic >= max_per_window:
        return f"rate limit: {recent_automatic} automatic notices to {email} within the window"
    return None


def ticket_tag(ticket: Ticket) -> str:
    return f"[#{ticket.number}]"


def notice_context(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    message_text: str = "",
    agent_name: str = "",
) -> dict[str, Any]:
    """The data every notice template gets (plain values, never ORM objects)."""
    queue = session.get(Queue, ticket.queue_id)
    return {
        "helpdesk_name": settings.helpdesk_name,
        "helpdesk_address": settings.helpdesk_address,
        "ticket_number": ticket.number,
        "ticket_tag": ticket_tag(ticket),
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status,
        "queue": queue.name if queue else "",
        "customer_name": ticket.originator_name,
        "customer_email": ticket.originator_email,
        "message_text": message_text[:50_000],
        "agent_name": agent_name,
    }


def schedule_notice(
    session: Session,
    *,
    notice: str,
    ticket: Ticket,
    recipient: Recipient,
    context: Mapping[str, Any],
    settings: NotifySettings,
    clock: Clock,
    auto_submitted: str | None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    from_name: str | None = None,
    attachments: Sequence[OutgoingAttachment] = (),
) -> OutboxItem:
    """Render, compose and write one notice to one recipient (state queued, or suppressed).

    `auto_submitted` is `auto-replied`/`auto-generated` for automatic notices and None for an
    agent's own answer (human mail: no Auto-Submitted, no rate limit). Raises NoticeRenderError
    for a broken template and InvalidInputError for a value that would break a header.
    """
    now = clock.now()
    automatic = auto_submitted is not None
    refusal: str | None = None
    if automatic:
        since = now - timedelta(seconds=settings.auto_notice_window_s)
        refusal = auto_reply_refusal(
            recipient.email,
            own_addresses=settings.own_addresses,
            suppressed=outbox.suppressed_reason(session, email=recipient.email, now=now),
            # agents are exempt from the rate limit: skip the count (a query per notice) for them
            recent_automatic=(
                outbox.count_recent_automatic(session, rcpt=recipient.email, since=since)
                if recipient.agent_id is None
                else 0
            ),
            max_per_window=settings.max_auto_notices_per_window,
            rate_limited=recipient.agent_id is None,
        )
    # a customer's malformed Message-ID must not cost the notice its threading, or the notice
    in_reply_to = in_reply_to if is_message_id(in_reply_to) else None
    references = [r for r in references if is_message_id(r)]
    signed = reply_address(
        settings.secret, settings.helpdesk_address, ReplyToken(ticket.number, recipient.agent_id)
    )
    spec = None
    if automatic and not attachments and settings.compose_in_sender:
        message_id = make_message_id(domain_of(settings.helpdesk_address))
        spec = _notice_spec(
            notice=notice,
            context=context,
            recipient=recipient,
            message_id=message_id,
            reply_to=signed,
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=auto_submitted,
            ticket=ticket,
            now=now,
            from_name=settings.helpdesk_name if from_name is None else from_name,
        )
        raw = b""  # the sender composes it from the spec, with this Message-ID
    if spec is None:
        rendered = render_notice(notice, context, template_dir=settings.template_dir)
        try:
            message = _compose_notice(
                settings,
                recipient,
                rendered.subject,
                rendered.text,
                rendered.html,
                signed,
                in_reply_to,
                references,
                auto_submitted,
                ticket,
                now,
                from_name,
                attachments,
            )
        except InvalidInputError as exc:
            if not automatic:
                raise
            # an automatic notice must never undo the change that caused it: keep it, unsendable
            return outbox.enqueue(
                session,
                kind=notice,
                ticket_id=ticket.id,
                message_id=make_message_id(domain_of(settings.helpdesk_address)),
                mail_from=settings.helpdesk_address,
                rcpt_tos=[recipient.email.lower()[:320] or "-"],
                is_automatic=True,
                raw=b"",
                now=now,
                deadline_at=now,
                state=outbox.OutboxState.suppressed,
                last_error=f"cannot compose: {exc}",
            )
        message_id, raw = str(message["Message-ID"]), as_bytes(message)
    item = outbox.enqueue(
        session,
        kind=notice,
        ticket_id=ticket.id,
        message_id=message_id,
        mail_from=settings.helpdesk_address,
        rcpt_tos=[recipient.email.lower()],
        is_automatic=automatic,
        raw=raw,
        now=now,
        deadline_at=now + timedelta(seconds=settings.deadline_s),
        state=outbox.OutboxState.suppressed if refusal else outbox.OutboxState.queued,
        last_error=refusal or "",
        compose_spec=spec,
    )
    if refusal:
        log.warning(
            "notice suppressed notice=%s ticket=%s rcpt=%s reason=%s",
            notice,
            ticket.number,
            recipient.email,
            refusal,
        )
    else:
        ticket_store.record_message_id(
            session, message_id=message_id, ticket_id=ticket.id or 0, direction="out"
        )
    return item


def _notice_spec(
    *,
    notice: str,
    context: Mapping[str, Any],
    recipient: Recipient,
    message_id: str,
    reply_to: str,
    in_reply_to: str | None,
    references: Sequence[str],
    auto_submitted: str,
    ticket: Ticket,
    now: Any,
    from_name: str,
) -> str | None:
    """Everything composing the notice later needs, as JSON (None: the context is not plain
    JSON data, and the notice is composed at once instead)."""
    try:
        return json.dumps(
            {
                "v": 1,
                "notice": notice,
                "context": dict(context),
                "to": [recipient.name, recipient.email],
                "message_id": message_id,
                "reply_to": reply_to,
                "in_reply_to": in_reply_to,
                "references": list(references),
                "auto_submitted": auto_submitted,
                "ticket_number": ticket.number,
                "thread_topic": ticket.subject,
                "date": now.isoformat(),
                "from_name": from_name,
            },
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError):
        return None


def compose_spec(spec: str, settings: NotifySettings) -> bytes:
    """The message bytes of a notice written as a spec; raises NoticeRenderError or
    InvalidInputError when it cannot be built (the caller fails the row with the reason)."""
    data = json.loads(spec)
    rendered = render_notice(data["notice"], data["context"], template_dir=settings.template_dir)
    message = compose(
        Outgoing(
            from_name=data["from_name"],
            from_address=settings.helpdesk_address,
            to=[tuple(data["to"])],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            reply_to=data["reply_to"],
            in_reply_to=data["in_reply_to"],
            references=tuple(data["references"]),
            auto_submitted=data["auto_submitted"],
            ticket_number=data["ticket_number"],
            thread_topic=data["thread_topic"],
            message_id=data["message_id"],
            date=datetime.fromisoformat(data["date"]),
        )
    )
    return as_bytes(message)


def try_compose_spec(spec: str, settings: NotifySettings) -> tuple[bytes | None, str]:
    """(message bytes, "") or (None, why not): a broken template fails its notice, nothing more."""
    try:
        return compose_spec(spec, settings), ""
    except Exception as exc:  # noqa: BLE001 - the reason is kept on the row
        return None, f"cannot compose: {exc}"


def compose_pending(
    session: Session, settings: NotifySettings, *, clock: Clock, limit: int = 1000
) -> int:
    """Compose every queued notice still written as a spec, in this session (the sender does the
    same in two short transactions around the composing, see transports/smtp_sender.py)."""
    rows = outbox.to_compose(session, limit=limit)
    for item_id, spec in rows:
        raw, error = try_compose_spec(spec, settings)
        outbox.store_composed(session, item_id, raw=raw, error=error, now=clock.now())
    session.flush()
    return len(rows)


def _compose_notice(
    settings: NotifySettings,
    recipient: Recipient,
    subject: str,
    text: str,
    html: str,
    signed: str,
    in_reply_to: str | None,
    references: Sequence[str],
    auto_submitted: str | None,
    ticket: Ticket,
    now: Any,
    from_name: str | None = None,
    attachments: Sequence[OutgoingAttachment] = (),
) -> Message:
    return compose(
        Outgoing(
            from_name=settings.helpdesk_name if from_name is None else from_name,
            from_address=settings.helpdesk_address,
            to=[(recipient.name, recipient.email)],
            subject=subject,
            text=text,
            html=html,
            reply_to=signed,
            in_reply_to=in_reply_to,
            references=tuple(references),
            auto_submitted=auto_submitted,
            ticket_number=ticket.number,
            thread_topic=ticket.subject,
            date=now,
            attachments=tuple(attachments),
        )
    )


def notify_ticket_created(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    clock: Clock,
    agents: Sequence[Recipient],
    customer_message_id: str | None,
    customer_references: Sequence[str] = (),
    message_text: str = "",
) -> list[OutboxItem]:
    """A new ticket from a customer's mail: the acknowledgement to the customer (unless the
    queue says not to) and `new_ticket` to every agent, all threaded on the customer's mail."""
    items: list[OutboxItem] = []
    context = notice_context(session, ticket, settings=settings, message_text=message_text)
    references = [*customer_references, *([customer_message_id] if customer_message_id else [])]
    if context["queue"] not in settings.no_ack_queues:
        items.append(
            schedule_notice(
                session,
                notice="acknowledgement",
                ticket=ticket,
                recipient=Recipient(ticket.originator_email, ticket.originator_name),
                context=context,
                settings=settings,
                clock=clock,
                auto_submitted=AUTO_REPLIED,
                in_reply_to=customer_message_id,
                references=references,
            )
        )
    for agent in agents:
        items.append(
            schedule_notice(
                session,
                notice="new_ticket",
                ticket=ticket,
                recipient=agent,
                context=context,
                settings=settings,
                clock=clock,
                auto_submitted=AUTO_GENERATED,
                in_reply_to=customer_message_id,
                references=references,
            )
        )
    return items


def notify_customer_reply(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    clock: Clock,
    agents: Sequence[Recipient],
    customer_message_id: str | None,
    customer_references: Sequence[str] = (),
    message_text: str = "",
) -> list[OutboxItem]:
    """A customer's reply on a ticket: `customer_reply` to the assigned agent, else to every agent."""
    context = notice_context(session, ticket, settings=settings, message_text=message_text)
    references = [*customer_references, *([customer_message_id] if customer_message_id else [])]
    return [
        schedule_notice(
            session,
            notice="customer_reply",
            ticket=ticket,
            recipient=agent,
            context=context,
            settings=settings,
            clock=clock,
            auto_submitted=AUTO_GENERATED,
            in_reply_to=customer_message_id,
            references=references,
        )
        for agent in assignee_or_all(ticket, agents)
    ]


def assignee_or_all(ticket: Ticket, agents: Sequence[Recipient]) -> Sequence[Recipient]:
    """Who hears about a ticket's news: its assignee, or every agent while nobody has it."""
    assigned = [
        a
        for a in agents
        if ticket.assigned_to_email and a.email.lower() == ticket.assigned_to_email.lower()
    ]
    return assigned or agents


def agent_display_name(settings: NotifySettings, agent_name: str) -> str:
    """The From name of an agent's answer: `[helpdesk] agent_name_format` filled in (plain
    replacement, not str.format: a name is data, never a format spec)."""
    if not agent_name:
        return settings.helpdesk_name
    return " ".join(
        settings.agent_name_format.replace("{agent}", agent_name)
        .replace("{helpdesk}", settings.helpdesk_name)
        .split()
    )


def notify_agent_response(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    clock: Clock,
    agent_name: str,
    message_text: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    include_ccs: bool = True,
    attachments: Sequence[OutgoingAttachment] = (),
) -> OutboxItem:
    """An agent's public answer, mailed to the customer and (one copy each) to the ticket's CCs:
    human mail, so no Auto-Submitted and no rate limit. From the helpdesk's address, named after
    the agent (`agent_name_format`). Returns the customer's copy."""
    context = notice_context(
        session, ticket, settings=settings, message_text=message_text, agent_name=agent_name
    )
    from_name = agent_display_name(settings, agent_name)
    recipients = [Recipient(ticket.originator_email, ticket.originator_name)]
    if include_ccs:
        recipients += [
            Recipient(cc.email, cc.name)
            for cc in ticket_store.ccs_of(session, ticket.id or 0)
            if cc.email.lower() != ticket.originator_email.lower()
        ]
    items = [
        schedule_notice(
            session,
            notice="agent_response",
            ticket=ticket,
            recipient=recipient,
            context=context,
            settings=settings,
            clock=clock,
            auto_submitted=None,
            in_reply_to=in_reply_to,
            references=references,
            from_name=from_name,
            attachments=attachments,
        )
        for recipient in recipients
    ]
    return items[0]


def notify_command_error(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    clock: Clock,
    agent: Recipient,
    error: str,
    line: str,
    in_reply_to: str | None = None,
) -> OutboxItem:
    """`command_error` to the (verified) agent whose mail command failed: which line, and why.
    An automatic answer to their mail (`auto-replied`); agents are exempt from the rate limit."""
    context = {
        **notice_context(session, ticket, settings=settings),
        "error": error,
        "error_line": line,
    }
    return schedule_notice(
        session,
        notice="command_error",
        ticket=ticket,
        recipient=agent,
        context=context,
        settings=settings,
        clock=clock,
        auto_submitted=AUTO_REPLIED,
        in_reply_to=in_reply_to,
        references=[in_reply_to] if in_reply_to else (),
    )


def notify_status_change(
    session: Session, ticket: Ticket, *, notice: str, settings: NotifySettings, clock: Clock
) -> OutboxItem:
    """`ticket_closed` or `ticket_reopened` to the customer (automatic, auto-generated)."""
    if notice not in ("ticket_closed", "ticket_reopened"):
        raise ValueError(f"not a status notice: {notice}")
    context = notice_context(session, ticket, settings=settings)
    return schedule_notice(
        session,
        notice=notice,
        ticket=ticket,
        recipient=Recipient(ticket.originator_email, ticket.originator_name),
        context=context,
        settings=settings,
        clock=clock,
        auto_submitted=AUTO_GENERATED,
    )


def notify_on_hold_woke(
    session: Session,
    ticket: Ticket,
    *,
    settings: NotifySettings,
    clock: Clock,
    agents: Sequence[Recipient],
    was_on_hold_until: str,
) -> list[OutboxItem]:
    """An on-hold ticket whose date came: `on_hold_woke` (subject `[reopened] [#N] …`) to the
    assignee, else to every agent, so the ticket is looked at again."""
    context = {
        **notice_context(session, ticket, settings=settings),
        "on_hold_until": was_on_hold_until,
    }
    return [
        schedule_notice(
            session,
            notice="on_hold_woke",
            ticket=ticket,
            recipient=agent,
            context=context,
            settings=settings,
            clock=clock,
            auto_submitted=AUTO_GENERATED,
        )
        for agent in assignee_or_all(ticket, agents)
    ]
