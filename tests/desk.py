"""The one way tests build a helpdesk in-process: `app.build_app` on a config in a temp folder,
with a frozen clock. `Desk` wraps the built app for tests that feed mail and call services
without the network; the `desk_factory` fixture (tests/conftest.py) makes and closes them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from mailhelpdesk.app import App, build_app
from mailhelpdesk.clock import FrozenClock
from mailhelpdesk.config import Config, config_from_dict
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import (
    Agent,
    InboundMessage,
    OutboxItem,
    Response,
    Ticket,
    TicketEvent,
)
from mailhelpdesk.ingest import worker
from mailhelpdesk.mail.tokens import ReplyToken
from mailhelpdesk.services import notify
from mailhelpdesk.services.context import ChangeContext, MailPolicy
from mailhelpdesk.store import spool
from mailhelpdesk.store.db import read_scope, session_scope

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "helpdesk": {"address": "support@helpdesk.test", "secret": "s3cret", "name": "Test Support"},
    "queues": [{"name": "Billing", "address": "billing@helpdesk.test"}],
    "agents": [{"email": "alice@helpdesk.test", "name": "Alice"}],
}


def desk_config(
    tmp: Path, sections: Mapping[str, Any] | None = None, *, db_url: str = ""
) -> Config:
    """BASE with `sections` laid over it (a section given replaces BASE's), stored in `tmp`."""
    data = {**BASE, **dict(sections or {})}
    data["database"] = {"url": db_url or f"sqlite:///{tmp / 'h.db'}"}
    return config_from_dict(data)


class Desk:
    """A built app without any network: feed raw mail, make changes, read what they became."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config
        self.engine = app.engine
        self.clock: FrozenClock = app.clock  # type: ignore[assignment]

    @property
    def settings(self) -> worker.IngestSettings:
        return self.app.settings

    @settings.setter
    def settings(self, value: worker.IngestSettings) -> None:
        self.app.settings = value

    @property
    def notify(self) -> notify.NotifySettings:
        return self.app.settings.notify

    def change(
        self,
        channel: Channel = Channel.cli,
        actor: Actor | None = None,
        mail: MailPolicy = MailPolicy.send,
    ) -> ChangeContext:
        """What a change made by `actor` through `channel` carries (the CLI's, by default)."""
        return ChangeContext.of(
            clock=self.clock,
            channel=channel,
            actor=actor or Actor.system(),
            notices=self.notify,
            mail=mail,
        )

    def signed_for(self, number: int, agent_id: int) -> ReplyToken:
        """The reply token of ticket `number` signed for an agent, with the agent's reply key."""
        with read_scope(self.engine) as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            return ReplyToken(number, agent_id, agent_key=agent.reply_key)

    def reload(self) -> None:
        """Read agents again, as the daemon does every few seconds."""
        self.app.settings = worker.load_settings(self.engine, self.config)

    def feed(
        self,
        raw: bytes,
        *,
        rcpt: tuple[str, ...] = ("support@helpdesk.test",),
        mail_from: str | None = "x@customer.test",
        source: str = "smtp",
        peer: str = "",
    ) -> InboundMessage:
        """Keep one message as a transport would (from SMTP peer `peer`), run the worker until
        idle, compose notices."""
        with session_scope(self.engine) as session:
            row = spool.add_inbound(
                session,
                raw=raw,
                envelope=spool.Envelope(
                    source=source, mail_from=mail_from, rcpt_tos=rcpt, source_ref=peer
                ),
                now=self.clock.now(),
            )
        self.drain()
        self.clock.advance(seconds=1)
        with read_scope(self.engine) as session:
            done = session.get(InboundMessage, row.id)
            assert done is not None
            return done

    def drain(self) -> None:
        """Run the ingest worker until nothing is pending, then compose the queued notices."""
        while worker.process_batch(self.engine, self.settings, self.clock, limit=100).processed:
            pass
        self.compose_notices()

    def compose_notices(self) -> int:
        """What the daemon's sender does before sending: notices written as specs become mail."""
        with session_scope(self.engine) as session:
            return notify.compose_pending(session, self.notify)

    def tickets(self) -> list[Ticket]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(Ticket).order_by(col(Ticket.number))))

    def responses(self, ticket: Ticket) -> list[Response]:
        with read_scope(self.engine) as session:
            return list(
                session.exec(
                    select(Response)
                    .where(Response.ticket_id == ticket.id)
                    .order_by(col(Response.id))
                )
            )

    def outbox(self) -> list[OutboxItem]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(OutboxItem).order_by(col(OutboxItem.id))))

    def events(self, ticket_id: int | None = None) -> list[TicketEvent]:
        with read_scope(self.engine) as session:
            query = select(TicketEvent).order_by(col(TicketEvent.id))
            if ticket_id is not None:
                query = query.where(TicketEvent.ticket_id == ticket_id)
            return list(session.exec(query))


def make_desk(
    tmp: Path,
    sections: Mapping[str, Any] | None = None,
    *,
    clock: FrozenClock | None = None,
    db_url: str = "",
) -> Desk:
    config = desk_config(tmp, sections, db_url=db_url)
    return Desk(build_app(config, clock=clock or FrozenClock(START)))
