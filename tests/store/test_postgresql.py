"""The same schema and pipeline on a real PostgreSQL: nothing SQLite-only, and two workers on one
database share the kept mail without applying anything twice (SKIP LOCKED + the fingerprint key)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailhelpdesk.clock import FrozenClock
from mailhelpdesk.config import config_from_dict
from mailhelpdesk.domain.models import InboundMessage, Response, Ticket
from mailhelpdesk.ingest import worker
from mailhelpdesk.store import schema, spool
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from mailhelpdesk.store.setup import sync_config
from tests.helpers import Daemon, fail_reply_text_on, make_mail, require
from tests.postgres import Postgres, pg_bin


def _setup(url: str):  # type: ignore[no-untyped-def]
    config = config_from_dict(
        {"helpdesk": {"address": "support@helpdesk.test", "secret": "s"}, "database": {"url": url}}
    )
    engine = make_engine(url)
    schema.upgrade(engine)
    sync_config(engine, config)
    return config, engine, worker.load_settings(engine, config)


def test_migrations_run_and_repeat_on_postgresql(postgres: Postgres) -> None:
    engine = make_engine(postgres.create_database())
    before, after = schema.upgrade(engine)
    assert before is None and after == schema.head_revision()
    assert schema.upgrade(engine) == (after, after)


def test_pipeline_outcomes_match_on_postgresql(postgres: Postgres) -> None:
    _config, engine, settings = _setup(postgres.create_database())
    clock = FrozenClock(datetime(2026, 11, 23, 10, tzinfo=UTC))
    mails = [
        make_mail(message_id="<pg1@c.test>", subject="first"),
        make_mail(
            message_id="<pg2@c.test>", subject="Re: first", headers={"In-Reply-To": "<pg1@c.test>"}
        ),
        make_mail(message_id="<pg1@c.test>", subject="first"),  # the same message again
        make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"}),
    ]
    with session_scope(engine) as session:
        for raw in mails:
            spool.add_inbound(
                session,
                raw=raw,
                envelope=spool.Envelope(source="smtp", mail_from="x@c.test"),
                now=clock.now(),
            )
    worker.process_batch(engine, settings, clock, limit=10)
    with read_scope(engine) as session:
        outcomes = [
            r.outcome for r in session.exec(select(InboundMessage).order_by(InboundMessage.id))
        ]
        tickets = session.exec(select(Ticket)).all()
        responses = session.exec(select(Response)).all()
    assert outcomes == ["ticket_created", "reply_added", "duplicate", "classified"]
    assert [t.number for t in tickets] == [100001]
    assert len(responses) == 2


def test_a_failing_message_rewrites_the_claimed_batch_on_postgresql(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the claiming transaction too, a failing message rolls the optimistic pass back and
    the batch is written again with a savepoint per message: the others are applied once, the
    reply after the failure still finds the ticket the batch opened."""
    fail_reply_text_on(monkeypatch, "EXPLODE")
    _config, engine, settings = _setup(postgres.create_database())
    clock = FrozenClock(datetime(2026, 11, 23, 10, tzinfo=UTC))
    mails = [
        make_mail(message_id="<pgf1@c.test>", subject="first"),
        make_mail(message_id="<pgf2@c.test>", subject="other", body="EXPLODE\n"),
        make_mail(
            message_id="<pgf3@c.test>",
            subject="Re: first",
            headers={"In-Reply-To": "<pgf1@c.test>"},
        ),
    ]
    with session_scope(engine) as session:
        for raw in mails:
            spool.add_inbound(
                session, raw=raw, envelope=spool.Envelope(source="smtp"), now=clock.now()
            )
    result = worker.process_batch(engine, settings, clock, limit=10)
    assert result.outcomes == {"ticket_created": 1, "failed": 1, "reply_added": 1}
    with read_scope(engine) as session:
        rows = session.exec(select(InboundMessage).order_by(InboundMessage.id)).all()
        tickets = session.exec(select(Ticket)).all()
        responses = session.exec(select(Response)).all()
    assert [(r.state, r.attempts) for r in rows] == [("done", 1), ("failed", 1), ("done", 1)]
    assert len(tickets) == 1 and len(responses) == 2
    assert rows[0].ticket_id == rows[2].ticket_id == tickets[0].id


