"""Webhook events from the one service layer: queued in the transaction of the change, one row
per subscriber that wants the event, nothing (and next to no cost) without subscribers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select

from mailhelpdesk.config import Config, ConfigError, config_from_dict
from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import HttpDelivery, Ticket, WebhookSubscription
from mailhelpdesk.ingest import worker
from mailhelpdesk.services import ticket_changes
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.store import http_outbox, spool
from mailhelpdesk.store.db import read_scope, session_scope
from mailhelpdesk.store.setup import sync_config
from tests.desk import Desk as BaseDesk
from tests.desk import desk_config, make_desk
from tests.helpers import make_mail

HOOKS = [
    {"name": "crm", "url": "http://127.0.0.1:9/crm", "secret": "crm-key"},
    {"name": "pager", "url": "http://127.0.0.1:9/pager", "events": ["ticket.assigned"]},
]


class Desk(BaseDesk):
    """The one built app (tests/desk.py) with webhook subscriptions."""

    def __init__(self, tmp: Path, hooks: list[dict[str, Any]]) -> None:
        super().__init__(make_desk(tmp, self.sections(hooks)).app)

    @staticmethod
    def sections(hooks: list[dict[str, Any]]) -> dict[str, Any]:
        return {"http_deliveries": {"timeout_s": 7, "max_attempts": 4}, "webhooks": hooks}

    @staticmethod
    def configure(tmp: Path, hooks: list[dict[str, Any]]) -> Config:
        return desk_config(tmp, Desk.sections(hooks))

    def create(self) -> int:
        with session_scope(self.engine) as session:
            ticket = ticket_service.create_ticket(
                session,
                subject="Printer",
                originator_email="Priya@Customer.test",
                first=ticket_service.NewResponse(kind=ResponseKind.customer, plain_text="on fire"),
                change=self.change(Channel.api, Actor.token("crm")),
            )
            return ticket.id or 0

    def rows(self) -> list[HttpDelivery]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(HttpDelivery).order_by(HttpDelivery.id)))

    def events(self, url_part: str = "") -> list[str]:
        return [json.loads(r.body)["event"] for r in self.rows() if url_part in r.url]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path, HOOKS)
    yield d
    d.app.close()


def test_created_ticket_queues_signed_events_with_the_ticket_header(desk: Desk) -> None:
    ticket_id = desk.create()
    assert desk.events("/crm") == ["ticket.created", "response.created"]
    assert desk.events("/pager") == []  # it only wants ticket.assigned
    created, response = desk.rows()
    with read_scope(desk.engine) as session:
        sub = session.exec(
            select(WebhookSubscription).where(WebhookSubscription.name == "crm")
        ).one()
    for row in (created, response):
        body = json.loads(row.body)
        assert (
            row.kind == "webhook" and row.ref == f"webhook:{sub.id}" and row.ticket_id == ticket_id
        )
        assert row.secret_ref == "webhook:crm" and row.state == "queued"
        assert (row.timeout_s, row.max_attempts) == (7.0, 4)  # from [http_deliveries]
        assert http_outbox.headers_of(row) == {"Idempotency-Key": f"webhook:{body['event_id']}"}
        assert body["occurred_at"] == "2026-11-23T10:00:00+00:00"
        assert body["ticket"]["id"] == str(ticket_id) and body["ticket"]["number"] == 100001
        assert (
            body["ticket"]["originator_email"] == "priya@customer.test"
            and body["ticket"]["queue"] == "Inbox"
        )
    assert json.loads(created.body)["event_id"] != json.loads(response.body)["event_id"]
    assert "response" not in json.loads(created.body)
    assert json.loads(response.body)["response"] | {"id": None} == {
        "id": None,
        "kind": "customer",
        "is_internal": False,
        "staff_response": False,
        "is_email_sourced": False,
        "created_by_email": None,
        "created_by_name": "",
        "created_at": "2026-11-23T10:00:00+00:00",
        "subject": "",
        "visible_text": "on fire",
    }


def test_status_assignment_notes_and_a_reopening_reply(desk: Desk) -> None:
    ticket_id = desk.create()
    with session_scope(desk.engine) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert ticket_changes.assign(session, ticket, "alice@helpdesk.test", change=desk.change())
        assert not ticket_changes.assign(
            session, ticket, "alice@helpdesk.test", change=desk.change()
        )  # no change, no event
        assert ticket_changes.set_status(session, ticket, "closed", change=desk.change())
        ticket_service.add_response(
            session,
            ticket,
            ticket_service.NewResponse(
                kind=ResponseKind.note, plain_text="internal", is_internal=True
            ),
            change=desk.change(),
        )
        ticket_service.add_response(
            session,
            ticket,
            ticket_service.NewResponse(kind=ResponseKind.customer, plain_text="still broken"),
            change=desk.change(),
        )
    assert desk.events("/crm") == [
        "ticket.created",
        "response.created",
        "ticket.assigned",
        "ticket.status_changed",
        "response.created",
        "response.created",
        "ticket.status_changed",
    ]
    assert desk.events("/pager") == ["ticket.assigned"]
    bodies = [json.loads(r.body) for r in desk.rows() if "/crm" in r.url]
    assigned, closed, note, reply, reopened = bodies[2:]
    assert (
        assigned["ticket"]["assigned_to_email"] == "alice@helpdesk.test"
        and assigned["previous_assignee"] is None
    )
    assert closed["ticket"]["status"] == "closed" and closed["previous_status"] == "open"
    assert note["response"]["is_internal"] is True and note["response"]["kind"] == "note"
    assert reply["response"]["is_internal"] is False
    assert reopened["ticket"]["status"] == "open" and reopened["previous_status"] == "closed"
    pager = next(r for r in desk.rows() if "/pager" in r.url)
    assert pager.secret_ref == ""  # unsigned subscription


def test_events_roll_back_with_the_change(desk: Desk) -> None:
    def create_then_fail() -> None:
        with session_scope(desk.engine) as session:
            ticket_service.create_ticket(
                session,
                subject="x",
                originator_email="a@b.test",
                first=ticket_service.NewResponse(kind=ResponseKind.customer, plain_text="x"),
                change=desk.change(),
            )
            assert len(list(session.exec(select(HttpDelivery)))) == 2
            raise RuntimeError("the request failed after the change")

    with pytest.raises(RuntimeError, match="failed after"):
        create_then_fail()
    assert desk.rows() == []


def test_mail_raises_the_same_events_as_the_service(desk: Desk) -> None:
    with session_scope(desk.engine) as session:
        spool.add_inbound(
            session,
            raw=make_mail(),
            envelope=spool.Envelope(
                source="smtp", mail_from="priya@customer.test", rcpt_tos=("support@helpdesk.test",)
            ),
            now=desk.clock.now(),
        )
    worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    assert desk.events("/crm") == ["ticket.created", "response.created"]
    assert json.loads(desk.rows()[1].body)["response"]["is_email_sourced"] is True


def test_without_subscriptions_a_write_costs_one_small_select(tmp_path: Path) -> None:
    desk = Desk(tmp_path, [])
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(desk.engine, "before_cursor_execute", record)
    try:
        desk.create()
    finally:
        event.remove(desk.engine, "before_cursor_execute", record)
        desk.app.close()
    hooks = [s for s in statements if "webhook_subscriptions" in s]
    assert len(hooks) == 1 and hooks[0].lstrip().upper().startswith(
        "SELECT"
    )  # two events, one query
    assert not [s for s in statements if "http_deliveries" in s]


def test_sync_follows_the_config(tmp_path: Path) -> None:
    desk = Desk(tmp_path, HOOKS)
    try:
        changed = Desk.configure(
            tmp_path,
            [{"name": "crm", "url": "https://crm.example.test/new", "events": ["ticket.created"]}],
        )
        sync_config(desk.engine, changed)
        with read_scope(desk.engine) as session:
            subs = list(session.exec(select(WebhookSubscription)))
        assert [(s.name, s.url, s.events, s.signed) for s in subs] == [
            ("crm", "https://crm.example.test/new", "ticket.created", False)
        ]
    finally:
        desk.app.close()


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([{"name": "a", "url": "ftp://x"}], "webhooks[0].url: expected an http:// or https:// URL"),
        (
            [{"name": "a", "url": "http://x", "events": ["ticket.deleted"]}],
            "webhooks[0].events[0]: expected one of",
        ),
        (
            [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}],
            "webhooks[1].name: expected a unique",
        ),
        ([{"url": "http://x"}], "webhooks[0].name: required key is missing"),
        ([{"name": "a", "url": "http://x:0/"}], "webhooks[0].url: port 0"),
        (
            [{"name": "a", "url": "http://x", "secret": "has space"}],
            "webhooks[0].secret: printable ASCII",
        ),
        ([{"name": "a", "url": "http://x"}], None),
    ],
)
def test_config_errors_name_the_key(hooks: list[dict[str, Any]], message: str | None) -> None:
    if message is None:  # the valid case: the checks refuse what they should, not more
        assert config_from_dict({"webhooks": hooks}).webhooks[0].url == "http://x"
        return
    with pytest.raises(ConfigError) as err:
        config_from_dict({"webhooks": hooks})
    assert str(err.value).startswith(message)


def test_on_hold_wake_up_and_api_status_go_through_the_status_path(desk: Desk) -> None:
    """Changes made by the scheduler and by the API's ticket_respond raise ticket.status_changed
    like every other status change (they go through ticket_changes.set_status)."""
    from datetime import date

    from mailhelpdesk.services import api_requests
    from mailhelpdesk.services.lifecycle import wake_on_hold

    ticket_id = desk.create()
    with session_scope(desk.engine) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        api_requests.respond(
            session,
            change=desk.change(Channel.api, Actor.agent("alice@helpdesk.test", "Alice")),
            ticket_number=ticket.number,
            from_email="alice@helpdesk.test",
            content="Waiting for parts",
            is_internal=False,
            status="on-hold",
            on_hold_until=date(2026, 11, 25),
        )
    desk.clock.advance(days=2)
    with session_scope(desk.engine) as session:
        assert wake_on_hold(session, change=desk.change(Channel.scheduler)) == [100001]
    changes = [
        json.loads(r.body) for r in desk.rows() if "/crm" in r.url and b"status_changed" in r.body
    ]
    assert [(c["previous_status"], c["ticket"]["status"]) for c in changes] == [
        ("open", "on-hold"),
        ("on-hold", "open"),
    ]
