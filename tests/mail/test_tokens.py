"""Signed reply addresses: they verify, they resist forgery, they survive case folding."""

from __future__ import annotations

from mailhelpdesk.mail.tokens import ReplyToken, make_token, reply_address, split_plus, verify_token

SECRET = b"k" * 32


def test_round_trip_customer_and_agent_tokens() -> None:
    for token in (ReplyToken(100001), ReplyToken(123456, agent_id=7)):
        assert verify_token(SECRET, make_token(SECRET, token)) == token


def test_address_shape_and_case_folding() -> None:
    address = reply_address(SECRET, "support@helpdesk.test", ReplyToken(100042))
    base, tag = split_plus(address.upper())
    assert base == "support@helpdesk.test"
    assert tag is not None and verify_token(SECRET, tag) == ReplyToken(100042)


def test_tampered_or_foreign_tokens_fail() -> None:
    good = make_token(SECRET, ReplyToken(100001))
    assert verify_token(b"other-secret", good) is None
    assert verify_token(SECRET, good.replace("t100001", "t100002")) is None
    assert (
        verify_token(SECRET, make_token(SECRET, ReplyToken(100001, 3)).replace("a3", "a4")) is None
    )
    assert verify_token(SECRET, "t100001-") is None
    assert verify_token(SECRET, "") is None


def test_split_plus_without_tag() -> None:
    assert split_plus("Support@Helpdesk.test") == ("support@helpdesk.test", None)
    assert split_plus("not-an-address") == ("not-an-address", None)


def test_forward_token_round_trips_and_differs_from_the_ticket_token() -> None:
    """A forward's reply address is signed as such; flipping the flag breaks the MAC."""
    from mailhelpdesk.mail.tokens import ReplyToken, make_token, verify_token

    secret = b"k"
    forward = make_token(secret, ReplyToken(100001, forward=True))
    assert verify_token(secret, forward) == ReplyToken(100001, None, forward=True)
    plain = make_token(secret, ReplyToken(100001))
    assert verify_token(secret, plain) == ReplyToken(100001)
    assert verify_token(secret, forward.replace("f-", "-")) is None
