"""One daemon for the seed adapters' tests: two agents with passwords, the custom fields the
seeds' `product` and `type` map to, a high rate limit, and helpers for raw HTTP calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.services import agent_passwords
from mailhelpdesk.store.db import make_engine, session_scope
from tests.http.conftest import HIGH_LIMIT, Api, running_api

PASSWORD = "correct horse battery"
SEED_CONFIG = (
    HIGH_LIMIT
    + """
[[agents]]
email = "bob@helpdesk.test"
name = "Bob Builder"

[[custom_fields]]
name = "product"
label = "Product"

[[custom_fields]]
name = "type"
label = "Type"
"""
)


def set_password(api: Api, email: str, password: str = PASSWORD) -> None:
    engine = make_engine(api.daemon.db_url)
    try:
        with session_scope(engine) as session:
            agent_passwords.set_password(session, email, password, clock=SystemClock())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def seed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("seed"), SEED_CONFIG) as served:
        set_password(served, "alice@helpdesk.test")
        set_password(served, "bob@helpdesk.test")
        yield served


def call(
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    return httpx.request(
        method,
        api.base + path,
        json=body,
        headers=headers or {},
        params=params,
        timeout=60,
    )
