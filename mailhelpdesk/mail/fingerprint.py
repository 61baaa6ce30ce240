"""The raw bytes of a message, before (or instead of) the stdlib parser: line-end and mbox
clean-up, header-block repair, a direct header split, and the dedupe `fingerprint`.

Why on bytes: the fingerprint must be identical for an SMTP copy and an IMAP copy of one
message, so it cannot depend on how a parser decoded anything; the same direct split serves the
fallback result when the full parse fails, and the repairs have to happen before the stdlib
parser sees the bytes, or it ends the header block at the first broken line.
"""

from __future__ import annotations

import hashlib
import re

from mailhelpdesk.mail.limits import MAX_HEADERS

_FINGERPRINT_HEADERS = (b"message-id", b"from", b"to", b"cc", b"date", b"subject")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def normalise_line_ends(raw: bytes) -> bytes:
    """CR-only mail (old Mac) to LF; CRLF and LF mail are left for the parser."""
    if b"\r" in raw[:65536] and b"\n" not in raw[:65536]:
        return raw.replace(b"\r", b"\n")
    return raw


def strip_mbox_from(raw: bytes) -> bytes:
    """Drop an mbox `From sender date` separator line (not a `From:` header) at the start."""
    if raw.startswith(b"From ") and b":" not in raw.split(b"\n", 1)[0].split(b" ", 2)[1]:
        return raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw


_FIELD_LINE = re.compile(rb"^[!-9;-~]{1,200}[ \t]*:")


def repair_header_block(data: bytes) -> tuple[bytes, bool]:
    """Mend the header block so the parser does not end it early: a junk line before the first
    field is dropped (`---- Original email message ----`), and a line without a colon between
    two fields is taken as a continuation (base64 trackers folded without indentation).
    Otherwise the stdlib stops at that line and every later header (Subject, From) lands in
    the body."""
    match = _HEADER_END.search(data)
    end = match.start() if match else len(data)
    if end > 1_000_000:
        return data, False
    lines = data[:end].split(b"\n")
    valid = [bool(_FIELD_LINE.match(line)) for line in lines]
    if all(valid[i] or lines[i][:1] in (b" ", b"\t") for i in range(len(lines))):
        return data, False
    last_field = max((i for i, ok in enumerate(valid) if ok), default=-1)
    first_field = valid.index(True) if True in valid else -1
    if first_field < 0:
        return data, False
    out: list[bytes] = []
    for index, line in enumerate(lines):
        if valid[index] or line[:1] in (b" ", b"\t"):
            out.append(line)
        elif index < first_field:
            continue
        elif index < last_field:
            out.append(b" " + line)
        else:
            out.append(b"\n" + line)  # body text that was missing its blank separator line
            out.extend(lines[index + 1 :])
            break
    return b"\n".join(out) + data[end:], True


def split_raw(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields as (lower-case name, unfolded value), body bytes) straight from the bytes."""
    match = _HEADER_END.search(raw)
    head, body = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    fields: list[tuple[bytes, bytes]] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name.strip().lower(), value))
        if len(fields) > MAX_HEADERS:
            break
    return fields, body


def fingerprint(raw: bytes) -> str:
    """sha256 over what identifies a message whichever way it arrived: the Message-ID, From, To,
    Cc, Date and Subject values and the body, with line ends made LF and trailing whitespace
    dropped. Transport headers (Received, Return-Path, Delivered-To …) are not included, so an
    SMTP copy and an IMAP copy agree; a reused Message-ID with another body does not."""
    fields, body = split_raw(strip_mbox_from(normalise_line_ends(raw)))
    digest = hashlib.sha256()
    for wanted in _FINGERPRINT_HEADERS:
        value = next((v for name, v in fields if name == wanted), b"")
        digest.update(wanted + b":" + re.sub(rb"\s+", b" ", value).strip() + b"\x00")
    body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    body = re.sub(rb"[ \t]+\n", b"\n", body).rstrip()
    digest.update(body)
    return digest.hexdigest()
