"""What the Tickiti-compatible API does (api-contract.md §4 and §5), behind the HTTP layer.

Each function takes the session of the request's transaction and the request's ChangeContext
(channel api, the token or its owner agent as the actor) and changes tickets only through the
ticket services, whose events decide the notices exactly as for mail (services/reactions.py);
`send_email` writes its one message to the outbox in the same transaction. The HTTP layer has
already checked types and shapes; what needs the store (queue, template, mailbox, ticket) is
checked here and raised as FieldError / NotFoundError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import jinja2
from jinja2 import meta
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import OutboxState, ResponseKind, TicketStatus
from mailhelpdesk.errors import ForbiddenError, InvalidInputError, NotFoundError
from mailhelpdesk.mail.compose import (
    AUTO_GENERATED,
    Outgoing,
    OutgoingAttachment,
    as_bytes,
    compose,
)
from mailhelpdesk.mail.html_text import html_to_text, sanitize_html
from mailhelpdesk.mail.render import (
    NoticeRenderError,
    available_notices,
    environment,
    render_notice,
)
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.services import api_tokens, interventions, ticket_changes
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.services.reactions import REPLY_CAUSE
from mailhelpdesk.services.visibility import EVERYONE, Viewer
from mailhelpdesk.store import lookups, outbox
from mailhelpdesk.store import tickets as store

_LOOKS_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


class FieldError(InvalidInputError):
    """Input that names something the store does not have (a queue, a template, a mailbox)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FieldErrors(InvalidInputError):
    """Several fields of one request are invalid: 422 with every field named."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.fields = {k: [v] for k, v in errors.items()}


@dataclass(frozen=True)
class ApiSettings:
    notify: NotifySettings
    mailboxes: Mapping[str, str]  # mailbox (queue) name -> from address
    default_mailbox: str = "Inbox"
    # [http_deliveries] for subscriptions made by API (services/webhook_subscriptions.py)
    webhook_timeout_s: float = 10
    webhook_max_attempts: int = 10
    # `[http] status_page_requests_per_minute`: per client address (http/status_page.py)
    status_page_requests_per_minute: int = 30

    @classmethod
    def from_config(cls, config: Any, notify_settings: NotifySettings) -> ApiSettings:
        boxes = {"Inbox": config.helpdesk.address}
        boxes.update({q.name: q.address for q in config.queues if q.address})
        return cls(
            notify=notify_settings,
            mailboxes=boxes,
            webhook_timeout_s=config.http_deliveries.timeout_s,
            webhook_max_attempts=config.http_deliveries.max_attempts,
            status_page_requests_per_minute=config.http.status_page_requests_per_minute,
        )


@dataclass(frozen=True)
class Body:
    """A message body given directly or by a template."""

    subject: str = ""
    content: str = ""
    template_identifier: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None
    missing: tuple[str, ...] = ()


def text_and_html(content: str) -> tuple[str, str | None]:
    """Plain text plus sanitised HTML when `content` is HTML, else the text alone."""
    if _LOOKS_HTML.search(content):
        return html_to_text(content), sanitize_html(content)
    return content, None


def render_template(identifier: str, data: Mapping[str, Any], *, template_dir: str) -> Rendered:
    """Render a template with `data`; placeholders `data` lacks render empty and are listed."""
    if identifier not in available_notices(template_dir):
        raise FieldError("template_identifier", f"Template '{identifier}' not found.")
    env = environment(template_dir)
    missing: set[str] = set()
    for suffix in (".subject.txt", ".txt", ".html"):
        try:
            source = env.loader.get_source(env, f"notices/{identifier}{suffix}")[0]  # type: ignore[union-attr]
            missing |= meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise FieldError(
                "template_identifier", f"Template '{identifier}' has a syntax error: {exc.message}"
            ) from None
    missing -= set(data)
    context = {**dict.fromkeys(missing, ""), **data}
    try:
        notice = render_notice(identifier, context, template_dir=template_dir)
    except NoticeRenderError as exc:
        raise FieldError("template_identifier", str(exc)) from None
    return Rendered(notice.subject, notice.text, notice.html or None, tuple(sorted(missing)))


def _body(body: Body, settings: ApiSettings, extra: Mapping[str, Any] | None = None) -> Rendered:
    if body.template_identifier is not None:
        return render_template(
            body.template_identifier,
            {**(extra or {}), **body.data},
            template_dir=settings.notify.template_dir,
        )
    text, html = text_and_html(body.content)
    return Rendered(body.subject, text, html)


def create_ticket(
    session: Session,
    *,
    settings: ApiSettings,
    change: ChangeContext,
    originator_email: str,
    body: Body,
    queue_name: str | None,
    is_public: bool,
    originator_as_responder: bool,
    intervention: str | None = None,
    actor: str = "API",
    uid: str | None = None,
    priority: str | None = None,
    assignee: str | None = None,
    attachments: Sequence[ticket_service.NewAttachment] = (),
    viewer: Viewer = EVERYONE,
) -> dict[str, Any]:
    """A ticket from the API: the same `created` event, so the same notices, as one from mail
    (a staff-only opening tells the agents and not the customer). `attachments` go on the first
    message as a mail's would. A queue `viewer` does not see is as unknown as a missing one."""
    if assignee is not None:
        try:
            ticket_changes.check_assignee(session, assignee)
        except InvalidInputError as exc:
            raise FieldError("assigned_to_email", str(exc)) from None
    if intervention is not None:  # shape C: services/interventions.py
        ticket = interventions.create(
            session,
            change=change,
            originator_email=originator_email,
            name=intervention,
            uid=uid or "",
            data=body.data,
            actor=actor,
        )
        _set_at_creation(session, ticket, priority=priority, assignee=assignee, change=change)
        return {
            "ticket_number": ticket.number,
            "ticket_id": ticket.id,
            "secure_id": ticket.secure_id,
        }
    queue = queue_name or ticket_service.DEFAULT_QUEUE
    if lookups.queue_id(session, queue) is None or not viewer.sees_queue(queue):
        raise FieldError("data.queue_name", f"Queue '{queue}' not found.")
    rendered = _body(body, settings, {"customer_email": originator_email})
    first = ticket_service.NewResponse(
        kind=ResponseKind.customer if is_public else ResponseKind.note,
        plain_text=rendered.text,
        html=rendered.html,
        is_internal=not is_public,
        created_by_email=originator_email if originator_as_responder else None,
        created_by_name="" if originator_as_responder else actor,
        subject=rendered.subject,
        attachments=tuple(attachments),
    )
    ticket = ticket_service.create_ticket(
        session,
        subject=rendered.subject,
        originator_email=originator_email,
        queue_name=queue,
        first=first,
        change=change,
    )
    _set_at_creation(session, ticket, priority=priority, assignee=assignee, change=change)
    return {
        "ticket_number": ticket.number,
        "ticket_id": ticket.id,
        "secure_id": ticket.secure_id,
    }


