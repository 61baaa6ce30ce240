"""The v1 read family over real HTTP: responses/query with keyset cursors, attachment download
with review gating, perspectives and every criteria mode (api-contract.md §4.6, §5)."""

from __future__ import annotations

import base64
import hashlib
import io
import time
import zipfile
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import pytest
from sqlmodel import select

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.models import Ticket
from mailhelpdesk.mail.attachment_policy import MAX_INLINE_BYTES
from mailhelpdesk.services import api_tokens, ticket_changes
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import store_change
from tests.http.conftest import Api, assert_error, unique

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\x00" * 300
    + b"This program cannot be run in DOS mode"
)


def _create(
    api: Api, token: str, email: str, subject: str = "Printer", content: str = "It is on fire"
) -> int:
    resp = api.post(
        "/api/v1/tickets",
        {"originator_email_address": email, "data": {"subject": subject, "content": content}},
        token=token,
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["data"]["ticket_number"])


def _respond(
    api: Api, token: str, number: int, sender: str, content: str, *, internal: bool = False
) -> str:
    resp = api.post(
        "/api/v1/tickets/respond",
        {
            "ticket_number": number,
            "from_email": sender,
            "content": content,
            "is_internal": internal,
        },
        token=token,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"]["response_id"])


def _rq(api: Api, token: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/api/v1/tickets/responses/query", body, token=token)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def _tickets(api: Api, token: str, criteria: list[dict[str, Any]], **extra: Any) -> list[int]:
    resp = api.post(
        "/api/v1/tickets/query",
        {"search_object": {"criteria": criteria}, "per_page": 100, **extra},
        token=token,
    )
    assert resp.status_code == 200, resp.text
    return [t["number"] for t in resp.json()["data"]["tickets"]]


def _owner_token(api: Api, owner: str | None) -> str:
    engine = make_engine(api.daemon.db_url)
    try:
        with session_scope(engine) as session:
            return api_tokens.create_token(
                session,
                name=unique("owner"),
                abilities=["tickets:read"],
                clock=SystemClock(),
                owner_email=owner,
            )
    finally:
        engine.dispose()


def _change(
    api: Api,
    number: int,
    *,
    assign: str | None = None,
    priority: str | None = None,
    tags: tuple[str, ...] = (),
    status: str | None = None,
) -> None:
    engine = make_engine(api.daemon.db_url)
    try:
        with session_scope(engine) as session:
            ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
            if assign:
                ticket_changes.assign(session, ticket, assign, change=store_change())
            if priority:
                ticket_changes.set_priority(session, ticket, priority, change=store_change())
            for tag in tags:
                ticket_changes.tag(session, ticket, tag, change=store_change())
            if status:
                ticket_changes.set_status(session, ticket, status, change=store_change())
    finally:
        engine.dispose()


def _mail_with_attachments(api: Api, subject: str, files: list[tuple[str, str, bytes]]) -> int:
    """Send a mail with these (name, mime type, bytes) attachments by SMTP; its ticket number."""
    msg = EmailMessage()
    msg["From"] = "Mia Mail <mia@customer.test>"
    msg["To"] = "support@helpdesk.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{unique('m')}@customer.test>"
    msg.set_content("Files attached.\n")
    for name, mime, data in files:
        maintype, subtype = mime.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    api.daemon.send(msg.as_bytes(policy=SMTP_POLICY), mail_from="mia@customer.test")
    api.daemon.wait_idle()
    found = _tickets(api, _admin_of(api), [{"mode": "subject", "tokens": [subject]}])
    assert len(found) == 1, found
    return found[0]


_ADMINS: dict[int, str] = {}


def _admin_of(api: Api) -> str:
    return _ADMINS.setdefault(id(api), api.token("all"))


# --- responses/query ---------------------------------------------------------------------------


def test_responses_query_rows_are_response_objects_with_ticket_number(api: Api, admin: str) -> None:
    """Each row is the §5.2 response object plus ticket_number, in (created_at, id) order."""
    number = _create(api, admin, "rq1@customer.test", content="<p>first <b>bold</b></p>")
    _respond(api, admin, number, "alice@helpdesk.test", "agent answer")
    _respond(api, admin, number, "alice@helpdesk.test", "a note", internal=True)
    data = _rq(api, admin, {"ticket_number": [number]})
    rows = data["responses"]
    assert data["next_cursor"] is None and len(rows) == 3
    shown = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=admin).json()["data"][
        "responses"
    ]
    assert [r["id"] for r in rows] == [r["id"] for r in shown]
    for row, want in zip(rows, shown, strict=True):
        assert row == {"ticket_number": number, **want}
    assert [r["staff_response"] for r in rows] == [False, True, True]
    assert [r["is_internal"] for r in rows] == [False, False, True]
    assert (
        "<b>bold</b>" in rows[0]["html"]
        and "first" in rows[0]["plain_text"]
        and rows[0]["attachments"] == []
    )


def test_responses_query_filters(api: Api, admin: str) -> None:
    """is_internal and staff_response are tri-state; queue, queue_id and ticket_number narrow."""
    inbox = _create(api, admin, "rq2@customer.test")
    _respond(api, admin, inbox, "alice@helpdesk.test", "public agent")
    _respond(api, admin, inbox, "alice@helpdesk.test", "internal", internal=True)
    billing = api.post(
        "/api/v1/tickets",
        {
            "originator_email_address": "rq2@customer.test",
            "data": {"subject": "bill", "content": "c", "queue_name": "Billing"},
        },
        token=admin,
    ).json()["data"]["ticket_number"]
    both = [inbox, billing]

    def ids(**flt: Any) -> list[tuple[int, bool, bool]]:
        return [
            (r["ticket_number"], r["is_internal"], r["staff_response"])
            for r in _rq(api, admin, {"ticket_number": both, **flt})["responses"]
        ]

    assert ids() == [
        (inbox, False, False),
        (inbox, False, True),
        (inbox, True, True),
        (billing, False, False),
    ]
    assert ids(is_internal=True) == [(inbox, True, True)]
    assert ids(is_internal="false") == [
        (inbox, False, False),
        (inbox, False, True),
        (billing, False, False),
    ]
    assert ids(staff_response=True) == [(inbox, False, True), (inbox, True, True)]
    assert ids(staff_response=False, is_internal=False) == [
        (inbox, False, False),
        (billing, False, False),
    ]
    assert ids(is_internal=None) == ids()
    assert ids(queue=["Billing"]) == [(billing, False, False)]
    assert ids(queue="billing") == [(billing, False, False)]  # one name, any case
    assert ids(queue=["Nope"]) == []
    billing_qid = api.post("/api/v1/tickets/show", {"ticket_number": billing}, token=admin).json()[
        "data"
    ]["queue_id"]
    assert ids(queue_id=[billing_qid]) == [(billing, False, False)]
    assert ids(queue_id=int(billing_qid)) == [(billing, False, False)]
    assert ids(ticket_number=billing) == [(billing, False, False)]
    assert ids(include_deleted=True) == ids()  # nothing is ever deleted: accepted, changes nothing


def test_responses_query_dates(api: Api, admin: str) -> None:
    """created_from/created_to: a bare date is the whole UTC day; a time is to the second."""
    number = _create(api, admin, "rq3@customer.test")
    row = _rq(api, admin, {"ticket_number": [number]})["responses"][0]
    day, clock = row["created_at"][:10], row["created_at"][11:19]
    assert (
        len(
            _rq(api, admin, {"ticket_number": [number], "created_from": day, "created_to": day})[
                "responses"
            ]
        )
        == 1
    )
    assert (
        _rq(api, admin, {"ticket_number": [number], "created_to": "2000-01-01"})["responses"] == []
    )
    assert (
        _rq(api, admin, {"ticket_number": [number], "created_from": "2999-01-01"})["responses"]
        == []
    )
    at = f"{day} {clock}"
    assert len(_rq(api, admin, {"ticket_number": [number], "created_from": at})["responses"]) == 1
    assert (
        _rq(api, admin, {"ticket_number": [number], "created_to": at})["responses"] == []
    )  # stored with fractions
    assert (
        len(
            _rq(api, admin, {"ticket_number": [number], "created_to": f"{day} 23:59:59"})[
                "responses"
            ]
        )
        == 1
    )
    for bad in ("2026-13-01", "yesterday", "2026-01-01T10:00", "2026-01-01 10:00:00+02:00"):
        err = assert_error(
            api.post("/api/v1/tickets/responses/query", {"created_from": bad}, token=admin),
            422,
            "validation_failed",
        )
        assert "created_from" in err["errors"], (bad, err)


def test_responses_query_fields_subset(api: Api, admin: str) -> None:
    """fields picks which of html, plain_text and attachments a row carries; default all."""
    number = _create(api, admin, "rq4@customer.test", content="<p>hello</p>")
    full = _rq(api, admin, {"ticket_number": [number]})["responses"][0]
    assert {"html", "plain_text", "attachments"} <= set(full)
    only = _rq(api, admin, {"ticket_number": [number], "fields": ["plain_text"]})["responses"][0]
    assert "plain_text" in only and "html" not in only and "attachments" not in only
    assert {k: v for k, v in full.items() if k not in ("html", "attachments")} == only
    none = _rq(api, admin, {"ticket_number": [number], "fields": []})["responses"][0]
    assert not {"html", "plain_text", "attachments"} & set(none) and none["id"] == full["id"]
    err = assert_error(
        api.post("/api/v1/tickets/responses/query", {"fields": ["subject"]}, token=admin),
        422,
        "validation_failed",
    )
    assert any(k.startswith("fields") for k in err["errors"])


def test_responses_query_cursor_pages_with_inserts_between(api: Api, admin: str) -> None:
    """Paging by next_cursor while responses arrive: every row exactly once, in order."""
    numbers = [_create(api, admin, "rq5@customer.test", subject=f"cursor {i}") for i in range(3)]
    for i in range(7):
        _respond(api, admin, numbers[i % 3], "alice@helpdesk.test", f"before {i}")
    body: dict[str, Any] = {"ticket_number": numbers, "limit": 3}
    seen: list[dict[str, Any]] = []
    inserted: list[str] = []
    pages = 0
    while True:
        data = _rq(api, admin, body)
        pages += 1
        seen.extend(data["responses"])
        assert len(data["responses"]) <= 3
        if data["next_cursor"] is None:
            break
        assert set(data["next_cursor"]) == {"created_at", "id"}
        assert data["next_cursor"]["id"] == data["responses"][-1]["id"]
        if pages <= 3:  # new responses land on the tickets between pages
            inserted.append(
                _respond(api, admin, numbers[pages % 3], "rq5@customer.test", f"during {pages}")
            )
        body = {**body, "cursor": data["next_cursor"]}
        assert pages < 20
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids)), "a row came twice"
    assert len(ids) == 3 + 7 + len(inserted) and set(inserted) <= set(ids)
    keys = [(r["created_at"], int(r["id"])) for r in seen]
    assert keys == sorted(keys)
    assert pages >= 5
    # the same walk without inserts is the same list
    again, body = [], {"ticket_number": numbers, "limit": 4}
    while True:
        data = _rq(api, admin, body)
        again.extend(r["id"] for r in data["responses"])
        if data["next_cursor"] is None:
            break
        body["cursor"] = data["next_cursor"]
    assert again == ids
    assert _rq(api, admin, {"ticket_number": numbers, "limit": len(ids)})["next_cursor"] is None


