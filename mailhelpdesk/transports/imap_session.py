"""One IMAP connection, as the poller needs it, on top of aioimaplib.

aioimaplib speaks the protocol; this module adds what it leaves to the caller:
- STARTTLS (aioimaplib has no helper: the command, then `loop.start_tls` on the same protocol),
- connection loss noticed at once (a pending command otherwise waits for its timeout, and IDLE
  has none): every command races the protocol's `lost` event,
- "the server reported new mail" (`* n EXISTS`) recorded whenever it comes, so mail that
  arrives between a search and IDLE is never missed,
- a failed XOAUTH2 answered (the server's error challenge would otherwise stall to the timeout),
- long bursts of response lines fed in slices (aioimaplib recurses once per line),
- response parsing for SELECT, UID SEARCH and UID FETCH, and MOVE with its COPY fallback.

Errors are translated at this boundary into the small tree below, so the poller handles three
kinds of trouble and never an aioimaplib type:

    ImapError
     ├── ImapAuthError        login refused, or no usable credentials / token
     └── ImapConnectionError  connection refused, TLS failure, connection lost, timeout
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib
from aioimaplib import aioimaplib as imap

from mailhelpdesk.config import ConfigError, ImapMailboxConfig, read_password

T = TypeVar("T")
COMMAND_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 20.0
_LINES_PER_FEED = 200
TOKEN_COMMAND_TIMEOUT_S = 30.0

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_EXISTS = re.compile(rb"^(?:\* )?(\d+) EXISTS")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_START = re.compile(rb"^(?:\* )?\d+ FETCH \(")


class ImapError(Exception):
    """The mailbox cannot be used right now; the message says why."""


class ImapAuthError(ImapError):
    pass


class ImapConnectionError(ImapError):
    pass


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    exists: int
    uidnext: int | None


@dataclass
class FetchResult:
    """UID -> whole message for what came back; UID -> reason for what the server refused."""

    bodies: dict[int, bytes] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


class _Protocol(imap.IMAP4ClientProtocol):  # type: ignore[misc]  # aioimaplib is untyped
    """aioimaplib's protocol, plus: a `lost` event, a `new_mail` event set by every EXISTS,
    and a failed AUTHENTICATE answered (aioimaplib would wait for its timeout)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.lost = asyncio.Event()
        self.new_mail = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        """aioimaplib parses a chunk one line per recursion level, so a burst of short lines
        (`* n EXPUNGE` after a big MOVE) overflows the stack and kills the connection: feed it
        at most _LINES_PER_FEED lines at a time."""
        start = 0
        while True:
            end = start
            for _ in range(_LINES_PER_FEED):
                found = data.find(b"\r\n", end)
                if found < 0:
                    break
                end = found + 2
            else:
                if end < len(data):
                    super().data_received(data[start:end])
                    start = end
                    continue
            super().data_received(data[start:] if start else data)
            return

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        super().connection_lost(exc)

    def _untagged_response(self, line: bytes) -> Any:
        if _EXISTS.match(line):
            self.new_mail.set()
        return super()._untagged_response(line)

    def _continuation(self, line: bytes) -> None:
        pending = self.pending_sync_command
        if pending is not None and pending.name == "AUTHENTICATE" and self.transport is not None:
            self.transport.write(b"\r\n")  # SASL error challenge (XOAUTH2): answer empty, get NO
            return
        super()._continuation(line)


