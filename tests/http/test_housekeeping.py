"""Ticket housekeeping over real HTTP against a running daemon whose mail goes to a real relay
sink and whose webhooks go to a real receiver: PATCH subject/queue/due_at, closing with a
resolution (PATCH and ticket_respond), trash and restore, merge, forward, watchers, the agent
mail commands #due #queue #resolution #watch, and the CLI commands."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from mailhelpdesk.mail.tokens import split_plus, verify_token
from tests.helpers import Daemon, make_mail
from tests.http.conftest import HIGH_LIMIT, Api, assert_error, unique
from tests.http_receiver import Receiver
from tests.test_roundtrip import relay, wait_for
from tests.transports.test_smtp_sender import Sink

SECRET = b"test-secret-not-for-production"
_n = itertools.count(1)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, sink: Sink, hooks: Receiver) -> Iterator[Api]:
    extra = (
        HIGH_LIMIT
        + '[[agents]]\nemail = "bob@helpdesk.test"\nname = "Bob Agent"\n'
        + f'[[webhooks]]\nname = "hk"\nurl = "{hooks.url}"\n'
    )
    daemon = Daemon(tmp_path_factory.mktemp("hk"), extra_config=extra, relay_config=relay(sink))
    daemon.start()
    try:
        yield Api(daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    return api.token("all", name="housekeeper")


def call(api: Api, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return httpx.request(
        method,
        api.base + path,
        headers=headers,
        content=None if body is None else json.dumps(body).encode(),
        timeout=60,
    )


def to(sink: Sink, address: str, subject_part: str = "") -> list[EmailMessage]:
    return [
        m
        for m in sink.parsed()
        if m["To"].addresses[0].addr_spec == address and subject_part in str(m["Subject"])
    ]


def new_ticket(api: Api, sink: Sink, customer: str | None = None) -> tuple[int, str, str]:
    """A ticket opened by mail from a fresh customer: (number, customer address, subject); its
    acknowledgement has reached the sink."""
    i = next(_n)
    customer = customer or f"cust{i}-{unique('c')[:10]}@customer.test"
    subject = f"Housekeeping case {i} {unique('s')}"
    api.daemon.send(
        make_mail(subject=subject, sender=customer, body=f"Body of case {i}.\n"),
        mail_from=customer,
    )
    api.daemon.wait_idle()
    number = wait_for(
        lambda: next(
            (n for (n,) in api.rows("SELECT number FROM tickets WHERE subject = ?", subject)), None
        ),
        what="ticket",
    )
    wait_for(lambda: to(sink, customer, f"[#{number}]"), what="acknowledgement")
    return int(number), customer, subject


def events_of(api: Api, token: str, number: int) -> list[dict[str, Any]]:
    resp = call(api, "GET", f"/api/v1/tickets/{number}/history", token)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"]["events"])


def webhook_events(hooks: Receiver, number: int) -> list[str]:
    with hooks.lock:
        bodies = [json.loads(r.body) for r in hooks.requests]
    return [b["event"] for b in bodies if b["ticket"]["number"] == number]


def test_patch_subject_queue_and_due_date(api: Api, sink: Sink, token: str) -> None:
    """PATCH renames, moves and sets a due date (each an event); null clears the due date."""
    number, _customer, _subject = new_ticket(api, sink)
    resp = call(
        api,
        "PATCH",
        f"/api/v1/tickets/{number}",
        token,
        {"subject": "Renamed case", "queue": "billing", "due_at": "2026-12-24T12:00:00Z"},
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["subject"], data["queue"]) == ("Renamed case", "Billing")
    assert data["due_at"] == "2026-12-24T12:00:00+00:00"
    types = {e["type"]: e for e in events_of(api, token, number)}
    assert types["queue"]["data"] == {"from": "Inbox", "to": "Billing"}
    assert types["subject"]["data"]["to"] == "Renamed case"
    assert types["due_date"]["data"] == {"from": None, "to": "2026-12-24T12:00:00+00:00"}
    assert types["queue"]["channel"] == "api" and types["queue"]["actor"]["kind"] == "token"

    cleared = call(api, "PATCH", f"/api/v1/tickets/{number}", token, {"due_at": None})
    assert cleared.status_code == 200 and cleared.json()["data"]["due_at"] is None
    untouched = call(api, "PATCH", f"/api/v1/tickets/{number}", token, {"priority": "High"})
    assert untouched.json()["data"]["due_at"] is None  # absent leaves it; only null clears

    bad = call(
        api, "PATCH", f"/api/v1/tickets/{number}", token, {"queue": "Nowhere", "subject": " "}
    )
    body = assert_error(bad, 422, "validation_failed")
    assert set(body["errors"]) == {"queue", "subject"}
    assert call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]["queue"] == "Billing"
    assert_error(
        call(api, "PATCH", "/api/v1/tickets/999999", token, {"queue": "Billing"}),
        404,
        "ticket_not_found",
    )
    assert_error(
        call(api, "PATCH", f"/api/v1/tickets/{number}", token, {"due_at": "not a date"}),
        422,
        "validation_failed",
    )


def test_close_by_patch_sends_one_closing_notice_with_resolution(
    api: Api, sink: Sink, token: str, hooks: Receiver
) -> None:
    """Closing by PATCH with a resolution: one ticket_closed to the customer, carrying it; the
    history names actor, channel and resolution; the status webhook is raised."""
    number, customer, _subject = new_ticket(api, sink)
    resp = call(
        api,
        "PATCH",
        f"/api/v1/tickets/{number}",
        token,
        {"status": "closed", "resolution": "Replaced the toner"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["resolution"] == "Replaced the toner"
    closed = wait_for(lambda: to(sink, customer, "Closed"), what="closing notice")
    api.daemon.wait_idle(sending=True)
    assert len(to(sink, customer, "Closed")) == len(closed) == 1
    assert "Replaced the toner" in closed[0].get_body(("plain",)).get_content()
    (status,) = [e for e in events_of(api, token, number) if e["type"] == "status"]
    assert status["channel"] == "api"
    assert status["actor"] == {"kind": "token", "email": None, "name": "housekeeper"}
    assert status["data"]["resolution"] == "Replaced the toner"
    wait_for(lambda: "ticket.status_changed" in webhook_events(hooks, number), what="webhook")


def test_close_by_ticket_respond_sends_one_closing_notice(api: Api, sink: Sink, token: str) -> None:
    """ticket_respond with status closed answers the customer and closes through the one status
    path: the agent's answer and one ticket_closed, with the resolution in the history."""
    number, customer, _subject = new_ticket(api, sink)
    resp = api.post(
        "/api/ticket_respond",
        {
            "ticket_number": number,
            "from_email": "alice@helpdesk.test",
            "content": "The printer is fixed.",
            "status": "closed",
            "resolution": "Fuser swapped",
        },
        token=token,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    wait_for(lambda: to(sink, customer, "Closed"), what="closing notice")
    api.daemon.wait_idle(sending=True)
    mails = to(sink, customer, f"[#{number}]")
    assert len([m for m in mails if "Closed" in str(m["Subject"])]) == 1
    assert any("printer is fixed" in m.get_body(("plain",)).get_content() for m in mails)
    shown = call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]
    assert (shown["status"], shown["resolution"]) == ("closed", "Fuser swapped")
    (status,) = [e for e in events_of(api, token, number) if e["type"] == "status"]
    assert status["data"]["resolution"] == "Fuser swapped" and status["channel"] == "api"
    bad = api.post(
        "/api/ticket_respond",
        {"ticket_number": number, "from_email": "alice@helpdesk.test", "content": "x",
         "resolution": "no status"},
        token=token,
        key=unique(),
    )  # fmt: skip
    assert "resolution" in assert_error(bad, 422, "validation_failed")["errors"]


