"""The one place ticket lists are built: the native `GET /api/v1/tickets`, the Tickiti
`tickets/query` and index, and the CLI's `ticket list` all describe what they want as a
`TicketFilter` (or a tree of them, from the `q` language) and a sort, and get their rows here.

A `TicketFilter` is a conjunction: each field narrows the list, and a field holding several
values accepts any of them (except `tags_all`, where every tag must be on the ticket). `AllOf`,
`AnyOf` and `Not` combine filters into the boolean trees the query language produces, so a `q`
term and the query-string parameter of the same name compile to the same SQL.

Full text (`TextTerm`) runs against `ticket_search`, one document per ticket (subject plus the
text of every response) kept by triggers in the transaction of each write (migration 0014):
an FTS5 table on SQLite, a table with a `tsvector` column and a GIN index on PostgreSQL. Both
fold case and accents; a term with CJK characters, which neither tokenizer splits into words,
is matched as a substring of the document instead (search_text.py decides which).

The relevance order puts the tickets whose subject holds every required term first, then the
others, newest first within each tier: both tiers come straight off the full-text index in
ticket id order, so a page costs the same whether a word is in 10 tickets or in 15,000
(ranking every match by bm25 / ts_rank cost 100-300 ms for a common word at 100,000 tickets;
docs/performance.md).

Trashed tickets are never listed; merged-away tickets are, like every other read, with
`merged_into` set. Nothing here flushes or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    text,
    true,
    tuple_,
    union_all,
)
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from mailhelpdesk.domain.events import EventType
from mailhelpdesk.domain.models import (
    Attachment,
    Queue,
    Response,
    Ticket,
    TicketCC,
    TicketEvent,
    TicketFieldValue,
    TicketTag,
)
from mailhelpdesk.store import rows, search_text

TEXT_MODES = ("subject", "content", "subject_content")
# sort keys (resources.md §2), each a column of tickets; ties are broken by number
SORT_KEYS = ("number", "created_at", "updated_at", "due_at", "priority", "status", "subject")
RELEVANCE = "relevance"  # ranked by full text: page/per_page only (a rank has no stable keyset)


@dataclass(frozen=True)
class TextTerm:
    """A free word or a quoted phrase of the query language: the ticket's subject or any of its
    messages contains it (as whole words, accents and case folded)."""

    text: str
    phrase: bool = False


@dataclass(frozen=True)
class FieldMatch:
    """A custom field (`cf.<name>`) holding a value: `candidates` are the JSON texts a stored
    value may equal; with `element`, the stored value is a JSON list that holds one of them."""

    name: str
    candidates: tuple[str, ...]
    element: bool = False


@dataclass(frozen=True)
class TicketFilter:
    """Each field narrows the list (AND); a field's several values are alternatives (OR)."""

    statuses: Sequence[str] = ()
    queues: Sequence[str] = ()
    raised: Sequence[str] = ()  # the requester's address
    numbers: Sequence[int] = ()
    priorities: Sequence[int] = ()
    assigned: Sequence[str] = ()
    # text mode -> phrases (OR-ed) -> words (AND-ed); a word matches a substring, any case
    # (the Tickiti criteria of api-contract.md §4.6; the native list uses `text`)
    phrases: Mapping[str, Sequence[Sequence[str]]] = field(default_factory=dict)
    participants: Sequence[str] = ()  # originator, a CC or the author of any response
    hashtags: Sequence[str] = ()  # any of them
    unassigned: bool = False
    created_from: datetime | None = None  # every bound is inclusive
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # the queues the asking token sees, lower-cased (services/visibility.py); None: every queue
    visible_queues: frozenset[str] | None = None
    order: str = "number"  # number: newest number first | priority: most urgent first, then number
    # -- the native list (resources.md §2) --------------------------------------------------------
    assigned_any: bool = False  # assignee=any
    contact_ids: Sequence[int] = ()
    tags_all: Sequence[str] = ()  # every one of them
    due_from: datetime | None = None
    due_to: datetime | None = None
    unresponded: bool | None = None  # True: no agent response yet; False: at least one
    breached: bool | None = None  # True: an sla_breach event is in the history
    has_attachments: bool | None = None  # a non-inline attachment on any response
    fields: Sequence[FieldMatch] = ()
    text: Sequence[TextTerm] = ()  # every term must match
    # -- the HappyFox list (http/compat/happyfox_list.py), in its own terms --------------------
    # True: the last public message is the customer's (HappyFox's `unresponded`)
    awaiting_reply: bool | None = None
    # the latest public message of an agent / of the customer, within bounds (inclusive)
    staff_replied_from: datetime | None = None
    staff_replied_to: datetime | None = None
    customer_replied_from: datetime | None = None
    customer_replied_to: datetime | None = None


