"""schemathesis over the seed adapters' routes (/compat/…): whatever a client sends, never a
5xx, and every answer is JSON in its seed's shape (tiHelpdesk: a `success` flag; Tiketti and
Teamswork: `{"error": {code, message}}` on failure). Each seed gets its own valid credentials,
so the fuzzing reaches past authentication."""

from __future__ import annotations

import uuid

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.http.compat.conftest import PASSWORD, call
from tests.http.conftest import Api

EXAMPLES = 15


def test_no_5xx_on_the_seed_routes(seed_api: Api) -> None:
    login = call(
        seed_api,
        "POST",
        "/compat/tihelpdesk/api/me",
        {"email": "alice@helpdesk.test", "password": PASSWORD},
    )
    token = login.json()["token"]
    jwt = call(
        seed_api,
        "POST",
        "/compat/tiketti/api/v1/auth/login",
        {"email": "alice@helpdesk.test", "password": PASSWORD},
    ).json()["data"]["access_token"]
    key = seed_api.token("tickets:write", name="schemathesis teamswork key")
    schema = schemathesis.openapi.from_url(f"{seed_api.base}/openapi.json")
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.path.startswith("/compat/")
    ]
    assert len(operations) >= 44
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case) -> None:  # type: ignore[no-untyped-def]
            bearer = jwt if case.path.startswith("/compat/tiketti/") else token
            if case.path.startswith("/compat/teamswork/"):
                case.query = {**(case.query or {}), "key": key}
            headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": str(uuid.uuid4())}
            resp = case.call(base_url=seed_api.base, headers=headers)
            assert resp.status_code < 500, (case.path, resp.status_code, resp.text)
            body = resp.json() if resp.status_code != 204 else {}
            if case.path.startswith("/compat/tihelpdesk/"):
                assert body["success"] is (resp.status_code in (200, 201)), body
            elif resp.status_code >= 400:  # Tiketti and Teamswork: {"error": {code, message}}
                assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
            assert "x-ratelimit-limit" in resp.headers

        run()
