"""The SMTP listener over real sockets with smtplib (and swaks when installed)."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import sqlite3
import subprocess
from pathlib import Path

import pytest

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.config import SmtpListenerConfig
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import make_engine
from mailhelpdesk.transports.smtp_listener import SMTPHandler, SpoolWriter, start_listener
from tests.helpers import Daemon, crlf, make_mail, require


def _kept_rows(daemon: Daemon) -> list[tuple[int, str]]:
    with sqlite3.connect(daemon.tmp / "helpdesk.db") as conn:
        return conn.execute("SELECT id, envelope_to FROM inbound_messages ORDER BY id").fetchall()


def test_unknown_recipient_gets_550_5_1_1(daemon: Daemon) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as smtp:
        smtp.ehlo()
        smtp.mail("priya@customer.test")
        code, text = smtp.rcpt("someone@elsewhere.test")
    assert code == 550 and text.startswith(b"5.1.1")


def test_queue_helpdesk_and_plus_addresses_are_accepted(daemon: Daemon) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as smtp:
        smtp.ehlo()
        smtp.mail("priya@customer.test")
        assert smtp.rcpt("support@helpdesk.test")[0] == 250
        assert smtp.rcpt("Billing@Helpdesk.test")[0] == 250
        assert smtp.rcpt("support+t100001-abcdefabcdefabcd@helpdesk.test")[0] == 250


def test_250_only_after_the_raw_bytes_are_committed(daemon: Daemon) -> None:
    raw = make_mail(subject="durable")
    daemon.send(raw)
    # the 250 has arrived: the row must already be in the database file, bytes unchanged
    with sqlite3.connect(daemon.tmp / "helpdesk.db") as conn:
        (stored,) = conn.execute("SELECT raw FROM inbound_messages").fetchone()
    assert stored == crlf(raw)


def test_oversize_message_gets_552(daemon: Daemon) -> None:
    """Without a SIZE declaration the limit is enforced on the data itself."""
    big = make_mail(body="x" * 76 + "\n") + (b"y" * 76 + b"\r\n") * 30000  # ~2.3 MB > 2 MB limit
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as smtp:
        smtp.ehlo()
        assert smtp.mail("priya@customer.test")[0] == 250  # no SIZE= parameter
        assert smtp.rcpt("support@helpdesk.test")[0] == 250
        code, _text = smtp.data(big)
    assert code == 552
    assert _kept_rows(daemon) == []


def test_size_declared_in_mail_from_is_refused_early(daemon: Daemon) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("size")
        code, _ = smtp.mail("priya@customer.test", ["SIZE=99999999"])
    assert code == 552


def test_smtputf8_and_8bitmime_are_offered_and_work(daemon: Daemon) -> None:
    raw = "From: José <josé@exämple.test>\r\nTo: support@helpdesk.test\r\nSubject: Grüße aus Köln\r\nMessage-ID: <utf8@exämple.test>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHällo wörld\r\n".encode()
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8") and smtp.has_extn("8bitmime")
        smtp.sendmail(
            "josé@exämple.test",
            ["support@helpdesk.test"],
            raw,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    daemon.wait_idle()
    (ticket,) = daemon.tickets()
    assert ticket["subject"] == "Grüße aus Köln"
    assert ticket["originator_email"] == "josé@exämple.test"


def test_mail_becomes_ticket_within_a_second(daemon: Daemon) -> None:
    import time

    started = time.monotonic()
    daemon.send(make_mail(subject="fast please"))
    daemon.wait_idle(timeout=5)
    assert time.monotonic() - started < 1.0
    assert [t["subject"] for t in daemon.tickets()] == ["fast please"]


def test_swaks_delivers_a_message(daemon: Daemon) -> None:
    """A second real SMTP client, with its own dialogue (PIPELINING, its own headers)."""
    require(shutil.which("swaks") is not None, "swaks (apt-get install swaks)")
    result = subprocess.run(  # noqa: PLW1510 - the exit code is asserted below
        [
            "swaks",
            "--server",
            f"127.0.0.1:{daemon.smtp_port}",
            "--from",
            "priya@customer.test",
            "--to",
            "support@helpdesk.test",
            "--header",
            "Subject: sent by swaks",
            "--body",
            "hello from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK kept as" in result.stdout
    daemon.wait_idle()
    assert [t["subject"] for t in daemon.tickets()] == ["sent by swaks"]


async def _send_async(port: int, raw: bytes) -> smtplib.SMTPDataError:
    def send() -> smtplib.SMTPDataError:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            try:
                smtp.sendmail("priya@customer.test", ["support@helpdesk.test"], raw)
            except smtplib.SMTPDataError as exc:
                return exc
        raise AssertionError("expected the message to be refused")

    return await asyncio.to_thread(send)


async def test_internal_error_answers_451(tmp_path: Path) -> None:
    """A store that cannot commit (table missing) makes the listener say 451: the sender retries."""
    from concurrent.futures import ThreadPoolExecutor

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: every insert fails
    executor = ThreadPoolExecutor(max_workers=1)
    writer = SpoolWriter(engine, SystemClock(), executor)
    writer.start()
    handler = SMTPHandler({"support@helpdesk.test": "Inbox"}, writer.keep)
    server = await start_listener(SmtpListenerConfig(port=0), handler)
    port = server.sockets[0].getsockname()[1]
    try:
        err = await _send_async(port, crlf(make_mail()))
    finally:
        server.close()
        await writer.stop()
        executor.shutdown()
    assert err.smtp_code == 451


async def test_concurrent_sessions_share_one_commit(tmp_path: Path) -> None:
    """Group commit: messages of concurrent sessions are kept together, each still acknowledged."""
    from concurrent.futures import ThreadPoolExecutor

    from mailhelpdesk.store import schema

    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    schema.upgrade(engine)
    executor = ThreadPoolExecutor(max_workers=1)
    commits: list[int] = []
    writer = SpoolWriter(engine, SystemClock(), executor, window_s=0.05, on_commit=commits.append)
    writer.start()
    envelope = spool.Envelope(source="smtp")
    ids = await asyncio.gather(
        *(writer.keep(crlf(make_mail(subject=f"m{i}")), envelope) for i in range(20))
    )
    await writer.stop()
    executor.shutdown()
    assert sorted(ids) == list(range(1, 21))
    assert sum(commits) == 20 and len(commits) < 20


class _Flaky(dict[str, str]):
    """The inbound address table, broken for the first `failures` lookups (a bug of ours)."""

    def __init__(self, table: dict[str, str], *, failures: int) -> None:
        super().__init__(table)
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("address table unavailable")

    def __contains__(self, key: object) -> bool:
        self._maybe_fail()
        return super().__contains__(key)

    def get(self, key: str, default: str = "") -> str:  # type: ignore[override]
        self._maybe_fail()
        return super().get(key, default)


async def _listen(table: dict[str, str]) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A real listener on 127.0.0.1 whose `keep` only records the message."""
    kept: list[bytes] = []

    async def keep(raw: bytes, envelope: spool.Envelope) -> int:
        kept.append(raw)
        return len(kept)

    server = await start_listener(SmtpListenerConfig(port=0), SMTPHandler(table, keep))
    return server, server.sockets[0].getsockname()[1], kept


