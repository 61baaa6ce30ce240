"""A private PostgreSQL cluster on 127.0.0.1 for the tests, run as the `postgres` user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

from tests.helpers import free_port


def pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """initdb + pg_ctl in a temp dir; `url(db)` gives a SQLAlchemy URL for a fresh database."""

    def __init__(self) -> None:
        bindir = pg_bin()
        assert bindir is not None, "PostgreSQL server binaries not installed"
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mhd-pg-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-w",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on",
            "start",
        )
        self._databases = 0

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_root:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # /usr/sbin may be off PATH
            command = [runuser, "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def create_database(self) -> str:
        self._databases += 1
        name = f"helpdesk_{self._databases}_{time.time_ns() % 100000}"
        psql = [
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-c",
            f"CREATE DATABASE {name}",
        ]
        subprocess.run(psql, check=True, capture_output=True, timeout=60)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def pause(self) -> None:
        """Stop the server but keep its data (resume() starts it again on the same port)."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-w",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
