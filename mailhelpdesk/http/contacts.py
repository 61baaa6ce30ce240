"""The contacts routes (resources.md §3): list, create, read, change, and a contact's tickets.

Reads need `contacts:read`, writes `contacts:write` (which implies read); writes take an optional
Idempotency-Key like every native write. Shape rules (email syntax, lengths) are checked here;
the service decides the rest (an address that is another contact's: 409 `email_taken` naming
the field).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http import tickiti
from mailhelpdesk.http.endpoint import QUERY_PARAM, Endpoint, Runtime, add_get_route
from mailhelpdesk.http.errors import ApiError, validation_failed
from mailhelpdesk.services import contacts
from mailhelpdesk.services.contacts import ContactFields

READ, WRITE = "contacts:read", "contacts:write"


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContactsQueryIn(_In):
    """GET /api/v1/contacts: the query string."""

    q: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=25, ge=1, le=100)


class PageIn(_In):
    """A list's page in the query string."""

    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=25, ge=1, le=100)


class _Fields(_In):
    name: str | None = Field(default=None, max_length=400)
    company: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    notes: str | None = Field(default=None, max_length=10_000)
    alternate_emails: list[str] | None = Field(default=None, max_length=contacts.MAX_ALTERNATES)


class ContactIn(_Fields):
    """POST /api/v1/contacts."""

    email: str = Field(max_length=320)


class ContactPatchIn(_Fields):
    """PATCH /api/v1/contacts/{id}: every key optional; null clears a text field."""


def _fields(m: _Fields) -> ContactFields:
    """The model's fields for the service: a key sent as null clears the field ("" stored);
    a key not sent is left alone (None)."""
    texts = {
        name: (getattr(m, name) or "") if name in m.model_fields_set else None
        for name in ("name", "company", "phone", "notes")
    }
    for name, value in texts.items():
        if value is not None and "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise validation_failed({name: ["must not contain NUL"]})
        if value is not None and name != "notes" and any(c in value for c in "\r\n"):
            raise validation_failed({name: ["must not contain CR or LF"]})
    alternates = None
    if "alternate_emails" in m.model_fields_set:
        alternates = [tickiti._email(e, "alternate_emails") for e in m.alternate_emails or ()]
    return ContactFields(alternate_emails=alternates, **texts)


def contact_id_of(params: dict[str, Any]) -> int:
    """The path's contact id; one no contact can have is as unknown as any other (404)."""
    raw = params.get("contact_id")
    if not isinstance(raw, int) or not 1 <= raw <= MAX_INTEGER:
        raise ApiError(404, "contact_not_found", f"Contact {str(raw)[:20]} not found.")
    return raw


def check_create(m: ContactIn, _params: dict[str, Any]) -> tuple[str, ContactFields]:
    return tickiti._email(m.email, "email"), _fields(m)


def check_patch(m: ContactPatchIn, params: dict[str, Any]) -> tuple[int, ContactFields]:
    return contact_id_of(params), _fields(m)


def endpoints(rt: Runtime) -> list[Endpoint]:
    def create(session: Session, args: tuple[str, ContactFields]) -> dict[str, Any]:
        email, fields = args
        return contacts.create(session, email=email, fields=fields, clock=rt.clock)

    def patch(session: Session, args: tuple[int, ContactFields]) -> dict[str, Any]:
        contact_id, fields = args
        return contacts.update(session, contact_id=contact_id, fields=fields, clock=rt.clock)

    return [
        Endpoint(
            "/api/v1/contacts",
            "v1_contacts_create",
            WRITE,
            "optional",
            ContactIn,
            check_create,
            create,
            "Create a contact: email, name, company, phone, notes, alternate_emails",
        ),
        Endpoint(
            "/api/v1/contacts/{contact_id:int}",
            "v1_contacts_update",
            WRITE,
            "optional",
            ContactPatchIn,
            check_patch,
            patch,
            "Change a contact; alternate_emails replaces the list; returns the contact",
            method="PATCH",
        ),
    ]


def list_contacts(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/contacts?q=&email=&page=&per_page="""
    query: ContactsQueryIn = params[QUERY_PARAM]
    for name in ("q", "email"):
        if "\x00" in (getattr(query, name) or ""):
            raise validation_failed({name: ["must not contain NUL"]})
    return contacts.list_contacts(
        session,
        q=query.q or None,
        email=query.email,
        page=query.page,
        per_page=query.per_page,
    )


def show(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/contacts/{id}"""
    return contacts.show(session, contact_id=contact_id_of(params))


def tickets(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/contacts/{id}/tickets: ticket headers, newest first, paged."""
    page: PageIn = params[QUERY_PARAM]
    return contacts.tickets(
        session, contact_id=contact_id_of(params), page=page.page, per_page=page.per_page
    )


def add_get_routes(api: FastAPI, rt: Runtime) -> None:
    """The contacts' GET routes (add_get_route: one admission path with the POST family)."""
    add_get_route(
        api, rt, "/api/v1/contacts", READ, list_contacts,
        "List contacts: q (name, company or address), email (any address exactly), paged",
        query=ContactsQueryIn,
    )  # fmt: skip
    add_get_route(
        api, rt, "/api/v1/contacts/{contact_id:int}", READ, show,
        "One contact",
    )  # fmt: skip
    add_get_route(
        api, rt, "/api/v1/contacts/{contact_id:int}/tickets", READ, tickets,
        "A contact's tickets (ticket headers), newest first, paged",
        query=PageIn,
    )  # fmt: skip
