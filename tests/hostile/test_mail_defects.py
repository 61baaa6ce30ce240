"""Issue 17, the mail-meaning defects (1, 2, 3, 4, 9, 10, 13), each replayed as the attack was:
through the SMTP socket of a running `mailhelpdesk serve` (and its HTTP API where the defect
was API-triggered), on SQLite and on PostgreSQL. One daemon per engine serves the module; every
test uses its own addresses and subjects, so the tests do not see each other's tickets."""

from __future__ import annotations

import email
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.mail import verp
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.services import api_tokens
from mailhelpdesk.store.db import make_engine, session_scope
from tests.helpers import Daemon, make_mail
from tests.ingest.test_bounces import postfix_dsn
from tests.transports.test_smtp_sender import Sink

EXTRA = """
[ingest]
max_ccs_per_message = 5
max_ccs_per_ticket = 8

[api]
rate_limit_requests = 1000000
"""
SECRET = b"test-secret-not-for-production"  # tests/helpers.write_config's


class Desk:
    """The running daemon, its database (read with SQL) and its outbound maildir."""

    def __init__(self, daemon: Daemon, url: str, sink: Sink) -> None:
        self.daemon = daemon
        self.engine: Engine = make_engine(url)
        self.sink = sink
        with session_scope(self.engine) as session:
            self.token = api_tokens.create_token(
                session, name="hostile", abilities=["all"], clock=SystemClock()
            )

    def post(self, path: str, body: Any) -> httpx.Response:
        """An API call over real HTTP, with a fresh Idempotency-Key."""
        return httpx.post(
            f"http://127.0.0.1:{self.daemon.http_port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": str(uuid.uuid4())},
            timeout=60,
        )

    def relayed(
        self,
        rcpt: str,
        where: Callable[[EmailMessage], bool] = lambda _m: True,
        timeout: float = 30,
    ) -> list[tuple[str, EmailMessage]]:
        """(envelope sender, message) of what the relay took for `rcpt` and `where` holds for,
        once there is some."""
        deadline = time.monotonic() + timeout
        while True:
            with self.sink.lock:
                raws = [(f, raw) for f, tos, raw in self.sink.messages if rcpt in tos]
            found = [
                (f, msg)
                for f, raw in raws
                if where(msg := email.message_from_bytes(raw, policy=default))  # type: ignore[arg-type]
            ]
            if found:
                return found  # type: ignore[return-value]
            assert time.monotonic() < deadline, f"nothing relayed to {rcpt}"
            time.sleep(0.05)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def send(self, raw: bytes, **kw: Any) -> None:
        self.daemon.send(raw, **kw)
        self.daemon.wait_idle()

    def ticket_of(self, sender: str) -> Any:
        (row,) = self.rows(
            "SELECT id, number, subject FROM tickets WHERE originator_email = :e", e=sender
        )
        return row

    def ccs(self, ticket_id: int) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT email FROM ticket_ccs WHERE ticket_id = :t ORDER BY id", t=ticket_id
            )
        ]

    def responses(self, ticket_id: int) -> list[Any]:
        return self.rows(
            "SELECT id, kind, is_internal, created_by_email, plain_text, visible_text, html "
            "FROM responses WHERE ticket_id = :t ORDER BY id",
            t=ticket_id,
        )

    def inbound(self, message_id: str) -> Any:
        (row,) = self.rows(
            "SELECT outcome, reason, state FROM inbound_messages WHERE message_id = :m",
            m=message_id,
        )
        return row

    def outbox(self, ticket_id: int) -> list[Any]:
        return self.rows(
            "SELECT id, kind, state, last_error, rcpt_tos, mail_from, raw, message_id "
            "FROM outbox WHERE ticket_id = :t ORDER BY id",
            t=ticket_id,
        )

    def sent(self, ticket_id: int, timeout: float = 30) -> list[Any]:
        """The ticket's outbox rows once none is waiting to be composed or sent."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.outbox(ticket_id)
            if rows and all(r.state != "queued" for r in rows):
                return rows
            assert time.monotonic() < deadline, f"outbox still queued: {rows}"
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desk]:
    tmp: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    sink = Sink().start()
    relay = f'host = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\ntimeout_s = 5\n'
    daemon = Daemon(tmp, extra_config=EXTRA, relay_config=relay)
    url = daemon.db_url
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").create_database()
        daemon.config.write_text(
            daemon.config.read_text().replace(f'url = "{daemon.db_url}"', f'url = "{url}"')
        )
    try:
        daemon.start(timeout=180)  # a fresh PostgreSQL database is migrated first
        desk = Desk(daemon, url, sink)
        yield desk
        desk.engine.dispose()
    finally:
        daemon.stop()
        sink.stop()


# -- 1: forged bounces ---------------------------------------------------------------------------


def test_forged_bounce_suppresses_nothing_and_a_signed_one_does(desk: Desk) -> None:
    """Issue 17 defect 1: `MAIL FROM:<>` with X-Failed-Recipients (and a DSN naming the address)
    sent to the support address is kept, classified, with its reason; the customer still gets
    notices and `send_email` to them is sent. A DSN to the signed return path our relay used
    for the acknowledgement suppresses that recipient, and only them."""
    forged_xfr = make_mail(
        sender="MAILER-DAEMON@mx.attacker.test",
        subject="Undelivered Mail Returned to Sender",
        message_id="<forged-1@mx.attacker.test>",
        headers={"X-Failed-Recipients": "vip@bigcustomer.test"},
    )
    desk.send(forged_xfr, mail_from="")
    forged_dsn = postfix_dsn(
        original_message_id="<whatever@helpdesk.test>", recipient="vip@bigcustomer.test"
    ).replace(b"<dsn.1@mx.customer.test>", b"<forged-2@mx.attacker.test>")
    desk.send(forged_dsn, mail_from="")
    for message_id in ("<forged-1@mx.attacker.test>", "<forged-2@mx.attacker.test>"):
        row = desk.inbound(message_id)
        assert row.outcome == "classified", row
        assert "nothing suppressed: not sent to a signed return path" in row.reason
    assert not desk.rows("SELECT email FROM suppressed_addresses")

    desk.send(make_mail(sender="vip@bigcustomer.test", message_id="<vip-1@bigcustomer.test>"))
    ticket = desk.ticket_of("vip@bigcustomer.test")
    (ack,) = desk.sent(ticket.id)[:1]
    assert ack.kind == "acknowledgement" and ack.state == "sent"
    resp = desk.post(
        "/api/send_email",
        {"to_address": "vip@bigcustomer.test", "subject": "Invoice", "content": "<p>Hi</p>"},
    )
    assert resp.status_code == 200 and resp.json()["data"]["status"] != "suppressed", resp.text

    # the real thing: the relay took the acknowledgement from its signed return path
    ((envelope_from, _m),) = desk.relayed(
        "vip@bigcustomer.test", lambda m: m["Message-ID"] == ack.message_id
    )
    base, tag = split_plus(envelope_from)
    assert base == "bounces@helpdesk.test" and tag and verp.verify(SECRET, tag, ack.message_id)
    desk.send(
        postfix_dsn(original_message_id=ack.message_id, recipient="vip@bigcustomer.test").replace(
            b"<dsn.1@mx.customer.test>", b"<real-dsn@mx.bigcustomer.test>"
        ),
        mail_from="",
        rcpt=[envelope_from],
    )
    row = desk.inbound("<real-dsn@mx.bigcustomer.test>")
    assert row.outcome == "recorded", row
    assert [r[0] for r in desk.rows("SELECT email FROM suppressed_addresses")] == [
        "vip@bigcustomer.test"
    ]
    assert [r.state for r in desk.outbox(ticket.id) if r.id == ack.id] == ["failed"]


# -- 2: CC hijack --------------------------------------------------------------------------------


def test_stranger_linking_by_references_or_signed_reply_to_is_held_and_adds_no_cc(
    desk: Desk,
) -> None:
    """Issue 17 defect 2: a stranger naming the customer's Message-ID in In-Reply-To/References,
    or writing to the customer's signed reply address, is held internal and their CCs are not
    added; later agent answers go to the customer only."""
    desk.send(
        make_mail(sender="vip2@bigcustomer.test", message_id="<hijack-orig@bigcustomer.test>")
    )
    ticket = desk.ticket_of("vip2@bigcustomer.test")
    ack = desk.sent(ticket.id)[0]
    reply_to = next(
        line.split("<")[-1].rstrip(">")
        for line in ack.raw.decode().splitlines()
        if line.startswith("Reply-To:")
    )
    desk.send(
        make_mail(
            sender="mallory@evil.test",
            message_id="<hijack-1@evil.test>",
            headers={
                "In-Reply-To": "<hijack-orig@bigcustomer.test>",
                "References": "<hijack-orig@bigcustomer.test>",
                "Cc": "friend1@evil.test, friend2@evil.test",
            },
        ),
        mail_from="mallory@evil.test",
    )
    desk.send(
        make_mail(
            sender="mallory@evil.test",
            to=reply_to,
            message_id="<hijack-2@evil.test>",
            headers={"Cc": "friend3@evil.test"},
        ),
        mail_from="mallory@evil.test",
        rcpt=[reply_to],
    )
    for message_id in ("<hijack-1@evil.test>", "<hijack-2@evil.test>"):
        row = desk.inbound(message_id)
        assert row.outcome == "held" and "not a party" in row.reason
    assert desk.ccs(ticket.id) == []
    mallory = [r for r in desk.responses(ticket.id) if r.created_by_email == "mallory@evil.test"]
    assert len(mallory) == 2 and all(r.is_internal for r in mallory)
    # no notice to the stranger or their friends
    assert not any("evil.test" in r.rcpt_tos for r in desk.sent(ticket.id))


# -- 3: CC amplification -------------------------------------------------------------------------


def test_ccs_are_capped_per_message_and_per_ticket(desk: Desk) -> None:
    """Issue 17 defect 3: a first mail with 5,000 Cc addresses adds max_ccs_per_message (5);
    the customer's next reply adds more only up to max_ccs_per_ticket (8)."""
    many = ", ".join(f"c{i}@amp.test" for i in range(5000))
    desk.send(
        make_mail(
            sender="amp@customer3.test", message_id="<amp-1@customer3.test>", headers={"Cc": many}
        ),
        mail_from="amp@customer3.test",
    )
    ticket = desk.ticket_of("amp@customer3.test")
    assert desk.ccs(ticket.id) == [f"c{i}@amp.test" for i in range(5)]
    desk.send(
        make_mail(
            sender="amp@customer3.test",
            message_id="<amp-2@customer3.test>",
            headers={"In-Reply-To": "<amp-1@customer3.test>", "Cc": many[:1200]},
        ),
        mail_from="amp@customer3.test",
    )
    assert desk.ccs(ticket.id) == [f"c{i}@amp.test" for i in range(8)]


