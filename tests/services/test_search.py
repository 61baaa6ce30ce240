"""Full text over real corpus mail (Japanese, German, French, English) on SQLite and on a real
PostgreSQL: the same queries find the same tickets on both engines, accents and case folded,
Japanese found by a word of it; the search document follows merges and subject changes in the
transaction of the write; the migration fills it for tickets that were there before it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from mailhelpdesk.services import housekeeping, ticket_list
from mailhelpdesk.store import schema
from mailhelpdesk.store.db import make_engine, read_scope, session_scope
from tests.desk import Desk
from tests.postgres import Postgres

CORPUS = [
    "mikel-mail/multi_charset/japanese.eml",  # まみむめも / かきくえこ
    "mikel-mail/multi_charset/japanese_iso_2022.eml",  # まみむめも / すみません。
    "redmine/subject_japanese_1.eml",  # テスト
    "redmine/japanese_keywords_iso_2022_jp.eml",  # Japanese Character pattern matching
    "zammad/mail004.box",  # AW: Ticket Templates: Präsentation/Einführung, Über Feedback
    "zammad/mail005.box",  # Re: XXXX Betatest Ticket Templates (quotes the same German text)
    "zammad/mail007.box",  # AW:Installation
    "zammad/mail072.box",  # Réclamation commande n° 018255977840
    "zammad/mail075.box",  # test email: Bonjour … alignement de votre prix
    "redmine/ticket_on_given_project.eml",  # Lorem ipsum
    "zammad/mail001.box",  # CI Daten für PublicView: Schriftfarbe: Schwarz
]

# q -> the subjects of the tickets it finds (whatever the engine)
EXPECTED: dict[str, set[str]] = {
    "むめ": {"まみむめも"},
    "すみません": {"まみむめも"},
    "テスト": {"テスト"},
    "Präsentation": {
        "AW: Ticket Templates [Ticket#11168]",
        "Re: XXXX Betatest Ticket Templates [Ticket#11162]",
    },
    "PRASENTATION": {
        "AW: Ticket Templates [Ticket#11168]",
        "Re: XXXX Betatest Ticket Templates [Ticket#11162]",
    },
    "uber feedback": {
        "AW: Ticket Templates [Ticket#11168]",
        "Re: XXXX Betatest Ticket Templates [Ticket#11162]",
    },
    '"Einführung in die Ticket Templates"': {
        "AW: Ticket Templates [Ticket#11168]",
        "Re: XXXX Betatest Ticket Templates [Ticket#11162]",
    },
    "reclamation": {"Réclamation commande n° 018255977840"},
    "RÉFÉRENCÉE": {"Réclamation commande n° 018255977840"},
    "018255977840": {"Réclamation commande n° 018255977840"},
    "commande": {"Réclamation commande n° 018255977840", "test email"},
    '"alignement de votre prix"': {"test email"},
    '"prix de votre alignement"': set(),
    '"pattern matching"': {"Japanese Character pattern matching"},
    "Schwarz OR Lorem": {"CI Daten für PublicView", "New ticket on a given project"},
    "commande -reclamation": {"test email"},
    "schrift*": set(),  # no prefix search: the star is not a letter, "schrift" alone is no word
    "ticket templates -betatest": {"AW: Ticket Templates [Ticket#11168]"},
    "installation absagen": {"AW:Installation [Ticket#11392]"},
    "nowhere-to-be-found": set(),
}


def _fill(desk: Desk, corpus_dir: Path) -> None:
    for name in CORPUS:
        desk.feed((corpus_dir / name).read_bytes(), mail_from="customer@customer.test")


def _found(desk: Desk, q: str) -> list[str]:
    with read_scope(desk.engine) as session:
        request = ticket_list.parse([("q", q), ("sort", "number")])
        return [h["subject"] for h in ticket_list.all_headers(session, request, limit=None)]


@pytest.fixture
def engines(
    desk_factory: Callable[..., Desk], postgres: Postgres, corpus_dir: Path
) -> dict[str, Desk]:
    made = {"sqlite": desk_factory(), "postgresql": desk_factory(db_url=postgres.create_database())}
    for desk in made.values():
        _fill(desk, corpus_dir)
    return made


def test_corpus_full_text_is_the_same_on_sqlite_and_postgresql(engines: dict[str, Desk]) -> None:
    for q, subjects in EXPECTED.items():
        found = {name: _found(desk, q) for name, desk in engines.items()}
        assert found["sqlite"] == found["postgresql"], q
        assert set(found["sqlite"]) == subjects, q


def test_relevance_puts_the_subject_match_first(engines: dict[str, Desk]) -> None:
    """Ranked: a ticket with the word in its subject comes before one with it only in text."""
    for desk in engines.values():
        with read_scope(desk.engine) as session:
            request = ticket_list.parse([("q", "commande")])
            assert request.sort.key == "relevance"
            got = [h["subject"] for h in ticket_list.all_headers(session, request, limit=None)]
        assert got[0] == "Réclamation commande n° 018255977840", got


def test_merge_and_subject_change_follow_in_the_same_transaction(
    engines: dict[str, Desk],
) -> None:
    for desk in engines.values():
        tickets = {t.subject: t for t in desk.tickets()}
        source, target = tickets["test email"], tickets["New ticket on a given project"]
        with session_scope(desk.engine) as session:
            housekeeping.merge(
                session, ticket_number=source.number, into=target.number, change=desk.change()
            )
        assert set(_found(desk, '"alignement de votre prix"')) == {target.subject}
        with session_scope(desk.engine) as session:
            session.execute(
                text("UPDATE tickets SET subject = 'Kühlschrank kaputt' WHERE id = :id"),
                {"id": target.id},
            )
        assert _found(desk, "kuhlschrank") == ["Kühlschrank kaputt"]
        assert _found(desk, "Lorem") == ["Kühlschrank kaputt"]


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_the_migration_fills_the_index_for_existing_tickets(
    tmp_path: Path, postgres: Postgres, engine_name: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if engine_name == "sqlite"
        else postgres.create_database()
    )
    engine = make_engine(url)
    try:
        cfg = schema._alembic_config()
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "3c1f7a9e2b40")  # 0013, before the search table
        with engine.begin() as connection:
            _old_rows(connection)
        schema.upgrade(engine)
        with read_scope(engine) as session:
            for q in ("Überweisung", "ueberweisung OR uberweisung", "二重"):
                request = ticket_list.parse([("q", q), ("sort", "number")])
                got = ticket_list.all_headers(session, request, limit=None)
                assert [h["number"] for h in got] == [1], q
    finally:
        engine.dispose()


def _old_rows(connection: Any) -> None:
    now = "2026-11-01 10:00:00"
    connection.execute(text("INSERT INTO queues (id, name, address) VALUES (1, 'Inbox', '')"))
    connection.execute(
        text(
            "INSERT INTO tickets (id, number, subject, status, priority, queue_id, "
            "originator_email, originator_name, created_at, updated_at) VALUES "
            "(1, 1, 'Doppelte Überweisung', 'open', 20, 1, 'a@b.test', '', :now, :now), "
            "(2, 2, 'Other', 'open', 20, 1, 'a@b.test', '', :now, :now)"
        ),
        {"now": now},
    )
    connection.execute(
        text(
            "INSERT INTO responses (id, ticket_id, kind, is_internal, is_pinned, staff_response, "
            "is_email_sourced, created_by_name, subject, plain_text, visible_text, created_at, "
            "updated_at) VALUES (1, 1, 'customer', false, false, false, true, '', '', "
            "'請求が二重になっています', '請求が二重になっています', :now, :now)"
        ),
        {"now": now},
    )
