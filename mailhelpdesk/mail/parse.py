"""Raw RFC 5322 bytes to a `ParsedMail`: the one entry point is `parse_message`, which never raises.

Why so defensive: every message the daemon accepts has already been acknowledged to its sender
(SMTP 250, IMAP flagged), so a parser exception would mean a lost message or a retry loop. Real
mail is full of lies (wrong charset labels, raw 8-bit headers, missing boundaries, uuencoded
bodies), so each step here degrades to a best-effort value and records a defect name instead.

The stdlib `email` package (with `email.policy.default`) splits the MIME tree; header values,
addresses and parameters are decoded from the raw header text (`headers`), because the stdlib's
own decoding gives up (or raises) on exactly the broken input we have to keep.

What the result holds, beyond the field comments in parsed.py:

- `text`: the inline text/plain parts joined (uuencoded blocks lifted out as attachments); when
  there is none, or it is empty, the HTML converted to text. `html`: the HTML parts, sanitised.
  In a multipart/alternative the last plain and the last HTML rendering win (RFC 2046).
- attachments: every other leaf part. Names come from Content-Disposition/Content-Type
  (RFC 2231 and encoded words decoded, paths cut off), else Content-Location or a file-like
  Content-ID (`image001.jpg@…`), else `message.eml`, `delivery-status.txt`,
  `attachment-N.<ext>`. `content_id` is given without its angle brackets, as `cid:` URLs use it.
  A message/rfc822 part is one attachment (its own header lines kept, LF line ends): its inner
  parts are another message's, so they are neither body nor listed in `content_types`.
- limits: MAX_PARTS parts, MAX_DEPTH nesting, MAX_HEADERS fields of MAX_HEADER_VALUE characters;
  beyond them a defect is recorded. Nesting so deep that the stdlib parser itself recurses out
  ends in the fallback result (headers and raw body text, `ParseError:RecursionError`).
- text only: no str in the result holds a lone surrogate (raw 8-bit header bytes, SMTPUTF8
  mail included, are decoded as UTF-8 first, then the header charset, else replaced), because
  UTF-8 cannot encode one and the database driver would refuse the row.

The work is split by concern: `charsets` (labels, detection, decoding), `headers` (header
values, addresses, message ids, dates, MIME parameters), `html_text` (sanitising, HTML to
text), `mime_walk` (body and attachment extraction), `fingerprint` (raw bytes and dedupe);
this module holds the top-level flow and the fallback result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
from collections.abc import Iterator
from contextvars import ContextVar
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from typing import Any

from mailhelpdesk.mail import tnef
from mailhelpdesk.mail.charsets import (
    WESTERN,
    decode_bytes,
    detect,
    resolve_charset,
    without_surrogates,
)
from mailhelpdesk.mail.fingerprint import (
    fingerprint,
    normalise_line_ends,
    repair_header_block,
    split_raw,
    strip_mbox_from,
)
from mailhelpdesk.mail.headers import (
    bounded_mime_header,
    choose_sender,
    decode_header_value,
    normalise_message_id,
    parse_addresses,
    parse_date,
    parse_message_ids,
    parse_mime_header,
    raw_to_str,
)
from mailhelpdesk.mail.html_text import html_to_text, sanitize_html
from mailhelpdesk.mail.limits import (
    DETECT_SAMPLE,
    MAX_DEPTH,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_HTML_TO_TEXT,
    MAX_PARTS,
)
from mailhelpdesk.mail.mime_walk import Walk, raw_header, walk_part
from mailhelpdesk.mail.parsed import Address, ParsedAttachment, ParsedMail

# Importable from here as before the split (callers and tests used these names from `parse`).
__all__ = ["MAX_PARTS", "html_to_text", "parse_message", "sanitize_html"]


def _message_charset(message: Message) -> str | None:
    """The charset to try first for raw 8-bit header bytes: one the message names for its parts,
    preferring a multi-byte or non-Latin one (a Western label decodes any bytes, so it proves
    nothing, and spam often labels the body iso-8859-1 while the headers are GB2312)."""
    western = None
    for count, part in enumerate(_iter_parts(message, 0)):
        if count > 50:
            break
        charset = parse_mime_header(raw_header(part, "content-type")).params.get("charset")
        codec = resolve_charset(charset)
        if codec in (None, "ascii", "utf-8"):
            continue
        if codec in WESTERN or codec.startswith("cp125"):
            western = western or charset
            continue
        return charset
    return western


def _header_charset(message: Message, body_hint: str | None) -> str | None:
    """The charset for raw 8-bit header bytes, decided once for the whole header block: UTF-8
    if they all are, else the body's charset if it reads them, else detection over all of
    them together (more bytes, a better guess; and one detector run, not one per header)."""
    raw = b" ".join(
        str(value).encode("utf-8", "surrogateescape")
        for _, value in itertools.islice(message.raw_items(), MAX_HEADERS)
        if not str(value).isascii()
    )[:DETECT_SAMPLE]
    if not raw:
        return body_hint
    candidates = ["utf-8", resolve_charset(body_hint)]
    for candidate in candidates:
        if candidate:
            try:
                raw.decode(candidate)
                return candidate
            except (UnicodeDecodeError, LookupError):
                continue
    return detect(raw) or body_hint


def _iter_parts(part: Message, depth: int) -> Iterator[Message]:
    """The part and its descendants, depth-first, at most MAX_DEPTH deep."""
    yield part
    payload = part.get_payload()
    if isinstance(payload, list) and depth < MAX_DEPTH:
        for child in payload[:MAX_PARTS]:
            if isinstance(child, Message):
                yield from _iter_parts(child, depth + 1)


def _headers(message: Message, hint: str | None, defects: list[str]) -> tuple[tuple[str, str], ...]:
    """Every header field as (lower-case name, decoded value), within MAX_HEADERS fields of
    MAX_HEADER_VALUE characters; what is cut off is recorded as a defect."""
    result = []
    for index, (name, raw_value) in enumerate(message.raw_items()):
        if index >= MAX_HEADERS:
            defects.append("TooManyHeadersDefect")
            break
        value = str(raw_value)
        if len(value) > MAX_HEADER_VALUE:
            defects.append("HeaderTooLongDefect")
            value = value[:MAX_HEADER_VALUE]
        result.append((name.strip().lower(), decode_header_value(value, hint=hint)))
    return tuple(result)


def _first(message: Message, name: str) -> str | None:
    """The raw value of the first header `name` (8-bit bytes still as surrogates), bounded."""
    value = raw_header(message, name)
    return value[:MAX_HEADER_VALUE] if value is not None else None


def _first_text(message: Message, name: str, hint: str | None) -> str | None:
    """The first header `name` as text, for values that are not otherwise decoded (message
    ids): raw 8-bit bytes (SMTPUTF8 `<id@exämple.test>`) read as UTF-8, else `hint`."""
    value = _first(message, name)
    return raw_to_str(value, hint) if value is not None else None


@functools.lru_cache(maxsize=512)
def _cached_header(name: str, value: str) -> Any:
    """policy.default's parsed header object for (name, value), shared by equal values."""
    return email_policy.default.header_fetch_parse(name, value)


