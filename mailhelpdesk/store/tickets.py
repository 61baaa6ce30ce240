"""Queries and small writers for tickets and what hangs off them. They flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    Integer,
    bindparam,
    cast,
    false,
    func,
    literal_column,
    null,
    union_all,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session, col, select

from mailhelpdesk.domain.models import (
    Agent,
    Attachment,
    Blob,
    ContactAddress,
    Counter,
    KnownMessageId,
    Queue,
    Response,
    Setting,
    Ticket,
    TicketCC,
    TicketTag,
)
from mailhelpdesk.store import lookups, rows

TICKET_NUMBER_COUNTER = "ticket_number"
_COUNTERS = rows.table_of(Counter)
_TAGS = rows.table_of(TicketTag)
_CCS = rows.table_of(TicketCC)
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
# kind 0: tags, by name; kind 1: CCs, in the order added (their id)
_TAGS_AND_CCS_OF = union_all(
    sa_select(
        literal_column("0").label("kind"),
        _TAGS.c.ticket_id,
        cast(null(), Integer).label("added"),
        _TAGS.c.name.label("value"),
    ).where(_TAGS.c.ticket_id.in_(_IDS)),
    sa_select(literal_column("1"), _CCS.c.ticket_id, _CCS.c.id, _CCS.c.email).where(
        _CCS.c.ticket_id.in_(_IDS)
    ),
).order_by(*(literal_column(name) for name in ("kind", "ticket_id", "added", "value")))
FIRST_TICKET_NUMBER = 100001
# built once (store/rows.py says why)
_TAKE_NUMBER = (
    update(_COUNTERS)
    .where(_COUNTERS.c.name == TICKET_NUMBER_COUNTER)
    .values(value=_COUNTERS.c.value + 1)
    .returning(_COUNTERS.c.value)
)


def ensure_counters(session: Session) -> None:
    """Create the counter rows up front (at start-up), so concurrent first tickets on PostgreSQL
    lock one existing row instead of racing to insert it."""
    if session.get(Counter, TICKET_NUMBER_COUNTER) is None:
        session.add(Counter(name=TICKET_NUMBER_COUNTER, value=FIRST_TICKET_NUMBER - 1))
        session.flush()
    if session.get(Counter, lookups.AGENTS_VERSION) is None:  # store/lookups.py
        session.add(Counter(name=lookups.AGENTS_VERSION, value=0))
        session.flush()


def next_ticket_number(session: Session) -> int:
    """Take the next ticket number; the row lock (or SQLite's write lock) serialises takers.
    One `UPDATE … RETURNING` (SQLite >= 3.35, PostgreSQL) in the usual case: the counter row is
    made at start-up (ensure_counters)."""
    taken = session.connection().execute(_TAKE_NUMBER).first()
    if taken is not None:
        stale = session.identity_map.get(session.identity_key(Counter, TICKET_NUMBER_COUNTER))
        if stale is not None:  # a Counter object read earlier in this session is now behind
            session.expire(stale)
        return int(taken[0])
    counter = session.exec(
        select(Counter).where(Counter.name == TICKET_NUMBER_COUNTER).with_for_update()
    ).first()
    if counter is None:
        counter = Counter(name=TICKET_NUMBER_COUNTER, value=FIRST_TICKET_NUMBER - 1)
        session.add(counter)
    counter.value += 1
    session.flush()
    return counter.value


def insert_ticket(session: Session, values: dict[str, object]) -> Ticket:
    """Write a new ticket with one Core INSERT (store/rows.py) and hand back the session's
    persistent, clean object for that row, without a flush or a SELECT: the later steps of the
    same change (a reply in the same batch, a status change) update it through the ORM as if it
    had been loaded (rows.attach, which also forgets it if its savepoint rolls back). Every
    column's value is in the object (the fields' defaults for those not given), so nothing is
    expired and read back."""
    ticket = rows.insert_one(session, Ticket, values)
    rows.attach(session, ticket)
    return ticket


def add_new_ccs(session: Session, *, ticket_id: int, ccs: Sequence[tuple[str, str]]) -> None:
    """The CCs of a ticket written in this transaction (no CC exists yet, and `ccs` has no
    repeats: services/cc_policy.capped): one executemany instead of a SELECT and a flush each."""
    rows.insert_many(
        session, TicketCC, [{"ticket_id": ticket_id, "email": e, "name": n} for e, n in ccs]
    )


def insert_attachments(session: Session, files: Sequence[dict[str, object]]) -> None:
    """A message's attachment rows, as one executemany (nothing reads them back in the change:
    `attachments_of` queries the table)."""
    rows.insert_many(session, Attachment, files)


def get_setting(session: Session, key: str) -> str | None:
    row = session.get(Setting, key)
    return row.value if row else None


def put_setting(session: Session, key: str, value: str) -> None:
    session.merge(Setting(key=key, value=value))
    session.flush()


def get_or_create_queue(session: Session, name: str, address: str = "") -> Queue:
    queue = session.exec(select(Queue).where(Queue.name == name)).first()
    if queue is None:
        queue = Queue(name=name, address=address)
        session.add(queue)
        session.flush()
    return queue


def queue_id_for(session: Session, name: str) -> int:
    """The id of the queue called `name`, made if it does not exist (cached: store/lookups.py)."""
    found = lookups.queue_id(session, name)
    return found if found is not None else get_or_create_queue(session, name).id or 0


def queue_names(session: Session) -> dict[int, str]:
    return {q.id: q.name for q in session.exec(select(Queue)) if q.id is not None}


def get_ticket_by_number(session: Session, number: int) -> Ticket | None:
    """The ticket with `number`, unless it is in the trash (a trashed ticket is absent to every
    read and write but restore: get_ticket_in_trash)."""
    return session.exec(
        select(Ticket).where(Ticket.number == number, col(Ticket.deleted_at).is_(None))
    ).first()


def get_ticket_in_trash(session: Session, number: int) -> Ticket | None:
    return session.exec(
        select(Ticket).where(Ticket.number == number, col(Ticket.deleted_at).is_not(None))
    ).first()


MAX_MERGE_HOPS = 20


def follow_merges(session: Session, ticket: Ticket) -> Ticket:
    """The ticket mail for `ticket` belongs to: itself, or the ticket it was merged into (and on,
    when that one was merged too), skipping nothing trashed; bounded against a cycle."""
    current = ticket
    for _ in range(MAX_MERGE_HOPS):
        if current.merged_into is None:
            break
        target = get_ticket_by_number(session, current.merged_into)
        if target is None:
            break
        current = target
    return current


def list_tickets(
    session: Session, *, status: str | None = None, limit: int = 1000
) -> Sequence[Ticket]:
    query = (
        select(Ticket)
        .where(col(Ticket.deleted_at).is_(None))
        .order_by(col(Ticket.number))
        .limit(limit)
    )
    if status:
        query = query.where(Ticket.status == status)
    return session.exec(query).all()


def count_tickets(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Ticket)).one()


FORWARD_DIRECTION = "fwd"  # a known Message-ID of a forward to a third party


def record_message_id(session: Session, *, message_id: str, ticket_id: int, direction: str) -> None:
    """One Core INSERT at once (store/rows.py): the row is never changed afterwards."""
    record_message_ids(session, [(message_id, ticket_id, direction)])


def record_message_ids(session: Session, known: Sequence[tuple[str, int, str]]) -> None:
    """(Message-ID, ticket id, direction) rows as one executemany: the notices of one event."""
    rows.insert_many(
        session,
        KnownMessageId,
        [{"message_id": m, "ticket_id": t, "direction": d} for m, t, d in known],
    )


# session.info key: the responses this session inserted (insert_response), by id
_NEW_RESPONSES = "mailhelpdesk.new_responses"


def insert_response(session: Session, values: dict[str, object], *, files: bool) -> Response:
    """Write a message with one Core INSERT (store/rows.py); `get_response` finds it in this
    session again without a SELECT (the notices and webhooks of its event read it), and
    `attachments_of` knows without a query that it has none when `files` is False."""
    response = rows.insert_one(session, Response, values)
    session.info.setdefault(_NEW_RESPONSES, {})[response.id] = (response, files)
    return response


def get_response(session: Session, response_id: int) -> Response | None:
    """The response with this id: the one this session just inserted, else from the database.
    (An id taken by a response whose savepoint rolled back is only ever handed out again to a
    response this session inserts, which replaces the remembered one.)"""
    made = session.info.get(_NEW_RESPONSES, {}).get(response_id)
    return made[0] if made is not None else session.get(Response, response_id)


def responses_of(session: Session, ticket_id: int) -> Sequence[Response]:
    return session.exec(
        select(Response)
        .where(Response.ticket_id == ticket_id)
        .order_by(col(Response.is_pinned).desc(), col(Response.created_at), col(Response.id))
    ).all()


def attachments_of(session: Session, response_ids: Sequence[int]) -> dict[int, list[Attachment]]:
    found: dict[int, list[Attachment]] = {}
    made = session.info.get(_NEW_RESPONSES, {})
    if all(i in made and not made[i][1] for i in response_ids):
        return found  # none, or only messages this session wrote without files
    rows = session.exec(
        select(Attachment)
        .where(col(Attachment.response_id).in_(list(response_ids)))
        .order_by(col(Attachment.id))
    )
    for row in rows:
        found.setdefault(row.response_id, []).append(row)
    return found


def ccs_of(session: Session, ticket_id: int) -> list[TicketCC]:
    return list(
        session.exec(
            select(TicketCC).where(TicketCC.ticket_id == ticket_id).order_by(col(TicketCC.id))
        )
    )


def all_tag_names(session: Session) -> list[str]:
    """Every tag some ticket carries, once each, in name order."""
    return list(session.exec(select(TicketTag.name).distinct().order_by(col(TicketTag.name))))


def tags_of(session: Session, ticket_id: int) -> list[str]:
    return [
        t.name
        for t in session.exec(
            select(TicketTag).where(TicketTag.ticket_id == ticket_id).order_by(col(TicketTag.name))
        )
    ]


def tags_and_ccs_by_ticket(
    session: Session, ticket_ids: list[int]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """The tags (as tags_of: by name) and the CC addresses (as ccs_of: in the order added) of
    each ticket, for many tickets in one statement built once: a list page reads these for
    25-100 tickets, and an ORM object per row, a bound parameter per id built anew and a
    statement each were most of the page's own time (docs/performance.md, "Search")."""
    tags: dict[int, list[str]] = {}
    ccs: dict[int, list[str]] = {}
    if ticket_ids:
        found = session.connection().execute(_TAGS_AND_CCS_OF, {"ids": ticket_ids})
        for kind, ticket_id, _order, value in found:
            (tags if kind == 0 else ccs).setdefault(ticket_id, []).append(value)
    return tags, ccs