# -- 4: subjects over 998 characters -------------------------------------------------------------


def test_subject_over_998_characters_never_stops_a_notice(desk: Desk) -> None:
    """Issue 17 defect 4: a 1,500-character subject (one unbreakable word) by mail, and long
    subjects through the API (create_ticket, send_email): every notice is sent, folded into
    lines of at most 78 characters, and the subject is stored."""
    long_word = "S" * 1500
    desk.send(
        make_mail(sender="longsubj@customer4.test", subject=long_word),
        mail_from="longsubj@customer4.test",
    )
    ticket = desk.ticket_of("longsubj@customer4.test")
    assert ticket.subject == long_word[:998]
    rows = desk.sent(ticket.id)
    assert {r.kind for r in rows} >= {"acknowledgement", "new_ticket"}
    assert all(r.state == "sent" for r in rows), [(r.kind, r.last_error) for r in rows]
    assert desk.relayed(
        "longsubj@customer4.test", lambda m: m["Subject"] == f"[#{ticket.number}] {ticket.subject}"
    )
    raw = next(r.raw for r in rows if r.kind == "acknowledgement")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998

    words = " ".join(["lengthy"] * 300)  # 2,399 characters
    resp = desk.post(
        "/api/create_ticket",
        {"originator_email_address": "longapi@customer4.test",
         "data": {"subject": words, "content": "Help"}},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    api_ticket = desk.ticket_of("longapi@customer4.test")
    rows = desk.sent(api_ticket.id)
    assert rows and all(r.state == "sent" for r in rows), [(r.kind, r.last_error) for r in rows]
    resp = desk.post(
        "/api/send_email",
        {"to_address": "longapi@customer4.test", "subject": long_word, "content": "<p>x</p>"},
    )
    assert resp.status_code == 200, resp.text
    assert desk.relayed("longapi@customer4.test", lambda m: m["Subject"] == long_word)


# -- 9: our signed addresses in relayed text -----------------------------------------------------


def _reply_to(message: EmailMessage) -> str:
    return str(message["Reply-To"].addresses[0].addr_spec)


def test_agent_signed_address_never_reaches_the_customer(desk: Desk) -> None:
    """Issue 17 defect 9: the agent answers the new-ticket notice (to their signed reply
    address) in a quote format the trimmer does not know, and mentions the address too: the
    customer's mail carries the plain support address, never the signed one."""
    desk.send(
        make_mail(sender="redact@customer9.test", subject="Redact me"),
        mail_from="redact@customer9.test",
    )
    ticket = desk.ticket_of("redact@customer9.test")
    ((_f, notice),) = desk.relayed(
        "alice@helpdesk.test", lambda m: f"[#{ticket.number}]" in str(m["Subject"])
    )
    signed = _reply_to(notice)
    assert split_plus(signed)[1], signed
    body = (
        "We have replaced the printer.\n"
        f"(My direct line: {signed}, or mailto:{signed.replace('+', '%2B')})\n"
        "\n"
        f"=== original from Test Support <{signed}> at 10:00 ===\n"
        f"| {signed} said: new ticket\n"
    )
    desk.send(
        make_mail(
            sender="Alice Agent <alice@helpdesk.test>",
            to=signed,
            subject=f"Re: {notice['Subject']}",
            body=body,
        ),
        mail_from="alice@helpdesk.test",
        rcpt=[signed],
    )
    ((_f, answer),) = desk.relayed(
        "redact@customer9.test", lambda m: "replaced the printer" in m.get_body().get_content()
    )
    parts = [p.get_content() for p in answer.walk() if p.get_content_maintype() == "text"]
    token = split_plus(signed)[1] or ""
    assert parts and not any(token in text for text in parts)
    assert all("support@helpdesk.test" in text for text in parts)


# -- 10: HTML ------------------------------------------------------------------------------------


def _html_mail(sender: str, to: str, subject: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@{sender.rpartition('@')[2].rstrip('>')}>"
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


def test_css_escapes_and_remote_images_do_not_survive_sanitising(desk: Desk) -> None:
    """Issue 17 defect 10: `u\\72l(` in a style does not come back as `url(...)`, and a remote
    image (tracking pixel) is replaced by the blocked-image placeholder; cid: images stay."""
    html = (
        '<p style="background: u\\72l(https://track.test/css.png)">Hello</p>'
        '<p style="color: red; background: u\\rl(https://track.test/2.png)">again</p>'
        '<img src="https://track.test/pixel.gif?u=42" alt="pixel"><img src="cid:logo@x" alt="logo">'
    )
    desk.send(
        _html_mail("css@customer10.test", "support@helpdesk.test", "Styled", html),
        mail_from="css@customer10.test",
    )
    ticket = desk.ticket_of("css@customer10.test")
    (first,) = desk.responses(ticket.id)
    assert "Hello" in first.html and "again" in first.html
    assert "url(" not in first.html.lower() and "track.test" not in first.html
    assert 'src="cid:remote-image-blocked" alt="pixel"' in first.html
    assert 'src="cid:logo@x"' in first.html


def _agent_answers_html(desk: Desk, customer: str, html: str) -> Any:
    desk.send(make_mail(sender=customer, subject="Account"), mail_from=customer)
    ticket = desk.ticket_of(customer)
    ((_f, notice),) = desk.relayed(
        "alice@helpdesk.test", lambda m: f"[#{ticket.number}]" in str(m["Subject"])
    )
    signed = _reply_to(notice)
    desk.send(
        _html_mail("Alice Agent <alice@helpdesk.test>", signed, f"Re: {notice['Subject']}", html),
        mail_from="alice@helpdesk.test",
        rcpt=[signed],
    )
    return ticket


def test_commands_hidden_in_html_or_quoted_without_headers_are_not_run(desk: Desk) -> None:
    """Issue 17 defect 10: an agent's HTML-only answer whose first lines are `#status closed`
    hidden with display:none, or a customer's text quoted Outlook-style with no header lines,
    runs no command: the ticket stays open, unassigned, untagged."""
    hidden = _agent_answers_html(
        desk,
        "hidden@customer10.test",
        '<div style="display:none">#status closed<br>#tag pwned</div>'
        "<p>We are looking into it.</p>",
    )
    quoted = _agent_answers_html(
        desk,
        "quoted@customer10.test",
        '<div id="appendonsend"></div><div dir="ltr">#status closed<br>#tag pwned<br>'
        "Please close this, says the customer.</div>",
    )
    for ticket in (hidden, quoted):
        assert desk.rows("SELECT status FROM tickets WHERE id = :t", t=ticket.id)[0][0] == "open"
        assert not desk.rows("SELECT name FROM ticket_tags WHERE ticket_id = :t", t=ticket.id)
    answer = [r for r in desk.responses(hidden.id) if r.kind == "agent"]
    assert len(answer) == 1 and "#status" not in answer[0].plain_text
    assert "looking into it" in answer[0].plain_text


# -- 13: forwarded substance, Outlook placeholders, TNEF -----------------------------------------


def _first_visible(desk: Desk, customer: str) -> str:
    ticket = desk.ticket_of(customer)
    return str(desk.responses(ticket.id)[0].visible_text)


def test_new_request_keeps_what_it_forwards(desk: Desk) -> None:
    """Issue 17 defect 13: a new request whose substance is a forward (Gmail's marker,
    Outlook's From:/Sent: block, a message/rfc822 attachment) shows the forwarded text."""
    gmail = (
        "Still no answer to this one:\n\n"
        "---------- Forwarded message ---------\n"
        "From: Fwd Gmail <fwdgmail@customer13.test>\nDate: Mon, 23 Nov 2026 at 09:00\n"
        "Subject: Invoice 42 is wrong\nTo: <support@helpdesk.test>\n\n"
        "Invoice 42 charges me twice for the March licence.\n"
    )
    outlook = (
        "Please see below.\n\n"
        "________________________________\n"
        "From: Fwd Outlook <fwdoutlook@customer13.test>\nSent: Monday, 23 November 2026 09:00\n"
        "To: support@helpdesk.test\nSubject: VPN drops\n\n"
        "The VPN drops every 20 minutes since the update.\n"
    )
    for sender, body in (
        ("fwdgmail@customer13.test", gmail),
        ("fwdoutlook@customer13.test", outlook),
    ):
        desk.send(
            make_mail(sender=sender, subject="Fwd: open question", body=body), mail_from=sender
        )
    assert "charges me twice for the March licence" in _first_visible(
        desk, "fwdgmail@customer13.test"
    )
    assert "drops every 20 minutes" in _first_visible(desk, "fwdoutlook@customer13.test")

    original = EmailMessage()
    original["From"], original["To"] = "Fwd Rfc <fwdrfc@customer13.test>", "support@helpdesk.test"
    original["Subject"] = "Printer jams"
    original.set_content("The printer jams on every second page.\n")
    outer = EmailMessage()
    outer["From"], outer["To"] = "fwdrfc@customer13.test", "support@helpdesk.test"
    outer["Subject"], outer["Message-ID"] = "Fwd: Printer jams", "<fwdrfc-outer@customer13.test>"
    outer.set_content("Forwarding my unanswered mail.\n")
    outer.add_attachment(original)
    desk.send(outer.as_bytes(), mail_from="fwdrfc@customer13.test")
    shown = _first_visible(desk, "fwdrfc@customer13.test")
    assert "Forwarding my unanswered mail." in shown and "jams on every second page" in shown


def _tnef(files: dict[str, bytes], body: str) -> bytes:
    """A minimal winmail.dat: TNEF signature, then level/id/type/length/data/checksum records."""

    def record(level: int, name: int, kind: int, data: bytes) -> bytes:
        checksum = sum(data) & 0xFFFF
        return (
            bytes([level]) + name.to_bytes(2, "little") + kind.to_bytes(2, "little")
            + len(data).to_bytes(4, "little") + data + checksum.to_bytes(2, "little")
        )  # fmt: skip

    out = (0x223E9F78).to_bytes(4, "little") + (0x0001).to_bytes(2, "little")
    out += record(1, 0x9006, 0x0008, (0x00010000).to_bytes(4, "little"))  # TNEF version
    out += record(1, 0x800C, 0x0002, body.encode())  # attBody
    for name, data in files.items():
        out += record(2, 0x9002, 0x0006, b"\x01\x00" + b"\x00" * 12)  # starts an attachment
        out += record(2, 0x8010, 0x0001, name.encode() + b"\x00")  # its file name
        out += record(2, 0x800F, 0x0006, data)  # its bytes
    return out


def test_outlook_placeholders_and_winmail_dat_read_as_a_reader_expects(desk: Desk) -> None:
    """Issue 17 defect 13: `[cid:image001.png@…]` lines read `[image: image001.png]`, and a
    winmail.dat is unpacked into the files it carries (tnefparse)."""
    msg = EmailMessage()
    msg["From"], msg["To"] = "tnef@customer13.test", "support@helpdesk.test"
    msg["Subject"], msg["Message-ID"] = "Screenshot attached", "<tnef-1@customer13.test>"
    msg.set_content("See the error:\n\n[cid:image001.png@01DA2B3C.4D5E6F70]\n\nThanks\n")
    msg.add_attachment(
        _tnef({"report.pdf": b"%PDF-1.4 report", "notes.txt": b"step 1, step 2"}, "See files"),
        maintype="application",
        subtype="ms-tnef",
        filename="winmail.dat",
    )
    desk.send(msg.as_bytes(), mail_from="tnef@customer13.test")
    ticket = desk.ticket_of("tnef@customer13.test")
    first = desk.responses(ticket.id)[0]
    assert "[image: image001.png]" in first.visible_text and "[cid:" not in first.visible_text
    names = sorted(
        r[0] for r in desk.rows("SELECT name FROM attachments WHERE response_id = :r", r=first.id)
    )
    assert names == ["notes.txt", "report.pdf"]