# set by `_build` for the message being parsed: MIME headers `_Policy` bounded (a defect each)
_BOUNDED: ContextVar[list[str] | None] = ContextVar("bounded_mime_headers", default=None)


class _Policy(EmailPolicy):
    """`email.policy.default`, but a header value the parser asks for again and again (the
    Content-Type of each part, for boundaries and defaults) is parsed once: the stdlib parses
    it anew on every access, which made a 350-part message take most of a second. A MIME header
    beyond the bounds of `bounded_mime_header` is given to the stdlib bounded."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if name.lower() in ("content-type", "content-disposition"):
            bounded = bounded_mime_header(value)
            if bounded is not None:
                found = _BOUNDED.get()
                if found is not None:
                    found.append(name.lower())
                value = bounded
        if len(value) > 2048:
            return super().header_fetch_parse(name, value)
        return _cached_header(name, value)


_POLICY = _Policy()


def _build(raw: bytes, allow_remote_images: bool = False) -> ParsedMail:
    data, repaired = repair_header_block(strip_mbox_from(normalise_line_ends(raw)))
    bounded: list[str] = []
    token = _BOUNDED.set(bounded)
    try:
        message = BytesParser(policy=_POLICY).parsebytes(data)
    finally:
        _BOUNDED.reset(token)
    hint = _header_charset(message, _message_charset(message))
    walk = Walk(hint=hint, defects=["RepairedHeaderBlockDefect"] if repaired else [])
    if bounded:
        walk.defects.append("MimeHeaderBoundedDefect")
    walk_part(message, walk, 0)
    headers = _headers(message, hint, walk.defects)
    unpacked = tnef.unpack(walk.attachments)  # winmail.dat: its files and its body
    walk.defects.extend(unpacked.defects)
    if not walk.html and unpacked.html:
        walk.html.append(unpacked.html)
    if not any(t.strip() for t in walk.plain) and unpacked.text:
        walk.plain.append(unpacked.text)
    html_source = "\n".join(part.strip() for part in walk.html) if walk.html else None
    html = (
        sanitize_html(html_source, allow_remote_images=allow_remote_images)
        if html_source is not None
        else None
    )
    text = "\n".join(t.strip("\n") for t in walk.plain if t.strip())
    if not text.strip() and html is not None:
        if len(html) > MAX_HTML_TO_TEXT:
            walk.defects.append("HtmlTooLongForTextDefect")
        text = html_to_text(html[:MAX_HTML_TO_TEXT])
    subject_raw = _first(message, "subject")
    return ParsedMail(
        message_id=normalise_message_id(_first_text(message, "message-id", hint)),
        in_reply_to=parse_message_ids(_first_text(message, "in-reply-to", hint)),
        references=parse_message_ids(_first_text(message, "references", hint)),
        subject=decode_header_value(subject_raw, hint=hint) if subject_raw else "",
        from_=_sender(message, hint),
        to=_all_addresses(message, "to", hint),
        cc=_all_addresses(message, "cc", hint),
        reply_to=_all_addresses(message, "reply-to", hint),
        date=parse_date(_first(message, "date")),
        headers=headers,
        text=text,
        html=html,
        attachments=tuple(unpacked.attachments),
        content_types=tuple(walk.content_types),
        defects=tuple(dict.fromkeys(walk.defects)),
        fingerprint=fingerprint(raw),
    )


def _sender(message: Message, hint: str | None) -> Address | None:
    """From (every From header, some spam has two), then Sender and Reply-To when From has no
    usable address at all."""
    from_headers = [
        parse_addresses(str(v), hint=hint) for k, v in message.raw_items() if k.lower() == "from"
    ]
    chosen = choose_sender(from_headers)
    if chosen is not None and chosen.email:
        return chosen
    fallback = choose_sender(
        [_all_addresses(message, "sender", hint), _all_addresses(message, "reply-to", hint)]
    )
    if fallback is not None and "@" in fallback.email:
        return fallback
    return chosen


def _all_addresses(message: Message, name: str, hint: str | None) -> tuple[Address, ...]:
    """The mailboxes of every header `name` (To, Cc … may repeat), in order."""
    found: list[Address] = []
    for key, value in message.raw_items():
        if key.lower() == name:
            found.extend(parse_addresses(str(value)[:MAX_HEADER_VALUE], hint=hint))
    return tuple(found)


def _minimal(raw: bytes, error: BaseException) -> ParsedMail:
    """What can still be said about bytes the full parse failed on: raw headers and the body as
    text, with the failure recorded. Never raises."""
    defects = [f"ParseError:{type(error).__name__}"]
    try:
        fields, body = split_raw(strip_mbox_from(normalise_line_ends(raw)))
        headers = tuple(
            (
                n.decode("ascii", "replace"),
                decode_header_value(v.decode("utf-8", "surrogateescape")),
            )
            for n, v in fields
        )
        lookup = dict(reversed(headers))
        text = decode_bytes(body, None)[0].replace("\r\n", "\n")
        digest = fingerprint(raw)
    except Exception as exc:  # noqa: BLE001
        defects.append(f"ParseError:{type(exc).__name__}")
        headers, lookup, text = (), {}, ""
        digest = hashlib.sha256(raw if isinstance(raw, bytes) else b"").hexdigest()
    try:
        sender = next(iter(parse_addresses(lookup.get("from"))), None)
    except Exception:  # noqa: BLE001
        sender = None
    return ParsedMail(
        message_id=normalise_message_id(lookup.get("message-id")),
        in_reply_to=(),
        references=(),
        subject=lookup.get("subject", ""),
        from_=sender,
        to=(),
        cc=(),
        reply_to=(),
        date=None,
        headers=headers,
        text=text,
        html=None,
        attachments=(),
        content_types=(),
        defects=tuple(defects),
        fingerprint=digest,
    )


def parse_message(raw: bytes, *, allow_remote_images: bool = False) -> ParsedMail:
    """Parse one message. Never raises: broken input gives a best-effort ParsedMail whose
    `defects` say what was wrong. Remote images in the HTML are blocked (a placeholder source)
    unless `allow_remote_images`."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raw = str(raw).encode("utf-8", "replace")
    raw = bytes(raw)
    try:
        return _storable(_build(raw, allow_remote_images))
    except Exception as error:  # noqa: BLE001 - the contract is: never raise
        return _storable(_minimal(raw, error))