def _set_at_creation(
    session: Session,
    ticket: Any,
    *,
    priority: str | None,
    assignee: str | None,
    change: ChangeContext,
) -> None:
    """The EXT creation fields, through the same service calls as `#priority` / `#assign`."""
    if priority is not None:
        ticket_changes.set_priority(session, ticket, priority, change=change)
    if assignee is not None:
        ticket_changes.assign(session, ticket, assignee, change=change)


def respond(
    session: Session,
    *,
    change: ChangeContext,
    ticket_number: int,
    from_email: str,
    content: str | None,
    is_internal: bool,
    status: str | None,
    on_hold_until: date | None,
    resolution: str | None = None,
    attachments: Sequence[ticket_service.NewAttachment] = (),
    token: api_tokens.AuthenticatedToken | None = None,
    add_cc: bool = False,
) -> dict[str, Any]:
    """A response on a ticket; reactivates a closed or on-hold ticket unless `status` is on-hold
    or closed. The reactivation is caused by the response (it mails nothing of its own); a
    `status` given explicitly is the same change as an agent's `#status` and causes the same
    notices (closing: the customer's `ticket_closed`, once, with the `resolution`)."""
    ticket = store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    agent = store.get_agent_by_email(session, from_email)
    if agent is not None and not may_act_as(token, agent.email):
        raise ForbiddenError(
            f"This token may not answer as the agent {agent.email}: that needs a token the agent "
            "owns, or the admin ability."
        )
    kind = (
        ResponseKind.note
        if is_internal
        else (ResponseKind.agent if agent else ResponseKind.customer)
    )
    if content or attachments:
        text, html = text_and_html(content or "")
    else:
        kind, is_internal = ResponseKind.note, True
        text, html = (
            f"Status set to {status}"
            + (f" until {on_hold_until.isoformat()}" if on_hold_until else "")
            + ".",
            None,
        )
    response = ticket_service.add_response(
        session,
        ticket,
        ticket_service.NewResponse(
            kind=kind,
            plain_text=text,
            html=html,
            is_internal=is_internal,
            created_by_email=from_email,
            created_by_name=agent.name if agent else "",
            subject=ticket.subject,
            attachments=tuple(attachments),
        ),
        change=change,
        reopen=False,
    )
    before = ticket.status
    if status == TicketStatus.closed:
        ticket_changes.set_status(
            session, ticket, TicketStatus.closed.value, resolution=resolution, change=change
        )
    elif status == TicketStatus.on_hold:
        ticket_changes.set_status(
            session,
            ticket,
            TicketStatus.on_hold.value,
            on_hold_until=on_hold_until,
            change=change,
        )
    elif ticket.status != TicketStatus.open:
        ticket_changes.set_status(
            session, ticket, TicketStatus.open.value, change=change, cause=REPLY_CAUSE
        )
    if kind == ResponseKind.customer and add_cc:
        ticket_service.add_ccs(session, ticket, [(from_email, "")], exclude=set())
    return {
        "ticket_id": ticket.id,
        "response_id": response.id,
        "reopened": before != TicketStatus.open and ticket.status == TicketStatus.open,
    }


