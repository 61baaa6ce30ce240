"""How one HappyFox request runs (resources.md §6): HTTP Basic with the API token (user = its
id, password = its secret), then the same steps as a native request (http/endpoint.py): the rate
limit, the ability, the body within the size limit (JSON or multipart/form-data through
http/uploads.py), the optional Idempotency-Key through the same KeyedRunner, the queue
visibility guard, and the handler in the request's transaction.

The runner stores and replays the native `{ok, data}` / `{ok: false, error}` bytes; the answer
is re-shaped into HappyFox's at the edge (`reshape`), so a replay is re-shaped the same way.
Errors take HappyFox's documented shapes: field errors as `{"error": [{"field", "errors"}]}`
(status 400) on creation, `{"error": {field: message}}` on the staff actions, anything else as
`{"error": "<sentence>"}` with its status.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http import endpoint, uploads
from mailhelpdesk.http.auth import require
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.http.errors import JSON_TYPE, ApiError, validation_failed
from mailhelpdesk.http.idempotency import Outcome, fingerprint, parse_key
from mailhelpdesk.services.api_tokens import AuthenticatedToken

PREFIX = "/compat/happyfox"  # where the adapter is mounted (resources.md §6)
REALM = 'Basic realm="mailhelpdesk HappyFox API"'


@dataclass(frozen=True)
class Call:
    """What a handler gets besides the session: the validated body, the query string, the
    ticket number of the path (None on list routes) and the token that asks."""

    body: Any
    query: dict[str, str]
    number: int | None
    token: AuthenticatedToken
    path: dict[str, Any]  # every path parameter, as text
    base_url: str  # where this daemon is reached, for the absolute urls HappyFox answers with


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    ability: str
    handle: Callable[[Session, Call], Any]
    summary: str
    model: type[BaseModel] | None = None  # the JSON body (None: GET, no body)
    query: type[BaseModel] | None = None  # the documented query parameters
    multipart: bool = False
    writes: bool = True
    field_errors: str = "list"  # list: creation's shape | dict: the staff actions' shape
    bulk: bool = False  # the body may also be a JSON array (create multiple tickets)
    # the path names a ticket: guarded by the token's queue visibility (404 outside it)
    ticket: bool = False
    rename: Callable[[str], str] = str  # a native error's field name as HappyFox names it


def basic_token(authorization: str | None) -> str:
    """The `id|secret` token an `Authorization: Basic base64(id:secret)` header carries; 401."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    unauthorized = ApiError(
        401,
        "unauthenticated",
        "Authentication failed: send HTTP Basic credentials, the API token's id as the user "
        "and its secret as the password.",
        headers={"WWW-Authenticate": REALM},
    )
    if scheme.lower() != "basic" or not encoded.strip():
        raise unauthorized
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise unauthorized from None
    user, colon, secret = decoded.partition(":")
    if not colon or not user or not secret or "|" in user:
        raise unauthorized
    return f"{user}|{secret}"


async def _admit(rt: Runtime, request: Request, ability: str) -> AuthenticatedToken:
    presented = basic_token(request.headers.get("authorization"))
    try:
        token = await run_in_threadpool(rt.auth.authenticate, f"Bearer {presented}")
    except ApiError as exc:
        exc.headers.setdefault("WWW-Authenticate", REALM)
        raise
    endpoint.count_request(rt, request, f"token:{token.id}")
    require(token, ability)
    return token


async def _payload(rt: Runtime, route: Route, request: Request) -> Any:
    if route.model is None:
        return None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await endpoint.read_body(request, rt.max_body_bytes)
    if route.multipart and media == "multipart/form-data":
        return await uploads.form_payload(request.headers, raw)
    if media != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the request body as Content-Type: application/json"
            + (" or multipart/form-data." if route.multipart else "."),
        )
    if route.bulk and raw.lstrip().startswith(b"["):
        # the hardened parser takes an object: the array is parsed as the value of one
        return endpoint.parse_json(b'{"tickets":' + raw + b"}")["tickets"]
    return endpoint.parse_json(raw)


def _number(request: Request) -> int | None:
    raw = request.path_params.get("number")
    if raw is None:
        return None
    text = str(raw)
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise ApiError(404, "ticket_not_found", f"Ticket {text[:20]} not found.")
    if not 1 <= int(text) <= MAX_INTEGER:  # no ticket has it (and PostgreSQL's int is 32 bits)
        raise ApiError(404, "ticket_not_found", f"Ticket {text[:20]} not found.")
    return int(text)


