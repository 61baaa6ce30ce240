"""api tokens: optional expiry and an owning agent

Revision ID: 4c1e7a9d2b10
Revises: 7525937a563f
Create Date: 2026-12-02 16:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # autogenerate writes sqlmodel.sql.sqltypes.AutoString
from alembic import op

revision = "4c1e7a9d2b10"
down_revision = "7525937a563f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("owner_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("owner_email")
        batch_op.drop_column("expires_at")
