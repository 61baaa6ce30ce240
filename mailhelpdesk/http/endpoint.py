"""One request through the checks of api-contract.md §2.3, in their order:

route → method (FastAPI) → auth 401 → rate limit 429 → ability 403 → content type 415 →
size 413 → JSON 400 → Idempotency-Key presence/format 400 → claim/replay/conflict 409 →
schema 422 → handler.

An `Endpoint` names its path, ability, key policy, request model, a `check` that turns the
validated model into the handler's arguments (shape rules; raises 422) and the handler, which
calls a service inside the request's transaction. `check` gets the path parameters and, under
TOKEN_PARAM, the request's AuthenticatedToken (for handlers that act as the token's owner).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.events import Channel
from mailhelpdesk.http import uploads
from mailhelpdesk.http.auth import Authenticator, RateLimiter, RateState, require
from mailhelpdesk.http.errors import JSON_TYPE, ApiError, dumps, validation_failed
from mailhelpdesk.http.idempotency import KeyedRunner, Outcome, fingerprint, parse_key
from mailhelpdesk.services import api_tokens, visibility
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store.db import read_scope

log = logging.getLogger(__name__)

RATE_SCOPE_KEY = "mailhelpdesk.rate"
# the request's AuthenticatedToken, handed to `check` in its params (never a path parameter name)
TOKEN_PARAM = "@token"
A = TypeVar("A")


@dataclass
class Runtime:
    """What every endpoint needs, built once by create_api."""

    engine: Engine
    clock: Clock
    settings: ApiSettings
    auth: Authenticator
    limiter: RateLimiter
    runner: KeyedRunner
    max_body_bytes: int

    def change(self, session: Session, token: AuthenticatedToken | None) -> ChangeContext:
        """A request's change context: channel api, acting as the token's owner when that is
        an agent (resources.md §1), else as the token itself."""
        return ChangeContext.of(
            clock=self.clock,
            channel=Channel.api,
            actor=api_tokens.actor_for(session, token),
            notices=self.settings.notify,
        )


@dataclass(frozen=True)
class Acting(Generic[A]):
    """A handler's arguments with the token of the request that asked for them."""

    args: A
    token: AuthenticatedToken | None


def with_token(
    check: Callable[[Any, dict[str, Any]], A],
) -> Callable[[Any, dict[str, Any]], Acting[A]]:
    """A `check` whose handler also needs to know who asks (to record it as the actor)."""

    def checked(model: Any, params: dict[str, Any]) -> Acting[A]:
        return Acting(check(model, params), params.get(TOKEN_PARAM))

    return checked


@dataclass(frozen=True)
class Endpoint:
    path: str
    action: str
    ability: str | None  # None: no authentication at all
    key: str  # required | optional | ignored
    model: type[BaseModel]
    check: Callable[[Any, dict[str, Any]], Any]
    handle: Callable[[Session, Any], Any]
    summary: str = ""
    writes: bool = True  # False: the handler only reads (no write lock, runs beside the writers)
    method: str = "POST"  # or PATCH / DELETE for the native resources (DESIGN.md §6)
    # the request may come without a body (DELETE a ticket, restore): read as {}
    body_optional: bool = False
    # the ticket number a ticket route acts on, from its checked arguments: the route is then
    # guarded by the token's queue visibility (services/visibility.py; 404 outside it)
    ticket_of: Callable[[Any], int] | None = None
    multipart: bool = False  # also accepts multipart/form-data (http/uploads.py)


def guarded(
    handle: Callable[[Session, Any], Any],
    token: AuthenticatedToken | None,
    ticket_of: Callable[[Any], int],
) -> Callable[[Session, Any], Any]:
    """`handle`, run only when the ticket it names is in a queue `token` sees (else 404): the
    one visibility check every ticket route shares (POST, PATCH and GET alike)."""

    def run(session: Session, args: Any) -> Any:
        viewer = visibility.viewer_for(session, token)
        visibility.require_visible(session, viewer, ticket_of(args))
        return handle(session, args)

    return run


async def _answer(request: Request, run: Awaitable[Outcome]) -> Response:
    """The HTTP answer for one request: its outcome, or its error, always in the envelope."""
    try:
        outcome = await run
    except ApiError as exc:
        outcome = Outcome(exc.status, dumps(exc.body()), exc.headers)
    except Exception as exc:  # noqa: BLE001 - the envelope, never a traceback
        outcome = fault(request, exc)
    return Response(
        outcome.body, status_code=outcome.status, headers=outcome.headers, media_type=JSON_TYPE
    )


def add_endpoint(api: FastAPI, rt: Runtime, ep: Endpoint) -> None:
    async def route(request: Request) -> Response:
        return await _answer(request, _run(rt, ep, request))

    route.__name__ = ep.action
    api.add_api_route(
        ep.path,
        route,
        methods=[ep.method],
        summary=ep.summary or ep.action,
        response_model=None,
        openapi_extra={
            "requestBody": {
                "required": not ep.body_optional and ep.method != "DELETE",
                "content": {"application/json": {"schema": schema_of(ep.model)}},
            },
            **({"parameters": path_parameters(ep.path)} if "{" in ep.path else {}),
        },
    )


