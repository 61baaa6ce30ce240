"""classify(): bounces, auto-replies and loops on the bounce corpora and on hand-made mail.

Corpus expectations: sisimai's files whose expected `bounces` list is non-empty are bounces,
except its `rfc3834-*` vacation replies (reason `vacation`), which are auto-replies; its
`not/*` files (expected `[]`) must never be bounces; every file named in flufl.bounce's
expected.json is a bounce. Files with no expectation (`null`) are not scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailhelpdesk.mail.classify import classify
from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import Classification, Verdict

OWN = frozenset({"support@example.test", "helpdesk@example.test"})
BOUNCE_THRESHOLD = 0.99


def _classify_file(path: Path, envelope_from: str | None = None) -> Classification:
    return classify(
        parse_message(path.read_bytes()), envelope_from=envelope_from, own_addresses=OWN
    )


def _classify(raw: str | bytes, envelope_from: str | None = None) -> Classification:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return classify(parse_message(data), envelope_from=envelope_from, own_addresses=OWN)


def _mail(headers: str, body: str = "Hello,\n\nplease help me with my order.\n\nPriya\n") -> str:
    base = (
        "Message-ID: <m1@bigcorp.test>\nDate: Mon, 16 Nov 2026 09:01:00 +0000\n"
        "To: support@example.test\n"
    )
    return base + headers.strip("\n") + "\n\n" + body


PERSON = "From: Priya Sharma <priya@bigcorp.test>\nSubject: Cannot log in\n"


# ---- corpora -----------------------------------------------------------------------------------


def test_sisimai_bounces_and_not_bounces(corpus_dir: Path) -> None:
    """sisimai: >= 99% of its bounces are bounces, and no `not/` sample ever is."""
    folder = corpus_dir / "sisimai"
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    bounces, bounce_misses, not_bounce_misses, vacation_misses = 0, [], [], []
    for name, spec in sorted(expected.items()):
        found = spec.get("bounces")
        if found is None:
            continue
        verdict = _classify_file(folder / name).verdict
        if found == []:
            if verdict == Verdict.bounce:
                not_bounce_misses.append(name)
        elif all(item.get("reason") == "vacation" for item in found):
            if verdict != Verdict.auto_reply:
                vacation_misses.append(name)
        else:
            bounces += 1
            if verdict != Verdict.bounce:
                bounce_misses.append(f"{name}={verdict.value}")
    rate = 1 - len(bounce_misses) / bounces
    print(
        f"sisimai bounces: {bounces - len(bounce_misses)}/{bounces} = {rate:.1%}; "
        f"misses: {bounce_misses}"
    )
    print(f"sisimai not-bounces classified bounce: {not_bounce_misses}")
    print(f"sisimai rfc3834 auto-replies not auto_reply: {vacation_misses}")
    assert bounces >= 200
    assert rate >= BOUNCE_THRESHOLD
    assert not_bounce_misses == []
    assert vacation_misses == []


def test_flufl_bounces(corpus_dir: Path) -> None:
    """flufl.bounce: >= 99% of the samples its detectors are tested on are bounces."""
    folder = corpus_dir / "flufl-bounce"
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    names = [name for name in sorted(expected) if not name.startswith("_")]
    misses = [name for name in names if _classify_file(folder / name).verdict != Verdict.bounce]
    rate = 1 - len(misses) / len(names)
    print(
        f"flufl.bounce bounces: {len(names) - len(misses)}/{len(names)} = {rate:.1%}; "
        f"misses: {misses}"
    )
    assert len(names) >= 100
    assert rate >= BOUNCE_THRESHOLD


@pytest.mark.parametrize(
    "name",
    [
        "zammad/mail002.box",
        "zammad/mail004.box",
        "zammad/mail005.box",
        "zammad/mail036.box",
        "zammad/mail082.box",
        "redmine/ticket_reply.eml",
        "redmine/issue_update_with_quoted_reply_above.eml",
        "redmine/outlook_2010_html_only.eml",
        "redmine/apple_mail_with_attachment.eml",
        "sisimai/not/is-not-bounce-01.eml",
        "sisimai/not/is-not-bounce-02.eml",
    ],
)
def test_ordinary_corpus_mail_is_normal(corpus_dir: Path, name: str) -> None:
    """People's mail from the helpdesk corpora (replies, forwards, HTML-only) is normal."""
    assert _classify_file(corpus_dir / name) == Classification(Verdict.normal, "")


# ---- loops -------------------------------------------------------------------------------------


def test_loop_by_from() -> None:
    """Mail from one of our own addresses (any case) is a loop."""
    result = _classify(_mail("From: Support <Support@Example.Test>\nSubject: Re: [#100001] x\n"))
    assert result.verdict == Verdict.loop
    assert "support@example.test" in result.reason


def test_loop_by_x_loop() -> None:
    """An X-Loop header naming our address is a loop, even from a foreign From."""
    result = _classify(_mail(PERSON + "X-Loop: helpdesk@example.test\n"))
    assert result.verdict == Verdict.loop
    assert "X-Loop" in result.reason


