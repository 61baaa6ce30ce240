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
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SMTPEnvelope
from aiosmtpd.smtp import Session as SMTPSession
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import SmtpListenerConfig
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import Failed, each_in_group, session_scope

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
                if isinstance(outcome, Failed):
                    item.done.set_exception(outcome.error)
                else:
                    item.done.set_result(outcome)
            if self._on_commit is not None:
                self._on_commit(len(group))

    def _commit(self, group: list[_Pending]) -> list[int | Failed]:
        """One transaction for the group (store/db.each_in_group): a row the database refuses
        (on PostgreSQL, one bad value aborts the whole transaction unless it is inside a
        savepoint) fails only its own session with 451; the others are committed and get 250.
        When the database ends the transaction itself (SQLite on disk full or an I/O error), the
        rows before are gone too, so the whole group fails."""
        now = self._clock.now()

        def keep_one(session: Session, item: _Pending) -> int:
            row = spool.add_inbound(session, raw=item.raw, envelope=item.envelope, now=now)
            return row.id or 0

        with session_scope(self._engine) as session:
            outcomes = each_in_group(session, group, keep_one)
        for item, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Failed):
                log.error(
                    "spool row refused peer=%s error=%s", item.envelope.source_ref, outcome.error
                )
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
        *,
        max_recipients: int = 100,
        max_errors: int = 20,
    ) -> None:
        self._addresses = inbound_addresses
        self._keep = keep
        self._max_recipients = max_recipients
        self._max_errors = max_errors

    def _refuse(self, server: SMTP, reply: str) -> str:
        """A refused command; past `max_errors` of them in a session the answer is 421 and the
        connection is closed (`_SMTP.push`), as Postfix's smtpd_hard_error_limit does."""
        errors = getattr(server, "errors", 0) + 1
        server.errors = errors  # type: ignore[attr-defined]
        if errors >= self._max_errors:
            log.warning("smtp session closed after %d refused commands", errors)
            return "421 4.7.0 Error: too many errors, closing"
        return reply

    def set_addresses(self, inbound_addresses: dict[str, str]) -> None:
        """The recipients taken from the next RCPT on (a reload's queues); one assignment, so a
        session in flight sees either the old set or the new one, never half of each."""
        self._addresses = inbound_addresses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: SMTPEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # a pipelined flood of RCPT commands is read from one buffer without waiting: let the
        # rest of the daemon (the HTTP API, /healthz) run between them
        await asyncio.sleep(0)
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return self._refuse(server, "452 4.5.3 Error: too many recipients")
        address = _clean_address(address)
        base, _tag = split_plus(address)
        if base not in self._addresses:
            return self._refuse(
                server, "550 5.1.1 Recipient address rejected: not a helpdesk address"
            )
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


LARGE_MESSAGE_BYTES = 1 << 20  # past this much DATA a session needs a large-message slot
DATA_TIMER_EVERY_S = 1.0  # during DATA the idle timer is re-armed at most this often
DATA_YIELD_BYTES = 64 * 1024  # during DATA the session gives the event loop a turn this often


@dataclass
class Bounds:
    """The listener's limits under abuse and the counters they need, shared by its sessions
    (one event loop: no locks). docs/operations.md "Bounds under abuse" states them."""

    max_sessions: int = 100
    max_sessions_per_client: int = 10
    large_messages_in_flight: int = 4
    idle_timeout_s: float = 120
    session_s: float = 1800
    sessions: int = 0
    per_client: dict[str, int] = field(default_factory=dict)
    _large: asyncio.Semaphore | None = None

    @classmethod
    def of(cls, config: SmtpListenerConfig) -> Bounds:
        return cls(
            max_sessions=config.max_sessions,
            max_sessions_per_client=config.max_sessions_per_client,
            large_messages_in_flight=max(1, config.large_messages_in_flight),
            idle_timeout_s=config.idle_timeout_s,
            session_s=config.session_s,
        )

    @property
    def large(self) -> asyncio.Semaphore:
        if self._large is None:
            self._large = asyncio.Semaphore(self.large_messages_in_flight)
        return self._large

    def admit(self, client: str) -> bool:
        if self.sessions >= self.max_sessions:
            return False
        if self.per_client.get(client, 0) >= self.max_sessions_per_client:
            return False
        self.sessions += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return True

    def release(self, client: str) -> None:
        self.sessions -= 1
        left = self.per_client.get(client, 1) - 1
        if left > 0:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)


