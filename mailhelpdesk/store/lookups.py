"""Per-process caches of the small tables every write reads: queue names and ids, and the agents.

Why: a ticket written by the API or by mail looked its queue up twice and listed the agents
once per notice, each an ORM query, on every request (docs/performance.md, "HTTP API"). The
caches live with the engine (made by store/db.py `make_engine`, kept in its execution options
like the writer lock), so every database a process opens has its own; a session on an engine
made elsewhere simply reads the tables.

Staying correct with several daemons (and the CLI) on one database:
- Queues are only ever added (`get_or_create_queue`; never renamed nor deleted), so a name → id
  pair, once read, stays true: only found queues are cached, a missing name is asked again.
- Agents change (config reload, `mailhelpdesk agent add`, passwords), in any process. Every flush
  that writes an Agent row bumps the `agents_version` counter in the same transaction
  (`_bump_on_agent_change`, a Session event); a reader checks that number once per transaction
  (one primary-key SELECT) and reloads the list when it moved. A short TTL would have been
  cheaper still but lets a removed agent get notices for the TTL after the change, from every
  other daemon; the version is exact, and costs one tiny query instead of the list's.
SIGHUP (app.py `reload`) clears both caches of the daemon's engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, event, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.domain.models import Agent, Counter, Queue
from mailhelpdesk.store import rows

LOOKUPS_OPTION = "mailhelpdesk_lookups"
AGENTS_VERSION = "agents_version"
_COUNTERS = rows.table_of(Counter)
_QUEUES = rows.table_of(Queue)
_AGENTS = rows.table_of(Agent)
# the statements, built once (store/rows.py says why)
_QUEUE_ID = select(_QUEUES.c.id).where(_QUEUES.c.name == bindparam("name"))
_QUEUE_NAME = select(_QUEUES.c.name).where(_QUEUES.c.id == bindparam("queue_id"))
_READ_VERSION = select(_COUNTERS.c.value).where(_COUNTERS.c.name == AGENTS_VERSION)
_BUMP_VERSION = (
    update(_COUNTERS).where(_COUNTERS.c.name == AGENTS_VERSION).values(value=_COUNTERS.c.value + 1)
)
_LIST_AGENTS = select(
    _AGENTS.c.id,
    _AGENTS.c.email,
    _AGENTS.c.name,
    _AGENTS.c.queues,
    _AGENTS.c.reply_key,
    _AGENTS.c.alternate_addresses,
).order_by(_AGENTS.c.email)
_VERSION_KEY = "mailhelpdesk.agents_version"  # session.info: (transaction, version)
_CHANGED_KEY = "mailhelpdesk.agents_changed"  # session.info: this session wrote agents


@dataclass(frozen=True)
class AgentInfo:
    """What notices need of an agent: a plain value, safe to share between threads."""

    id: int
    email: str
    name: str
    queues: str
    reply_key: str
    alternate_addresses: str


class Lookups:
    """The caches of one engine (thread-safe: the API's threads and the loop's share them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue_ids: dict[str, int] = {}
        self._queue_names: dict[int, str] = {}
        self._agents: tuple[int, tuple[AgentInfo, ...]] | None = None

    def clear(self) -> None:
        with self._lock:
            self._queue_ids.clear()
            self._queue_names.clear()
            self._agents = None

    def remember_queue(self, queue_id: int, name: str) -> None:
        with self._lock:
            self._queue_ids[name] = queue_id
            self._queue_names[queue_id] = name


def lookups_of(engine: Engine) -> Lookups | None:
    found = engine.get_execution_options().get(LOOKUPS_OPTION)
    return found if isinstance(found, Lookups) else None


def _of(session: Session) -> Lookups | None:
    bind = session.get_bind()
    return lookups_of(bind) if isinstance(bind, Engine) else None


def queue_id(session: Session, name: str) -> int | None:
    """The id of the queue called `name`, or None when there is none (yet)."""
    cache = _of(session)
    if cache is not None and name in cache._queue_ids:
        return cache._queue_ids[name]
    found = session.connection().execute(_QUEUE_ID, {"name": name}).first()
    if found is None:
        return None
    if cache is not None:
        cache.remember_queue(int(found[0]), name)
    return int(found[0])


def queue_name(session: Session, queue_id: int) -> str:
    """The name of queue `queue_id` ("" when there is no such queue)."""
    cache = _of(session)
    if cache is not None and queue_id in cache._queue_names:
        return cache._queue_names[queue_id]
    found = session.connection().execute(_QUEUE_NAME, {"queue_id": queue_id}).first()
    if found is None:
        return ""
    if cache is not None:
        cache.remember_queue(queue_id, str(found[0]))
    return str(found[0])


def agents(session: Session) -> tuple[AgentInfo, ...]:
    """Every agent, by email (as store/tickets.list_agents), from the cache while the
    `agents_version` counter has not moved."""
    cache = _of(session)
    version = _agents_version(session) if cache is not None else None
    if cache is not None and version is not None:
        held = cache._agents
        if held is not None and held[0] == version:
            return held[1]
    session.flush()  # agents added in this session but not yet flushed are agents too
    listed = tuple(
        AgentInfo(r.id, r.email, r.name, r.queues, r.reply_key, r.alternate_addresses)
        for r in session.connection().execute(_LIST_AGENTS)
    )
    if cache is not None and version is not None and not session.info.get(_CHANGED_KEY):
        # (a transaction that changed agents itself may still roll back: not cached)
        with cache._lock:
            cache._agents = (version, listed)
    return listed


def _agents_version(session: Session) -> int | None:
    """The `agents_version` counter, read once per transaction (None: no counter row, so
    nothing can be cached)."""
    transaction = session.get_transaction()
    held = session.info.get(_VERSION_KEY)
    if held is not None and held[0] is transaction:
        return int(held[1]) if held[1] is not None else None
    found = session.connection().execute(_READ_VERSION).first()
    version = int(found[0]) if found is not None else None
    session.info[_VERSION_KEY] = (transaction, version)
    return version


def _touches_agents(states: Iterable[Any]) -> bool:
    return any(isinstance(obj, Agent) for obj in states)


@event.listens_for(Session, "before_flush")
def _bump_on_agent_change(session: Session, _context: Any, _instances: Any) -> None:
    """A flush that adds, changes or removes an agent moves `agents_version`, in the same
    transaction: every process's cached list is stale from that commit on."""
    if not (
        _touches_agents(session.new)
        or _touches_agents(session.deleted)
        or any(isinstance(o, Agent) and session.is_modified(o) for o in session.dirty)
    ):
        return
    session.connection().execute(_BUMP_VERSION)
    session.info.pop(_VERSION_KEY, None)
    session.info[_CHANGED_KEY] = True
