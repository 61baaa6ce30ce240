"""Header values: unfolding, RFC 2047 words, raw 8-bit bytes, addresses, message ids, dates and
MIME parameters, decoded from the raw header text.

Why not the stdlib's header objects: `email.policy.default` gives up (or raises) on exactly the
broken input a helpdesk has to keep (encoded words glued to text or split inside a character,
8-bit bytes in any charset, unquoted commas), so the values are read here leniently and every
function returns a best-effort value instead of raising. Raw 8-bit bytes (SMTPUTF8 mail or
plain misbehaviour) reach us from the parser as surrogate escapes; `raw_to_str` turns them into
real text (UTF-8 first, then the message's header charset or detection, else replacement
characters), so no value handed on still holds a surrogate.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email import utils as email_utils
from typing import Any

from mailhelpdesk.mail.charsets import decode_bytes
from mailhelpdesk.mail.limits import (
    MAX_HEADER_VALUE,
    MAX_MIME_HEADER,
    MAX_MIME_PARAMS,
    MAX_MIME_PARAMS_READ,
    MAX_REFERENCES,
)
from mailhelpdesk.mail.parsed import Address

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def raw_to_str(value: str, hint: str | None) -> str:
    """A raw header value from the parser (8-bit bytes kept as surrogates) to real text: the
    bytes are read as UTF-8 first (SMTPUTF8 mail), then as `hint` (the message's header
    charset) or the detected charset, else with replacement characters; never a surrogate."""
    if value.isascii():
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8", "replace")
    text, _ = decode_bytes(raw, "utf-8", hint=hint)
    return text


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    """The bytes of one encoded word's payload (Q or B); sloppy base64 padding is forgiven."""
    if encoding in "qQ":
        raw = payload.replace("_", " ").encode("ascii", "replace")
        return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned)
    except (binascii.Error, ValueError):
        return base64.b64decode(cleaned[: len(cleaned) // 4 * 4] or b"")


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words leniently: bad charsets, words glued to text, words split
    inside a multi-byte character (adjacent words of one charset are joined as bytes first)."""
    if "=?" not in text:
        return text
    pieces: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            charset = pending_charset.split("*", 1)[0] if pending_charset else None
            pieces.append(decode_bytes(b"".join(pending), charset)[0])
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        if between and not (pending and between.isspace()):
            flush()
            pieces.append(between)
        charset = match.group(1).lower()
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        try:
            pending.append(_decode_word_payload(match.group(2), match.group(3)))
        except Exception:  # noqa: BLE001 - keep the word as it was written
            flush()
            pieces.append(match.group(0))
        position = match.end()
    flush()
    pieces.append(text[position:])
    return "".join(pieces)


def unfold(value: str) -> str:
    """RFC 5322 unfolding: drop the line breaks of folded lines, keep the whitespace."""
    return _FOLD.sub("", value).replace("\r", "").replace("\n", "")


def decode_header_value(value: str, *, hint: str | None = None) -> str:
    """A raw header value to display text: unfolded, 8-bit bytes and encoded words decoded."""
    text = raw_to_str(unfold(value), hint)
    text = decode_encoded_words(text)
    return "".join(ch for ch in text if ch == "\t" or unicodedata.category(ch) != "Cc")


_PLACEHOLDER = "mhdew{}x"
_QUOTED_NAME = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_addresses(raw: str | None, *, hint: str | None = None) -> tuple[Address, ...]:
    """Mailboxes of an address header; groups are flattened, garbage gives what it can.

    `email.utils.getaddresses` reads the raw string: it is the lenient parser (it keeps
    `addr (Name)` comments as names and unquoted spaces in local parts, where the structured
    parser of policy.default drops or rewrites them). Encoded words are swapped for placeholder
    atoms first and decoded after splitting, so a comma inside one never splits an address;
    when the lenient parser finds nothing, policy.default's structured parser is asked."""
    if not raw:
        return ()
    text = raw_to_str(unfold(raw), hint)[:MAX_HEADER_VALUE]
    words: list[str] = []

    def protect(match: re.Match[str]) -> str:
        words.append(match.group(0))
        return _PLACEHOLDER.format(len(words) - 1)

    protected = _ENCODED_WORD.sub(protect, text) if "=?" in text else text

    def restore(value: str) -> str:
        if not words:
            return value
        return re.sub(
            r"mhdew(\d+)x",
            lambda m: words[int(m.group(1))] if int(m.group(1)) < len(words) else m.group(0),
            value,
        )

    try:
        found = [
            (restore(n), restore(a)) for n, a in email_utils.getaddresses([protected]) if n or a
        ]
    except Exception:  # noqa: BLE001
        found = []
    quoted_names = {m.group(1) for m in _QUOTED_NAME.finditer(text)}
    if not any(a for _, a in found):
        found = _structured_addresses(text) or found
    local_part = found[0][1].rsplit("@", 1)[0] if len(found) == 1 else ""
    if (
        local_part
        and not found[0][0]
        and not local_part.startswith('"')
        and re.search(r"\s", local_part)
    ):
        # `From: Test test@example.com`: no valid address; keep what was written as the name
        found = [(decode_encoded_words(text.strip()), found[0][1])]
    result = []
    for raw_name, raw_spec in found:
        name = decode_encoded_words(raw_name).strip().strip('"').strip()
        name = name if name in quoted_names else _without_comment(name)
        spec = decode_encoded_words(raw_spec).strip().strip("<>").strip().lower()
        if len(spec) > 1 and spec[0] == spec[-1] == '"':
            spec = spec[1:-1].strip()
        if spec in ("<>", ""):
            spec = ""
        if name or spec:
            result.append(Address(name=name, email=spec))
    return tuple(result)


def _structured_addresses(text: str) -> list[tuple[str, str]]:
    """policy.default's RFC 5322 address parser, for what the lenient one could not split."""
    try:
        header: Any = email_policy.default.header_factory("to", text)
        return [(str(a.display_name or ""), str(a.addr_spec or "")) for a in header.addresses]
    except Exception:  # noqa: BLE001 - nothing found; the caller keeps what it had
        return []


def _without_comment(name: str) -> str:
    """`MAILER-DAEMON (Mail Delivery System)` is the name `MAILER-DAEMON` with a comment; a name
    that is only a comment (`addr (Name)`) was taken from it by the parser and stays."""
    stripped = _strip_comments(name).strip() if "(" in name else name
    return re.sub(r"\s+", " ", stripped) if stripped else name


def choose_sender(candidates: list[tuple[Address, ...]]) -> Address | None:
    """The author: the first mailbox with a domain, else the first with any address, else the
    first named one. `candidates` are the From headers in order, then Sender and Reply-To as
    fallbacks for mail whose From is missing or empty (`From: "Name" <>`)."""
    flat = [address for group in candidates for address in group]
    with_domain = [address for address in flat if "@" in address.email]
    with_address = [address for address in flat if address.email]
    return next(iter(with_domain or with_address or flat), None)


_COMMENT = re.compile(r"\([^()]*\)")
_ANGLE_ID = re.compile(r"<([^<>]*)>")


def _strip_comments(value: str) -> str:
    """`value` without RFC 5322 `(comments)`, which may hide brackets and spaces in ids."""
    for _ in range(5):  # nested comments, bounded
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    return value


def normalise_message_id(raw: str | None) -> str | None:
    """`<local@domain>` from a Message-ID value: comments and whitespace dropped, brackets
    added when missing; None when nothing usable is left."""
    if not raw:
        return None
    value = _strip_comments(unfold(raw)).strip()
    match = _ANGLE_ID.search(value)
    inner = match.group(1) if match else value.split()[0] if value.split() else ""
    inner = re.sub(r"\s+", "", inner)
    return f"<{inner}>" if inner else None


def parse_message_ids(raw: str | None) -> tuple[str, ...]:
    """Every `<id>` in In-Reply-To/References, in order, without duplicates; bare
    `local@domain` tokens count too (some clients drop the brackets)."""
    if not raw:
        return ()
    value = _strip_comments(unfold(raw))
    ids = ["<" + re.sub(r"\s+", "", m) + ">" for m in _ANGLE_ID.findall(value) if m.strip()]
    if not ids:
        ids = [f"<{token.strip(',;')}>" for token in value.split() if "@" in token]
    seen: dict[str, None] = {}
    for message_id in ids:
        seen.setdefault(message_id, None)
    return tuple(seen)[-MAX_REFERENCES:]


def parse_date(raw: str | None) -> datetime | None:
    """An aware datetime (UTC when the zone is unknown), or None for garbage."""
    if not raw:
        return None
    try:
        value = email_utils.parsedate_to_datetime(unfold(raw).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


_PARAM_SPECIAL = re.compile(r'[;"\\]')


def _split_params(value: str, limit: int = MAX_MIME_PARAMS_READ) -> list[str]:
    """Split `type; a=1; b="x;y"` at semicolons outside quotes (a backslash inside quotes escapes
    the next character), into at most `limit` + 1 items: the type and `limit` parameters, the
    rest dropped. Only the special characters are visited: a 65 KB value char by char took a
    tenth of a second."""
    if '"' not in value:
        return value.split(";", limit + 1)[: limit + 1]
    items: list[str] = []
    start, quoted, skip = 0, False, -1
    for match in _PARAM_SPECIAL.finditer(value):
        if len(items) > limit:
            return items[: limit + 1]
        at = match.start()
        if at == skip:
            continue
        ch = value[at]
        if ch == "\\":
            if quoted:
                skip = at + 1
        elif ch == '"':
            quoted = not quoted
        elif not quoted:
            items.append(value[start:at])
            start = at + 1
    items.append(value[start:])
    return items[: limit + 1]


@functools.lru_cache(maxsize=16)
def bounded_mime_header(value: str) -> str | None:
    """What the stdlib's MIME parser may see of a Content-Type or Content-Disposition value, or
    None when the value is within MAX_MIME_HEADER characters and MAX_MIME_PARAMS parameters.

    Beyond them, only the main value and the `boundary` parameter (which the stdlib needs to
    split a multipart) are kept, each bounded: the stdlib's parser is far slower than linear
    on thousands of parameters or words (a 65 KB header took 4 s, parsed several times). Our
    own reading of the parameters (`parse_mime_header`) is linear and reads the first
    MAX_MIME_PARAMS_READ. Cached: the stdlib asks for a part's Content-Type several times."""
    if len(value) <= MAX_MIME_HEADER and value.count(";") <= MAX_MIME_PARAMS:
        return None
    items = _split_params(unfold(value[:MAX_HEADER_VALUE]), limit=MAX_HEADER_VALUE)
    kept = [" ".join(items[0].split()[:1])[:200]]
    for item in items[1:]:
        name, sep, _param = item.partition("=")
        if sep and name.strip().lower().rstrip("*") == "boundary":
            if len(item.strip()) <= 998:  # RFC 2046 allows 70 characters; a line holds 998
                kept.append(item.strip())
            break
    return "; ".join(kept)


@dataclass(frozen=True)
class MimeHeader:
    """A Content-Type or Content-Disposition value: the lower-case main value and its params
    (names lower-case, RFC 2231 continuations joined and decoded, encoded words decoded)."""

    value: str
    params: dict[str, str]


def parse_mime_header(raw: str | None, *, hint: str | None = None) -> MimeHeader:
    """Parse a MIME header with parameters; linear time and never raises."""
    if not raw:
        return MimeHeader("", {})
    text = unfold(raw)[:MAX_HEADER_VALUE]
    items = _split_params(text)
    value = _strip_comments(items[0]).strip().lower()
    pairs: list[tuple[str, str]] = []
    for item in items[1:]:
        name, sep, param = item.partition("=")
        if not sep:
            continue
        param = param.strip()
        if len(param) >= 2 and param[0] == '"' and param.endswith('"'):
            param = re.sub(r"\\(.)", r"\1", param[1:-1])
        elif param.startswith('"'):
            param = param[1:]
        pairs.append((name.strip().lower(), param))
    params: dict[str, str] = {}
    decoded: list[tuple[str, Any]]
    try:
        decoded = email_utils.decode_params([("", ""), *pairs])[1:]
    except Exception:  # noqa: BLE001 - keep the undecoded pairs
        decoded = list(pairs)
    for raw_name, decoded_value in decoded:
        if isinstance(decoded_value, tuple):
            charset, _lang, quoted_value = decoded_value
            raw_value = email_utils.unquote(quoted_value)
            try:
                data = raw_value.encode("latin-1", "surrogateescape")
            except UnicodeEncodeError:
                data = raw_value.encode("utf-8", "surrogateescape")
            text_value: str = decode_bytes(data, charset or "utf-8")[0]
        else:
            text_value = email_utils.unquote(str(decoded_value))
        name = raw_name.rstrip("*")
        if name not in params:
            params[name] = decode_encoded_words(raw_to_str(text_value, hint)).strip()
    return MimeHeader(value, params)
