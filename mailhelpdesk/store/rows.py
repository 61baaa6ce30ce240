"""Append-only rows written with one SQLAlchemy Core INSERT instead of the ORM's unit of work.

Why: a ticket's change writes several rows that are never updated afterwards in the same
transaction (its event, its first message, its notices, their Message-IDs). Adding each as an
ORM object and flushing costs the unit of work (state tracking, dependency sort, identity map)
for what is one INSERT; on the API's create path that was the largest item of the profile
(docs/performance.md, "HTTP API"). `domain/models.py` stays the one description of the tables:
these statements are built from `Model.__table__`.

The object handed back is a plain (transient) instance carrying the new id, for the callers that
read fields off it; it is not in the session, so nothing flushes it a second time. Callers that
read nothing back use `insert_id` (building a SQLModel object costs about as much as the INSERT).

Statements are built once: an `Insert` of a table (and a dialect's ON CONFLICT insert) is made on
first use and kept, so each call only executes it with its values. Rebuilding `table.insert()`
per call cost SQLAlchemy's argument coercion and cache-key generation every time
(`coercions.expect` was 3.2% of the API's profile, docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic.fields import FieldInfo
from sqlalchemy import Connection, Executable, Insert, Table, bindparam, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import SessionTransaction, configure_mappers, make_transient_to_detached
from sqlalchemy.orm.base import manager_of_class
from sqlmodel import Session, SQLModel

M = TypeVar("M", bound=SQLModel)

# table -> its plain INSERT, built on first use (a Table is hashable, and there are few)
_INSERTS: dict[Table, Insert] = {}


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


def insert_of(model: type[SQLModel]) -> Insert:
    """The plain INSERT into `model`'s table, built once; execute it with the row's values."""
    table = table_of(model)
    found = _INSERTS.get(table)
    if found is None:
        found = _INSERTS[table] = table.insert()
    return found


def insert_id(session: Session, model: type[SQLModel], values: Mapping[str, Any]) -> int | None:
    """INSERT one row of `model` in the session's transaction; its new id (RETURNING on
    PostgreSQL, the rowid on SQLite)."""
    connection = session.connection()
    table = table_of(model)
    prepared = _prepared(connection, table, tuple(values), returning=True)
    if prepared is None:
        result = connection.execute(insert_of(model), dict(values))
        key = result.inserted_primary_key
        return int(key[0]) if key and key[0] is not None else None
    found = connection.exec_driver_sql(prepared.sql, prepared.params(values))
    new_id = found.scalar() if prepared.returning else found.lastrowid
    return int(new_id) if new_id is not None else None


@dataclass(frozen=True)
class _Prepared:
    """An INSERT compiled once for a dialect and a set of columns, and how to bind a row to it.

    Why: executing a Core `Insert` costs SQLAlchemy's per-statement machinery (compiled-cache
    lookup, execution context, result set-up) of about 150 µs, ten times the INSERT itself in
    SQLite; a message writes about a dozen such rows. The SQL string is the one SQLAlchemy
    compiles, and the values go through the same bind processors its execution would apply
    (dates, JSON, enums), so the row written is the same; `exec_driver_sql` keeps the engine's
    events and the session's transaction."""

    sql: str
    names: tuple[str, ...] | None  # the binds in order (a positional paramstyle), else by name
    processors: Mapping[str, Callable[[Any], Any]]
    returning: bool

    def params(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        process = self.processors
        if self.names is not None:
            return tuple(process[n](row[n]) if n in process else row[n] for n in self.names)
        return {k: process[k](v) if k in process else v for k, v in row.items()}


_PREPARED: dict[tuple[Table, str, tuple[str, ...], bool], _Prepared | None] = {}


def _prepared(
    connection: Connection, table: Table, keys: tuple[str, ...], *, returning: bool
) -> _Prepared | None:
    """The compiled INSERT of `keys` into `table`, or None where the Core statement must run
    (a column left out that has a default of SQLAlchemy's own to fill in, or bind names that
    are not the columns' keys)."""
    dialect = connection.dialect
    returning = returning and dialect.name == "postgresql"  # SQLite: the cursor's rowid
    cache_key = (table, dialect.name, keys, returning)
    if cache_key in _PREPARED:
        return _PREPARED[cache_key]
    found: _Prepared | None = None
    left_out = [c for c in table.columns if c.key not in keys and c.default is not None]
    if not left_out:
        statement = table.insert().returning(table.c.id) if returning else table.insert()
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        # what its execution would apply to each value (private, but what that execution reads)
        processors = dict(compiled._bind_processors)
        plain = {k: v for k, v in processors.items() if callable(v)}
        bound = set(names if names is not None else compiled.binds)
        if bound == set(keys) and len(plain) == len(processors):
            found = _Prepared(compiled.string, names, plain, returning)
    _PREPARED[cache_key] = found
    return found


def insert_row(
    session: Session, model: type[SQLModel], values: Mapping[str, Any]
) -> dict[str, Any]:
    """INSERT one row of `model` with `values` and every other column at its field's default
    (`complete`); the whole row as written, with the id the database gave it."""
    row = complete(model, values)
    del row["id"]  # the database picks it (an explicit NULL would be refused on PostgreSQL)
    row["id"] = insert_id(session, model, row)
    return row


def insert_one(session: Session, model: type[M], values: Mapping[str, Any]) -> M:
    """INSERT one row of `model`; the row as an object with its id (see `insert_row`)."""
    return as_object(model, insert_row(session, model, values))


def complete(model: type[SQLModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every other column of `model` at the default its field declares (what the
    model's constructor would have set), so the INSERT and the object agree on every column."""
    row = dict(values)
    for key, default in _defaults_of(model):
        if key not in row:
            row[key] = default()
    return row


def as_object(model: type[M], row: Mapping[str, Any]) -> M:
    """A transient `model` instance holding `row` (every column), made the way the ORM makes an
    object it loads: a new instance without `__init__`, its attributes set in its `__dict__`.
    Why: SQLModel's constructor (instrumented attribute sets, one per field) cost about 0.1 ms
    an object, more than the INSERT it describes (docs/performance.md, issue 16 part 3)."""
    manager = _managers.get(model)
    if manager is None:
        configure_mappers()  # an unconfigured mapper has no attribute implementations yet
        manager = _managers[model] = manager_of_class(model)
    obj: M = manager.new_instance()
    obj.__dict__.update(row)
    return obj


def attach(session: Session, obj: SQLModel) -> None:
    """Make `obj` (an `as_object` of a row this transaction just INSERTed) the session's
    persistent, clean object for that row, with no SQL: later steps update it through the ORM.
    If the savepoint (or transaction) it was attached in rolls back, the session forgets it, as
    it forgets an object it flushed itself there (SQLite hands the same id to the next row, and
    the session must not keep the dead one under that key)."""
    make_transient_to_detached(obj)
    session.add(obj)
    owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_ATTACHED, []).append((owner, obj))


_ATTACHED = "mailhelpdesk.core_attached"  # session.info: [(transaction, object)]


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    held = session.info.get(_ATTACHED)
    if not held:
        return
    kept = []
    for owner, obj in held:
        if _within(owner, previous_transaction):
            if obj in session:
                session.expunge(obj)
        else:
            kept.append((owner, obj))
    session.info[_ATTACHED] = kept


@event.listens_for(Session, "after_transaction_end")
def _forget_at_the_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_ATTACHED, None)


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


_managers: dict[type[SQLModel], Any] = {}
_defaults: dict[type[SQLModel], tuple[tuple[str, Callable[[], Any]], ...]] = {}


def _defaults_of(model: type[SQLModel]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    found = _defaults.get(model)
    if found is None:
        fields = model.model_fields
        found = _defaults[model] = tuple(
            (column.key, _default_of(fields.get(column.key))) for column in table_of(model).columns
        )
    return found


def _default_of(field: FieldInfo | None) -> Callable[[], Any]:
    """The field's default (None for a field without one: the column is then NULL, or refused
    by the database when it must not be, as when the constructor left it unset)."""
    if field is None or field.is_required():
        return lambda: None
    return lambda: field.get_default(call_default_factory=True)


def insert_many(session: Session, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT many rows of `model` (all with the same columns) as one executemany (no ids
    needed back)."""
    if not rows:
        return
    connection = session.connection()
    prepared = _prepared(connection, table_of(model), tuple(rows[0]), returning=False)
    if prepared is None:
        connection.execute(insert_of(model), [dict(r) for r in rows])
    elif len(rows) == 1:
        connection.exec_driver_sql(prepared.sql, prepared.params(rows[0]))
    else:
        connection.exec_driver_sql(prepared.sql, [prepared.params(r) for r in rows])


class Among:
    """A statement that asks `column IN (values)` for a few values at a time, built once per
    number of values, with one bind per value.

    Why: an expanding IN (`bindparam(..., expanding=True)`) is rewritten by SQLAlchemy on every
    execution, a regular-expression pass over the statement's SQL; for loop safety's two reads
    per notice (one or two addresses each) that was a third of their cost. Up to `FEW` values
    the statement has that many binds and its SQL is compiled once; more values take the
    expanding form."""

    FEW = 8

    def __init__(self, name: str, build: Callable[[Any], Executable]) -> None:
        """`build(among)` makes the statement with `column.in_(among)`."""
        self._name = name
        self._build = build
        self._expanding = build(bindparam(name, expanding=True))
        # count -> the statement with that many binds, and their names in order
        self._by_count: dict[int, tuple[Executable, tuple[str, ...]]] = {}

    def bind(self, values: Sequence[Any], **params: Any) -> tuple[Executable, dict[str, Any]]:
        """The statement for `values` and its parameters (with `params`, the other binds)."""
        if len(values) > self.FEW:
            return self._expanding, {self._name: list(values), **params}
        found = self._by_count.get(len(values))
        if found is None:
            names = tuple(f"{self._name}_{i}" for i in range(len(values)))
            found = self._by_count[len(values)] = (
                self._build([bindparam(n) for n in names]),
                names,
            )
        statement, names = found
        return statement, {**dict(zip(names, values, strict=True)), **params}


def flushed_connection(session: Session) -> Connection:
    """The session's connection, after flushing pending ORM changes if there are any: what an ORM
    query's autoflush would do, for a Core SELECT that must see them. (Checking first is cheap;
    an empty flush is not.)"""
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection()


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


_PER_DIALECT: dict[tuple[str, str], Any] = {}


def per_dialect(session: Session, name: str, build: Callable[[], Any]) -> Any:
    """The statement `name` for the session's dialect, built by `build` on first use and kept
    (statements such as a `conflict_insert` depend on the dialect, so they are built once per
    dialect rather than once per module)."""
    key = (name, dialect_of(session))
    found = _PER_DIALECT.get(key)
    if found is None:
        found = _PER_DIALECT[key] = build()
    return found


def conflict_insert(session: Session, model: type[SQLModel]) -> Any:
    """An INSERT into `model`'s table that can say what happens ON CONFLICT: the dialect's own
    insert construct (PostgreSQL's and SQLite's take the same `on_conflict_do_*` calls), the one
    place that chooses it for every claim and upsert."""
    insert = postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert
    return insert(table_of(model))
