"""What a bounce says about mail we sent: which message bounced, for whom, and for good or not.

Read from the RFC 3464 delivery-status part and the returned message (message/rfc822 or
text/rfc822-headers) the parser keeps as attachments, with `X-Failed-Recipients` and the
threading headers as fallbacks for bounces that are not proper DSNs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailhelpdesk.mail.parsed import ParsedMail

_FIELD = re.compile(r"^([A-Za-z-]+)\s*:\s*(.*)$")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_RETURNED_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


@dataclass(frozen=True)
class BounceDetails:
    original_message_ids: tuple[str, ...]
    failed_recipients: tuple[str, ...]  # lower-case addresses whose delivery failed for good
    delayed_recipients: tuple[str, ...]  # temporary failures (Action: delayed, 4.x.x)


def bounce_details(mail: ParsedMail) -> BounceDetails:
    failed: list[str] = []
    delayed: list[str] = []
    ids: list[str] = []
    for part in mail.attachments:
        kind = part.content_type.lower()
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            for recipient, permanent in _recipients(part.data.decode("utf-8", "replace")):
                (failed if permanent else delayed).append(recipient)
        elif kind in _RETURNED_TYPES:
            header = (
                BytesHeaderParser(policy=compat32)
                .parsebytes(part.data[:65536])
                .get("Message-ID", "")
            )
            ids.extend(_MESSAGE_ID.findall(str(header)))
    for value in mail.header_all("x-failed-recipients"):
        failed.extend(a.strip().lower() for a in value.split(",") if "@" in a)
    ids.extend(mail.in_reply_to)
    ids.extend(mail.references)
    return BounceDetails(
        original_message_ids=tuple(dict.fromkeys(ids)),
        failed_recipients=tuple(dict.fromkeys(failed)),
        delayed_recipients=tuple(dict.fromkeys(d for d in delayed if d not in failed)),
    )


def _recipients(text: str) -> list[tuple[str, bool]]:
    """(address, permanent) for each per-recipient block of a delivery-status body."""
    found: list[tuple[str, bool]] = []
    for block in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            match = _FIELD.match(line)
            if match:
                fields.setdefault(match.group(1).lower(), match.group(2).strip())
        recipient = fields.get("final-recipient") or fields.get("original-recipient")
        if not recipient:
            continue
        address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
        action = fields.get("action", "").lower()
        status = fields.get("status", "")
        if action == "failed" or status.startswith("5"):
            found.append((address, True))
        elif action == "delayed" or status.startswith("4"):
            found.append((address, False))
    return found
