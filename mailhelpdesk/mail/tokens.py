"""Signed reply addresses: `<local>+<token>@<domain>` where the token names a ticket (and an agent).

The token is lower-case only, because some MTAs fold the local part's case, and short, because
some clients mangle long addresses. The MAC is HMAC-SHA256 with the helpdesk secret, truncated
to 80 bits: forging one needs the secret, guessing one ~2^80 tries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"^t(?P<number>\d{1,12})(?:a(?P<agent>\d{1,12}))?(?P<forward>f)?-(?P<mac>[a-z2-7]{16})$"
)


@dataclass(frozen=True)
class ReplyToken:
    ticket_number: int
    agent_id: int | None = None
    # the address of a forward to a third party (POST …/forward): their reply is kept internal
    forward: bool = False


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def make_token(secret: bytes, token: ReplyToken) -> str:
    payload = (
        f"t{token.ticket_number}"
        + (f"a{token.agent_id}" if token.agent_id is not None else "")
        + ("f" if token.forward else "")
    )
    return f"{payload}-{_mac(secret, payload)}"


def reply_address(secret: bytes, base_address: str, token: ReplyToken) -> str:
    """The Reply-To for a notice about `token.ticket_number` (to `token.agent_id` when set)."""
    local, _, domain = base_address.partition("@")
    return f"{local}+{make_token(secret, token)}@{domain}"


def verify_token(secret: bytes, text: str) -> ReplyToken | None:
    """The token's ticket and agent when the MAC is right, else None (compared in constant time)."""
    match = _TOKEN.match(text.strip().lower())
    if not match:
        return None
    payload = text.strip().lower().rsplit("-", 1)[0]
    if not hmac.compare_digest(_mac(secret, payload), match["mac"]):
        return None
    agent = match["agent"]
    return ReplyToken(
        int(match["number"]), int(agent) if agent else None, forward=bool(match["forward"])
    )


def split_plus(address: str) -> tuple[str, str | None]:
    """`local+tag@domain` -> (`local@domain`, `tag`); addresses without a tag give (address, None)."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower(), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)
