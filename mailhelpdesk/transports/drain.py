"""The loop both outboxes' senders run: drain a batch, and when there was nothing to do (or we
are stopping) wait for a wake-up or the poll interval, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


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
        except Exception:  # noqa: BLE001 - a database hiccup must not end sending
            log.exception("%s drain failed; retrying", what)
            done = 0
            await asyncio.sleep(1)
        if done == 0 or stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=poll_s)
        if done == 0 and on_idle is not None:
            await on_idle()
