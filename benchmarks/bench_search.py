"""Ticket list and search (issue 13): 12 typical GET /api/v1/tickets requests over HTTP against a
real daemon, next to the same SQL statements run straight in the database, on SQLite and on
PostgreSQL, over a generated desk of 100,000 tickets with 300,000 messages.

The desk is generated through the store (not over SMTP), in batches of 5,000 tickets: Core
executemany on SQLite, COPY on PostgreSQL: queues, contacts, tickets with realistic subjects,
1-5 messages each (~100 words from a Zipf-like vocabulary, the odd order number and phrase),
tags, custom fields and some SLA breach events. The rows go in at migration 0016; the search
migration (0017) then builds the full-text documents and the indexes from them in one pass, as
an upgrade of a full desk does, and its triggers keep them from then on, as in production.

For each request and engine, `--rounds` times: `--samples` runs of the baseline (the list's own
SELECT and count, built by store/ticket_query.statements, executed on one open connection: no
HTTP, no auth, no ORM objects, no JSON), then `--samples` runs over HTTP. Reported: the median
over rounds of p50 and p95 for each, and p95(HTTP) / p95(direct).

    python benchmarks/bench_search.py [--tickets 100000] [--engine sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.config import CustomFieldConfig, load_config
from mailhelpdesk.domain.models import (
    Contact,
    Queue,
    Response,
    Setting,
    Ticket,
    TicketEvent,
    TicketFieldValue,
    TicketTag,
)
from mailhelpdesk.ingest import worker
from mailhelpdesk.services import api_tokens, ticket_list
from mailhelpdesk.store import schema, ticket_query
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from mailhelpdesk.store.ticket_query import ListRequest, Sort
from tests.helpers import Daemon

QUEUES = ["Inbox", "Billing", "Sales", "Tech", "Returns"]
AGENTS = [f"agent{i}@helpdesk.test" for i in range(20)]
TAGS = ["refund", "vip", "bug", "invoice", "shipping", "urgent-customer", "feature", "spam"]
REAL = [
    *[
        "printer",
        "invoice",
        "refund",
        "order",
        "payment",
        "delivery",
        "missing",
        "broken",
        "password",
        "login",
        "account",
    ],
    *[
        "shipping",
        "address",
        "cancel",
        "subscription",
        "upgrade",
        "error",
        "crash",
        "slow",
        "screen",
        "battery",
    ],
    *[
        "warranty",
        "return",
        "exchange",
        "damaged",
        "package",
        "tracking",
        "number",
        "charge",
        "twice",
        "card",
    ],
]
START = datetime(2024, 1, 1, tzinfo=UTC)
EXTRA = (
    "[api]\nrate_limit_requests = 100000000\n"
    + "".join(
        f'[[queues]]\nname = "{q}"\naddress = "{q.lower()}@helpdesk.test"\n' for q in QUEUES[2:]
    )
    + '[[custom_fields]]\nname = "order"\ntype = "number"\n'
    + '[[custom_fields]]\nname = "plan"\ntype = "choice"\nchoices = ["Basic", "Pro", "Enterprise"]\n'
)
DEFINITIONS = (
    CustomFieldConfig(name="order", type="number"),
    CustomFieldConfig(name="plan", type="choice", choices=("Basic", "Pro", "Enterprise")),
)


class Words:
    """A Zipf-like vocabulary: a few words very common, most rare (like mail)."""

    def __init__(self, rng: random.Random, size: int = 8000) -> None:
        syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu", "br", "st", "en"]
        made = {
            "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(size)
        }
        # the support words sit at ranks 200-230: common, never the commonest
        rare = sorted(made)
        self.vocab = rare[:200] + REAL + rare[200:]
        cumulative = list(accumulate(1 / (rank + 1) for rank in range(len(self.vocab))))
        # one long Zipf-distributed stream drawn once; a text is a slice of it at a random place
        # (drawing every word of 300,000 messages one by one took most of the generation time)
        self.stream = rng.choices(self.vocab, cum_weights=cumulative, k=1 << 18)
        self.rng = rng

    def text(self, n: int) -> str:
        start = self.rng.randrange(len(self.stream) - n)
        return " ".join(self.stream[start : start + n])


# the rows go in at this revision (0016, before the search migration); 0017 then builds the
# search table and its indexes from them in one pass (its backfill), as an upgrade of a full
# desk would, which is much faster than keeping the document row by row through the triggers
LOAD_REVISION = "5d2e8b1c7f64"
_COPY_TABLES = (Ticket, Response, TicketTag, TicketFieldValue, TicketEvent)


def _put(conn: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert a batch: PostgreSQL's COPY (ten times an executemany), SQLite's executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(model), rows)
        return
    table = model.__table__
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.default is not None and c.default.is_scalar and c.name not in rows[0]
    }
    names = [*rows[0], *defaults]
    raw = conn.connection.driver_connection
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[n] if n in row else defaults[n] for n in names])


def generate(engine: Engine, tickets: int, seed: int = 13) -> dict[str, Any]:
    """Fill a database migrated to LOAD_REVISION; returns facts the requests need."""
    rng = random.Random(seed)
    words = Words(rng)
    with engine.begin() as conn:
        _put(conn, Queue, [{"id": i + 1, "name": q, "address": ""} for i, q in enumerate(QUEUES)])
        contacts = max(10, tickets // 4)
        _put(
            conn,
            Contact,
            [
                {
                    "id": i + 1,
                    "email": f"c{i}@customer.test",
                    "name": f"Customer {i}",
                    "company": "",
                    "phone": "",
                    "notes": "",
                    "created_at": START,
                    "updated_at": START,
                }
                for i in range(contacts)
            ],
        )
    batch = 5000
    response_id = 0
    orders: list[int] = []
    for first in range(0, tickets, batch):
        rows, responses, tags, fields, breaches = [], [], [], [], []
        for tid in range(first + 1, min(tickets, first + batch) + 1):
            created = START + timedelta(minutes=tid * 5 + rng.randint(0, 4))
            updated = created + timedelta(hours=rng.randint(0, 500))
            contact = rng.randrange(contacts)
            status = rng.choices(["open", "on-hold", "closed"], [3, 1, 6])[0]
            order = 100000 + tid
            orders.append(order)
            rows.append(
                {
                    "id": tid,
                    "number": 100000 + tid,
                    "subject": f"{words.text(rng.randint(3, 7))} order {order}".capitalize(),
                    "status": status,
                    "priority": rng.choices([10, 20, 30, 40], [2, 6, 2, 1])[0],
                    "queue_id": rng.randint(1, len(QUEUES)),
                    "originator_email": f"c{contact}@customer.test",
                    "originator_name": f"Customer {contact}",
                    "assigned_to_email": rng.choice([None, *AGENTS]),
                    "created_at": created,
                    "updated_at": updated,
                    "contact_id": contact + 1,
                    "due_at": created + timedelta(days=rng.randint(1, 30))
                    if rng.random() < 0.4
                    else None,
                    "secure_id": f"{rng.getrandbits(128):032x}",
                }
            )
            for k in range(rng.choice([1, 2, 3, 3, 3, 4, 5])):
                response_id += 1
                staff = k % 2 == 1
                body = words.text(rng.randint(40, 160))
                if rng.random() < 0.01:
                    body += " the invoice missing again"
                responses.append(
                    {
                        "id": response_id,
                        "ticket_id": tid,
                        "kind": "agent" if staff else "customer",
                        "is_internal": False,
                        "is_pinned": False,
                        "staff_response": staff,
                        "is_email_sourced": not staff,
                        "created_by_email": AGENTS[0] if staff else f"c{contact}@customer.test",
                        "created_by_name": "",
                        "subject": "",
                        "plain_text": body,
                        "visible_text": body,
                        "created_at": created + timedelta(minutes=k),
                        "updated_at": created + timedelta(minutes=k),
                    }
                )
            tags.extend(
                {"ticket_id": tid, "name": tag}
                for tag in rng.sample(TAGS, rng.choice([0, 1, 1, 2, 3]))
            )
            fields.append(
                {"ticket_id": tid, "name": "order", "value": str(order), "updated_at": created}
            )
            if rng.random() < 0.5:
                plan = rng.choice(["Basic", "Pro", "Enterprise"])
                fields.append(
                    {"ticket_id": tid, "name": "plan", "value": f'"{plan}"', "updated_at": created}
                )
            if rng.random() < 0.05:
                breaches.append(
                    {
                        "ticket_id": tid,
                        "type": "sla_breach",
                        "at": updated,
                        "actor_kind": "system",
                        "actor_name": "",
                        "channel": "scheduler",
                        "data": "{}",
                    }
                )
        with engine.begin() as conn:
            for model, batch_rows in zip(
                _COPY_TABLES, (rows, responses, tags, fields, breaches), strict=True
            ):
                _put(conn, model, batch_rows)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in (
                "tickets",
                "responses",
                "ticket_tags",
                "ticket_field_values",
                "ticket_events",
                "contacts",
                "queues",
            ):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT coalesce(max(id), 1) FROM {table}))"
                    )
                )
    return {"orders": orders, "responses": response_id}


def requests(tickets: int, facts: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The 12 typical requests (name, query string)."""
    mid = START + timedelta(minutes=tickets * 5 // 2)
    deep = 100000 + int(tickets * 0.9)
    cursor = ticket_list.encode_cursor(Sort("number", False), deep, deep)
    order = facts["orders"][len(facts["orders"]) // 3]
    return [
        ("default list", []),
        ("status=open", [("status", "open")]),
        ("open unassigned Sales", [("status", "open"), ("queue", "Sales"), ("assignee", "none")]),
        (
            "tag + created range",
            [
                ("tag", "refund"),
                ("created_after", mid.date().isoformat()),
                ("created_before", (mid + timedelta(days=30)).date().isoformat()),
            ],
        ),
        ("urgent by due_at", [("priority", "Urgent"), ("status", "open"), ("sort", "due_at")]),
        ("requester", [("requester", "c17@customer.test")]),
        ("cf.order", [("cf.order", str(order))]),
        ("deep cursor (90%)", [("sort", "number"), ("cursor", cursor)]),
        ("deep page 200", [("sort", "-created_at"), ("page", "200")]),
        ("q free word", [("q", "printer")]),
        ("q phrase", [("q", '"invoice missing"')]),
        ("q combination", [("q", "refund (tag:vip OR priority:urgent) -status:closed")]),
    ]


def time_direct(engine: Engine, items: list[tuple[str, str]], samples: int) -> list[float]:
    with read_scope(engine) as session:
        req = ticket_list.parse(items, definitions=DEFINITIONS)
        rows_query, count_query = ticket_query.statements(
            session,
            ListRequest(
                where=req.where,
                sort=req.sort,
                limit=req.per_page + 1,
                offset=(req.page - 1) * req.per_page if req.cursor is None else 0,
                after=req.cursor,
                count=req.cursor is None,
                count_cap=ticket_list.count_cap(req),
            ),
        )
        conn = session.connection()
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute(rows_query).all()
            if count_query is not None:
                conn.execute(count_query).scalar_one()
            out.append(time.perf_counter() - started)
        return out


def time_http(
    client: httpx.Client, url: str, items: list[tuple[str, str]], samples: int
) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        resp = client.get(url, params=items)
        out.append(time.perf_counter() - started)
        if resp.status_code != 200:
            raise RuntimeError(f"{items}: {resp.status_code} {resp.text[:300]}")
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def explain_all(engine: Engine, reqs: list[tuple[str, list[tuple[str, str]]]]) -> None:
    with read_scope(engine) as session:
        for name, items in reqs:
            req = ticket_list.parse(items, definitions=DEFINITIONS)
            plan = ticket_query.explain(
                session,
                ListRequest(
                    where=req.where, sort=req.sort, limit=req.per_page + 1, after=req.cursor
                ),
            )
            print(f"-- {name}")
            for line in plan:
                print("   ", line)


def run_engine(name: str, tmp: Path, args: argparse.Namespace) -> None:
    daemon = Daemon(tmp, extra_config=EXTRA)
    pg = None
    reuse_url = name == "postgresql" and (args.reuse or "").startswith("postgresql")
    if name == "postgresql":
        if reuse_url:
            url = args.reuse
        else:
            from tests.postgres import Postgres

            pg = Postgres()
            url = pg.create_database()
        sqlite_line = f'url = "sqlite:///{tmp / "helpdesk.db"}"'
        daemon.config.write_text(daemon.config.read_text().replace(sqlite_line, f'url = "{url}"'))
    elif args.reuse:
        url = f"sqlite:///{Path(args.reuse).resolve()}"
        daemon.config.write_text(
            daemon.config.read_text().replace(f"sqlite:///{tmp / 'helpdesk.db'}", url)
        )
    else:
        url = f"sqlite:///{tmp / 'helpdesk.db'}"
    reusing = reuse_url or (name == "sqlite" and bool(args.reuse) and Path(args.reuse).exists())
    engine = make_engine(url)  # creates the SQLite file: ask whether it was there before
    try:
        if reusing:
            schema.upgrade(engine)  # a desk generated by an earlier run: time it again
            if not reuse_url:
                with engine.connect() as conn:
                    conn.execute(text("ANALYZE"))
                    conn.commit()
            facts = {"orders": [100000 + t for t in range(1, args.tickets + 1)], "responses": 0}
            serve_and_time(name, daemon, engine, facts, args)
            return
        cfg = schema._alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, LOAD_REVISION)
        if pg is not None:  # the search migration builds two GIN indexes over the load
            with engine.begin() as conn:
                database = engine.url.database
                conn.execute(text(f"ALTER DATABASE {database} SET maintenance_work_mem = '512MB'"))
        started = time.perf_counter()
        facts = generate(engine, args.tickets)
        loaded = time.perf_counter()
        engine.dispose()  # new sessions, with the database's settings
        schema.upgrade(engine)
        with engine.connect() as conn:
            # VACUUM as autovacuum would after a load: PostgreSQL's index-only scans (the
            # counts) need the visibility map; SQLite's VACUUM is not needed, ANALYZE is
            if pg is not None:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            else:
                conn.execute(text("ANALYZE"))
                conn.commit()
        print(
            f"[{name}] {args.tickets} tickets, {facts['responses']} messages: rows "
            f"{loaded - started:.1f} s, migrations 0017+ (search table, indexes) "
            f"{time.perf_counter() - loaded:.1f} s"
        )
        serve_and_time(name, daemon, engine, facts, args)
    finally:
        daemon.stop()
        engine.dispose()
        if pg is not None:
            pg.stop()


def serve_and_time(
    name: str, daemon: Daemon, engine: Engine, facts: dict[str, Any], args: argparse.Namespace
) -> None:
    """Start the daemon on the generated desk and time the 12 requests, direct and over HTTP."""
    # the daemon's first start on a database recomputes the SLA due times of every open
    # ticket (40,000 here: 8 minutes on the busy machine) before it serves; the desk has no
    # SLA policy and the list does not read them: mark them as computed
    policy = worker.load_settings(engine, load_config(str(daemon.config))).notify.sla
    with session_scope(engine) as session:
        token = api_tokens.create_token(
            session,
            name=f"bench-{time.time_ns()}",
            abilities=["tickets:read"],
            clock=SystemClock(),
        )
        session.merge(Setting(key="sla_policy", value=policy.fingerprint()))
    reqs = requests(args.tickets, facts)
    if args.explain:
        explain_all(engine, reqs)
    daemon.start(timeout=600)
    url_list = f"http://127.0.0.1:{daemon.http_port}/api/v1/tickets"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        print(
            f"{'request':<24} {'direct p50':>10} {'p95':>7} {'http p50':>9} {'p95':>7} "
            f"{'p95 ratio':>9}  rows"
        )
        for label, items in reqs:
            time_http(client, url_list, items, 2)  # warm caches on both paths
            time_direct(engine, items, 2)
            rounds = []
            for _ in range(args.rounds):
                direct = time_direct(engine, items, args.samples)
                over_http = time_http(client, url_list, items, args.samples)
                rounds.append(
                    (
                        statistics.median(direct),
                        p95(direct),
                        statistics.median(over_http),
                        p95(over_http),
                    )
                )
            d50, d95, h50, h95 = (statistics.median(r[i] for r in rounds) for i in range(4))
            shown = len(client.get(url_list, params=items).json()["data"]["tickets"])
            print(
                f"{label:<24} {d50 * 1000:9.1f}ms {d95 * 1000:6.1f}ms {h50 * 1000:8.1f}ms "
                f"{h95 * 1000:6.1f}ms {h95 / d95:9.2f}  {shown}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="print the query plans first")
    parser.add_argument(
        "--reuse",
        metavar="FILE",
        help="SQLite: keep the generated desk in FILE, or time the one already there; "
        "PostgreSQL: the URL of a desk generated earlier (kept by the caller)",
    )
    args = parser.parse_args()
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    for name in engines:
        with tempfile.TemporaryDirectory() as tmp:
            run_engine(name, Path(tmp), args)


if __name__ == "__main__":
    main()
