"""tiHelpdesk's Zapier API (seed 000) under `/compat/tihelpdesk`: the token exchange
(`/api/me`), trigger subscriptions (`/api/subscribe`) and the eight actions.

A thin adapter: logins are the agents' passwords (services/agent_passwords.py) exchanged for a
native API token owned by the agent (so history names the agent and their queue visibility
applies); subscriptions are native webhook subscriptions whose deliveries take tiHelpdesk's
payload shape (services/hook_formats.py); every action is the native service call. Answers are
tiHelpdesk's `{"success": true, "ticket_number", "messages": {...}}`, and failures
`{"success": false, "messages": {"error": "..."}}` with the native status code (docs/compat.md).
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from mailhelpdesk.config import TiHelpdeskCompatConfig
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.compat import seedroute, vocab
from mailhelpdesk.http.compat.seedroute import Answer
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import (
    agent_passwords,
    api_requests,
    api_tokens,
    hook_formats,
    ticket_changes,
    ticket_reads,
    tihelpdesk_view,
    visibility,
    webhook_subscriptions,
)
from mailhelpdesk.services.api_requests import Body, FieldError
from mailhelpdesk.services.api_tokens import ADMIN, AuthenticatedToken
from mailhelpdesk.services.ticket_changes import TicketUpdate
from mailhelpdesk.store.db import session_scope

PREFIX = "/compat/tihelpdesk"
TAG = "compat: tiHelpdesk"
# what a token from /api/me may do: the actions, and subscribing to triggers
TOKEN_ABILITIES = ("tickets:write", "contacts:read", ADMIN)
TicketNumber = Field(ge=1, le=MAX_INTEGER)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=agent_passwords.MAX_LENGTH)
    subdomain: str = Field(default="", max_length=200)


class SubscribeIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    hookUrl: str = Field(min_length=1, max_length=2000)
    trigger: str = Field(min_length=1, max_length=100)
    subdomain: str = Field(default="", max_length=200)


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(min_length=3, max_length=320)
    first_name: str = Field(default="", max_length=200)
    last_name: str = Field(default="", max_length=200)
    company_name: str = Field(default="", max_length=200)


class CreateTicketIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    contact: str | PersonIn
    subject: str = Field(min_length=1, max_length=998)
    product: str | None = Field(default=None, max_length=500)
    assigned_to: str | PersonIn | None = None
    priority: str | None = Field(default=None, max_length=50)
    body: str = Field(default="", max_length=1_000_000)
    type: str | None = Field(default=None, max_length=500)
    created_at: str | None = Field(default=None, max_length=50)
    due_date: date | None = None
    status: str | None = Field(default=None, max_length=50)


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    assign_to: str | PersonIn | None


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    ticket_status: str = Field(min_length=1, max_length=50)


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    reply_type: str = Field(default="reply", max_length=20)
    reply_created_by: str | PersonIn | None = None
    reply_created_at: str | None = Field(default=None, max_length=50)
    reply_data: str = Field(min_length=1, max_length=1_000_000)


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    ticket_tags: list[str] = Field(min_length=1, max_length=100)


class TagIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    ticket_tag: str = Field(min_length=1, max_length=100)


class DetailsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = TicketNumber
    subdomain: str = Field(default="", max_length=200)


INTERNAL_REPLY_TYPES = ("note", "internal", "private")


def _email(value: str | PersonIn | None) -> str | None:
    if value is None:
        return None
    return (value.email if isinstance(value, PersonIn) else value).strip() or None


def failure(status: int, message: str, *, key: str = "error", **extra: Any) -> Response:
    body: dict[str, Any] = {"success": False, **extra, "messages": {key: message}}
    return seedroute.json_response(body, status)


def _from_error(exc: ApiError) -> Response:
    extra: dict[str, Any] = {}
    if exc.errors:
        extra["errors"] = exc.errors
    return seedroute.json_response(
        {"success": False, **extra, "messages": {"error": exc.message}},
        exc.status,
        exc.headers,
    )


def _answer(answer: Answer, key: str, text: str) -> Response:
    if answer.error is not None:
        return _from_error(answer.error)
    data = answer.data
    if isinstance(data, dict) and "ticket_number" in data and len(data) == 1:
        return seedroute.json_response(
            {"success": True, "ticket_number": data["ticket_number"], "messages": {key: text}}
        )
    return seedroute.json_response({"success": True, **data})


def mount(api: FastAPI, rt: Runtime, cfg: TiHelpdeskCompatConfig) -> None:
    """Every route of seed 000 under PREFIX."""
    words = vocab.tihelpdesk(cfg)
    field_names = {f.name for f in rt.settings.notify.custom_fields}

    async def authenticated(request: Request, ability: str) -> AuthenticatedToken:
        return await seedroute.admit(
            rt,
            request,
            request.headers.get("authorization"),
            ability,
            ApiError(401, "unauthenticated", "Authorization: Bearer <token> from /api/me."),
        )

    def guarded(route: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                response: Response = await route(request)
                return response
            except Exception as exc:  # noqa: BLE001 - every failure in the seed's shape
                error = seedroute.error_of(request, exc)
                if error.status == 401:
                    return failure(401, error.message, key="auth")
                return _from_error(error)

        run.__name__ = route.__name__
        return run

    # -- the token exchange ---------------------------------------------------------------

    async def me(request: Request) -> Response:
        seedroute.limit_by_ip(rt, request)
        m: LoginIn = seedroute.validate(LoginIn, await seedroute.json_body(rt, request))
        if cfg.subdomain and m.subdomain.strip().lower() != cfg.subdomain.lower():
            return failure(401, "Unknown subdomain, email or password.", key="auth")

        def exchange() -> str | None:
            with session_scope(rt.engine) as session:
                agent = agent_passwords.authenticate(session, m.email.strip(), m.password)
                if agent is None:
                    return None
                return api_tokens.create_token(
                    session,
                    name=f"tihelpdesk {agent.email} {secrets.token_hex(6)}",
                    abilities=TOKEN_ABILITIES,
                    clock=rt.clock,
                    owner_email=agent.email,
                )

        token = await run_in_threadpool(exchange)
        if token is None:
            return failure(401, "Unknown subdomain, email or password.", key="auth")
        return seedroute.json_response(
            {"success": True, "token": token, "email": m.email.strip().lower()}
        )

    # -- triggers ------------------------------------------------------------------------

    async def subscribe(request: Request) -> Response:
        token = await authenticated(request, ADMIN)
        payload = await seedroute.json_body(rt, request)
        m: SubscribeIn = seedroute.validate(SubscribeIn, payload)
        event = tihelpdesk_view.TRIGGERS.get(m.trigger.strip())
        if event is None:
            raise FieldError(
                "trigger", f"unknown trigger (known: {', '.join(tihelpdesk_view.TRIGGERS)})"
            )
        asked = request.query_params.get("email", "").strip().lower()
        if asked and token.owner_email and asked != token.owner_email.lower():
            raise ApiError(403, "forbidden", "email is not the address this token belongs to.")

        def create(session: Session, _args: None) -> dict[str, Any]:
            return webhook_subscriptions.create(
                session,
                url=m.hookUrl,
                events=[event],
                name=f"tihelpdesk-{m.trigger.strip()}-{secrets.token_hex(6)}",
                helpdesk_secret=rt.settings.notify.secret,
                now=rt.clock.now(),
                timeout_s=rt.settings.webhook_timeout_s,
                max_attempts=rt.settings.webhook_max_attempts,
                payload_format=hook_formats.TIHELPDESK,
                payload_options=words.to_json(),
            )

        answer = await seedroute.call(
            rt,
            request,
            token,
            action="tihelpdesk_subscribe",
            args=None,
            handle=create,
            payload=payload,
        )
        if answer.error is not None:
            return _from_error(answer.error)
        hook = answer.data
        return seedroute.json_response(
            {
                "success": True,
                "id": hook["id"],
                "trigger": m.trigger.strip(),
                "hookUrl": hook["url"],
                "secret": hook["secret"],
                "messages": {"subscribe": "subscribed successfully"},
            },
            201,
        )

    async def unsubscribe(request: Request) -> Response:
        token = await authenticated(request, ADMIN)
        raw = request.path_params.get("id", "")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_INTEGER:
            return failure(404, "No such subscription.")
        number = int(raw)

        def delete(session: Session, _args: None) -> dict[str, Any]:
            return webhook_subscriptions.delete(session, subscription_id=number)

        answer = await seedroute.call(
            rt, request, token, action="tihelpdesk_unsubscribe", args=None, handle=delete
        )
        if answer.error is not None:
            return _from_error(answer.error)
        return seedroute.json_response(
            {"success": True, "id": number, "messages": {"subscribe": "unsubscribed successfully"}}
        )

    # -- actions -------------------------------------------------------------------------

    def action(
        name: str,
        model: type[BaseModel],
        handle: Any,
        key: str,
        text: str,
        *,
        creates: bool = False,
    ) -> Any:
        async def route(request: Request) -> Response:
            token = await authenticated(request, "tickets:write")
            payload = await seedroute.json_body(rt, request)
            m = seedroute.validate(model, payload)

            def run(session: Session, args: Any) -> Any:
                return handle(session, args, token)

            target = run if creates else seedroute.visible(token, lambda a: a.ticket_number)(run)
            answer = await seedroute.call(
                rt,
                request,
                token,
                action=f"tihelpdesk_{name}",
                args=m,
                handle=target,
                payload=payload,
            )
            return _answer(answer, key, text)

        route.__name__ = f"tihelpdesk_{name.replace('-', '_')}"
        return route

    def create_ticket(session: Session, m: CreateTicketIn, token: AuthenticatedToken) -> Any:
        change = rt.change(session, token)
        contact = _email(m.contact) or ""
        status = on_hold = None
        if m.status:
            status, on_hold = words.status_in(m.status, today=rt.clock.now().date(), name="status")
        priority = words.priority_in(m.priority) if m.priority else None
        created = api_requests.create_ticket(
            session,
            settings=rt.settings,
            change=change,
            originator_email=contact,
            body=Body(subject=m.subject, content=m.body),
            queue_name=None,
            is_public=True,
            originator_as_responder=True,
            priority=priority,
            assignee=_email(m.assigned_to),
            viewer=visibility.viewer_for(session, token),
        )
        if isinstance(m.contact, PersonIn):
            tihelpdesk_view.name_customer(
                session,
                created["ticket_number"],
                name=f"{m.contact.first_name} {m.contact.last_name}".strip(),
                company=m.contact.company_name,
                clock=rt.clock,
            )
        fields = {
            words.fields[seed]: value
            for seed, value in (("product", m.product), ("type", m.type))
            if value is not None and words.fields.get(seed) in field_names
        }
        update = TicketUpdate(
            status=status if status and status != "open" else None,
            on_hold_until=on_hold,
            custom_fields=fields,
            due_at=ticket_changes.end_of_day(m.due_date) if m.due_date else None,
        )
        if update != TicketUpdate():
            ticket_reads.update(
                session, ticket_number=created["ticket_number"], changes=update, change=change
            )
        return {"ticket_number": created["ticket_number"]}

    def change_assignment(session: Session, m: AssignIn, token: AuthenticatedToken) -> Any:
        who = _email(m.assign_to) or "none"
        ticket_reads.update(
            session,
            ticket_number=m.ticket_number,
            changes=TicketUpdate(assign=who),
            change=rt.change(session, token),
        )
        return {"ticket_number": m.ticket_number}

    def change_status(session: Session, m: StatusIn, token: AuthenticatedToken) -> Any:
        status, on_hold = words.status_in(
            m.ticket_status, today=rt.clock.now().date(), name="ticket_status"
        )
        ticket_reads.update(
            session,
            ticket_number=m.ticket_number,
            changes=TicketUpdate(status=status, on_hold_until=on_hold),
            change=rt.change(session, token),
        )
        return {"ticket_number": m.ticket_number}

    def create_reply(session: Session, m: ReplyIn, token: AuthenticatedToken) -> Any:
        author = _email(m.reply_created_by) or token.owner_email
        if not author:
            raise FieldError("reply_created_by", "is required for a token without an agent")
        api_requests.respond(
            session,
            change=rt.change(session, token),
            ticket_number=m.ticket_number,
            from_email=author,
            content=m.reply_data,
            is_internal=m.reply_type.strip().lower() in INTERNAL_REPLY_TYPES,
            status=None,
            on_hold_until=None,
        )
        return {"ticket_number": m.ticket_number}

    def add_tags(session: Session, m: TagsIn, token: AuthenticatedToken) -> Any:
        ticket_reads.update(
            session,
            ticket_number=m.ticket_number,
            changes=TicketUpdate(tags_add=tuple(m.ticket_tags)),
            change=rt.change(session, token),
        )
        return {"ticket_number": m.ticket_number}

    def add_tag(session: Session, m: TagIn, token: AuthenticatedToken) -> Any:
        return add_tags(
            session, TagsIn(ticket_number=m.ticket_number, ticket_tags=[m.ticket_tag]), token
        )

    def reader(name: str, view: Any) -> Any:
        async def route(request: Request) -> Response:
            token = await authenticated(request, "tickets:read")
            payload = {
                **dict(request.query_params),
                **await seedroute.json_body(rt, request, optional=True),
            }
            m: DetailsIn = seedroute.validate(DetailsIn, payload)

            def run(session: Session, args: DetailsIn) -> Any:
                return view(session, tihelpdesk_view.ticket(session, args.ticket_number), words)

            answer = await seedroute.call(
                rt,
                request,
                token,
                action=f"tihelpdesk_{name}",
                args=m,
                handle=seedroute.visible(token, lambda a: a.ticket_number)(run),
                writes=False,
            )
            return _answer(answer, "", "")

        route.__name__ = f"tihelpdesk_{name.replace('-', '_')}"
        return route

    routes: list[tuple[str, str, Any, type[BaseModel] | None, str]] = [
        ("/api/me", "POST", me, LoginIn, "Exchange an agent's email and password for a token"),
        ("/api/subscribe", "POST", subscribe, SubscribeIn, "Subscribe a hook URL to a trigger"),
        (
            "/api/actions/create-ticket",
            "POST",
            action(
                "create-ticket",
                CreateTicketIn,
                create_ticket,
                "ticket",
                "ticket created successfully",
                creates=True,
            ),
            CreateTicketIn,
            "Create a ticket",
        ),
        (
            "/api/actions/change-ticket-assignment",
            "POST",
            action(
                "change-ticket-assignment",
                AssignIn,
                change_assignment,
                "assignment",
                "assignment changed successfully",
            ),
            AssignIn,
            "Change a ticket's assignee",
        ),
        (
            "/api/actions/change-status",
            "POST",
            action(
                "change-status", StatusIn, change_status, "status", "status changed successfully"
            ),
            StatusIn,
            "Change a ticket's status",
        ),
        (
            "/api/actions/create-reply",
            "POST",
            action("create-reply", ReplyIn, create_reply, "reply", "reply created successfully"),
            ReplyIn,
            "Add a reply (or an internal note) to a ticket",
        ),
        (
            "/api/actions/add-tags",
            "POST",
            action("add-tags", TagsIn, add_tags, "tags", "tags added successfully"),
            TagsIn,
            "Add several tags to a ticket",
        ),
        (
            "/api/actions/add-tag",
            "POST",
            action("add-tag", TagIn, add_tag, "tag", "tag added successfully"),
            TagIn,
            "Add one tag to a ticket",
        ),
    ]
    for path, method, route, model, summary in routes:
        seedroute.add_route(
            api, PREFIX + path, method, guarded(route), summary=summary, tag=TAG, body=model
        )
    for path, route, summary in (
        (
            "/api/actions/get-ticket-details",
            reader("get-ticket-details", tihelpdesk_view.ticket_view),
            "A ticket's details",
        ),
        (
            "/api/actions/get-billable-time",
            reader("get-billable-time", tihelpdesk_view.billable_view),
            "A ticket's details and its billable time entries",
        ),
    ):
        seedroute.add_route(
            api, PREFIX + path, "GET", guarded(route), summary=summary, tag=TAG, query=DetailsIn
        )
    seedroute.add_route(
        api,
        PREFIX + "/api/subscribe/{id}",
        "DELETE",
        guarded(unsubscribe),
        summary="Remove a trigger subscription (Zapier's unsubscribe)",
        tag=TAG,
        path_params=("id",),
    )