@dataclass(frozen=True)
class AllOf:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr = TicketFilter | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Sort:
    """A sort key and its direction; ties are broken by number in the same direction."""

    key: str = "updated_at"
    descending: bool = True

    @classmethod
    def parse(cls, value: str) -> Sort:
        """`field` or `-field`; ValueError for anything else."""
        raw = value.strip()
        key = raw.lstrip("-")
        if (
            key not in (*SORT_KEYS, RELEVANCE)
            or raw.count("-") > 1
            or (raw != key and key == RELEVANCE)
        ):
            raise ValueError(
                f"sort is one of {', '.join(SORT_KEYS)}, {RELEVANCE}, optionally with '-'"
            )
        return cls(key, raw.startswith("-") or key == RELEVANCE)

    def __str__(self) -> str:
        return ("-" if self.descending and self.key != RELEVANCE else "") + self.key


@dataclass(frozen=True)
class ListRequest:
    """What one list asks for: the filters (AND-ed), the sort, and a page or a keyset position."""

    where: Sequence[Expr] = ()
    sort: Sort = field(default_factory=Sort)
    limit: int = 25
    offset: int = 0
    after: tuple[Any, int] | None = None  # (sort key value, number) of the last row seen
    count: bool = True  # also count every matching ticket (page mode)
    # count at most this many (None: exactly): a count reads every match, a page does not
    count_cap: int | None = None


# a ticket read for a list: the tickets table's columns by name, as on a Ticket, without the
# ORM object (building 25-100 of them was a third of a list page's own time)
TicketRow = Row[*tuple[Any, ...]]


class Listed(NamedTuple):
    """One page of tickets and the count: `total` (None when not counted) is exact below the
    cap unless `sampled`: then it counts the matches among the first `count_cap` hits of the
    full-text index, and more may lie beyond them (a lower bound, like a count at the cap)."""

    rows: list[TicketRow]
    total: int | None
    sampled: bool


def list_tickets(session: Session, req: ListRequest) -> Listed:
    """The tickets of one page, in order, and how many match in all (None when not counted)."""
    rows_query, count_query = statements(session, req)
    connection = session.connection()
    total, sampled = None, False
    if count_query is not None:
        counted = connection.execute(count_query).one()
        total = int(counted[0])
        # a full-text count: (matched, examined), examined stopping at the cap
        sampled = len(counted) > 1 and int(counted[1]) >= (req.count_cap or 0)
    return Listed(list(connection.execute(rows_query).all()), total, sampled)


def statements(session: Session, req: ListRequest) -> tuple[Any, Any]:
    """The SELECT of the page's tickets and, when counting, the SELECT count(*) of all that
    match (of at most `count_cap` of them): what list_tickets runs (and the benchmark runs
    straight in the database). Each filter is compiled once per request, for whichever of the
    two shapes below uses it: building SQLAlchemy expressions is a good part of a request.
    On PostgreSQL a time range apart from the sort key is counted here first, up to
    NARROW_RANGE, to choose the page's ORDER BY (`_narrow_range_apart`)."""
    compiled = _Compiled(session, req.where)
    counted = None
    if req.count:
        counted = _count_by_text(compiled, req.count_cap)
        if counted is None:
            counted = _count(compiled.conditions(), req.count_cap)
    if req.sort.key == RELEVANCE:
        return _by_relevance(compiled, req), counted
    query = select(Ticket).where(*compiled.conditions())
    column = _sort_column(req.sort.key)
    number = col(Ticket.number)
    if req.after is not None:
        query = query.where(_after(column, number, req.sort, req.after))
    key = column
    if compiled.dialect == "postgresql" and _narrow_range_apart(compiled, req.sort.key):
        key = _not_indexed(column, req.sort.key)
    # NULLS LAST only where NULLs exist (due_at): on a NOT NULL column it would stop
    # PostgreSQL from reading a descending order off the ascending (key, number) index
    first = key.desc() if req.sort.descending else key.asc()
    if req.sort.key == "due_at":
        first = first.nulls_last()
    order = [first, number.desc() if req.sort.descending else number.asc()]
    return query.order_by(*order).offset(_n(req.offset)).limit(_n(req.limit)), counted


