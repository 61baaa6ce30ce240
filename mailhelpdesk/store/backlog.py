"""What is still to do, across the queues: kept mail not yet applied, mail and HTTP deliveries
not yet sent. `/healthz` shows it; "idle" (all three zero) is what tests and operators wait for
before concluding that nothing more will happen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import InboundState, OutboxState
from mailhelpdesk.domain.models import HttpDelivery, InboundMessage, OutboxItem, as_utc


@dataclass(frozen=True)
class Backlog:
    inbound_pending: int
    outbox_queued: int
    deliveries_queued: int

    @property
    def idle(self) -> bool:
        return not (self.inbound_pending or self.outbox_queued or self.deliveries_queued)


def backlog(session: Session) -> Backlog:
    def count(
        table: type[InboundMessage] | type[OutboxItem] | type[HttpDelivery], state: str
    ) -> int:
        return int(
            session.exec(select(func.count()).select_from(table).where(table.state == state)).one()
        )

    return Backlog(
        inbound_pending=count(InboundMessage, "new"),
        outbox_queued=count(OutboxItem, "queued"),
        deliveries_queued=count(HttpDelivery, "queued"),
    )


@dataclass(frozen=True)
class QueueGauges:
    """What /metrics reports from the store, read in one short read transaction."""

    inbound_pending: int
    inbound_set_aside: int
    outbox_queued: int
    # how long the longest-waiting notice that is due has been waiting (0: none is overdue)
    outbox_oldest_due_age_s: float
    deliveries_queued: int
    suppressed: dict[str, int]  # notices held back, by kind of reason


def gauges(session: Session, *, now: datetime, suppression_kinds: Mapping[str, str]) -> QueueGauges:
    """`suppression_kinds` maps a kind to a LIKE pattern of the reasons notices are suppressed
    with (services/notify.py words them; the store only counts). Unmatched reasons are `other`."""
    states = dict(
        session.exec(
            select(InboundMessage.state, func.count())
            .where(col(InboundMessage.state).in_([InboundState.new, InboundState.failed]))
            .group_by(InboundMessage.state)
        ).all()
    )
    queued, oldest = session.exec(
        select(func.count(), func.min(OutboxItem.next_attempt_at)).where(
            OutboxItem.state == OutboxState.queued
        )
    ).one()
    oldest_at = as_utc(oldest)
    age = max((now - oldest_at).total_seconds(), 0.0) if oldest_at is not None else 0.0
    kind = case(
        *((col(OutboxItem.last_error).like(p), k) for k, p in suppression_kinds.items()),
        else_="other",
    )
    suppressed = dict.fromkeys([*suppression_kinds, "other"], 0)
    for name, count in session.exec(
        select(kind, func.count()).where(OutboxItem.state == OutboxState.suppressed).group_by(kind)
    ).all():
        suppressed[str(name)] = int(count)
    deliveries = session.exec(
        select(func.count()).select_from(HttpDelivery).where(HttpDelivery.state == "queued")
    ).one()
    return QueueGauges(
        inbound_pending=int(states.get(InboundState.new, 0)),
        inbound_set_aside=int(states.get(InboundState.failed, 0)),
        outbox_queued=int(queued),
        outbox_oldest_due_age_s=age,
        deliveries_queued=int(deliveries),
        suppressed=suppressed,
    )
