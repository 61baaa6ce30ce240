"""Full-text matching against `ticket_search` (migration 0014), the same on SQLite and PostgreSQL.

The document of a ticket is its subject plus the text of every response (internal notes
included: the list is for agents), kept by triggers in the transaction of the write. Both
engines see it as a sequence of words: runs of letters and digits, case and Latin accents folded
(SQLite: FTS5 `unicode61 remove_diacritics 2`; PostgreSQL: the `simple` configuration over
`mhd_search_fold`, which lower-cases, decomposes (NFD) and drops the combining accents, and turns
every other character into a space; `unaccent` is not used because creating an extension needs
rights a helpdesk's database user may not have, and a `translate` table costs a scan of the
table per character).

A term is turned into words the same way here, so `order-7731` is the phrase `order 7731` on
both engines, and nothing the user types reaches a MATCH or tsquery expression except runs of
letters and digits. Japanese and Chinese text has no spaces between words, and neither
tokenizer splits it, so a term holding CJK characters is matched as a substring of the subject
or the text instead (a scan of the search table, not an index lookup; docs/performance.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, column, func, literal_column, not_, table
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from mailhelpdesk.domain.models import Ticket

if TYPE_CHECKING:
    from mailhelpdesk.store.ticket_query import TextTerm

# the document is capped (both engines) so that a huge message cannot overflow a tsvector
MAX_DOCUMENT_CHARS = 1_000_000
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]"
)

SQLITE_TABLE = table("ticket_search", column("rowid"), column("subject"), column("body"))
PG_TABLE = table(
    "ticket_search", column("ticket_id"), column("subject"), column("body"), column("doc")
)


_MARKS = re.compile(r"[\u0300-\u036f]+")


def fold(value: str) -> str:
    """Lower case, accents stripped (NFD, combining marks U+0300-U+036F dropped): what both
    indexes hold for a word (PostgreSQL's mhd_search_fold does the same steps)."""
    return _MARKS.sub("", unicodedata.normalize("NFD", value.lower()))


def words(value: str) -> list[str]:
    """The words of a term as both engines' tokenizers cut them."""
    return _WORD.findall(fold(value))


def has_cjk(value: str) -> bool:
    return _CJK.search(value) is not None


def matches(dialect: str, term: TextTerm) -> ColumnElement[bool]:
    """The ticket's document contains the term (all its words, adjacent when a phrase)."""
    if has_cjk(term.text):
        needle = term.text.strip().lower()
        if dialect == "postgresql":
            hit = sa_select(PG_TABLE.c.ticket_id).where(
                (func.strpos(func.lower(PG_TABLE.c.subject), needle) > 0)
                | (func.strpos(func.lower(PG_TABLE.c.body), needle) > 0)
            )
        else:
            hit = sa_select(SQLITE_TABLE.c.rowid).where(
                (func.instr(func.lower(SQLITE_TABLE.c.subject), needle) > 0)
                | (func.instr(func.lower(SQLITE_TABLE.c.body), needle) > 0)
            )
        return col(Ticket.id).in_(hit)
    expression = _expression(dialect, [term], join="AND")
    if expression is None:  # no letters or digits at all: a term that narrows nothing
        return literal_column("1") == literal_column("1")
    return col(Ticket.id).in_(_hits(dialect, expression))


@dataclass(frozen=True)
class Tier:
    """One tier of the relevance order: the rows of `table` (keyed by ticket id, `key`) where
    `condition` holds, read in descending `key` order straight off the full-text index."""

    table: Any
    key: Any
    condition: ColumnElement[bool]


def indexed(term: TextTerm) -> bool:
    """The term is looked up in the word index (it has words and no CJK characters)."""
    return not has_cjk(term.text) and bool(words(term.text))


def tiers(dialect: str, terms: list[TextTerm]) -> list[Tier] | None:
    """The two tiers of the relevance order for required terms (all of them must match):
    the tickets whose subject holds them all, then the others. SQLite: FTS5 column filters
    (`{subject} : (…)` and `(…) NOT {subject} : (…)`), read in rowid order; PostgreSQL: the
    subject's own tsvector (GIN index ix_ticket_search_subject, migration 0019) and `doc`."""
    expression = _expression(dialect, terms, join="AND")
    if expression is None:
        return None
    if dialect == "postgresql":
        query = _pg_query(expression)
        in_subject = _pg_subject().bool_op("@@")(query)
        return [
            Tier(PG_TABLE, PG_TABLE.c.ticket_id, in_subject),
            Tier(
                PG_TABLE,
                PG_TABLE.c.ticket_id,
                and_(PG_TABLE.c.doc.bool_op("@@")(query), not_(in_subject)),
            ),
        ]
    return [
        Tier(SQLITE_TABLE, SQLITE_TABLE.c.rowid, _match(f"{{subject}} : ({expression})")),
        Tier(
            SQLITE_TABLE,
            SQLITE_TABLE.c.rowid,
            _match(f"({expression}) NOT {{subject}} : ({expression})"),
        ),
    ]


@dataclass(frozen=True)
class CountedHits:
    """What a capped full-text count reads: `hits`, a subquery of the ids (`ticket_id`) of the
    documents holding every word of the terms, found by the index alone, and `positions`, the
    test the words must also pass as phrases (None when no term has two words), to be made
    only for the hits the count reads."""

    hits: Any
    positions: ColumnElement[bool] | None


def counted_hits(dialect: str, terms: list[TextTerm]) -> CountedHits | None:
    """The hits a capped count reads, in the engine's order: on PostgreSQL the documents
    holding every word, with a phrase's positions as the test to make for the hits read; on
    SQLite the documents holding the terms.

    The words alone on PostgreSQL, because a phrase's positions cost a decompressed document per
    candidate (its GIN index knows words, not positions: `"invoice missing"` rechecked 2,000
    documents to count 1,000, 27 ms at 100,000 tickets); the count makes that test for the hits
    it reads only. So where the count stops short of the matches (a lower bound) the two
    engines may stop at different numbers; below the cap both are exact."""
    exact = _expression(dialect, terms, join="AND")
    if exact is None:
        return None
    if dialect == "postgresql":
        loose = _expression(dialect, terms, join="AND", loose=True) or exact
        positional = any(len(words(t.text)) > 1 for t in terms)
        # no LIMIT of its own: the planner would then read the table in order testing `doc`
        # row by row, expecting the limit to come early
        hits = _hits(dialect, loose, with_doc=True).subquery("hits")
        test = hits.c.doc.bool_op("@@")(_pg_query(exact)) if positional else None
        return CountedHits(hits, test)
    # FTS5 keeps positions in its doclists: a phrase is as cheap to look up as its words
    return CountedHits(_hits(dialect, exact).subquery("hits"), None)


def subject_hits(dialect: str, terms: list[TextTerm]) -> Any:
    """A subquery of the ids of tickets whose subject holds any of the terms (the first tier
    when text terms are only alternatives); None when no term has words."""
    expression = _expression(dialect, [t for t in terms if indexed(t)], join="OR")
    if expression is None:
        return None
    if dialect == "postgresql":
        query = _pg_query(expression)
        return sa_select(PG_TABLE.c.ticket_id).where(_pg_subject().bool_op("@@")(query))
    return sa_select(SQLITE_TABLE.c.rowid).where(_match(f"{{subject}} : ({expression})"))


def _pg_query(expression: str) -> Any:
    """A to_tsquery of `expression` (built by `_expression`) in the `simple` configuration, as
    the documents' tsvectors are."""
    return func.to_tsquery(literal_column("'simple'::regconfig"), expression)


def _pg_subject() -> Any:
    """The subject's tsvector, the expression of the GIN index ix_ticket_search_subject."""
    return func.to_tsvector(
        literal_column("'simple'::regconfig"), func.mhd_search_fold(PG_TABLE.c.subject)
    )


def _hits(dialect: str, expression: str, *, with_doc: bool = False) -> Any:
    """The ids (`ticket_id`) of the documents matching `expression`, and on PostgreSQL their
    `doc` too when asked (a test still to make on them)."""
    if dialect == "postgresql":
        query = _pg_query(expression)
        columns = (PG_TABLE.c.ticket_id, PG_TABLE.c.doc) if with_doc else (PG_TABLE.c.ticket_id,)
        # OFFSET 0 keeps the subquery planned on its own, a bitmap scan of the GIN index (exact
        # for words: no document is read); flattened into the ticket query, a count under a
        # LIMIT was planned as a scan testing `doc` row by row: 4.5 s at 100,000 tickets
        return (
            sa_select(*columns)
            .where(PG_TABLE.c.doc.bool_op("@@")(query))
            .offset(literal_column("0"))
        )
    return sa_select(SQLITE_TABLE.c.rowid.label("ticket_id")).where(_match(expression))


def _match(expression: str) -> ColumnElement[bool]:
    """SQLite: the FTS5 table's rows matching `expression` (an FTS5 query built by
    `_expression`, with column filters where a tier needs them)."""
    return literal_column("ticket_search").op("MATCH")(expression)


def _expression(
    dialect: str, terms: list[TextTerm], *, join: str, loose: bool = False
) -> str | None:
    """An FTS5 MATCH or a to_tsquery string of the terms' words: only letters and digits, each
    term a phrase of its words (`loose`, PostgreSQL: its words in any order and place), the
    terms joined by AND or OR."""
    parts = []
    for term in terms:
        found = words(term.text)
        if not found:
            continue
        if dialect == "postgresql":
            glue = " & " if loose else " <-> "
            parts.append("(" + glue.join(f"'{w}'" for w in found) + ")")
        else:
            parts.append('"' + " ".join(found) + '"')
    if not parts:
        return None
    if dialect == "postgresql":
        return (" & " if join == "AND" else " | ").join(parts)
    return f" {join} ".join(parts)