class _Compiled:
    """A request's filters as SQL, compiled when first asked for, in two shapes: every filter
    as a condition on `tickets` (`conditions`), and, when text terms are required at the top
    level, those terms (`required`, for the full-text index to drive the query) apart from
    the other filters as tests of one row (`others`)."""

    def __init__(self, session: Session, where: Sequence[Expr]) -> None:
        self.session, self.where = session, where
        self.dialect = session.get_bind().dialect.name
        self.required, self._rest = _split_required(where)
        self._conditions: list[ColumnElement[bool]] | None = None
        self._others: list[ColumnElement[bool]] | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        if self._conditions is None:
            probe = _has_time_range(self.where)
            self._conditions = [
                col(Ticket.deleted_at).is_(None),
                *(compile_expr(self.session, e, probe=probe) for e in self.where),
            ]
        return self._conditions

    def others(self) -> list[ColumnElement[bool]]:
        if self._others is None:
            self._others = [
                col(Ticket.deleted_at).is_(None),
                *(compile_expr(self.session, e, probe=True) for e in self._rest),
            ]
        return self._others


def _n(value: int) -> Any:
    """A LIMIT or OFFSET written into the SQL: with `LIMIT ?` SQLite does not know the page is
    small and reads `status=open&queue=Sales&assignee=none` off the updated_at index (60 ms)
    instead of the 300 entries of ix_tickets_status_live (1 ms)."""
    return literal_column(str(int(value)))


def _count(conditions: list[ColumnElement[bool]], cap: int | None) -> Any:
    """count(*) of the matching tickets; with a cap, of at most `cap` of them (a count reads
    every match: 30,000 open tickets cost a 30,000-entry index walk, a page 26 rows)."""
    if cap is None:
        return sa_select(func.count()).select_from(Ticket).where(*conditions)
    some: Any = sa_select(literal_column("1")).select_from(Ticket).where(*conditions).limit(_n(cap))
    return sa_select(func.count()).select_from(some.subquery("capped"))


def _count_by_text(compiled: _Compiled, cap: int | None) -> Any:
    """The capped count driven by the full-text index when the filters require text terms:
    `SELECT matched, examined` over at most `cap` of the index's hits (search_text.counted_hits),
    each joined to its ticket and tested with the other filters and a phrase's positions.

    A count of the matches up to the cap read hits until it found `cap` matches: every one of
    them when the other filters are rare among the hits (`refund (tag:vip OR priority:urgent)
    -status:closed`: 10,000 "refund" hits tested to find 1,000, 70 ms on PostgreSQL at 100,000
    tickets). Reading `cap` hits bounds the work whatever the filters; when they run out first
    the count is exact, otherwise it is the lower bound `Listed.sampled` says. As an
    `id IN (hits)` condition, every hit was collected before the first was counted. None when
    there is no such term or no cap."""
    if cap is None or not compiled.required:
        return None
    counted = search_text.counted_hits(compiled.dialect, compiled.required)
    if counted is None:
        return None
    tickets = rows.table_of(Ticket)
    tests = [col(Ticket.id) == counted.hits.c.ticket_id, *compiled.others()]
    if counted.positions is not None:
        tests.append(counted.positions)
    # each hit joined to its ticket when it passes (the LEFT JOIN keeps the others, counted as
    # examined), under the cap: the join under a LIMIT is a nested loop stopping after `cap`
    read: Any = (
        sa_select(tickets.c.id.label("matched"))
        .select_from(counted.hits.outerjoin(tickets, and_(*tests)))
        .limit(_n(cap))
        .subquery("read")
    )
    return sa_select(func.count(read.c.matched), func.count())


