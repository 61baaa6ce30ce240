"""The HappyFox tickets API (seed 004, resources.md §6) under /compat/happyfox: every path of
the document as it writes it, served by a sub-application so that even its 404 and 405 answers
take HappyFox's `{"error": …}` shape. The routes are declared here; how a request runs is
happyfox_route.py, the writes happyfox_writes.py, the list happyfox_list.py, the answer shapes
happyfox_shapes.py and the vocabulary happyfox_vocab.py. docs/compat.md is the endpoint table.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from mailhelpdesk.config import HappyFoxConfig
from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.errors import NotFoundError
from mailhelpdesk.http.compat import happyfox_list as listing
from mailhelpdesk.http.compat import happyfox_writes as writes
from mailhelpdesk.http.compat.happyfox_route import PREFIX, Call, Route, add_download, add_route
from mailhelpdesk.http.compat.happyfox_shapes import Lookups, ticket_detail
from mailhelpdesk.http.compat.happyfox_vocab import Vocabulary
from mailhelpdesk.http.endpoint import Runtime
from mailhelpdesk.http.errors import JSON_TYPE
from mailhelpdesk.services import ticket_reads, visibility
from mailhelpdesk.services.api_requests import FieldErrors

API = "/api/1.1/json"
ONE = API + "/ticket/{number}"
READ, WRITE = "tickets:read", "tickets:write"


class DetailQueryIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    show_cf_changes: str | None = Field(default=None, max_length=10)


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


class Reads:
    def __init__(self, rt: Runtime, vocab: Vocabulary) -> None:
        self.rt, self.vocab = rt, vocab

    def detail(self, session: Session, number: int, *, cf: bool = False) -> dict[str, Any]:
        """Topic 3: one ticket with its updates (and custom field changes with `cf`)."""
        native = ticket_reads.show(session, ticket_number=number)
        return ticket_detail(native, Lookups.read(session, self.vocab), cf=cf)

    def show(self, session: Session, call: Call) -> dict[str, Any]:
        return self.detail(session, call.number or 0, cf=_true(call.query.get("show_cf_changes")))

    def tickets(self, session: Session, call: Call) -> dict[str, Any]:
        """Topics 1, 2, 2.1 and 19: a page of tickets in the document's envelope."""
        m = listing.ListQueryIn.model_validate(call.query)
        search = listing.translate(session, self.vocab, m, now=self.rt.clock.now())
        lookups = Lookups.read(session, self.vocab)
        visible = visibility.viewer_for(session, call.token).queues
        native_order = search.sort in listing.NATIVE_SORTS
        found: dict[str, Any] = {"tickets": [], "meta": {"total": 0}}
        if not search.nothing:
            found = ticket_reads.query(
                session,
                perspective=search.perspective,
                criteria=search.criteria,
                page=m.page if native_order else 1,
                per_page=m.size if native_order else listing.SORT_CAP,
                visible_queues=visible,
                extra=search.native,
            )
        total = int(found["meta"]["total"])
        if not native_order and total > listing.SORT_CAP:
            raise FieldErrors(
                {"sort": f"sorting more than {listing.SORT_CAP} tickets: narrow the search with q"}
            )
        minify = _true(m.minify_response)
        updates = m.show_updates == "1" or _true(m.show_updates)
        items = (
            [
                ticket_detail(
                    ticket_reads.show(session, ticket_number=t["number"]),
                    lookups,
                    with_updates=updates,
                )
                for t in found["tickets"]
            ]
            if not (minify and native_order)
            else [{"id": t["number"]} for t in found["tickets"]]
        )
        if not native_order:
            key, descending = listing.sort_key(search.sort)
            items.sort(key=key, reverse=descending)
            start = (m.page - 1) * m.size
            items = items[start : start + m.size]
        data: list[Any] = [t["id"] for t in items] if minify else items
        if m.fields and not minify:
            wanted = [f.strip() for f in m.fields.split(",") if f.strip()]
            data = [{k: t[k] for k in wanted if k in t} for t in items]
        start = (m.page - 1) * m.size
        return {
            "page_info": {
                "count": len(data),
                "last_index": total,
                "page_count": (total + m.size - 1) // m.size,
                "start_index": start + 1 if data else 0,
                "end_index": start + len(data),
            },
            "data": data,
            "filters": {
                "status": m.status or "_all",
                "category": m.category or "_all",
                "q": m.q or "",
                "sort": m.sort or "updated",
            },
        }

    def attachment(self, session: Session, call: Call) -> dict[str, Any]:
        """The file behind a message attachment's `url`, as the native attachment read gives it
        (review-gated types need `?intent=review_ok`, as there)."""
        raw = str(call.path.get("attachment_id", ""))
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:12]) <= MAX_INTEGER:
            raise NotFoundError(f"Attachment {raw[:20]} not found.")
        return ticket_reads.attachment(
            session,
            ticket_number=call.number or 0,
            attachment_id=int(raw),
            intent=call.query.get("intent"),
        )

    def custom_fields(self, session: Session, _call: Call) -> list[dict[str, Any]]:
        """Topic 18: the ticket custom fields, ids by their place in `[[custom_fields]]`."""
        categories = sorted(Lookups.read(session, self.vocab).queues)
        return [self.vocab.field_definition(f, categories) for f in self.vocab.fields]


