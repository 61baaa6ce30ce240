"""Engines and transactions. The caller owns the transaction: `session_scope` commits or rolls back.

SQLite runs in WAL mode with `synchronous=FULL` by default, so a commit is on disk before the
SMTP listener says 250. PostgreSQL needs nothing special: its commits are durable.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine


# SQLite has one writer. Threads of this process queue for it on a lock instead of in SQLite's
# busy handler, which sleeps in growing steps (up to 100 ms) and made p99 latencies of seconds
# under concurrent API writes. Other processes (the CLI beside the daemon) still meet the busy
# timeout.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine with the connection settings durability and concurrency need."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


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
