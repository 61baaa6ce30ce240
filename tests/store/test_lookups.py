"""The per-process caches of queues and agents (store/lookups.py) and the Core writers of the
write path (store/rows.py): two engines on one database stand for two daemons (or a daemon and
the CLI), each with its own caches."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailhelpdesk.domain.events import Actor, Channel, EventType, Origin
from mailhelpdesk.domain.models import Agent, Counter, Ticket, TicketEvent
from mailhelpdesk.store import events as event_store
from mailhelpdesk.store import lookups, schema
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.db import make_engine, session_scope


@pytest.fixture
def two(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first = make_engine(url)
    schema.upgrade(first)
    with session_scope(first) as session:
        store.ensure_counters(session)
    second = make_engine(url)
    yield first, second
    first.dispose()
    second.dispose()


def emails(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return [a.email for a in lookups.agents(session)]


def test_an_agent_added_or_removed_elsewhere_is_seen_by_the_next_transaction(two) -> None:  # type: ignore[no-untyped-def]
    first, second = two
    assert emails(first) == []
    with session_scope(second) as session:
        session.add(Agent(email="bob@helpdesk.test", name="Bob"))
    assert emails(first) == ["bob@helpdesk.test"]
    with session_scope(second) as session:
        row = store.get_agent_by_email(session, "bob@helpdesk.test")
        assert row is not None
        row.name = "Robert"
        session.add(row)
    with session_scope(first) as session:
        assert [a.name for a in lookups.agents(session)] == ["Robert"]
    with session_scope(second) as session:
        row = store.get_agent_by_email(session, "bob@helpdesk.test")
        session.delete(row)
    assert emails(first) == []


def test_the_list_is_served_from_the_cache_while_the_version_stands(two) -> None:  # type: ignore[no-untyped-def]
    first, _second = two
    emails(first)
    with session_scope(first) as session:
        # a row written behind the ORM's back (no version bump) stays unseen: proof of the cache
        session.connection().exec_driver_sql(
            "INSERT INTO agents (email, name, alternate_addresses, origin, queues,"
            " password_hash, reply_key) VALUES ('ghost@x.test', '', '', 'cli', '', '', 'k')"
        )
    assert emails(first) == []
    cached = lookups.lookups_of(first)
    assert cached is not None
    cached.clear()  # what SIGHUP does
    assert emails(first) == ["ghost@x.test"]


def test_a_rolled_back_agent_change_is_not_cached(two) -> None:  # type: ignore[no-untyped-def]
    first, _second = two
    seen: list[str] = []

    def change_then_fail() -> None:
        with session_scope(first) as session:
            session.add(Agent(email="temp@helpdesk.test"))
            seen.extend(a.email for a in lookups.agents(session))
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert seen == ["temp@helpdesk.test"]
    assert emails(first) == []


def test_queue_ids_are_cached_once_found_and_a_missing_queue_is_asked_again(two) -> None:  # type: ignore[no-untyped-def]
    first, second = two
    with session_scope(first) as session:
        assert lookups.queue_id(session, "Sales") is None
    with session_scope(second) as session:
        made = store.queue_id_for(session, "Sales")
    with session_scope(first) as session:
        assert lookups.queue_id(session, "Sales") == made
        assert lookups.queue_name(session, made) == "Sales"
        assert lookups.queue_name(session, 9999) == ""


def test_ticket_numbers_and_events_through_core_statements(two) -> None:  # type: ignore[no-untyped-def]
    first, second = two
    with session_scope(first) as session:
        counter = session.get(Counter, store.TICKET_NUMBER_COUNTER)
        assert counter is not None
        before = counter.value
        numbers = [store.next_ticket_number(session) for _ in range(3)]
        assert numbers == [before + 1, before + 2, before + 3]
        # an object read before the UPDATE … RETURNING is refreshed, not left behind
        assert session.get(Counter, store.TICKET_NUMBER_COUNTER).value == before + 3  # type: ignore[union-attr]
    with session_scope(second) as session:
        assert store.next_ticket_number(session) == before + 4
        now = datetime.now(UTC)
        ticket = Ticket(
            number=before + 4,
            subject="s",
            queue_id=store.queue_id_for(session, "Inbox"),
            originator_email="c@x.test",
            created_at=now,
            updated_at=now,
        )
        session.add(ticket)
        session.flush()
        origin = Origin(Channel.api, Actor.system())
        row = event_store.append(
            session,
            ticket_id=ticket.id or 0,
            type=EventType.created,
            at=now,
            origin=origin,
            data={"b": 1, "a": "x"},
        )
        assert row.id is not None and row not in session
    with session_scope(first) as session:
        stored = session.exec(select(TicketEvent).where(TicketEvent.id == row.id)).one()
        assert stored.type == "created" and event_store.data_of(stored) == {"a": "x", "b": 1}
