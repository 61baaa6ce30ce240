"""Interventions in the service layer (api-contract.md §4.9), on a SQLite file without network:
config rules, create (shape C), the unique (name, uid), submit with type coercion, the epilog
row it queues, and what the epilog's outcome does to the ticket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailhelpdesk.clock import FrozenClock
from mailhelpdesk.config import ConfigError, config_from_dict
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import (
    HttpDelivery,
    InterventionInstance,
    OutboxItem,
    Response,
    Ticket,
)
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import interventions
from mailhelpdesk.services.interventions import (
    EpilogHandler,
    InterventionFieldError,
    InterventionNotOpen,
    InterventionUidExists,
)
from mailhelpdesk.store import http_outbox
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk as BaseDesk
from tests.desk import make_desk

FIELDS = [
    {"type": "text", "name": "order_price", "label": "Price in {{currency}}"},
    {"type": "checkbox", "name": "accept", "label": "Accept"},
    {"type": "text", "name": "comment", "label": "Comment"},
]


def write_templates(
    root: Path, name: str = "discount_request", *, public: bool = True, final: bool = True
) -> None:
    folder = root / "interventions"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.private.txt").write_text(
        "Discount asked on {{order_price}} {{currency}} (uid {{uid}}).\n"
    )
    if public:
        (folder / f"{name}.public.txt").write_text(
            "We are looking at your discount request for {{order_price}} {{currency}}.\n"
        )
    if final:
        (folder / f"{name}.final.txt").write_text(
            "Ticket {{ticket_number}}: decision {{ 'accepted' if accept else 'declined' }}, code {{ code | default('none') }}.\n"
        )


def intervention(**over: Any) -> dict[str, Any]:
    base = {
        "name": "discount_request",
        "title": "Discount for {{currency}} order",
        "queue": "Discounts",
        "remote_epilog_url": "http://127.0.0.1:9/epilog",
        "token": "tok-123",
        "fields": FIELDS,
    }
    return {**base, **over}


class Desk(BaseDesk):
    """The one built app (tests/desk.py) with interventions configured."""

    def __init__(self, tmp: Path, *items: dict[str, Any]) -> None:
        write_templates(tmp / "tpl")
        built = make_desk(
            tmp,
            {
                "templates": {"dir": str(tmp / "tpl")},
                "http_deliveries": {"max_attempts": 3},
                "interventions": list(items) or [intervention()],
            },
            clock=FrozenClock(datetime(2026, 12, 10, 9, 0, tzinfo=UTC)),
        )
        super().__init__(built.app)
        interventions.check_templates(self.config)
        self.handler = EpilogHandler(self.notify, self.clock)
        self.api = self.change(Channel.api, Actor.token("API"))

    def create(
        self,
        uid: str = "order-1001",
        data: dict[str, Any] | None = None,
        name: str = "discount_request",
    ) -> Ticket:
        with session_scope(self.engine) as session:
            ticket = interventions.create(
                session,
                change=self.api,
                originator_email="Cust@Example.test",
                name=name,
                uid=uid,
                data=data or {"currency": "GBP", "order_price": 100, "accept": False},
            )
            session.expunge(ticket)
            return ticket

    def submit(self, ticket: Ticket, values: dict[str, Any], **kw: Any) -> interventions.Submitted:
        with session_scope(self.engine) as session:
            fresh = session.get(Ticket, ticket.id)
            assert fresh is not None
            return interventions.submit(
                session,
                change=self.change(Channel.api, Actor.agent("alice@helpdesk.test", "Alice")),
                ticket=fresh,
                agent_email="alice@helpdesk.test",
                agent_name="Alice",
                values=values,
                **kw,
            )

    def instance(self) -> InterventionInstance:
        with read_scope(self.engine) as session:
            (row,) = session.exec(select(InterventionInstance)).all()
            return row

    def responses(self, ticket: Ticket) -> list[Response]:
        with read_scope(self.engine) as session:
            return list(
                session.exec(
                    select(Response).where(Response.ticket_id == ticket.id).order_by(Response.id)
                )
            )

    def deliveries(self) -> list[HttpDelivery]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(HttpDelivery).order_by(HttpDelivery.id)))

    def outbox(self) -> list[OutboxItem]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(OutboxItem).order_by(OutboxItem.id)))

    def outcome(
        self,
        *,
        ok: bool,
        status: int = 200,
        body: bytes = b"",
        error: str = "",
        final: bool = False,
    ) -> None:
        with session_scope(self.engine) as session:
            (row,) = session.exec(select(HttpDelivery).where(HttpDelivery.state == "queued")).all()
            row.attempts += 1
            if ok:
                self.handler.delivered(session, row, status, body)
            else:
                self.handler.failed(session, row, error, final=final)
                if final:
                    row.state = "failed"
            if ok:
                row.state = "delivered"
            session.add(row)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    made = Desk(tmp_path)
    yield made
    made.app.close()


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [intervention(), intervention()],
            "interventions[1].name: intervention 'discount_request' is defined twice",
        ),
        (
            [intervention(fields=[{"type": "radio", "name": "x"}])],
            "interventions[0].fields[0].type: expected one of text, checkbox",
        ),
        (
            [intervention(fields=[{"name": "a"}, {"name": "A"}])],
            "interventions[0].fields[1].name: field 'A' is defined twice",
        ),
        ([intervention(name="../etc")], "interventions[0].name: letters"),
        ([intervention(token="")], "interventions[0].token: required"),
        (
            [intervention(remote_epilog_url="ftp://x")],
            "interventions[0].remote_epilog_url: expected an http",
        ),
        (
            [intervention(remote_epilog_url="http://[::1/e")],
            "interventions[0].remote_epilog_url: not a usable URL",
        ),
        (
            [intervention(remote_epilog_url="http://r.test:99999/e")],
            "interventions[0].remote_epilog_url: not a usable",
        ),
        (
            [intervention(remote_epilog_url="http:///e")],
            "interventions[0].remote_epilog_url: the URL names no host",
        ),
        (
            [intervention(remote_epilog_url="http://r.test/a b")],
            "interventions[0].remote_epilog_url: spaces",
        ),
        ([intervention(token="tök")], "interventions[0].token: printable ASCII"),
        (
            [intervention(remote_timeout_s="10")],
            "interventions[0].remote_timeout_s: expected an integer",
        ),
        ([{"title": "x"}], "interventions[0].name: required key is missing"),
    ],
)
def test_config_errors_name_the_key(items: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"interventions": items})
    assert str(err.value).startswith(message), str(err.value)


def test_an_empty_token_file_stops_the_daemon_not_every_epilog(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("\n")
    config = config_from_dict(
        {
            "interventions": [
                {
                    "name": "plain",
                    "remote_epilog_url": "https://r.test/e",
                    "token_file": str(tmp_path / "tok"),
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"token_file .*: is empty"):
        interventions.delivery_secrets(config)


def test_defaults_and_token_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    config = config_from_dict(
        {
            "interventions": [
                {
                    "name": "plain",
                    "remote_epilog_url": "https://r.test/e",
                    "token_file": str(tmp_path / "tok"),
                }
            ]
        }
    )
    (item,) = config.interventions
    assert (item.queue, item.remote_enabled, item.remote_timeout_s, item.fields) == (
        "Inbox",
        True,
        10,
        (),
    )
    assert interventions.delivery_secrets(config) == {"intervention:plain": b"from-file"}


def test_missing_private_template_is_a_config_error(tmp_path: Path) -> None:
    config = config_from_dict(
        {"templates": {"dir": str(tmp_path)}, "interventions": [intervention(name="nothing")]}
    )
    with pytest.raises(
        ConfigError,
        match=r"interventions\[0\].name: template interventions/nothing.private.txt not found",
    ):
        interventions.check_templates(config)
    write_templates(tmp_path, "nothing", public=False, final=False)
    interventions.check_templates(config)


# -- create ---------------------------------------------------------------------------------------


def test_create_opens_ticket_in_its_queue_with_private_note_and_public_response(desk: Desk) -> None:
    ticket = desk.create()
    assert (
        ticket.subject == "Discount for GBP order"
        and ticket.originator_email == "cust@example.test"
    )
    with read_scope(desk.engine) as session:
        assert session.get(Ticket, ticket.id).queue_id != 1  # type: ignore[union-attr]
        from mailhelpdesk.store import tickets as store

        assert store.queue_names(session)[ticket.queue_id] == "Discounts"
    private, public = desk.responses(ticket)
    assert (private.kind, private.is_internal) == ("note", True)
    assert private.plain_text == "Discount asked on 100 GBP (uid order-1001).\n"
    assert (public.kind, public.is_internal) == ("agent", False)
    assert "100 GBP" in public.plain_text
    rows = desk.outbox()
    assert sorted(r.kind for r in rows) == ["agent_response", "new_ticket"]
    assert {r.primary_rcpt for r in rows} == {"alice@helpdesk.test", "cust@example.test"}
    row = desk.instance()
    assert (row.name, row.uid, row.state, row.ticket_id) == (
        "discount_request",
        "order-1001",
        "open",
        ticket.id,
    )
    assert json.loads(row.data) == {"currency": "GBP", "order_price": 100, "accept": False}


def test_same_uid_again_is_refused_with_the_existing_ticket(desk: Desk) -> None:
    ticket = desk.create()
    with pytest.raises(InterventionUidExists) as err:
        desk.create()
    assert err.value.data == {"ticket_number": ticket.number}
    desk.create(uid="order-1002")  # another uid is another instance


def test_unique_index_decides_when_the_select_did_not_see_the_winner(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creates racing: the loser's SELECT saw nothing, its INSERT must still lose."""
    first = desk.create()
    real = interventions.store.get_by_uid
    calls = {"n": 0}

    def blind_first_time(session: Any, **kw: Any) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(session, **kw)

    monkeypatch.setattr(interventions.store, "get_by_uid", blind_first_time)
    with pytest.raises(InterventionUidExists) as err:
        desk.create()
    assert err.value.data == {"ticket_number": first.number}
    with read_scope(desk.engine) as session:
        assert len(session.exec(select(Ticket)).all()) == 1  # the loser's ticket rolled back


