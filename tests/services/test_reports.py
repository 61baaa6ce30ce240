"""Reports on a generated month of activity equal the figures this test computes on its own from
the raw `ticket_events` rows (sqlite3, no mailhelpdesk code); the same figures come out of
`GET /api/v1/reports/summary` and `mailhelpdesk report --json` of a running daemon, and
`report --html` draws them as inline SVG charts with the expected series."""

from __future__ import annotations

import json
import math
import random
import re
import sqlite3
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from mailhelpdesk.clock import FrozenClock, SystemClock
from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.services import api_tokens, escalation, report_page, reports, ticket_changes
from mailhelpdesk.services.context import MailPolicy
from mailhelpdesk.services.tickets import NewResponse, add_response, create_ticket
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from tests.browser import headless_chromium, screenshot
from tests.desk import Desk, make_desk
from tests.helpers import Daemon

QUIET = MailPolicy.silent  # the month's activity mails nothing: only its history matters here

AGENTS = ("alice@helpdesk.test", "bob@helpdesk.test")
MONTH_START = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
SECTIONS: dict[str, Any] = {
    "agents": [{"email": a, "name": a.split("@")[0].title()} for a in AGENTS],
    "sla": [{"queue": "*", "priority": "*", "first_response": "6h", "resolution": "3d"}],
}
DAEMON_EXTRA = """
[[agents]]
email = "bob@helpdesk.test"
name = "Bob"

[[sla]]
queue = "*"
priority = "*"
first_response = "6h"
resolution = "3d"

[api]
rate_limit_requests = 1000000
"""


def generate_month(tmp: Path) -> Path:
    """A month of tickets, answers, closes, reopens and SLA escalations, made through the
    services with a frozen clock (seeded, so every run is the same month); no mail is written,
    as for imported archives."""
    db = tmp / "helpdesk.db"
    rng = random.Random(15)
    clock = FrozenClock(MONTH_START)
    desk = make_desk(tmp, SECTIONS, clock=clock, db_url=f"sqlite:///{db}")
    try:
        for _step in range(30 * 6):  # every four hours, on average
            if rng.random() < 0.55:
                _open(desk, rng)
            _act(desk, rng)
            with session_scope(desk.engine) as session:
                escalation.escalate(session, change=desk.change(Channel.scheduler, mail=QUIET))
            clock.advance(minutes=rng.randrange(60, 420))
    finally:
        desk.app.close()
    return db


def _open(desk: Desk, rng: random.Random) -> None:
    customer = f"c{rng.randrange(40)}@customer.test"
    with session_scope(desk.engine) as session:
        create_ticket(
            session,
            subject=f"Issue {rng.randrange(10_000)}",
            originator_email=customer,
            queue_name=rng.choice(("Inbox", "Billing")),
            first=NewResponse(kind=ResponseKind.customer, plain_text="Help"),
            change=desk.change(Channel.smtp, Actor.customer(customer), mail=QUIET),
        )


def _act(desk: Desk, rng: random.Random) -> None:
    with session_scope(desk.engine) as session:
        tickets = list(session.exec(select(Ticket)))
        for ticket in rng.sample(tickets, min(3, len(tickets))):
            agent = rng.choice(AGENTS)
            change = desk.change(Channel.api, Actor.agent(agent), mail=QUIET)
            roll = rng.random()
            if ticket.status == "open" and roll < 0.5:
                add_response(
                    session,
                    ticket,
                    NewResponse(kind=ResponseKind.agent, plain_text="ok", created_by_email=agent),
                    change=change,
                )
            elif ticket.status == "open" and roll < 0.8:
                ticket_changes.set_status(session, ticket, "closed", change=change)
            elif ticket.status == "closed" and roll < 0.12:  # the customer is back
                customer = desk.change(
                    Channel.smtp, Actor.customer(ticket.originator_email), mail=QUIET
                )
                ticket_changes.set_status(session, ticket, "open", change=customer)


# -- the figures, computed here from the raw rows ---------------------------------------------


def nearest_rank(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p90": None}
    return {
        f"p{p}": round(ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]) for p in (50, 90)
    }


