"""Custom fields and time entries over real HTTP, the real CLI and real SMTP against one running
daemon: the routes and commands with their errors, `required_to_close` on every channel, and
the events each change leaves in the history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailhelpdesk.mail.tokens import ReplyToken, reply_address
from tests.helpers import make_mail
from tests.http.conftest import HIGH_LIMIT, Api, assert_error, running_api, unique

ALICE = "alice@helpdesk.test"
FIELDS = """
[[custom_fields]]
name = "product"
label = "Product"
type = "choice"
choices = ["Widget", "Gadget"]
required_to_close = true

[[custom_fields]]
name = "order"
type = "number"

[[custom_fields]]
name = "platforms"
type = "multi_choice"
choices = ["iOS", "Android"]

[[custom_fields]]
name = "vip"
type = "toggle"

[[custom_fields]]
name = "renewal"
type = "date"

[[custom_fields]]
name = "notes"
type = "text"
"""


NOTICES = "[outbound]\nmax_auto_notices_per_window = 100000\n"


@pytest.fixture(scope="module")
def fapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("fields"), HIGH_LIMIT + FIELDS + NOTICES) as served:
        yield served


@pytest.fixture(scope="module")
def token(fapi: Api) -> str:
    return fapi.token("tickets:read", "tickets:write")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(api: Api, token: str, subject: str = "Printer on fire") -> int:
    resp = api.post(
        "/api/v1/tickets",
        {
            "originator_email_address": "priya@customer.test",
            "data": {"subject": subject, "content": "It burns."},
        },
        token=token,
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["data"]["ticket_number"])


def _patch(api: Api, token: str, number: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.patch(
        f"{api.base}/api/v1/tickets/{number}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **_auth(token)},
        timeout=30,
    )


def _get(api: Api, token: str, path: str) -> httpx.Response:
    return httpx.get(api.base + path, headers=_auth(token), timeout=30)


def _show(api: Api, token: str, number: int) -> dict[str, Any]:
    resp = _get(api, token, f"/api/v1/tickets/{number}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def _events(api: Api, token: str, number: int, kind: str) -> list[dict[str, Any]]:
    resp = _get(api, token, f"/api/v1/tickets/{number}/history")
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["data"]["events"] if e["type"] == kind]


def _outbox(api: Api, number: int, kind: str) -> list[str]:
    ticket_id = api.rows("SELECT id FROM tickets WHERE number = ?", number)[0][0]
    return [
        r[0]
        for r in api.rows(
            "SELECT primary_rcpt FROM outbox WHERE ticket_id = ? AND kind = ?", ticket_id, kind
        )
    ]


def _settle(api: Api, timeout: float = 60) -> None:
    """Until the daemon has nothing to apply or send. (Daemon.wait_idle(sending=True) compares
    `idle` with `== 0`, which False passes, so it returns at once while work is pending.)"""
    deadline = time.monotonic() + timeout
    while api.daemon.health()["data"]["idle"] is not True:
        assert time.monotonic() < deadline, "the daemon did not become idle"
        time.sleep(0.05)


def _agent_mail(api: Api, number: int, body: str) -> None:
    """Alice answering her notice of ticket `number` by SMTP, to her signed reply address."""
    alice_id, key = api.rows("SELECT id, reply_key FROM agents WHERE email = ?", ALICE)[0]
    to = reply_address(
        b"test-secret-not-for-production",
        "support@helpdesk.test",
        ReplyToken(number, alice_id, agent_key=key),
    )
    raw = make_mail(
        subject=f"Re: [#{number}] Printer on fire",
        sender=f"Alice Agent <{ALICE}>",
        to=to,
        body=body,
        message_id=f"<{time.time_ns()}.fields@helpdesk.test>",
    )
    api.daemon.send(raw, mail_from=ALICE, rcpt=(to,))
    _settle(api)


# -- definitions ------------------------------------------------------------------------------


def test_custom_field_definitions_are_listed(fapi: Api, token: str) -> None:
    """GET /api/v1/custom_fields lists the config's definitions in order, label defaulting to name."""
    resp = _get(fapi, token, "/api/v1/custom_fields")
    assert resp.status_code == 200, resp.text
    fields = resp.json()["data"]["custom_fields"]
    assert [f["name"] for f in fields] == [
        "product",
        "order",
        "platforms",
        "vip",
        "renewal",
        "notes",
    ]
    assert fields[0] == {
        "name": "product",
        "label": "Product",
        "type": "choice",
        "choices": ["Widget", "Gadget"],
        "required_to_close": True,
    }
    assert fields[1]["label"] == "order" and fields[1]["required_to_close"] is False


