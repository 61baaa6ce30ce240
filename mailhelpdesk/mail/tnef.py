"""Outlook's TNEF (`winmail.dat`, application/ms-tnef) unpacked into the files and text it holds.

Outlook and Exchange, set to "Rich Text", wrap a message's attachments (and sometimes its body)
in one `winmail.dat` that no other mail client opens: the customer's screenshot arrives as an
opaque blob. A reader expects the files, so each file inside becomes an attachment of its own,
and a body found only inside the TNEF becomes the message's text. Decoding is done by
tnefparse (pure Python, no external tools); a blob it cannot read is kept as it came, with a
defect, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from mimetypes import guess_type

from tnefparse import TNEF

from mailhelpdesk.mail.parsed import ParsedAttachment

log = logging.getLogger(__name__)

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
MAX_TNEF_FILES = 100  # files taken out of one winmail.dat


@dataclass
class Unpacked:
    """The attachments with every readable TNEF blob replaced by its files."""

    attachments: list[ParsedAttachment] = field(default_factory=list)
    text: str = ""  # a plain body found inside a TNEF blob
    html: str = ""  # an HTML body found inside a TNEF blob
    defects: list[str] = field(default_factory=list)


def is_tnef(attachment: ParsedAttachment) -> bool:
    return attachment.content_type.lower() in TNEF_TYPES or (
        attachment.filename.lower() == "winmail.dat" and attachment.data[:4] == b"\x78\x9f\x3e\x22"
    )


def unpack(attachments: Sequence[ParsedAttachment]) -> Unpacked:
    """The attachments, each TNEF blob among them replaced by the files inside it."""
    out = Unpacked()
    for attachment in attachments:
        if not is_tnef(attachment):
            out.attachments.append(attachment)
            continue
        try:
            blob = TNEF(attachment.data, do_checksum=False)
            files = [
                ParsedAttachment(
                    filename=_name(item.long_filename() or item.name),
                    content_type=guess_type(_name(item.long_filename() or item.name))[0]
                    or "application/octet-stream",
                    data=bytes(item.data),
                    is_inline=False,
                )
                for item in blob.attachments[:MAX_TNEF_FILES]
                if item.data
            ]
            text, html = _text(blob.body), _text(blob.htmlbody)
        except Exception as error:  # noqa: BLE001 - hostile input: keep the blob, note why
            out.attachments.append(attachment)
            out.defects.append(f"TnefDefect:{type(error).__name__}")
            continue
        out.attachments.extend(files)
        out.text = out.text or text
        out.html = out.html or html
        if not files and not (text or html):
            out.attachments.append(attachment)  # nothing inside we can show: keep the blob
            out.defects.append("TnefDefect:nothing readable")
    return out


def _name(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    return text.strip("\x00").strip() or "attachment.bin"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00")
    return str(value).strip("\x00") if value else ""