async def test_an_error_in_the_rcpt_hook_answers_451_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiosmtpd's default for a raising hook is a permanent 500; ours is a logged 451, after
    which the same session can retry the recipient and deliver."""
    server, port, kept = await _listen(_Flaky({"support@helpdesk.test": "Inbox"}, failures=1))

    def dialogue() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.ehlo()
            replies = [smtp.mail("priya@customer.test")]
            replies.append(smtp.rcpt("support@helpdesk.test"))  # the lookup raises
            replies.append(smtp.rcpt("support@helpdesk.test"))  # and works again
            replies.append(smtp.data(crlf(make_mail(subject="after 451"))))
            replies.append(smtp.quit())
            return replies

    try:
        with caplog.at_level("ERROR", logger="mailhelpdesk.transports.smtp_listener"):
            replies = await asyncio.to_thread(dialogue)
    finally:
        server.close()
        await server.wait_closed()
    assert [code for code, _text in replies] == [250, 451, 250, 250, 221]
    assert replies[1][1].startswith(b"4.3.0")
    assert len(kept) == 1 and b"after 451" in kept[0]
    assert "address table unavailable" in caplog.text and "451" in caplog.text


async def test_an_error_in_the_data_hook_answers_451_and_the_next_message_is_kept() -> None:
    """A failure in handle_DATA before the spool (here the queue lookup) is a 451 too, and the
    envelope is reset so the same connection sends its next message normally."""
    table = _Flaky({"support@helpdesk.test": "Inbox"}, failures=0)
    server, port, kept = await _listen(table)

    def dialogue() -> tuple[int, bytes, dict[str, tuple[int, bytes]]]:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.ehlo()
            assert smtp.mail("priya@customer.test")[0] == 250
            assert smtp.rcpt("support@helpdesk.test")[0] == 250
            table.failures = 1  # the lookup in handle_DATA raises
            code, text = smtp.data(crlf(make_mail(subject="refused")))
            refused = smtp.sendmail(
                "priya@customer.test",
                ["support@helpdesk.test"],
                crlf(make_mail(subject="second")),
            )
            return code, text, refused

    try:
        code, text, refused = await asyncio.to_thread(dialogue)
    finally:
        server.close()
        await server.wait_closed()
    assert code == 451 and text.startswith(b"4.3.0")
    assert refused == {} and len(kept) == 1 and b"second" in kept[0]
