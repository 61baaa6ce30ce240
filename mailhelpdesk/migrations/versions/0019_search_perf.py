"""search_perf: indexes for the list's counts and filters and the relevance order's subject tier

Revision ID: 9e4b7c2d5a31
Revises: 5b2e9d4c7a10
Create Date: 2026-12-05 11:40:00

Chosen from EXPLAIN at 100,000 tickets (docs/performance.md, "Search"):

- `ix_tickets_status_live` (status, queue_id, assigned_to_email, deleted_at): every list
  has `deleted_at IS NULL`, so the count of `status=open` reads the index alone instead of
  fetching 30,000 rows to test `deleted_at`, and `status=open&queue=Sales&assignee=none` is
  one index range of 300 entries instead of the 4,800 unassigned tickets sorted out row by
  row. (A partial index `WHERE deleted_at IS NULL` lost to ix_tickets_status in SQLite's
  planner, which does not see that it covers the count; with deleted_at second, SQLite
  used only the status prefix and read the list off the updated_at index instead.)
- PostgreSQL only: `ix_ticket_search_subject`, a GIN index on the subject's own tsvector: the
  first tier of the relevance order (subject hits) is read from it; the `doc` column mixes
  subject and text, and its weights are not in the GIN index (a recheck of every match).
  SQLite reads the same tier from the FTS5 table with a column filter, no index needed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9e4b7c2d5a31"
down_revision = "5b2e9d4c7a10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain CREATE INDEX (no batch): a batch could copy `tickets` and drop the search triggers
    op.create_index(
        "ix_tickets_status_live",
        "tickets",
        ["status", "queue_id", "assigned_to_email", "deleted_at"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            sa.text(
                "CREATE INDEX ix_ticket_search_subject ON ticket_search USING gin "
                "(to_tsvector('simple'::regconfig, mhd_search_fold(subject)))"
            )
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text("DROP INDEX ix_ticket_search_subject"))
    op.drop_index("ix_tickets_status_live", "tickets")
