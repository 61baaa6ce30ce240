"""Keyed requests (api-contract.md §3): fingerprint, claim, replay, conflict, complete.

`KeyedRunner.run` is the lifecycle of §3.3 in ONE transaction: claim the key (the unique index
picks one winner), check the schema, run the handler in a savepoint and mark the key `completed`
with the status and exact body bytes, then commit once (on SQLite that commit is shared with the
other requests of the moment: store/db.py `write`). A schema error or a handler fault rolls
the whole transaction back, so the key can be used again and nothing half done remains; a 4xx the
handler decides undoes only the handler's savepoint and is stored and replayed.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.enums import KeyState
from mailhelpdesk.domain.models import IdempotencyKey, as_utc
from mailhelpdesk.http.errors import ApiError, dumps, from_exception, ok
from mailhelpdesk.store import idempotency as store
from mailhelpdesk.store.db import Database, read_scope, reading, session_scope, undoable

MAX_KEY_CHARS = 255


@dataclass
class Outcome:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, no \\u escapes, integral floats as integers."""
    return json.dumps(
        _canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


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
            raise ApiError(
                400, "idempotency_key_required", "This endpoint requires an Idempotency-Key header."
            )
        return None
    if len(values) > 1:
        raise ApiError(400, "idempotency_key_invalid", "Send exactly one Idempotency-Key header.")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS or any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ApiError(
            400,
            "idempotency_key_invalid",
            "The Idempotency-Key must be 1-255 printable ASCII characters without spaces.",
        )
    return key


class KeyedRunner:
    """Runs keyed requests: the claim, the handler's work and the stored answer share one
    transaction, so a crash or a fault at any point leaves no key behind (nothing stuck, nothing
    half done), and the unique index on (token_id, key) lets exactly one execution commit even
    across daemons. A duplicate that arrives while the first is still running in this process is
    answered 409 `idempotency_key_in_progress` at once; on PostgreSQL a duplicate on another
    daemon waits for the first transaction's outcome (up to CLAIM_WAIT_MS) and then replays it,
    or answers 409 in progress when the first is still running by then."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        ttl_s: int,
        lease_s: int,
        max_minted: int = 10_000,
    ) -> None:
        self.database = database
        self.max_minted = max_minted
        self.engine, self.clock, self.ttl, self.lease = (
            database.engine,
            clock,
            timedelta(seconds=ttl_s),
            timedelta(seconds=lease_s),
        )
        self._running: dict[tuple[int, str], str] = {}  # (token, key) -> fingerprint, while running
        self._running_lock = threading.Lock()

    def run(
        self,
        *,
        token_id: int,
        key: str,
        action: str,
        fp: str,
        validate: Callable[[], Any],
        handle: Callable[[Session, Any], Any],
    ) -> Outcome:
        slot = (token_id, key)
        with self._running_lock:
            running = self._running.get(slot)
            if (
                running is not None
            ):  # another body with this key is a caller bug, said as such at once
                raise _conflict() if running != fp else _in_progress()
            self._running[slot] = fp
        try:
            return self._run_once(
                token_id=token_id, key=key, action=action, fp=fp, validate=validate, handle=handle
            )
        except OperationalError as exc:
            if store.is_claim_wait_exceeded(exc):  # another daemon still runs it (PostgreSQL)
                raise _in_progress() from None
            raise
        finally:
            with self._running_lock:
                self._running.pop(slot, None)

    def _run_once(
        self,
        *,
        token_id: int,
        key: str,
        action: str,
        fp: str,
        validate: Callable[[], Any],
        handle: Callable[[Session, Any], Any],
    ) -> Outcome:
        replay = self._replay(token_id=token_id, key=key, fp=fp)
        if replay is not None:  # a retry of a finished request: no write transaction at all
            return replay
        # the schema is checked before the write lock is taken; its answer is given only if the
        # key turns out to be free (a used key answers replay or conflict first, §2.3)
        try:
            parsed, invalid = validate(), None
        except ApiError as exc:
            parsed, invalid = None, exc

        def job(session: Session) -> Outcome:
            lease = secrets.token_hex(16)
            claimed = self._claim(
                session, token_id=token_id, key=key, action=action, fp=fp, lease=lease
            )
            if isinstance(claimed, Outcome):
                return claimed
            if invalid is not None:  # nothing is stored for a schema error: the key stays usable
                raise _Discard(Outcome(invalid.status, dumps(invalid.body()), invalid.headers))
            status, headers = 200, {}
            try:
                with undoable(session):
                    body = ok(handle(session, parsed))
            except Exception as exc:  # mapped below; a 5xx is re-raised
                error = from_exception(exc)
                if error.status >= 500:  # nothing was done: the claim rolls back with the rest
                    raise
                # a 4xx the handler decided: its work is undone, the answer is stored and replayed
                status, body, headers = error.status, dumps(error.body()), error.headers
            now = self.clock.now()
            if not store.complete(
                session,
                row_id=claimed,
                lease=lease,
                status=status,
                body=body,
                now=now,
                expires_at=now + self.ttl,
            ):
                raise _Discard(Outcome(409, dumps(_in_progress().body()), {"Retry-After": "1"}))
            return Outcome(status, body, headers)

        try:
            return self.database.write(job)
        except _Discard as discarded:
            return discarded.outcome

    def run_unkeyed(
        self,
        *,
        validate: Callable[[], Any],
        handle: Callable[[Session, Any], Any],
        writes: bool = True,
        session: Session | None = None,
    ) -> Outcome:
        """Validate and handle a request without an Idempotency-Key: in a write transaction,
        or (writes=False) in `session` when given, else a read session of its own."""
        try:
            parsed = validate()
            if writes:
                body = self.database.write(lambda session: ok(handle(session, parsed)))
            else:
                with reading(self.engine, session) as reader:
                    body = ok(handle(reader, parsed))
            return Outcome(200, body)
        except BaseException as exc:
            error = from_exception(exc)
            if error.status >= 500:
                raise
            return Outcome(error.status, dumps(error.body()), error.headers)

    # -- the steps -------------------------------------------------------------------------

    def _replay(self, *, token_id: int, key: str, fp: str) -> Outcome | None:
        with read_scope(self.engine) as session:
            row = store.get(session, token_id=token_id, key=key)
            if row is None or row.state != KeyState.completed:
                return None
            if row.fingerprint != fp:
                raise _conflict()
            return _replayed(row)

    def _claim(
        self, session: Session, *, token_id: int, key: str, action: str, fp: str, lease: str
    ) -> int | Outcome:
        """The claimed row's id, or the answer for a key that is taken (replay); raises 409s."""
        now = self.clock.now()
        minted = store.take_minted(session, key=key)
        if minted and minted != action:
            raise ApiError(
                409,
                "idempotency_key_conflict",
                f"This Idempotency-Key was minted for {minted}, not {action}.",
            )
        claimed = store.insert_claim(
            session,
            token_id=token_id,
            key=key,
            action=action,
            fingerprint=fp,
            lease=lease,
            now=now,
            locked_until=now + self.lease,
            expires_at=now + self.ttl,
        )
        if claimed is not None:
            return claimed
        row = store.get(session, token_id=token_id, key=key)
        if row is None or row.id is None:  # purged between insert and read: retry is fine
            raise _in_progress()
        if row.fingerprint != fp:
            raise _conflict()
        if row.state == KeyState.completed:
            return _replayed(row)
        # an in-progress row on disk: a claim committed by an older version that crashed (or by
        # `abandon_claim`); it is taken over once its lease has run out
        locked = as_utc(row.locked_until)
        if locked is not None and locked >= now:
            raise _in_progress()
        if store.take_over(
            session, row_id=row.id, lease=lease, now=now, locked_until=now + self.lease
        ):
            return row.id
        raise _in_progress()

    def abandon_claim(self, *, token_id: int, key: str, action: str, fp: str) -> None:
        """Commit a bare in-progress claim, as a process that died mid-request under the older
        two-transaction scheme would have left it (tests of the lease takeover use this)."""
        with session_scope(self.engine) as session:
            self._claim(
                session, token_id=token_id, key=key, action=action, fp=fp, lease="abandoned"
            )

    def mint(self, session: Session, action: str) -> dict[str, Any]:
        """A fresh UUIDv4 key, stored `minted` and bound to `action` ('' = any)."""
        now = self.clock.now()
        if store.count_minted(session, now=now) >= self.max_minted:
            # the endpoint needs no token: without a bound, anyone could fill the table
            raise ApiError(
                503,
                "unavailable",
                "Too many unused minted keys; retry later or send your own Idempotency-Key.",
                headers={"Retry-After": "60"},
            )
        key = str(uuid.uuid4())
        store.mint(session, key=key, action=action, now=now, expires_at=now + self.ttl)
        return {
            "idempotency_key": key,
            "action": action or None,
            "expires_at": (now + self.ttl).isoformat(timespec="seconds"),
        }

    def purge(self) -> int:
        with session_scope(self.engine) as session:
            return store.purge(session, now=self.clock.now())


class _Discard(Exception):
    """Roll the request's transaction back and answer with `outcome` instead."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _replayed(row: IdempotencyKey) -> Outcome:
    """A finished request's stored answer, byte for byte (api-contract.md §3.5)."""
    return Outcome(row.status or 200, bytes(row.body or b""), {"Idempotent-Replayed": "true"})


def _conflict() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_conflict",
        "This Idempotency-Key was already used with a different request.",
    )


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_progress",
        "A request with this Idempotency-Key is still being processed.",
        headers={"Retry-After": "1"},
    )
