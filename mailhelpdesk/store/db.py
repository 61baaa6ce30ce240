"""The database handle, engines and transactions. The caller owns the transaction:
`session_scope` commits or rolls back.

SQLite runs in WAL mode with `synchronous=FULL` by default, so a commit is on disk before the
SMTP listener says 250. PostgreSQL needs nothing special: its commits are durable.

How writes are serialised on SQLite, in one place: SQLite has one writer. Inside this process,
every write transaction takes the engine's writer lock (made with the engine, kept in its
execution options, so nothing here is a module-level registry); the API's short writes queue
for that same lock as group commits (`Database.write`). Other processes (the CLI beside the
daemon) meet SQLite's own lock through `BEGIN IMMEDIATE` and the busy timeout. The composition
root builds one `Database` and closes it (group writer, executor thread, engine) at shutdown.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from mailhelpdesk.store.lookups import LOOKUPS_OPTION, Lookups

# SQLite has one writer. Threads of this process queue for it on a lock instead of in SQLite's
# busy handler, which sleeps in growing steps (up to 100 ms) and made p99 latencies of seconds
# under concurrent API writes. The lock is made with the engine and travels in its execution
# options under this key; other processes (the CLI beside the daemon) meet the busy timeout.
WRITE_LOCK_OPTION = "mailhelpdesk_write_lock"

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def private_sqlite_file(url: str) -> None:
    """The SQLite database file exists, readable by its owner only (0600), before SQLite opens it.

    Why: it holds every customer's mail and, without a configured secret, the generated key
    that signs reply addresses; SQLite creates it (and its -wal and -shm files, which take the
    database file's mode) as the umask allows, usually 0644. A missing folder is made 0700; an
    existing file readable by others is narrowed to 0600 (with its -wal and -shm). Nothing is
    done for in-memory databases."""
    database = make_url(url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & ~0o077)
                log.warning("narrowed %s from %o to %o", file, mode, mode & ~0o077)
        except OSError:
            continue  # absent, or not ours to change: SQLite reports what matters when opening


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine with the connection settings durability and concurrency need."""
    if is_sqlite(url):
        private_sqlite_file(url)
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

        engine.update_execution_options(
            **{WRITE_LOCK_OPTION: threading.RLock(), LOOKUPS_OPTION: Lookups()}
        )
        return engine
    # jit off: PostgreSQL compiles a plan to machine code when its cost estimate is high (a
    # count over 100,000 tickets is), which took 100-500 ms of a 5 ms list query; the desk's
    # queries are short, and never gain from it (docs/performance.md, "Search")
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        hide_parameters=True,
        connect_args={"options": "-c jit=off"},
    )
    engine.update_execution_options(**{LOOKUPS_OPTION: Lookups()})  # store/lookups.py
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    # (the session is made once the writer lock is held: `with A, B` enters A before it
    # evaluates B)
    with (
        write_lock(engine) or nullcontext(),
        committed(Session(engine, expire_on_commit=False)) as session,
    ):
        yield session


@contextmanager
def committed(session: Session) -> Iterator[Session]:
    """End `session`'s transaction with the block: commit, or roll back when it raises; then
    close it (ingest/worker.py ends a claiming transaction opened earlier this way)."""
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


def reading(engine: Engine, session: Session | None) -> AbstractContextManager[Session]:
    """`session` when the caller already reads in one (a GET reads its token and its answer in
    one transaction), else a `read_scope` of its own."""
    return nullcontext(session) if session is not None else read_scope(engine)


def write_lock(engine: Engine) -> threading.RLock | None:
    """The in-process writer lock of a SQLite engine (None for PostgreSQL)."""
    lock = engine.get_execution_options().get(WRITE_LOCK_OPTION)
    return lock if isinstance(lock, type(threading.RLock())) else None


_STOP = object()


