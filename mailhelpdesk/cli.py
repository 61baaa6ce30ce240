"""The command line (DESIGN.md §4). Errors are one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import json
import mailbox
import os
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from mailhelpdesk import __version__
from mailhelpdesk.config import Config, ConfigError, load_config
from mailhelpdesk.log import configure_logging


class _State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config


def _app(ctx: click.Context) -> Any:
    """The app, built the one way (app.build_app), released when the command ends."""
    from mailhelpdesk.app import build_app

    state: _State = ctx.obj
    try:
        app = build_app(state.config)
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"database {state.config.database.url}: {exc.__class__.__name__}: "
            f"{exc.args[0] if exc.args else ''}"
        ) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.call_on_close(app.close)
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: $MAILHELPDESK_CONFIG, else ./mailhelpdesk.toml, else embedded defaults).",
)
@click.version_option(__version__, prog_name="mailhelpdesk")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """mailhelpdesk: an email-first support ticket daemon."""
    # what any command creates (the SQLite database and its -wal/-shm, the outbound maildir,
    # exports) is private to the service user: it holds customers' mail (issue 17)
    os.umask(0o077)
    ctx.obj = _State(config_path)


@main.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create or upgrade the database schema (safe to run again)."""
    from mailhelpdesk.store import schema
    from mailhelpdesk.store.db import make_engine

    config: Config = ctx.obj.config
    engine = make_engine(config.database.url)
    try:
        before, after = schema.upgrade(engine)
        from mailhelpdesk.store.setup import sync_config

        sync_config(engine, config)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database {config.database.url}: {exc}") from None
    if before == after:
        click.echo(f"database schema is up to date (revision {after})")
    else:
        click.echo(f"database schema upgraded from {before or 'empty'} to {after}")


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the SMTP listener, IMAP pollers, HTTP API and scheduler until SIGTERM/SIGINT."""
    from mailhelpdesk.app import build_app
    from mailhelpdesk.store.daemon_lock import DaemonAlreadyRunningError

    config: Config = ctx.obj.config
    configure_logging(config.logging.level, config.logging.format)
    try:
        app = build_app(config)
        asyncio.run(app.run())
    except (ConfigError, DaemonAlreadyRunningError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc.strerror or exc}") from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database {config.database.url}: {exc}") from None


# -- tickets -------------------------------------------------------------------------------------


@main.group()
def ticket() -> None:
    """Read tickets from the store."""


@ticket.command("list")
@click.option("--q", "q", help="The query language of GET /api/v1/tickets (docs/api.md).")
@click.option(
    "--status",
    help="Only tickets in these statuses (comma list of open, on-hold, closed).",
)
@click.option("--priority", help="Only these priorities (comma list: Low, Normal, High, Urgent).")
@click.option("--queue", help="Only tickets in this queue.")
@click.option("--assignee", help="An agent's email, none or any.")
@click.option("--requester", help="Only tickets raised by this address.")
@click.option("--tag", "tags", multiple=True, help="Only tickets with this tag (repeatable: all).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other list filter, as the query string has it "
    "(created_after=2026-11-01, unresponded=true, cf.order=7731, …); repeatable.",
)
@click.option(
    "--sort",
    default=None,
    help="number, created_at, updated_at, due_at, priority, status, subject or relevance; "
    "'-' first for descending. Default: number (oldest first), relevance with --q words.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N tickets.")
@click.option("--json", "as_json", is_flag=True, help="Print an array of ticket headers.")
@click.pass_context
def ticket_list(
    ctx: click.Context,
    q: str | None,
    status: str | None,
    priority: str | None,
    queue: str | None,
    assignee: str | None,
    requester: str | None,
    tags: tuple[str, ...],
    filters: tuple[str, ...],
    sort: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List tickets: the filters of GET /api/v1/tickets, oldest first unless --sort says."""
    from mailhelpdesk.services import ticket_list as listing
    from mailhelpdesk.services.api_requests import FieldErrors
    from mailhelpdesk.store.db import read_scope

    items = [
        (name, value)
        for name, value in (
            ("q", q),
            ("status", status),
            ("priority", priority),
            ("queue", queue),
            ("assignee", assignee),
            ("requester", requester),
        )
        if value is not None
    ]
    items += [("tag", t) for t in tags]
    for text in filters:
        name, sep, value = text.partition("=")
        if not sep:
            raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--filter")
        items.append((name.strip(), value))
    q_words = bool(q and q.strip())
    items.append(("sort", sort or ("relevance" if q_words else "number")))
    app = _app(ctx)
    with read_scope(app.engine) as session:
        try:
            request = listing.parse(items, definitions=app.settings.notify.custom_fields)
        except FieldErrors as exc:
            raise click.ClickException(
                "; ".join(f"--{k.replace('_', '-')}: {v[0]}" for k, v in exc.fields.items())
            ) from None
        headers = listing.all_headers(session, request, limit=limit)
    if as_json:
        click.echo(json.dumps(headers, indent=2, ensure_ascii=False))
        return
    for h in headers:
        click.echo(
            f"{h['number']}  {h['status']:<8} {h['queue']:<12} {h['originator_email']:<32} {h['subject']}"
        )
    if not headers:
        click.echo("no tickets", err=True)


