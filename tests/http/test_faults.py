"""A fault below the API is an answer in the envelope, never a traceback, and undoes everything.

The daemon has no endpoint that fails on purpose, so this app is the daemon's own `create_api`
with one extra route whose work raises, served by uvicorn on a loopback port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel
from sqlmodel import Session, select

from mailhelpdesk.app import App, build_app
from mailhelpdesk.config import config_from_dict
from mailhelpdesk.domain.models import IdempotencyKey, Setting
from mailhelpdesk.http.app import create_api
from mailhelpdesk.http.endpoint import Endpoint, add_endpoint
from mailhelpdesk.services import api_tokens
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.store.db import read_scope, session_scope
from tests.helpers import free_port


class _Any(BaseModel):
    pass


def _boom(session: Session, _args: Any) -> dict[str, Any]:
    session.add(Setting(key="half-done", value="1"))
    session.flush()
    raise RuntimeError("disk on fire")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, App]]:
    config = config_from_dict(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'f.db'}"},
            "helpdesk": {"address": "support@helpdesk.test", "secret": "s"},
        }
    )
    app = build_app(config)
    api = create_api(
        health=lambda: {"status": "ok"},
        metrics=lambda: b"",
        database=app.database,
        clock=app.clock,
        settings=ApiSettings.from_config(config, app.settings.notify),
        api_config=config.api,
    )
    add_endpoint(
        api,
        api.state.runtime,
        Endpoint("/api/boom", "boom", "tickets:write", "optional", _Any, lambda m, p: None, _boom),
    )
    with session_scope(app.engine) as session:
        token = api_tokens.create_token(session, name="f", abilities=["all"], clock=app.clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", token, app
    finally:
        server.should_exit = True
        thread.join(10)
        app.close()


def test_a_fault_is_500_in_the_envelope_and_leaves_nothing(served: tuple[str, str, App]) -> None:
    base, token, app = served
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": "k-1",
    }
    for _ in range(2):  # the key was not consumed: the retry runs the work again (and fails again)
        resp = httpx.post(base + "/api/boom", content=b"{}", headers=headers)
        assert resp.status_code == 500 and resp.headers["content-type"].startswith(
            "application/json"
        )
        body = resp.json()
        assert (
            body["ok"] is False and body["error"] == "internal_error" and "retry" in body["message"]
        )
        assert "disk on fire" not in resp.text and "Traceback" not in resp.text
        assert "idempotent-replayed" not in resp.headers and "x-ratelimit-limit" in resp.headers
    with read_scope(app.engine) as session:
        assert session.exec(select(Setting).where(Setting.key == "half-done")).first() is None
        assert (
            session.exec(select(IdempotencyKey).where(IdempotencyKey.key == "k-1")).first() is None
        )
