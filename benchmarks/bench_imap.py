"""IMAP ingest throughput next to the raw fetch rate of the same messages, on a private Dovecot.

    .venv/bin/python benchmarks/bench_imap.py [--messages 2000] [--body-bytes 2500] [--skip-daemon]

Run from the repository root (it uses tests/dovecot.py and tests/helpers.py). Three figures, same
INBOX of N unique generated messages:

1. raw fetch: a plain aioimaplib client, UID FETCH BODY.PEEK[] in batches of 50, no processing;
2. poller keep: `IMAPPoller` in this process, from start to the last message kept in a SQLite
   spool (synchronous=FULL) and flagged \\Seen: fetch + commit + mark;
3. daemon ingest: `mailhelpdesk serve` with the mailbox configured, from the first message kept to
   the last one applied (tickets created) by the ingest pipeline, from the stored timestamps.

The ratios to the raw fetch rate are printed with them.

    .venv/bin/python benchmarks/bench_imap.py --vs-smtp [--rounds 3] [--corpus DIR]

compares the whole pipeline fed by IMAP with the same pipeline fed by SMTP (8 connections) on
the same messages (generated, or the *.eml of a gen_corpus.py folder in name order), the two
alternated `--rounds` times, each in a fresh daemon; the rate of each is messages / (last
processed_at - first received_at) from the store, so both are measured the same way, and the
median of the per-round ratios IMAP / SMTP is reported (issue 16: >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aioimaplib import aioimaplib

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.config import ImapMailboxConfig
from mailhelpdesk.store import schema
from mailhelpdesk.store.db import make_engine
from mailhelpdesk.transports.imap_poller import IMAPPoller
from tests.dovecot import Dovecot, ImapUser
from tests.helpers import Daemon, crlf, make_mail

BATCH = 50
PARAGRAPH = (
    "Hello, since the update yesterday the invoice export stops at 80% and the browser shows a "
    "spinner forever. We tried two browsers and cleared the cache. Could you have a look? "
)


def messages(n: int, body_bytes: int) -> list[bytes]:
    body = (PARAGRAPH * (body_bytes // len(PARAGRAPH) + 1))[:body_bytes]
    return [
        make_mail(
            subject=f"Export stuck #{i}",
            sender=f"Customer {i % 97} <c{i % 97}@customer.test>",
            message_id=f"<bench-{i}-{time.time_ns()}@customer.test>",
            body=f"Ticket {i}.\n{body}\n",
        )
        for i in range(n)
    ]


async def raw_fetch(dovecot: Dovecot, user: ImapUser) -> tuple[int, int, float]:
    """(messages, bytes, seconds) for fetching the whole INBOX with a bare aioimaplib client."""
    started = time.perf_counter()
    client = aioimaplib.IMAP4(dovecot.host, dovecot.port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(user.name, user.password)
    await client.select("INBOX")
    search = await client.uid_search("UID", "1:*", charset=None)
    uids = [int(x) for line in search.lines[:-1] for x in line.split() if x.isdigit()]
    count = size = 0
    for start in range(0, len(uids), BATCH):
        chunk = uids[start : start + BATCH]
        response = await client.uid("fetch", f"{chunk[0]}:{chunk[-1]}", "(UID BODY.PEEK[])")
        for line in response.lines:
            if isinstance(line, bytearray):
                count += 1
                size += len(line)
    elapsed = time.perf_counter() - started
    await client.logout()
    return count, size, elapsed


async def poller_keep(dovecot: Dovecot, user: ImapUser, n: int, work: Path) -> float:
    """Seconds from IMAPPoller.start() to the N-th message kept and marked."""
    engine = make_engine(f"sqlite:///{work / 'poller.db'}")
    schema.upgrade(engine)
    box = ImapMailboxConfig(
        name="bench",
        host=dovecot.host,
        port=dovecot.port,
        security="none",
        username=user.name,
        password=user.password,
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
    poller = IMAPPoller(box, engine=engine, clock=SystemClock(), executor=executor)
    started = time.perf_counter()
    poller.start()
    while (poller.status()["last_uid"] or 0) < n or poller.status()["state"] == "syncing":
        if poller.status()["state"] == "error":
            raise RuntimeError(f"poller failed: {poller.status()['last_error']}")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await poller.stop()
    executor.shutdown()
    engine.dispose()
    return elapsed


def daemon_ingest(dovecot: Dovecot, user: ImapUser, n: int, work: Path) -> tuple[float, float]:
    """(seconds from first kept to last applied, seconds from first kept to last kept)."""
    (work / "daemon").mkdir()
    extra = (
        f'[[imap_mailboxes]]\nname = "bench"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'security = "none"\nusername = "{user.name}"\npassword = "{user.password}"\n'
    )
    daemon = Daemon(work / "daemon", extra_config=extra)
    daemon.start(timeout=60)
    try:
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            with sqlite3.connect(work / "daemon" / "helpdesk.db", timeout=30) as conn:
                done = conn.execute(
                    "SELECT COUNT(*) FROM inbound_messages WHERE state != 'new'"
                ).fetchone()[0]
            if done >= n:
                break
            time.sleep(0.2)
    finally:
        daemon.stop(timeout=120)
    with sqlite3.connect(work / "daemon" / "helpdesk.db") as conn:
        first, last_kept, last_done, states = conn.execute(
            "SELECT MIN(received_at), MAX(received_at), MAX(processed_at), GROUP_CONCAT(DISTINCT state)"
            " FROM inbound_messages"
        ).fetchone()
    if states != "done":
        print(f"  warning: spool states {states}")
    t0 = datetime.fromisoformat(first)
    return (datetime.fromisoformat(last_done) - t0).total_seconds(), (
        datetime.fromisoformat(last_kept) - t0
    ).total_seconds()


def _pipeline_rate(db: Path, n: int) -> float:
    """n / (last processed - first received), from the store; every message must be done."""
    with sqlite3.connect(db) as conn:
        first, last, done = conn.execute(
            "SELECT MIN(received_at), MAX(processed_at), SUM(state = 'done') FROM inbound_messages"
        ).fetchone()
    if done != n:
        raise RuntimeError(f"{done} of {n} messages done")
    return n / (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def _wait_all_done(daemon: Daemon, db: Path, n: int) -> None:
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=30) as conn:
            done = conn.execute(
                "SELECT COUNT(*) FROM inbound_messages WHERE state != 'new'"
            ).fetchone()[0]
        if done >= n:
            return
        time.sleep(0.2)
    raise TimeoutError("ingest did not finish")


def smtp_pipeline(mails: list[bytes], work: Path, connections: int = 8) -> float:
    """The pipeline rate with the messages sent over SMTP (one queue, `connections` sessions)."""
    import smtplib
    import threading

    work.mkdir()
    daemon = Daemon(work)
    daemon.start(timeout=60)
    queue, lock = iter(mails), threading.Lock()

    def send(_n: int) -> None:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=120) as smtp:
            while True:
                with lock:
                    raw = next(queue, None)
                if raw is None:
                    return
                smtp.sendmail("c@customer.test", ["support@helpdesk.test"], raw)

    try:
        with ThreadPoolExecutor(max_workers=connections) as pool:
            list(pool.map(send, range(connections)))
        _wait_all_done(daemon, work / "helpdesk.db", len(mails))
    finally:
        daemon.stop(timeout=120)
    return _pipeline_rate(work / "helpdesk.db", len(mails))


def imap_pipeline(dovecot: Dovecot, user: ImapUser, n: int, work: Path) -> float:
    """The pipeline rate with the messages in `user`'s INBOX."""
    work.mkdir()
    extra = (
        f'[[imap_mailboxes]]\nname = "bench"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'security = "none"\nusername = "{user.name}"\npassword = "{user.password}"\n'
    )
    daemon = Daemon(work, extra_config=extra)
    daemon.start(timeout=60)
    try:
        _wait_all_done(daemon, work / "helpdesk.db", n)
    finally:
        daemon.stop(timeout=120)
    return _pipeline_rate(work / "helpdesk.db", n)


