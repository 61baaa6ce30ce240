"""Outbound messages: a rendered notice (or an agent's answer) to an `email.message.Message`.

Every message gets a unique Message-ID on the helpdesk's domain, `In-Reply-To`/`References`
that continue the customer's thread, `Thread-Topic`/`Thread-Index` for Outlook, a signed
`Reply-To`, the `[#NNNNNN]` tag in the subject and our loop markers (`X-Loop`,
`X-Mailhelpdesk-Loop`). Automatic notices carry `Auto-Submitted: auto-replied` (in answer to a
customer's mail) or `auto-generated`; an agent's own answer is human mail and carries neither
Auto-Submitted nor Precedence. Headers are RFC 2047 encoded (any script); `as_bytes` gives the
message with CRLF line ends, ready for the relay.

Anything that reaches a header is checked first: a CR, LF or other control character in a
subject, name or address is refused with `InvalidInputError`, so no caller can inject headers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import charset as _charset
from email.encoders import encode_base64
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import format_datetime, formataddr
from io import BytesIO
from typing import Any

from mailhelpdesk.errors import InvalidInputError

LOOP_HEADER = "X-Mailhelpdesk-Loop"
AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_MSGID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_TAG = re.compile(r"\[#\d{6,12}\]")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|vs|antw|tr)\s*:\s*)+", re.IGNORECASE)
_MAX_WORD = 900  # a longer word cannot be folded at a space: it is encoded instead
_MAX_MSGID = 900  # a Message-ID takes a header line of its own ("References: " + id)
_FILETIME_EPOCH = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
_PLAIN_HEADER = re.compile(r"[\t\x20-\x7e]*\Z")  # printable ASCII and tabs, nothing else


class _WirePolicy(Compat32):
    """compat32 with CRLF line ends, writing a short plain header value as it is.

    Why: compat32 folds every header value through `email.header.Header`, about 40 % of
    composing a notice (23 headers each, docs/performance.md). For a str of printable ASCII
    and tabs that fits on its line with its name, that folding gives the value back unchanged
    (checked on 250,000 random such values; tests/mail/test_compose.py checks 5,000), so it is
    written directly. Anything else (a Header, a control character, a long value) is folded by
    compat32 as before."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (
            isinstance(value, str)
            and len(name) + 2 + len(value) <= (self.max_line_length or 0)
            and _PLAIN_HEADER.match(value)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_WIRE = _WirePolicy(linesep="\r\n")
_QP_UTF8 = _charset.Charset("utf-8")
_QP_UTF8.body_encoding = _charset.QP


@dataclass(frozen=True)
class OutgoingAttachment:
    """A file sent with a message (an agent's attachments, passed on to the customer)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    """Everything needed to build one outbound message."""

    from_name: str
    from_address: str
    to: Sequence[tuple[str, str]]  # (display name, address)
    subject: str
    text: str
    html: str | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = field(default_factory=tuple)
    auto_submitted: str | None = AUTO_GENERATED  # None: human mail (an agent's own answer)
    ticket_number: int | None = None
    thread_topic: str | None = None  # the ticket's subject, for Outlook's conversation view
    message_id: str | None = None
    date: datetime | None = None
    attachments: Sequence[OutgoingAttachment] = field(default_factory=tuple)


def check_header_text(value: str, what: str) -> str:
    """`value` unchanged, or InvalidInputError if it could break out of its header. Any length:
    free text (a subject) is folded into lines of at most 78 characters (`_encode`)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}: expected text")
    if _CONTROL.search(value):
        raise InvalidInputError(
            f"{what}: control characters (CR, LF, ...) are not allowed: {value!r}"
        )
    return value


def check_header_value(value: str, what: str) -> str:
    """`value` unchanged, or InvalidInputError if it could break out of its header or cannot be
    folded (an address or a name: one line of at most 998 characters)."""
    check_header_text(value, what)
    if len(value) > 998:
        raise InvalidInputError(f"{what}: longer than 998 characters")
    return value


def make_address(name: str, address: str, what: str) -> Address:
    """A checked header address; the domain is IDNA-encoded, the local part must be ASCII."""
    check_header_value(name, f"{what} name")
    check_header_value(address, f"{what} address")
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or any(c in address for c in ' <>,;"()[]\\'):
        raise InvalidInputError(f"{what} address: not an email address: {address!r}")
    if not local.isascii():
        raise InvalidInputError(f"{what} address: non-ASCII local part needs SMTPUTF8: {address!r}")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise InvalidInputError(f"{what} address: invalid domain: {address!r}") from None
    try:  # a display name is cut at 200 characters: one encoded word must stay within a line
        return Address(display_name=name[:200], username=local, domain=ascii_domain)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what} address: {exc}") from None


