"""Pictures uploaded ahead of the message that shows them (the HappyFox adapter's inline
attachment, resources.md §6): kept as a blob by their SHA-256 until a message names them, then
put on that message as inline attachments, so the mail carries them as `cid:` parts like any
inline picture that came in by mail."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from sqlmodel import Session

from mailhelpdesk.errors import InvalidInputError
from mailhelpdesk.mail import attachment_policy as policy
from mailhelpdesk.services.tickets import NewAttachment
from mailhelpdesk.store import tickets as store

MAX_IMAGES_PER_MESSAGE = 50


def keep(session: Session, *, name: str, declared: str, data: bytes) -> tuple[str, str]:
    """Store an uploaded picture: its SHA-256 and the image type its bytes have. Anything but
    an image the attachment policy lets through is an InvalidInputError saying why."""
    verdict = policy.judge(
        name=name, declared=declared, head=data[: policy.HEAD_BYTES], size=len(data)
    )
    if verdict.decision != policy.Decision.allowed or not verdict.mime_type.startswith("image/"):
        raise InvalidInputError(f"{name[:100]} is not an image that can be shown inline")
    digest = hashlib.sha256(data).hexdigest()
    store.store_blob(session, sha256=digest, data=data)
    return digest, verdict.mime_type


def read(session: Session, digest: str) -> bytes:
    """A kept picture's bytes (empty when there is none)."""
    return store.blob_data(session, digest) if re.fullmatch(r"[0-9a-f]{64}", digest) else b""


def embed(
    session: Session, html: str, pattern: re.Pattern[str], name_of: Callable[[str], str]
) -> tuple[str, tuple[NewAttachment, ...]]:
    """`html` with every `src` that `pattern` matches (group 1: the SHA-256 of a kept picture)
    pointed at a `cid:` part, and those parts as inline attachments."""
    found: dict[str, NewAttachment] = {}

    def swap(match: re.Match[str]) -> str:
        digest = match.group(1)
        data = read(session, digest)
        if not data or len(found) >= MAX_IMAGES_PER_MESSAGE:
            return match.group(0)
        cid = f"{digest[:32]}@inline"
        if digest not in found:
            mime = policy.sniff(data[: policy.HEAD_BYTES], declared="application/octet-stream")
            found[digest] = NewAttachment(
                name_of(digest), mime, data, is_inline=True, content_id=cid
            )
        return f"cid:{cid}"

    return pattern.sub(swap, html), tuple(found.values())
