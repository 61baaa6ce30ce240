"""One daemon per SQLite database.

SQLite has one writer at a time and our group commit, claims and schedules assume the daemon is
that writer; two daemons on one file would wait on each other's locks and both run every
scheduled job. So `serve` takes an exclusive advisory lock on `<database>.daemon.lock` and a
second daemon is refused at start with a clear error. The kernel drops the lock when the process
ends, however it ends (SIGKILL included), so a crash never leaves a stale lock behind. PostgreSQL
needs none of this: several daemons share it by design (row claims with SKIP LOCKED, leases in
store/leases.py). What they must not do together is prepare the store at start: two daemons
started at once would both run the migrations, or both insert the config's agents and queues, and
one would fail. `startup_lock` makes daemons on one PostgreSQL database take turns at that.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

# the key of the PostgreSQL advisory lock daemons take in turn while they prepare the store
# (any constant signed 64-bit number; "mhdstart" in ASCII)
STARTUP_LOCK_KEY = 0x6D68647374617274


class DaemonAlreadyRunningError(Exception):
    pass


class DaemonLock:
    def __init__(self, handle: IO[str] | None) -> None:
        self._handle = handle

    @property
    def exclusive(self) -> bool:
        """Whether this process is the only daemon on the database (a SQLite file it locked)."""
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the lock
            self._handle = None


def acquire(database_url: str) -> DaemonLock:
    """The lock for a SQLite database file (a no-op lock for other engines and :memory:)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return DaemonLock(None)
    path = Path(url.database).with_name(Path(url.database).name + ".daemon.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DaemonAlreadyRunningError(
            f"another mailhelpdesk daemon (pid {holder}) already serves {url.database}: one "
            "daemon per SQLite database (run several daemons on PostgreSQL)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return DaemonLock(handle)


@contextlib.contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    """While held, no other daemon on this PostgreSQL database migrates the schema or copies the
    config into the store (a session advisory lock on a connection kept for the block; the
    server drops it if this process dies). Nothing to do on SQLite: `acquire` already allows
    only one daemon, and a CLI beside it meets SQLite's own writer lock."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
            connection.commit()