def test_responses_query_cursor_with_equal_times_uses_id(api: Api, admin: str) -> None:
    """A cursor built from a row's created_at and id resumes right after that row."""
    numbers = [_create(api, admin, "rq6@customer.test") for _ in range(2)]
    rows = _rq(api, admin, {"ticket_number": numbers})["responses"]
    first = rows[0]
    rest = _rq(
        api,
        admin,
        {
            "ticket_number": numbers,
            "cursor": {"created_at": first["created_at"], "id": first["id"]},
        },
    )
    assert [r["id"] for r in rest["responses"]] == [r["id"] for r in rows[1:]]
    naive = first["created_at"].replace("+00:00", "")
    same = _rq(
        api,
        admin,
        {"ticket_number": numbers, "cursor": {"created_at": naive, "id": int(first["id"])}},
    )
    assert same["responses"] == rest["responses"]


def test_responses_query_empty_body_and_limits(api: Api, admin: str) -> None:
    """An empty body is the first page of everything, oldest first; limit is 1..1000, default 200."""
    total = api.rows("SELECT count(*) FROM responses")[0][0]
    oldest = api.rows("SELECT id FROM responses ORDER BY created_at, id LIMIT 1")[0][0]
    data = _rq(api, admin, {})
    assert data["limit"] == 200 and len(data["responses"]) == min(total, 200)
    assert data["responses"][0]["id"] == str(oldest)
    one = _rq(api, admin, {"limit": 1})
    assert len(one["responses"]) == 1 and (one["next_cursor"] is None) == (total == 1)
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"cursor": {"created_at": "nope", "id": 1}},
        {"cursor": {"id": 1}},
        {"cursor": "abc"},
        {"is_internal": "maybe"},
        {"ticket_number": ["x"]},
        {"queue_id": [0]},
        {"ticket_number": [2**70]},
    ):
        assert_error(
            api.post("/api/v1/tickets/responses/query", bad, token=admin), 422, "validation_failed"
        )


