"""One daemon per SQLite database.

SQLite has one writer at a time and our group commit, claims and schedules assume the daemon is
that writer; two daemons on one file would wait on each other's locks and both run every
scheduled job. So `serve` takes an exclusive advisory lock on `<database>.daemon.lock` and a
second daemon is refused at start with a clear error. The kernel drops the lock when the process
ends, however it ends (SIGKILL included), so a crash never leaves a stale lock behind. PostgreSQL
needs none of this: several daemons share it by design (row claims with SKIP LOCKED).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url


class DaemonAlreadyRunningError(Exception):
    pass


class DaemonLock:
    def __init__(self, handle: IO[str] | None) -> None:
        self._handle = handle

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