def test_trash_and_restore(api: Api, sink: Sink, token: str) -> None:
    """DELETE trashes (GET, PATCH, history 404; lists leave it out), restore brings it back;
    each is an event; errors are 404 and 409."""
    number, _customer, _subject = new_ticket(api, sink)
    resp = call(api, "DELETE", f"/api/v1/tickets/{number}", token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"ticket_number": number, "deleted": True}
    assert_error(call(api, "GET", f"/api/v1/tickets/{number}", token), 404, "ticket_not_found")
    assert_error(
        call(api, "PATCH", f"/api/v1/tickets/{number}", token, {"priority": "High"}),
        404,
        "ticket_not_found",
    )
    listed = api.post("/api/v1/tickets/query", {"per_page": 100}, token=token).json()["data"]
    assert number not in [t["number"] for t in listed["tickets"]]
    assert str(number) not in api.daemon.cli("ticket", "list").stdout
    assert_error(call(api, "DELETE", f"/api/v1/tickets/{number}", token), 404, "ticket_not_found")

    restored = call(api, "POST", f"/api/v1/tickets/{number}/restore", token)
    assert restored.status_code == 200, restored.text
    assert restored.json()["data"]["number"] == number
    assert_error(call(api, "POST", f"/api/v1/tickets/{number}/restore", token), 409, "conflict")
    assert_error(
        call(api, "POST", "/api/v1/tickets/999998/restore", token), 404, "ticket_not_found"
    )
    types = [e["type"] for e in events_of(api, token, number)]
    assert types[-2:] == ["deleted", "restored"]

    # the CLI does the same through the same services
    assert "trashed" in api.daemon.cli("ticket", "delete", str(number)).stdout
    assert api.daemon.cli("ticket", "show", str(number), check=False).returncode != 0
    assert "restored" in api.daemon.cli("ticket", "restore", str(number)).stdout
    again = api.daemon.cli("ticket", "restore", str(number), check=False)
    assert again.returncode == 1 and "not in the trash" in again.stderr
    cli_events = [e for e in events_of(api, token, number) if e["channel"] == "cli"]
    assert [e["type"] for e in cli_events] == ["deleted", "restored"]


