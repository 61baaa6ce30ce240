"""The Tickiti v1 ticket family (api-contract.md §5) and the legacy index that shares its query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.http import tickiti
from mailhelpdesk.http.endpoint import Endpoint, Runtime
from mailhelpdesk.http.errors import validation_failed
from mailhelpdesk.services import api_requests


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
    ticket_number: int = Field(ge=1, le=999_999_999_999)


@dataclass(frozen=True)
class QueryArgs:
    perspective: str
    criteria: list[tuple[str, list[str]]]
    page: int
    per_page: int


def check_query(m: QueryIn, _params: dict[str, Any]) -> QueryArgs:
    so = m.search_object or SearchObject()
    pid = m.perspective_id if m.perspective_id is not None else so.search_perspective_id
    if pid is not None:
        if pid not in api_requests.PERSPECTIVES:
            raise validation_failed({"perspective_id": [f"perspective {pid} not found"]})
        name = api_requests.PERSPECTIVES[pid]
    else:
        name = so.search_perspective or "All"
    criteria = [(c.mode, [str(t) for t in c.tokens]) for c in so.criteria]
    return QueryArgs(name, criteria, m.page, m.per_page)


def check_number(m: NumberIn, _params: dict[str, Any]) -> int:
    return m.ticket_number


def endpoints(rt: Runtime) -> list[Endpoint]:
    legacy = {ep.action: ep for ep in tickiti.endpoints(rt)}

    def query(session: Session, a: QueryArgs) -> dict[str, Any]:
        return api_requests.query(session, perspective=a.perspective, criteria=a.criteria, page=a.page, per_page=a.per_page)

    def show(session: Session, number: int) -> dict[str, Any]:
        return api_requests.show(session, ticket_number=number)

    def responses(session: Session, number: int) -> dict[str, Any]:
        return api_requests.responses(session, ticket_number=number)

    create, respond = legacy["create_ticket"], legacy["ticket_respond"]
    return [
        Endpoint("/api/v1/tickets", "v1_tickets_create", "tickets:write", "optional", create.model, create.check,
                 create.handle, "Create a ticket (v1; body as /api/create_ticket)"),
        Endpoint("/api/v1/tickets/respond", "v1_tickets_respond", "tickets:write", "optional", respond.model,
                 respond.check, respond.handle, "Respond to a ticket (v1)"),
        Endpoint("/api/v1/tickets/query", "v1_tickets_query", "tickets:read", "ignored", QueryIn, check_query, query,
                 "List tickets: a perspective plus criteria"),
        Endpoint("/api/tickiti_api_index", "tickiti_api_index", "ticket-index", "ignored", QueryIn, check_query, query,
                 "List tickets (legacy index)"),
        Endpoint("/api/v1/tickets/show", "v1_tickets_show", "tickets:read", "ignored", NumberIn, check_number, show,
                 "One ticket with all its responses"),
        Endpoint("/api/v1/tickets/responses", "v1_tickets_responses", "tickets:read", "ignored", NumberIn,
                 check_number, responses, "The responses of one ticket"),
    ]
