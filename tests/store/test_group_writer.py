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
