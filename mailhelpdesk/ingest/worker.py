"""The ingest worker: takes kept messages in batches and runs the pipeline on each.

A batch is claimed (`claim`), understood outside any transaction, in a pool of processes
(`understand`, ingest/understanding.py), then decided and written (`write`): the threading
lookups for the whole batch in a few queries (ingest/batch_lookups.py), then the steps per
message. The daemon overlaps them: batch N+1 is understood while batch N is written.

One write transaction per batch, so SQLite sees one writer and one fsync per batch, written as
every group commit is (store/db.each_in_group): first under one savepoint for the whole batch;
if a message fails, again with a savepoint per message, so the bad message sets only itself
aside, with its error, and the rest go on.
After a crash nothing is half-done: a message is either applied with its batch or still `new`.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections import Counter
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import Config, read_secret
from mailhelpdesk.domain.enums import InboundState, Outcome
from mailhelpdesk.domain.models import InboundMessage
from mailhelpdesk.ingest.batch_lookups import BatchLookups
from mailhelpdesk.ingest.context import AgentIdentity, IngestContext, IngestSettings, SenderRole
from mailhelpdesk.ingest.pipeline import StepFailed, run_pipeline
from mailhelpdesk.ingest.understanding import Job, NotUnderstood, Result, Understander
from mailhelpdesk.mail.understood import Understood
from mailhelpdesk.services.cc_policy import CcLimits
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.store import spool
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.db import (
    Failed,
    committed,
    each_in_group,
    is_sqlite,
    read_scope,
    session_scope,
)

log = logging.getLogger(__name__)

SECRET_SETTING = "reply_secret"


@dataclass
class BatchResult:
    processed: int
    outcomes: Counter[str]


def load_settings(engine: Engine, config: Config) -> IngestSettings:
    """Settings for a batch: the reply secret (configured, or generated once and kept in the
    database so every daemon on it agrees) and the agents."""
    with session_scope(engine) as session:
        secret = read_secret(config)
        if secret is None:
            stored = store.get_setting(session, SECRET_SETTING)
            if stored is None:
                stored = secrets.token_hex(32)
                store.put_setting(session, SECRET_SETTING, stored)
            secret = stored.encode()
        agents = tuple(
            AgentIdentity(
                id=a.id or 0,
                email=a.email,
                name=a.name,
                addresses=frozenset([a.email, *(x for x in a.alternate_addresses.split() if x)]),
            )
            for a in store.list_agents(session)
        )
    return IngestSettings(
        secret=secret,
        inbound_addresses=config.inbound_addresses(),
        agents=agents,
        notify=NotifySettings.from_config(config, secret),
        trusted_relays=tuple(config.smtp_listener.trusted_relays),
        trusted_authserv_ids=frozenset(
            a.strip().lower() for a in config.helpdesk.trusted_authserv_ids if a.strip()
        ),
        suppress_bouncing_s=config.outbound.suppress_bouncing_s,
        cc_limits=CcLimits(
            per_message=config.ingest.max_ccs_per_message,
            per_ticket=config.ingest.max_ccs_per_ticket,
        ),
        allow_remote_images=config.ingest.allow_remote_images,
    )


# the least a write within a time budget reads ahead: a few messages more than the least one
# budget holds on a slow machine
MIN_REACH = 8


@dataclass
class ClaimedBatch:
    """Pending messages taken for one batch, with their understanding once it is done.

    How a batch stays ours while it is understood and written (issue 16): on PostgreSQL the
    rows are locked FOR UPDATE SKIP LOCKED by the claiming transaction (`session`), which stays
    open and is the very transaction that writes them, so no other daemon can take them and a
    daemon that dies releases them with its connection. On SQLite there is one daemon per
    database and the claim is a plain read; the daemon's own ingest loop passes the ids in hand
    as `exclude` to the next claim, and the write reads each row again and skips one that is no
    longer `new`. No claim column, so nothing is left to expire after a crash.
    """

    ids: list[int]
    jobs: list[Job]
    session: Session | None = None  # PostgreSQL: the open claiming transaction
    results: dict[int, Result] = field(default_factory=dict)
    # SQLite: how many of `ids` the next write reads ahead (its rows and threading maps), set
    # from the pace of the last one (`write`)
    reach: int = MIN_REACH

    def close(self) -> None:
        """Let go of the claim without writing (PostgreSQL: rolled back, rows unlocked)."""
        if self.session is not None:
            self.session.close()
            self.session = None


def claim(engine: Engine, *, limit: int, exclude: Collection[int] = ()) -> ClaimedBatch:
    """Take up to `limit` pending messages, oldest first, except `exclude` (ids in hand)."""
    if is_sqlite(str(engine.url)):
        with read_scope(engine) as session:
            rows = spool.pending_raw(session, limit=limit, exclude=exclude)
        return ClaimedBatch(
            ids=[r[0] for r in rows], jobs=[Job(i, raw, sender) for i, raw, sender in rows]
        )
    session = Session(engine, expire_on_commit=False)
    try:
        claimed = spool.claim_pending(session, limit=limit, postgres=True)
    except BaseException:
        session.close()
        raise
    if not claimed:
        session.close()
        return ClaimedBatch(ids=[], jobs=[])
    return ClaimedBatch(
        ids=[r.id or 0 for r in claimed],
        jobs=[Job(r.id or 0, r.raw, r.envelope_from) for r in claimed],
        session=session,
    )


def understand(
    understander: Understander, batch: ClaimedBatch, settings: IngestSettings
) -> ClaimedBatch:
    """Understand the batch's messages (in the pool, outside any write transaction)."""
    batch.results = understander.understand_batch(batch.jobs, settings.understand)
    batch.jobs = []  # the raw bytes are not needed any more
    return batch


