"""Alembic environment: runs on the connection `store.schema.upgrade` hands in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import mailhelpdesk.domain.models  # noqa: F401 - registers the tables on the metadata

config = context.config
target_metadata = SQLModel.metadata


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Leave the full-text search table out of autogenerate: migration 0014 makes it by hand
    (an FTS5 virtual table with its shadow tables on SQLite, a tsvector table on PostgreSQL)."""
    if type_ == "index" and name in (
        "ix_ticket_tags_lower_name",
        "ix_ticket_field_values_name_value",
    ):
        return False  # expression indexes of 0014: not expressible on the models
    return not (type_ == "table" and (name or "").startswith("ticket_search"))


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE via copy on SQLite
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
