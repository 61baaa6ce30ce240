"""The ingest pipeline end to end on a real SQLite file: threading, dedupe, loops, party rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from sqlmodel import select

from mailhelpdesk.domain.models import InboundMessage, Ticket
from mailhelpdesk.ingest import worker
from mailhelpdesk.ingest.pipeline import STEPS
from mailhelpdesk.mail.tokens import ReplyToken, reply_address
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import fail_reply_text_on, make_mail


@pytest.fixture
def desk(desk_factory: Any) -> Desk:
    return desk_factory()  # type: ignore[no-any-return]


def test_steps_are_one_ordered_table() -> None:
    """The pipeline reads top to bottom in the order DESIGN.md gives."""
    assert [name for name, _ in STEPS] == [
        "parse",
        "dedupe",
        "classify",
        "record-bounce",
        "thread",
        "identify-sender",
        "apply",
    ]


def test_new_mail_opens_ticket_with_6_digit_number(desk: Desk) -> None:
    row = desk.feed(make_mail(subject="Printer on fire"))
    assert row.state == "done" and row.outcome == "ticket_created"
    (ticket,) = desk.tickets()
    assert ticket.number == 100001
    assert ticket.subject == "Printer on fire"
    assert ticket.originator_email == "priya@customer.test"
    assert ticket.originator_name == "Priya Sharma"
    assert ticket.status == "open"


def test_queue_follows_recipient_address(desk: Desk) -> None:
    desk.feed(make_mail(to="billing@helpdesk.test"), rcpt=("billing@helpdesk.test",))
    (ticket,) = desk.tickets()
    with read_scope(desk.engine) as session:
        from mailhelpdesk.store.tickets import queue_names

        assert queue_names(session)[ticket.queue_id] == "Billing"


def test_reply_by_in_reply_to_lands_on_ticket(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<first@customer.test>"))
    row = desk.feed(
        make_mail(
            subject="Re: Help please",
            message_id="<second@customer.test>",
            headers={"In-Reply-To": "<first@customer.test>"},
        )
    )
    assert row.outcome == "reply_added"
    (ticket,) = desk.tickets()
    assert [r.kind for r in desk.responses(ticket)] == ["customer", "customer"]


def test_reply_by_references_only(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<root@customer.test>"))
    row = desk.feed(
        make_mail(
            subject="something else",
            headers={"References": "<unknown@x.test> <root@customer.test>"},
        )
    )
    assert row.outcome == "reply_added"
    assert len(desk.tickets()) == 1


def test_reply_to_signed_address_lands_on_ticket(desk: Desk) -> None:
    desk.feed(make_mail())
    address = reply_address(desk.settings.secret, "support@helpdesk.test", ReplyToken(100001))
    row = desk.feed(make_mail(subject="no tag, no references", to=address), rcpt=(address,))
    assert row.outcome == "reply_added" and "signed_address" in row.reason
    assert len(desk.tickets()) == 1


def test_forged_reply_token_does_not_thread(desk: Desk) -> None:
    desk.feed(make_mail())
    forged = "support+t100001-aaaaaaaaaaaaaaaa@helpdesk.test"
    row = desk.feed(make_mail(subject="hello", to=forged), rcpt=(forged,))
    assert row.outcome == "ticket_created"
    assert len(desk.tickets()) == 2


def test_subject_tag_from_party_is_public_reply(desk: Desk) -> None:
    desk.feed(make_mail())
    row = desk.feed(make_mail(subject="Re: [#100001] Help please"))
    assert row.outcome == "reply_added"
    (ticket,) = desk.tickets()
    assert not desk.responses(ticket)[-1].is_internal


def test_party_rule_stranger_with_subject_tag_is_held_internal(desk: Desk) -> None:
    """A subject tag alone never makes a stranger's mail a public reply."""
    desk.feed(make_mail())
    row = desk.feed(
        make_mail(subject="Re: [#100001] I want in", sender="Mallory <mallory@evil.test>")
    )
    assert row.outcome == "held"
    (ticket,) = desk.tickets()
    last = desk.responses(ticket)[-1]
    assert last.is_internal is True
    assert last.created_by_email == "mallory@evil.test"