def test_two_workers_share_the_spool_without_doubles(postgres: Postgres) -> None:
    _config, engine, settings = _setup(postgres.create_database())
    clock = FrozenClock(datetime(2026, 11, 23, 10, tzinfo=UTC))
    with session_scope(engine) as session:
        for i in range(200):
            raw = make_mail(
                message_id=f"<w{i % 150}@c.test>",
                subject=f"m{i % 150}",
                sender=f"c{i}@c.test" if i < 150 else f"c{i - 150}@c.test",
            )
            spool.add_inbound(
                session, raw=raw, envelope=spool.Envelope(source="smtp"), now=clock.now()
            )
    done: Counter[str] = Counter()
    lock = threading.Lock()

    def work() -> None:
        while True:
            result = worker.process_batch(engine, settings, clock, limit=7)
            with lock:
                done.update(result.outcomes)
            if result.processed == 0:
                return

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    with read_scope(engine) as session:
        rows = session.exec(select(InboundMessage)).all()
        tickets = session.exec(select(Ticket)).all()
    assert all(r.state == "done" for r in rows)
    assert done["ticket_created"] == 150 and done["duplicate"] == 50
    assert len(tickets) == 150 and len({t.number for t in tickets}) == 150


def test_a_claimed_batch_stays_claimed_while_it_is_understood(postgres: Postgres) -> None:
    """Issue 16: a batch claimed by one daemon is skipped by another daemon's claim while it is
    understood (its claiming transaction holds the row locks until it writes them), and a claim
    let go without writing (a daemon that died) leaves its rows pending for the next."""
    _config, engine, settings = _setup(postgres.create_database())
    clock = FrozenClock(datetime(2026, 11, 23, 10, tzinfo=UTC))
    with session_scope(engine) as session:
        for i in range(6):
            spool.add_inbound(
                session,
                raw=make_mail(message_id=f"<c{i}@c.test>", subject=f"claim {i}"),
                envelope=spool.Envelope(source="smtp"),
                now=clock.now(),
            )
    first = worker.claim(engine, limit=3)
    second = worker.claim(engine, limit=3)
    third = worker.claim(engine, limit=3)
    try:
        assert len(first.ids) == 3 and len(second.ids) == 3
        assert not set(first.ids) & set(second.ids)
        assert third.ids == []  # everything is claimed by the first two
        worker.understand(worker.IN_PROCESS, first, settings)
        result = worker.write(engine, first, settings, clock)
        assert result.outcomes == {"ticket_created": 3}
    finally:
        second.close()  # gives up without writing: its rows are pending again
    again = worker.claim(engine, limit=10)
    try:
        assert sorted(again.ids) == sorted(second.ids)
    finally:
        again.close()


def test_daemon_serves_on_postgresql(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    daemon = Daemon(tmp_path)
    daemon.config.write_text(
        daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
    )
    daemon.start()
    try:
        for i in range(20):
            daemon.send(make_mail(subject=f"pg {i}", sender=f"p{i}@customer.test"))
        daemon.wait_idle()
        tickets = daemon.tickets()
    finally:
        daemon.stop()
    assert sorted(t["subject"] for t in tickets) == sorted(f"pg {i}" for i in range(20))
    assert not (tmp_path / "helpdesk.db").exists()


def _daemon_on(url: str, tmp: Path) -> Daemon:
    tmp.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(tmp, extra_config="[api]\nrate_limit_requests = 1000000\n")
    daemon.config.write_text(
        daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
    )
    return daemon


def test_two_daemons_one_key_one_ticket_on_postgresql(postgres: Postgres, tmp_path: Path) -> None:
    """50 requests with one Idempotency-Key, spread over two daemons on one PostgreSQL database:
    the unique index lets one execution commit; every other answer is its replay or a 409 while
    it runs; never a 5xx, a second ticket or a second acknowledgement."""
    import json
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    url = postgres.create_database()
    daemons = [_daemon_on(url, tmp_path / "a"), _daemon_on(url, tmp_path / "b")]
    for d in daemons:
        d.start()
    try:
        token = (
            daemons[0]
            .cli("token", "create", "--name", "pg-both", "--ability", "all")
            .stdout.strip()
            .splitlines()[-1]
        )
        engine = make_engine(url)
        for round_no in range(3):
            email = f"pg-race{round_no}@customer.test"
            body = json.dumps(
                {
                    "originator_email_address": email,
                    "data": {"subject": f"PG race {round_no}", "content": "go"},
                }
            ).encode()
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": str(uuid.uuid4()),
            }

            def post(
                i: int, body: bytes = body, headers: dict[str, str] = headers
            ) -> httpx.Response:
                base = f"http://127.0.0.1:{daemons[i % 2].http_port}"
                return httpx.post(
                    base + "/api/create_ticket", content=body, headers=headers, timeout=60
                )

            with ThreadPoolExecutor(50) as pool:
                results = list(pool.map(post, range(50)))
            statuses = Counter(r.status_code for r in results)
            assert set(statuses) <= {200, 409}, statuses
            oks = {r.content for r in results if r.status_code == 200}
            assert len(oks) == 1, oks
            assert all(
                r.json()["error"] == "idempotency_key_in_progress"
                for r in results
                if r.status_code == 409
            )
            with read_scope(engine) as session:
                tickets = session.exec(select(Ticket).where(Ticket.originator_email == email)).all()
                assert len(tickets) == 1
                from mailhelpdesk.domain.models import OutboxItem

                acks = session.exec(
                    select(OutboxItem).where(
                        OutboxItem.primary_rcpt == email, OutboxItem.kind == "acknowledgement"
                    )
                ).all()
                assert len(acks) == 1
        engine.dispose()
    finally:
        for d in daemons:
            d.stop()


