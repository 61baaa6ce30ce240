"""Forwarded originals in the shapes Gmail, Outlook, Apple Mail and message/rfc822 produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailhelpdesk.mail.forwarded import find_forwarded
from mailhelpdesk.mail.parse import parse_message
from tests.helpers import make_mail

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agent_replies"
BODY = "Hello Alice,\n\ninvoice 4711 charges us twice for the same licence.\n\nBob"


@pytest.mark.parametrize(
    ("name", "sender_name", "note", "cc"),
    [
        ("gmail", "Bob Builder", "Came to my own inbox, please handle.", []),
        ("outlook", "Builder, Bob", "", ["carol@customer.test"]),
        ("apple", "Bob Builder", "FYI, from a customer.", []),
        ("rfc822", "Bob Builder", "Forwarded as an attachment.", ["carol@customer.test"]),
    ],
)
def test_fixture_forwards(name: str, sender_name: str, note: str, cc: list[str]) -> None:
    found = find_forwarded(parse_message((FIXTURES / f"{name}_forward.eml").read_bytes()))
    assert found is not None
    assert (found.shape, found.sender.email, found.sender.name) == (
        name,
        "bob@customer.test",
        sender_name,
    )
    assert found.subject == "Invoice 4711 is wrong"
    assert found.text.strip() == BODY
    assert found.note == note
    assert [a.email for a in found.cc] == cc
    assert found.message_id == ("<invoice-4711@customer.test>" if name == "rfc822" else None)


@pytest.mark.parametrize(
    "body",
    [
        "Just a question about my invoice.\n",
        # a reply's quoted Outlook block without Sent/To: not a forward
        "Thanks\n\nFrom: Bob <bob@customer.test>\n\nhello\n",
        # a forward marker whose From names no address
        "---------- Forwarded message ---------\nFrom: Bob Builder\nDate: today\nSubject: x\n\nhi\n",
    ],
)
def test_not_a_forward(body: str) -> None:
    assert find_forwarded(parse_message(make_mail(body=body))) is None


def test_outlook_mailto_and_bold_fields() -> None:
    body = (
        "-----Original Message-----\n*From:* Bob Builder [mailto:bob@customer.test]\n*Sent:* Monday\n"
        "*To:* alice@helpdesk.test\n*Subject:* Invoice\n\nBody here\n"
    )
    found = find_forwarded(parse_message(make_mail(body=body)))
    assert (
        found is not None
        and found.sender.email == "bob@customer.test"
        and found.sender.name == "Bob Builder"
    )
    assert found.text.strip() == "Body here"
