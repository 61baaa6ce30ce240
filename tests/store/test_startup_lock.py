"""Daemons on one PostgreSQL database take turns at preparing the store (store/daemon_lock.py
`startup_lock`): a fresh database prepared by three daemons at once migrates once and starts all
three, and the lock really excludes a second holder until the first lets go."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from mailhelpdesk.app import build_app
from mailhelpdesk.config import config_from_dict
from mailhelpdesk.store import daemon_lock, schema
from mailhelpdesk.store.db import make_engine
from tests.postgres import Postgres


def test_three_daemons_started_at_once_on_a_fresh_database_all_start(postgres: Postgres) -> None:
    url = postgres.create_database()
    config = config_from_dict(
        {
            "helpdesk": {"address": "support@helpdesk.test", "secret": "s"},
            "database": {"url": url},
            "queues": [{"name": "Billing", "address": "billing@helpdesk.test"}],
            "agents": [{"email": "alice@helpdesk.test", "name": "Alice"}],
        }
    )
    start = threading.Barrier(3)

    def build() -> str:
        start.wait()
        app = build_app(config)
        try:
            return app.daemon_id
        finally:
            app.close()

    with ThreadPoolExecutor(3) as pool:
        ids = [f.result(timeout=300) for f in [pool.submit(build) for _ in range(3)]]
    assert len(set(ids)) == 3
    engine = make_engine(url)
    try:
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()


def test_a_second_holder_waits_for_the_first(postgres: Postgres) -> None:
    engine = make_engine(postgres.create_database())
    order: list[str] = []
    first_in = threading.Event()

    def waiting() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ).scalar_one()
            )

    def first() -> None:
        with daemon_lock.startup_lock(engine):
            order.append("first in")
            first_in.set()
            deadline = time.monotonic() + 30
            while not waiting():  # until the second daemon is queued behind this one
                assert time.monotonic() < deadline, "the second holder never waited"
                time.sleep(0.02)
            order.append("first out")

    def second() -> None:
        first_in.wait(30)
        with daemon_lock.startup_lock(engine):
            order.append("second in")

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert order == ["first in", "first out", "second in"]
    finally:
        engine.dispose()
