"""Reports (resources.md §9): how much came in, how fast it was answered and resolved, what is
still open, and who did the work, computed from the history (the `ticket_events` rows) alone,
so a report can never disagree with what the history shows.

Definitions, for a period [from 00:00 UTC, to + 1 day 00:00 UTC) and an optional queue:

- A ticket belongs to a queue as the history has it at the end of the period: the queue of its
  `created` event, or of its last `queue` move before the end. Tickets in the trash are left out.
- `created`: `created` events in the period. `closed`: `status` events to closed in the period.
  `reopened`: `status` events from closed to open or on-hold in the period.
- `first_response_s`: for each ticket created in the period and answered (its first
  `agent_response`, whenever that came), the seconds from its creation to that answer.
- `resolution_s`: for each close in the period, the seconds from the ticket's creation to it.
  Both are calendar seconds; p50 and p90 use the nearest-rank method (the value at rank
  ceil(p/100 * n) of the sorted values), null when there is none.
- `sla_met_pct`: of the tickets closed in the period that had an SLA target (`[[sla]]`), the
  share without an `sla_breach` event, in percent with one decimal; null when there is none.
- `backlog_by_age`: tickets not closed at the end of the period (by their last `status` event
  before it), by their age then: `lt_1d`, `1_3d`, `3_7d`, `7_30d`, `gt_30d`.
- `by_agent`: per agent (an agent actor's address), public answers (`agent_response`) and
  closes in the period; sorted by address.

`build` also returns the series the HTML report draws (services/report_page.py): tickets
created per day and queue, and the raw first-response and resolution times.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.events import ActorKind, EventType
from mailhelpdesk.domain.models import TicketEvent, as_utc
from mailhelpdesk.services.api_requests import FieldError
from mailhelpdesk.store import events as event_store
from mailhelpdesk.store import reports as store
from mailhelpdesk.store import tickets as ticket_store

DEFAULT_DAYS = 30
MAX_DAYS = 366
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("lt_1d", 1),
    ("1_3d", 3),
    ("3_7d", 7),
    ("7_30d", 30),
    ("gt_30d", math.inf),
)


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(0, 0), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after the last day."""
        return datetime.combine(self.last_day + timedelta(days=1), time(0, 0), tzinfo=UTC)

    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(count)]


def period_of(start: str | None, end: str | None, *, today: date) -> Period:
    """The period from `from` and `to` (YYYY-MM-DD, both included); `to` defaults to today and
    `from` to 30 days before `to`. FieldError names the parameter at fault."""
    last = _day(end, "to") if end else today
    first = _day(start, "from") if start else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise FieldError("from", "must not be after to")
    if (last - first).days + 1 > MAX_DAYS:
        raise FieldError("from", f"a report covers at most {MAX_DAYS} days")
    return Period(first, last)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise FieldError(name, "expected a date YYYY-MM-DD") from None


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 and p90 by nearest rank (see the module doc), rounded to whole seconds."""
    ordered = sorted(values)

    def rank(p: int) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1])

    return {"p50": rank(50), "p90": rank(90)}


def age_bucket(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    return next(name for name, limit in AGE_BUCKETS if days < limit)


@dataclass
class _Ticket:
    created_at: datetime
    queue: str
    status: str = "open"
    breached: bool = False


@dataclass
class Report:
    """The summary of resources.md §9 and the series behind the HTML report's charts."""

    period: Period
    queue: str | None
    summary: dict[str, Any]
    created_per_day: dict[str, list[int]] = field(default_factory=dict)  # queue -> one per day
    first_response_values: list[float] = field(default_factory=list)
    resolution_values: list[float] = field(default_factory=list)
    sla_counts: dict[str, int] = field(default_factory=dict)  # met, breached


