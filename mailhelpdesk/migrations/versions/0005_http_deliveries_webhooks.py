"""http deliveries (the outbox for outgoing HTTP calls) and webhook subscriptions

Revision ID: 5d2f8b0e3c21
Revises: 4c1e7a9d2b10
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # autogenerate writes sqlmodel.sql.sqltypes.AutoString
from alembic import op

revision = "5d2f8b0e3c21"
down_revision = "4c1e7a9d2b10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "http_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("ref", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("secret_ref", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("bearer_from_secret", sa.Boolean(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("http_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_http_deliveries_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_http_deliveries_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_http_deliveries_ref"), ["ref"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_http_deliveries_ticket_id"), ["ticket_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_http_deliveries_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_http_deliveries_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("webhook_subscriptions")
    with op.batch_alter_table("http_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_http_deliveries_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_http_deliveries_state"))
        batch_op.drop_index(batch_op.f("ix_http_deliveries_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_http_deliveries_ref"))
        batch_op.drop_index(batch_op.f("ix_http_deliveries_kind"))
        batch_op.drop_index(batch_op.f("ix_http_deliveries_created_at"))
    op.drop_table("http_deliveries")