def _text_driven(tier: search_text.Tier, others: list[ColumnElement[bool]], *columns: Any) -> Any:
    """`columns` of the tickets of a full-text tier with the other filters, read off the index:
    every other filter is a test of one row."""
    tickets = rows.table_of(Ticket)
    return (
        sa_select(*columns)
        .select_from(tier.table)
        .join(tickets, col(Ticket.id) == tier.key)
        .where(tier.condition, *others)
    )


def _by_relevance(compiled: _Compiled, req: ListRequest) -> Any:
    """The page in the relevance order: subject hits, then the rest, newest first in each.

    When the filters require text terms (at the top level, AND-ed with the rest), each tier
    is read off the full-text index in ticket id order and joined to the other filters, and
    the first offset + limit rows of each tier are enough for the page. Otherwise (text only
    under OR or NOT) the tier is computed for every match and sorted."""
    dialect = compiled.dialect
    tiers = search_text.tiers(dialect, compiled.required) if compiled.required else None
    if tiers is None:
        terms = [t for e in req.where for t in _positive_terms(e)]
        hits = search_text.subject_hits(dialect, terms)
        first = [case((col(Ticket.id).in_(hits), 0), else_=1)] if hits is not None else []
        return (
            select(Ticket)
            .where(*compiled.conditions())
            .order_by(*first, col(Ticket.id).desc())
            .offset(_n(req.offset))
            .limit(_n(req.limit))
        )
    # the arms carry ids only, joined to the tickets once at the end: an arm of every ticket
    # column made SQLAlchemy build a proxy of each column for each subquery on every request,
    # about half the request's time (docs/performance.md, "Search")
    arms = []
    for rank, tier in enumerate(tiers):
        arm = (
            _text_driven(tier, compiled.others(), tier.key.label("id"), literal(rank).label("tier"))
            .order_by(tier.key.desc())
            .limit(_n(req.offset + req.limit))
        )
        arms.append(sa_select(arm.subquery(f"tier{rank}")))
    tiered = union_all(*arms).subquery("tiered")
    tickets = rows.table_of(Ticket)
    return (
        sa_select(tickets)
        .join_from(tickets, tiered, tickets.c.id == tiered.c.id)
        .order_by(tiered.c.tier, tiered.c.id.desc())
        .offset(_n(req.offset))
        .limit(_n(req.limit))
    )


def _split_required(where: Sequence[Expr]) -> tuple[list[TextTerm], list[Expr]]:
    """The text terms every result must match (at the top level of the AND-ed filters, with
    words the index can look up), and the filters without them."""
    required: list[TextTerm] = []
    rest: list[Expr] = []
    for expr in where:
        if isinstance(expr, AllOf):
            inner, kept = _split_required(expr.items)
            required.extend(inner)
            rest.append(AllOf(tuple(kept)))
        elif isinstance(expr, TicketFilter) and expr.text:
            indexed = [t for t in expr.text if search_text.indexed(t)]
            required.extend(indexed)
            rest.append(replace(expr, text=tuple(t for t in expr.text if t not in indexed)))
        else:
            rest.append(expr)
    return required, rest


def query_tickets(
    session: Session, flt: TicketFilter, *, offset: int, limit: int, extra: Sequence[Expr] = ()
) -> tuple[list[TicketRow], int]:
    """The Tickiti lists: one page, newest number first (or most urgent first), and the total;
    `extra` filters are AND-ed (the HappyFox list's filters the Tickiti criteria lack)."""
    # "priority": most urgent first, then newest number (the order of sort=-priority)
    sort = Sort("priority", True) if flt.order == "priority" else Sort("number", True)
    listed = list_tickets(
        session, ListRequest(where=(flt, *extra), sort=sort, limit=limit, offset=offset)
    )
    return listed.rows, int(listed.total or 0)


def sort_value(ticket: Ticket | TicketRow, key: str) -> Any:
    """The value of the sort key on a row, as the keyset of the next page holds it."""
    return getattr(ticket, key)


