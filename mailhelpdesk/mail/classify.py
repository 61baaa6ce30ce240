"""Is this mail from a person, or automatic? One pure function, `classify`, and its evidence rules.

Why it matters: the helpdesk must never answer a bounce, an auto-reply or its own mail (mail
loops), and must not open tickets for them (DESIGN.md §2 "No loops"). Each verdict carries a
short reason naming the evidence, so an operator can see why a message was set aside.

Order of the checks, strongest evidence first:

1. loop: our own address in From, an `X-Loop` naming one of our addresses, or our
   `X-Mailhelpdesk-Loop` header;
2. bounce, structural evidence: a DSN (multipart/report; report-type=delivery-status, a
   message/delivery-status part), an ARF feedback report (abuse complaints are automatic
   reports about mail we sent, so they are treated like bounces), `X-Failed-Recipients`, the
   subjects of non-DSN bounces (Exchange "Undeliverable:", Notes "DELIVERY FAILURE:", qmail
   "failure notice" …) and their first lines ("Hi. This is the qmail-send program"; only the
   first two lines, so a customer pasting a bounce below "Hi, I got this:" stays a customer),
   a `MAILER-DAEMON@` sender (never a person), a list server's rejection notice (sender
   `…-admin`/`owner-…` plus a list-server header: fml, ezmlm, Mailman);
3. auto-reply: RFC 3834 `Auto-Submitted` other than `no`, `X-Autoreply`/`X-Autorespond`,
   Exchange's `X-Auto-Response-Suppress` (DR/AutoReply/All/OOF), `Precedence:
   bulk|junk|list|auto_reply`, a `List-Id` (mailing-list traffic), read receipts (MDNs),
   vacation headers and auto-reply subjects (`Automatic reply:`, `Out of Office`);
4. bounce, sender evidence only: From `postmaster@`, or a null reverse-path
   (`MAIL FROM:<>`, or `Return-Path: <>` when the envelope is unknown). This comes after the
   auto-reply headers because RFC 3834 responders also send from `<>` (and some from
   postmaster): a message that says `Auto-Submitted: auto-replied` is an auto-reply, even
   from postmaster, even when its text talks about bouncing.

`List-Unsubscribe` alone is deliberately NOT evidence: mailing platforms add it to one-to-one
business mail too, and an auto-reply verdict means no ticket is opened for a first message.
Subject patterns are anchored at the start and never match behind `Re:`/`Fwd:`, so a customer
forwarding a bounce to support ("Fwd: Undelivered Mail Returned to Sender") is still a customer.
"""

from __future__ import annotations

import re

from mailhelpdesk.mail.parsed import Classification, ParsedMail, Verdict

LOOP_HEADER = "x-mailhelpdesk-loop"

# Never a person: mail from these local parts is a delivery report whatever else it says.
_DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "mdaemon"}
)
# Role mailboxes that people also answer from: evidence only when nothing says auto-reply.
_POSTMASTER_LOCAL_PARTS = frozenset({"postmaster", "post_master", "post-master"})
# Headers only list servers add, and their administrative sender addresses.
_LIST_SERVER_HEADERS = (
    "x-mlserver",
    "mailing-list",
    "x-mailman-version",
    "x-ecartis-version",
    "x-listserver",
    "x-list-administrivia",
    "x-ml-name",
    "x-sequence",
)
_LIST_ADMIN_SENDER = re.compile(r"(?:^owner-|-(?:admin|owner|bounces?|request)$)")
_DSN_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ARF_PARTS = frozenset({"message/feedback-report"})
_MDN_PARTS = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_SUPPRESS_TOKENS = frozenset({"dr", "autoreply", "all", "oof"})

# Subjects MTAs give bounces, anchored at the start (never behind "Re:"/"Fwd:") and kept to the
# exact phrases: "My order delivery was delayed" or "Undeliverable parcel" are customers.
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:"
    r"undelivered mail returned to sender|undelivered mail\s*$|"
    r"undeliverable(?::|\s+mail\b|\s+message\b)|"
    r"delivery status notification|mail delivery failed|failure notice\s*$|returned mail\s*[:-]|"
    r"mail system error - returned mail|delivery failure(?:\s+notification)?\s*(?::|$)|"
    r"\[postmaster\] email delivery failure|mail could not be delivered\s*$|failed mail to\b|"
    r"non-delivery:|mail delivery warning\s*$|notice of mail delivery failure|"
    r"(?:unzustellbar|nicht zustellbar|non remis|non recapitabile|no se puede entregar|"
    r"onbestelbaar|olevererbart|kan ikke leveres|ei voitu toimittaa)\s*:|"
    r"メールエラー通知|未送達|配信エラー|系统退信|退信通知|邮件投递失败"
    r")",
    re.IGNORECASE,
)