def write(
    engine: Engine,
    batch: ClaimedBatch,
    settings: IngestSettings,
    clock: Clock,
    *,
    budget_s: float | None = None,
) -> BatchResult:
    """Decide and write the understood messages of `batch`, in one transaction (the module
    docstring: optimistic, then a savepoint per message if one fails). With `budget_s`
    (SQLite), commit once that much time is spent, or once `batch.reach` messages are written,
    and leave the rest in `batch.ids` for the next call, so the SMTP listener's commits (and
    their 250s) are not held up behind a long batch. On PostgreSQL the claiming transaction
    writes all of them.

    Each message's log line is written once its pass is the one kept, so a message is logged
    once."""
    started = time.perf_counter()
    own = batch.session
    if own is not None:
        budget_s = None
    # Within a budget, read ahead only about as far as this write will get: a batch of 64 is
    # written a few messages a call, and each call read every remaining message's row and
    # threading keys (docs/performance.md, issue 16 part 6)
    ids = batch.ids if budget_s is None else batch.ids[: batch.reach]
    scope = session_scope(engine) if own is None else _claimed_scope(batch)
    outcomes: Counter[str] = Counter()
    with scope as session:
        rows = spool.rows_to_write(session, ids)
        lookups = BatchLookups.load(
            session,
            [r for r in (batch.results.get(i) for i in ids) if isinstance(r, Understood)],
        )

        def write_one(session: Session, inbound_id: int) -> Handled | None:
            row = rows.get(inbound_id)
            if row is None:  # applied or set aside meanwhile (`inbound retry` ran, say)
                return None
            result = batch.results.get(inbound_id)
            if result is None or isinstance(result, NotUnderstood):
                return _not_understood(session, inbound_id, clock, result)
            return _process_one(session, row, settings, clock, result, lookups)

        written = each_in_group(
            session,
            ids,
            write_one,
            until=None if budget_s is None else lambda: time.perf_counter() - started > budget_s,
            # the threading maps hold what the rolled-back pass applied
            on_retry=lookups.reload,
        )
        done = ids[: len(written)]
        for inbound_id, result in zip(done, written, strict=True):
            handled = (
                _failed_step(session, inbound_id, clock, result.error, batch)
                if isinstance(result, Failed)
                else result
            )
            if handled is not None:
                handled.log()
                outcomes[handled.outcome] += 1
    # twice this write's pace: room to speed up, and a slow one reads less next time
    batch.reach = max(MIN_REACH, 2 * len(done))
    batch.ids = batch.ids[len(done) :]  # `done` is the first of them, in order
    for inbound_id in done:
        batch.results.pop(inbound_id, None)
    return BatchResult(processed=len(done), outcomes=outcomes)


def _claimed_scope(batch: ClaimedBatch) -> AbstractContextManager[Session]:
    """The claiming transaction (PostgreSQL), taken from the batch: committed or rolled back
    with the write, then closed."""
    session = batch.session
    assert session is not None
    batch.session = None
    return committed(session)


