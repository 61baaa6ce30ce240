"""Business-time arithmetic for SLAs: how many working seconds lie between two instants, and
which instant is N working seconds after another.

Pure (stdlib only, no I/O) so it can be tested on its own. Working time is a window per local
working day (`start`..`end` in `timezone`, on `days`, not on `holidays`); everything outside it
does not count. Windows are computed per local calendar day and turned into UTC instants with
zoneinfo, so a day on which the clocks change has its true length: a 00:00..24:00 window is 23
or 25 hours long then, and a 09:00..17:00 window stays 8 hours because the change happens at
night. A local time that does not exist (inside a spring-forward gap) maps to the instant
zoneinfo gives it (fold 0), which is the same wall-clock offset as the hour before the gap.

Every datetime in and out is aware; results are UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# how far ahead to look for working time before giving up: a calendar whose holidays cover
# years on end has no answer worth waiting for
_HORIZON_DAYS = 3 * 366
_MIDNIGHT = time(0, 0)


@dataclass(frozen=True)
class BusinessHours:
    """When SLA clocks run. The default is every second of every day (no `[business_hours]`)."""

    timezone: str = "UTC"
    days: frozenset[int] = frozenset(range(7))  # Monday = 0 … Sunday = 6
    start: time = _MIDNIGHT
    end: time | None = None  # None: the end of the day (24:00)
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("business hours need at least one working day")
        if self.end is not None and self.end <= self.start:
            raise ValueError("business hours end before they start")
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working window of local `day` as UTC instants, or None on a day off."""
        if day.weekday() not in self.days or day in self.holidays:
            return None
        zone = self.zone
        opens = datetime.combine(day, self.start, tzinfo=zone)
        if self.end is None:
            closes = datetime.combine(day + timedelta(days=1), _MIDNIGHT, tzinfo=zone)
        else:
            closes = datetime.combine(day, self.end, tzinfo=zone)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def windows_from(self, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working windows that end after `instant`, in order, clipped to start at it."""
        day = instant.astimezone(self.zone).date() - timedelta(days=1)  # a window may span midnight
        for offset in range(_HORIZON_DAYS):
            found = self.window(day + timedelta(days=offset))
            if found is None or found[1] <= instant:
                continue
            yield max(found[0], instant), found[1]

    def working_seconds(self, start: datetime, end: datetime) -> float:
        """Working seconds in [start, end) (0 when end is not after start)."""
        total = 0.0
        if end <= start:
            return total
        for opens, closes in self.windows_from(start):
            if opens >= end:
                break
            total += (min(closes, end) - opens).total_seconds()
        return total

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant `seconds` working seconds after `start` (UTC). Zero gives `start` back;
        a ticket opened out of hours starts counting when the next window opens."""
        if seconds <= 0:
            return start.astimezone(UTC)
        remaining = seconds
        for opens, closes in self.windows_from(start):
            available = (closes - opens).total_seconds()
            if remaining <= available:
                return opens + timedelta(seconds=remaining)
            remaining -= available
        raise ValueError("no working time within three years: check [business_hours]")


ALWAYS = BusinessHours()
