"""The composition root: builds the daemon from a Config and runs it on one asyncio loop.

Nothing imports this module but the CLI and the tests. All database work happens on one
executor thread, so SQLite sees a single writer and the loop never blocks on a commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import Clock, SystemClock
from mailhelpdesk.config import Config, webhook_secret
from mailhelpdesk.http.app import create_api
from mailhelpdesk.ingest import worker
from mailhelpdesk.ingest.pipeline import IngestSettings
from mailhelpdesk.services import interventions, lifecycle, notify
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.store import idempotency, schema, spool
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from mailhelpdesk.store.setup import sync_config
from mailhelpdesk.store.webhooks import secret_ref_for
from mailhelpdesk.transports.http_sender import DeliveryHandler, HttpSender
from mailhelpdesk.transports.smtp_listener import SMTPHandler, SpoolWriter, start_listener
from mailhelpdesk.transports.smtp_sender import SMTPSender

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn on our loop; signals are the daemon's, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.kept = Counter(
            "mailhelpdesk_inbound_kept",
            "Messages kept in the spool",
            ["source"],
            registry=self.registry,
        )
        self.applied = Counter(
            "mailhelpdesk_inbound_processed",
            "Messages processed, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "mailhelpdesk_inbound_pending",
            "Messages kept, not yet processed",
            registry=self.registry,
        )
        self.outbox = Counter(
            "mailhelpdesk_outbox_attempts",
            "Outbound delivery attempts, by result",
            ["result"],
            registry=self.registry,
        )
        self.http_deliveries = Counter(
            "mailhelpdesk_http_delivery_attempts",
            "Outgoing HTTP delivery attempts, by result",
            ["result"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "mailhelpdesk_ingest_batch_seconds",
            "Time to apply one ingest batch",
            registry=self.registry,
        )


class App:
    """The daemon. `run()` serves until `stop()` (or SIGTERM/SIGINT) and then shuts down cleanly."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.engine: Engine = make_engine(
            config.database.url, sqlite_synchronous=config.database.sqlite_synchronous
        )
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self.metrics = Metrics()
        self.settings: IngestSettings | None = None
        self.started_at = time.time()
        self.last_ingest_at: float | None = None
        self.ingest_errors = 0
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.smtp_server: asyncio.AbstractServer | None = None
        self.http_server: _Server | None = None
        self.spool_writer: SpoolWriter | None = None
        self.pollers: list[Any] = []
        self.scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self.sender: SMTPSender | None = None
        self.http_sender: HttpSender | None = None
        # secret_ref -> HMAC key for signed HTTP deliveries (read once, at start)
        self._delivery_secrets: dict[str, bytes] = {}

    def prepare(self) -> None:
        """Schema up to date, config agents and queues in the store, settings loaded."""
        schema.upgrade(self.engine)
        sync_config(self.engine, self.config)
        self.settings = worker.load_settings(self.engine, self.config)
        # read before anything starts: an unreadable or empty key file stops the daemon here,
        # with one line naming it, instead of failing every delivery later
        self._delivery_secrets = self.delivery_secrets()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.db, self.prepare)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        await self.start()
        log.info(
            "mailhelpdesk serving config=%s database=%s",
            self.config.source,
            self.engine.url.render_as_string(),
        )
        await self._stopping.wait()
        await self.shutdown()

    async def start(self) -> None:
        interventions.check_templates(
            self.config
        )  # ConfigError: a missing .private stops the start
        listener = self.config.smtp_listener
        if listener.enabled:
            self.spool_writer = SpoolWriter(
                self.engine,
                self.clock,
                self.db,
                window_s=listener.group_commit_window_ms / 1000,
                on_commit=self._kept,
            )
            self.spool_writer.start()
            handler = SMTPHandler(self.config.inbound_addresses(), self.spool_writer.keep)
            self.smtp_server = await start_listener(listener, handler)
            log.info("smtp listening host=%s port=%s", listener.host, self.smtp_port)
        self._tasks.append(asyncio.create_task(self._ingest_loop(), name="ingest"))
        self.scheduler.start()
        self._schedule("on-hold wake-up", 60, self._wake_on_hold)
        notify_settings = self.settings.notify if self.settings else None
        self.sender = SMTPSender.from_config(
            self.config.smtp_relay,
            self.engine,
            self.clock,
            self.db,
            on_result=lambda result: self.metrics.outbox.labels(result=result).inc(),
            composer=(lambda spec: notify.try_compose_spec(spec, notify_settings))
            if notify_settings
            else None,
            suppress_s=self.config.outbound.suppress_bouncing_s,  # a relay's 5xx is a bounce
        )
        self.sender.start()
        self.http_sender = HttpSender.from_config(
            self.config.http_deliveries,
            self.engine,
            self.clock,
            self.db,
            secrets=self.delivery_secret,
            handlers=self.delivery_handlers(),
            on_result=lambda result: self.metrics.http_deliveries.labels(result=result).inc(),
        )
        self.http_sender.start()
        if self.config.imap_mailboxes:
            from mailhelpdesk.transports.imap_poller import IMAPPoller

            for box in self.config.imap_mailboxes:
                poller = IMAPPoller(
                    box,
                    engine=self.engine,
                    clock=self.clock,
                    executor=self.db,
                    on_kept=self._kept_imap,
                )
                self.pollers.append(poller)
                poller.start()
        if self.config.http.enabled:
            assert self.settings is not None and self.settings.notify is not None
            api = create_api(
                health=self.health,
                metrics=self.render_metrics,
                engine=self.engine,
                clock=self.clock,
                settings=ApiSettings.from_config(self.config, self.settings.notify),
                api_config=self.config.api,
            )
            self._schedule("idempotency purge", 300, self._purge_keys)
            uv = uvicorn.Config(
                api,
                host=self.config.http.host,
                port=self.config.http.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                h11_max_incomplete_event_size=self.config.http.max_request_bytes,
            )
            self.http_server = _Server(uv)
            self._tasks.append(asyncio.create_task(self.http_server.serve(), name="http"))
            while not self.http_server.started and not self._tasks[-1].done():
                await asyncio.sleep(0.01)
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises the bind error
            log.info("http listening host=%s port=%s", self.config.http.host, self.http_port)

    def stop(self) -> None:
        log.info("stop requested")
        self._stopping.set()

    async def shutdown(self) -> None:
        """Stop taking mail, let sessions in flight finish, apply what was kept, then exit."""
        if self.smtp_server is not None:
            self.smtp_server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.smtp_server.wait_closed(), timeout=5)
        if self.spool_writer is not None:
            await self.spool_writer.stop()
        for poller in self.pollers:
            await poller.stop()
        if self.http_server is not None:
            self.http_server.should_exit = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._wakeup.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        if self.sender is not None:  # after ingest: what is still queued stays for the next start
            await self.sender.stop()
        if self.http_sender is not None:  # the same: queued rows are POSTed after the next start
            await self.http_sender.stop()
        self.db.shutdown(wait=True)
        self.engine.dispose()
        log.info("mailhelpdesk stopped")

    def _schedule(self, name: str, every_s: float, job: Callable[[], object]) -> None:
        """Run `job` on the DB thread now and every `every_s` (APScheduler, in-memory job store:
        the state the jobs act on lives in the database, so a restart loses nothing). One run at a
        time, missed runs coalesced; a failure is logged and retried on the next round."""

        async def run() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.db, job)
            except Exception:  # noqa: BLE001 - retried on the next round
                log.exception("%s failed", name)

        self.scheduler.add_job(
            run,
            "interval",
            seconds=every_s,
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(timezone.utc),
        )

    def delivery_handlers(self) -> dict[str, DeliveryHandler]:
        """What an HTTP delivery's outcome means, by row kind (transports/http_sender.py calls
        these in the transaction that records the outcome). A kind without a handler is only
        recorded: webhooks need nothing more. Interventions register "epilog" here."""
        return {
            interventions.EPILOG_KIND: interventions.EpilogHandler(
                lambda: self.settings.notify if self.settings else None, self.clock
            )
        }

    def delivery_secret(self, secret_ref: str) -> bytes | None:
        """The sender's secret resolver: the HMAC key a row's secret_ref names, or None.
        "webhook:<name>" comes from [[webhooks]]; other prefixes (interventions) go here too."""
        return self._delivery_secrets.get(secret_ref)

    def delivery_secrets(self) -> dict[str, bytes]:
        """HMAC keys of signed HTTP deliveries, by the secret_ref their rows carry."""
        found: dict[str, bytes] = {}
        for index, hook in enumerate(self.config.webhooks):
            key = webhook_secret(hook, index)
            if key:
                found[secret_ref_for(hook.name)] = key
        found.update(interventions.delivery_secrets(self.config))
        return found

    def _purge_keys(self) -> None:
        """Forget Idempotency-Keys past their TTL (api-contract.md §3.3 step 8)."""
        with session_scope(self.engine) as session:
            purged = idempotency.purge(session, now=self.clock.now())
        if purged:
            log.info("idempotency keys purged count=%s", purged)

    def _wake_on_hold(self) -> None:
        """On-hold tickets whose date has come are opened and their assignee told."""
        with session_scope(self.engine) as session:
            lifecycle.wake_on_hold(
                session, clock=self.clock, settings=self.settings.notify if self.settings else None
            )

    def _kept_imap(self, count: int) -> None:
        self.metrics.kept.labels(source="imap").inc(count)
        self._wakeup.set()

    def _kept(self, count: int) -> None:
        self.metrics.kept.labels(source="smtp").inc(count)
        self._wakeup.set()

    async def _ingest_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_reload = time.monotonic()
        while True:
            self._wakeup.clear()
            try:
                if time.monotonic() - last_reload > 10:  # pick up agents added with the CLI
                    self.settings = await loop.run_in_executor(
                        self.db, worker.load_settings, self.engine, self.config
                    )
                    last_reload = time.monotonic()
                assert self.settings is not None
                started = time.perf_counter()
                result = await loop.run_in_executor(
                    self.db,
                    lambda: worker.process_batch(
                        self.engine,
                        self.settings,
                        self.clock,
                        limit=self.config.ingest.batch_size,
                        budget_s=self.config.ingest.batch_budget_ms / 1000,
                    ),  # type: ignore[arg-type]
                )
                if result.processed:
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
                    for outcome, n in result.outcomes.items():
                        self.metrics.applied.labels(outcome=outcome).inc(n)
                    if self.sender is not None:
                        self.sender.wake()
                    self.last_ingest_at = time.time()
            except Exception:  # noqa: BLE001 - a database hiccup must not end ingest; retry soon
                self.ingest_errors += 1
                log.exception("ingest batch failed; retrying")
                result = worker.BatchResult(0, collections.Counter())
                await asyncio.sleep(1)
            if self._stopping.is_set() and result.processed == 0:
                return
            if result.processed == 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)

    # -- what operators see --------------------------------------------------------------------

    @property
    def smtp_port(self) -> int | None:
        if self.smtp_server is None or not self.smtp_server.sockets:
            return None
        return int(self.smtp_server.sockets[0].getsockname()[1])

    @property
    def http_port(self) -> int | None:
        if self.http_server is None or not self.http_server.servers:
            return None
        return int(self.http_server.servers[0].sockets[0].getsockname()[1])

    def health(self) -> dict[str, Any]:
        """Runs on the HTTP worker thread; reads with its own short session."""
        status, pending, db_error = "ok", None, None
        try:
            with read_scope(self.engine) as session:
                session.exec(text("SELECT 1"))  # type: ignore[call-overload]
                pending = spool.count_pending(session)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            status, db_error = "degraded", type(exc).__name__
        return {
            "status": status,
            "database": "ok" if db_error is None else db_error,
            "inbound_pending": pending,
            "last_ingest_at": self.last_ingest_at,
            "uptime_s": round(time.time() - self.started_at, 1),
            "smtp_listener": {"port": self.smtp_port} if self.smtp_server else None,
            "imap_mailboxes": {p.name: p.status() for p in self.pollers},
        }

    def render_metrics(self) -> bytes:
        with contextlib.suppress(Exception), read_scope(self.engine) as session:
            self.metrics.pending.set(spool.count_pending(session))
        return generate_latest(self.metrics.registry)
