"""Mail out and back through real sockets: customer → daemon (SMTP) → outbox → relay sink →
customer's reply to the acknowledgement → the same ticket. Plus relay outages and a loop."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailhelpdesk.mail import verp
from mailhelpdesk.mail.tokens import split_plus, verify_token
from tests.helpers import Daemon, crlf, make_mail
from tests.transports.test_smtp_sender import Sink

SECRET = b"test-secret-not-for-production"


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def relay(sink: Sink, extra: str = "") -> str:
    return f'host = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\ntimeout_s = 5\nretry_base_s = 1\nretry_max_s = 2\n{extra}'


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[Daemon]:
    proc = Daemon(tmp_path, relay_config=relay(sink))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def outbox(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(daemon.cli("outbox", "list", "--json", "--limit", "1000", *args).stdout))


def to(sink: Sink, address: str) -> list[EmailMessage]:
    return [m for m in sink.parsed() if m["To"].addresses[0].addr_spec == address]


def test_acknowledgement_round_trip(desk: Daemon, sink: Sink) -> None:
    desk.send(make_mail(subject="Printer on fire", message_id="<first@customer.test>"))
    (ack,) = wait_for(lambda: to(sink, "priya@customer.test"), what="acknowledgement")
    (agent_notice,) = wait_for(lambda: to(sink, "alice@helpdesk.test"), what="agent notice")
    assert ack["Subject"] == "[#100001] Printer on fire"
    assert (
        ack["Message-ID"].endswith("@helpdesk.test>")
        and ack["Message-ID"] != agent_notice["Message-ID"]
    )
    assert ack["In-Reply-To"] == "<first@customer.test>"
    assert (
        ack["Auto-Submitted"] == "auto-replied"
        and agent_notice["Auto-Submitted"] == "auto-generated"
    )
    reply_to = ack["Reply-To"].addresses[0].addr_spec
    base, tag = split_plus(reply_to)
    assert base == "support@helpdesk.test" and verify_token(SECRET, tag or "") is not None
    # envelope sender: bounces come back to us, to the signed return path of that message
    # (issue 17 defect 1, mail/verp.py)
    bounce_base, bounce_tag = split_plus(sink.messages[0][0])
    assert bounce_base == "bounces@helpdesk.test" and bounce_tag
    assert verp.verify(SECRET, bounce_tag, sink.parsed()[0]["Message-ID"])

    # the customer answers the acknowledgement, as a mail client would
    desk.send(
        make_mail(
            subject=f"Re: {ack['Subject']}",
            to=reply_to,
            message_id="<second@customer.test>",
            body="It is still burning.\n",
            headers={
                "In-Reply-To": ack["Message-ID"],
                "References": f"<first@customer.test> {ack['Message-ID']}",
            },
        ),
        rcpt=[reply_to],
    )
    desk.wait_idle()
    (ticket,) = desk.tickets()
    shown = desk.ticket(ticket["number"])
    assert [r["kind"] for r in shown["responses"]] == ["customer", "customer"]
    assert "still burning" in shown["responses"][1]["visible_text"]
    notices = wait_for(
        lambda: len(to(sink, "alice@helpdesk.test")) == 2 and to(sink, "alice@helpdesk.test"),
        what="customer_reply",
    )
    assert (
        notices[1]["In-Reply-To"] == "<second@customer.test>"
        and "still burning" in notices[1].get_body(("plain",)).get_content()
    )
    assert len(to(sink, "priya@customer.test")) == 1  # no second acknowledgement for a reply
    assert {i["state"] for i in outbox(desk)} == {"sent"}


def test_relay_outage_then_every_notice_once(tmp_path: Path, sink: Sink) -> None:
    sink.data_reply = "451 4.3.0 greylisted, try again later"
    daemon = Daemon(tmp_path, relay_config=relay(sink))
    daemon.start()
    try:
        for i in range(3):
            daemon.send(make_mail(subject=f"outage {i}"))
        daemon.wait_idle()
        wait_for(
            lambda: sum(1 for i in outbox(daemon) if "451" in i["last_error"]) == 6,
            what="451s recorded",
        )
        sink.data_reply = "421 4.3.2 closing"
        time.sleep(2.5)
        sink.data_reply = None
        wait_for(
            lambda: len(sink.messages) >= 6 and {i["state"] for i in outbox(daemon)} == {"sent"},
            timeout=40,
            what="delivery",
        )
        daemon.wait_idle(sending=True)  # nothing is left to send: nothing more can arrive
        ids = [m["Message-ID"] for m in sink.parsed()]
        assert len(ids) == 6 and len(set(ids)) == 6
        assert all(i["attempts"] >= 2 for i in outbox(daemon))
    finally:
        daemon.stop()


def test_permanent_refusal_is_failed_with_the_reply_and_not_retried(
    tmp_path: Path, sink: Sink
) -> None:
    sink.rcpt_reply = "550 5.1.1 <priya@customer.test>: no such user"
    daemon = Daemon(tmp_path, relay_config=relay(sink))
    daemon.start()
    try:
        daemon.send(make_mail())
        wait_for(
            lambda: (
                outbox(daemon, "--state", "failed")
                if len(outbox(daemon, "--state", "failed")) == 2
                else None
            ),
            what="failed rows",
        )
        daemon.wait_idle(sending=True)  # nothing queued: no retry can follow
        rows = outbox(daemon, "--state", "failed")
        assert all(
            "550 5.1.1" in r["last_error"] and "no such user" in r["last_error"] for r in rows
        )
        assert all(r["attempts"] == 1 for r in rows) and sink.messages == []
        text = daemon.cli("outbox", "list", "--state", "failed").stdout
        assert "no such user" in text
    finally:
        daemon.stop()


class AutoResponder(Sink):
    """A relay sink whose customer mailbox answers every message with an out-of-office, sent
    back to the helpdesk's listener (to the Reply-To and, for good measure, to support@)."""

    def __init__(self) -> None:
        super().__init__()
        self.daemon_port = 0
        self.sent_back = 0
        self.threads: list[threading.Thread] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if "priya@customer.test" in envelope.rcpt_tos:
            thread = threading.Thread(
                target=self._answer, args=(envelope.original_content or envelope.content,)
            )
            thread.start()
            self.threads.append(thread)
        return reply

    def _answer(self, raw: bytes) -> None:
        import email
        from email.policy import default

        notice = email.message_from_bytes(raw, policy=default)
        reply_to = notice["Reply-To"].addresses[0].addr_spec
        for target, threaded in ((reply_to, True), ("support@helpdesk.test", False)):
            ooo = make_mail(
                subject=f"Out of Office: {notice['Subject']}",
                to=target,
                body="I am away until Monday.\n",
                headers={
                    "Auto-Submitted": "auto-replied",
                    **({"In-Reply-To": notice["Message-ID"]} if threaded else {}),
                },
            )
            with smtplib.SMTP("127.0.0.1", self.daemon_port, timeout=30) as smtp:
                smtp.sendmail("priya@customer.test", [target], crlf(ooo))
            self.sent_back += 1


