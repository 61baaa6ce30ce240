"""Leases (store/leases.py) on SQLite and on a real PostgreSQL: one holder at a time, renewal by
the holder, takeover only after expiry, release, and no two winners when daemons race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from mailhelpdesk.domain.models import as_utc
from mailhelpdesk.store import leases, schema
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from tests.postgres import Postgres

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _take(engine: Engine, holder: str, at: datetime, resource: str = "imap:support") -> bool:
    with session_scope(engine) as session:
        return leases.take(session, resource, holder=holder, now=at, ttl_s=30)


def test_one_holder_until_the_lease_expires(engine: Engine) -> None:
    assert _take(engine, "a", T0)
    assert not _take(engine, "b", T0 + timedelta(seconds=5))  # a holds it
    assert _take(engine, "a", T0 + timedelta(seconds=20))  # renewed: now until T0+50
    assert not _take(engine, "b", T0 + timedelta(seconds=40))  # would have expired unrenewed
    with read_scope(engine) as session:
        (row,) = leases.all_leases(session)
    assert row.holder == "a" and as_utc(row.acquired_at) == T0  # renewal keeps the start
    assert _take(engine, "b", T0 + timedelta(seconds=50))  # expired: taken over
    with read_scope(engine) as session:
        (row,) = leases.all_leases(session)
        assert [x.resource for x in leases.held(session, holder="b", now=T0)] == ["imap:support"]
        assert leases.held(session, holder="a", now=T0) == []
    assert row.holder == "b" and as_utc(row.acquired_at) == T0 + timedelta(seconds=50)


def test_hold_raises_once_another_daemon_took_the_lease(engine: Engine) -> None:
    assert _take(engine, "a", T0)
    assert _take(engine, "b", T0 + timedelta(seconds=31))
    with pytest.raises(leases.LeaseLostError), session_scope(engine) as session:
        leases.hold(session, "imap:support", holder="a", now=T0 + timedelta(seconds=32), ttl_s=30)


def test_release_frees_the_lease_for_another_daemon_at_once(engine: Engine) -> None:
    assert _take(engine, "a", T0)
    assert _take(engine, "a", T0, resource="job:sla escalation")
    with session_scope(engine) as session:
        assert not leases.release(session, "imap:support", holder="b")  # not b's to release
        assert leases.release(session, "imap:support", holder="a")
    assert _take(engine, "b", T0 + timedelta(seconds=1))
    with session_scope(engine) as session:
        assert leases.release_all(session, holder="a") == 1
    assert _take(engine, "b", T0 + timedelta(seconds=1), resource="job:sla escalation")


def test_racing_daemons_never_both_win(postgres: Postgres) -> None:
    """Eight threads, each its own daemon, race for 40 resources at the same instant on
    PostgreSQL: every resource has exactly one winner, and the row names that winner."""
    engine = make_engine(postgres.create_database())
    schema.upgrade(engine)
    resources = [f"imap:box{i}" for i in range(40)]
    wins: dict[str, list[str]] = {r: [] for r in resources}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def race(holder: str) -> None:
        start.wait()
        for resource in resources:
            if _take(engine, holder, T0, resource=resource):
                with lock:
                    wins[resource].append(holder)

    threads = [threading.Thread(target=race, args=(f"d{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert all(len(w) == 1 for w in wins.values()), wins
        with read_scope(engine) as session:
            rows = {row.resource: row.holder for row in leases.all_leases(session)}
        assert rows == {r: w[0] for r, w in wins.items()}
    finally:
        engine.dispose()


def test_clear_forgets_every_holder(engine: Engine) -> None:
    """What the one SQLite daemon does at start: the holders of leases left are dead."""
    assert _take(engine, "dead", T0)
    assert _take(engine, "dead", T0, resource="job:auto-close")
    with session_scope(engine) as session:
        assert leases.clear(session) == 2
    assert _take(engine, "new", T0 + timedelta(seconds=1))  # at once, not after expiry
