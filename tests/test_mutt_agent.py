"""A real mail client answers a notice: Debian's mutt, in batch mode, writes the agent's reply
(its own headers, quoting and MIME, with an attachment) to a notice captured by the relay sink;
the reply goes to the daemon's SMTP listener, and the customer receives the answer through the
relay sink without the quoted history and without the command lines.

Needs `mutt` (scripts/test installs it); a missing mutt fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.helpers import Daemon, make_mail, require
from tests.test_roundtrip import relay, to, wait_for
from tests.transports.test_smtp_sender import Sink


@pytest.fixture
def mutt() -> str:
    path = shutil.which("mutt")
    require(path is not None, "mutt (apt-get install mutt)")
    assert path is not None
    return path


def mutt_reply(mutt: str, tmp: Path, notice: EmailMessage, body_top: str) -> bytes:
    """mutt writes the reply: a draft with the threading headers, the notice quoted mutt-style
    below the agent's text, and a file attached; sendmail is a script that keeps the message."""
    out = tmp / "mutt-out.eml"
    sendmail = tmp / "sendmail.sh"
    sendmail.write_text(f"#!/bin/sh\ncat > '{out}'\n")
    sendmail.chmod(0o755)
    quoted = "".join(
        f"> {line}".rstrip() + "\n"
        for line in notice.get_body(("plain",)).get_content().splitlines()
    )  # type: ignore[union-attr]
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    draft = tmp / "draft"
    draft.write_text(
        f"To: {reply_to}\nSubject: Re: {notice['Subject']}\nIn-Reply-To: {notice['Message-ID']}\n"
        f"References: {notice['References'] or ''} {notice['Message-ID']}\n\n"
        f"{body_top}\nOn {notice['Date']}, {notice['From']} wrote:\n{quoted}"
    )
    attachment = tmp / "steps.txt"
    attachment.write_text("1. unplug\n2. wait\n")
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [
            mutt,
            "-n",
            "-F",
            "/dev/null",
            "-e",
            (
                f"set sendmail='{sendmail}'; set from='Alice Agent <alice@helpdesk.test>'; "
                "set use_from=yes; set charset=utf-8; set send_charset=utf-8"
            ),
            "-H",
            str(draft),
            "-a",
            str(attachment),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        cwd=tmp,
        env={**os.environ, "HOME": str(home)},
        check=False,  # asserted below, with mutt's stderr
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    raw = out.read_bytes()
    assert b"User-Agent" in raw or b"Message-ID" in raw  # mutt's own headers
    return raw


def test_agent_answers_from_mutt_and_the_customer_gets_a_clean_answer(
    tmp_path: Path, sink: Sink, mutt: str
) -> None:
    daemon = Daemon(tmp_path, relay_config=relay(sink))
    daemon.start()
    try:
        daemon.send(
            make_mail(
                subject="Printer on fire",
                message_id="<first@customer.test>",
                body="My printer is on fire.\n",
            )
        )
        (notice,) = wait_for(lambda: to(sink, "alice@helpdesk.test"), what="agent notice")
        reply_to = notice["Reply-To"].addresses[0].addr_spec
        raw = mutt_reply(
            mutt,
            tmp_path,
            notice,
            "#priority High\n#status closed\nHello Priya, please unplug it; a technician is coming.\n",
        )
        assert b"> My printer is on fire." in raw and b"multipart/mixed" in raw

        daemon.send(raw, mail_from="alice@helpdesk.test", rcpt=[reply_to])
        daemon.wait_idle()
        answers = wait_for(
            lambda: [m for m in to(sink, "priya@customer.test") if "Re: [#" in m["Subject"]],
            what="answer",
        )
        (answer,) = answers
        text = answer.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "a technician is coming" in text
        assert "#status" not in text and "#priority" not in text
        assert "My printer is on fire" not in text and "wrote:" not in text
        assert answer["From"].addresses[0].addr_spec == "support@helpdesk.test"
        assert answer["From"].addresses[0].display_name == "Alice Agent via Test Support"
        assert answer["In-Reply-To"] == "<first@customer.test>" and answer["Auto-Submitted"] is None
        (sent_file,) = list(
            answer.iter_attachments()
        )  # the agent's attachment reaches the customer
        assert sent_file.get_filename() == "steps.txt"
        assert (
            sent_file.get_content().replace("\r\n", "\n") == "1. unplug\n2. wait\n"
        )  # MIME text is CRLF
        wait_for(
            lambda: any("Closed" in m["Subject"] for m in to(sink, "priya@customer.test")),
            what="closed notice",
        )

        (ticket,) = daemon.tickets()
        shown = daemon.ticket(ticket["number"])
        assert (shown["status"], shown["priority"]) == ("closed", "30")
        agent = shown["responses"][-1]
        assert (agent["kind"], agent["verified"], agent["is_internal"]) == (
            "agent",
            "signed_address",
            False,
        )
        assert [a["name"] for a in agent["attachments"]] == ["steps.txt"]
    finally:
        daemon.stop()
