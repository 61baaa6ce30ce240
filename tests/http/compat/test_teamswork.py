"""Teamswork (seed 002) walked top to bottom over real HTTP against a running daemon, with the
document's own example requests (our addresses substituted): the key (primary and secondary),
timezone, select, orderBy/order, offset/limit and continuationToken paging, create (both
examples), show, update, status (PUT and the example's POST), activities and comments (both
paths), /instance and /tags; the auth failures in its shape; and the ticket read back through
the native API and the other adapters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.compat.conftest import PASSWORD, call
from tests.http.conftest import Api

P = "/compat/teamswork"
USER = {"id": "053660b7-xxxx", "name": "Jason Doe", "email": "alice@helpdesk.test"}
REQUESTOR = {"id": "053660b7-yyyy", "name": "Jason Doe", "email": "jason.doe@customer.test"}
ITICKET = {
    "id",
    "ticketId",
    "title",
    "description",
    "status",
    "requestor",
    "customFields",
    "priority",
    "assignee",
    "expectedDate",
    "resolution",
    "firstResponseOn",
    "firstResolutionOn",
    "lastResolutionOn",
    "createdOn",
    "tags",
    "lastUpdatedOn",
    "isFrtEscalated",
    "isRtEscalated",
    "createdBy",
    "lastUpdatedBy",
    "lastResolutionComment",
}


@pytest.fixture(scope="module")
def keys(seed_api: Api) -> tuple[str, str]:
    """The primary and the secondary key: two native tokens."""
    return seed_api.token("tickets:write", name="teamswork primary"), seed_api.token(
        "tickets:write", name="teamswork secondary"
    )


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)
    return body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tickets"),
        ("POST", "/tickets"),
        ("GET", "/tickets/1"),
        ("PUT", "/tickets/1"),
        ("PUT", "/tickets/1/status"),
        ("POST", "/tickets/1/status"),
        ("GET", "/tickets/1/activities"),
        ("POST", "/tickets/1/activities"),
        ("POST", "/tickets/1/comments"),
        ("GET", "/instance"),
        ("GET", "/tags"),
    ],
)
def test_no_route_without_a_key(seed_api: Api, method: str, path: str) -> None:
    for params in ({}, {"key": "1|wrong"}):
        resp = call(seed_api, method, P + path, {}, params=params)
        assert _error(resp, 401)["error"]["code"] == "unauthorized"
        assert "x-ratelimit-limit" in resp.headers


def test_document_walk(seed_api: Api, keys: tuple[str, str]) -> None:
    primary, secondary = keys
    # POST /tickets, example 1
    first = call(
        seed_api,
        "POST",
        P + "/tickets",
        {"ticket": {"title": "My first ticket", "requestor": REQUESTOR}, "user": USER},
        params={"key": primary, "timezone": 0},
    )
    assert first.status_code == 200, first.text
    item = first.json()["item"]
    assert set(item) >= ITICKET
    assert item["title"] == "My first ticket" and item["status"] == "Open"
    assert item["requestor"] == {
        "id": "jason.doe@customer.test",
        "name": "Jason Doe",
        "email": "jason.doe@customer.test",
    }
    assert item["isFrtEscalated"] is False and item["createdOn"].endswith("+00:00")
    # example 2: custom fields, description, priority, assignee, expectedDate, tags
    second = call(
        seed_api,
        "POST",
        P + "/tickets",
        {
            "ticket": {
                "title": "My second ticket",
                "requestor": REQUESTOR,
                "customFields": {"product": "text in custom field"},
                "description": "ticket descriptionline 1line 2",
                "priority": "Urgent",
                "assignee": {"id": "708edddc-x", "name": "Bob", "email": "bob@helpdesk.test"},
                "expectedDate": "2030-07-26T17:00:00Z",
                "tags": [
                    {"tagCategoryId": "2283653a", "text": "sdsad"},
                    {"tagCategoryId": "2283653a", "text": "my tag"},
                ],
            },
            "user": USER,
        },
        params={"key": secondary},
    )
    assert second.status_code == 200, second.text
    two = second.json()["item"]
    assert two["priority"] == "Urgent" and two["assignee"]["email"] == "bob@helpdesk.test"
    assert two["customFields"] == {"product": "text in custom field"}
    assert two["description"] == "ticket descriptionline 1line 2"
    assert two["expectedDate"] == "2030-07-26T17:00:00+00:00"
    assert {t["text"] for t in two["tags"]} == {"sdsad", "my tag"}
    number = two["ticketId"]

    # GET /tickets/{id} with timezone 7
    shown = call(
        seed_api, "GET", f"{P}/tickets/{number}", params={"key": primary, "timezone": 7}
    ).json()["item"]
    assert shown["expectedDate"] == "2030-07-27T00:00:00+07:00"

    # PUT /tickets/{id}
    put = call(
        seed_api,
        "PUT",
        f"{P}/tickets/{number}",
        {
            "updates": {
                "title": "My 2nd ticket",
                "requestor": REQUESTOR,
                "customFields": {"type": "Question"},
                "priority": "Important",
                "assignee": {"id": "708edddc-x", "name": "Alice", "email": "alice@helpdesk.test"},
            },
            "user": USER,
        },
        params={"key": primary, "timezone": 0},
    )
    assert put.status_code == 200, put.text
    updated = put.json()["item"]
    assert updated["title"] == "My 2nd ticket" and updated["priority"] == "Important"
    assert updated["assignee"]["email"] == "alice@helpdesk.test"
    assert updated["customFields"] == {"product": "text in custom field", "type": "Question"}

    # POST /tickets/{id}/comments (the example's path) and /activities
    comment = call(
        seed_api,
        "POST",
        f"{P}/tickets/{number}/comments",
        {"comment": "comment from API", "user": USER},
        params={"key": primary},
    )
    assert comment.status_code == 200, comment.text
    assert comment.json()["item"]["comment"] == "comment from API"
    assert comment.json()["item"]["user"]["email"] == "alice@helpdesk.test"

    # status: the example is a POST; the endpoint is a PUT; both serve
    resolved = call(
        seed_api,
        "POST",
        f"{P}/tickets/{number}/status",
        {"status": "Resolved", "resolution": "fixed", "comment": "Great job!", "user": USER},
        params={"key": primary},
    )
    assert resolved.status_code == 200, resolved.text
    done = resolved.json()["item"]
    assert done["status"] == "Closed" and done["resolution"] == "fixed"
    assert done["firstResolutionOn"] and done["lastResolutionComment"] == "Great job!"
    assert done["firstResponseOn"]  # the comment was an agent's public answer
    reopened = call(
        seed_api,
        "PUT",
        f"{P}/tickets/{number}/status",
        {"status": "Reopened"},
        params={"key": primary},
    )
    assert reopened.json()["item"]["status"] == "Open"

    activities = call(
        seed_api, "GET", f"{P}/tickets/{number}/activities", params={"key": primary}
    ).json()["items"]
    kinds = [(a["type"], a.get("status") or a.get("comment")) for a in activities]
    assert kinds == [
        ("comment", "comment from API"),
        ("statusChange", "Closed"),
        ("statusChange", "Open"),
    ]

    # GET /tickets: the example's query, then paging with continuationToken
    listed = call(
        seed_api,
        "GET",
        P + "/tickets",
        params={
            "key": primary,
            "timezone": 0,
            "orderBy": "status",
            "order": "ASC",
            "select": "id,ticketId,title,description,status,requestorName",
            "offset": 0,
            "limit": 20,
        },
    ).json()
    rows = listed["items"]
    assert rows and set(rows[0]) == {
        "id",
        "ticketId",
        "title",
        "description",
        "status",
        "requestorName",
    }
    assert [r["status"] for r in rows] == sorted(r["status"] for r in rows)
    assert any(r["requestorName"] == "Jason Doe" for r in rows)
    seen: list[int] = []
    page = call(seed_api, "GET", P + "/tickets", params={"key": primary, "limit": 1}).json()
    while True:
        seen += [t["ticketId"] for t in page["items"]]
        if "continuationToken" not in page:
            break
        page = call(
            seed_api,
            "GET",
            P + "/tickets",
            params={"key": primary, "limit": 1},
            headers={"continuationToken": page["continuationToken"]},
        ).json()
    assert len(seen) == len(set(seen)) >= 2 and seen == sorted(seen, reverse=True)
    filtered = call(
        seed_api,
        "GET",
        P + "/tickets",
        params={"key": primary, "tags": "2283653a_sdsad", "priority": "Important"},
    ).json()["items"]
    assert [t["ticketId"] for t in filtered] == [number]

    instance = call(seed_api, "GET", P + "/instance", params={"key": primary, "timezone": 0})
    inst = instance.json()["item"]
    assert inst["name"] == "Test Support" and inst["mailAddress"] == "support@helpdesk.test"
    assert {f["id"] for f in inst["customFields"]} == {"product", "type"}
    assert inst["assignees"]["type"] == "customAssignee"
    assert {p["email"] for p in inst["assignees"]["peoples"]} >= {
        "alice@helpdesk.test",
        "bob@helpdesk.test",
    }
    tags = call(seed_api, "GET", P + "/tags", params={"key": primary}).json()["items"]
    assert {t["text"] for t in tags[0]["tags"]} >= {"sdsad", "my tag"}
    assert set(tags[0]) == {"id", "instanceId", "text", "color", "tags", "deleted"}

    # the same ticket through the native API, tiHelpdesk and Tiketti
    native = seed_api.token("all")
    same = call(
        seed_api, "GET", f"/api/v1/tickets/{number}", headers={"Authorization": f"Bearer {native}"}
    ).json()["data"]
    assert same["subject"] == "My 2nd ticket" and same["priority"] == "30"
    assert same["resolution"] == "fixed" and same["status"] == "open"
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
    assert (
        ti["subject"] == "My 2nd ticket" and ti["priority"] == "High" and ti["type"] == "Question"
    )
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
    assert tk["subject"] == "My 2nd ticket" and tk["priority"] == "high"
    assert set(tk["labels"]) == {"sdsad", "my tag"}


def test_failures_in_the_seed_shape(seed_api: Api, keys: tuple[str, str]) -> None:
    primary, _ = keys
    _error(call(seed_api, "GET", P + "/tickets/999999", params={"key": primary}), 404)
    bad = call(
        seed_api, "PUT", P + "/tickets/1/status", {"status": "Sideways"}, params={"key": primary}
    )
    assert _error(bad, 422)["error"]["details"]["status"]
    _error(
        call(
            seed_api,
            "GET",
            P + "/tickets",
            params={"key": primary},
            headers={"continuationToken": "garbage"},
        ),
        400,
    )
    _error(call(seed_api, "GET", P + "/tickets", params={"key": primary, "orderBy": "x"}), 422)
    reader = seed_api.token("tickets:read")
    _error(call(seed_api, "POST", P + "/tickets", {"ticket": {}}, params={"key": reader}), 403)


def test_a_retried_create_with_the_same_key_makes_one_ticket(
    seed_api: Api, keys: tuple[str, str]
) -> None:
    primary, _ = keys
    body = {"ticket": {"title": "Retried", "requestor": REQUESTOR}, "user": USER}
    answers = [
        call(
            seed_api,
            "POST",
            P + "/tickets",
            body,
            params={"key": primary},
            headers={"Idempotency-Key": "teamswork-retry-1"},
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    rows = seed_api.rows("SELECT count(*) FROM tickets WHERE subject = 'Retried'")
    assert rows == [(1,)]
