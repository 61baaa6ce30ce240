"""What every seed adapter route shares with the native endpoints (http/endpoint.py): the rate
limit and its headers, the body limits, the Idempotency-Key lifecycle (KeyedRunner) and the
mapping of service errors to statuses. The adapter decides only the wire shapes: it turns an
`Answer` (the native outcome, decoded) into its seed's envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from mailhelpdesk.http.endpoint import (
    Runtime,
    client_ip,
    count_request,
    fault,
    parse_json,
    pydantic_errors,
    read_body,
    schema_of,
)
from mailhelpdesk.http.errors import ApiError, from_exception
from mailhelpdesk.http.idempotency import Outcome, fingerprint, parse_key
from mailhelpdesk.services import visibility
from mailhelpdesk.services.api_tokens import AuthenticatedToken

Handler = Callable[[Session, Any], Any]


@dataclass(frozen=True)
class Answer:
    """A request's outcome: `data` when it succeeded, else `error` (status, code, message,
    field errors) as the native API would have answered it."""

    status: int
    data: Any = None
    error: ApiError | None = None
    headers: dict[str, str] = field(default_factory=dict)


def limit(rt: Runtime, request: Request, who: str) -> None:
    """Count the request against `who`'s window (a token, or the caller's address); 429."""
    count_request(rt, request, who)


def limit_by_ip(rt: Runtime, request: Request) -> None:
    limit(rt, request, f"ip:{client_ip(request.scope)}")


async def admit(
    rt: Runtime, request: Request, authorization: str | None, ability: str, refusal: ApiError
) -> AuthenticatedToken:
    """The seeds' common admission of a native token: without one, `refusal` (counted against
    the caller's address); with one, its rate window, then its ability."""
    token = await bearer(rt, authorization)
    if token is None:
        limit_by_ip(rt, request)
        raise refusal
    limit(rt, request, f"token:{token.id}")
    require_ability(token, ability)
    return token


async def bearer(rt: Runtime, presented: str | None) -> AuthenticatedToken | None:
    """The native token a header value names (`Bearer id|secret`), or None."""
    try:
        return await run_in_threadpool(rt.auth.authenticate, presented)
    except ApiError:
        return None


def require_ability(token: AuthenticatedToken, ability: str) -> None:
    if not token.allows(ability):
        raise ApiError(403, "forbidden", f"This token lacks the {ability} ability.")


async def json_body(rt: Runtime, request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (415, 413, 400 as the native API); {} for an empty optional
    body (a GET whose parameters may come in a body, as tiHelpdesk's do)."""
    raw = await read_body(request, rt.max_body_bytes)
    if optional and not raw.strip():
        return {}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (optional and not media):
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
    return parse_json(raw)


def validate(model: type[BaseModel], payload: dict[str, Any]) -> Any:
    """The payload as `model`; 422 naming the fields."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = pydantic_errors(exc)
        first = next(iter(errors.items()))
        raise ApiError(
            422, "validation_failed", f"The {first[0]} field {first[1][0]}.", errors=errors
        ) from None


def visible(
    token: AuthenticatedToken | None, number: Callable[[Any], int]
) -> Callable[[Handler], Handler]:
    """Run the handler only when the ticket it names is in a queue the token sees (else 404),
    as every native ticket route does (http/endpoint.py `guarded`)."""

    def wrap(handle: Handler) -> Handler:
        def run(session: Session, args: Any) -> Any:
            visibility.require_visible(session, visibility.viewer_for(session, token), number(args))
            return handle(session, args)

        return run

    return wrap


async def call(
    rt: Runtime,
    request: Request,
    token: AuthenticatedToken | None,
    *,
    action: str,
    args: Any,
    handle: Handler,
    writes: bool = True,
    payload: Any = None,
) -> Answer:
    """Run `handle(session, args)` in the request's transaction; a write with an
    Idempotency-Key runs under the native key lifecycle (claim, replay, conflict)."""
    key = None
    if writes:
        key = parse_key(request.headers.getlist("idempotency-key"), required=False)
    try:
        if key is not None and token is not None:
            outcome = await run_in_threadpool(
                rt.runner.run,
                token_id=token.id,
                key=key,
                action=action,
                fp=fingerprint(request.method, request.url.path, payload),
                validate=lambda: args,
                handle=handle,
            )
        else:
            outcome = await run_in_threadpool(
                rt.runner.run_unkeyed, validate=lambda: args, handle=handle, writes=writes
            )
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoded below like any other outcome
        outcome = fault(request, exc)
    return decode(outcome)


def error_of(request: Request, exc: Exception) -> ApiError:
    """The ApiError for anything a route raised: its own, a service error by the native table
    (http/errors.py), else the native 500/503 answer (logged)."""
    error = from_exception(exc)
    if error.status < 500:
        return error
    answer = decode(fault(request, exc))
    assert answer.error is not None
    return answer.error


def decode(outcome: Outcome) -> Answer:
    body = json.loads(outcome.body)
    if body.get("ok"):
        return Answer(outcome.status, data=body.get("data"), headers=outcome.headers)
    return Answer(
        outcome.status,
        error=ApiError(
            outcome.status,
            str(body.get("error")),
            str(body.get("message")),
            errors=body.get("errors"),
            data=body.get("data"),
        ),
        headers=outcome.headers,
    )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


# (path below the prefix, method, handler, body model, query model, summary)
RouteRow = tuple[str, str, Any, type[BaseModel] | None, type[BaseModel] | None, str]


def add_routes(
    api: FastAPI,
    prefix: str,
    rows: list[RouteRow],
    *,
    wrap: Callable[[Any], Callable[[Request], Any]],
    tag: str,
) -> None:
    """Mount a seed's route table: each handler wrapped (its error shape), its path parameters
    read from the `{name}`s of its path."""
    for path, method, handler, body, query, summary in rows:
        add_route(
            api,
            prefix + path,
            method,
            wrap(handler),
            summary=summary,
            tag=tag,
            body=body,
            query=query,
            path_params=tuple(re.findall(r"\{(\w+)\}", path)),
        )


def add_route(
    api: FastAPI,
    path: str,
    method: str,
    route: Callable[[Request], Any],
    *,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    path_params: tuple[str, ...] = (),
    security: str = "",
) -> None:
    """Mount `route` and document its body, query and path parameters in the OpenAPI schema
    (the route reads the request itself, so FastAPI would not)."""
    extra: dict[str, Any] = {}
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_params
    ]
    if query is not None:
        schema = schema_of(query)
        required = set(schema.get("required", ()))
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()
        ]
    if parameters:
        extra["parameters"] = parameters
    if body is not None:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of(body)}},
        }
    if security:
        extra["description"] = security
    api.add_api_route(
        path,
        route,
        methods=[method],
        summary=summary,
        tags=[tag],
        response_model=None,
        openapi_extra=extra or None,
    )
