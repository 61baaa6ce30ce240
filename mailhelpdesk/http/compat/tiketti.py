"""Tiketti's API v1 (seed 003) under `/compat/tiketti/api/v1`: JWT logins with rotating refresh
tokens (services/tiketti_auth.py), tickets, messages, contacts, time entries and webhooks as thin
translations onto the native services.

Envelopes as the document shows them: `{"data": …}` (lists add `meta {total, page,
per_page}`), errors `{"error": {"code", "message", "details"}}`; 201 on create, 204 on delete
and logout; `X-RateLimit-*` on every answer. `X-Organization-Id`, when sent, must be the desk's
one organisation (`[compat.tiketti] organization_id`, else derived from the helpdesk secret).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from mailhelpdesk.config import TikettiCompatConfig
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.compat import seedroute, vocab
from mailhelpdesk.http.compat.seedroute import Answer
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import (
    agent_passwords,
    api_requests,
    api_tokens,
    contacts,
    housekeeping,
    ticket_reads,
    tiketti_auth,
    time_entries,
    visibility,
    webhook_subscriptions,
)
from mailhelpdesk.services.api_requests import Body
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.services.ticket_changes import TicketUpdate
from mailhelpdesk.store.db import session_scope

PREFIX = "/compat/tiketti/api/v1"
TAG = "compat: Tiketti"
ABILITIES = ("tickets:write", "contacts:write", "admin")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=agent_passwords.MAX_LENGTH)


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refresh_token: str = Field(min_length=1, max_length=200)


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    subject: str = Field(min_length=1, max_length=998)
    description: str = Field(default="", max_length=1_000_000)
    contact_email: str | None = Field(default=None, min_length=3, max_length=320)
    priority: str | None = Field(default=None, max_length=50)
    assignee_email: str | None = Field(default=None, max_length=320)
    labels: list[str] = Field(default_factory=list, max_length=50)


class TicketUpdateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    status: str | None = Field(default=None, max_length=50)
    priority: str | None = Field(default=None, max_length=50)
    assignee_email: str | None = Field(default=None, max_length=320)
    labels_add: list[str] = Field(default_factory=list, max_length=50)
    labels_remove: list[str] = Field(default_factory=list, max_length=50)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    body: str = Field(min_length=1, max_length=1_000_000)
    is_internal: bool = False


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, max_length=400)
    company: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)


class TimeEntryIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    minutes: int = Field(ge=1, le=100_000)
    billable: bool = False
    description: str = Field(default="", max_length=2000)


class PageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=20, ge=1, le=100)
    status: str | None = Field(default=None, max_length=50)
    priority: str | None = Field(default=None, max_length=50)
    assignee_id: str | None = Field(default=None, max_length=320)


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=100)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(default_factory=list, max_length=20)


def error(status: int, code: str, message: str, details: Any = None) -> Response:
    return seedroute.json_response(
        {"error": {"code": code, "message": message, "details": details or {}}}, status
    )


_CODES = {"validation_failed": "VALIDATION_ERROR", "unauthenticated": "UNAUTHORIZED"}


def from_api_error(exc: ApiError) -> Response:
    code = _CODES.get(exc.code, exc.code.upper())
    response = error(exc.status, code, exc.message, exc.errors or exc.data)
    response.headers.update(exc.headers)
    return response


def _number(raw: str) -> int:
    """A ticket's id in a path: its number, or its code `T-<number>`."""
    text = raw.strip().upper().removeprefix("T-")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket with ID {raw[:40]} not found")
    return int(text)


