"""Fixtures shared by the whole suite: the mail corpus and a private daemon per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def corpus_path() -> Path | None:
    """Where the shared real-world mail corpus lives, or None when it is not on this machine."""
    configured = os.environ.get("MAILHELPDESK_CORPUS")
    path = Path(configured) if configured else ROOT.parent / "shared" / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The corpus folder; a missing corpus fails the tests that need it."""
    from tests.helpers import require

    path = corpus_path()
    require(path is not None, "the mail corpus (../shared/corpus or $MAILHELPDESK_CORPUS)")
    assert path is not None
    return path


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    """A real HTTP server on 127.0.0.1 recording POSTs (tests/http_receiver.py)."""
    from tests.http_receiver import Receiver

    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sink():  # type: ignore[no-untyped-def]
    """A real SMTP server on 127.0.0.1 recording what it is given, where notices are relayed
    (tests/transports/test_smtp_sender.py `Sink`; modules that share one per module define
    their own)."""
    from tests.transports.test_smtp_sender import Sink

    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dovecot():  # type: ignore[no-untyped-def]
    """A private Dovecot on 127.0.0.1 for a test module (tests/dovecot.py); each test adds its
    own user. Missing server binaries fail under CI."""
    from tests.dovecot import Dovecot, dovecot_binary
    from tests.helpers import require

    require(dovecot_binary() is not None, "dovecot (apt-get install dovecot-imapd)")
    server = Dovecot()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _keep_umask():  # type: ignore[no-untyped-def]
    """The CLI narrows the process umask to 077 (its files hold mail); a test that runs it in
    process with CliRunner must not leave that to later tests, whose servers (Postfix's queue,
    PostgreSQL's data) need their usual modes."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
    """One private PostgreSQL cluster on 127.0.0.1 for the run; each test takes a fresh database
    from it (`postgres.create_database()`). Missing server binaries fail under CI."""
    from tests.helpers import require
    from tests.postgres import Postgres, pg_bin

    require(pg_bin() is not None, "PostgreSQL server (apt-get install postgresql)")
    server = Postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A running `mailhelpdesk serve` on free loopback ports, stopped after the test."""
    from tests.helpers import Daemon

    proc = Daemon(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def desk_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Builds in-process helpdesks the one way (app.build_app, tests/desk.py) and closes them
    after the test: `desk_factory({"webhooks": [...]})`, optionally `db_url=` for PostgreSQL."""
    from tests.desk import Desk, make_desk

    made: list[Desk] = []

    def make(sections: dict | None = None, **kw):  # type: ignore[no-untyped-def,type-arg]
        desk = make_desk(tmp_path, sections, **kw)
        made.append(desk)
        return desk

    try:
        yield make
    finally:
        for desk in made:
            desk.app.close()
