"""outbox: notices composed by the sender (compose_spec); responses keyset index

Revision ID: 7b4d0f2a8c63
Revises: 6a3c9e1f7b42
Create Date: 2026-12-02 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7b4d0f2a8c63"
down_revision = "6a3c9e1f7b42"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("compose_spec", sa.Text(), nullable=True))
    op.create_index("ix_responses_created_at_id", "responses", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_responses_created_at_id", table_name="responses")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("compose_spec")
