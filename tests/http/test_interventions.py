"""Interventions end to end (api-contract.md §4.9) over real HTTP against a running daemon, with a
real HTTP receiver on 127.0.0.1 standing in for the remote system: create (shape C), replay and
`intervention_uid_exists`, submit by API and by an agent's mail, the signed epilog, retries with
staff notes while the receiver fails or is down, `.final` from the remote's reply, and giving up."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhelpdesk.mail.tokens import ReplyToken, reply_address
from tests.helpers import free_port, make_mail
from tests.http.conftest import HIGH_LIMIT, Api, assert_error, running_api, unique
from tests.http_receiver import Receiver
from tests.test_roundtrip import wait_for

TOKEN = "remote-secret-7f3a"
SECRET = "test-secret-not-for-production"  # tests/helpers.py write_config
MAX_ATTEMPTS = 4


def write_templates(root: Path) -> None:
    folder = root / "interventions"
    folder.mkdir(parents=True)
    for name in ("discount_request", "refund"):
        (folder / f"{name}.private.txt").write_text(
            "Discount asked: {{order_price}} {{currency}} for {{uid}}.\n"
        )
    (folder / "discount_request.public.txt").write_text(
        "We are reviewing your {{currency}} discount request.\n"
    )
    (folder / "discount_request.final.txt").write_text(
        "Decision on {{ticket_number}}: code {{ code | default('none') }}.\n"
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("interventions")
    write_templates(tmp / "tpl")
    fields = """
fields = [
  { type = "text", name = "order_price", label = "Price in {{currency}}" },
  { type = "checkbox", name = "accept", label = "Accept" },
]"""
    config = f"""{HIGH_LIMIT}
[templates]
dir = "{tmp / "tpl"}"

[http_deliveries]
retry_base_s = 1
retry_max_s = 1
max_attempts = {MAX_ATTEMPTS}

[[interventions]]
name = "discount_request"
title = "Discount request {{{{uid}}}}"
queue = "Discounts"
remote_epilog_url = "http://127.0.0.1:{receiver.port}/epilog"
remote_timeout_s = 5
token = "{TOKEN}"
{fields}

