"""What is still to do, across the queues: kept mail not yet applied, mail and HTTP deliveries
not yet sent. `/healthz` shows it; "idle" (all three zero) is what tests and operators wait for
before concluding that nothing more will happen."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from mailhelpdesk.domain.models import HttpDelivery, InboundMessage, OutboxItem


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