def test_api_answers_503_while_postgresql_is_down_and_the_key_stays_usable(tmp_path: Path) -> None:
    """The database goes away under a running daemon: the API answers 503 `unavailable` in the
    envelope (never a hang or a traceback), nothing is half done, and once the database is back
    a retry with the same key executes once."""
    import json

    import httpx

    require(pg_bin() is not None, "PostgreSQL server (apt-get install postgresql)")
    server = Postgres()  # a cluster of its own: this test stops it
    try:
        url = server.create_database()
        daemon = _daemon_on(url, tmp_path / "d")
        daemon.start()
        try:
            token = (
                daemon.cli("token", "create", "--name", "pg-down", "--ability", "all")
                .stdout.strip()
                .splitlines()[-1]
            )
            base = f"http://127.0.0.1:{daemon.http_port}"
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": "down-1",
            }
            body = json.dumps(
                {
                    "originator_email_address": "down@customer.test",
                    "data": {"subject": "While down", "content": "x"},
                }
            ).encode()
            assert (
                httpx.post(
                    base + "/api/v1/tickets/query", content=b"{}", headers=headers, timeout=30
                ).status_code
                == 200
            )
            server.pause()
            for _ in range(2):
                resp = httpx.post(
                    base + "/api/create_ticket", content=body, headers=headers, timeout=60
                )
                assert resp.status_code == 503, resp.text
                assert resp.json()["ok"] is False and resp.json()["error"] == "unavailable"
                assert resp.headers["retry-after"] and resp.headers["content-type"].startswith(
                    "application/json"
                )
            server.resume()
            deadline = time.monotonic() + 30
            while True:
                resp = httpx.post(
                    base + "/api/create_ticket", content=body, headers=headers, timeout=60
                )
                if resp.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert resp.status_code == 200 and "idempotent-replayed" not in resp.headers, resp.text
            again = httpx.post(
                base + "/api/create_ticket", content=body, headers=headers, timeout=60
            )
            assert again.content == resp.content and again.headers["idempotent-replayed"] == "true"
            engine = make_engine(url)
            with read_scope(engine) as session:
                assert (
                    len(
                        session.exec(
                            select(Ticket).where(Ticket.originator_email == "down@customer.test")
                        ).all()
                    )
                    == 1
                )
            engine.dispose()
        finally:
            daemon.stop()
    finally:
        server.stop()


def test_a_claim_held_by_a_stuck_peer_is_409_after_a_bounded_wait(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Another daemon's transaction holds a key's claim and does not finish: a request with that
    key waits at most CLAIM_WAIT_MS, then answers 409 in progress (never hangs); once the peer is
    gone the key executes once."""
    import json

    import httpx
    import psycopg

    from mailhelpdesk.store.idempotency import CLAIM_WAIT_MS

    url = postgres.create_database()
    daemon = _daemon_on(url, tmp_path / "d")
    daemon.start()
    try:
        token = (
            daemon.cli("token", "create", "--name", "stuck", "--ability", "all")
            .stdout.strip()
            .splitlines()[-1]
        )
        token_id = int(token.split("|")[0])
        peer = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        peer.execute(
            "INSERT INTO idempotency_keys (token_id, key, action, fingerprint, state, lease, created_at, expires_at) "
            "VALUES (%s, 'held', 'create_ticket', 'x', 'in_progress', 'peer', now(), now() + interval '1 day')",
            (token_id,),
        )  # the transaction stays open: a peer stuck mid-request
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": "held",
        }
        body = json.dumps(
            {
                "originator_email_address": "stuck@customer.test",
                "data": {"subject": "Held", "content": "x"},
            }
        ).encode()
        base = f"http://127.0.0.1:{daemon.http_port}"
        started = time.monotonic()
        resp = httpx.post(base + "/api/create_ticket", content=body, headers=headers, timeout=60)
        waited = time.monotonic() - started
        assert resp.status_code == 409 and resp.json()["error"] == "idempotency_key_in_progress", (
            resp.text
        )
        assert resp.headers["retry-after"] == "1" and waited < CLAIM_WAIT_MS / 1000 + 3, waited
        peer.rollback()  # the peer dies: its claim goes with its transaction
        peer.close()
        done = httpx.post(base + "/api/create_ticket", content=body, headers=headers, timeout=60)
        assert done.status_code == 200 and "idempotent-replayed" not in done.headers, done.text
    finally:
        daemon.stop()
