"""Signed reply addresses: `<local>+<token>@<domain>` where the token names a ticket (and an agent).

The token is lower-case only, because some MTAs fold the local part's case, and short, because
some clients mangle long addresses. The MAC is HMAC-SHA256 with the helpdesk secret, truncated
to 80 bits: forging one needs the secret, guessing one ~2^80 tries.

An agent's address also signs the agent's random `reply_key` (stored with the agent, never in
the address): the id in the address finds the agent, the key proves it is still the agent the
address was made for. SQLite hands a removed agent's id to the next agent added, so the id alone
made the old agent's addresses verify as the new one (issue 17).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"^t(?P<number>\d{1,12})(?:a(?P<agent>\d{1,12}))?(?P<forward>f)?-(?P<mac>[a-z2-7]{16})$"
)


@dataclass(frozen=True)
class ReplyToken:
    ticket_number: int
    agent_id: int | None = None
    # the address of a forward to a third party (POST …/forward): their reply is kept internal
    forward: bool = False
    # the agent's reply key: signed, never shown (filled in by `verify_token` from its lookup)
    agent_key: str = field(default="", compare=False, repr=False)


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def _signed(payload: str, agent_key: str) -> str:
    """What the MAC covers: the visible payload, and the agent's key when there is one."""
    return f"{payload}/{agent_key}" if agent_key else payload


def make_token(secret: bytes, token: ReplyToken) -> str:
    payload = (
        f"t{token.ticket_number}"
        + (f"a{token.agent_id}" if token.agent_id is not None else "")
        + ("f" if token.forward else "")
    )
    key = token.agent_key if token.agent_id is not None else ""
    return f"{payload}-{_mac(secret, _signed(payload, key))}"


def reply_address(secret: bytes, base_address: str, token: ReplyToken) -> str:
    """The Reply-To for a notice about `token.ticket_number` (to `token.agent_id` when set)."""
    local, _, domain = base_address.partition("@")
    return f"{local}+{make_token(secret, token)}@{domain}"


def verify_token(
    secret: bytes, text: str, agent_key: Callable[[int], str | None] | None = None
) -> ReplyToken | None:
    """The token's ticket and agent when the MAC is right, else None (compared in constant time).
    `agent_key(agent_id)` gives the named agent's reply key (None: no such agent, which fails
    the token); without it, agent tokens are checked as signed without a key."""
    match = _TOKEN.match(text.strip().lower())
    if not match:
        return None
    payload = text.strip().lower().rsplit("-", 1)[0]
    agent = int(match["agent"]) if match["agent"] else None
    key = ""
    if agent is not None and agent_key is not None:
        found = agent_key(agent)
        if found is None:
            return None
        key = found
    if not hmac.compare_digest(_mac(secret, _signed(payload, key)), match["mac"]):
        return None
    return ReplyToken(int(match["number"]), agent, forward=bool(match["forward"]), agent_key=key)


def split_plus(address: str) -> tuple[str, str | None]:
    """`local+tag@domain` -> (`local@domain`, `tag`); addresses without a tag give (address, None)."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower(), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)
