"""Tokens, abilities, the order of checks and the error envelope on every kind of failure."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.http.conftest import Api, assert_error, unique

# endpoint -> (a valid body, abilities that satisfy it)
ENDPOINTS: dict[str, tuple[dict, set[str]]] = {
    "/api/create_ticket": (
        {"originator_email_address": "p@customer.test", "data": {"subject": "s", "content": "c"}},
        {"create-ticket", "tickets:write"},
    ),
    "/api/tickets/create": (
        {"originator_email_address": "p@customer.test", "subject": "s", "content": "c"},
        {"create-ticket", "tickets:write"},
    ),
    "/api/ticket_respond": (
        {"ticket_number": 100001, "from_email": "p@customer.test", "content": "c"},
        {"ticket-respond", "tickets:write"},
    ),
    "/api/tickets/100001/respond": (
        {"from_email": "p@customer.test", "content": "c"},
        {"ticket-respond", "tickets:write"},
    ),
    "/api/send_email": (
        {"to_address": "p@customer.test", "subject": "s", "content": "c"},
        {"send-email"},
    ),
    "/api/render_template": (
        {"template_identifier": "acknowledgement", "data": {"ticket_tag": "[#1]"}},
        {"send-email"},
    ),
    "/api/tickiti_api_index": ({}, {"ticket-index", "tickets:read", "tickets:write"}),
    "/api/v1/tickets": (
        {"originator_email_address": "p@customer.test", "data": {"subject": "s", "content": "c"}},
        {"tickets:write"},
    ),
    "/api/v1/tickets/respond": (
        {"ticket_number": 100001, "from_email": "p@customer.test", "content": "c"},
        {"tickets:write"},
    ),
    "/api/v1/tickets/query": ({}, {"tickets:read", "tickets:write"}),
    "/api/v1/tickets/show": ({"ticket_number": 100001}, {"tickets:read", "tickets:write"}),
    "/api/v1/tickets/responses": ({"ticket_number": 100001}, {"tickets:read", "tickets:write"}),
    "/api/v1/tickets/responses/query": ({}, {"tickets:read", "tickets:write"}),
    "/api/v1/tickets/attachment": (
        {"ticket_number": 100001, "response_attachment_id": 999999},
        {"tickets:read", "tickets:write"},
    ),
    "/api/v1/tickets/intervention/submit": (
        {"ticket_number": 100001, "from_email": "alice@helpdesk.test", "data": {}},
        {"tickets:write"},
    ),
    "/api/v1/tickets/100001/time_entries": ({"minutes": 5}, {"tickets:write"}),
    # housekeeping (resources.md §2): 100001 exists and is not trashed
    "/api/v1/tickets/100001/merge": ({"into": 100001}, {"tickets:write"}),
    "/api/v1/tickets/100001/restore": ({}, {"tickets:write"}),
    "/api/v1/tickets/100001/forward": ({"to": ["vendor@partner.test"]}, {"tickets:write"}),
    "/api/v1/tickets/100001/watchers": ({"email": "alice@helpdesk.test"}, {"tickets:write"}),
    # access (resources.md §2-3): bulk create; webhook subscriptions (an unusable URL: 422, so
    # this module's daemon gets no subscription that would keep its HTTP outbox busy)
    "/api/v1/tickets/bulk": (
        {
            "tickets": [
                {
                    "originator_email_address": "p@customer.test",
                    "data": {"subject": "s", "content": "c"},
                }
            ]
        },
        {"tickets:write"},
    ),
    "/api/v1/webhooks": ({"url": "ftp://127.0.0.1/hook"}, {"admin"}),
    "/api/v1/contacts": ({"email": "auth-table@customer.test"}, {"contacts:write"}),
}
# what a token that has the ability gets where the body cannot succeed (it got past the ability)
ALLOWED_STATUS = {
    "/api/v1/tickets/attachment": 404,
    "/api/v1/tickets/intervention/submit": 422,
    "/api/v1/tickets/100001/merge": 409,  # into itself: past the ability check
    "/api/v1/tickets/100001/restore": 409,  # not in the trash: past the ability check
    "/api/v1/webhooks": 422,
}
UNAUTHENTICATED = {"/api/idempotency_key"}
RELEVANT = [
    "create-ticket",
    "ticket-respond",
    "send-email",
    "ticket-index",
    "tickets:read",
    "tickets:write",
    "admin",
    "contacts:read",
    "contacts:write",
]


@pytest.fixture(scope="module")
def tokens(api: Api) -> dict[str, str]:
    """One token per single relevant ability, plus one with only an unrelated ability."""
    found = {ability: api.token(ability) for ability in RELEVANT}
    found["mail:read"] = api.token("mail:read")
    return found


def test_every_endpoint_every_missing_ability_is_403(api: Api, tokens: dict[str, str]) -> None:
    """Each endpoint answers 403 for every token whose ability does not satisfy it, and 200 for each that does."""
    api.post(
        "/api/create_ticket",
        ENDPOINTS["/api/create_ticket"][0],
        token=tokens["create-ticket"],
        key=unique(),
    )
    for path, (body, satisfying) in ENDPOINTS.items():
        for ability, token in tokens.items():
            resp = api.post(path, body, token=token, key=unique())
            if ability in satisfying:
                assert resp.status_code == ALLOWED_STATUS.get(path, 200), (path, ability, resp.text)
            else:
                err = assert_error(resp, 403, "forbidden")
                assert "ability" in err["message"], err


def test_the_table_covers_every_api_route(api: Api) -> None:
    """A new endpoint cannot miss the ability test: every POST route of /openapi.json is listed."""
    spec = httpx.get(api.base + "/openapi.json").json()
    routes = {
        p.replace("{number}", "100001")
        for p, ops in spec["paths"].items()
        if p.startswith("/api/") and "post" in ops
    }
    assert routes == set(ENDPOINTS) | UNAUTHENTICATED


def test_unauthenticated_variants(api: Api, admin: str) -> None:
    number, secret = admin.split("|", 1)
    for headers in (
        {},
        {"Authorization": f"Basic {admin}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {number}|wrong"},
        {"Authorization": f"Bearer 99999|{secret}"},
        {"Authorization": f"Bearer {secret}"},
        {"Authorization": f"Bearer \u00b2|{secret}".encode()},
        {"Authorization": f"Bearer {'9' * 40}|{secret}"},
    ):
        resp = httpx.post(
            api.base + "/api/create_ticket",
            json={},
            headers={**headers, "Idempotency-Key": unique()},
        )
        assert_error(resp, 401, "unauthenticated")


def test_every_endpoint_bad_or_revoked_token_is_401(api: Api) -> None:
    revoked = api.token("all", name="revoked-for-every-endpoint")
    api.daemon.cli("token", "revoke", "revoked-for-every-endpoint")
    number, _secret = revoked.split("|", 1)
    for path, (body, _abilities) in ENDPOINTS.items():
        for token in (revoked, f"{number}|not-the-secret", "garbage"):
            assert_error(api.post(path, body, token=token, key=unique()), 401, "unauthenticated")
        assert_error(api.post(path, body, key=unique()), 401, "unauthenticated")


def test_revoked_token_is_401_on_next_request(api: Api) -> None:
    token = api.token("all", name="to-revoke")
    assert api.post("/api/v1/tickets/query", {}, token=token).status_code == 200
    api.daemon.cli("token", "revoke", "to-revoke")
    assert_error(api.post("/api/v1/tickets/query", {}, token=token), 401, "unauthenticated")


def test_order_of_checks(api: Api, tokens: dict[str, str], admin: str) -> None:
    """401 before 403 before 415 before 400 JSON before 400 key before 422."""
    bad = b"{not json"
    assert_error(
        api.post("/api/create_ticket", content=bad, headers={"Content-Type": "text/plain"}),
        401,
        "unauthenticated",
    )
    assert_error(
        api.post(
            "/api/create_ticket",
            content=bad,
            token=tokens["send-email"],
            headers={"Content-Type": "text/plain"},
        ),
        403,
        "forbidden",
    )
    assert_error(
        api.post(
            "/api/create_ticket", content=bad, token=admin, headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    assert_error(api.post("/api/create_ticket", content=bad, token=admin), 400, "invalid_json")
    assert_error(api.post("/api/create_ticket", {}, token=admin), 400, "idempotency_key_required")
    assert_error(
        api.post("/api/create_ticket", {}, token=admin, key=unique()), 422, "validation_failed"
    )


@pytest.mark.parametrize(
    "content", [b"[1, 2]", b'"text"', b"NaN", b'{"a": Infinity}', b"\xff\xfe", b""]
)
def test_invalid_json_bodies(api: Api, admin: str, content: bytes) -> None:
    assert_error(
        api.post("/api/create_ticket", content=content, token=admin, key=unique()),
        400,
        "invalid_json",
    )


def test_envelope_on_404_405_413(api: Api, admin: str) -> None:
    assert_error(httpx.post(api.base + "/api/nope", json={}), 404, "not_found")
    assert_error(httpx.post(api.base + "/nothing/here"), 404, "not_found")
    assert_error(httpx.get(api.base + "/api/create_ticket"), 405, "method_not_allowed")
    big = b'{"x": "' + b"a" * (10 * 1024 * 1024 + 10) + b'"}'
    assert_error(
        api.post("/api/create_ticket", content=big, token=admin, key=unique()),
        413,
        "payload_too_large",
    )


def test_plaintext_tokens_absent_from_database_and_logs(api: Api) -> None:
    created = api.daemon.cli(
        "token",
        "create",
        "--name",
        "cli-made",
        "--ability",
        "create-ticket",
        "--ability",
        "send-email",
    )
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+\|[A-Za-z0-9_-]{20,}", token)
    assert api.post("/api/tickiti_api_index", {}, token=token).status_code == 403
    assert (
        api.post(
            "/api/create_ticket",
            {
                "originator_email_address": "z@customer.test",
                "data": {"subject": "s", "content": "c"},
            },
            token=token,
            key=unique(),
        ).status_code
        == 200
    )
    secret = token.split("|", 1)[1].encode()
    for path in api.daemon.tmp.iterdir():
        if path.is_file():
            assert secret not in path.read_bytes(), path
    listing = api.daemon.cli("token", "list").stdout
    assert (
        "cli-made" in listing
        and "create-ticket send-email" in listing
        and secret.decode() not in listing
    )
    assert "last used 20" in next(
        line for line in listing.splitlines() if line.startswith("cli-made")
    )


def test_token_cli_errors(api: Api) -> None:
    bad = api.daemon.cli("token", "create", "--name", "x", "--ability", "fly", check=False)
    assert (
        bad.returncode != 0
        and "unknown ability fly" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    api.daemon.cli("token", "create", "--name", "dup", "--ability", "all")
    dup = api.daemon.cli("token", "create", "--name", "dup", "--ability", "all", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    missing = api.daemon.cli("token", "revoke", "nobody", check=False)
    assert missing.returncode != 0 and "no token named" in missing.stderr


def test_write_implies_read_but_not_the_reverse(api: Api, tokens: dict[str, str]) -> None:
    assert (
        api.post(
            "/api/v1/tickets/show", {"ticket_number": 100001}, token=tokens["tickets:write"]
        ).status_code
        == 200
    )
    assert_error(
        api.post("/api/v1/tickets", ENDPOINTS["/api/v1/tickets"][0], token=tokens["create-ticket"]),
        403,
        "forbidden",
    )


def test_expired_token_is_401_and_listed_as_expired(api: Api) -> None:
    import time

    created = api.daemon.cli(
        "token",
        "create",
        "--name",
        "short-lived",
        "--ability",
        "tickets:read",
        "--expires-in",
        "3s",
        "--owner",
        "Alice@Helpdesk.test",
    )
    token = created.stdout.strip().splitlines()[-1]
    assert "expires 20" in created.stdout
    started = time.monotonic()
    assert api.post("/api/v1/tickets/query", {}, token=token).status_code == 200
    while time.monotonic() - started < 3.5:
        time.sleep(0.2)
    assert_error(api.post("/api/v1/tickets/query", {}, token=token), 401, "unauthenticated")
    import json

    rows = {r["name"]: r for r in json.loads(api.daemon.cli("token", "list", "--json").stdout)}
    assert (
        rows["short-lived"]["expired"] is True
        and rows["short-lived"]["owner_email"] == "alice@helpdesk.test"
    )
    assert "expired 20" in next(
        line
        for line in api.daemon.cli("token", "list").stdout.splitlines()
        if line.startswith("short-lived")
    )
    for bad in ("soon", "0h", "-5m"):
        result = api.daemon.cli(
            "token",
            "create",
            "--name",
            f"bad-{bad}",
            "--ability",
            "all",
            "--expires-in",
            bad,
            check=False,
        )
        assert (
            result.returncode != 0
            and "--expires-in" in result.stderr
            and "Traceback" not in result.stderr
        )


@pytest.mark.parametrize(
    "content", [b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", b'{"n": 1e400}', b'{"n": -1e999}']
)
def test_hostile_json_is_400_keyed_or_not(api: Api, admin: str, content: bytes) -> None:
    """Nesting past 64 levels and numbers no float holds are refused before anything else."""
    for path in ("/api/create_ticket", "/api/v1/tickets/query"):
        assert_error(
            api.post(path, content=content, token=admin, key=unique()), 400, "invalid_json"
        )


def test_numbers_past_any_ticket_are_refused_not_500(api: Api, admin: str) -> None:
    big = 99_999_999_999
    assert_error(
        api.post("/api/v1/tickets/show", {"ticket_number": big}, token=admin),
        422,
        "validation_failed",
    )
    assert_error(
        api.post(
            f"/api/tickets/{big}/respond",
            {"from_email": "a@customer.test", "content": "c"},
            token=admin,
        ),
        404,
        "ticket_not_found",
    )
    assert_error(
        api.post(
            "/api/v1/tickets/attachment",
            {"ticket_number": 100001, "response_attachment_id": 2**62},
            token=admin,
        ),
        422,
        "validation_failed",
    )
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        err = assert_error(
            api.post(
                "/api/v1/tickets/responses/query",
                {"cursor": {"created_at": moment, "id": 1}},
                token=admin,
            ),
            422,
            "validation_failed",
        )
        assert "cursor.created_at" in err["errors"]
