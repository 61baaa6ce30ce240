"""Charset labels, detection and decoding: bytes of unknown or lying charset to `str`.

Why a module of its own: every text in a message (bodies, raw 8-bit headers, RFC 2047 words,
RFC 2231 parameters) ends in `decode_bytes`, and real mail lies about charsets all the time
(iso-8859-1 that is UTF-8, ks_c_5601-1987 that is cp949, ISO-2022-JP that is Shift_JIS), so the
repairs live in one place. `decode_bytes` never raises and never returns lone surrogates: some
codecs (UTF-7, unicode-escape) can produce them, and a database driver refuses such text.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

import charset_normalizer

from mailhelpdesk.mail.limits import DETECT_SAMPLE

# Labels that name no charset at all: decode by detection.
_NO_CHARSET = frozenset(
    {
        "",
        "unknown-8bit",
        "x-unknown",
        "unknown",
        "x-user-defined",
        "default",
        "charset",
        "none",
        "8bit",
        "7bit",
        "binary",
        "auto",
        "_autodetect_all",
        "_autodetect",
        "us-ascii8bit",
    }
)

# Labels whose real-world meaning is a superset codec, or that Python does not know.
_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "euckr": "cp949",
    "korean": "cp949",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "iso-gb2312": "gb18030",
    "x-gbk": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "x-ms-cp932": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-8-e": "iso-8859-8",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "x-mac-ce": "mac_latin2",
    "x-mac-greek": "mac_greek",
    "x-mac-turkish": "mac_turkish",
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode-2-0-utf-7": "utf-7",
    "utf7": "utf-7",
    "uft-8": "utf-8",
    "utf8": "utf-8",
    "ut-8": "utf-8",
    "x-utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "ansi_x3.4-1968": "ascii",
    "us_ascii": "ascii",
    "ascii": "ascii",
    "us-ascii": "ascii",
    "koi8r": "koi8_r",
    "koi8u": "koi8_u",
    "x-cp1251": "cp1251",
    "x-cp1250": "cp1250",
}
_ISO8859 = re.compile(r"iso[-_ ]?8859[-_ ]?(\d{1,2})")
_WINDOWS = re.compile(r"(?:windows|win|cp|x-cp|ms)[-_ ]?(125\d|874|93[26]|949|950)")
# Labels we decode as the Western superset when the bytes are not valid UTF-8.
WESTERN = frozenset({"ascii", "cp1252", "iso8859-15", "latin-1"})


def resolve_charset(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label names nothing usable.

    Fixes what mailers really send: quotes, stray whitespace and CR/LF inside the parameter,
    `x-` prefixes, misspellings like `uft-8`, and labels that mean a superset (ks_c_5601-1987 is
    cp949, gb2312 is gb18030, iso-8859-1 is windows-1252 in practice)."""
    if not label:
        return None
    name = re.sub(r"[\s\"'\\]+", "", str(label)).lower().strip(";,")
    name = name.removeprefix("3d")  # quoted-printable damage: charset=3Dutf-8
    if name in _NO_CHARSET:
        return None
    candidates = [_ALIASES.get(name, name)]
    if match := _ISO8859.search(name):
        candidates.append(f"iso8859-{match.group(1)}")
    if match := _WINDOWS.search(name):
        candidates.append(f"cp{match.group(1)}")
    if name.startswith("x-"):
        candidates.append(_ALIASES.get(name[2:], name[2:]))
    for candidate in candidates:
        try:
            codec = codecs.lookup(candidate).name
        except (LookupError, ValueError):
            continue
        return _ALIASES.get(codec, codec) if codec in ("latin-1", "iso8859-1") else codec
    return None


# What detection may answer: the charsets mail is really written in. Left open, the detector
# names exotic code pages (cp1006, mac_iceland) for short Western text.
_DETECTABLE = [
    "utf_8",
    "cp1252",
    "cp1250",
    "cp1251",
    "koi8_r",
    "koi8_u",
    "iso8859_2",
    "iso8859_15",
    "gb18030",
    "big5",
    "cp932",
    "euc_jp",
    "cp949",
    "iso8859_7",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp874",
    "cp1258",
]


def _detection_sample(data: bytes) -> bytes:
    """The lines that carry 8-bit bytes, up to DETECT_SAMPLE: pages of ASCII markup or base64
    around a short 8-bit phrase drown the signal the detector needs."""
    if len(data) <= 4096:
        return data
    lines = [line for line in data.split(b"\n") if not line.isascii()]
    sample = b"\n".join(lines)[:DETECT_SAMPLE]
    return sample if len(sample) >= 8 else data[:DETECT_SAMPLE]


_HIGH_RUN = re.compile(rb"[\x80-\xff]+")


def _reads_as_western(sample: bytes) -> bool:
    """A few 8-bit bytes that are all letters in Windows-1252 (`Gr\xfc\xdfe`): a detector
    cannot tell that from two CJK characters, but Western text is what it usually is."""
    runs = _HIGH_RUN.findall(sample)
    if not runs or sum(len(run) for run in runs) > 32:
        return False
    text = b"".join(runs).decode("cp1252", "replace")
    return all(unicodedata.category(ch).startswith("L") for ch in text)


