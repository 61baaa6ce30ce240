"""Signed return paths (VERP): the envelope sender of every message we send names its outbox row.

Why: a bounce is only evidence about mail we sent when it provably answers it. Anyone can write
`MAIL FROM:<>` and an `X-Failed-Recipients:` or DSN naming any address; believing that let a
stranger stop all mail to a customer for days (issue 17, defect 1). Delivery reports go to the
envelope sender (RFC 5321 §4.5.5, RFC 3464), so we send each message from

    bounces+b<outbox id>-<mac>@<helpdesk domain>

where the MAC is HMAC-SHA256 with the helpdesk secret over the row id AND the row's Message-ID
(80 bits, base32, lower-case like the reply tokens of mail/tokens.py, whose format it cannot be
mistaken for: those start with `t`). Binding the Message-ID means a row id reused after a purge
does not verify for the new row. Only the party that received our message learns its return
path, so the most a recipient can forge is a bounce of their own mail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

BOUNCE_LOCAL_PART = "bounces"
_TAG = re.compile(r"^b(?P<id>\d{1,18})-(?P<mac>[a-z2-7]{16})$")


def _mac(secret: bytes, outbox_id: int, message_id: str) -> str:
    payload = f"verp:{outbox_id}:{message_id}".encode()
    digest = hmac.new(secret, payload, hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def bounce_base(helpdesk_address: str) -> str:
    """`bounces@<domain of the helpdesk address>`: where delivery reports come back."""
    domain = helpdesk_address.rpartition("@")[2].strip().lower() or "localhost"
    return f"{BOUNCE_LOCAL_PART}@{domain}"


def return_path(secret: bytes, helpdesk_address: str, outbox_id: int, message_id: str) -> str:
    """The signed envelope sender for outbox row `outbox_id` carrying `message_id`."""
    local, _, domain = bounce_base(helpdesk_address).partition("@")
    return f"{local}+b{outbox_id}-{_mac(secret, outbox_id, message_id)}@{domain}"


def outbox_id_of(tag: str) -> int | None:
    """The row id a return-path tag claims (not yet verified), or None for another tag."""
    match = _TAG.match(tag.strip().lower())
    return int(match["id"]) if match else None


def verify(secret: bytes, tag: str, message_id: str) -> bool:
    """Whether `tag` (the part after `bounces+`) was made by us for this row and Message-ID."""
    match = _TAG.match(tag.strip().lower())
    if match is None:
        return False
    return hmac.compare_digest(_mac(secret, int(match["id"]), message_id), match["mac"])
