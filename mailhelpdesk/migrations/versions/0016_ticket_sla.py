"""ticket_sla: per-ticket SLA due times, escalation and reminder state

Revision ID: 5d2e8b1c7f64
Revises: 7d2e5b1c9a14
Create Date: 2026-12-05 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "5d2e8b1c7f64"
down_revision = "7d2e5b1c9a14"
branch_labels = None
depends_on = None

_INDEXED = (
    "first_response_due_at",
    "first_response_warn_at",
    "resolution_due_at",
    "resolution_warn_at",
)


def upgrade() -> None:
    op.create_table(
        "ticket_sla",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("rule", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("first_response_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_warn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_breached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_warn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_breached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    for column in _INDEXED:
        op.create_index(f"ix_ticket_sla_{column}", "ticket_sla", [column], unique=False)


def downgrade() -> None:
    for column in _INDEXED:
        op.drop_index(f"ix_ticket_sla_{column}", table_name="ticket_sla")
    op.drop_table("ticket_sla")
