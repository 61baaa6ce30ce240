"""The q grammar (resources.md §7): what each construct becomes, that field terms are exactly the
query-string filters, and where errors are reported. Pure: no database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.services.list_terms import Terms, filter_for
from mailhelpdesk.services.query_language import MAX_CHARS, QueryError, parse
from mailhelpdesk.store.ticket_query import AllOf, AnyOf, Not, TextTerm, TicketFilter

TERMS = Terms((CustomFieldConfig(name="order", type="number"),))


def words(*texts: str) -> list[TicketFilter]:
    return [TicketFilter(text=(TextTerm(t),)) for t in texts]


def test_words_are_anded_and_or_binds_looser() -> None:
    a, b, c = words("a", "b", "c")
    assert parse("a b", TERMS) == AllOf((a, b))
    assert parse("a OR b c", TERMS) == AnyOf((a, AllOf((b, c))))
    assert parse("(a OR b) c", TERMS) == AllOf((AnyOf((a, b)), c))
    assert parse("a or b", TERMS) == AllOf((a, *words("or"), b))  # OR is upper case only


def test_phrase_negation_and_nesting() -> None:
    (a,) = words("a")
    phrase = TicketFilter(text=(TextTerm("order 7731", phrase=True),))
    assert parse('"order 7731"', TERMS) == phrase
    assert parse('-"order 7731" a', TERMS) == AllOf((Not(phrase), a))
    assert parse("--a", TERMS) == Not(Not(a))
    assert parse("((a))", TERMS) == a
    assert parse("x-y", TERMS) == words("x-y")[0]  # a dash inside a word is part of it


@pytest.mark.parametrize(
    ("term", "name", "value"),
    [
        ("status:open,closed", "status", "open,closed"),
        ("assignee:none", "assignee", "none"),
        ("assignee:any", "assignee", "any"),
        ("tag:vip", "tag", "vip"),
        ("queue:Sales", "queue", "Sales"),
        ("requester:a@b.test", "requester", "a@b.test"),
        ("priority:High", "priority", "High"),
        ("cf.order:7731", "cf.order", "7731"),
        ("unresponded:true", "unresponded", "true"),
        ("breached:yes", "breached", "yes"),
        ("has_attachments:1", "has_attachments", "1"),
        ("contact_id:3", "contact_id", "3"),
        ('tag:"big deal"', "tag", "big deal"),
    ],
)
def test_field_terms_are_the_query_string_filters(term: str, name: str, value: str) -> None:
    assert parse(term, TERMS) == filter_for(name, value, TERMS)


def test_ranges() -> None:
    day = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse("created:2026-11-01..2026-11-30", TERMS) == TicketFilter(
        created_from=day, created_to=end
    )
    assert parse("due:<2026-12-01", TERMS) == TicketFilter(
        due_to=datetime(2026, 12, 1, tzinfo=UTC) - timedelta(microseconds=1)
    )
    assert parse("updated:>=2026-11-01", TERMS) == TicketFilter(updated_from=day)
    assert parse("created:2026-11-01..", TERMS) == TicketFilter(created_from=day)
    assert parse("created:2026-11-01", TERMS) == TicketFilter(
        created_from=day, created_to=day + timedelta(days=1) - timedelta(microseconds=1)
    )
    assert parse("created:2026-11-01", TERMS) == filter_for("created", "2026-11-01", TERMS)


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("a OR", "unexpected end of query at column 5"),
        ("(a", "unexpected end of query at column 3"),
        ("a)", "unexpected ')' at column 2"),
        ('"open', "unexpected character '\"' at column 1"),
        ("a - b", "unexpected '-' at column 3"),
        ("x status:nope", "status: is a comma list of open, on-hold, closed at column 3"),
        ("cf.color:red", "cf.color: unknown custom field 'color' at column 1"),
        ("cf.order:abc", "cf.order: expected a number at column 1"),
        (
            "due:<tomorrow",
            "due: 'tomorrow' is not a YYYY-MM-DD date or an ISO 8601 time at column 1",
        ),
        ("a\x00b", "control character at column 2"),
        ("a\x1bb", "control character at column 2"),
        ("(" * 21 + "a" + ")" * 21, "more than 20 nested parentheses at column 21"),
        ("x" * (MAX_CHARS + 1), f"q is at most {MAX_CHARS} characters at column {MAX_CHARS + 1}"),
        (" ".join(["w"] * 51), "more than 50 terms at column 1"),
    ],
)
def test_errors_name_the_column(q: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(q, TERMS)
    assert str(caught.value) == message


def test_empty_is_no_filter() -> None:
    assert parse("", TERMS) is None
    assert parse("  \t ", TERMS) is None


def test_hostile_input_is_refused_fast() -> None:
    """1,000 nested parentheses and 10,000 characters are refused before lark sees them; the
    largest accepted input parses in well under a second."""
    for q in ("(" * 1000 + "a" + ")" * 1000, "x" * 10_000, "'; DROP TABLE tickets; --" * 400):
        started = time.monotonic()
        with pytest.raises(QueryError):
            parse(q, TERMS)
        assert time.monotonic() - started < 0.5
    started = time.monotonic()
    tree = parse(" OR ".join(["(a -b)"] * 25), TERMS)
    assert isinstance(tree, AnyOf) and len(tree.items) == 25
    assert time.monotonic() - started < 0.5
