"""The MIME walk: which parts of a parsed message are body text, HTML or attachments.

Why a module of its own: deciding what a part is needs more than its content type (a text part
with a file name is an attachment, a multipart/alternative keeps only its last renderings,
message/rfc822 parts stay whole, uuencoded blocks hide inside plain text), and every step has to
survive broken MIME: missing boundaries, undecodable payloads, absurd part counts and nesting
(bounded by MAX_PARTS and MAX_DEPTH, recorded as defects). `walk_part` fills a `Walk` with what
it finds; the caller turns that into a `ParsedMail`.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import Message
from typing import Any

from mailhelpdesk.mail.charsets import decode_bytes
from mailhelpdesk.mail.headers import (
    MimeHeader,
    normalise_message_id,
    parse_mime_header,
    raw_to_str,
    unfold,
)
from mailhelpdesk.mail.limits import MAX_DEPTH, MAX_PARTS
from mailhelpdesk.mail.parsed import ParsedAttachment

_BODY_TYPES = ("text/plain", "text/html")
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_UUE_BEGIN = re.compile(r"^begin(?:-base64)? ([0-7]{3,4}) (.+?)\s*$", re.MULTILINE)
_EXTENSIONS = {
    "message/rfc822": ".eml",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/x-vcard": ".vcf",
    "text/vcard": ".vcf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
    "message/feedback-report": ".txt",
    "application/msword": ".doc",
}
_GUESS_TYPE = {ext: ctype for ctype, ext in reversed(list(_EXTENSIONS.items()))}
_GUESS_TYPE |= {
    ".jpeg": "image/jpeg",
    ".txt": "text/plain",
    ".xls": "application/vnd.ms-excel",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass
class Walk:
    """What the walk collects; one per message (and per branch of a multipart/alternative)."""

    hint: str | None
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    parts: int = 0
    names: set[str] = field(default_factory=set)  # attachment names so far, shared by branches


def raw_header(part: Message, name: str) -> str | None:
    """The raw value of the first header `name` on one part, without header-object parsing."""
    for key, value in part.raw_items():
        if key.lower() == name:
            return str(value)
    return None


def _payload_bytes(part: Message, walk: Walk) -> bytes:
    """The transfer-decoded payload of a leaf part (base64, quoted-printable, uuencode)."""
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # noqa: BLE001
        walk.defects.append(f"PayloadDecodeError:{type(exc).__name__}")
        raw = part.get_payload()
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    return data if isinstance(data, bytes) else b""


def _clean_filename(name: str) -> str:
    """A file name safe to store: no directories, NULs, control characters or leading dots."""
    name = re.split(r"[\\/]", name.replace("\x00", ""))[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) != "Cc").strip().strip(".")
    return name[:255]


_CID_FILENAME = re.compile(r"^<?([^<>@\s]+\.[A-Za-z0-9]{2,5})@")


def _filename(ctype: MimeHeader, disposition: MimeHeader) -> str:
    """The part's declared name (Content-Disposition filename, else Content-Type name); a part
    with one is an attachment even when it is text."""
    return _clean_filename(disposition.params.get("filename") or ctype.params.get("name") or "")


def _implied_filename(part: Message, hint: str | None) -> str:
    """A name for an attachment that declares none: the last path segment of its
    Content-Location, or a Content-ID that is a file name (`image001.jpg@01D…`, as Outlook
    writes them for inline pictures). Raw 8-bit bytes in them are decoded with `hint`."""
    name = ""
    location = raw_header(part, "content-location")
    if location:
        location = raw_to_str(unfold(location), hint)
        name = location.strip().strip('<>"').rsplit("/", 1)[-1].split("?", 1)[0]
    if not name:
        content_id = raw_header(part, "content-id")
        content_id = raw_to_str(unfold(content_id), hint) if content_id else None
        match = _CID_FILENAME.match(content_id.strip()) if content_id else None
        name = match.group(1) if match else ""
    return _clean_filename(name)


def _generated_name(content_type: str, walk: Walk) -> str:
    """`message.eml`, `delivery-status.txt`, `attachment-1.pdf` …: unique within the message."""
    existing = walk.names
    if content_type == "message/rfc822":
        stem = "message"
    elif content_type in (
        "message/delivery-status",
        "text/rfc822-headers",
        "message/feedback-report",
        "message/disposition-notification",
    ):
        stem = content_type.split("/", 1)[1]
    else:
        stem = "attachment"
    ext = _EXTENSIONS.get(content_type, ".bin")
    if stem != "attachment" and f"{stem}{ext}" not in existing:
        return f"{stem}{ext}"
    number = 1
    while f"{stem}-{number}{ext}" in existing:
        number += 1
    return f"{stem}-{number}{ext}"


def _text_of(part: Message, data: bytes, ctype: MimeHeader, walk: Walk) -> str:
    """A body part's text with LF line ends: its charset label, else (HTML) a <meta> charset,
    else detection; a guessed charset is recorded as a `CharsetFallback` defect."""
    label = ctype.params.get("charset")
    if not label and ctype.value == "text/html":
        meta = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_.:-]+)", data[:4096], re.IGNORECASE)
        label = meta.group(1).decode("ascii") if meta else None
    text, fallback = decode_bytes(data, label)
    if fallback:
        walk.defects.append(f"CharsetFallback:{label or 'none'}")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _embedded_message_bytes(part: Message, walk: Walk) -> bytes:
    """A message/rfc822 part kept whole: its own header lines as they came, LF line ends."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        try:
            keep_source = email_policy.default.clone(refold_source="none", linesep="\n")
            return payload[0].as_bytes(policy=keep_source)
        except Exception as exc:  # noqa: BLE001
            walk.defects.append(f"EmbeddedMessageError:{type(exc).__name__}")
            try:
                return payload[0].as_string().encode("utf-8", "surrogateescape")
            except Exception:  # noqa: BLE001
                return b""
    return _payload_bytes(part, walk)


