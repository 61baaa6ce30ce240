"""A fleet of real daemons on one PostgreSQL database, and the traffic the fleet test and
benchmarks/bench_fleet.py drive through it.

Each daemon is `mailhelpdesk serve` in its own process (tests.helpers.Daemon) with its own
config folder and ports, all pointing at one database, one Dovecot mailbox (configured in every
daemon under one name, so they compete for its lease) and one relay sink. Clients behave like
real ones: an SMTP client whose session to a daemon fails tries the next daemon (as an MTA tries
the next MX), an API client retries a connection error on another daemon with the same
Idempotency-Key and a 409 `idempotency_key_in_progress` after a short wait.
"""

from __future__ import annotations

import functools
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.services import api_tokens
from mailhelpdesk.store.db import make_engine, session_scope
from tests.dovecot import Dovecot, ImapUser
from tests.helpers import Daemon, crlf, make_mail
from tests.transports.test_smtp_sender import Sink

MAILBOX = "support-inbox"


def smtp_mail(i: int, tag: str = "fleet") -> tuple[str, bytes]:
    """Message i sent over SMTP: its own sender (no notice rate limit is reached) and Message-ID."""
    mid = f"<{tag}-smtp-{i}@customer.test>"
    raw = make_mail(
        subject=f"{tag} smtp {i}",
        sender=f"Customer {i} <s{i}.{tag}@customer.test>",
        message_id=mid,
        body=f"SMTP message {i}: the printer on floor {i % 7} is out of toner.\n",
    )
    return mid, raw


def imap_mail(i: int, tag: str = "fleet") -> tuple[str, bytes]:
    mid = f"<{tag}-imap-{i}@customer.test>"
    raw = make_mail(
        subject=f"{tag} imap {i}",
        sender=f"Reader {i} <m{i}.{tag}@customer.test>",
        message_id=mid,
        body=f"IMAP message {i}: the VPN drops every {i % 9 + 1} minutes.\n",
    )
    return mid, raw


def api_body(i: int, tag: str = "fleet") -> dict[str, Any]:
    return {
        "originator_email_address": f"a{i}.{tag}@customer.test",
        "data": {"subject": f"{tag} api {i}", "content": f"API request {i}"},
        "is_public": True,
    }


