"""Keyed requests (api-contract.md §3): fingerprint, claim, replay, conflict, complete.

`run_keyed` is the whole lifecycle of §3.3: a short transaction claims the key (the unique index
picks one winner); the schema check runs; then the handler's work and the `completed` mark (status
plus the exact body bytes) commit in one transaction. A schema error or a handler fault deletes
the claim, so the key can be used again; a 4xx the handler decides is stored and replayed.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import as_utc
from mailhelpdesk.http.errors import ApiError, dumps, from_exception, ok
from mailhelpdesk.store import idempotency as store
from mailhelpdesk.store.db import session_scope

MAX_KEY_CHARS = 255


@dataclass
class Outcome:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, no \\u escapes, integral floats as integers."""
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _canon(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def fingerprint(method: str, path: str, body: Any) -> str:
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical_json(body)}".encode()).hexdigest()


def parse_key(values: list[str], *, required: bool) -> str | None:
    """The Idempotency-Key header value, or None when absent and optional; 400 otherwise."""
    if not values:
        if required:
            raise ApiError(400, "idempotency_key_required", "This endpoint requires an Idempotency-Key header.")
        return None
    if len(values) > 1:
        raise ApiError(400, "idempotency_key_invalid", "Send exactly one Idempotency-Key header.")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS or any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ApiError(400, "idempotency_key_invalid",
                       "The Idempotency-Key must be 1-255 printable ASCII characters without spaces.")
    return key


class KeyedRunner:
    def __init__(self, engine: Engine, clock: Clock, *, ttl_s: int, lease_s: int) -> None:
        self.engine, self.clock, self.ttl, self.lease = engine, clock, timedelta(seconds=ttl_s), timedelta(seconds=lease_s)

    def run(
        self, *, token_id: int, key: str, action: str, fp: str,
        validate: Callable[[], Any], handle: Callable[[Session, Any], Any],
    ) -> Outcome:
        lease = secrets.token_hex(16)
        claimed = self._claim(token_id=token_id, key=key, action=action, fp=fp, lease=lease)
        if isinstance(claimed, Outcome):
            return claimed
        row_id = claimed
        try:
            parsed = validate()
        except ApiError as exc:  # schema error: nothing stored, the key stays usable
            self._release(row_id, lease)
            return Outcome(exc.status, dumps(exc.body()), exc.headers)
        except BaseException:
            self._release(row_id, lease)
            raise
        try:
            with session_scope(self.engine) as session:
                body = ok(handle(session, parsed))
                self._complete(session, row_id, lease, 200, body)
            return Outcome(200, body)
        except _LeaseLost:  # our lease ran out and another request owns the key now
            return Outcome(409, dumps(_in_progress().body()), {"Retry-After": "1"})
        except BaseException as exc:  # noqa: BLE001 - mapped below
            error = from_exception(exc)
            if error.status >= 500:  # nothing was done: forget the claim so a retry re-executes
                self._release(row_id, lease)
                raise
            # a 4xx decided by the handler: its work rolled back; the answer is stored and replayed
            body = dumps(error.body())
            try:
                with session_scope(self.engine) as session:
                    self._complete(session, row_id, lease, error.status, body)
            except _LeaseLost:
                return Outcome(409, dumps(_in_progress().body()), {"Retry-After": "1"})
            return Outcome(error.status, body, error.headers)

    def run_unkeyed(self, *, validate: Callable[[], Any], handle: Callable[[Session, Any], Any]) -> Outcome:
        try:
            parsed = validate()
            with session_scope(self.engine) as session:
                body = ok(handle(session, parsed))
            return Outcome(200, body)
        except BaseException as exc:  # noqa: BLE001
            error = from_exception(exc)
            if error.status >= 500:
                raise
            return Outcome(error.status, dumps(error.body()), error.headers)

    # -- the steps -------------------------------------------------------------------------

    def _claim(self, *, token_id: int, key: str, action: str, fp: str, lease: str) -> int | Outcome:
        now = self.clock.now()
        with session_scope(self.engine) as session:
            minted = store.take_minted(session, key=key)
            if minted is not None and minted.action and minted.action != action:
                raise ApiError(409, "idempotency_key_conflict",
                               f"This Idempotency-Key was minted for {minted.action}, not {action}.")
            if store.insert_claim(
                session, token_id=token_id, key=key, action=action, fingerprint=fp, lease=lease, now=now,
                locked_until=now + self.lease, expires_at=now + self.ttl,
            ):
                row = store.get(session, token_id=token_id, key=key)
                assert row is not None and row.id is not None
                return row.id
            row = store.get(session, token_id=token_id, key=key)
            if row is None or row.id is None:  # purged between insert and read: retry is fine
                raise _in_progress()
            if row.fingerprint != fp:
                raise ApiError(409, "idempotency_key_conflict",
                               "This Idempotency-Key was already used with a different request.")
            if row.state == store.KeyState.completed:
                return Outcome(row.status or 200, bytes(row.body or b""), {"Idempotent-Replayed": "true"})
            locked = as_utc(row.locked_until)
            if locked is not None and locked >= now:
                raise _in_progress()
            if store.take_over(session, row_id=row.id, lease=lease, now=now, locked_until=now + self.lease):
                return row.id
            raise _in_progress()

    def _complete(self, session: Session, row_id: int, lease: str, status: int, body: bytes) -> None:
        now = self.clock.now()
        if not store.complete(session, row_id=row_id, lease=lease, status=status, body=body, now=now,
                              expires_at=now + self.ttl):
            raise _LeaseLost()

    def _release(self, row_id: int, lease: str) -> None:
        with session_scope(self.engine) as session:
            store.release(session, row_id=row_id, lease=lease)

    def mint(self, session: Session, action: str) -> dict[str, Any]:
        """A fresh UUIDv4 key, stored `minted` and bound to `action` ('' = any)."""
        now = self.clock.now()
        key = str(uuid.uuid4())
        store.mint(session, key=key, action=action, now=now, expires_at=now + self.ttl)
        return {"idempotency_key": key, "action": action or None, "expires_at": (now + self.ttl).isoformat(timespec="seconds")}

    def purge(self) -> int:
        with session_scope(self.engine) as session:
            return store.purge(session, now=self.clock.now())


class _LeaseLost(Exception):
    """Our claim expired and another request took it over: this execution must not commit."""


def _in_progress() -> ApiError:
    return ApiError(409, "idempotency_key_in_progress", "A request with this Idempotency-Key is still being processed.",
                    headers={"Retry-After": "1"})
