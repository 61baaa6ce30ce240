"""tiHelpdesk (seed 000) walked top to bottom over real HTTP against a running daemon: the token
exchange, the trigger subscriptions with the Zapier flow (a customer mails in over SMTP and
replies; the hook receives `ticket_new` and `reply_new`, signed, once each), every action with
the document's example fields, the details and billable-time reads, and the auth failures."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from mailhelpdesk.transports.http_sender import SIGNATURE_HEADER, verify_signature
from tests.helpers import make_mail
from tests.http.compat.conftest import PASSWORD, call
from tests.http.conftest import Api
from tests.http_receiver import Receiver

P = "/compat/tihelpdesk"
PERSON = {"first_name", "last_name", "email"}
TICKET_FIELDS = {
    "subject",
    "description",
    "created_by",
    "updated_by",
    "status",
    "created_at",
    "updated_at",
    "type",
    "deleted",
    "ticket_number",
    "assigned_to",
    "due_date",
    "priority",
    "product",
}
STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def login(api: Api, email: str = "alice@helpdesk.test") -> dict[str, str]:
    resp = call(
        api, "POST", P + "/api/me", {"email": email, "password": PASSWORD, "subdomain": "desk"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True and "|" in body["token"]
    return {"Authorization": f"Bearer {body['token']}"}


@pytest.fixture(scope="module")
def auth(seed_api: Api) -> dict[str, str]:
    return login(seed_api)


def test_token_exchange_refuses_wrong_credentials_in_its_shape(seed_api: Api) -> None:
    for body in (
        {"email": "alice@helpdesk.test", "password": "wrong password", "subdomain": "desk"},
        {"email": "nobody@helpdesk.test", "password": PASSWORD, "subdomain": "desk"},
    ):
        resp = call(seed_api, "POST", P + "/api/me", body)
        assert resp.status_code == 401
        assert resp.json()["success"] is False and resp.json()["messages"]["auth"]
    missing = call(seed_api, "POST", P + "/api/me", {"email": "alice@helpdesk.test"})
    assert missing.status_code == 422 and missing.json()["errors"]["password"]


ROUTES = [
    ("POST", "/api/subscribe"),
    ("DELETE", "/api/subscribe/1"),
    ("POST", "/api/actions/create-ticket"),
    ("POST", "/api/actions/change-ticket-assignment"),
    ("POST", "/api/actions/change-status"),
    ("POST", "/api/actions/create-reply"),
    ("POST", "/api/actions/add-tags"),
    ("POST", "/api/actions/add-tag"),
    ("GET", "/api/actions/get-ticket-details"),
    ("GET", "/api/actions/get-billable-time"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_route_without_a_token(seed_api: Api, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer 1|not-the-secret"}):
        resp = call(seed_api, method, P + path, {"ticket_number": 1}, headers=headers)
        assert resp.status_code == 401, resp.text
        body = resp.json()
        assert body["success"] is False and isinstance(body["messages"]["auth"], str)
        assert "x-ratelimit-limit" in resp.headers


def _unsubscribe(api: Api, auth: dict[str, str], ids: list[int]) -> None:
    """Remove the test's subscriptions, so no delivery to its stopped receiver stays queued."""
    for sub in ids:
        gone = call(api, "DELETE", f"{P}/api/subscribe/{sub}", headers=auth)
        assert gone.status_code == 200 and gone.json()["success"] is True, gone.text
    again = call(api, "DELETE", f"{P}/api/subscribe/{ids[0]}", headers=auth)
    assert again.status_code == 404 and again.json()["success"] is False