def test_loop_by_own_header() -> None:
    """Our own X-Mailhelpdesk-Loop header marks our mail coming back."""
    assert _classify(_mail(PERSON + "X-Mailhelpdesk-Loop: 1\n")).verdict == Verdict.loop


def test_foreign_x_loop_is_not_a_loop() -> None:
    """An X-Loop naming somebody else's list is not our loop."""
    assert _classify(_mail(PERSON + "X-Loop: list@lists.other.test\n")).verdict == Verdict.normal


def test_loop_wins_over_auto_reply() -> None:
    """Our own auto-notice bouncing back is a loop first."""
    mail = _mail("From: support@example.test\nSubject: x\nAuto-Submitted: auto-replied\n")
    assert _classify(mail).verdict == Verdict.loop


# ---- auto-replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: auto-notified; owner-email=x@y.test", "Auto-Submitted: auto-notified"),
        ("X-Autoreply: yes", "X-Autoreply"),
        ("X-Autorespond: Out of office", "X-Autorespond"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress"),
        ("X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply", "X-Auto-Response-Suppress"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: junk", "Precedence: junk"),
        ("Precedence: list", "Precedence: list"),
        ("Precedence: auto_reply", "Precedence: auto_reply"),
        ("List-Id: Support users <users.lists.example.org>", "List-Id"),
        ("X-Apple-Action: VACATION", "X-Apple-Action"),
    ],
)
def test_auto_reply_headers(header: str, reason: str) -> None:
    """Each auto-reply header on its own makes an auto-reply, and the reason names it."""
    result = _classify(_mail(PERSON + header + "\n"))
    assert result.verdict == Verdict.auto_reply
    assert reason in result.reason


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: no",
        "X-Auto-Response-Suppress: RN, NRN",
        "Precedence: first-class",
        "List-Unsubscribe: <mailto:unsubscribe@crm.example>",
        "X-Autoreply: no",
    ],
)
def test_not_auto_reply_headers(header: str) -> None:
    """`Auto-Submitted: no`, harmless suppress flags and List-Unsubscribe alone are normal."""
    assert _classify(_mail(PERSON + header + "\n")).verdict == Verdict.normal


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Cannot log in",
        "Out of Office: Cannot log in",
        "Abwesenheitsnotiz: x",
        "Auto reply: x",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    """Out-of-office subjects (Exchange, Apple, German) without headers are auto-replies."""
    mail = _mail(f"From: Priya <priya@bigcorp.test>\nSubject: {subject}\n")
    assert _classify(mail).verdict == Verdict.auto_reply


@pytest.mark.parametrize(
    "subject", ["On vacation next week, please pause my plan", "Out of office equipment order"]
)
def test_people_mentioning_absence_are_normal(subject: str) -> None:
    """Subjects that only mention vacations or offices are people writing."""
    mail = _mail(f"From: Priya <priya@bigcorp.test>\nSubject: {subject}\n")
    assert _classify(mail).verdict == Verdict.normal


def test_read_receipt_is_auto_reply() -> None:
    """An MDN (multipart/report; report-type=disposition-notification) is automatic."""
    mail = _mail(
        PERSON.replace("Cannot log in", "Read: Cannot log in") + "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\nYour message was displayed.\n"
        "--b\nContent-Type: message/disposition-notification\n\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n--b--\n",
    )
    result = _classify(mail)
    assert result.verdict == Verdict.auto_reply


def test_auto_reply_from_postmaster_is_not_a_bounce() -> None:
    """`Auto-Submitted: auto-replied` from postmaster@ with `<>` is an auto-reply (sisimai not/)."""
    mail = _mail(
        "From: postmaster@bigcorp.test\nSubject: email bounce notification\n"
        "Auto-Submitted: auto-replied\nReturn-Path: <>\n"
    )
    assert _classify(mail, envelope_from="").verdict == Verdict.auto_reply


# ---- bounces -----------------------------------------------------------------------------------


def _dsn(report_type: str = "delivery-status", part: str = "message/delivery-status") -> str:
    return _mail(
        "From: Mail Delivery System <MAILER-DAEMON@mx.bigcorp.test>\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\n"
        "I'm sorry to have to inform you that your message could not be delivered.\n"
        f"--b\nContent-Type: {part}\n\nReporting-MTA: dns; mx.bigcorp.test\n\n"
        f"Final-Recipient: rfc822; x@bigcorp.test\n"
        "Action: failed\nStatus: 5.1.1\n--b--\n",
    )


def test_dsn_report_type() -> None:
    """multipart/report; report-type=delivery-status is a bounce."""
    result = _classify(_dsn())
    assert result == Classification(Verdict.bounce, "multipart/report delivery-status")


