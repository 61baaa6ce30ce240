"""The trash purge (a scheduler job) and the config key behind it, in-process with a frozen
clock: a ticket trashed longer than `[lifecycle] purge_trashed_after` is deleted with every row
that hangs off it; one trashed more recently, and one never trashed, stay."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from mailhelpdesk.config import ConfigError, config_from_dict
from mailhelpdesk.domain.events import Channel
from mailhelpdesk.domain.models import (
    Attachment,
    KnownMessageId,
    Response,
    Ticket,
    TicketEvent,
    TicketWatcher,
)
from mailhelpdesk.services import housekeeping, watchers
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import make_mail


def _count(session: Any, table: Any, ticket_id: int) -> int:
    return int(
        session.exec(
            select(func.count()).select_from(table).where(table.ticket_id == ticket_id)
        ).one()
    )


def test_purge_deletes_tickets_trashed_longer_than_the_setting(desk_factory: Any) -> None:
    desk: Desk = desk_factory({"lifecycle": {"purge_trashed_after": "2d"}})
    assert desk.config.lifecycle.purge_trashed_after_s == 2 * 86400
    for subject in ("old trash", "new trash", "kept"):
        desk.feed(make_mail(subject=subject))
    with session_scope(desk.engine) as session:
        watchers.watch(
            session,
            session.exec(select(Ticket).where(Ticket.number == 100001)).one(),
            "alice@helpdesk.test",
            change=desk.change(),
        )
        housekeeping.trash(session, ticket_number=100001, change=desk.change())
    desk.clock.advance(days=1)
    with session_scope(desk.engine) as session:
        housekeeping.trash(session, ticket_number=100002, change=desk.change())
    desk.clock.advance(days=1, seconds=60)
    assert desk.app.purge_trashed() == [100001]  # the app's scheduler job
    assert desk.app.purge_trashed() == []
    with read_scope(desk.engine) as session:
        numbers = sorted(t.number for t in session.exec(select(Ticket)))
        assert numbers == [100002, 100003]
        gone = 1  # the first ticket's id
        for table in (Response, TicketEvent, TicketWatcher, KnownMessageId):
            assert _count(session, table, gone) == 0, table
        assert session.exec(select(func.count()).select_from(Attachment)).one() == 0
    desk.clock.advance(days=1)
    with session_scope(desk.engine) as session:
        purged = housekeeping.purge_trashed(
            session, change=desk.change(Channel.scheduler), older_than_s=2 * 86400
        )
    assert purged == [100002]


def test_purge_setting_is_a_duration_or_empty() -> None:
    assert (
        config_from_dict({"lifecycle": {"purge_trashed_after": ""}}).lifecycle.purge_trashed_after_s
        == 0
    )
    assert config_from_dict({}).lifecycle.purge_trashed_after_s == 30 * 86400
    with pytest.raises(ConfigError, match=r"lifecycle\.purge_trashed_after"):
        config_from_dict({"lifecycle": {"purge_trashed_after": "soon"}})