def storable_text(text: str) -> str:
    """`text` without lone surrogates (replaced by U+FFFD) and without NUL characters (dropped).

    Both are legal in a Python str but not in a database column: UTF-8 cannot encode a lone
    surrogate, and PostgreSQL text cannot hold NUL ("A string literal cannot contain NUL"), so one
    NUL in a body, a From name or a Message-ID used to set the whole message aside for good. A
    UTF-16 part labelled us-ascii decodes to text with a NUL after every letter: dropping them
    leaves the words readable."""
    return without_surrogates(text).replace("\x00", "")


def _storable(mail: ParsedMail) -> ParsedMail:
    """The result with every str made storable (`storable_text`). The decoders above already
    avoid lone surrogates; this is the guarantee that neither they nor a NUL slips through to
    the database. Values without either are kept as they are."""
    clean = storable_text

    def address(value: Address) -> Address:
        return Address(name=clean(value.name), email=clean(value.email))

    def attachment(value: ParsedAttachment) -> ParsedAttachment:
        return dataclasses.replace(
            value,
            filename=clean(value.filename),
            content_type=clean(value.content_type),
            content_id=clean(value.content_id) if value.content_id is not None else None,
        )

    return dataclasses.replace(
        mail,
        message_id=clean(mail.message_id) if mail.message_id is not None else None,
        in_reply_to=tuple(clean(value) for value in mail.in_reply_to),
        references=tuple(clean(value) for value in mail.references),
        subject=clean(mail.subject),
        from_=address(mail.from_) if mail.from_ is not None else None,
        to=tuple(address(value) for value in mail.to),
        cc=tuple(address(value) for value in mail.cc),
        reply_to=tuple(address(value) for value in mail.reply_to),
        headers=tuple((clean(name), clean(value)) for name, value in mail.headers),
        text=clean(mail.text),
        html=clean(mail.html) if mail.html is not None else None,
        attachments=tuple(attachment(value) for value in mail.attachments),
        content_types=tuple(clean(value) for value in mail.content_types),
        defects=tuple(clean(value) for value in mail.defects),
        fingerprint=clean(mail.fingerprint),
    )