class _DataReader:
    """The session's stream reader during DATA: each line read counts as activity (the idle
    timer restarts, so a slow but steady upload is not cut off), and past LARGE_MESSAGE_BYTES
    the session waits for one of the listener's large-message slots before it reads on."""

    def __init__(self, reader: asyncio.StreamReader, session: _SMTP) -> None:
        self._reader, self._session = reader, session

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        line = await self._reader.readuntil(separator)
        if line == b".\r\n":
            # the end of the message: from here on it is our turn (keeping it, which waits for
            # the group commit), and the client's silence is no idling
            self._session.our_turn()
            return line
        await self._session.data_read(len(line))
        return line

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        await self._session.data_read(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _SMTP(SMTP):
    """aiosmtpd's session with the listener's bounds: sessions in all and per client (421 to the
    next), a large-message slot for DATA past 1 MiB, 421 before closing an idle session or one
    past `session_s`, and any 421 reply closes the connection.

    RFC 5321 caps lines at 1,000 octets, but real mail (HTML, base64 without folding) has
    longer ones; Postfix and Exim accept them, so refusing would bounce genuine customer mail."""

    line_length_limit = 1 << 20

    def __init__(self, handler: Any, bounds: Bounds, **kwargs: Any) -> None:
        super().__init__(handler, timeout=bounds.idle_timeout_s, **kwargs)
        self.bounds = bounds
        self.errors = 0
        self._client: str | None = None
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._data_bytes = 0
        self._slot = False
        self._timer_armed_at: float | None = None
        self._unyielded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._client is None and not self._refused:
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if peer else ""
            if not self.bounds.admit(client):
                self._refused = True
                log.warning("smtp session refused: too many connections client=%s", client)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 Error: too many connections, try again later\r\n")
                transport.close()
                return
            self._client = client
            self._deadline = self.loop.call_later(self.bounds.session_s, self._session_expired)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._client is not None:
            self.bounds.release(self._client)
            self._client = None
        if self._deadline is not None:
            self._deadline.cancel()
        self._release_slot()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def _close_with_421(self, reason: str) -> None:
        if self.transport is None:
            return
        log.info("smtp session closed: %s peer=%s", reason, self._client)
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write(f"421 4.4.2 {self.hostname} Error: {reason}\r\n".encode())
        self.transport.close()

    def _timeout_cb(self) -> None:
        self._close_with_421("timeout exceeded")

    def _session_expired(self) -> None:
        self._close_with_421("session too long")

    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if text.startswith("421") and self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        reader = self._reader
        self._reader = _DataReader(reader, self)  # type: ignore[assignment]
        self._data_bytes = 0
        self._timer_armed_at = None
        try:
            await super().smtp_DATA(arg)
        finally:
            self._reader = reader
            self._release_slot()
            if self.transport is not None:
                self._reset_timeout()  # the client's turn again

    def our_turn(self) -> None:
        """The idle timer stops while the server works on the client's command."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    async def data_read(self, size: int) -> None:
        """Called for every DATA line read: activity, the large-message slot, and a turn for
        the rest of the daemon every DATA_YIELD_BYTES.

        The idle timer is re-armed at most once per DATA_TIMER_EVERY_S, not per line: a new
        timer per line (260,000 for a 20 MB attachment) took about a third of the listener's
        time and filled the event loop's heap with cancelled timers, which delayed `/healthz`.
        The idle timeout is 120 s by default; a second less of precision changes nothing."""
        self._data_bytes += size
        if not self._slot and self._data_bytes > LARGE_MESSAGE_BYTES:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()  # waiting for a slot is our doing, not idling
            await self.bounds.large.acquire()
            self._slot = True
            self._timer_armed_at = None
        now = self.loop.time()
        if self._timer_armed_at is None or now - self._timer_armed_at >= DATA_TIMER_EVERY_S:
            self._timer_armed_at = now
            self._reset_timeout()
        self._unyielded += size
        if self._unyielded >= DATA_YIELD_BYTES:
            # a read from a full buffer returns without giving the loop a turn: without this,
            # one session reads up to 2 MiB of lines (the reader's buffer) in one go while
            # /healthz, the API and the other sessions wait
            self._unyielded = 0
            await asyncio.sleep(0)

    def _release_slot(self) -> None:
        if self._slot:
            self._slot = False
            self.bounds.large.release()


async def start_listener(
    config: SmtpListenerConfig, handler: SMTPHandler, *, server_hostname: str | None = None
) -> asyncio.AbstractServer:
    """Serve SMTP on the running loop (no thread): one protocol instance per connection, all
    sharing the listener's `Bounds`."""
    loop = asyncio.get_running_loop()
    bounds = Bounds.of(config)

    def factory() -> _SMTP:
        kwargs: dict[str, Any] = {
            "data_size_limit": config.max_message_bytes,
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "ident": "mailhelpdesk ESMTP",
        }
        # an explicit name: aiosmtpd's default asks DNS for the FQDN, which can stall start-up
        kwargs["hostname"] = config.hostname or server_hostname or socket.gethostname()
        return _SMTP(handler, bounds, **kwargs)

    return await loop.create_server(factory, host=config.host, port=config.port, reuse_address=True)
