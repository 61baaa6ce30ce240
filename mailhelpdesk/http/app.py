"""The FastAPI application: health, metrics and (with the API issue) the Tickiti endpoints.

Routes stay thin. They ask the daemon's `Health` object or call services; every answer, errors
included, uses the `{ok, data}` / `{ok: false, error}` envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailhelpdesk import __version__


def create_api(*, health: Callable[[], dict[str, Any]], metrics: Callable[[], bytes]) -> FastAPI:
    api = FastAPI(title="mailhelpdesk", version=__version__, docs_url=None, redoc_url=None)

    @api.get("/healthz")
    def healthz() -> JSONResponse:
        """Liveness and the state an operator alerts on (pending mail, last ingest, mailboxes)."""
        data = health()
        return JSONResponse({"ok": data["status"] == "ok", "data": data}, status_code=200 if data["status"] == "ok" else 503)

    @api.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics(), media_type="text/plain; version=0.0.4")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"ok": False, "error": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"ok": False, "error": "validation_error", "message": "invalid request", "details": exc.errors()},
            status_code=422,
        )

    @api.exception_handler(Exception)
    async def internal(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "internal_error", "message": "internal error"}, status_code=500)

    return api
