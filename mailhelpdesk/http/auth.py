"""Bearer tokens, abilities and the rate limit (api-contract.md §2).

The rate limit is a sliding window kept in memory by each daemon process: several daemons on
one database each allow the configured number of requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.services import api_tokens
from mailhelpdesk.services.api_tokens import AuthenticatedToken
from mailhelpdesk.store.db import reading, session_scope

TOUCH_EVERY_S = 60.0  # last_used_at is written at most once a minute per token


class Authenticator:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine, self.clock = engine, clock
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def authenticate(
        self, authorization: str | None, session: Session | None = None
    ) -> AuthenticatedToken:
        """The token named by an `Authorization: Bearer id|secret` header, or 401; read in
        `session` when given (a GET reads its token and its answer in one transaction)."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(
                401,
                "unauthenticated",
                "A valid bearer token is required (Authorization: Bearer <token>).",
            )
        with reading(self.engine, session) as reader:
            token = api_tokens.verify(reader, presented, now=self.clock.now())
        if token is None:
            raise ApiError(
                401, "unauthenticated", "The bearer token is unknown, revoked or expired."
            )
        self._touch(token.id)
        return token

    def _touch(self, token_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        with session_scope(self.engine) as session:
            api_tokens.touch(session, token_id, clock=self.clock)


def require(token: AuthenticatedToken, ability: str, *, also: tuple[str, ...] = ()) -> None:
    if not token.allows(ability) and not any(token.allows(a) for a in also):
        raise ApiError(403, "forbidden", f"This token lacks the {ability} ability.")


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset: int  # Unix seconds when a slot frees up

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset).encode()),
        ]


class RateLimiter:
    """Sliding window: at most `limit` requests per `window_s` seconds per key."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _state(self, hits: deque[float], now: float) -> RateState:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        reset = hits[0] + self.window_s if hits else now + self.window_s
        return RateState(self.limit, max(self.limit - len(hits), 0), int(reset) + 1)

    def hit(self, key: str) -> tuple[bool, RateState]:
        """Count one request; (allowed, state after it)."""
        now = time.time()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            state = self._state(hits, now)
            if state.remaining <= 0:
                return False, state
            hits.append(now)
            return True, self._state(hits, now)

    def peek(self, key: str) -> RateState:
        now = time.time()
        with self._lock:
            hits = self._hits.get(key)
            return self._state(hits if hits is not None else deque(), now)
