"""ticket secure ids: a stored random id per ticket for the customer status page

Until now the Tickiti `secure_id` was derived from the ticket id with the desk's secret and could
be neither looked up nor revoked. Every ticket gets a fresh random id here; nothing resolved the
old ids, so no link breaks.

Revision ID: 6b2d9e41f0a7
Revises: 3c1f7a9e2b40
Create Date: 2026-12-05 08:30:00
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "6b2d9e41f0a7"
down_revision = "3c1f7a9e2b40"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secure_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    tickets = sa.table("tickets", sa.column("id", sa.Integer), sa.column("secure_id", sa.String))
    bind = op.get_bind()
    ids = [row.id for row in bind.execute(sa.select(tickets.c.id))]
    if ids:
        bind.execute(
            tickets.update().where(tickets.c.id == sa.bindparam("tid")),
            [{"tid": tid, "secure_id": secrets.token_hex(16)} for tid in ids],
        )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_secure_id", ["secure_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_secure_id")
        batch_op.drop_column("secure_id")
