"""The HTTP sender against a real HTTP receiver on 127.0.0.1 that can answer errors or stall."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from mailhelpdesk import __version__
from mailhelpdesk.clock import Clock, FrozenClock, SystemClock
from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.models import HttpDelivery, Response, Ticket, as_utc
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.store import http_outbox, schema
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from mailhelpdesk.transports.http_sender import HttpSender, signature, verify_signature
from tests.helpers import free_port, store_change
from tests.http_receiver import Receiver
from tests.postgres import Postgres

SECRET = b"webhook-test-secret"
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Recorder:
    """A DeliveryHandler that writes a staff note on the row's ticket, like an epilog would."""

    def __init__(self, clock: Clock, *, explode: bool = False) -> None:
        self.clock, self.explode = clock, explode
        self.calls: list[tuple[str, int, bool]] = []

    def delivered(self, session: Session, row: HttpDelivery, status: int, body: bytes) -> None:
        self.calls.append(("delivered", row.attempts, True))
        self._note(session, row, f"delivered {status} {body.decode()}")

    def failed(self, session: Session, row: HttpDelivery, error: str, *, final: bool) -> None:
        self.calls.append(("failed", row.attempts, final))
        self._note(session, row, f"{'gave up' if final else 'will retry'}: {error}")

    def _note(self, session: Session, row: HttpDelivery, text: str) -> None:
        ticket = session.get(Ticket, row.ticket_id or 0)
        assert ticket is not None
        ticket_service.add_response(
            session,
            ticket,
            ticket_service.NewResponse(kind=ResponseKind.note, plain_text=text),
            change=store_change(self.clock),
            reopen=False,
        )
        if self.explode:
            raise RuntimeError("handler bug")


class Box:
    """A store, a frozen clock, and HTTP deliveries queued in it."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        self.engine = make_engine(url)
        schema.upgrade(self.engine)
        self.clock: Any = clock or FrozenClock(START)
        self.db = ThreadPoolExecutor(max_workers=1)

    def ticket(self) -> int:
        with session_scope(self.engine) as session:
            ticket_service.store.ensure_counters(session)
            ticket = ticket_service.create_ticket(
                session,
                subject="Refund",
                originator_email="priya@customer.test",
                first=ticket_service.NewResponse(kind=ResponseKind.customer, plain_text="please"),
                change=store_change(self.clock),
            )
            return ticket.id or 0

    def queue(
        self,
        url: str,
        n: int = 1,
        *,
        secret_ref: str = "",
        max_attempts: int = 10,
        timeout_s: float = 5,
        ticket_id: int | None = None,
        kind: str = "webhook",
    ) -> list[int]:
        ids = []
        with session_scope(self.engine) as session:
            for i in range(n):
                body = json.dumps({"event": "ticket.created", "n": i}).encode()
                row = http_outbox.enqueue(
                    session,
                    kind=kind,
                    ref=f"webhook:{i}",
                    ticket_id=ticket_id,
                    url=url,
                    body=body,
                    headers={"Idempotency-Key": f"webhook:evt-{i}", "Authorization": "Bearer abc"},
                    secret_ref=secret_ref,
                    timeout_s=timeout_s,
                    max_attempts=max_attempts,
                    now=self.clock.now(),
                )
                ids.append(row.id or 0)
        return ids

    def rows(self) -> list[HttpDelivery]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(HttpDelivery).order_by(HttpDelivery.id)))

    def notes(self) -> list[str]:
        with read_scope(self.engine) as session:
            return [
                r.plain_text
                for r in session.exec(
                    select(Response).where(Response.kind == "note").order_by(Response.id)
                )
            ]

    def sender(self, **kw: Any) -> HttpSender:
        kw.setdefault("secrets", {"webhook:crm": SECRET}.get)
        return HttpSender(self.engine, self.clock, self.db, **kw)

    def close(self) -> None:
        self.db.shutdown()
        self.engine.dispose()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(f"sqlite:///{tmp_path / 'h.db'}")
    yield b
    b.close()


def due_in(box: Box, row: HttpDelivery) -> float:
    when = as_utc(row.next_attempt_at)
    assert when is not None
    return (when - box.clock.now()).total_seconds()


async def test_a_row_the_client_cannot_even_send_is_a_failed_try_not_a_stuck_batch(
    box: Box, receiver: Receiver
) -> None:
    """A URL or header value the HTTP client refuses (rows written before the config checks, or
    by a bug) fails that row's try like a refused connection; its batch-mates are delivered."""
    bad_url = box.queue("http://[::1/hook")
    good = box.queue(receiver.url)
    with session_scope(box.engine) as session:
        row = session.get(HttpDelivery, good[0])
        assert row is not None
        bad_header = http_outbox.enqueue(
            session,
            kind="webhook",
            ref="webhook:x",
            ticket_id=None,
            url=receiver.url,
            body=b"{}",
            headers={"Idempotency-Key": "epilog:x:commande-\u00e9t\u00e9:5"},
            secret_ref="",
            timeout_s=5,
            max_attempts=3,
            now=box.clock.now(),
        ).id
    sender = box.sender()
    assert await sender.drain_once() == 3
    await sender.close()
    rows = {r.id: r for r in box.rows()}
    assert rows[good[0]].state == "delivered"
    for failed in (bad_url[0], bad_header):
        assert (
            rows[failed].state == "queued"
            and rows[failed].attempts == 1
            and rows[failed].last_error
        ), rows[failed]
    assert len(receiver.requests) == 1


