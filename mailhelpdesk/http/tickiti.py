"""The Tickiti-compatible legacy endpoints (api-contract.md §4): request models, shape rules,
and the service each one calls. Routes hold no logic beyond turning JSON into arguments."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.enums import Priority
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.endpoint import Acting, Endpoint, Runtime, with_token
from mailhelpdesk.http.errors import ApiError, validation_failed
from mailhelpdesk.mail import attachment_policy as policy
from mailhelpdesk.mail.compose import OutgoingAttachment
from mailhelpdesk.services import api_requests, visibility
from mailhelpdesk.services.api_requests import Body
from mailhelpdesk.services.tickets import NewAttachment

_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9\u00a0-\uffff](?:[A-Za-z0-9\u00a0-\uffff.-]{0,253})\.[A-Za-z0-9\u00a0-\uffff-]{2,63}$"
)
_HEADER_BREAKERS = ("\r", "\n", "\x00")
MINT_ACTIONS = (
    "create_ticket",
    "ticket_respond",
    "send_email",
    "render_template",
    "tickets_create",
    "tickets_respond",
)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AttachmentIn(_In):
    name: str = Field(min_length=1, max_length=255)
    content_base64: str
    mime_type: str = Field(default="application/octet-stream", max_length=200)


class UploadIn(AttachmentIn):
    """A file put on a ticket (create, respond): `intent: "review_ok"` lets a file through that
    the attachment policy gates for review (mail/attachment_policy.py)."""

    intent: str | None = Field(default=None, max_length=20)


Uploads = Annotated[list[UploadIn], Field(default_factory=list, max_length=50)]


class CreateTicketIn(_In):
    originator_email_address: str
    data: dict[str, Any] | None = None
    template_identifier: str | None = None
    intervention: str | None = None
    uid: str | None = None
    queue_name: str | None = None
    subject: str | None = None
    content: str | None = None
    is_public: bool = True
    use_passed_originator_as_responder: bool = False
    # EXT (api-contract.md §5.1 clash note): set at creation, through the same service calls as
    # `#priority` / `#assign` by mail
    priority: str | int | None = None
    assigned_to_email: str | None = None
    attachments: Uploads  # resources.md §2: files on the first message


class FlatCreateIn(_In):
    originator_email_address: str
    subject: str
    content: str
    queue_name: str | None = None
    is_public: bool = True
    use_passed_originator_as_responder: bool = False
    attachments: Uploads


class RespondIn(_In):
    ticket_number: int = Field(ge=1, le=MAX_INTEGER)
    from_email: str
    content: str | None = None
    is_internal: bool = False
    status: Literal["open", "on-hold", "closed"] | None = None
    on_hold_until: date | None = None
    resolution: str | None = Field(default=None, max_length=10_000)  # EXT: with status closed
    # EXT (issue 17): a from_email that is neither an agent nor a participant yet becomes a CC
    # of the ticket only when asked for; it never does silently
    add_cc: bool = False
    attachments: Uploads


class FlatRespondIn(_In):
    ticket_number: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    from_email: str
    content: str | None = None
    is_internal: bool = False
    status: Literal["open", "on-hold", "closed"] | None = None
    on_hold_until: date | None = None
    resolution: str | None = Field(default=None, max_length=10_000)  # EXT: with status closed
    # EXT (issue 17): a from_email that is neither an agent nor a participant yet becomes a CC
    # of the ticket only when asked for; it never does silently
    add_cc: bool = False
    attachments: Uploads


class SendEmailIn(_In):
    to_address: str
    subject: str | None = None
    content: str | None = None
    template_identifier: str | None = None
    data: dict[str, Any] | None = None
    mailbox: str | None = None
    validate_address: bool = False
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)  # EXT


class RenderIn(_In):
    template_identifier: str
    data: dict[str, Any] = Field(default_factory=dict)
    to_address: str | None = None


class MintIn(_In):
    action: str | None = None


# -- checks: the validated model to the service's arguments (422 on a shape error) ----------------


def _email(value: str, field: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise validation_failed(
            {field: ["must be a valid email address"]},
            f"The {field} field must be a valid email address.",
        )
    return value


def _line(value: str, field: str) -> str:
    if any(c in value for c in _HEADER_BREAKERS):
        raise validation_failed({field: ["must not contain CR, LF or NUL"]})
    if not value.strip():
        raise validation_failed({field: ["must not be empty"]})
    return value


@dataclass(frozen=True)
class CreateArgs:
    originator_email: str
    body: Body
    queue_name: str | None
    is_public: bool
    originator_as_responder: bool
    intervention: str | None
    uid: str | None = None  # shape C; its data bag is body.data
    priority: str | None = None  # EXT: Low, Normal, High, Urgent (or 10-40)
    assigned_to_email: str | None = None  # EXT: an agent's address
    attachments: tuple[NewAttachment, ...] = ()


def check_create(m: CreateTicketIn, _params: dict[str, Any]) -> CreateArgs:
    email = _email(m.originator_email_address, "originator_email_address")
    data = dict(m.data or {})
    subject, content = data.get("subject"), data.get("content")
    for alias, value in (("subject", m.subject), ("content", m.content)):
        inner = data.get(alias)
        if value is not None and inner is not None and inner != value:
            raise validation_failed({alias: [f"differs from data.{alias}"]})
    subject = subject if subject is not None else m.subject
    content = content if content is not None else m.content
    shape_a = subject is not None or content is not None
    shape_b = m.template_identifier is not None
    shape_c = m.intervention is not None or m.uid is not None
    shapes = sum((shape_a, shape_b, shape_c))
    if shapes != 1:
        raise validation_failed(
            {
                "request": [
                    (
                        "give exactly one of: data.subject + data.content, "
                        "template_identifier + data, intervention + uid + data.data"
                    )
                ]
            },
            "Exactly one payload shape is required (subject + content, template, or intervention).",
        )
    inner_queue = data.get("queue_name")
    if inner_queue is not None and not isinstance(inner_queue, str):
        raise validation_failed({"data.queue_name": ["must be a string"]})
    if inner_queue is not None and m.queue_name is not None and inner_queue != m.queue_name:
        raise validation_failed({"queue_name": ["differs from data.queue_name"]})
    queue = m.queue_name if m.queue_name is not None else inner_queue
    if shape_a:
        if not isinstance(subject, str):
            raise validation_failed(
                {"data.subject": ["is required" if subject is None else "must be a string"]}
            )
        if not isinstance(content, str):
            raise validation_failed(
                {"data.content": ["is required" if content is None else "must be a string"]}
            )
        body = Body(subject=_line(subject, "data.subject"), content=content)
    elif shape_b:
        if m.data is None:
            raise validation_failed({"data": ["is required with template_identifier"]})
        values = {k: v for k, v in data.items() if k != "queue_name"}
        body = Body(
            template_identifier=_line(m.template_identifier or "", "template_identifier"),
            data=values,
        )
    else:
        if m.intervention is None or m.uid is None or not isinstance(data.get("data"), dict):
            raise validation_failed(
                {"intervention": ["intervention, uid and data.data are all required"]}
            )
        # the uid travels in the epilog's Idempotency-Key header: printable ASCII only
        if (
            not 1 <= len(m.uid) <= 200
            or not all(0x20 <= ord(c) <= 0x7E for c in m.uid)
            or m.uid != m.uid.strip()
        ):
            raise validation_failed({"uid": ["must be 1-200 printable ASCII characters"]})
        if queue is not None:
            raise validation_failed({"data.queue_name": ["is not allowed with an intervention"]})
        if m.attachments:
            raise validation_failed({"attachments": ["are not allowed with an intervention"]})
        body = Body(data=data["data"])
    priority = None
    if m.priority is not None:
        try:
            priority = Priority.from_name(str(m.priority)).name
        except ValueError:
            raise validation_failed(
                {"priority": ["must be Low, Normal, High or Urgent (or 10, 20, 30, 40)"]}
            ) from None
    assignee = _email(m.assigned_to_email, "assigned_to_email") if m.assigned_to_email else None
    return CreateArgs(
        email,
        body,
        queue,
        m.is_public,
        m.use_passed_originator_as_responder,
        m.intervention,
        m.uid,
        priority,
        assignee,
        uploads(m.attachments),
    )


def check_flat_create(m: FlatCreateIn, _params: dict[str, Any]) -> CreateArgs:
    email = _email(m.originator_email_address, "originator_email_address")
    return CreateArgs(
        email,
        Body(subject=_line(m.subject, "subject"), content=m.content),
        m.queue_name,
        m.is_public,
        m.use_passed_originator_as_responder,
        None,
        attachments=uploads(m.attachments),
    )


@dataclass(frozen=True)
class RespondArgs:
    ticket_number: int
    from_email: str
    content: str | None
    is_internal: bool
    status: str | None
    on_hold_until: date | None
    resolution: str | None = None
    attachments: tuple[NewAttachment, ...] = ()
    add_cc: bool = False


def _respond_args(number: int, m: RespondIn | FlatRespondIn) -> RespondArgs:
    email = _email(m.from_email, "from_email")
    files = uploads(m.attachments)
    if not m.content and m.status is None and not files:
        raise validation_failed({"content": ["is required"]}, "The content field is required.")
    if m.status == "on-hold":
        if m.on_hold_until is None:
            raise validation_failed({"on_hold_until": ["is required when status is on-hold"]})
        if m.on_hold_until < datetime.now(UTC).date():  # dates are UTC (api-contract.md §1)
            raise validation_failed({"on_hold_until": ["must not be in the past"]})
    if m.resolution is not None and m.status != "closed":
        raise validation_failed({"resolution": ["only with status closed"]})
    return RespondArgs(
        number,
        email,
        m.content,
        m.is_internal,
        m.status,
        m.on_hold_until if m.status == "on-hold" else None,
        m.resolution,
        files,
        m.add_cc,
    )


def check_respond(m: RespondIn, _params: dict[str, Any]) -> RespondArgs:
    return _respond_args(m.ticket_number, m)


def check_flat_respond(m: FlatRespondIn, params: dict[str, Any]) -> RespondArgs:
    raw = str(params.get("number", ""))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not 1 <= int(raw) <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {raw[:20]} not found.")
    number = int(raw)
    if m.ticket_number is not None and m.ticket_number != number:
        raise validation_failed({"ticket_number": ["must equal the ticket number in the path"]})
    return _respond_args(number, m)


@dataclass(frozen=True)
class SendArgs:
    to_address: str
    body: Body
    mailbox: str | None
    attachments: tuple[OutgoingAttachment, ...] = ()


_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


def _attachments(items: list[AttachmentIn]) -> tuple[OutgoingAttachment, ...]:
    """Decoded attachments; a bad encoding or type is a 422 naming the item."""
    decoded = []
    for i, item in enumerate(items):
        try:
            data = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise validation_failed(
                {f"attachments.{i}.content_base64": ["must be base64"]}
            ) from None
        # a leaf type only: multipart/* and message/* may not be sent base64-encoded (RFC 2046)
        if not _MIME_TYPE.fullmatch(item.mime_type) or item.mime_type.lower().startswith(
            ("multipart/", "message/")
        ):
            raise validation_failed(
                {f"attachments.{i}.mime_type": ["must be a MIME type such as application/pdf"]}
            )
        decoded.append(OutgoingAttachment(item.name, item.mime_type.lower(), data))
    return tuple(decoded)


def uploads(items: list[UploadIn]) -> tuple[NewAttachment, ...]:
    """Files to store on a ticket: decoded as `send_email`'s attachments are, then judged by the
    same policy as the attachments the API hands out (mail/attachment_policy.py): a blocked file,
    one too large, or one gated for review without `intent: "review_ok"` is a 422 naming it."""
    decoded = _attachments(list(items))
    errors: dict[str, list[str]] = {}
    for i, (item, file) in enumerate(zip(items, decoded, strict=True)):
        verdict = policy.judge(
            name=file.filename,
            declared=file.content_type,
            head=file.data[: policy.HEAD_BYTES],
            size=len(file.data),
            intent=item.intent,
        )
        if verdict.decision == policy.Decision.blocked:
            errors[f"attachments.{i}"] = [f"is blocked: {verdict.reason}"]
        elif verdict.decision == policy.Decision.too_large:
            errors[f"attachments.{i}"] = [f"is too large: {verdict.reason}"]
        elif verdict.decision == policy.Decision.review_required:
            errors[f"attachments.{i}"] = [
                f'needs review ({verdict.reason}): send it with intent "review_ok"'
            ]
    if errors:
        raise validation_failed(errors)
    return tuple(NewAttachment(f.filename, f.content_type, f.data) for f in decoded)


def check_send(m: SendEmailIn, _params: dict[str, Any]) -> SendArgs:
    to = _line(m.to_address, "to_address").strip()
    if m.validate_address:
        _email(to, "to_address")
    shape_a = m.subject is not None or m.content is not None
    shape_b = m.template_identifier is not None
    if shape_a == shape_b:
        raise validation_failed(
            {"request": ["give exactly one of: subject + content, template_identifier + data"]},
            "Exactly one payload shape is required (subject + content, or template).",
        )
    if shape_a:
        if m.subject is None:
            raise validation_failed({"subject": ["is required"]})
        if m.content is None:
            raise validation_failed({"content": ["is required"]})
        return SendArgs(
            to,
            Body(subject=_line(m.subject, "subject"), content=m.content),
            m.mailbox,
            _attachments(m.attachments),
        )
    if m.data is None:
        raise validation_failed({"data": ["is required with template_identifier"]})
    return SendArgs(
        to,
        Body(template_identifier=m.template_identifier, data=m.data),
        m.mailbox,
        _attachments(m.attachments),
    )


def check_render(m: RenderIn, _params: dict[str, Any]) -> RenderIn:
    if m.to_address is not None:
        _line(m.to_address, "to_address")
    return m


def check_mint(m: MintIn, _params: dict[str, Any]) -> str:
    if m.action is not None and m.action not in MINT_ACTIONS:
        raise validation_failed({"action": [f"must be one of {', '.join(MINT_ACTIONS)}"]})
    return m.action or ""


# -- the endpoints -------------------------------------------------------------------------------


def endpoints(rt: Runtime) -> list[Endpoint]:
    s, clock = rt.settings, rt.clock

    def create(session: Session, acting: Acting[CreateArgs]) -> dict[str, Any]:
        a = acting.args
        return api_requests.create_ticket(
            session,
            settings=s,
            change=rt.change(session, acting.token),
            originator_email=a.originator_email,
            body=a.body,
            queue_name=a.queue_name,
            is_public=a.is_public,
            originator_as_responder=a.originator_as_responder,
            intervention=a.intervention,
            uid=a.uid,
            priority=a.priority,
            assignee=a.assigned_to_email,
            attachments=a.attachments,
            viewer=visibility.viewer_for(session, acting.token),
        )

    def respond(session: Session, acting: Acting[RespondArgs]) -> dict[str, Any]:
        a = acting.args
        return api_requests.respond(
            session,
            change=rt.change(session, acting.token),
            ticket_number=a.ticket_number,
            from_email=a.from_email,
            content=a.content,
            is_internal=a.is_internal,
            status=a.status,
            on_hold_until=a.on_hold_until,
            resolution=a.resolution,
            attachments=a.attachments,
            token=acting.token,
            add_cc=a.add_cc,
        )

    def send(session: Session, a: SendArgs) -> dict[str, Any]:
        return api_requests.send_email(
            session,
            settings=s,
            clock=clock,
            to_address=a.to_address,
            body=a.body,
            mailbox=a.mailbox,
            attachments=a.attachments,
        )

    def render(_session: Session, m: RenderIn) -> dict[str, Any]:
        return api_requests.render(
            s, template_identifier=m.template_identifier, data=m.data, to_address=m.to_address
        )

    def mint(session: Session, action: str) -> dict[str, Any]:
        return rt.runner.mint(session, action)

    return [
        Endpoint(
            "/api/create_ticket",
            "create_ticket",
            "create-ticket",
            "required",
            CreateTicketIn,
            with_token(check_create),
            create,
            "Create a ticket (subject+content, template, or intervention)",
            multipart=True,
        ),
        Endpoint(
            "/api/ticket_respond",
            "ticket_respond",
            "ticket-respond",
            "required",
            RespondIn,
            with_token(check_respond),
            respond,
            "Respond to a ticket",
            ticket_of=_acting_ticket,
            multipart=True,
        ),
        Endpoint(
            "/api/send_email",
            "send_email",
            "send-email",
            "required",
            SendEmailIn,
            check_send,
            send,
            "Send one email through the outbox (no ticket)",
        ),
        Endpoint(
            "/api/render_template",
            "render_template",
            "send-email",
            "required",
            RenderIn,
            check_render,
            render,
            "Render a template without sending",
        ),
        Endpoint(
            "/api/tickets/create",
            "tickets_create",
            "create-ticket",
            "optional",
            FlatCreateIn,
            with_token(check_flat_create),
            create,
            "Create a ticket (flat fields, key optional)",
            multipart=True,
        ),
        Endpoint(
            "/api/tickets/{number}/respond",
            "tickets_respond",
            "ticket-respond",
            "optional",
            FlatRespondIn,
            with_token(check_flat_respond),
            respond,
            "Respond to a ticket (flat fields, key optional)",
            ticket_of=_acting_ticket,
            multipart=True,
        ),
        Endpoint(
            "/api/idempotency_key",
            "idempotency_key",
            None,
            "ignored",
            MintIn,
            check_mint,
            mint,
            "Mint an Idempotency-Key bound to an action (no authentication)",
        ),
    ]


def _acting_ticket(acting: Acting[RespondArgs]) -> int:
    """The ticket a respond request names (the queue-visibility guard of http/endpoint.py)."""
    return acting.args.ticket_number
