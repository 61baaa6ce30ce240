"""Errors the service layer raises; every boundary (HTTP, CLI, SMTP) maps them in one place.

HelpdeskError
├── NotFoundError            a ticket, message or token that does not exist
│   ├── AttachmentNotFoundError    no such attachment on that ticket
│   └── ContactNotFoundError       no such contact
├── InvalidInputError        input that can never succeed as given (4xx / usage error)
├── ConflictError            a write that clashes with the current state
│   └── AddressTakenError          an address that is already another contact's
└── AttachmentRefusedError   the attachment policy will not hand the file out
    ├── AttachmentReviewRequiredError   only with intent "review_ok"
    ├── AttachmentBlockedError          never
    └── AttachmentTooLargeError         not inline (base64 in JSON)
"""

from __future__ import annotations


class HelpdeskError(Exception):
    """Base of every error mailhelpdesk raises on purpose."""


class NotFoundError(HelpdeskError):
    pass


class InvalidInputError(HelpdeskError):
    pass


class ConflictError(HelpdeskError):
    pass


class ForbiddenError(HelpdeskError):
    """The caller is authenticated but may not do this (acting as another agent)."""


class AttachmentNotFoundError(NotFoundError):
    pass


class AttachmentRefusedError(HelpdeskError):
    pass


class AttachmentReviewRequiredError(AttachmentRefusedError):
    pass


class AttachmentBlockedError(AttachmentRefusedError):
    pass


class AttachmentTooLargeError(AttachmentRefusedError):
    pass


class ContactNotFoundError(NotFoundError):
    pass


class AddressTakenError(ConflictError):
    """An address already belongs to another contact: 409 naming the field that carried it."""

    def __init__(self, field: str, message: str, *, contact_id: int) -> None:
        super().__init__(message)
        self.field = field
        self.data = {"contact_id": contact_id}
