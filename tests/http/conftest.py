"""A daemon per test module, tokens minted straight into its store, and an httpx client."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.services import api_tokens
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import Daemon

HIGH_LIMIT = "[api]\nrate_limit_requests = 1000000\n"


class Api:
    """The running daemon over real HTTP, plus direct reads of its database file."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{daemon.http_port}"
        self.db_path = daemon.tmp / "helpdesk.db"
        self._n = 0

    def token(self, *abilities: str, name: str | None = None) -> str:
        self._n += 1
        engine = make_engine(self.daemon.db_url)
        try:
            with session_scope(engine) as session:
                return api_tokens.create_token(
                    session,
                    name=name or f"t{self._n}-{'-'.join(abilities)}",
                    abilities=list(abilities),
                    clock=SystemClock(),
                )
        finally:
            engine.dispose()

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if key is not None:
            hdrs["Idempotency-Key"] = key
        hdrs.update(headers or {})
        if content is None:
            import json

            content = json.dumps({} if body is None else body).encode()
        return httpx.post(self.base + path, content=content, headers=hdrs, timeout=60)

    def composed(self, ticket_id: int | None = None, timeout: float = 20) -> None:
        """Wait until the sender has composed the notices written as specs (of one ticket, or all)."""
        import time

        where = "compose_spec IS NOT NULL AND state = 'queued'" + (
            " AND ticket_id = ?" if ticket_id else ""
        )
        deadline = time.monotonic() + timeout
        while self.rows(
            f"SELECT count(*) FROM outbox WHERE {where}", *([ticket_id] if ticket_id else [])
        )[0][0]:
            assert time.monotonic() < deadline, "notices were not composed in time"
            time.sleep(0.05)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return list(con.execute(sql, args))
        finally:
            con.close()


@contextmanager
def running_api(tmp: Path, extra_config: str = HIGH_LIMIT) -> Iterator[Api]:
    """A daemon serving on free loopback ports for the duration of the block."""
    daemon = Daemon(tmp, extra_config=extra_config)
    daemon.start()
    try:
        yield Api(daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("api")) as served:
        yield served


@pytest.fixture(scope="module")
def admin(api: Api) -> str:
    """A token with every ability."""
    return api.token("all")


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert (
        body["ok"] is False
        and body["error"] == code
        and isinstance(body["message"], str)
        and body["message"]
    )
    return dict(body)


def unique(prefix: str = "k") -> str:
    import uuid

    return f"{prefix}-{uuid.uuid4()}"


def path_of(p: Path) -> str:
    return str(p)
