"""Notices: written to the outbox in the change's transaction, threaded, loop-safe, rate limited."""

from __future__ import annotations

import dataclasses
import email
import json
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlmodel import select

from mailhelpdesk.cli import main
from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.events import Actor
from mailhelpdesk.domain.models import KnownMessageId, OutboxItem, SuppressedAddress, Ticket
from mailhelpdesk.mail.compose import AUTO_GENERATED
from mailhelpdesk.mail.tokens import split_plus, verify_token
from mailhelpdesk.services import notify, ticket_changes, tickets
from mailhelpdesk.services.notify import auto_reply_refusal
from mailhelpdesk.store import outbox
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import make_mail


@pytest.fixture
def desk(desk_factory: Any) -> Desk:
    return desk_factory()  # type: ignore[no-any-return]


def outbox_rows(desk: Desk) -> list[OutboxItem]:
    with read_scope(desk.engine) as session:
        return list(session.exec(select(OutboxItem).order_by(OutboxItem.id)))


def parsed(row: OutboxItem) -> email.message.EmailMessage:
    return email.message_from_bytes(row.raw, policy=default_policy)  # type: ignore[return-value]


def test_new_ticket_queues_acknowledgement_and_agent_notice(desk: Desk) -> None:
    desk.feed(make_mail(subject="Printer on fire", message_id="<first@customer.test>"))
    ack, agent = outbox_rows(desk)
    assert (ack.kind, ack.primary_rcpt, ack.state, ack.is_automatic) == (
        "acknowledgement",
        "priya@customer.test",
        "queued",
        True,
    )
    assert (agent.kind, agent.primary_rcpt, agent.state) == (
        "new_ticket",
        "alice@helpdesk.test",
        "queued",
    )
    msg = parsed(ack)
    assert msg["Subject"] == "[#100001] Printer on fire"
    assert msg["In-Reply-To"] == "<first@customer.test>" and msg["Auto-Submitted"] == "auto-replied"
    base, tag = split_plus(msg["Reply-To"].addresses[0].addr_spec)
    assert (
        base == "support@helpdesk.test"
        and verify_token(desk.settings.secret, tag or "").ticket_number == 100001
    )  # type: ignore[union-attr]
    agent_msg = parsed(agent)
    assert agent_msg["Auto-Submitted"] == "auto-generated"
    token = verify_token(
        desk.settings.secret,
        split_plus(agent_msg["Reply-To"].addresses[0].addr_spec)[1] or "",
        agent_key=lambda agent_id: desk.signed_for(0, agent_id).agent_key,
    )
    assert token is not None and token.agent_id == desk.settings.agents[0].id
    assert "My printer is on fire." in agent_msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    with read_scope(desk.engine) as session:
        out = {
            k.message_id
            for k in session.exec(select(KnownMessageId).where(KnownMessageId.direction == "out"))
        }
    assert out == {ack.message_id, agent.message_id}


def test_reply_to_the_acknowledgement_threads_and_notifies_agents(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<first@customer.test>"))
    ack = outbox_rows(desk)[0]
    row = desk.feed(
        make_mail(
            subject="Re: [#100001] Help please",
            message_id="<second@customer.test>",
            headers={"In-Reply-To": ack.message_id},
        )
    )
    assert row.outcome == "reply_added"
    new = outbox_rows(desk)[2:]
    assert [(r.kind, r.primary_rcpt) for r in new] == [("customer_reply", "alice@helpdesk.test")]
    assert parsed(new[0])["In-Reply-To"] == "<second@customer.test>"


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Precedence": "bulk"},
        {"X-Autoreply": "yes"},
        {"List-Id": "<x.lists.test>"},
    ],
)
def test_automatic_mail_causes_no_notice(desk: Desk, headers: dict[str, str]) -> None:
    desk.feed(make_mail(subject="Out of office", headers=headers))
    assert outbox_rows(desk) == []


