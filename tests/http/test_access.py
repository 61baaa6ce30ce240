"""Who may do what, webhook subscriptions by API, bulk create and attachments on create and
respond (resources.md §1-3), over real HTTP against a running daemon with a real relay sink and
real webhook receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.services import api_tokens
from mailhelpdesk.store.db import make_engine, session_scope
from mailhelpdesk.transports.http_sender import SIGNATURE_HEADER, verify_signature
from tests.http.conftest import Api, assert_error, unique
from tests.http_receiver import Received, Receiver
from tests.transports.test_smtp_sender import Sink

TOML_SECRET = "toml-hook-secret"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def toml_receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def desk(
    tmp_path_factory: pytest.TempPathFactory, sink: Sink, toml_receiver: Receiver
) -> Iterator[Api]:
    from tests.helpers import Daemon

    extra = f"""
[api]
rate_limit_requests = 1000000

[http_deliveries]
retry_base_s = 1
retry_max_s = 2

[[agents]]
email = "bob@helpdesk.test"
name = "Bob Billing"
queues = ["Billing"]

[[webhooks]]
name = "toml-hook"
url = "{toml_receiver.url}"
secret = "{TOML_SECRET}"
"""
    relay = f'host = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\ntimeout_s = 5\n'
    daemon = Daemon(tmp_path_factory.mktemp("access"), extra_config=extra, relay_config=relay)
    daemon.start()
    try:
        yield Api(daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def root(desk: Api) -> str:
    return desk.token("all")


def owned_token(desk: Api, owner: str, *abilities: str) -> str:
    engine = make_engine(desk.daemon.db_url)
    try:
        with session_scope(engine) as session:
            return api_tokens.create_token(
                session,
                name=unique("owned"),
                abilities=list(abilities),
                clock=SystemClock(),
                owner_email=owner,
            )
    finally:
        engine.dispose()


def get(desk: Api, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(desk.base + path, headers=headers, timeout=30)


def send(desk: Api, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return httpx.request(
        method,
        desk.base + path,
        headers=headers,
        content=None if body is None else json.dumps(body).encode(),
        timeout=30,
    )


def create(desk: Api, token: str, queue: str = "Inbox", **extra: Any) -> dict[str, Any]:
    body = {
        "originator_email_address": extra.pop("email", f"{uuid.uuid4().hex[:10]}@customer.test"),
        "data": {"subject": extra.pop("subject", "Access test"), "content": "Hello"},
        "queue_name": queue,
        **extra,
    }
    resp = desk.post("/api/v1/tickets", body, token=token)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def events_for(receiver: Receiver, number: int) -> list[Received]:
    with receiver.lock:
        return [r for r in receiver.requests if json.loads(r.body)["ticket"]["number"] == number]


def mails_to(sink: Sink, address: str) -> list[EmailMessage]:
    return [m for m in sink.parsed() if address in str(m["To"])]


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    return str(body.get_content()) if body is not None else ""


MAIL_WAIT_S = 120  # the relay sink may first be handed every notice of the bulk test


# -- queue visibility ------------------------------------------------------------------------------


def test_owned_token_sees_only_its_agents_queues(desk: Api, root: str) -> None:
    """Bob's queues are ["Billing"]: every ticket route answers 404 for an Inbox ticket, lists
    leave it out, and the same routes work for his Billing ticket."""
    inbox = create(desk, root, "Inbox", subject="Inbox only")["ticket_number"]
    billing = create(desk, root, "Billing", subject="Billing too")["ticket_number"]
    bob = owned_token(desk, "bob@helpdesk.test", "tickets:write")
    for number, visible in ((inbox, False), (billing, True)):
        answers = [
            get(desk, f"/api/v1/tickets/{number}", bob),
            get(desk, f"/api/v1/tickets/{number}/history", bob),
            desk.post("/api/v1/tickets/show", {"ticket_number": number}, token=bob),
            desk.post("/api/v1/tickets/responses", {"ticket_number": number}, token=bob),
            send(desk, "PATCH", f"/api/v1/tickets/{number}", bob, {"priority": "High"}),
            desk.post(
                "/api/v1/tickets/respond",
                {"ticket_number": number, "from_email": "bob@helpdesk.test", "content": "On it"},
                token=bob,
            ),
            desk.post(
                "/api/ticket_respond",
                {"ticket_number": number, "from_email": "bob@helpdesk.test", "content": "Again"},
                token=bob,
                key=unique(),
            ),
        ]
        for resp in answers:
            if visible:
                assert resp.status_code == 200, (resp.request.url, resp.text)
            else:
                assert_error(resp, 404, "ticket_not_found")
    listed = desk.post("/api/v1/tickets/query", {"per_page": 100}, token=bob).json()["data"]
    numbers = {t["number"] for t in listed["tickets"]}
    assert billing in numbers and inbox not in numbers
    assert all(t["queue"] == "Billing" for t in listed["tickets"])
    responses = desk.post("/api/v1/tickets/responses/query", {}, token=bob).json()["data"]
    assert {r["ticket_number"] for r in responses["responses"]} <= {
        t["number"] for t in listed["tickets"]
    } | {billing}
    assert inbox not in {r["ticket_number"] for r in responses["responses"]}
    # nothing changed on the hidden ticket
    assert desk.rows(
        "SELECT priority, (SELECT count(*) FROM responses r WHERE r.ticket_id = t.id) "
        "FROM tickets t WHERE number = ?",
        inbox,
    ) == [(20, 1)]
    # a queue he cannot see is as unknown as one that does not exist
    hidden_queue = desk.post(
        "/api/v1/tickets",
        {"originator_email_address": "c@customer.test", "data": {"subject": "s", "content": "c"}},
        token=bob,
    )
    assert assert_error(hidden_queue, 422, "validation_failed")["errors"] == {
        "data.queue_name": ["Queue 'Inbox' not found."]
    }
    # an agent without a queue list (alice) and an unowned token see both
    for token in (owned_token(desk, "alice@helpdesk.test", "tickets:read"), root):
        assert get(desk, f"/api/v1/tickets/{inbox}", token).status_code == 200


# -- webhook subscriptions by API ----------------------------------------------------------------


def test_webhook_routes_need_the_admin_ability(desk: Api) -> None:
    """401 without a token, 403 without `admin` (tickets:write is not enough)."""
    writer = desk.token("tickets:write")
    assert_error(get(desk, "/api/v1/webhooks", None), 401, "unauthenticated")
    assert_error(get(desk, "/api/v1/webhooks", writer), 403, "forbidden")
    assert_error(
        desk.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/x"}, token=writer),
        403,
        "forbidden",
    )
    assert_error(send(desk, "DELETE", "/api/v1/webhooks/1", writer), 403, "forbidden")
    assert get(desk, "/api/v1/webhooks", desk.token("admin")).status_code == 200


def test_webhook_subscription_create_list_delete(desk: Api) -> None:
    """422 names the bad field; the key is shown once and never listed; a config subscription
    cannot be deleted by API (409); an unknown id is 404."""
    admin = desk.token("admin")
    bad_url = desk.post("/api/v1/webhooks", {"url": "ftp://example.test/x"}, token=admin)
    assert "url" in assert_error(bad_url, 422, "validation_failed")["errors"]
    bad_event = desk.post(
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/x", "events": ["ticket.exploded"]},
        token=admin,
    )
    assert "events" in assert_error(bad_event, 422, "validation_failed")["errors"]
    missing = desk.post("/api/v1/webhooks", {"events": []}, token=admin)
    assert assert_error(missing, 422, "validation_failed")["errors"] == {"url": ["is required"]}
    made = desk.post(
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/x", "events": ["ticket.created"], "name": unique("hook")},
        token=admin,
    )
    assert made.status_code == 200, made.text
    hook = made.json()["data"]
    assert hook["secret"].startswith("whsec_") and hook["origin"] == "api" and hook["signed"]
    again = desk.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/y", "name": hook["name"]}, token=admin
    )
    assert_error(again, 409, "conflict")
    listing = get(desk, "/api/v1/webhooks", admin)
    assert hook["secret"] not in listing.text and TOML_SECRET not in listing.text
    rows = {w["name"]: w for w in listing.json()["data"]["webhooks"]}
    assert rows[hook["name"]]["events"] == ["ticket.created"]
    assert rows["toml-hook"]["origin"] == "config"
    assert hook["secret"] not in str(desk.rows("SELECT * FROM webhook_subscriptions"))
    assert_error(
        send(desk, "DELETE", f"/api/v1/webhooks/{rows['toml-hook']['id']}", admin), 409, "conflict"
    )
    assert_error(send(desk, "DELETE", "/api/v1/webhooks/999999", admin), 404, "webhook_not_found")
    gone = send(desk, "DELETE", f"/api/v1/webhooks/{hook['id']}", admin)
    assert gone.status_code == 200 and gone.json()["data"]["deleted"]["id"] == hook["id"]
    assert_error(
        send(desk, "DELETE", f"/api/v1/webhooks/{hook['id']}", admin), 404, "webhook_not_found"
    )
    names = {w["name"] for w in get(desk, "/api/v1/webhooks", admin).json()["data"]["webhooks"]}
    assert hook["name"] not in names


def test_subscription_made_by_api_receives_signed_events(
    desk: Api, root: str, toml_receiver: Receiver, receiver: Receiver
) -> None:
    """A subscription made by API gets the events it asked for, signed with the key it was
    given, beside the TOML one; once deleted it gets nothing more."""
    made = desk.post(
        "/api/v1/webhooks", {"url": receiver.url, "events": ["ticket.created"]}, token=root
    ).json()["data"]
    key = made["secret"].encode()
    number = create(desk, root, subject="Hooked")["ticket_number"]
    (got,) = wait_for(lambda: events_for(receiver, number))
    assert json.loads(got.body)["event"] == "ticket.created"
    assert verify_signature(key, got.body, got.headers[SIGNATURE_HEADER.lower()], now=time.time())
    toml = wait_for(
        lambda: len(events_for(toml_receiver, number)) >= 2 and events_for(toml_receiver, number)
    )
    assert {json.loads(r.body)["event"] for r in toml} == {"ticket.created", "response.created"}
    for r in toml:
        assert verify_signature(TOML_SECRET.encode(), r.body, r.headers[SIGNATURE_HEADER.lower()])
        assert not verify_signature(key, r.body, r.headers[SIGNATURE_HEADER.lower()])
    assert send(desk, "DELETE", f"/api/v1/webhooks/{made['id']}", root).status_code == 200
    later = create(desk, root, subject="After the delete")["ticket_number"]
    wait_for(lambda: events_for(toml_receiver, later))
    desk.daemon.wait_idle(sending=True)
    assert events_for(receiver, later) == []


# -- bulk create ---------------------------------------------------------------------------------


def test_bulk_create_100_items_some_invalid_retried_with_one_key(
    desk: Api, root: str, toml_receiver: Receiver
) -> None:
    """A result per item in order; invalid items (shape, email, unknown queue) fail alone; the
    valid ones are created once, and a retry with the same key replays the same answer."""
    tag = uuid.uuid4().hex[:12]
    items: list[dict[str, Any]] = []
    bad: dict[int, str] = {}
    for i in range(100):
        item: dict[str, Any] = {
            "originator_email_address": f"bulk{i}@customer.test",
            "data": {"subject": f"bulk-{tag}-{i}", "content": "Hi"},
        }
        if i % 10 == 3:
            item["originator_email_address"] = "not-an-address"
            bad[i] = "originator_email_address"
        elif i % 10 == 7:
            item["queue_name"] = "No Such Queue"
            bad[i] = "data.queue_name"
        elif i == 50:
            del item["originator_email_address"]
            bad[i] = "originator_email_address"
        items.append(item)
    key = unique("bulk")
    first = desk.post("/api/v1/tickets/bulk", {"tickets": items}, token=root, key=key)
    assert first.status_code == 200, first.text
    results = first.json()["data"]["results"]
    assert len(results) == 100
    for i, result in enumerate(results):
        if i in bad:
            assert result["ok"] is False and result["error"] == "validation_failed"
            assert bad[i] in result["errors"], result
        else:
            assert result["ok"] is True and result["data"]["ticket_number"] > 0
    created = desk.rows("SELECT count(*) FROM tickets WHERE subject LIKE ?", f"bulk-{tag}-%")
    assert created == [(100 - len(bad),)]
    again = desk.post("/api/v1/tickets/bulk", {"tickets": items}, token=root, key=key)
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert (
        desk.rows("SELECT count(*) FROM tickets WHERE subject LIKE ?", f"bulk-{tag}-%") == created
    )
    numbers = {r["data"]["ticket_number"] for r in results if r["ok"]}

    def created_events() -> set[int]:
        with toml_receiver.lock:
            bodies = [json.loads(r.body) for r in toml_receiver.requests]
        return {b["ticket"]["number"] for b in bodies if b["event"] == "ticket.created"} & numbers

    wait_for(lambda: created_events() == numbers, timeout=60)
    too_many = desk.post("/api/v1/tickets/bulk", {"tickets": items + items[:1]}, token=root)
    assert "tickets" in assert_error(too_many, 422, "validation_failed")["errors"]
    empty = desk.post("/api/v1/tickets/bulk", {"tickets": []}, token=root)
    assert_error(empty, 422, "validation_failed")
    reader = desk.token("tickets:read")
    assert_error(
        desk.post("/api/v1/tickets/bulk", {"tickets": items[:1]}, token=reader), 403, "forbidden"
    )


# -- attachments on create and respond -----------------------------------------------------------


def test_attachment_on_agent_respond_reaches_the_customer(desk: Api, root: str, sink: Sink) -> None:
    """An agent's answer by API with a file: stored on the response, and the customer's notice
    through the real relay carries the file's exact bytes."""
    customer = f"{uuid.uuid4().hex[:10]}@customer.test"
    number = create(desk, root, email=customer, subject="Need the invoice")["ticket_number"]
    resp = desk.post(
        "/api/v1/tickets/respond",
        {
            "ticket_number": number,
            "from_email": "alice@helpdesk.test",
            "content": "Here is your invoice.",
            "attachments": [
                {"name": "invoice.pdf", "mime_type": "application/pdf", "content_base64": b64(PDF)}
            ],
        },
        token=root,
    )
    assert resp.status_code == 200, resp.text
    shown = get(desk, f"/api/v1/tickets/{number}", root).json()["data"]
    answer = shown["responses"][-1]
    assert [(a["name"], a["file_size"]) for a in answer["attachments"]] == [
        ("invoice.pdf", len(PDF))
    ]

    def answer_mail() -> list[EmailMessage]:
        return [m for m in mails_to(sink, customer) if "Here is your invoice." in text_of(m)]

    (mail,) = wait_for(answer_mail, timeout=MAIL_WAIT_S)
    files = [(p.get_filename(), p.get_content()) for p in mail.iter_attachments()]
    assert files == [("invoice.pdf", PDF)]


