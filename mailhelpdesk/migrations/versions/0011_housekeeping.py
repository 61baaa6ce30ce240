"""housekeeping: due date, resolution, trash and merge on tickets; ticket watchers

Revision ID: 80b02550c215
Revises: 82d449b3755b
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "80b02550c215"
down_revision = "82d449b3755b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("merged_into", sa.Integer(), nullable=True))
        batch.create_index("ix_tickets_due_at", ["due_at"], unique=False)
        batch.create_index("ix_tickets_deleted_at", ["deleted_at"], unique=False)
    op.create_table(
        "ticket_watchers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "email"),
    )
    op.create_index("ix_ticket_watchers_ticket_id", "ticket_watchers", ["ticket_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ticket_watchers_ticket_id", table_name="ticket_watchers")
    op.drop_table("ticket_watchers")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_deleted_at")
        batch.drop_index("ix_tickets_due_at")
        batch.drop_column("merged_into")
        batch.drop_column("deleted_at")
        batch.drop_column("resolution")
        batch.drop_column("due_at")