def test_read_endpoints_auth_order(api: Api) -> None:
    """401 without a token, 403 without tickets:read, before any 422."""
    for path in ("/api/v1/tickets/responses/query", "/api/v1/tickets/attachment"):
        assert_error(api.post(path, {"limit": "x"}), 401, "unauthenticated")
        assert_error(
            api.post(path, {"limit": "x"}, token=api.token("send-email")), 403, "forbidden"
        )
    writer = api.token("tickets:write")  # write implies read
    assert (
        api.post("/api/v1/tickets/responses/query", {"limit": 1}, token=writer).status_code == 200
    )


# --- attachment download -----------------------------------------------------------------------


def _attachments(api: Api, token: str, number: int) -> dict[str, dict[str, Any]]:
    shown = api.post("/api/v1/tickets/show", {"ticket_number": number}, token=token).json()["data"]
    return {
        a["name"]: {**a, "response_id": r["id"]}
        for r in shown["responses"]
        for a in r["attachments"]
    }


def _download(api: Api, token: str, number: int, attachment_id: str, **extra: Any) -> Any:
    return api.post(
        "/api/v1/tickets/attachment",
        {"ticket_number": number, "response_attachment_id": attachment_id, **extra},
        token=token,
    )


def test_attachment_round_trip_and_gating(api: Api, admin: str) -> None:
    """Bytes from SMTP come back byte for byte (sha256 matches); gated types need review_ok,
    blocked ones never come out."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    files = [
        ("shot.png", "application/octet-stream", PNG),
        ("setup.exe", "application/octet-stream", PE),
        ("saver.scr", "application/octet-stream", PE),
        ("invoice.pdf", "application/pdf", PE),
        ("page.html", "text/html", b"<html><script>alert(1)</script></html>"),
        ("logs.zip", "application/zip", archive.getvalue()),
        ("notes.txt", "text/plain", b"plain notes\n"),
    ]
    number = _mail_with_attachments(api, f"files {unique()}", files)
    found = _attachments(api, admin, number)
    assert set(found) == {f[0] for f in files}

    png = _download(api, admin, number, found["shot.png"]["id"])
    assert png.status_code == 200, png.text
    data = png.json()["data"]
    raw = base64.b64decode(data["content_base64"])
    assert (
        raw == PNG
        and hashlib.sha256(raw).hexdigest() == data["sha256"] == hashlib.sha256(PNG).hexdigest()
    )
    assert data["mime_type"] == "image/png"  # sniffed, though it was sent as octet-stream
    assert set(data) == {
        "id",
        "response_id",
        "name",
        "mime_type",
        "sha256",
        "file_size",
        "is_inline",
        "content_base64",
    }
    assert (
        data["id"],
        data["response_id"],
        data["name"],
        data["file_size"],
        data["is_inline"],
    ) == (found["shot.png"]["id"], found["shot.png"]["response_id"], "shot.png", len(PNG), False)
    text = _download(api, admin, number, found["notes.txt"]["id"]).json()["data"]
    assert (
        base64.b64decode(text["content_base64"]) == b"plain notes\n"
        and text["mime_type"] == "text/plain"
    )

    for name in ("setup.exe", "page.html", "logs.zip"):
        err = assert_error(
            _download(api, admin, number, found[name]["id"]), 422, "attachment_review_required"
        )
        assert "review_ok" in err["message"]
        assert_error(
            _download(api, admin, number, found[name]["id"], intent="open"),
            422,
            "attachment_review_required",
        )
        ok = _download(api, admin, number, found[name]["id"], intent="review_ok")
        assert ok.status_code == 200, (name, ok.text)
        body = base64.b64decode(ok.json()["data"]["content_base64"])
        assert hashlib.sha256(body).hexdigest() == found[name]["sha256"]
    assert (
        _download(api, admin, number, found["setup.exe"]["id"], intent="review_ok").json()["data"][
            "mime_type"
        ]
        == "application/x-msdownload"
    )
    for name in ("saver.scr", "invoice.pdf"):
        assert_error(_download(api, admin, number, found[name]["id"]), 403, "attachment_blocked")
        assert_error(
            _download(api, admin, number, found[name]["id"], intent="review_ok"),
            403,
            "attachment_blocked",
        )


def test_attachment_must_belong_to_the_ticket(api: Api, admin: str) -> None:
    """Another ticket's attachment is 404 attachment_not_found; an unknown ticket 404 ticket_not_found."""
    number = _mail_with_attachments(api, f"one file {unique()}", [("a.png", "image/png", PNG)])
    other = _create(api, admin, "other@customer.test")
    att = _attachments(api, admin, number)["a.png"]["id"]
    assert_error(_download(api, admin, other, att), 404, "attachment_not_found")
    assert_error(_download(api, admin, number, "999999999"), 404, "attachment_not_found")
    assert_error(_download(api, admin, 999995, att), 404, "ticket_not_found")
    assert _download(api, admin, number, att).status_code == 200
    for bad in (
        {"ticket_number": number},
        {"response_attachment_id": att},
        {"ticket_number": number, "response_attachment_id": "x"},
    ):
        assert_error(
            api.post("/api/v1/tickets/attachment", bad, token=admin), 422, "validation_failed"
        )


