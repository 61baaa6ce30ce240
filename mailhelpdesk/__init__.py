"""mailhelpdesk: an email-first support ticket daemon."""

__version__ = "0.1.0"
