"""`mailhelpdesk backup DEST`: a consistent copy of everything the desk holds, taken while it runs.

The database is the whole state (raw messages, tickets, attachment blobs, keys, settings), so a
backup is a copy of the database:
- SQLite: the online backup API, which copies a consistent snapshot page by page while writers
  go on (a plain `cp` of a WAL database can catch half a transaction). The copy is written next
  to DEST and renamed into place only after `PRAGMA integrity_check` passes, so DEST is either a
  whole, checked backup or absent.
- PostgreSQL: `pg_dump --format=custom` (one consistent snapshot; restore with `pg_restore`),
  checked by `pg_restore --list`. The password goes to pg_dump in its environment, never on its
  command line, where other local users could read it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

# rows counted in the report: what an operator checks a restore against
COUNTED_TABLES = ("tickets", "responses", "inbound_messages", "attachments", "blobs")
_PAGES_PER_STEP = 1024


class BackupError(Exception):
    """The backup could not be made; DEST is left as it was."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    engine: str  # sqlite | postgresql
    size_bytes: int
    counts: dict[str, int]


Progress = Callable[[int, int], None]  # (pages or steps done, total)


def backup(url: str, dest: Path, *, progress: Progress | None = None) -> BackupResult:
    """Copy the database at SQLAlchemy `url` to `dest` (a file, or a folder to put a dated file in)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        source = parsed.database or ""
        if not source or source == ":memory:":
            raise BackupError("an in-memory database has nothing to back up")
        return _sqlite(Path(source), _target(dest, "db"), progress)
    if backend == "postgresql":
        return _postgresql(url, _target(dest, "dump"))
    raise BackupError(f"no backup method for {backend} databases")


def _target(dest: Path, suffix: str) -> Path:
    if dest.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return dest / f"mailhelpdesk-{stamp}.{suffix}"
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a folder")
    return dest


def _sqlite(source: Path, dest: Path, progress: Progress | None) -> BackupResult:
    if not source.exists():
        raise BackupError(f"{source}: no such database")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    # the copy holds every mail and the desk's keys: readable by its owner only, from the start
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
        out = sqlite3.connect(partial)
        try:
            src.backup(
                out,
                pages=_PAGES_PER_STEP,
                progress=(lambda _s, remaining, total: progress(total - remaining, total))
                if progress
                else None,
            )
            out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = out.execute("PRAGMA integrity_check").fetchone()
            if not check or check[0] != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            counts = _sqlite_counts(out)
        finally:
            out.close()
            src.close()
        os.replace(partial, dest)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(dest, "sqlite", dest.stat().st_size, counts)


def _sqlite_counts(connection: sqlite3.Connection) -> dict[str, int]:
    present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    return {
        table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        for table in COUNTED_TABLES
        if table in present
    }


def _postgresql(url: str, dest: Path) -> BackupResult:
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if not pg_dump or not pg_restore:
        raise BackupError("pg_dump and pg_restore are needed (Debian: postgresql-client)")
    parsed = make_url(url)
    env = {**os.environ, **_libpq_env(url)}
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            [pg_dump, "--format=custom", "--no-owner", f"--file={partial}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_dump of {parsed.database}: {done.stderr.strip()}")
        listed = subprocess.run(
            [pg_restore, "--list", str(partial)], capture_output=True, text=True, check=False
        )
        if listed.returncode != 0:
            raise BackupError(f"the dump does not read back: {listed.stderr.strip()}")
        partial.chmod(0o600)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    # a custom-format dump's rows are not countable without restoring it: the report lists what
    # the live database held (COUNTED_TABLES) only for SQLite
    return BackupResult(dest, "postgresql", dest.stat().st_size, {})


def _libpq_env(url: str) -> dict[str, str]:
    """The connection of a SQLAlchemy URL as libpq environment variables."""
    parsed = make_url(url)
    env = {
        "PGHOST": parsed.host or "",
        "PGPORT": str(parsed.port or ""),
        "PGUSER": parsed.username or "",
        "PGPASSWORD": parsed.password or "",
        "PGDATABASE": parsed.database or "",
    }
    for key, value in parsed.query.items():
        if key == "host":
            env["PGHOST"] = value if isinstance(value, str) else value[0]
    return {k: v for k, v in env.items() if v}
