"""One service layer, one set of side effects: against a running daemon with a `[[webhooks]]`
subscription, a ticket opened by mail (SMTP) and one opened by `POST /api/create_ticket` raise
the same webhook events (POSTed, signed, to a receiver on 127.0.0.1) and queue the same kinds of
notices in the mail outbox."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhelpdesk.transports.http_sender import verify_signature
from tests.helpers import make_mail
from tests.http.conftest import Api, running_api, unique
from tests.http_receiver import Receiver

SECRET = "parity-webhook-key"


@pytest.fixture
def api(tmp_path: Path, receiver: Receiver) -> Iterator[Api]:
    with running_api(
        tmp_path,
        extra_config=f'[[webhooks]]\nname = "parity"\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n',
    ) as served:
        yield served


def _events_by_ticket(receiver: Receiver, want: int, timeout: float = 30) -> dict[int, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(receiver.requests) < want:
        time.sleep(0.02)
    with receiver.lock:
        got = list(receiver.requests)
    assert len(got) == want, [json.loads(r.body)["event"] for r in got]
    found: dict[int, list[str]] = {}
    for request in got:
        assert verify_signature(
            SECRET.encode(),
            request.body,
            request.headers["x-mailhelpdesk-signature"],
            now=time.time(),
        )
        body = json.loads(request.body)
        assert request.headers["idempotency-key"] == f"webhook:{body['event_id']}"
        found.setdefault(body["ticket"]["number"], []).append(body["event"])
    return {number: sorted(events) for number, events in found.items()}


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


def test_mail_and_api_tickets_raise_the_same_webhooks_and_notices(
    api: Api, receiver: Receiver
) -> None:
    api.daemon.send(
        make_mail(
            subject="By mail", sender="Priya <priya@customer.test>", to="support@helpdesk.test"
        )
    )
    api.daemon.wait_idle()
    token = api.token("create-ticket")
    resp = api.post(
        "/api/create_ticket",
        {
            "originator_email_address": "omar@customer.test",
            "data": {"subject": "By API", "content": "It is on fire"},
        },
        token=token,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    by_api = resp.json()["data"]["ticket_number"]
    tickets = dict(_rows(api.db_path, "SELECT number, subject FROM tickets"))
    by_mail = next(n for n, s in tickets.items() if s == "By mail")

    events = _events_by_ticket(receiver, want=4)
    assert events[by_mail] == events[by_api] == ["response.created", "ticket.created"]

    def notices(number: int) -> list[str]:
        return sorted(
            kind
            for (kind,) in _rows(
                api.db_path,
                "SELECT o.kind FROM outbox o JOIN tickets t ON t.id = o.ticket_id WHERE t.number = ?",
                number,
            )
        )

    assert notices(by_mail) == notices(by_api) and notices(by_api)  # the same, and not nothing
    deadline = time.monotonic() + 10  # the sender records each outcome just after the answer
    while True:
        deliveries = _rows(api.db_path, "SELECT state, attempts, kind FROM http_deliveries")
        if all(row[0] == "delivered" for row in deliveries) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(deliveries) == 4 and all(row == ("delivered", 1, "webhook") for row in deliveries)
    listing = json.loads(api.daemon.cli("deliveries", "list", "--json").stdout)
    assert sorted(i["event"] for i in listing) == [
        "response.created",
        "response.created",
        "ticket.created",
        "ticket.created",
    ]
    assert {i["state"] for i in listing} == {"delivered"} and all(
        i["last_status"] == 200 for i in listing
    )
    failed = api.daemon.cli("deliveries", "list", "--state", "failed")
    assert failed.stdout == "" and "no HTTP deliveries" in failed.stderr