def detect(data: bytes) -> str | None:
    """charset-normalizer's best guess over a bounded sample, or None."""
    sample = _detection_sample(data)
    if _reads_as_western(sample):
        return "cp1252"
    try:
        best = charset_normalizer.from_bytes(sample, cp_isolation=_DETECTABLE).best()
    except Exception:  # noqa: BLE001 - detection is only a hint
        return None
    return resolve_charset(best.encoding) if best is not None else None


def _has_non_ascii(data: bytes) -> bool:
    """Whether any byte is 8-bit; a generator on short data, the C check on long data."""
    return any(byte > 0x7F for byte in data) if len(data) < 256 else not data.isascii()


# Codecs whose ASCII-only bytes still need decoding (escape sequences, UTF-7 shifts, 16-bit).
_NOT_ASCII_COMPATIBLE = frozenset({"utf-7", "utf-16", "utf-32", "utf-16-le", "utf-16-be"})
_JIS_ESCAPE = re.compile(rb"\x1b(\$[@B]|\$\(D|\([BJI])")


def _iso2022jp_via_cp932(data: bytes) -> str | None:
    """ISO-2022-JP as Microsoft writes it (CP50220: NEC circled digits, IBM kanji), which
    Python's strict codecs refuse: each JIS X 0208 pair is mapped to its Shift_JIS pair and
    decoded as cp932, which has those extensions."""
    out = bytearray()
    mode = b"(B"
    position = 0
    for match in _JIS_ESCAPE.finditer(data):
        out += _jis_segment(data[position : match.start()], mode)
        mode = match.group(1)
        position = match.end()
    out += _jis_segment(data[position:], mode)
    try:
        return bytes(out).decode("cp932", "replace")
    except LookupError:
        return None


def _jis_segment(segment: bytes, mode: bytes) -> bytes:
    """One run of ISO-2022-JP bytes in escape mode `mode`, rewritten as Shift_JIS bytes."""
    if mode in (b"(B", b"(J"):
        return segment
    if mode == b"(I":
        return bytes(byte | 0x80 for byte in segment)
    out = bytearray()
    for index in range(0, len(segment) - 1, 2):
        high, low = segment[index], segment[index + 1]
        if not (0x21 <= high <= 0x7E and 0x21 <= low <= 0x7E):
            out += bytes((high, low))
            continue
        first = ((high - 0x21) >> 1) + 0x81
        first += 0x40 if first > 0x9F else 0
        second = low + (0x1F if high & 1 else 0x7E)
        second += 1 if high & 1 and second >= 0x7F else 0
        out += bytes((first, second))
    return bytes(out)


def without_surrogates(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a valid pair becomes its character).

    Why: `str` may hold lone surrogates (UTF-7 and unicode-escape decode them, surrogateescape
    keeps undecodable bytes as them) but UTF-8 cannot encode them, so the database driver fails
    with "surrogates not allowed". Cheap on the usual ASCII or clean text."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def decode_bytes(data: bytes, label: str | None, *, hint: str | None = None) -> tuple[str, bool]:
    """Decode text bytes with their declared charset, else by detection; (text, used_fallback).

    Order: the declared charset (strict); UTF-8 when the label is missing or a Western
    single-byte one and the bytes are valid UTF-8 (a common mislabel); ISO-2022-JP that really
    is Shift_JIS; the `hint` (the message's own charset, for raw 8-bit headers); detection;
    then the declared charset or UTF-8 with replacement characters. Never raises, and the text
    holds no lone surrogates (see `without_surrogates`)."""
    text, fallback = _decode(data, label, hint)
    return without_surrogates(text), fallback


def _decode(data: bytes, label: str | None, hint: str | None) -> tuple[str, bool]:
    """`decode_bytes` before the surrogate clean-up: the charset decisions themselves."""
    codec = resolve_charset(label)
    ascii_safe = codec is None or not (
        codec in _NOT_ASCII_COMPATIBLE or codec.startswith("iso2022")
    )
    if ascii_safe and not _has_non_ascii(data):
        return data.decode("ascii", "replace"), False
    if codec is None or codec in WESTERN:
        try:
            return data.decode("utf-8"), codec is None
        except UnicodeDecodeError:
            pass
    if codec is not None:
        if codec.startswith("iso2022") and _has_non_ascii(data):
            codec = "cp932"  # 8-bit bytes cannot be ISO-2022-JP; Shift_JIS is the usual truth
        try:
            return data.decode(codec), False
        except (UnicodeDecodeError, LookupError):
            pass
        if codec.startswith("iso2022_jp"):
            converted = _iso2022jp_via_cp932(data)
            if converted is not None:
                return converted, False
    for candidate in (resolve_charset(hint), detect(data)):
        if candidate:
            try:
                return data.decode(candidate), True
            except (UnicodeDecodeError, LookupError):
                continue
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec, "replace"), True
        except LookupError:
            pass
    text = data.decode("utf-8", "replace")
    if text.count("\ufffd") * 20 > len(text):  # mostly not UTF-8: Windows-1252 reads everything
        text = data.decode("cp1252", "replace")
    return text, True
