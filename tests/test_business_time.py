"""Business-time arithmetic and SLA due times (domain/business_time.py, domain/sla.py): weekends,
holidays, clock changes, on-hold time, tickets opened out of hours, and the config checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailhelpdesk.config import ConfigError, config_from_dict
from mailhelpdesk.domain.business_time import ALWAYS, BusinessHours
from mailhelpdesk.domain.sla import Mark, SlaPolicy, SlaRule, Target, deadlines, runs

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessHours(
    timezone="Europe/Berlin",
    days=frozenset(range(5)),
    start=time(9, 0),
    end=time(17, 0),
    holidays=frozenset({date(2026, 12, 25)}),
)
HOUR = 3600


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_add_within_one_working_day() -> None:
    assert OFFICE.add(local(2026, 11, 23, 10, 0), 2 * HOUR) == local(2026, 11, 23, 12, 0)


def test_add_carries_over_to_the_next_morning() -> None:
    assert OFFICE.add(local(2026, 11, 23, 16, 0), 2 * HOUR) == local(2026, 11, 24, 10, 0)


def test_friday_evening_counts_from_monday_morning() -> None:
    friday_evening = local(2026, 11, 27, 19, 30)
    assert OFFICE.add(friday_evening, HOUR) == local(2026, 11, 30, 10, 0)
    assert OFFICE.working_seconds(friday_evening, local(2026, 11, 30, 8, 59)) == 0


def test_friday_afternoon_spills_over_the_weekend() -> None:
    assert OFFICE.add(local(2026, 11, 27, 16, 30), HOUR) == local(2026, 11, 30, 9, 30)


def test_holiday_is_skipped() -> None:
    # Thursday 24 Dec 16:00 + 2h: 1h on Thursday, Friday 25 is a holiday, then Monday 28
    assert OFFICE.add(local(2026, 12, 24, 16, 0), 2 * HOUR) == local(2026, 12, 28, 10, 0)
    assert OFFICE.working_seconds(local(2026, 12, 24, 0, 0), local(2026, 12, 29, 0, 0)) == 16 * HOUR


def test_out_of_hours_start_on_a_working_day() -> None:
    assert OFFICE.add(local(2026, 11, 24, 6, 15), 30 * 60) == local(2026, 11, 24, 9, 30)


def test_working_seconds_and_add_agree() -> None:
    start = local(2026, 11, 20, 13, 7)
    for hours in (0.5, 3, 8, 11, 40, 97):
        end = OFFICE.add(start, hours * HOUR)
        assert OFFICE.working_seconds(start, end) == pytest.approx(hours * HOUR)


def test_spring_forward_day_is_an_hour_shorter_around_the_clock() -> None:
    # Europe/Berlin: 29 March 2026, 02:00 -> 03:00
    always_berlin = BusinessHours(timezone="Europe/Berlin")
    day = always_berlin.working_seconds(local(2026, 3, 29, 0, 0), local(2026, 3, 30, 0, 0))
    assert day == 23 * HOUR
    assert always_berlin.add(local(2026, 3, 29, 0, 0), 24 * HOUR) == local(2026, 3, 30, 1, 0)


def test_fall_back_day_is_an_hour_longer_and_office_hours_keep_their_length() -> None:
    # Europe/Berlin: 25 October 2026, 03:00 -> 02:00; Monday 26 October office hours in CET
    always_berlin = BusinessHours(timezone="Europe/Berlin")
    day = always_berlin.working_seconds(local(2026, 10, 25, 0, 0), local(2026, 10, 26, 0, 0))
    assert day == 25 * HOUR
    friday = local(2026, 10, 23, 16, 0)  # CEST (UTC+2)
    monday = OFFICE.add(friday, 2 * HOUR)  # CET (UTC+1)
    assert monday == local(2026, 10, 26, 10, 0)
    assert monday.astimezone(UTC) == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_always_counts_calendar_time() -> None:
    start = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    assert ALWAYS.add(start, 10 * HOUR) == start + timedelta(hours=10)


def test_business_hours_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="working day"):
        BusinessHours(days=frozenset())
    with pytest.raises(ValueError, match="end before"):
        BusinessHours(start=time(17, 0), end=time(9, 0))


# -- due times from a timeline --------------------------------------------------------------

URGENT = SlaRule(priority="Urgent", first_response_s=HOUR, resolution_s=8 * HOUR)
POLICY = SlaPolicy(rules=(URGENT,), hours=OFFICE)


def test_due_times_of_a_ticket_opened_in_hours() -> None:
    opened = local(2026, 11, 23, 10, 0)
    found = deadlines(POLICY, URGENT, [(opened, Mark.opened)])
    assert found[Target.first_response].due_at == local(2026, 11, 23, 11, 0)
    assert found[Target.first_response].warn_at == local(2026, 11, 23, 10, 48)
    assert found[Target.resolution].due_at == local(2026, 11, 24, 10, 0)


def test_on_hold_time_is_not_counted() -> None:
    opened = local(2026, 11, 23, 10, 0)
    timeline = [
        (opened, Mark.opened),
        (local(2026, 11, 23, 12, 0), Mark.answered),
        (local(2026, 11, 23, 12, 0), Mark.held),
        (local(2026, 11, 25, 12, 0), Mark.opened),  # two working days on hold
    ]
    found = deadlines(POLICY, URGENT, timeline)
    # 2h used before the hold, 6h left from Wednesday 12:00: Thursday 10:00
    assert found[Target.resolution].due_at == local(2026, 11, 26, 10, 0)
    # answered after the hour: the crossing stays (a late answer is a breach)
    assert found[Target.first_response].due_at == local(2026, 11, 23, 11, 0)
    on_hold = deadlines(POLICY, URGENT, timeline[:3])
    assert on_hold[Target.resolution].due_at is None  # paused, not crossed: nothing due


def test_answered_in_time_means_nothing_due() -> None:
    timeline = [
        (local(2026, 11, 23, 10, 0), Mark.opened),
        (local(2026, 11, 23, 10, 5), Mark.answered),
    ]
    assert deadlines(POLICY, URGENT, timeline)[Target.first_response].due_at is None


def test_reopen_resumes_the_resolution_clock() -> None:
    timeline = [
        (local(2026, 11, 23, 9, 0), Mark.opened),
        (local(2026, 11, 23, 14, 0), Mark.closed),  # 5h used
        (local(2026, 11, 24, 9, 0), Mark.opened),
    ]
    assert runs(timeline, Target.resolution)[-1] == (local(2026, 11, 24, 9, 0), None)
    found = deadlines(POLICY, URGENT, timeline)
    assert found[Target.resolution].due_at == local(2026, 11, 24, 12, 0)
    assert deadlines(POLICY, URGENT, timeline[:2])[Target.resolution].due_at is None


def test_first_matching_rule_wins() -> None:
    policy = SlaPolicy(
        rules=(
            SlaRule(queue="Billing", priority="*", first_response_s=60),
            SlaRule(priority="urgent", first_response_s=120),
            SlaRule(first_response_s=300),
        )
    )
    assert policy.rule_for("Billing", "Urgent") == policy.rules[0]
    assert policy.rule_for("Inbox", "Urgent") == policy.rules[1]
    assert policy.rule_for("Inbox", "Low") == policy.rules[2]
    assert SlaPolicy().rule_for("Inbox", "Low") is None


# -- the config checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"sla": [{"priority": "Urgen", "first_response": "1h"}]}, "sla[0].priority"),
        ({"sla": [{"queue": "Nowhere", "first_response": "1h"}]}, "sla[0].queue"),
        ({"sla": [{"first_response": "an hour"}]}, "sla[0].first_response"),
        ({"sla": [{"priority": "High"}]}, "set first_response, resolution or both"),
        ({"business_hours": {"timezone": "Mars/Olympus"}}, "business_hours.timezone"),
        ({"business_hours": {"days": ["Mon", "Funday"]}}, "business_hours.days[1]"),
        ({"business_hours": {"start": "9am"}}, "business_hours.start"),
        ({"business_hours": {"start": "17:00", "end": "09:00"}}, "business_hours.end"),
        ({"business_hours": {"holidays": ["25.12.2026"]}}, "business_hours.holidays[0]"),
        ({"lifecycle": {"auto_close_after": "soon"}}, "lifecycle.auto_close_after"),
        ({"lifecycle": {"remind_untouched_after": "-1d"}}, "lifecycle.remind_untouched_after"),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(section)


def test_config_reads_sla_and_business_hours() -> None:
    config = config_from_dict(
        {
            "queues": [{"name": "Billing"}],
            "sla": [{"queue": "Billing", "priority": "Urgent", "first_response": "30m"}],
            "business_hours": {
                "timezone": "Europe/Berlin",
                "days": ["Mon", "tuesday", "WED", "Thu", "Fri"],
                "start": "08:30",
                "end": "24:00",
                "holidays": ["2026-12-25"],
            },
        }
    )
    assert config.sla[0].first_response_s == 1800
    assert config.sla[0].resolution_s == 0
    hours = config.business_hours
    assert hours.weekdays() == frozenset(range(5))
    assert (hours.start_time(), hours.end_time()) == (time(8, 30), None)
    assert hours.holiday_dates() == {date(2026, 12, 25)}
