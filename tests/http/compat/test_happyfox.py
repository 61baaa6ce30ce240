"""The HappyFox tickets API (seed 004) walked top to bottom over real HTTP against a running
daemon: the document's own example requests (our addresses, agents and field ids substituted),
every field its answers show, its error shapes, and the same ticket read through the native API.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.services import events
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import store_change
from tests.http.conftest import HIGH_LIMIT, Api, running_api

HF = "/compat/happyfox"
API = HF + "/api/1.1/json"
CONFIG = (
    HIGH_LIMIT
    + """
[[agents]]
email = "bob@helpdesk.test"
name = "Bob Builder"

[[agents]]
email = "carol@helpdesk.test"
name = "Carol Jones"

[[custom_fields]]
name = "city"
label = "City"
type = "text"

[[custom_fields]]
name = "state"
label = "State"
type = "text"
required_to_close = true

[[custom_fields]]
name = "cities"
label = "Cities"
type = "multi_choice"
choices = ["Bengaluru", "Chennai", "Hyderabad"]

[[custom_fields]]
name = "renewal"
label = "Renewal"
type = "date"

[[custom_fields]]
name = "seats"
label = "Seats"
type = "number"
"""
)
# the keys of the document's ticket detail example, at the top level and in its members
DETAIL_KEYS = {
    "status",
    "first_message",
    "last_user_reply_at",
    "time_spent",
    "id",
    "messages_count",
    "subject",
    "category",
    "attachments_count",
    "last_updated_at",
    "priority",
    "last_staff_reply_at",
    "custom_fields",
    "sla_breaches",
    "merged_tickets",
    "visible_only_staff",
    "display_id",
    "due_date",
    "tags",
    "last_modified",
    "user",
    "subscribers",
    "unresponded",
    "created_at",
    "source",
    "assigned_to",
    "updates",
    "merged_to",
}
STATUS_KEYS = {"name", "color", "order", "default", "behavior", "id"}
CATEGORY_KEYS = {"prepopulate_cc", "description", "time_spent_mandatory", "public", "id", "name"}
PRIORITY_KEYS = {"default", "id", "name", "order"}
FIELD_KEYS = {
    "compulsory_on_complete",
    "name",
    "value",
    "value_id",
    "type",
    "id",
    "visible_to_staff_only",
}
USER_KEYS = {
    "name",
    "primary_phone",
    "phones",
    "created_at",
    "updated_at",
    "pending_tickets_count",
    "contact_groups",
    "tickets_count",
    "id",
    "email",
    "custom_fields",
}
STAFF_KEYS = {
    "name",
    "is_account_admin",
    "email",
    "role",
    "active",
    "id",
    "categories",
    "permissions",
}
UPDATE_KEYS = {
    "priority_change",
    "category_change",
    "custom_field_change",
    "timestamp",
    "due_date_change",
    "by",
    "time_spent",
    "update_id",
    "message",
    "assignee_change",
    "status_change",
    "satisfaction_survey",
}
MESSAGE_KEYS = {
    "attachments",
    "bcc_list",
    "text",
    "cc_list",
    "customer_updated",
    "html",
    "forward_list",
    "message_type",
    "subject",
}
CHANGE_KEYS = {"new_name", "new", "old", "old_name"}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class HappyFox:
    """The adapter over real HTTP with HTTP Basic (user = token id, password = secret)."""

    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        user, _, secret = token.partition("|")
        self.auth = (user, secret)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.api.base + path, params=params, auth=self.auth, timeout=60)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(self.api.base + path, json=body, auth=self.auth, timeout=60, **kw)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("happyfox"), extra_config=CONFIG) as served:
        yield served


@pytest.fixture(scope="module")
def hf(api: Api) -> HappyFox:
    return HappyFox(api, api.token("all"))


@pytest.fixture(scope="module")
def ids(api: Api) -> dict[str, int]:
    """Agent and category ids as the store numbered them."""
    found = {email: i for i, email in api.rows("SELECT id, email FROM agents")}
    found.update({f"queue:{name}": i for i, name in api.rows("SELECT id, name FROM queues")})
    return found


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def check_detail(t: dict[str, Any]) -> None:
    """Every key of the document's detail example, with the shapes of its members."""
    assert set(t) >= DETAIL_KEYS, DETAIL_KEYS - set(t)
    assert set(t["status"]) == STATUS_KEYS
    assert set(t["category"]) == CATEGORY_KEYS
    assert set(t["priority"]) == PRIORITY_KEYS
    assert set(t["user"]) == USER_KEYS
    assert all(set(f) == FIELD_KEYS for f in t["custom_fields"])
    assert t["display_id"] == f"#MH{t['id']:08d}"
    assert isinstance(t["tags"], str) and isinstance(t["merged_tickets"], list)
    if t["assigned_to"] is not None:
        assert set(t["assigned_to"]) == STAFF_KEYS
        assert set(t["assigned_to"]["role"]) == {"name", "id"}
    for s in t["subscribers"]:
        assert set(s) == {"first_name", "last_name", "id", "email"}
    for u in t.get("updates", []):
        assert set(u) == UPDATE_KEYS, set(u) ^ UPDATE_KEYS
        assert set(u["by"]) == {"email", "type", "id", "name"}
        if u["message"] is not None:
            assert set(u["message"]) == MESSAGE_KEYS
            for a in u["message"]["attachments"]:
                assert set(a) == {"url", "id", "filename"}
        for key in ("priority_change", "status_change", "assignee_change", "category_change"):
            if u[key] is not None:
                assert set(u[key]) == CHANGE_KEYS
        if u["due_date_change"] is not None:
            assert set(u["due_date_change"]) == {"new", "old"}


