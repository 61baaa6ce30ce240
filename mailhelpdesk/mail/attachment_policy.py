"""Which attachments the API hands out, and what type their bytes really are (api-contract.md §5.4).

Pure: a name, the declared type and the first bytes in, a `Verdict` out.

    blocked           never returned: screen savers, PIF and DOS COM files, control-panel items,
                      and executables dressed up as something harmless ("invoice.pdf" whose bytes
                      are a Windows program)
    too_large         over MAX_INLINE_BYTES: not returned inline (base64 in JSON)
    review_required   executables, scripts, installers, archives and HTML: returned only when the
                      caller says `intent: "review_ok"`
    allowed           everything else

Checked in that order: a blocked file stays blocked whatever its size, and a file too large to
return is refused before anyone is asked to review it. The type is sniffed with `filetype`
(magic numbers of the binary formats); the text formats it does not know (HTML, shebang scripts,
plain text) are recognised here. Password-protected archives cannot be told apart cheaply, so
they are review-gated like every archive rather than blocked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import filetype

MAX_INLINE_BYTES = 25 * 1024 * 1024
REVIEW_OK = "review_ok"
HEAD_BYTES = 8192  # what `sniff` needs to see


class Decision(enum.StrEnum):
    allowed = "allowed"
    review_required = "review_required"
    blocked = "blocked"
    too_large = "too_large"


# name extensions, by what happens to them
BLOCKED_EXTENSIONS = frozenset({"scr", "pif", "com", "cpl"})
REVIEW_EXTENSIONS = frozenset(
    {
        # programs and libraries
        "exe",
        "dll",
        "sys",
        "msi",
        "msp",
        "msc",
        "jar",
        "apk",
        "app",
        "deb",
        "rpm",
        "elf",
        "bin",
        "so",
        "dylib",
        # scripts
        "bat",
        "cmd",
        "js",
        "jse",
        "vbs",
        "vbe",
        "wsf",
        "wsh",
        "ps1",
        "psm1",
        "sh",
        "bash",
        "py",
        "pl",
        "rb",
        "hta",
        "lnk",
        "reg",
        "inf",
        "scf",
        "url",
        "iqy",
        "xll",
        # office documents with macros
        "docm",
        "xlsm",
        "pptm",
        "dotm",
        "xltm",
        # archives and disk images
        "zip",
        "rar",
        "7z",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "tar",
        "cab",
        "iso",
        "img",
        "dmg",
        "vhd",
        "ace",
        "arj",
        "lz",
        "zst",
        # HTML (runs script when opened locally)
        "html",
        "htm",
        "xhtml",
        "shtml",
        "svg",
        "mht",
        "mhtml",
    }
)
EXECUTABLE_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-elf",
        "application/x-mach-binary",
        "application/x-sharedlib",
        "application/vnd.microsoft.portable-executable",
        "application/java-archive",
        "application/x-msi",
        "application/x-ms-installer",
        "application/x-sh",
        "application/x-shellscript",
        "text/x-shellscript",
        "application/javascript",
        "text/javascript",
        "application/x-javascript",
        "text/vbscript",
        "application/x-bat",
        "application/hta",
        "application/vnd.android.package-archive",
        "application/x-deb",
        "application/x-rpm",
    }
)
ARCHIVE_TYPES = frozenset(
    {
        "application/zip",
        "application/x-zip-compressed",
        "application/x-rar-compressed",
        "application/vnd.rar",
        "application/x-7z-compressed",
        "application/gzip",
        "application/x-gzip",
        "application/x-bzip2",
        "application/x-xz",
        "application/x-tar",
        "application/vnd.ms-cab-compressed",
        "application/x-iso9660-image",
        "application/x-lzip",
        "application/zstd",
        "application/x-apple-diskimage",
        "application/x-compress",
    }
)
HTML_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "message/rfc822+html",
        "multipart/related",
        "application/x-mimearchive",
    }
)
WINDOWS_PROGRAM_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-dosexec",
        "application/vnd.microsoft.portable-executable",
    }
)
REVIEW_TYPES = EXECUTABLE_TYPES | ARCHIVE_TYPES | HTML_TYPES

_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    mime_type: str  # sniffed from the bytes
    reason: str = ""


def extension(name: str) -> str:
    """The last extension of a file name, lower case, without the dot ('' when none)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(". ")
    return base.rsplit(".", 1)[1].lower() if "." in base else ""


def sniff(head: bytes, *, declared: str = "") -> str:
    """The MIME type of content from its first bytes; the declared type only decides between
    text types, never for binary content."""
    kind = filetype.guess(head) if head else None
    if kind is not None:
        return str(kind.mime)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "application/x-ole-storage"  # MSI, old Office, Outlook .msg: one container format
    if head.startswith(b"#!"):
        return "text/x-shellscript"
    text = _as_text(head)
    if text is None:
        return "application/octet-stream"
    lowered = text.lstrip("\ufeff \t\r\n")[:1024].lower().encode()
    if lowered.startswith((b"<?xml", b"<svg")) and b"<svg" in lowered:
        return "image/svg+xml"
    if lowered.startswith(_HTML_STARTS):
        return "text/html"
    declared = declared.split(";", maxsplit=1)[0].strip().lower()
    return declared if declared.startswith("text/") and declared not in HTML_TYPES else "text/plain"


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a character cut at the end of the head
            return head[: exc.start].decode("utf-8")
        try:
            text = head.decode("cp1252")
        except UnicodeDecodeError:
            return None
        return text if all(c.isprintable() or c in "\r\n\t\f" for c in text) else None


def judge(
    *, name: str, declared: str, head: bytes, size: int, intent: str | None = None
) -> Verdict:
    """What to do with one attachment (see the module doc for the order of the checks)."""
    mime = sniff(head, declared=declared)
    ext = extension(name)
    declared = declared.split(";", maxsplit=1)[0].strip().lower()
    if ext in BLOCKED_EXTENSIONS:
        return Verdict(Decision.blocked, mime, f".{ext} files are never handed out")
    if mime in WINDOWS_PROGRAM_TYPES and ext not in REVIEW_EXTENSIONS:
        return Verdict(
            Decision.blocked, mime, f"a Windows program named as .{ext or '(no extension)'}"
        )
    if size > MAX_INLINE_BYTES:
        return Verdict(
            Decision.too_large,
            mime,
            f"{size} bytes is over the {MAX_INLINE_BYTES}-byte inline limit",
        )
    gated = [
        why
        for why, hit in (
            (f"a .{ext} file", ext in REVIEW_EXTENSIONS),
            (f"content of type {mime}", mime in REVIEW_TYPES),
            (f"declared as {declared}", declared in REVIEW_TYPES),
        )
        if hit
    ]
    if gated and intent != REVIEW_OK:
        return Verdict(Decision.review_required, mime, " and ".join(gated))
    return Verdict(Decision.allowed, mime)
