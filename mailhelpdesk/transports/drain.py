"""What both outboxes' senders share: the drain loop and the skeleton of a sender.

A sender (transports/smtp_sender.py for mail, transports/http_sender.py for HTTP POSTs) is one
task on the daemon's loop that repeats one shape:

    claim    a batch of due rows, on the daemon's single DB executor thread, in a transaction of
             its own (store/deliveries.py leases each row, so no other sender gets it)
    attempt  each claimed row over the network, on the loop, outside any transaction
    record   the outcomes, on the DB executor again, in one transaction; then report each
             outcome to the `on_result` metrics callback, only once that transaction committed

`OutboxSender` holds that shape and the start / wake / stop of the task; a subclass says how to
claim (which store, what to keep of a row), how to attempt (one connection in turn for SMTP,
side by side for HTTP) and what an outcome means in the database. When a drain found nothing to
do (or we are stopping), the loop waits for a wake-up or the poll interval, whichever comes first.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import ClassVar, Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.store.db import session_scope

log = logging.getLogger(__name__)

AttemptT = TypeVar("AttemptT")  # what the network part needs of a claimed row (plain data)
OutcomeT = TypeVar("OutcomeT")  # what it found out, for the record part


async def drain_until_stopped(
    drain_once: Callable[[], Awaitable[int]],
    *,
    wakeup: asyncio.Event,
    stopping: asyncio.Event,
    poll_s: float,
    what: str,
    on_idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run `drain_once` until `stopping` is set. A failing drain (a database hiccup) is logged
    and retried a second later, never the end of sending; `on_idle` runs after an empty drain."""
    while not stopping.is_set():
        wakeup.clear()
        try:
            done = await drain_once()
        except Exception:  # a database hiccup must not end sending
            log.exception("%s drain failed; retrying", what)
            done = 0
            await asyncio.sleep(1)
        if done == 0 or stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=poll_s)
        if done == 0 and on_idle is not None:
            await on_idle()


class OutboxSender(abc.ABC, Generic[AttemptT, OutcomeT]):
    """Drains one outbox table: `start()` a task on the running loop, `wake()` it (from any
    thread) after a commit that queued rows, `await stop()` to end it."""

    what: ClassVar[str]  # names the outbox in logs
    task_name: ClassVar[str]
    close_when_idle: ClassVar[bool] = False  # let go of the connection after an empty drain

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        executor: Executor,
        *,
        retry_base_s: float,
        retry_max_s: float,
        lease_s: float,
        batch_size: int,
        poll_s: float,
        on_result: Callable[[str], None] | None,
    ) -> None:
        self.engine, self.clock, self.executor = engine, clock, executor
        self.retry_base_s, self.retry_max_s, self.lease_s = retry_base_s, retry_max_s, lease_s
        self.batch_size, self.poll_s, self.on_result = batch_size, poll_s, on_result
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the task ------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=self.task_name)
        return self._task

    def wake(self) -> None:
        """Drain now instead of at the next poll. Safe to call from any thread (an asyncio.Event
        may only be set on its loop's thread)."""
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def stop(self, timeout: float = 10) -> None:
        """Finish the batch in hand (within `timeout`), then close the connection."""
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=timeout)
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Let go of the connection to the outside (it is opened again when needed)."""

    async def _run(self) -> None:
        await drain_until_stopped(
            self.drain_once,
            wakeup=self._wakeup,
            stopping=self._stopping,
            poll_s=self.poll_s,
            what=self.what,
            on_idle=self.close if self.close_when_idle else None,
        )

    # -- one batch -----------------------------------------------------------------------------

    async def drain_once(self) -> int:
        """Claim one batch of due rows, attempt them and record the outcomes; returns how many
        rows were claimed."""
        loop = asyncio.get_running_loop()
        attempts = await loop.run_in_executor(self.executor, self._claim)
        if not attempts:
            return 0
        outcomes = await self._attempt(attempts)
        await loop.run_in_executor(self.executor, self._record, outcomes)
        return len(attempts)

    def _claim(self) -> list[AttemptT]:
        with session_scope(self.engine) as session:
            return self._claim_in(session, now=self.clock.now())

    def _record(self, outcomes: list[OutcomeT]) -> None:
        now = self.clock.now()
        with session_scope(self.engine) as session:
            results = self._record_in(session, outcomes, now=now)
        if self.on_result is not None:  # after the commit: a rolled-back outcome is not counted
            for result in results:
                self.on_result(result)

    @abc.abstractmethod
    def _claim_in(self, session: Session, *, now: datetime) -> list[AttemptT]:
        """Lease up to batch_size due rows and keep what attempting them needs."""

    @abc.abstractmethod
    async def _attempt(self, attempts: list[AttemptT]) -> list[OutcomeT]:
        """Try each claimed row; one outcome per row, in any case (never raise for a row)."""

    @abc.abstractmethod
    def _record_in(self, session: Session, outcomes: list[OutcomeT], *, now: datetime) -> list[str]:
        """Write the outcomes; returns one result label per outcome for `on_result`."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