def fault(request: Request, exc: Exception) -> Outcome:
    """The answer for a request that failed below the API: 503 `unavailable` when the database
    cannot be reached (or is busy past its timeout), else 500 `internal_error`. Either way nothing
    was done: the transaction rolled back, and a retry with the same key executes afresh."""
    if isinstance(exc, OperationalError):
        log.error(
            "api request failed: database unavailable path=%s error=%s",
            request.url.path,
            " ".join(str(exc.orig).split())[:300],
        )
        return Outcome(
            503,
            dumps(
                ApiError(
                    503,
                    "unavailable",
                    "The ticket store is unavailable; retry shortly with the same Idempotency-Key.",
                ).body()
            ),
            {"Retry-After": "5"},
        )
    log.error("api request failed path=%s", request.url.path, exc_info=exc)
    return Outcome(
        500,
        dumps(
            ApiError(
                500,
                "internal_error",
                "An unexpected error occurred; it is safe to retry with the same key.",
            ).body()
        ),
    )


# where a GET route's validated query-string model is handed to its handler, in the params
QUERY_PARAM = "@query"
# the raw query string as (name, value) pairs, repeats kept (?tag=a&tag=b), in the params
QUERY_ITEMS = "@items"


def add_get_route(
    api: FastAPI,
    rt: Runtime,
    path: str,
    ability: str,
    handle: Callable[[Session, dict[str, Any]], Any],
    summary: str,
    query: type[BaseModel] | None = None,
) -> None:
    """A native read (DESIGN.md §6): GET, no body, the same auth, rate limit, ability check and
    envelope as the POST family; `handle` gets the path parameters and a read-only session.
    With a `query` model, the query string is validated by it after admission (422 naming the
    parameter), handed over under QUERY_PARAM, and its fields are the operation's documented
    query parameters."""

    def run(request: Request) -> Outcome:
        # one hop to a thread and one read transaction for the token, the validation and the
        # handler (a GET is a few milliseconds of work: a second hop and a second session
        # were a measurable part of it)
        with read_scope(rt.engine) as session:
            return answer(request, session)

    def answer(request: Request, session: Session) -> Outcome:
        token = admit(rt, request, ability, session)
        params: dict[str, Any] = dict(request.path_params)
        params[TOKEN_PARAM] = token
        params[QUERY_ITEMS] = request.query_params.multi_items()
        number = params.get("number")
        target = handle if not isinstance(number, int) else guarded(handle, token, lambda _: number)

        def validate() -> dict[str, Any]:
            if query is not None:
                try:
                    params[QUERY_PARAM] = query.model_validate(dict(request.query_params))
                except ValidationError as exc:
                    raise validation_failed(pydantic_errors(exc)) from None
            return params

        return rt.runner.run_unkeyed(
            validate=validate, handle=target, writes=False, session=session
        )

    async def route(request: Request) -> Response:
        return await _answer(request, run_in_threadpool(run, request))

    route.__name__ = "get_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    parameters = path_parameters(path) + (query_parameters(query) if query is not None else [])
    api.add_api_route(
        path,
        route,
        methods=["GET"],
        summary=summary,
        response_model=None,
        openapi_extra={"parameters": parameters} if parameters else None,
    )


