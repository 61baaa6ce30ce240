"""Scale-out over PostgreSQL: filed msg/s of one SQLite daemon, one PostgreSQL daemon and two
PostgreSQL daemons side by side, on the same messages, in one run; and the database load of a
message (transactions, rows, statements) for the sizing note in docs/operations.md.

    .venv/bin/python benchmarks/bench_fleet.py [--messages 600] [--rounds 3] [--connections 8]
    .venv/bin/python benchmarks/bench_fleet.py --full-fleet   # the issue's fleet test, full size

Each round runs the three set-ups one after another, in an order rotated every round (the
baseline, one SQLite daemon, is alternated with the product: PostgreSQL with 1 and 2 daemons),
each on a fresh database with the daemons already started: `--connections` SMTP clients send
the same N generated 1.7 KB messages (each its own sender and Message-ID) spread over the
daemons' listeners, and the clock stops when the last one is filed (a ticket committed with its
notices queued: nothing pending in the spool). Figures are medians over the rounds, ratios the
median of each round's ratio. PostgreSQL runs with pg_stat_statements loaded, so the statements
per message are counted by the server itself, next to pg_stat_database's transactions and rows.

`--full-fleet` runs tests/test_fleet.py's SIGKILL scenario at the issue's size (3,000 messages
over SMTP, 1,000 over IMAP, 1,000 create_ticket keys each sent twice) and prints its outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailhelpdesk.store.db import make_engine
from tests.helpers import Daemon, crlf, make_mail
from tests.postgres import Postgres

ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("sqlite x1", "postgresql x1", "postgresql x2")
STAT_COLUMNS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")


def messages(count: int) -> list[bytes]:
    """N distinct messages of about 1.7 KB (the realistic corpus's median size)."""
    filler = "The invoice for order {i} does not match the delivery note; details below.\n" * 18
    return [
        crlf(
            make_mail(
                subject=f"bench fleet {i}",
                sender=f"Customer {i} <b{i}@customer.test>",
                message_id=f"<bench-fleet-{i}-{time.time_ns()}@customer.test>",
                body=filler.format(i=i),
            )
        )
        for i in range(count)
    ]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


@contextlib.contextmanager
def measured_server() -> Iterator[tuple[Postgres, str]]:
    """A private PostgreSQL with pg_stat_statements loaded (a restart of the cluster, same port
    and data) and created, and its admin URL; stopped after the block."""
    server = Postgres()
    try:
        auto = server.root / "data" / "postgresql.auto.conf"
        auto.write_text(
            auto.read_text() + "shared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = all\n"
        )
        server.pause()
        server.resume()
        admin = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/postgres"
        engine = make_engine(admin)
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        engine.dispose()
        yield server, admin
    finally:
        server.stop()


@contextlib.contextmanager
def settled_daemon(server: Postgres, prefix: str) -> Iterator[tuple[Daemon, str, str]]:
    """One daemon on a fresh database of `server`, past its start-up jobs' first round:
    (the daemon, the database URL, the database name); stopped after the block."""
    url = server.create_database()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (daemon,) = start_daemons(root, url, 1)
        try:
            daemon.wait_idle(timeout=120, sending=True)
            time.sleep(15)  # the start-up jobs' first round is over
            yield daemon, url, url.rsplit("/", 1)[1]
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the daemon's home: config, spool, logs


def start_daemons(root: Path, url: str | None, count: int) -> list[Daemon]:
    """`count` daemons on the PostgreSQL `url`, or (None) one daemon on its own SQLite file."""
    daemons = []
    for i in range(count):
        home = root / f"d{i}"
        home.mkdir(parents=True)
        daemon = Daemon(home)
        if url is not None:
            daemon.config.write_text(
                daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
            )
        daemons.append(daemon)
    daemons[0].start(timeout=180)  # the first creates the schema
    for daemon in daemons[1:]:
        daemon.start(timeout=180)
    return daemons


def send_all(daemons: list[Daemon], mails: list[bytes], connections: int) -> None:
    """`connections` SMTP sessions, each sending its share; session i goes to daemon i % n."""
    errors: list[BaseException] = []

    def client(index: int) -> None:
        port = daemons[index % len(daemons)].smtp_port
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                for raw in mails[index::connections]:
                    smtp.sendmail("bench@customer.test", ["support@helpdesk.test"], raw)
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def filed(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM inbound_messages WHERE state <> 'new'")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def pg_counters(admin_url: str, database: str) -> dict[str, int]:
    engine = make_engine(admin_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database WHERE datname = :d"),
                {"d": database},
            ).one()
            calls = conn.execute(
                text(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :d"
                ),
                {"d": database},
            ).scalar_one()
        found = dict(zip(STAT_COLUMNS, (int(v) for v in row), strict=True))
        found["statements"] = int(calls)
        return found
    finally:
        engine.dispose()


def one_setup(name: str, server: Postgres, mails: list[bytes], connections: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    postgres = name.startswith("postgresql")
    url = server.create_database() if postgres else None
    daemons = start_daemons(root, url, int(name[-1]))
    db_url = url or daemons[0].db_url
    database = url.rsplit("/", 1)[1] if url else ""
    admin = url.rsplit("/", 1)[0] + "/postgres" if url else ""
    try:
        daemons[0].wait_idle(timeout=120, sending=True)  # start-up work done
        before = pg_counters(admin, database) if postgres else {}
        started = time.perf_counter()
        send_all(daemons, mails, connections)
        deadline = time.monotonic() + 1800
        while filed(db_url) < len(mails):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: not filed in time")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        # the notices too, then stop: a backend leaving flushes its pending statistics
        daemons[0].wait_idle(timeout=600, sending=True)
    finally:
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)  # the daemons' homes (and the SQLite file)
    after = pg_counters(admin, database) if postgres else {}
    result: dict[str, Any] = {"rate": len(mails) / seconds, "seconds": seconds}
    for key, value in after.items():
        result[f"{key}_per_msg"] = (value - before[key]) / len(mails)
    return result


def compare(args: argparse.Namespace) -> None:
    print(f"machine before: {uptime()}")
    mails = messages(args.messages)
    with measured_server() as (server, _admin):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUPS}
        for round_no in range(args.rounds):
            order = SETUPS[round_no % 3 :] + SETUPS[: round_no % 3]
            for name in order:
                result = one_setup(name, server, mails, args.connections)
                runs[name].append(result)
                print(
                    f"round {round_no + 1} {name:14} {result['rate']:7.1f} msg/s "
                    f"({result['seconds']:.1f} s)",
                    flush=True,
                )
    print(f"machine after: {uptime()}")
    print(f"\n{args.messages} messages, {args.connections} SMTP connections, {args.rounds} rounds")
    for name in SETUPS:
        rates = [r["rate"] for r in runs[name]]
        print(f"{name:14} median {statistics.median(rates):7.1f} msg/s  (runs {rates})")
    for name in SETUPS[1:]:
        ratios = [p["rate"] / s["rate"] for p, s in zip(runs[name], runs["sqlite x1"], strict=True)]
        print(f"{name} / sqlite x1: median ratio {statistics.median(ratios):.2f}")
    ratios = [
        b["rate"] / a["rate"]
        for a, b in zip(runs["postgresql x1"], runs["postgresql x2"], strict=True)
    ]
    print(f"postgresql x2 / postgresql x1: median ratio {statistics.median(ratios):.2f}")
    print("\nPostgreSQL load per filed message (median over rounds):")
    for name in SETUPS[1:]:
        keys = [k for k in runs[name][0] if k.endswith("_per_msg")]
        figures = ", ".join(
            f"{k.removesuffix('_per_msg')} {statistics.median(r[k] for r in runs[name]):.1f}"
            for k in keys
        )
        print(f"  {name}: {figures}")


def idle_load(seconds: float) -> None:
    """What one PostgreSQL daemon costs the database while it has nothing to do (its loops
    polling the spool and the outbox, its lease renewals), per second, nobody polling /healthz:
    the per-message figures above include this for the length of each run."""
    with (
        measured_server() as (server, admin),
        settled_daemon(server, "bench-fleet-idle-") as (_daemon, _url, database),
    ):
        before = pg_counters(admin, database)
        time.sleep(seconds)  # measuring an idle daemon: nothing to wait for but time
        after = pg_counters(admin, database)
    figures = ", ".join(f"{k} {(after[k] - before[k]) / seconds:.2f}" for k in after)
    print(f"one idle PostgreSQL daemon, per second over {seconds:.0f} s: {figures}")


def load_per_message(count: int, connections: int, idle_s: float = 30) -> None:
    """The database work of filing and notifying one message, net of what the daemon does
    anyway: one PostgreSQL daemon is measured idle for `idle_s` first, then given `count`
    messages; progress is read once a second on one connection (nobody polls /healthz), and
    the idle rate times the run's length is taken off the counters."""
    with (
        measured_server() as (server, admin),
        settled_daemon(server, "bench-fleet-load-") as (daemon, url, database),
    ):
        watch = make_engine(url)
        try:
            idle0 = pg_counters(admin, database)
            time.sleep(idle_s)  # measuring the idle daemon: nothing to wait for but time
            idle1 = pg_counters(admin, database)
            started = time.perf_counter()
            send_all([daemon], messages(count), connections)
            with watch.connect() as conn:
                while True:
                    left = conn.execute(
                        text(
                            "SELECT (SELECT count(*) FROM inbound_messages WHERE state = 'new')"
                            " + (SELECT count(*) FROM outbox WHERE state = 'queued')"
                            " + (SELECT count(*) < :n FROM inbound_messages)::int"
                        ),
                        {"n": count},
                    ).scalar_one()
                    conn.rollback()
                    if not left:
                        break
                    time.sleep(1)
            seconds = time.perf_counter() - started
            done = pg_counters(admin, database)
        finally:
            watch.dispose()
    print(f"{count} messages filed and notified in {seconds:.1f} s by one PostgreSQL daemon")
    for key in done:
        idle_rate = (idle1[key] - idle0[key]) / idle_s
        gross = (done[key] - idle1[key]) / count
        net = (done[key] - idle1[key] - idle_rate * seconds) / count
        print(
            f"  {key:14} per message {net:6.1f} net of idle ({gross:.1f} gross; idle {idle_rate:.2f}/s)"
        )


def full_fleet() -> int:
    """The fleet test's SIGKILL scenario at the issue's size, through pytest (same checks)."""
    print(f"machine before: {uptime()}")
    env = {
        **os.environ,
        "FLEET_SMTP": "3000",
        "FLEET_IMAP": "1000",
        "FLEET_KEYS": "1000",
        "PYTHONPATH": str(ROOT),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-o",
            "timeout=3600",
            "tests/test_fleet.py",
        ],
        cwd=ROOT,
        env=env,
        check=False,
    )
    print(f"full fleet: exit {done.returncode} in {time.perf_counter() - started:.0f} s")
    print(f"machine after: {uptime()}")
    return done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--full-fleet", action="store_true")
    parser.add_argument(
        "--idle", type=float, default=0, metavar="SECONDS", help="measure an idle daemon"
    )
    parser.add_argument(
        "--load", action="store_true", help="the database work per message, net of idle"
    )
    args = parser.parse_args()
    if args.load:
        print(f"machine before: {uptime()}")
        load_per_message(args.messages, args.connections)
        print(f"machine after: {uptime()}")
        return
    if args.idle:
        idle_load(args.idle)
        return
    if args.full_fleet:
        sys.exit(full_fleet())
    compare(args)


if __name__ == "__main__":
    main()
