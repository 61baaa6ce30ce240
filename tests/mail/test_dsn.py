"""Reading bounces: which of our messages bounced and for whom."""

from __future__ import annotations

from pathlib import Path

from mailhelpdesk.mail.dsn import bounce_details
from mailhelpdesk.mail.parse import parse_message
from tests.ingest.test_bounces import postfix_dsn


def test_postfix_shape_gives_message_id_and_permanent_recipient() -> None:
    details = bounce_details(
        parse_message(
            postfix_dsn(original_message_id="<ack.1@helpdesk.test>", recipient="Gone@Customer.test")
        )
    )
    assert "<ack.1@helpdesk.test>" in details.original_message_ids
    assert details.failed_recipients == ("gone@customer.test",)
    assert details.delayed_recipients == ()


def test_delayed_is_not_permanent() -> None:
    raw = postfix_dsn(
        original_message_id="<a@h.test>", recipient="slow@c.test", status="4.4.1", action="delayed"
    )
    details = bounce_details(parse_message(raw))
    assert details.failed_recipients == () and details.delayed_recipients == ("slow@c.test",)


def test_real_dsns_name_their_recipients(corpus_dir: Path) -> None:
    """Of sisimai's bounces that carry a delivery-status part, >= 95% give a recipient."""
    total, named, misses = 0, 0, []
    for path in sorted((corpus_dir / "sisimai").glob("*.eml")):
        mail = parse_message(path.read_bytes())
        if not any(a.content_type == "message/delivery-status" for a in mail.attachments):
            continue
        total += 1
        details = bounce_details(mail)
        if details.failed_recipients or details.delayed_recipients:
            named += 1
        else:
            misses.append(path.name)
    print(f"\nDSN recipients: {named}/{total}; misses: {misses}")
    assert total > 100
    assert named / total >= 0.95