def build(
    session: Session,
    *,
    period: Period,
    queue: str | None = None,
    visible_queues: frozenset[str] | None = None,
) -> Report:
    """The report for `period` (and `queue`; `visible_queues`, lower-cased, limits what an
    agent's token sees), computed from the events before the period's end."""
    start, end = period.start, period.end
    rows = store.events_before(session, end)
    tickets: dict[int, _Ticket] = {}
    queue_at_end: dict[int, str] = {}
    in_period: list[TicketEvent] = []
    for row in rows:
        at = as_utc(row.at)
        assert at is not None
        data = event_store.data_of(row)
        if row.type == EventType.created:
            tickets[row.ticket_id] = _Ticket(created_at=at, queue=str(data.get("queue", "")))
            queue_at_end[row.ticket_id] = str(data.get("queue", ""))
        found = tickets.get(row.ticket_id)
        if found is None:
            continue
        if row.type == EventType.queue:
            queue_at_end[row.ticket_id] = str(data.get("to", ""))
        elif row.type == EventType.status:
            found.status = str(data.get("to", found.status))
        elif row.type == EventType.sla_breach:
            found.breached = True
        if at >= start:
            in_period.append(row)

    def counted(ticket_id: int) -> bool:
        name = queue_at_end.get(ticket_id, "")
        if queue is not None and name != queue:
            return False
        return visible_queues is None or name.lower() in visible_queues

    keep = {tid for tid in tickets if counted(tid)}
    answers = store.first_answers(session, list(keep))  # answers after the period count too
    with_target = store.tickets_with_sla(session, list(keep))
    days = {day: i for i, day in enumerate(period.days())}
    per_day: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    created = closed = reopened = 0
    first_response: list[float] = []
    resolution: list[float] = []
    closed_tickets: set[int] = set()
    agents: dict[str, Counter[str]] = defaultdict(Counter)
    for row in in_period:
        if row.ticket_id not in keep:
            continue
        at = as_utc(row.at)
        assert at is not None
        data = event_store.data_of(row)
        ticket = tickets[row.ticket_id]
        agent = row.actor_email if row.actor_kind == ActorKind.agent and row.actor_email else None
        if row.type == EventType.created:
            created += 1
            per_day[queue_at_end[row.ticket_id]][days[at.date()]] += 1
            answered = answers.get(row.ticket_id)
            if answered is not None:
                first_response.append((answered - ticket.created_at).total_seconds())
        elif row.type == EventType.status and data.get("to") == "closed":
            closed += 1
            closed_tickets.add(row.ticket_id)
            resolution.append((at - ticket.created_at).total_seconds())
            if agent:
                agents[agent]["closed"] += 1
        elif row.type == EventType.status and data.get("from") == "closed":
            reopened += 1
        elif row.type == EventType.agent_response and agent:
            agents[agent]["responses"] += 1
    with_sla = closed_tickets & with_target
    breached = sum(1 for tid in with_sla if tickets[tid].breached)
    backlog = dict.fromkeys((name for name, _ in AGE_BUCKETS), 0)
    for tid in keep:
        if tickets[tid].status != "closed":
            backlog[age_bucket(end - tickets[tid].created_at)] += 1
    summary = {
        "from": period.first_day.isoformat(),
        "to": period.last_day.isoformat(),
        "queue": queue,
        "created": created,
        "closed": closed,
        "reopened": reopened,
        "first_response_s": percentiles(first_response),
        "resolution_s": percentiles(resolution),
        "sla_met_pct": (
            round(100 * (len(with_sla) - breached) / len(with_sla), 1) if with_sla else None
        ),
        "backlog_by_age": backlog,
        "by_agent": [
            {"email": email, "responses": c["responses"], "closed": c["closed"]}
            for email, c in sorted(agents.items())
        ],
    }
    return Report(
        period=period,
        queue=queue,
        summary=summary,
        created_per_day=dict(sorted(per_day.items())),
        first_response_values=first_response,
        resolution_values=resolution,
        sla_counts={"met": len(with_sla) - breached, "breached": breached},
    )


def summary(
    session: Session,
    *,
    start: str | None,
    end: str | None,
    queue: str | None,
    today: date,
    visible_queues: frozenset[str] | None = None,
) -> dict[str, Any]:
    """GET /api/v1/reports/summary and `report --json`: the summary for the parameters as given
    (FieldError names a bad `from`, `to` or `queue`)."""
    return report(
        session, start=start, end=end, queue=queue, today=today, visible_queues=visible_queues
    ).summary


def report(
    session: Session,
    *,
    start: str | None,
    end: str | None,
    queue: str | None,
    today: date,
    visible_queues: frozenset[str] | None = None,
) -> Report:
    """The whole report (summary and chart series) for the parameters as given."""
    period = period_of(start, end, today=today)
    if queue is not None:
        known = set(ticket_store.queue_names(session).values())
        if queue not in known or (
            visible_queues is not None and queue.lower() not in visible_queues
        ):
            raise FieldError("queue", f"unknown queue {queue!r}")
    return build(session, period=period, queue=queue, visible_queues=visible_queues)
