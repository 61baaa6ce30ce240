"""Authentication-Results: only the topmost header, only from a trusted authserv-id."""

from __future__ import annotations

import pytest

from mailhelpdesk.mail.authres_check import check_authentication_results

TRUSTED = ["mx.helpdesk.test"]


def check(
    *values: str, domain: str = "helpdesk.test", trusted: list[str] = TRUSTED
) -> tuple[bool, str]:
    headers = (
        [("received", "from x by y")]
        + [("authentication-results", v) for v in values]
        + [("from", "a@b")]
    )
    verdict = check_authentication_results(headers, domain=domain, trusted_authserv_ids=trusted)
    return verdict.verified, verdict.reason


@pytest.mark.parametrize(
    "value",
    [
        "mx.helpdesk.test; dkim=pass header.d=helpdesk.test header.s=sel header.b=abcd",
        "mx.helpdesk.test; dkim=pass (2048-bit key) header.i=@helpdesk.test header.b=abcd",
        "MX.Helpdesk.Test 1; dkim=PASS header.d=HELPDESK.test",
        "mx.helpdesk.test; spf=pass smtp.mailfrom=helpdesk.test; dmarc=pass (p=reject) header.from=helpdesk.test",
        "mx.helpdesk.test;\r\n\tdkim=fail header.d=helpdesk.test;\r\n\tdkim=pass header.d=helpdesk.test",
    ],
)
def test_pass_for_the_domain_from_trusted_id(value: str) -> None:
    assert check(value)[0] is True


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("mx.helpdesk.test; dkim=fail header.d=helpdesk.test", "no dkim/dmarc pass"),
        ("mx.helpdesk.test; dkim=pass header.d=evil.test", "no dkim/dmarc pass"),
        ("mx.helpdesk.test; dkim=pass header.d=test", "no dkim/dmarc pass"),  # parent domain: no
        ("mx.helpdesk.test; dkim=pass header.d=sub.helpdesk.test", "no dkim/dmarc pass"),
        (
            "mx.helpdesk.test; spf=pass smtp.mailfrom=helpdesk.test",
            "no dkim/dmarc pass",
        ),  # SPF alone: no
        ("mx.helpdesk.test; dmarc=fail header.from=helpdesk.test", "no dkim/dmarc pass"),
        ("mx.helpdesk.test; none", "no dkim/dmarc pass"),
        ("mx.evil.test; dkim=pass header.d=helpdesk.test", "untrusted authserv-id"),
        ("this is ;;; not = a header", "does not parse"),
    ],
)
def test_no_pass(value: str, why: str) -> None:
    verified, reason = check(value)
    assert verified is False and why in reason


def test_only_the_topmost_header_counts() -> None:
    """A forged pass below our MTA's header (written by the sender) is ignored, and so is a
    trusted-looking pass below an untrusted topmost header."""
    ours = "mx.helpdesk.test; dkim=none"
    forged = "mx.helpdesk.test; dkim=pass header.d=helpdesk.test"
    assert check(ours, forged)[0] is False
    assert check("mx.other.test; dkim=pass header.d=helpdesk.test", forged)[0] is False
    assert check(forged, ours)[0] is True


def test_nothing_trusted_nothing_verified() -> None:
    assert check("mx.helpdesk.test; dkim=pass header.d=helpdesk.test", trusted=[]) == (
        False,
        "no trusted authserv-id configured",
    )
    assert check()[0] is False


def test_header_i_must_lie_under_header_d() -> None:
    """Issue 17: a signature by evil.test naming i=@helpdesk.test speaks for evil.test only."""
    forged = "mx.helpdesk.test; dkim=pass header.d=evil.test header.i=@helpdesk.test"
    assert not check_authentication_results(
        [("authentication-results", forged)],
        domain="helpdesk.test",
        trusted_authserv_ids=["mx.helpdesk.test"],
    ).verified
    aligned = "mx.helpdesk.test; dkim=pass header.d=helpdesk.test header.i=alice@eu.helpdesk.test"
    assert check_authentication_results(
        [("authentication-results", aligned)],
        domain="helpdesk.test",
        trusted_authserv_ids=["mx.helpdesk.test"],
    ).verified


def test_relay_trusted_only_for_configured_smtp_peers() -> None:
    from mailhelpdesk.mail.authres_check import relay_trusted

    relays = ["10.0.0.0/8", "192.0.2.7"]
    assert relay_trusted("smtp", "10.1.2.3", relays).verified
    assert relay_trusted("smtp", "::ffff:192.0.2.7", relays).verified
    assert not relay_trusted("smtp", "192.0.2.8", relays).verified
    assert not relay_trusted("smtp", "127.0.0.1", []).verified
    assert not relay_trusted("smtp", "", relays).verified
    assert relay_trusted("imap", "", []).verified
    assert not relay_trusted("import", "10.1.2.3", relays).verified
