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
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import Clock, SystemClock
from mailhelpdesk.config import Config, webhook_secret
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.http.app import create_api
from mailhelpdesk.ingest import worker
from mailhelpdesk.ingest.context import IngestSettings
from mailhelpdesk.services import (
    housekeeping,
    interventions,
    lifecycle,
    notify,
    webhook_subscriptions,
)
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import backlog, idempotency, schema, spool
from mailhelpdesk.store.db import Database, read_scope, session_scope
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


def delivery_secrets(config: Config) -> dict[str, bytes]:
    """HMAC keys of signed HTTP deliveries, by the secret_ref their rows carry. Read once, when
    the app is built: an unreadable or empty key file stops the daemon there, with one line
    naming it, instead of failing every delivery later."""
    found: dict[str, bytes] = {}
    for index, hook in enumerate(config.webhooks):
        key = webhook_secret(hook, index)
        if key:
            found[secret_ref_for(hook.name)] = key
    found.update(interventions.delivery_secrets(config))
    return found


def build_app(config: Config, *, clock: Clock | None = None) -> App:
    """The composition root: a fully formed App for `config`. The one Database (engine, writer
    lock, group writer, executor) is made here; the schema is brought up to date, the config's
    agents, queues and webhooks copied into the store, and the settings every part needs are
    read, so nothing about the app is optional afterwards. The CLI, `serve` and the tests all
    build it this way. Raises ConfigError or SQLAlchemyError with nothing left open."""
    database = Database(config.database.url, sqlite_synchronous=config.database.sqlite_synchronous)
    try:
        schema.upgrade(database.engine)
        sync_config(database.engine, config)
        settings = worker.load_settings(database.engine, config)
        secrets = delivery_secrets(config)
    except BaseException:
        database.close()
        raise
    return App(
        config,
        database=database,
        clock=clock or SystemClock(),
        settings=settings,
        delivery_secrets=secrets,
    )


