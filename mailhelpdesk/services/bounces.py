"""Bounces of our own mail: fail the outbox row and stop automatic mail to the address.

Without this, every automatic notice to a dead mailbox brings back another bounce, and a
helpdesk that answers bounces starts a storm; with it, the address is held back for a while and
the row shows why it never arrived.

Only a bounce that provably answers mail we sent counts (issue 17, defect 1): it must come back
to the signed return path of one outbox row (mail/verp.py). Then only that row's recipients can
be suppressed, and only those the report names as failed for good (all of them when it names
none: the return path already says which message bounced). Anything else that looks like a
bounce (a forged `X-Failed-Recipients`, a DSN to the plain support address) changes nothing; the
caller keeps it, classified, with the reason this module gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import OutboxItem
from mailhelpdesk.mail import verp
from mailhelpdesk.mail.dsn import BounceDetails
from mailhelpdesk.store import outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BounceOutcome:
    """What a bounce did: the ticket of the bounced row (None: not verified), the addresses
    suppressed, and, when nothing was done, why."""

    ticket_id: int | None = None
    suppressed: tuple[str, ...] = ()
    unverified: str = ""


def verified_row(
    session: Session, *, secret: bytes, return_path_tags: Sequence[str]
) -> tuple[OutboxItem | None, str]:
    """The outbox row one of the tags (`bounces+<tag>@…` addresses the bounce came to) signs,
    or (None, why not)."""
    if not return_path_tags:
        return None, "not sent to a signed return path"
    for tag in return_path_tags:
        row_id = verp.outbox_id_of(tag)
        row = session.get(OutboxItem, row_id) if row_id is not None else None
        if row is not None and verp.verify(secret, tag, row.message_id):
            return row, ""
    return None, "the return path's signature does not verify"


def record_bounce(
    session: Session,
    details: BounceDetails,
    *,
    secret: bytes,
    return_path_tags: Sequence[str],
    clock: Clock,
    suppress_s: int,
    summary: str,
) -> BounceOutcome:
    """Apply a bounce that came back to a signed return path; anything else is only reported."""
    row, why_not = verified_row(session, secret=secret, return_path_tags=return_path_tags)
    if row is None:
        log.info("bounce not verified, nothing suppressed: %s", why_not)
        return BounceOutcome(unverified=why_not)
    now = clock.now()
    recipients = {r.lower() for r in row.rcpt_tos.split()} or {row.primary_rcpt}
    named = set(details.failed_recipients) | set(details.delayed_recipients)
    if named and not named & recipients:
        why = "the report names none of the bounced message's recipients"
        log.info("bounce not applied outbox_id=%s: %s", row.id, why)
        return BounceOutcome(ticket_id=row.ticket_id, unverified=why)
    failed = sorted(set(details.failed_recipients) & recipients if named else recipients)
    if failed:
        outbox.mark_failed(session, row.id or 0, now=now, error=f"bounced: {summary}")
    for address in failed:
        outbox.suppress(
            session,
            email=address,
            reason=f"bounced: {summary}",
            until=now + timedelta(seconds=suppress_s),
        )
        log.info("address suppressed after bounce rcpt=%s for_s=%d", address, suppress_s)
    return BounceOutcome(ticket_id=row.ticket_id, suppressed=tuple(failed))
