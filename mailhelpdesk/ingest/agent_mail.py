"""Mail from agents: mail commands, answers relayed to the customer, and forwards that open a
ticket for the original sender. Called from the `apply` step."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import date

from mailhelpdesk.domain.enums import Outcome, ResponseKind
from mailhelpdesk.errors import ConflictError, InvalidInputError
from mailhelpdesk.ingest.context import IngestContext, ThreadVia
from mailhelpdesk.ingest.facts import (
    forwarded_of,
    queue_for,
    response_from,
    sender_email,
    visible_of,
)
from mailhelpdesk.mail.commands import Command, CommandBlock, CommandError, parse_commands
from mailhelpdesk.mail.parsed import ParsedMail
from mailhelpdesk.mail.reply_text import own_text, visible_text
from mailhelpdesk.mail.tokens import split_plus
from mailhelpdesk.services import (
    custom_fields,
    interventions,
    ticket_changes,
    time_entries,
    watchers,
)
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.reactions import Thread
from mailhelpdesk.services.tickets import NewAttachment, NewResponse
from mailhelpdesk.store import tickets as store

log = logging.getLogger(__name__)


def apply_agent_mail(ctx: IngestContext, parsed: ParsedMail) -> None:
    """A verified agent's mail on a ticket: mail commands at the top (mail/commands.py), then the
    answer. All commands are checked before anything is applied: one bad line and nothing
    happens (no response, no change) except one `command_error` notice to the agent. Otherwise
    the answer is stored (`agent`, public, mailed to the customer and CCs) or, with `#note`, kept
    as an internal note; then the commands change the ticket (services/ticket_changes.py).
    A forward that reached the ticket other than through a signed reply address is kept as an
    internal note too (an agent passing ticket mail on is not answering the customer).

    The command lines are removed from what is stored and shown: `plain_text` is the text
    without them, `visible_text` that without quoted history, and the HTML part (which still
    holds them) is not kept when there were commands (the raw message stays reachable)."""
    assert ctx.ticket is not None and ctx.agent is not None
    ticket, agent = ctx.ticket, ctx.agent
    block = _own_commands(ctx, parsed)
    error = block.error or _check_commands(ctx, block)
    if error is not None:
        message_id = parsed.message_id[:998] if parsed.message_id else None
        ticket_service.refuse_command(
            ctx.session,
            ticket,
            error=error.message,
            line=f"line {error.line_number}: {error.line}",
            change=ctx.change,
            thread=Thread(message_id, (message_id,) if message_id else ()),
        )
        log.warning(
            "agent mail command refused agent=%s ticket=%s %s",
            agent.email,
            ticket.number,
            error.describe(),
        )
        ctx.outcome = Outcome.held
        ctx.reason = (
            f"mail command refused, nothing applied on ticket {ticket.number}: {error.describe()}"
        )
        return
    visible = (
        parse_commands(visible_of(ctx, parsed)).body.strip()
        if block.commands
        else visible_of(ctx, parsed).strip()
    )
    body = block.body if block.commands else parsed.text
    html = None if block.commands else parsed.html
    base = response_from(ctx, parsed, ResponseKind.agent)
    # a verified agent forwarding ticket mail to the support address (linked by References or
    # the subject tag, not by answering a notice) is passing it on, not answering the customer
    forward_of_ticket_mail = (
        ctx.thread_via != ThreadVia.signed_address and forwarded_of(ctx, parsed) is not None
    )
    if block.intervention:  # #set / #submit: one staff note, no mail out
        interventions.submit(
            ctx.session,
            change=ctx.change,
            ticket=ticket,
            agent_email=agent.email,
            agent_name=agent.name,
            values={c.argument: c.value for c in block.intervention if c.name == "set"},
            content=visible,
            final=block.is_submit,
            base=base,
        )
        what = "intervention " + ("submit" if block.is_submit else "edit")
    elif block.changes and not visible and not block.is_note and not forward_of_ticket_mail:
        # only commands: the changes themselves are the record (ticket events with the agent
        # and the channel); there is no message for anyone to read
        what = "commands"
    elif block.is_note or not visible or forward_of_ticket_mail:
        if body.strip():
            text = body.strip()
        elif block.commands:
            text = "Mail commands: " + "; ".join(c.line for c in block.commands)
        else:
            text = "(no text)"
        note = replace(
            base,
            kind=ResponseKind.note,
            plain_text=text,
            visible_text=visible or text,
            html=html,
            is_internal=True,
        )
        ticket_service.add_response(ctx.session, ticket, note, change=ctx.change, reopen=False)
        what = "note"
    else:
        # an `agent_response` event: mailed to the customer and CCs with the mail's files
        answer = replace(base, plain_text=body, visible_text=visible, html=html)
        ticket_service.add_response(ctx.session, ticket, answer, change=ctx.change, reopen=False)
        what = "answer"
    for command in _fields_first(block.changes):
        _run_command(ctx, command, resolution=block.resolution)
    done = "; ".join(c.line for c in block.commands)
    ctx.outcome = Outcome.reply_added
    ctx.reason = f"agent {what} on ticket {ticket.number} ({ctx.verified})" + (
        f", commands: {done}" if done else ""
    )


def _own_commands(ctx: IngestContext, parsed: ParsedMail) -> CommandBlock:
    """The command block at the top of the text, but only when it stands in the agent's own
    text (mail/reply_text.own_text): lines that are part of a quote, above all a customer's
    mail quoted with no header lines, are never commands (issue 17, defect 10). Hidden HTML is
    already gone from the text (mail/html_hidden.py)."""
    block = parse_commands(parsed.text)
    if not (block.commands or block.error):
        return block
    own = parse_commands(own_text(parsed.text))
    if [c.line for c in own.commands] == [c.line for c in block.commands] and (
        (own.error is None) == (block.error is None)
    ):
        return block
    ctx.notes.append("command lines in quoted text were not read as commands")
    log.warning("agent mail: command lines outside the agent's own text ignored")
    return CommandBlock(body=parsed.text)


def _check_commands(ctx: IngestContext, block: CommandBlock) -> CommandError | None:
    """What the parser cannot know: is the assignee an agent? (The rest is checked again by the
    services, which refuse what they cannot apply.)"""
    assert ctx.ticket is not None
    for command in block.intervention:
        try:
            interventions.check_command(
                ctx.session,
                ctx.settings.notify,
                ctx.ticket,
                command.name,
                command.argument,
                command.value,
            )
        except (InvalidInputError, ConflictError) as exc:
            return CommandError(command.line_number, command.line, str(exc))
    for command in block.changes:
        try:
            if command.name == "assign" and command.argument != "none":
                ticket_changes.check_assignee(ctx.session, _assignee(ctx, command.argument))
            elif command.name == "status":
                ticket_changes.check_status(command.argument, command.on_hold_until)
            elif command.name == "priority":
                ticket_changes.check_priority(command.argument)
            elif command.name in ("tag", "untag"):
                ticket_changes.check_tag(command.argument)
            elif command.name == "queue":
                ticket_changes.check_queue(ctx.session, command.argument)
        except InvalidInputError as exc:
            return CommandError(command.line_number, command.line, str(exc))
    return _check_fields_and_time(ctx, block)


def _assignee(ctx: IngestContext, argument: str) -> str | None:
    if argument == "none":
        return None
    if argument == "me":
        return ctx.agent.email if ctx.agent else None
    return argument


def _run_command(ctx: IngestContext, command: Command, *, resolution: str | None = None) -> None:
    """One checked mail command through the same service call the API and the CLI make
    (`resolution`: the block's `#resolution`, kept with `#status closed`)."""
    assert ctx.ticket is not None
    ticket, change, argument = ctx.ticket, ctx.change, command.argument
    if command.name == "status":
        ticket_changes.set_status(
            ctx.session,
            ticket,
            argument,
            on_hold_until=command.on_hold_until,
            resolution=resolution if argument == "closed" else None,
            change=change,
        )
    elif command.name == "assign":
        ticket_changes.assign(ctx.session, ticket, _assignee(ctx, argument), change=change)
    elif command.name == "priority":
        ticket_changes.set_priority(ctx.session, ticket, argument, change=change)
    elif command.name == "tag":
        ticket_changes.tag(ctx.session, ticket, argument, change=change)
    elif command.name == "untag":
        ticket_changes.untag(ctx.session, ticket, argument, change=change)
    elif command.name in ("field", "time"):
        _run_field_or_time(ctx, command)
    else:
        _run_housekeeping(ctx, command)


# -- #field and #time ---------------------------------------------------------------------------


def _field_value(ctx: IngestContext, command: Command) -> object:
    definition = custom_fields.find(ctx.settings.notify.custom_fields, command.argument)
    return custom_fields.from_text(definition, command.value)


def _check_fields_and_time(ctx: IngestContext, block: CommandBlock) -> CommandError | None:
    """Each `#field` value against its definition, each `#time` entry; and a `#status closed`
    that would leave a field unset that is required to close (the `#field` lines of the same
    mail count: they are applied first)."""
    assert ctx.ticket is not None
    pending: dict[str, object] = {}
    for command in block.changes:
        try:
            if command.name == "field":
                pending[command.argument] = _field_value(ctx, command)
            elif command.name == "time":
                time_entries.check_entry(
                    ctx.session,
                    minutes=command.minutes,
                    description=command.value,
                    agent_email=ctx.agent.email if ctx.agent else None,
                )
        except InvalidInputError as exc:
            what = f"custom field {command.argument!r} " if command.name == "field" else ""
            return CommandError(command.line_number, command.line, f"{what}{exc}")
    for command in block.changes:
        if command.name == "status" and command.argument == "closed":
            if ctx.ticket.status == "closed":
                continue
            missing = custom_fields.closing_errors(
                ctx.session, ctx.ticket, ctx.settings.notify.custom_fields, pending
            )
            if missing:
                names = ", ".join(k.removeprefix("custom_fields.") for k in missing)
                return CommandError(
                    command.line_number,
                    command.line,
                    f"the ticket cannot be closed before these custom fields are set: {names} "
                    "(#field <name> <value>)",
                )
    return None


def _fields_first(commands: tuple[Command, ...]) -> list[Command]:
    """The commands in their order, but `#field` lines first: a `#status closed` in the same
    mail then sees the fields it requires."""
    return sorted(commands, key=lambda c: c.name != "field")


def _run_field_or_time(ctx: IngestContext, command: Command) -> None:
    assert ctx.ticket is not None and ctx.agent is not None
    if command.name == "field":
        custom_fields.set_values(
            ctx.session,
            ctx.ticket,
            {command.argument: _field_value(ctx, command)},
            change=ctx.change,
        )
    else:
        time_entries.add(
            ctx.session,
            ctx.ticket,
            minutes=command.minutes,
            billable=command.billable,
            description=command.value,
            agent_email=ctx.agent.email,
            change=ctx.change,
        )


def _run_housekeeping(ctx: IngestContext, command: Command) -> None:
    """#due, #queue, #watch, #unwatch (resources.md §4)."""
    assert ctx.ticket is not None and ctx.agent is not None
    ticket, change, argument = ctx.ticket, ctx.change, command.argument
    if command.name == "due":
        due = (
            None if argument == "none" else ticket_changes.end_of_day(date.fromisoformat(argument))
        )
        ticket_changes.set_due(ctx.session, ticket, due, change=change)
    elif command.name == "queue":
        ticket_changes.move(ctx.session, ticket, argument, change=change)
    elif command.name == "watch":
        watchers.watch(ctx.session, ticket, ctx.agent.email, change=change)
    elif command.name == "unwatch":
        watchers.unwatch(ctx.session, ticket, ctx.agent.email, change=change)


def open_forwarded(ctx: IngestContext, parsed: ParsedMail) -> None:
    """An agent's forward: a ticket for the original sender, whose message is the first (public,
    customer) response; the forwarder's own text above it becomes an internal note."""
    forwarded = ctx.forwarded
    assert forwarded is not None
    sender = forwarded.sender
    agent_addresses = {a for agent in ctx.settings.agents for a in agent.addresses}
    subject = _FORWARD_PREFIX.sub("", forwarded.subject or parsed.subject) or parsed.subject
    attachments = forwarded.attachments if forwarded.shape == "rfc822" else parsed.attachments
    original = forwarded.message_id[:998] if forwarded.message_id else None
    first = NewResponse(
        kind=ResponseKind.customer,
        plain_text=forwarded.text,
        visible_text=visible_text(forwarded.text),
        created_by_email=sender.email,
        created_by_name=sender.name,
        subject=subject,
        message_id=parsed.message_id[:998] if parsed.message_id else None,
        is_email_sourced=True,
        inbound_id=ctx.inbound_id,
        attachments=[
            NewAttachment(a.filename, a.content_type, a.data, a.is_inline, a.content_id)
            for a in attachments
        ],
    )
    ticket = ticket_service.create_ticket(
        ctx.session,
        subject=subject,
        originator_email=sender.email,
        originator_name=sender.name,
        queue_name=queue_for(ctx, parsed),
        first=first,
        cc=[
            (a.email, a.name)
            for a in forwarded.cc
            if a.email not in agent_addresses
            and split_plus(a.email)[0] not in ctx.settings.own_addresses
        ],
        change=ctx.change,
        # the original sender never saw the forward: their notices thread on their own message
        thread=Thread(original, (original,) if original else ()),
        cc_limits=ctx.settings.cc_limits,
    )
    if forwarded.message_id:
        store.record_message_id(
            ctx.session,
            message_id=forwarded.message_id[:998],
            ticket_id=ticket.id or 0,
            direction="in",
        )
    forwarder = sender_email(parsed)
    if forwarded.note:
        ticket_service.add_response(
            ctx.session,
            ticket,
            NewResponse(
                kind=ResponseKind.note,
                plain_text=forwarded.note,
                visible_text=forwarded.note,
                is_internal=True,
                created_by_email=forwarder,
                created_by_name=ctx.agent.name
                if ctx.agent
                else (parsed.from_.name if parsed.from_ else ""),
                subject=parsed.subject,
                is_email_sourced=True,
                verified=ctx.verified,
                inbound_id=ctx.inbound_id,
            ),
            change=ctx.change,
            reopen=False,
        )
    ctx.ticket, ctx.outcome = ticket, Outcome.ticket_created
    ctx.reason = (
        f"ticket {ticket.number} for {sender.email}, forwarded ({forwarded.shape}) by {forwarder}"
        f" ({ctx.verified or 'unverified'})"
    )


_FORWARD_PREFIX = re.compile(r"^\s*((fwd?|fw|tr|wg|rv|doorst)\s*:\s*)+", re.IGNORECASE)
