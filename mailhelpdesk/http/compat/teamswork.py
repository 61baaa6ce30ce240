"""Teamswork's Ticketing-as-a-Service API (seed 002) under `/compat/teamswork`: tickets,
their status and activities, the instance and its tags, as thin translations onto the native
services.

Credentials are the `key` query parameter: a native API token (`token create`); a site makes
two (the primary and the secondary key) and rotates them one at a time. `timezone` (hours from
UTC) shifts every time in an answer. Answers are `{"item": …}` or `{"items": […],
"continuationToken"?}`; errors `{"error": {"code", "message"}}` with the native status.
People are `{id, name, email}` where `id` is the address (we have no directory object ids).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.config import TeamsworkCompatConfig
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.compat import seedroute, vocab
from mailhelpdesk.http.compat.seedroute import Answer
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import (
    api_requests,
    contacts,
    history,
    ticket_reads,
    tihelpdesk_view,
    visibility,
)
from mailhelpdesk.services.api_requests import Body
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.services.ticket_changes import TicketUpdate

PREFIX = "/compat/teamswork"
TAG = "compat: Teamswork"
TAG_CATEGORY = "tags"  # our tags are one Teamswork tag category
MAX_LIMIT, DEFAULT_LIMIT = 1000, 10
SCAN_LIMIT = 10_000  # the most tickets one list request sorts (orderBy is applied here)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(default=None, max_length=200)
    name: str = Field(default="", max_length=400)
    email: str = Field(min_length=3, max_length=320)


class TagRefIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tagCategoryId: str = Field(default=TAG_CATEGORY, max_length=100)
    text: str = Field(min_length=1, max_length=100)


class TicketBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str = Field(min_length=1, max_length=998)
    requestor: UserIn
    description: str = Field(default="", max_length=1_000_000)
    priority: str | None = Field(default=None, max_length=50)
    assignee: UserIn | None = None
    expectedDate: datetime | None = None
    customFields: dict[str, Any] = Field(default_factory=dict)
    tags: list[TagRefIn] = Field(default_factory=list, max_length=50)


class InsertTicketIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket: TicketBody
    user: UserIn | None = None


class Updates(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str | None = Field(default=None, min_length=1, max_length=998)
    requestor: UserIn | None = None
    description: str | None = Field(default=None, max_length=1_000_000)
    priority: str | None = Field(default=None, max_length=50)
    assignee: UserIn | None = None
    expectedDate: datetime | None = None
    customFields: dict[str, Any] = Field(default_factory=dict)
    tags: list[TagRefIn] | None = Field(default=None, max_length=50)


class UpdateTicketIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    updates: Updates
    user: UserIn | None = None


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: str = Field(min_length=1, max_length=50)
    resolution: str | None = Field(default=None, max_length=10_000)
    comment: str | None = Field(default=None, max_length=10_000)
    user: UserIn | None = None


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    comment: str = Field(min_length=1, max_length=1_000_000)
    user: UserIn | None = None


ORDER_BY = (
    "status",
    "ticketId",
    "title",
    "requestorName",
    "requestorEmail",
    "assigneeName",
    "assigneeEmail",
    "expectedDate",
    "priority",
    "createdDateTime",
    "lastInteraction",
)


class ListIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str | None = Field(default=None, max_length=300)
    timezone: int = Field(default=0, ge=-12, le=14)
    search: str | None = Field(default=None, max_length=500)
    title: str | None = Field(default=None, max_length=500)
    status: str | None = Field(default=None, max_length=50)
    priority: str | None = Field(default=None, max_length=50)
    tags: str | None = Field(default=None, max_length=2000)
    orderBy: str = Field(default="createdDateTime", max_length=50)
    order: str = Field(default="DESC", max_length=4)
    select: str | None = Field(default=None, max_length=2000)
    offset: int = Field(default=0, ge=0, le=SCAN_LIMIT)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class TimezoneIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str | None = Field(default=None, max_length=300)
    timezone: int = Field(default=0, ge=-12, le=14)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return seedroute.json_response({"error": {"code": code, "message": message}}, status, headers)


def from_api_error(exc: ApiError) -> Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.errors:
        body["details"] = exc.errors
    return seedroute.json_response({"error": body}, exc.status, exc.headers)


def shift(value: str | None, hours: int) -> str | None:
    """An ISO time from UTC to the caller's `timezone` (hours east of UTC)."""
    if not value:
        return value
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(timezone(timedelta(hours=hours))).isoformat()