def settle(daemon: Daemon, peer: AutoResponder) -> None:
    """Until the loop has run its course: the peer's answers are all in, the daemon has applied
    them and has nothing left to send (which could draw another answer), twice in a row."""
    answers = -1
    while answers != peer.sent_back:
        answers = peer.sent_back
        for thread in list(peer.threads):
            thread.join(timeout=30)
        daemon.wait_idle(sending=True)


def test_autoresponder_loop_is_bounded(tmp_path: Path) -> None:
    """A customer whose mailbox answers everything: at most the rate limit's worth of mail goes
    out to it, and the out-of-office answers open no ticket and cause no notice."""
    peer = AutoResponder().start()
    daemon = Daemon(
        tmp_path,
        relay_config=relay(peer),
        extra_config="[outbound]\nmax_auto_notices_per_window = 3\n",
    )
    peer.daemon_port = daemon.smtp_port
    daemon.start()
    try:
        for i in range(5):
            daemon.send(make_mail(subject=f"genuine {i}"))
        wait_for(
            lambda: len(to(peer, "priya@customer.test")) == 3 and peer.sent_back == 6,
            what="autoresponder answers",
        )
        settle(daemon, peer)
        assert len(to(peer, "priya@customer.test")) == 3
        assert (
            len(daemon.tickets()) == 5
        )  # the five genuine mails; none from the out-of-office answers
        rows = outbox(daemon)
        assert (
            sum(1 for r in rows if r["kind"] == "acknowledgement" and r["state"] == "suppressed")
            == 2
        )
        assert not [r for r in rows if r["kind"] == "customer_reply"]
        inbound = json.loads(daemon.cli("inbound", "list", "--json").stdout)
        assert sum(1 for i in inbound if i["outcome"] in ("recorded", "classified")) == 6
    finally:
        daemon.stop()
        peer.stop()