def mount(api: FastAPI, rt: Runtime, cfg: TikettiCompatConfig) -> None:
    """Every route of seed 003 under PREFIX."""
    words = vocab.tiketti(cfg)
    secret = rt.settings.notify.secret
    key = tiketti_auth.signing_key(secret)
    organization = cfg.organization_id or tiketti_auth.organization_id(secret)

    def ticket_view(data: dict[str, Any]) -> dict[str, Any]:
        responses = data.get("responses") or []
        opening = min(responses, key=lambda r: r["created_at"] or "", default=None)
        return {
            "id": data["id"],
            "code": f"T-{data['number']}",
            "number": data["number"],
            "subject": data["subject"],
            "description": (opening or {}).get("visible_text") or "",
            "status": words.status_out(data["status"]),
            "priority": words.priority_out(int(data["priority"])),
            "contact_id": data.get("contact_id"),
            "contact_email": data["originator_email"],
            "assignee_email": data["assigned_to_email"],
            "labels": data.get("tags") or [],
            "queue": data.get("queue"),
            "due_at": data.get("due_at"),
            "created_at": data["created_at"],
            "updated_at": data["updated_at"],
        }

    def message_view(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": r["id"],
            "body": r["visible_text"] or r["plain_text"],
            "is_internal": r["is_internal"],
            "author_email": r["created_by_email"],
            "author_name": r["created_by_name"],
            "kind": r["kind"],
            "created_at": r["created_at"],
        }

    async def agent_token(request: Request) -> AuthenticatedToken:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        email = (
            tiketti_auth.verify_access(key, presented.strip(), now=rt.clock.now())
            if scheme.lower() == "bearer"
            else None
        )
        if email is None:
            seedroute.limit_by_ip(rt, request)
            raise ApiError(401, "unauthenticated", "Missing, invalid or expired access token.")
        seedroute.limit(rt, request, f"tiketti:{email}")
        org = request.headers.get("x-organization-id")
        if org is not None and org.strip() != organization:
            raise ApiError(403, "forbidden", "This token does not belong to that organization.")
        return AuthenticatedToken(
            0, f"tiketti:{email}", api_tokens.effective(" ".join(ABILITIES)), email
        )

    def route_of(run: Any) -> Any:
        async def route(request: Request) -> Response:
            try:
                response: Response = await run(request)
                return response
            except Exception as exc:  # noqa: BLE001 - every failure in Tiketti's shape
                return from_api_error(seedroute.error_of(request, exc))

        route.__name__ = "tiketti_" + run.__name__
        return route

    def answer(result: Answer, shape: Any, status: int = 200) -> Response:
        if result.error is not None:
            return from_api_error(result.error)
        if status == 204:
            return Response(status_code=204)
        return seedroute.json_response(shape(result.data), status)

    async def run(
        request: Request, token: AuthenticatedToken | None, handle: Any, *, writes: bool = True
    ) -> Answer:
        return await seedroute.call(
            rt, request, None, action="tiketti", args=token, handle=handle, writes=writes
        )

    # -- authentication ------------------------------------------------------------------

    def tokens_body(t: tiketti_auth.Tokens) -> dict[str, Any]:
        return {
            "data": {
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "token_type": "Bearer",
                "expires_in": t.expires_in,
                "organization_id": organization,
            }
        }

    async def login(request: Request) -> Response:
        seedroute.limit_by_ip(rt, request)
        m: LoginIn = seedroute.validate(LoginIn, await seedroute.json_body(rt, request))

        def exchange() -> tiketti_auth.Tokens | None:
            with session_scope(rt.engine) as session:
                agent = agent_passwords.authenticate(session, m.email.strip(), m.password)
                if agent is None:
                    return None
                return tiketti_auth.issue(
                    session,
                    key,
                    agent.email,
                    now=rt.clock.now(),
                    access_ttl_s=cfg.access_ttl_s,
                    refresh_ttl_s=cfg.refresh_ttl_s,
                )

        tokens = await run_in_threadpool(exchange)
        if tokens is None:
            return error(401, "INVALID_CREDENTIALS", "Invalid email or password.")
        return seedroute.json_response(tokens_body(tokens))

    async def refresh(request: Request) -> Response:
        seedroute.limit_by_ip(rt, request)
        m: RefreshIn = seedroute.validate(RefreshIn, await seedroute.json_body(rt, request))

        def exchange() -> tiketti_auth.Tokens | None:
            with session_scope(rt.engine) as session:
                return tiketti_auth.rotate(
                    session,
                    key,
                    m.refresh_token,
                    now=rt.clock.now(),
                    access_ttl_s=cfg.access_ttl_s,
                    refresh_ttl_s=cfg.refresh_ttl_s,
                )

        tokens = await run_in_threadpool(exchange)
        if tokens is None:
            return error(401, "INVALID_REFRESH_TOKEN", "The refresh token is invalid or expired.")
        return seedroute.json_response(tokens_body(tokens))

    async def logout(request: Request) -> Response:
        await agent_token(request)
        m: RefreshIn = seedroute.validate(RefreshIn, await seedroute.json_body(rt, request))

        def revoke() -> None:
            with session_scope(rt.engine) as session:
                tiketti_auth.revoke(session, m.refresh_token, now=rt.clock.now())

        await run_in_threadpool(revoke)
        return Response(status_code=204)

    # -- tickets ---------------------------------------------------------------------------

    async def list_tickets(request: Request) -> Response:
        token = await agent_token(request)
        q: PageIn = seedroute.validate(PageIn, dict(request.query_params))
        status = words.status_in(q.status, today=rt.clock.now().date())[0] if q.status else None

        criteria: list[tuple[str, list[str]]] = []
        if status:
            criteria.append(("status", [status]))
        if q.priority:
            criteria.append(("priority", [words.priority_in(q.priority)]))
        if q.assignee_id:
            criteria.append(("assigned", [q.assignee_id]))

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            viewer = visibility.viewer_for(session, tok)
            found = ticket_reads.query(
                session,
                perspective="All",
                criteria=criteria,
                page=q.page,
                per_page=q.per_page,
                visible_queues=viewer.queues,
            )
            rows = [ticket_reads.show(session, ticket_number=h["number"]) for h in found["tickets"]]
            return {"rows": rows, "meta": found["meta"]}

        result = await run(request, token, handle, writes=False)
        return answer(
            result,
            lambda d: {
                "data": [ticket_view(r) for r in d["rows"]],
                "meta": {k: d["meta"][k] for k in ("total", "page", "per_page")},
            },
        )

    async def create_ticket(request: Request) -> Response:
        token = await agent_token(request)
        m: TicketIn = seedroute.validate(TicketIn, await seedroute.json_body(rt, request))

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            change = rt.change(session, tok)
            created = api_requests.create_ticket(
                session,
                settings=rt.settings,
                change=change,
                originator_email=(m.contact_email or tok.owner_email or "").strip(),
                body=Body(subject=m.subject, content=m.description),
                queue_name=None,
                is_public=True,
                originator_as_responder=m.contact_email is not None,
                priority=words.priority_in(m.priority) if m.priority else None,
                assignee=m.assignee_email,
                viewer=visibility.viewer_for(session, tok),
            )
            number = created["ticket_number"]
            if m.labels:
                return ticket_reads.update(
                    session,
                    ticket_number=number,
                    changes=TicketUpdate(tags_add=tuple(m.labels)),
                    change=change,
                )
            return ticket_reads.show(session, ticket_number=number)

        return answer(await run(request, token, handle), lambda d: {"data": ticket_view(d)}, 201)

    def one_ticket(method: str) -> Any:
        async def ticket_route(request: Request) -> Response:
            token = await agent_token(request)
            number = _number(request.path_params["id"])
            m = None
            if method in ("PUT", "PATCH"):
                m = seedroute.validate(TicketUpdateIn, await seedroute.json_body(rt, request))

            def handle(session: Session, tok: AuthenticatedToken) -> Any:
                visibility.require_visible(session, visibility.viewer_for(session, tok), number)
                change = rt.change(session, tok)
                if method == "DELETE":
                    return housekeeping.trash(session, ticket_number=number, change=change)
                if m is None:
                    return ticket_reads.show(session, ticket_number=number)
                status, on_hold = (
                    words.status_in(m.status, today=change.clock.now().date())
                    if m.status
                    else (None, None)
                )
                assign = None if m.assignee_email is None else (m.assignee_email or "none")
                return ticket_reads.update(
                    session,
                    ticket_number=number,
                    changes=TicketUpdate(
                        subject=m.subject,
                        status=status,
                        on_hold_until=on_hold,
                        priority=words.priority_in(m.priority) if m.priority else None,
                        assign=assign,
                        tags_add=tuple(m.labels_add),
                        tags_remove=tuple(m.labels_remove),
                    ),
                    change=change,
                )

            result = await run(request, token, handle, writes=method != "GET")
            return answer(
                result, lambda d: {"data": ticket_view(d)}, 204 if method == "DELETE" else 200
            )

        ticket_route.__name__ = f"ticket_{method.lower()}"
        return ticket_route

    # -- messages, time entries ------------------------------------------------------------

    async def list_messages(request: Request) -> Response:
        token = await agent_token(request)
        number = _number(request.path_params["id"])

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            return ticket_reads.responses(session, ticket_number=number)["responses"]

        result = await run(request, token, handle, writes=False)
        return answer(
            result,
            lambda d: {
                "data": [message_view(r) for r in sorted(d, key=lambda r: r["created_at"])],
                "meta": {"total": len(d), "page": 1, "per_page": max(len(d), 1)},
            },
        )

    async def create_message(request: Request) -> Response:
        token = await agent_token(request)
        number = _number(request.path_params["id"])
        m: MessageIn = seedroute.validate(MessageIn, await seedroute.json_body(rt, request))

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            made = api_requests.respond(
                session,
                change=rt.change(session, tok),
                ticket_number=number,
                from_email=tok.owner_email or "",
                content=m.body,
                is_internal=m.is_internal,
                status=None,
                on_hold_until=None,
            )
            shown = ticket_reads.responses(session, ticket_number=number)["responses"]
            return next(r for r in shown if r["id"] == str(made["response_id"]))

        return answer(await run(request, token, handle), lambda d: {"data": message_view(d)}, 201)

    async def list_time(request: Request) -> Response:
        token = await agent_token(request)
        number = _number(request.path_params["id"])

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            return time_entries.listing(session, ticket_number=number)

        result = await run(request, token, handle, writes=False)
        return answer(
            result,
            lambda d: {
                "data": d["time_entries"],
                "meta": {
                    "total": len(d["time_entries"]),
                    "page": 1,
                    "per_page": max(len(d["time_entries"]), 1),
                    **d["summary"],
                },
            },
        )

    async def create_time(request: Request) -> Response:
        token = await agent_token(request)
        number = _number(request.path_params["id"])
        m: TimeEntryIn = seedroute.validate(TimeEntryIn, await seedroute.json_body(rt, request))

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            return time_entries.add_by_number(
                session,
                ticket_number=number,
                minutes=m.minutes,
                billable=m.billable,
                description=m.description,
                agent_email=tok.owner_email,
                on=None,
                change=rt.change(session, tok),
            )

        return answer(await run(request, token, handle), lambda d: {"data": d}, 201)

    # -- contacts --------------------------------------------------------------------------

    async def list_contacts(request: Request) -> Response:
        token = await agent_token(request)
        q: PageIn = seedroute.validate(PageIn, dict(request.query_params))

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return contacts.list_contacts(
                session, q=None, email=None, page=q.page, per_page=q.per_page
            )

        result = await run(request, token, handle, writes=False)
        return answer(result, lambda d: {"data": d["contacts"], "meta": d["meta"]})

    async def create_contact(request: Request) -> Response:
        token = await agent_token(request)
        m: ContactIn = seedroute.validate(ContactIn, await seedroute.json_body(rt, request))

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return contacts.create(
                session,
                email=m.email,
                fields=contacts.ContactFields(name=m.name, company=m.company, phone=m.phone),
                clock=rt.clock,
            )

        return answer(await run(request, token, handle), lambda d: {"data": d}, 201)

    async def show_contact(request: Request) -> Response:
        token = await agent_token(request)
        raw = request.path_params["id"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_INTEGER:
            return error(404, "CONTACT_NOT_FOUND", f"Contact with ID {raw[:40]} not found")

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return contacts.show(session, contact_id=int(raw))

        result = await run(request, token, handle, writes=False)
        return answer(result, lambda d: {"data": d})

    # -- labels (our tags) and webhooks (native subscriptions) ------------------------------

    async def list_labels(request: Request) -> Response:
        token = await agent_token(request)

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return ticket_reads.tag_names(session)

        result = await run(request, token, handle, writes=False)
        return answer(
            result,
            lambda d: {
                "data": [{"id": name, "name": name} for name in d],
                "meta": {"total": len(d), "page": 1, "per_page": max(len(d), 1)},
            },
        )

    def label_route(adding: bool) -> Any:
        async def label(request: Request) -> Response:
            token = await agent_token(request)
            number = _number(request.path_params["id"])
            name = (
                seedroute.validate(LabelIn, await seedroute.json_body(rt, request)).name
                if adding
                else request.path_params["name"]
            )

            def handle(session: Session, tok: AuthenticatedToken) -> Any:
                visibility.require_visible(session, visibility.viewer_for(session, tok), number)
                return ticket_reads.update(
                    session,
                    ticket_number=number,
                    changes=TicketUpdate(
                        tags_add=(name,) if adding else (), tags_remove=() if adding else (name,)
                    ),
                    change=rt.change(session, tok),
                )

            return answer(
                await run(request, token, handle),
                lambda d: {"data": ticket_view(d)},
                201 if adding else 204,
            )

        label.__name__ = "label_add" if adding else "label_remove"
        return label

    async def list_webhooks(request: Request) -> Response:
        token = await agent_token(request)

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return webhook_subscriptions.list_all(session)["webhooks"]

        result = await run(request, token, handle, writes=False)
        return answer(
            result,
            lambda d: {"data": d, "meta": {"total": len(d), "page": 1, "per_page": max(len(d), 1)}},
        )

    async def create_webhook(request: Request) -> Response:
        token = await agent_token(request)
        m: WebhookIn = seedroute.validate(WebhookIn, await seedroute.json_body(rt, request))

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return webhook_subscriptions.create(
                session,
                url=m.url,
                events=m.events,
                name=None,
                helpdesk_secret=secret,
                now=rt.clock.now(),
                timeout_s=rt.settings.webhook_timeout_s,
                max_attempts=rt.settings.webhook_max_attempts,
            )

        return answer(await run(request, token, handle), lambda d: {"data": d}, 201)

    async def delete_webhook(request: Request) -> Response:
        token = await agent_token(request)
        raw = request.path_params["id"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_INTEGER:
            return error(404, "WEBHOOK_NOT_FOUND", f"Webhook with ID {raw[:40]} not found")

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return webhook_subscriptions.delete(session, subscription_id=int(raw))

        return answer(await run(request, token, handle), lambda d: {}, 204)

    routes: list[seedroute.RouteRow] = [
        ("/auth/login", "POST", login, LoginIn, None, "Log in: a JWT access and a refresh token"),
        ("/auth/refresh", "POST", refresh, RefreshIn, None, "Rotate a refresh token"),
        ("/auth/logout", "POST", logout, RefreshIn, None, "Revoke a refresh token's family"),
        ("/tickets", "GET", list_tickets, None, PageIn, "List tickets"),
        ("/tickets", "POST", create_ticket, TicketIn, None, "Create a ticket"),
        ("/tickets/{id}", "GET", one_ticket("GET"), None, None, "One ticket"),
        ("/tickets/{id}", "PUT", one_ticket("PUT"), TicketUpdateIn, None, "Update a ticket"),
        ("/tickets/{id}", "PATCH", one_ticket("PATCH"), TicketUpdateIn, None, "Update a ticket"),
        ("/tickets/{id}", "DELETE", one_ticket("DELETE"), None, None, "Trash a ticket"),
        ("/tickets/{id}/messages", "GET", list_messages, None, None, "A ticket's messages"),
        ("/tickets/{id}/messages", "POST", create_message, MessageIn, None, "Reply or note"),
        ("/tickets/{id}/time-entries", "GET", list_time, None, None, "A ticket's time"),
        ("/tickets/{id}/time-entries", "POST", create_time, TimeEntryIn, None, "Log time"),
        ("/contacts", "GET", list_contacts, None, PageIn, "List contacts"),
        ("/contacts", "POST", create_contact, ContactIn, None, "Create a contact"),
        ("/contacts/{id}", "GET", show_contact, None, None, "One contact"),
        ("/labels", "GET", list_labels, None, None, "Every label in use"),
        ("/tickets/{id}/labels", "POST", label_route(True), LabelIn, None, "Label a ticket"),
        ("/tickets/{id}/labels/{name}", "DELETE", label_route(False), None, None, "Unlabel"),
        ("/webhooks", "GET", list_webhooks, None, None, "Webhook subscriptions"),
        ("/webhooks", "POST", create_webhook, WebhookIn, None, "Subscribe to events"),
        ("/webhooks/{id}", "DELETE", delete_webhook, None, None, "Remove a subscription"),
    ]
    seedroute.add_routes(api, PREFIX, routes, wrap=route_of, tag=TAG)
