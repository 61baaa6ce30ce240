"""Our own signed addresses taken out of text we pass on (issue 17, defect 9).

An agent's answer is relayed to the customer and CCs. When the agent's mail client quotes in a
format the reply trimmer does not know, or the agent mentions an address, the text can carry
`support+t100123a4-<mac>@…`: the agent's signed reply address. Whoever holds it can write to
the ticket as that agent. So every `<our address>+<tag>@<domain>` in relayed text becomes the
plain `<our address>@<domain>`, whatever surrounds it (angle brackets, `mailto:`, a quote
prefix, percent-encoding of the `+`). Only our own addresses are touched: a customer's
`jane+orders@shop.test` stays as written.
"""

from __future__ import annotations

import re

_TAGGED = re.compile(
    r"(?P<local>[A-Za-z0-9._%=~!#$&'*/?^`{|}-]+)"
    r"(?:\+|%2[Bb])"
    r"(?P<tag>[A-Za-z0-9._=-]+)"
    r"@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
)


def redact_signed_addresses(text: str, own_addresses: frozenset[str]) -> str:
    """`text` with every tagged form of one of `own_addresses` (lower-case) replaced by the
    plain address."""
    if "@" not in text or not own_addresses:
        return text

    def plain(match: re.Match[str]) -> str:
        base = f"{match['local']}@{match['domain']}"
        return base if base.lower() in own_addresses else match.group(0)

    return _TAGGED.sub(plain, text)