def _sort_column(key: str) -> Any:
    return col(getattr(Ticket, key))


def _after(column: Any, number: Any, sort: Sort, after: tuple[Any, int]) -> ColumnElement[bool]:
    """Rows strictly after (value, number) in the sort order, as a row-value comparison the
    index (key, number) serves as a range; NULL values last in either direction (only due_at is
    nullable)."""
    value, last = after
    if sort.key == "number":
        simple: ColumnElement[bool] = number < last if sort.descending else number > last
        return simple
    if value is None:  # among the NULLs at the end: by number only
        return and_(column.is_(None), number < last if sort.descending else number > last)
    pair, bound = tuple_(column, number), tuple_(literal(value, column.type), literal(last))
    beyond: ColumnElement[bool] = pair < bound if sort.descending else pair > bound
    return or_(beyond, column.is_(None)) if sort.key == "due_at" else beyond


def compile_expr(session: Session, expr: Expr, *, probe: bool = False) -> ColumnElement[bool]:
    """The WHERE condition of a filter tree, on the session's database. With `probe`, tag
    filters are a correlated EXISTS (a lookup per candidate ticket) instead of an IN list of
    every tagged ticket: right when something else drives the query (a time range, the
    full-text index, or an OR / NOT around the tag, which no IN list can drive)."""
    if isinstance(expr, TicketFilter):
        return compile_filter(session, expr, probe=probe)
    if isinstance(expr, Not):
        return not_(compile_expr(session, expr.item, probe=True))
    nested = probe or isinstance(expr, AnyOf)
    parts = [compile_expr(session, e, probe=nested) for e in expr.items]
    if isinstance(expr, AllOf):
        return and_(true(), *parts)
    return or_(false(), *parts)


# a time range holding fewer tickets than this is sorted rather than met in the sort's index
NARROW_RANGE = 10_000


def _narrow_range_apart(compiled: _Compiled, sort_key: str) -> bool:
    """PostgreSQL: a time range among the AND-ed filters bounds some column, not the sort key,
    and holds fewer than NARROW_RANGE tickets (counted off the range's own index, at most
    NARROW_RANGE entries: 2 ms at 100,000 tickets).

    The planner would otherwise read the page off the sort key's index, stopping after a page
    of matches, as if the bounded column were independent of the sort order; but created_at,
    updated_at and number rise together, and a range in the middle of the desk is met only
    half-way through that index (tag + 30 days: half the desk read, 25-50 ms at 100,000
    tickets). Sorting the matches of a narrow range costs a few milliseconds; a wide one (a
    range as wide as the desk: 80 ms to sort 100,000) keeps the index, where matches are met
    early. A range on the sort key itself is that index's own range and needs nothing."""
    bounds = _range_bounds(compiled.where)
    if not bounds or sort_key in {name for name, _ in bounds}:
        return False
    held = compiled.session.connection().execute(
        _count([condition for _, condition in bounds], NARROW_RANGE)
    )
    return int(held.scalar_one()) < NARROW_RANGE


def _range_bounds(where: Sequence[Expr]) -> list[tuple[str, ColumnElement[bool]]]:
    """The time bounds every result must meet (AND-ed filters), with the column each bounds."""
    found: list[tuple[str, ColumnElement[bool]]] = []
    for expr in where:
        if isinstance(expr, AllOf):
            found.extend(_range_bounds(expr.items))
        elif isinstance(expr, TicketFilter):
            found.extend(_bounds(expr))
    return found


def _not_indexed(column: Any, key: str) -> Any:
    """The sort key as an expression no index of PostgreSQL serves (the same values, in the
    same order): the planner then reads the matches through the filters' own indexes (the time
    range's) and sorts them, a few milliseconds for thousands, instead of hoping to find a
    page's worth early in the key's index."""
    if key in ("created_at", "updated_at", "due_at"):
        return column + literal_column("interval '0'")
    if key in ("number", "priority"):
        return column + literal_column("0")
    return column.concat(literal_column("''"))


def _has_time_range(where: Sequence[Expr]) -> bool:
    """A created/updated/due bound among the AND-ed filters: SQLite then reads the range off
    its index, and a tag is better tested per ticket (tag + 30 days: 100 ms as an IN list
    of the 15,000 tagged tickets, 40 ms as a probe, at 100,000 tickets)."""
    return bool(_range_bounds(where))


