"""search: the full-text document per ticket (FTS5 / tsvector + GIN), kept by triggers, and the
indexes behind the list filters and sorts

Revision ID: 7d2e5b9c4a18
Revises: 5d2e8b1c7f64
Create Date: 2026-12-05 08:30:00

`ticket_search` holds one row per ticket: its subject and the text of its responses (a
response's full text, plus its visible text when the full text does not contain it), capped at
1,000,000 characters. Triggers on `tickets` and `responses` keep it in the transaction of every
write, whatever writes (services, the store, a bulk import, a merge moving responses); the
upgrade fills it for the rows already there. store/search_text.py reads it.
"""

# ruff: noqa: ISC004 - the DDL lists below are long SQL statements split over lines
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7d2e5b9c4a18"
down_revision = "5d2e8b1c7f64"
branch_labels = None
depends_on = None

CAP = 1_000_000


def _text(r: str, find: str) -> str:
    """A response's searchable text: the full text, plus the visible text unless it is in it."""
    return (
        f"CASE WHEN {find}({r}.plain_text, {r}.visible_text) > 0 THEN {r}.plain_text "
        f"ELSE {r}.visible_text || ' ' || {r}.plain_text END"
    )


def _sqlite_body(ticket_id: str) -> str:
    return (
        f"substr(coalesce((SELECT group_concat({_text('r', 'instr')}, ' ') FROM "
        f"(SELECT * FROM responses WHERE ticket_id = {ticket_id} ORDER BY id) AS r), ''), 1, {CAP})"
    )


SQLITE = [
    "CREATE VIRTUAL TABLE ticket_search USING fts5("
    "subject, body, tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER ticket_search_ticket_ai AFTER INSERT ON tickets BEGIN "
    "INSERT INTO ticket_search(rowid, subject, body) VALUES (NEW.id, NEW.subject, ''); END",
    "CREATE TRIGGER ticket_search_ticket_au AFTER UPDATE OF subject ON tickets BEGIN "
    "UPDATE ticket_search SET subject = NEW.subject WHERE rowid = NEW.id; END",
    "CREATE TRIGGER ticket_search_ticket_ad AFTER DELETE ON tickets BEGIN "
    "DELETE FROM ticket_search WHERE rowid = OLD.id; END",
    "CREATE TRIGGER ticket_search_response_ai AFTER INSERT ON responses BEGIN "
    "UPDATE ticket_search SET body = substr(CASE WHEN body = '' THEN "
    f"{_text('NEW', 'instr')} ELSE body || ' ' || {_text('NEW', 'instr')} END, 1, {CAP}) "
    "WHERE rowid = NEW.ticket_id; END",
    "CREATE TRIGGER ticket_search_response_au "
    "AFTER UPDATE OF ticket_id, plain_text, visible_text ON responses BEGIN "
    f"UPDATE ticket_search SET body = {_sqlite_body('OLD.ticket_id')} WHERE rowid = OLD.ticket_id; "
    f"UPDATE ticket_search SET body = {_sqlite_body('NEW.ticket_id')} "
    "WHERE rowid = NEW.ticket_id AND NEW.ticket_id <> OLD.ticket_id; END",
    "CREATE TRIGGER ticket_search_response_ad AFTER DELETE ON responses BEGIN "
    f"UPDATE ticket_search SET body = {_sqlite_body('OLD.ticket_id')} WHERE rowid = OLD.ticket_id; END",
    # the backfill, set-based: every ticket's responses concatenated in one pass
    "INSERT INTO ticket_search(rowid, subject, body) "
    f"SELECT t.id, t.subject, substr(coalesce(b.body, ''), 1, {CAP}) FROM tickets AS t "
    f"LEFT JOIN (SELECT r.ticket_id, group_concat({_text('r', 'instr')}, ' ') AS body FROM "
    "(SELECT * FROM responses ORDER BY ticket_id, id) AS r GROUP BY r.ticket_id) AS b "
    "ON b.ticket_id = t.id",
]


