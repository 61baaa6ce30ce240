"""Migration 0009 gives an existing database its contacts: one per distinct originator address,
and every ticket with an originator carries its contact_id (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from mailhelpdesk.store import schema
from mailhelpdesk.store.db import make_engine
from tests.postgres import Postgres

BEFORE_CONTACTS = "8c5e1a3d9f74"
TICKETS = [
    # number, originator, name, created_at
    (100001, "ann@customer.test", "", "2026-11-01 09:00:00"),
    (100002, "Ann@Customer.test", "Ann Lee", "2026-11-02 09:00:00"),
    (100003, "bob@customer.test", "Bob", "2026-11-03 09:00:00"),
    (100004, "ann@customer.test", "Ann Other", "2026-11-04 09:00:00"),
    (100005, "", "", "2026-11-05 09:00:00"),
]


def _migrate_with_tickets(url: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        cfg = schema._alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, BEFORE_CONTACTS)
            connection.execute(
                text("INSERT INTO queues (id, name, address) VALUES (1, 'Inbox', '')")
            )
            for number, email, name, at in TICKETS:
                connection.execute(
                    text(
                        "INSERT INTO tickets (number, subject, status, priority, queue_id, "
                        "originator_email, originator_name, created_at, updated_at) "
                        "VALUES (:n, 's', 'open', 20, 1, :e, :name, :at, :at)"
                    ),
                    {"n": number, "e": email, "name": name, "at": at},
                )
        schema.upgrade(engine)
        with engine.connect() as connection:
            return list(
                connection.execute(
                    text(
                        "SELECT t.number, c.email, c.name, c.created_at, "
                        "(SELECT count(*) FROM contact_addresses a WHERE a.contact_id = c.id) "
                        "FROM tickets t LEFT JOIN contacts c ON c.id = t.contact_id "
                        "ORDER BY t.number"
                    )
                )
            )
    finally:
        engine.dispose()


def _check(rows: list[tuple[object, ...]]) -> None:
    by_number = {r[0]: r[1:] for r in rows}
    ann = by_number[100001]
    assert ann[0] == "ann@customer.test" and ann[1] == "Ann Lee", "first name given wins"
    assert str(ann[2]).startswith("2026-11-01"), "created at the first ticket"
    assert ann[3] == 1, "the main address is the contact's one address row"
    assert by_number[100002] == by_number[100004] == ann, "one contact per address, any case"
    assert by_number[100003][:2] == ("bob@customer.test", "Bob")
    assert by_number[100005][:3] == (None, None, None), "no originator, no contact"


def test_sqlite_tickets_get_contacts(tmp_path: Path) -> None:
    _check(_migrate_with_tickets(f"sqlite:///{tmp_path / 'old.db'}"))


def test_postgresql_tickets_get_contacts(postgres: Postgres) -> None:
    _check(_migrate_with_tickets(postgres.create_database()))
