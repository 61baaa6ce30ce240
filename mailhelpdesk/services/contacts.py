"""Contacts (resources.md §3): the customers behind the tickets.

A contact is made by the first ticket opened for an address it does not know (mail, API,
forward alike: `contact_for`, called by `tickets.create_ticket`), or by the API. Mail from
any of a contact's addresses (main or alternate) belongs to that contact: its new tickets get
the contact, and the address is a party to the contact's tickets (store/tickets.py
`is_participant`, the party rule of DESIGN.md §2). An address belongs to at most one
contact; the database holds that (UNIQUE contact_addresses.email), not only this module.

Contacts are not tickets: changing one records no ticket event and causes no notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.models import Contact, as_utc
from mailhelpdesk.errors import AddressTakenError, ContactNotFoundError, InvalidInputError
from mailhelpdesk.services.views import ticket_headers
from mailhelpdesk.store import contacts as store

MAX_ALTERNATES = 50
MAX_EMAIL_CHARS = 320


@dataclass(frozen=True)
class ContactFields:
    """The writable fields of a contact; None leaves a field as it is (PATCH)."""

    name: str | None = None
    company: str | None = None
    phone: str | None = None
    notes: str | None = None
    alternate_emails: Sequence[str] | None = None


def _iso(value: datetime | None) -> str | None:
    aware = as_utc(value)
    return aware.isoformat() if aware else None


def _address(value: str, field: str) -> str:
    """An address as stored: trimmed, lower-cased. Syntax is checked at the boundary (HTTP);
    this refuses only what could never be an address."""
    email = value.strip().lower()
    if (
        "@" not in email
        or len(email) > MAX_EMAIL_CHARS
        or any(c.isspace() or ord(c) < 32 for c in email)
    ):
        raise InvalidInputError(f"{field}: {value[:80]!r} is not an email address")
    return email


def contact_object(session: Session, contact: Contact, *, ticket_count: int) -> dict[str, Any]:
    """The contact shape of the API and the CLI's --json."""
    return {
        "id": contact.id,
        "email": contact.email,
        "name": contact.name,
        "company": contact.company,
        "phone": contact.phone,
        "alternate_emails": [
            a for a in store.addresses_of(session, contact.id or 0) if a != contact.email
        ],
        "notes": contact.notes,
        "created_at": _iso(contact.created_at),
        "updated_at": _iso(contact.updated_at),
        "ticket_count": ticket_count,
    }


def _object(session: Session, contact: Contact) -> dict[str, Any]:
    counts = store.ticket_counts(session, [contact.id or 0])
    return contact_object(session, contact, ticket_count=counts.get(contact.id or 0, 0))


def contact_for(session: Session, email: str, *, name: str, now: datetime) -> int | None:
    """The id of the contact a new ticket from `email` belongs to, made on a first ticket (None
    without an address). A name learnt later fills a contact that had none, never overwrites
    one. Known before the ticket is written, so the ticket's INSERT carries it
    (services/tickets.py)."""
    email = email.strip().lower()
    if not email:
        return None
    found = store.id_and_name_by_address(session, email)
    if found is None:
        made = store.insert_with_address(
            session, {"email": email, "name": name[:400], "created_at": now, "updated_at": now}
        )
        if made is not None:
            return made
        found = store.id_and_name_by_address(session, email)
    elif name and not found[1]:
        contact = store.get(session, found[0])
        if contact is not None and not contact.name:
            contact.name, contact.updated_at = name[:400], now
            session.add(contact)
    return found[0] if found is not None else None


def get(session: Session, contact_id: int) -> Contact:
    contact = store.get(session, contact_id)
    if contact is None:
        raise ContactNotFoundError(f"Contact {contact_id} not found.")
    return contact


def find(session: Session, ref: str) -> Contact:
    """A contact by id (digits) or by any of its addresses (the CLI's `contact show`)."""
    ref = ref.strip()
    contact = (
        store.get(session, int(ref))
        if ref.isascii() and ref.isdigit() and len(ref) < 12
        else store.by_address(session, ref)
    )
    if contact is None:
        raise ContactNotFoundError(f"no contact {ref}")
    return contact