def field(t: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in t["custom_fields"] if f["name"] == name)


def native(api: Api, admin: str, path: str) -> Any:
    resp = httpx.get(api.base + path, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


# -- authentication ---------------------------------------------------------------------------


def test_auth_failures_in_the_documented_shape(api: Api, hf: HappyFox) -> None:
    token = api.token("all")
    user, _, secret = token.partition("|")
    attempts = [
        {},  # no credentials
        {"auth": (user, "wrong-secret")},
        {"auth": ("999999", secret)},
        {"headers": {"Authorization": f"Bearer {token}"}},  # the native scheme is not HappyFox's
        {"headers": {"Authorization": "Basic !!!not-base64"}},
    ]
    for extra in attempts:
        resp = httpx.get(api.base + API + "/tickets/", **extra)
        assert resp.status_code == 401, (extra, resp.text)
        assert set(resp.json()) == {"error"} and isinstance(resp.json()["error"], str)
        assert resp.headers["www-authenticate"].startswith("Basic ")
    weak = HappyFox(api, api.token("send-email"))
    resp = weak.get(API + "/tickets/")
    assert resp.status_code == 403 and set(resp.json()) == {"error"}


def test_no_route_is_reachable_without_credentials(api: Api) -> None:
    schema = httpx.get(api.base + HF + "/openapi.json").json()
    assert len(schema["paths"]) >= 14
    for path, operations in schema["paths"].items():
        url = api.base + HF + path.replace("{number}", "1")
        for method in operations:
            resp = httpx.request(method.upper(), url, json={})
            assert resp.status_code == 401, (method, path, resp.text)
            assert set(resp.json()) == {"error"}


# -- 4, 5, 17: create ----------------------------------------------------------------------------


def test_create_ticket_example_1_with_custom_fields(api: Api, hf: HappyFox, ids: dict) -> None:
    inbox = ids["queue:Inbox"]
    payload = {  # the document's example 1; field 5 (a number) and 4 (a date) are ours alike
        "name": "james",
        "email": "james@customer.test",
        "category": inbox,
        "subject": "test ticket",
        "text": "example ticket",
        "t-cf-3": [1, 2],
        "t-cf-1": "text field value",
        "t-cf-5": 200,
        "t-cf-4": "2019-12-20",
        "c-cf-3": 1,
    }
    t = ok(hf.post(API + "/tickets/", payload))
    check_detail(t)
    assert t["subject"] == "test ticket" and t["first_message"] == "example ticket"
    assert t["category"]["id"] == inbox and t["category"]["name"] == "Inbox"
    assert t["status"]["name"] == "Open" and t["status"]["behavior"] == "pending"
    assert t["priority"]["name"] == "Medium" and t["priority"]["default"] is True
    assert t["user"]["email"] == "james@customer.test" and t["user"]["name"] == "james"
    assert field(t, "City")["value"] == "text field value"
    assert field(t, "Cities")["value"] == ["Bengaluru", "Chennai"]
    assert field(t, "Cities")["value_id"] == [1, 2]
    assert field(t, "Cities")["type"] == "multiple_choice"
    assert field(t, "Seats")["value"] == 200 and field(t, "Renewal")["value"] == "2019-12-20"
    assert t["messages_count"] == 1 and t["unresponded"] is True and t["source"] == "api"
    assert t["updates"][0]["message"]["text"] == "example ticket"
    assert t["updates"][0]["by"]["type"] in ("staff", "token", "user")


def test_create_failure_shape(hf: HappyFox) -> None:
    resp = hf.post(
        API + "/tickets/",
        {"name": "james", "email": "james@customer.test", "subject": "s", "text": "t"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": [{"field": "category", "errors": ["This field is required."]}]}
    resp = hf.post(
        API + "/tickets/",
        {
            "name": "j",
            "email": "j@customer.test",
            "subject": "s",
            "text": "t",
            "category": 1,
            "t-cf-3": [9],
        },
    )
    assert resp.status_code == 400
    assert resp.json()["error"][0]["field"] == "t-cf-3"


def test_create_with_attachments_multipart(hf: HappyFox, ids: dict) -> None:
    payload = {  # the document's example 2 (its python snippet), our category and field ids
        "category": str(ids["queue:Billing"]),
        "name": "Name",
        "text": "Ticket creation message",
        "subject": "Ticket creation subject",
        "email": "john@customer.test",
        "t-cf-5": "1",
        "t-cf-1": "1",
    }
    files = [("attachments", ("Second_screen.png", PNG, "image/png"))]
    resp = httpx.post(
        hf.api.base + API + "/tickets/", data=payload, files=files, auth=hf.auth, timeout=60
    )
    t = ok(resp)
    check_detail(t)
    assert t["attachments_count"] == 1 and t["category"]["name"] == "Billing"
    (attachment,) = t["updates"][0]["message"]["attachments"]
    assert attachment["filename"] == "Second_screen.png" and attachment["id"] > 0
    assert field(t, "Seats")["value"] == 1 and field(t, "City")["value"] == "1"
    # the attachment's url answers its bytes, behind the same credentials
    url = hf.api.base + attachment["url"]
    assert httpx.get(url).status_code == 401
    got = httpx.get(url, auth=hf.auth)
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png"


def test_inline_attachment(api: Api, hf: HappyFox, ids: dict) -> None:
    admin = api.token("all")
    upload = httpx.post(
        hf.api.base + API + "/ticket-inline-attachment",
        files=[("file", ("bicycle.png", PNG, "image/png"))],
        auth=hf.auth,
        timeout=60,
    )
    url = ok(upload)["url"]
    assert set(ok(upload)) == {"url"} and url.startswith(hf.api.base + HF + "/inline/")
    assert httpx.get(url, auth=hf.auth).content == PNG
    t = make(hf, ids, "inline picture", html=f'<p>Look:</p><img src="{url}">')
    assert t["attachments_count"] == 1
    same = native(api, admin, f"/api/v1/tickets/{t['id']}")
    (first,) = same["responses"]
    assert first["attachments"][0]["is_inline"] is True
    assert "cid:" in (first["html"] or "") and url not in (first["html"] or "")
    refused = httpx.post(
        hf.api.base + API + "/ticket-inline-attachment",
        files=[("file", ("notes.txt", b"plain words", "text/plain"))],
        auth=hf.auth,
    )
    assert refused.status_code == 400 and refused.json()["error"][0]["field"] == "file"


def test_create_multiple_tickets(api: Api, hf: HappyFox, ids: dict) -> None:
    good = {
        "name": "ann",
        "email": "ann@customer.test",
        "category": ids["queue:Inbox"],
        "subject": "bulk one",
        "text": "first of the batch",
    }
    bad = {k: v for k, v in good.items() if k != "category"}
    results = ok(hf.post(API + "/tickets/", [good, bad]))
    assert len(results) == 2
    assert set(results[0]) == {"display_id", "id", "success"} and results[0]["success"] is True
    assert results[0]["display_id"] == f"#MH{results[0]['id']:08d}"
    assert results[1] == {
        "success": False,
        "error": [{"field": "category", "errors": ["This field is required."]}],
    }
    subjects = [s for (s,) in api.rows("SELECT subject FROM tickets")]
    assert subjects.count("bulk one") == 1
    too_many = hf.post(API + "/tickets/", [good] * 101)
    assert too_many.status_code == 400


def test_create_is_idempotent_with_a_key(api: Api, hf: HappyFox, ids: dict) -> None:
    key = str(uuid.uuid4())
    body = {
        "name": "idem",
        "email": "idem@customer.test",
        "category": ids["queue:Inbox"],
        "subject": "once only",
        "text": "retry me",
    }
    first = hf.post(API + "/tickets/", body, headers={"Idempotency-Key": key})
    second = hf.post(API + "/tickets/", body, headers={"Idempotency-Key": key})
    assert ok(first)["id"] == ok(second)["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert api.rows("SELECT count(*) FROM tickets WHERE subject = 'once only'") == [(1,)]


# -- 3: detail, and the same ticket through the native API --------------------------------------


def make(hf: HappyFox, ids: dict, subject: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "james",
        "email": "james@customer.test",
        "category": ids["queue:Inbox"],
        "subject": subject,
        "text": "Example message",
        **extra,
    }
    return dict(ok(hf.post(API + "/tickets/", body)))


def test_detail_and_native_parity(api: Api, hf: HappyFox, ids: dict) -> None:
    admin = api.token("all")
    made = make(
        hf,
        ids,
        "parity",
        priority=3,
        assignee=ids["alice@helpdesk.test"],
        tags="test",
        due_date="16/08/2030",
    )
    t = ok(hf.get(API + f"/ticket/{made['id']}/"))
    check_detail(t)
    assert t["priority"]["name"] == "High" and t["tags"] == "test"
    assert t["due_date"] == "2030-08-16"
    assert t["assigned_to"]["email"] == "alice@helpdesk.test"
    assert t["assigned_to"]["id"] == ids["alice@helpdesk.test"]
    changes = [u for u in t["updates"] if u["priority_change"]]
    assert changes and changes[0]["priority_change"]["new_name"] == "High"
    assert any(u["due_date_change"] == {"new": "2030-08-16", "old": None} for u in t["updates"])
    same = native(api, admin, f"/api/v1/tickets/{made['id']}")
    assert same["subject"] == "parity" and same["priority"] == "30"
    assert same["assigned_to_email"] == "alice@helpdesk.test" and same["tags"] == ["test"]
    assert same["queue"] == t["category"]["name"]
    events = native(api, admin, f"/api/v1/tickets/{made['id']}/history")["events"]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "created" and {"priority", "assigned", "tag_added", "due_date"} <= set(kinds)
    assert all(e["channel"] == "api" for e in events)
    assert len(t["updates"]) >= 1
    # the same notices as a ticket opened by the native API: the customer's acknowledgement
    native_made = httpx.post(
        api.base + "/api/v1/tickets",
        json={
            "originator_email_address": "james@customer.test",
            "data": {"subject": "parity native", "content": "Example message"},
        },
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["data"]
    kinds_of = "SELECT kind FROM outbox WHERE ticket_id = ? ORDER BY kind"
    hf_id = api.rows("SELECT id FROM tickets WHERE number = ?", made["id"])[0][0]
    assert [k for (k,) in api.rows(kinds_of, hf_id)][:2] == [
        k for (k,) in api.rows(kinds_of, native_made["ticket_id"])
    ][:2]
    assert ("acknowledgement",) in api.rows(kinds_of, hf_id)
    missing = hf.get(API + "/ticket/999999/")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


# -- 1, 2, 2.1, 19: lists ------------------------------------------------------------------------


def test_lists(api: Api, hf: HappyFox, ids: dict) -> None:
    a = make(hf, ids, "alpha list", tags="routine_checks")
    b = make(hf, ids, "beta list", category=ids["queue:Billing"], priority=4)
    page = ok(hf.get(API + "/tickets/"))
    assert set(page) == {"page_info", "data", "filters"}
    assert set(page["page_info"]) == {
        "count",
        "last_index",
        "page_count",
        "start_index",
        "end_index",
    }
    assert page["filters"] == {"status": "_all", "category": "_all", "q": "", "sort": "updated"}
    assert page["page_info"]["count"] == len(page["data"]) <= 10
    assert page["data"][0]["id"] == b["id"] and "updates" not in page["data"][0]
    check_detail({**page["data"][0], "updates": []})
    ids_only = ok(hf.get(API + "/tickets/", minify_response="true"))["data"]
    assert ids_only[:2] == [b["id"], a["id"]]
    with_updates = ok(hf.get(API + "/tickets/", show_updates="1", size=2))
    assert len(with_updates["data"]) == 2 and with_updates["data"][0]["updates"]
    billing = ok(hf.get(API + "/tickets/", status="_all", category=ids["queue:Billing"]))
    assert {t["category"]["name"] for t in billing["data"]} == {"Billing"}
    critical = ok(hf.get(API + "/tickets/", status="_all", q='priority:"CRITICAL","MEDIUM"'))
    assert {t["priority"]["name"] for t in critical["data"]} <= {"Critical", "Medium"}
    assert b["id"] in [t["id"] for t in critical["data"]]
    tagged = ok(hf.get(API + "/tickets/", status="_all", q='tag:"routine_checks"+status:"Open"'))
    assert [t["id"] for t in tagged["data"]] == [a["id"]]
    by_id = ok(hf.get(API + "/tickets/", status="_all", q=f"id:MH{a['id']:08d},{b['id']}"))
    assert sorted(t["id"] for t in by_id["data"]) == sorted([a["id"], b["id"]])
    contact = ok(
        hf.get(API + "/tickets/", status="_all", q="contact: \u201cjames@customer.test\u201d")
    )
    assert all(t["user"]["email"] == "james@customer.test" for t in contact["data"])
    today = ok(hf.get(API + "/tickets/", status="_all", q='created-on-or-after:"2019/01/25"'))
    assert today["page_info"]["last_index"] >= 2
    none_before = ok(hf.get(API + "/tickets/", status="_all", q='created-before:"2019/01/25"'))
    assert none_before["data"] == []
    pending = ok(hf.get(API + "/tickets/", status="_pending", q='""'))
    assert all(t["status"]["behavior"] == "pending" for t in pending["data"])
    paged = ok(hf.get(API + "/tickets/", size=1, page=2))
    assert paged["page_info"]["start_index"] == 2 and paged["page_info"]["count"] == 1
    assert paged["page_info"]["page_count"] == paged["page_info"]["last_index"]
    by_subject = ok(hf.get(API + "/tickets/", sort="subjecta", size=50))["data"]
    subjects = [t["subject"].lower() for t in by_subject]
    assert subjects == sorted(subjects)
    projected = ok(
        hf.get(HF + "/api/json/1.1/tickets/", fields="id,last_user_reply_at,last_staff_reply_at")
    )
    assert all(
        set(t) == {"id", "last_user_reply_at", "last_staff_reply_at"} for t in projected["data"]
    )
    for q in ('"Team Name":"arsenal"', "group:--none", 'last-closed-on-or-after:"2019/01/25"'):
        refused = hf.get(API + "/tickets/", status="_all", q=q)
        assert refused.status_code == 400 and refused.json()["error"][0]["field"] == "q"
    assert hf.get(API + "/tickets/", size=51).status_code == 400


def test_list_search_keys_of_the_document(api: Api, hf: HappyFox, ids: dict) -> None:
    """The `q` keys of topic 2.1 the Tickiti criteria lack, each walked with the document's
    example forms (our field names): unresponded, breached, has_attachments, duedate, the
    last-reply dates and custom fields by label, text, number, date and multiple choice."""
    marker = "qk" + uuid.uuid4().hex[:10]
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    a = make(
        hf,
        ids,
        f"{marker} alpha",
        due_date=today.strftime("%d/%m/%Y"),
        **{"t-cf-5": 300, "t-cf-1": "Enterprise company", "t-cf-3": [2, 3]},
        **{"t-cf-4": "2019-08-23"},
    )
    b = make(hf, ids, f"{marker} beta", due_date=yesterday.strftime("%d/%m/%Y"))
    ok(hf.post(API + f"/ticket/{b['id']}/staff_update/", {"staff": ids["alice@helpdesk.test"],
                                                          "html": "<p>On it</p>"}))  # fmt: skip
    c = ok(
        httpx.post(
            hf.api.base + API + "/tickets/",
            data={"category": str(ids["queue:Inbox"]), "name": "Name", "text": "see file",
                  "subject": f"{marker} gamma", "email": "john@customer.test"},
            files=[("attachments", ("Second_screen.png", PNG, "image/png"))],
            auth=hf.auth,
            timeout=60,
        )
    )  # fmt: skip
    late = api.rows("SELECT id FROM tickets WHERE number = ?", c["id"])[0][0]
    engine = make_engine(api.daemon.db_url)
    try:
        with session_scope(engine) as session:
            ticket = session.get(Ticket, late)
            assert ticket is not None
            events.record(
                session, ticket, EventType.sla_breach, {"target": "first_response"},
                change=store_change(),
            )  # fmt: skip
    finally:
        engine.dispose()

    def found(q: str) -> set[int]:
        page = ok(hf.get(API + "/tickets/", status="_all", q=f"{marker} {q}", size=50))
        return {t["id"] for t in page["data"]}

    day = today.strftime("%Y/%m/%d")
    expected = {
        "unresponded:true": {a["id"], c["id"]},
        "unresponded:false": {b["id"]},
        "breached:true": {c["id"]},
        "breached:false": {a["id"], b["id"]},
        "has_attachments:true": {c["id"]},
        "has_attachments:false": {a["id"], b["id"]},
        "duedate:today": {a["id"]},
        "duedate:yesterday": {b["id"]},
        "duedate:tomorrow": set(),
        "duedate:overdue": {b["id"]},
        'duedate:"next 7 days"': {a["id"]},
        'duedate:"today","yesterday"': {a["id"], b["id"]},
        f'last-staff-replied-on:"{day}"': {b["id"]},
        f'last-staff-replied-before:"{day}"': set(),
        f'last-staff-replied-on-or-before:"{day}"': {b["id"]},
        f'last-contact-replied-on-or-after:"{day}"': {a["id"], b["id"], c["id"]},
        f'last-contact-replied-after:"{day}"': set(),
        'Seats:"300"': {a["id"]},
        '"City":"Enterprise company"': {a["id"]},
        '"Renewal":"08/23/2019"': {a["id"]},
        '"Cities":"Chennai","Bengaluru"': {a["id"]},
        '"Cities":"Bengaluru"': set(),
        'seats:"300" "City":"Enterprise company"': {a["id"]},
    }
    for q, tickets in expected.items():
        assert found(q) == tickets, q
    for q in ("duedate:someday", 'Seats:"many"', "unresponded:maybe"):
        refused = hf.get(API + "/tickets/", status="_all", q=q)
        assert refused.status_code == 400 and refused.json()["error"][0]["field"] == "q", q


# -- 7-16: the ticket actions --------------------------------------------------------------------


def test_staff_update_and_private_note(api: Api, hf: HappyFox, ids: dict) -> None:
    staff = ids["alice@helpdesk.test"]
    closed = 3  # our "Closed" status id (the document's example uses its own 4)
    t = make(hf, ids, "staff update")
    example = {
        "staff": staff,
        "status": closed,
        "html": "<p>Example reply</p>",
        "t-cf-3": [1, 2],
        "c-cf-3": 1,
    }
    refused = hf.post(API + f"/ticket/{t['id']}/staff_update/", example)
    assert refused.status_code == 400, refused.text
    assert set(refused.json()["error"]) == {"t-cf-2"}  # State must be set before closing
    assert isinstance(refused.json()["error"]["t-cf-2"], str)
    done = ok(
        hf.post(
            API + f"/ticket/{t['id']}/staff_update/",
            {**example, "t-cf-2": "Karnataka", "time_spent": 12},
        )
    )
    check_detail(done)
    assert done["status"]["name"] == "Closed" and done["status"]["behavior"] == "completed"
    assert done["time_spent"] == 12 and done["last_staff_reply_at"] is not None
    assert field(done, "State")["value"] == "Karnataka"
    last = done["updates"][-1]
    assert last["by"] == {
        "email": "alice@helpdesk.test",
        "type": "staff",
        "id": staff,
        "name": "Alice Agent",
    }
    reply = next(u for u in done["updates"] if u["message"] and u["by"]["type"] == "staff")
    assert reply["message"]["text"].strip() == "Example reply"
    assert reply["status_change"]["new_name"] == "Closed"
    assert sum(u["time_spent"] for u in done["updates"]) == 12
    # update_customer defaults to false: the reply is recorded, not mailed to the contact
    ticket_id = api.rows("SELECT id FROM tickets WHERE number = ?", t["id"])[0][0]
    mailed = "SELECT count(*) FROM outbox WHERE ticket_id = ? AND kind = 'agent_response'"
    assert api.rows(mailed, ticket_id) == [(0,)]
    again = ok(
        hf.post(
            API + f"/ticket/{t['id']}/staff_update/",
            {"staff": staff, "plaintext": "mailed this time", "update_customer": True, "status": 1},
        )
    )
    assert again["status"]["name"] == "Open"
    assert api.rows(mailed, ticket_id) == [(1,)]
    note = ok(
        hf.post(
            API + f"/ticket/{t['id']}/staff_pvtnote/",
            {
                "staff": staff,
                "plaintext": "internal only",
                "priority": 1,
                "assignee": ids["bob@helpdesk.test"],
            },
        )
    )
    last = note["updates"][-1]
    assert last["message"]["message_type"] == "private_note"
    assert last["message"]["customer_updated"] is False
    assert note["priority"]["name"] == "Low"
    assert note["assigned_to"]["email"] == "bob@helpdesk.test"
    assert any(
        u["assignee_change"] and u["assignee_change"]["new"] == ids["bob@helpdesk.test"]
        for u in note["updates"]
    )
    stale = hf.post(
        API + f"/ticket/{t['id']}/staff_update/",
        {"staff": staff, "plaintext": "late", "last_staff_message": 1},
    )
    assert stale.status_code == 409 and set(stale.json()) == {"error"}
    unknown = hf.post(API + f"/ticket/{t['id']}/staff_update/", {"staff": 99999})
    assert unknown.status_code == 400 and set(unknown.json()["error"]) == {"staff"}


def test_contact_reply(api: Api, hf: HappyFox, ids: dict) -> None:
    t = make(hf, ids, "contact reply")
    user = t["user"]["id"]
    sample = {  # the document's sample payload (its stray quote removed), our addresses
        "text": "This is a response sent by the user via API",
        "cc": "exampleaddress@customer.test",
        "bcc": "exampleaddress-2@customer.test",
        "user": user,
    }
    after = ok(hf.post(API + f"/ticket/{t['id']}/user_reply/", sample))
    assert after["messages_count"] == 2 and after["last_user_reply_at"] is not None
    last = after["updates"][-1]
    assert last["message"]["text"] == sample["text"]
    assert last["by"]["type"] == "user" and last["by"]["id"] == user
    missing = hf.post(API + f"/ticket/{t['id']}/user_reply/", {"user": user})
    assert missing.status_code == 400
    assert missing.json() == {"error": [{"field": "text", "errors": ["This field is required."]}]}


def test_custom_fields_tags_and_cf_changes(hf: HappyFox, ids: dict) -> None:
    t = make(hf, ids, "fields and tags", tags="test")
    staff = ids["alice@helpdesk.test"]
    after = ok(
        hf.post(
            API + f"/ticket/{t['id']}/update_custom_fields/",
            {"staff": staff, "t-cf-1": "Chennai", "t-cf-5": 3},
        )
    )
    assert field(after, "City")["value"] == "Chennai" and field(after, "Seats")["value"] == 3
    assert all(u["custom_field_change"] is None for u in after["updates"])
    with_cf = ok(hf.get(API + f"/ticket/{t['id']}/", show_cf_changes="true"))
    changes = [c for u in with_cf["updates"] for c in (u["custom_field_change"] or [])]
    assert {"id": 1, "name": "City", "old": None, "new": "Chennai"} in changes
    tagged = ok(
        hf.post(
            API + f"/ticket/{t['id']}/update_tags/", {"add": "test1, example", "remove": "test"}
        )
    )
    assert sorted(tagged["tags"].split(", ")) == ["example", "test1"]
    wrong = hf.post(
        API + f"/ticket/{t['id']}/update_custom_fields/", {"staff": staff, "t-cf-5": "many"}
    )
    assert wrong.status_code == 400 and set(wrong.json()["error"]) == {"t-cf-5"}


def test_subscribe_unsubscribe(hf: HappyFox, ids: dict) -> None:
    t = make(hf, ids, "subscribers")
    alice, bob, carol = (ids[f"{n}@helpdesk.test"] for n in ("alice", "bob", "carol"))
    added = ok(
        hf.post(API + f"/ticket/{t['id']}/subscribe/", {"data": [carol, bob], "staff_id": alice})
    )
    assert added == {
        "message": "Alice Agent, Carol Jones, Bob Builder, Subscribers added to ticket"
    }
    now = ok(hf.get(API + f"/ticket/{t['id']}/"))
    assert sorted(s["id"] for s in now["subscribers"]) == sorted([alice, bob, carol])
    assert {
        "first_name": "Carol",
        "last_name": "Jones",
        "id": carol,
        "email": "carol@helpdesk.test",
    } in now["subscribers"]
    gone = ok(hf.post(API + f"/ticket/{t['id']}/unsubscribe/", {"staff_id": alice}))
    assert gone == {"message": "Alice Agent unsubscribed"}
    now = ok(hf.get(API + f"/ticket/{t['id']}/"))
    assert alice not in [s["id"] for s in now["subscribers"]]


def test_forward_move_delete(api: Api, hf: HappyFox, ids: dict) -> None:
    admin = api.token("all")
    t = make(hf, ids, "forward move delete")
    alice, bob = ids["alice@helpdesk.test"], ids["bob@helpdesk.test"]
    forwarded = ok(
        hf.post(
            API + f"/ticket/{t['id']}/forward/",
            {"staff_id": alice, "subject": "test", "to": "james@partner.test, john@partner.test"},
        )
    )
    assert forwarded == {"message": f"Successfully forwarded the ticket #MH{t['id']:08d}"}
    events = native(api, admin, f"/api/v1/tickets/{t['id']}/history")["events"]
    fwd = next(e for e in events if e["type"] == "forwarded")
    assert fwd["data"]["to"] == ["james@partner.test", "john@partner.test"]
    assert fwd["actor"]["email"] == "alice@helpdesk.test"
    billing = ids["queue:Billing"]
    moved = ok(
        hf.post(
            API + f"/ticket/{t['id']}/move/",
            {
                "staff_id": alice,
                "target_category_id": billing,
                "move_note": " move note text ",
                "assign_to": bob,
            },
        )
    )
    assert moved == {"status_code": 200, "message": "moved ticket to Billing"}
    after = ok(hf.get(API + f"/ticket/{t['id']}/"))
    assert after["category"]["id"] == billing and after["assigned_to"]["id"] == bob
    assert any(
        u["category_change"] and u["category_change"]["new"] == billing for u in after["updates"]
    )
    assert any(u["message"] and u["message"]["text"] == "move note text" for u in after["updates"])
    assert any(u["message"] and u["message"]["forward_list"] for u in after["updates"])
    deleted = ok(hf.post(API + f"/ticket/{t['id']}/delete/", {"staff_id": alice}))
    assert deleted == {"deleted_ticket": f"#MH{t['id']:08d}"}
    assert hf.get(API + f"/ticket/{t['id']}/").status_code == 404
    gone = httpx.get(
        api.base + f"/api/v1/tickets/{t['id']}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert gone.status_code == 404


# -- 18: custom fields ---------------------------------------------------------------------------


def test_list_ticket_custom_fields(hf: HappyFox, ids: dict) -> None:
    fields = ok(hf.get(API + "/ticket_custom_fields/"))
    assert [f["id"] for f in fields] == [1, 2, 3, 4, 5]
    keys = {
        "name",
        "depends_on_choice",
        "required",
        "compulsory_on_completed",
        "choices",
        "compulsory_on_move",
        "type",
        "id",
        "categories",
        "visible_to_staff_only",
    }
    assert all(set(f) == keys for f in fields)
    assert fields[1]["compulsory_on_completed"] is True and fields[0]["choices"] is None
    assert fields[2]["choices"][0] == {"text": "Bengaluru", "id": 1, "dependant_fields": []}
    assert {"category": ids["queue:Inbox"], "order": 1} in fields[0]["categories"]
    assert ok(hf.get(API + "/user_custom_fields/")) == []


def test_same_ticket_same_history_and_notices_as_native(api: Api, hf: HappyFox, ids: dict) -> None:
    """One ticket opened through HappyFox and one through /api/v1 with the same content: the
    same events, the same notices, the same ticket object apart from its number and times."""
    admin = api.token("all")
    made = make(hf, ids, "twin", text="Twin message")
    other = httpx.post(
        api.base + "/api/v1/tickets",
        json={
            "originator_email_address": "james@customer.test",
            "use_passed_originator_as_responder": True,
            "data": {"subject": "twin", "content": "Twin message"},
        },
        headers={"Authorization": f"Bearer {admin}"},
    ).json()["data"]
    mine, theirs = made["id"], other["ticket_number"]

    def events(number: int) -> list[tuple[str, str, str]]:
        found = native(api, admin, f"/api/v1/tickets/{number}/history")["events"]
        return [(e["type"], e["channel"], e["actor"]["kind"]) for e in found]

    def notices(number: int) -> list[tuple[str, str]]:
        rows = api.rows(
            "SELECT kind, primary_rcpt FROM outbox WHERE ticket_id = "
            "(SELECT id FROM tickets WHERE number = ?) ORDER BY kind, primary_rcpt",
            number,
        )
        return [(k, r) for k, r in rows]

    assert events(mine) == events(theirs) and events(mine)[0][0] == "created"
    assert notices(mine) == notices(theirs)
    assert ("acknowledgement", "james@customer.test") in notices(mine)
    skip = {"id", "number", "created_at", "updated_at", "responses", "watchers", "secure_id"}
    a, b = (
        native(api, admin, f"/api/v1/tickets/{mine}"),
        native(api, admin, f"/api/v1/tickets/{theirs}"),
    )
    assert {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }
    assert [r["plain_text"] for r in a["responses"]] == [r["plain_text"] for r in b["responses"]]
    assert [r["created_by_email"] for r in a["responses"]] == [
        r["created_by_email"] for r in b["responses"]
    ]
    # and the native ticket reads through HappyFox like the HappyFox one
    ha, hb = ok(hf.get(API + f"/ticket/{mine}/")), ok(hf.get(API + f"/ticket/{theirs}/"))
    check_detail(hb)
    volatile = {
        "id",
        "display_id",
        "created_at",
        "last_modified",
        "last_updated_at",
        "last_user_reply_at",
        "updates",
        "user",
    }
    assert {k: v for k, v in ha.items() if k not in volatile} == {
        k: v for k, v in hb.items() if k not in volatile
    }
