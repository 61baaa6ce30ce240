"""ticket_field_values and time_entries: custom field values and time spent on tickets

Revision ID: 82d449b3755b
Revises: 9588d65f775c
Create Date: 2026-12-05 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "82d449b3755b"
down_revision = "9588d65f775c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_field_values",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "name"),
    )
    op.create_index(
        "ix_ticket_field_values_ticket_id", "ticket_field_values", ["ticket_id"], unique=False
    )
    op.create_table(
        "time_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("agent_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_time_entries_ticket_id", "time_entries", ["ticket_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_time_entries_ticket_id", table_name="time_entries")
    op.drop_table("time_entries")
    op.drop_index("ix_ticket_field_values_ticket_id", table_name="ticket_field_values")
    op.drop_table("ticket_field_values")
