"""Bounces of our own mail: fail the outbox row and stop automatic mail to the address.

Without this, every automatic notice to a dead mailbox brings back another bounce, and a
helpdesk that answers bounces starts a storm; with it, the address is held back for a while and
the row shows why it never arrived.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.mail.dsn import BounceDetails
from mailhelpdesk.store import outbox

log = logging.getLogger(__name__)


def record_bounce(
    session: Session, details: BounceDetails, *, clock: Clock, suppress_s: int, summary: str
) -> list[int]:
    """Apply a bounce; returns the ids of the ticket(s) whose mail bounced."""
    now = clock.now()
    rows = outbox.find_by_message_ids(session, details.original_message_ids)
    tickets: list[int] = []
    failed = set(details.failed_recipients)
    for row in rows:
        recipients = (
            {r.lower() for r in row.rcpt_tos.split()} if row.rcpt_tos else {row.primary_rcpt}
        )
        if failed and not (failed & recipients) and row.primary_rcpt not in failed:
            continue  # a bounce for another recipient of the same message id
        if failed or not details.delayed_recipients:
            outbox.mark_failed(session, row.id or 0, now=now, error=f"bounced: {summary}")
        if row.ticket_id is not None:
            tickets.append(row.ticket_id)
    for address in failed:
        outbox.suppress(
            session,
            email=address,
            reason=f"bounced: {summary}",
            until=now + timedelta(seconds=suppress_s),
        )
        log.info("address suppressed after bounce rcpt=%s for_s=%d", address, suppress_s)
    return tickets