class _Client(imap.IMAP4):  # type: ignore[misc]
    def create_client(
        self,
        host: str,
        port: int,
        loop: Any,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


def tls_context(box: ImapMailboxConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=box.ca_file or None)
    if not box.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def uid_set(uids: Iterable[int]) -> str:
    """Sorted UIDs as a compact IMAP sequence set: 1:3,7,9:10."""
    parts: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def quote_mailbox(name: str) -> str:
    return str(imap.quoted(name))


def describe(exc: BaseException) -> str:
    """A short, log-safe reason for an exception."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ImapError) else f"{type(exc).__name__}: {text}"


async def _access_token(box: ImapMailboxConfig) -> str:
    """Run `oauth2_token_command` (through the shell) and take its last output line as the token."""
    if not box.oauth2_token_command:
        raise ImapAuthError("auth = xoauth2 needs oauth2_token_command")
    proc = await asyncio.create_subprocess_shell(
        box.oauth2_token_command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TOKEN_COMMAND_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImapAuthError("oauth2_token_command timed out") from None
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        hint = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ImapAuthError(
            f"oauth2_token_command failed (exit {proc.returncode}): {hint[0][:200]}"
        )
    return lines[-1].strip()


class ImapSession:
    """A logged-in IMAP connection to one configured mailbox."""

    def __init__(self, box: ImapMailboxConfig, client: _Client) -> None:
        self.box = box
        self._client = client
        self._protocol: _Protocol = client.protocol

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, box: ImapMailboxConfig, *, timeout: float = COMMAND_TIMEOUT_S
    ) -> ImapSession:
        """Connect (ssl / starttls / none), log in (password or XOAUTH2), read capabilities."""
        context = tls_context(box) if box.security in ("ssl", "starttls") else None
        session = cls(
            box,
            _Client(
                box.host,
                box.port,
                timeout=timeout,
                ssl_context=context if box.security == "ssl" else None,
            ),
        )
        try:
            try:
                # a connection reset before the greeting would otherwise wait for the whole timeout
                await session._call(
                    session._client.wait_hello_from_server(), timeout=CONNECT_TIMEOUT_S
                )
                if context is not None and box.security == "starttls":
                    await session._starttls(context)
            except ImapConnectionError as exc:
                raise ImapConnectionError(
                    f"cannot connect to {box.host}:{box.port} ({box.security}): {exc}"
                ) from exc
            await session._login()
            await session._call(session._protocol.capability())
        except BaseException:
            await session.close()
            raise
        return session

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self._protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapConnectionError("server does not offer STARTTLS")
        response = await self._call(
            protocol.execute(imap.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop))
        )
        if response.result != "OK":
            raise ImapConnectionError(f"STARTTLS refused: {_text(response)}")
        upgrade = asyncio.get_running_loop().start_tls(
            protocol.transport, protocol, context, server_hostname=self.box.host
        )
        protocol.transport = await self._call(upgrade, timeout=CONNECT_TIMEOUT_S)
        await self._call(protocol.capability())  # capabilities may change once encrypted

    async def _login(self) -> None:
        box = self.box
        if box.auth == "xoauth2":
            token = await _access_token(box)
            response = await self._call(self._client.xoauth2(box.username, token))
        else:
            try:
                password = read_password(
                    box.password, box.password_file, f"imap_mailboxes.{box.name}"
                )
            except ConfigError as exc:
                raise ImapAuthError(str(exc)) from None
            response = await self._call(self._client.login(box.username, password))
        if response.result != "OK":
            raise ImapAuthError(f"login refused for {box.username}: {_text(response)}")

    async def close(self) -> None:
        """LOGOUT when the connection is still there; never raises."""
        with contextlib.suppress(Exception):
            if not self._protocol.lost.is_set() and self._protocol.state in (
                "AUTH",
                "SELECTED",
                "NONAUTH",
            ):
                await asyncio.wait_for(self._call(self._client.logout()), 5)
        with contextlib.suppress(Exception):
            if self._protocol.transport is not None:
                self._protocol.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client._client_task, 1)
        for task in list(self._client.tasks) + list(self._protocol.tasks):
            task.cancel()

    # -- commands --------------------------------------------------------------------------

    async def _call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await an aioimaplib call, or fail at once when the connection goes away."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self._protocol.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                raise ImapConnectionError(describe(exc)) from exc
        task.cancel()
        if self._protocol.lost.is_set():
            raise ImapConnectionError("connection lost")
        raise ImapConnectionError("timed out")

    def has(self, capability: str) -> bool:
        return capability in self._protocol.capabilities

    @property
    def capabilities(self) -> list[str]:
        return sorted(self._protocol.capabilities)

    async def select(self, folder: str) -> FolderState:
        response = await self._call(self._client.select(quote_mailbox(folder)))
        if response.result != "OK":
            raise ImapError(f"cannot select folder {folder!r}: {_text(response)}")
        return _folder_state(response.lines)

    async def status(self, folder: str) -> dict[str, int]:
        response = await self._call(
            self._client.status(quote_mailbox(folder), "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        )
        if response.result != "OK":
            raise ImapError(f"cannot read folder {folder!r}: {_text(response)}")
        found: dict[str, int] = {}
        for line in response.lines[:-1]:  # '"INBOX" (MESSAGES 4 UIDNEXT 5 ...)'
            if isinstance(line, bytes) and b"(" in line:
                for key, value in re.findall(rb"([A-Z]+) (\d+)", line[line.rindex(b"(") :]):
                    found[key.decode().lower()] = int(value)
        return found

    def clear_new_mail(self) -> None:
        self._protocol.new_mail.clear()

    @property
    def new_mail(self) -> bool:
        return self._protocol.new_mail.is_set()

    async def search_uids(self, *criteria: str) -> list[int]:
        response = await self._call(self._client.uid_search(*criteria, charset=None))
        if response.result != "OK":
            raise ImapError(f"UID SEARCH failed: {_text(response)}")
        uids: list[int] = []
        for line in response.lines[:-1]:  # aioimaplib keeps "* SEARCH 1 2 3" as b"1 2 3"
            words = line.split() if isinstance(line, bytes) else []
            if words and words[0] == b"SEARCH":
                words = words[1:]
            if all(word.isdigit() for word in words):
                uids.extend(int(word) for word in words)
        return sorted(set(uids))

    async def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above `last_uid`. `UID n:*` always matches the highest UID, even below n: filter."""
        return [uid for uid in await self.search_uids("UID", f"{last_uid + 1}:*") if uid > last_uid]

    async def fetch(self, uids: list[int]) -> FetchResult:
        """Whole messages with BODY.PEEK[] (never sets \\Seen). When the server refuses the batch,
        each UID is fetched alone, so one bad message fails only itself. A UID that comes back
        from neither was expunged meanwhile by someone else: it is simply absent."""
        result = FetchResult()
        response = await self._call(self._client.uid("fetch", uid_set(uids), "(UID BODY.PEEK[])"))
        result.bodies.update(_fetched_bodies(response.lines))
        if response.result == "OK" or len(uids) == 1:
            if response.result != "OK":
                result.failed[uids[0]] = _text(response) or response.result
            return result
        for uid in uids:
            if uid in result.bodies:
                continue
            single = await self._call(self._client.uid("fetch", str(uid), "(UID BODY.PEEK[])"))
            bodies = _fetched_bodies(single.lines)
            if uid in bodies:
                result.bodies[uid] = bodies[uid]
            elif single.result != "OK":
                result.failed[uid] = _text(single) or single.result
        return result

    async def mark_seen(self, uids: list[int]) -> None:
        response = await self._call(
            self._client.uid("store", uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")
        )
        if response.result != "OK":
            raise ImapError(f"UID STORE \\Seen failed: {_text(response)}")

    async def move(self, uids: list[int], folder: str) -> None:
        """UID MOVE, or COPY + \\Deleted + UID EXPUNGE where the server has no MOVE."""
        target = quote_mailbox(folder)
        if self.has("MOVE"):
            response = await self._call(self._client.uid("move", uid_set(uids), target))
            if response.result != "OK":
                raise ImapError(f"UID MOVE to {folder!r} failed: {_text(response)}")
            return
        response = await self._call(self._client.uid("copy", uid_set(uids), target))
        if response.result != "OK":
            raise ImapError(f"UID COPY to {folder!r} failed: {_text(response)}")
        response = await self._call(
            self._client.uid("store", uid_set(uids), "+FLAGS.SILENT", r"(\Deleted \Seen)")
        )
        if response.result != "OK":
            raise ImapError(f"UID STORE \\Deleted failed: {_text(response)}")
        if self.has("UIDPLUS"):
            response = await self._call(self._client.uid("expunge", uid_set(uids)))
        else:  # plain EXPUNGE also removes other \Deleted messages of the folder: the best there is
            response = await self._call(self._client.expunge())
        if response.result != "OK":
            raise ImapError(f"EXPUNGE failed: {_text(response)}")

    async def idle(self, *, timeout: float, stop: asyncio.Event) -> bool:
        """IDLE until new mail, `stop`, or `timeout` (re-arm well before the server's 30 minutes).
        True when the server reported new mail."""
        if self.new_mail:
            return True
        idle_task = await self._call(self._client.idle_start(timeout=timeout + 60))
        waiters = {
            asyncio.ensure_future(self._protocol.new_mail.wait()),
            asyncio.ensure_future(self._protocol.lost.wait()),
            asyncio.ensure_future(stop.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._protocol.lost.is_set():
            raise ImapConnectionError("connection lost during IDLE")
        if self._client.has_pending_idle():
            self._client.idle_done()
        await self._call(idle_task, timeout=COMMAND_TIMEOUT_S)
        while not self._protocol.idle_queue.empty():  # what IDLE buffered: we only needed the event
            self._protocol.idle_queue.get_nowait()
        return self.new_mail


def _text(response: Any) -> str:
    parts = [line.decode(errors="replace") for line in response.lines if isinstance(line, bytes)]
    return " ".join(p for p in parts if p).strip()[:300]


def _folder_state(lines: list[Any]) -> FolderState:
    uidvalidity, exists, uidnext = None, 0, None
    for line in lines:
        if not isinstance(line, bytes):
            continue
        if (match := _UIDVALIDITY.search(line)) is not None:
            uidvalidity = int(match.group(1))
        elif (match := _UIDNEXT.search(line)) is not None:
            uidnext = int(match.group(1))
        elif (match := _EXISTS.match(line)) is not None:
            exists = int(match.group(1))
    if uidvalidity is None:
        raise ImapError("server sent no UIDVALIDITY on SELECT")
    return FolderState(uidvalidity=uidvalidity, exists=exists, uidnext=uidnext)


def _fetched_bodies(lines: list[Any]) -> dict[int, bytes]:
    """Pair each `n FETCH (... BODY[] {size}` line with the literal after it. The UID is before
    the literal (as Dovecot sends it) or in the line closing the item."""
    bodies: dict[int, bytes] = {}
    for i, line in enumerate(lines):
        if not isinstance(line, bytes) or not _FETCH_START.match(line) or b"BODY[]" not in line:
            continue
        literal = (
            lines[i + 1] if i + 1 < len(lines) and isinstance(lines[i + 1], bytearray) else None
        )
        match = _FETCH_UID.search(line)
        if match is None and i + 2 < len(lines) and isinstance(lines[i + 2], bytes):
            match = _FETCH_UID.search(lines[i + 2])
        if match is None:
            continue
        if literal is not None:
            bodies[int(match.group(1))] = bytes(literal)
        elif b"BODY[] NIL" in line or b'BODY[] ""' in line:
            bodies[int(match.group(1))] = b""
    return bodies
