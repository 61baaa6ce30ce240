"""urgent_by_due: the list's "most urgent open tickets by due time" as one index range

Revision ID: 7d2a9c4e1b86
Revises: 3c8f1a6d2e90
Create Date: 2026-12-05 15:20:00

`priority=Urgent&status=open&sort=due_at` read every urgent ticket off
`ix_tickets_priority_number` (9,000 of 100,000) to find the 2,700 open ones, and its count
fetched each of them to test `status` and `deleted_at` (docs/performance.md, "Search").
`ix_tickets_priority_status_due` (priority, status, deleted_at, due_at) makes both a range:
the count reads the index alone, and PostgreSQL reads the page in due order off it.
"""

from __future__ import annotations

from alembic import op

revision = "7d2a9c4e1b86"
down_revision = "3c8f1a6d2e90"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain CREATE INDEX (no batch): a batch could copy `tickets` and drop the search triggers
    op.create_index(
        "ix_tickets_priority_status_due",
        "tickets",
        ["priority", "status", "deleted_at", "due_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_priority_status_due", "tickets")
