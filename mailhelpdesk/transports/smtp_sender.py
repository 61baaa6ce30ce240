"""The sender: drains due outbox rows through the SMTP relay (or into a Maildir).

One task on the daemon's loop, in the shape both outboxes' senders share (transports/drain.py):
claim a batch on the daemon's single DB executor thread, send it on the loop over one relay
connection (kept open across messages, closed when idle), record the outcomes in one transaction.
A row is marked `sent` only after the relay's 250 to DATA.

Failures are split in two (Mailman's outgoing runner):

    DeliveryError(permanent=False)  4xx, 421, connection/TLS/auth problems, timeouts
                                    → retried after retry_base_s, doubling up to retry_max_s,
                                      until the row's deadline; then `failed`
    DeliveryError(permanent=True)   5xx to MAIL FROM, RCPT TO or DATA
                                    → `failed` at once, the reply text kept in last_error

A 5xx to RCPT TO or DATA refuses the recipient, as a bounce would, only sooner: the address is
also held back from automatic mail for `suppress_s` seconds (`[outbound] suppress_bouncing_s`),
with the reason "relay refused: <reply>", so the next automatic notice to it is written
`suppressed` instead of being refused again. A 5xx to MAIL FROM refuses us, not the customer, and
suppresses nothing.

aiosmtplib's exceptions are translated into DeliveryError in one place (`_map_smtp_error`).
The envelope sender (MAIL FROM) is the row's signed return path when the composition root gives
one (`return_path`, mail/verp.py): bounces then prove which row they answer.

A row is leased while it is being sent (its next_attempt_at pushed ahead), so a crash between
the 250 and the commit means that row is sent again after the lease: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox
import ssl
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple, Protocol

import aiosmtplib
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import SmtpRelayConfig, read_password
from mailhelpdesk.mail.notice import Composed
from mailhelpdesk.store import outbox
from mailhelpdesk.store.db import read_scope, session_scope
from mailhelpdesk.transports.drain import OutboxSender

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message the relay did not take; `permanent` says whether trying again can help."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        connection: bool = False,
        refused: Sequence[str] = (),
        reply: str = "",
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection  # the connection is unusable: stop this batch
        # recipients the relay refused for good (5xx to RCPT TO or DATA), and its reply
        self.refused, self.reply = tuple(refused), reply


class Relay(Protocol):
    """The seam to the outside: deliver one message, or raise DeliveryError."""

    async def deliver(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> str: ...

    async def close(self) -> None: ...


class SMTPRelay:
    """aiosmtplib client that keeps one connection open across messages and reconnects as needed."""

    def __init__(self, config: SmtpRelayConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        password = (
            read_password(cfg.password, cfg.password_file, "smtp_relay") if cfg.username else None
        )
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username or None,
            password=password,
            timeout=cfg.timeout_s,
            use_tls=cfg.security == "ssl",
            start_tls=cfg.security == "starttls",
            tls_context=tls_context(cfg) if cfg.security != "none" else None,
        )
        await client.connect()
        return client

    async def deliver(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> str:
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            errors, reply = await self._client.sendmail(mail_from, rcpt_tos, raw)
        except Exception as exc:  # translated in one place
            await self.close()
            raise _map_smtp_error(exc, rcpt_tos) from exc
        if errors:  # some recipients refused (we send one recipient per row, so rarely seen)
            await self.close()
            code, text = next(iter(errors.values()))
            permanent = 500 <= code < 600
            refused = [r for r, (c, _t) in errors.items() if 500 <= c < 600]
            raise DeliveryError(
                f"{code} {text}",
                permanent=permanent,
                refused=refused if permanent else (),
                reply=f"{code} {text}",
            )
        return reply

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=5)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def tls_context(config: SmtpRelayConfig) -> ssl.SSLContext:
    """The relay's certificate is checked against `ca_file` (else the system's CAs) and its
    host name, unless `verify_tls = false`: the same two settings `[[imap_mailboxes]]` has."""
    context = ssl.create_default_context(cafile=config.ca_file or None)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _map_smtp_error(exc: BaseException, rcpt_tos: Sequence[str] = ()) -> DeliveryError:
    """The one table from aiosmtplib's exceptions to temporary / permanent, and to the
    recipients a permanent refusal is about (none when it is about us: MAIL FROM, the session)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients[0] if exc.recipients else None
        code = refused.code if refused else 0
        text = f"{code} {refused.message}" if refused else str(exc)
        permanent = 500 <= code < 600
        return DeliveryError(
            f"RCPT refused: {text}",
            permanent=permanent,
            connection=code == 421,
            refused=[r.recipient for r in exc.recipients if 500 <= r.code < 600]
            if permanent
            else (),
            reply=text,
        )
    if isinstance(
        exc,
        (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
        ),
    ):
        return DeliveryError(
            f"relay unreachable: {type(exc).__name__}: {exc}", permanent=False, connection=True
        )
    if isinstance(
        exc,
        (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPHeloError, aiosmtplib.SMTPNotSupported),
    ):
        # the relay or our credentials, not this message: keep trying until someone fixes it
        return DeliveryError(
            f"relay refused the session: {type(exc).__name__}: {exc}",
            permanent=False,
            connection=True,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        stage = {aiosmtplib.SMTPSenderRefused: "MAIL FROM", aiosmtplib.SMTPDataError: "DATA"}.get(
            type(exc), "SMTP"
        )
        permanent = 500 <= exc.code < 600
        return DeliveryError(
            f"{stage} refused: {exc.code} {exc.message}",
            permanent=permanent,
            connection=exc.code == 421,
            # refused at DATA: the message, for these recipients; at MAIL FROM: us, not them
            refused=rcpt_tos if permanent and stage == "DATA" else (),
            reply=f"{exc.code} {exc.message}",
        )
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return DeliveryError(
            f"relay unreachable: {type(exc).__name__}: {exc}", permanent=False, connection=True
        )
    return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False, connection=True)


