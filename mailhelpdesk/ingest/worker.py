"""The ingest worker: takes kept messages in batches and runs the pipeline on each.

One transaction per batch (so SQLite sees one writer and one fsync per batch) and a savepoint
per message (so one bad message sets only itself aside, with its error, and the rest go on).
After a crash nothing is half-done: a message is either applied with its batch or still `new`.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import Config, read_secret
from mailhelpdesk.domain.enums import InboundState, Outcome
from mailhelpdesk.domain.models import InboundMessage
from mailhelpdesk.ingest.context import AgentIdentity, IngestContext, IngestSettings
from mailhelpdesk.ingest.pipeline import StepFailed, run_pipeline
from mailhelpdesk.services.cc_policy import CcLimits
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.store import spool
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.db import is_sqlite, session_scope

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


def process_batch(
    engine: Engine,
    settings: IngestSettings,
    clock: Clock,
    *,
    limit: int,
    budget_s: float | None = None,
) -> BatchResult:
    """Apply up to `limit` pending messages in one transaction. With `budget_s`, stop early once
    that much time is spent, so the SMTP listener's commits (and their 250s) are not held up
    behind a long batch; the messages not reached stay pending for the next batch."""
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    done = 0
    with session_scope(engine) as session:
        rows = spool.claim_pending(session, limit=limit, postgres=not is_sqlite(str(engine.url)))
        for row in rows:
            outcomes[_process_one(session, row, settings, clock)] += 1
            done += 1
            if budget_s is not None and time.perf_counter() - started > budget_s:
                break
    return BatchResult(processed=done, outcomes=outcomes)


def _process_one(
    session: Session, row: InboundMessage, settings: IngestSettings, clock: Clock
) -> str:
    row.attempts += 1
    ctx = IngestContext(
        session=session,
        clock=clock,
        settings=settings,
        inbound=row,
        envelope=spool.envelope_of(row),
    )
    savepoint = session.begin_nested()
    try:
        ended_at = run_pipeline(ctx)
        savepoint.commit()
    except StepFailed as exc:  # the worker boundary: set aside, never crash
        savepoint.rollback()
        return _set_aside(session, row, clock, exc)
    row.state = InboundState.done
    row.outcome = (ctx.outcome or Outcome.classified).value
    row.reason = ctx.reason[:2000]
    row.ticket_id = ctx.ticket.id if ctx.ticket else None
    row.processed_at = clock.now()
    session.add(row)
    session.flush()
    log.info(
        "inbound applied inbound_id=%s outcome=%s ticket=%s step=%s reason=%s",
        row.id,
        row.outcome,
        ctx.ticket.number if ctx.ticket else "-",
        ended_at or "apply",
        row.reason,
    )
    return row.outcome


def _set_aside(session: Session, row: InboundMessage, clock: Clock, exc: StepFailed) -> str:
    """Keep the message as failed with the step that failed and its error (`inbound retry`)."""
    row.state = InboundState.failed
    row.outcome = ""
    row.reason = str(exc)[:2000]
    row.processed_at = clock.now()
    session.add(row)
    session.flush()
    log.error(
        "inbound set aside inbound_id=%s step=%s error=%s\n%s",
        row.id,
        exc.step,
        row.reason,
        "".join(traceback.format_exception(exc.error)),
    )
    return "failed"


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
