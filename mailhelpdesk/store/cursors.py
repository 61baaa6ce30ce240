"""How far each IMAP mailbox has been read: UIDVALIDITY plus the last UID kept.

The poller advances the cursor in the same transaction that keeps the messages, so after a crash
the cursor and the spool agree: a message is either kept and behind the cursor, or neither.
These functions flush but never commit; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import InboundState
from mailhelpdesk.domain.models import InboundMessage, MailboxCursor


class CursorMovedError(Exception):
    """The cursor is not where the caller last saw it: another process read the same mailbox."""


def get_cursor(session: Session, mailbox: str) -> MailboxCursor | None:
    return session.get(MailboxCursor, mailbox)


def open_cursor(
    session: Session, *, mailbox: str, uidvalidity: int, now: datetime
) -> tuple[MailboxCursor, bool]:
    """The mailbox's cursor for this UIDVALIDITY, created at UID 0 when missing. When the server's
    UIDVALIDITY differs from the stored one, the old UIDs mean nothing any more: the cursor is
    reset to 0 and the second value is True (the folder is read again; dedupe drops repeats)."""
    cursor = get_cursor(session, mailbox)
    if cursor is None:
        cursor = MailboxCursor(
            mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0, last_sync_at=now
        )
        session.add(cursor)
        session.flush()
        return cursor, False
    if cursor.uidvalidity != uidvalidity:
        reset_cursor(session, cursor, uidvalidity=uidvalidity, now=now)
        return cursor, True
    return cursor, False


def reset_cursor(
    session: Session, cursor: MailboxCursor, *, uidvalidity: int, now: datetime
) -> None:
    cursor.uidvalidity = uidvalidity
    cursor.last_uid = 0
    cursor.last_sync_at = now
    session.add(cursor)
    session.flush()


def advance_cursor(
    session: Session, *, mailbox: str, uidvalidity: int, from_uid: int, to_uid: int, now: datetime
) -> None:
    """Move the cursor from `from_uid` to `to_uid`, only if it is still at `from_uid` under the same
    UIDVALIDITY (compare-and-set). Otherwise raise CursorMovedError, so the caller rolls back the
    messages it was about to keep instead of keeping them twice."""
    result = session.exec(
        update(MailboxCursor)
        .where(col(MailboxCursor.mailbox) == mailbox)
        .where(col(MailboxCursor.uidvalidity) == uidvalidity)
        .where(col(MailboxCursor.last_uid) == from_uid)
        .values(last_uid=to_uid, last_sync_at=now)
    )
    if result.rowcount != 1:
        raise CursorMovedError(
            f"cursor of mailbox {mailbox} is no longer at uidvalidity={uidvalidity} last_uid={from_uid}"
        )


def set_aside_uids(session: Session, *, mailbox: str, uidvalidity: int) -> set[int]:
    """UIDs of this mailbox whose spool rows are set aside (`failed`): a message the server would
    not hand over is left unmarked in its folder, for an operator to look at."""
    prefix = f"{mailbox}:{uidvalidity}:"
    refs = session.exec(
        select(InboundMessage.source_ref)
        .where(InboundMessage.state == InboundState.failed)
        .where(InboundMessage.source == "imap")
        .where(col(InboundMessage.source_ref).startswith(prefix, autoescape=True))
    ).all()
    return {
        int(ref[len(prefix) :])
        for ref in refs
        if ref[len(prefix) :].isascii() and ref[len(prefix) :].isdigit()
    }