def _positive_terms(expr: Expr) -> list[TextTerm]:
    """The text terms that rank a result: every one not under a negation."""
    if isinstance(expr, TicketFilter):
        return list(expr.text)
    if isinstance(expr, Not):
        return []
    return [t for e in expr.items for t in _positive_terms(e)]


def compile_filter(
    session: Session, flt: TicketFilter, *, probe: bool = False
) -> ColumnElement[bool]:
    """One filter as a condition on `tickets` (every field present AND-ed); `probe` as in
    compile_expr."""
    where: list[ColumnElement[bool]] = []
    if flt.statuses:
        where.append(col(Ticket.status).in_(list(flt.statuses)))
    if flt.queues:
        where.append(col(Ticket.queue_id).in_(_queue_ids(frozenset(q.lower() for q in flt.queues))))
    if flt.visible_queues is not None:
        where.append(col(Ticket.queue_id).in_(_queue_ids(flt.visible_queues)))
    if flt.raised:
        where.append(col(Ticket.originator_email).in_([r.lower() for r in flt.raised]))
    if flt.numbers:
        where.append(col(Ticket.number).in_(list(flt.numbers)))
    if flt.priorities:
        where.append(col(Ticket.priority).in_(list(flt.priorities)))
    if flt.assigned:
        # assignees are stored lower-cased (services/ticket_changes.assign)
        where.append(col(Ticket.assigned_to_email).in_([a.lower() for a in flt.assigned]))
    if flt.unassigned:
        where.append(col(Ticket.assigned_to_email).is_(None))
    if flt.assigned_any:
        where.append(col(Ticket.assigned_to_email).is_not(None))
    if flt.contact_ids:
        where.append(col(Ticket.contact_id).in_(list(flt.contact_ids)))
    for mode, phrases in flt.phrases.items():
        if phrases:
            where.append(or_(*[and_(*[_word(mode, w) for w in words]) for words in phrases]))
    if flt.participants:
        emails = [p.lower() for p in flt.participants]
        where.append(
            or_(
                col(Ticket.originator_email).in_(emails),
                exists().where(
                    col(TicketCC.ticket_id) == col(Ticket.id),
                    func.lower(col(TicketCC.email)).in_(emails),
                ),
                exists().where(
                    col(Response.ticket_id) == col(Ticket.id),
                    func.lower(col(Response.created_by_email)).in_(emails),
                ),
            )
        )
    if flt.hashtags:
        where.append(_tagged([t.lower() for t in flt.hashtags], probe=probe))
    where.extend(_tagged([tag.lower()], probe=probe) for tag in flt.tags_all)
    where.extend(condition for _, condition in _bounds(flt))
    if flt.unresponded is not None:
        answered = exists().where(
            col(Response.ticket_id) == col(Ticket.id),
            col(Response.staff_response).is_(True),
            col(Response.is_internal).is_(False),
        )
        where.append(not_(answered) if flt.unresponded else answered)
    if flt.breached is not None:
        breach = exists().where(
            col(TicketEvent.ticket_id) == col(Ticket.id),
            col(TicketEvent.type) == EventType.sla_breach.value,
        )
        where.append(breach if flt.breached else not_(breach))
    if flt.has_attachments is not None:
        attached = exists().where(
            col(Response.ticket_id) == col(Ticket.id),
            col(Attachment.response_id) == col(Response.id),
            col(Attachment.is_inline).is_(False),
        )
        where.append(attached if flt.has_attachments else not_(attached))
    where.extend(_field(match) for match in flt.fields)
    if flt.awaiting_reply is not None:
        last = (
            sa_select(col(Response.kind))
            .where(col(Response.ticket_id) == col(Ticket.id), col(Response.is_internal).is_(False))
            .order_by(col(Response.created_at).desc(), col(Response.id).desc())
            .limit(1)
            .scalar_subquery()
        )
        waiting = func.coalesce(last, "") == "customer"
        where.append(waiting if flt.awaiting_reply else not_(waiting))
    for kind, low, high in (
        ("agent", flt.staff_replied_from, flt.staff_replied_to),
        ("customer", flt.customer_replied_from, flt.customer_replied_to),
    ):
        if low is None and high is None:
            continue
        latest = (
            sa_select(func.max(col(Response.created_at)))
            .where(
                col(Response.ticket_id) == col(Ticket.id),
                col(Response.is_internal).is_(False),
                col(Response.kind) == kind,
            )
            .scalar_subquery()
        )
        if low is not None:
            where.append(latest >= low)
        if high is not None:
            where.append(latest <= high)
    if flt.text:
        dialect = session.get_bind().dialect.name
        where.extend(search_text.matches(dialect, term) for term in flt.text)
    return and_(true(), *where)


