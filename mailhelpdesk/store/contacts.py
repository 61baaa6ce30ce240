"""Queries and small writers for contacts and their addresses. They flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, or_
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import Contact, ContactAddress, Ticket
from mailhelpdesk.store import rows

LIKE_ESCAPE = "\\"


def get(session: Session, contact_id: int) -> Contact | None:
    return session.get(Contact, contact_id)


def by_address(session: Session, email: str) -> Contact | None:
    """The contact that `email` (main or alternate, any case) belongs to, or None."""
    return session.exec(
        select(Contact)
        .join(ContactAddress, col(ContactAddress.contact_id) == col(Contact.id))
        .where(ContactAddress.email == email.strip().lower())
    ).first()


_CONTACTS = rows.table_of(Contact)
_ADDRESSES = rows.table_of(ContactAddress)
_BY_ADDRESS = (
    sa_select(_CONTACTS.c.id, _CONTACTS.c.name)
    .join(_ADDRESSES, _ADDRESSES.c.contact_id == _CONTACTS.c.id)
    .where(_ADDRESSES.c.email == bindparam("email"))
    .limit(1)
)


def id_and_name_by_address(session: Session, email: str) -> tuple[int, str] | None:
    """(id, name) of the contact `email` belongs to (as `by_address`), without loading it: one
    statement built once, for the path every new ticket takes (services/contacts.contact_for)."""
    found = (
        rows.flushed_connection(session)
        .execute(_BY_ADDRESS, {"email": email.strip().lower()})
        .first()
    )
    return (int(found[0]), str(found[1])) if found is not None else None


def insert_with_address(session: Session, values: dict[str, object]) -> int | None:
    """`add_with_address` as two Core INSERTs: the new contact's id, or None when the address
    already belongs to someone (a concurrent first mail won).

    Called after reading that the address is free, in the same write transaction. On SQLite
    that transaction holds the database's one write lock (BEGIN IMMEDIATE), so nobody can have
    taken the address since, and the two INSERTs need no savepoint of their own: two statements
    less for most new tickets. On PostgreSQL another daemon can, so a conflict is caught in a
    savepoint, without ending the batch's transaction."""
    if rows.dialect_of(session) == "sqlite":
        return _insert_contact(session, values)
    try:
        with session.begin_nested():
            return _insert_contact(session, values)
    except IntegrityError:
        return None


def _insert_contact(session: Session, values: dict[str, object]) -> int:
    row = rows.insert_row(session, Contact, values)
    rows.insert_many(session, ContactAddress, [{"contact_id": row["id"], "email": row["email"]}])
    return int(row["id"])


def owners(session: Session, emails: Sequence[str]) -> dict[str, int]:
    """Which of `emails` belong to a contact already: address -> contact id."""
    if not emails:
        return {}
    rows = session.exec(
        select(ContactAddress).where(col(ContactAddress.email).in_(list(emails)))
    ).all()
    return {r.email: r.contact_id for r in rows}


def addresses_of(session: Session, contact_id: int) -> list[str]:
    """Every address of the contact, the main one included, sorted."""
    return sorted(
        session.exec(
            select(ContactAddress.email).where(ContactAddress.contact_id == contact_id)
        ).all()
    )


def add_with_address(session: Session, contact: Contact) -> Contact | None:
    """Insert a contact and its main address, in a savepoint: None when the address already
    belongs to someone (a concurrent first mail won; the caller reads that contact instead)."""
    try:
        with session.begin_nested():
            session.add(contact)
            session.flush()
            session.add(ContactAddress(contact_id=contact.id or 0, email=contact.email))
            session.flush()
    except IntegrityError:
        return None
    return contact


def set_alternates(session: Session, contact: Contact, alternates: Sequence[str]) -> None:
    """Make `alternates` (lower-cased, not the main address) the contact's other addresses."""
    keep = {contact.email, *alternates}
    for row in session.exec(
        select(ContactAddress).where(ContactAddress.contact_id == contact.id)
    ).all():
        if row.email not in keep:
            session.delete(row)
    session.flush()
    have = set(addresses_of(session, contact.id or 0))
    for email in alternates:
        if email not in have:
            session.add(ContactAddress(contact_id=contact.id or 0, email=email))
    session.flush()


def _like(text: str) -> str:
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def search(
    session: Session, *, q: str | None, email: str | None, offset: int, limit: int
) -> tuple[int, list[Contact]]:
    """(total, one page) of contacts, by id: `email` matches any address exactly, `q` a part
    of the name, company or any address, case-insensitively."""
    query = select(Contact)
    if email is not None:
        owner = select(ContactAddress.contact_id).where(
            ContactAddress.email == email.strip().lower()
        )
        query = query.where(col(Contact.id).in_(owner))
    if q:
        pattern = _like(q)
        addressed = select(ContactAddress.contact_id).where(
            func.lower(ContactAddress.email).like(pattern, escape=LIKE_ESCAPE)
        )
        query = query.where(
            or_(
                func.lower(Contact.name).like(pattern, escape=LIKE_ESCAPE),
                func.lower(Contact.company).like(pattern, escape=LIKE_ESCAPE),
                col(Contact.id).in_(addressed),
            )
        )
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Contact.id)).offset(offset).limit(limit)).all()
    return total, list(rows)


def ticket_counts(session: Session, contact_ids: Sequence[int]) -> dict[int, int]:
    if not contact_ids:
        return {}
    rows = session.exec(
        select(Ticket.contact_id, func.count())
        .where(col(Ticket.contact_id).in_(list(contact_ids)), col(Ticket.deleted_at).is_(None))
        .group_by(col(Ticket.contact_id))
    ).all()
    return {cid: n for cid, n in rows if cid is not None}


def tickets_of(
    session: Session, contact_id: int, *, offset: int, limit: int
) -> tuple[int, list[Ticket]]:
    """(total, one page) of the contact's tickets, newest first."""
    where = and_(col(Ticket.contact_id) == contact_id, col(Ticket.deleted_at).is_(None))
    total = session.exec(select(func.count()).select_from(Ticket).where(where)).one()
    rows = session.exec(
        select(Ticket).where(where).order_by(col(Ticket.number).desc()).offset(offset).limit(limit)
    ).all()
    return total, list(rows)
