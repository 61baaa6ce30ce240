"""access: agents' visible queues; API-made webhook subscriptions (key salt, creation time)

Revision ID: dee33a63d3cf
Revises: 80b02550c215
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "dee33a63d3cf"
down_revision = "80b02550c215"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queues", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "secret_salt",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default="",
            )
        )
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.drop_column("created_at")
        batch_op.drop_column("secret_salt")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("queues")