[[interventions]]
name = "refund"
remote_epilog_url = "http://127.0.0.1:{free_port()}/nobody-listens"
token = "{TOKEN}"
{fields}
"""
    with running_api(tmp, extra_config=config) as served:
        yield served


def create(
    api: Api,
    token: str,
    uid: str,
    *,
    name: str = "discount_request",
    key: str | None = None,
    path: str = "/api/create_ticket",
    **extra: Any,
) -> Any:
    body = {
        "originator_email_address": "customer@example.test",
        "intervention": name,
        "uid": uid,
        "data": {"data": {"currency": "GBP", "order_price": 100, "accept": False}},
        **extra,
    }
    return api.post(path, body, token=token, key=key or unique())


def submit(
    api: Api,
    token: str,
    number: int,
    data: dict[str, Any],
    *,
    from_email: str = "alice@helpdesk.test",
    **extra: Any,
) -> Any:
    return api.post(
        "/api/v1/tickets/intervention/submit",
        {"ticket_number": number, "from_email": from_email, "data": data, **extra},
        token=token,
    )


def show(api: Api, token: str, number: int) -> dict[str, Any]:
    resp = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=token)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def state_of(api: Api, uid: str) -> str:
    (row,) = api.rows("SELECT state FROM intervention_instances WHERE uid = ?", uid)
    return str(row[0])


def verify(headers: dict[str, str], body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in headers["x-mailhelpdesk-signature"].split(","))
    expected = hmac.new(
        TOKEN.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


# -- create -----------------------------------------------------------------------------------------


def test_create_opens_ticket_in_its_queue_with_private_note_and_public_response(
    api: Api, admin: str
) -> None:
    resp = create(api, admin, "order-1001")
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"ticket_number", "ticket_id", "secure_id"}
    ticket = show(api, admin, data["ticket_number"])
    assert ticket["queue"] == "Discounts" and ticket["subject"] == "Discount request order-1001"
    private, public = ticket["responses"]
    assert (
        private["is_internal"]
        and private["plain_text"] == "Discount asked: 100 GBP for order-1001.\n"
    )
    assert (
        not public["is_internal"]
        and public["plain_text"] == "We are reviewing your GBP discount request.\n"
    )
    assert state_of(api, "order-1001") == "open"
    kinds = api.rows("SELECT kind, primary_rcpt FROM outbox WHERE ticket_id = ?", data["ticket_id"])
    assert sorted(kinds) == [
        ("agent_response", "customer@example.test"),
        ("new_ticket", "alice@helpdesk.test"),
    ]


def test_replay_and_uid_exists(api: Api, admin: str) -> None:
    key = unique()
    first = create(api, admin, "order-2002", key=key)
    assert first.status_code == 200, first.text
    replay = create(api, admin, "order-2002", key=key)
    assert replay.status_code == 200 and replay.headers.get("idempotent-replayed") == "true"
    assert replay.content == first.content
    number = first.json()["data"]["ticket_number"]
    for path in ("/api/create_ticket", "/api/v1/tickets"):
        body = assert_error(
            create(api, admin, "order-2002", path=path), 409, "intervention_uid_exists"
        )
        assert body["data"] == {"ticket_number": number}
    assert len(api.rows("SELECT id FROM intervention_instances WHERE uid = 'order-2002'")) == 1
    assert (
        len(api.rows("SELECT id FROM tickets WHERE subject = 'Discount request order-2002'")) == 1
    )


def test_concurrent_creates_with_one_uid_make_one_ticket(api: Api, admin: str) -> None:
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(create(api, admin, "order-race")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409, 409, 409, 409, 409], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()["data"]["ticket_number"]
    assert all(
        r.json()["data"] == {"ticket_number": winner} for r in results if r.status_code == 409
    )


def test_create_errors(api: Api, admin: str) -> None:
    body = assert_error(create(api, admin, "x-1", name="nope"), 422, "validation_failed")
    assert "intervention" in body["errors"]
    body = assert_error(create(api, admin, "x-2", queue_name="Billing"), 422, "validation_failed")
    assert "data.queue_name" in body["errors"]
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "c@example.test",
            "intervention": "refund",
            "data": {"data": {}},
        },
        token=admin,
        key=unique(),
    )
    assert "intervention" in assert_error(resp, 422, "validation_failed")["errors"]
    body = assert_error(
        create(api, admin, "x-3", data={"data": {"currency": "GBP"}}), 422, "validation_failed"
    )
    assert "order_price" in body["message"]  # the private template needs it


# -- submit by API and the epilog -------------------------------------------------------------------


def test_submit_by_api_sends_signed_epilog_and_posts_final(
    api: Api, admin: str, receiver: Receiver
) -> None:
    receiver.status, receiver.reply = 200, b'{"ok": true, "data": {"code": "SAVE10"}}'
    created = create(api, admin, "order-3003").json()["data"]
    resp = submit(
        api,
        admin,
        created["ticket_number"],
        {"order_price": 90, "accept": True},
        content="OK by me",
    )
    assert resp.status_code == 200, resp.text
    done = resp.json()["data"]
    assert done["state"] == "submitted" and done["epilog_queued"] is True
    (request,) = wait_for(what="the epilog", check=lambda: receiver.for_uid("order-3003"))
    headers, body = request.headers, request.body
    assert request.path == "/epilog" and verify(headers, body)
    assert headers["authorization"] == f"Bearer {TOKEN}"
    for stored in api.db_path.parent.glob(
        api.db_path.name + "*"
    ):  # the database, its WAL: sent, never stored
        assert TOKEN.encode() not in stored.read_bytes(), stored
    assert headers["idempotency-key"] == f"epilog:discount_request:order-3003:{done['response_id']}"
    assert headers["content-type"].startswith("application/json")
    sent = json.loads(body)
    assert set(sent) == {
        "ticket_id",
        "response_id",
        "ticket_number",
        "intervention",
        "uid",
        "data",
        "submitted_by_email",
        "submitted_at",
    }
    assert (sent["ticket_id"], sent["response_id"], sent["ticket_number"]) == (
        created["ticket_id"],
        done["response_id"],
        created["ticket_number"],
    )
    assert sent["data"] == {"currency": "GBP", "order_price": 90, "accept": True}
    assert sent["submitted_by_email"] == "alice@helpdesk.test" and sent["submitted_at"].endswith(
        "+00:00"
    )
    wait_for(what="completed", check=lambda: state_of(api, "order-3003") == "completed")
    ticket = show(api, admin, created["ticket_number"])
    note = next(r for r in ticket["responses"] if r["id"] == str(done["response_id"]))
    assert (
        note["is_internal"]
        and "OK by me" in note["plain_text"]
        and "Price in GBP: 90" in note["plain_text"]
    )
    final = ticket["responses"][-1]
    assert (
        not final["is_internal"]
        and final["plain_text"] == f"Decision on {created['ticket_number']}: code SAVE10.\n"
    )
    assert_error(submit(api, admin, created["ticket_number"], {}), 409, "intervention_not_open")
    api.daemon.wait_idle(sending=True)  # nothing queued: nothing more can be POSTed
    assert len(receiver.for_uid("order-3003")) == 1  # delivered once, never again


def test_submit_errors(api: Api, admin: str) -> None:
    number = create(api, admin, "order-4004").json()["data"]["ticket_number"]
    assert (
        "from_email"
        in assert_error(
            submit(api, admin, number, {}, from_email="cust@example.test"), 422, "validation_failed"
        )["errors"]
    )
    assert (
        "data.colour"
        in assert_error(submit(api, admin, number, {"colour": "red"}), 422, "validation_failed")[
            "errors"
        ]
    )
    assert (
        "data.accept"
        in assert_error(submit(api, admin, number, {"accept": "maybe"}), 422, "validation_failed")[
            "errors"
        ]
    )
    plain = api.post(
        "/api/tickets/create",
        {"originator_email_address": "c@example.test", "subject": "s", "content": "c"},
        token=admin,
    ).json()["data"]["ticket_number"]
    assert (
        "ticket_number"
        in assert_error(submit(api, admin, plain, {}), 422, "validation_failed")["errors"]
    )
    assert_error(submit(api, admin, 999999, {}), 404, "ticket_not_found")
    reader = api.token("tickets:read")
    assert_error(submit(api, reader, number, {}), 403, "forbidden")
    assert state_of(api, "order-4004") == "open"


def test_failures_become_staff_notes_then_delivered_after_recovery(
    api: Api, admin: str, receiver: Receiver
) -> None:
    created = create(api, admin, "order-5005").json()["data"]
    receiver.status = 500
    resp = submit(api, admin, created["ticket_number"], {"accept": True})
    assert resp.status_code == 200, resp.text
    wait_for(what="the first try", check=lambda: receiver.for_uid("order-5005"))
    receiver.stop()  # down: the next try cannot connect

    def notes() -> list[dict[str, Any]]:
        return [
            r
            for r in show(api, admin, created["ticket_number"])["responses"]
            if r["is_internal"] and "epilog call" in r["plain_text"]
        ]

    wait_for(what="two failure notes", check=lambda: len(notes()) >= 2)
    receiver.status, receiver.reply = 200, b'{"ok": true, "data": {"code": "LATE"}}'
    receiver.start()
    wait_for(
        what="delivery after recovery", check=lambda: state_of(api, "order-5005") == "completed"
    )
    got = receiver.for_uid("order-5005")
    assert [r.status for r in got] == [500, 200]  # one request per try that reached it
    assert (
        len({r.headers["idempotency-key"] for r in got}) == 1
    )  # retries repeat the key: dedupable
    assert len({r.body for r in got}) == 1 and all(verify(r.headers, r.body) for r in got)
    ((attempts, state),) = api.rows(
        "SELECT attempts, state FROM http_deliveries WHERE ref = "
        "(SELECT 'intervention:' || id FROM intervention_instances WHERE uid = 'order-5005')"
    )
    assert state == "delivered" and attempts == len(notes()) + 1
    assert "500" in notes()[0]["plain_text"]
    assert show(api, admin, created["ticket_number"])["responses"][-1]["plain_text"].endswith(
        "code LATE.\n"
    )


def test_last_failure_marks_failed_and_ticket_stays_open(api: Api, admin: str) -> None:
    created = create(api, admin, "refund-1", name="refund").json()["data"]
    assert submit(api, admin, created["ticket_number"], {"accept": False}).status_code == 200
    wait_for(what="failed", check=lambda: state_of(api, "refund-1") == "failed", timeout=60)
    ticket = show(api, admin, created["ticket_number"])
    notes = [
        r["plain_text"]
        for r in ticket["responses"]
        if r["is_internal"] and "epilog call" in r["plain_text"]
    ]
    assert len(notes) == MAX_ATTEMPTS and "marked failed" in notes[-1] and "retried" in notes[0]
    assert ticket["status"] == "open"


# -- submit by an agent's mail ----------------------------------------------------------------------


def test_submit_by_verified_agent_mail(api: Api, admin: str, receiver: Receiver) -> None:
    receiver.status, receiver.reply = 200, b"{}"
    created = create(api, admin, "order-6006").json()["data"]
    ((agent_id, key),) = api.rows(
        "SELECT id, reply_key FROM agents WHERE email = 'alice@helpdesk.test'"
    )
    signed = reply_address(
        SECRET.encode(),
        "support@helpdesk.test",
        ReplyToken(created["ticket_number"], agent_id, agent_key=key),
    )
    api.daemon.send(
        make_mail(
            sender="Alice Agent <alice@helpdesk.test>",
            to=signed,
            subject=f"Re: [#{created['ticket_number']}] Discount request",
            body="#set order_price 80\n#set accept yes\n#submit\n\nApproved for this customer.\n",
        ),
        mail_from="alice@helpdesk.test",
        rcpt=(signed,),
    )
    (request,) = wait_for(what="the epilog from mail", check=lambda: receiver.for_uid("order-6006"))
    sent = json.loads(request.body)
    assert sent["data"] == {"currency": "GBP", "order_price": 80, "accept": True}
    assert sent["submitted_by_email"] == "alice@helpdesk.test" and verify(
        request.headers, request.body
    )
    note = next(
        r
        for r in show(api, admin, created["ticket_number"])["responses"]
        if r["id"] == str(sent["response_id"])
    )
    assert (
        note["is_internal"]
        and note["verified"] == "signed_address"
        and "Approved for this customer." in note["plain_text"]
    )
    wait_for(what="completed", check=lambda: state_of(api, "order-6006") == "completed")
    customer_mail = api.rows(
        "SELECT kind FROM outbox WHERE ticket_id = ? AND primary_rcpt = 'customer@example.test'",
        created["ticket_id"],
    )
    assert sorted(customer_mail) == [
        ("agent_response",),
        ("agent_response",),
    ]  # .public and .final, not the note


def test_bad_set_by_mail_changes_nothing(api: Api, admin: str, receiver: Receiver) -> None:
    created = create(api, admin, "order-7007").json()["data"]
    ((agent_id, key),) = api.rows(
        "SELECT id, reply_key FROM agents WHERE email = 'alice@helpdesk.test'"
    )
    signed = reply_address(
        SECRET.encode(),
        "support@helpdesk.test",
        ReplyToken(created["ticket_number"], agent_id, agent_key=key),
    )
    api.daemon.send(
        make_mail(
            sender="alice@helpdesk.test",
            to=signed,
            subject="Re: x",
            body="#set colour red\n#submit\n",
        ),
        mail_from="alice@helpdesk.test",
        rcpt=(signed,),
    )
    api.daemon.wait_idle()
    wait_for(
        what="the command_error notice",
        check=lambda: api.rows(
            "SELECT id FROM outbox WHERE ticket_id = ? AND kind = 'command_error'",
            created["ticket_id"],
        ),
    )
    assert state_of(api, "order-7007") == "open" and receiver.for_uid("order-7007") == []


def test_ticket_object_shows_the_intervention(api: Api, admin: str) -> None:
    created = create(api, admin, "order-8008").json()["data"]
    shown = show(api, admin, created["ticket_number"])["intervention"]
    assert shown == {
        "name": "discount_request",
        "uid": "order-8008",
        "state": "open",
        "data": {"currency": "GBP", "order_price": 100, "accept": False},
    }
    plain = api.post(
        "/api/tickets/create",
        {"originator_email_address": "c@example.test", "subject": "s", "content": "c"},
        token=admin,
    ).json()["data"]["ticket_number"]
    assert show(api, admin, plain)["intervention"] is None


def test_uid_must_fit_the_epilog_header(api: Api, admin: str) -> None:
    """The uid travels in the epilog's Idempotency-Key header: printable ASCII, or 422 up front."""
    for uid in ("commande-\u00e9t\u00e9", "tab\there", " padded", "x" * 201, ""):
        err = assert_error(create(api, admin, uid), 422, "validation_failed")
        assert "uid" in err["errors"] or "intervention" in err["errors"], (uid, err)
    assert create(api, admin, "order 1001/2").status_code == 200
