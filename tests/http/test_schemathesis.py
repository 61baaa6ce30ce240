"""Property-based fuzzing of every operation in /openapi.json: never a 5xx, always the envelope.

Schemathesis' pytest plugin does not load under this pytest, so each operation's strategy is
driven by Hypothesis directly.
"""

from __future__ import annotations

import uuid

import schemathesis  # a test dependency (pyproject [test]): missing means a broken install, not a skip
from hypothesis import HealthCheck, given, settings

from tests.http.conftest import Api

EXAMPLES = 40


def _check(case, api: Api, admin: str) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {admin}", "Idempotency-Key": str(uuid.uuid4())}
    resp = case.call(base_url=api.base, headers=headers)
    assert resp.status_code < 500, (case.path, resp.status_code, resp.text)
    if case.path in ("/healthz", "/metrics"):
        return
    body = resp.json()
    assert isinstance(body, dict) and body.get("ok") is (resp.status_code == 200), body
    if resp.status_code != 200:
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    assert "x-ratelimit-limit" in resp.headers


def test_no_5xx_and_envelope_everywhere(api: Api, admin: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json")
    # the seed adapters (/compat/…) answer in their seeds' envelopes: tests/http/compat/
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if not op.path.startswith("/compat/")
    ]
    assert len(operations) >= 19
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case) -> None:  # type: ignore[no-untyped-def]
            _check(case, api, admin)

        run()
