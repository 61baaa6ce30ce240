"""The native ticket list (resources.md §2): `GET /api/v1/tickets` and the CLI's `ticket list`.

The request arrives as `name=value` pairs (the query string, or the CLI's options put into the
same shape), so the two cannot differ. Filters are AND-ed; `q` (query_language.py) adds one more
filter tree; `sort` orders (ties by number); `fields` projects the header; the page is either
`page`/`per_page` (with `meta.total`) or `cursor`, an opaque keyset position from the previous
page's `meta.next_cursor`: (sort, value of the sort key, number) of the last row, so a walk
never repeats or skips a row that existed when it started, whatever is inserted meanwhile.
A ticket updated during a walk moves in an `updated_at` order and may be met again or not at
all; `sort=number` never moves. The relevance order (the default when `q` has free text:
tickets whose subject holds the terms first, then the others, newest first in each) is
page-only. `meta.total` is exact up to COUNT_CAP tickets and a lower bound beyond
(`meta.total_exact`); with free text the count reads at most TEXT_COUNT_CAP hits of the
full-text index, and is a lower bound when there were more.

Every failure to read the request is a FieldErrors (422) naming the parameter.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlmodel import Session

from mailhelpdesk.config import CustomFieldConfig
from mailhelpdesk.domain.models import as_utc
from mailhelpdesk.services import query_language
from mailhelpdesk.services.api_requests import FieldErrors
from mailhelpdesk.services.list_terms import FILTERS, Terms, filter_for
from mailhelpdesk.services.views import ticket_headers
from mailhelpdesk.store import ticket_query
from mailhelpdesk.store.ticket_query import ListRequest, Sort, TicketFilter

DEFAULT_PER_PAGE, MAX_PER_PAGE, MAX_PAGE = 25, 100, 1_000_000
# `meta.total` counts at most this many tickets (then `total_exact` is false): counting every
# match costs a read of every match, a page only of itself (docs/performance.md, "Search")
COUNT_CAP = 10_000
# ... and with free text, at most this many: a full-text count tests every candidate ticket
# (15,000 hold "refund" in a desk of 100,000: 0.2-0.6 s on PostgreSQL, against 10-90 ms for the
# page), and a search is read for its first pages, not its total ("1,000+"); with required text
# it is also how many of the index's hits the count tests (other filters rare among the hits
# made it test 10,000 to find 1,000)
TEXT_COUNT_CAP = 1_000
MAX_VALUE_CHARS = 1000
HEADER_FIELDS = (
    "id",
    "number",
    "subject",
    "status",
    "priority",
    "queue_id",
    "originator_email",
    "assigned_to_email",
    "resolved",
    "on_hold_until",
    "created_at",
    "updated_at",
    "queue",
    "originator_name",
    "tags",
    "cc",
    "contact_id",
    "due_at",
    "resolution",
    "merged_into",
)
_PAGING = ("q", "sort", "fields", "page", "per_page", "cursor")


@dataclass(frozen=True)
class Listing:
    """A read list request: the filters and paging, as parsed from name=value pairs."""

    where: tuple[ticket_query.Expr, ...]
    sort: Sort
    fields: tuple[str, ...] | None
    page: int
    per_page: int
    cursor: tuple[Any, int] | None


def parse(
    items: Sequence[tuple[str, str]],
    *,
    definitions: Sequence[CustomFieldConfig] = (),
    visible_queues: frozenset[str] | None = None,
) -> Listing:
    """Read the name=value pairs of a list request (unknown names are ignored, like unknown
    JSON keys elsewhere); every problem found is reported at once, by parameter."""
    errors: dict[str, str] = {}
    terms = Terms(definitions)
    where: list[ticket_query.Expr] = []
    if visible_queues is not None:
        where.append(TicketFilter(visible_queues=visible_queues))
    single: dict[str, str] = {}
    has_text = False
    for name, value in items:
        if len(value) > MAX_VALUE_CHARS and name != "q":
            errors[name] = f"is at most {MAX_VALUE_CHARS} characters"
            continue
        if "\x00" in value and name != "q":
            errors[name] = "must not contain NUL"
            continue
        if name in FILTERS or name.startswith("cf."):
            try:
                where.append(filter_for(name, value, terms))
            except ValueError as exc:
                errors[name] = str(exc)
        elif name in _PAGING:
            if name in single:
                errors[name] = "is given more than once"
            single[name] = value
    if single.get("q", "").strip():
        try:
            tree = query_language.parse(single["q"], terms)
        except query_language.QueryError as exc:
            errors["q"] = str(exc)
        else:
            if tree is not None:
                where.append(tree)
                has_text = _has_text(tree)
    sort = Sort(ticket_query.RELEVANCE if has_text else "updated_at", True)
    if single.get("sort"):
        try:
            sort = Sort.parse(single["sort"])
        except ValueError as exc:
            errors["sort"] = str(exc)
    fields = None
    if single.get("fields"):
        fields = tuple(f.strip() for f in single["fields"].split(",") if f.strip())
        unknown = [f for f in fields if f not in HEADER_FIELDS]
        if unknown or not fields:
            errors["fields"] = f"names header fields: {', '.join(HEADER_FIELDS)}"
    page = _number(single, "page", 1, MAX_PAGE, errors)
    per_page = _number(single, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE, errors)
    cursor = None
    if single.get("cursor"):
        if "page" in single:
            errors["cursor"] = "goes without page"
        elif sort.key == ticket_query.RELEVANCE:
            errors["cursor"] = "is not offered for the relevance order; use page, or a sort"
        else:
            try:
                cursor = decode_cursor(single["cursor"], sort)
            except ValueError as exc:
                errors["cursor"] = str(exc)
    if errors:
        raise FieldErrors(errors)
    return Listing(tuple(where), sort, fields, page, per_page, cursor)


def listing(session: Session, req: Listing) -> dict[str, Any]:
    """One page: `{tickets: [header…], meta}`; meta has `next_cursor` (null on the last page)
    and, in page mode, `total`, `total_exact`, `page`, `per_page`: `total` is exact below the
    cap (COUNT_CAP); at the cap, `total_exact` is false and `total` means "at least that many".
    With required free text, the count tests at most TEXT_COUNT_CAP hits of the full-text index
    (store/ticket_query._count_by_text): when there are more, `total` is the matches among them,
    again "at least that many". A page that ends the list gives the exact total either way."""
    paged = req.cursor is None
    cap = count_cap(req)
    rows, total, sampled = ticket_query.list_tickets(
        session,
        ListRequest(
            where=req.where,
            sort=req.sort,
            limit=req.per_page + 1,
            offset=(req.page - 1) * req.per_page if paged else 0,
            after=req.cursor,
            count=paged,
            count_cap=cap,
        ),
    )
    more, rows = len(rows) > req.per_page, rows[: req.per_page]
    headers = ticket_headers(session, rows)
    if req.fields is not None:
        headers = [{k: h[k] for k in req.fields} for h in headers]
    next_cursor = None
    if more and rows and req.sort.key != ticket_query.RELEVANCE:
        last = rows[-1]
        next_cursor = encode_cursor(
            req.sort, ticket_query.sort_value(last, req.sort.key), last.number
        )
    meta: dict[str, Any] = {
        "per_page": req.per_page,
        "sort": str(req.sort),
        "next_cursor": next_cursor,
    }
    if paged:
        exact = (total or 0) < cap and not sampled
        if not exact and not more and (rows or req.page == 1):
            # this page ends the list: how many there are is plain from it
            total, exact = (req.page - 1) * req.per_page + len(rows), True
        meta.update(total=total, total_exact=exact, page=req.page)
    return {"tickets": headers, "meta": meta}


def count_cap(req: Listing) -> int:
    """How far `meta.total` counts for this request: TEXT_COUNT_CAP with free text."""
    return TEXT_COUNT_CAP if any(_has_text(e) for e in req.where) else COUNT_CAP


def all_headers(session: Session, req: Listing, *, limit: int | None) -> list[dict[str, Any]]:
    """Every matching ticket's header in order, up to `limit` (None: all): the CLI's list,
    which prints what it finds instead of paging."""
    rows, _, _ = ticket_query.list_tickets(
        session,
        ListRequest(where=req.where, sort=req.sort, limit=limit or 2**31 - 1, count=False),
    )
    headers = ticket_headers(session, rows)
    if req.fields is not None:
        headers = [{k: h[k] for k in req.fields} for h in headers]
    return headers


def _has_text(expr: ticket_query.Expr) -> bool:
    if isinstance(expr, TicketFilter):
        return bool(expr.text)
    if isinstance(expr, ticket_query.Not):
        return False
    return any(_has_text(e) for e in expr.items)


def _number(
    single: dict[str, str], name: str, default: int, top: int, errors: dict[str, str]
) -> int:
    raw = single.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 7 or not 1 <= int(raw) <= top:
        errors[name] = f"is a number from 1 to {top}"
        return default
    return int(raw)


def encode_cursor(sort: Sort, value: Any, number: int) -> str:
    """Opaque to clients: base64url of [sort, value, number] (times in UTC ISO 8601)."""
    if isinstance(value, datetime):
        value = {"t": (as_utc(value) or value).isoformat()}
    elif isinstance(value, date):
        value = {"d": value.isoformat()}
    raw = json.dumps([str(sort), value, number], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, sort: Sort) -> tuple[Any, int]:
    """The (value, number) of a cursor made by encode_cursor for this sort; ValueError else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        made_for, value, number = json.loads(raw)
    except (ValueError, TypeError):
        raise ValueError("is not a cursor this list gave out") from None
    if made_for != str(sort):
        raise ValueError(f"was made for sort={str(made_for)[:20]}; repeat the same sort")
    bad = ValueError("is not a cursor this list gave out")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**31:
        raise bad
    if sort.key in ("created_at", "updated_at", "due_at"):
        if value is None and sort.key == "due_at":
            return None, number
        if not (isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str)):
            raise bad
        try:
            moment = datetime.fromisoformat(value["t"])
        except ValueError:
            raise bad from None
        return moment, number
    if sort.key in ("number", "priority"):
        if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
            raise bad
        return value, number
    if not isinstance(value, str) or "\x00" in value:
        raise bad
    return value, number
