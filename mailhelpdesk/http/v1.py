"""The Tickiti v1 ticket family (api-contract.md §5) and the legacy index that shares its query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http import tickiti
from mailhelpdesk.http.endpoint import (
    QUERY_ITEMS,
    TOKEN_PARAM,
    Acting,
    Endpoint,
    Runtime,
    with_token,
)
from mailhelpdesk.http.errors import ApiError, validation_failed
from mailhelpdesk.services import (
    forwarding,
    history,
    housekeeping,
    ticket_list,
    ticket_reads,
    visibility,
    watchers,
)
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.services.ticket_changes import TicketUpdate

Id = Annotated[int, Field(ge=1, le=MAX_INTEGER)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Criterion(_In):
    mode: str
    tokens: list[str | int] = Field(default_factory=list)


class SearchObject(_In):
    search_perspective: str | None = None
    search_perspective_id: int | None = None
    criteria: list[Criterion] = Field(default_factory=list)


class QueryIn(_In):
    perspective_id: int | None = None
    search_object: SearchObject | None = None
    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=50, ge=1, le=100)


class NumberIn(_In):
    ticket_number: int = Field(ge=1, le=MAX_INTEGER)


class CursorIn(_In):
    created_at: datetime
    id: Id


class ResponsesQueryIn(_In):
    created_from: str | None = None
    created_to: str | None = None
    is_internal: bool | None = None
    staff_response: bool | None = None
    queue: list[str] | str | None = None
    queue_id: list[Id] | Id | None = None
    ticket_number: list[Id] | Id | None = None
    include_deleted: bool = False  # responses are never deleted: accepted and ignored
    fields: list[Literal["html", "plain_text", "attachments"]] | None = None
    limit: int = Field(default=ticket_reads.DEFAULT_LIMIT, ge=1, le=ticket_reads.MAX_LIMIT)
    cursor: CursorIn | None = None


class TicketPatchIn(_In):
    """PATCH /api/v1/tickets/{number} (resources.md §2); every key optional."""

    status: Literal["open", "on-hold", "closed"] | None = None
    on_hold_until: date | None = None
    resolution: str | None = Field(default=None, max_length=10_000)
    comment: str | None = Field(default=None, max_length=10_000)
    priority: str | None = Field(default=None, max_length=20)
    assigned_to_email: str | None = Field(default="", max_length=320)  # null unassigns
    tags_add: list[str] = Field(default_factory=list, max_length=100)
    tags_remove: list[str] = Field(default_factory=list, max_length=100)
    notify_customer: bool = True
    # name -> value (null clears); checked against [[custom_fields]] (services/custom_fields.py)
    custom_fields: dict[str, Any] = Field(default_factory=dict, max_length=100)
    subject: str | None = Field(default=None, max_length=998)
    queue: str | None = Field(default=None, max_length=200)
    due_at: datetime | None = None  # ISO 8601; null clears (absent: unchanged)


class AttachmentIn(_In):
    ticket_number: int = Field(ge=1, le=MAX_INTEGER)
    response_attachment_id: Id
    intent: str | None = None


@dataclass(frozen=True)
class QueryArgs:
    perspective: str
    criteria: list[tuple[str, list[str]]]
    page: int
    per_page: int
    owner_email: str | None = None
    token: AuthenticatedToken | None = None  # whose queue visibility applies


@dataclass(frozen=True)
class AttachmentArgs:
    ticket_number: int
    attachment_id: int
    intent: str | None


def check_query(m: QueryIn, params: dict[str, Any]) -> QueryArgs:
    so = m.search_object or SearchObject()
    pid = m.perspective_id if m.perspective_id is not None else so.search_perspective_id
    if pid is not None:
        if pid not in ticket_reads.PERSPECTIVES:
            raise validation_failed({"perspective_id": [f"perspective {pid} not found"]})
        name = ticket_reads.PERSPECTIVES[pid]
    else:
        name = so.search_perspective or "All"
    criteria = [(c.mode, [str(t) for t in c.tokens]) for c in so.criteria]
    token = params.get(TOKEN_PARAM)
    owner = token.owner_email if isinstance(token, AuthenticatedToken) else None
    return QueryArgs(
        name,
        criteria,
        m.page,
        m.per_page,
        owner,
        token if isinstance(token, AuthenticatedToken) else None,
    )


def _listed(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def check_responses_query(
    m: ResponsesQueryIn, params: dict[str, Any]
) -> Acting[ticket_reads.ResponseQuery]:
    token = params.get(TOKEN_PARAM)
    return Acting(_responses_query(m), token if isinstance(token, AuthenticatedToken) else None)


def _responses_query(m: ResponsesQueryIn) -> ticket_reads.ResponseQuery:
    bounds: dict[str, datetime | None] = {}
    for name in ("created_from", "created_to"):
        raw = getattr(m, name)
        try:
            bounds[name] = (
                None if raw is None else ticket_reads.moment(raw, end=name == "created_to")
            )
        except ValueError as exc:
            raise validation_failed({name: [str(exc)]}) from None
    cursor = None
    if m.cursor is not None:
        at = m.cursor.created_at
        try:
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        except (OverflowError, ValueError):  # 0001-01-01T00:00+01:00 has no UTC time
            raise validation_failed(
                {"cursor.created_at": ["is outside the dates a cursor can hold"]}
            ) from None
        cursor = (at, m.cursor.id)
    return ticket_reads.ResponseQuery(
        filter=ticket_reads.ResponseFilter(
            created_from=bounds["created_from"],
            created_to=bounds["created_to"],
            is_internal=m.is_internal,
            staff_response=m.staff_response,
            queues=_listed(m.queue),
            queue_ids=_listed(m.queue_id),
            ticket_numbers=_listed(m.ticket_number),
        ),
        fields=ticket_reads.RESPONSE_FIELDS if m.fields is None else tuple(m.fields),
        limit=m.limit,
        cursor=cursor,
        include_deleted=m.include_deleted,
    )


def check_attachment(m: AttachmentIn, _params: dict[str, Any]) -> AttachmentArgs:
    return AttachmentArgs(m.ticket_number, m.response_attachment_id, m.intent)


def check_number(m: NumberIn, _params: dict[str, Any]) -> int:
    return m.ticket_number


def endpoints(rt: Runtime) -> list[Endpoint]:
    legacy = {ep.action: ep for ep in tickiti.endpoints(rt)}

    def query(session: Session, a: QueryArgs) -> dict[str, Any]:
        return ticket_reads.query(
            session,
            perspective=a.perspective,
            criteria=a.criteria,
            page=a.page,
            per_page=a.per_page,
            owner_email=a.owner_email,
            visible_queues=visibility.viewer_for(session, a.token).queues,
        )

    def show(session: Session, number: int) -> dict[str, Any]:
        return ticket_reads.show(
            session, ticket_number=number, public_url=rt.settings.notify.public_url
        )

    def responses(session: Session, number: int) -> dict[str, Any]:
        return ticket_reads.responses(session, ticket_number=number)

    def responses_query(
        session: Session, acting: Acting[ticket_reads.ResponseQuery]
    ) -> dict[str, Any]:
        q, visible = acting.args, visibility.viewer_for(session, acting.token).queues
        q = replace(q, filter=replace(q.filter, visible_queues=visible))
        return ticket_reads.query_responses(session, q, clock=rt.clock)

    def attachment(session: Session, a: AttachmentArgs) -> dict[str, Any]:
        return ticket_reads.attachment(
            session, ticket_number=a.ticket_number, attachment_id=a.attachment_id, intent=a.intent
        )

    def patch(session: Session, acting: Acting[tuple[int, TicketUpdate]]) -> dict[str, Any]:
        number, changes = acting.args
        return ticket_reads.update(
            session, ticket_number=number, changes=changes, change=rt.change(session, acting.token)
        )

    create, respond = legacy["create_ticket"], legacy["ticket_respond"]
    return [
        Endpoint(
            "/api/v1/tickets/{number:int}",  # digits only, as the GET: /tickets/abc is 404
            "v1_tickets_update",
            "tickets:write",
            "optional",
            TicketPatchIn,
            with_token(check_patch),
            patch,
            "Change a ticket: status (with resolution, comment), priority, assignee, tags, "
            "custom fields, subject, queue, due_at; all or nothing; returns the ticket object",
            method="PATCH",
            ticket_of=lambda acting: acting.args[0],
        ),
        Endpoint(
            "/api/v1/tickets",
            "v1_tickets_create",
            "tickets:write",
            "optional",
            create.model,
            create.check,
            create.handle,
            "Create a ticket (v1; body as /api/create_ticket)",
            multipart=True,
        ),
        Endpoint(
            "/api/v1/tickets/respond",
            "v1_tickets_respond",
            "tickets:write",
            "optional",
            respond.model,
            respond.check,
            respond.handle,
            "Respond to a ticket (v1)",
            ticket_of=respond.ticket_of,
            multipart=True,
        ),
        Endpoint(
            "/api/v1/tickets/query",
            "v1_tickets_query",
            "tickets:read",
            "ignored",
            QueryIn,
            check_query,
            query,
            "List tickets: a perspective plus criteria",
            writes=False,
        ),
        Endpoint(
            "/api/tickiti_api_index",
            "tickiti_api_index",
            "ticket-index",
            "ignored",
            QueryIn,
            check_query,
            query,
            "List tickets (legacy index)",
            writes=False,
        ),
        Endpoint(
            "/api/v1/tickets/show",
            "v1_tickets_show",
            "tickets:read",
            "ignored",
            NumberIn,
            check_number,
            show,
            "One ticket with all its responses",
            writes=False,
            ticket_of=_number,
        ),
        Endpoint(
            "/api/v1/tickets/responses",
            "v1_tickets_responses",
            "tickets:read",
            "ignored",
            NumberIn,
            check_number,
            responses,
            "The responses of one ticket",
            writes=False,
            ticket_of=_number,
        ),
        Endpoint(
            "/api/v1/tickets/responses/query",
            "v1_tickets_responses_query",
            "tickets:read",
            "ignored",
            ResponsesQueryIn,
            check_responses_query,
            responses_query,
            "Responses across tickets, oldest first, keyset-paged by next_cursor",
            writes=False,
        ),
        Endpoint(
            "/api/v1/tickets/attachment",
            "v1_tickets_attachment",
            "tickets:read",
            "ignored",
            AttachmentIn,
            check_attachment,
            attachment,
            "One attachment's bytes (base64), review-gated by type",
            writes=False,
            ticket_of=lambda a: a.ticket_number,
        ),
    ]


def check_patch(m: TicketPatchIn, params: dict[str, Any]) -> tuple[int, TicketUpdate]:
    raw = str(params.get("number", ""))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not 1 <= int(raw) <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {raw[:20]} not found.")
    if m.on_hold_until is not None and m.status not in (None, "on-hold"):
        raise validation_failed({"on_hold_until": ["only with status on-hold"]})
    if m.status == "on-hold" and m.on_hold_until is None:
        raise validation_failed({"on_hold_until": ["is required when status is on-hold"]})
    assign = None
    if m.assigned_to_email is None:
        assign = "none"
    elif m.assigned_to_email:
        assign = tickiti._email(m.assigned_to_email, "assigned_to_email")
    due_at = None
    if m.due_at is not None:
        due_at = m.due_at if m.due_at.tzinfo else m.due_at.replace(tzinfo=UTC)
    return int(raw), TicketUpdate(
        subject=m.subject,
        queue=m.queue,
        due_at=due_at,
        clear_due="due_at" in m.model_fields_set and m.due_at is None,
        status=m.status,
        on_hold_until=m.on_hold_until,
        resolution=m.resolution,
        comment=m.comment,
        priority=m.priority,
        assign=assign,
        tags_add=tuple(m.tags_add),
        tags_remove=tuple(m.tags_remove),
        notify_customer=m.notify_customer,
        custom_fields=dict(m.custom_fields),
    )


def show_by_path(rt: Runtime) -> Callable[[Session, dict[str, Any]], dict[str, Any]]:
    """GET /api/v1/tickets/{number}: the same ticket object as POST tickets/show; a number too
    large for any ticket is as unknown as a number nobody has (404, never 422). The route only
    matches digits, so GET on the fixed POST paths (tickets/show …) is 405, as it should be."""

    def show(session: Session, params: dict[str, Any]) -> dict[str, Any]:
        number = params.get("number")
        if not isinstance(number, int) or not 1 <= number <= MAX_INTEGER:
            raise ApiError(404, "ticket_not_found", f"Ticket {str(number)[:20]} not found.")
        return ticket_reads.show(
            session, ticket_number=number, public_url=rt.settings.notify.public_url
        )

    return show


class TicketListIn(_In):
    """GET /api/v1/tickets: the query string, documented (services/ticket_list.py reads it,
    with repeats such as tag=a&tag=b and the cf.<field> names this model cannot list)."""

    status: str | None = Field(default=None, description="comma list: open, on-hold, closed")
    priority: str | None = Field(default=None, description="comma list: Low, Normal, High, Urgent")
    queue: str | None = None
    assignee: str | None = Field(default=None, description="an agent's email, none or any")
    requester: str | None = None
    contact_id: str | None = None
    tag: str | None = Field(default=None, description="repeatable; every tag must be on it")
    created_after: str | None = None
    created_before: str | None = None
    updated_after: str | None = None
    updated_before: str | None = None
    due_after: str | None = None
    due_before: str | None = None
    unresponded: str | None = None
    breached: str | None = None
    has_attachments: str | None = None
    q: str | None = Field(default=None, description="the query language (docs/api.md)")
    sort: str | None = Field(default=None, description="a field or -field; default -updated_at")
    fields: str | None = Field(default=None, description="comma list of header fields")
    page: str | None = None
    per_page: str | None = None
    cursor: str | None = Field(default=None, description="meta.next_cursor of the last page")


def list_route(rt: Runtime) -> Any:
    """GET /api/v1/tickets (resources.md §2): the query string read by services/ticket_list.py,
    among the tickets of the queues the token sees."""

    def handle(session: Session, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get(TOKEN_PARAM)
        viewer = visibility.viewer_for(
            session, token if isinstance(token, AuthenticatedToken) else None
        )
        request = ticket_list.parse(
            params.get(QUERY_ITEMS, []),
            definitions=rt.settings.notify.custom_fields,
            visible_queues=viewer.queues,
        )
        return ticket_list.listing(session, request)

    return handle


def history_by_path(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/tickets/{number}/history: every event of the ticket, oldest first."""
    number = params.get("number")
    if not isinstance(number, int) or not 1 <= number <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {str(number)[:20]} not found.")
    return history.history(session, ticket_number=number)