def may_act_as(token: api_tokens.AuthenticatedToken | None, agent_email: str) -> bool:
    """Whether a request may post as the agent `agent_email`: a token the agent owns, or one
    with the `admin` ability; in-process callers (no token: CLI, tests) may. A `ticket-respond`
    token alone could otherwise answer customers in any agent's name."""
    if token is None or token.allows(api_tokens.ADMIN):
        return True
    return (token.owner_email or "").strip().lower() == agent_email.strip().lower()


def send_email(
    session: Session,
    *,
    settings: ApiSettings,
    clock: Clock,
    to_address: str,
    body: Body,
    mailbox: str | None,
    attachments: Sequence[OutgoingAttachment] = (),
) -> dict[str, Any]:
    """One message through the outbox (sent later, with retries); never a ticket.

    The loop rules of notices hold where they make sense for transactional mail: never to one
    of our own addresses (it would come straight back in), and an address that bounced for good
    is kept `suppressed` instead of being sent (the answer says so); there is no per-recipient
    rate limit, because the caller decided to send this one message.
    """
    name = mailbox or settings.default_mailbox
    address = settings.mailboxes.get(name)
    if address is None:
        raise FieldError("mailbox", f"Mailbox '{name}' not found.")
    own = settings.notify.own_addresses
    if to_address.strip().lower() in own or split_plus(to_address.strip().lower())[0] in own:
        raise FieldError(
            "to_address", "The to_address is one of the helpdesk's own addresses (it would loop)."
        )
    rendered = _body(body, settings, {"to_address": to_address})
    now = clock.now()
    try:
        message = compose(
            Outgoing(
                from_name=settings.notify.helpdesk_name,
                from_address=address,
                to=[("", to_address)],
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                auto_submitted=AUTO_GENERATED,
                date=now,
                attachments=tuple(attachments),
            )
        )
    except InvalidInputError as exc:
        field_name = "to_address" if "to " in str(exc) or str(exc).startswith("to") else "subject"
        raise FieldError(field_name, str(exc)) from None
    message_id = str(message["Message-ID"])
    suppressed = outbox.suppressed_reason(session, email=to_address.strip().lower(), now=now)
    outbox.enqueue(
        session,
        outbox.new_row(
            kind="send_email",
            ticket_id=None,
            message_id=message_id,
            mail_from=address,
            rcpt_tos=[to_address.lower()],
            is_automatic=False,
            raw=as_bytes(message),
            now=now,
            deadline_at=now + timedelta(seconds=settings.notify.deadline_s),
            state=OutboxState.suppressed if suppressed else OutboxState.queued,
            last_error=f"{to_address} is suppressed: {suppressed}" if suppressed else "",
        ),
    )
    status = "suppressed" if suppressed else "queued"
    return {"message_id": message_id, "mailbox": name, "to_address": to_address, "status": status}


def render(
    settings: ApiSettings,
    *,
    template_identifier: str,
    data: Mapping[str, Any],
    to_address: str | None,
) -> dict[str, Any]:
    extra = {"to_address": to_address} if to_address else {}
    rendered = render_template(
        template_identifier, {**extra, **data}, template_dir=settings.notify.template_dir
    )
    return {
        "template_identifier": template_identifier,
        "subject": rendered.subject,
        "html": rendered.html,
        "text": rendered.text,
        "missing": list(rendered.missing),
    }
