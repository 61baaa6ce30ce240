"""The IMAP poller: one task per `[[imap_mailboxes]]` entry, keeping new mail in the spool.

The order of work is what makes it lose and double nothing:

1. SELECT the folder; its UIDVALIDITY is compared with the stored cursor (a change resets the
   cursor to 0: the folder is read again and the ingest dedupe drops what it already applied).
2. UID SEARCH for UIDs above the cursor (not UNSEEN: mail another client has read still counts).
3. UID FETCH BODY.PEEK[] in batches (fetching never sets \\Seen).
4. One transaction keeps the batch in the spool *and* advances the cursor (compare-and-set), and
   is committed on the daemon's DB thread.
5. Only then the batch is flagged \\Seen, or moved to `processed_folder`. Kept mail left unmarked
   by a lost connection is marked at the start of the next sync; what a crash left unmarked is
   found by the first sync of the process (every UID behind the cursor that is still unseen, or
   still in the folder) and marked then. Marking is idempotent; nothing is fetched twice.

A message the server will not hand over (a NO, or - as Dovecot does for an unreadable message
file - closing the connection) is isolated and recorded as a failed spool row with its UID and
the reason, and the cursor moves past it: it never blocks the mailbox. After a batch fetch loses
the connection, that batch is fetched one UID at a time; a UID whose fetch alone loses the
connection `MAX_STRIKES` times is set aside. Set-aside messages stay unmarked in the folder.

Several daemons on one PostgreSQL database may all be configured for a mailbox: only the holder
of its lease `imap:<name>` (store/leases.py) reads it; the others wait in "standby" and try to
take the lease every third of its length. The holder renews the lease in the transaction that
keeps each batch (a daemon that lost it keeps nothing: the batch rolls back and it stands by),
and at least every third of its length while idle (IDLE is re-armed that often). A clean stop
releases the lease; a daemon that dies keeps it until it expires, then another daemon takes the
mailbox over from the cursor in the database: what the dead daemon committed is behind the
cursor (its first sync marks what was left unmarked), what it had not committed is fetched again.
The cursor's compare-and-set stays the last guard: even two holders could not keep a UID twice.

Between syncs the poller waits in IDLE when the server offers it (re-armed every `IDLE_REARM_S`;
each round SELECTs again, which also notices a new UIDVALIDITY), or sleeps `poll_interval_s`: a
plain asyncio loop inside the task, no scheduler job. Any failure (connection refused or lost,
TLS, login, database) is logged with the reason and retried with capped exponential backoff and
jitter (1 s doubling to 60 s); the daemon never stops because of a mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import ImapMailboxConfig
from mailhelpdesk.store import cursors, leases, spool
from mailhelpdesk.store.db import session_scope
from mailhelpdesk.transports.imap_session import (
    FetchResult,
    ImapAuthError,
    ImapConnectionError,
    ImapError,
    ImapSession,
    describe,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 50
IDLE_REARM_S = 300.0  # servers may drop an IDLE after 30 minutes (RFC 2177 says re-issue within 29)
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_STRIKES = 2  # a single-UID fetch that loses the connection this often is set aside


class IMAPPoller:
    """Keeps the mail of one IMAP folder in the spool; see the module docstring for the order."""

    def __init__(
        self,
        box: ImapMailboxConfig,
        *,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        on_kept: Callable[[int], None] | None = None,
        batch_size: int = BATCH_SIZE,
        idle_rearm_s: float = IDLE_REARM_S,
        holder: str | None = None,
        lease_ttl_s: float = 30.0,
    ) -> None:
        """`holder` is this daemon's id (store/leases.daemon_id): the mailbox is read only while
        this daemon holds its lease, taken for `lease_ttl_s` and renewed every third of that."""
        self.box = box
        self._engine = engine
        self._clock = clock
        self._executor = executor
        self._on_kept = on_kept
        self._batch_size = batch_size
        self._idle_rearm_s = idle_rearm_s
        self._holder = holder or leases.daemon_id()
        self._lease_ttl_s = lease_ttl_s
        self._renew_s = max(lease_ttl_s / 3, 0.2)
        self.resource = f"imap:{box.name}"
        self._leased = False
        self._leases_taken = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = BACKOFF_FIRST_S
        # what /healthz shows
        self._state = "stopped"
        self._last_sync_at: datetime | None = None
        self._last_error: str | None = None
        self._messages_kept = 0
        self._uidvalidity: int | None = None
        self._last_uid: int | None = None
        self._idle = False
        self._connects = 0
        # in memory only, for the current UIDVALIDITY: kept but not yet flagged/moved (a lost
        # connection between commit and marking), and the isolation of a message that breaks fetch
        self._unmarked: set[int] = set()
        self._careful_until = 0
        self._strikes: dict[int, int] = {}
        self._finish_marking = True  # once per process: what a crash left unmarked

    @property
    def name(self) -> str:
        return self.box.name

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"imap:{self.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (up to `timeout`), log out, end the task, and release the
        mailbox's lease so another daemon takes it over at once."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._state = "stopped"
        if self._leased:
            try:
                await self._db(self._release)
            except Exception as exc:  # noqa: BLE001 - it expires by itself; stopping goes on
                log.warning("imap lease not released mailbox=%s error=%s", self.name, exc)
            self._leased = False

    def status(self) -> dict[str, Any]:
        return {
            "state": self._state,
            "host": self.box.host,
            "folder": self.box.folder,
            "idle": self._idle,
            "last_sync_at": self._last_sync_at.isoformat() if self._last_sync_at else None,
            "last_error": self._last_error,
            "messages_kept": self._messages_kept,
            "uidvalidity": self._uidvalidity,
            "last_uid": self._last_uid,
            "connects": self._connects,
            "lease": self.resource,
            "leased": self._leased,
            "leases_taken": self._leases_taken,
        }

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                held = await self._db(self._claim)
            except Exception as exc:  # noqa: BLE001 - the database is away: back off, retry
                await self._failed(exc, "lease failed")
                continue
            if not held:
                await self._stand_by()
                continue
            self._state = "connecting"
            try:
                session = await ImapSession.open(self.box)
            except Exception as exc:  # noqa: BLE001 - the task boundary: report, back off, retry
                await self._failed(exc, "cannot connect")
                continue
            self._connects += 1
            log.info(
                "imap connected mailbox=%s host=%s port=%s security=%s folder=%s",
                self.name,
                self.box.host,
                self.box.port,
                self.box.security,
                self.box.folder,
            )
            try:
                await self._serve(session)
            except leases.LeaseLostError:
                self._lost()
            except Exception as exc:  # noqa: BLE001 - connection, server or database trouble
                await self._failed(exc, "sync failed")
            finally:
                await session.close()
        self._state = "stopped"

    async def _stand_by(self) -> None:
        """Another daemon reads this mailbox: try for its lease again in a while."""
        if self._state != "standby":
            log.info("imap standby mailbox=%s: another daemon holds %s", self.name, self.resource)
        self._state = "standby"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._renew_s)

    def _lost(self) -> None:
        log.warning("imap lease lost mailbox=%s: another daemon took it over", self.name)
        self._leased = False
        self._state = "standby"

    async def _failed(self, exc: BaseException, what: str) -> None:
        self._state = "error"
        self._last_error = describe(exc)
        delay = min(self._backoff, BACKOFF_MAX_S) * random.uniform(0.75, 1.25)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        level = logging.ERROR if isinstance(exc, ImapAuthError) else logging.WARNING
        log.log(
            level,
            "imap %s mailbox=%s error=%s retry_in=%.1fs",
            what,
            self.name,
            self._last_error,
            delay,
            exc_info=None
            if isinstance(exc, ImapError)
            else exc,  # the unexpected ones keep their trace
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _serve(self, session: ImapSession) -> None:
        """Sync, then wait for more (IDLE or sleep), until stopped or the connection fails."""
        self._idle = self.box.idle and session.has("IDLE")
        while not self._stopping.is_set():
            self._state = "syncing"
            await self._sync(session)
            self._backoff = BACKOFF_FIRST_S
            self._last_error = None
            if self._stopping.is_set():
                break
            # back within a third of the lease: each round renews it (in _open_cursor)
            if self._idle:
                self._state = "idle"
                await session.idle(
                    timeout=min(self._idle_rearm_s, self._renew_s), stop=self._stopping
                )
            else:
                self._state = "polling"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(),
                        min(max(1, self.box.poll_interval_s), self._renew_s),
                    )

    async def _sync(self, session: ImapSession) -> None:
        folder = await session.select(self.box.folder)
        if folder.uidvalidity != self._uidvalidity:
            self._unmarked.clear()
            self._strikes.clear()
            self._careful_until = 0
        last_uid = await self._db(self._open_cursor, folder.uidvalidity)
        self._uidvalidity, self._last_uid = folder.uidvalidity, last_uid
        if self._unmarked:
            await self._mark(session, sorted(self._unmarked))
            self._unmarked.clear()
        if self._finish_marking and last_uid:
            await self._mark_kept_earlier(session, folder.uidvalidity, last_uid)
        self._finish_marking = False
        while not self._stopping.is_set():
            session.clear_new_mail()
            pending = await session.uids_after(last_uid)
            if not pending:
                break
            while pending and not self._stopping.is_set():
                size = 1 if pending[0] <= self._careful_until else self._batch_size
                batch, pending = pending[:size], pending[size:]
                last_uid = await self._take(session, folder.uidvalidity, last_uid, batch)
        self._last_sync_at = self._clock.now()

    async def _take(
        self, session: ImapSession, uidvalidity: int, last_uid: int, batch: list[int]
    ) -> int:
        """Fetch, keep and mark one batch; returns the new cursor."""
        fetched = await self._fetch(session, batch)
        to_uid = max(batch)
        kept = await self._db(self._keep, uidvalidity, last_uid, to_uid, fetched)
        self._last_uid = to_uid
        self._messages_kept += kept
        if kept and self._on_kept is not None:
            self._on_kept(kept)
        log.info("imap kept mailbox=%s count=%d last_uid=%d", self.name, kept, to_uid)
        for uid, reason in fetched.failed.items():
            log.error("imap message set aside mailbox=%s uid=%s reason=%s", self.name, uid, reason)
        if fetched.bodies:
            self._unmarked.update(fetched.bodies)
            await self._mark(session, sorted(fetched.bodies))
            self._unmarked.clear()
        return to_uid

    async def _fetch(self, session: ImapSession, batch: list[int]) -> FetchResult:
        """UID FETCH, isolating a message whose fetch makes the server drop the connection."""
        if len(batch) == 1 and self._strikes.get(batch[0], 0) >= MAX_STRIKES:
            reason = f"the server closed the connection each time this message was fetched ({MAX_STRIKES} times)"
            return FetchResult(failed={batch[0]: reason})
        try:
            fetched = await session.fetch(batch)
        except ImapConnectionError:
            if len(batch) > 1:
                self._careful_until = max(self._careful_until, *batch)
                log.warning(
                    "imap fetch lost the connection, next fetching one by one mailbox=%s uids=%s:%s",
                    self.name,
                    batch[0],
                    batch[-1],
                )
            else:
                self._strikes[batch[0]] = self._strikes.get(batch[0], 0) + 1
            raise
        for uid in batch:
            self._strikes.pop(uid, None)
        return fetched

    async def _mark(self, session: ImapSession, uids: list[int]) -> None:
        if self.box.processed_folder:
            await session.move(uids, self.box.processed_folder)
        else:
            await session.mark_seen(uids)

    async def _mark_kept_earlier(
        self, session: ImapSession, uidvalidity: int, last_uid: int
    ) -> None:
        """Mark what a crash left kept but unflagged (or unmoved), except messages set aside."""
        criteria = (
            ("UID", f"1:{last_uid}")
            if self.box.processed_folder
            else ("UID", f"1:{last_uid}", "UNSEEN")
        )
        found = [uid for uid in await session.search_uids(*criteria) if uid <= last_uid]
        if not found:
            return
        aside = await self._db(self._set_aside_uids, uidvalidity)
        pending = [uid for uid in found if uid not in aside]
        if pending:
            log.info(
                "imap marking messages kept earlier mailbox=%s count=%d", self.name, len(pending)
            )
        for start in range(0, len(pending), 500):
            await self._mark(session, pending[start : start + 500])

    # -- database work, on the daemon's DB thread ---------------------------------------------

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _claim(self) -> bool:
        """Take (or renew) the mailbox's lease; True when this daemon may read it. Taking it
        anew - at start, or over from a daemon that died - first marks what was left unmarked."""
        with session_scope(self._engine) as db:
            held = leases.take(
                db,
                self.resource,
                holder=self._holder,
                now=self._clock.now(),
                ttl_s=self._lease_ttl_s,
            )
        if held and not self._leased:
            log.info("imap lease taken mailbox=%s holder=%s", self.name, self._holder)
            self._leases_taken += 1
            self._finish_marking = True
        self._leased = held
        return held

    def _release(self) -> None:
        with session_scope(self._engine) as db:
            leases.release(db, self.resource, holder=self._holder)

    def _renew(self, db: Session) -> None:
        """Renew the lease inside the caller's transaction (LeaseLostError rolls it back)."""
        leases.hold(
            db, self.resource, holder=self._holder, now=self._clock.now(), ttl_s=self._lease_ttl_s
        )

    def _open_cursor(self, uidvalidity: int) -> int:
        with session_scope(self._engine) as db:
            self._renew(db)
            cursor, reset = cursors.open_cursor(
                db, mailbox=self.name, uidvalidity=uidvalidity, now=self._clock.now()
            )
            if reset:
                log.warning(
                    "imap UIDVALIDITY changed, reading the folder again mailbox=%s folder=%s uidvalidity=%s",
                    self.name,
                    self.box.folder,
                    uidvalidity,
                )
            return cursor.last_uid

    def _set_aside_uids(self, uidvalidity: int) -> set[int]:
        with session_scope(self._engine) as db:
            return cursors.set_aside_uids(db, mailbox=self.name, uidvalidity=uidvalidity)

    def _keep(self, uidvalidity: int, from_uid: int, to_uid: int, fetched: FetchResult) -> int:
        """Keep the batch and advance the cursor in one transaction."""
        now = self._clock.now()
        with session_scope(self._engine) as db:
            self._renew(db)  # first: a daemon that lost the mailbox keeps nothing
            for uid, raw in sorted(fetched.bodies.items()):
                spool.add_inbound(db, raw=raw, envelope=self._envelope(uidvalidity, uid), now=now)
            for uid, reason in sorted(fetched.failed.items()):
                spool.add_inbound(
                    db,
                    raw=b"",
                    envelope=self._envelope(uidvalidity, uid),
                    now=now,
                    set_aside=f"IMAP fetch failed: folder={self.box.folder} uid={uid}: {reason}",
                )
            cursors.advance_cursor(
                db,
                mailbox=self.name,
                uidvalidity=uidvalidity,
                from_uid=from_uid,
                to_uid=to_uid,
                now=now,
            )
        return len(fetched.bodies)

    def _envelope(self, uidvalidity: int, uid: int) -> spool.Envelope:
        return spool.Envelope(
            source="imap",
            mail_from=None,
            rcpt_tos=(),
            source_ref=f"{self.name}:{uidvalidity}:{uid}",
            queue_hint=self.box.queue,
        )


async def probe(box: ImapMailboxConfig, *, timeout: float = 20.0) -> dict[str, Any]:
    """Log in to one mailbox and report what `mailhelpdesk check` shows. Never raises for
    mailbox trouble: `ok` is False and `error` says why."""
    report: dict[str, Any] = {
        "ok": False,
        "mailbox": box.name,
        "host": box.host,
        "port": box.port,
        "security": box.security,
        "folder": box.folder,
        "error": None,
    }
    session: ImapSession | None = None
    try:
        session = await asyncio.wait_for(ImapSession.open(box, timeout=timeout), timeout)
        report["capabilities"] = session.capabilities
        report["idle"] = session.has("IDLE")
        report["move"] = session.has("MOVE")
        folder = await asyncio.wait_for(session.status(box.folder), timeout)
        report.update(
            messages=folder.get("messages"),
            unseen=folder.get("unseen"),
            uidvalidity=folder.get("uidvalidity"),
            uidnext=folder.get("uidnext"),
        )
        if box.processed_folder:
            await asyncio.wait_for(session.status(box.processed_folder), timeout)
            report["processed_folder"] = box.processed_folder
        report["ok"] = True
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not fail
        report["error"] = describe(exc)
    finally:
        if session is not None:
            await session.close()
    return report