@dataclass
class Fleet:
    """`size` daemons on `db_url`, each reading `user`'s INBOX and relaying to `sink`."""

    root: Path
    db_url: str
    size: int
    dovecot: Dovecot
    user: ImapUser
    sink: Sink
    lease_ttl_s: int = 5
    daemons: list[Daemon] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)  # index -> daemon id of its latest start
    token: str = ""

    def __post_init__(self) -> None:
        box = "\n".join(
            [
                "[[imap_mailboxes]]",
                f'name = "{MAILBOX}"',
                f'host = "{self.dovecot.host}"',
                f"port = {self.dovecot.port}",
                'security = "none"',
                f'username = "{self.user.name}"',
                f'password = "{self.user.password}"',
            ]
        )
        extra = (
            f"[cluster]\nlease_ttl_s = {self.lease_ttl_s}\n\n"
            # a claim of a killed daemon is taken over after 5 s instead of 60
            "[api]\nrate_limit_requests = 1000000\nidempotency_lease_s = 5\n\n"
            f"{box}\n"
        )
        relay = (
            f'host = "127.0.0.1"\nport = {self.sink.port}\nsecurity = "none"\n'
            "timeout_s = 5\nretry_base_s = 1\nretry_max_s = 2\n"
        )
        for i in range(self.size):
            home = self.root / f"daemon{i}"
            home.mkdir(parents=True, exist_ok=True)
            daemon = Daemon(home, extra_config=extra, relay_config=relay)
            daemon.config.write_text(
                daemon.config.read_text().replace(
                    f'url = "{daemon.db_url}"', f'url = "{self.db_url}"'
                )
            )
            self.daemons.append(daemon)

    # -- the daemons -------------------------------------------------------------------------

    def start(self, *indexes: int) -> None:
        """Start these daemons (all when none is named) side by side. Each migrates and syncs
        the config at start: start the first alone, so it creates the schema."""
        chosen = indexes or tuple(range(self.size))
        with ThreadPoolExecutor(len(chosen)) as pool:
            for future in [pool.submit(self.daemons[i].start, 180) for i in chosen]:
                future.result()
        for i in chosen:
            self.ids[i] = self.health(i)["cluster"]["daemon_id"]
        if not self.token:
            self.token = self._mint_token()

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def alive(self) -> list[int]:
        return [
            i for i, d in enumerate(self.daemons) if d.proc is not None and d.proc.poll() is None
        ]

    def health(self, index: int) -> dict[str, Any]:
        """/healthz of one daemon (a generous timeout: three daemons share two busy cores)."""
        resp = httpx.get(f"http://127.0.0.1:{self.daemons[index].http_port}/healthz", timeout=30)
        return dict(resp.json()["data"])

    def lease_holder(self, resource: str = f"imap:{MAILBOX}") -> int | None:
        """The index of the live daemon that took `resource` last (the holder its row names)."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                holder = conn.execute(
                    text("SELECT holder FROM leases WHERE resource = :r"),
                    {"r": resource},
                ).scalar()
        finally:
            engine.dispose()
        for i in self.alive():
            if self.ids.get(i) == holder:
                return i
        return None

    def _mint_token(self) -> str:
        engine = make_engine(self.db_url)
        try:
            with session_scope(engine) as session:
                return api_tokens.create_token(
                    session, name="fleet", abilities=["all"], clock=SystemClock()
                )
        finally:
            engine.dispose()

    def engine(self) -> Engine:
        return make_engine(self.db_url)

    # -- traffic -----------------------------------------------------------------------------

    def send_smtp(self, index: int, raw: bytes, deadline_s: float = 120) -> None:
        """Deliver one message, starting at daemon `index`; a failed session tries the next."""
        deadline = time.monotonic() + deadline_s
        attempt = 0
        while True:
            daemon = self.daemons[(index + attempt) % self.size]
            try:
                with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as smtp:
                    smtp.sendmail("customer@customer.test", ["support@helpdesk.test"], crlf(raw))
                return
            except (OSError, smtplib.SMTPException):
                attempt += 1
                if time.monotonic() > deadline:
                    raise

    def create_ticket(self, index: int, key: str, body: dict[str, Any]) -> httpx.Response:
        """POST /api/create_ticket at daemon `index` until it answers with the ticket: another
        daemon after a connection error, again after 409 in progress (Retry-After)."""
        deadline = time.monotonic() + 120
        attempt = 0
        while True:
            daemon = self.daemons[(index + attempt) % self.size]
            try:
                resp = httpx.post(
                    f"http://127.0.0.1:{daemon.http_port}/api/create_ticket",
                    json=body,
                    headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
                    timeout=30,
                )
            except httpx.TransportError:
                attempt += 1
            else:
                if resp.status_code != 409 or time.monotonic() > deadline:
                    return resp
                assert resp.json()["error"] == "idempotency_key_in_progress", resp.text
                time.sleep(0.2)  # the contract's Retry-After, shortened: poll the first request
            if time.monotonic() > deadline:
                raise TimeoutError(f"create_ticket {key} got no answer")

    def drive(
        self,
        *,
        smtp: Sequence[bytes],
        keys: Sequence[tuple[str, dict[str, Any]]],
        workers: int = 8,
        at_half: Callable[[], None] | None = None,
    ) -> list[tuple[httpx.Response, httpx.Response]]:
        """Send `smtp` round-robin over the daemons and each key twice at once to two different
        daemons, on `workers` client threads; `at_half` runs once half the work is done (the
        SIGKILL). Returns both answers of each key."""
        jobs: list[Callable[[], Any]] = []
        answers: list[Any] = [None] * len(keys)
        for i, raw in enumerate(smtp):
            jobs.append(functools.partial(self.send_smtp, i % self.size, raw))
        pair_pool = ThreadPoolExecutor(2 * workers)

        def pair(n: int, key: str, body: dict[str, Any]) -> None:
            first = pair_pool.submit(self.create_ticket, n % self.size, key, body)
            second = pair_pool.submit(self.create_ticket, (n + 1) % self.size, key, body)
            answers[n] = (first.result(), second.result())

        for n, (key, body) in enumerate(keys):
            jobs.append(functools.partial(pair, n, key, body))
        # interleave mail and API calls, so both kinds are in flight at the kill
        order = _interleave(jobs[: len(smtp)], jobs[len(smtp) :])
        done = Counter[str]()
        lock = threading.Lock()
        half = threading.Event()

        def run(job: Callable[[], Any]) -> None:
            job()
            with lock:
                done["jobs"] += 1
                if done["jobs"] >= len(order) // 2 and not half.is_set():
                    half.set()
                    if at_half is not None:
                        at_half()

        try:
            with ThreadPoolExecutor(workers) as pool:
                for future in [pool.submit(run, job) for job in order]:
                    future.result()
        finally:
            pair_pool.shutdown()
        return answers

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def count(self, sql: str, **params: Any) -> int:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql), params).scalar_one())
        finally:
            engine.dispose()

    def wait_quiet(self, *, imap_messages: int, timeout: float = 240) -> None:
        """Until the mailbox is read to the end and nothing is left to file or to send."""
        self.wait_for(
            lambda: (
                self.count("SELECT count(*) FROM inbound_messages WHERE source = 'imap'")
                >= imap_messages
            ),
            timeout,
            "the mailbox to be read",
        )
        live = self.alive()[0]
        self.daemons[live].wait_idle(timeout=timeout, sending=True)


def _interleave(a: list[Any], b: list[Any]) -> list[Any]:
    """a and b merged evenly, keeping each one's order."""
    if not b:
        return list(a)
    out: list[Any] = []
    step = max(1, len(a) // len(b))
    ai = 0
    for item in b:
        out.extend(a[ai : ai + step])
        ai += step
        out.append(item)
    out.extend(a[ai:])
    return out


def notices_at_sink(sink: Sink) -> Counter[str]:
    """Message-ID -> how many times the relay sink was given it."""
    return Counter(str(m["Message-ID"]) for m in sink.parsed())
