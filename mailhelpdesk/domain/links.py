"""Customer-facing links: where a ticket's status page lives. One place, so the route that serves
the page (http/status_page.py) and every link to it (notices, the ticket object) agree."""

from __future__ import annotations

STATUS_PAGE_PREFIX = "/t"


def status_url(public_url: str, secure_id: str | None) -> str | None:
    """The status page of the ticket with `secure_id` under `public_url` (`[http] public_url`);
    None when either is missing: a link that cannot work is never sent."""
    if not public_url or not secure_id:
        return None
    return f"{public_url.rstrip('/')}{STATUS_PAGE_PREFIX}/{secure_id}"