def test_custom_field_definitions_need_tickets_read(fapi: Api) -> None:
    """Without a token it is 401, with a token lacking tickets:read 403."""
    assert_error(httpx.get(fapi.base + "/api/v1/custom_fields"), 401, "unauthenticated")
    assert_error(_get(fapi, fapi.token("send-email"), "/api/v1/custom_fields"), 403, "forbidden")


# -- values by PATCH -----------------------------------------------------------------------------


def test_patch_sets_and_clears_values_each_an_event(fapi: Api, token: str) -> None:
    """Values of every type are stored normalised, shown in the ticket object, cleared by null,
    and each change is one custom_field event with from and to."""
    number = _create(fapi, token)
    body = {
        "custom_fields": {
            "product": "widget",
            "order": 7731,
            "platforms": ["Android", "iOS", "android"],
            "vip": True,
            "renewal": "2027-01-31",
            "notes": "  called twice ",
        }
    }
    resp = _patch(fapi, token, number, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["custom_fields"] == {
        "notes": "called twice",
        "order": 7731,
        "platforms": ["Android", "iOS"],
        "product": "Widget",
        "renewal": "2027-01-31",
        "vip": True,
    }
    resp = _patch(fapi, token, number, {"custom_fields": {"order": None, "vip": False}})
    assert resp.status_code == 200, resp.text
    shown = _show(fapi, token, number)["custom_fields"]
    assert "order" not in shown and shown["vip"] is False
    changes = [
        (e["data"]["name"], e["data"]["from"], e["data"]["to"])
        for e in _events(fapi, token, number, "custom_field")
    ]
    assert ("order", None, 7731) in changes and ("order", 7731, None) in changes
    assert ("vip", True, False) in changes and len(changes) == 8
    assert {e["channel"] for e in _events(fapi, token, number, "custom_field")} == {"api"}
    same = _patch(fapi, token, number, {"custom_fields": {"product": "Widget"}})
    assert same.status_code == 200 and len(_events(fapi, token, number, "custom_field")) == 8


@pytest.mark.parametrize(
    ("values", "field", "needle"),
    [
        ({"product": "Sprocket"}, "custom_fields.product", "not one of"),
        ({"colour": "red"}, "custom_fields.colour", "is not a custom field"),
        ({"order": "7731"}, "custom_fields.order", "expected a number"),
        ({"order": True}, "custom_fields.order", "expected a number"),
        ({"vip": "yes"}, "custom_fields.vip", "expected true or false"),
        ({"renewal": "31.01.2027"}, "custom_fields.renewal", "YYYY-MM-DD"),
        ({"platforms": "iOS"}, "custom_fields.platforms", "expected a list"),
        ({"platforms": ["iOS", "Symbian"]}, "custom_fields.platforms", "not one of"),
        ({"notes": 5}, "custom_fields.notes", "expected text"),
    ],
)
def test_patch_refuses_bad_values_with_nothing_changed(
    fapi: Api, token: str, values: dict[str, Any], field: str, needle: str
) -> None:
    """A bad value, an unknown field, a wrong type or a choice not in choices is 422 naming
    `custom_fields.<name>`, and the other changes of the PATCH are not made either."""
    number = _create(fapi, token)
    resp = _patch(
        fapi, token, number, {"custom_fields": {"notes": "kept?", **values}, "priority": "High"}
    )
    body = assert_error(resp, 422, "validation_failed")
    assert needle in body["errors"][field][0]
    shown = _show(fapi, token, number)
    assert shown["custom_fields"] == {} and shown["priority"] != "30"
    assert _events(fapi, token, number, "custom_field") == []


def test_patch_errors_404_and_403(fapi: Api, token: str) -> None:
    """An unknown ticket is 404; a token without tickets:write is 403."""
    assert_error(
        _patch(fapi, token, 999_999, {"custom_fields": {"order": 1}}), 404, "ticket_not_found"
    )
    number = _create(fapi, token)
    assert_error(
        _patch(fapi, fapi.token("tickets:read"), number, {"custom_fields": {"order": 1}}),
        403,
        "forbidden",
    )


# -- required_to_close ---------------------------------------------------------------------------


def test_api_close_needs_the_required_field(fapi: Api, token: str) -> None:
    """Closing without `product` is 422 naming custom_fields.product and changes nothing; with
    it set in the same PATCH the ticket closes and the customer's closing notice goes out once."""
    number = _create(fapi, token)
    refused = _patch(fapi, token, number, {"status": "closed", "custom_fields": {"order": 5}})
    body = assert_error(refused, 422, "validation_failed")
    assert body["errors"] == {"custom_fields.product": ["is required to close the ticket"]}
    shown = _show(fapi, token, number)
    assert shown["status"] == "open" and shown["custom_fields"] == {}
    done = _patch(fapi, token, number, {"status": "closed", "custom_fields": {"product": "Gadget"}})
    assert done.status_code == 200, done.text
    assert done.json()["data"]["status"] == "closed"
    _settle(fapi)
    assert _outbox(fapi, number, "ticket_closed") == ["priya@customer.test"]


def test_cli_close_needs_the_required_field(fapi: Api, token: str) -> None:
    """`ticket update --status closed` fails naming the field; `--field product=Widget` with it
    closes the ticket, and the closing notice goes out once."""
    number = _create(fapi, token)
    refused = fapi.daemon.cli("ticket", "update", str(number), "--status", "closed", check=False)
    assert refused.returncode != 0
    assert "custom_fields.product" in refused.stderr and "required to close" in refused.stderr
    assert _show(fapi, token, number)["status"] == "open"
    done = fapi.daemon.cli(
        "ticket",
        "update",
        str(number),
        "--status",
        "closed",
        "--field",
        "product=Widget",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = _show(fapi, token, number)
    assert shown["status"] == "closed" and shown["custom_fields"] == {"product": "Widget"}
    _settle(fapi)
    assert _outbox(fapi, number, "ticket_closed") == ["priya@customer.test"]


def test_cli_field_errors(fapi: Api, token: str) -> None:
    """`--field` with an unknown name, a bad value or no `=` fails and changes nothing; an
    unknown ticket is an error too; `NAME=` clears."""
    number = _create(fapi, token)
    for pair, needle in (
        ("colour=red", "is not a custom field"),
        ("order=lots", "expected a number"),
        ("product=Sprocket", "not one of"),
        ("order", "NAME=VALUE"),
    ):
        bad = fapi.daemon.cli("ticket", "update", str(number), "--field", pair, check=False)
        assert bad.returncode != 0 and needle in bad.stderr, (pair, bad.stderr)
    assert _show(fapi, token, number)["custom_fields"] == {}
    ok = fapi.daemon.cli(
        "ticket", "update", str(number), "--field", "order=12", "--field", "vip=yes", check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert _show(fapi, token, number)["custom_fields"] == {"order": 12, "vip": True}
    fapi.daemon.cli("ticket", "update", str(number), "--field", "order=")
    assert _show(fapi, token, number)["custom_fields"] == {"vip": True}
    unknown = fapi.daemon.cli("ticket", "update", "999999", "--field", "order=1", check=False)
    assert unknown.returncode != 0 and "no ticket 999999" in unknown.stderr


def test_mail_close_needs_the_required_field(fapi: Api, token: str) -> None:
    """`#status closed` by mail without the field is refused whole: one command_error notice
    to Alice, the ticket stays open and nothing else in the mail is applied; with `#field` in
    the same mail it closes, and the customer's closing notice goes out once."""
    number = _create(fapi, token)
    _settle(fapi)
    _agent_mail(fapi, number, "#time 10m\n#status closed\n\nDone here.\n")
    assert _outbox(fapi, number, "command_error") == [ALICE]
    shown = _show(fapi, token, number)
    assert shown["status"] == "open" and shown["time_spent_minutes"] == 0
    assert _events(fapi, token, number, "time_entry") == []
    assert _outbox(fapi, number, "ticket_closed") == []
    _agent_mail(fapi, number, "#status closed\n#field product Widget\n")
    shown = _show(fapi, token, number)
    assert shown["status"] == "closed" and shown["custom_fields"] == {"product": "Widget"}
    assert _outbox(fapi, number, "ticket_closed") == ["priya@customer.test"]
    assert _outbox(fapi, number, "command_error") == [ALICE]


def test_mail_field_and_time_are_agent_events_by_smtp(fapi: Api, token: str) -> None:
    """`#field` and `#time` land as custom_field and time_entry events with actor Alice (agent)
    and channel smtp; the entry is Alice's, billable, with its text."""
    number = _create(fapi, token)
    _settle(fapi)
    _agent_mail(fapi, number, "#field order 7731\n#time 1h30m billable Called back\n#time 15m\n")
    (field_event,) = _events(fapi, token, number, "custom_field")
    assert field_event["data"] == {"name": "order", "from": None, "to": 7731}
    times = _events(fapi, token, number, "time_entry")
    assert [(e["data"]["minutes"], e["data"]["billable"]) for e in times] == [
        (90, True),
        (15, False),
    ]
    for event in (field_event, *times):
        assert event["channel"] == "smtp"
        assert event["actor"]["kind"] == "agent" and event["actor"]["email"] == ALICE
    listed = _get(fapi, token, f"/api/v1/tickets/{number}/time_entries").json()["data"]
    assert listed["time_entries"][0]["description"] == "Called back"
    assert listed["time_entries"][0]["agent_email"] == ALICE
    assert listed["summary"] == {"total_minutes": 105, "billable_minutes": 90}
    assert _show(fapi, token, number)["time_spent_minutes"] == 105


def test_mail_bad_field_is_refused(fapi: Api, token: str) -> None:
    """A `#field` naming no field, or with a value its type refuses, is one command_error
    notice and nothing applied."""
    number = _create(fapi, token)
    _settle(fapi)
    _agent_mail(fapi, number, "#field order many\n#field vip yes\n")
    _agent_mail(fapi, number, "#field colour red\n")
    assert _outbox(fapi, number, "command_error") == [ALICE, ALICE]
    assert _show(fapi, token, number)["custom_fields"] == {}


# -- time entries -------------------------------------------------------------------------------


def test_time_entries_post_and_list(fapi: Api, token: str) -> None:
    """POST records an entry (defaults: not billable, today, no agent for an ownerless token)
    and GET lists them with the summary; each is a time_entry event by api."""
    number = _create(fapi, token)
    path = f"/api/v1/tickets/{number}/time_entries"
    first = fapi.post(
        path,
        {
            "minutes": 25,
            "billable": True,
            "description": "Replaced toner",
            "agent_email": ALICE,
            "date": "2026-11-20",
        },
        token=token,
        key=unique(),
    )
    assert first.status_code == 200, first.text
    entry = first.json()["data"]
    assert (entry["minutes"], entry["billable"], entry["agent_email"], entry["date"]) == (
        25,
        True,
        ALICE,
        "2026-11-20",
    )
    second = fapi.post(path, {"minutes": 10}, token=token)
    assert second.status_code == 200, second.text
    assert second.json()["data"]["billable"] is False
    assert second.json()["data"]["agent_email"] is None
    listed = _get(fapi, token, path).json()["data"]
    assert [e["minutes"] for e in listed["time_entries"]] == [25, 10]
    assert listed["summary"] == {"total_minutes": 35, "billable_minutes": 25}
    assert _show(fapi, token, number)["time_spent_minutes"] == 35
    events = _events(fapi, token, number, "time_entry")
    assert [e["data"]["minutes"] for e in events] == [25, 10]
    assert {e["channel"] for e in events} == {"api"}


def test_time_entries_errors(fapi: Api, token: str) -> None:
    """404 for an unknown ticket (GET and POST), 422 naming the field for a bad entry, 403
    without the ability, and nothing recorded by a refused POST."""
    assert_error(_get(fapi, token, "/api/v1/tickets/999999/time_entries"), 404, "ticket_not_found")
    assert_error(
        fapi.post("/api/v1/tickets/999999/time_entries", {"minutes": 5}, token=token),
        404,
        "ticket_not_found",
    )
    number = _create(fapi, token)
    path = f"/api/v1/tickets/{number}/time_entries"
    for body, field in (
        ({"minutes": 0}, "minutes"),
        ({"minutes": 10_081}, "minutes"),
        ({}, "minutes"),
        ({"minutes": 5, "agent_email": "nobody@helpdesk.test"}, "agent_email"),
        ({"minutes": 5, "agent_email": "not an address"}, "agent_email"),
        ({"minutes": 5, "date": "yesterday"}, "date"),
    ):
        resp = assert_error(fapi.post(path, body, token=token), 422, "validation_failed")
        assert field in resp["errors"], (body, resp)
    assert_error(
        fapi.post(path, {"minutes": 5}, token=fapi.token("tickets:read")), 403, "forbidden"
    )
    assert_error(_get(fapi, fapi.token("send-email"), path), 403, "forbidden")
    assert _get(fapi, token, path).json()["data"]["summary"]["total_minutes"] == 0


def test_time_cli_add_and_list(fapi: Api, token: str) -> None:
    """`time add` records an entry (as the agent with --as), `time list --json` shows it with
    the summary; an unknown ticket and a bad duration are errors."""
    number = _create(fapi, token)
    added = fapi.daemon.cli(
        "time",
        "add",
        str(number),
        "45",
        "--billable",
        "--note",
        "Remote session",
        "--as",
        ALICE,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    fapi.daemon.cli("time", "add", str(number), "5")
    listed = json.loads(fapi.daemon.cli("time", "list", str(number), "--json").stdout)
    assert [(e["minutes"], e["billable"], e["agent_email"]) for e in listed["time_entries"]] == [
        (45, True, ALICE),
        (5, False, None),
    ]
    assert listed["summary"] == {"total_minutes": 50, "billable_minutes": 45}
    text = fapi.daemon.cli("time", "list", str(number)).stdout
    assert "Remote session" in text and "total 50 min, billable 45 min" in text
    events = _events(fapi, token, number, "time_entry")
    assert events[0]["channel"] == "cli" and events[0]["actor"]["email"] == ALICE
    for args, needle in (
        (["time", "add", "999999", "5"], "no ticket 999999"),
        (["time", "list", "999999"], "no ticket 999999"),
        (["time", "add", str(number), "0"], "minutes"),
        (["time", "add", str(number), "5", "--as", "nobody@helpdesk.test"], "not an agent"),
    ):
        bad = fapi.daemon.cli(*args, check=False)
        assert bad.returncode != 0 and needle in bad.stderr, (args, bad.stderr)
