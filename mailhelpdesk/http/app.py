"""The FastAPI application: health, metrics and the Tickiti-compatible API.

Routes stay thin. They ask the daemon's `Health` object or call services; every answer, errors
included, uses the `{ok, data}` / `{ok: false, error}` envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailhelpdesk import __version__
from mailhelpdesk.clock import Clock, SystemClock
from mailhelpdesk.config import ApiConfig, CompatConfig
from mailhelpdesk.http import (
    bulk,
    contacts,
    fields_time,
    interventions,
    reports,
    status_page,
    tickiti,
    v1,
    webhooks,
)
from mailhelpdesk.http.auth import Authenticator, RateLimiter
from mailhelpdesk.http.compat import happyfox, teamswork, tihelpdesk, tiketti
from mailhelpdesk.http.endpoint import RateHeaders, Runtime, add_endpoint, add_get_route
from mailhelpdesk.http.errors import JSON_TYPE
from mailhelpdesk.http.idempotency import KeyedRunner
from mailhelpdesk.http.request_metrics import Observe, RequestTimer
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.services.api_tokens import ADMIN
from mailhelpdesk.store.db import Database

log = logging.getLogger(__name__)


def create_api(
    *,
    health: Callable[[], dict[str, Any]],
    metrics: Callable[[], bytes],
    observe_request: Observe | None = None,
    database: Database | None = None,
    settings: ApiSettings | None = None,
    api_config: ApiConfig | None = None,
    clock: Clock | None = None,
    compat: CompatConfig | None = None,
) -> FastAPI:
    """The app. Without a database and settings only /healthz and /metrics are served."""
    api = FastAPI(title="mailhelpdesk", version=__version__, docs_url=None, redoc_url=None)

    @api.get("/healthz")
    def healthz() -> JSONResponse:
        """Liveness and the state an operator alerts on (pending mail, last ingest, mailboxes)."""
        data = health()
        return JSONResponse(
            {"ok": data["status"] == "ok", "data": data},
            status_code=200 if data["status"] == "ok" else 503,
        )

    @api.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics(), media_type="text/plain; version=0.0.4")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, message = {
            404: ("not_found", "No such endpoint."),
            405: ("method_not_allowed", "This endpoint does not accept that method."),
        }.get(exc.status_code, ("http_error", str(exc.detail)))
        return JSONResponse(
            {"ok": False, "error": code, "message": message},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=JSON_TYPE,
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            errors.setdefault(".".join(str(p) for p in err.get("loc", ())) or "request", []).append(
                str(err.get("msg"))
            )
        return JSONResponse(
            {
                "ok": False,
                "error": "validation_failed",
                "message": "The request is invalid.",
                "errors": errors,
            },
            status_code=422,
            media_type=JSON_TYPE,
        )

    @api.exception_handler(Exception)
    async def internal(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"ok": False, "error": "internal_error", "message": "internal error"}, status_code=500
        )

    cfg = api_config or ApiConfig()
    limiter = RateLimiter(cfg.rate_limit_requests, cfg.rate_limit_window_s)
    api.add_middleware(RateHeaders, limiter=limiter)
    if observe_request is not None:
        api.add_middleware(RequestTimer, observe=observe_request)  # outermost: times it all
    if database is not None and settings is not None:
        clock = clock or SystemClock()
        rt = Runtime(
            engine=database.engine,
            clock=clock,
            settings=settings,
            auth=Authenticator(database.engine, clock),
            limiter=limiter,
            runner=KeyedRunner(
                database,
                clock,
                ttl_s=cfg.idempotency_ttl_s,
                lease_s=cfg.idempotency_lease_s,
                max_minted=cfg.max_minted_keys,
            ),
            max_body_bytes=cfg.max_body_bytes,
        )
        api.state.runtime = rt  # the daemon swaps rt.settings on a reload (SIGHUP)
        legacy = tickiti.endpoints(rt)
        status_page.add_routes(api, rt)  # resources.md §8: the customer's /t/{secure_id}
        for ep in [*legacy, *v1.endpoints(rt), *interventions.endpoints(rt)]:
            add_endpoint(api, rt, ep)
        for ep in contacts.endpoints(rt):  # resources.md §3
            add_endpoint(api, rt, ep)
        contacts.add_get_routes(api, rt)
        for ep in fields_time.endpoints(rt):
            add_endpoint(api, rt, ep)
        fields_time.add_get_routes(api, rt)
        for ep in v1.housekeeping_endpoints(rt):
            add_endpoint(api, rt, ep)
        add_get_route(
            api,
            rt,
            "/api/v1/tickets/{number:int}/watchers",
            "tickets:read",
            v1.watchers_by_path,
            "The agents watching a ticket",
        )
        # resources.md §2-3 (access): bulk create, webhook subscriptions by API
        creates = {ep.action: ep for ep in legacy}
        add_endpoint(api, rt, bulk.endpoint(creates["create_ticket"].handle))
        for ep in webhooks.endpoints(rt):
            add_endpoint(api, rt, ep)
        add_get_route(
            api,
            rt,
            webhooks.PATH,
            ADMIN,
            webhooks.list_route,
            "Webhook subscriptions, from the config and by API (never their keys)",
        )
        add_get_route(
            api,
            rt,
            "/api/v1/tickets",
            "tickets:read",
            v1.list_route(rt),
            "List tickets: filters (status, priority, queue, assignee, requester, contact_id, "
            "tag, created/updated/due bounds, unresponded, breached, has_attachments, "
            "cf.<field>), q (the query language), sort, fields, page/per_page or cursor",
            query=v1.TicketListIn,
        )
        add_get_route(
            api,
            rt,
            "/api/v1/tickets/{number:int}",
            "tickets:read",
            v1.show_by_path(rt),
            "One ticket with all its responses (the ticket object, as POST tickets/show)",
        )
        add_get_route(
            api,
            rt,
            "/api/v1/tickets/{number:int}/history",
            "tickets:read",
            v1.history_by_path,
            "A ticket's history: every change, who made it, through which channel",
        )
        seeds = compat or CompatConfig()  # resources.md §6: the seed adapters
        tihelpdesk.mount(api, rt, seeds.tihelpdesk)
        tiketti.mount(api, rt, seeds.tiketti)
        teamswork.mount(api, rt, seeds.teamswork)
        happyfox.mount(api, rt, seeds.happyfox)
        reports.add_get_routes(api, rt)  # resources.md §9
    return api
