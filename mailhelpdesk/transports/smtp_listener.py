"""The inbound SMTP listener: envelope checks, keep the raw bytes, then 250. Nothing else.

Durability comes first: `handle_DATA` answers 250 only after the message is committed. To make
that cheap, messages of concurrent sessions are committed together (group commit): each session
hands its message to the `SpoolWriter` and waits; the writer commits whatever has gathered in one
transaction and one fsync, then wakes them all. Any failure there answers 451, so the sending MTA
keeps the message and retries: nothing is lost.

The same holds for a failure of our own anywhere in the session (a bug in a recipient check, a
config lookup that raises): aiosmtpd hands an exception from any hook to the handler's
`handle_exception` and sends back what it returns, which here is a logged 451. Without it
aiosmtpd answers `500 Error: (...)`, a permanent refusal, and the customer's mail bounces for a
fault that is ours and may be gone in a minute. The session stays open after the 451.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SMTPEnvelope
from aiosmtpd.smtp import Session as SMTPSession
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import SmtpListenerConfig
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import in_transaction, session_scope

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    raw: bytes
    envelope: spool.Envelope
    done: asyncio.Future[int]


class SpoolWriter:
    """Commits raw messages to the spool in groups, from one executor thread."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        *,
        window_s: float = 0.002,
        max_group: int = 256,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._executor = executor
        self._window_s = window_s
        self._max_group = max_group
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spool-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():  # anyone still waiting is told to retry (451)
            item = self._queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(ConnectionAbortedError("shutting down"))

    async def keep(self, raw: bytes, envelope: spool.Envelope) -> int:
        """Return the spool id once the message is committed; raise if it could not be."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(raw, envelope, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            if self._window_s:
                await asyncio.sleep(self._window_s)
            while not self._queue.empty() and len(group) < self._max_group:
                group.append(self._queue.get_nowait())
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, group)
            except Exception as exc:  # noqa: BLE001 - every waiter gets the error and answers 451
                log.error("spool commit failed messages=%d error=%s", len(group), exc)
                for item in group:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            for item, outcome in zip(group, outcomes, strict=True):
                if item.done.done():
                    continue
                if isinstance(outcome, Exception):
                    item.done.set_exception(outcome)
                else:
                    item.done.set_result(outcome)
            if self._on_commit is not None:
                self._on_commit(len(group))

    def _commit(self, group: list[_Pending]) -> list[int | Exception]:
        """One transaction for the group, each message in its own savepoint: a row the database
        refuses (on PostgreSQL, one bad value aborts the whole transaction unless it is inside a
        savepoint) fails only its own session with 451; the others are committed and get 250.
        When the database ends the transaction itself (SQLite on disk full or an I/O error), the
        rows before are gone too, so the whole group fails."""
        now = self._clock.now()
        outcomes: list[int | Exception] = []
        with session_scope(self._engine) as session:
            for item in group:
                try:
                    with session.begin_nested():
                        row = spool.add_inbound(
                            session, raw=item.raw, envelope=item.envelope, now=now
                        )
                    outcomes.append(row.id or 0)
                except Exception as exc:
                    if not in_transaction(session):
                        raise
                    log.error("spool row refused peer=%s error=%s", item.envelope.source_ref, exc)
                    outcomes.append(exc)
        return outcomes


def _clean_address(address: str) -> str:
    """aiosmtpd hands over raw 8-bit envelope addresses as surrogate escapes: decode them as UTF-8
    (SMTPUTF8), replacing what is not, so the address can be stored and compared. NUL is
    dropped: no address holds one, and PostgreSQL text cannot store it."""
    return address.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")


TEMPORARY_FAILURE = "451 4.3.0 Temporary local problem, please retry"


class SMTPHandler:
    """aiosmtpd hooks: which recipients we take, and keeping the message before 250. Any hook
    that fails answers 451 (`handle_exception`, and `handle_DATA` itself)."""

    def __init__(
        self,
        inbound_addresses: dict[str, str],
        keep: Callable[[bytes, spool.Envelope], Awaitable[int]],
    ) -> None:
        self._addresses = inbound_addresses
        self._keep = keep

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: SMTPEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        address = _clean_address(address)
        base, _tag = split_plus(address)
        if base not in self._addresses:
            return "550 5.1.1 Recipient address rejected: not a helpdesk address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd calls this with what any hook (or its own command handling) raised and sends
        back the string it returns: a temporary failure, so the sending MTA retries later."""
        log.error(
            "smtp session error, answering 451 error=%s: %s",
            type(error).__name__,
            error,
            exc_info=error,
        )
        return TEMPORARY_FAILURE

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: SMTPEnvelope) -> str:
        # failures answer here rather than through handle_exception: aiosmtpd resets the
        # envelope only when this hook returns, so the client can send its next message at once
        try:
            return await self._keep_data(session, envelope)
        except Exception as exc:  # noqa: BLE001 - the sender's MTA keeps the mail and retries
            return await self.handle_exception(exc)

    async def _keep_data(self, session: SMTPSession, envelope: SMTPEnvelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):  # only with decode_data=True, which we never set
            raw = raw.encode("utf-8", "surrogateescape")
        queue = ""
        for rcpt in envelope.rcpt_tos:
            queue = self._addresses.get(split_plus(rcpt)[0], "")
            if queue:
                break
        kept = spool.Envelope(
            source="smtp",
            mail_from=_clean_address(envelope.mail_from)
            if envelope.mail_from not in (None, "<>")
            else "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            source_ref=f"{session.peer[0] if session.peer else ''}",
            queue_hint=queue,
        )
        try:
            inbound_id = await self._keep(bytes(raw or b""), kept)
        except Exception as exc:  # noqa: BLE001 - the sender's MTA keeps the mail and retries
            log.error("message not kept, answering 451 peer=%s error=%s", kept.source_ref, exc)
            return "451 4.3.0 Temporary failure storing the message, please retry"
        log.info(
            "message kept inbound_id=%s size=%d peer=%s",
            inbound_id,
            len(raw or b""),
            kept.source_ref,
        )
        return f"250 2.0.0 OK kept as {inbound_id}"


class _SMTP(SMTP):
    """RFC 5321 caps lines at 1,000 octets, but real mail (HTML, base64 without folding) has
    longer ones; Postfix and Exim accept them, so refusing would bounce genuine customer mail."""

    line_length_limit = 1 << 20


async def start_listener(
    config: SmtpListenerConfig, handler: SMTPHandler, *, server_hostname: str | None = None
) -> asyncio.AbstractServer:
    """Serve SMTP on the running loop (no thread): one protocol instance per connection."""
    loop = asyncio.get_running_loop()

    def factory() -> _SMTP:
        kwargs: dict[str, Any] = {
            "data_size_limit": config.max_message_bytes,
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "ident": "mailhelpdesk ESMTP",
        }
        # an explicit name: aiosmtpd's default asks DNS for the FQDN, which can stall start-up
        kwargs["hostname"] = config.hostname or server_hostname or socket.gethostname()
        return _SMTP(handler, **kwargs)

    return await loop.create_server(factory, host=config.host, port=config.port, reuse_address=True)
