"""Outbound message building: threading headers, loop markers, encoding, header injection."""

from __future__ import annotations

import base64
import email
import random
from datetime import UTC, datetime
from email.header import Header
from email.policy import compat32
from email.policy import default as default_policy

import pytest

from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.mail.compose import (
    _WIRE,
    AUTO_GENERATED,
    AUTO_REPLIED,
    Outgoing,
    as_bytes,
    compose,
    thread_topic,
)

WHEN = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def make(**kw: object) -> Outgoing:
    base: dict[str, object] = {
        "from_name": "Example Support",
        "from_address": "support@helpdesk.test",
        "to": [("Priya Sharma", "priya@customer.test")],
        "subject": "Printer on fire",
        "text": "Hello",
        "html": "<p>Hello</p>",
        "reply_to": "support+t100001-abcdefghijklmnop@helpdesk.test",
        "in_reply_to": "<first@customer.test>",
        "references": ["<root@customer.test>"],
        "ticket_number": 100001,
        "date": WHEN,
    }
    base.update(kw)
    return Outgoing(**base)  # type: ignore[arg-type]


def reparse(out: Outgoing) -> email.message.EmailMessage:
    return email.message_from_bytes(as_bytes(compose(out)), policy=default_policy)  # type: ignore[return-value]


def test_threading_and_identity_headers() -> None:
    msg = reparse(make(auto_submitted=AUTO_REPLIED))
    assert msg["Subject"] == "[#100001] Printer on fire"
    assert msg["Message-ID"].endswith("@helpdesk.test>")
    assert msg["In-Reply-To"] == "<first@customer.test>"
    assert msg["References"] == "<root@customer.test> <first@customer.test>"
    assert (
        msg["Reply-To"].addresses[0].addr_spec == "support+t100001-abcdefghijklmnop@helpdesk.test"
    )
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Loop"] == "support@helpdesk.test" and msg["X-Mailhelpdesk-Loop"]
    assert msg["Thread-Topic"] == "Printer on fire"
    assert len(base64.b64decode(msg["Thread-Index"])) == 27
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_message_ids_are_unique() -> None:
    assert len({str(compose(make())["Message-ID"]) for _ in range(200)}) == 200


def test_thread_index_shares_the_ticket_header() -> None:
    one = base64.b64decode(str(compose(make())["Thread-Index"]))
    two = base64.b64decode(str(compose(make(subject="Re: other"))["Thread-Index"]))
    three = base64.b64decode(str(compose(make(ticket_number=100002))["Thread-Index"]))
    assert one[:22] == two[:22] != three[:22]


def test_automatic_notices_are_marked_and_human_mail_is_not() -> None:
    assert reparse(make(auto_submitted=AUTO_GENERATED))["Auto-Submitted"] == "auto-generated"
    human = reparse(make(auto_submitted=None))
    assert human["Auto-Submitted"] is None and human["Precedence"] is None
    assert human["X-Mailhelpdesk-Loop"]  # still ours: never opens a ticket if it comes back


def test_tag_is_added_once() -> None:
    assert reparse(make(subject="Re: [#100001] Printer"))["Subject"] == "Re: [#100001] Printer"
    assert thread_topic("RE: Fwd: [#100001] Printer") == "Printer"


