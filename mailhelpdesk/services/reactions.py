"""The one place that decides what a change causes: which notices, to whom, and which webhooks.

Every service records its change as a ticket event (services/events.py) and the event comes
here, in the same transaction. The decision reads only the event (its type and data), the ticket
and who acted — never the channel — so a change made by mail, by the API, by the CLI or by the
scheduler causes the same mail and the same webhooks. The one exception is explicit:
`MailPolicy.silent` (imported archives) writes no mail at all.

    event            condition                          notice            to
    created          first message public, queue acks   acknowledgement   customer
    created                                             new_ticket        agents
    customer_reply                                      customer_reply    assignee, else agents
    agent_response                                      agent_response    customer and CCs (human mail)
    status           to closed                          ticket_closed     customer
    status           from closed to open / on-hold      ticket_reopened   customer
    status           from on-hold to open               on_hold_woke      assignee, else agents
    command_refused                                     command_error     the agent who sent it
    forwarded                                           forward           the addresses named
                                                                          (human mail, forward
                                                                          reply address)
    sla_warning                                         sla_warning       assignee, else the
    sla_breach                                          sla_breach        queue's agents
    reminder                                            reminder          assignee, else agents

"The queue's agents" are the agents whose `[[agents]] queues` include the ticket's queue (an
agent without a list sees every queue), or every agent when that leaves nobody; the assignee's
watchers are told too, as for "assignee, else agents". The SLA events come from the escalation
job (services/escalation.py) and the reminder from the lifecycle job (services/lifecycle.py).

An answer carries its files (not inline images); the acknowledgement carries the opening
message's files only when it did not come by mail and someone other than the customer wrote it (a
ticket opened by API on the customer's behalf): the customer's own files are never echoed back.

A status change that a message caused (a customer's reply reopening the ticket, an API
response reactivating it) mails nothing more: the message's own notice tells everyone.
`notify_customer: false` in a status event's data holds back the customer's status notice.
Agents are never told of their own changes. Watchers (services/watchers.py) are told what the
assignee is told: "assignee, else agents" means the assignee and the ticket's watchers.
`custom_field` and `time_entry` events cause nothing beyond the history (no notice, no webhook).

Webhooks: `created` → ticket.created and response.created (its first message); every message
event → response.created; `status` → ticket.status_changed; `assigned` → ticket.assigned.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.enums import ResponseKind, TicketStatus
from mailhelpdesk.domain.events import EventType, Origin
from mailhelpdesk.domain.models import Response, Ticket
from mailhelpdesk.mail.compose import AUTO_GENERATED, AUTO_REPLIED, OutgoingAttachment
from mailhelpdesk.mail.redact import redact_signed_addresses
from mailhelpdesk.services import hook_formats, notify, webhooks
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.notify import Recipient
from mailhelpdesk.services.visibility import Viewer, agent_queues
from mailhelpdesk.store import housekeeping as housekeeping_store
from mailhelpdesk.store import lookups
from mailhelpdesk.store import tickets as store

Data = Mapping[str, Any]
REPLY_CAUSE = "reply"  # a status event's `cause` when a message made the change


@dataclass(frozen=True)
class Thread:
    """Threading headers for notices that answer a message (how the mail threads in the
    recipient's client, not whether it is sent)."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


class Audience(enum.Enum):
    customer = "customer"
    customer_and_ccs = "customer and CCs"
    agents = "agents"
    assignee_or_agents = "assignee, else agents"
    assignee_or_queue_agents = "assignee, else the queue's agents"
    acting_agent = "the acting agent"
    forward_recipients = "the addresses a forward names"


@dataclass(frozen=True)
class NoticeRule:
    event: EventType
    notice: str
    audience: Audience
    auto_submitted: str | None  # None: human mail (an agent's answer), no Auto-Submitted
    when: Callable[[Data], bool] = lambda _data: True


def _status_notice(data: Data) -> bool:
    return data.get("cause") != REPLY_CAUSE and data.get("from") != data.get("to")


def _closed(data: Data) -> bool:
    return (
        _status_notice(data)
        and data.get("to") == TicketStatus.closed
        and data.get("notify_customer", True) is not False
    )


def _reopened(data: Data) -> bool:
    return (
        _status_notice(data)
        and data.get("from") == TicketStatus.closed
        and data.get("notify_customer", True) is not False
    )


def _woke(data: Data) -> bool:
    return (
        _status_notice(data)
        and data.get("from") == TicketStatus.on_hold
        and data.get("to") == TicketStatus.open
    )


NOTICE_RULES: tuple[NoticeRule, ...] = (
    NoticeRule(
        EventType.created,
        "acknowledgement",
        Audience.customer,
        AUTO_REPLIED,
        lambda data: bool(data.get("public")),
    ),
    NoticeRule(EventType.created, "new_ticket", Audience.agents, AUTO_GENERATED),
    NoticeRule(
        EventType.customer_reply, "customer_reply", Audience.assignee_or_agents, AUTO_GENERATED
    ),
    NoticeRule(EventType.agent_response, "agent_response", Audience.customer_and_ccs, None),
    NoticeRule(EventType.status, "ticket_closed", Audience.customer, AUTO_GENERATED, _closed),
    NoticeRule(EventType.status, "ticket_reopened", Audience.customer, AUTO_GENERATED, _reopened),
    NoticeRule(
        EventType.status, "on_hold_woke", Audience.assignee_or_agents, AUTO_GENERATED, _woke
    ),
    NoticeRule(EventType.command_refused, "command_error", Audience.acting_agent, AUTO_REPLIED),
    NoticeRule(EventType.forwarded, "forward", Audience.forward_recipients, None),
    NoticeRule(
        EventType.sla_warning, "sla_warning", Audience.assignee_or_queue_agents, AUTO_GENERATED
    ),
    NoticeRule(
        EventType.sla_breach, "sla_breach", Audience.assignee_or_queue_agents, AUTO_GENERATED
    ),
    NoticeRule(EventType.reminder, "reminder", Audience.assignee_or_agents, AUTO_GENERATED),
)

_MESSAGE_EVENTS = frozenset(
    {
        EventType.customer_reply,
        EventType.agent_response,
        EventType.note,
        EventType.held,
        EventType.bounce,
        EventType.auto_reply,
    }
)


def notices_for(event: EventType, data: Data) -> list[NoticeRule]:
    """The notice rules an event meets, in table order (pure: what the parity tests read)."""
    return [rule for rule in NOTICE_RULES if rule.event == event and rule.when(data)]


def webhooks_for(event: EventType) -> tuple[str, ...]:
    """The webhook events an event raises, in order."""
    if event == EventType.created:
        return ("ticket.created", "response.created")
    if event in _MESSAGE_EVENTS:
        return ("response.created",)
    if event == EventType.status:
        return ("ticket.status_changed",)
    if event == EventType.assigned:
        return ("ticket.assigned",)
    return ()


def react(
    session: Session,
    ticket: Ticket,
    event: EventType,
    data: Data,
    *,
    change: ChangeContext,
    thread: Thread | None = None,
) -> None:
    """Write what `event` causes: its webhook deliveries, then its notices."""
    response = _response_of(session, data)
    now = change.clock.now()
    for name in webhooks_for(event):
        extra: dict[str, Any] = {}
        if name == "ticket.status_changed":
            extra["previous_status"] = data.get("from")
        elif name == "ticket.assigned":
            extra["previous_assignee"] = data.get("from")
        payload = webhooks.about(
            session, ticket, response if name == "response.created" else None, **extra
        )
        source = hook_formats.HookSource(
            ticket,
            response if name == "response.created" else None,
            opening=event == EventType.created,
        )
        webhooks.emit(session, name, payload, ticket_id=ticket.id, now=now, source=source)
    if not change.may_mail:
        return
    planned = [
        (rule, _recipients(session, ticket, rule.audience, change.origin, data))
        for rule in notices_for(event, data)
    ]
    automatic = [r for rule, rs in planned if rule.auto_submitted is not None for r in rs]
    # loop safety's reads for every notice of this event at once (services/notify.py)
    facts = (
        notify.RefusalFacts.for_recipients(session, automatic, change.notices, now)
        if automatic
        else None
    )
    notices: list[notify.PlannedNotice] = []
    for rule, recipients in planned:
        notices += _send(
            session,
            ticket,
            rule,
            data,
            response,
            recipients,
            change=change,
            thread=thread or Thread(),
            facts=facts,
        )
    notify.write_notices(session, notices)


def _send(
    session: Session,
    ticket: Ticket,
    rule: NoticeRule,
    data: Data,
    response: Response | None,
    recipients: Sequence[Recipient],
    *,
    change: ChangeContext,
    thread: Thread,
    facts: notify.RefusalFacts | None,
) -> list[notify.PlannedNotice]:
    """The notices of one rule, decided (written by `react` with the event's others)."""
    settings = change.notices
    # no signed address of ours (an agent's reply address, above all) leaves in relayed text
    message_text = redact_signed_addresses(_message_text(rule, response), settings.own_addresses)
    context: dict[str, Any] = notify.notice_context(
        session, ticket, settings=settings, message_text=message_text
    )
    acknowledging = rule.event == EventType.created and rule.audience == Audience.customer
    if acknowledging and context["queue"] in settings.no_ack_queues:
        return []
    from_name: str | None = None
    attachments: Sequence[OutgoingAttachment] = ()
    if rule.notice == "agent_response" and response is not None:
        agent_name = _agent_name(session, response)
        context["agent_name"] = agent_name
        from_name = notify.agent_display_name(settings, agent_name)
        attachments = _attachments_of(session, response)
        thread = customer_thread(session, ticket)
    elif acknowledging and response is not None and _written_for_customer(ticket, response):
        attachments = _attachments_of(session, response)
    elif rule.notice == "on_hold_woke":
        context["on_hold_until"] = str(data.get("was_on_hold_until") or "")
    elif rule.notice == "command_error":
        context["error"] = str(data.get("error", ""))
        context["error_line"] = str(data.get("line", ""))
    elif rule.notice == "ticket_closed":
        context["resolution"] = str(data.get("resolution") or "")
    elif rule.notice in ("sla_warning", "sla_breach"):
        context["sla_target"] = str(data.get("target", "")).replace("_", " ")
        context["due_at"] = str(data.get("due_at") or "")
    elif rule.notice == "reminder":
        context["untouched_days"] = data.get("untouched_days", "")
    elif rule.notice == "forward":
        context.update(_forward_context(session, ticket, data, settings.own_addresses))
        if data.get("include_attachments"):
            attachments = _public_attachments(session, ticket)
    return [
        notify.plan_notice(
            session,
            notice=rule.notice,
            ticket=ticket,
            recipient=recipient,
            context=context,
            settings=settings,
            clock=change.clock,
            auto_submitted=rule.auto_submitted,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            from_name=from_name,
            attachments=attachments,
            facts=facts,
        )
        for recipient in recipients
    ]


def _message_text(rule: NoticeRule, response: Response | None) -> str:
    if response is None:
        return ""
    if rule.event == EventType.created:
        return response.plain_text
    return response.visible_text or response.plain_text


def _recipients(
    session: Session, ticket: Ticket, audience: Audience, origin: Origin, data: Data
) -> list[Recipient]:
    customer = Recipient(ticket.originator_email, ticket.originator_name)
    if audience == Audience.customer:
        return [customer]
    if audience == Audience.forward_recipients:
        return [Recipient(str(email), "", forward=True) for email in data.get("to", [])]
    if audience == Audience.customer_and_ccs:
        return [customer] + [
            Recipient(cc.email, cc.name)
            for cc in store.ccs_of(session, ticket.id or 0)
            if cc.email.lower() != ticket.originator_email.lower()
        ]
    every_agent = lookups.agents(session)
    agents = [Recipient(a.email, a.name, a.id, agent_key=a.reply_key) for a in every_agent]
    if audience == Audience.acting_agent:
        return [a for a in agents if origin.actor.is_agent(a.email)]
    if audience == Audience.assignee_or_queue_agents:
        name = lookups.queue_name(session, ticket.queue_id)
        seeing = {
            a.email.lower() for a in every_agent if Viewer(agent_queues(a.queues)).sees_queue(name)
        }
        agents = [a for a in agents if a.email.lower() in seeing] or agents
        if ticket.assigned_to_email and not any(
            a.email.lower() == ticket.assigned_to_email.lower() for a in agents
        ):  # the assignee hears of their ticket whatever queues they see
            agents = [Recipient(a.email, a.name, a.id, agent_key=a.reply_key) for a in every_agent]
    if audience in (Audience.assignee_or_agents, Audience.assignee_or_queue_agents):
        agents = _with_watchers(session, ticket, agents)
    return [a for a in agents if not origin.actor.is_agent(a.email)]


def _with_watchers(session: Session, ticket: Ticket, agents: list[Recipient]) -> list[Recipient]:
    """The assignee (else every agent), plus the ticket's watchers who are agents."""
    chosen = list(notify.assignee_or_all(ticket, agents))
    watching = set(housekeeping_store.watchers_of(session, ticket.id or 0))
    return chosen + [a for a in agents if a.email.lower() in watching and a not in chosen]


def _forward_context(
    session: Session, ticket: Ticket, data: Data, own_addresses: frozenset[str]
) -> dict[str, Any]:
    """A forward's template data: the note and the public conversation, oldest first (internal
    notes are never forwarded; our signed addresses are taken out)."""
    return {
        "note": redact_signed_addresses(str(data.get("note") or ""), own_addresses),
        "conversation": [
            {
                "author": r.created_by_name or r.created_by_email or "",
                "email": r.created_by_email or "",
                "at": r.created_at.strftime("%Y-%m-%d %H:%M"),
                "text": redact_signed_addresses(
                    (r.visible_text or r.plain_text)[:50_000], own_addresses
                ),
            }
            for r in store.responses_of(session, ticket.id or 0)
            if not r.is_internal
        ],
    }


def _public_attachments(session: Session, ticket: Ticket) -> list[OutgoingAttachment]:
    """The files of the ticket's public messages (what `include_attachments` forwards)."""
    public = [r for r in store.responses_of(session, ticket.id or 0) if not r.is_internal]
    found = store.attachments_of(session, [r.id or 0 for r in public])
    return [
        OutgoingAttachment(a.name, a.mime_type, store.blob_data(session, a.sha256))
        for r in public
        for a in found.get(r.id or 0, [])
        if not a.is_inline
    ]


def _response_of(session: Session, data: Data) -> Response | None:
    response_id = data.get("response_id")
    return store.get_response(session, int(response_id)) if response_id else None


def _agent_name(session: Session, response: Response) -> str:
    """The answering agent's name (or address) for the From of the answer; "" when the answer
    is the helpdesk's own (an intervention's response), which then goes out under its name."""
    agent = store.find_agent(session, response.created_by_email or "")
    return (agent.name or agent.email) if agent is not None else ""


def _attachments_of(session: Session, response: Response) -> list[OutgoingAttachment]:
    """The files an answer carries (inline images stay with the HTML they belonged to)."""
    return [
        OutgoingAttachment(a.name, a.mime_type, store.blob_data(session, a.sha256))
        for a in store.attachments_of(session, [response.id or 0]).get(response.id or 0, [])
        if not a.is_inline
    ]


def _written_for_customer(ticket: Ticket, response: Response) -> bool:
    """Whether an opening message was written to the customer by someone else (an agent or a
    script through the API), so its files are news to them and go with the acknowledgement.
    Mail (the customer's own, or an agent forwarding it) and a message sent as the customer are
    not echoed back with them."""
    return (
        not response.is_email_sourced
        and (response.created_by_email or "").lower() != ticket.originator_email.lower()
    )


def customer_thread(session: Session, ticket: Ticket) -> Thread:
    """In-Reply-To and References for an answer to the customer: their last public message and
    the ones before it (at most 20), so it threads in the customer's own client."""
    ids = [
        r.message_id
        for r in store.responses_of(session, ticket.id or 0)
        if r.kind == ResponseKind.customer and not r.is_internal and r.message_id
    ]
    unique = list(dict.fromkeys(ids))[-20:]
    return Thread(unique[-1] if unique else None, tuple(unique))