def routes(rt: Runtime, vocab: Vocabulary) -> list[Route]:
    reads = Reads(rt, vocab)
    w = writes.Writes(rt, vocab, reads.detail)
    rename = w.rename

    def write(path: str, handle: Any, model: type[BaseModel], summary: str, **kw: Any) -> Route:
        return Route(
            path,
            "POST",
            kw.pop("ability", WRITE),
            handle,
            summary,
            model=model,
            ticket=True,
            rename=rename,
            **kw,
        )

    def list_route(path: str, summary: str) -> Route:
        return Route(
            path, "GET", READ, reads.tickets, summary, query=listing.ListQueryIn, writes=False
        )

    return [
        list_route(API + "/tickets/", "1, 2, 19. List tickets (paged)"),
        list_route(
            "/api/json/1.1/tickets/", "19. List tickets (the path as the document writes it)"
        ),
        Route(
            API + "/tickets/",
            "POST",
            "create-ticket",
            w.create,
            "4, 5, 17. Create a ticket (JSON or multipart with attachments), or many (a list)",
            model=writes.CreateIn,
            multipart=True,
            bulk=True,
            rename=rename,
        ),
        Route(
            ONE + "/",
            "GET",
            READ,
            reads.show,
            "3. Ticket detail with updates (show_cf_changes=true: custom field changes)",
            query=DetailQueryIn,
            writes=False,
            ticket=True,
        ),
        write(
            ONE + "/staff_update/",
            w.staff_update,
            writes.StaffIn,
            "7. Add a staff update",
            multipart=True,
            field_errors="dict",
        ),
        write(
            ONE + "/staff_pvtnote/",
            w.staff_note,
            writes.StaffIn,
            "8. Add a staff private note",
            multipart=True,
            field_errors="dict",
        ),
        write(
            ONE + "/user_reply/",
            w.user_reply,
            writes.UserReplyIn,
            "9. Add a contact reply",
            multipart=True,
            ability="ticket-respond",
        ),
        write(
            ONE + "/update_custom_fields/",
            w.update_custom_fields,
            writes.StaffIn,
            "10. Edit custom field values",
            field_errors="dict",
        ),
        write(ONE + "/update_tags/", w.update_tags, writes.TagsIn, "11. Update tags"),
        write(ONE + "/subscribe/", w.subscribe, writes.SubscribeIn, "12. Subscribe agents"),
        write(ONE + "/unsubscribe/", w.unsubscribe, writes.StaffIdIn, "13. Unsubscribe"),
        write(ONE + "/forward/", w.forward, writes.ForwardIn, "14. Forward to an address"),
        write(ONE + "/move/", w.move, writes.MoveIn, "15. Move to another category"),
        write(ONE + "/delete/", w.delete, writes.StaffIdIn, "16. Delete (to the trash)"),
        Route(
            API + "/ticket-inline-attachment",
            "POST",
            WRITE,
            w.inline_attachment,
            "6. Upload an inline picture (multipart/form-data `file`); its url goes in the html",
            model=writes.InlineIn,
            multipart=True,
            rename=rename,
        ),
        Route(
            API + "/ticket_custom_fields/",
            "GET",
            READ,
            reads.custom_fields,
            "18. List ticket custom fields",
            writes=False,
        ),
        Route(
            API + "/user_custom_fields/",
            "GET",
            READ,
            lambda _session, _call: [],
            "Contact custom fields (named by the introduction): contacts have none",
            writes=False,
        ),
    ]


def mount(api: FastAPI, rt: Runtime, config: HappyFoxConfig) -> None:
    """Serve the HappyFox API under /compat/happyfox (its own OpenAPI document at
    /compat/happyfox/openapi.json, public as the native one is)."""
    vocab = Vocabulary(config, tuple(rt.settings.notify.custom_fields))
    app = FastAPI(title="mailhelpdesk: HappyFox tickets API", docs_url=None, redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "Not found.", 405: "This endpoint does not accept that method."}
        return JSONResponse(
            {"error": message.get(exc.status_code, str(exc.detail))},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=JSON_TYPE,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": [{"field": "request", "errors": [str(e.get("msg")) for e in exc.errors()]}]},
            status_code=400,
            media_type=JSON_TYPE,
        )

    for route in routes(rt, vocab):
        add_route(app, rt, route)
    reads, w = Reads(rt, vocab), writes.Writes(rt, vocab, Reads(rt, vocab).detail)
    add_download(app, rt, ONE + "/attachments/{attachment_id}/", READ, reads.attachment)
    add_download(app, rt, "/inline/{digest}/", READ, w.inline_picture)
    api.mount(PREFIX, app)
    mounted = api.router.routes[-1]
    if isinstance(mounted, Mount):  # a line break (%0A) in a path must reach the adapter too
        mounted.path_regex = re.compile(mounted.path_regex.pattern, re.DOTALL)
