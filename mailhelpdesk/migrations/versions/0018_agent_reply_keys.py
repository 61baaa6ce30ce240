"""agent reply keys: a random key per agent, signed into its reply addresses (issue 17)

SQLite reuses the id of a removed agent for the next one added, so an address signed for the
agent id alone verified as the new agent. Every existing agent gets its own random key here;
addresses signed before this migration no longer name an agent (they still name the ticket).

Revision ID: 5b2e9d4c7a10
Revises: 7d2e5b9c4a18
Create Date: 2026-12-05 08:20:00
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "5b2e9d4c7a10"
down_revision = "7d2e5b9c4a18"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reply_key",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default="",
            )
        )
    connection = op.get_bind()
    agents = sa.table("agents", sa.column("id", sa.Integer), sa.column("reply_key", sa.String))
    for (agent_id,) in connection.execute(sa.select(agents.c.id)).all():
        connection.execute(
            agents.update().where(agents.c.id == agent_id).values(reply_key=secrets.token_hex(16))
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("reply_key")