def process_batch(
    engine: Engine,
    settings: IngestSettings,
    clock: Clock,
    *,
    limit: int,
    budget_s: float | None = None,
    understander: Understander | None = None,
) -> BatchResult:
    """Claim, understand and write up to `limit` pending messages, one batch after the other
    (the daemon overlaps them: App._ingest_loop). Without an understander, in this process.
    With `budget_s`, the messages not reached stay pending for the next batch."""
    batch = claim(engine, limit=limit)
    if not batch.ids:
        return BatchResult(processed=0, outcomes=Counter())
    try:
        understand(understander or IN_PROCESS, batch, settings)
        return write(engine, batch, settings, clock, budget_s=budget_s)
    finally:
        batch.close()


IN_PROCESS = Understander(0)


@dataclass(frozen=True)
class Handled:
    """What became of one message: its outcome and its log line."""

    outcome: str
    level: int
    line: str
    args: tuple[object, ...]

    def log(self) -> None:
        log.log(self.level, self.line, *self.args)


def _process_one(
    session: Session,
    row: spool.PendingRow,
    settings: IngestSettings,
    clock: Clock,
    understood: Understood,
    lookups: BatchLookups,
) -> Handled:
    """Run the steps on one message and mark it done; raises StepFailed (with the writes made
    so far still in the session, for the savepoint around it to undo)."""
    ctx = IngestContext(
        session=session,
        clock=clock,
        settings=settings,
        inbound_id=row.id,
        envelope=row.envelope,
        understood=understood,
        lookups=lookups,
    )
    ended_at = run_pipeline(ctx)
    parsed = understood.parsed
    if ctx.outcome != Outcome.duplicate:
        lookups.applied(
            fingerprint=parsed.fingerprint,
            inbound_id=row.id,
            ticket=ctx.ticket,
            message_ids=(
                parsed.message_id,
                ctx.forwarded.message_id if ctx.forwarded is not None else None,
            ),
            by_agent=ctx.sender_role == SenderRole.agent,
        )
    outcome = (ctx.outcome or Outcome.classified).value
    spool.mark_done(
        session,
        row.id,
        outcome=outcome,
        reason=ctx.reason,
        ticket_id=ctx.ticket.id if ctx.ticket else None,
        now=clock.now(),
        message_id=parsed.message_id,
        fingerprint=parsed.fingerprint,
    )
    return Handled(
        outcome,
        logging.INFO,
        "inbound applied inbound_id=%s outcome=%s ticket=%s step=%s reason=%s",
        (
            row.id,
            outcome,
            ctx.ticket.number if ctx.ticket else "-",
            ended_at or "apply",
            ctx.reason[:2000],
        ),
    )


def _failed_step(
    session: Session, inbound_id: int, clock: Clock, error: Exception, batch: ClaimedBatch
) -> Handled:
    """A message whose steps raised (its writes undone by its savepoint): set aside with the
    step and the error, and what parsing found. Anything but a failed step (the database
    refusing a write, say) fails the whole batch, which stays pending."""
    if not isinstance(error, StepFailed):
        raise error
    understood = batch.results[inbound_id]
    assert isinstance(understood, Understood)  # only an understood message runs the steps
    parsed = understood.parsed
    return _set_aside(
        session,
        inbound_id,
        clock,
        step=error.step,
        reason=str(error),
        detail="".join(traceback.format_exception(error.error)),
        parsed=(parsed.message_id, parsed.fingerprint),
    )


def _set_aside(
    session: Session,
    row_id: int,
    clock: Clock,
    *,
    step: str,
    reason: str,
    detail: str,
    parsed: tuple[str | None, str | None] | None = None,
) -> Handled:
    """Keep the message as failed with the step that failed and its error (`inbound retry`),
    its attempt counted."""
    spool.set_aside(session, row_id, reason=reason, now=clock.now(), parsed=parsed)
    return Handled(
        "failed",
        logging.ERROR,
        "inbound set aside inbound_id=%s step=%s error=%s\n%s",
        (row_id, step, reason[:2000], detail),
    )


def _not_understood(
    session: Session, row_id: int, clock: Clock, result: NotUnderstood | None
) -> Handled:
    """A message understanding gave up on (it raised, overran its time limit, or killed its
    worker process): set aside with that reason, like a failed step."""
    return _set_aside(
        session,
        row_id,
        clock,
        step="understand",
        reason=result.reason if result is not None else "step understand: no result",
        detail=result.detail if result is not None else "",
    )


def retry(engine: Engine, inbound_id: int) -> bool:
    """Put a set-aside message back in line; True when it was failed and now is pending."""
    with session_scope(engine) as session:
        row = session.get(InboundMessage, inbound_id)
        if row is None or row.state != InboundState.failed:
            return False
        row.state = InboundState.new
        row.reason = ""
        session.add(row)
    return True
