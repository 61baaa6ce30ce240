"""The outbox sender against a real aiosmtpd sink on 127.0.0.1 that can answer 421/451/550."""

from __future__ import annotations

import asyncio
import email
import mailbox
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import select

from mailhelpdesk.clock import FrozenClock, SystemClock
from mailhelpdesk.config import SmtpRelayConfig
from mailhelpdesk.domain.models import OutboxItem, SuppressedAddress, as_utc
from mailhelpdesk.mail.compose import Outgoing, as_bytes, compose
from mailhelpdesk.store import outbox, schema
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from mailhelpdesk.transports.smtp_sender import MaildirRelay, SMTPRelay, SMTPSender
from tests.helpers import free_port
from tests.postgres import Postgres


class Sink:
    """An SMTP server that records what it is given. `script` holds replies to give at DATA
    (e.g. "451 try later") before it starts answering 250; `rcpt_reply` refuses every RCPT,
    `mail_reply` every MAIL FROM, `refused_rcpts` the RCPTs of some addresses."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.script: list[str] = []
        self.mail_reply: str | None = None
        self.rcpt_reply: str | None = None
        self.refused_rcpts: dict[str, str] = {}
        self.data_reply: str | None = None  # answered at DATA until cleared
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        if address.lower() in self.refused_rcpts:
            return self.refused_rcpts[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.script:
                return self.script.pop(0)
            if self.data_reply:
                return self.data_reply
            self.messages.append(
                (
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content or envelope.content,
                )
            )
        return "250 Message accepted"

    def parsed(self) -> list[email.message.EmailMessage]:
        with self.lock:
            return [
                email.message_from_bytes(raw, policy=default_policy)
                for _f, _t, raw in self.messages
            ]  # type: ignore[misc]

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class Box:
    """A store with some queued notices, a frozen clock and a sender pointed at a relay."""

    def __init__(self, tmp: Path) -> None:
        self.engine = make_engine(f"sqlite:///{tmp / 'o.db'}")
        schema.upgrade(self.engine)
        self.clock = FrozenClock(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
        self.db = ThreadPoolExecutor(max_workers=1)

    def queue(self, n: int, *, rcpt: str = "priya@customer.test") -> list[int]:
        ids = []
        with session_scope(self.engine) as session:
            for i in range(n):
                msg = compose(
                    Outgoing(
                        "Support",
                        "support@helpdesk.test",
                        [("", rcpt)],
                        f"Notice {i}",
                        f"body {i}",
                        ticket_number=100001 + i,
                    )
                )
                item = outbox.enqueue(
                    session,
                    outbox.new_row(
                        kind="acknowledgement",
                        ticket_id=None,
                        message_id=str(msg["Message-ID"]),
                        mail_from="support@helpdesk.test",
                        rcpt_tos=[rcpt],
                        is_automatic=True,
                        raw=as_bytes(msg),
                        now=self.clock.now(),
                        deadline_at=self.clock.now() + timedelta(days=2),
                    ),
                )
                ids.append(item.id or 0)
        return ids

    def rows(self) -> list[OutboxItem]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(OutboxItem).order_by(OutboxItem.id)))

    def sender(self, relay: Any, **kw: Any) -> SMTPSender:
        return SMTPSender(self.engine, self.clock, self.db, relay, **kw)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.db.shutdown()
    b.engine.dispose()


def relay_to(sink: Sink) -> SMTPRelay:
    return SMTPRelay(
        SmtpRelayConfig(host="127.0.0.1", port=sink.port, security="none", timeout_s=5)
    )


async def test_sends_and_marks_sent_after_250(box: Box, sink: Sink) -> None:
    box.queue(3)
    sender = box.sender(relay_to(sink))
    assert await sender.drain_once() == 3
    assert await sender.drain_once() == 0
    await sender.relay.close()
    assert [r.state for r in box.rows()] == ["sent"] * 3
    assert all(r.sent_at is not None and r.attempts == 1 for r in box.rows())
    assert sorted(m["Subject"] for m in sink.parsed()) == [
        f"[#{100001 + i}] Notice {i}" for i in range(3)
    ]
    assert {m[1][0] for m in sink.messages} == {"priya@customer.test"}


@pytest.mark.parametrize("reply", ["451 4.3.0 try again later", "421 4.3.2 shutting down"])
async def test_temporary_failures_retry_with_backoff_then_deliver_once(
    box: Box, sink: Sink, reply: str
) -> None:
    """4xx: the row stays queued with a doubling delay; after recovery each notice arrives once."""
    box.queue(2)
    sink.data_reply = reply
    sender = box.sender(relay_to(sink), retry_base_s=30, retry_max_s=3600)
    delays = []
    for _ in range(3):
        await sender.drain_once()
        first = box.rows()[0]
        assert first.state == "queued" and reply.split(maxsplit=1)[0] in first.last_error
        delays.append((first.next_attempt_at.replace(tzinfo=UTC) - box.clock.now()).total_seconds())
        assert await sender.drain_once() == 0  # nothing due before the backoff ends
        box.clock.advance(seconds=delays[-1])
    assert delays == [30, 60, 120]
    sink.data_reply = None
    while await sender.drain_once():
        box.clock.advance(seconds=3600)
    await sender.relay.close()
    assert [r.state for r in box.rows()] == ["sent", "sent"]
    assert sorted(m["Subject"] for m in sink.parsed()) == [
        "[#100001] Notice 0",
        "[#100002] Notice 1",
    ]


async def test_permanent_failure_fails_at_once_with_reply_text(box: Box, sink: Sink) -> None:
    box.queue(1)
    sink.rcpt_reply = "550 5.1.1 no such user here"
    sender = box.sender(relay_to(sink))
    await sender.drain_once()
    box.clock.advance(days=3)
    assert await sender.drain_once() == 0  # not retried
    await sender.relay.close()
    (row,) = box.rows()
    assert (
        row.state == "failed" and "550" in row.last_error and "no such user here" in row.last_error
    )
    assert row.attempts == 1 and sink.messages == []


async def test_550_at_data_is_permanent(box: Box, sink: Sink) -> None:
    box.queue(1)
    sink.script = ["554 5.7.1 rejected as spam"]
    sender = box.sender(relay_to(sink))
    await sender.drain_once()
    await sender.relay.close()
    (row,) = box.rows()
    assert row.state == "failed" and "554 5.7.1 rejected as spam" in row.last_error


async def test_relay_down_retries_until_deadline_then_fails(box: Box) -> None:
    box.queue(2)
    dead = SMTPRelay(
        SmtpRelayConfig(host="127.0.0.1", port=free_port(), security="none", timeout_s=2)
    )
    sender = box.sender(dead, retry_base_s=3600, retry_max_s=12 * 3600)
    for _ in range(20):
        await sender.drain_once()
        box.clock.advance(hours=12)
    rows = box.rows()
    assert [r.state for r in rows] == ["failed", "failed"]
    assert "deadline passed" in rows[0].last_error and "unreachable" in rows[0].last_error


async def test_connection_error_leaves_untried_rows_without_an_attempt(box: Box) -> None:
    box.queue(3)
    dead = SMTPRelay(
        SmtpRelayConfig(host="127.0.0.1", port=free_port(), security="none", timeout_s=2)
    )
    sender = box.sender(dead, retry_base_s=30)
    await sender.drain_once()
    assert [r.attempts for r in box.rows()] == [1, 0, 0]
    assert all(r.state == "queued" for r in box.rows())


async def test_no_relay_host_writes_the_maildir(box: Box, tmp_path: Path) -> None:
    box.queue(2)
    sender = box.sender(MaildirRelay(str(tmp_path / "out")))
    assert await sender.drain_once() == 2
    stored = mailbox.Maildir(str(tmp_path / "out"), create=False)
    assert sorted(str(m["Subject"]) for m in stored) == ["[#100001] Notice 0", "[#100002] Notice 1"]
    assert [r.state for r in box.rows()] == ["sent", "sent"]


async def test_sender_task_drains_when_woken_and_stops(box: Box, sink: Sink) -> None:
    sender = box.sender(relay_to(sink), poll_s=30)
    sender.start()
    box.queue(2)
    sender.wake()
    for _ in range(200):
        if len(sink.messages) == 2:
            break
        await asyncio.sleep(0.02)
    await sender.stop()
    assert len(sink.messages) == 2 and [r.state for r in box.rows()] == ["sent", "sent"]


def suppressions(box: Box) -> dict[str, tuple[str, datetime | None]]:
    with read_scope(box.engine) as session:
        return {
            r.email: (r.reason, as_utc(r.until_at)) for r in session.exec(select(SuppressedAddress))
        }


@pytest.mark.parametrize(
    ("refuse", "reply"),
    [("rcpt", "550 5.1.1 no such user here"), ("data", "554 5.7.1 mailbox disabled")],
)
async def test_a_permanent_refusal_of_the_recipient_suppresses_it_like_a_bounce(
    box: Box, sink: Sink, refuse: str, reply: str
) -> None:
    """5xx to RCPT TO or DATA: the row fails as before, and the address gets no automatic mail
    for suppress_s, with the relay's reply as the reason."""
    box.queue(1, rcpt="Gone@Customer.test")
    if refuse == "rcpt":
        sink.rcpt_reply = reply
    else:
        sink.script = [reply]
    sender = box.sender(relay_to(sink), suppress_s=7 * 86400)
    await sender.drain_once()
    await sender.relay.close()
    (row,) = box.rows()
    assert row.state == "failed" and reply in row.last_error
    assert suppressions(box) == {
        "gone@customer.test": (f"relay refused: {reply}", box.clock.now() + timedelta(days=7))
    }
    with read_scope(box.engine) as session:
        assert outbox.suppressed_reason(
            session, email="gone@customer.test", now=box.clock.now()
        ) == (f"relay refused: {reply}")