def _bounds(flt: TicketFilter) -> list[tuple[str, ColumnElement[bool]]]:
    """The time bounds set on the filter (each inclusive), with the column each bounds."""
    found: list[tuple[str, ColumnElement[bool]]] = []
    for name, low, high in (
        ("created_at", flt.created_from, flt.created_to),
        ("updated_at", flt.updated_from, flt.updated_to),
        ("due_at", flt.due_from, flt.due_to),
    ):
        column = col(getattr(Ticket, name))
        if low is not None:
            found.append((name, column >= low))
        if high is not None:
            found.append((name, column <= high))
    return found


def _tagged(names: list[str], *, probe: bool = False) -> ColumnElement[bool]:
    """The ticket has one of these tags (lower-cased names; tags compare without case), as a
    lookup per ticket (`probe`) or as the list of tagged tickets (which can drive the query);
    ix_ticket_tags_lower_name (lower(name), ticket_id) serves both."""
    if probe:
        return exists().where(
            col(TicketTag.ticket_id) == col(Ticket.id),
            func.lower(col(TicketTag.name)).in_(names),
        )
    return col(Ticket.id).in_(
        sa_select(col(TicketTag.ticket_id)).where(func.lower(col(TicketTag.name)).in_(names))
    )


def _field(match: FieldMatch) -> ColumnElement[bool]:
    value = col(TicketFieldValue.value)
    if match.element:
        test = or_(*[value.contains(c, autoescape=True) for c in match.candidates])
    else:
        # the prefix lets ix_ticket_field_values_name_value (name, substr(value, 1, 100)) serve
        test = or_(*[and_(_prefix(value) == c[:100], value == c) for c in match.candidates])
    return col(Ticket.id).in_(
        sa_select(col(TicketFieldValue.ticket_id)).where(
            col(TicketFieldValue.name) == match.name, test
        )
    )


def _prefix(value: Any) -> Any:
    """substr(value, 1, 100) with its numbers written into the SQL: as bound parameters the
    expression would not be the index's (SQLite then read every row: 150 ms at 100,000)."""
    return func.substr(value, literal_column("1"), literal_column("100"))


def _queue_ids(names: frozenset[str]) -> Any:
    """The ids of the queues named (lower-cased names), as a subquery."""
    return select(Queue.id).where(func.lower(Queue.name).in_(sorted(names)))


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _word(mode: str, word: str) -> Any:
    """One word of a Tickiti text criterion: in the subject, in any response's text, or either."""
    in_subject = col(Ticket.subject).ilike(_like(word), escape="\\")
    in_body = exists().where(
        col(Response.ticket_id) == col(Ticket.id),
        col(Response.plain_text).ilike(_like(word), escape="\\"),
    )
    return {"subject": in_subject, "content": in_body}.get(mode, or_(in_subject, in_body))


def queue_exists(session: Session, name: str) -> bool:
    return session.exec(select(Queue.id).where(Queue.name == name)).first() is not None


def explain(session: Session, req: ListRequest) -> list[str]:
    """The database's plan for the rows query of `req` (docs/performance.md, the benchmark)."""
    rows_query, _ = statements(session, req)
    bind = session.get_bind()
    compiled = rows_query.compile(bind, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if bind.dialect.name == "sqlite" else "EXPLAIN "
    return [" ".join(str(c) for c in row) for row in session.execute(text(prefix + str(compiled)))]