def domain_of(address: str) -> str:
    domain = address.rpartition("@")[2].strip().lower()
    return domain or "localhost"


def make_message_id(domain: str) -> str:
    """A new, unique Message-ID on `domain`."""
    return f"<{time.time_ns():x}.{secrets.token_hex(8)}@{domain}>"


def tagged_subject(subject: str, ticket_number: int | None) -> str:
    """The subject with the ticket's `[#NNNNNN]` tag (added once)."""
    if ticket_number is None or f"[#{ticket_number}]" in subject:
        return subject
    return f"[#{ticket_number}] {subject}"


def thread_topic(subject: str) -> str:
    """What Outlook groups conversations by: the subject without Re:/Fwd: and ticket tags."""
    return " ".join(_TAG.sub("", _REPLY_PREFIX.sub("", subject)).split()) or subject


def thread_index(ticket_key: str, now: datetime) -> str:
    """An Outlook Thread-Index: a 22-byte header fixed per ticket plus one 5-byte child block.

    The header is derived from the ticket (so every notice of a ticket shares it and Outlook
    keeps them in one conversation); the child block encodes the time of this message.
    """
    digest = hashlib.sha256(f"mailhelpdesk-thread:{ticket_key}".encode()).digest()
    header = digest[:22]
    ticks = int((now.timestamp() + _FILETIME_EPOCH) * 10_000_000)
    child = struct.pack(">Q", (ticks >> 18) & 0xFFFFFFFFFF)[3:]  # 40 bits: coarse time
    return base64.b64encode(header + child).decode("ascii")


def compose(out: Outgoing) -> Message:
    """Build the message; raises InvalidInputError for anything that would break a header."""
    if out.auto_submitted not in (None, AUTO_REPLIED, AUTO_GENERATED):
        raise InvalidInputError(f"auto_submitted: {out.auto_submitted!r}")
    if not out.to:
        raise InvalidInputError("to: at least one recipient is required")
    sender = make_address(out.from_name, out.from_address, "from")
    recipients = [make_address(name, address, "to") for name, address in out.to]
    # a subject of any length (issue 17 defect 4: one over 998 characters stopped every notice
    # of its ticket): folded, never refused
    subject = check_header_text(tagged_subject(out.subject, out.ticket_number), "subject")
    domain = domain_of(out.from_address)
    message_id = out.message_id or make_message_id(domain)
    if not _MSGID.match(message_id) or _CONTROL.search(message_id):
        raise InvalidInputError(f"message_id: not a Message-ID: {message_id!r}")
    now = out.date or datetime.now(UTC)

    # the legacy email API: several times faster than EmailMessage for the same bytes, and every
    # value was checked above, so nothing unvetted reaches a header
    text = out.text if out.text.endswith("\n") else out.text + "\n"
    if out.html:
        msg: Message = MIMEMultipart("alternative")
        msg.attach(_text_part(text, "plain"))
        msg.attach(_text_part(out.html, "html"))
    else:
        msg = _text_part(text, "plain")
    if out.attachments:
        body, msg = msg, MIMEMultipart("mixed")
        msg.attach(body)
        for item in out.attachments:
            msg.attach(_attachment_part(item))
    headers: list[tuple[str, str | Header]] = [
        ("From", _format_address(sender)),
        ("To", ", ".join(_format_address(r) for r in recipients)),
        ("Subject", _encode(subject)),
        ("Date", format_datetime(now)),
        ("Message-ID", message_id),
    ]
    if out.reply_to:
        headers.append(
            ("Reply-To", _format_address(make_address(out.from_name, out.reply_to, "reply-to")))
        )
    # a Message-ID cannot be folded: one too long for a header line is left out of threading
    references = [r for r in out.references if r and len(r) <= _MAX_MSGID]
    if out.in_reply_to and len(out.in_reply_to) <= _MAX_MSGID:
        _check_msgid(out.in_reply_to, "in_reply_to")
        headers.append(("In-Reply-To", out.in_reply_to))
        if out.in_reply_to not in references:
            references.append(out.in_reply_to)
    if references:
        for ref in references:
            _check_msgid(ref, "references")
        if len(references) > 20:  # keep the root and the most recent
            references = [references[0], *references[-19:]]
        headers.append(("References", " ".join(references)))
    topic = check_header_text(thread_topic(out.thread_topic or out.subject), "thread topic")
    headers.append(("Thread-Topic", _encode(topic)))
    headers.append(("Thread-Index", thread_index(str(out.ticket_number or message_id), now)))
    if out.auto_submitted is not None:
        headers.append(("Auto-Submitted", out.auto_submitted))
        headers.append(("X-Auto-Response-Suppress", "All"))  # asks Exchange not to answer us
        headers.append(("Precedence", "bulk"))
    headers.append(("X-Loop", out.from_address.lower()))
    headers.append((LOOP_HEADER, domain))
    body_headers = list(msg.items())
    for name in list(msg.keys()):
        del msg[name]
    for name, value in headers + body_headers:
        # a compat32 message takes Header values (encoded words, folded when generated); the
        # stubs type MIMEBase's header values as str only
        msg[name] = value  # type: ignore[assignment]
    return msg


