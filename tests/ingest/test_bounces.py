"""A DSN for one of our notices: the outbox row fails, the address is held back, the ticket
records the bounce, and no notice answers it. Since issue 17 (defect 1) a bounce counts only
when it comes back to the signed return path of the row it reports (mail/verp.py), so these
tests send their DSNs there (`return_path_of`), as a receiving MTA does; a bounce to the plain
support address, or with a forged signature, suppresses nothing."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from mailhelpdesk.domain.models import OutboxItem, SuppressedAddress
from mailhelpdesk.mail import verp
from mailhelpdesk.store.db import read_scope
from tests.desk import Desk, make_desk
from tests.helpers import make_mail


def postfix_dsn(
    *, original_message_id: str, recipient: str, status: str = "5.1.1", action: str = "failed"
) -> bytes:
    """A bounce in the shape Postfix writes (multipart/report with the returned headers)."""
    return (
        "From: MAILER-DAEMON@mx.customer.test (Mail Delivery System)\r\n"
        "To: support@helpdesk.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn.1@mx.customer.test>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Helpdesk <support@helpdesk.test>\r\nTo: {recipient}\r\nMessage-ID: {original_message_id}\r\nSubject: [#100001] Help\r\n"
        "\r\n--B--\r\n"
    ).encode()


def return_path_of(desk: Desk, row: OutboxItem) -> tuple[str, ...]:
    """The envelope recipient of a bounce of `row`: its signed return path."""
    return (verp.return_path(desk.settings.secret, desk.notify.helpdesk_address, row.id or 0,
                             row.message_id),)  # fmt: skip


def test_bounce_of_our_notice_fails_row_suppresses_address_and_is_recorded(tmp_path: Path) -> None:
    desk = make_desk(tmp_path)
    desk.feed(make_mail(sender="Gone <gone@customer.test>", subject="Help"))
    with read_scope(desk.engine) as session:
        ack = session.exec(
            select(OutboxItem).where(OutboxItem.primary_rcpt == "gone@customer.test")
        ).one()
    rows_before = 0
    with read_scope(desk.engine) as session:
        rows_before = len(session.exec(select(OutboxItem)).all())

    row = desk.feed(
        postfix_dsn(original_message_id=ack.message_id, recipient="gone@customer.test"),
        mail_from="",
        rcpt=return_path_of(desk, ack),
    )

    assert row.outcome == "recorded"  # on the ticket, as an internal system event
    (ticket,) = desk.tickets()
    last = desk.responses(ticket)[-1]
    assert last.kind == "system" and last.is_internal
    with read_scope(desk.engine) as session:
        failed = session.get(OutboxItem, ack.id)
        held = session.get(SuppressedAddress, "gone@customer.test")
        rows_after = len(session.exec(select(OutboxItem)).all())
    assert failed is not None and failed.state == "failed" and "bounced" in failed.last_error
    assert held is not None
    assert rows_after == rows_before  # the bounce caused no notice

    # the next automatic notice to that address is held back, not sent
    desk.feed(make_mail(sender="gone@customer.test", subject="Another question"))
    with read_scope(desk.engine) as session:
        newest = session.exec(
            select(OutboxItem)
            .where(OutboxItem.primary_rcpt == "gone@customer.test")
            .order_by(OutboxItem.id.desc())  # type: ignore[union-attr]
        ).first()
    assert newest is not None and newest.state == "suppressed"


def test_delay_notice_does_not_suppress(tmp_path: Path) -> None:
    desk = make_desk(tmp_path)
    desk.feed(make_mail(sender="slow@customer.test"))
    with read_scope(desk.engine) as session:
        ack = session.exec(
            select(OutboxItem).where(OutboxItem.primary_rcpt == "slow@customer.test")
        ).one()
    desk.feed(
        postfix_dsn(
            original_message_id=ack.message_id,
            recipient="slow@customer.test",
            status="4.4.1",
            action="delayed",
        ),
        mail_from="",
        rcpt=return_path_of(desk, ack),
    )
    with read_scope(desk.engine) as session:
        assert session.get(SuppressedAddress, "slow@customer.test") is None
        assert session.get(OutboxItem, ack.id).state != "failed"  # type: ignore[union-attr]


def test_unsigned_or_forged_bounce_suppresses_nothing(tmp_path: Path) -> None:
    """Issue 17 defect 1: the same DSN naming our real Message-ID, sent to the plain support
    address or to a return path with a wrong signature, is kept classified with its reason and
    neither fails the row nor suppresses the address."""
    desk = make_desk(tmp_path)
    desk.feed(make_mail(sender="vip@bigcustomer.test"))
    with read_scope(desk.engine) as session:
        ack = session.exec(
            select(OutboxItem).where(OutboxItem.primary_rcpt == "vip@bigcustomer.test")
        ).one()
    dsn = postfix_dsn(original_message_id=ack.message_id, recipient="vip@bigcustomer.test")
    (good,) = return_path_of(desk, ack)
    forged = good[: -len("@helpdesk.test") - 3] + "aaa@helpdesk.test"
    plain = desk.feed(dsn, mail_from="")
    wrong = desk.feed(dsn.replace(b"dsn.1@", b"dsn.2@"), mail_from="", rcpt=(forged,))
    assert "nothing suppressed: not sent to a signed return path" in plain.reason
    assert "nothing suppressed: the return path's signature does not verify" in wrong.reason
    with read_scope(desk.engine) as session:
        assert session.get(SuppressedAddress, "vip@bigcustomer.test") is None
        assert session.get(OutboxItem, ack.id).state != "failed"  # type: ignore[union-attr]