def test_unknown_intervention_and_unfillable_template(desk: Desk) -> None:
    with pytest.raises(InterventionFieldError) as err:
        desk.create(name="nope")
    assert err.value.field == "intervention"
    with pytest.raises(InterventionFieldError) as err:
        desk.create(data={"currency": "GBP"})  # the private template needs order_price
    assert err.value.field == "data.data" and "order_price" in str(err.value)


# -- submit ---------------------------------------------------------------------------------------


def test_submit_records_note_updates_bag_and_queues_one_epilog(desk: Desk) -> None:
    ticket = desk.create()
    done = desk.submit(ticket, {"order_price": "90", "accept": "yes"}, content="Fine by me.")
    row = desk.instance()
    assert row.state == "submitted" and row.submitted_by_email == "alice@helpdesk.test"
    assert json.loads(row.data) == {"currency": "GBP", "order_price": 90, "accept": True}
    note = desk.responses(ticket)[-1]
    assert note.id == done.response_id == row.submitted_response_id and note.is_internal
    assert "- Price in GBP: 90 (changed)" in note.plain_text and "Fine by me." in note.plain_text
    (delivery,) = desk.deliveries()
    assert (delivery.kind, delivery.ref, delivery.url) == (
        "epilog",
        f"intervention:{row.id}",
        "http://127.0.0.1:9/epilog",
    )
    assert (delivery.secret_ref, delivery.max_attempts, delivery.timeout_s) == (
        "intervention:discount_request",
        3,
        10.0,
    )
    # the bearer token is added by the sender from secret_ref: no credential is stored with the row
    assert http_outbox.headers_of(delivery) == {
        "Idempotency-Key": f"epilog:discount_request:order-1001:{done.response_id}",
    }
    assert delivery.bearer_from_secret and b"tok-123" not in delivery.body
    assert json.loads(delivery.body) == {
        "ticket_id": ticket.id,
        "response_id": done.response_id,
        "ticket_number": ticket.number,
        "intervention": "discount_request",
        "uid": "order-1001",
        "data": {"currency": "GBP", "order_price": 90, "accept": True},
        "submitted_by_email": "alice@helpdesk.test",
        "submitted_at": "2026-12-10T09:00:00+00:00",
    }
    with pytest.raises(InterventionNotOpen):
        desk.submit(ticket, {})
    assert len(desk.deliveries()) == 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"nope": 1}, "data.nope"),
        ({"accept": "maybe"}, "data.accept"),
        ({"comment": None}, "data.comment"),
        ({"accept": 2}, "data.accept"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    desk: Desk, values: dict[str, Any], field: str
) -> None:
    ticket = desk.create()
    with pytest.raises(InterventionFieldError) as err:
        desk.submit(ticket, values)
    assert err.value.field == field
    assert desk.instance().state == "open" and desk.deliveries() == []


