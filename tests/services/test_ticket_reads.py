"""The read services without HTTP: keyset paging under a frozen clock (ties on created_at),
inserts between pages, criteria semantics and the attachment refusals."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import Session

from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.errors import (
    AttachmentBlockedError,
    AttachmentNotFoundError,
    AttachmentReviewRequiredError,
    NotFoundError,
)
from mailhelpdesk.services import ticket_reads
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.api_requests import FieldError
from mailhelpdesk.store import response_query
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk, make_desk


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return make_desk(tmp_path)


def _ticket(
    session: Session,
    desk: Desk,
    subject: str,
    *,
    attachments: tuple[ticket_service.NewAttachment, ...] = (),
) -> int:
    ticket = ticket_service.create_ticket(
        session,
        subject=subject,
        originator_email="c@customer.test",
        change=desk.change(),
        first=ticket_service.NewResponse(
            kind=ResponseKind.customer, plain_text=f"body of {subject}", attachments=attachments
        ),
    )
    return ticket.number


def _reply(session: Session, desk: Desk, number: int, text: str) -> None:
    ticket = ticket_service.store.get_ticket_by_number(session, number)
    assert ticket is not None
    ticket_service.add_response(
        session,
        ticket,
        ticket_service.NewResponse(kind=ResponseKind.customer, plain_text=text),
        change=desk.change(),
    )


def _walk(desk: Desk, limit: int, between: list[str] | None = None) -> list[str]:
    """Page through every response; before each next page, add one response per entry of `between`."""
    seen: list[str] = []
    cursor = None
    while True:
        with read_scope(desk.engine) as session:
            page = ticket_reads.query_responses(
                session, ticket_reads.ResponseQuery(limit=limit, cursor=cursor), clock=desk.clock
            )
        seen.extend(r["id"] for r in page["responses"])
        if page["next_cursor"] is None:
            return seen
        cursor = (
            datetime.fromisoformat(page["next_cursor"]["created_at"]),
            int(page["next_cursor"]["id"]),
        )
        if between:
            text = between.pop(0)
            with session_scope(desk.engine) as session:
                _reply(session, desk, 100001, text)


def test_keyset_ties_on_created_at_are_broken_by_id(desk: Desk) -> None:
    """With the clock frozen every row has the same created_at: pages still follow id, no repeats."""
    with session_scope(desk.engine) as session:
        number = _ticket(session, desk, "t")
        for i in range(9):
            _reply(session, desk, number, f"r{i}")
    assert _walk(desk, 4) == [str(i) for i in range(1, 11)]
    assert _walk(desk, 1) == [str(i) for i in range(1, 11)]


def test_inserts_between_pages_with_equal_times_are_neither_skipped_nor_repeated(
    desk: Desk,
) -> None:
    """Rows added at the cursor's own created_at (a frozen clock) come after it, by id."""
    with session_scope(desk.engine) as session:
        _ticket(session, desk, "t")
        for i in range(5):
            _reply(session, desk, 100001, f"r{i}")
    seen = _walk(desk, 2, between=["x1", "x2", "x3"])
    assert seen == [str(i) for i in range(1, 10)]


def test_sqlite_needs_no_settle_horizon(desk: Desk) -> None:
    """SQLite writers are serialised, so the newest rows are visible at once (no horizon)."""
    with read_scope(desk.engine) as session:
        assert response_query.visibility_horizon(session, desk.clock.now()) is None


def test_moment_bounds() -> None:
    """A bare date is the whole day; a time is exact; anything else is refused."""
    assert ticket_reads.moment("2026-11-23", end=False).isoformat() == "2026-11-23T00:00:00+00:00"
    assert (
        ticket_reads.moment("2026-11-23", end=True).isoformat()
        == "2026-11-23T23:59:59.999999+00:00"
    )
    assert (
        ticket_reads.moment("2026-11-23 10:11:12", end=True).isoformat()
        == "2026-11-23T10:11:12+00:00"
    )
    for bad in ("2026-11-23 10:11", "2026-11-31", "23.11.2026", "2026-11-23 10:11:12.5"):
        with pytest.raises(ValueError, match=r"."):
            ticket_reads.moment(bad, end=False)


def test_query_errors(desk: Desk) -> None:
    """Unknown mode, watchlist, For my attention without owner: FieldError (422)."""
    with read_scope(desk.engine) as session:
        for kwargs, needle in (
            ({"perspective": "All", "criteria": [("zodiac", ["x"])]}, "Unknown criteria mode"),
            (
                {"perspective": "All", "criteria": [("watchlist", ["1"])]},
                "Watchlists are not supported",
            ),
            ({"perspective": "For my attention", "criteria": []}, "needs a token with an owner"),
            ({"perspective": "Nope", "criteria": []}, "not found"),
        ):
            with pytest.raises(FieldError, match=needle):
                ticket_reads.query(session, page=1, per_page=10, **kwargs)  # type: ignore[arg-type]


def test_text_criteria_empty_tokens_match_everything(desk: Desk) -> None:
    """A text criterion with no words filters nothing (rather than matching nothing)."""
    with session_scope(desk.engine) as session:
        _ticket(session, desk, "alpha")
        _ticket(session, desk, "beta")
    with read_scope(desk.engine) as session:
        found = ticket_reads.query(
            session, perspective="All", criteria=[("content", ["  "])], page=1, per_page=10
        )
        assert found["meta"]["total"] == 2
        found = ticket_reads.query(
            session,
            perspective="All",
            criteria=[("content", ["body", "alpha"])],
            page=1,
            per_page=10,
        )
        assert [t["subject"] for t in found["tickets"]] == ["alpha"]


def test_attachment_refusals(desk: Desk) -> None:
    """Not on this ticket, unknown ticket, review and block raise their own errors."""
    pe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 100
    with session_scope(desk.engine) as session:
        first = _ticket(
            session,
            desk,
            "files",
            attachments=(
                ticket_service.NewAttachment(
                    name="a.exe", mime_type="application/octet-stream", data=pe
                ),
                ticket_service.NewAttachment(
                    name="b.scr", mime_type="application/octet-stream", data=pe
                ),
                ticket_service.NewAttachment(name="c.txt", mime_type="text/plain", data=b"hi"),
            ),
        )
        second = _ticket(session, desk, "other")
    with read_scope(desk.engine) as session:
        with pytest.raises(AttachmentReviewRequiredError, match="review_ok"):
            ticket_reads.attachment(session, ticket_number=first, attachment_id=1, intent=None)
        assert (
            ticket_reads.attachment(
                session, ticket_number=first, attachment_id=1, intent="review_ok"
            )["name"]
            == "a.exe"
        )
        with pytest.raises(AttachmentBlockedError):
            ticket_reads.attachment(
                session, ticket_number=first, attachment_id=2, intent="review_ok"
            )
        with pytest.raises(AttachmentNotFoundError):
            ticket_reads.attachment(session, ticket_number=second, attachment_id=3, intent=None)
        with pytest.raises(NotFoundError) as exc:
            ticket_reads.attachment(session, ticket_number=999999, attachment_id=3, intent=None)
        assert not isinstance(exc.value, AttachmentNotFoundError)
        got = ticket_reads.attachment(session, ticket_number=first, attachment_id=3, intent=None)
        assert (got["content_base64"], got["mime_type"], got["file_size"]) == (
            "aGk=",
            "text/plain",
            2,
        )
