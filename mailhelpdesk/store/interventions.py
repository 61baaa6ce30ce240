"""Intervention instances (api-contract.md §4.9). These functions flush, never commit.

`insert` is `INSERT … ON CONFLICT (name, uid) DO NOTHING RETURNING id` on SQLite and PostgreSQL
alike: of two creates with the same (name, uid), the unique index lets exactly one insert; the
other sees no row returned and reports the existing instance. (On PostgreSQL the loser's INSERT
waits for the winner's transaction and then decides, so it never reports a row that rolls back.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import InterventionState
from mailhelpdesk.domain.models import InterventionInstance
from mailhelpdesk.store import rows


def dump_data(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def data_of(row: InterventionInstance) -> dict[str, Any]:
    value = json.loads(row.data or "{}")
    return dict(value) if isinstance(value, dict) else {}


def insert(
    session: Session, *, name: str, uid: str, ticket_id: int, data: Mapping[str, Any], now: datetime
) -> InterventionInstance | None:
    """The new instance, or None when (name, uid) exists already (nothing inserted)."""
    table = rows.table_of(InterventionInstance)
    stmt = (
        rows.conflict_insert(session, InterventionInstance)
        .values(
            name=name,
            uid=uid,
            ticket_id=ticket_id,
            data=dump_data(data),
            state=InterventionState.open,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["name", "uid"])
    )
    found = session.execute(stmt.returning(table.c.id)).first()
    session.flush()
    if found is None:
        return None
    return session.get(InterventionInstance, int(found[0]))


def get_by_uid(session: Session, *, name: str, uid: str) -> InterventionInstance | None:
    return session.exec(
        select(InterventionInstance).where(
            InterventionInstance.name == name, InterventionInstance.uid == uid
        )
    ).first()


def for_ticket(
    session: Session, ticket_id: int, *, lock: bool = False
) -> InterventionInstance | None:
    """The ticket's intervention (a ticket opened by one has exactly one). `lock`: hold its row
    until the transaction ends (PostgreSQL `FOR UPDATE`, re-read after the wait), so two
    submissions of one intervention from two daemons cannot both see it open; SQLite's single
    writer serialises them anyway."""
    query = (
        select(InterventionInstance)
        .where(InterventionInstance.ticket_id == ticket_id)
        .order_by(col(InterventionInstance.id).desc())
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.exec(query).first()


def get(session: Session, instance_id: int) -> InterventionInstance | None:
    return session.get(InterventionInstance, instance_id)


def save(
    session: Session,
    row: InterventionInstance,
    *,
    now: datetime,
    data: Mapping[str, Any] | None = None,
) -> None:
    if data is not None:
        row.data = dump_data(data)
    row.updated_at = now
    session.add(row)
    session.flush()