def test_edit_without_submit_keeps_it_open(desk: Desk) -> None:
    ticket = desk.create()
    desk.submit(ticket, {"comment": "needs a manager"}, final=False)
    row = desk.instance()
    assert row.state == "open" and json.loads(row.data)["comment"] == "needs a manager"
    assert (
        desk.deliveries() == []
        and "edited by alice@helpdesk.test" in desk.responses(ticket)[-1].plain_text
    )


@pytest.mark.parametrize(
    ("kind", "value", "current", "expected"),
    [
        ("checkbox", "No", None, False),
        ("checkbox", "1", None, True),
        ("checkbox", True, None, True),
        ("text", "90", 100, 90),
        ("text", "9.5", 100, 9.5),
        ("text", "90", "100", "90"),
        ("text", "ten", 100, "ten"),
        ("text", 12, None, 12),
    ],
)
def test_coercion(kind: str, value: Any, current: Any, expected: Any) -> None:
    from mailhelpdesk.config import InterventionFieldConfig

    got = interventions.coerce(InterventionFieldConfig(name="f", type=kind), value, current)
    assert got == expected and type(got) is type(expected)


def test_check_command_for_mail(desk: Desk) -> None:
    ticket = desk.create()
    with session_scope(desk.engine) as session:
        fresh = session.get(Ticket, ticket.id)
        interventions.check_command(
            session, desk.notify, fresh, "set", "ACCEPT", "no"
        )  # case-insensitive
        with pytest.raises(InvalidInputError, match="unknown field 'colour'"):
            interventions.check_command(session, desk.notify, fresh, "set", "colour", "red")
        with pytest.raises(InvalidInputError, match="checkbox"):
            interventions.check_command(session, desk.notify, fresh, "set", "accept", "perhaps")