def as_bytes(msg: Message) -> bytes:
    """The message as SMTP wants it (CRLF line ends)."""
    out = BytesIO()
    _WireGenerator(out, mangle_from_=False, policy=_WIRE).flatten(msg)
    return out.getvalue()


class _WireGenerator(BytesGenerator):
    """The standard generator, choosing a multipart boundary with a substring test first.

    Why: to be sure a new random boundary does not occur as a line of the parts, the standard
    generator compiles a regular expression for it, once per message (the boundary is new
    every time, so never cached): a fifth of composing a notice (docs/performance.md). A line
    `--boundary` cannot occur where the text does not even contain `--boundary`, which one
    substring search tells; only when it does is the standard, line-exact check made."""

    @classmethod
    def _make_boundary(cls, text: Any = None) -> str:
        # the standard generator's own (private, so not in the type stubs); were it renamed,
        # this override would simply no longer be called
        boundary: str = super()._make_boundary()  # type: ignore[misc]
        if text is None:
            return boundary
        needle = f"--{boundary}"
        if (needle.encode("ascii") if isinstance(text, bytes) else needle) not in text:
            return boundary
        checked: str = super()._make_boundary(text)  # type: ignore[misc]
        return checked


def _text_part(body: str, subtype: str) -> MIMEText:
    """7bit when the text allows it (ASCII, short lines, no lone CR): no encoding cost and the
    most readable source; quoted-printable UTF-8 otherwise."""
    if body.isascii() and "\r" not in body and all(len(line) <= 998 for line in body.split("\n")):
        part = MIMEText("", subtype, "us-ascii")
        part.replace_header("Content-Transfer-Encoding", "7bit")
        part.set_payload(body)
        return part
    part = MIMEText("", subtype, "utf-8")
    del part["Content-Transfer-Encoding"]
    part.set_payload(body.encode("utf-8"), _QP_UTF8)
    return part


def _attachment_part(item: OutgoingAttachment) -> MIMEBase:
    """Base64, with the file name as RFC 2231 when it is not ASCII; control characters in a name
    that came in with mail are replaced, never passed into a header."""
    maintype, _, subtype = (
        item.content_type.lower() if "/" in item.content_type else "application/octet-stream"
    ).partition("/")
    if _CONTROL.search(maintype + subtype) or not maintype or not subtype:
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype)
    part.set_payload(item.data)
    encode_base64(part)
    name = _CONTROL.sub("_", item.filename).strip() or "attachment.bin"
    part.add_header(
        "Content-Disposition",
        "attachment",
        filename=name if name.isascii() else ("utf-8", "", name),
    )
    return part


def _encode(value: str) -> str | Header:
    """ASCII whose words fit on a line as is (the generator folds it at spaces); anything else,
    and any word too long to fold, as RFC 2047 encoded words, which the generator folds into
    lines of at most 78 characters, so no header line ever exceeds RFC 5322's 998."""
    if value.isascii() and all(len(word) <= _MAX_WORD for word in value.split()):
        return value
    return Header(value, "utf-8")


def _format_address(address: Address) -> str:
    return formataddr((address.display_name, address.addr_spec), charset="utf-8")


def is_message_id(value: str | None) -> bool:
    """True for a well-formed `<local@domain>` we can put in In-Reply-To/References."""
    return bool(value) and not _CONTROL.search(value or "") and bool(_MSGID.match(value or ""))


def _check_msgid(value: str, what: str) -> None:
    if _CONTROL.search(value) or not _MSGID.match(value):
        raise InvalidInputError(f"{what}: not a Message-ID: {value!r}")
