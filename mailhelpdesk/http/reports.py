"""GET /api/v1/reports/summary (resources.md §9): the figures of services/reports.py."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.http.endpoint import QUERY_PARAM, TOKEN_PARAM, Runtime, add_get_route
from mailhelpdesk.services import reports, visibility

READ = "reports:read"
PATH = "/api/v1/reports/summary"


class SummaryQueryIn(BaseModel):
    """The query string: `from` and `to` (YYYY-MM-DD, both included), `queue`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", max_length=10)
    to: str | None = Field(default=None, max_length=10)
    queue: str | None = Field(default=None, max_length=200)


def add_get_routes(api: FastAPI, rt: Runtime) -> None:
    def summary(session: Session, params: dict[str, Any]) -> dict[str, Any]:
        query: SummaryQueryIn = params[QUERY_PARAM]
        return reports.summary(
            session,
            start=query.from_,
            end=query.to,
            queue=query.queue,
            today=rt.clock.now().date(),
            visible_queues=visibility.viewer_for(session, params.get(TOKEN_PARAM)).queues,
        )

    add_get_route(
        api, rt, PATH, READ, summary,
        "Report: volume, response and resolution times, SLA attainment, backlog, agents",
        query=SummaryQueryIn,
    )  # fmt: skip
