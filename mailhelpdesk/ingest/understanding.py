"""Running the understanding of messages (mail/understood.py) on every core, within bounds.

`Understander.understand_batch` takes (inbound id, raw bytes, envelope reverse-path) jobs and
returns, per job, an `Understood` or a `NotUnderstood` with the reason it is set aside. With
`workers=0` it runs in this process (tests that need it, `import`, `inbound retry`); otherwise
in a `ProcessPoolExecutor` of that many processes started by a `forkserver` (never `fork`: the
daemon has threads and an event loop, and a forked copy of a held lock never comes free).

Bounds, so one message can never stop the others:

- at most `workers` jobs are in the pool at once, so every submitted job is running and its
  time limit can be counted from its submission;
- a job still running after `time_limit_s` is set aside ("understanding took longer than …"),
  the pool's processes are terminated and the pool rebuilt, and the other jobs that were in it
  are submitted again;
- a job whose process died (a crash in a C extension, the kernel's OOM killer) breaks the pool
  for every job in it, so those jobs are run again one at a time in a fresh pool: the one that
  breaks it alone is set aside ("understanding killed its worker process"), the rest go on.

The time limit does not apply in-process (workers=0): there is nothing to terminate.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from mailhelpdesk.mail.understood import UnderstandSettings, Understood, understand

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    inbound_id: int
    raw: bytes
    envelope_from: str | None


@dataclass(frozen=True)
class NotUnderstood:
    """A message understanding could not finish: set aside with `reason` (and the traceback,
    when understanding raised, for the log)."""

    reason: str
    detail: str = ""


Result = Understood | NotUnderstood
# what runs in the worker: a top-level function (pickled by name); tests pass their own
UnderstandFn = Callable[[Job, UnderstandSettings], Result]


def understand_job(job: Job, settings: UnderstandSettings, *, derive: bool = True) -> Result:
    """One job (in a worker process, or in this one with `derive` False): an exception is a
    result (the message's reason), never the end of the pool or of the batch."""
    try:
        return understand(
            job.raw, envelope_from=job.envelope_from, settings=settings, derive=derive
        )
    except Exception as exc:  # noqa: BLE001 - the worker boundary: the message is set aside
        return NotUnderstood(
            f"step understand: {type(exc).__name__}: {exc}", "".join(traceback.format_exc())
        )


def _warm() -> int:
    """Run once in each new pool so its processes import the mail modules before real work
    (whose time limit would otherwise include the imports)."""
    return os.getpid()


def _exit_with_parent() -> None:
    """Each worker's initializer: end this process when the daemon ends, even by SIGKILL. A pool
    worker otherwise outlives it, blocked on a queue whose other end it holds itself, and with
    it the fork server (which waits for its children)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class Understander:
    """The pool (or none, with workers=0) and its bounds. Not thread-safe: one caller at a
    time, which the ingest loop and process_batch are."""

    def __init__(
        self,
        workers: int,
        *,
        time_limit_s: float = 30.0,
        function: UnderstandFn = understand_job,
    ) -> None:
        self.workers = workers
        self.time_limit_s = time_limit_s
        self.function = function
        self._pool: ProcessPoolExecutor | None = None
        self.rebuilds = 0  # how often the pool was replaced (a timeout or a dead process)

    # -- the pool ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the processes now (the daemon does this at start, so the first mail does not
        wait for them)."""
        if self.workers > 0 and self._pool is None:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        # the fork server imports the mail modules once; each worker it forks starts with them
        # (faster starts, and their pages shared) instead of importing `__main__` (the CLI)
        context.set_forkserver_preload(["mailhelpdesk.ingest.understanding"])
        pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_exit_with_parent
        )
        for future in [pool.submit(_warm) for _ in range(self.workers)]:
            future.result(timeout=120)
        return pool

    def pids(self) -> list[int]:
        """The pool's process ids (the benchmarks sum their memory)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    def _discard_pool(self) -> None:
        """Terminate the pool's processes (a job that overran its time limit is still running
        in one of them, and shutdown would wait for it) and forget the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self.rebuilds += 1
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def in_process(job: Job, settings: UnderstandSettings) -> Result:
        """workers=0: parse and classify here, and leave the derived texts to the steps that
        need them (all of it is in this process anyway)."""
        return understand_job(job, settings, derive=False)

    # -- other pure work ------------------------------------------------------------------------

    def offload(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker process (a top-level function and picklable arguments),
        so its interpreter time is not taken from the daemon's; in this process with workers=0.

        Other pure work of the daemon (the sender's composing of notices) uses the same
        processes instead of starting more: a batch of notices is light next to the memory of
        another pool. Bounded like understanding, but with nothing to set aside: after
        `time_limit_s`, or when a worker dies, the pool is rebuilt and the work runs here
        instead, as it did before it was offloaded. One caller at a time, like
        `understand_batch` (the daemon calls both from one thread)."""
        if self.workers <= 0:
            return function(*args)
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            return self._pool.submit(function, *args).result(timeout=self.time_limit_s)
        except (BrokenProcessPool, FutureTimeout):
            log.error(
                "offloaded work failed in the pool; running it here function=%s",
                getattr(function, "__qualname__", function),
            )
            self._discard_pool()
        return function(*args)

    # -- a batch -------------------------------------------------------------------------------

    def understand_batch(
        self, jobs: Sequence[Job], settings: UnderstandSettings
    ) -> dict[int, Result]:
        """Every job's result by inbound id."""
        if self.workers <= 0:
            return {job.inbound_id: self.in_process(job, settings) for job in jobs}
        results: dict[int, Result] = {}
        queue: deque[Job] = deque(jobs)
        suspects: deque[Job] = deque()  # were in a pool that broke: run one at a time
        running: dict[Future[Result], tuple[Job, float]] = {}
        while queue or suspects or running:
            if self._pool is None:
                self._pool = self._new_pool()
            pool = self._pool
            try:
                if suspects:
                    if not running:
                        job = suspects[0]
                        running[pool.submit(self.function, job, settings)] = (job, time.monotonic())
                        suspects.popleft()
                else:
                    while queue and len(running) < self.workers:
                        job = queue[0]
                        running[pool.submit(self.function, job, settings)] = (job, time.monotonic())
                        queue.popleft()
            except BrokenProcessPool:  # a process died while idle: a new pool, the jobs again
                queue.extendleft(reversed([job for job, _started in running.values()]))
                running.clear()
                self._discard_pool()
                continue
            first_deadline = min(started for _job, started in running.values())
            timeout = max(0.0, first_deadline + self.time_limit_s - time.monotonic())
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            broken: list[Job] = []
            for future in done:
                job, _started = running.pop(future)
                try:
                    results[job.inbound_id] = future.result()
                except BrokenProcessPool:
                    broken.append(job)
            if broken:
                broken += [job for job, _started in running.values()]
                running.clear()
                self._discard_pool()
                if len(broken) == 1:  # it was alone in the pool: it is the one
                    (job,) = broken
                    results[job.inbound_id] = NotUnderstood(
                        "step understand: understanding killed its worker process "
                        "(the pool was rebuilt)"
                    )
                    log.error("understanding killed its worker inbound_id=%s", job.inbound_id)
                else:  # one of them did it: each runs again alone
                    suspects.extend(broken)
                continue
            now = time.monotonic()
            overdue = [
                (future, job)
                for future, (job, started) in running.items()
                if now - started >= self.time_limit_s and not future.done()
            ]
            if overdue:
                for future, job in overdue:
                    del running[future]
                    results[job.inbound_id] = NotUnderstood(
                        f"step understand: took longer than {self.time_limit_s:g} s "
                        "(the pool was rebuilt)"
                    )
                    log.error(
                        "understanding timed out inbound_id=%s limit_s=%s",
                        job.inbound_id,
                        self.time_limit_s,
                    )
                # the others in the pool lose their progress and start again
                queue.extendleft(reversed([job for job, _started in running.values()]))
                running.clear()
                self._discard_pool()
        return results
