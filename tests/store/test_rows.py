"""Rows written by the prepared INSERT of store/rows.py are the rows SQLAlchemy's own INSERT
writes: the same stored value in every column (dates, bytes, booleans, JSON text, NULLs), on
SQLite and on PostgreSQL, one at a time and as an executemany."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from mailhelpdesk.domain.models import OutboxItem, as_utc
from mailhelpdesk.store import rows
from mailhelpdesk.store.db import session_scope

NOW = datetime(2026, 12, 5, 10, 30, 15, 123456, tzinfo=UTC)


def _outbox(message_id: str, **over: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "created_at": NOW,
        "kind": "acknowledgement",
        "ticket_id": None,
        "message_id": message_id,
        "mail_from": "support@helpdesk.test",
        "rcpt_tos": "ada@customer.test",
        "primary_rcpt": "ada@customer.test",
        "is_automatic": True,
        "raw": b"Subject: hi\r\n\r\n\xe9t\xe9\r\n",
        "state": "queued",
        "attempts": 0,
        "next_attempt_at": NOW,
        "deadline_at": NOW + timedelta(days=2),
        "last_error": "",
        "sent_at": None,
        "compose_spec": '{"v": 1, "notice": "acknowledgement", "x": "\\u00e9"}',
    }
    values.update(over)
    return values


def _stored(engine: Engine, table: str, key: str, value: str) -> tuple[Any, ...]:
    """The row as the database holds it (raw driver values), without its id."""
    with engine.connect() as connection:
        found = connection.exec_driver_sql(
            f"SELECT * FROM {table} WHERE {key} = {'?' if engine.dialect.name == 'sqlite' else '%s'}",
            (value,),
        ).one()
    return tuple(v for k, v in found._mapping.items() if k not in ("id", key))


def test_a_prepared_insert_stores_what_sqlalchemy_stores(engine: Engine) -> None:
    with session_scope(engine) as session:
        connection = session.connection()
        connection.execute(rows.insert_of(OutboxItem), _outbox("<core@h>"))
        new_id = rows.insert_id(session, OutboxItem, _outbox("<fast@h>"))
        rows.insert_many(
            session, OutboxItem, [_outbox("<many1@h>"), _outbox("<many2@h>", sent_at=NOW)]
        )
    assert new_id is not None and new_id > 0
    core = _stored(engine, "outbox", "message_id", "<core@h>")
    assert _stored(engine, "outbox", "message_id", "<fast@h>") == core
    assert _stored(engine, "outbox", "message_id", "<many1@h>") == core
    differs = _stored(engine, "outbox", "message_id", "<many2@h>")
    assert differs != core and differs[-2] is not None  # sent_at, bound like the others
    with session_scope(engine) as session:
        item = session.get(OutboxItem, new_id)
        assert item is not None and as_utc(item.created_at) == NOW
        assert item.raw == _outbox("")["raw"]


def test_a_column_left_to_its_default_takes_sqlalchemy_s_insert(engine: Engine) -> None:
    """`last_error` has a column default: rows without it go through the Core INSERT, which
    fills it in, instead of the prepared one, which would leave it out (NOT NULL refuses)."""
    row = _outbox("<nodefault@h>")
    del row["last_error"]
    with session_scope(engine) as session:
        rows.insert_many(session, OutboxItem, [row])
    stored = _stored(engine, "outbox", "message_id", "<nodefault@h>")
    assert "" in stored and None in stored  # last_error filled in; sent_at NULL