def _read_ticket(ctx: click.Context, number: int, read: Callable[[Any], dict[str, Any]]) -> Any:
    """What `read(session)` finds about ticket `number`; a clear error when there is none."""
    from mailhelpdesk.errors import NotFoundError
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        try:
            return read(session)
        except NotFoundError:
            raise click.ClickException(f"no ticket {number}") from None


@ticket.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the ticket object (DESIGN.md §7).")
@click.pass_context
def ticket_show(ctx: click.Context, number: int, as_json: bool) -> None:
    """Show one ticket with all its messages."""
    from mailhelpdesk.services import ticket_reads

    public_url = ctx.obj.config.http.public_url
    data = _read_ticket(
        ctx, number, lambda s: ticket_reads.show(s, ticket_number=number, public_url=public_url)
    )
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"#{data['number']} {data['subject']}")
    click.echo(
        f"status: {data['status']}  queue: {data['queue']}  from: {data['originator_name']} <{data['originator_email']}>"
    )
    if data["cc"]:
        click.echo(f"cc: {', '.join(data['cc'])}")
    for r in data["responses"]:
        flag = " (internal)" if r["is_internal"] else ""
        click.echo(
            f"\n--- {r['created_at']} {r['kind']}{flag} {r['created_by_name']} <{r['created_by_email']}>"
        )
        click.echo(r["visible_text"])
        for a in r["attachments"]:
            click.echo(f"[attachment] {a['name']} ({a['mime_type']}, {a['file_size']} bytes)")


@ticket.command("history")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print {ticket_number, events: [...]}.")
@click.pass_context
def ticket_history(ctx: click.Context, number: int, as_json: bool) -> None:
    """Every change to a ticket, oldest first: when, who, through which channel, what."""
    from mailhelpdesk.services import history

    data = _read_ticket(ctx, number, lambda s: history.history(s, ticket_number=number))
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for event in data["events"]:
        actor = event["actor"]
        who = actor["email"] or actor["name"] or actor["kind"]
        click.echo(
            f"{event['at']}  {event['channel']:<9}  {actor['kind']:<8} {who:<30}  "
            f"{history.describe(event)}"
        )


@ticket.command("update")
@click.argument("number", type=int)
@click.option("--status", type=click.Choice(["open", "on-hold", "closed"]), help="New status.")
@click.option(
    "--until",
    "on_hold_until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="On-hold until this date (YYYY-MM-DD), with --status on-hold.",
)
@click.option("--resolution", help="Kept with the status change (how it was resolved).")
@click.option("--comment", help="Kept with the status change.")
@click.option("--priority", help="Low, Normal, High or Urgent.")
@click.option("--assign", "assign", metavar="EMAIL|none", help="Assign to an agent, or none.")
@click.option("--tag", "tags_add", multiple=True, help="Add a tag (repeatable).")
@click.option("--untag", "tags_remove", multiple=True, help="Remove a tag (repeatable).")
@click.option("--queue", help="Move to this queue.")
@click.option(
    "--due", metavar="DATE|none", help="Due by the end of DATE (YYYY-MM-DD, UTC), or none."
)
@click.option("--subject", help="Rename the ticket.")
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a custom field (repeatable); NAME= clears it.",
)
@click.option(
    "--no-notify-customer",
    "quiet",
    is_flag=True,
    help="Do not send the customer the status notice (closed / reopened).",
)
@click.option(
    "--as", "as_agent", metavar="EMAIL", help="Act as this agent (default: the helpdesk)."
)
@click.pass_context
def ticket_update(
    ctx: click.Context,
    number: int,
    status: str | None,
    on_hold_until: Any,
    resolution: str | None,
    comment: str | None,
    priority: str | None,
    assign: str | None,
    tags_add: tuple[str, ...],
    tags_remove: tuple[str, ...],
    fields: tuple[str, ...],
    queue: str | None,
    due: str | None,
    subject: str | None,
    quiet: bool,
    as_agent: str | None,
) -> None:
    """Change a ticket: all the changes or none; each is recorded in its history and causes
    the same notices and webhooks as the agent's mail command or the API would."""
    from mailhelpdesk.errors import InvalidInputError
    from mailhelpdesk.services import custom_fields, ticket_changes
    from mailhelpdesk.store import tickets as store
    from mailhelpdesk.store.db import session_scope

    due_at = None
    if due is not None and due.strip().lower() != "none":
        try:
            due_at = ticket_changes.end_of_day(date.fromisoformat(due.strip()))
        except ValueError:
            raise click.BadParameter(
                f"{due!r} is not YYYY-MM-DD or none", param_hint="--due"
            ) from None
    app = _app(ctx)
    try:
        field_values = custom_fields.from_assignments(app.settings.notify.custom_fields, fields)
    except InvalidInputError as exc:
        raise click.ClickException(str(exc)) from None
    changes = ticket_changes.TicketUpdate(
        subject=subject,
        queue=queue,
        due_at=due_at,
        clear_due=due is not None and due_at is None,
        status=status,
        on_hold_until=on_hold_until.date() if on_hold_until else None,
        resolution=resolution,
        comment=comment,
        priority=priority,
        assign=assign,
        tags_add=tags_add,
        tags_remove=tags_remove,
        notify_customer=not quiet,
        custom_fields=field_values,
    )
    with session_scope(app.engine) as session:
        found = store.get_ticket_by_number(session, number)
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        change = _cli_change(app, session, as_agent)
        try:
            changed = ticket_changes.update(session, found, changes, change=change)
        except InvalidInputError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"ticket {number}: " + (", ".join(changed) if changed else "nothing changed"))


