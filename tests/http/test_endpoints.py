"""Each endpoint and payload shape over real HTTP: success shapes and documented errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.http.conftest import Api, assert_error, unique


def _create(api: Api, token: str, email: str, **extra: object) -> dict:
    body = {
        "originator_email_address": email,
        "data": {"subject": "Printer", "content": "<p>It is <b>on fire</b></p>"},
    }
    body.update(extra)
    resp = api.post("/api/create_ticket", body, token=token, key=unique())
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def test_create_ticket_shape_a_success_shape(api: Api, admin: str) -> None:
    data = _create(api, admin, "a1@customer.test")
    assert set(data) == {"ticket_number", "ticket_id", "secure_id"}
    assert isinstance(data["ticket_number"], int) and 100001 <= data["ticket_number"] <= 999999
    assert len(data["secure_id"]) == 32 and int(data["secure_id"], 16) >= 0
    shown = api.post(
        "/api/v1/tickets/show", {"ticket_number": data["ticket_number"]}, token=admin
    ).json()["data"]
    assert shown["subject"] == "Printer" and shown["queue"] == "Inbox" and shown["status"] == "open"
    first = shown["responses"][0]
    assert (
        "on fire" in first["plain_text"]
        and "<b>on fire</b>" in first["html"]
        and first["is_internal"] is False
    )


def test_create_ticket_top_level_aliases_and_queue(api: Api, admin: str) -> None:
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "a2@customer.test",
            "subject": "S",
            "content": "c",
            "queue_name": "Billing",
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    number = resp.json()["data"]["ticket_number"]
    assert (
        api.post("/api/v1/tickets/show", {"ticket_number": number}, token=admin).json()["data"][
            "queue"
        ]
        == "Billing"
    )
    conflict = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "a2@customer.test",
            "data": {"subject": "S", "content": "c", "queue_name": "Inbox"},
            "queue_name": "Billing",
        },
        token=admin,
        key=unique(),
    )
    assert assert_error(conflict, 422, "validation_failed")["errors"]["queue_name"]


def test_create_ticket_shape_b_template(api: Api, admin: str) -> None:
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "a3@customer.test",
            "template_identifier": "acknowledgement",
            "data": {
                "ticket_tag": "[#ORDER-1]",
                "ticket_subject": "Order 1",
                "helpdesk_name": "Shop",
            },
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    shown = api.post(
        "/api/v1/tickets/show", {"ticket_number": resp.json()["data"]["ticket_number"]}, token=admin
    ).json()["data"]
    assert shown["subject"] == "[#ORDER-1] Order 1"
    assert "Thank you for contacting Shop" in shown["responses"][0]["plain_text"]


def test_create_ticket_errors(api: Api, admin: str) -> None:
    cases = [
        ({"data": {"subject": "s", "content": "c"}}, "originator_email_address"),
        (
            {
                "originator_email_address": "not-an-address",
                "data": {"subject": "s", "content": "c"},
            },
            "originator_email_address",
        ),
        ({"originator_email_address": "x@customer.test"}, "request"),
        ({"originator_email_address": "x@customer.test", "data": {"subject": "s"}}, "data.content"),
        (
            {
                "originator_email_address": "x@customer.test",
                "data": {"subject": "s\r\nBcc: evil@x.test", "content": "c"},
            },
            "data.subject",
        ),
        (
            {
                "originator_email_address": "x@customer.test",
                "data": {"subject": "s", "content": "c"},
                "template_identifier": "acknowledgement",
            },
            "request",
        ),
        (
            {"originator_email_address": "x@customer.test", "intervention": "discount"},
            "intervention",
        ),
        (
            {
                "originator_email_address": "x@customer.test",
                "is_public": "maybe",
                "data": {"subject": "s", "content": "c"},
            },
            "is_public",
        ),
    ]
    for body, field in cases:
        err = assert_error(
            api.post("/api/create_ticket", body, token=admin, key=unique()),
            422,
            "validation_failed",
        )
        assert field in err["errors"], (body, err)
    unknown_queue = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "x@customer.test",
            "data": {"subject": "s", "content": "c", "queue_name": "Nope"},
        },
        token=admin,
        key=unique(),
    )
    err = assert_error(unknown_queue, 422, "validation_failed")
    assert "data.queue_name" in err["errors"] and "Nope" in err["message"]
    unknown_template = api.post(
        "/api/create_ticket",
        {"originator_email_address": "x@customer.test", "template_identifier": "nope", "data": {}},
        token=admin,
        key=unique(),
    )
    assert (
        "template_identifier" in assert_error(unknown_template, 422, "validation_failed")["errors"]
    )
    shape_c = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "x@customer.test",
            "intervention": "discount",
            "uid": "o-1",
            "data": {"data": {"a": 1}},
        },
        token=admin,
        key=unique(),
    )
    assert "intervention" in assert_error(shape_c, 422, "validation_failed")["errors"]


def test_lenient_booleans_and_staff_only_opening(api: Api, admin: str) -> None:
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "a4@customer.test",
            "is_public": "false",
            "use_passed_originator_as_responder": 1,
            "data": {"subject": "internal", "content": "note"},
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    first = api.post(
        "/api/v1/tickets/show", {"ticket_number": data["ticket_number"]}, token=admin
    ).json()["data"]["responses"][0]
    assert first["is_internal"] is True and first["created_by_email"] == "a4@customer.test"
    kinds = api.rows("SELECT kind, primary_rcpt FROM outbox WHERE ticket_id = ?", data["ticket_id"])
    assert kinds == [
        ("new_ticket", "alice@helpdesk.test")
    ]  # no acknowledgement for a staff-only opening


def test_ticket_respond_reopen_and_status(api: Api, admin: str) -> None:
    number = _create(api, admin, "r1@customer.test")["ticket_number"]
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    hold = api.post(
        "/api/ticket_respond",
        {
            "ticket_number": str(number),
            "from_email": "alice@helpdesk.test",
            "content": "waiting for you",
            "status": "on-hold",
            "on_hold_until": tomorrow,
        },
        token=admin,
        key=unique(),
    )
    assert hold.status_code == 200, hold.text
    assert hold.json()["data"]["reopened"] is False and set(hold.json()["data"]) == {
        "ticket_id",
        "response_id",
        "reopened",
    }
    shown = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=admin).json()["data"]
    assert shown["status"] == "on-hold" and shown["on_hold_until"] == tomorrow
    again = api.post(
        "/api/v1/tickets/respond",
        {"ticket_number": number, "from_email": "r1@customer.test", "content": "here it is"},
        token=admin,
        key=unique(),
    )
    assert again.status_code == 200 and again.json()["data"]["reopened"] is True
    open_again = api.post(
        "/api/ticket_respond",
        {"ticket_number": number, "from_email": "r1@customer.test", "content": "more"},
        token=admin,
        key=unique(),
    )
    assert open_again.json()["data"]["reopened"] is False
    shown = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=admin).json()["data"]
    assert shown["status"] == "open" and shown["on_hold_until"] is None
    agent = next(r for r in shown["responses"] if r["created_by_email"] == "alice@helpdesk.test")
    assert agent["staff_response"] is True and agent["kind"] == "agent"
    sent = {k for (k,) in api.rows("SELECT kind FROM outbox WHERE ticket_id = ?", shown["id"])}
    assert {"acknowledgement", "new_ticket", "agent_response", "customer_reply"} <= sent


def test_ticket_respond_errors(api: Api, admin: str) -> None:
    number = _create(api, admin, "r2@customer.test")["ticket_number"]
    missing = api.post(
        "/api/ticket_respond",
        {"ticket_number": 999998, "from_email": "a@customer.test", "content": "x"},
        token=admin,
        key=unique(),
    )
    assert_error(missing, 404, "ticket_not_found")
    for body, field in [
        ({"from_email": "a@customer.test", "content": "x"}, "ticket_number"),
        ({"ticket_number": number, "content": "x"}, "from_email"),
        ({"ticket_number": number, "from_email": "a@customer.test"}, "content"),
        ({"ticket_number": number, "from_email": "bad", "content": "x"}, "from_email"),
        (
            {"ticket_number": number, "from_email": "a@customer.test", "status": "on-hold"},
            "on_hold_until",
        ),
        (
            {
                "ticket_number": number,
                "from_email": "a@customer.test",
                "status": "on-hold",
                "on_hold_until": "2001-01-01",
            },
            "on_hold_until",
        ),
        (
            {
                "ticket_number": number,
                "from_email": "a@customer.test",
                "content": "x",
                "status": "resolved",  # closed is accepted since the housekeeping work
            },
            "status",
        ),
    ]:
        err = assert_error(
            api.post("/api/ticket_respond", body, token=admin, key=unique()),
            422,
            "validation_failed",
        )
        assert field in err["errors"], (body, err)


def test_internal_note_notifies_nobody(api: Api, admin: str) -> None:
    data = _create(api, admin, "r3@customer.test")
    before = api.rows("SELECT count(*) FROM outbox WHERE ticket_id = ?", data["ticket_id"])[0][0]
    note = api.post(
        "/api/ticket_respond",
        {
            "ticket_number": data["ticket_number"],
            "from_email": "ops@system.test",
            "content": "internal",
            "is_internal": True,
        },
        token=admin,
        key=unique(),
    )
    assert note.status_code == 200
    assert (
        api.rows("SELECT count(*) FROM outbox WHERE ticket_id = ?", data["ticket_id"])[0][0]
        == before
    )


def test_flat_endpoints_without_key_duplicate(api: Api, admin: str) -> None:
    body = {"originator_email_address": "flat@customer.test", "subject": "Flat", "content": "x"}
    first = api.post("/api/tickets/create", body, token=admin)
    second = api.post("/api/tickets/create", body, token=admin)
    assert first.status_code == second.status_code == 200
    assert first.json()["data"]["ticket_number"] != second.json()["data"]["ticket_number"]
    number = first.json()["data"]["ticket_number"]
    reply = {"from_email": "flat@customer.test", "content": "again"}
    r1 = api.post(f"/api/tickets/{number}/respond", reply, token=admin)
    r2 = api.post(f"/api/tickets/{number}/respond", reply, token=admin)
    assert (
        r1.status_code == r2.status_code == 200
        and r1.json()["data"]["response_id"] != r2.json()["data"]["response_id"]
    )
    mismatch = api.post(
        f"/api/tickets/{number}/respond", {**reply, "ticket_number": number + 1}, token=admin
    )
    assert "ticket_number" in assert_error(mismatch, 422, "validation_failed")["errors"]
    assert_error(
        api.post("/api/tickets/999997/respond", reply, token=admin), 404, "ticket_not_found"
    )
    assert_error(
        api.post("/api/tickets/create", {"subject": "x", "content": "y"}, token=admin),
        422,
        "validation_failed",
    )
    keyed = unique()
    k1 = api.post("/api/tickets/create", body, token=admin, key=keyed)
    k2 = api.post("/api/tickets/create", body, token=admin, key=keyed)
    assert k1.content == k2.content and k2.headers["idempotent-replayed"] == "true"


def test_send_email_queues_one_message_and_no_ticket(api: Api, admin: str) -> None:
    tickets = api.rows("SELECT count(*) FROM tickets")[0][0]
    resp = api.post(
        "/api/send_email",
        {
            "to_address": "buyer@shop.test",
            "subject": "Your order",
            "content": "<p>Thanks</p>",
            "mailbox": "Billing",
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (
        data["status"] == "queued"
        and data["mailbox"] == "Billing"
        and data["to_address"] == "buyer@shop.test"
    )
    rows = api.rows(
        "SELECT kind, mail_from, primary_rcpt, ticket_id FROM outbox WHERE message_id = ?",
        data["message_id"],
    )
    assert rows == [("send_email", "billing@helpdesk.test", "buyer@shop.test", None)]
    assert api.rows("SELECT count(*) FROM tickets")[0][0] == tickets
    templated = api.post(
        "/api/send_email",
        {
            "to_address": "buyer@shop.test",
            "template_identifier": "ticket_closed",
            "data": {"ticket_tag": "[#1]"},
        },
        token=admin,
        key=unique(),
    )
    assert templated.status_code == 200, templated.text


def test_send_email_errors(api: Api, admin: str) -> None:
    for body, field in [
        ({"subject": "s", "content": "c"}, "to_address"),
        (
            {"to_address": "a@b.test\r\nBcc: x@evil.test", "subject": "s", "content": "c"},
            "to_address",
        ),
        ({"to_address": "a@b.test", "subject": "s\nBcc: x@evil.test", "content": "c"}, "subject"),
        ({"to_address": "a@b.test", "subject": "s\x00", "content": "c"}, "subject"),
        ({"to_address": "a@b.test"}, "request"),
        (
            {
                "to_address": "a@b.test",
                "subject": "s",
                "content": "c",
                "template_identifier": "x",
                "data": {},
            },
            "request",
        ),
        (
            {
                "to_address": "not an address",
                "validate_address": True,
                "subject": "s",
                "content": "c",
            },
            "to_address",
        ),
        ({"to_address": "a@b.test", "subject": "s", "content": "c", "mailbox": "Nope"}, "mailbox"),
        (
            {"to_address": "a@b.test", "template_identifier": "nope", "data": {}},
            "template_identifier",
        ),
        ({"to_address": "support@helpdesk.test", "subject": "s", "content": "c"}, "to_address"),
        ({"to_address": "Billing+x@helpdesk.test", "subject": "s", "content": "c"}, "to_address"),
        (
            {
                "to_address": "a@b.test",
                "subject": "s",
                "content": "c",
                "attachments": [{"name": "a.pdf", "content_base64": "not base64!"}],
            },
            "attachments.0.content_base64",
        ),
        (
            {
                "to_address": "a@b.test",
                "subject": "s",
                "content": "c",
                "attachments": [
                    {"name": "a.pdf", "content_base64": "", "mime_type": "pdf\r\nX: y"}
                ],
            },
            "attachments.0.mime_type",
        ),
        (
            {
                "to_address": "a@b.test",
                "subject": "s",
                "content": "c",
                "attachments": [
                    {"name": "a.txt", "content_base64": "", "mime_type": "text/plain\n"}
                ],
            },
            "attachments.0.mime_type",
        ),
        (
            {
                "to_address": "a@b.test",
                "subject": "s",
                "content": "c",
                "attachments": [
                    {"name": "a.eml", "content_base64": "", "mime_type": "multipart/mixed"}
                ],
            },
            "attachments.0.mime_type",
        ),
    ]:
        err = assert_error(
            api.post("/api/send_email", body, token=admin, key=unique()), 422, "validation_failed"
        )
        assert field in err["errors"], (body, err)


def test_send_email_with_attachments(api: Api, admin: str) -> None:
    import base64
    import email
    from email.policy import default as default_policy

    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    resp = api.post(
        "/api/send_email",
        {
            "to_address": "buyer@shop.test",
            "subject": "Invoice 42",
            "content": "Your invoice is attached.",
            "attachments": [
                {
                    "name": "invoice 42.pdf",
                    "mime_type": "application/pdf",
                    "content_base64": base64.b64encode(pdf).decode(),
                },
                {"name": "bad\r\nname.txt", "content_base64": base64.b64encode(b"hi").decode()},
            ],
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    (raw,) = api.rows(
        "SELECT raw FROM outbox WHERE message_id = ?", resp.json()["data"]["message_id"]
    )[0]
    message = email.message_from_bytes(raw, policy=default_policy)
    parts = {p.get_filename(): p for p in message.iter_attachments()}  # type: ignore[attr-defined]
    assert parts["invoice 42.pdf"].get_content_type() == "application/pdf"
    assert parts["invoice 42.pdf"].get_content() == pdf
    assert not any("\r" in n or "\n" in n for n in parts)  # the control characters were replaced
    assert message["Auto-Submitted"] == "auto-generated" and message["Subject"] == "Invoice 42"


def test_send_email_to_a_bouncing_address_is_kept_suppressed(api: Api, admin: str) -> None:
    import sqlite3

    con = sqlite3.connect(api.db_path, timeout=30)
    con.execute(
        "INSERT INTO suppressed_addresses (email, reason, until_at) VALUES (?, ?, ?)",
        ("gone@shop.test", "550 no such user", "2099-01-01 00:00:00"),
    )
    con.commit()
    con.close()
    resp = api.post(
        "/api/send_email",
        {"to_address": "gone@shop.test", "subject": "s", "content": "c"},
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "suppressed", resp.text
    assert api.rows(
        "SELECT state FROM outbox WHERE message_id = ?", resp.json()["data"]["message_id"]
    ) == [("suppressed",)]


def test_render_template(api: Api, admin: str) -> None:
    resp = api.post(
        "/api/render_template",
        {
            "template_identifier": "acknowledgement",
            "data": {"ticket_tag": "[#7]", "ticket_subject": "Hello"},
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (
        data["subject"] == "[#7] Hello"
        and "[#7]" in data["text"]
        and "<strong>[#7]</strong>" in data["html"]
    )
    assert "helpdesk_name" in data["missing"] and "ticket_tag" not in data["missing"]
    assert_error(
        api.post(
            "/api/render_template", {"template_identifier": "nope"}, token=admin, key=unique()
        ),
        422,
        "validation_failed",
    )
    assert_error(
        api.post("/api/render_template", {"data": {}}, token=admin, key=unique()),
        422,
        "validation_failed",
    )


def test_mint_idempotency_key(api: Api) -> None:
    resp = api.post("/api/idempotency_key", {"action": "send_email"})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (
        data["action"] == "send_email" and len(data["idempotency_key"]) == 36 and data["expires_at"]
    )
    assert_error(api.post("/api/idempotency_key", {"action": "nope"}), 422, "validation_failed")
    assert api.post("/api/idempotency_key", {}).status_code == 200


def test_show_responses_query_and_index(api: Api, admin: str) -> None:
    email = f"{unique('q')}@customer.test"
    numbers = [_create(api, admin, email)["ticket_number"] for _ in range(3)]
    shown = api.post("/api/v1/tickets/show", {"ticket_number": numbers[0]}, token=admin).json()[
        "data"
    ]
    assert shown["number"] == numbers[0] and isinstance(shown["id"], str) and shown["responses"]
    responses = api.post(
        "/api/v1/tickets/responses", {"ticket_number": numbers[0]}, token=admin
    ).json()["data"]
    assert responses["ticket_number"] == numbers[0] and responses["responses"] == shown["responses"]
    assert_error(
        api.post("/api/v1/tickets/show", {"ticket_number": 999996}, token=admin),
        404,
        "ticket_not_found",
    )
    assert_error(api.post("/api/v1/tickets/show", {}, token=admin), 422, "validation_failed")
    crit = {
        "search_object": {
            "search_perspective": "All",
            "criteria": [{"mode": "raised", "tokens": [email]}],
        },
        "per_page": 2,
    }
    page1 = api.post("/api/v1/tickets/query", crit, token=admin).json()["data"]
    assert page1["meta"] == {"total": 3, "page": 1, "per_page": 2, "perspective": "All"}
    assert [t["number"] for t in page1["tickets"]] == sorted(numbers, reverse=True)[:2]
    page2 = api.post("/api/tickiti_api_index", {**crit, "page": 2}, token=admin).json()["data"]
    assert [t["number"] for t in page2["tickets"]] == [min(numbers)]
    both = {
        "search_object": {
            "criteria": [
                {"mode": "raised", "tokens": [email]},
                {"mode": "ticket_number", "tokens": [numbers[0], str(numbers[1])]},
                {"mode": "status", "tokens": ["open"]},
                {"mode": "queue", "tokens": ["Inbox"]},
            ]
        }
    }
    found = api.post("/api/v1/tickets/query", both, token=admin).json()["data"]["tickets"]
    assert sorted(t["number"] for t in found) == sorted(numbers[:2])
    closed = api.post(
        "/api/v1/tickets/query",
        {
            "perspective_id": 4,
            "search_object": {"criteria": [{"mode": "raised", "tokens": [email]}]},
        },
        token=admin,
    ).json()["data"]
    assert closed["tickets"] == [] and closed["meta"]["perspective"] == "Closed"
    for bad in (
        {"per_page": 101},
        {"perspective_id": 99},
        {"search_object": {"criteria": [{"mode": "zodiac", "tokens": []}]}},
        {"search_object": {"search_perspective": "Nope"}},
    ):
        assert_error(api.post("/api/v1/tickets/query", bad, token=admin), 422, "validation_failed")


def test_get_ticket_by_number_is_the_ticket_object(api: Api, admin: str) -> None:
    import httpx

    number = _create(api, admin, f"{unique('g')}@customer.test")["ticket_number"]
    got = httpx.get(
        f"{api.base}/api/v1/tickets/{number}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert got.status_code == 200 and "x-ratelimit-remaining" in got.headers
    shown = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=admin)
    assert got.json() == shown.json()
    auth = {"Authorization": f"Bearer {admin}"}
    for path, status, code in (
        (999996, 404, "ticket_not_found"),
        (99_999_999_999, 404, "ticket_not_found"),
        ("abc", 404, "not_found"),
        ("show", 405, "method_not_allowed"),
        ("query", 405, "method_not_allowed"),
    ):
        assert_error(httpx.get(f"{api.base}/api/v1/tickets/{path}", headers=auth), status, code)
    assert_error(httpx.get(f"{api.base}/api/v1/tickets/{number}"), 401, "unauthenticated")
    assert_error(
        httpx.get(
            f"{api.base}/api/v1/tickets/{number}",
            headers={"Authorization": f"Bearer {api.token('send-email')}"},
        ),
        403,
        "forbidden",
    )


def test_v1_create_same_body_as_legacy(api: Api, admin: str) -> None:
    resp = api.post(
        "/api/v1/tickets",
        {"originator_email_address": "v1@customer.test", "data": {"subject": "v1", "content": "c"}},
        token=admin,
    )
    assert resp.status_code == 200 and set(resp.json()["data"]) == {
        "ticket_number",
        "ticket_id",
        "secure_id",
    }


def test_v1_create_takes_priority_and_assignee(api: Api, admin: str) -> None:
    """EXT fields at creation (api-contract.md §5.1): through the same service calls as by mail."""
    resp = api.post(
        "/api/v1/tickets",
        {
            "originator_email_address": "prio@customer.test",
            "priority": "Urgent",
            "assigned_to_email": "Alice@helpdesk.test",
            "data": {"subject": "Down", "content": "All of it"},
        },
        token=admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    shown = api.post(
        "/api/v1/tickets/show", {"ticket_number": resp.json()["data"]["ticket_number"]}, token=admin
    )
    ticket = shown.json()["data"]
    assert (ticket["priority"], ticket["assigned_to_email"]) == ("40", "alice@helpdesk.test")
    for extra, field in (
        ({"priority": "Whenever"}, "priority"),
        ({"assigned_to_email": "nobody@helpdesk.test"}, "assigned_to_email"),
    ):
        body = {
            "originator_email_address": "prio@customer.test",
            "data": {"subject": "s", "content": "c"},
            **extra,
        }
        err = assert_error(
            api.post("/api/v1/tickets", body, token=admin, key=unique()), 422, "validation_failed"
        )
        assert field in err["errors"], err