def test_mail_to_a_trashed_ticket_opens_a_new_ticket(api: Api, sink: Sink, token: str) -> None:
    """A reply to a trashed ticket's notice does not reach it: it opens a new ticket."""
    number, customer, subject = new_ticket(api, sink)
    (ack,) = to(sink, customer, f"[#{number}]")
    assert call(api, "DELETE", f"/api/v1/tickets/{number}", token).status_code == 200
    reply_to = ack["Reply-To"].addresses[0].addr_spec
    api.daemon.send(
        make_mail(
            subject=f"Re: {ack['Subject']}",
            sender=customer,
            to=reply_to,
            body="Still there?\n",
            headers={"In-Reply-To": ack["Message-ID"], "References": ack["Message-ID"]},
        ),
        mail_from=customer,
        rcpt=[reply_to],
    )
    api.daemon.wait_idle()
    rows = api.rows(
        "SELECT number, deleted_at IS NOT NULL FROM tickets WHERE originator_email = ?", customer
    )
    assert len(rows) == 2 and (number, 1) in rows
    (new_number,) = [n for n, trashed in rows if not trashed]
    shown = call(api, "GET", f"/api/v1/tickets/{new_number}", token).json()["data"]
    assert "Still there?" in shown["responses"][0]["plain_text"]
    assert api.rows(
        "SELECT count(*) FROM responses r JOIN tickets t ON t.id = r.ticket_id WHERE t.number = ?",
        number,
    ) == [(1,)]
    assert subject  # the trashed ticket kept its own subject and message


