"""ticket_events: the append-only record of every change to a ticket

Revision ID: 8c5e1a3d9f74
Revises: 7b4d0f2a8c63
Create Date: 2026-12-05 05:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "8c5e1a3d9f74"
down_revision = "7b4d0f2a8c63"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("actor_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("actor_name", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ticket_events_type", "ticket_events", ["type"], unique=False)
    op.create_index("ix_ticket_events_at", "ticket_events", ["at"], unique=False)
    op.create_index(
        "ix_ticket_events_ticket_id_id", "ticket_events", ["ticket_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_ticket_events_ticket_id_id", table_name="ticket_events")
    op.drop_index("ix_ticket_events_at", table_name="ticket_events")
    op.drop_index("ix_ticket_events_type", table_name="ticket_events")
    op.drop_table("ticket_events")
