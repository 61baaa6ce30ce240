"""Errors the service layer raises; every boundary (HTTP, CLI, SMTP) maps them in one place.

    HelpdeskError
    ├── NotFoundError            a ticket, message or token that does not exist
    ├── InvalidInputError        input that can never succeed as given (4xx / usage error)
    └── ConflictError            a write that clashes with the current state
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
