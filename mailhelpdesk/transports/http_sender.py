"""The HTTP sender: drains due rows of the HTTP outbox (store/http_outbox.py) with POSTs.

One task on the daemon's loop, in the shape both outboxes' senders share (transports/drain.py):
database work runs on the daemon's DB executor thread, the network work on the loop, the POSTs
of one batch side by side. Each row is POSTed with its stored body and headers plus

    Content-Type: application/json
    User-Agent: mailhelpdesk/<version>
    X-Mailhelpdesk-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">   (signed rows)
    Authorization: Bearer <the same key>            (rows with bearer_from_secret: epilogs)

The signature is computed at send time (a receiver may refuse old timestamps) from the key the
composition root's `secrets` resolver gives for the row's `secret_ref`; the key is never stored.

Any 2xx is `delivered`. Anything else (another status, a timeout, a connection error) is retried
after retry_base_s, doubling up to retry_max_s, without jitter so the schedule is predictable,
until the row's max_attempts tries are used up; then it is `failed`. Redirects are not followed
and proxy settings from the environment are not used: a webhook goes exactly where it says.

What a delivery means to the rest of the helpdesk is up to a `DeliveryHandler` per row kind,
called in the transaction that records the outcome (a staff note about a failed epilog commits
with it, or not at all). A handler that raises is logged; the outcome is recorded without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as SASession
from sqlmodel import Session

from mailhelpdesk import __version__
from mailhelpdesk.clock import Clock
from mailhelpdesk.config import HttpDeliveriesConfig
from mailhelpdesk.domain.enums import DeliveryState
from mailhelpdesk.domain.models import HttpDelivery
from mailhelpdesk.store import http_outbox
from mailhelpdesk.transports.drain import OutboxSender

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mailhelpdesk-Signature"
USER_AGENT = f"mailhelpdesk/{__version__}"

SecretResolver = Callable[[str], bytes | None]


class DeliveryHandler(Protocol):
    """What a row's outcome means, for one kind of row. Both run inside the transaction that
    records the outcome; they may write (flush) but never commit."""

    def delivered(self, session: Session, row: HttpDelivery, status: int, body: bytes) -> None: ...

    def failed(self, session: Session, row: HttpDelivery, error: str, *, final: bool) -> None: ...


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The X-Mailhelpdesk-Signature value for `body` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes, body: bytes, header: str, *, now: float | None = None, tolerance_s: float = 300
) -> bool:
    """What a receiver does: the header's v1 matches the body under `secret`, and (when `now` is
    given) its timestamp is within `tolerance_s` of now."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if now is not None and abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class _Attempt:
    row_id: int
    url: str
    body: bytes
    headers: dict[str, str]
    secret_ref: str
    timeout_s: float
    bearer: bool = False


@dataclass(frozen=True)
class _Outcome:
    row_id: int
    ok: bool
    status: int | None = None
    body: bytes | None = None
    error: str = ""
    tried: bool = True  # False: claimed but not tried (stopping); given back without an attempt


