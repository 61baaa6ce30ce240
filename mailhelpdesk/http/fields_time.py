"""Custom field definitions and time entries (resources.md §2-3): `GET /api/v1/custom_fields`,
`GET/POST /api/v1/tickets/{number}/time_entries`. Custom field values are written with the
ticket's PATCH (http/v1.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http import tickiti
from mailhelpdesk.http.endpoint import Acting, Endpoint, Runtime, add_get_route, with_token
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import custom_fields, time_entries

TIME_ENTRIES_PATH = "/api/v1/tickets/{number:int}/time_entries"


class TimeEntryIn(BaseModel):
    """POST …/time_entries: minutes spent, whether billable, what was done; the agent (default:
    the token's owner agent) and the day (default: today, UTC) are optional."""

    model_config = ConfigDict(extra="ignore")
    minutes: int = Field(ge=1, le=time_entries.MAX_MINUTES)
    billable: bool = False
    description: str = Field(default="", max_length=time_entries.MAX_DESCRIPTION_CHARS)
    agent_email: str | None = Field(default=None, max_length=320)
    day: date | None = Field(default=None, alias="date")  # `date` would shadow the type


@dataclass(frozen=True)
class TimeEntryArgs:
    number: int
    minutes: int
    billable: bool
    description: str
    agent_email: str | None
    on: date | None


def _number(params: dict[str, Any]) -> int:
    """The path's ticket number; one too large for any ticket is as unknown as any (404)."""
    number = params.get("number")
    if not isinstance(number, int) or not 1 <= number <= MAX_INTEGER:
        raise ApiError(404, "ticket_not_found", f"Ticket {str(number)[:20]} not found.")
    return number


def check_time_entry(m: TimeEntryIn, params: dict[str, Any]) -> TimeEntryArgs:
    email = tickiti._email(m.agent_email, "agent_email") if m.agent_email else None
    return TimeEntryArgs(_number(params), m.minutes, m.billable, m.description, email, m.day)


def endpoints(rt: Runtime) -> list[Endpoint]:
    def add(session: Session, acting: Acting[TimeEntryArgs]) -> dict[str, Any]:
        a = acting.args
        return time_entries.add_by_number(
            session,
            ticket_number=a.number,
            minutes=a.minutes,
            billable=a.billable,
            description=a.description,
            agent_email=a.agent_email,
            on=a.on,
            change=rt.change(session, acting.token),
        )

    return [
        Endpoint(
            TIME_ENTRIES_PATH,
            "v1_time_entries_create",
            "tickets:write",
            "optional",
            TimeEntryIn,
            with_token(check_time_entry),
            add,
            "Record time spent on a ticket; returns the entry",
            ticket_of=lambda acting: acting.args.number,
        )
    ]


def add_get_routes(api: FastAPI, rt: Runtime) -> None:
    definitions = rt.settings.notify.custom_fields

    def list_fields(_session: Session, _params: dict[str, Any]) -> dict[str, Any]:
        return custom_fields.listing(definitions)

    def list_time(session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return time_entries.listing(session, ticket_number=_number(params))

    add_get_route(
        api,
        rt,
        "/api/v1/custom_fields",
        "tickets:read",
        list_fields,
        "The custom field definitions ([[custom_fields]] in the config)",
    )
    add_get_route(
        api,
        rt,
        TIME_ENTRIES_PATH,
        "tickets:read",
        list_time,
        "A ticket's time entries with their summary (total and billable minutes)",
    )