async def test_signed_post_with_static_headers_and_delivered(box: Box, receiver: Receiver) -> None:
    box.queue(receiver.url, secret_ref="webhook:crm")
    sender = box.sender()
    assert await sender.drain_once() == 1
    assert await sender.drain_once() == 0
    await sender.close()
    (got,) = receiver.requests
    assert got.path == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == f"mailhelpdesk/{__version__}"
    assert (
        got.headers["authorization"] == "Bearer abc"
        and got.headers["idempotency-key"] == "webhook:evt-0"
    )
    # what a receiver does, written out independently of the sender's helper
    parts = dict(p.split("=", 1) for p in got.headers["x-mailhelpdesk-signature"].split(","))
    assert int(parts["t"]) == int(START.timestamp())
    expected = hmac.new(SECRET, parts["t"].encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert parts["v1"] == expected
    assert verify_signature(
        SECRET, got.body, got.headers["x-mailhelpdesk-signature"], now=START.timestamp()
    )
    assert not verify_signature(b"wrong", got.body, got.headers["x-mailhelpdesk-signature"])
    assert not verify_signature(SECRET, got.body + b" ", got.headers["x-mailhelpdesk-signature"])
    assert json.loads(got.body) == {"event": "ticket.created", "n": 0}
    (row,) = box.rows()
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert row.response_body == b'{"ok": true}' and row.delivered_at is not None


async def test_unsigned_row_has_no_signature_and_missing_secret_is_not_sent(
    box: Box, receiver: Receiver
) -> None:
    box.queue(receiver.url)
    box.queue(receiver.url, secret_ref="webhook:gone")
    sender = box.sender()
    await sender.drain_once()
    await sender.close()
    assert (
        len(receiver.requests) == 1
        and "x-mailhelpdesk-signature" not in receiver.requests[0].headers
    )
    unsigned, unknown = box.rows()
    assert unsigned.state == "delivered"
    assert unknown.state == "queued" and "no secret configured" in unknown.last_error


async def test_receiver_down_then_up_delivers_with_the_same_key(box: Box) -> None:
    port = free_port()
    box.queue(f"http://127.0.0.1:{port}/hook", secret_ref="webhook:crm")
    sender = box.sender(retry_base_s=60, retry_max_s=21600)
    delays = []
    for _ in range(3):
        assert await sender.drain_once() == 1
        (row,) = box.rows()
        assert row.state == "queued" and row.last_status is None and row.last_error
        delays.append(due_in(box, row))
        assert await sender.drain_once() == 0  # nothing due before the backoff ends
        box.clock.advance(seconds=delays[-1])
    assert delays == [60, 120, 240]
    up = Receiver(port).start()
    try:
        assert await sender.drain_once() == 1
        await sender.close()
    finally:
        up.stop()
    (row,) = box.rows()
    assert (row.state, row.attempts) == ("delivered", 4)
    assert up.keys() == ["webhook:evt-0"]
    assert verify_signature(
        SECRET, up.requests[0].body, up.requests[0].headers["x-mailhelpdesk-signature"]
    )


@pytest.mark.parametrize("answer", [500, 404, 302, "stall"])
async def test_non_2xx_and_timeouts_retry_then_fail_after_max_attempts(
    box: Box, receiver: Receiver, answer: int | str
) -> None:
    box.queue(receiver.url, max_attempts=3, timeout_s=0.3)
    receiver.script = [answer] * 3
    receiver.stall_s = 1.5
    recorder = Recorder(box.clock)
    box.ticket()
    sender = box.sender(handlers={"other": recorder})
    for expected_delay in (60, 120):
        assert await sender.drain_once() == 1
        (row,) = box.rows()
        assert row.state == "queued" and due_in(box, row) == expected_delay
        box.clock.advance(seconds=expected_delay)
    assert await sender.drain_once() == 1
    box.clock.advance(days=30)
    assert await sender.drain_once() == 0  # failed rows are never tried again
    await sender.close()
    (row,) = box.rows()
    assert (row.state, row.attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in row.last_error
    if answer == "stall":
        assert "timed out" in row.last_error and row.last_status is None
    else:
        assert f"HTTP {answer}" in row.last_error and row.last_status == answer
        assert row.response_body == f"status {answer}".encode()
    assert receiver.keys() == ["webhook:evt-0"] * 3
    assert recorder.calls == []  # a handler for another kind is not called


def test_backoff_doubles_and_is_capped() -> None:
    delays = [http_outbox.retry_delay_s(n, base_s=60, max_s=21600) for n in range(1, 11)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600]


async def test_handler_writes_commit_with_the_outcome(box: Box, receiver: Receiver) -> None:
    ticket_id = box.ticket()
    box.queue(receiver.url, max_attempts=2, ticket_id=ticket_id, kind="epilog")
    box.queue(receiver.url, max_attempts=2, ticket_id=ticket_id, kind="epilog")
    receiver.script = [503, 200, 503]  # row 1: 503 then (after retry) 503; row 2: 200
    recorder = Recorder(box.clock)
    sender = box.sender(handlers={"epilog": recorder}, batch_size=1)
    await sender.drain_once()  # row 1 -> 503
    await sender.drain_once()  # row 2 -> 200
    box.clock.advance(seconds=60)
    await sender.drain_once()  # row 1 -> 503, final
    await sender.close()
    assert [r.state for r in box.rows()] == ["failed", "delivered"]
    assert recorder.calls == [("failed", 1, False), ("delivered", 1, True), ("failed", 2, True)]
    assert box.notes() == [
        "will retry: HTTP 503",
        'delivered 200 {"ok": true}',
        "gave up: HTTP 503",  # the error of this try; row.last_error says it gave up
    ]


async def test_a_failing_handler_is_undone_but_the_outcome_is_kept(
    box: Box, receiver: Receiver
) -> None:
    ticket_id = box.ticket()
    box.queue(receiver.url, ticket_id=ticket_id, kind="epilog")
    sender = box.sender(handlers={"epilog": Recorder(box.clock, explode=True)})
    await sender.drain_once()
    await sender.close()
    (row,) = box.rows()
    assert row.state == "delivered"
    assert box.notes() == []  # the note the handler wrote before raising was rolled back
    assert len(receiver.requests) == 1


async def test_task_is_woken_by_the_commit_that_queued(box: Box, receiver: Receiver) -> None:
    """poll_s is 60 s: only the after-commit wake-up can deliver within the deadline."""
    sender = box.sender(poll_s=60)
    sender.start()
    try:
        await asyncio.sleep(0.05)  # the first (empty) drain is done; the task now waits
        await asyncio.get_running_loop().run_in_executor(None, lambda: box.queue(receiver.url, 2))
        deadline = time.monotonic() + 5
        while len(receiver.requests) < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another thread's server
            await asyncio.sleep(0.01)
    finally:
        await sender.stop()
    assert sorted(receiver.keys()) == ["webhook:evt-0", "webhook:evt-1"]
    assert [r.state for r in box.rows()] == ["delivered", "delivered"]


async def _race(url: str, tmp_receiver: Receiver, n: int) -> tuple[Box, Box]:
    """Two senders, each with its own engine and DB thread, drain one database together."""
    first, second = Box(url, SystemClock()), Box(url, SystemClock())
    first.queue(tmp_receiver.url, n)
    wins: Counter[str] = Counter()
    a = first.sender(batch_size=7, on_result=lambda r: wins.update(["a"]))
    b = second.sender(batch_size=7, on_result=lambda r: wins.update(["b"]))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = await asyncio.gather(a.drain_once(), b.drain_once())
            if sum(done) == 0:
                break
    finally:
        await a.close()
        await b.close()
    assert wins["a"] > 0 and wins["b"] > 0 and wins["a"] + wins["b"] == n  # both took part
    assert {r.last_error for r in first.rows()} == {""}  # no try failed (so none was repeated)
    return first, second


async def _each_row_posted_once(url: str, receiver: Receiver) -> None:
    first, second = await _race(url, receiver, 40)
    try:
        counts = Counter(receiver.keys())
        assert len(counts) == 40 and set(counts.values()) == {1}
        assert {r.state for r in first.rows()} == {"delivered"} and {
            r.attempts for r in first.rows()
        } == {1}
    finally:
        first.close()
        second.close()


async def test_two_senders_on_one_sqlite_database_never_post_a_row_twice(
    tmp_path: Path, receiver: Receiver
) -> None:
    await _each_row_posted_once(f"sqlite:///{tmp_path / 'shared.db'}", receiver)


async def test_two_senders_on_one_postgresql_database_never_post_a_row_twice(
    postgres: Postgres, receiver: Receiver
) -> None:
    await _each_row_posted_once(postgres.create_database(), receiver)


def test_signature_helper_matches_the_contract() -> None:
    assert (
        signature(b"k", b"{}", 1700000000)
        == "t=1700000000,v1=" + hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    )
    assert not verify_signature(
        b"k", b"{}", signature(b"k", b"{}", 1700000000), now=1700000000 + 301
    )
