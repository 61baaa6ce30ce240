"""An API ticket gets the notices a mail ticket gets; the rate limit and its headers."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import Daemon, make_mail
from tests.http.conftest import Api, assert_error, unique


def _notices(api: Api, ticket_id: int) -> list[tuple[str, str, int, str]]:
    """(kind, recipient, automatic, Auto-Submitted value) per outbox row of the ticket."""
    api.composed(ticket_id)
    rows = api.rows(
        "SELECT kind, primary_rcpt, is_automatic, raw FROM outbox WHERE ticket_id = ?", ticket_id
    )
    found = []
    for kind, rcpt, automatic, raw in rows:
        auto = [line for line in bytes(raw).split(b"\r\n") if line.startswith(b"Auto-Submitted:")]
        found.append((kind, rcpt, automatic, auto[0].decode() if auto else ""))
    return sorted(found)


def test_api_ticket_gets_the_same_notices_as_a_mail_ticket(api: Api, admin: str) -> None:
    """Compare outbox rows (kind, recipient, automatic, state) of one ticket made by mail and one by API."""
    api.daemon.send(
        make_mail(sender="Mo <mail-made@customer.test>", subject="By mail", body="Help\n"),
        mail_from="mail-made@customer.test",
    )
    api.daemon.wait_idle()
    (mail_ticket,) = api.rows(
        "SELECT id FROM tickets WHERE originator_email = 'mail-made@customer.test'"
    )[0]
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "api-made@customer.test",
            "data": {"subject": "By API", "content": "Help"},
        },
        token=admin,
        key=unique(),
    )
    api_ticket = resp.json()["data"]["ticket_id"]
    by_mail = [(k, r.replace("mail-made", "X"), a, s) for k, r, a, s in _notices(api, mail_ticket)]
    by_api = [(k, r.replace("api-made", "X"), a, s) for k, r, a, s in _notices(api, api_ticket)]
    assert (
        by_mail
        == by_api
        == [
            ("acknowledgement", "X@customer.test", 1, "Auto-Submitted: auto-replied"),
            ("new_ticket", "alice@helpdesk.test", 1, "Auto-Submitted: auto-generated"),
        ]
    )
    raw = api.rows(
        "SELECT raw FROM outbox WHERE ticket_id = ? AND kind = 'acknowledgement'", api_ticket
    )[0][0]
    assert b"Auto-Submitted: auto-replied" in raw and b"By API" in raw


def test_rate_limit_headers_and_429(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path, extra_config="[api]\nrate_limit_requests = 5\nrate_limit_window_s = 60\n"
    )
    daemon.start()
    try:
        api = Api(daemon)
        token, other = api.token("tickets:read"), api.token("tickets:read")
        seen = []
        for _ in range(5):
            resp = api.post("/api/v1/tickets/query", {}, token=token)
            assert resp.status_code == 200
            assert resp.headers["x-ratelimit-limit"] == "5"
            assert int(resp.headers["x-ratelimit-reset"]) > time.time()
            seen.append(int(resp.headers["x-ratelimit-remaining"]))
        assert seen == [4, 3, 2, 1, 0]
        limited = api.post("/api/v1/tickets/query", {}, token=token)
        assert_error(limited, 429, "rate_limited")
        assert (
            1 <= int(limited.headers["retry-after"]) <= 61
            and limited.headers["x-ratelimit-remaining"] == "0"
        )
        assert api.post("/api/v1/tickets/query", {}, token=other).status_code == 200  # per token
        assert "x-ratelimit-limit" in api.post("/api/nope", {}).headers  # every response
        for _ in range(5):
            assert api.post("/api/idempotency_key", {}).status_code == 200
        assert_error(api.post("/api/idempotency_key", {}), 429, "rate_limited")  # per client IP
    finally:
        daemon.stop()