async def test_a_refused_sender_or_a_temporary_refusal_suppresses_nobody(
    box: Box, sink: Sink
) -> None:
    """5xx to MAIL FROM refuses us, not the customer; a 4xx is no verdict on the address."""
    box.queue(1, rcpt="first@customer.test")
    sink.mail_reply = "553 5.7.1 sender address rejected"
    sender = box.sender(relay_to(sink), suppress_s=86400)
    await sender.drain_once()
    (row,) = box.rows()
    assert row.state == "failed" and "MAIL FROM refused: 553" in row.last_error
    sink.mail_reply = None
    sink.rcpt_reply = "450 4.2.0 mailbox busy"
    box.queue(1, rcpt="second@customer.test")
    await sender.drain_once()
    await sender.relay.close()
    assert [r.state for r in box.rows()] == ["failed", "queued"]
    assert suppressions(box) == {}


async def test_without_suppress_s_a_refusal_only_fails_the_row(box: Box, sink: Sink) -> None:
    box.queue(1)
    sink.rcpt_reply = "550 5.1.1 no such user here"
    sender = box.sender(relay_to(sink))
    await sender.drain_once()
    await sender.relay.close()
    assert [r.state for r in box.rows()] == ["failed"] and suppressions(box) == {}


async def test_after_a_relay_refusal_the_next_automatic_notice_is_written_suppressed(
    desk_factory: Any, sink: Sink
) -> None:
    """The whole path: a customer's acknowledgement is refused by the relay with 550; the
    acknowledgement of their next mail is written `suppressed`, never offered to the relay."""
    from tests.helpers import make_mail

    desk = desk_factory()
    db = ThreadPoolExecutor(max_workers=1)
    sink.refused_rcpts["priya@customer.test"] = "550 5.1.1 mailbox unavailable"
    sender = SMTPSender(
        desk.engine,
        desk.clock,
        db,
        relay_to(sink),
        suppress_s=desk.config.outbound.suppress_bouncing_s,
    )
    try:
        desk.feed(make_mail(subject="first", sender="priya@customer.test"))
        await sender.drain_once()
        desk.feed(make_mail(subject="second", sender="priya@customer.test"))
        await sender.drain_once()
        await sender.relay.close()
        with read_scope(desk.engine) as session:
            acks = list(
                session.exec(
                    select(OutboxItem)
                    .where(OutboxItem.kind == "acknowledgement")
                    .order_by(OutboxItem.id)
                )
            )
    finally:
        db.shutdown()
        desk.engine.dispose()
    assert [a.state for a in acks] == ["failed", "suppressed"]
    assert "relay refused: 550 5.1.1 mailbox unavailable" in acks[1].last_error
    assert all(m[1] != ["priya@customer.test"] for m in sink.messages)  # agents' notices went


