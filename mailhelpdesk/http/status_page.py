"""`GET /t/{secure_id}`: the customer's read-only status page (resources.md §8), and its file
downloads.

What the page may show is decided in services/status_page.py; this module only turns it into a
response that a browser cannot be tricked by: the conversation's HTML was sanitised (again, at
render time), and a strict Content-Security-Policy forbids every script, frame, form and remote
fetch, so even markup the sanitiser missed can run nothing. Unknown, revoked and trashed links get
one identical 404; each client address is rate-limited.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from mailhelpdesk.domain.links import STATUS_PAGE_PREFIX
from mailhelpdesk.http.auth import RateLimiter
from mailhelpdesk.http.endpoint import Runtime, client_ip
from mailhelpdesk.mail.render import environment, render_file
from mailhelpdesk.services import status_page
from mailhelpdesk.store.db import read_scope

TEMPLATE = "status/ticket.html"
_STATUS_LABELS = {"open": "Open", "on-hold": "On hold", "closed": "Closed"}
# no script, frame, form, plugin or remote fetch of any kind; pictures only from this server
_PAGE_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'nonce-{nonce}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FILE_POLICY = "default-src 'none'; sandbox"
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def add_routes(api: FastAPI, rt: Runtime) -> None:
    limiter = RateLimiter(rt.settings.status_page_requests_per_minute, 60)

    def limited(request: Request) -> Response | None:
        allowed, state = limiter.hit(f"status:{client_ip(request.scope)}")
        if allowed:
            return None
        wait = max(state.reset - int(time.time()), 1)
        return _page(
            "Too many requests: try again in a minute.",
            status=429,
            extra={"Retry-After": str(wait)},
        )

    @api.get(f"{STATUS_PAGE_PREFIX}/{{secure_id}}", include_in_schema=False)
    def show(secure_id: str, request: Request) -> Response:
        refused = limited(request)
        if refused is not None:
            return refused
        # read per request: a reload (SIGHUP) changes the name and the templates
        helpdesk_name = rt.settings.notify.helpdesk_name
        with read_scope(rt.engine) as session:
            found = status_page.view(session, secure_id, helpdesk_name=helpdesk_name)
        if found is None:
            return _not_found()
        nonce = secrets.token_urlsafe(16)
        html = render_file(
            environment(rt.settings.notify.template_dir),
            TEMPLATE,
            {
                "helpdesk_name": helpdesk_name,
                "nonce": nonce,
                "ticket": {
                    "number": found.number,
                    "subject": found.subject,
                    "status": found.status,
                    "status_label": _STATUS_LABELS.get(found.status, found.status),
                    "on_hold_until": found.on_hold_until,
                    "created_at": _when(found.created_at),
                    "updated_at": _when(found.updated_at),
                },
                "messages": [
                    {
                        "from_helpdesk": m.from_helpdesk,
                        "author": m.author,
                        "at": _when(m.at),
                        "text": m.text,
                        "html": m.html,
                        "files": [
                            {
                                "name": f.name,
                                "size": _size(f.file_size),
                                "url": f"{secure_id}/files/{f.id}" if f.downloadable else None,
                            }
                            for f in m.files
                        ],
                    }
                    for m in found.messages
                ],
            },
            label="status page: ",
        )
        headers = {**_COMMON_HEADERS, "Content-Security-Policy": _PAGE_POLICY.format(nonce=nonce)}
        return HTMLResponse(html, headers=headers)

    @api.get(f"{STATUS_PAGE_PREFIX}/{{secure_id}}/files/{{attachment_id}}", include_in_schema=False)
    def file(secure_id: str, attachment_id: str, request: Request) -> Response:
        refused = limited(request)
        if refused is not None:
            return refused
        if not attachment_id.isdigit() or len(attachment_id) > 18:
            return _not_found()
        with read_scope(rt.engine) as session:
            found = status_page.download(session, secure_id, int(attachment_id))
        if found is None:
            return _not_found()
        disposition = "inline" if found.inline else "attachment"
        quoted = urllib.parse.quote(found.name, safe="")
        headers = {
            **_COMMON_HEADERS,
            "Content-Security-Policy": _FILE_POLICY,
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
        }
        return Response(found.data, media_type=found.mime_type, headers=headers)


def _not_found() -> Response:
    """One answer for every link that opens nothing, whatever the reason."""
    return _page("This link does not open any request.", status=404)


_ERROR_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:32rem;"
    "padding:0 1rem;color:#222}"
)
# the error pages are static, so their one style block is allowed by its hash, not a nonce:
# every dead link gets byte-for-byte the same answer
_ERROR_POLICY = _PAGE_POLICY.replace(
    "'nonce-{nonce}'",
    "'sha256-" + base64.b64encode(hashlib.sha256(_ERROR_STYLE.encode()).digest()).decode() + "'",
)


def _page(message: str, *, status: int, extra: dict[str, Any] | None = None) -> Response:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>Not available</title><style>{_ERROR_STYLE}</style>"
        f"</head><body><p>{message}</p></body></html>"
    )
    headers = {**_COMMON_HEADERS, "Content-Security-Policy": _ERROR_POLICY, **(extra or {})}
    return HTMLResponse(body, status_code=status, headers=headers)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