# Openings of the human-readable part of bounces that carry no DSN structure (first lines only).
_BOUNCE_TEXT = re.compile(
    r"(?:"
    r"^hi\. this is the qmail-send program|"
    r"^this message was created automatically by mail delivery software|"
    r"^this is the mail system at host|"
    r"^i'm sorry to (?:have to )?inform you that (?:the|your) message|"
    r"^i'm afraid i wasn't able to deliver (?:your|the following) message|"
    r"^your message did not reach some or all of the intended recipients|"
    r"^delivery to the following recipients? (?:failed|has been delayed)|"
    r"^the following message to <[^>]*> was undeliverable|"
    r"^this is an automatically generated delivery status notification|"
    r"^sorry, we were unable to deliver your message|"
    r"^your message (?:could not|cannot) be delivered|"
    r"^the original message was received at .* from|"
    r"^(?:----- )?the following addresses had permanent fatal errors|"
    r"^message from .* could not be delivered|"
    r"^your mail message to the following address\(es\) could not be delivered|"
    r"^unable to deliver message to the following address|"
    r"^this is a permanent error; i've given up|"
    r"^votre message n'a pas pu [êe]tre d[ée]livr[ée]"
    r")",
    re.IGNORECASE | re.MULTILINE,
)

# Out-of-office subjects: the responder's phrase, then a colon (or nothing): "Automatic reply:
# <subject>", "Out of Office: …", "Abwesenheitsnotiz: …". "On vacation next week, please pause
# my plan" is a customer, so free phrases without the colon are not used.
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:"
    r"(?:auto(?:matic|matische)?[- ]?(?:reply|response|antwort|respons)|autoreply|autoresponder|"
    r"abwesenheitsnotiz|abwesend|r[ée]ponse automatique|respuesta autom[áa]tica|"
    r"risposta automatica|automatisch antwoord|fraværsmelding|frånvaro|poza biurem|"
    r"vacation (?:reply|response|notice))\s*(?::|$)|"
    r"out of (?:the )?office(?:\s*(?:auto[- ]?)?reply)?\s*(?::|$|\()|"
    r"自动回复|自動回覆|自動応答|自動返信|자동 회신"
    r")",
    re.IGNORECASE,
)

_WORD = re.compile(r"\w{2,}")
_PARAM = re.compile(r"report-type\s*=\s*\"?([A-Za-z0-9_.-]+)", re.IGNORECASE)


def classify(
    mail: ParsedMail, *, envelope_from: str | None, own_addresses: frozenset[str]
) -> Classification:
    """The verdict on one message, with the evidence. Pure: looks only at its arguments.

    `envelope_from` is the SMTP reverse-path: `""` for the null path `<>`, None when unknown
    (an import from files), and then the `Return-Path` header stands in for it."""
    for rule in (_loop, _structural_bounce, _auto_reply):
        reason = rule(mail, own_addresses)
        if reason:
            return Classification(_VERDICTS[rule], reason)
    reason = _sender_bounce(mail, envelope_from)
    if reason:
        return Classification(Verdict.bounce, reason)
    return Classification(Verdict.normal, "")


def _loop(mail: ParsedMail, own_addresses: frozenset[str]) -> str:
    """Our own mail coming back: From one of our addresses, or our loop headers."""
    own = {address.lower() for address in own_addresses}
    if mail.from_ is not None and mail.from_.email in own:
        return f"From: {mail.from_.email} is our own address"
    if mail.header(LOOP_HEADER) is not None:
        return "X-Mailhelpdesk-Loop present"
    for value in mail.header_all("x-loop"):
        lowered = value.lower()
        for address in own:
            if address and address in lowered:
                return f"X-Loop: {address}"
    return ""


def _report_type(mail: ParsedMail) -> str:
    """The report-type of a top-level multipart/report, lower-case, or ""."""
    content_type = (mail.header("content-type") or "").lower()
    if not content_type.lstrip().startswith("multipart/report"):
        return ""
    match = _PARAM.search(content_type)
    return match.group(1).lower() if match else "unknown"