def test_any_script_is_encoded_and_survives() -> None:
    out = make(
        subject="Помощь 帮助 مساعدة", to=[("Шарма, Прия", "priya@customer.test")], text="Привет ✓"
    )
    raw = as_bytes(compose(out))
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert msg["Subject"] == "[#100001] Помощь 帮助 مساعدة"
    assert msg["To"].addresses[0].display_name == "Шарма, Прия"
    assert "Привет ✓" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_idn_domain_is_punycoded() -> None:
    msg = reparse(make(to=[("", "user@bücher.example")]))
    assert msg["To"].addresses[0].domain == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "field",
    [
        {"subject": "Hello\r\nBcc: victim@evil.test"},
        {"subject": "Hello\nX-Injected: 1"},
        {"subject": "nul\x00byte"},
        {"to": [("", "priya@customer.test\r\nBcc: victim@evil.test")]},
        {"to": [("Priya\r\nBcc: victim@evil.test", "priya@customer.test")]},
        {"to": [("", "a@b.test, victim@evil.test")]},
        {"to": [("", "not-an-address")]},
        {"from_name": "Support\nBcc: x@y.test"},
        {"reply_to": "support@helpdesk.test\r\nBcc: x@y.test"},
        {"in_reply_to": "<a@b>\r\nBcc: x@y.test"},
        {"references": ["<a@b>\nBcc: x@y.test"]},
        {"to": []},
    ],
)
def test_header_injection_is_refused(field: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        compose(make(**field))


@pytest.mark.parametrize(
    "subject", ["Помощь, 帮助 и مساعدة " * 12, "A fairly long plain ASCII subject line " * 8, "ok"]
)
def test_long_subjects_fold_and_round_trip(subject: str) -> None:
    raw = as_bytes(compose(make(subject=subject.strip())))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert msg["Subject"] == f"[#100001] {subject.strip()}"


def test_display_names_with_specials_round_trip() -> None:
    msg = reparse(
        make(to=[('Sharma, "Priya" (Ops)', "priya@customer.test")], from_name="Support; Team")
    )
    assert msg["To"].addresses[0].display_name == 'Sharma, "Priya" (Ops)'
    assert msg["From"].addresses[0].display_name == "Support; Team"


def test_attachments_ride_along_in_multipart_mixed() -> None:
    """An agent's files reach the customer; a hostile file name never reaches a header raw."""
    from email import message_from_bytes
    from email.policy import default

    from mailhelpdesk.mail.compose import Outgoing, OutgoingAttachment, as_bytes, compose

    msg = compose(
        Outgoing(
            from_name="Helpdesk",
            from_address="support@helpdesk.test",
            to=[("", "c@customer.test")],
            subject="Re: files",
            text="see attached",
            html="<p>see attached</p>",
            auto_submitted=None,
            attachments=(
                OutgoingAttachment("Grüße.pdf", "application/pdf", b"%PDF-1.4 fake"),
                OutgoingAttachment("evil\r\nBcc: x@evil.test.txt", "text/plain", b"hi"),
            ),
        )
    )
    parsed = message_from_bytes(as_bytes(msg), policy=default)
    assert parsed.get_content_type() == "multipart/mixed"
    files = list(parsed.iter_attachments())
    assert [f.get_filename() for f in files] == ["Grüße.pdf", "evil__Bcc: x@evil.test.txt"]
    assert files[0].get_content() == b"%PDF-1.4 fake"
    assert parsed["Bcc"] is None
    assert parsed.get_body(("html",)) is not None


def test_a_short_plain_header_is_written_as_compat32_folds_it() -> None:
    """The wire policy writes a short value of printable ASCII and tabs without folding it;
    compat32's folding gives the very same bytes for every such value (random ones, with
    runs of spaces and tabs, encoded-word look-alikes and colons), and anything else still
    goes through compat32: a control character, a value too long for its line, a Header."""
    reference = compat32.clone(linesep="\r\n")
    rnd = random.Random(16)
    pieces = [chr(c) for c in range(32, 127)] + [" "] * 30 + ["\t"] * 8 + ["=?", "?=", ": "]
    names = ("Subject", "To", "Thread-Topic", "In-Reply-To", "X-Mailhelpdesk-Loop")
    written = 0
    for _ in range(5000):
        name = rnd.choice(names)
        value = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 80)))
        assert _WIRE.fold_binary(name, value) == reference.fold_binary(name, value)
        written += len(name) + 2 + len(value) <= 78
    assert written > 1000  # values short enough for the direct path, not only long ones
    for value in (
        "a\x0cb",  # str.splitlines breaks here, so compat32 folds it
        "word " * 30,
        "Grüße aus Köln",
        Header("Grüße", "utf-8"),
    ):
        assert _WIRE.fold_binary("Subject", value) == reference.fold_binary("Subject", value)


def test_a_boundary_that_occurs_as_a_line_of_the_text_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first random boundary drawn is a line of the text: the message gets another one,
    and its parts come back whole."""
    import email.generator

    tokens = iter([1111, 2222, 3333])
    monkeypatch.setattr(email.generator.random, "randrange", lambda _n: next(tokens))
    first = "=" * 15 + email.generator._fmt % 1111 + "=="  # type: ignore[attr-defined]
    text = f"before\n--{first}\nafter\n"
    raw = as_bytes(compose(make(text=text)))
    parsed = email.message_from_bytes(raw, policy=default_policy)
    boundary = parsed.get_boundary()
    assert boundary is not None and boundary != first
    plain, html = (part.get_content() for part in parsed.iter_parts())  # type: ignore[attr-defined]
    assert plain.replace("\r\n", "\n") == text
    assert "<p>Hello</p>" in html