def _cli_change(app: Any, session: Any, as_agent: str | None) -> Any:
    """The change context of a CLI command: the helpdesk (or `--as` an agent), channel cli."""
    from mailhelpdesk.domain.events import Actor, Channel
    from mailhelpdesk.services.context import ChangeContext
    from mailhelpdesk.store import tickets as store

    actor = Actor.system("cli")
    if as_agent:
        agent = store.find_agent(session, as_agent)
        if agent is None:
            raise click.ClickException(f"--as: {as_agent} is not an agent")
        actor = Actor.agent(agent.email, agent.name)
    return ChangeContext.of(
        clock=app.clock, channel=Channel.cli, actor=actor, notices=app.settings.notify
    )


def _housekeeping(
    ctx: click.Context, as_agent: str | None, run: Callable[[Any, Any], object], done: str
) -> None:
    """Run one trash / restore / merge in a transaction; errors are one line, exit 1."""
    from mailhelpdesk.errors import HelpdeskError
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    try:
        with session_scope(app.engine) as session:
            run(session, _cli_change(app, session, as_agent))
    except HelpdeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(done)


_AS_AGENT = click.option(
    "--as", "as_agent", metavar="EMAIL", help="Act as this agent (default: the helpdesk)."
)


@ticket.command("delete")
@click.argument("number", type=int)
@_AS_AGENT
@click.pass_context
def ticket_delete(ctx: click.Context, number: int, as_agent: str | None) -> None:
    """Move a ticket to the trash (`ticket restore` brings it back until it is purged)."""
    from mailhelpdesk.services import housekeeping

    _housekeeping(
        ctx,
        as_agent,
        lambda s, c: housekeeping.trash(s, ticket_number=number, change=c),
        f"ticket {number}: trashed",
    )


@ticket.command("restore")
@click.argument("number", type=int)
@_AS_AGENT
@click.pass_context
def ticket_restore(ctx: click.Context, number: int, as_agent: str | None) -> None:
    """Take a ticket out of the trash."""
    from mailhelpdesk.services import housekeeping

    _housekeeping(
        ctx,
        as_agent,
        lambda s, c: housekeeping.restore(s, ticket_number=number, change=c),
        f"ticket {number}: restored",
    )


@ticket.command("link")
@click.argument("number", type=int)
@click.option("--revoke", is_flag=True, help="Replace the link: the old one answers 404.")
@_AS_AGENT
@click.pass_context
def ticket_link(ctx: click.Context, number: int, revoke: bool, as_agent: str | None) -> None:
    """Print the customer's status page link of a ticket (resources.md §8).

    Without `[http] public_url` in the config the secure id is printed instead of a URL.
    """
    from mailhelpdesk.domain.links import status_url
    from mailhelpdesk.services import status_page, ticket_reads

    public_url = ctx.obj.config.http.public_url
    secure_id: str | None = None
    if revoke:

        def replace(session: Any, change: Any) -> None:
            nonlocal secure_id
            secure_id = status_page.revoke_link(session, ticket_number=number, change=change)

        _housekeeping(ctx, as_agent, replace, f"ticket {number}: the old link is revoked")
    else:
        secure_id = _read_ticket(ctx, number, lambda s: ticket_reads.show(s, ticket_number=number))[
            "secure_id"
        ]
    click.echo(status_url(public_url, secure_id) or secure_id)


@ticket.command("merge")
@click.argument("number", type=int)
@click.option("--into", "into", type=int, required=True, help="The ticket to merge into.")
@_AS_AGENT
@click.pass_context
def ticket_merge(ctx: click.Context, number: int, into: int, as_agent: str | None) -> None:
    """Merge a ticket into another: its messages move, mail to it lands there, it is closed."""
    from mailhelpdesk.services import housekeeping

    _housekeeping(
        ctx,
        as_agent,
        lambda s, c: housekeeping.merge(s, ticket_number=number, into=into, change=c),
        f"ticket {number}: merged into {into}",
    )


# -- time entries ----------------------------------------------------------------------------------


@main.group("time")
def time_group() -> None:
    """Time spent on tickets (resources.md §5)."""