def _structural_bounce(mail: ParsedMail, own_addresses: frozenset[str]) -> str:
    """Evidence that only delivery reports carry: DSN/ARF structure, X-Failed-Recipients, the
    subject or opening words of a bounce."""
    report_type = _report_type(mail)
    if report_type == "delivery-status":
        return "multipart/report delivery-status"
    if report_type == "feedback-report":
        return "multipart/report feedback-report (ARF)"
    parts = set(mail.content_types)
    if parts & _DSN_PARTS:
        return "message/delivery-status part"
    if parts & _ARF_PARTS:
        return "message/feedback-report part (ARF)"
    if mail.header("x-failed-recipients") is not None:
        return "X-Failed-Recipients present"
    if mail.from_ is not None:
        local = mail.from_.email.split("@", 1)[0].strip().lower()
        if local in _DAEMON_LOCAL_PARTS or (
            not local and mail.from_.name.strip().lower() in _DAEMON_LOCAL_PARTS
        ):
            return f"From: {local or mail.from_.name.strip()}"
        if _LIST_ADMIN_SENDER.search(local) and any(
            mail.header(h) is not None for h in _LIST_SERVER_HEADERS
        ):
            return f"list-server notice from {local}"
    if _BOUNCE_SUBJECT.match(mail.subject):
        return f"bounce subject: {mail.subject.strip()[:60]}"
    # only the very first lines: a customer pasting a bounce below "Hi, I got this:" is a customer
    opening = "\n".join([line for line in mail.text[:4000].splitlines() if _WORD.search(line)][:2])
    if match := _BOUNCE_TEXT.search(opening):
        return f"bounce text: {match.group(0)[:60]}"
    return ""


def _auto_reply(mail: ParsedMail, own_addresses: frozenset[str]) -> str:
    """RFC 3834 and the de-facto headers of vacation responders, lists and receipts."""
    auto_submitted = mail.header("auto-submitted")
    if auto_submitted is not None:
        value = re.split(r"[;(\s]", auto_submitted.strip().lower(), maxsplit=1)[0]
        if value and value != "no":
            return f"Auto-Submitted: {value}"
    for name in (
        "x-autoreply",
        "x-autorespond",
        "x-autoresponder",
        "x-autoreply-from",
        "x-mail-autoreply",
        "x-autogenerated",
        "x-vacation",
    ):
        value = mail.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{_title(name)}: {value.strip()[:40]}"
    suppress = mail.header("x-auto-response-suppress")
    if suppress is not None:
        tokens = {token.strip().lower() for token in re.split(r"[,\s]+", suppress) if token.strip()}
        if tokens & _SUPPRESS_TOKENS:
            return f"X-Auto-Response-Suppress: {suppress.strip()[:40]}"
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence in _AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    list_id = mail.header("list-id")
    if list_id is not None:
        return f"List-Id: {list_id.strip()[:60]}"
    if _report_type(mail) == "disposition-notification" or set(mail.content_types) & _MDN_PARTS:
        return "read receipt (message/disposition-notification)"
    apple_action = (mail.header("x-apple-action") or "").strip().lower()
    if apple_action == "vacation":
        return "X-Apple-Action: VACATION"
    if _AUTO_REPLY_SUBJECT.match(mail.subject):
        return f"auto-reply subject: {mail.subject.strip()[:60]}"
    return ""


def _sender_bounce(mail: ParsedMail, envelope_from: str | None) -> str:
    """Weaker evidence: a mailer-daemon sender, or the null reverse-path."""
    if mail.from_ is not None:
        local = mail.from_.email.split("@", 1)[0].strip().lower()
        if local in _POSTMASTER_LOCAL_PARTS:
            return f"From: {local}"
    if envelope_from is not None:
        if envelope_from.strip() in ("", "<>"):
            return "null reverse-path (MAIL FROM:<>)"
        return ""
    return_path = mail.header("return-path")
    if return_path is not None and return_path.strip().strip("<>").strip() == "":
        return "Return-Path: <>"
    return ""


def _title(name: str) -> str:
    return "-".join(part.capitalize() if part != "x" else "X" for part in name.split("-"))


_VERDICTS = {
    _loop: Verdict.loop,
    _structural_bounce: Verdict.bounce,
    _auto_reply: Verdict.auto_reply,
}
