"""The typed result of parsing one message: what every later step reads.

`mail/` is pure (bytes in, values out), so these are plain frozen dataclasses with no
database or network attached; the ingest pipeline turns them into rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Address:
    """One mailbox from an address header; `email` is lower-cased for comparisons."""

    name: str
    email: str


@dataclass(frozen=True)
class ParsedAttachment:
    """A non-body part kept as a file (attachments, inline images, message/rfc822 parts)."""

    filename: str
    content_type: str
    data: bytes
    is_inline: bool
    content_id: str | None = None


@dataclass(frozen=True)
class ParsedMail:
    """Everything the pipeline needs from one message, decoded and normalised.

    Header values are decoded to `str` (RFC 2047 words and raw 8-bit bytes alike); a header
    that could not be decoded is kept with replacement characters rather than dropped.
    """

    message_id: str | None  # normalised "<local@domain>", None when absent or unusable
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    # every header as (lower-case name, decoded value), in order; repeated names repeat
    headers: tuple[tuple[str, str], ...]
    text: str  # full plain text (from text/plain, or HTML converted to text), quotes included
    html: str | None  # sanitised HTML body, None when the message had no HTML part
    attachments: tuple[ParsedAttachment, ...]
    content_types: tuple[str, ...]  # every MIME part's content type, in walk order
    defects: tuple[str, ...] = field(default=())
    # sha256 hex over what identifies the message independent of transport-added headers
    # (Received, Delivered-To, Return-Path ...): used by dedupe
    fingerprint: str = ""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]


class Verdict(enum.StrEnum):
    """What the classifier decided a message is."""

    normal = "normal"
    bounce = "bounce"
    auto_reply = "auto_reply"
    loop = "loop"


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    reason: str  # short, human-readable: "Auto-Submitted: auto-replied", "multipart/report DSN"