_PATH_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The OpenAPI `parameters` (in: path) of a route path such as `/contacts/{contact_id:int}`
    (the handler takes the request, so FastAPI does not document them itself)."""
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0} if kind == "int" else {"type": "string"},
        }
        for name, kind in _PATH_PARAM.findall(path)
    ]


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI `parameters` (in: query) of a query-string model, one per field."""
    schema = schema_of(model)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def count_request(rt: Runtime, request: Request, key: str) -> None:
    """Count the request in `key`'s window (`token:<id>`, `ip:<address>`, …) and keep the state
    for the X-RateLimit-* headers; 429 with Retry-After when the window is full. Every route
    family (native, Tickiti, the seed adapters) counts through here, so one limit holds."""
    allowed, rate = rt.limiter.hit(key)
    request.scope[RATE_SCOPE_KEY] = rate
    if not allowed:
        wait = max(1, rate.reset - int(time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests; retry in {wait} s.",
            headers={"Retry-After": str(wait)},
        )


def admit(
    rt: Runtime, request: Request, ability: str | None, session: Session | None = None
) -> AuthenticatedToken | None:
    """The checks before the body (§2.3): the token (401; none for an unauthenticated endpoint,
    which is limited per client IP), the rate limit (429), the ability (403). Reads the token
    row: call it off the event loop (`_admit`), or from a thread as the GET routes do."""
    if ability is None:
        count_request(rt, request, f"ip:{client_ip(request.scope)}")
        return None
    token = rt.auth.authenticate(request.headers.get("authorization"), session)
    count_request(rt, request, f"token:{token.id}")
    require(token, ability)
    return token


async def _admit(rt: Runtime, request: Request, ability: str | None) -> AuthenticatedToken | None:
    """`admit` from the event loop: in a thread when it reads the token row."""
    if ability is None:
        return admit(rt, request, None)
    return await run_in_threadpool(admit, rt, request, ability)


async def _run(rt: Runtime, ep: Endpoint, request: Request) -> Outcome:
    token = await _admit(rt, request, ep.ability)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ep.multipart and media == "multipart/form-data":
        raw = await read_body(request, rt.max_body_bytes)
        payload = storable_payload(await uploads.form_payload(request.headers, raw))
    elif ep.method == "DELETE" and not media and request.headers.get("content-length", "0") == "0":
        payload = {}  # a DELETE names its resource in the path: no body needed
    else:
        # a body-optional route (restore, DELETE) may come without a body or a content type
        body = await read_body(request, rt.max_body_bytes) if ep.body_optional else None
        if media != "application/json" and not (ep.body_optional and not body):
            raise ApiError(
                415,
                "unsupported_media_type",
                "Send the request body as Content-Type: application/json"
                + (" or multipart/form-data." if ep.multipart else "."),
            )
        if body is None:
            body = await read_body(request, rt.max_body_bytes)
        payload = parse_json(body) if body.strip() or not ep.body_optional else {}
    key = None
    if ep.key in ("required", "optional"):
        key = parse_key(request.headers.getlist("idempotency-key"), required=ep.key == "required")
    params = dict(request.path_params)
    if token is not None:
        params[TOKEN_PARAM] = token

    def validate() -> Any:
        nul = nul_errors(payload)
        if nul:
            raise validation_failed(nul)
        try:
            model = ep.model.model_validate(payload)
        except ValidationError as exc:
            raise validation_failed(pydantic_errors(exc)) from None
        return ep.check(model, params)

    handle = ep.handle if ep.ticket_of is None else guarded(ep.handle, token, ep.ticket_of)

    if key is not None and token is not None:
        fp = fingerprint(ep.method, request.url.path, payload)
        return await run_in_threadpool(
            rt.runner.run,
            token_id=token.id,
            key=key,
            action=ep.action,
            fp=fp,
            validate=validate,
            handle=handle,
        )
    return await run_in_threadpool(
        rt.runner.run_unkeyed, validate=validate, handle=handle, writes=ep.writes
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = ApiError(
        413, "payload_too_large", f"The request body is larger than {limit} bytes."
    )
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


MAX_JSON_DEPTH = 64  # deeper bodies are refused: nothing we accept nests beyond a few levels


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON has no infinity, and we would store and echo one
        raise ValueError(f"{text[:20]} does not fit a number")
    return value


def _depth(value: Any) -> int:
    """How deeply `value` nests (iteratively: a hostile body must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend(
                    (child, level + 1)
                    for child in (node.values() if isinstance(node, dict) else node)
                )
    return deepest


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid UTF-8 JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    if _depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(
            400, "invalid_json", f"The request body nests deeper than {MAX_JSON_DEPTH} levels."
        )
    return storable_payload(payload)


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _strings(payload: Any) -> Iterator[tuple[str, str]]:
    """Every string of a parsed body (keys too) with its dotted path, iteratively (the depth is
    bounded before this runs, but the width is not)."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            yield path or "request", node
        elif isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                yield child, str(key)
                stack.append((child, value))
        elif isinstance(node, list):
            stack.extend((f"{path}.{index}", value) for index, value in enumerate(node))


def storable_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """400 when any string of the body holds a lone UTF-16 surrogate (`"\\ud800"`): legal JSON
    text, but no character, and UTF-8 cannot encode it, so it reached the database driver as a
    500 on every write endpoint."""
    if any(_lone_surrogate(text) for _path, text in _strings(payload)):
        raise ApiError(
            400,
            "invalid_json",
            "The request body holds a lone UTF-16 surrogate (such as \\ud800), "
            "which is not a character.",
        )
    return payload


def nul_errors(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The fields whose string holds a NUL (`"\\u0000"`), for a 422 naming them: PostgreSQL
    text cannot store NUL (it was a 500), and no field we accept means anything by it."""
    errors: dict[str, list[str]] = {}
    for path, text in _strings(payload):
        if "\x00" in text:
            errors.setdefault(path, []).append("must not contain NUL (\\u0000)")
    return errors


def pydantic_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"]) or "request"
        message = "is required" if err["type"] == "missing" else str(err["msg"])
        errors.setdefault(path, []).append(message)
    return errors


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateHeaders:
    """ASGI middleware: X-RateLimit-* on every response (the token's window when the endpoint
    counted one, else the caller's IP window, not counted)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                rate: RateState | None = scope.get(RATE_SCOPE_KEY)
                if rate is None:
                    rate = self.limiter.peek(f"ip:{client_ip(scope)}")
                message["headers"] = [*message.get("headers", []), *rate.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined (OpenAPI resolves refs from the root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return dict(inline(schema))
