"""The visible text of a new request that forwards an earlier mail (issue 17, defect 13).

The reply trimmer (mail/reply_text.py) cuts at the first forward or quote marker, which is right
for a reply: below the marker is history the helpdesk already has. A NEW request that forwards
a mail is different: "Still no answer to this:" above a `---------- Forwarded message ---------`
block, or a customer forwarding their own unanswered message, carries its substance in the
forward. So a new ticket's visible text is the writer's own text followed by the forwarded
message: inline forwards (Gmail, Outlook "From: … Sent: …", Apple) keep their text as written,
and a forward attached as message/rfc822 is written out below the writer's text.
"""

from __future__ import annotations

import re

from mailhelpdesk.mail.forwarded import ForwardedOriginal, find_forwarded
from mailhelpdesk.mail.parsed import ParsedMail
from mailhelpdesk.mail.reply_text import readable_placeholders, visible_text

# a forward the forward finder cannot attribute (e.g. Outlook's `From: Name` with no address):
# its marker alone says the text below it belongs to the request
_FORWARD_MARK = re.compile(
    r"^\s*(?:-{3,}\s*(?:forwarded message|original message)\s*-{3,}|begin forwarded message\s*:)"
    r"\s*$|^\s*\*?from\s*\*?:.*\n\s*\*?sent\s*\*?:",
    re.IGNORECASE | re.MULTILINE,
)


def request_text(parsed: ParsedMail) -> str:
    """What a new ticket's first message shows: its own text plus what it forwards."""
    return request_text_from(parsed, visible_text(parsed.text), find_forwarded(parsed))


def request_text_from(parsed: ParsedMail, own: str, forwarded: ForwardedOriginal | None) -> str:
    """`request_text`, from the message's visible text (`own`) and its forwarded original, for
    a caller that has both already (understanding derives both anyway)."""
    if forwarded is not None and forwarded.shape == "rfc822":
        sender = forwarded.sender
        who = f"{sender.name} <{sender.email}>" if sender.name else sender.email
        block = (
            "---------- Forwarded message ---------\n"
            f"From: {who}\nSubject: {forwarded.subject}\n\n"
            f"{readable_placeholders(forwarded.text).strip()}"
        )
        return f"{own}\n\n{block}".strip()
    if forwarded is not None or _FORWARD_MARK.search(parsed.text):
        return readable_placeholders(parsed.text.replace("\r\n", "\n")).strip()
    return own
