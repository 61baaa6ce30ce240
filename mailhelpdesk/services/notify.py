"""Writing a notice to the outbox in the change's transaction, and the rules it must obey.

Which notices a change causes is decided in services/reactions.py; this module decides each
one (`plan_notice`) and writes them (`write_notices`): a `NoticeSpec` built into a message by
mail/notice.py, now or by the sender just before sending, and an OutboxItem written with the
session of the change, so a rolled-back change sends nothing. Its Message-ID is recorded on the
ticket so replies to it thread. A notice that cannot be built (a broken template, a value no
header can carry) is written `failed` with the reason on either path: it never undoes the change.

Loop safety lives in one pure function, `auto_reply_refusal`: no automatic notice to our own
addresses, to `noreply`/`mailer-daemon`/`postmaster`-style addresses, to a suppressed (bouncing)
address, or to a customer who already got `max_auto_notices_per_window` automatic notices within
the sliding window. A refused notice is still written, with state `suppressed` and the reason in
`last_error`, so `mailhelpdesk outbox list --state suppressed` shows what was held back and why;
it is never sent and its Message-ID is not recorded. (Bounces, auto-replies, lists and our own
mail cause no notices: the pipeline records them without a reaction that mails.)

Agents are exempt from the per-recipient rate limit (a busy queue legitimately sends an agent
many `new_ticket` notices an hour); the other rules apply to them too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.domain.enums import OutboxState
from mailhelpdesk.domain.links import status_url
from mailhelpdesk.domain.models import OutboxItem, Ticket
from mailhelpdesk.domain.sla import SlaPolicy
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.mail.compose import (
    OutgoingAttachment,
    domain_of,
    is_message_id,
    make_message_id,
)
from mailhelpdesk.mail.notice import NoticeSpec, compose_notice, try_compose
from mailhelpdesk.mail.render import NoticeRenderError
from mailhelpdesk.mail.tokens import ReplyToken, reply_address, split_plus
from mailhelpdesk.services import sla_policy
from mailhelpdesk.store import lookups, outbox
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
    # [[custom_fields]] (config.CustomFieldConfig): every write of a value is checked against
    # them, and closing a ticket needs those marked required_to_close (services/custom_fields.py)
    custom_fields: tuple[CustomFieldConfig, ...] = ()
    # `[http] public_url`: the base of the status page link in notices ("" = no link)
    public_url: str = ""
    # [[sla]] and [business_hours]: every change keeps the ticket's due times (services/sla.py)
    sla: SlaPolicy = field(default_factory=SlaPolicy)

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
            custom_fields=tuple(config.custom_fields),
            public_url=config.http.public_url,
            sla=sla_policy.policy_of(config),
        )


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""
    agent_id: int | None = None  # set for agents: their Reply-To is signed for them
    agent_key: str = ""  # the agent's reply key, signed into that Reply-To (mail/tokens.py)
    # a third party a ticket is forwarded to: their Reply-To is a forward address, and their
    # reply is kept internal (ingest/steps.py)
    forward: bool = False


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


# the reasons auto_reply_refusal gives, as LIKE patterns by kind: /metrics counts suppressed
# notices by these (store/backlog.gauges), so a new reason needs its line here
SUPPRESSION_KINDS: dict[str, str] = {
    "own_address": "% is one of our own addresses",
    "robot_address": "% is an automatic (no-reply) address",
    "bouncing": "% is suppressed: %",
    "rate_limit": "rate limit: %",
    "no_address": "no usable address",
}


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
    queue = lookups.queue_name(session, ticket.queue_id)
    secure_url = status_url(settings.public_url, ticket.secure_id)
    return {
        "helpdesk_name": settings.helpdesk_name,
        "helpdesk_address": settings.helpdesk_address,
        "ticket_number": ticket.number,
        "ticket_tag": ticket_tag(ticket),
        "ticket_subject": ticket.subject,
        "ticket_status": ticket.status,
        "queue": queue,
        "customer_name": ticket.originator_name,
        "customer_email": ticket.originator_email,
        "message_text": message_text[:50_000],
        "agent_name": agent_name,
        # resources.md §8: `{{ ticket.secure_url }}`, None without `[http] public_url`
        "ticket": {
            "number": ticket.number,
            "subject": ticket.subject,
            "status": ticket.status,
            "secure_url": secure_url,
        },
    }


@dataclass
class RefusalFacts:
    """What loop safety reads from the database for a batch of automatic notices (the notices
    one event causes): the suppressed addresses among their recipients and each customer's
    automatic notices within the window, read in two queries for the batch instead of two per
    notice (`for_recipients`). The batch's own notices are counted as they are written
    (`written`), so the rate limit sees exactly what a query per notice would have seen."""

    suppressed: dict[str, str]
    recent: dict[str, int]

    @classmethod
    def for_recipients(
        cls,
        session: Session,
        recipients: Sequence[Recipient],
        settings: NotifySettings,
        now: datetime,
    ) -> RefusalFacts:
        emails = {r.email.lower() for r in recipients}
        emails.discard("")
        # agents are exempt from the rate limit: no count for them
        counted = {r.email.lower() for r in recipients if r.agent_id is None}
        since = now - timedelta(seconds=settings.auto_notice_window_s)
        return cls(
            suppressed=outbox.suppressed_among(session, emails, now=now),
            recent=outbox.recent_automatic_among(session, counted, since=since),
        )

    def refusal(self, recipient: Recipient, settings: NotifySettings) -> str | None:
        return auto_reply_refusal(
            recipient.email,
            own_addresses=settings.own_addresses,
            suppressed=self.suppressed.get(recipient.email.lower()),
            recent_automatic=(
                self.recent.get(recipient.email.lower(), 0) if recipient.agent_id is None else 0
            ),
            max_per_window=settings.max_auto_notices_per_window,
            rate_limited=recipient.agent_id is None,
        )

    def written(self, primary_rcpt: str) -> None:
        """An automatic notice that counts (not suppressed) was written to `primary_rcpt`."""
        self.recent[primary_rcpt] = self.recent.get(primary_rcpt, 0) + 1


@dataclass(frozen=True)
class PlannedNotice:
    """A notice decided by `plan_notice`: its outbox row (store/outbox.new_row) and, when it is
    queued to be sent, the (Message-ID, ticket id, direction) to record for threading."""

    row: dict[str, object]
    known: tuple[str, int, str] | None


def plan_notice(
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
    facts: RefusalFacts | None = None,
) -> PlannedNotice:
    """Decide one notice to one recipient, to be written by `write_notice(s)`: `queued`
    (composed, or as a spec the sender composes), `suppressed` (loop safety, with the reason),
    or `failed` when it cannot be built (a broken template, a value that cannot go into a
    header) — visible in `outbox list`, never undoing the change that caused it. Only
    services/reactions.py calls this.

    `auto_submitted` is `auto-replied`/`auto-generated` for automatic notices and None for an
    agent's own answer (human mail: no Auto-Submitted, no rate limit). `facts`: what loop
    safety needs, read once for the batch of notices this one belongs to (read for this one
    recipient when not given)."""
    now = clock.now()
    automatic = auto_submitted is not None
    refusal = None
    if automatic:
        if facts is None:
            facts = RefusalFacts.for_recipients(session, [recipient], settings, now)
        refusal = facts.refusal(recipient, settings)
    spec = NoticeSpec(
        notice=notice,
        context=dict(context),
        to=(recipient.name, recipient.email),
        message_id=make_message_id(domain_of(settings.helpdesk_address)),
        reply_to=reply_address(
            settings.secret,
            settings.helpdesk_address,
            ReplyToken(
                ticket.number,
                recipient.agent_id,
                forward=recipient.forward,
                agent_key=recipient.agent_key,
            ),
        ),
        # a customer's malformed Message-ID must not cost the notice its threading
        in_reply_to=in_reply_to if is_message_id(in_reply_to) else None,
        references=tuple(r for r in references if is_message_id(r)),
        auto_submitted=auto_submitted,
        ticket_number=ticket.number,
        thread_topic=ticket.subject,
        date=now,
        from_name=settings.helpdesk_name if from_name is None else from_name,
    )
    deferred = (
        spec.to_json()
        if automatic and not attachments and settings.compose_in_sender and not refusal
        else None
    )
    state, error, raw = OutboxState.queued, refusal or "", b""
    if refusal:
        state = OutboxState.suppressed
    elif deferred is None:
        try:
            raw = compose_notice(
                spec,
                helpdesk_address=settings.helpdesk_address,
                template_dir=settings.template_dir,
                attachments=attachments,
            )
        except (NoticeRenderError, InvalidInputError) as exc:
            state, error = OutboxState.failed, f"cannot compose: {exc}"
    rcpt = recipient.email.lower()[:320] or "-"
    if automatic and facts is not None and state != OutboxState.suppressed:
        facts.written(rcpt)
    row = outbox.new_row(
        kind=notice,
        ticket_id=ticket.id,
        message_id=spec.message_id,
        mail_from=settings.helpdesk_address,
        rcpt_tos=[rcpt],
        is_automatic=automatic,
        raw=raw,
        now=now,
        deadline_at=now + timedelta(seconds=settings.deadline_s),
        state=state,
        last_error=error,
        compose_spec=deferred,
    )
    if state != OutboxState.queued:
        log.warning(
            "notice %s notice=%s ticket=%s rcpt=%s reason=%s",
            state,
            notice,
            ticket.number,
            recipient.email,
            error,
        )
        return PlannedNotice(row, None)
    direction = ticket_store.FORWARD_DIRECTION if recipient.forward else "out"
    return PlannedNotice(row, (spec.message_id, ticket.id or 0, direction))


def write_notice(session: Session, planned: PlannedNotice) -> OutboxItem:
    """One planned notice written now: its outbox row (returned, with its id) and, if it will
    be sent, its Message-ID on the ticket, so replies to it thread."""
    item = outbox.enqueue(session, planned.row)
    if planned.known is not None:
        ticket_store.record_message_ids(session, [planned.known])
    return item


def write_notices(session: Session, planned: Sequence[PlannedNotice]) -> None:
    """The planned notices of one event written together: one executemany for their outbox
    rows and one for their Message-IDs, instead of two INSERTs per notice."""
    outbox.enqueue_many(session, [p.row for p in planned])
    ticket_store.record_message_ids(session, [p.known for p in planned if p.known is not None])


def compose_pending(session: Session, settings: NotifySettings, *, limit: int = 1000) -> int:
    """Compose every queued notice still written as a spec, in this session (the sender does the
    same in two short transactions around the composing, see transports/smtp_sender.py)."""
    rows = outbox.to_compose(session, limit=limit)
    built = [
        (
            item_id,
            *try_compose(
                spec, helpdesk_address=settings.helpdesk_address, template_dir=settings.template_dir
            ),
        )
        for item_id, spec in rows
    ]
    outbox.store_composed(session, built)
    session.flush()
    return len(rows)


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