class HttpSender(OutboxSender[_Attempt, _Outcome]):
    """Drains the HTTP outbox: `start()` a task on the running loop, `wake()` it (from any
    thread) after a commit that queued rows, `await stop()` to end it."""

    what = "http outbox"
    task_name = "http-sender"

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        *,
        secrets: SecretResolver,
        handlers: Mapping[str, DeliveryHandler] | None = None,
        retry_base_s: float = 60,
        retry_max_s: float = 21600,
        lease_s: float = 300,
        batch_size: int = 20,
        poll_s: float = 1.0,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            engine,
            clock,
            executor,
            retry_base_s=retry_base_s,
            retry_max_s=retry_max_s,
            lease_s=lease_s,
            batch_size=batch_size,
            poll_s=poll_s,
            on_result=on_result,
        )
        self.secrets = secrets
        self.handlers: dict[str, DeliveryHandler] = dict(handlers or {})
        self._client: httpx.AsyncClient | None = None
        self._listening = False

    @classmethod
    def from_config(
        cls,
        config: HttpDeliveriesConfig,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        **kw: object,
    ) -> HttpSender:
        return cls(
            engine,
            clock,
            executor,
            retry_base_s=config.retry_base_s,
            retry_max_s=config.retry_max_s,
            **kw,  # type: ignore[arg-type]
        )

    # -- the task ------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run on the current loop; also wake up after every commit on our engine that queued rows."""
        task = super().start()
        event.listen(SASession, "after_commit", self._after_commit)
        self._listening = True
        return task

    async def stop(self, timeout: float = 10) -> None:
        if self._listening:
            event.remove(SASession, "after_commit", self._after_commit)
            self._listening = False
        await super().stop(timeout)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _after_commit(self, session: SASession) -> None:
        # store/http_outbox.enqueue marks the session; only our engine's commits count (and the
        # mark is left alone for another sender in this process whose engine it is)
        if session.bind is self.engine and session.info.pop(http_outbox.ENQUEUED_FLAG, False):
            self.wake()

    # -- one batch -----------------------------------------------------------------------------

    def _claim_in(self, session: Session, *, now: datetime) -> list[_Attempt]:
        rows = http_outbox.claim_due(session, now=now, limit=self.batch_size, lease_s=self.lease_s)
        return [
            _Attempt(
                row.id or 0,
                row.url,
                row.body,
                http_outbox.headers_of(row),
                row.secret_ref,
                # a try must end well inside the lease, or a second sender could take the row
                min(float(row.timeout_s) or 10.0, self.lease_s / 2),
                row.bearer_from_secret,
            )
            for row in rows
        ]

    async def _attempt(self, attempts: list[_Attempt]) -> list[_Outcome]:
        """POST the batch side by side (each row has its own receiver and timeout)."""
        # `_post` turns every failure into an outcome; should one escape anyway, its row is
        # recorded as a failed try like the others, never left claimed and unrecorded
        results = await asyncio.gather(*(self._post(a) for a in attempts), return_exceptions=True)
        return [
            r
            if isinstance(r, _Outcome)
            else _Outcome(a.row_id, ok=False, error=f"{type(r).__name__}: {r}")
            for a, r in zip(attempts, results, strict=True)
        ]

    async def _post(self, attempt: _Attempt) -> _Outcome:
        if self._stopping.is_set():
            return _Outcome(attempt.row_id, ok=False, tried=False)
        headers = {
            **attempt.headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if attempt.secret_ref:
            secret = self.secrets(attempt.secret_ref)
            if not secret:
                # the key is gone from the config: sending unsigned would be wrong; keep trying
                # so the row is delivered once an operator restores it
                return _Outcome(
                    attempt.row_id,
                    ok=False,
                    error=f"no secret configured for {attempt.secret_ref!r}",
                )
            headers[SIGNATURE_HEADER] = signature(
                secret, attempt.body, int(self.clock.now().timestamp())
            )
            if attempt.bearer:
                headers["Authorization"] = f"Bearer {secret.decode()}"
        try:
            status, body = await asyncio.wait_for(
                self._send(attempt, headers), timeout=attempt.timeout_s + 1
            )
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(
                attempt.row_id, ok=False, error=f"timed out after {attempt.timeout_s:g} s"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad URL or header is this row's failed try, nothing more
            return _Outcome(attempt.row_id, ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return _Outcome(attempt.row_id, ok=True, status=status, body=body)
        return _Outcome(attempt.row_id, ok=False, status=status, body=body, error=f"HTTP {status}")

    async def _send(self, attempt: _Attempt, headers: dict[str, str]) -> tuple[int, bytes]:
        client = self._client_for()
        limit = http_outbox.MAX_RESPONSE_BYTES
        async with client.stream(
            "POST",
            attempt.url,
            content=attempt.body,
            headers=headers,
            timeout=httpx.Timeout(attempt.timeout_s),
        ) as response:
            kept = bytearray()
            async for chunk in response.aiter_bytes():
                kept += chunk
                if len(kept) >= limit:
                    break
            return response.status_code, bytes(kept[:limit])

    def _client_for(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    def _record_in(self, session: Session, outcomes: list[_Outcome], *, now: datetime) -> list[str]:
        results: list[str] = []
        for out in outcomes:
            if not out.tried:
                http_outbox.release(session, out.row_id, at=now)
            elif out.ok:
                results.extend(self._record_delivered(session, out, now=now))
            else:
                results.extend(self._record_failed(session, out, now=now))
        return results

    def _record_delivered(self, session: Session, out: _Outcome, *, now: datetime) -> list[str]:
        status, body = out.status or 0, out.body or b""
        row = http_outbox.mark_delivered(session, out.row_id, now=now, status=status, body=body)
        if row is None:  # not queued any more: nothing to record
            return []
        log.info("http delivery delivered id=%s kind=%s status=%s", row.id, row.kind, status)
        self._call(session, row, lambda h, r: h.delivered(session, r, status, body))
        return ["delivered"]

    def _record_failed(self, session: Session, out: _Outcome, *, now: datetime) -> list[str]:
        row = http_outbox.record_failure(
            session,
            out.row_id,
            now=now,
            error=out.error,
            status=out.status,
            body=out.body,
            base_s=self.retry_base_s,
            max_s=self.retry_max_s,
        )
        if row is None:
            return []
        final = row.state == DeliveryState.failed
        log.warning(
            "http delivery %s id=%s kind=%s attempt=%s error=%s",
            "failed" if final else "will retry",
            row.id,
            row.kind,
            row.attempts,
            out.error,
        )
        self._call(session, row, lambda h, r: h.failed(session, r, out.error, final=final))
        return ["failed" if final else "retry"]

    def _call(
        self,
        session: Session,
        row: HttpDelivery,
        call: Callable[[DeliveryHandler, HttpDelivery], None],
    ) -> None:
        """Run the kind's handler in a savepoint: its writes commit with the outcome, or, when it
        raises, are undone while the outcome is still recorded."""
        handler = self.handlers.get(row.kind)
        if handler is None:
            return
        savepoint = session.begin_nested()
        try:
            call(handler, row)
            session.flush()
        except Exception:  # one handler's bug must not block deliveries
            savepoint.rollback()
            log.exception("http delivery handler failed id=%s kind=%s", row.id, row.kind)
        else:
            savepoint.commit()
