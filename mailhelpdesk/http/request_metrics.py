"""Latency of every HTTP request by route template, method and status, for /metrics.

The route is the template FastAPI matched (`/api/v1/tickets/{number}`), never the raw path: a
label per ticket number or status page id would grow the metrics without bound and put secure
ids into a monitoring system. A request that matched no route is counted as `unmatched`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Observe = Callable[[str, str, int, float], None]  # (route, method, status, seconds)


class RequestTimer:
    def __init__(self, app: ASGIApp, observe: Observe) -> None:
        self.app, self.observe = app, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a 500 to the client

        async def keep_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, keep_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.observe(
                str(route), str(scope.get("method", "")), status, time.perf_counter() - started
            )
