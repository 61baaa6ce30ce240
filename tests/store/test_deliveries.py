"""The one delivery mechanism of both outboxes (store/deliveries.py): exclusive claims on SQLite
and PostgreSQL, the shared backoff and release, and each table's own policy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailhelpdesk.domain.enums import DeliveryState, OutboxState
from mailhelpdesk.domain.models import HttpDelivery, OutboxItem, as_utc
from mailhelpdesk.store import deliveries, http_outbox, outbox, schema
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from tests.postgres import Postgres

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def queue_mail(
    engine: Engine, n: int, *, spec: str | None = None, deadline_s: float = 86400
) -> list[int]:
    with session_scope(engine) as session:
        return [
            outbox.enqueue(
                session,
                outbox.new_row(
                    kind="acknowledgement",
                    ticket_id=None,
                    message_id=f"<n{i}.{spec is not None}.{deadline_s}@helpdesk.test>",
                    mail_from="support@helpdesk.test",
                    rcpt_tos=[f"c{i}@customer.test"],
                    is_automatic=True,
                    raw=b"" if spec else f"Subject: {i}\r\n\r\nbody\r\n".encode(),
                    now=NOW,
                    deadline_at=NOW + timedelta(seconds=deadline_s),
                    compose_spec=spec,
                ),
            ).id
            or 0
            for i in range(n)
        ]


def queue_http(engine: Engine, n: int, *, max_attempts: int = 3) -> list[int]:
    with session_scope(engine) as session:
        return [
            http_outbox.enqueue(
                session,
                kind="webhook",
                ref=f"webhook:{i}",
                ticket_id=None,
                url="http://127.0.0.1:9/hook",
                body=b"{}",
                headers={},
                secret_ref="",
                timeout_s=5,
                max_attempts=max_attempts,
                now=NOW,
            ).id
            or 0
            for i in range(n)
        ]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    schema.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    url = postgres.create_database()
    eng = make_engine(url)
    schema.upgrade(eng)
    eng.dispose()
    return url


def claim_ids(session: Session, *, limit: int, now: datetime = NOW) -> list[int]:
    return [r.id or 0 for r in outbox.claim_due(session, now=now, limit=limit, lease_s=300)]


def test_state_enums_keep_their_values_and_the_old_names() -> None:
    assert [s.value for s in OutboxState] == ["queued", "sent", "failed", "suppressed"]
    assert [s.value for s in DeliveryState] == ["queued", "delivered", "failed"]
    assert outbox.OutboxState is OutboxState and http_outbox.DeliveryState is DeliveryState
    # the mechanism moves rows between the two states both tables spell the same way
    assert OutboxState.queued == DeliveryState.queued == deliveries.QUEUED
    assert OutboxState.failed == DeliveryState.failed == deliveries.FAILED


def test_a_claim_leases_counts_the_attempt_and_keeps_the_oldest_first(engine: Engine) -> None:
    ids = queue_mail(engine, 3)
    with session_scope(engine) as session:
        first = session.get(OutboxItem, ids[0])
        assert first is not None
        first.next_attempt_at = NOW - timedelta(seconds=1)
    with session_scope(engine) as session:
        rows = outbox.claim_due(session, now=NOW, limit=10, lease_s=300)
        assert [r.id for r in rows] == ids  # ids[0] was due first; then by id
        assert {(r.attempts, as_utc(r.next_attempt_at)) for r in rows} == {
            (1, NOW + timedelta(seconds=300))
        }
    with session_scope(engine) as session:
        assert claim_ids(session, limit=10) == []  # leased
        assert claim_ids(session, limit=10, now=NOW + timedelta(seconds=300)) == ids  # lease over


def test_a_mail_row_still_to_be_composed_is_not_claimable(engine: Engine) -> None:
    spec_ids = queue_mail(engine, 2, spec='{"notice": "x"}')
    ready = queue_mail(engine, 1)
    with session_scope(engine) as session:
        assert claim_ids(session, limit=10) == ready
        outbox.store_composed(session, [(spec_ids[1], b"Subject: x\r\n\r\n", "")])
    with session_scope(engine) as session:
        assert claim_ids(session, limit=10, now=NOW + timedelta(hours=1)) == [spec_ids[1], *ready]


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_candidate_claimed_meanwhile_is_not_claimed_again(
    where: str, engine: Engine, request: pytest.FixtureRequest
) -> None:
    """The conditional UPDATE: rows another sender claimed between our SELECT and our UPDATE
    are left out, however stale our candidate list is."""
    if where == "postgresql":
        engine = make_engine(request.getfixturevalue("pg_url"))
    ids = queue_mail(engine, 4)
    with session_scope(engine) as session:
        stale = deliveries._due_ids(session, OutboxItem, now=NOW, limit=10, extra_where=())
    assert stale == ids
    with session_scope(engine) as session:
        assert claim_ids(session, limit=2) == ids[:2]  # another sender, committed
    with session_scope(engine) as session:
        until = NOW + timedelta(seconds=300)
        won = deliveries._lease(session, OutboxItem, stale, now=NOW, until=until, extra_where=())
    assert sorted(won) == ids[2:]
    with read_scope(engine) as session:
        assert [r.attempts for r in session.exec(select(OutboxItem).order_by(OutboxItem.id))] == [
            1,
            1,
            1,
            1,
        ]
    if where == "postgresql":
        engine.dispose()


def test_two_open_claims_on_postgresql_take_disjoint_rows(pg_url: str) -> None:
    """While one claim's transaction is still open, a second one (another daemon) skips the
    rows it locked instead of waiting for them or taking them too."""
    first_engine, second_engine = make_engine(pg_url), make_engine(pg_url)
    ids = queue_mail(first_engine, 30)
    try:
        with session_scope(first_engine) as first, session_scope(second_engine) as second:
            # a regression (no SKIP LOCKED) would wait for the first's row locks: fail instead
            second.execute(text("SET LOCAL lock_timeout = '5s'"))
            a = claim_ids(first, limit=12)
            b = claim_ids(second, limit=12)
            assert len(a) == len(b) == 12 and not set(a) & set(b)
            assert a == ids[:12] and b == ids[12:24]
        with session_scope(first_engine) as session:
            assert claim_ids(session, limit=30) == ids[24:]
    finally:
        first_engine.dispose()
        second_engine.dispose()


@pytest.mark.parametrize("table", ["mail", "http"])
def test_concurrent_claimers_on_postgresql_never_share_a_row(pg_url: str, table: str) -> None:
    """Four threads, each with its own engine (like four daemons), claim small batches at
    once until nothing is left: every row is claimed exactly once, with one attempt."""
    engines = [make_engine(pg_url) for _ in range(4)]
    ids = set(queue_mail(engines[0], 300) if table == "mail" else queue_http(engines[0], 300))
    claim = outbox.claim_due if table == "mail" else http_outbox.claim_due
    claimed: list[list[int]] = [[] for _ in engines]
    start = threading.Barrier(len(engines))

    def work(n: int) -> None:
        start.wait()
        while True:
            with session_scope(engines[n]) as session:
                rows = claim(session, now=NOW, limit=7, lease_s=300)
                got = [r.id or 0 for r in rows]
            if not got:
                return
            claimed[n].extend(got)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not any(t.is_alive() for t in threads)
        every = [i for part in claimed for i in part]
        assert sorted(every) == sorted(ids)  # each once, none left
        model = OutboxItem if table == "mail" else HttpDelivery
        with read_scope(engines[0]) as session:
            assert {r.attempts for r in session.exec(select(model))} == {1}
    finally:
        for eng in engines:
            eng.dispose()


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [deliveries.retry_delay_s(n, base_s=30, max_s=3600) for n in range(9)] == [
        30,
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]
    assert http_outbox.retry_delay_s is deliveries.retry_delay_s


def test_mail_is_given_up_when_the_next_try_would_pass_its_deadline(engine: Engine) -> None:
    (item,) = queue_mail(engine, 1, deadline_s=100)
    for now, expected in [(NOW, "queued"), (NOW + timedelta(seconds=60), "failed")]:
        with session_scope(engine) as session:
            assert claim_ids(session, limit=1, now=now) == [item]
            state = outbox.schedule_retry(
                session, item, now=now, error="451 later", base_s=30, max_s=3600
            )
            assert state == expected
    with read_scope(engine) as session:
        row = session.get(OutboxItem, item)
        assert row is not None
        assert row.last_error == "gave up after 2 attempts (deadline passed): 451 later"


def test_http_is_given_up_after_max_attempts(engine: Engine) -> None:
    (row_id,) = queue_http(engine, 1, max_attempts=2)
    now = NOW
    states = []
    for _ in range(2):
        with session_scope(engine) as session:
            (row,) = http_outbox.claim_due(session, now=now, limit=1, lease_s=300)
            done = http_outbox.record_failure(
                session,
                row_id,
                now=now,
                error="HTTP 503",
                status=503,
                body=b"busy",
                base_s=60,
                max_s=600,
            )
            assert done is not None
            states.append(done.state)
            now += timedelta(hours=1)
    assert states == ["queued", "failed"]
    with read_scope(engine) as session:
        row = session.get(HttpDelivery, row_id)
        assert row is not None and row.last_error == "gave up after 2 attempts: HTTP 503"
        assert row.last_status == 503 and row.response_body == b"busy"


def test_a_row_no_longer_queued_is_left_alone_by_retry_and_release(engine: Engine) -> None:
    (item,) = queue_mail(engine, 1)
    with session_scope(engine) as session:
        claim_ids(session, limit=1)
        outbox.mark_failed(session, item, now=NOW, error="bounced: 550")
    with session_scope(engine) as session:
        assert outbox.schedule_retry(session, item, now=NOW, error="x", base_s=1, max_s=1) == ""
        outbox.release(session, item, at=NOW)
    with read_scope(engine) as session:
        row = session.get(OutboxItem, item)
        assert row is not None and (row.state, row.attempts, row.last_error) == (
            "failed",
            1,
            "bounced: 550",
        )


def test_release_gives_a_row_back_without_counting_the_attempt(engine: Engine) -> None:
    ids = queue_http(engine, 2)
    later = NOW + timedelta(seconds=30)
    with session_scope(engine) as session:
        http_outbox.claim_due(session, now=NOW, limit=2, lease_s=300)
        http_outbox.release(session, ids[0], at=later)
    with read_scope(engine) as session:
        first, second = (session.get(HttpDelivery, i) for i in ids)
        assert first is not None and second is not None
        assert (first.attempts, as_utc(first.next_attempt_at)) == (0, later)
        assert second.attempts == 1
        assert http_outbox.next_due_at(session) == later
        assert outbox.next_due_at(session) is None