def _field_blocks_bytes(blocks: list[Any], walk: Walk) -> bytes:
    """message/delivery-status and kin, which the parser splits into blocks of header fields,
    back to their text: each block's fields, blocks separated by a blank line."""
    out = []
    for block in blocks:
        if isinstance(block, Message):
            lines = [f"{name}: {value}" for name, value in block.raw_items()]
            out.append("\n".join(lines).encode("utf-8", "surrogateescape"))
    return b"\n\n".join(out) + b"\n"


def _extract_uuencoded(text: str, walk: Walk) -> str:
    """Lift `begin 644 name … end` blocks out of plain text as attachments (Lotus Notes, old
    Outlook); returns the text without them."""
    if "begin " not in text:
        return text
    out: list[str] = []
    position = 0
    for match in _UUE_BEGIN.finditer(text):
        if match.start() < position:
            continue
        end = re.search(r"^end\s*$", text[match.end() :], re.MULTILINE)
        if end is None:
            break
        block = text[match.end() : match.end() + end.start()]
        data = bytearray()
        try:
            for line in block.strip("\n").split("\n"):
                if line.strip() and line.strip() != "`":
                    try:
                        data += binascii.a2b_uu(line)
                    except binascii.Error:
                        count = (ord(line[0]) - 32) & 63  # lenient: padding cut by the mailer
                        data += binascii.a2b_uu(line[: ((count + 2) // 3) * 4 + 1])[:count]
        except (binascii.Error, IndexError):
            walk.defects.append("UuencodeError")
            continue
        name = _clean_filename(match.group(2)) or _generated_name("application/octet-stream", walk)
        ctype = _GUESS_TYPE.get(
            ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else "",
            "application/octet-stream",
        )
        walk.names.add(name)
        walk.attachments.append(ParsedAttachment(name, ctype, bytes(data), False, None))
        out.append(text[position : match.start()])
        position = match.end() + end.end()
    out.append(text[position:])
    return "".join(out)


def walk_part(part: Message, walk: Walk, depth: int) -> None:
    """Collect body text, HTML and attachments from one part and its children."""
    walk.parts += 1
    if walk.parts > MAX_PARTS:
        if "TooManyPartsDefect" not in walk.defects:
            walk.defects.append("TooManyPartsDefect")
        return
    walk.defects.extend(type(defect).__name__ for defect in getattr(part, "defects", ()))
    ctype = parse_mime_header(raw_header(part, "content-type"), hint=walk.hint)
    match = _MIME_TYPE.match(ctype.value)
    content_type = (
        match.group(0) if match else "message/rfc822" if _is_digest_child(part) else "text/plain"
    )
    walk.content_types.append(content_type)
    payload = part.get_payload()
    if content_type.startswith("multipart/") and not isinstance(payload, list):
        content_type = "text/plain"  # no usable boundary: show the text rather than hide it
    if (
        isinstance(payload, list)
        and content_type != "message/rfc822"
        and not content_type.startswith("message/")
    ):
        if depth >= MAX_DEPTH:
            walk.defects.append("NestingTooDeepDefect")
            return
        children = [child for child in payload if isinstance(child, Message)]
        if content_type == "multipart/alternative" and len(children) > 1:
            _walk_alternative(children, walk, depth)
        else:
            for child in children:
                walk_part(child, walk, depth + 1)
        return
    disposition = parse_mime_header(raw_header(part, "content-disposition"), hint=walk.hint)
    filename = _filename(ctype, disposition)
    is_attachment = disposition.value == "attachment"
    if content_type in _BODY_TYPES and not is_attachment and not filename:
        text = _text_of(part, _payload_bytes(part, walk), ctype, walk)
        if content_type == "text/plain":
            walk.plain.append(_extract_uuencoded(text, walk))
        else:
            walk.html.append(text)
        return
    if content_type in ("message/rfc822", "message/global"):
        data = _embedded_message_bytes(part, walk)
    elif content_type.startswith("message/") and isinstance(payload, list):
        data = _field_blocks_bytes(payload, walk)  # message/delivery-status: blocks of fields
    else:
        data = _payload_bytes(part, walk)
    content_id = raw_header(part, "content-id")
    content_id = normalise_message_id(raw_to_str(content_id, walk.hint)) if content_id else None
    name = filename or _implied_filename(part, walk.hint) or _generated_name(content_type, walk)
    walk.names.add(name)
    walk.attachments.append(
        ParsedAttachment(
            filename=name,
            content_type=content_type,
            data=data,
            is_inline=disposition.value == "inline"
            or (not is_attachment and content_id is not None),
            content_id=content_id.strip("<>") if content_id else None,
        )
    )


def _is_digest_child(part: Message) -> bool:
    """A part without Content-Type inside multipart/digest, which defaults to message/rfc822."""
    try:
        return part.get_default_type() == "message/rfc822"
    except Exception:  # noqa: BLE001
        return False


def _walk_alternative(children: list[Message], walk: Walk, depth: int) -> None:
    """Take the last plain and the last HTML rendering (RFC 2046: last is richest); keep every
    branch's attachments (inline pictures of a multipart/related branch)."""
    branches = []
    for child in children:
        branch = Walk(hint=walk.hint, parts=walk.parts, names=walk.names)
        walk_part(child, branch, depth + 1)
        walk.parts = branch.parts
        branches.append(branch)
    plain = [b.plain for b in branches if any(t.strip() for t in b.plain)]
    html = [b.html for b in branches if any(t.strip() for t in b.html)]
    walk.plain.extend(plain[-1] if plain else [])
    walk.html.extend(html[-1] if html else [])
    for branch in branches:
        walk.attachments.extend(branch.attachments)
        walk.content_types.extend(branch.content_types)
        walk.defects.extend(branch.defects)