@time_group.command("add")
@click.argument("number", type=int)
@click.argument("minutes", type=int)
@click.option("--billable", is_flag=True, help="The time is billable.")
@click.option("--note", default="", help="What was done.")
@click.option(
    "--date", "on", type=click.DateTime(formats=["%Y-%m-%d"]), help="Day (default today)."
)
@click.option("--as", "as_agent", metavar="EMAIL", help="The agent whose time it is.")
@click.pass_context
def time_add(
    ctx: click.Context,
    number: int,
    minutes: int,
    billable: bool,
    note: str,
    on: Any,
    as_agent: str | None,
) -> None:
    """Record MINUTES spent on ticket NUMBER (one `time_entry` event in its history)."""
    from mailhelpdesk.errors import InvalidInputError, NotFoundError
    from mailhelpdesk.services import time_entries
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    with session_scope(app.engine) as session:
        change = _cli_change(app, session, as_agent)
        try:
            entry = time_entries.add_by_number(
                session,
                ticket_number=number,
                minutes=minutes,
                billable=billable,
                description=note,
                agent_email=None,
                on=on.date() if on else None,
                change=change,
            )
        except NotFoundError:
            raise click.ClickException(f"no ticket {number}") from None
        except InvalidInputError as exc:
            field = getattr(exc, "field", "")
            raise click.ClickException(f"{field}: {exc}" if field else str(exc)) from None
    click.echo(f"ticket {number}: {entry['minutes']} min recorded (entry {entry['id']})")


@time_group.command("list")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print {time_entries, summary}.")
@click.pass_context
def time_list(ctx: click.Context, number: int, as_json: bool) -> None:
    """The time entries of ticket NUMBER and their totals."""
    from mailhelpdesk.services import time_entries

    data = _read_ticket(ctx, number, lambda s: time_entries.listing(s, ticket_number=number))
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for e in data["time_entries"]:
        flag = "billable" if e["billable"] else "        "
        click.echo(
            f"{e['date']}  {e['minutes']:>5} min  {flag}  {e['agent_email'] or '-':<30} "
            f"{e['description']}"
        )
    summary = data["summary"]
    click.echo(f"total {summary['total_minutes']} min, billable {summary['billable_minutes']} min")


# -- inbound ---------------------------------------------------------------------------------------


@main.group()
def inbound() -> None:
    """Kept messages set aside by the pipeline, and replaying them."""


@inbound.command("list")
@click.option("--failed", is_flag=True, help="Only messages set aside with an error.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def inbound_list(ctx: click.Context, failed: bool, limit: int, as_json: bool) -> None:
    """Newest kept messages with their state, outcome and reason."""
    from mailhelpdesk.store import spool
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        rows = spool.list_inbound(session, state="failed" if failed else None, limit=limit)
        items = [
            {
                "id": r.id,
                "received_at": str(r.received_at),
                "source": r.source,
                "state": r.state,
                "outcome": r.outcome,
                "reason": r.reason,
                "message_id": r.message_id,
                "size": r.size,
                "ticket_id": r.ticket_id,
            }
            for r in rows
        ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for i in items:
        click.echo(
            f"{i['id']:>7} {i['state']:<7} {i['outcome'] or '-':<15} {i['source']:<6} {i['reason']}"
        )
    if not items:
        click.echo("nothing kept" if not failed else "nothing set aside", err=True)


@inbound.command("retry")
@click.argument("inbound_id", type=int)
@click.pass_context
def inbound_retry(ctx: click.Context, inbound_id: int) -> None:
    """Run a set-aside message through the pipeline again."""
    from mailhelpdesk.ingest import worker

    app = _app(ctx)
    if not worker.retry(app.engine, inbound_id):
        raise click.ClickException(
            f"inbound message {inbound_id} is not set aside (see `inbound list --failed`)"
        )
    # in a worker process of its own, within `[ingest] understand_timeout_s`: a message set
    # aside because its understanding hung or crashed must not hang or crash the CLI instead
    from mailhelpdesk.ingest.understanding import Understander

    understander = Understander(1, time_limit_s=app.config.ingest.understand_timeout_s)
    try:
        _drain(app, understander)
    finally:
        understander.close()
    from mailhelpdesk.domain.enums import InboundState
    from mailhelpdesk.domain.models import InboundMessage
    from mailhelpdesk.store.db import read_scope

    with read_scope(app.engine) as session:
        row = session.get(InboundMessage, inbound_id)
        assert row is not None
        click.echo(f"inbound {inbound_id}: {row.state} {row.outcome} {row.reason}".rstrip())
        if row.state == InboundState.failed:
            sys.exit(1)


def _drain(app: Any, understander: Any = None) -> Counter[str]:
    from mailhelpdesk.ingest import worker

    total: Counter[str] = Counter()
    while True:
        result = worker.process_batch(
            app.engine,
            app.settings,
            app.clock,
            limit=app.config.ingest.batch_size,
            understander=understander,
        )
        total.update(result.outcomes)
        if result.processed == 0:
            return total


# -- import ------------------------------------------------------------------------------------------


def _messages_at(path: Path) -> Iterator[tuple[str, bytes]]:
    """(reference, raw bytes) of every message in an mbox, a maildir or a folder of .eml files."""
    if path.is_dir() and (path / "cur").is_dir():
        box = mailbox.Maildir(str(path), factory=None, create=False)
        for key in box.iterkeys():
            yield f"maildir:{key}", box.get_bytes(key)
    elif path.is_dir():
        for file in sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in (".eml", ".msg", ".txt", ".box", "")
        ):
            yield str(file), file.read_bytes()
    else:
        box_m = mailbox.mbox(str(path), factory=None, create=False)
        for key in box_m.iterkeys():
            yield f"mbox:{key}", box_m.get_bytes(key)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--queue", default="", help="Queue for new tickets (default: by recipient, else Inbox)."
)
@click.pass_context
def import_(ctx: click.Context, path: Path, queue: str) -> None:
    """Import an mbox, a maildir or a folder of .eml files through the ingest pipeline."""
    from tqdm import tqdm

    from mailhelpdesk.ingest import worker
    from mailhelpdesk.store import spool
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    items = list(_messages_at(path))
    if not items:
        raise click.ClickException(f"no messages found in {path}")
    total: Counter[str] = Counter()
    size = app.config.ingest.batch_size
    with tqdm(total=len(items), unit="msg", desc="importing", disable=None) as bar:
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            with session_scope(app.engine) as session:
                for ref, raw in chunk:
                    spool.add_inbound(
                        session,
                        raw=raw,
                        envelope=spool.Envelope(
                            source="import", mail_from=None, source_ref=ref[:500], queue_hint=queue
                        ),
                        now=app.clock.now(),
                    )
            while True:
                result = worker.process_batch(app.engine, app.settings, app.clock, limit=size)
                total.update(result.outcomes)
                if result.processed == 0:
                    break
            bar.update(len(chunk))
    click.echo(", ".join(f"{k}: {v}" for k, v in sorted(total.items())))
    if total.get("failed"):
        click.echo(
            "some messages were set aside: see `mailhelpdesk inbound list --failed`", err=True
        )


