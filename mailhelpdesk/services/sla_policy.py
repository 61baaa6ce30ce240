"""The SLA policy of a config: `[[sla]]` and `[business_hours]` as the pure domain objects the
SLA clock (domain/sla.py) works with. The config was checked when it was loaded."""

from __future__ import annotations

from mailhelpdesk.config import Config
from mailhelpdesk.domain.business_time import BusinessHours
from mailhelpdesk.domain.sla import SlaPolicy, SlaRule


def policy_of(config: Config) -> SlaPolicy:
    hours = config.business_hours
    return SlaPolicy(
        rules=tuple(
            SlaRule(
                queue=item.queue,
                priority="*" if item.priority == "*" else item.priority.capitalize(),
                first_response_s=item.first_response_s or None,
                resolution_s=item.resolution_s or None,
            )
            for item in config.sla
        ),
        hours=BusinessHours(
            timezone=hours.timezone,
            days=hours.weekdays(),
            start=hours.start_time(),
            end=hours.end_time(),
            holidays=hours.holiday_dates(),
        ),
    )