def _continuation(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset_of(token: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        offset = int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ApiError(
            400, "invalid_continuation_token", "The continuationToken is not ours."
        ) from None
    if not 0 <= offset <= SCAN_LIMIT:
        raise ApiError(400, "invalid_continuation_token", "The continuationToken is not ours.")
    return offset


def _number(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {raw[:40]} not found.")
    return int(raw)


def mount(api: FastAPI, rt: Runtime, cfg: TeamsworkCompatConfig) -> None:
    """Every route of seed 002 under PREFIX."""
    words = vocab.teamswork(cfg)
    definitions = rt.settings.notify.custom_fields

    def user(email: str | None, name: str = "") -> dict[str, Any] | None:
        if not email:
            return None
        return {"id": email, "name": name or email.split("@", 1)[0], "email": email}

    def ticket_item(data: dict[str, Any], events: list[dict[str, Any]], tz: int) -> dict[str, Any]:
        """The native ticket object (and its history) as Teamswork's ITicket."""
        responses = sorted(data.get("responses") or [], key=lambda r: r["created_at"] or "")
        opening = responses[0] if responses else None
        answered = [r for r in responses if r["kind"] == "agent" and not r["is_internal"]]
        closed = [e for e in events if e["type"] == "status" and e["data"].get("to") == "closed"]
        first, last = (events[0] if events else None), (events[-1] if events else None)
        return {
            "id": data["id"],
            "ticketId": data["number"],
            "title": data["subject"],
            "description": (opening or {}).get("visible_text") or "",
            "status": words.status_out(data["status"]),
            "requestor": user(data["originator_email"], data.get("originator_name") or ""),
            "customFields": data.get("custom_fields") or {},
            "priority": words.priority_out(int(data["priority"])),
            "assignee": user(data["assigned_to_email"]),
            "expectedDate": shift(data.get("due_at"), tz),
            "resolution": data.get("resolution"),
            "firstResponseOn": shift(answered[0]["created_at"], tz) if answered else None,
            "firstResolutionOn": shift(closed[0]["at"], tz) if closed else None,
            "lastResolutionOn": shift(closed[-1]["at"], tz) if closed else None,
            "lastResolutionComment": (closed[-1]["data"].get("comment") if closed else None),
            "createdOn": shift(data["created_at"], tz),
            "lastUpdatedOn": shift(data["updated_at"], tz),
            "lastInteraction": shift(responses[-1]["created_at"], tz) if responses else None,
            "tags": [{"tagCategoryId": TAG_CATEGORY, "text": t} for t in data.get("tags") or []],
            "isFrtEscalated": False,
            "isRtEscalated": False,
            "createdBy": user(first["actor"]["email"], first["actor"]["name"]) if first else None,
            "lastUpdatedBy": user(last["actor"]["email"], last["actor"]["name"]) if last else None,
        }

    def item_of(session: Session, number: int, tz: int) -> dict[str, Any]:
        data = ticket_reads.show(session, ticket_number=number)
        if not data.get("originator_name") and data.get("contact_id"):
            data["originator_name"] = contacts.show(session, contact_id=data["contact_id"])["name"]
        events = history.history(session, ticket_number=number)["events"]
        return ticket_item(data, events, tz)

    async def keyed(request: Request, ability: str) -> AuthenticatedToken:
        return await seedroute.admit(
            rt,
            request,
            "Bearer " + request.query_params.get("key", ""),
            ability,
            ApiError(401, "unauthorized", "A valid key query parameter is required."),
        )

    def route_of(run: Any) -> Any:
        async def route(request: Request) -> Response:
            try:
                response: Response = await run(request)
                return response
            except Exception as exc:  # noqa: BLE001 - every failure in the seed's shape
                return from_api_error(seedroute.error_of(request, exc))

        route.__name__ = "teamswork_" + run.__name__
        return route

    def answer(result: Answer, shape: Any = None) -> Response:
        if result.error is not None:
            return from_api_error(result.error)
        return seedroute.json_response(shape(result.data) if shape else {"item": result.data})

    async def run(
        request: Request,
        token: AuthenticatedToken,
        action: str,
        handle: Any,
        *,
        writes: bool,
        payload: Any = None,
    ) -> Answer:
        return await seedroute.call(
            rt,
            request,
            token,
            action=f"teamswork_{action}",
            args=token,
            handle=handle,
            writes=writes,
            payload=payload,
        )

    def tz_of(request: Request) -> int:
        q: TimezoneIn = seedroute.validate(TimezoneIn, dict(request.query_params))
        return q.timezone

    # -- tickets ---------------------------------------------------------------------------

    async def list_tickets(request: Request) -> Response:
        token = await keyed(request, "tickets:read")
        q: ListIn = seedroute.validate(ListIn, dict(request.query_params))
        if q.orderBy not in ORDER_BY:
            raise ApiError(
                422,
                "validation_failed",
                "orderBy is not one of the documented.",
                errors={"orderBy": [f"one of {', '.join(ORDER_BY)}"]},
            )
        if q.order.upper() not in ("ASC", "DESC"):
            raise ApiError(
                422, "validation_failed", "order is ASC or DESC.", errors={"order": ["ASC or DESC"]}
            )
        offset = q.offset
        continuation = request.headers.get("continuationtoken")
        if continuation:
            offset = _offset_of(continuation)
        criteria: list[tuple[str, list[str]]] = []
        if q.status:
            criteria.append(("status", [words.status_in(q.status, today=rt.clock.now().date())[0]]))
        if q.priority:
            criteria.append(("priority", [words.priority_in(q.priority)]))
        if q.title:
            criteria.append(("subject", [q.title]))
        if q.search:
            criteria.append(("subject_content", [q.search]))
        criteria.extend(
            ("hashtag", [tag.strip().split("_", 1)[-1]])
            for tag in (q.tags or "").split(",")
            if tag.strip()
        )

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            found = ticket_reads.query(
                session,
                perspective="All",
                criteria=criteria,
                page=1,
                per_page=SCAN_LIMIT,
                visible_queues=visibility.viewer_for(session, tok).queues,
            )
            return [item_of(session, h["number"], q.timezone) for h in found["tickets"]]

        result = await run(request, token, "list", handle, writes=False)
        if result.error is not None:
            return from_api_error(result.error)
        items: list[dict[str, Any]] = result.data
        field = {"createdDateTime": "createdOn", "ticketId": "ticketId"}.get(q.orderBy, q.orderBy)
        items.sort(key=lambda t: _sort_key(t, field), reverse=q.order.upper() == "DESC")
        page = items[offset : offset + q.limit]
        if q.select:
            wanted = [s.strip() for s in q.select.split(",") if s.strip()]
            page = [{name: _selected(t, name) for name in wanted} for t in page]
        body: dict[str, Any] = {"items": page}
        if offset + q.limit < len(items):
            body["continuationToken"] = _continuation(offset + q.limit)
        return seedroute.json_response(body)

    async def create_ticket(request: Request) -> Response:
        token = await keyed(request, "tickets:write")
        tz = tz_of(request)
        payload = await seedroute.json_body(rt, request)
        m: InsertTicketIn = seedroute.validate(InsertTicketIn, payload)
        t = m.ticket

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            change = rt.change(session, tok)
            created = api_requests.create_ticket(
                session,
                settings=rt.settings,
                change=change,
                originator_email=t.requestor.email.strip(),
                body=Body(subject=t.title, content=t.description),
                queue_name=None,
                is_public=True,
                originator_as_responder=True,
                priority=words.priority_in(t.priority) if t.priority else None,
                assignee=t.assignee.email if t.assignee else None,
                viewer=visibility.viewer_for(session, tok),
            )
            number = created["ticket_number"]
            tihelpdesk_view.name_customer(
                session, number, name=t.requestor.name, company="", clock=rt.clock
            )
            update = TicketUpdate(
                custom_fields=t.customFields,
                tags_add=tuple(tag.text for tag in t.tags),
                due_at=t.expectedDate,
            )
            if update != TicketUpdate():
                ticket_reads.update(session, ticket_number=number, changes=update, change=change)
            return item_of(session, number, tz)

        return answer(await run(request, token, "create", handle, writes=True, payload=payload))

    async def show_ticket(request: Request) -> Response:
        token = await keyed(request, "tickets:read")
        number, tz = _number(request.path_params["ticketId"]), tz_of(request)

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            return item_of(session, number, tz)

        return answer(await run(request, token, "show", handle, writes=False))

    async def update_ticket(request: Request) -> Response:
        token = await keyed(request, "tickets:write")
        number, tz = _number(request.path_params["ticketId"]), tz_of(request)
        payload = await seedroute.json_body(rt, request)
        u: Updates = seedroute.validate(UpdateTicketIn, payload).updates

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            current = ticket_reads.show(session, ticket_number=number)
            tags = None if u.tags is None else {tag.text for tag in u.tags}
            ticket_reads.update(
                session,
                ticket_number=number,
                changes=TicketUpdate(
                    subject=u.title,
                    priority=words.priority_in(u.priority) if u.priority else None,
                    assign=u.assignee.email if u.assignee else None,
                    custom_fields=u.customFields,
                    due_at=u.expectedDate,
                    tags_add=tuple(sorted(tags - set(current["tags"]))) if tags is not None else (),
                    tags_remove=(
                        tuple(sorted(set(current["tags"]) - tags)) if tags is not None else ()
                    ),
                ),
                change=rt.change(session, tok),
            )
            return item_of(session, number, tz)

        return answer(await run(request, token, "update", handle, writes=True, payload=payload))

    async def set_status(request: Request) -> Response:
        token = await keyed(request, "tickets:write")
        number, tz = _number(request.path_params["ticketId"]), tz_of(request)
        payload = await seedroute.json_body(rt, request)
        m: StatusIn = seedroute.validate(StatusIn, payload)

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            status, on_hold = words.status_in(m.status, today=rt.clock.now().date())
            ticket_reads.update(
                session,
                ticket_number=number,
                changes=TicketUpdate(
                    status=status,
                    on_hold_until=on_hold,
                    resolution=m.resolution if status == "closed" else None,
                    comment=m.comment,
                ),
                change=rt.change(session, tok),
            )
            return item_of(session, number, tz)

        return answer(await run(request, token, "status", handle, writes=True, payload=payload))

    # -- activities ------------------------------------------------------------------------

    def comment_item(r: dict[str, Any], tz: int) -> dict[str, Any]:
        return {
            "id": r["id"],
            "type": "comment",
            "comment": r["visible_text"] or r["plain_text"],
            "isInternal": r["is_internal"],
            "user": user(r["created_by_email"], r["created_by_name"]),
            "createdOn": shift(r["created_at"], tz),
        }

    async def list_activities(request: Request) -> Response:
        token = await keyed(request, "tickets:read")
        number, tz = _number(request.path_params["ticketId"]), tz_of(request)

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            responses = sorted(
                ticket_reads.responses(session, ticket_number=number)["responses"],
                key=lambda r: r["created_at"] or "",
            )
            events = history.history(session, ticket_number=number)["events"]
            found = [comment_item(r, tz) for r in responses[1:]]
            found += [
                {
                    "id": e["id"],
                    "type": "statusChange",
                    "status": words.status_out(e["data"].get("to") or ""),
                    "previousStatus": words.status_out(e["data"].get("from") or ""),
                    "resolution": e["data"].get("resolution"),
                    "comment": e["data"].get("comment"),
                    "user": user(e["actor"]["email"], e["actor"]["name"]),
                    "createdOn": shift(e["at"], tz),
                }
                for e in events
                if e["type"] == "status"
            ]
            return sorted(found, key=lambda a: a["createdOn"] or "")

        result = await run(request, token, "activities", handle, writes=False)
        return answer(result, lambda d: {"items": d})

    async def add_comment(request: Request) -> Response:
        token = await keyed(request, "tickets:write")
        number, tz = _number(request.path_params["ticketId"]), tz_of(request)
        payload = await seedroute.json_body(rt, request)
        m: CommentIn = seedroute.validate(CommentIn, payload)

        def handle(session: Session, tok: AuthenticatedToken) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, tok), number)
            author = (m.user.email if m.user else None) or tok.owner_email
            if not author:
                raise api_requests.FieldError("user", "is required for a key without an agent")
            made = api_requests.respond(
                session,
                change=rt.change(session, tok),
                ticket_number=number,
                from_email=author,
                content=m.comment,
                is_internal=False,
                status=None,
                on_hold_until=None,
            )
            shown = ticket_reads.responses(session, ticket_number=number)["responses"]
            return comment_item(next(r for r in shown if r["id"] == str(made["response_id"])), tz)

        return answer(await run(request, token, "comment", handle, writes=True, payload=payload))

    # -- instance and tags -----------------------------------------------------------------

    async def instance(request: Request) -> Response:
        token = await keyed(request, "tickets:read")
        tz_of(request)
        notify = rt.settings.notify

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            agents = ticket_reads.agents(session)
            fields = [
                {
                    "id": f.name,
                    "name": f.label or f.name,
                    "type": f.type,
                    "choices": list(f.choices),
                    "required": f.required_to_close,
                }
                for f in definitions
            ]
            return {
                "id": "mailhelpdesk",
                "groupId": "",
                "name": notify.helpdesk_name,
                "enabled": True,
                "tenantId": "",
                "teamId": "",
                "channelId": "",
                "mailAddress": notify.helpdesk_address,
                "customFields": fields,
                "customFieldsLeft": fields,
                "customFieldsRight": [],
                "optionalFieldsLeft": [],
                "optionalFieldsRight": [],
                "assignees": {
                    "type": "customAssignee",
                    "peoples": [user(email, name) for email, name in agents],
                },
                "assigneeRules": [],
                "defaultRuleAssignee": [],
                "isAutomaticAssignTickets": False,
                "isAutoAssignIdleTickets": False,
                "isNotifyIdleTicket": False,
            }

        return answer(await run(request, token, "instance", handle, writes=False))

    async def tags(request: Request) -> Response:
        token = await keyed(request, "tickets:read")

        def handle(session: Session, _tok: AuthenticatedToken) -> Any:
            return [
                {
                    "id": TAG_CATEGORY,
                    "instanceId": "mailhelpdesk",
                    "text": "Tags",
                    "color": "",
                    "tags": [
                        {"text": t, "deleted": False} for t in ticket_reads.tag_names(session)
                    ],
                    "deleted": False,
                }
            ]

        return answer(
            await run(request, token, "tags", handle, writes=False), lambda d: {"items": d}
        )

    T = "/tickets/{ticketId}"
    routes: list[seedroute.RouteRow] = [
        ("/tickets", "GET", list_tickets, None, ListIn, "List tickets"),
        ("/tickets", "POST", create_ticket, InsertTicketIn, TimezoneIn, "Create a ticket"),
        (T, "GET", show_ticket, None, TimezoneIn, "One ticket"),
        (T, "PUT", update_ticket, UpdateTicketIn, TimezoneIn, "Update a ticket"),
        (T + "/status", "PUT", set_status, StatusIn, TimezoneIn, "Change a ticket's status"),
        (T + "/status", "POST", set_status, StatusIn, TimezoneIn, "Change a ticket's status"),
        (T + "/activities", "GET", list_activities, None, TimezoneIn, "Comments, status changes"),
        (T + "/activities", "POST", add_comment, CommentIn, TimezoneIn, "Add a comment"),
        (T + "/comments", "POST", add_comment, CommentIn, TimezoneIn, "Add a comment"),
        ("/instance", "GET", instance, None, TimezoneIn, "The instance"),
        ("/tags", "GET", tags, None, TimezoneIn, "The tags"),
    ]
    seedroute.add_routes(api, PREFIX, routes, wrap=route_of, tag=TAG)


def _selected(ticket: dict[str, Any], name: str) -> Any:
    derived = {
        "requestorName": ("requestor", "name"),
        "requestorEmail": ("requestor", "email"),
        "assigneeName": ("assignee", "name"),
        "assigneeEmail": ("assignee", "email"),
    }
    if name in derived:
        outer, inner = derived[name]
        return (ticket.get(outer) or {}).get(inner)
    return ticket.get(name)


def _sort_key(ticket: dict[str, Any], field: str) -> tuple[int, Any]:
    value = _selected(ticket, field)
    return (0, "") if value is None else (1, value)