async def _run(rt: Runtime, route: Route, request: Request) -> Outcome:
    token = await _admit(rt, request, route.ability)
    payload = await _payload(rt, route, request)
    key = None
    if route.method == "POST":
        key = parse_key(request.headers.getlist("idempotency-key"), required=False)
    number = _number(request)
    query = dict(request.query_params)

    def validate() -> Call:
        body: Any = payload
        try:
            if route.query is not None:
                route.query.model_validate(query)
            if route.model is not None and not (route.bulk and isinstance(payload, list)):
                body = route.model.model_validate(payload)
        except ValidationError as exc:
            raise validation_failed(endpoint.pydantic_errors(exc)) from None
        base = f"{request.url.scheme}://{request.url.netloc}{PREFIX}"
        return Call(body, query, number, token, dict(request.path_params), base)

    handle = route.handle
    if number is not None and route.ticket:
        handle = endpoint.guarded(route.handle, token, lambda _call: number)
    if key is not None:
        return await run_in_threadpool(
            rt.runner.run,
            token_id=token.id,
            key=key,
            action="happyfox" + route.path.replace("/", "_")[:40],
            fp=fingerprint(route.method, request.url.path, payload),
            validate=validate,
            handle=handle,
        )
    return await run_in_threadpool(
        rt.runner.run_unkeyed, validate=validate, handle=handle, writes=route.writes
    )


def error_body(status: int, native: dict[str, Any], route: Route | None) -> tuple[int, Any]:
    """HappyFox's shape for a native error body, and its status."""
    errors = native.get("errors")
    if native.get("error") == "validation_failed" and isinstance(errors, dict):
        rename = route.rename if route is not None else str
        if route is not None and route.field_errors == "dict":
            return 400, {"error": {rename(k): "; ".join(v) for k, v in errors.items()}}
        return 400, {"error": [{"field": rename(k), "errors": list(v)} for k, v in errors.items()]}
    return status, {"error": str(native.get("message") or native.get("error") or "error")}


def reshape(outcome: Outcome, route: Route) -> Response:
    native = json.loads(outcome.body)
    status, body = outcome.status, None
    if status == 200 and isinstance(native, dict) and native.get("ok") is True:
        body = native.get("data")
    else:
        status, body = error_body(status, native, route)
    return Response(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        headers=outcome.headers,
        media_type=JSON_TYPE,
    )


def add_route(app: FastAPI, rt: Runtime, route: Route) -> None:
    async def run(request: Request) -> Response:
        try:
            outcome = await _run(rt, route, request)
        except ApiError as exc:
            outcome = Outcome(exc.status, json.dumps(exc.body()).encode(), exc.headers)
        except Exception as exc:  # noqa: BLE001 - HappyFox's error shape, never a traceback
            outcome = endpoint.fault(request, exc)
        return reshape(outcome, route)

    run.__name__ = "happyfox_" + route.path.strip("/").replace("/", "_").replace("{", "").replace(
        "}", ""
    ).replace(":int", "").replace("-", "_").replace(".", "_")
    extra: dict[str, Any] = {}
    parameters = endpoint.path_parameters(route.path) + (
        endpoint.query_parameters(route.query) if route.query is not None else []
    )
    if parameters:
        extra["parameters"] = parameters
    if route.model is not None:
        schema = endpoint.schema_of(route.model)
        if route.bulk:
            schema = {"anyOf": [schema, {"type": "array", "items": schema, "maxItems": 100}]}
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        extra["requestBody"] = {"required": True, "content": content}
    app.add_api_route(
        route.path,
        run,
        methods=[route.method],
        summary=route.summary,
        response_model=None,
        openapi_extra=extra or None,
    )


def add_download(
    app: FastAPI, rt: Runtime, path: str, ability: str, read: Callable[[Session, Call], Any]
) -> None:
    """A GET that answers a file's bytes (the `url` of an attachment in an update's message):
    the same admission and visibility guard; `read` returns the native attachment object
    (base64 content), errors take HappyFox's shape."""

    async def run(request: Request) -> Response:
        route = Route(path, "GET", ability, read, "", writes=False, ticket=True)
        try:
            outcome = await _run(rt, route, request)
        except ApiError as exc:
            outcome = Outcome(exc.status, json.dumps(exc.body()).encode(), exc.headers)
        except Exception as exc:  # noqa: BLE001 - HappyFox's error shape, never a traceback
            outcome = endpoint.fault(request, exc)
        if outcome.status != 200:
            return reshape(outcome, route)
        found = json.loads(outcome.body)["data"]
        name = str(found["name"]).replace('"', "").replace("\r", "").replace("\n", "")
        return Response(
            base64.b64decode(found["content_base64"]),
            media_type=str(found["mime_type"]),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    run.__name__ = "happyfox_download"
    app.add_api_route(
        path,
        run,
        methods=["GET"],
        summary="An attachment's bytes (the url of a message attachment)",
        response_model=None,
        openapi_extra={"parameters": endpoint.path_parameters(path)},
    )
