"""Hostile mail for the fuzzers: the shared corpus read at run time (never copied into the
repository) and the damage done to it, as plain functions of a seed so that the hypothesis
tests (tests/hostile/test_fuzz.py) and the coverage-guided run (benchmarks/fuzz_atheris.py)
mutate the same way."""

from __future__ import annotations

import random
import re
from functools import cache
from pathlib import Path

SKIP_NAMES = {"SOURCES.md", "expected.json", "README.md"}
MAX_CORPUS_FILE = 256 * 1024  # bigger files make slow examples without finding more
CHARSETS = (
    "us-ascii",
    "utf-8",
    "utf-16",
    "utf-7",
    "iso-8859-1",
    "windows-1252",
    "gb2312",
    "shift_jis",
    "koi8-r",
    "x-unknown",
    "",
)


@cache
def corpus_messages(root: Path) -> tuple[bytes, ...]:
    """Every corpus file small enough, in a stable order."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in SKIP_NAMES
        and p.suffix not in (".yml", ".json", ".md")
        and p.stat().st_size <= MAX_CORPUS_FILE
    )
    return tuple(p.read_bytes() for p in files)


def truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(len(raw) + 1)]


def flip_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 16)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def damage_boundaries(raw: bytes, rng: random.Random) -> bytes:
    """Cut, drop or duplicate MIME boundary lines, or change the declared boundary."""
    lines = raw.split(b"\n")
    marks = [i for i, line in enumerate(lines) if line.startswith(b"--")]
    if marks:
        i = rng.choice(marks)
        action = rng.randrange(4)
        if action == 0:
            del lines[i]
        elif action == 1:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif action == 2:
            lines[i:i] = [lines[i]] * rng.randint(1, 50)
        else:
            lines[i] = lines[i].rstrip(b"\r-") + b"--"
    out = b"\n".join(lines)
    return re.sub(
        rb'boundary="?([^";\r\n]*)"?',
        lambda m: b'boundary="' + m.group(1)[: rng.randrange(len(m.group(1)) + 1)] + b'"',
        out,
        count=1,
    )


def duplicate_headers(raw: bytes, rng: random.Random) -> bytes:
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    for _ in range(rng.randint(1, 5)):
        line = rng.choice(lines)
        lines.insert(rng.randrange(len(lines) + 1), line * 1 if rng.random() < 0.8 else line * 50)
    return b"\n".join(lines) + sep + body


def swap_charsets(raw: bytes, rng: random.Random) -> bytes:
    def swap(match: re.Match[bytes]) -> bytes:
        return b"charset=" + rng.choice(CHARSETS).encode()

    out = re.sub(rb"charset=\"?[A-Za-z0-9_:.-]*\"?", swap, raw)
    if out == raw:  # none declared: add one to the first Content-Type, or a header
        out = b"Content-Type: text/plain; charset=" + rng.choice(CHARSETS).encode() + b"\n" + raw
    return out


MUTATIONS = (truncate, flip_bytes, damage_boundaries, duplicate_headers, swap_charsets)


def mutate(raw: bytes, seed: int, rounds: int = 2) -> bytes:
    rng = random.Random(seed)
    for _ in range(rounds):
        raw = rng.choice(MUTATIONS)(raw, rng)
    return raw


def mime_tree(rng: random.Random, depth: int = 0) -> bytes:
    """A random MIME entity: leaves of odd types and encodings, multiparts of random shape."""
    if depth >= 6 or rng.random() < 0.4:
        ctype = rng.choice(
            (
                b"text/plain",
                b"text/html",
                b"application/octet-stream",
                b"message/rfc822",
                b"image/png",
                b"message/delivery-status",
                b"text/calendar",
            )
        )
        cte = rng.choice((b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uuencode", b""))
        charset = rng.choice(CHARSETS).encode()
        body = rng.choice(
            (
                b"hello\n",
                bytes(rng.randrange(256) for _ in range(rng.randrange(200))),
                b"=E9t=E9=\n=\n",
                b"<p>x<img src=http://t.test/p.gif></p>",
                b"aGVsbG8=\n",
                "Grüße\n".encode("utf-16"),
            )
        )
        return (
            b"Content-Type: " + ctype + b"; charset=" + charset + b"\n"
            b"Content-Transfer-Encoding: " + cte + b"\n\n" + body
        )
    boundary = b"b%d_%d" % (depth, rng.randrange(1000))
    subtype = rng.choice((b"mixed", b"alternative", b"related", b"report", b"signed"))
    parts = [mime_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    inner = b"".join(b"--" + boundary + b"\n" + part + b"\n" for part in parts)
    closing = b"--" + boundary + b"--\n" if rng.random() < 0.8 else b""
    return (
        b"Content-Type: multipart/"
        + subtype
        + b'; boundary="'
        + boundary
        + b'"\n\n'
        + inner
        + closing
    )


def generated_message(seed: int) -> bytes:
    rng = random.Random(seed)
    head = (
        b"From: Fuzz <fuzz%d@customer.test>\nTo: support@helpdesk.test\n"
        b"Subject: =?utf-8?b?ZnV6eg==?= %d\nMessage-ID: <%d.fuzz@customer.test>\n"
        b"MIME-Version: 1.0\n" % (seed % 97, seed, seed)
    )
    return head + mime_tree(rng)