def test_merge_moves_responses_and_mail_follows(
    api: Api, sink: Sink, token: str, hooks: Receiver
) -> None:
    """Merging moves the responses, closes the source with merged_into (no closing notice),
    records `merged` on both; a reply to the source's notice lands on the target."""
    source, customer, _s = new_ticket(api, sink)
    target, _c, _t = new_ticket(api, sink, customer=customer)
    (ack,) = to(sink, customer, f"[#{source}]")
    resp = call(api, "POST", f"/api/v1/tickets/{source}/merge", token, {"into": target})
    assert resp.status_code == 200, resp.text
    merged = resp.json()["data"]
    assert merged["number"] == target and len(merged["responses"]) == 2
    old = api.daemon.ticket(source)
    assert (old["status"], old["merged_into"], old["responses"]) == ("closed", target, [])
    assert old["resolution"] == f"Merged into #{target}"
    assert [e["data"] for e in events_of(api, token, source) if e["type"] == "merged"] == [
        {"into": target, "responses_moved": 1}
    ]
    assert [e["data"] for e in events_of(api, token, target) if e["type"] == "merged"] == [
        {"from": source, "responses_moved": 1}
    ]
    wait_for(lambda: "ticket.status_changed" in webhook_events(hooks, source), what="webhook")

    reply_to = ack["Reply-To"].addresses[0].addr_spec
    assert verify_token(SECRET, split_plus(reply_to)[1] or "").ticket_number == source  # type: ignore[union-attr]
    api.daemon.send(
        make_mail(
            subject=f"Re: {ack['Subject']}",
            sender=customer,
            to=reply_to,
            body="Any news on this one?\n",
            headers={"In-Reply-To": ack["Message-ID"], "References": ack["Message-ID"]},
        ),
        mail_from=customer,
        rcpt=[reply_to],
    )
    api.daemon.wait_idle(sending=True)
    shown = call(api, "GET", f"/api/v1/tickets/{target}", token).json()["data"]
    assert "Any news on this one?" in shown["responses"][-1]["plain_text"]
    assert shown["responses"][-1]["kind"] == "customer"
    assert api.daemon.ticket(source)["responses"] == []
    assert to(sink, customer, "Closed") == []  # the merge mailed the customer no closing notice

    # errors: into itself, into a trashed ticket, into an unknown one, an unknown source
    assert_error(
        call(api, "POST", f"/api/v1/tickets/{target}/merge", token, {"into": target}),
        409,
        "conflict",
    )
    trashed, _c2, _t2 = new_ticket(api, sink)
    call(api, "DELETE", f"/api/v1/tickets/{trashed}", token)
    assert_error(
        call(api, "POST", f"/api/v1/tickets/{target}/merge", token, {"into": trashed}),
        409,
        "conflict",
    )
    unknown = call(api, "POST", f"/api/v1/tickets/{target}/merge", token, {"into": 999997})
    assert "into" in assert_error(unknown, 422, "validation_failed")["errors"]
    assert (
        "into"
        in assert_error(
            call(api, "POST", f"/api/v1/tickets/{target}/merge", token, {}),
            422,
            "validation_failed",
        )["errors"]
    )
    assert_error(
        call(api, "POST", "/api/v1/tickets/999996/merge", token, {"into": target}),
        404,
        "ticket_not_found",
    )
    assert_error(
        call(api, "POST", f"/api/v1/tickets/{source}/merge", token, {"into": target}),
        409,
        "conflict",
    )


def test_merge_by_cli(api: Api, sink: Sink, token: str) -> None:
    """`ticket merge N --into M` is the same change, on the cli channel."""
    source, customer, _s = new_ticket(api, sink)
    target, _c, _t = new_ticket(api, sink, customer=customer)
    out = api.daemon.cli("ticket", "merge", str(source), "--into", str(target))
    assert f"merged into {target}" in out.stdout
    assert api.daemon.ticket(source)["merged_into"] == target
    (event,) = [e for e in events_of(api, token, target) if e["type"] == "merged"]
    assert event["channel"] == "cli"
    itself = api.daemon.cli("ticket", "merge", str(target), "--into", str(target), check=False)
    assert itself.returncode == 1 and "itself" in itself.stderr


