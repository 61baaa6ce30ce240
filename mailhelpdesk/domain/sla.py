"""SLA targets and when they fall due: pure, from a ticket's timeline (resources.md §9).

A ticket has up to two targets, from the first `[[sla]]` rule matching its queue and priority:
`first_response` (until the first public agent answer) and `resolution` (until it is closed).
Both clocks count working time (domain/business_time.py) only while the ticket is **open**:
on-hold time is not counted, and a closed ticket's clock stands still. A reopened ticket's
resolution clock resumes where it stopped (the time already used is not given back); the first
answer satisfies `first_response` for good.

`deadlines` turns a timeline of marks (opened, put on hold, closed, answered) into the instants
at which each target falls due and reaches its warning ratio. An instant is None when the clock
is not running and has not crossed it (on hold, closed, answered in time): nothing is due.
A target crossed before the clock stopped keeps its instant, so a breach missed by a moment is
still a breach.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailhelpdesk.domain.business_time import ALWAYS, BusinessHours

ANY = "*"
WARN_RATIO = 0.8


class Target(enum.StrEnum):
    first_response = "first_response"
    resolution = "resolution"


class Mark(enum.StrEnum):
    """What happened to the clocks at an instant of the ticket's life."""

    opened = "opened"  # created, reopened, woken from on-hold
    held = "held"  # put on hold
    closed = "closed"
    answered = "answered"  # a public agent answer


@dataclass(frozen=True)
class SlaRule:
    """One `[[sla]]` entry: targets in working seconds (None: no such target)."""

    queue: str = ANY
    priority: str = ANY
    first_response_s: int | None = None
    resolution_s: int | None = None

    def matches(self, queue: str, priority: str) -> bool:
        return self.queue in (ANY, queue) and self.priority.lower() in (ANY, priority.lower())

    def seconds(self, target: Target) -> int | None:
        return self.first_response_s if target == Target.first_response else self.resolution_s

    @property
    def name(self) -> str:
        return f"queue={self.queue} priority={self.priority}"


@dataclass(frozen=True)
class SlaPolicy:
    """Every `[[sla]]` rule in file order (the first match wins) and the business hours."""

    rules: tuple[SlaRule, ...] = ()
    hours: BusinessHours = ALWAYS
    warn_ratio: float = WARN_RATIO

    def rule_for(self, queue: str, priority: str) -> SlaRule | None:
        return next((r for r in self.rules if r.matches(queue, priority)), None)

    def fingerprint(self) -> str:
        """Changes whenever anything that moves a due time changes (targets are recomputed)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Due:
    """When a target falls due, and when its warning is due (None: not due, see module doc)."""

    due_at: datetime | None = None
    warn_at: datetime | None = None


Run = tuple[datetime, datetime | None]  # the clock ran from .. to (None: still running)


def runs(timeline: Sequence[tuple[datetime, Mark]], target: Target) -> list[Run]:
    """The periods during which `target`'s clock ran, from the ticket's marks in order."""
    found: list[Run] = []
    started: datetime | None = None
    for at, mark in timeline:
        if mark == Mark.answered and target == Target.first_response:
            if started is not None:
                found.append((started, at))
            return found  # answered: this clock never runs again
        if mark == Mark.opened and started is None:
            started = at
        elif mark in (Mark.held, Mark.closed) and started is not None:
            found.append((started, at))
            started = None
    if started is not None:
        found.append((started, None))
    return found


def instant_after(hours: BusinessHours, periods: Sequence[Run], seconds: float) -> datetime | None:
    """The instant at which the clock has run `seconds` working seconds over `periods`, or None
    when it stopped before that."""
    remaining = seconds
    for start, end in periods:
        if end is None:
            return hours.add(start, remaining)
        available = hours.working_seconds(start, end)
        if remaining <= available:
            return hours.add(start, remaining)
        remaining -= available
    return None


def deadlines(
    policy: SlaPolicy, rule: SlaRule, timeline: Sequence[tuple[datetime, Mark]]
) -> dict[Target, Due]:
    """Each target of `rule` that the rule sets, with its due and warning instants."""
    found: dict[Target, Due] = {}
    for target in Target:
        seconds = rule.seconds(target)
        if not seconds:
            continue
        periods = runs(timeline, target)
        found[target] = Due(
            due_at=instant_after(policy.hours, periods, seconds),
            warn_at=instant_after(policy.hours, periods, seconds * policy.warn_ratio),
        )
    return found