# -- backup ------------------------------------------------------------------------------------------


@main.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_context
def backup_command(ctx: click.Context, dest: Path) -> None:
    """Copy the whole desk (tickets, raw mail, attachments, keys) to DEST while it runs.

    SQLite: a checked, self-contained database file (DEST, or a dated file in the folder DEST);
    restore by putting it in place of the database with the daemon stopped. PostgreSQL: a
    pg_dump custom-format file; restore with pg_restore into an empty database.
    """
    from tqdm import tqdm

    from mailhelpdesk.store.backup import BackupError, backup

    url = ctx.obj.config.database.url
    bar: tqdm[Any] | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="page", desc="backup", disable=None, leave=False)
        bar.update(done - bar.n)

    try:
        result = backup(url, dest, progress=progress)
    except BackupError as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    counts = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    click.echo(
        f"backup written: {result.path} ({result.engine}, {result.size_bytes} bytes"
        f"{'; ' + counts if counts else ''})"
    )


# -- agents ------------------------------------------------------------------------------------------


@main.group()
def agent() -> None:
    """Agents beyond those in the config."""


@agent.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--alternate", multiple=True, help="Another address of this agent (repeatable).")
@click.pass_context
def agent_add(ctx: click.Context, email: str, name: str, alternate: tuple[str, ...]) -> None:
    """Add (or update) an agent."""
    from email.utils import parseaddr

    from mailhelpdesk.domain.models import Agent
    from mailhelpdesk.store import tickets as store
    from mailhelpdesk.store.db import session_scope

    address = parseaddr(email)[1].lower()
    if "@" not in address or "\n" in email or "\r" in email:
        raise click.ClickException(f"not an email address: {email!r}")
    app = _app(ctx)
    with session_scope(app.engine) as session:
        row = store.get_agent_by_email(session, address) or Agent(email=address, origin="cli")
        row.name = name or row.name
        row.alternate_addresses = " ".join(
            sorted({*row.alternate_addresses.split(), *(a.lower() for a in alternate)})
        )
        session.add(row)
    click.echo(f"agent {address} saved")