def test_attachment_too_large(api: Api, admin: str) -> None:
    """An attachment over 25 MiB is 413 attachment_too_large, even with review_ok."""
    big = PNG + b"\x00" * (MAX_INLINE_BYTES + 1 - len(PNG))
    engine = make_engine(api.daemon.db_url)
    try:
        with session_scope(engine) as session:
            ticket = ticket_service.create_ticket(
                session,
                subject="big",
                originator_email="big@customer.test",
                change=store_change(),
                first=ticket_service.NewResponse(
                    kind=ResponseKind.customer,
                    plain_text="big file",
                    attachments=[
                        ticket_service.NewAttachment(
                            name="huge.png", mime_type="image/png", data=big
                        )
                    ],
                ),
            )
            number = ticket.number
    finally:
        engine.dispose()
    att = _attachments(api, admin, number)["huge.png"]
    assert att["file_size"] == MAX_INLINE_BYTES + 1
    started = time.monotonic()
    err = assert_error(
        _download(api, admin, number, att["id"], intent="review_ok"), 413, "attachment_too_large"
    )
    assert str(MAX_INLINE_BYTES) in err["message"]
    assert time.monotonic() - started < 10


# --- perspectives and criteria -----------------------------------------------------------------


def test_text_modes_words_and_criteria_semantics(api: Api, admin: str) -> None:
    """subject/content/subject_content: words of one criterion AND-ed, criteria of a mode OR-ed,
    modes AND-ed; matching is a case-insensitive substring."""
    tag = unique("w").replace("-", "")
    email = f"{tag}@customer.test"
    a = _create(api, admin, email, subject=f"{tag} printer jam", content="paper stuck in tray")
    b = _create(api, admin, email, subject=f"{tag} scanner", content="the printer is fine")
    c = _create(api, admin, email, subject=f"{tag} login", content="password 100%_ reset")
    _respond(api, admin, c, "alice@helpdesk.test", "try the Toner please")
    mine = {"mode": "raised", "tokens": [email]}

    def find(*criteria: dict[str, Any]) -> list[int]:
        return sorted(_tickets(api, admin, [mine, *criteria]))

    assert find() == sorted([a, b, c])
    assert find({"mode": "subject", "tokens": ["JAM"]}) == [a]
    assert find(
        {"mode": "subject", "tokens": ["jam"]}, {"mode": "subject", "tokens": ["scanner"]}
    ) == sorted([a, b])
    assert find({"mode": "subject", "tokens": ["jam", "scanner"]}) == []  # AND within one criterion
    assert find({"mode": "subject", "tokens": ["printer jam"]}) == [a]  # the words of a token
    assert find({"mode": "subject", "tokens": [tag, "jam"]}) == [a]
    assert find({"mode": "content", "tokens": ["printer"]}) == [b]  # body only, not a's subject
    assert find({"mode": "content", "tokens": ["toner"]}) == [c]  # any response, any case
    assert find({"mode": "content", "tokens": ["paper", "tray"]}) == [a]
    assert find({"mode": "content", "tokens": ["paper", "toner"]}) == []
    assert find(
        {"mode": "content", "tokens": ["paper"]}, {"mode": "content", "tokens": ["toner"]}
    ) == sorted([a, c])
    assert find({"mode": "subject_content", "tokens": ["printer"]}) == sorted([a, b])
    assert find({"mode": "subject_content", "tokens": ["login", "toner"]}) == [
        c
    ]  # subject word + body word
    assert find({"mode": "content", "tokens": ["100%_"]}) == [c]
    assert find({"mode": "content", "tokens": ["0%"]}) == [c]
    assert find({"mode": "content", "tokens": ["%"]}) == [c]  # % is a character, not a wildcard
    assert find({"mode": "content", "tokens": ["_"]}) == [c]
    assert find({"mode": "content", "tokens": ["p_per"]}) == []