def test_forward_and_the_third_partys_reply_stays_internal(
    api: Api, sink: Sink, token: str, hooks: Receiver
) -> None:
    """A forward mails the conversation to a third party; their reply lands as an internal
    message and reaches no customer."""
    number, customer, _subject = new_ticket(api, sink)
    third = f"vendor-{next(_n)}@partner.test"
    resp = call(
        api,
        "POST",
        f"/api/v1/tickets/{number}/forward",
        token,
        {"to": [third], "note": "Can you look at this?"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["to"] == [third]
    (fwd,) = wait_for(lambda: to(sink, third), what="forward")
    text = fwd.get_body(("plain",)).get_content()
    assert "Can you look at this?" in text and "Body of case" in text
    assert fwd["Subject"].startswith("Fwd: ") and f"[#{number}]" in fwd["Subject"]
    assert fwd["Auto-Submitted"] is None
    reply_to = fwd["Reply-To"].addresses[0].addr_spec
    assert verify_token(SECRET, split_plus(reply_to)[1] or "").forward  # type: ignore[union-attr]
    (forwarded,) = [e for e in events_of(api, token, number) if e["type"] == "forwarded"]
    assert forwarded["data"]["to"] == [third]
    before = len(to(sink, customer))

    api.daemon.send(
        make_mail(
            subject=f"Re: {fwd['Subject']}",
            sender=third,
            to=reply_to,
            body="Known firmware bug, update to 2.1.\n",
            headers={"In-Reply-To": fwd["Message-ID"]},
        ),
        mail_from=third,
        rcpt=[reply_to],
    )
    # the same answer without the Reply-To, found by its In-Reply-To only, is kept internal too
    api.daemon.send(
        make_mail(
            subject=f"Re: {fwd['Subject']}",
            sender=third,
            body="Also: replace the cable.\n",
            headers={"In-Reply-To": fwd["Message-ID"]},
        ),
        mail_from=third,
    )
    api.daemon.wait_idle(sending=True)
    shown = call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]
    replies = [r for r in shown["responses"] if r["created_by_email"] == third]
    assert len(replies) == 2 and all(r["is_internal"] for r in replies)
    assert len(to(sink, customer)) == before  # nothing reached the customer
    assert shown["status"] == "open"
    wait_for(lambda: webhook_events(hooks, number).count("response.created") >= 3, what="webhooks")

    bad = call(api, "POST", f"/api/v1/tickets/{number}/forward", token, {"to": []})
    assert "to" in assert_error(bad, 422, "validation_failed")["errors"]
    own = call(
        api, "POST", f"/api/v1/tickets/{number}/forward", token, {"to": ["support@helpdesk.test"]}
    )
    assert "to" in assert_error(own, 422, "validation_failed")["errors"]
    assert_error(
        call(api, "POST", "/api/v1/tickets/999995/forward", token, {"to": [third]}),
        404,
        "ticket_not_found",
    )


def test_watchers_get_what_the_assignee_gets(api: Api, sink: Sink, token: str) -> None:
    """A watcher gets the customer_reply notice the assignee gets; add, list, remove, errors."""
    number, customer, _subject = new_ticket(api, sink)
    path = f"/api/v1/tickets/{number}/watchers"
    added = call(api, "POST", path, token, {"email": "BOB@helpdesk.test"})
    assert added.status_code == 200, added.text
    assert added.json()["data"]["watchers"] == ["bob@helpdesk.test"]
    again = call(api, "POST", path, token, {"email": "bob@helpdesk.test"})
    assert again.json()["data"]["watchers"] == ["bob@helpdesk.test"]
    assert call(api, "GET", path, token).json()["data"]["watchers"] == ["bob@helpdesk.test"]
    assert call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]["watchers"] == [
        "bob@helpdesk.test"
    ]
    assert (
        "email"
        in assert_error(
            call(api, "POST", path, token, {"email": "stranger@customer.test"}),
            422,
            "validation_failed",
        )["errors"]
    )
    assert_error(
        call(api, "POST", "/api/v1/tickets/999994/watchers", token, {"email": "bob@helpdesk.test"}),
        404,
        "ticket_not_found",
    )
    assert_error(
        call(api, "GET", "/api/v1/tickets/999994/watchers", token), 404, "ticket_not_found"
    )
    patched = call(
        api,
        "PATCH",
        f"/api/v1/tickets/{number}",
        token,
        {"assigned_to_email": "alice@helpdesk.test"},
    )
    assert patched.status_code == 200
    (ack,) = to(sink, customer, f"[#{number}]")
    reply_to = ack["Reply-To"].addresses[0].addr_spec
    api.daemon.send(
        make_mail(
            subject=f"Re: {ack['Subject']}",
            sender=customer,
            to=reply_to,
            body="One more detail.\n",
            headers={"In-Reply-To": ack["Message-ID"]},
        ),
        mail_from=customer,
        rcpt=[reply_to],
    )

    def notices(agent: str) -> list[EmailMessage]:
        return [
            m
            for m in to(sink, agent, f"[#{number}]")
            if "One more detail" in m.get_body(("plain",)).get_content()
        ]

    wait_for(lambda: notices("alice@helpdesk.test"), what="the assignee's notice")
    wait_for(lambda: notices("bob@helpdesk.test"), what="the watcher's notice")
    api.daemon.wait_idle(sending=True)
    assert len(notices("alice@helpdesk.test")) == len(notices("bob@helpdesk.test")) == 1

    removed = call(api, "DELETE", path, token, {"email": "bob@helpdesk.test"})
    assert removed.status_code == 200 and removed.json()["data"]["watchers"] == []
    types = [e["type"] for e in events_of(api, token, number)]
    assert types.count("watcher_added") == 1 and types.count("watcher_removed") == 1


