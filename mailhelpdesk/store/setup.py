"""Bringing the configured queues and agents into the store at start-up."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import select

from mailhelpdesk.config import Config
from mailhelpdesk.domain.models import Agent
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store import webhooks
from mailhelpdesk.store.db import session_scope


def sync_config(engine: Engine, config: Config) -> None:
    """Queues, `[[agents]]` and `[[webhooks]]` from the config exist in the store. Agents added with the CLI stay;
    config agents removed from the file are removed from the store."""
    with session_scope(engine) as session:
        store.ensure_counters(session)
        store.get_or_create_queue(session, "Inbox", config.helpdesk.address)
        for queue in config.queues:
            row = store.get_or_create_queue(session, queue.name, queue.address)
            row.address = queue.address
            session.add(row)
        configured = {a.email.lower(): a for a in config.agents}
        for agent in session.exec(select(Agent)):
            if agent.origin == "config" and agent.email not in configured:
                session.delete(agent)
        session.flush()
        for email, item in configured.items():
            agent_row = store.get_agent_by_email(session, email)
            if agent_row is None:
                agent_row = Agent(email=email, origin="config")
            agent_row.name = item.name
            agent_row.alternate_addresses = " ".join(a.lower() for a in item.alternate_addresses)
            agent_row.queues = "\n".join(q.strip() for q in item.queues if q.strip())
            session.add(agent_row)
        webhooks.sync_subscriptions(
            session,
            config.webhooks,
            timeout_s=config.http_deliveries.timeout_s,
            max_attempts=config.http_deliveries.max_attempts,
        )