# -- housekeeping: trash, restore, merge, forward, watchers (resources.md §2) --------------------


class EmptyIn(_In):
    """A body that carries nothing (DELETE a ticket, restore): may be empty or {}."""


class MergeIn(_In):
    into: int = Field(ge=1, le=MAX_INTEGER)


class ForwardIn(_In):
    to: list[str] = Field(min_length=1, max_length=10)
    note: str | None = Field(default=None, max_length=10_000)
    include_attachments: bool = False


class WatcherIn(_In):
    email: str = Field(max_length=320)


def path_number(params: dict[str, Any]) -> int:
    """The ticket number of the path (digits only, as the GET): else 404."""
    raw = str(params.get("number", ""))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not 1 <= int(raw) <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {raw[:20]} not found.")
    return int(raw)


def housekeeping_endpoints(rt: Runtime) -> list[Endpoint]:
    def trash(session: Session, acting: Acting[int]) -> dict[str, Any]:
        return housekeeping.trash(
            session, ticket_number=acting.args, change=rt.change(session, acting.token)
        )

    def restore(session: Session, acting: Acting[int]) -> dict[str, Any]:
        return housekeeping.restore(
            session, ticket_number=acting.args, change=rt.change(session, acting.token)
        )

    def merge(session: Session, acting: Acting[tuple[int, int]]) -> dict[str, Any]:
        number, into = acting.args
        return housekeeping.merge(
            session, ticket_number=number, into=into, change=rt.change(session, acting.token)
        )

    def forward(session: Session, acting: Acting[tuple[int, ForwardIn]]) -> dict[str, Any]:
        number, m = acting.args
        return forwarding.forward(
            session,
            ticket_number=number,
            to=m.to,
            note=m.note,
            include_attachments=m.include_attachments,
            change=rt.change(session, acting.token),
        )

    def watch(session: Session, acting: Acting[tuple[int, str]]) -> dict[str, Any]:
        number, email = acting.args
        return watchers.add(
            session, ticket_number=number, email=email, change=rt.change(session, acting.token)
        )

    def unwatch(session: Session, acting: Acting[tuple[int, str]]) -> dict[str, Any]:
        number, email = acting.args
        return watchers.remove(
            session, ticket_number=number, email=email, change=rt.change(session, acting.token)
        )

    def number_only(_m: EmptyIn, params: dict[str, Any]) -> int:
        return path_number(params)

    def merge_args(m: MergeIn, params: dict[str, Any]) -> tuple[int, int]:
        return path_number(params), m.into

    def forward_args(m: ForwardIn, params: dict[str, Any]) -> tuple[int, ForwardIn]:
        return path_number(params), m

    def watcher_args(m: WatcherIn, params: dict[str, Any]) -> tuple[int, str]:
        return path_number(params), tickiti._email(m.email, "email")

    one = "/api/v1/tickets/{number:int}"
    return [
        Endpoint(
            one,
            "v1_tickets_delete",
            "tickets:write",
            "optional",
            EmptyIn,
            with_token(number_only),
            trash,
            "Move a ticket to the trash (soft delete): later reads are 404 until it is restored",
            method="DELETE",
            body_optional=True,
            ticket_of=lambda acting: acting.args,
        ),
        Endpoint(
            one + "/restore",
            "v1_tickets_restore",
            "tickets:write",
            "optional",
            EmptyIn,
            with_token(number_only),
            restore,
            "Take a ticket out of the trash; returns the ticket object",
            body_optional=True,
            ticket_of=lambda acting: acting.args,
        ),
        Endpoint(
            one + "/merge",
            "v1_tickets_merge",
            "tickets:write",
            "optional",
            MergeIn,
            with_token(merge_args),
            merge,
            "Merge a ticket into another ({into}): its messages move, its mail follows; "
            "returns the target's ticket object",
            ticket_of=lambda acting: acting.args[0],
        ),
        Endpoint(
            one + "/forward",
            "v1_tickets_forward",
            "tickets:write",
            "optional",
            ForwardIn,
            with_token(forward_args),
            forward,
            "Mail the public conversation to third parties; their replies are kept internal",
            ticket_of=lambda acting: acting.args[0],
        ),
        Endpoint(
            one + "/watchers",
            "v1_tickets_watchers_add",
            "tickets:write",
            "optional",
            WatcherIn,
            with_token(watcher_args),
            watch,
            "Add an agent as a watcher: they get the notices the assignee gets",
            ticket_of=lambda acting: acting.args[0],
        ),
        Endpoint(
            one + "/watchers",
            "v1_tickets_watchers_remove",
            "tickets:write",
            "optional",
            WatcherIn,
            with_token(watcher_args),
            unwatch,
            "Remove a watcher",
            method="DELETE",
            ticket_of=lambda acting: acting.args[0],
        ),
    ]


def watchers_by_path(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/tickets/{number}/watchers: the agents watching the ticket."""
    return watchers.listing(session, ticket_number=path_number(params))


def _number(number: int) -> int:
    """The ticket a show or responses request names (the queue-visibility guard)."""
    return number