def expected(db: Path, first: date, last: date, queue: str | None = None) -> dict[str, Any]:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    con = sqlite3.connect(db)
    try:
        rows = [
            (tid, kind, datetime.fromisoformat(at).replace(tzinfo=UTC), actor, email, json.loads(d))
            for tid, kind, at, actor, email, d in con.execute(
                "SELECT ticket_id, type, at, actor_kind, actor_email, data FROM ticket_events "
                "ORDER BY id"
            )
        ]
    finally:
        con.close()
    created_at = {tid: at for tid, kind, at, *_ in rows if kind == "created"}
    queue_of = {tid: d["queue"] for tid, kind, _at, _a, _e, d in rows if kind == "created"}
    mine = {tid for tid in created_at if queue is None or queue_of[tid] == queue}
    inside = [r for r in rows if r[0] in mine and start <= r[2] < end]
    closes = [r for r in inside if r[1] == "status" and r[5]["to"] == "closed"]
    first_answer: dict[int, datetime] = {}
    for tid, kind, at, *_ in rows:
        if kind == "agent_response":
            first_answer.setdefault(tid, at)
    new = [r for r in inside if r[1] == "created"]
    breached = {r[0] for r in rows if r[1] == "sla_breach" and r[2] < end}
    closed_ids = {r[0] for r in closes}
    status_at_end: dict[int, str] = {}
    for tid, kind, at, _a, _e, d in rows:
        if tid in mine and at < end:
            if kind == "created":
                status_at_end[tid] = "open"
            elif kind == "status":
                status_at_end[tid] = d["to"]
    backlog = {"lt_1d": 0, "1_3d": 0, "3_7d": 0, "7_30d": 0, "gt_30d": 0}
    for tid, status in status_at_end.items():
        if status != "closed":
            days = (end - created_at[tid]).total_seconds() / 86400
            key = (
                "lt_1d"
                if days < 1
                else "1_3d"
                if days < 3
                else "3_7d"
                if days < 7
                else "7_30d"
                if days < 30
                else "gt_30d"
            )
            backlog[key] += 1
    agents: dict[str, Counter[str]] = defaultdict(Counter)
    for _tid, kind, _at, actor, email, d in inside:
        if actor != "agent":
            continue
        if kind == "agent_response":
            agents[email]["responses"] += 1
        elif kind == "status" and d["to"] == "closed":
            agents[email]["closed"] += 1
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "queue": queue,
        "created": len(new),
        "closed": len(closes),
        "reopened": sum(1 for r in inside if r[1] == "status" and r[5]["from"] == "closed"),
        "first_response_s": nearest_rank(
            [(first_answer[r[0]] - r[2]).total_seconds() for r in new if r[0] in first_answer]
        ),
        "resolution_s": nearest_rank([(r[2] - created_at[r[0]]).total_seconds() for r in closes]),
        "sla_met_pct": (
            round(100 * len(closed_ids - breached) / len(closed_ids), 1) if closed_ids else None
        ),
        "backlog_by_age": backlog,
        "by_agent": [
            {"email": e, "responses": c["responses"], "closed": c["closed"]}
            for e, c in sorted(agents.items())
        ],
    }


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_month(tmp_path_factory.mktemp("month"))


def build(db: Path, first: date, last: date, queue: str | None = None) -> dict[str, Any]:
    desk = make_desk(db.parent, SECTIONS, clock=FrozenClock(MONTH_START), db_url=f"sqlite:///{db}")
    try:
        with read_scope(desk.engine) as session:
            period = reports.Period(first, last)
            return reports.build(session, period=period, queue=queue).summary
    finally:
        desk.app.close()


def test_generated_month_is_real_activity(month: Path) -> None:
    figures = expected(month, date(2026, 11, 1), date(2026, 11, 30))
    assert figures["created"] > 50
    assert figures["closed"] > 20 and figures["reopened"] > 3
    assert figures["sla_met_pct"] is not None and 0 < figures["sla_met_pct"] < 100
    assert len(figures["by_agent"]) == 2
    assert sum(figures["backlog_by_age"].values()) > 0


@pytest.mark.parametrize(
    ("first", "last", "queue"),
    [
        (date(2026, 11, 1), date(2026, 11, 30), None),
        (date(2026, 11, 8), date(2026, 11, 21), None),
        (date(2026, 11, 1), date(2026, 11, 30), "Billing"),
        (date(2026, 11, 10), date(2026, 11, 10), "Inbox"),
        (date(2026, 12, 1), date(2026, 12, 31), None),  # after the month: only its backlog
    ],
)
def test_report_equals_figures_from_the_raw_events(
    month: Path, first: date, last: date, queue: str | None
) -> None:
    assert build(month, first, last, queue) == expected(month, first, last, queue)


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="YYYY-MM-DD"):
        reports.period_of("2026-13-01", None, today=date(2026, 12, 5))
    with pytest.raises(InvalidInputError, match="after to"):
        reports.period_of("2026-11-30", "2026-11-01", today=date(2026, 12, 5))
    assert reports.period_of(None, None, today=date(2026, 12, 5)) == reports.Period(
        date(2026, 11, 6), date(2026, 12, 5)
    )