# -- the epilog's outcome -------------------------------------------------------------------------


def test_delivered_merges_reply_and_posts_final_publicly(desk: Desk) -> None:
    ticket = desk.create()
    desk.submit(ticket, {"accept": True})
    before = len(desk.outbox())
    desk.outcome(ok=True, body=b'{"ok": true, "data": {"code": "SAVE10"}}')
    row = desk.instance()
    assert row.state == "completed" and json.loads(row.data)["code"] == "SAVE10"
    final = desk.responses(ticket)[-1]
    assert (final.kind, final.is_internal) == ("agent", False)
    assert final.plain_text == f"Ticket {ticket.number}: decision accepted, code SAVE10.\n"
    (mail,) = desk.outbox()[before:]
    assert (mail.kind, mail.primary_rcpt) == ("agent_response", "cust@example.test")


def test_a_final_response_that_cannot_be_mailed_does_not_undo_the_completion(desk: Desk) -> None:
    """The customer's address cannot be carried by our mail (a non-ASCII local part, possible on a
    ticket opened by mail): the remote's acceptance still completes the intervention and the
    final response is posted; the one notice that cannot be built is failed, with the reason,
    visible in the outbox (one error behaviour for every notice)."""
    ticket = desk.create()
    desk.submit(ticket, {"accept": True})
    with session_scope(desk.engine) as session:
        fresh = session.get(Ticket, ticket.id)
        assert fresh is not None
        fresh.originator_email = "jos\u00e9@example.test"
        session.add(fresh)
    before = len(desk.outbox())
    desk.outcome(ok=True, body=b'{"ok": true, "data": {"code": "SAVE10"}}')
    assert desk.instance().state == "completed"
    final = desk.responses(ticket)[-1]
    assert (final.kind, final.is_internal) == ("agent", False)
    (mail,) = desk.outbox()[before:]
    assert (mail.kind, mail.state) == ("agent_response", "failed")
    assert "non-ASCII local part" in mail.last_error and mail.raw == b""


def test_delivered_without_json_still_completes(desk: Desk) -> None:
    ticket = desk.create()
    desk.submit(ticket, {"accept": False})
    desk.outcome(ok=True, status=204, body=b"")
    assert desk.instance().state == "completed"
    assert desk.responses(ticket)[-1].plain_text.endswith("decision declined, code none.\n")


def test_each_failure_is_a_staff_note_and_the_last_marks_failed(desk: Desk) -> None:
    ticket = desk.create()
    desk.submit(ticket, {"accept": True})
    desk.outcome(ok=False, error="HTTP 500")
    note = desk.responses(ticket)[-1]
    assert (
        note.is_internal
        and "(attempt 1 of 3): HTTP 500" in note.plain_text
        and "retried" in note.plain_text
    )
    assert desk.instance().state == "submitted"
    desk.outcome(ok=False, error="connection refused", final=True)
    note = desk.responses(ticket)[-1]
    assert (
        "(attempt 2 of 3): connection refused" in note.plain_text
        and "marked failed" in note.plain_text
    )
    assert desk.instance().state == "failed"
    with read_scope(desk.engine) as session:
        assert session.get(Ticket, ticket.id).status == "open"  # type: ignore[union-attr]
    again = desk.submit(ticket, {})  # a failed intervention may be submitted again
    assert again.epilog is not None and desk.instance().state == "submitted"


def test_without_remote_submit_completes_at_once(tmp_path: Path) -> None:
    desk = Desk(tmp_path, intervention(remote_enabled=False))
    ticket = desk.create()
    done = desk.submit(ticket, {"accept": True})
    assert done.epilog is None and desk.deliveries() == []
    assert desk.instance().state == "completed"
    assert "decision accepted" in desk.responses(ticket)[-1].plain_text