class GroupWriter:
    """Group commit for the short write jobs of one process on SQLite (the HTTP API's requests).

    SQLite has one writer and every commit is an fsync. Jobs submitted while a transaction is
    open wait for the next one and share it (`each_in_group`: one savepoint for all of them, a
    savepoint each only when one raises), so a job that raises undoes only its own work, and
    all of them become durable with one commit before any caller is answered. Callers block
    until their job's transaction has committed: an answer is never given for work that could
    still be lost. The transaction takes the engine's writer
    lock like any other, so this is batching on top of the one serialisation, not a second one.
    """

    def __init__(self, engine: Engine, *, max_jobs: int = 64) -> None:
        self.engine, self.max_jobs = engine, max_jobs
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="db-group-writer", daemon=True)
        self._thread.start()

    def run(self, job: Callable[[Session], T]) -> T:
        """Run `job(session)` in the next group transaction (`each_in_group`); its result once
        committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a group-commit job must use the session it is given, not write() again"
            )
        if not self._thread.is_alive():
            raise RuntimeError("the database is closed")
        done: Future[T] = Future()
        self._jobs.put((job, done))
        return done.result()

    def stop(self, timeout: float = 10) -> None:
        """Finish the jobs already queued, then end the thread."""
        self._jobs.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_jobs:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        try:
            with session_scope(self.engine) as session:
                # BEGIN IMMEDIATE once, before any job: a database that stays locked fails the
                # batch once instead of costing every job its own busy timeout
                session.connection()
                outcomes = each_in_group(session, [job for job, _done in batch], _run_job)
        except BaseException as exc:  # noqa: BLE001 - nothing of this batch is durable; the writer lives on
            log.error("group commit failed jobs=%d error=%s", len(batch), exc)
            failure = (
                exc
                if isinstance(exc, Exception)
                else RuntimeError(f"the write was interrupted: {type(exc).__name__}")
            )
            for _job, done in batch:
                done.set_exception(failure)
            return
        for (_job, done), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Failed):
                done.set_exception(outcome.error)
            else:
                done.set_result(outcome)


def _run_job(session: Session, job: Callable[[Session], T]) -> T:
    return job(session)


@dataclass(frozen=True)
class Failed:
    """What an item of `each_in_group` raised; its writes are undone."""

    error: Exception


Item = TypeVar("Item")


def each_in_group(
    session: Session,
    items: Sequence[Item],
    run: Callable[[Session, Item], T],
    *,
    until: Callable[[], bool] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> list[T | Failed]:
    """`run(session, item)` for each item in one transaction, each item's result or Failed.

    Optimistic first: every item under one savepoint. If one raises, that pass is rolled back
    and the items run again, each in a savepoint of its own, so one that raises undoes only its
    own work. Why: a savepoint's begin and release cost about as much as a small item's own
    statements, and an item that raises is rare (issue 16). Before they run again, the
    session's objects are expired (those the rolled-back pass loaded may hold what it wrote)
    and `on_retry` lets the caller read again what it keeps of the pass. With `until`, a pass
    stops after the item for which it is true, the result shorter than `items` (the second pass
    not before the item that failed the first, so the next call starts past it). When the
    database ends the transaction itself (SQLite on a full disk or an I/O error), the items
    before are lost too: that raises, and the caller fails them all."""
    whole = session.begin_nested()
    session.info[_OPTIMISTIC] = True
    try:
        done: list[T | Failed] = []
        for item in items:
            done.append(run(session, item))
            session.flush()  # an item's pending rows fail as that item, as in its savepoint
            if until is not None and until():
                break
    except (Exception, _RunCarefully):  # noqa: BLE001 - any failure: run them again, carefully
        whole.rollback()
        failed_at = len(done)
    else:
        whole.commit()
        return done
    finally:
        session.info.pop(_OPTIMISTIC, None)
    session.expire_all()
    if on_retry is not None:
        on_retry()
    done = []
    for item in items:
        try:
            with session.begin_nested():
                done.append(run(session, item))
        except Exception as exc:
            if not in_transaction(session):
                raise
            done.append(Failed(exc))
        if until is not None and len(done) > failed_at and until():
            break
    return done


# session.info: an each_in_group pass without savepoints is running
_OPTIMISTIC = "mailhelpdesk.optimistic_pass"


class _RunCarefully(BaseException):
    """Raised out of `undoable` in an optimistic pass: past the item's own `except Exception`,
    so that the group runs again with a savepoint per item."""


@contextmanager
def undoable(session: Session) -> Iterator[None]:
    """A savepoint for work a job may have to undo while keeping the rest of its own (the
    stored answer of a request whose handler failed with a 4xx, say). In an `each_in_group`
    optimistic pass there are no savepoints: an exception here ends the pass instead, and the
    group runs again with savepoints, where this is a savepoint."""
    if not session.info.get(_OPTIMISTIC):
        with session.begin_nested():
            yield
        return
    try:
        yield
    except Exception as exc:
        raise _RunCarefully from exc


def in_transaction(session: Session) -> bool:
    """Whether our transaction is still open after a statement failed inside a savepoint.
    SQLite ends the transaction itself on some errors (disk full, I/O error); PostgreSQL never
    does: a failed statement aborts only up to the savepoint, which the rollback released."""
    try:
        connection = session.connection()
        if connection.dialect.name != "sqlite":
            return True
        dbapi = connection.connection.dbapi_connection
    except Exception:  # noqa: BLE001 - a connection in that state has no transaction worth keeping
        return False
    return bool(getattr(dbapi, "in_transaction", False))


class Database:
    """The one database handle of a running helpdesk, built by the composition root: the
    engine, the writer lock that comes with it, the group writer for the API's short writes,
    and the executor thread the event loop hands its database work to. `close()` ends them all.
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
        # the loop's database work (spool, ingest, senders) runs here, one thing at a time
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self._group: GroupWriter | None = None
        self._group_lock = threading.Lock()
        self._closed = False

    def session(self) -> AbstractContextManager[Session]:
        """One write transaction (serialised with the others of this process on SQLite)."""
        return session_scope(self.engine)

    def read(self) -> AbstractContextManager[Session]:
        return read_scope(self.engine)

    def write(self, job: Callable[[Session], T]) -> T:
        """Run `job(session)` in a committed transaction: grouped with other jobs on SQLite, a
        transaction of its own on PostgreSQL (which commits concurrent transactions well)."""
        if not self.is_sqlite:
            with session_scope(self.engine) as session:
                return job(session)
        return self._group_writer().run(job)

    def _group_writer(self) -> GroupWriter:
        with self._group_lock:
            if self._closed:
                raise RuntimeError("the database is closed")
            if self._group is None:
                self._group = GroupWriter(self.engine)
            return self._group

    def close(self) -> None:
        """Finish queued group writes, stop the threads, close the connections."""
        with self._group_lock:
            self._closed = True
            group, self._group = self._group, None
        if group is not None:
            group.stop()
        self.executor.shutdown(wait=True)
        self.engine.dispose()
