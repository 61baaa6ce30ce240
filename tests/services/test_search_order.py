"""The relevance order and the capped count of the native list (issue 13, performance), on
SQLite and on a real PostgreSQL: subject hits first, then the rest, newest first in each, the
same on both engines and across page boundaries, whether the text is required (read off the
full-text index tier by tier) or only an alternative (computed per match); and `meta.total`
counted up to the cap, with `total_exact` false there."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailhelpdesk.services import ticket_list
from mailhelpdesk.store import ticket_query
from mailhelpdesk.store.db import read_scope
from mailhelpdesk.store.ticket_query import ListRequest
from tests.desk import Desk
from tests.helpers import make_mail
from tests.postgres import Postgres

# (subject, body) in the order they arrive: newer tickets have higher numbers
MAILS = [
    ("Printer jammed", "It makes a noise."),  # 1: subject hit, oldest
    ("Noise from the office", "The printer again, sorry."),  # 2: body hit
    ("Invoice question", "Nothing about devices here."),  # 3: no hit
    ("Laser printer toner", "Toner is low."),  # 4: subject hit
    ("Refund please", "My printer broke and I want a refund."),  # 5: body hit, newest hit
    ("Refund for order", "No devices involved."),  # 6: no printer
]


@pytest.fixture
def engines(desk_factory: Callable[..., Desk], postgres: Postgres) -> dict[str, Desk]:
    made = {"sqlite": desk_factory(), "postgresql": desk_factory(db_url=postgres.create_database())}
    for desk in made.values():
        for subject, body in MAILS:
            desk.feed(make_mail(subject=subject, body=body + "\n"))
    return made


def _subjects(desk: Desk, items: list[tuple[str, str]]) -> tuple[list[str], dict[str, object]]:
    with read_scope(desk.engine) as session:
        page = ticket_list.listing(session, ticket_list.parse(items))
    return [t["subject"] for t in page["tickets"]], page["meta"]


def test_subject_hits_first_then_newest_on_both_engines(engines: dict[str, Desk]) -> None:
    expected = {
        "printer": [
            "Laser printer toner",
            "Printer jammed",
            "Refund please",
            "Noise from the office",
        ],
        # the text required next to another filter: tiers still, the filter applied in each
        "printer status:open": [
            "Laser printer toner",
            "Printer jammed",
            "Refund please",
            "Noise from the office",
        ],
        '"printer again"': ["Noise from the office"],
        "printer refund": ["Refund please"],
        # refund in the subject of 5 and 6, printer only in 5's body: no ticket has both in
        # its subject, so both tiers are read and 5 is in the second
        "refund -printer": ["Refund for order"],
        # alternatives only: the tier is computed per match (subject holds any of them)
        "toner OR refund": ["Refund for order", "Refund please", "Laser printer toner"],
    }
    for q, subjects in expected.items():
        for name, desk in engines.items():
            got, meta = _subjects(desk, [("q", q)])
            assert got == subjects, (name, q)
            assert meta["sort"] == "relevance" and meta["total"] == len(subjects), (name, q)
            assert meta["total_exact"] is True


def test_pages_cross_the_tiers(engines: dict[str, Desk]) -> None:
    """per_page=1: every page is the next ticket of the one order, across the tier boundary."""
    for name, desk in engines.items():
        walked = []
        for page in range(1, 6):
            got, meta = _subjects(desk, [("q", "printer"), ("per_page", "1"), ("page", str(page))])
            walked.extend(got)
            assert meta["total"] == 4, name
        assert walked == [
            "Laser printer toner",
            "Printer jammed",
            "Refund please",
            "Noise from the office",
        ], name


def test_count_is_capped(engines: dict[str, Desk], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, desk in engines.items():
        with read_scope(desk.engine) as session:
            rows, total, sampled = ticket_query.list_tickets(session, ListRequest(count_cap=4))
            assert len(rows) == 6 and total == 4 and not sampled, name
            _, exact, _ = ticket_query.list_tickets(session, ListRequest(count_cap=None))
            assert exact == 6, name
        monkeypatch.setattr(ticket_list, "COUNT_CAP", 5)
        two = ("per_page", "2")
        _, meta = _subjects(desk, [two])
        assert meta["total"] == 5 and meta["total_exact"] is False, name
        # the page that ends the list says how many there are, whatever the cap
        _, meta = _subjects(desk, [two, ("page", "3")])
        assert meta["total"] == 6 and meta["total_exact"] is True, name
        _, meta = _subjects(desk, [two, ("page", "4")])  # past the end: nothing to go by
        assert meta["total"] == 5 and meta["total_exact"] is False, name
        _, meta = _subjects(desk, [("q", "printer")])
        assert meta["total"] == 4 and meta["total_exact"] is True, name
        # free text has a cap of its own: a full-text count tests every candidate
        monkeypatch.setattr(ticket_list, "TEXT_COUNT_CAP", 3)
        _, meta = _subjects(desk, [("q", "printer"), two])
        assert meta["total"] == 3 and meta["total_exact"] is False, name
        _, meta = _subjects(desk, [("status", "open"), two])
        assert meta["total"] == 5 and meta["total_exact"] is False, name
        monkeypatch.undo()


def test_a_text_count_reads_at_most_the_cap_of_hits(
    engines: dict[str, Desk], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With required text the count tests at most TEXT_COUNT_CAP hits of the full-text index:
    when the other filters are rare among them the total is a lower bound (`total_exact`
    false), and the page that ends the list tells the exact total. The tickets listed are the
    same as with an exact count."""
    # "printer" is in 1, 2, 4 and 5; "-jammed" drops 1: three matches among four hits
    q = [("q", "printer -jammed"), ("per_page", "1")]
    expected = ["Laser printer toner", "Refund please", "Noise from the office"]
    for name, desk in engines.items():
        walked = []
        for page in range(1, 4):
            got, meta = _subjects(desk, [*q, ("page", str(page))])
            walked.extend(got)
            assert meta["total"] == 3 and meta["total_exact"] is True, (name, page)
        assert walked == expected, name
        monkeypatch.setattr(ticket_list, "TEXT_COUNT_CAP", 2)
        for page in (1, 2):
            got, meta = _subjects(desk, [*q, ("page", str(page))])
            assert got == expected[page - 1 : page], (name, page)
            # two hits read, one or two of them matches: at least that many
            assert meta["total_exact"] is False and meta["total"] in (1, 2), (name, page, meta)
        got, meta = _subjects(desk, [*q, ("page", "3")])
        assert got == expected[2:] and meta["total"] == 3 and meta["total_exact"] is True, name
        with read_scope(desk.engine) as session:
            req = ticket_list.parse(q)
            _, total, sampled = ticket_query.list_tickets(
                session, ListRequest(where=req.where, sort=req.sort, count_cap=2)
            )
            assert sampled and total in (1, 2), name
            _, total, sampled = ticket_query.list_tickets(
                session, ListRequest(where=req.where, sort=req.sort, count_cap=5)
            )
            assert not sampled and total == 3, name
        monkeypatch.undo()


