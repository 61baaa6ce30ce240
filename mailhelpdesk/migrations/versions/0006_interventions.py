"""intervention instances (api-contract.md §4.9)

Revision ID: 6a3c9e1f7b42
Revises: 5d2f8b0e3c21
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # autogenerate writes sqlmodel.sql.sqltypes.AutoString
from alembic import op

revision = "6a3c9e1f7b42"
down_revision = "5d2f8b0e3c21"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intervention_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("uid", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "submitted_by_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True
        ),
        sa.Column("submitted_response_id", sa.Integer(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "uid"),
    )
    with op.batch_alter_table("intervention_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_intervention_instances_state"), ["state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_intervention_instances_ticket_id"), ["ticket_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("intervention_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_intervention_instances_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_intervention_instances_state"))

    op.drop_table("intervention_instances")
