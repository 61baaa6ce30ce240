"""The pure pieces behind issue 17's mail defects, case by case (the attacks themselves run
through a daemon in tests/hostile/test_mail_defects.py)."""

from __future__ import annotations

import pytest

from mailhelpdesk.mail import verp
from mailhelpdesk.mail.html_hidden import drop_hidden
from mailhelpdesk.mail.html_text import css_is_active, sanitize_html
from mailhelpdesk.mail.parsed import ParsedAttachment
from mailhelpdesk.mail.redact import redact_signed_addresses
from mailhelpdesk.mail.reply_text import own_text, readable_placeholders
from mailhelpdesk.mail.tnef import unpack

SECRET = b"k"


def test_return_path_verifies_only_for_its_row_and_message_id() -> None:
    address = verp.return_path(SECRET, "support@helpdesk.test", 42, "<a@helpdesk.test>")
    local, _, domain = address.partition("@")
    tag = local.partition("+")[2]
    assert domain == "helpdesk.test" and local.startswith("bounces+b42-")
    assert verp.outbox_id_of(tag) == 42
    assert verp.verify(SECRET, tag, "<a@helpdesk.test>")
    assert not verp.verify(SECRET, tag, "<b@helpdesk.test>")  # the id reused by another row
    assert not verp.verify(b"other", tag, "<a@helpdesk.test>")
    assert not verp.verify(SECRET, tag.replace("b42", "b43"), "<a@helpdesk.test>")
    assert verp.outbox_id_of("t100001-abcdefghijklmnop") is None  # a reply token is not one


def test_redaction_touches_only_our_own_tagged_addresses() -> None:
    own = frozenset({"support@helpdesk.test"})
    text = (
        "write to support+t100001a1-abcdefghijklmnop@helpdesk.test or "
        "<mailto:SUPPORT%2Bt1-x@helpdesk.test>; jane+orders@shop.test stays"
    )
    assert redact_signed_addresses(text, own) == (
        "write to support@helpdesk.test or <mailto:SUPPORT@helpdesk.test>; "
        "jane+orders@shop.test stays"
    )


@pytest.mark.parametrize(
    ("style", "active"),
    [
        ("color: red", False),
        ("background: u\\72l(http://t.test/x)", True),
        ("background: u\\rl(http://t.test/x)", True),
        ("background: ur/**/l(http://t.test/x)", True),
        ("width: ex\\pression(alert(1))", True),
        ("font-family: \\5FAE\\8F6F", False),
    ],
)
def test_styles_are_read_as_a_browser_reads_them(style: str, active: bool) -> None:
    assert css_is_active(style) is active


def test_hidden_html_and_remote_images() -> None:
    html = (
        '<div style="display: n\\6f ne">#status closed</div><p hidden>x</p>'
        '<span style="font-size:0">y</span><p>shown</p><img src="https://t.test/p.gif" alt="p">'
    )
    cleaned = sanitize_html(html)
    assert "#status" not in cleaned and ">x<" not in cleaned and ">y<" not in cleaned
    assert "shown" in cleaned and 'src="cid:remote-image-blocked"' in cleaned
    assert 'src="https://t.test/p.gif"' in sanitize_html(html, allow_remote_images=True)
    assert drop_hidden("<p>plain</p>") == "<p>plain</p>"  # nothing to drop: not even parsed


def test_own_text_never_falls_back_to_the_quote() -> None:
    assert own_text("________________________________\n#status closed\n") == ""
    assert own_text("#note\nok\n\nOn Mon, A <a@x.test> wrote:\n> #status closed\n") == "#note\nok\n"


def test_outlook_placeholders_read_as_images() -> None:
    assert readable_placeholders("see\n[cid:image001.png@01DA.4D5E]\n") == (
        "see\n[image: image001.png]\n"
    )


def test_unreadable_tnef_is_kept_with_a_defect() -> None:
    blob = ParsedAttachment("winmail.dat", "application/ms-tnef", b"\x78\x9f\x3e\x22junk", False)
    result = unpack([blob])
    assert result.attachments == [blob] and result.defects