def test_agent_mail_commands_due_queue_watch_resolution(api: Api, sink: Sink, token: str) -> None:
    """An agent's reply with #due, #queue, #watch, #status closed and #resolution changes the
    ticket through the same services; a #resolution without #status closed changes nothing."""
    number, customer, _subject = new_ticket(api, sink)
    (notice,) = wait_for(lambda: to(sink, "alice@helpdesk.test", f"[#{number}]"), what="notice")
    reply_to = notice["Reply-To"].addresses[0].addr_spec

    def agent_mail(body: str) -> None:
        api.daemon.send(
            make_mail(
                subject=f"Re: {notice['Subject']}",
                sender="Alice Agent <alice@helpdesk.test>",
                to=reply_to,
                body=body,
            ),
            mail_from="alice@helpdesk.test",
            rcpt=[reply_to],
        )
        api.daemon.wait_idle()

    agent_mail("#resolution too early\n\nhello\n")
    shown = call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]
    assert shown["status"] == "open" and shown["resolution"] is None
    refused = [e for e in events_of(api, token, number) if e["type"] == "command_refused"]
    assert refused and "#status closed" in refused[-1]["data"]["error"]

    agent_mail(
        "#due 2026-12-24\n#queue Billing\n#watch\n#status closed\n#resolution Sent a new one\n"
    )
    shown = call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]
    assert shown["due_at"] == "2026-12-24T23:59:59+00:00"
    assert (shown["queue"], shown["watchers"]) == ("Billing", ["alice@helpdesk.test"])
    assert (shown["status"], shown["resolution"]) == ("closed", "Sent a new one")
    by_type = {e["type"]: e for e in events_of(api, token, number)}
    assert by_type["status"]["channel"] == "smtp"
    assert by_type["status"]["actor"]["email"] == "alice@helpdesk.test"
    assert by_type["status"]["data"]["resolution"] == "Sent a new one"
    closing = wait_for(lambda: to(sink, customer, "Closed"), what="closing notice")
    assert "Sent a new one" in closing[0].get_body(("plain",)).get_content()

    agent_mail("#due none\n#unwatch\n")
    shown = call(api, "GET", f"/api/v1/tickets/{number}", token).json()["data"]
    assert (shown["due_at"], shown["watchers"]) == (None, [])


def test_cli_update_queue_and_due(api: Api, sink: Sink, token: str) -> None:
    """`ticket update --queue Q --due DATE|none` is the PATCH on the cli channel."""
    number, _customer, _subject = new_ticket(api, sink)
    out = api.daemon.cli(
        "ticket", "update", str(number), "--queue", "Billing", "--due", "2027-01-05"
    )
    assert "queue" in out.stdout and "due_at" in out.stdout
    shown = api.daemon.ticket(number)
    assert (shown["queue"], shown["due_at"]) == ("Billing", "2027-01-05T23:59:59+00:00")
    api.daemon.cli("ticket", "update", str(number), "--due", "none")
    assert api.daemon.ticket(number)["due_at"] is None
    bad = api.daemon.cli("ticket", "update", str(number), "--queue", "Nowhere", check=False)
    assert bad.returncode == 1 and "unknown queue" in bad.stderr
    bad_date = api.daemon.cli("ticket", "update", str(number), "--due", "soon", check=False)
    assert bad_date.returncode == 2 and "--due" in bad_date.stderr
