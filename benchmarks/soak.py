"""The soak of issue 17: a running `mailhelpdesk serve` under mixed, steady load for a long time,
SIGKILLed and restarted at random moments, then checked for loss, doubling and memory growth.

    python benchmarks/soak.py [--minutes 30] [--engine sqlite|postgresql] [--kills N]

Load, each from its own client thread, paced at a steady rate:
- SMTP: new requests, and replies to requests acknowledged earlier (same sender, In-Reply-To
  and References naming the request), resent until a 250 as an MTA does;
- IMAP: messages APPENDed to a private Dovecot mailbox (tests/dovecot.py) the daemon polls;
- API: `create_ticket` with an Idempotency-Key (resent with the same key after an error, and
  sometimes after a success, which must replay the same ticket) and `ticket_respond` to a ticket
  the API created, also with a key.

Kills happen at random moments in the first `--kill-window` of the run (half by default); the
rest is one uninterrupted daemon lifetime under the same load, so memory growth is measured on a
process that lives long. Memory (the proportional set size, Pss, of the daemon and every
process under it, its understanding pool included, from /proc; called RSS below) is sampled
every `--rss-every` seconds. At the end the load stops, the daemon drains (every kept message
processed, every IMAP message fetched) and the store is read:

- lost: an SMTP message answered 250, an IMAP message appended, or an API write answered 2xx
  that is not on a ticket;
- doubled: a Message-ID on two responses, an Idempotency-Key with two tickets or two responses,
  a replay that named another ticket;
- RSS: peak over all samples < `--rss-peak-mb` (250), and in the last lifetime the median of
  the last minute over the median of the first minute after warm-up < 1 + `--rss-growth` (10%).

Prints a summary (and writes it as JSON with `--json`); exits 1 on any loss, doubling or RSS
breach. tests/test_soak.py runs it at CI size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import smtplib
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import create_engine, text

from tests.dovecot import Dovecot, ImapUser
from tests.helpers import Daemon, crlf, make_mail, tree_memory_kb

SUPPORT = "support@helpdesk.test"


@dataclass
class Settings:
    minutes: float = 30.0
    engine: str = "sqlite"
    kills: int | None = None  # default: one per minute of the run, at least 2
    kill_window: float = 0.5
    smtp_per_s: float = 2.0
    imap_per_s: float = 0.5
    api_per_s: float = 1.0
    reply_share: float = 0.4
    rss_every: float = 2.0
    warmup_s: float = 120.0
    warmup_ops: int = 300  # and at least this many accepted operations since the restart
    rss_peak_mb: float = 250.0
    rss_growth: float = 0.10
    seed: int = 20261205
    keep: bool = False


@dataclass
class Ledger:
    """What the clients were told was accepted, and what they tried."""

    smtp: dict[str, str] = field(default_factory=dict)  # Message-ID -> "new" | "reply"
    imap: set[str] = field(default_factory=set)
    creates: dict[str, int] = field(default_factory=dict)  # key -> ticket number
    create_subjects: dict[str, str] = field(default_factory=dict)  # key -> subject
    responds: dict[str, str] = field(default_factory=dict)  # key -> marker in the content
    smtp_resends: int = 0
    api_retries: int = 0
    api_replays: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    api_5xx: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    life: int  # which daemon process (0 = first start, +1 per kill)
    rss_kb: int
    ops: int  # operations accepted so far (250s, appends, API 2xx)


class Soak:
    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.s = settings
        self.tmp = tmp
        self.rng = random.Random(settings.seed)
        self.ledger = Ledger()
        self.samples: list[Sample] = []
        self.kill_log: list[float] = []
        self.restarted_at: float | None = None
        self.restart_s: list[float] = []  # from SIGKILL until /healthz answered again
        self.ops_at_restart = 0
        self.life = 0
        self.stop_load = threading.Event()
        self.stop_all = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]
        self.t0 = 0.0
        self.postgres: Any = None
        self.dovecot = Dovecot(tmp / "dovecot")
        self.user: ImapUser | None = None
        self.daemon: Daemon | None = None
        self.token = ""
        self.db_url = ""

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        self.dovecot.start()
        self.user = self.dovecot.add_user("soak")
        mailbox = "\n".join(
            [
                "[[imap_mailboxes]]",
                'name = "soak"',
                f'host = "{self.dovecot.host}"',
                f"port = {self.dovecot.port}",
                'security = "none"',
                f'username = "{self.user.name}"',
                f'password = "{self.user.password}"',
                "idle = true",
                "poll_interval_s = 5",
            ]
        )
        extra = f"[api]\nrate_limit_requests = 1000000\n\n{mailbox}\n"
        (self.tmp / "daemon").mkdir()
        daemon = Daemon(self.tmp / "daemon", extra_config=extra)
        if self.s.engine == "postgresql":
            from tests.postgres import Postgres

            self.postgres = Postgres()
            url = self.postgres.create_database()
            daemon.config.write_text(
                daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
            )
            daemon.db_url = url
        self.db_url = daemon.db_url
        self.daemon = daemon
        daemon.start()
        out = daemon.cli("token", "create", "--name", "soak", "--ability", "all")
        self.token = out.stdout.strip().splitlines()[-1]

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
        self.dovecot.close()
        if self.postgres is not None:
            self.postgres.stop()

    # -- load ------------------------------------------------------------------------------

    def _paced(self, per_s: float, seed: int) -> Any:
        """Yield once per operation at a steady rate (Poisson arrivals) until the load stops."""
        rng = random.Random(seed)
        next_at = time.monotonic()
        n = 0
        while not self.stop_load.is_set():
            next_at += rng.expovariate(per_s)
            delay = next_at - time.monotonic()
            if delay > 0 and self.stop_load.wait(delay):
                return
            yield n, rng
            n += 1

    def smtp_client(self) -> None:
        assert self.daemon is not None
        threads: list[tuple[str, str, str]] = []  # (mid, sender, subject) acknowledged requests
        for n, rng in self._paced(self.s.smtp_per_s, self.s.seed + 1):
            headers: dict[str, str] = {}
            sender = f"smtp{n % 53}@customer.test"
            subject = f"soak smtp {self.run_id} {n}"
            kind = "new"
            if threads and rng.random() < self.s.reply_share:
                parent, sender, parent_subject = rng.choice(threads)
                headers = {"In-Reply-To": parent, "References": parent}
                subject = f"Re: {parent_subject}"
                kind = "reply"
            mid = f"<soak-smtp-{self.run_id}-{n}@customer.test>"
            body = f"Message {n} of the soak.\n" + "Some steady text to make it mail-sized.\n" * (
                rng.randint(5, 60)
            )
            raw = crlf(
                make_mail(
                    subject=subject, sender=sender, message_id=mid, body=body, headers=headers
                )
            )
            attempts = 0
            while True:  # like an MTA: resend until a 250, also after the load stopped
                attempts += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.daemon.smtp_port, timeout=30) as smtp:
                        smtp.sendmail(sender, [SUPPORT], raw)
                    break
                except (OSError, smtplib.SMTPException):
                    if self.stop_all.is_set():
                        return
                    time.sleep(0.2)
            with self.ledger.lock:
                self.ledger.smtp[mid] = kind
                self.ledger.smtp_resends += attempts - 1
            if kind == "new":
                threads.append((mid, sender, subject))

    def imap_client(self) -> None:
        assert self.user is not None
        for n, rng in self._paced(self.s.imap_per_s, self.s.seed + 2):
            mid = f"<soak-imap-{self.run_id}-{n}@customer.test>"
            raw = make_mail(
                subject=f"soak imap {self.run_id} {n}",
                sender=f"imap{n % 29}@customer.test",
                message_id=mid,
                body="Sent to the mailbox the helpdesk polls.\n" * rng.randint(3, 40),
            )
            self.dovecot.append(self.user, [raw])
            with self.ledger.lock:
                self.ledger.imap.add(mid)

    def _post(self, client: httpx.Client, path: str, key: str, body: dict[str, Any]) -> Any:
        """POST until the answer is final (2xx or a 4xx the work decided), resending the same key
        after connection errors, 5xx and 409 in progress, as a careful script does."""
        assert self.daemon is not None
        url = f"http://127.0.0.1:{self.daemon.http_port}{path}"
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        tries = 0
        while True:
            tries += 1
            try:
                resp = client.post(url, json=body, headers=headers)
            except httpx.HTTPError:
                resp = None
            if resp is not None and resp.status_code >= 500:
                with self.ledger.lock:
                    self.ledger.api_5xx += 1
            if resp is not None and resp.status_code < 500 and resp.status_code != 409:
                with self.ledger.lock:
                    self.ledger.api_retries += tries - 1
                return resp
            if self.stop_all.is_set():
                return None
            time.sleep(0.2)

    def api_client(self) -> None:
        created: list[tuple[int, str]] = []  # (ticket number, originator)
        with httpx.Client(timeout=30) as client:
            for n, rng in self._paced(self.s.api_per_s, self.s.seed + 3):
                if created and rng.random() < 0.4:
                    number, originator = rng.choice(created)
                    key = f"soak-respond-{self.run_id}-{n}"
                    marker = f"soakrsp{self.run_id}n{n}x"
                    body: dict[str, Any] = {
                        "ticket_number": number,
                        "from_email": originator,
                        "content": f"Follow-up {marker} from the API.",
                    }
                    resp = self._post(client, "/api/ticket_respond", key, body)
                    if resp is None:
                        return
                    if resp.status_code == 200:
                        with self.ledger.lock:
                            self.ledger.responds[key] = marker
                    else:
                        raise RuntimeError(f"ticket_respond {resp.status_code}: {resp.text}")
                    continue
                key = f"soak-create-{self.run_id}-{n}"
                originator = f"api{n % 41}@customer.test"
                subject = f"soak api {self.run_id} {n}"
                body = {
                    "originator_email_address": originator,
                    "data": {"subject": subject, "content": f"<p>Request {n} by the API.</p>"},
                }
                resp = self._post(client, "/api/create_ticket", key, body)
                if resp is None:
                    return
                if resp.status_code != 200:
                    raise RuntimeError(f"create_ticket {resp.status_code}: {resp.text}")
                number = int(resp.json()["data"]["ticket_number"])
                with self.ledger.lock:
                    self.ledger.creates[key] = number
                    self.ledger.create_subjects[key] = subject
                created.append((number, originator))
                if rng.random() < 0.15:  # a script that did not see the answer sends again
                    again = self._post(client, "/api/create_ticket", key, body)
                    if again is None:
                        return
                    with self.ledger.lock:
                        self.ledger.api_replays += 1
                        replayed = again.headers.get("Idempotent-Replayed") == "true"
                        same = (
                            again.status_code == 200
                            and int(again.json()["data"]["ticket_number"]) == number
                        )
                        if not (replayed and same):
                            self.ledger.replay_mismatches.append(
                                f"{key}: {again.status_code} {again.text[:200]}"
                            )

    def killer(self, at: list[float]) -> None:
        """SIGKILL at each moment (or at once, when the restart before took past it)."""
        assert self.daemon is not None
        for moment in at:
            time.sleep(max(0.0, self.t0 + moment - time.monotonic()))
            self.daemon.kill()
            self.kill_log.append(time.monotonic() - self.t0)
            self.ops_at_restart = self.ops()
            self.life += 1
            self.daemon.start()
            self.restarted_at = time.monotonic() - self.t0
            self.restart_s.append(self.restarted_at - self.kill_log[-1])

    def sampler(self) -> None:
        assert self.daemon is not None
        while not self.stop_all.wait(self.s.rss_every):
            proc = self.daemon.proc
            if proc is None or proc.poll() is not None:
                continue
            kb = tree_memory_kb(proc.pid)
            if kb:
                self.samples.append(Sample(time.monotonic() - self.t0, self.life, kb, self.ops()))

    def ops(self) -> int:
        led = self.ledger
        return len(led.smtp) + len(led.imap) + len(led.creates) + len(led.responds)

    # -- the run ---------------------------------------------------------------------------

    def kill_moments(self) -> list[float]:
        total = self.s.minutes * 60
        count = self.s.kills if self.s.kills is not None else max(2, round(self.s.minutes))
        window = total * self.s.kill_window
        # random moments, at least 4 s apart (a restart takes a second or two)
        while True:
            at = sorted(self.rng.uniform(3.0, window) for _ in range(count))
            if all(b - a >= 4.0 for a, b in itertools.pairwise(at)):
                return at

    def run(self) -> dict[str, Any]:
        assert self.daemon is not None
        at = self.kill_moments()
        self.t0 = time.monotonic()
        workers = [
            threading.Thread(target=self.smtp_client, name="smtp"),
            threading.Thread(target=self.imap_client, name="imap"),
            threading.Thread(target=self.api_client, name="api"),
        ]
        chaos = threading.Thread(target=self.killer, args=(at,), name="killer")
        rss = threading.Thread(target=self.sampler, name="rss")
        for t in [*workers, chaos, rss]:
            t.start()
        # the load runs its minutes, and at least the planned kill-free stretch after the last
        # restart (on a busy machine a restart can take long enough to eat into it)
        tail_s = self.s.minutes * 60 * (1 - self.s.kill_window)
        self.stop_load.wait(self.s.minutes * 60 * self.s.kill_window)
        chaos.join()
        restarted = self.restarted_at or 0.0
        end = max(self.s.minutes * 60, restarted + tail_s)
        self.stop_load.wait(max(0.0, self.t0 + end - time.monotonic()))
        # and enough work in the last lifetime to judge its memory: warm-up, then twice as much
        while self.ops() - self.ops_at_restart < 3 * self.s.warmup_ops:
            time.sleep(0.5)
        self.stop_load.set()
        for t in workers:  # each finishes what it started (an SMTP resend, an API retry)
            t.join(timeout=300)
        load_s = time.monotonic() - self.t0
        drained_in = self.drain()
        self.stop_all.set()
        rss.join()
        return self.verdict(load_s, drained_in)

    def drain(self, timeout: float = 600) -> float:
        """Until every kept message is processed and every appended IMAP message is on a
        ticket (the poller may still be fetching after the daemon reports idle)."""
        assert self.daemon is not None
        start = time.monotonic()
        engine = create_engine(self.db_url)
        try:
            deadline = start + timeout
            while time.monotonic() < deadline:
                self.daemon.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
                with engine.connect() as conn:
                    seen = conn.execute(
                        text(
                            "SELECT COUNT(DISTINCT message_id) FROM responses "
                            "WHERE message_id LIKE :p"
                        ),
                        {"p": f"<soak-imap-{self.run_id}-%"},
                    ).scalar_one()
                if seen >= len(self.ledger.imap):
                    break
                time.sleep(0.5)
        finally:
            engine.dispose()
        return time.monotonic() - start

    # -- the verdict -----------------------------------------------------------------------

    def verdict(self, load_s: float, drained_in: float) -> dict[str, Any]:
        engine = create_engine(self.db_url)
        like = f"<soak-%-{self.run_id}-%"
        try:
            with engine.connect() as conn:
                on_tickets = Counter(
                    str(mid)
                    for (mid,) in conn.execute(
                        text("SELECT message_id FROM responses WHERE message_id LIKE :p"),
                        {"p": like},
                    )
                )
                per_subject = Counter(
                    str(s)
                    for (s,) in conn.execute(
                        text("SELECT subject FROM tickets WHERE subject LIKE :p"),
                        {"p": f"soak api {self.run_id} %"},
                    )
                )
                numbers = {
                    str(s): int(n)
                    for s, n in conn.execute(
                        text("SELECT subject, number FROM tickets WHERE subject LIKE :p"),
                        {"p": f"soak api {self.run_id} %"},
                    )
                }
                markers = Counter[str]()
                for (body,) in conn.execute(
                    text(
                        "SELECT plain_text FROM responses WHERE plain_text LIKE :p "
                        "AND message_id IS NULL"
                    ),
                    {"p": f"%soakrsp{self.run_id}n%"},
                ):
                    for word in str(body).split():
                        if word.startswith(f"soakrsp{self.run_id}n"):
                            markers[word] += 1
                not_done = conn.execute(
                    text("SELECT COUNT(*) FROM inbound_messages WHERE state != 'done'")
                ).scalar_one()
                outcomes = Counter(
                    str(o) for (o,) in conn.execute(text("SELECT outcome FROM inbound_messages"))
                )
                tickets = conn.execute(text("SELECT COUNT(*) FROM tickets")).scalar_one()
        finally:
            engine.dispose()
        led = self.ledger
        accepted = set(led.smtp) | led.imap
        lost_mail = sorted(accepted - set(on_tickets))
        doubled_mail = sorted(m for m, c in on_tickets.items() if c > 1)
        lost_creates = sorted(
            k for k, s in led.create_subjects.items() if numbers.get(s) != led.creates[k]
        )
        doubled_creates = sorted(s for s, c in per_subject.items() if c > 1)
        lost_responds = sorted(k for k, m in led.responds.items() if markers[m] == 0)
        doubled_responds = sorted(m for m, c in markers.items() if c > 1)
        rss = self.rss_figures()
        summary: dict[str, Any] = {
            "settings": asdict(self.s),
            "engine": self.s.engine,
            "load_s": round(load_s, 1),
            "drained_in_s": round(drained_in, 1),
            "kills": len(self.kill_log),
            "kill_moments_s": [round(k, 1) for k in self.kill_log],
            "restart_s_max": round(max(self.restart_s, default=0.0), 1),
            "smtp_accepted": len(led.smtp),
            "smtp_replies": sum(1 for k in led.smtp.values() if k == "reply"),
            "smtp_resends": led.smtp_resends,
            "imap_appended": len(led.imap),
            "api_creates": len(led.creates),
            "api_responds": len(led.responds),
            "api_retries": led.api_retries,
            "api_replays": led.api_replays,
            "api_5xx_seen": led.api_5xx,
            "tickets": tickets,
            "inbound_outcomes": dict(outcomes),
            "inbound_not_done": not_done,
            "lost": len(lost_mail) + len(lost_creates) + len(lost_responds),
            "lost_examples": (lost_mail + lost_creates + lost_responds)[:10],
            "doubled": len(doubled_mail)
            + len(doubled_creates)
            + len(doubled_responds)
            + len(led.replay_mismatches),
            "doubled_examples": (
                doubled_mail + doubled_creates + doubled_responds + led.replay_mismatches
            )[:10],
            "rss": rss,
        }
        failures = []
        if summary["lost"]:
            failures.append(f"{summary['lost']} lost")
        if summary["doubled"]:
            failures.append(f"{summary['doubled']} doubled")
        if not_done:
            failures.append(f"{not_done} inbound rows not done")
        if rss["peak_mb"] >= self.s.rss_peak_mb:
            failures.append(f"RSS peak {rss['peak_mb']} MB >= {self.s.rss_peak_mb} MB")
        if rss["growth"] is None:
            failures.append("too few RSS samples after warm-up to judge growth")
        elif rss["growth"] >= self.s.rss_growth:
            failures.append(f"RSS grew {rss['growth']:.1%} after warm-up")
        summary["failures"] = failures
        summary["ok"] = not failures
        return summary

    def rss_figures(self) -> dict[str, Any]:
        """Peak over every sample; growth over the last daemon lifetime: the median of its last
        minute (or last sixth, if shorter) over the median of the minute after warm-up
        (`warmup_s` seconds and `warmup_ops` operations after the restart)."""
        if not self.samples:
            return {"samples": 0, "peak_mb": 0.0, "growth": None}
        peak = max(s.rss_kb for s in self.samples) / 1024
        last_life = self.samples[-1].life
        life = [s for s in self.samples if s.life == last_life]
        born, born_ops = life[0].t, life[0].ops
        # warm-up: a time and an amount of work since the restart (a busy machine is slower)
        steady = [
            s
            for s in life
            if s.t - born >= self.s.warmup_s and s.ops - born_ops >= self.s.warmup_ops
        ]
        figures: dict[str, Any] = {
            "samples": len(self.samples),
            "peak_mb": round(peak, 1),
            "last_life_s": round(life[-1].t - born, 1),
            "last_life_samples": len(life),
            "growth": None,
        }
        if len(steady) < 6:
            return figures
        span = steady[-1].t - steady[0].t
        window = min(60.0, span / 6)
        first = [s.rss_kb for s in steady if s.t - steady[0].t <= window]
        last = [s.rss_kb for s in steady if steady[-1].t - s.t <= window]
        base, end = statistics.median(first), statistics.median(last)
        figures.update(
            after_warmup_mb=round(base / 1024, 1),
            end_mb=round(end / 1024, 1),
            max_after_warmup_mb=round(max(s.rss_kb for s in steady) / 1024, 1),
            measured_s=round(span, 1),
            growth=round(end / base - 1, 4),
        )
        return figures


def print_summary(summary: dict[str, Any]) -> None:
    rss = summary["rss"]
    print(
        f"soak ({summary['engine']}): {summary['load_s']:.0f} s of load, "
        f"{summary['kills']} SIGKILLs at {summary['kill_moments_s']} s "
        f"(back within {summary['restart_s_max']} s), "
        f"drained in {summary['drained_in_s']:.0f} s"
    )
    print(
        f"  SMTP: {summary['smtp_accepted']} answered 250 ({summary['smtp_replies']} replies), "
        f"{summary['smtp_resends']} resends after errors"
    )
    print(f"  IMAP: {summary['imap_appended']} appended to the polled mailbox")
    print(
        f"  API: {summary['api_creates']} create_ticket and {summary['api_responds']} "
        f"ticket_respond answered 200; {summary['api_retries']} retries after errors, "
        f"{summary['api_replays']} deliberate replays, {summary['api_5xx_seen']} 5xx seen"
    )
    print(
        f"  store: {summary['tickets']} tickets; inbound outcomes {summary['inbound_outcomes']}; "
        f"{summary['inbound_not_done']} not done"
    )
    print(f"  lost: {summary['lost']} {summary['lost_examples']}")
    print(f"  doubled: {summary['doubled']} {summary['doubled_examples']}")
    growth = "n/a" if rss["growth"] is None else f"{rss['growth']:+.1%}"
    print(
        f"  RSS: peak {rss['peak_mb']} MB over {rss['samples']} samples; last lifetime "
        f"{rss.get('last_life_s')} s: {rss.get('after_warmup_mb')} MB after warm-up, "
        f"{rss.get('end_mb')} MB at the end (max {rss.get('max_after_warmup_mb')}), growth {growth}"
    )
    print("  verdict: " + ("OK" if summary["ok"] else "FAILED: " + "; ".join(summary["failures"])))


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path | None]:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--engine", choices=["sqlite", "postgresql"], default=d.engine)
    p.add_argument("--kills", type=int, default=None, help="default: one per minute, at least 2")
    p.add_argument("--kill-window", type=float, default=d.kill_window)
    p.add_argument("--smtp-per-s", type=float, default=d.smtp_per_s)
    p.add_argument("--imap-per-s", type=float, default=d.imap_per_s)
    p.add_argument("--api-per-s", type=float, default=d.api_per_s)
    p.add_argument("--rss-every", type=float, default=d.rss_every)
    p.add_argument("--warmup-s", type=float, default=None, help="default: min(120, 1/6 of run)")
    p.add_argument("--warmup-ops", type=int, default=d.warmup_ops)
    p.add_argument("--rss-peak-mb", type=float, default=d.rss_peak_mb)
    p.add_argument("--rss-growth", type=float, default=d.rss_growth)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    a = p.parse_args(argv)
    warmup = a.warmup_s if a.warmup_s is not None else min(120.0, a.minutes * 60 / 6)
    settings = Settings(
        minutes=a.minutes,
        engine=a.engine,
        kills=a.kills,
        kill_window=a.kill_window,
        smtp_per_s=a.smtp_per_s,
        imap_per_s=a.imap_per_s,
        api_per_s=a.api_per_s,
        rss_every=a.rss_every,
        warmup_s=warmup,
        warmup_ops=a.warmup_ops,
        rss_peak_mb=a.rss_peak_mb,
        rss_growth=a.rss_growth,
        seed=a.seed,
        keep=a.keep,
    )
    return settings, a.json


def main(argv: list[str] | None = None) -> int:
    settings, json_path = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mailhelpdesk-soak-"))
    tmp.chmod(0o755)  # Dovecot's auth process reads the passwd-files under it
    soak = Soak(settings, tmp)
    try:
        soak.setup()
        summary = soak.run()
    finally:
        soak.close()
    summary["folder"] = str(tmp) if settings.keep else None
    if not settings.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(summary)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