def test_delivery_status_part_without_report() -> None:
    """A message/delivery-status part inside a mixed multipart is a bounce."""
    mail = _mail(
        "From: x@mx.bigcorp.test\nSubject: hello\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\nsee below\n--b\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; y@z.test\nAction: failed\n"
        "Status: 5.0.0\n--b--\n",
    )
    assert _classify(mail) == Classification(Verdict.bounce, "message/delivery-status part")


def test_arf_feedback_report_is_bounce_class() -> None:
    """ARF abuse reports (report-type=feedback-report) are automatic reports: bounce class."""
    result = _classify(_dsn("feedback-report", "message/feedback-report"))
    assert result.verdict == Verdict.bounce
    assert "feedback-report" in result.reason


def test_mailer_daemon_sender() -> None:
    """From MAILER-DAEMON@ is a bounce even with auto-reply headers beside it."""
    mail = _mail(
        "From: MAILER-DAEMON@mx.bigcorp.test\nSubject: Processing Error\nPrecedence: bulk\n"
    )
    assert _classify(mail) == Classification(Verdict.bounce, "From: mailer-daemon")


def test_postmaster_sender() -> None:
    """From postmaster@ with nothing else is a bounce (weak evidence, checked last)."""
    assert (
        _classify(_mail("From: postmaster@bigcorp.test\nSubject: Hello\n")).verdict
        == Verdict.bounce
    )


def test_x_failed_recipients() -> None:
    """Exim's X-Failed-Recipients header marks a bounce."""
    mail = _mail(PERSON + "X-Failed-Recipients: x@bigcorp.test\n")
    assert _classify(mail) == Classification(Verdict.bounce, "X-Failed-Recipients present")


def test_null_reverse_path_from_smtp() -> None:
    """MAIL FROM:<> (envelope_from "") makes a bounce when nothing says auto-reply."""
    result = _classify(_mail(PERSON), envelope_from="")
    assert result == Classification(Verdict.bounce, "null reverse-path (MAIL FROM:<>)")


def test_return_path_null_only_when_envelope_unknown() -> None:
    """`Return-Path: <>` counts when the envelope is unknown (import), not over a real one."""
    mail = _mail(PERSON + "Return-Path: <>\n")
    assert _classify(mail, envelope_from=None) == Classification(Verdict.bounce, "Return-Path: <>")
    assert _classify(mail, envelope_from="priya@bigcorp.test").verdict == Verdict.normal


def test_qmail_bounce_text() -> None:
    """qmail's non-DSN bounce is recognised by its opening words."""
    mail = _mail(
        "From: someone@mx.bigcorp.test\nSubject: hello\n",
        "Hi. This is the qmail-send program at mx.bigcorp.test.\n"
        "I'm afraid I wasn't able to deliver your message.\n",
    )
    result = _classify(mail)
    assert result.verdict == Verdict.bounce
    assert "qmail-send" in result.reason


@pytest.mark.parametrize(
    "subject",
    [
        "Undelivered Mail Returned to Sender",
        "Delivery Status Notification (Failure)",
        "Mail delivery failed: returning message to sender",
        "Undeliverable: Cannot log in",
        "failure notice",
        "Returned mail: see transcript for details",
        "Unzustellbar: Cannot log in",
    ],
)
def test_bounce_subjects(subject: str) -> None:
    """Bounce subjects of the common MTAs, from an ordinary-looking sender, are bounces."""
    mail = _mail(f"From: Mail System <system@mx.bigcorp.test>\nSubject: {subject}\n")
    assert _classify(mail).verdict == Verdict.bounce


@pytest.mark.parametrize(
    "subject",
    [
        "Fwd: Undelivered Mail Returned to Sender",
        "Re: Delivery Status Notification (Failure)",
        "My order delivery was delayed",
        "Question about returned mail forwarding",
        "On the surface, a delivery question",
    ],
)
def test_people_talking_about_bounces_are_normal(subject: str) -> None:
    """A customer forwarding a bounce or writing about deliveries is still a customer."""
    mail = _mail(f"From: Priya <priya@bigcorp.test>\nSubject: {subject}\n")
    assert _classify(mail) == Classification(Verdict.normal, "")


def test_customer_pasting_a_bounce_is_normal() -> None:
    """Bounce wording below the customer's own first lines does not make the mail a bounce."""
    mail = _mail(
        PERSON,
        "Hi,\n\nmy mail to you bounced, this came back:\n\n"
        "This message was created automatically by mail delivery software.\n"
        "A message that you sent could not be delivered.\n",
    )
    assert _classify(mail) == Classification(Verdict.normal, "")


def test_bounce_beats_auto_reply_headers() -> None:
    """A DSN carrying Auto-Submitted: auto-replied is a bounce (structure is stronger)."""
    mail = _dsn().replace("Subject:", "Auto-Submitted: auto-replied\nSubject:", 1)
    assert _classify(mail).verdict == Verdict.bounce


def test_ordinary_mail_is_normal() -> None:
    """A plain customer message has no verdict reason."""
    assert _classify(_mail(PERSON), envelope_from="priya@bigcorp.test") == Classification(
        Verdict.normal, ""
    )
