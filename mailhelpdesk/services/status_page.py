"""The customer's status page (resources.md §8): what a ticket's secure link may show, and
nothing more.

The page is for whoever holds the link, which is the customer, but links get forwarded: it shows
the public conversation only (never an internal note or a system entry), names people by display
name rather than address, and withholds files the attachment policy would not hand out. Every
way a link can fail (malformed, unknown, revoked, trashed) is the same None, so the page cannot
tell a guesser which ids once existed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from mailhelpdesk.domain.enums import ResponseKind
from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import Attachment, Response, Ticket, as_utc
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.mail import attachment_policy as policy
from mailhelpdesk.mail.html_text import sanitize_html
from mailhelpdesk.services import events
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.tickets import new_secure_id
from mailhelpdesk.store import response_query
from mailhelpdesk.store import tickets as store

_SECURE_ID = re.compile(r"[0-9a-f]{32}")
# picture types a browser shows inline without running anything (no SVG: it can carry script)
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_PUBLIC_KINDS = frozenset({ResponseKind.customer, ResponseKind.agent})


@dataclass(frozen=True)
class PublicFile:
    id: int
    name: str
    file_size: int
    downloadable: bool  # False: the policy withholds it (programs, archives, HTML)


@dataclass(frozen=True)
class PublicMessage:
    from_helpdesk: bool
    author: str
    at: datetime
    text: str
    html: str | None  # sanitised; None: show `text`
    files: tuple[PublicFile, ...]


@dataclass(frozen=True)
class StatusView:
    secure_id: str
    number: int
    subject: str
    status: str
    on_hold_until: str | None
    created_at: datetime
    updated_at: datetime
    messages: tuple[PublicMessage, ...]


@dataclass(frozen=True)
class PublicDownload:
    name: str
    mime_type: str  # what the browser is told: a safe picture type or application/octet-stream
    inline: bool
    data: bytes


def find_ticket(session: Session, secure_id: str) -> Ticket | None:
    """The ticket a link opens: looked up only for a well-formed id; a ticket merged into another
    opens the one the conversation went on in, unless that one is gone too."""
    if not _SECURE_ID.fullmatch(secure_id):
        return None
    ticket = session.exec(
        select(Ticket).where(Ticket.secure_id == secure_id, col(Ticket.deleted_at).is_(None))
    ).first()
    if ticket is not None and ticket.merged_into is not None:
        return store.get_ticket_by_number(session, ticket.merged_into)
    return ticket


def view(session: Session, secure_id: str, *, helpdesk_name: str) -> StatusView | None:
    ticket = find_ticket(session, secure_id)
    if ticket is None:
        return None
    public = [r for r in store.responses_of(session, ticket.id or 0) if _is_public(r)]
    public.sort(key=lambda r: (as_utc(r.created_at) or r.created_at, r.id or 0))
    files = store.attachments_of(session, [r.id for r in public if r.id is not None])
    messages = tuple(
        _message(session, r, files.get(r.id or 0, []), ticket, helpdesk_name, secure_id)
        for r in public
    )
    created, updated = as_utc(ticket.created_at), as_utc(ticket.updated_at)
    return StatusView(
        secure_id=secure_id,
        number=ticket.number,
        subject=ticket.subject,
        status=ticket.status,
        on_hold_until=ticket.on_hold_until.isoformat() if ticket.on_hold_until else None,
        created_at=created or ticket.created_at,
        updated_at=updated or ticket.updated_at,
        messages=messages,
    )


def download(session: Session, secure_id: str, attachment_id: int) -> PublicDownload | None:
    """A file of a public message of the linked ticket, if the policy lets it out; else None."""
    ticket = find_ticket(session, secure_id)
    if ticket is None:
        return None
    found = response_query.find_attachment(session, attachment_id, head_bytes=policy.HEAD_BYTES)
    if found is None or found.ticket_number != ticket.number:
        return None
    response = session.get(Response, found.attachment.response_id)
    if response is None or not _is_public(response):
        return None
    verdict = _verdict(found.attachment, found.head)
    if verdict is None:
        return None
    inline = verdict.mime_type in INLINE_IMAGE_TYPES
    return PublicDownload(
        name=found.attachment.name,
        mime_type=verdict.mime_type if inline else "application/octet-stream",
        inline=inline,
        data=response_query.blob_data(session, found.attachment.sha256),
    )


def revoke_link(session: Session, *, ticket_number: int, change: ChangeContext) -> str:
    """Give the ticket a new secure id: the old link answers 404 from now on. Returns the new
    id; the customer gets it with the next notice that carries the link."""
    ticket = store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    ticket.secure_id = new_secure_id()
    session.add(ticket)
    session.flush()
    events.record(session, ticket, EventType.link_revoked, {}, change=change)
    return ticket.secure_id


def _is_public(response: Response) -> bool:
    return not response.is_internal and response.kind in _PUBLIC_KINDS


def _verdict(attachment: Attachment, head: bytes) -> policy.Verdict | None:
    """The policy's verdict when the file may be downloaded from the page (size is no reason to
    refuse a download: the inline limit is for base64 in JSON), else None."""
    verdict = policy.judge(name=attachment.name, declared=attachment.mime_type, head=head, size=0)
    if verdict.decision != policy.Decision.allowed:
        return None
    return verdict


def _message(
    session: Session,
    r: Response,
    attachments: Sequence[Attachment],
    ticket: Ticket,
    helpdesk_name: str,
    secure_id: str,
) -> PublicMessage:
    from_helpdesk = r.kind == ResponseKind.agent or r.staff_response
    if from_helpdesk:
        author = r.created_by_name or helpdesk_name
    elif (r.created_by_email or "").lower() == ticket.originator_email:
        author = ticket.originator_name or "You"
    else:
        author = r.created_by_name or "Someone copied on this request"
    files = tuple(
        PublicFile(a.id or 0, a.name, a.file_size, _downloadable(session, a))
        for a in attachments
        if not a.is_inline
    )
    html = _page_html(r.html, attachments, secure_id) if r.html else None
    return PublicMessage(
        from_helpdesk=from_helpdesk,
        author=author,
        at=as_utc(r.created_at) or r.created_at,
        text=r.visible_text or r.plain_text,
        html=html,
        files=files,
    )


def _downloadable(session: Session, attachment: Attachment) -> bool:
    found = response_query.find_attachment(
        session, attachment.id or 0, head_bytes=policy.HEAD_BYTES
    )
    return found is not None and _verdict(attachment, found.head) is not None


def _page_html(html: str, attachments: Sequence[Attachment], secure_id: str) -> str:
    """The message's HTML sanitised again for the page (whatever was stored), with its inline
    pictures (`cid:`) pointed at the page's own download route; an unknown cid stays dead."""
    clean = sanitize_html(html)
    by_cid = {(a.content_id or "").strip("<>"): a.id for a in attachments if a.content_id and a.id}

    def point(match: re.Match[str]) -> str:
        found = by_cid.get(match.group(1))
        return f'src="{secure_id}/files/{found}"' if found else 'src=""'

    return re.sub(r'src="cid:([^"]*)"', point, clean)