class App:
    """The daemon. `run()` serves until `stop()` (or SIGTERM/SIGINT) and then shuts down cleanly."""

    def __init__(
        self,
        config: Config,
        *,
        database: Database,
        clock: Clock,
        settings: IngestSettings,
        delivery_secrets: dict[str, bytes],
    ) -> None:
        """Use `build_app(config)`: it prepares the store and reads what this needs."""
        self.config = config
        self.database = database
        self.clock = clock
        self.settings = settings
        self.metrics = Metrics()
        self.started_at = time.time()
        self.last_ingest_at: float | None = None
        self.ingest_errors = 0
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.smtp_server: asyncio.Server | None = None
        self.http_server: _Server | None = None
        self.spool_writer: SpoolWriter | None = None
        self.pollers: list[Any] = []
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.sender: SMTPSender | None = None
        self.http_sender: HttpSender | None = None
        # secret_ref -> HMAC key for signed HTTP deliveries (read once, at build)
        self._delivery_secrets = delivery_secrets

    @property
    def engine(self) -> Engine:
        return self.database.engine

    @property
    def db(self) -> Executor:
        """The thread the loop hands its database work to (owned by the Database)."""
        return self.database.executor

    def close(self) -> None:
        """Release the database (for an app that was built but not run, e.g. by the CLI)."""
        self.database.close()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped; whatever happens, shut down what was started and close the
        database (a bind error at start included)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            log.info(
                "mailhelpdesk serving config=%s database=%s",
                self.config.source,
                self.engine.url.render_as_string(),
            )
            await self._stopping.wait()
        finally:
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
            handler = SMTPHandler(
                self.config.inbound_addresses(),
                self.spool_writer.keep,
                max_recipients=listener.max_recipients,
                max_errors=listener.max_errors,
            )
            server = await start_listener(listener, handler)
            assert isinstance(server, asyncio.Server)  # loop.create_server's
            self.smtp_server = server
            log.info("smtp listening host=%s port=%s", listener.host, self.smtp_port)
        self._tasks.append(asyncio.create_task(self._ingest_loop(), name="ingest"))
        self.scheduler.start()
        self._schedule("on-hold wake-up", 60, self.wake_on_hold)
        if self.config.lifecycle.purge_trashed_after_s:
            self._schedule("trash purge", 3600, self.purge_trashed)
        notify_settings = self.settings.notify
        self.sender = SMTPSender.from_config(
            self.config.smtp_relay,
            self.engine,
            self.clock,
            self.db,
            on_result=lambda result: self.metrics.outbox.labels(result=result).inc(),
            composer=lambda spec: notify.try_compose_spec(spec, notify_settings),
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
            api = create_api(
                health=self.health,
                metrics=self.render_metrics,
                database=self.database,
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
                # X-Forwarded-For only from the configured proxies: uvicorn's default believes
                # it from 127.0.0.1, so any local client could name its own address
                proxy_headers=bool(self.config.http.trusted_proxies),
                forwarded_allow_ips=list(self.config.http.trusted_proxies) or "",
            )
            self.http_server = _Server(uv)
            self._tasks.append(asyncio.create_task(self.http_server.serve(), name="http"))
            while not self.http_server.started and not self._tasks[-1].done():  # noqa: ASYNC110 - uvicorn has no started event
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
        self.database.close()
        log.info("mailhelpdesk stopped")

    def _schedule(self, name: str, every_s: float, job: Callable[[], object]) -> None:
        """Run `job` on the DB thread now and every `every_s` (APScheduler, in-memory job store:
        the state the jobs act on lives in the database, so a restart loses nothing). One run at a
        time, missed runs coalesced; a failure is logged and retried on the next round."""

        async def run() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.db, job)
            except Exception:
                log.exception("%s failed", name)

        self.scheduler.add_job(
            run,
            "interval",
            seconds=every_s,
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    def scheduler_change(self) -> ChangeContext:
        """What the scheduler's jobs change, they change as the helpdesk itself."""
        return ChangeContext.of(
            clock=self.clock,
            channel=Channel.scheduler,
            actor=Actor.system(),
            notices=self.settings.notify,
        )

    def delivery_handlers(self) -> dict[str, DeliveryHandler]:
        """What an HTTP delivery's outcome means, by row kind (transports/http_sender.py calls
        these in the transaction that records the outcome). A kind without a handler is only
        recorded: webhooks need nothing more. Interventions register "epilog" here."""
        return {
            interventions.EPILOG_KIND: interventions.EpilogHandler(self.settings.notify, self.clock)
        }

    def delivery_secret(self, secret_ref: str) -> bytes | None:
        """The sender's secret resolver: the HMAC key a row's secret_ref names, or None.
        "webhook:<name>" comes from [[webhooks]]; other prefixes (interventions) go here too;
        "webhook-key:<salt>" (subscriptions made by API) is derived from the helpdesk secret."""
        derived = webhook_subscriptions.resolve(self.settings.notify.secret, secret_ref)
        return derived if derived is not None else self._delivery_secrets.get(secret_ref)

    def _purge_keys(self) -> None:
        """Forget Idempotency-Keys past their TTL (api-contract.md §3.3 step 8)."""
        with session_scope(self.engine) as session:
            purged = idempotency.purge(session, now=self.clock.now())
        if purged:
            log.info("idempotency keys purged count=%s", purged)

    def wake_on_hold(self) -> list[int]:
        """On-hold tickets whose date has come are opened (the scheduler's job, every minute);
        returns their numbers."""
        with session_scope(self.engine) as session:
            return lifecycle.wake_on_hold(session, change=self.scheduler_change())

    def purge_trashed(self) -> list[int]:
        """Tickets in the trash longer than `[lifecycle] purge_trashed_after` are deleted for
        good (the scheduler's job, hourly); returns their numbers."""
        with session_scope(self.engine) as session:
            return housekeeping.purge_trashed(
                session,
                change=self.scheduler_change(),
                older_than_s=self.config.lifecycle.purge_trashed_after_s,
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
                started = time.perf_counter()
                result = await loop.run_in_executor(
                    self.db,
                    lambda: worker.process_batch(
                        self.engine,
                        self.settings,
                        self.clock,
                        limit=self.config.ingest.batch_size,
                        budget_s=self.config.ingest.batch_budget_ms / 1000,
                    ),
                )
                if result.processed:
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
                    for outcome, n in result.outcomes.items():
                        self.metrics.applied.labels(outcome=outcome).inc(n)
                    if self.sender is not None:
                        self.sender.wake()
                    self.last_ingest_at = time.time()
            except Exception:
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
        status, todo, db_error = "ok", None, None
        try:
            with read_scope(self.engine) as session:
                todo = backlog.backlog(session)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            status, db_error = "degraded", type(exc).__name__
        return {
            "status": status,
            "database": "ok" if db_error is None else db_error,
            "inbound_pending": todo.inbound_pending if todo else None,
            # queued, not yet sent (due now or retrying later); all three zero: idle
            "outbox_queued": todo.outbox_queued if todo else None,
            "deliveries_queued": todo.deliveries_queued if todo else None,
            "idle": todo.idle if todo else None,
            "last_ingest_at": self.last_ingest_at,
            "uptime_s": round(time.time() - self.started_at, 1),
            "smtp_listener": {"port": self.smtp_port} if self.smtp_server else None,
            "imap_mailboxes": {p.name: p.status() for p in self.pollers},
        }

    def render_metrics(self) -> bytes:
        with contextlib.suppress(Exception), read_scope(self.engine) as session:
            self.metrics.pending.set(spool.count_pending(session))
        return generate_latest(self.metrics.registry)
