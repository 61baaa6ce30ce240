"""Rows written by the prepared INSERT of store/rows.py are the rows SQLAlchemy's own INSERT
writes: the same stored value in every column (dates, bytes, booleans, JSON text, NULLs), on
SQLite and on PostgreSQL, one at a time and as an executemany."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from mailhelpdesk.domain.models import OutboxItem, as_utc
from mailhelpdesk.store import outbox, rows
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


def test_among_asks_for_a_few_values_with_one_bind_each_and_finds_the_same_rows(
    engine: Engine,
) -> None:
    """Loop safety's reads (`suppressed_among`, `recent_automatic_among`) give the same answers
    at every number of addresses, with a statement of fixed binds up to `Among.FEW` values and
    the expanding one past it."""
    emails = [f"a{i}@customer.test" for i in range(rows.Among.FEW + 4)]
    with session_scope(engine) as session:
        for i, email in enumerate(emails):
            # every third one's suppression is over already
            until = NOW + timedelta(days=-1 if i % 3 == 0 else 1)
            outbox.suppress(session, email=email, reason=f"bounced {i}", until=until)
        rows.insert_many(
            session,
            OutboxItem,
            [
                _outbox(f"<n{i}-{k}@h>", primary_rcpt=e)
                for i, e in enumerate(emails)
                for k in range(i % 3)
            ],
        )
    for count in (1, 2, rows.Among.FEW, rows.Among.FEW + 1, len(emails)):
        asked = emails[:count]
        statement, params = outbox._SUPPRESSED_AMONG.bind(asked)
        expanding = statement.compile(dialect=engine.dialect).post_compile_params
        assert bool(expanding) is (count > rows.Among.FEW)
        assert len(params) == (1 if count > rows.Among.FEW else count)
        with session_scope(engine) as session:
            held = outbox.suppressed_among(session, set(asked), now=NOW)
            recent = outbox.recent_automatic_among(
                session, set(asked), since=NOW - timedelta(minutes=1)
            )
        assert held == {e: f"bounced {i}" for i, e in enumerate(asked) if i % 3}
        assert recent == {e: i % 3 for i, e in enumerate(asked) if i % 3}