async def test_two_daemons_senders_on_one_postgresql_send_each_notice_exactly_once(
    postgres: Postgres, sink: Sink
) -> None:
    """Two senders, each with its own engine, DB thread and relay connection (two daemons on one
    PostgreSQL database), drain 500 queued notices together: every Message-ID reaches the relay
    exactly once, every row ends `sent` after one attempt, and both senders took part."""
    url = postgres.create_database()
    engines = [make_engine(url), make_engine(url)]
    schema.upgrade(engines[0])
    clock = SystemClock()
    total = 500
    with session_scope(engines[0]) as session:
        for i in range(total):
            outbox.enqueue(
                session,
                outbox.new_row(
                    kind="acknowledgement",
                    ticket_id=None,
                    message_id=f"<race{i}@helpdesk.test>",
                    mail_from="support@helpdesk.test",
                    rcpt_tos=[f"c{i}@customer.test"],
                    is_automatic=True,
                    raw=f"Message-ID: <race{i}@helpdesk.test>\r\nSubject: {i}\r\n\r\nx\r\n".encode(),
                    now=clock.now(),
                    deadline_at=clock.now() + timedelta(days=2),
                ),
            )
    loop = asyncio.get_running_loop()
    all_sent = asyncio.Event()
    results: Counter[tuple[int, str]] = Counter()
    lock = threading.Lock()

    def counting(n: int) -> Any:
        def on_result(result: str) -> None:  # on that sender's DB thread, after its commit
            with lock:
                results[(n, result)] += 1
                if results[(0, "sent")] + results[(1, "sent")] >= total:
                    loop.call_soon_threadsafe(all_sent.set)

        return on_result

    executors = [ThreadPoolExecutor(max_workers=1) for _ in engines]
    senders = [
        SMTPSender(
            engines[n],
            clock,
            executors[n],
            relay_to(sink),
            batch_size=20,
            poll_s=0.05,
            on_result=counting(n),
        )
        for n in range(2)
    ]
    for sender in senders:
        sender.start()
    try:
        await asyncio.wait_for(all_sent.wait(), timeout=240)
    finally:
        for sender in senders:
            await sender.stop()
        for executor in executors:
            executor.shutdown()
    with read_scope(engines[0]) as session:
        rows = list(session.exec(select(OutboxItem)))
    for engine in engines:
        engine.dispose()
    received = Counter(str(m["Message-ID"]) for m in sink.parsed())
    assert len(received) == total and set(received.values()) == {1}, received.most_common(3)
    assert {(r.state, r.attempts) for r in rows} == {("sent", 1)} and len(rows) == total
    assert set(results) == {(0, "sent"), (1, "sent")}, results  # both took part, nothing else