def _postgresql() -> list[str]:
    return [
        # lower case, accents stripped (NFD, then the combining marks U+0300-U+036F dropped),
        # everything but letters and digits a space: the words FTS5's unicode61 tokenizer cuts.
        # IMMUTABLE, so the generated column may use it; normalize() needs a UTF8 database.
        "CREATE FUNCTION mhd_search_fold(value text) RETURNS text LANGUAGE sql IMMUTABLE "
        "PARALLEL SAFE AS $$ SELECT regexp_replace(regexp_replace(normalize(lower(value), NFD), "
        "'[\\u0300-\\u036f]+', '', 'g'), '[^[:alnum:]]+', ' ', 'g') $$",
        "CREATE TABLE ticket_search ("
        "ticket_id integer PRIMARY KEY REFERENCES tickets(id) ON DELETE CASCADE, "
        "subject text NOT NULL DEFAULT '', body text NOT NULL DEFAULT '', "
        "doc tsvector GENERATED ALWAYS AS ("
        "setweight(to_tsvector('simple'::regconfig, mhd_search_fold(subject)), 'A') || "
        "setweight(to_tsvector('simple'::regconfig, mhd_search_fold(body)), 'B')) STORED)",
        "CREATE INDEX ix_ticket_search_doc ON ticket_search USING gin (doc)",
        "CREATE FUNCTION mhd_search_body(tid integer) RETURNS text LANGUAGE sql STABLE AS $$ "
        f"SELECT left(coalesce(string_agg({_text('r', 'strpos')}, ' ' ORDER BY r.id), ''), {CAP}) "
        "FROM responses AS r WHERE r.ticket_id = tid $$",
        "CREATE FUNCTION mhd_search_ticket() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "INSERT INTO ticket_search(ticket_id, subject, body) VALUES (NEW.id, NEW.subject, ''); "
        "ELSIF NEW.subject IS DISTINCT FROM OLD.subject THEN "
        "UPDATE ticket_search SET subject = NEW.subject WHERE ticket_id = NEW.id; "
        "END IF; RETURN NULL; END $$",
        "CREATE TRIGGER ticket_search_ticket AFTER INSERT OR UPDATE OF subject ON tickets "
        "FOR EACH ROW EXECUTE FUNCTION mhd_search_ticket()",
        "CREATE FUNCTION mhd_search_response() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "UPDATE ticket_search SET body = left(CASE WHEN body = '' THEN "
        f"{_text('NEW', 'strpos')} ELSE body || ' ' || {_text('NEW', 'strpos')} END, {CAP}) "
        "WHERE ticket_id = NEW.ticket_id; "
        "ELSIF TG_OP = 'UPDATE' THEN "
        "UPDATE ticket_search SET body = mhd_search_body(OLD.ticket_id) "
        "WHERE ticket_id = OLD.ticket_id; "
        "IF NEW.ticket_id <> OLD.ticket_id THEN "
        "UPDATE ticket_search SET body = mhd_search_body(NEW.ticket_id) "
        "WHERE ticket_id = NEW.ticket_id; END IF; "
        "ELSE UPDATE ticket_search SET body = mhd_search_body(OLD.ticket_id) "
        "WHERE ticket_id = OLD.ticket_id; "
        "END IF; RETURN NULL; END $$",
        "CREATE TRIGGER ticket_search_response "
        "AFTER INSERT OR DELETE OR UPDATE OF ticket_id, plain_text, visible_text ON responses "
        "FOR EACH ROW EXECUTE FUNCTION mhd_search_response()",
        # the backfill, set-based (a SQL function per row would be planned once per ticket)
        "INSERT INTO ticket_search(ticket_id, subject, body) "
        "SELECT t.id, t.subject, coalesce(b.body, '') FROM tickets AS t LEFT JOIN "
        f"(SELECT r.ticket_id, left(string_agg({_text('r', 'strpos')}, ' ' ORDER BY r.id), {CAP}) "
        "AS body FROM responses AS r GROUP BY r.ticket_id) AS b ON b.ticket_id = t.id",
    ]


# expression indexes (Alembic's autogenerate does not compare these, so they live here only)
EXPRESSION_INDEXES = [
    "CREATE INDEX ix_ticket_tags_lower_name ON ticket_tags (lower(name), ticket_id)",
    "CREATE INDEX ix_ticket_field_values_name_value "
    "ON ticket_field_values (name, substr(value, 1, 100))",
]


def upgrade() -> None:
    bind = op.get_bind()
    for statement in SQLITE if bind.dialect.name == "sqlite" else _postgresql():
        op.execute(sa.text(statement))
    for statement in EXPRESSION_INDEXES:
        op.execute(sa.text(statement))
    # plain CREATE INDEX (no batch): a batch could copy `tickets` and drop the triggers above
    op.create_index("ix_tickets_updated_at_number", "tickets", ["updated_at", "number"])
    op.create_index("ix_tickets_priority_number", "tickets", ["priority", "number"])
    op.create_index("ix_tickets_assigned_to_email", "tickets", ["assigned_to_email"])


def downgrade() -> None:
    op.drop_index("ix_tickets_assigned_to_email", "tickets")
    op.drop_index("ix_tickets_priority_number", "tickets")
    op.drop_index("ix_tickets_updated_at_number", "tickets")
    op.execute(sa.text("DROP INDEX ix_ticket_field_values_name_value"))
    op.execute(sa.text("DROP INDEX ix_ticket_tags_lower_name"))
    if op.get_bind().dialect.name == "sqlite":
        for name in (
            "ticket_ai",
            "ticket_au",
            "ticket_ad",
            "response_ai",
            "response_au",
            "response_ad",
        ):
            op.execute(sa.text(f"DROP TRIGGER ticket_search_{name}"))
        op.execute(sa.text("DROP TABLE ticket_search"))
        return
    op.execute(sa.text("DROP TRIGGER ticket_search_response ON responses"))
    op.execute(sa.text("DROP TRIGGER ticket_search_ticket ON tickets"))
    op.execute(sa.text("DROP TABLE ticket_search"))
    for fn in (
        "mhd_search_response()",
        "mhd_search_ticket()",
        "mhd_search_body(integer)",
        "mhd_search_fold(text)",
    ):
        op.execute(sa.text(f"DROP FUNCTION {fn}"))