def show(session: Session, *, contact_id: int) -> dict[str, Any]:
    return _object(session, get(session, contact_id))


def _page_meta(total: int, page: int, per_page: int) -> dict[str, int]:
    return {"total": total, "page": page, "per_page": per_page}


def list_contacts(
    session: Session, *, q: str | None, email: str | None, page: int, per_page: int
) -> dict[str, Any]:
    """`{contacts: [...], meta: {total, page, per_page}}`, oldest contact first."""
    total, rows = store.search(
        session, q=q, email=email, offset=(page - 1) * per_page, limit=per_page
    )
    counts = store.ticket_counts(session, [c.id or 0 for c in rows])
    return {
        "contacts": [
            contact_object(session, c, ticket_count=counts.get(c.id or 0, 0)) for c in rows
        ],
        "meta": _page_meta(total, page, per_page),
    }


def tickets(session: Session, *, contact_id: int, page: int, per_page: int) -> dict[str, Any]:
    """The contact's tickets as ticket headers, newest first, with the list meta."""
    get(session, contact_id)
    total, rows = store.tickets_of(
        session, contact_id, offset=(page - 1) * per_page, limit=per_page
    )
    return {"tickets": ticket_headers(session, rows), "meta": _page_meta(total, page, per_page)}


def _alternates(session: Session, contact: Contact | None, emails: Sequence[str]) -> list[str]:
    """The alternate addresses to store: normalised, de-duplicated, without the main address;
    an address that is another contact's is a 409 naming the field."""
    if len(emails) > MAX_ALTERNATES:
        raise InvalidInputError(f"alternate_emails: at most {MAX_ALTERNATES} addresses")
    main = contact.email if contact is not None else None
    wanted = list(dict.fromkeys(_address(e, "alternate_emails") for e in emails))
    wanted = [e for e in wanted if e != main]
    for email, owner in store.owners(session, wanted).items():
        if contact is None or owner != contact.id:
            raise AddressTakenError(
                "alternate_emails",
                f"{email} is already an address of contact {owner}",
                contact_id=owner,
            )
    return wanted


def _apply(contact: Contact, fields: ContactFields) -> None:
    for name in ("name", "company", "phone", "notes"):
        value = getattr(fields, name)
        if value is not None:
            setattr(contact, name, value)


def create(session: Session, *, email: str, fields: ContactFields, clock: Clock) -> dict[str, Any]:
    """POST /api/v1/contacts: a new contact; its address (or an alternate) already being
    another contact's is a 409 naming the field."""
    main = _address(email, "email")
    taken = store.by_address(session, main)
    if taken is not None:
        raise AddressTakenError(
            "email",
            f"{main} is already an address of contact {taken.id}",
            contact_id=taken.id or 0,
        )
    alternates = [a for a in _alternates(session, None, fields.alternate_emails or ()) if a != main]
    now = clock.now()
    contact = Contact(email=main, created_at=now, updated_at=now)
    _apply(contact, fields)
    if store.add_with_address(session, contact) is None:  # a first mail from it just won
        raise AddressTakenError("email", f"{main} is already a contact's address", contact_id=0)
    store.set_alternates(session, contact, alternates)
    return _object(session, contact)


def update(
    session: Session, *, contact_id: int, fields: ContactFields, clock: Clock
) -> dict[str, Any]:
    """PATCH /api/v1/contacts/{id}: every check before any change; `alternate_emails`
    replaces the list."""
    contact = get(session, contact_id)
    alternates = (
        None
        if fields.alternate_emails is None
        else _alternates(session, contact, fields.alternate_emails)
    )
    _apply(contact, fields)
    contact.updated_at = clock.now()
    session.add(contact)
    session.flush()
    if alternates is not None:
        store.set_alternates(session, contact, alternates)
    return _object(session, contact)
