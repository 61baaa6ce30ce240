"""The composition root: builds the daemon from a Config and runs it on one asyncio loop.

Nothing imports this module but the CLI and the tests. All database work happens on one
executor thread, so SQLite sees a single writer and the loop never blocks on a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Callable, Generator
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock, SystemClock
from mailhelpdesk.config import Config, load_config, webhook_secret
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.sla import SlaPolicy
from mailhelpdesk.http.app import create_api
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.ingest import worker
from mailhelpdesk.ingest.context import IngestSettings
from mailhelpdesk.ingest.understanding import Understander
from mailhelpdesk.mail import notice, verp
from mailhelpdesk.mail.notice import Composed
from mailhelpdesk.mail.render import environment
from mailhelpdesk.services import (
    escalation,
    housekeeping,
    interventions,
    lifecycle,
    notify,
    sla,
    webhook_subscriptions,
)
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.store import backlog, daemon_lock, idempotency, leases, schema
from mailhelpdesk.store.db import Database, read_scope, session_scope
from mailhelpdesk.store.lookups import lookups_of
from mailhelpdesk.store.setup import sync_config
from mailhelpdesk.store.webhooks import secret_ref_for
from mailhelpdesk.transports.http_sender import DeliveryHandler, HttpSender
from mailhelpdesk.transports.smtp_listener import SMTPHandler, SpoolWriter, start_listener
from mailhelpdesk.transports.smtp_sender import SMTPSender

T = TypeVar("T")
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
        # read from the store at each scrape (render_metrics): true across restarts and daemons
        self.set_aside = Gauge(
            "mailhelpdesk_inbound_set_aside",
            "Kept messages set aside with a reason (inbound list --failed)",
            registry=self.registry,
        )
        self.outbox_queued = Gauge(
            "mailhelpdesk_outbox_queued",
            "Outgoing mail queued, due now or retrying later",
            registry=self.registry,
        )
        self.outbox_oldest_due = Gauge(
            "mailhelpdesk_outbox_oldest_due_age_seconds",
            "How long the longest-waiting due outgoing mail has waited (0: none overdue)",
            registry=self.registry,
        )
        self.deliveries_queued = Gauge(
            "mailhelpdesk_http_deliveries_queued",
            "Outgoing HTTP deliveries (webhooks, epilogs) queued",
            registry=self.registry,
        )
        self.suppressed = Gauge(
            "mailhelpdesk_notices_suppressed",
            "Automatic notices held back by the loop and bounce rules, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "mailhelpdesk_http_request_duration_seconds",
            "HTTP API requests, by route template, method and status",
            ["route", "method", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_seconds.labels(route, method, str(status)).observe(seconds)


# Config sections a SIGHUP cannot change: sockets already bound, the database already open, IMAP
# sessions already logged in
RESTART_ONLY = ("database", "http", "smtp_listener", "imap_mailboxes", "smtp_relay", "logging")


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
        # several daemons on one PostgreSQL take turns at preparing the store
        with daemon_lock.startup_lock(database.engine):
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
        # names this daemon in the leases it holds (several daemons may share a PostgreSQL)
        self.daemon_id = leases.daemon_id()
        self.last_ingest_at: float | None = None
        self.ingest_errors = 0
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.smtp_server: asyncio.Server | None = None
        self.smtp_handler: SMTPHandler | None = None
        self.api_runtime: Runtime | None = None
        # how many times the config was (re)loaded: 1 at start, +1 per successful SIGHUP
        self.config_generation = 1
        self._daemon_lock: daemon_lock.DaemonLock | None = None
        self.http_server: _Server | None = None
        self.spool_writer: SpoolWriter | None = None
        self.pollers: list[Any] = []
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.sender: SMTPSender | None = None
        self.http_sender: HttpSender | None = None
        # secret_ref -> HMAC key for signed HTTP deliveries (read once, at build)
        self._delivery_secrets = delivery_secrets
        # the processes that understand mail ahead of the writer (ingest/understanding.py), and
        # the thread that waits for them (so neither the loop nor the DB thread does)
        self.understander = Understander(
            config.ingest.understand_pool_size(),
            time_limit_s=config.ingest.understand_timeout_s,
        )
        self._understand_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="understand")

    @property
    def engine(self) -> Engine:
        return self.database.engine

    async def _compose_notices(self, pending: list[tuple[int, str]]) -> list[Composed]:
        """The sender's batch of notice specs built in the understanding processes, through the
        thread that waits for them (one caller at a time), with the settings of the moment: a
        SIGHUP's new templates apply to the next notice."""
        settings = self.settings.notify
        return await asyncio.get_running_loop().run_in_executor(
            self._understand_thread,
            self.understander.offload,
            notice.compose_batch,
            pending,
            settings.helpdesk_address,
            settings.template_dir,
            self.config_generation,
        )

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
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            self._daemon_lock = daemon_lock.acquire(self.config.database.url)
            if self._daemon_lock.exclusive:
                # the one daemon on this SQLite file: leases left behind are a dead daemon's
                await loop.run_in_executor(self.db, self._clear_leases)
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
            self.smtp_handler = handler
            server = await start_listener(listener, handler)
            assert isinstance(server, asyncio.Server)  # loop.create_server's
            self.smtp_server = server
            log.info("smtp listening host=%s port=%s", listener.host, self.smtp_port)
        await asyncio.get_running_loop().run_in_executor(
            self._understand_thread, self.understander.start
        )
        self._tasks.append(asyncio.create_task(self._ingest_loop(), name="ingest"))
        # a changed [[sla]] or [business_hours] moves the due times of every open ticket: in
        # the background, a slice at a time, so a large desk does not keep the daemon from
        # serving (40,000 open tickets took minutes); with several daemons starting together,
        # the one holding the job's lease does it
        self._tasks.append(asyncio.create_task(self._recompute_sla_at_start(), name="sla"))
        self.scheduler.start()
        self._schedule("on-hold wake-up", 60, self.wake_on_hold)
        self._schedule("sla escalation", 60, self.escalate_sla)
        self._schedule("idempotency purge", 300, self._purge_keys)
        # always scheduled: each job reads its [lifecycle] setting when it runs and does nothing
        # while that is off, so a reload (SIGHUP) can switch it on or off
        self._schedule("trash purge", 3600, self.purge_trashed)
        self._schedule("auto-close", 600, self.auto_close)
        self._schedule("untouched reminder", 600, self.remind_untouched)
        self._schedule("blob purge", 3600, self.purge_blobs)
        self.sender = SMTPSender.from_config(
            self.config.smtp_relay,
            self.engine,
            self.clock,
            self.db,
            on_result=lambda result: self.metrics.outbox.labels(result=result).inc(),
            composer=self._compose_notices,
            suppress_s=self.config.outbound.suppress_bouncing_s,  # a relay's 5xx is a bounce
            return_path=functools.partial(
                verp.return_path, self.settings.secret, self.config.helpdesk.address
            ),
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
                    holder=self.daemon_id,
                    lease_ttl_s=self.config.cluster.lease_ttl_s,
                )
                self.pollers.append(poller)
                poller.start()
        if self.config.http.enabled:
            api = create_api(
                health=self.health,
                metrics=self.render_metrics,
                observe_request=self.metrics.observe_request,
                database=self.database,
                clock=self.clock,
                settings=ApiSettings.from_config(self.config, self.settings.notify),
                api_config=self.config.api,
                compat=self.config.compat,
            )
            self.api_runtime = api.state.runtime
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

    # -- reload (SIGHUP) -----------------------------------------------------------------------

    def request_reload(self) -> None:
        """The SIGHUP handler: reload in a task, so the signal never waits on the database."""
        self._tasks.append(asyncio.create_task(self.reload(), name="reload"))

    async def reload(self) -> bool:
        """Re-read the config file and apply what can change while serving: templates, agents
        (and their queues), queues' acknowledgement settings, webhooks, notices, lifecycle and
        SLA settings, API limits read per request. Listening addresses, the database and IMAP
        mailboxes need a restart (logged). No connection is touched: SMTP sessions and HTTP
        requests in flight finish with the settings they started with. A config that does not
        load keeps the running one, with the reason logged."""
        loop = asyncio.get_running_loop()
        try:
            new, settings = await loop.run_in_executor(self.db, self._load_for_reload)
        except Exception as exc:  # noqa: BLE001 - a bad edit must never stop the daemon
            log.error("reload failed, the running settings stay: %s", exc)
            return False
        restart_only = [
            name for name in RESTART_ONLY if getattr(new, name) != getattr(self.config, name)
        ]
        if restart_only:
            log.warning(
                "reload: %s changed; that takes a restart (the running values stay)",
                ", ".join(restart_only),
            )
            new = dataclasses.replace(
                new, **{name: getattr(self.config, name) for name in restart_only}
            )
        self.config, self.settings = new, settings
        environment.cache_clear()  # a changed [templates] dir, or files replaced in place
        cached = lookups_of(self.engine)
        if cached is not None:  # queues and agents are read afresh (store/lookups.py)
            cached.clear()
        if self.smtp_handler is not None:
            self.smtp_handler.set_addresses(new.inbound_addresses())
        if self.api_runtime is not None:
            self.api_runtime.settings = ApiSettings.from_config(new, settings.notify)
        self.config_generation += 1
        recomputed = await self.recompute_sla()
        log.info(
            "reloaded config=%s generation=%s sla_recomputed=%s",
            new.source,
            self.config_generation,
            recomputed,
        )
        return True

    def _load_for_reload(self) -> tuple[Config, IngestSettings]:
        new = load_config(self.config.source or None)
        interventions.check_templates(new)
        sync_config(self.engine, new)
        return new, worker.load_settings(self.engine, new)

    async def shutdown(self) -> None:
        """Stop taking mail, let sessions in flight finish, apply what was kept, then exit."""
        if self.smtp_server is not None:
            self.smtp_server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.smtp_server.wait_closed(), timeout=5)
        if self.spool_writer is not None:
            await self.spool_writer.stop()
        for poller in self.pollers:
            await poller.stop()  # releases its mailbox's lease: another daemon takes over now
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
        # after the sender: it builds its notices in these processes
        await asyncio.get_running_loop().run_in_executor(
            self._understand_thread, self.understander.close
        )
        self._understand_thread.shutdown(wait=False)
        with contextlib.suppress(Exception):  # unreleased, they expire: nothing is lost
            await asyncio.get_running_loop().run_in_executor(self.db, self._release_leases)
        self.database.close()
        if self._daemon_lock is not None:
            self._daemon_lock.release()
        log.info("mailhelpdesk stopped")

    def _schedule(self, name: str, every_s: float, job: Callable[[], object]) -> None:
        """Run `job` on the DB thread now and every `every_s` (APScheduler, in-memory job store:
        the state the jobs act on lives in the database, so a restart loses nothing). One run at a
        time, missed runs coalesced; a failure is logged and retried on the next round.

        With several daemons on one database, a job runs only on the daemon holding its lease
        `job:<name>`, taken for one interval plus `[cluster] lease_ttl_s`: the holder renews it at
        each run and keeps the job; the others skip it until the holder stops (it releases its
        leases) or dies (the lease expires), so the fleet runs each job once per interval."""
        resource = f"job:{name}"
        ttl_s = every_s + self.config.cluster.lease_ttl_s

        def leased() -> object:
            if not self._take_lease(resource, ttl_s):
                log.debug("%s skipped: another daemon holds %s", name, resource)
                return None
            return job()

        async def run() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.db, leased)
            except asyncio.CancelledError:
                # shutdown while the job runs: the job's transaction finishes or rolls back on
                # the DB thread (closing the Database waits for it); nothing to report
                log.info("%s interrupted by shutdown", name)
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
            # a first run that starts late (a busy machine at start) still runs, instead of
            # being dropped as "missed" until the next interval
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )

    def _take_lease(self, resource: str, ttl_s: float) -> bool:
        with session_scope(self.engine) as session:
            return leases.take(
                session, resource, holder=self.daemon_id, now=self.clock.now(), ttl_s=ttl_s
            )

    def _release_lease(self, resource: str) -> None:
        with session_scope(self.engine) as session:
            leases.release(session, resource, holder=self.daemon_id)

    def _clear_leases(self) -> None:
        with session_scope(self.engine) as session:
            cleared = leases.clear(session)
        if cleared:
            log.info("leases of a daemon that did not stop cleanly cleared count=%s", cleared)

    def _release_leases(self) -> None:
        with session_scope(self.engine) as session:
            released = leases.release_all(session, holder=self.daemon_id)
        if released:
            log.info("leases released count=%s holder=%s", released, self.daemon_id)

    def held_leases(self, session: Session) -> list[dict[str, object]]:
        """The leases this daemon holds now (what /healthz shows)."""
        now = self.clock.now()
        return [
            leases.describe(lease, now)
            for lease in leases.held(session, holder=self.daemon_id, now=now)
        ]

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
        if not self.config.lifecycle.purge_trashed_after_s:
            return []
        with session_scope(self.engine) as session:
            return housekeeping.purge_trashed(
                session,
                change=self.scheduler_change(),
                older_than_s=self.config.lifecycle.purge_trashed_after_s,
            )

    async def recompute_sla(self) -> int | None:
        """Recompute open tickets' due times when the SLA policy changed since the last start
        (services/sla.py), one slice of tickets per transaction so the database thread serves
        ingest and the API in between; returns how many, or None when it had not changed or
        another daemon on the database holds the job's lease (it is doing it)."""
        loop = asyncio.get_running_loop()
        policy = self.settings.notify.sla
        if await loop.run_in_executor(self.db, self._in_session, sla.policy_is_current, policy):
            return None
        resource, ttl_s = "job:sla recompute", self.config.cluster.lease_ttl_s
        if not await loop.run_in_executor(self.db, self._take_lease, resource, ttl_s):
            return None
        try:
            count, after = 0, 0
            while True:
                done = await loop.run_in_executor(
                    self.db, self._in_session, self._recompute_slice, policy, after
                )
                if done is None:
                    break
                after, count = done[0], count + done[1]
                log.info("sla due times recomputing tickets=%s last_id=%s", count, after)
                stop = self._stopping.is_set()
                if stop or not await loop.run_in_executor(
                    self.db, self._take_lease, resource, ttl_s
                ):  # not marked current: the next start (or the lease's new holder) walks it again
                    log.info("sla due times recomputing stopped tickets=%s", count)
                    return count
            await loop.run_in_executor(self.db, self._in_session, sla.mark_policy_current, policy)
        finally:
            await loop.run_in_executor(self.db, self._release_lease, resource)
        log.info("sla due times recomputed tickets=%s", count)
        return count

    async def _recompute_sla_at_start(self) -> None:
        """`recompute_sla` as the background task of a start: a failure is logged (the
        escalation job goes on with the due times as they were) and tried again next start."""
        try:
            await self.recompute_sla()
        except Exception:
            log.exception("sla due times recompute failed; the next start tries again")

    def _recompute_slice(
        self, session: Session, policy: SlaPolicy, after: int
    ) -> tuple[int, int] | None:
        return sla.recompute_slice(session, policy, self.clock.now(), after_id=after, limit=500)

    def _in_session(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a transaction of its own (on the database thread)."""
        with session_scope(self.engine) as session:
            return fn(session, *args)

    def escalate_sla(self) -> list[escalation.Escalation]:
        """SLA warnings (80%) and breaches that have come are recorded and notified, each once
        (the scheduler's job, every minute)."""
        with session_scope(self.engine) as session:
            return escalation.escalate(session, change=self.scheduler_change())

    def auto_close(self) -> list[int]:
        """Tickets waiting on their customer longer than `[lifecycle] auto_close_after` are
        closed with the closing notice; returns their numbers."""
        if not self.config.lifecycle.auto_close_after_s:
            return []
        with session_scope(self.engine) as session:
            return lifecycle.auto_close(
                session,
                change=self.scheduler_change(),
                after_s=self.config.lifecycle.auto_close_after_s,
            )

    def remind_untouched(self) -> list[int]:
        """The assignees of tickets untouched for `[lifecycle] remind_untouched_after` are
        reminded, once per quiet spell; returns the ticket numbers."""
        if not self.config.lifecycle.remind_untouched_after_s:
            return []
        with session_scope(self.engine) as session:
            return lifecycle.remind_untouched(
                session,
                change=self.scheduler_change(),
                after_s=self.config.lifecycle.remind_untouched_after_s,
            )

    def purge_blobs(self) -> int:
        """Attachment bytes no attachment uses are deleted; returns how many."""
        if not self.config.lifecycle.purge_unreferenced_blobs:
            return 0
        with session_scope(self.engine) as session:
            return housekeeping.purge_unreferenced_blobs(session)

    def _kept_imap(self, count: int) -> None:
        self.metrics.kept.labels(source="imap").inc(count)
        self._wakeup.set()

    def _kept(self, count: int) -> None:
        self.metrics.kept.labels(source="smtp").inc(count)
        self._wakeup.set()

    async def _ingest_loop(self) -> None:
        """Claim, understand and write batches, overlapped: while batch N is written on the DB
        thread, batch N+1 is understood in the pool (ingest/worker.py). A write that fails (a
        database hiccup) lets go of its batch, whose messages stay pending, and is retried a
        second later; the loop ends once stopping and nothing is left in hand."""
        loop = asyncio.get_running_loop()
        last_reload = time.monotonic()
        current: worker.ClaimedBatch | None = None  # understood, to be written
        while True:
            self._wakeup.clear()
            processed = 0
            upcoming: worker.ClaimedBatch | None = None
            try:
                if time.monotonic() - last_reload > 10:  # pick up agents added with the CLI
                    self.settings = await loop.run_in_executor(
                        self.db, worker.load_settings, self.engine, self.config
                    )
                    last_reload = time.monotonic()
                settings = self.settings
                in_hand = current.ids if current is not None else []
                upcoming = await loop.run_in_executor(
                    self.db,
                    functools.partial(
                        worker.claim,
                        self.engine,
                        limit=self.config.ingest.batch_size,
                        exclude=in_hand,
                    ),
                )
                understanding = (
                    loop.run_in_executor(
                        self._understand_thread,
                        worker.understand,
                        self.understander,
                        upcoming,
                        settings,
                    )
                    if upcoming.ids
                    else None
                )
                while current is not None and current.ids:
                    processed += await self._write(current, settings)
                if current is not None:
                    current.close()
                current = await understanding if understanding is not None else None
                upcoming = None
            except Exception:
                self.ingest_errors += 1
                log.exception("ingest batch failed; retrying")
                for batch in (current, upcoming):
                    if batch is not None:
                        batch.close()
                current = None
                await asyncio.sleep(1)
            if current is None and processed == 0:
                if self._stopping.is_set():
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)

    async def _write(self, batch: worker.ClaimedBatch, settings: IngestSettings) -> int:
        """Write (part of, on SQLite within the batch budget) an understood batch; returns how
        many of its messages were written."""
        started = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(
            self.db,
            functools.partial(
                worker.write,
                self.engine,
                batch,
                settings,
                self.clock,
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
        return result.processed

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
        held: list[dict[str, object]] | None = None
        try:
            with read_scope(self.engine) as session:  # one session for both reads
                todo = backlog.backlog(session)
                held = self.held_leases(session)
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
            "config_generation": self.config_generation,
            "smtp_listener": {"port": self.smtp_port} if self.smtp_server else None,
            "imap_mailboxes": {p.name: p.status() for p in self.pollers},
            # which daemon this is, and what it works alone (docs/operations.md "Scale-out")
            "cluster": {"daemon_id": self.daemon_id, "leases": held},
        }

    def render_metrics(self) -> bytes:
        """The registry, with the store's gauges read now (a failed read leaves the last values:
        /healthz is where a database outage shows)."""
        with contextlib.suppress(Exception), read_scope(self.engine) as session:
            found = backlog.gauges(
                session, now=self.clock.now(), suppression_kinds=notify.SUPPRESSION_KINDS
            )
            m = self.metrics
            m.pending.set(found.inbound_pending)
            m.set_aside.set(found.inbound_set_aside)
            m.outbox_queued.set(found.outbox_queued)
            m.outbox_oldest_due.set(found.outbox_oldest_due_age_s)
            m.deliveries_queued.set(found.deliveries_queued)
            for reason, count in found.suppressed.items():
                m.suppressed.labels(reason).set(count)
        return generate_latest(self.metrics.registry)
