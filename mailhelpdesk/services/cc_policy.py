"""How many CCs a message may add to a ticket (issue 17, CC amplification).

Without a bound, one mail with 5,000 `Cc:` addresses made a ticket whose every answer went to
thousands of people: the helpdesk became an amplifier for whoever wrote to it. Two limits hold
it: per message (`[ingest] max_ccs_per_message`) and per ticket (`max_ccs_per_ticket`). Which
messages may add CCs at all (only a party's, never a held stranger's) is the apply table's
decision (ingest/apply.py); this module only counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CcLimits:
    """The two bounds; the defaults are those of config.IngestConfig."""

    per_message: int = 20
    per_ticket: int = 50


def capped(
    candidates: Sequence[tuple[str, str]],
    *,
    present: set[str],
    skip: set[str],
    limits: CcLimits,
    ticket_number: int,
) -> list[tuple[str, str]]:
    """The (email, name) pairs to add, lower-cased, without repeats, without the ticket's
    `present` CCs and the `skip` addresses (the originator, our own, agents): the first
    `per_message` new ones, and no more than keep the ticket within `per_ticket`. What is left
    out is logged with its count."""
    room = max(0, min(limits.per_message, limits.per_ticket - len(present)))
    chosen: list[tuple[str, str]] = []
    seen = present | skip
    wanted = 0
    for email, name in candidates:
        address = email.strip().lower()
        if not address or address in seen:
            continue
        seen.add(address)
        wanted += 1
        if len(chosen) < room:
            chosen.append((address, name))
    if wanted > len(chosen):
        log.warning(
            "ccs capped ticket=%s added=%d left_out=%d per_message=%d per_ticket=%d",
            ticket_number,
            len(chosen),
            wanted - len(chosen),
            limits.per_message,
            limits.per_ticket,
        )
    return chosen
