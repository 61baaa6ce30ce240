"""Tiketti (seed 003) over real HTTP against a running daemon: JWT login, refresh rotation and
revocation, the envelopes, status codes (201, 204), error shape and rate-limit headers, tickets,
messages, time entries and contacts; and the ticket read back through the native API and the
tiHelpdesk adapter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.compat.conftest import PASSWORD, call, set_password
from tests.http.conftest import Api

P = "/compat/tiketti/api/v1"


def _login(api: Api) -> dict[str, Any]:
    resp = call(
        api, "POST", P + "/auth/login", {"email": "alice@helpdesk.test", "password": PASSWORD}
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    assert data["token_type"] == "Bearer" and data["expires_in"] == 900
    assert data["access_token"].count(".") == 2 and data["refresh_token"]
    return data


def _auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def _error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and "details" in body["error"]
    assert resp.headers["x-ratelimit-limit"]


def test_login_refresh_rotation_and_revocation(seed_api: Api) -> None:
    _error(
        call(
            seed_api,
            "POST",
            P + "/auth/login",
            {"email": "alice@helpdesk.test", "password": "nope-nope"},
        ),
        401,
        "INVALID_CREDENTIALS",
    )
    first = _login(seed_api)
    second = call(seed_api, "POST", P + "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()["data"]
    assert rotated["refresh_token"] != first["refresh_token"]
    # the used token again: refused, and its whole family (the rotated one too) is revoked
    _error(
        call(seed_api, "POST", P + "/auth/refresh", {"refresh_token": first["refresh_token"]}),
        401,
        "INVALID_REFRESH_TOKEN",
    )
    _error(
        call(seed_api, "POST", P + "/auth/refresh", {"refresh_token": rotated["refresh_token"]}),
        401,
        "INVALID_REFRESH_TOKEN",
    )
    # a cleared password ends refreshing (the agent can no longer log in either)
    bob = call(
        seed_api, "POST", P + "/auth/login", {"email": "bob@helpdesk.test", "password": PASSWORD}
    ).json()["data"]
    seed_api.daemon.cli("agent", "passwd", "bob@helpdesk.test", "--clear")
    _error(
        call(seed_api, "POST", P + "/auth/refresh", {"refresh_token": bob["refresh_token"]}),
        401,
        "INVALID_REFRESH_TOKEN",
    )
    set_password(seed_api, "bob@helpdesk.test")
    third = _login(seed_api)
    out = call(
        seed_api,
        "POST",
        P + "/auth/logout",
        {"refresh_token": third["refresh_token"]},
        headers=_auth(third),
    )
    assert out.status_code == 204 and out.content == b""
    _error(
        call(seed_api, "POST", P + "/auth/refresh", {"refresh_token": third["refresh_token"]}),
        401,
        "INVALID_REFRESH_TOKEN",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/logout"),
        ("GET", "/tickets"),
        ("POST", "/tickets"),
        ("GET", "/tickets/1"),
        ("PUT", "/tickets/1"),
        ("PATCH", "/tickets/1"),
        ("DELETE", "/tickets/1"),
        ("GET", "/tickets/1/messages"),
        ("POST", "/tickets/1/messages"),
        ("GET", "/tickets/1/time-entries"),
        ("POST", "/tickets/1/time-entries"),
        ("GET", "/contacts"),
        ("POST", "/contacts"),
        ("GET", "/contacts/1"),
        ("GET", "/labels"),
        ("POST", "/tickets/1/labels"),
        ("DELETE", "/tickets/1/labels/x"),
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
        ("DELETE", "/webhooks/1"),
    ],
)
def test_no_route_without_a_valid_access_token(seed_api: Api, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}):
        _error(call(seed_api, method, P + path, {}, headers=headers), 401, "UNAUTHORIZED")


def test_tickets_messages_time_contacts(seed_api: Api) -> None:
    auth = _auth(_login(seed_api))
    _error(
        call(seed_api, "GET", P + "/tickets", headers={**auth, "X-Organization-Id": "other"}),
        403,
        "FORBIDDEN",
    )
    made = call(
        seed_api,
        "POST",
        P + "/tickets",
        {
            "subject": "Cannot login",
            "description": "Help needed",
            "contact_email": "tia@customer.test",
            "priority": "high",
            "labels": ["login"],
        },
        headers=auth,
    )
    assert made.status_code == 201, made.text
    ticket = made.json()["data"]
    assert ticket["subject"] == "Cannot login" and ticket["code"] == f"T-{ticket['number']}"
    assert ticket["status"] == "open" and ticket["priority"] == "high"
    assert ticket["labels"] == ["login"] and ticket["description"] == "Help needed"
    number = ticket["number"]
    got = call(seed_api, "GET", f"{P}/tickets/{ticket['code']}", headers=auth)
    assert got.status_code == 200 and got.json()["data"]["id"] == ticket["id"]
    listed = call(seed_api, "GET", P + "/tickets", headers=auth, params={"page": 1, "per_page": 50})
    body = listed.json()
    assert set(body) == {"data", "meta"} and set(body["meta"]) == {"total", "page", "per_page"}
    assert any(t["number"] == number for t in body["data"])
    changed = call(
        seed_api,
        "PUT",
        f"{P}/tickets/{number}",
        {"status": "pending", "assignee_email": "bob@helpdesk.test"},
        headers=auth,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["status"] == "pending"
    note = call(
        seed_api,
        "POST",
        f"{P}/tickets/{number}/messages",
        {"body": "Looking into it", "is_internal": True},
        headers=auth,
    )
    assert note.status_code == 201, note.text
    assert note.json()["data"]["is_internal"] is True
    assert note.json()["data"]["author_email"] == "alice@helpdesk.test"
    messages = call(seed_api, "GET", f"{P}/tickets/{number}/messages", headers=auth).json()
    assert [m["body"] for m in messages["data"]] == ["Help needed", "Looking into it"]
    logged = call(
        seed_api,
        "POST",
        f"{P}/tickets/{number}/time-entries",
        {"minutes": 30, "billable": True, "description": "call"},
        headers=auth,
    )
    assert logged.status_code == 201 and logged.json()["data"]["minutes"] == 30
    times = call(seed_api, "GET", f"{P}/tickets/{number}/time-entries", headers=auth).json()
    assert times["meta"]["billable_minutes"] == 30
    contact = call(
        seed_api,
        "POST",
        P + "/contacts",
        {"email": "new.one@customer.test", "name": "New One"},
        headers=auth,
    )
    assert contact.status_code == 201, contact.text
    shown = call(seed_api, "GET", f"{P}/contacts/{contact.json()['data']['id']}", headers=auth)
    assert shown.json()["data"]["email"] == "new.one@customer.test"
    _error(call(seed_api, "GET", P + "/tickets/999999", headers=auth), 404, "TICKET_NOT_FOUND")
    _error(
        call(seed_api, "PUT", f"{P}/tickets/{number}", {"status": "sideways"}, headers=auth),
        422,
        "VALIDATION_ERROR",
    )

    # the same ticket through the native API and the tiHelpdesk adapter
    native = seed_api.token("all")
    same = call(
        seed_api, "GET", f"/api/v1/tickets/{number}", headers={"Authorization": f"Bearer {native}"}
    ).json()["data"]
    # the note after the change reactivated it, as any response does natively
    assert same["subject"] == "Cannot login" and same["status"] == "open"
    assert same["assigned_to_email"] == "bob@helpdesk.test" and same["tags"] == ["login"]
    history = call(
        seed_api,
        "GET",
        f"/api/v1/tickets/{number}/history",
        headers={"Authorization": f"Bearer {native}"},
    ).json()["data"]["events"]
    assert any(e["actor"]["email"] == "alice@helpdesk.test" for e in history)
    me = call(
        seed_api,
        "POST",
        "/compat/tihelpdesk/api/me",
        {"email": "alice@helpdesk.test", "password": PASSWORD},
    ).json()["token"]
    ti = call(
        seed_api,
        "GET",
        "/compat/tihelpdesk/api/actions/get-ticket-details",
        params={"ticket_number": number},
        headers={"Authorization": f"Bearer {me}"},
    ).json()
    assert ti["subject"] == "Cannot login" and ti["status"] == "Open"
    assert ti["priority"] == "High" and ti["assigned_to"]["email"] == "bob@helpdesk.test"

    gone = call(seed_api, "DELETE", f"{P}/tickets/{number}", headers=auth)
    assert gone.status_code == 204 and gone.content == b""
    _error(call(seed_api, "GET", f"{P}/tickets/{number}", headers=auth), 404, "TICKET_NOT_FOUND")


def test_expired_or_foreign_access_tokens_are_refused(seed_api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from mailhelpdesk.services import tiketti_auth

    key = tiketti_auth.signing_key(b"test-secret-not-for-production")
    past = datetime.now(UTC) - timedelta(hours=1)
    expired = tiketti_auth.access_token(key, "alice@helpdesk.test", now=past, ttl_s=60)
    _error(
        call(seed_api, "GET", P + "/tickets", headers={"Authorization": f"Bearer {expired}"}),
        401,
        "UNAUTHORIZED",
    )
    forged = tiketti_auth.access_token(
        b"another key of thirty-two bytes!!",
        "alice@helpdesk.test",
        now=datetime.now(UTC),
        ttl_s=600,
    )
    _error(
        call(seed_api, "GET", P + "/tickets", headers={"Authorization": f"Bearer {forged}"}),
        401,
        "UNAUTHORIZED",
    )
    fresh = tiketti_auth.access_token(key, "alice@helpdesk.test", now=datetime.now(UTC), ttl_s=600)
    ok = call(seed_api, "GET", P + "/tickets", headers={"Authorization": f"Bearer {fresh}"})
    assert ok.status_code == 200, ok.text


def test_labels_webhooks_and_filters(seed_api: Api) -> None:
    auth = _auth(_login(seed_api))
    made = call(
        seed_api,
        "POST",
        P + "/tickets",
        {"subject": "Filter me", "priority": "urgent", "assignee_email": "bob@helpdesk.test"},
        headers=auth,
    ).json()["data"]
    number = made["number"]
    labelled = call(seed_api, "POST", f"{P}/tickets/{number}/labels", {"name": "vip"}, headers=auth)
    assert labelled.status_code == 201 and labelled.json()["data"]["labels"] == ["vip"]
    labels = call(seed_api, "GET", P + "/labels", headers=auth).json()["data"]
    assert {"id": "vip", "name": "vip"} in labels
    removed = call(seed_api, "DELETE", f"{P}/tickets/{number}/labels/vip", headers=auth)
    assert removed.status_code == 204
    got = call(seed_api, "GET", f"{P}/tickets/{number}", headers=auth).json()["data"]
    assert got["labels"] == []
    found = call(
        seed_api,
        "GET",
        P + "/tickets",
        params={"priority": "urgent", "assignee_id": "bob@helpdesk.test", "status": "open"},
        headers=auth,
    ).json()
    assert [t["number"] for t in found["data"]] == [number] and found["meta"]["total"] == 1

    hook = call(
        seed_api,
        "POST",
        P + "/webhooks",
        {"url": "http://127.0.0.1:9/tiketti", "events": ["ticket.created"]},
        headers=auth,
    )
    assert hook.status_code == 201, hook.text
    made_hook = hook.json()["data"]
    assert made_hook["secret"].startswith("whsec_")
    listed = call(seed_api, "GET", P + "/webhooks", headers=auth).json()["data"]
    assert any(h["id"] == made_hook["id"] for h in listed)
    assert all("secret" not in h for h in listed)
    gone = call(seed_api, "DELETE", f"{P}/webhooks/{made_hook['id']}", headers=auth)
    assert gone.status_code == 204
    _error(
        call(seed_api, "DELETE", f"{P}/webhooks/{made_hook['id']}", headers=auth),
        404,
        "WEBHOOK_NOT_FOUND",
    )
