"""Engines and transactions. The caller owns the transaction: `session_scope` commits or rolls back.

SQLite runs in WAL mode with `synchronous=FULL` by default, so a commit is on disk before the
SMTP listener says 250. PostgreSQL needs nothing special: its commits are durable.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

# SQLite has one writer. Threads of this process queue for it on a lock instead of in SQLite's
# busy handler, which sleeps in growing steps (up to 100 ms) and made p99 latencies of seconds
# under concurrent API writes. Other processes (the CLI beside the daemon) still meet the busy
# timeout.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITERS: weakref.WeakKeyDictionary[Engine, GroupWriter] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine with the connection settings durability and concurrency need."""
    if is_sqlite(url):
        # hide_parameters: a failed statement is logged without its values (customers' mail)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # autocommit off for these statements; WAL lets readers run beside the one writer
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # writers take the lock at BEGIN, so a transaction never fails half-way when it
            # upgrades from reading to writing; read-only sessions stay deferred
            if conn.get_execution_options().get("readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        # let SQLAlchemy's "begin" event issue BEGIN instead of pysqlite's implicit one
        @event.listens_for(engine, "connect", insert=True)
        def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        _WRITE_LOCKS[engine] = threading.RLock()
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with _WRITE_LOCKS.get(engine) or nullcontext():
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A session for reading only; never commits."""
    session = Session(engine.execution_options(readonly=True), expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()  # ends the transaction without expiring what was read


class GroupWriter:
    """Group commit for the short write jobs of one process on SQLite (the HTTP API's requests).

    SQLite has one writer and every commit is an fsync. Jobs submitted while a transaction is
    open wait for the next one; each runs in a savepoint of a shared transaction, so a job that
    raises undoes only its own work, and all of them become durable with one commit before any
    caller is answered. Callers block until their job's transaction has committed: an answer is
    never given for work that could still be lost.
    """

    def __init__(self, engine: Engine, *, max_jobs: int = 64) -> None:
        self.engine, self.max_jobs = engine, max_jobs
        self._jobs: queue.SimpleQueue[tuple[Callable[[Session], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name="db-group-writer", daemon=True)
        self._thread.start()

    def run(self, job: Callable[[Session], T]) -> T:
        """Run `job(session)` in a savepoint of the next group transaction; its result once committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a group-commit job must use the session it is given, not write() again"
            )
        done: Future[T] = Future()
        self._jobs.put((job, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < self.max_jobs:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with session_scope(self.engine) as session:
                # BEGIN IMMEDIATE once, before any job: a database that stays locked fails the
                # batch once instead of costing every job its own busy timeout
                session.connection()
                for job, done in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((done, job(session), None))
                    except Exception as exc:  # noqa: BLE001 - the job's own answer
                        if not _in_transaction(session):
                            # SQLite rolled the whole transaction back by itself (disk full, I/O
                            # error): the jobs before this one are lost too, so none may succeed
                            raise
                        outcomes.append((done, None, exc))
        except BaseException as exc:  # noqa: BLE001 - nothing of this batch is durable; the writer lives on
            log.error("group commit failed jobs=%d error=%s", len(batch), exc)
            error = (
                exc
                if isinstance(exc, Exception)
                else RuntimeError(f"the write was interrupted: {type(exc).__name__}")
            )
            for _job, done in batch:
                done.set_exception(error)
            return
        for done, value, error in outcomes:
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(value)


def _in_transaction(session: Session) -> bool:
    """Whether SQLite still has our transaction open (it ends one itself on some errors)."""
    try:
        dbapi = session.connection().connection.dbapi_connection
    except Exception:  # noqa: BLE001 - a connection in that state has no transaction worth keeping
        return False
    return bool(getattr(dbapi, "in_transaction", False))


def write(engine: Engine, job: Callable[[Session], T]) -> T:
    """Run `job(session)` in a committed transaction: grouped with other jobs on SQLite, a
    transaction of its own elsewhere (PostgreSQL commits concurrent transactions well itself)."""
    if engine not in _WRITE_LOCKS:
        with session_scope(engine) as session:
            return job(session)
    writer = _WRITERS.get(engine)
    if writer is None:
        with _WRITERS_LOCK:
            writer = _WRITERS.get(engine)
            if writer is None:
                writer = _WRITERS[engine] = GroupWriter(engine)
    return writer.run(job)
