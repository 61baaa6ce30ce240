"""The attachment policy table: what is sniffed, allowed, review-gated, blocked or too large."""

from __future__ import annotations

import io
import zipfile

import pytest

from mailhelpdesk.mail.attachment_policy import MAX_INLINE_BYTES, Decision, extension, judge, sniff

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 40
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 60
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 200
RAR = b"Rar!\x1a\x07\x00" + b"\x00" * 40


def _zip(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, "x")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("head", "declared", "expected"),
    [
        (PNG, "application/octet-stream", "image/png"),
        (PDF, "image/png", "application/pdf"),
        (JPEG, "", "image/jpeg"),
        (PE, "image/png", "application/x-msdownload"),
        (ELF, "", "application/x-executable"),
        (_zip("a.txt"), "application/octet-stream", "application/zip"),
        (
            _zip("[Content_Types].xml", "word/document.xml"),
            "application/zip",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (RAR, "", "application/x-rar-compressed"),
        (OLE, "application/msword", "application/x-ole-storage"),
        (b"<!DOCTYPE html><html><body>x</body></html>", "text/plain", "text/html"),
        (b"\xef\xbb\xbf  <html><script>alert(1)</script>", "text/plain", "text/html"),
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "image/png",
            "image/svg+xml",
        ),
        (b"#!/bin/sh\nrm -rf /\n", "text/plain", "text/x-shellscript"),
        (b"name,amount\nx,1\n", "text/csv", "text/csv"),
        (b"just words\n", "image/png", "text/plain"),
        (
            b"caf\xc3\xa9 au lait\n",
            "text/html",
            "text/plain",
        ),  # declared HTML that is not: plain text
        (b"\x00\x01\x02\x03binary", "text/plain", "application/octet-stream"),
        (b"", "text/plain", "text/plain"),
    ],
)
def test_sniff_from_the_bytes(head: bytes, declared: str, expected: str) -> None:
    """The type comes from the bytes; a declared type only names a text subtype."""
    assert sniff(head, declared=declared) == expected


@pytest.mark.parametrize(
    ("name", "declared", "head", "decision"),
    [
        ("shot.png", "image/png", PNG, Decision.allowed),
        ("report.pdf", "application/pdf", PDF, Decision.allowed),
        (
            "letter.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            _zip("[Content_Types].xml", "word/document.xml"),
            Decision.allowed,
        ),
        ("notes.txt", "text/plain", b"hello\n", Decision.allowed),
        ("setup.exe", "application/octet-stream", PE, Decision.review_required),
        ("helper.dll", "application/x-msdownload", PE, Decision.review_required),
        (
            "run.bat",
            "application/octet-stream",
            b"@echo off\r\ndel *\r\n",
            Decision.review_required,
        ),
        ("run.cmd", "text/plain", b"@echo off\r\n", Decision.review_required),
        ("app.js", "text/plain", b"alert(1)\n", Decision.review_required),
        ("macro.vbs", "text/plain", b"MsgBox 1\n", Decision.review_required),
        ("install.msi", "application/octet-stream", OLE, Decision.review_required),
        ("page.html", "text/html", b"<html></html>", Decision.review_required),
        (
            "page.txt",
            "text/plain",
            b"<html><script>x</script></html>",
            Decision.review_required,
        ),  # sniffed HTML
        (
            "data.bin2",
            "application/x-dosexec",
            b"\x00\x01",
            Decision.review_required,
        ),  # declared executable
        ("bundle.zip", "application/zip", _zip("a.txt"), Decision.review_required),
        (
            "bundle.dat",
            "application/octet-stream",
            _zip("a.txt"),
            Decision.review_required,
        ),  # sniffed archive
        ("deploy.sh", "text/plain", b"#!/bin/sh\n", Decision.review_required),
        ("prog", "application/octet-stream", ELF, Decision.review_required),
        ("saver.scr", "application/octet-stream", PE, Decision.blocked),
        ("old.pif", "application/octet-stream", b"\x00" * 50, Decision.blocked),
        ("hello.com", "application/octet-stream", b"\xb4\x09", Decision.blocked),
        ("panel.CPL", "application/octet-stream", PE, Decision.blocked),
        ("invoice.pdf", "application/pdf", PE, Decision.blocked),  # a program dressed as a PDF
        ("invoice.pdf.exe", "application/pdf", PE, Decision.review_required),
        ("noext", "application/octet-stream", PE, Decision.blocked),
    ],
)
def test_policy_table(name: str, declared: str, head: bytes, decision: Decision) -> None:
    """Each kind of file gets the decision of the table in the module doc."""
    verdict = judge(name=name, declared=declared, head=head, size=len(head))
    assert verdict.decision == decision, verdict
    if decision != Decision.allowed:
        assert verdict.reason


def test_review_ok_unlocks_review_but_not_blocked_or_too_large() -> None:
    """intent review_ok lets a gated file out; it changes nothing for blocked or oversized files."""
    assert (
        judge(name="setup.exe", declared="", head=PE, size=100, intent="review_ok").decision
        == Decision.allowed
    )
    assert (
        judge(name="setup.exe", declared="", head=PE, size=100, intent="download").decision
        == Decision.review_required
    )
    assert (
        judge(name="saver.scr", declared="", head=PE, size=100, intent="review_ok").decision
        == Decision.blocked
    )
    huge = judge(
        name="big.exe", declared="", head=PE, size=MAX_INLINE_BYTES + 1, intent="review_ok"
    )
    assert huge.decision == Decision.too_large


def test_size_limit_is_inclusive_and_blocked_wins() -> None:
    """Exactly 25 MiB is returned; one byte more is too large; a blocked file is blocked at any size."""
    assert (
        judge(name="a.png", declared="image/png", head=PNG, size=MAX_INLINE_BYTES).decision
        == Decision.allowed
    )
    assert (
        judge(name="a.png", declared="image/png", head=PNG, size=MAX_INLINE_BYTES + 1).decision
        == Decision.too_large
    )
    assert (
        judge(name="a.scr", declared="", head=PE, size=MAX_INLINE_BYTES + 1).decision
        == Decision.blocked
    )
    assert MAX_INLINE_BYTES == 25 * 1024 * 1024


def test_sniffed_type_is_reported_even_when_refused() -> None:
    """The verdict carries the sniffed type, not the declared one."""
    assert (
        judge(name="a.exe", declared="image/png", head=PE, size=1).mime_type
        == "application/x-msdownload"
    )


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("a.PNG", "png"),
        ("x.tar.gz", "gz"),
        ("noext", ""),
        ("dir/evil.exe", "exe"),
        ("C:\\tmp\\a.Bat", "bat"),
        ("trailing.exe. ", "exe"),
        (".bashrc", "bashrc"),
    ],
)
def test_extension(name: str, ext: str) -> None:
    """The last extension, lower case, with paths and Windows' trailing dots and spaces ignored."""
    assert extension(name) == ext