def test_a_phrase_is_counted_by_its_positions_among_the_hits_of_its_words(
    engines: dict[str, Desk],
) -> None:
    """On PostgreSQL the count reads the hits of a phrase's words and tests the positions of
    those only (search_text.counted_hits; SQLite looks the phrase up): a ticket holding the
    words apart is not counted, on either engine, and the count stays exact below the cap."""
    for name, desk in engines.items():
        desk.feed(make_mail(subject="Again and again", body="The printer hums.\n"))
        for q, subjects in (
            ('"printer again"', ["Noise from the office"]),
            ('"again printer"', []),
            ('printer "again and"', ["Again and again"]),
        ):
            with read_scope(desk.engine) as session:
                req = ticket_list.parse([("q", q)])
                _, total, sampled = ticket_query.list_tickets(
                    session, ListRequest(where=req.where, sort=req.sort, count_cap=10)
                )
            assert total == len(subjects) and not sampled, (name, q)
            got, meta = _subjects(desk, [("q", q)])
            assert got == subjects and meta["total"] == len(subjects), (name, q)
            assert meta["total_exact"] is True, (name, q)


def _page_sql(desk: Desk, items: list[tuple[str, str]]) -> str:
    with read_scope(desk.engine) as session:
        req = ticket_list.parse(items)
        page, _ = ticket_query.statements(session, ListRequest(where=req.where, sort=req.sort))
        return str(page.compile(desk.engine))


@pytest.mark.parametrize("key", ticket_query.SORT_KEYS)
def test_a_narrow_time_range_keeps_every_sort_order(engines: dict[str, Desk], key: str) -> None:
    """On PostgreSQL a time range on another column than the sort key, holding few tickets,
    sorts the range's matches instead of walking the key's index (`ticket_query._not_indexed`):
    the same order as without the range, on both engines, in both directions (ties by number)."""
    for name, desk in engines.items():
        for sort in (key, "-" + key):
            plain, _ = _subjects(desk, [("sort", sort)])
            for bound in (("created_after", "2000-01-01"), ("updated_before", "2100-01-01")):
                ranged, meta = _subjects(desk, [("sort", sort), bound])
                assert ranged == plain and meta["total"] == len(MAILS), (name, sort, bound)


def test_a_cursor_walks_a_narrow_range_in_order(engines: dict[str, Desk]) -> None:
    """The keyset cursor over a range sorted apart: every ticket once, in the order of the
    list without the range."""
    for name, desk in engines.items():
        for sort in ("-updated_at", "number", "subject"):
            plain, _ = _subjects(desk, [("sort", sort)])
            walked: list[str] = []
            items = [("sort", sort), ("created_after", "2000-01-01"), ("per_page", "2")]
            cursor: object = None
            for _ in range(len(MAILS)):
                with read_scope(desk.engine) as session:
                    page = ticket_list.listing(
                        session,
                        ticket_list.parse(items + ([("cursor", str(cursor))] if cursor else [])),
                    )
                walked.extend(t["subject"] for t in page["tickets"])
                cursor = page["meta"]["next_cursor"]
                if cursor is None:
                    break
            assert walked == plain, (name, sort)


def test_only_a_narrow_range_on_another_column_is_sorted_apart(
    engines: dict[str, Desk], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The choice itself (PostgreSQL only): the sort key's index is kept for a range on the sort
    key and for a range holding NARROW_RANGE tickets or more; SQLite never changes its order."""
    apart = "interval '0'"
    created = ("created_after", "2000-01-01")
    assert apart in _page_sql(engines["postgresql"], [created])
    assert apart not in _page_sql(engines["postgresql"], [created, ("sort", "-created_at")])
    assert apart not in _page_sql(engines["sqlite"], [created])
    monkeypatch.setattr(ticket_query, "NARROW_RANGE", len(MAILS))
    assert apart not in _page_sql(engines["postgresql"], [created])
    monkeypatch.setattr(ticket_query, "NARROW_RANGE", len(MAILS) + 1)
    assert apart in _page_sql(engines["postgresql"], [created])
