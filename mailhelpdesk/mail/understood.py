"""Understanding one message: everything the ingest pipeline derives from its bytes alone.

The pipeline splits in two (issue 16): *understanding* (parse, classify, fingerprint, visible
and request text, forwarded original, bounce details) needs nothing but the raw bytes and a few
settings, so it runs outside any transaction, in a pool of processes, ahead of the writer;
*deciding and writing* (dedupe, thread, identify the sender, apply) reads and writes the
database, in the writer's transaction (ingest/worker.py). This module is the first half: one
pure function returning one picklable value, so a worker process can send it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailhelpdesk.mail.classify import classify
from mailhelpdesk.mail.dsn import BounceDetails, bounce_details
from mailhelpdesk.mail.forwarded import ForwardedOriginal, find_forwarded
from mailhelpdesk.mail.parse import parse_message
from mailhelpdesk.mail.parsed import Classification, ParsedMail, Verdict
from mailhelpdesk.mail.reply_text import visible_text
from mailhelpdesk.mail.request_text import request_text_from


@dataclass(frozen=True)
class UnderstandSettings:
    """The few settings understanding depends on (picklable, sent with every job)."""

    own_addresses: frozenset[str]
    allow_remote_images: bool = False


@dataclass(frozen=True)
class Understood:
    """What the later steps would otherwise recompute inside the write transaction.

    With `derived` False only the parse and the classification are here, and the steps derive
    the rest when (and only if) they need it: in the writer's own process that is cheaper than
    deriving everything up front (a reply never needs its request text, a customer's mail never
    its forwarded original)."""

    parsed: ParsedMail
    classification: Classification
    derived: bool = False
    visible_text: str = ""  # visible_text(parsed.text): a reply's own words
    request_text: str = ""  # request_text(parsed): a new ticket's first message
    forwarded: ForwardedOriginal | None = None  # find_forwarded(parsed)
    bounce: BounceDetails | None = None  # bounce_details(parsed), for a bounce only


def understand(
    raw: bytes, *, envelope_from: str | None, settings: UnderstandSettings, derive: bool = True
) -> Understood:
    """Bytes (and the envelope's reverse-path, which classification weighs) to an Understood;
    with `derive`, every derived text too (in a worker process, where that is off the writer)."""
    parsed = parse_message(raw, allow_remote_images=settings.allow_remote_images)
    verdict = classify(parsed, envelope_from=envelope_from, own_addresses=settings.own_addresses)
    if not derive:
        return Understood(parsed=parsed, classification=verdict)
    visible = visible_text(parsed.text)
    forwarded = find_forwarded(parsed)
    return Understood(
        parsed=parsed,
        classification=verdict,
        derived=True,
        visible_text=visible,
        request_text=request_text_from(parsed, visible, forwarded),
        forwarded=forwarded,
        bounce=bounce_details(parsed) if verdict.verdict == Verdict.bounce else None,
    )