def test_multipart_respond_and_create(desk: Api, root: str, sink: Sink) -> None:
    """multipart/form-data on the flat respond route and on v1 create: text parts are fields,
    file parts are attachments; an API-opened ticket's acknowledgement carries its files."""
    customer = f"{uuid.uuid4().hex[:10]}@customer.test"
    made = httpx.post(
        desk.base + "/api/v1/tickets",
        headers={"Authorization": f"Bearer {root}"},
        data={
            "originator_email_address": customer,
            "data": json.dumps({"subject": "Form opened", "content": "We opened this for you."}),
            "queue_name": "Billing",
        },
        files={"attachments": ("terms.txt", b"The terms.\n", "text/plain")},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    number = made.json()["data"]["ticket_number"]
    ack = wait_for(
        lambda: [m for m in mails_to(sink, customer) if m["Auto-Submitted"] == "auto-replied"],
        timeout=MAIL_WAIT_S,
    )
    assert [(p.get_filename(), p.get_content()) for p in ack[0].iter_attachments()] == [
        ("terms.txt", "The terms.\n")
    ]
    replied = httpx.post(
        desk.base + f"/api/tickets/{number}/respond",
        headers={"Authorization": f"Bearer {root}"},
        data={"from_email": "alice@helpdesk.test", "content": "Signed copy attached."},
        files={"file": ("signed.pdf", PDF, "application/pdf")},
        timeout=30,
    )
    assert replied.status_code == 200, replied.text
    shown = get(desk, f"/api/v1/tickets/{number}", root).json()["data"]
    assert [a["name"] for a in shown["responses"][-1]["attachments"]] == ["signed.pdf"]
    mail = wait_for(
        lambda: [m for m in mails_to(sink, customer) if "Signed copy" in text_of(m)],
        timeout=MAIL_WAIT_S,
    )
    assert [p.get_content() for p in mail[0].iter_attachments()] == [PDF]


def test_customer_opened_ticket_acknowledgement_does_not_echo_files(
    desk: Api, root: str, sink: Sink
) -> None:
    """A ticket opened by API as the customer (use_passed_originator_as_responder) keeps the
    file, but the acknowledgement does not send the customer's own file back."""
    customer = f"{uuid.uuid4().hex[:10]}@customer.test"
    number = create(
        desk,
        root,
        email=customer,
        subject="My own file",
        use_passed_originator_as_responder=True,
        attachments=[{"name": "photo.txt", "mime_type": "text/plain", "content_base64": b64(b"x")}],
    )["ticket_number"]
    ack = wait_for(lambda: mails_to(sink, customer), timeout=MAIL_WAIT_S)
    assert list(ack[0].iter_attachments()) == []
    shown = get(desk, f"/api/v1/tickets/{number}", root).json()["data"]
    assert [a["name"] for a in shown["responses"][0]["attachments"]] == ["photo.txt"]


def test_uploads_follow_the_attachment_policy(desk: Api, root: str) -> None:
    """Blocked and review-gated files are a 422 naming the item (review_ok lets the latter in);
    bad base64 is a 422; nothing is stored for a refused request."""
    number = create(desk, root, subject="Policy")["ticket_number"]

    def respond(*files: dict[str, Any]) -> httpx.Response:
        return desk.post(
            "/api/v1/tickets/respond",
            {
                "ticket_number": number,
                "from_email": "alice@helpdesk.test",
                "content": "f",
                "attachments": list(files),
            },
            token=root,
        )

    ok_file = {"name": "a.txt", "mime_type": "text/plain", "content_base64": b64(b"fine")}
    blocked = respond(ok_file, {"name": "fun.scr", "content_base64": b64(b"MZ\x90\x00")})
    assert list(assert_error(blocked, 422, "validation_failed")["errors"]) == ["attachments.1"]
    exe = {"name": "tool.exe", "content_base64": b64(b"MZ\x90\x00" + b"\x00" * 60)}
    review = assert_error(respond(exe), 422, "validation_failed")
    assert "review_ok" in review["errors"]["attachments.0"][0]
    bad = respond({"name": "x.bin", "content_base64": "***"})
    assert assert_error(bad, 422, "validation_failed")["errors"] == {
        "attachments.0.content_base64": ["must be base64"]
    }
    assert desk.rows(
        "SELECT count(*) FROM responses r JOIN tickets t ON t.id = r.ticket_id WHERE t.number = ?",
        number,
    ) == [(1,)]
    assert respond({**exe, "intent": "review_ok"}).status_code == 200
    shown = get(desk, f"/api/v1/tickets/{number}", root).json()["data"]
    assert [a["name"] for a in shown["responses"][-1]["attachments"]] == ["tool.exe"]
    text = httpx.post(
        desk.base + "/api/v1/tickets",
        headers={"Authorization": f"Bearer {root}", "Content-Type": "text/plain"},
        content=b"hello",
        timeout=30,
    )
    assert "multipart/form-data" in assert_error(text, 415, "unsupported_media_type")["message"]


def test_admin_ability_is_granted_by_all_and_listed(tmp_path: Path) -> None:
    """`admin` is a known ability, and `all` expands to it."""
    assert "admin" in api_tokens.normalise_abilities(["all"])
    assert api_tokens.normalise_abilities(["admin"]) == ("admin",)
