"""contacts: customers, their addresses, and the contact of every ticket

Existing databases get their contacts here, not lazily: one contact per distinct originator
address (lower-cased), named after the earliest ticket that gave a name, created at its first
ticket; every ticket with an originator then carries its contact_id. Set-based SQL, so a large
database migrates in a few statements, the same on SQLite and PostgreSQL.

Revision ID: 9588d65f775c
Revises: 8c5e1a3d9f74
Create Date: 2026-12-05 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "9588d65f775c"
down_revision = "8c5e1a3d9f74"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("company", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "contact_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_index(
        "ix_contact_addresses_contact_id", "contact_addresses", ["contact_id"], unique=False
    )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_tickets_contact_id", ["contact_id"], unique=False)
        batch_op.create_foreign_key("fk_tickets_contact_id", "contacts", ["contact_id"], ["id"])
    _contacts_from_originators()


def _contacts_from_originators() -> None:
    """One contact per distinct originator address of the existing tickets."""
    op.execute(
        "INSERT INTO contacts (email, name, company, phone, notes, created_at, updated_at) "
        "SELECT lower(originator_email), '', '', '', '', min(created_at), max(created_at) "
        "FROM tickets WHERE originator_email <> '' GROUP BY lower(originator_email)"
    )
    op.execute(
        "UPDATE contacts SET name = coalesce(("
        "SELECT t.originator_name FROM tickets t "
        "WHERE lower(t.originator_email) = contacts.email AND t.originator_name <> '' "
        "ORDER BY t.created_at, t.id LIMIT 1), '')"
    )
    op.execute("INSERT INTO contact_addresses (contact_id, email) SELECT id, email FROM contacts")
    op.execute(
        "UPDATE tickets SET contact_id = ("
        "SELECT c.id FROM contacts c WHERE c.email = lower(tickets.originator_email)) "
        "WHERE originator_email <> ''"
    )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_constraint("fk_tickets_contact_id", type_="foreignkey")
        batch_op.drop_index("ix_tickets_contact_id")
        batch_op.drop_column("contact_id")
    op.drop_index("ix_contact_addresses_contact_id", table_name="contact_addresses")
    op.drop_table("contact_addresses")
    op.drop_table("contacts")