def _wait(receiver: Receiver, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count:
        assert time.monotonic() < deadline, f"only {len(receiver.requests)} deliveries"
        time.sleep(0.05)
    return [json.loads(r.body) for r in receiver.requests]


def test_zapier_flow_ticket_new_and_reply_new(seed_api: Api, auth: dict[str, str]) -> None:
    receiver = Receiver().start()
    ids: list[int] = []
    try:
        secrets = {}
        for trigger in ("ticket_new", "reply_new"):
            resp = call(
                seed_api,
                "POST",
                P + "/api/subscribe",
                {"hookUrl": receiver.url, "trigger": trigger, "subdomain": "desk"},
                headers=auth,
                params={"email": "alice@helpdesk.test"},
            )
            assert resp.status_code == 201, resp.text
            body = resp.json()
            assert body["success"] is True and body["trigger"] == trigger
            secrets[trigger] = body["secret"].encode()
            ids.append(body["id"])
        first_id = "<zap-1@customer.test>"
        seed_api.daemon.send(
            make_mail(
                subject="Zapier starts here",
                sender="John Lee <john.lee@customer.test>",
                body="Sample description of sample ticket\n",
                message_id=first_id,
            ),
            mail_from="john.lee@customer.test",
        )
        seed_api.daemon.wait_idle()
        seed_api.daemon.send(
            make_mail(
                subject="Re: Zapier starts here",
                sender="John Lee <john.lee@customer.test>",
                body="Sample description of sample reply\n",
                headers={"In-Reply-To": first_id, "References": first_id},
            ),
            mail_from="john.lee@customer.test",
        )
        seed_api.daemon.wait_idle()
        seed_api.daemon.wait_idle(sending=True)
        payloads = _wait(receiver, 2)
        assert len(receiver.requests) == 2  # once each: idle, nothing more can go out
        new, reply = payloads
        assert set(new) >= TICKET_FIELDS
        assert new["subject"] == "Zapier starts here"
        assert new["description"] == "<p>Sample description of sample ticket</p>"
        assert new["created_by"] == {
            "first_name": "John",
            "last_name": "Lee",
            "email": "john.lee@customer.test",
            "company_name": "",
        }
        assert new["status"] == "Open" and new["priority"] == "Medium"
        assert new["deleted"] is False and new["updated_by"] is None
        time.strptime(new["created_at"], STAMP)
        assert set(reply) == {
            "ticket_subject",
            "ticket_created_by",
            "ticket_number",
            "ticket_assigned_to",
            "reply_type",
            "reply_created_by",
            "reply_data",
            "reply_created_at",
        }
        assert reply["ticket_number"] == new["ticket_number"]
        assert reply["reply_type"] == "reply"
        assert reply["reply_created_by"]["email"] == "john.lee@customer.test"
        assert "Sample description of sample reply" in reply["reply_data"]
        time.strptime(reply["reply_created_at"], STAMP)
        for got, trigger in zip(receiver.requests, ("ticket_new", "reply_new"), strict=True):
            header = got.headers[SIGNATURE_HEADER.lower()]
            assert verify_signature(secrets[trigger], got.body, header, now=time.time())
    finally:
        _unsubscribe(seed_api, auth, ids)
        receiver.stop()


def test_status_and_assignment_triggers(seed_api: Api, auth: dict[str, str]) -> None:
    receiver = Receiver().start()
    ids: list[int] = []
    try:
        for trigger in ("ticket_status_changed", "ticket_assignment_changed"):
            resp = call(
                seed_api,
                "POST",
                P + "/api/subscribe",
                {"hookUrl": receiver.url, "trigger": trigger},
                headers=auth,
            )
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
        number = _create(seed_api, auth, subject="Triggers")
        seed_api.daemon.wait_idle(sending=True)
        receiver.requests.clear()
        assert _act(seed_api, auth, "change-status", ticket_number=number, ticket_status="Closed")
        assert _act(
            seed_api,
            auth,
            "change-ticket-assignment",
            ticket_number=number,
            assign_to="bob@helpdesk.test",
        )
        seed_api.daemon.wait_idle(sending=True)
        bodies = [json.loads(r.body) for r in receiver.requests]
        status = [b for b in bodies if "ticket_status" in b]
        assigned = [b for b in bodies if "assigned_to" in b]
        assert len(status) == 1 and len(assigned) == 1, bodies
        assert status[0] == {
            "ticket_subject": "Triggers",
            "ticket_created_by": {
                "first_name": "Robert",
                "last_name": "Robertson",
                "email": "robert.robertson@customer.test",
            },
            "ticket_number": number,
            "ticket_status": "Closed",
        }
        assert assigned[0]["assigned_to"] == {
            "first_name": "Bob",
            "last_name": "Builder",
            "email": "bob@helpdesk.test",
        }
        bad = call(
            seed_api,
            "POST",
            P + "/api/subscribe",
            {"hookUrl": receiver.url, "trigger": "x"},
            headers=auth,
        )
        assert bad.status_code == 422 and bad.json()["errors"]["trigger"]
    finally:
        _unsubscribe(seed_api, auth, ids)
        receiver.stop()


def _act(api: Api, auth: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    resp = call(api, "POST", f"{P}/api/actions/{name}", body, headers=auth)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    assert out["success"] is True
    return out


def _create(api: Api, auth: dict[str, str], **overrides: Any) -> int:
    body = {
        "contact": {
            "first_name": "Robert",
            "last_name": "Robertson",
            "email": "robert.robertson@customer.test",
            "company_name": "super company",
        },
        "subject": "Sample subject of sample ticket",
        "product": "Super Product",
        "assigned_to": "alice@helpdesk.test",
        "priority": "Medium",
        "body": "Sample description of sample ticket",
        "type": "Question",
        "created_at": "2022-07-27T13:59:06.000000Z",
        "due_date": "2030-10-25",
        "status": "Open",
        **overrides,
    }
    out = _act(api, auth, "create-ticket", **body)
    assert out["messages"] == {"ticket": "ticket created successfully"}
    return int(out["ticket_number"])


def test_actions_walk_the_document(seed_api: Api, auth: dict[str, str]) -> None:
    number = _create(seed_api, auth)
    details = call(
        seed_api,
        "GET",
        P + "/api/actions/get-ticket-details",
        {"ticket_number": number, "subdomain": "desk"},
        headers=auth,
    )
    assert details.status_code == 200, details.text
    d = details.json()
    assert d["success"] is True and set(d) >= TICKET_FIELDS | {"ticket_tags"}
    assert d["subject"] == "Sample subject of sample ticket"
    assert d["description"] == "<p>Sample description of sample ticket</p>"
    assert d["created_by"]["email"] == "robert.robertson@customer.test"
    assert d["created_by"] == {
        "first_name": "Robert",
        "last_name": "Robertson",
        "email": "robert.robertson@customer.test",
        "company_name": "super company",
    }
    assert d["assigned_to"] == {
        "first_name": "Alice",
        "last_name": "Agent",
        "email": "alice@helpdesk.test",
    }
    assert (d["status"], d["priority"], d["type"], d["product"]) == (
        "Open",
        "Medium",
        "Question",
        "Super Product",
    )
    assert d["due_date"] == "2030-10-25" and d["deleted"] is False and d["ticket_number"] == number

    out = _act(
        seed_api,
        auth,
        "change-ticket-assignment",
        ticket_number=number,
        assign_to="bob@helpdesk.test",
    )
    assert out == {
        "success": True,
        "ticket_number": number,
        "messages": {"assignment": "assignment changed successfully"},
    }
    out = _act(seed_api, auth, "change-status", ticket_number=number, ticket_status="Pending")
    assert out["messages"] == {"status": "status changed successfully"}
    out = _act(
        seed_api,
        auth,
        "create-reply",
        ticket_number=number,
        reply_type="reply",
        reply_created_by="alice@helpdesk.test",
        reply_created_at="2022-09-13T17:24:34.000000Z",
        reply_data="<p>Sample description of sample reply</p>",
    )
    assert out["messages"] == {"reply": "reply created successfully"}
    out = _act(
        seed_api, auth, "add-tags", ticket_number=number, ticket_tags=["First Tag", "Second Tag"]
    )
    assert out["messages"] == {"tags": "tags added successfully"}
    out = _act(seed_api, auth, "add-tag", ticket_number=number, ticket_tag="Third Tag")
    assert out["messages"] == {"tag": "tag added successfully"}

    native = seed_api.token("all")
    added = call(
        seed_api,
        "POST",
        f"/api/v1/tickets/{number}/time_entries",
        {"minutes": 240, "billable": True, "description": "logged time"},
        headers={"Authorization": f"Bearer {native}"},
    )
    assert added.status_code == 200, added.text
    call(
        seed_api,
        "POST",
        f"/api/v1/tickets/{number}/time_entries",
        {"minutes": 15, "billable": False, "description": "not billed"},
        headers={"Authorization": f"Bearer {native}"},
    )
    billable = call(
        seed_api,
        "GET",
        P + "/api/actions/get-billable-time",
        params={"ticket_number": number, "subdomain": "desk"},
        headers=auth,
    ).json()
    assert billable["success"] is True
    assert billable["ticket_tags"] == ["First Tag", "Second Tag", "Third Tag"]
    assert billable["accounting_number"] == "robert.robertson@customer.test"
    assert billable["billable_items_count"] == 1
    (item,) = billable["billable_items"]
    assert item["billable"] is True and item["minutes_logged"] == 240
    assert item["invoiced"] is False and item["bill_code"] is None
    assert item["description"] == "logged time"
    assert set(item) == {
        "billable",
        "bill_code",
        "creator",
        "minutes_logged",
        "invoiced",
        "description",
        "updater",
    }
    assert billable["status"] == "Open"  # the reply reactivated it, as any response does
    assert billable["assigned_to"]["email"] == "bob@helpdesk.test"
    assert billable["updated_by"]["email"] == "alice@helpdesk.test"

    # the same ticket, read through the native API
    shown = call(
        seed_api, "GET", f"/api/v1/tickets/{number}", headers={"Authorization": f"Bearer {native}"}
    ).json()["data"]
    assert shown["subject"] == "Sample subject of sample ticket"
    assert shown["status"] == "open" and shown["assigned_to_email"] == "bob@helpdesk.test"
    assert shown["tags"] == ["First Tag", "Second Tag", "Third Tag"]
    assert shown["custom_fields"] == {"product": "Super Product", "type": "Question"}
    assert shown["time_spent_minutes"] == 255
    history = call(
        seed_api,
        "GET",
        f"/api/v1/tickets/{number}/history",
        headers={"Authorization": f"Bearer {native}"},
    ).json()["data"]["events"]
    acted = [e for e in history if e["type"] in ("assigned", "status")]
    assert acted and all(e["actor"]["email"] == "alice@helpdesk.test" for e in acted)
    assert all(e["channel"] == "api" for e in acted)
    # the notices a ticket made any other way causes: the customer's acknowledgement, and the
    # agent's public reply mailed to the customer
    ticket_id = int(shown["id"])
    seed_api.composed(ticket_id)
    mailed = seed_api.rows(
        "SELECT kind, primary_rcpt FROM outbox WHERE ticket_id = ? ORDER BY id", ticket_id
    )
    kinds = {(k, r) for k, r in mailed}
    assert ("acknowledgement", "robert.robertson@customer.test") in kinds, mailed
    assert ("agent_response", "robert.robertson@customer.test") in kinds, mailed

    # and through the other adapters
    key = seed_api.token("tickets:read")
    tw = call(seed_api, "GET", f"/compat/teamswork/tickets/{number}", params={"key": key}).json()[
        "item"
    ]
    assert tw["title"] == "Sample subject of sample ticket" and tw["status"] == "Open"
    assert tw["requestor"]["name"] == "Robert Robertson"
    assert tw["customFields"] == {"product": "Super Product", "type": "Question"}
    jwt = call(
        seed_api,
        "POST",
        "/compat/tiketti/api/v1/auth/login",
        {"email": "alice@helpdesk.test", "password": PASSWORD},
    ).json()["data"]["access_token"]
    tk = call(
        seed_api,
        "GET",
        f"/compat/tiketti/api/v1/tickets/{number}",
        headers={"Authorization": f"Bearer {jwt}"},
    ).json()["data"]
    assert tk["labels"] == ["First Tag", "Second Tag", "Third Tag"]
    assert tk["assignee_email"] == "bob@helpdesk.test" and tk["priority"] == "normal"


def test_action_failures_in_the_seed_shape(seed_api: Api, auth: dict[str, str]) -> None:
    missing = call(
        seed_api,
        "POST",
        P + "/api/actions/change-status",
        {"ticket_number": 999999, "ticket_status": "Open"},
        headers=auth,
    )
    assert missing.status_code == 404
    assert missing.json()["success"] is False and missing.json()["messages"]["error"]
    bad = call(
        seed_api,
        "POST",
        P + "/api/actions/change-status",
        {"ticket_number": 1, "ticket_status": "Sideways"},
        headers=auth,
    )
    assert bad.status_code == 422 and bad.json()["errors"]["ticket_status"]