def test_api_cli_and_html_report_of_a_running_daemon(month: Path, tmp_path: Path) -> None:
    db = tmp_path / "helpdesk.db"
    db.write_bytes(month.read_bytes())
    want = expected(db, date(2026, 11, 1), date(2026, 11, 30))
    billing = expected(db, date(2026, 11, 1), date(2026, 11, 30), "Billing")
    daemon = Daemon(tmp_path, extra_config=DAEMON_EXTRA)
    daemon.start()
    try:
        secret, other = mint(daemon, "reports:read"), mint(daemon, "tickets:read")
        base = f"http://127.0.0.1:{daemon.http_port}/api/v1/reports/summary"
        auth = {"Authorization": f"Bearer {secret}"}
        resp = httpx.get(base, params={"from": "2026-11-01", "to": "2026-11-30"}, headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"] == want
        resp = httpx.get(
            base,
            params={"from": "2026-11-01", "to": "2026-11-30", "queue": "Billing"},
            headers=auth,
        )
        assert resp.json()["data"] == billing
        bad = httpx.get(base, params={"from": "yesterday"}, headers=auth)
        assert bad.status_code == 422 and "from" in bad.json()["errors"]
        unknown = httpx.get(base, params={"queue": "Nowhere"}, headers=auth)
        assert unknown.status_code == 422 and "queue" in unknown.json()["errors"]
        reader = {"Authorization": f"Bearer {other}"}
        assert httpx.get(base, headers=reader).status_code == 403
        page = tmp_path / "report.html"
        out = daemon.cli(
            "report", "--from", "2026-11-01", "--to", "2026-11-30", "--json", "--html", str(page)
        )
        assert json.loads(out.stdout) == want
        failed = daemon.cli("report", "--from", "2026-11-31", check=False)
        assert failed.returncode != 0 and "--from" in failed.stderr
    finally:
        daemon.stop()
    check_html(page.read_text(), want)


def mint(daemon: Daemon, ability: str) -> str:
    """A token minted straight into the daemon's store (as tests/http/conftest.py does)."""
    engine = make_engine(daemon.db_url)
    try:
        with session_scope(engine) as session:
            return api_tokens.create_token(
                session, name=ability, abilities=[ability], clock=SystemClock()
            )
    finally:
        engine.dispose()


def check_html(text: str, want: dict[str, Any]) -> None:
    """The page is one self-contained document: six inline SVG charts, each with its series,
    nothing fetched, no script."""
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    assert "https://" not in text and "src=" not in text
    charts = dict(re.findall(r'<figure id="chart-([a-z-]+)">(.*?)</figure>', text, re.DOTALL))
    assert set(charts) == {"volume", "first-response", "resolution", "sla", "backlog", "agents"}
    for svg in charts.values():
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")

    def bars(chart: str, series: str) -> int:
        return len(re.findall(rf'id="{re.escape(series)}-\d+"', charts[chart]))

    assert bars("volume", "volume-Inbox") == 30 and bars("volume", "volume-Billing") == 30
    assert "Billing" in charts["volume"] and "Inbox" in charts["volume"]
    assert bars("first-response", "first-response") >= 5
    assert bars("resolution", "resolution") >= 5
    assert bars("sla", "sla-met") == 1 and bars("sla", "sla-breached") == 1
    assert bars("backlog", "backlog") == 5
    agents = len(want["by_agent"])
    assert bars("agents", "agent-responses") == agents == bars("agents", "agent-closed")
    for agent in want["by_agent"]:
        assert agent["email"] in charts["agents"]
    assert f"<td>{want['created']}</td>" in text


def test_html_report_renders_its_charts_in_headless_chromium(month: Path, tmp_path: Path) -> None:
    """The page opened from a file in Debian's chromium: every chart is drawn with a visible
    size, every series' bars are laid out, nothing was fetched and nothing was logged."""
    page = tmp_path / "report.html"
    desk = make_desk(
        tmp_path, SECTIONS, clock=FrozenClock(MONTH_START), db_url=f"sqlite:///{month}"
    )
    try:
        with read_scope(desk.engine) as session:
            found = reports.build(
                session, period=reports.Period(date(2026, 11, 1), date(2026, 11, 30))
            )
    finally:
        desk.app.close()
    page.write_text(report_page.render(found), encoding="utf-8")
    with headless_chromium(tmp_path / "profile", width=1200, height=900) as driver:
        driver.get(page.as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure svg')).map(s => {"
            " const r = s.getBoundingClientRect(); return [s.parentNode.id, r.width, r.height]; })"
        )
        assert [name for name, _w, _h in sizes] == [
            "chart-volume", "chart-first-response", "chart-resolution",
            "chart-sla", "chart-backlog", "chart-agents",
        ]  # fmt: skip
        assert all(w > 200 and h > 100 for _name, w, h in sizes), sizes

        def drawn(prefix: str) -> int:
            """How many bars of a series have a laid-out, non-empty box in the browser."""
            return int(
                driver.execute_script(
                    "return Array.from(document.querySelectorAll(`[id^='${arguments[0]}-']`))"
                    ".filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; })"
                    ".length",
                    prefix,
                )
            )

        assert drawn("volume-Inbox") > 10 and drawn("volume-Billing") > 10
        assert drawn("first-response") >= 3 and drawn("resolution") >= 3
        assert drawn("sla-met") == 1 and drawn("sla-breached") == 1
        assert drawn("backlog") >= 1
        assert drawn("agent-responses") == 2 == drawn("agent-closed")
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert resources == []  # self-contained: nothing fetched
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == []
        screenshot(driver, "report")
