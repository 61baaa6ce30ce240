"""Find the original message inside a forward: who wrote it, its subject and its text.

Shapes recognised (the forward's own text may stand above them):

- a `message/rfc822` attachment (Thunderbird "as attachment", Outlook "Forward as Attachment",
  mutt): parsed whole, so its Message-ID, CCs and attachments come along;
- Gmail:       `---------- Forwarded message ---------` then `From: Name <addr>`, `Date:`,
               `Subject:`, `To:`, `Cc:` lines;
- Outlook:     an optional `________________________________` rule or `-----Original Message-----`
               separator, then `From: Name <addr>` / `Sent:` / `To:` / `Cc:` / `Subject:`
               (field names in bold `*From:*` when converted from HTML);
- Apple Mail:  `Begin forwarded message:` then a blank line and `From: Name <addr>`, `Subject:`,
               `Date:`, `To:` (each possibly quoted with `> `).

Inline forwards only count when the header block names an address in `From:` (a bare
`From: Priya Sharma`, as Outlook writes for contacts in its address book, has no address to open
a ticket for). Pure: a ParsedMail in, a `ForwardedOriginal` or None out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr

from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import Address, ParsedAttachment, ParsedMail

MAX_SCAN_LINES = 400  # a forward marker further down than this is not looked for
MAX_BLOCK_LINES = 12  # header lines after the marker

_GMAIL = re.compile(r"^-{3,}\s*Forwarded message\s*-{3,}\s*$", re.IGNORECASE)
_APPLE = re.compile(r"^Begin forwarded message\s*:\s*$", re.IGNORECASE)
_OUTLOOK_SEPARATOR = re.compile(r"^(?:_{10,}|-{3,}\s*Original Message\s*-{3,})\s*$", re.IGNORECASE)
_FIELD = re.compile(
    r"^\*?\s*(From|Sent|Date|To|Cc|Subject|Reply-To)\s*\*?\s*:\s*\*?\s*(.*?)\s*\*?\s*$",
    re.IGNORECASE,
)
_QUOTE_PREFIX = re.compile(r"^\s*>\s?")
_ANGLE = re.compile(r"^(.*?)<\s*(?:mailto:)?([^<>\s@]+@[^<>\s@]+)\s*>\s*$", re.IGNORECASE)
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]", re.IGNORECASE)


@dataclass(frozen=True)
class ForwardedOriginal:
    sender: Address
    subject: str
    text: str  # the original's body
    shape: str  # rfc822 | gmail | outlook | apple
    cc: tuple[Address, ...] = ()
    message_id: str | None = None
    attachments: tuple[ParsedAttachment, ...] = field(default_factory=tuple)
    note: str = ""  # what the forwarder wrote above the forwarded message


def find_forwarded(parsed: ParsedMail) -> ForwardedOriginal | None:
    """The forwarded original in `parsed`, or None when it is not a recognisable forward."""
    inline = _inline(parsed.text)
    if inline is not None:
        return inline
    for attachment in parsed.attachments:
        if attachment.content_type in ("message/rfc822", "message/global"):
            found = _attached(attachment, parsed)
            if found is not None:
                return found
    return None


def _attached(attachment: ParsedAttachment, outer: ParsedMail) -> ForwardedOriginal | None:
    inner = parse_message(attachment.data)
    if inner.from_ is None or not inner.from_.email or "@" not in inner.from_.email:
        return None
    return ForwardedOriginal(
        sender=inner.from_,
        subject=inner.subject,
        text=inner.text,
        shape="rfc822",
        cc=tuple(inner.cc),
        message_id=inner.message_id,
        attachments=inner.attachments,
        note=outer.text.strip(),
    )


def _inline(text: str) -> ForwardedOriginal | None:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for index, line in enumerate(lines[:MAX_SCAN_LINES]):
        bare = _QUOTE_PREFIX.sub("", line).strip()
        field_match = _FIELD.match(bare)
        if _GMAIL.match(bare):
            shape, found = "gmail", _block(lines, index + 1, "gmail")
        elif _APPLE.match(bare):
            shape, found = "apple", _block(lines, index + 1, "apple")
        elif _OUTLOOK_SEPARATOR.match(bare):
            shape, found = "outlook", _block(lines, index + 1, "outlook")
        elif field_match and field_match.group(1).lower() == "from":
            shape, found = "outlook", _block(lines, index, "outlook", need_sent=True)
        else:
            continue
        if found is not None:
            header_end, fields = found
            sender = _address(fields.get("from", ""))
            if sender is None:
                continue
            quoted = _quoted(lines, header_end)
            body = "\n".join(
                _QUOTE_PREFIX.sub("", line) if quoted else line for line in lines[header_end:]
            )
            return ForwardedOriginal(
                sender=sender,
                subject=fields.get("subject", ""),
                text=body.strip("\n"),
                shape=shape,
                cc=tuple(_addresses(fields.get("cc", ""))),
                note="\n".join(lines[:index]).strip(),
            )
    return None


def _quoted(lines: list[str], start: int) -> bool:
    body = [line for line in lines[start:] if line.strip()]
    return bool(body) and all(_QUOTE_PREFIX.match(line) for line in body)


def _block(
    lines: list[str], start: int, shape: str, *, need_sent: bool = False
) -> tuple[int, dict[str, str]] | None:
    """Read the header lines from `start`: (index of the first body line, {field: value})."""
    fields: dict[str, str] = {}
    index = start
    # Apple and Gmail may leave a blank line between the marker and the block
    while (
        index < len(lines) and index < start + 3 and not _QUOTE_PREFIX.sub("", lines[index]).strip()
    ):
        index += 1
    last: str | None = None
    while index < len(lines) and index < start + MAX_BLOCK_LINES + 3:
        bare = _QUOTE_PREFIX.sub("", lines[index]).strip()
        if not bare:
            break
        match = _FIELD.match(bare)
        if match:
            last = match.group(1).lower()
            fields.setdefault(last, match.group(2))
        elif last is not None and lines[index][:1] in (" ", "\t"):
            fields[last] += " " + bare  # a folded long To:/Cc: line
        else:
            break
        index += 1
    if "from" not in fields:
        return None
    if need_sent and not ({"sent", "date"} & fields.keys() and {"to", "subject"} & fields.keys()):
        return None
    if shape != "outlook" and not ({"subject", "date", "sent", "to"} & fields.keys()):
        return None
    return index, fields


def _address(value: str) -> Address | None:
    mailto = _MAILTO.search(value)  # Outlook: "Priya Sharma [mailto:priya@customer.test]"
    if mailto:
        name = _MAILTO.sub("", value).strip().strip('"')
        return Address(name, mailto.group(1).lower())
    angle = _ANGLE.match(value)  # "Builder, Bob <bob@x>" (a comma parseaddr would split on)
    if angle:
        return Address(angle.group(1).strip().strip('"').strip(), angle.group(2).lower())
    name, addr = parseaddr(value)
    if not addr or "@" not in addr or " " in addr:
        return None
    return Address(name.strip(), addr.lower())


def _addresses(value: str) -> list[Address]:
    found = []
    for name, addr in getaddresses([value]):
        if addr and "@" in addr:
            found.append(Address(name.strip(), addr.lower()))
    return found