@agent.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agent_list(ctx: click.Context, as_json: bool) -> None:
    """All agents (from the config and the CLI)."""
    from mailhelpdesk.store import tickets as store
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        items = [
            {
                "email": a.email,
                "name": a.name,
                "alternate_addresses": a.alternate_addresses.split(),
                "origin": a.origin,
            }
            for a in store.list_agents(session)
        ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for a in items:
        click.echo(
            f"{a['email']:<32} {a['name']:<24} {a['origin']:<6} {' '.join(a['alternate_addresses'])}"
        )


@agent.command("remove")
@click.argument("email")
@click.pass_context
def agent_remove(ctx: click.Context, email: str) -> None:
    """Remove an agent added with the CLI (config agents are removed by editing the config)."""
    from mailhelpdesk.store import tickets as store
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    with session_scope(app.engine) as session:
        row = store.get_agent_by_email(session, email)
        if row is None:
            raise click.ClickException(f"no agent {email}")
        if row.origin == "config":
            raise click.ClickException(
                f"{email} comes from the config file {app.config.source}: remove it there"
            )
        session.delete(row)
    click.echo(f"agent {email} removed")


@agent.command("passwd")
@click.argument("email")
@click.option("--clear", is_flag=True, help="Remove the password: the adapters' logins refuse it.")
@click.pass_context
def agent_passwd(ctx: click.Context, email: str, clear: bool) -> None:
    """Set an agent's password for the seed adapters' logins.

    The password is read from stdin (one line); on a terminal it is asked twice, unechoed. It is
    stored as an Argon2id hash.
    """
    from mailhelpdesk.errors import HelpdeskError
    from mailhelpdesk.services import agent_passwords
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    password = "" if clear else _read_password()
    try:
        with session_scope(app.engine) as session:
            if clear:
                agent_passwords.clear_password(session, email)
            else:
                agent_passwords.set_password(session, email, password, clock=app.clock)
    except HelpdeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {email} {'removed' if clear else 'set'}")


def _read_password() -> str:
    stdin = sys.stdin
    if stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return stdin.readline().rstrip("\r\n")


# -- later features ----------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """API tokens (stored hashed)."""


@token.command("create")
@click.option("--name", required=True, help="A unique description of the token's user.")
@click.option(
    "--ability",
    multiple=True,
    required=True,
    help="An ability to grant (repeat); `all` grants every ability.",
)
@click.option(
    "--expires-in",
    "expires_in",
    default=None,
    metavar="DURATION",
    help="The token stops working after this long, e.g. 90d, 12h, 30m (default: never).",
)
@click.option(
    "--owner",
    default=None,
    metavar="EMAIL",
    help="The agent the v1 endpoints act as (e.g. for the 'For my attention' perspective).",
)
@click.pass_context
def token_create(
    ctx: click.Context,
    name: str,
    ability: tuple[str, ...],
    expires_in: str | None,
    owner: str | None,
) -> None:
    """Mint an API token; it is printed once, as the last line (`id|secret`)."""
    from mailhelpdesk.config import parse_duration_s
    from mailhelpdesk.errors import HelpdeskError
    from mailhelpdesk.services import api_tokens
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    expires_at = None
    if expires_in is not None:
        try:
            expires_at = app.clock.now() + timedelta(
                seconds=parse_duration_s(expires_in, "--expires-in")
            )
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    try:
        with session_scope(app.engine) as session:
            plaintext = api_tokens.create_token(
                session,
                name=name,
                abilities=list(ability),
                clock=app.clock,
                expires_at=expires_at,
                owner_email=owner,
            )
            granted = api_tokens.normalise_abilities(list(ability))
    except HelpdeskError as exc:
        raise click.ClickException(str(exc)) from None
    until = f", expires {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
    click.echo(f"token {name!r} created with abilities: {' '.join(granted)}{until}")
    click.echo("store it now: it is shown only once")
    click.echo(plaintext)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print an array of tokens.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (names, abilities, last use; never the secret)."""
    from mailhelpdesk.services import api_tokens
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        tokens = api_tokens.list_tokens(session)
    rows = [
        {
            "name": t.name,
            "abilities": list(t.abilities),
            "created_at": t.created_at.isoformat() if t.created_at else None,
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "owner_email": t.owner_email,
            "expired": bool(t.expires_at and t.expires_at <= app.clock.now()),
        }
        for t in tokens
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for t, r in zip(tokens, rows, strict=True):
        state = f"last used {r['last_used_at'] or 'never'}"
        if r["revoked_at"]:
            state = f"revoked {r['revoked_at']}"
        elif r["expired"]:
            state = f"expired {r['expires_at']}"
        click.echo(f"{r['name']:<24} {state:<40} {' '.join(t.abilities)}")
    if not rows:
        click.echo("no tokens", err=True)


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token by name (effective on its next request)."""
    from mailhelpdesk.errors import HelpdeskError
    from mailhelpdesk.services import api_tokens
    from mailhelpdesk.store.db import session_scope

    app = _app(ctx)
    try:
        with session_scope(app.engine) as session:
            api_tokens.revoke_token(session, name=name, clock=app.clock)
    except HelpdeskError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token {name!r} revoked")


@main.command()
@click.argument("template")
@click.option("--data", default="{}", help="Template data as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print {subject, text, html} as JSON.")
@click.pass_context
def render(ctx: click.Context, template: str, data: str, as_json: bool) -> None:
    """Render a notice template (notices/TEMPLATE.subject.txt, .txt, .html), as the daemon does."""
    from mailhelpdesk.mail.render import NoticeRenderError, render_notice

    try:
        context = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--data: not valid JSON: {exc}") from None
    if not isinstance(context, dict):
        raise click.ClickException("--data: expected a JSON object")
    try:
        rendered = render_notice(template, context, template_dir=ctx.obj.config.templates.dir)
    except NoticeRenderError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(
            json.dumps(
                {"subject": rendered.subject, "text": rendered.text, "html": rendered.html},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    click.echo(
        f"Subject: {rendered.subject}\n\n{rendered.text.rstrip()}\n\n--- text/html ---\n{rendered.html.rstrip()}"
    )


@main.group()
def outbox() -> None:
    """Outbound mail and its delivery state."""


@outbox.command("list")
@click.option(
    "--state",
    type=click.Choice(["queued", "sent", "failed", "suppressed"]),
    default=None,
    help="Only mail in this state.",
)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox_list(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    """Outbound mail with its state, newest first."""
    from mailhelpdesk.store import outbox as outbox_store
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        items = [
            {
                "id": r.id,
                "created_at": str(r.created_at),
                "kind": r.kind,
                "ticket_id": r.ticket_id,
                "message_id": r.message_id,
                "to": r.rcpt_tos,
                "automatic": r.is_automatic,
                "state": r.state,
                "attempts": r.attempts,
                "next_attempt_at": str(r.next_attempt_at),
                "sent_at": str(r.sent_at) if r.sent_at else None,
                "last_error": r.last_error,
            }
            for r in outbox_store.list_items(session, state=state, limit=limit)
        ]
    if as_json:
        click.echo(json.dumps(items, indent=2, ensure_ascii=False))
        return
    for i in items:
        note = i["last_error"] if i["state"] != "sent" else ""
        click.echo(
            f"{i['id']:>7} {i['state']:<10} {i['kind']:<16} {i['to']:<32} attempts={i['attempts']} {note}".rstrip()
        )
    if not items:
        click.echo("no outbound mail", err=True)


@main.group()
def deliveries() -> None:
    """Outgoing HTTP calls: webhooks and intervention epilogs (signed, retried)."""


@deliveries.command("list")
@click.option(
    "--state",
    type=click.Choice(["queued", "delivered", "failed"]),
    default=None,
    help="Only calls in this state.",
)
@click.option(
    "--kind",
    type=click.Choice(["webhook", "epilog"]),
    default=None,
    help="Only webhooks or only epilogs.",
)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def deliveries_list(
    ctx: click.Context, state: str | None, kind: str | None, limit: int, as_json: bool
) -> None:
    """HTTP deliveries with their state, newest first (never their secrets)."""
    from mailhelpdesk.store import http_outbox
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        items = [
            {
                "id": r.id,
                "created_at": str(r.created_at),
                "kind": r.kind,
                "ref": r.ref,
                "ticket_id": r.ticket_id,
                "url": r.url,
                "state": r.state,
                "attempts": r.attempts,
                "max_attempts": r.max_attempts,
                "next_attempt_at": str(r.next_attempt_at),
                "last_status": r.last_status,
                "delivered_at": str(r.delivered_at) if r.delivered_at else None,
                "last_error": r.last_error,
                "event": _event_of(r.body) if r.kind == "webhook" else None,
            }
            for r in http_outbox.list_items(session, state=state, kind=kind, limit=limit)
        ]
    if as_json:
        click.echo(json.dumps(items, indent=2, ensure_ascii=False))
        return
    for i in items:
        what = i["event"] or i["ref"]
        note = i["last_error"] if i["state"] != "delivered" else f"HTTP {i['last_status']}"
        click.echo(
            f"{i['id']:>7} {i['state']:<10} {i['kind']:<8} {what:<24} {i['url']:<40} "
            f"attempts={i['attempts']}/{i['max_attempts']} {note}".rstrip()
        )
    if not items:
        click.echo("no HTTP deliveries", err=True)


def _event_of(body: bytes) -> str | None:
    try:
        event = json.loads(body).get("event")
    except (ValueError, AttributeError):
        return None
    return event if isinstance(event, str) else None


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the config and probe the database, the listener address and the mailboxes."""
    config: Config = ctx.obj.config
    click.echo(f"config: ok ({config.source})")
    problems = 0
    if config.interventions:
        from mailhelpdesk.services.interventions import check_templates

        try:
            check_templates(config)
            click.echo(f"interventions: ok ({', '.join(i.name for i in config.interventions)})")
        except ConfigError as exc:
            click.echo(f"interventions: FAILED {exc}")
            problems += 1
    try:
        app = _app(ctx)
        from mailhelpdesk.store import schema

        click.echo(
            f"database: ok ({config.database.url}, schema {schema.current_revision(app.engine)})"
        )
    except click.ClickException as exc:
        click.echo(f"database: FAILED {exc.message}")
        problems += 1
    if config.smtp_listener.enabled:
        try:
            with socket.create_server((config.smtp_listener.host, config.smtp_listener.port)):
                pass
            click.echo(
                f"smtp listener: {config.smtp_listener.host}:{config.smtp_listener.port} is free"
            )
        except OSError as exc:
            click.echo(
                f"smtp listener: {config.smtp_listener.host}:{config.smtp_listener.port} in use or not bindable ({exc.strerror})"
            )
    if config.imap_mailboxes:
        from mailhelpdesk.transports.imap_poller import probe

        for box in config.imap_mailboxes:
            found = asyncio.run(probe(box))
            if found.get("ok"):
                click.echo(
                    f"imap {box.name}: ok ({box.host}:{box.port} {box.security}, folder {found.get('folder')}: "
                    f"{found.get('messages')} messages, {found.get('unseen')} unseen; "
                    f"IDLE {'yes' if found.get('idle') else 'no'}, MOVE {'yes' if found.get('move') else 'no'}; "
                    f"capabilities {' '.join(found.get('capabilities') or [])})"
                )
            else:
                click.echo(f"imap {box.name}: FAILED {found.get('error')}")
                problems += 1
    click.echo(
        f"smtp relay: {'maildir ' + config.smtp_relay.maildir if not config.smtp_relay.host else config.smtp_relay.host}"
    )
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")


# -- contacts (resources.md §5) --------------------------------------------------------------------


@main.group()
def contact() -> None:
    """Contacts: the customers behind the tickets."""


@contact.command("list")
@click.option("--q", "q", help="Only contacts whose name, company or an address contains this.")
@click.option("--json", "as_json", is_flag=True, help="Print an array of contact objects.")
@click.pass_context
def contact_list(ctx: click.Context, q: str | None, as_json: bool) -> None:
    """List contacts, oldest first."""
    from mailhelpdesk.services import contacts
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        found = contacts.list_contacts(
            session, q=q or None, email=None, page=1, per_page=1_000_000
        )["contacts"]
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    for c in found:
        click.echo(
            f"{c['id']:>6}  {c['email']:<32} {c['name']:<24} {c['company']:<20} "
            f"{c['ticket_count']} ticket(s)"
        )
    if not found:
        click.echo("no contacts", err=True)


@contact.command("show")
@click.argument("ref", metavar="ID|EMAIL")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the contact object with its `tickets`."
)
@click.pass_context
def contact_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one contact (by id or by any of its addresses) and its tickets."""
    from mailhelpdesk.errors import NotFoundError
    from mailhelpdesk.services import contacts
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        try:
            found = contacts.find(session, ref)
        except NotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        data = contacts.show(session, contact_id=found.id or 0)
        data["tickets"] = contacts.tickets(
            session, contact_id=found.id or 0, page=1, per_page=1_000_000
        )["tickets"]
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"contact {data['id']}: {data['name']} <{data['email']}>")
    for label in ("company", "phone"):
        if data[label]:
            click.echo(f"{label}: {data[label]}")
    if data["alternate_emails"]:
        click.echo(f"also: {', '.join(data['alternate_emails'])}")
    if data["notes"]:
        click.echo(f"notes: {data['notes']}")
    click.echo(f"{data['ticket_count']} ticket(s)")
    for t in data["tickets"]:
        click.echo(f"  {t['number']}  {t['status']:<8} {t['originator_email']:<32} {t['subject']}")


@main.command()
@click.option(
    "--from", "start", metavar="DATE", help="First day (YYYY-MM-DD); 30 days before --to."
)
@click.option("--to", "end", metavar="DATE", help="Last day (YYYY-MM-DD), included; today.")
@click.option("--queue", help="Only tickets of this queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the API's).")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write a self-contained HTML page with charts to this file.",
)
@click.pass_context
def report(
    ctx: click.Context,
    start: str | None,
    end: str | None,
    queue: str | None,
    as_json: bool,
    html_file: str | None,
) -> None:
    """Volume, response and resolution times, SLA attainment, backlog and agent activity,
    computed from the history (resources.md §9)."""
    from pathlib import Path

    from mailhelpdesk.errors import InvalidInputError
    from mailhelpdesk.services import reports
    from mailhelpdesk.store.db import read_scope

    app = _app(ctx)
    with read_scope(app.engine) as session:
        try:
            found = reports.report(
                session, start=start, end=end, queue=queue, today=app.clock.now().date()
            )
        except InvalidInputError as exc:
            field = getattr(exc, "field", "")
            raise click.ClickException(f"--{field}: {exc}" if field else str(exc)) from None
    if html_file:
        from mailhelpdesk.services import report_page

        Path(html_file).write_text(report_page.render(found), encoding="utf-8")
    data = found.summary
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"report {data['from']} .. {data['to']}" + (f" queue {queue}" if queue else ""))
    click.echo(f"created {data['created']}  closed {data['closed']}  reopened {data['reopened']}")
    for key in ("first_response_s", "resolution_s"):
        values = data[key]
        click.echo(f"{key}: p50 {values['p50']}  p90 {values['p90']}")
    met = data["sla_met_pct"]
    click.echo(f"sla met: {'-' if met is None else f'{met} %'}")
    click.echo(
        "backlog by age: " + "  ".join(f"{k} {v}" for k, v in data["backlog_by_age"].items())
    )
    for agent in data["by_agent"]:
        click.echo(
            f"  {agent['email']:<32} responses {agent['responses']:>4}  closed {agent['closed']:>4}"
        )
    if html_file:
        click.echo(f"wrote {html_file}")