def test_party_rule_applies_to_references(desk: Desk) -> None:
    """Someone not on the ticket whose mail names the customer's Message-ID in In-Reply-To is
    held internal (issue 17, CC hijack: a known Message-ID does not make a party); once the
    customer CCs them, their replies are public."""
    desk.feed(make_mail(message_id="<orig@customer.test>"))
    row = desk.feed(
        make_mail(sender="colleague@customer.test", headers={"In-Reply-To": "<orig@customer.test>"})
    )
    assert row.outcome == "held"
    desk.feed(
        make_mail(
            headers={"In-Reply-To": "<orig@customer.test>", "Cc": "colleague@customer.test"},
            sender="Priya Sharma <priya@customer.test>",
        )
    )
    row = desk.feed(
        make_mail(sender="colleague@customer.test", headers={"In-Reply-To": "<orig@customer.test>"})
    )
    assert row.outcome == "reply_added"


def test_unverified_agent_address_is_held(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<orig2@customer.test>"))
    row = desk.feed(
        make_mail(
            sender="Alice <alice@helpdesk.test>", headers={"In-Reply-To": "<orig2@customer.test>"}
        )
    )
    assert row.outcome == "held"
    (ticket,) = desk.tickets()
    assert desk.responses(ticket)[-1].is_internal


def test_agent_reply_to_signed_agent_address_is_verified(desk: Desk) -> None:
    desk.feed(make_mail())
    alice = next(a for a in desk.settings.agents if a.email == "alice@helpdesk.test")
    address = reply_address(
        desk.settings.secret, "support@helpdesk.test", desk.signed_for(100001, alice.id)
    )
    row = desk.feed(
        make_mail(sender="Alice <alice@helpdesk.test>", to=address, body="We are on it.\n"),
        rcpt=(address,),
    )
    assert row.outcome == "reply_added"
    (ticket,) = desk.tickets()
    last = desk.responses(ticket)[-1]
    assert (last.kind, last.verified, last.staff_response) == ("agent", "signed_address", True)


def test_same_message_twice_is_applied_once(desk: Desk) -> None:
    raw = make_mail(message_id="<dup@customer.test>")
    desk.feed(raw)
    second = desk.feed(raw)
    assert second.outcome == "duplicate"
    assert len(desk.tickets()) == 1


def test_same_message_by_smtp_and_imap_copy_is_applied_once(desk: Desk) -> None:
    """An IMAP copy carries extra trace headers and other line endings: still the same message."""
    raw = make_mail(message_id="<both@customer.test>")
    desk.feed(raw)
    imap_copy = (
        b"Return-Path: <priya@customer.test>\r\nDelivered-To: support@helpdesk.test\r\nReceived: from mx by imap; Mon, 23 Nov 2026 10:00:01 +0000\r\n"
        + raw
    )
    second = desk.feed(imap_copy.replace(b"\r\n", b"\n"))
    assert second.outcome == "duplicate"
    assert len(desk.tickets()) == 1


def test_reused_message_id_with_other_content_is_not_dropped(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<same@customer.test>", subject="First problem", body="one\n"))
    second = desk.feed(
        make_mail(
            message_id="<same@customer.test>",
            subject="Second problem",
            body="two\n",
            sender="bob@other.test",
        )
    )
    assert second.outcome in ("ticket_created", "reply_added")
    assert second.outcome != "duplicate"
    texts = [r.plain_text for t in desk.tickets() for r in desk.responses(t)]
    assert any("two" in text for text in texts)


def test_own_mail_coming_back_is_a_loop(desk: Desk) -> None:
    row = desk.feed(
        make_mail(sender="Test Support <support@helpdesk.test>", subject="[#100001] Your ticket")
    )
    assert row.outcome == "classified" and row.reason.startswith("loop")
    assert desk.tickets() == []


def test_auto_reply_never_opens_ticket(desk: Desk) -> None:
    row = desk.feed(make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"}))
    assert row.outcome == "classified" and "auto_reply" in row.reason
    assert desk.tickets() == []


def test_auto_reply_on_ticket_is_recorded_as_system_event(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<asked@customer.test>"))
    row = desk.feed(
        make_mail(
            subject="Automatic reply: Help",
            headers={"Auto-Submitted": "auto-replied", "In-Reply-To": "<asked@customer.test>"},
        )
    )
    assert row.outcome == "recorded"
    (ticket,) = desk.tickets()
    last = desk.responses(ticket)[-1]
    assert last.kind == "system" and last.is_internal


def test_bounce_never_opens_ticket(desk: Desk) -> None:
    row = desk.feed(
        make_mail(
            sender="MAILER-DAEMON@mx.customer.test", subject="Undelivered Mail Returned to Sender"
        ),
        mail_from="",
    )
    assert row.outcome == "classified" and "bounce" in row.reason
    assert desk.tickets() == []


def test_customer_reply_reopens_closed_ticket(desk: Desk) -> None:
    desk.feed(make_mail(message_id="<c1@customer.test>"))
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.status = "closed"
        session.add(ticket)
    desk.feed(make_mail(headers={"In-Reply-To": "<c1@customer.test>"}))
    assert desk.tickets()[0].status == "open"


def test_customer_cc_becomes_ticket_cc_and_reply_all_threads(desk: Desk) -> None:
    desk.feed(
        make_mail(message_id="<cc1@customer.test>", headers={"Cc": "Boss <boss@customer.test>"})
    )
    row = desk.feed(
        make_mail(
            sender="boss@customer.test",
            subject="Re: Help please",
            headers={"In-Reply-To": "<cc1@customer.test>"},
        )
    )
    assert row.outcome == "reply_added"
    (ticket,) = desk.tickets()
    with read_scope(desk.engine) as session:
        from mailhelpdesk.store.tickets import ccs_of

        assert [c.email for c in ccs_of(session, ticket.id or 0)] == ["boss@customer.test"]


def test_failing_message_is_set_aside_and_others_continue(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_reply_text_on(monkeypatch, "EXPLODE")
    _keep(desk, [make_mail(body=body) for body in ("fine one\n", "EXPLODE\n", "fine two\n")])
    worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    with read_scope(desk.engine) as session:
        rows = list(session.exec(select(InboundMessage).order_by(InboundMessage.id)))
    assert [r.state for r in rows] == ["done", "failed", "done"]
    assert "boom in reply text" in rows[1].reason
    assert len(desk.tickets()) == 2
    monkeypatch.undo()
    assert worker.retry(desk.engine, rows[1].id or 0)
    worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    assert len(desk.tickets()) == 3


def test_a_failure_in_the_batch_rewrites_it_with_a_savepoint_per_message(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch is written optimistically; a failing message rolls that pass back and the
    batch is written again, each message alone. Nothing of the first pass survives: one ticket,
    each notice once, one event of each, one log line per message; the reply after the
    failing message still lands on the ticket the same batch opened."""
    fail_reply_text_on(monkeypatch, "EXPLODE")
    mails = (
        make_mail(message_id="<opening@customer.test>", body="first\n"),
        make_mail(message_id="<bad@customer.test>", subject="other", body="EXPLODE\n"),
        _answer(to="<opening@customer.test>", subject="Re: Printer on fire"),
    )
    _keep(desk, mails)
    with caplog.at_level("INFO", logger="mailhelpdesk.ingest.worker"):
        result = worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    assert result.processed == 3
    assert result.outcomes == {"ticket_created": 1, "failed": 1, "reply_added": 1}
    with read_scope(desk.engine) as session:
        rows = list(session.exec(select(InboundMessage).order_by(InboundMessage.id)))
    assert [(r.state, r.outcome, r.attempts) for r in rows] == [
        ("done", "ticket_created", 1),
        ("failed", "", 1),
        ("done", "reply_added", 1),
    ]
    (ticket,) = desk.tickets()
    assert rows[0].ticket_id == rows[2].ticket_id == ticket.id
    assert [e.type for e in desk.events()] == ["created", "customer_reply"]
    # the acknowledgement, the agents' new-ticket notice and their reply notice, each once
    assert sorted((o.kind, o.primary_rcpt) for o in desk.outbox()) == [
        ("acknowledgement", "priya@customer.test"),
        ("customer_reply", "alice@helpdesk.test"),
        ("new_ticket", "alice@helpdesk.test"),
    ]
    applied = [r for r in caplog.records if r.getMessage().startswith("inbound applied")]
    assert sorted(r.getMessage().split()[2] for r in applied) == [
        f"inbound_id={rows[0].id}",
        f"inbound_id={rows[2].id}",
    ]


def test_a_batch_without_failures_takes_one_savepoint(desk: Desk) -> None:
    """The optimistic pass: one savepoint for the batch, not one per message (SQLite)."""
    from sqlalchemy import event

    _keep(
        desk,
        [make_mail(message_id=f"<m{i}@customer.test>", subject=f"case {i}") for i in range(5)],
    )
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(desk.engine, "before_cursor_execute", seen)
    try:
        result = worker.process_batch(desk.engine, desk.settings, desk.clock, limit=10)
    finally:
        event.remove(desk.engine, "before_cursor_execute", seen)
    assert result.outcomes == {"ticket_created": 5}
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    assert len(desk.tickets()) == 5


def test_attachments_are_stored_content_addressed(desk: Desk) -> None:
    import hashlib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "priya@customer.test"
    msg["To"] = "support@helpdesk.test"
    msg["Subject"] = "screenshot"
    msg["Message-ID"] = "<att@customer.test>"
    msg.set_content("see attached")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    msg.add_attachment(png, maintype="image", subtype="png", filename="shot.png")
    desk.feed(msg.as_bytes())
    (ticket,) = desk.tickets()
    with read_scope(desk.engine) as session:
        from mailhelpdesk.services.views import ticket_object

        data = ticket_object(session, ticket)
    (att,) = data["responses"][0]["attachments"]
    assert att["name"] == "shot.png" and att["mime_type"] == "image/png"
    assert att["sha256"] == hashlib.sha256(png).hexdigest() and att["file_size"] == len(png)


def test_a_failing_step_is_named_in_the_set_aside_reason_and_the_log(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The message is kept as failed with "step <name>: <error>", the log line names the step,
    nothing of it is applied, and `inbound retry` replays it once the step works again."""
    from mailhelpdesk.ingest import pipeline

    def broken(_ctx: object) -> None:
        raise RuntimeError("threading index unavailable")

    table = tuple((name, broken if name == "thread" else step) for name, step in pipeline.STEPS)
    monkeypatch.setattr(pipeline, "STEPS", table)
    with caplog.at_level("ERROR", logger="mailhelpdesk.ingest.worker"):
        row = desk.feed(make_mail(subject="Will fail"))
    assert row.state == "failed" and row.outcome == ""
    assert row.reason == "step thread: RuntimeError: threading index unavailable"
    assert any("step=thread" in r.getMessage() for r in caplog.records)
    assert desk.tickets() == [] and desk.events() == []
    monkeypatch.undo()
    assert worker.retry(desk.engine, row.id or 0)
    desk.drain()
    assert len(desk.tickets()) == 1 and [e.type for e in desk.events()] == ["created"]


def test_a_budgeted_write_reads_ahead_only_as_far_as_its_pace(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a time budget (SQLite), a write reads the rows and threading keys of only the
    next `reach` messages, commits after them, and reads twice as far next time; a reply
    written in a later call than its ticket's first message still lands on that ticket."""
    mails = [make_mail(message_id=f"<m{i}@customer.test>", subject=f"case {i}") for i in range(19)]
    mails.insert(10, _answer(to="<m0@customer.test>", subject="Re: case 0"))
    _keep(desk, mails)
    asked: list[int] = []
    rows_to_write = spool.rows_to_write

    def counted(session: Any, ids: Any) -> Any:
        asked.append(len(ids))
        return rows_to_write(session, ids)

    monkeypatch.setattr(spool, "rows_to_write", counted)
    batch = worker.claim(desk.engine, limit=64)
    worker.understand(worker.IN_PROCESS, batch, desk.settings)
    written = []
    while batch.ids:  # a budget no write reaches: only `reach` ends a call
        written.append(worker.write(desk.engine, batch, desk.settings, desk.clock, budget_s=60))
    # 20 messages: 8 read and written, then the other 12 (16 would have been read)
    assert asked == [worker.MIN_REACH, len(mails) - worker.MIN_REACH]
    assert [w.processed for w in written] == asked
    assert sum(w.outcomes["reply_added"] for w in written) == 1
    first = next(t for t in desk.tickets() if t.subject == "case 0")
    assert len(desk.responses(first)) == 2


def _keep(desk: Desk, mails: Iterable[bytes]) -> None:
    """Keep `mails` in the spool, in order, as the SMTP listener would."""
    with session_scope(desk.engine) as session:
        for raw in mails:
            spool.add_inbound(
                session, raw=raw, envelope=spool.Envelope(source="smtp"), now=desk.clock.now()
            )


def _answer(*, to: str, subject: str) -> bytes:
    """The customer's reply to the message `to` (by In-Reply-To)."""
    return make_mail(
        message_id="<answer@customer.test>",
        subject=subject,
        headers={"In-Reply-To": to},
        body="the reply\n",
    )
