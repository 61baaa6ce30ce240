"""Property-based fuzzing of every HappyFox route (its own /compat/happyfox/openapi.json):
never a 5xx, and every answer is JSON, an error always in HappyFox's `{"error": …}` shape.

As tests/http/test_schemathesis.py does, each operation's strategy is driven by Hypothesis
directly (schemathesis' pytest plugin does not load under this pytest).
"""

from __future__ import annotations

import base64
import uuid

import schemathesis  # a test dependency (pyproject [test])
from hypothesis import HealthCheck, given, settings

from tests.http.compat.test_happyfox import CONFIG, HF
from tests.http.conftest import Api, running_api

EXAMPLES = 20


def _check(case, api: Api, basic: str) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": basic, "Idempotency-Key": str(uuid.uuid4())}
    resp = case.call(base_url=api.base + HF, headers=headers)
    assert resp.status_code < 500, (case.path, resp.status_code, resp.text)
    media = resp.headers["content-type"]
    media = media[0] if isinstance(media, list) else media
    assert media.startswith("application/json"), resp.headers
    body = resp.json()
    if resp.status_code != 200:
        assert isinstance(body, dict) and set(body) == {"error"}, (case.formatted_path, body)
    assert "x-ratelimit-limit" in resp.headers


def test_no_5xx_on_the_happyfox_routes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with running_api(tmp_path, extra_config=CONFIG) as api:
        user, _, secret = api.token("all").partition("|")
        basic = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        schema = schemathesis.openapi.from_url(f"{api.base}{HF}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case) -> None:  # type: ignore[no-untyped-def]
                _check(case, api, basic)

            run()
