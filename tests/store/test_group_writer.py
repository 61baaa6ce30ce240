"""Group commit of the API's writes (store/db.py `write`): shared fsyncs, separate fates."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from mailhelpdesk.domain.models import Setting
from mailhelpdesk.store import schema
from mailhelpdesk.store.db import make_engine, read_scope, write


def test_waiting_jobs_share_one_commit_and_a_failing_job_undoes_only_itself(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)
    commits: list[float] = []
    event.listen(engine, "commit", lambda _conn: commits.append(time.monotonic()))
    started = threading.Event()

    def slow_first(session: Session) -> str:
        started.set()
        time.sleep(0.3)  # the other jobs queue up behind this transaction meanwhile
        session.add(Setting(key="first", value="1"))
        return "first"

    def job(n: int) -> str:
        def run(session: Session) -> str:
            session.add(Setting(key=f"k{n}", value=str(n)))
            session.flush()
            if n == 7:
                raise ValueError("job 7 fails")
            return f"k{n}"

        return write(engine, run)

    results: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            results[n] = job(n)
        except ValueError as exc:
            results[n] = exc

    first = threading.Thread(target=lambda: results.__setitem__(-1, write(engine, slow_first)))
    first.start()
    started.wait(5)
    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join(10)
    baseline = len(commits)
    assert results[-1] == "first" and isinstance(results[7], ValueError)
    assert all(results[n] == f"k{n}" for n in range(20) if n != 7)
    assert baseline <= 3, f"21 jobs took {baseline} commits"
    with read_scope(engine) as session:
        keys = {row.key for row in session.exec(select(Setting)).all()}
    assert {"first", *(f"k{n}" for n in range(20) if n != 7)} <= keys and "k7" not in keys
    engine.dispose()


def test_a_job_may_not_write_again_from_inside(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)
    with pytest.raises(RuntimeError, match="session it is given"):
        write(engine, lambda _session: write(engine, lambda s: None))
    engine.dispose()


def _burst(engine, jobs):  # type: ignore[no-untyped-def]
    """Run `jobs` so that they land in one batch: a slow first job holds the writer meanwhile."""
    results: dict[int, object] = {}
    started = threading.Event()

    def slow(session: Session) -> str:
        started.set()
        time.sleep(0.3)
        return "slow"

    def call(n: int, job) -> None:  # type: ignore[no-untyped-def]
        try:
            results[n] = write(engine, job)
        except Exception as exc:  # noqa: BLE001
            results[n] = exc

    first = threading.Thread(target=call, args=(-1, slow))
    first.start()
    started.wait(5)
    threads = [threading.Thread(target=call, args=(n, job)) for n, job in enumerate(jobs)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in [first, *threads]:
        t.join(30)
    return results


def test_an_error_that_ends_the_transaction_fails_the_whole_batch(tmp_path: Path) -> None:
    """SQLite rolls a transaction back by itself on a full disk: no job of that batch may be
    answered as done, and none may be committed behind the others' backs."""
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)
    with Session(engine) as session:
        session.execute(text("CREATE TABLE big (v BLOB)"))
        session.commit()
        pages = session.execute(text("PRAGMA page_count")).scalar()
    event.listen(
        engine, "connect", lambda c, _r: c.execute(f"PRAGMA max_page_count={int(pages or 0) + 20}")
    )
    engine.dispose()

    def insert(size: int):  # type: ignore[no-untyped-def]
        return lambda session: (
            session.execute(text("INSERT INTO big VALUES (:v)"), {"v": b"x" * size}) and size
        )

    results = _burst(engine, [insert(10), insert(10), insert(4_000_000), insert(10)])
    assert all(isinstance(results[n], Exception) for n in range(4)), results
    with read_scope(engine) as session:
        assert session.execute(text("SELECT count(*) FROM big")).scalar() == 0
    engine.dispose()


def test_a_database_locked_elsewhere_fails_the_batch_once(tmp_path: Path) -> None:
    import sqlite3

    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=500"))
    engine.dispose()
    blocker = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        results = {}
        threads = []
        for n in range(6):

            def call(n: int = n) -> None:
                try:
                    results[n] = write(engine, lambda s: s.add(Setting(key=f"l{n}", value="1")))
                except Exception as exc:  # noqa: BLE001
                    results[n] = exc

            threads.append(threading.Thread(target=call))
            threads[-1].start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(r, Exception) for r in results.values()) and len(results) == 6
    assert elapsed < 2.5, f"{elapsed:.1f} s: every job waited out the busy timeout on its own"
    assert write(engine, lambda s: s.add(Setting(key="after", value="1")) or "ok") == "ok"
    engine.dispose()


def test_an_interrupted_job_does_not_kill_the_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)

    def interrupted(_session: Session) -> None:
        raise KeyboardInterrupt

    with pytest.raises(RuntimeError, match="interrupted"):
        write(engine, interrupted)
    assert write(engine, lambda s: 42) == 42
    engine.dispose()