def vs_smtp(mails: list[bytes], rounds: int) -> None:
    import statistics

    work = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    with open("/proc/loadavg") as load:
        print(
            f"IMAP vs SMTP pipeline, {len(mails)} messages, {rounds} rounds alternated, "
            f"load average {load.read().split()[:3]}"
        )
    ratios = []
    with Dovecot() as dovecot:
        for round_ in range(1, rounds + 1):
            user = dovecot.add_user(f"bench{round_}")
            dovecot.append(user, mails)
            smtp_rate = smtp_pipeline(mails, work / f"smtp{round_}")
            imap_rate = imap_pipeline(dovecot, user, len(mails), work / f"imap{round_}")
            ratios.append(imap_rate / smtp_rate)
            print(
                f"round {round_}: SMTP pipeline {smtp_rate:.0f} msg/s, IMAP pipeline "
                f"{imap_rate:.0f} msg/s, ratio {ratios[-1]:.2f}",
                flush=True,
            )
    print(f"median ratio IMAP / SMTP: {statistics.median(ratios):.2f}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--body-bytes", type=int, default=2500)
    parser.add_argument("--skip-daemon", action="store_true", help="only raw fetch and poller keep")
    parser.add_argument("--vs-smtp", action="store_true", help="IMAP pipeline / SMTP pipeline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", type=Path, help="a folder of .eml files (gen_corpus.py)")
    args = parser.parse_args()
    if args.vs_smtp:
        if args.corpus:
            mails = [crlf(p.read_bytes()) for p in sorted(args.corpus.glob("*.eml"))]
        else:
            mails = [crlf(m) for m in messages(args.messages, args.body_bytes)]
        vs_smtp(mails, args.rounds)
        return
    n = args.messages
    work = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    with Dovecot() as dovecot:
        user = dovecot.add_user("bench")
        started = time.perf_counter()
        mails = messages(n, args.body_bytes)
        dovecot.append(user, mails)
        print(
            f"Dovecot INBOX: {n} messages, {sum(len(m) for m in mails) / n / 1024:.1f} KiB average "
            f"(appended in {time.perf_counter() - started:.1f}s)"
        )

        count, size, raw_s = asyncio.run(raw_fetch(dovecot, user))
        assert count == n, f"raw fetch got {count} of {n}"
        raw_rate = n / raw_s
        print(
            f"raw fetch (aioimaplib, {BATCH}/UID FETCH, no processing): {raw_s:.2f}s  "
            f"{raw_rate:,.0f} msg/s  {size / raw_s / 1e6:.1f} MB/s"
        )

        keep_s = asyncio.run(poller_keep(dovecot, user, n, work))
        keep_rate = n / keep_s
        print(
            f"poller keep (fetch + spool commit + \\Seen):          {keep_s:.2f}s  "
            f"{keep_rate:,.0f} msg/s  ratio to raw {keep_rate / raw_rate:.2f}"
        )

        if not args.skip_daemon:
            ingest_s, kept_s = daemon_ingest(dovecot, user, n, work)
            ingest_rate = n / ingest_s
            print(
                f"daemon ingest (kept -> tickets, full pipeline):       {ingest_s:.2f}s  "
                f"{ingest_rate:,.0f} msg/s  ratio to raw {ingest_rate / raw_rate:.3f}  "
                f"(all {n} kept after {kept_s:.2f}s, beside the pipeline)"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