class MaildirRelay:
    """No relay host configured: each message becomes a file in a Maildir (for development,
    or for another program to pick up). A write error is temporary."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, raw: bytes) -> str:
        box = mailbox.Maildir(str(self.path), factory=None, create=True)
        return str(box.add(raw))

    async def deliver(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> str:
        try:
            key = await asyncio.get_running_loop().run_in_executor(None, self._write, raw)
        except OSError as exc:
            raise DeliveryError(
                f"maildir {self.path}: {exc.strerror or exc}", permanent=False
            ) from exc
        return f"stored in maildir as {key}"

    async def close(self) -> None:
        return None


def relay_for(config: SmtpRelayConfig) -> Relay:
    return SMTPRelay(config) if config.host else MaildirRelay(config.maildir)


class _Item(NamedTuple):
    item_id: int
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes


@dataclass
class _Result:
    item_id: int
    state: str  # sent | retry | failed | release
    text: str
    refused: tuple[str, ...] = ()  # failed: recipients the relay refused for good
    reply: str = ""  # ... and what it said


class SMTPSender(OutboxSender[_Item, _Result]):
    """Drains the outbox: `start()` a task on the running loop, `wake()` it after a commit that
    queued mail, `await stop()` to end it."""

    what = "outbox"
    task_name = "smtp-sender"
    close_when_idle = True  # idle: do not hold the relay's connection open

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        relay: Relay,
        *,
        retry_base_s: float = 30,
        retry_max_s: float = 3600,
        lease_s: float = 300,
        batch_size: int = 50,
        poll_s: float = 1.0,
        on_result: Callable[[str], None] | None = None,
        composer: Callable[[list[tuple[int, str]]], Awaitable[list[Composed]]] | None = None,
        suppress_s: float = 0,
        return_path: Callable[[int, str], str] | None = None,
    ) -> None:
        super().__init__(
            engine,
            clock,
            executor,
            retry_base_s=retry_base_s,
            retry_max_s=retry_max_s,
            lease_s=lease_s,
            batch_size=batch_size,
            poll_s=poll_s,
            on_result=on_result,
        )
        self.relay = relay
        # [(row id, spec)] -> [(row id, message bytes or None, why not)]: notices written as a
        # spec, built where the daemon chooses (its understanding processes)
        self.composer = composer
        # how long an address the relay refused for good gets no automatic mail (0: not at all)
        self.suppress_s = suppress_s
        # (row id, Message-ID) -> the envelope sender: the signed return path that lets a bounce
        # prove which row it answers (mail/verp.py); None: the row's own mail_from
        self.return_path = return_path

    @classmethod
    def from_config(
        cls, config: SmtpRelayConfig, engine: Engine, clock: Clock, executor: Executor, **kw: object
    ) -> SMTPSender:
        return cls(
            engine,
            clock,
            executor,
            relay_for(config),
            retry_base_s=config.retry_base_s,
            retry_max_s=config.retry_max_s,
            lease_s=max(4 * config.timeout_s, 60),
            **kw,  # type: ignore[arg-type]
        )

    async def close(self) -> None:
        await self.relay.close()

    # -- composing -----------------------------------------------------------------------------

    async def compose_once(self) -> int:
        """Turn one batch of notices written as specs into messages; returns how many.

        The specs are read and the results written in two short transactions on the database
        thread; the rendering and MIME work between them is the composer's (the daemon's
        understanding processes), so neither the database nor its writers wait for it."""
        if self.composer is None:
            return 0
        loop = asyncio.get_running_loop()
        pending = await loop.run_in_executor(self.executor, self._to_compose)
        if not pending:
            return 0
        built = await self.composer(pending)
        await loop.run_in_executor(self.executor, self._store_composed, built)
        return len(built)

    def _to_compose(self) -> list[tuple[int, str]]:
        with read_scope(self.engine) as session:
            return outbox.to_compose(session, limit=self.batch_size)

    def _store_composed(self, built: list[tuple[int, bytes | None, str]]) -> None:
        with session_scope(self.engine) as session:
            outbox.store_composed(session, built)
        for item_id, raw, error in built:
            if raw is None:
                log.warning("outbox notice failed id=%s error=%s", item_id, error)

    # -- one batch -----------------------------------------------------------------------------

    async def drain_once(self) -> int:
        """Compose what waits to be composed, then send one batch of due rows; returns how many
        rows were composed or claimed."""
        composed = await self.compose_once()
        return composed + await super().drain_once()

    def _claim_in(self, session: Session, *, now: datetime) -> list[_Item]:
        rows = outbox.claim_due(session, now=now, limit=self.batch_size, lease_s=self.lease_s)
        return [
            _Item(
                r.id or 0,
                self.return_path(r.id or 0, r.message_id) if self.return_path else r.mail_from,
                r.rcpt_tos.split(),
                r.raw,
            )
            for r in rows
        ]

    async def _attempt(self, items: list[_Item]) -> list[_Result]:
        """One message after another over the one relay connection; once the relay is gone,
        the rest of the batch is given back untried."""
        results: list[_Result] = []
        broken: DeliveryError | None = None
        for item_id, mail_from, rcpt_tos, raw in items:
            if broken is not None:  # the relay is down: leave the rest for the next try
                results.append(_Result(item_id, "release", str(broken)))
                continue
            if not raw:
                results.append(_Result(item_id, "failed", "nothing to send (empty message)"))
                continue
            try:
                reply = await self.relay.deliver(mail_from, rcpt_tos, raw)
            except DeliveryError as exc:
                state = "failed" if exc.permanent else "retry"
                results.append(_Result(item_id, state, str(exc), exc.refused, exc.reply))
                if exc.connection and not exc.permanent:
                    broken = exc
                continue
            results.append(_Result(item_id, "sent", reply))
        return results

    def _record_in(self, session: Session, results: list[_Result], *, now: datetime) -> list[str]:
        retry_at: datetime | None = None
        sent = [(res.item_id, res.text) for res in results if res.state == "sent"]
        outbox.mark_sent_many(session, sent, now=now)
        for res in results:
            if res.state == "sent":
                log.info("outbox sent id=%s", res.item_id)
            elif res.state == "failed":
                outbox.mark_failed(session, res.item_id, now=now, error=res.text)
                log.warning("outbox failed id=%s error=%s", res.item_id, res.text)
                self._suppress_refused(session, res, now=now)
            elif res.state == "retry":
                state = outbox.schedule_retry(
                    session,
                    res.item_id,
                    now=now,
                    error=res.text,
                    base_s=self.retry_base_s,
                    max_s=self.retry_max_s,
                )
                retry_at = outbox.next_attempt_of(session, res.item_id) or retry_at
                log.warning(
                    "outbox temporary failure id=%s state=%s error=%s",
                    res.item_id,
                    state,
                    res.text,
                )
            else:  # untried after the relay went away: due with the row that found it gone
                outbox.release(session, res.item_id, at=retry_at or now)
        return [res.state for res in results]

    def _suppress_refused(self, session: Session, res: _Result, *, now: datetime) -> None:
        """A recipient the relay refused for good is treated like one whose mail bounced: no
        automatic mail to it for a while, so a dead address does not get (and refuse) a notice
        for every change on its tickets."""
        if self.suppress_s <= 0:
            return
        for address in res.refused:
            outbox.suppress(
                session,
                email=address,
                reason=f"relay refused: {res.reply}",
                until=now + timedelta(seconds=self.suppress_s),
            )
            log.info(
                "address suppressed after relay refusal rcpt=%s for_s=%d", address, self.suppress_s
            )