def test_participant_hashtag_and_modes_and(api: Api, admin: str) -> None:
    """participant: originator, CC or any response author; hashtag: ticket tags; modes AND-ed."""
    mark = unique("p")
    origin = f"{mark}-o@customer.test"
    a = _create(api, admin, origin, subject=mark)
    b = _create(api, admin, f"{mark}-x@customer.test", subject=mark)
    _respond(api, admin, b, f"{mark}-cc@customer.test", "me too")  # a customer reply adds a CC
    c = _create(api, admin, f"{mark}-y@customer.test", subject=mark)
    _respond(api, admin, c, f"{mark}-n@partner.test", "internal", internal=True)  # a note's author
    _change(api, a, tags=("vip",))
    _change(api, c, tags=("vip", "refund"))
    base = {"mode": "subject", "tokens": [mark]}

    def find(*criteria: dict[str, Any]) -> list[int]:
        return sorted(_tickets(api, admin, [base, *criteria]))

    assert find({"mode": "participant", "tokens": [origin.upper()]}) == [a]
    assert find({"mode": "participant", "tokens": [f"{mark}-cc@customer.test"]}) == [b]
    assert find({"mode": "participant", "tokens": [f"{mark}-n@partner.test"]}) == [c]
    assert find({"mode": "participant", "tokens": [origin, f"{mark}-n@partner.test"]}) == sorted(
        [a, c]
    )
    assert find({"mode": "participant", "tokens": ["nobody@customer.test"]}) == []
    assert find({"mode": "hashtag", "tokens": ["VIP"]}) == sorted([a, c])
    assert find({"mode": "hashtag", "tokens": ["#refund"]}) == [c]
    assert find(
        {"mode": "hashtag", "tokens": ["refund"]}, {"mode": "hashtag", "tokens": ["vip"]}
    ) == sorted([a, c])
    assert find(
        {"mode": "hashtag", "tokens": ["vip"]}, {"mode": "participant", "tokens": [origin]}
    ) == [a]
    assert (
        find({"mode": "hashtag", "tokens": ["refund"]}, {"mode": "raised", "tokens": [origin]})
        == []
    )
    shown = api.post("/api/v1/tickets/show", {"ticket_number": c}, token=admin).json()["data"]
    assert shown["tags"] == ["refund", "vip"]