def add_cc(session: Session, *, ticket_id: int, email: str, name: str) -> bool:
    """Add a CC unless it is already there; True when added."""
    exists = session.exec(
        select(TicketCC).where(TicketCC.ticket_id == ticket_id, TicketCC.email == email)
    ).first()
    if exists:
        return False
    session.add(TicketCC(ticket_id=ticket_id, email=email, name=name))
    session.flush()
    return True


def is_participant(session: Session, ticket: Ticket, email: str) -> bool:
    """Whether `email` (lower-case) is on the ticket: its originator, an address of the
    ticket's contact (an alternate address is the same customer), a CC, or anyone who wrote
    publicly on it. Asked in that order, each read only when the ones before did not answer:
    the originator sends most replies, and is known without reading anything."""
    if email == ticket.originator_email.lower():
        return True
    if (
        ticket.contact_id is not None
        and email
        in session.exec(
            select(ContactAddress.email).where(ContactAddress.contact_id == ticket.contact_id)
        ).all()
    ):
        return True
    if any(cc.email == email for cc in ccs_of(session, ticket.id or 0)):
        return True
    writers = session.exec(
        select(Response.created_by_email).where(
            Response.ticket_id == ticket.id, col(Response.is_internal) == false()
        )
    ).all()  # read whole: a result left half-read keeps its statement open
    return any(w and w.lower() == email for w in writers)


def store_blob(session: Session, *, sha256: str, data: bytes) -> None:
    """Keep attachment bytes once per content."""
    if session.get(Blob, sha256) is None:
        session.add(Blob(sha256=sha256, size=len(data), data=data))
        session.flush()


def list_agents(session: Session) -> Sequence[Agent]:
    return session.exec(select(Agent).order_by(col(Agent.email))).all()


def get_agent_by_email(session: Session, email: str) -> Agent | None:
    return session.exec(select(Agent).where(Agent.email == email.lower())).first()


def find_agent(session: Session, email: str) -> Agent | None:
    """The agent whose main or alternate address is `email`, or None."""
    wanted = email.strip().lower()
    if not wanted:
        return None
    agent = get_agent_by_email(session, wanted)
    if agent is not None:
        return agent
    return next(
        (a for a in list_agents(session) if wanted in a.alternate_addresses.lower().split()), None
    )


def blob_data(session: Session, sha256: str) -> bytes:
    blob = session.get(Blob, sha256)
    return blob.data if blob is not None else b""
