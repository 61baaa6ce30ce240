"""Group commit of the API's writes (store/db.py `Database.write`): shared fsyncs, separate
fates; closing the database ends the writer thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from mailhelpdesk.domain.models import Setting
from mailhelpdesk.store import schema
from mailhelpdesk.store.db import Database, read_scope


def test_waiting_jobs_share_one_commit_and_a_failing_job_undoes_only_itself(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    engine = db.engine
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

        return db.write(run)

    results: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            results[n] = job(n)
        except ValueError as exc:
            results[n] = exc

    first = threading.Thread(target=lambda: results.__setitem__(-1, db.write(slow_first)))
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
    db.close()


def test_a_job_may_not_write_again_from_inside(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    engine = db.engine
    schema.upgrade(engine)
    with pytest.raises(RuntimeError, match="session it is given"):
        db.write(lambda _session: db.write(lambda s: None))
    db.close()


def _burst(db, jobs):  # type: ignore[no-untyped-def]
    """Run `jobs` so that they land in one batch: a slow first job holds the writer meanwhile."""
    results: dict[int, object] = {}
    started = threading.Event()

    def slow(session: Session) -> str:
        started.set()
        time.sleep(0.3)
        return "slow"

    def call(n: int, job) -> None:  # type: ignore[no-untyped-def]
        try:
            results[n] = db.write(job)
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

    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    engine = db.engine
    schema.upgrade(engine)
    with Session(engine) as session:
        session.execute(text("CREATE TABLE big (v BLOB)"))
        session.commit()
        pages = session.execute(text("PRAGMA page_count")).scalar()
    event.listen(
        engine, "connect", lambda c, _r: c.execute(f"PRAGMA max_page_count={int(pages or 0) + 20}")
    )
    engine.dispose()  # new connections, with the limit

    def insert(size: int):  # type: ignore[no-untyped-def]
        return lambda session: (
            session.execute(text("INSERT INTO big VALUES (:v)"), {"v": b"x" * size}) and size
        )

    results = _burst(db, [insert(10), insert(10), insert(4_000_000), insert(10)])
    assert all(isinstance(results[n], Exception) for n in range(4)), results
    with read_scope(engine) as session:
        assert session.execute(text("SELECT count(*) FROM big")).scalar() == 0
    db.close()


def test_a_database_locked_elsewhere_fails_the_batch_once(tmp_path: Path) -> None:
    import sqlite3

    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    engine = db.engine
    schema.upgrade(engine)
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=500"))
    engine.dispose()  # new connections, with the short timeout
    blocker = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        results = {}
        threads = []
        for n in range(6):

            def call(n: int = n) -> None:
                try:
                    results[n] = db.write(lambda s: s.add(Setting(key=f"l{n}", value="1")))
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
    assert db.write(lambda s: s.add(Setting(key="after", value="1")) or "ok") == "ok"
    db.close()


def test_an_interrupted_job_does_not_kill_the_writer(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    engine = db.engine
    schema.upgrade(engine)

    def interrupted(_session: Session) -> None:
        raise KeyboardInterrupt

    with pytest.raises(RuntimeError, match="interrupted"):
        db.write(interrupted)
    assert db.write(lambda s: 42) == 42
    db.close()


def test_close_finishes_queued_jobs_and_ends_the_writer_thread(tmp_path: Path) -> None:
    """The Database owns the group writer: close() lets what is queued commit, then the thread
    is gone, and a write after close is refused instead of hanging."""
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(db.engine)
    assert db.write(lambda s: s.add(Setting(key="before", value="1")) or "ok") == "ok"
    writers = [t for t in threading.enumerate() if t.name == "db-group-writer"]
    assert len(writers) >= 1
    db.close()
    assert not any(t.is_alive() for t in writers)
    with pytest.raises(RuntimeError, match="closed"):
        db.write(lambda s: None)
    reopened = Database(f"sqlite:///{tmp_path / 'g.db'}")
    with read_scope(reopened.engine) as session:
        assert session.get(Setting, "before") is not None
    reopened.close()


def test_a_group_without_failures_takes_one_savepoint(tmp_path: Path) -> None:
    """The optimistic pass: the jobs of a group share one savepoint, not one each."""
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(db.engine)
    statements: list[str] = []
    event.listen(
        db.engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: statements.append(sql)
    )
    groups: list[object] = []
    event.listen(db.engine, "commit", groups.append)

    def add(n: int):  # type: ignore[no-untyped-def]
        return lambda session: session.add(Setting(key=f"s{n}", value="1")) or n

    results = _burst(db, [add(n) for n in range(8)])
    assert [results[n] for n in range(8)] == list(range(8))
    savepoints = sum(s.startswith("SAVEPOINT") for s in statements)
    # at most one a group (SQLAlchemy emits it once the group touches the database)
    assert 1 <= savepoints <= len(groups) < 9, f"{savepoints} savepoints, {len(groups)} groups"
    db.close()


def test_undoable_work_is_undone_alone_when_the_group_reruns(tmp_path: Path) -> None:
    """A job that undoes part of its work (`undoable`, as the API does for a 4xx answer) keeps
    the rest of its work; the group is run again with savepoints, and every other job of it is
    done once."""
    from mailhelpdesk.store.db import undoable

    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(db.engine)

    def partial(session: Session) -> str:
        session.add(Setting(key="kept", value="1"))
        session.flush()
        try:
            with undoable(session):
                session.add(Setting(key="undone", value="1"))
                session.flush()
                raise LookupError("the handler's 4xx")
        except LookupError:
            return "answered"

    def add(n: int):  # type: ignore[no-untyped-def]
        def run(session: Session) -> int:
            session.add(Setting(key=f"o{n}", value=str(n)))
            session.flush()
            return n

        return run

    results = _burst(db, [add(0), partial, add(2)])
    assert results == {-1: "slow", 0: 0, 1: "answered", 2: 2}
    with read_scope(db.engine) as session:
        keys = sorted(row.key for row in session.exec(select(Setting)).all())
    assert keys == ["kept", "o0", "o2"]
    db.close()


def test_a_pass_cut_short_still_goes_past_the_item_that_failed(tmp_path: Path) -> None:
    """`until` (a time budget, say) cuts a pass short. Once the budget is spent, the second
    pass, run after a failure, still goes up to the failing item, so the caller's next group
    starts past it instead of failing on it again."""
    from mailhelpdesk.store.db import Failed, each_in_group, session_scope

    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(db.engine)

    def add(session: Session, n: int) -> int:
        session.add(Setting(key=f"u{n}", value=str(n)))
        if n == 2:
            raise ValueError("item 2 fails")
        return n

    with session_scope(db.engine) as session:
        assert each_in_group(session, [0, 1], add, until=lambda: True) == [0]
    asked: list[bool] = []

    def spent_after_two() -> bool:  # the budget runs out after the first pass's second item
        asked.append(True)
        return len(asked) > 2

    retried: list[bool] = []
    with session_scope(db.engine) as session:
        done = each_in_group(
            session, [5, 6, 2, 7], add, until=spent_after_two, on_retry=lambda: retried.append(True)
        )
    assert [r if not isinstance(r, Failed) else "failed" for r in done] == [5, 6, "failed"]
    assert retried == [True]
    with read_scope(db.engine) as session:
        keys = sorted(row.key for row in session.exec(select(Setting)).all())
    assert keys == ["u0", "u5", "u6"]
    db.close()