def test_watchlist_and_bad_criteria_are_422(api: Api, admin: str) -> None:
    """watchlist (we have none), unknown modes and perspectives, bad dates and per_page > 100 → 422."""
    err = assert_error(
        api.post(
            "/api/v1/tickets/query",
            {"search_object": {"criteria": [{"mode": "watchlist", "tokens": ["1"]}]}},
            token=admin,
        ),
        422,
        "validation_failed",
    )
    assert "atchlist" in err["message"]
    for bad in (
        {"search_object": {"criteria": [{"mode": "created_from", "tokens": ["2026-02-30"]}]}},
        {"search_object": {"criteria": [{"mode": "created_to", "tokens": ["20260101"]}]}},
        {
            "search_object": {
                "criteria": [{"mode": "updated_from", "tokens": ["2026-01-01", "2026-02-01"]}]
            }
        },
        {"search_object": {"criteria": [{"mode": "priority", "tokens": ["Meh"]}]}},
        {"search_object": {"criteria": [{"mode": "status", "tokens": ["pending"]}]}},
        {"search_object": {"criteria": [{"mode": "ticket_number", "tokens": ["abc"]}]}},
        {"search_object": {"criteria": [{"mode": "ticket_number", "tokens": [str(2**70)]}]}},
        {"search_object": {"criteria": [{"mode": "nope", "tokens": []}]}},
        {"search_object": {"search_perspective": "Mine"}},
        {"perspective_id": 7},
        {"per_page": 101},
        {"per_page": 0},
        {"page": 0},
    ):
        assert_error(api.post("/api/v1/tickets/query", bad, token=admin), 422, "validation_failed")
        assert_error(api.post("/api/tickiti_api_index", bad, token=admin), 422, "validation_failed")


