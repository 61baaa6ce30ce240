"""Shared pieces of the hostile-edge tests: a real daemon on SQLite or PostgreSQL, reads of its
store, raw SMTP sockets, and a `/healthz` probe that must answer within a second."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.services import api_tokens
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import Daemon

HIGH_LIMIT = "[api]\nrate_limit_requests = 1000000\n"


class Desk:
    """A running daemon (`serve`) and what a test needs around it: tokens, SQL reads, HTTP."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{daemon.http_port}"
        self.engine = make_engine(daemon.db_url)

    def token(self, *abilities: str, owner_email: str | None = None) -> str:
        with session_scope(self.engine) as session:
            return api_tokens.create_token(
                session,
                name=f"t-{time.time_ns()}",
                abilities=list(abilities),
                clock=SystemClock(),
                owner_email=owner_email,
            )

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        key: str | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if key is not None:
            hdrs["Idempotency-Key"] = key
        data = content if content is not None else json.dumps(body or {}).encode()
        return httpx.post(self.base + path, content=data, headers=hdrs, timeout=60)

    def healthz_within(self, limit_s: float = 1.0) -> float:
        """Seconds `/healthz` took to answer; fails when it did not answer within `limit_s`."""
        started = time.monotonic()
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=limit_s + 1) as resp:
            assert resp.status == 200
            resp.read()
        took = time.monotonic() - started
        assert took < limit_s, f"/healthz took {took:.2f} s"
        return took

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def running_desk(
    tmp: Path,
    *,
    db_url: str = "",
    extra_config: str = HIGH_LIMIT,
    edits: dict[str, str] | None = None,
) -> Iterator[Desk]:
    """`mailhelpdesk serve` on free loopback ports, on SQLite or on the PostgreSQL `db_url`;
    `edits` replace text of the written config (keys into tables it already has)."""
    daemon = Daemon(tmp, extra_config=extra_config)
    for old, new in (edits or {}).items():
        text_ = daemon.config.read_text()
        assert old in text_, old
        daemon.config.write_text(text_.replace(old, new))
    if db_url:
        daemon.config.write_text(
            daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{db_url}"')
        )
        daemon.db_url = db_url
    daemon.start(timeout=120)  # a loaded CI machine takes long to run the migrations
    desk = Desk(daemon)
    try:
        yield desk
    finally:
        desk.close()
        daemon.stop(timeout=120)  # it applies what it kept first: slow on a loaded machine


class RawSMTP:
    """A bare SMTP client socket: send lines exactly as given, read replies as they come."""

    def __init__(self, port: int, *, timeout: float = 30, source: str = "127.0.0.1") -> None:
        # another loopback source address (127.0.0.2) is another SMTP client to the listener
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its text."""
        lines = []
        while True:
            try:
                line = self.file.readline()
            except ConnectionResetError as exc:
                raise ConnectionError("the server reset the connection") from exc
            if not line:
                raise ConnectionError("the server closed the connection")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line: bytes | str) -> tuple[int, str]:
        self.send(line)
        return self.reply()

    def send(self, line: bytes | str) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def wait_for(condition: Any, *, timeout: float = 30, what: str = "condition") -> Any:
    """Poll `condition()` until it is truthy (returned) or the deadline passes (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