def test_auto_reply_to_a_notice_is_recorded_without_notice(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<first@customer.test>"))
    ack = outbox_rows(desk)[0]
    row = desk.feed(
        make_mail(
            subject="Automatic reply: out of office",
            headers={"In-Reply-To": ack.message_id, "Auto-Submitted": "auto-replied"},
        )
    )
    assert row.outcome == "recorded"
    assert len(outbox_rows(desk)) == 2


def test_duplicate_and_our_own_mail_cause_no_notice(desk: Desk) -> None:
    raw = make_mail(message_id="<same@customer.test>")
    desk.feed(raw)
    assert desk.feed(raw).outcome == "duplicate"
    ack = outbox_rows(desk)[0]
    assert desk.feed(ack.raw, mail_from="support@helpdesk.test").outcome == "classified"
    assert len(outbox_rows(desk)) == 2


def test_imported_mail_causes_no_notice(desk: Desk) -> None:
    """`mailhelpdesk import` of an archive must not mail every customer in it."""
    from mailhelpdesk.ingest import worker
    from mailhelpdesk.store import spool

    with session_scope(desk.engine) as session:
        spool.add_inbound(
            session,
            raw=make_mail(),
            envelope=spool.Envelope(source="import", mail_from=None),
            now=desk.clock.now(),
        )
    worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    assert len(desk.tickets()) == 1 and outbox_rows(desk) == []


def test_queue_without_acknowledge_gets_only_agent_notice(desk: Desk) -> None:
    assert desk.settings.notify is not None
    desk.settings = dataclasses.replace(
        desk.settings,
        notify=dataclasses.replace(desk.settings.notify, no_ack_queues=frozenset({"Billing"})),
    )
    desk.feed(make_mail(to="billing@helpdesk.test"), rcpt=("billing@helpdesk.test",))
    assert [r.kind for r in outbox_rows(desk)] == ["new_ticket"]


@pytest.mark.parametrize(
    "sender",
    [
        "noreply@shop.test",
        "No-Reply@shop.test",
        "do-not-reply@shop.test",
        "list-bounces@lists.test",
    ],
)
def test_robot_senders_get_no_acknowledgement(desk: Desk, sender: str) -> None:
    desk.feed(make_mail(sender=sender))
    ack, agent = outbox_rows(desk)
    assert ack.state == "suppressed" and "no-reply" in ack.last_error
    assert agent.state == "queued"


def test_suppressed_address_gets_no_automatic_notice(desk: Desk) -> None:
    with session_scope(desk.engine) as session:
        session.add(
            SuppressedAddress(
                email="priya@customer.test",
                reason="550 mailbox gone",
                until_at=desk.clock.now() + timedelta(days=1),
            )
        )
    desk.feed(make_mail())
    ack = outbox_rows(desk)[0]
    assert ack.state == "suppressed" and "550 mailbox gone" in ack.last_error


def test_rate_limit_per_recipient_sliding_window(desk: Desk) -> None:
    """At most max_auto_notices_per_window automatic notices to one customer per window;
    agents are exempt; once the window slides on, notices go out again."""
    for i in range(12):
        desk.feed(make_mail(subject=f"ticket {i}"))
    acks = [r for r in outbox_rows(desk) if r.kind == "acknowledgement"]
    assert [r.state for r in acks] == ["queued"] * 10 + ["suppressed"] * 2
    assert "rate limit" in acks[-1].last_error
    assert all(r.state == "queued" for r in outbox_rows(desk) if r.kind == "new_ticket")
    desk.clock.advance(seconds=3600)
    desk.feed(make_mail(subject="later"))
    assert (
        outbox_rows(desk)[-2].kind == "acknowledgement" and outbox_rows(desk)[-2].state == "queued"
    )


@pytest.mark.parametrize(
    ("address", "kw", "refused"),
    [
        ("priya@customer.test", {}, None),
        ("support@helpdesk.test", {}, "own"),
        ("support+t1-abc@helpdesk.test", {}, "own"),
        ("no_reply@x.test", {}, "no-reply"),
        ("donotreply@x.test", {}, "no-reply"),
        ("MAILER-DAEMON@mx.test", {}, "no-reply"),
        ("postmaster@mx.test", {}, "no-reply"),
        ("owner-list@x.test", {}, "no-reply"),
        ("priya@customer.test", {"suppressed": "bounced"}, "suppressed"),
        ("priya@customer.test", {"recent_automatic": 10}, "rate limit"),
        ("alice@helpdesk2.test", {"recent_automatic": 99, "rate_limited": False}, None),
        ("", {}, "no usable address"),
    ],
)
def test_auto_reply_refusal_is_one_pure_function(
    address: str, kw: dict[str, object], refused: str | None
) -> None:
    args: dict[str, object] = {
        "own_addresses": frozenset({"support@helpdesk.test"}),
        "suppressed": None,
        "recent_automatic": 0,
        "max_per_window": 10,
    }
    args.update(kw)
    reason = auto_reply_refusal(address, **args)  # type: ignore[arg-type]
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def closed_notice(
    session: Any, ticket: Ticket, settings: notify.NotifySettings, clock: Any
) -> OutboxItem:
    """One `ticket_closed` notice written straight through the outbox writer."""
    return notify.write_notice(
        session,
        notify.plan_notice(
            session,
            notice="ticket_closed",
            ticket=ticket,
            recipient=notify.Recipient(ticket.originator_email, ticket.originator_name),
            context=notify.notice_context(session, ticket, settings=settings),
            settings=settings,
            clock=clock,
            auto_submitted=AUTO_GENERATED,
        ),
    )


def test_rolled_back_change_sends_nothing(desk: Desk) -> None:
    def create_then_fail() -> None:
        with session_scope(desk.engine) as session:
            tickets.create_ticket(
                session,
                subject="x",
                originator_email="priya@customer.test",
                first=tickets.NewResponse(kind=ResponseKind.customer, plain_text="hi"),
                change=desk.change(),
            )
            assert session.exec(select(OutboxItem)).all(), "the creation wrote its notices"
            raise RuntimeError("the change fails after the notice was written")

    with pytest.raises(RuntimeError, match="fails after"):
        create_then_fail()
    assert outbox_rows(desk) == [] and desk.tickets() == []


def test_agent_response_is_human_mail(desk: Desk) -> None:
    desk.feed(make_mail())
    alice = desk.change(actor=Actor.agent("alice@helpdesk.test", "Alice"))
    for _ in range(12):
        with session_scope(desk.engine) as session:
            ticket = session.exec(select(Ticket)).one()
            tickets.add_response(
                session,
                ticket,
                tickets.NewResponse(
                    kind=ResponseKind.agent,
                    plain_text="Try turning it off.",
                    created_by_email="alice@helpdesk.test",
                    created_by_name="Alice",
                ),
                change=alice,
            )
    answers = [r for r in outbox_rows(desk) if r.kind == "agent_response"]
    assert len(answers) == 12 and all(r.state == "queued" and not r.is_automatic for r in answers)
    msg = parsed(answers[0])
    assert msg["Auto-Submitted"] is None and msg["Subject"] == "Re: [#100001] Help please"
    assert msg["From"].addresses[0].display_name == "Alice via Test Support"


def test_status_notices_render(desk: Desk) -> None:
    desk.feed(make_mail())
    before = len(outbox_rows(desk))
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        ticket_changes.set_status(session, ticket, "closed", change=desk.change())
        ticket_changes.set_status(session, ticket, "open", change=desk.change())
    assert desk.compose_notices() == 2
    closed, reopened = outbox_rows(desk)[before:]
    assert (closed.kind, reopened.kind) == ("ticket_closed", "ticket_reopened")
    assert parsed(closed)["Subject"] == "[#100001] Closed: Help please"
    assert parsed(reopened)["Auto-Submitted"] == "auto-generated"


def test_notices_written_as_specs_compose_like_inline_ones(desk: Desk, tmp_path: Path) -> None:
    """The sender composes a deferred notice into the same mail the change would have composed
    inline (same Message-ID it was recorded under, same headers and text), and a template that
    fails fails only that notice, with the reason, on either path."""
    desk.feed(make_mail(subject="Deferred or not"))
    inline = dataclasses.replace(desk.notify, compose_in_sender=False)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        deferred = closed_notice(session, ticket, desk.notify, desk.clock)
        direct = closed_notice(session, ticket, inline, desk.clock)
        assert (
            deferred.raw == b""
            and deferred.compose_spec
            and direct.raw
            and direct.compose_spec is None
        )
        deferred_id, direct_id, deferred_mid = deferred.id, direct.id, deferred.message_id
    with session_scope(desk.engine) as session:  # not claimable before it is composed
        assert deferred_id not in [
            r.id for r in outbox.claim_due(session, now=desk.clock.now(), limit=100, lease_s=1)
        ]
    assert desk.compose_notices() == 1
    rows = {row.id: row for row in outbox_rows(desk)}
    a, b = parsed(rows[deferred_id]), parsed(rows[direct_id])
    assert a["Message-ID"] == deferred_mid and a["Message-ID"] != b["Message-ID"]
    for header in ("Subject", "From", "To", "Reply-To", "Auto-Submitted", "In-Reply-To", "Date"):
        assert str(a[header]) == str(b[header]), header
    assert a.get_body(("plain",)).get_content() == b.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # a broken override template: the notice fails with the reason, the change stands, on the
    # deferred path (composed by the sender) and on the inline path alike
    (tmp_path / "notices").mkdir()
    (tmp_path / "notices" / "ticket_closed.subject.txt").write_text("{{ ticket_tag ")
    broken = dataclasses.replace(desk.notify, template_dir=str(tmp_path))
    broken_inline = dataclasses.replace(broken, compose_in_sender=False)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        bad_id = closed_notice(session, ticket, broken, desk.clock).id
        bad_inline = closed_notice(session, ticket, broken_inline, desk.clock)
        assert bad_inline.state == "failed" and bad_inline.last_error.startswith("cannot compose")
    with session_scope(desk.engine) as session:
        assert notify.compose_pending(session, broken) == 1
    row = {r.id: r for r in outbox_rows(desk)}[bad_id]
    assert (
        row.state == "failed"
        and row.last_error.startswith("cannot compose")
        and row.compose_spec is None
    )


def test_cli_render_matches_the_notice_the_service_queued(desk: Desk, tmp_path: Path) -> None:
    """`mailhelpdesk render` and the service use the same function: same data, same mail text."""
    assert desk.settings.notify is not None
    desk.feed(make_mail(subject="Печать не работает", sender="Prïya <priya@customer.test>"))
    ack = outbox_rows(desk)[0]
    with read_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        context = notify.notice_context(session, ticket, settings=desk.settings.notify)
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n')
    result = CliRunner().invoke(
        main,
        [
            "--config",
            str(cfg),
            "render",
            "acknowledgement",
            "--data",
            json.dumps(context),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    msg = parsed(ack)
    assert cli["subject"] == msg["Subject"]
    assert cli["text"] == msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert cli["html"] == msg.get_body(("html",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]


def test_cli_render_reports_missing_data(tmp_path: Path) -> None:
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n')
    result = CliRunner().invoke(
        main, ["--config", str(cfg), "render", "acknowledgement", "--data", "{}"]
    )
    assert (
        result.exit_code != 0
        and "is undefined" in result.output
        and "Traceback" not in result.output
    )