def test_for_my_attention(api: Api, admin: str) -> None:
    """Open tickets assigned to the token's owner, most urgent first, then number descending;
    a token without an owner gets 422."""
    mark = unique("fma")
    numbers = [_create(api, admin, f"{mark}@customer.test", subject=mark) for _ in range(5)]
    _change(api, numbers[0], assign="alice@helpdesk.test", priority="low")
    _change(api, numbers[1], assign="alice@helpdesk.test", priority="urgent")
    _change(api, numbers[2], assign="alice@helpdesk.test")  # normal
    _change(api, numbers[3], assign="alice@helpdesk.test", priority="urgent", status="closed")
    _change(api, numbers[4], priority="urgent")  # not assigned to alice
    normal_too = _create(api, admin, f"{mark}@customer.test", subject=mark)
    _change(api, normal_too, assign="alice@helpdesk.test")
    alice = _owner_token(api, "alice@helpdesk.test")
    body = {
        "search_object": {
            "search_perspective": "For my attention",
            "criteria": [{"mode": "raised", "tokens": [f"{mark}@customer.test"]}],
        }
    }
    resp = api.post("/api/v1/tickets/query", body, token=alice)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["meta"]["perspective"] == "For my attention" and data["meta"]["total"] == 4
    assert [t["number"] for t in data["tickets"]] == [
        numbers[1],
        normal_too,
        numbers[2],
        numbers[0],
    ]
    assert {t["assigned_to_email"] for t in data["tickets"]} == {"alice@helpdesk.test"}
    by_id = api.post(
        "/api/v1/tickets/query",
        {"perspective_id": 6, "search_object": body["search_object"]},
        token=alice,
    ).json()["data"]
    assert [t["number"] for t in by_id["tickets"]] == [t["number"] for t in data["tickets"]]
    other = _owner_token(api, "bob@helpdesk.test")
    assert api.post("/api/v1/tickets/query", body, token=other).json()["data"]["tickets"] == []
    err = assert_error(
        api.post("/api/v1/tickets/query", body, token=_owner_token(api, None)),
        422,
        "validation_failed",
    )
    assert "owner" in err["message"]
    # the other perspectives keep number-descending order and ignore the owner
    everything = _tickets(api, alice, [{"mode": "raised", "tokens": [f"{mark}@customer.test"]}])
    assert everything == sorted([*numbers, normal_too], reverse=True)


@pytest.mark.parametrize("perspective", ["Open", "On hold", "Closed", "Unassigned"])
def test_other_perspectives(api: Api, admin: str, perspective: str) -> None:
    """Each built-in perspective selects by status or assignee."""
    mark = unique("persp")
    email = f"{mark}@customer.test"
    opened, held, closed, assigned = (_create(api, admin, email) for _ in range(4))
    _change(api, closed, status="closed")
    _change(api, assigned, assign="alice@helpdesk.test")
    hold = api.post(
        "/api/v1/tickets/respond",
        {
            "ticket_number": held,
            "from_email": "alice@helpdesk.test",
            "content": "wait",
            "status": "on-hold",
            "on_hold_until": "2999-01-01",
        },
        token=admin,
    )
    assert hold.status_code == 200, hold.text
    want = {
        "Open": [assigned, opened],
        "On hold": [held],
        "Closed": [closed],
        "Unassigned": [closed, held, opened],
    }[perspective]
    got = _tickets(
        api,
        admin,
        [{"mode": "raised", "tokens": [email]}],
        perspective_id={"Open": 2, "On hold": 3, "Closed": 4, "Unassigned": 5}[perspective],
    )
    assert got == sorted(want, reverse=True)
