"""Agents' mail commands (DESIGN.md §3): lines of their own at the top of an agent's reply.

    #note                          the reply is a private note (internal, mailed to no customer)
    #status open|closed            set the status
    #status on-hold YYYY-MM-DD     put the ticket on hold until that date
    #assign <email|me|none>        assign to an agent, to the sender, or to nobody
    #priority <name>               Low, Normal, High or Urgent
    #tag <name> / #untag <name>    add or remove a tag
    #set <field> <value>           set a field of the ticket's intervention (repeatable; the value
                                   is the rest of the line; checkbox: true/false, yes/no, 1/0)
    #submit                        submit the intervention's decision (the text below is added
                                   to the staff note; nothing is mailed to the customer)
    #field <name> [<value>]        set a custom field (the value is the rest of the line; none
                                   at all clears it); services/custom_fields.py checks both
    #time <duration> [billable] [text]
                                   record time spent: 15m, 90m, 1h30m, 2h; "billable" marks it
                                   billable, the rest of the line says what was done
    #due YYYY-MM-DD|none           set (due by the end of that day, UTC) or clear the due date
    #queue <name>                  move the ticket to that queue
    #resolution <text>             how it was resolved; only together with #status closed
    #watch / #unwatch              the sending agent starts / stops watching the ticket

Pure: text in, a `CommandBlock` out. Commands are read from the top of the text: blank lines
are skipped, every line that starts with `#` followed by a letter is a command, and the first
other line ends the block (a `#tag` further down is text, never a command). A line in the block
that is not a valid command makes the whole block an error (`CommandBlock.error`): the caller
applies nothing and tells the agent which line failed. Whether an assignee is a known agent is
the service layer's question (`services/ticket_changes.py`), not this module's; so are an
intervention's field names and types (`services/interventions.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date

from mailhelpdesk.domain.enums import Priority, TicketStatus

MAX_COMMAND_LINES = 20  # a "block" longer than this is not a command block but an error
MAX_TAG_CHARS = 100
MAX_VALUE_CHARS = 2000
INTERVENTION_COMMANDS = ("set", "submit")

_COMMAND_LINE = re.compile(r"^#[A-Za-z]")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Command:
    name: str  # note | status | assign | priority | tag | untag | set | submit
    argument: str = (
        ""  # normalised: status value, lower-case email / "me" / "none", priority name, tag, field
    )
    value: str = ""  # #set: the value as written (the rest of the line, stripped)
    on_hold_until: date | None = None
    minutes: int = 0  # #time: the duration in minutes
    billable: bool = False  # #time: marked billable
    line: str = ""  # the line as written
    line_number: int = 0  # 1-based, in the text given


@dataclass(frozen=True)
class CommandError:
    line_number: int  # 1-based, in the text given
    line: str
    message: str

    def describe(self) -> str:
        return f"line {self.line_number} ({self.line!r}): {self.message}"


@dataclass(frozen=True)
class CommandBlock:
    commands: tuple[Command, ...] = field(default_factory=tuple)
    body: str = ""  # the text with the command lines (and the blank lines among them) removed
    error: CommandError | None = None

    @property
    def is_note(self) -> bool:
        return any(c.name == "note" for c in self.commands)

    @property
    def changes(self) -> tuple[Command, ...]:
        """The commands that change the ticket (everything but #note, #set and #submit)."""
        return tuple(
            c for c in self.commands if c.name not in ("note", "resolution", *INTERVENTION_COMMANDS)
        )

    @property
    def intervention(self) -> tuple[Command, ...]:
        """The #set and #submit lines (they act on the ticket's intervention)."""
        return tuple(c for c in self.commands if c.name in INTERVENTION_COMMANDS)

    @property
    def is_submit(self) -> bool:
        return any(c.name == "submit" for c in self.commands)

    @property
    def resolution(self) -> str | None:
        """The text of `#resolution` (kept with `#status closed`), or None."""
        return next((c.value for c in self.commands if c.name == "resolution"), None)


class _Bad(Exception):
    pass


def parse_commands(text: str) -> CommandBlock:
    """Split `text` into its leading command lines and the rest."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip().lstrip("\ufeff")
        if not stripped:
            index += 1
            continue
        if not _COMMAND_LINE.match(stripped):
            break
        if len(commands) >= MAX_COMMAND_LINES:
            return CommandBlock(
                error=CommandError(
                    index + 1, stripped[:200], f"more than {MAX_COMMAND_LINES} command lines"
                )
            )
        try:
            commands.append(replace(_parse_line(stripped), line_number=index + 1))
        except _Bad as bad:
            return CommandBlock(error=CommandError(index + 1, stripped[:200], str(bad)))
        index += 1
    if not commands:
        return CommandBlock(body=text)
    resolution = next((c for c in commands if c.name == "resolution"), None)
    closing = any(c.name == "status" and c.argument == TicketStatus.closed for c in commands)
    if resolution is not None and not closing:
        return CommandBlock(
            error=CommandError(
                resolution.line_number, resolution.line, "#resolution goes with #status closed"
            )
        )
    body = "\n".join(lines[index:])
    return CommandBlock(commands=tuple(commands), body=body)


def _parse_line(line: str) -> Command:
    name, _, rest = line[1:].partition(" ")
    name = name.strip().lower()
    args = rest.split()
    if name == "note":
        if args:
            raise _Bad("#note takes no argument (write the note below it)")
        return Command("note", line=line)
    if name == "status":
        return _status(args, line)
    if name == "assign":
        if len(args) != 1:
            raise _Bad("expected #assign <email|me|none>")
        who = args[0].strip("<>").lower()
        if who not in ("me", "none") and not _EMAIL.match(who):
            raise _Bad(f"{args[0]!r} is not an email address, 'me' or 'none'")
        return Command("assign", who, line=line)
    if name == "priority":
        if len(args) != 1:
            raise _Bad("expected #priority Low|Normal|High|Urgent")
        try:
            priority = Priority.from_name(args[0])
        except ValueError:
            raise _Bad(f"unknown priority {args[0]!r} (Low, Normal, High, Urgent)") from None
        return Command("priority", priority.name, line=line)
    if name in ("tag", "untag"):
        tag = " ".join(args)
        if not tag:
            raise _Bad(f"expected #{name} <name>")
        if len(tag) > MAX_TAG_CHARS:
            raise _Bad(f"a tag is at most {MAX_TAG_CHARS} characters")
        return Command(name, tag, line=line)
    if name == "set":
        field_name, _, value = rest.strip().partition(" ")
        if not field_name:
            raise _Bad("expected #set <field> <value>")
        if len(value) > MAX_VALUE_CHARS:
            raise _Bad(f"a value is at most {MAX_VALUE_CHARS} characters")
        return Command("set", field_name, value=value.strip(), line=line)
    if name == "submit":
        if args:
            raise _Bad("#submit takes no argument (set fields with #set <field> <value>)")
        return Command("submit", line=line)
    if name == "field":
        return _field(rest, line)
    if name == "time":
        return _time(rest, line)
    housekeeping = _housekeeping(name, rest.strip(), args, line)
    if housekeeping is not None:
        return housekeeping
    raise _Bad(
        f"unknown command #{name} (known: #note, #status, #assign, #priority, #tag, #untag, "
        "#set, #submit, #field, #time, #due, #queue, #resolution, #watch, #unwatch)"
    )


def _status(args: list[str], line: str) -> Command:
    if not args:
        raise _Bad("expected #status open|closed|on-hold YYYY-MM-DD")
    value = args[0].lower()
    if value in (TicketStatus.open.value, TicketStatus.closed.value):
        if len(args) != 1:
            raise _Bad(f"#status {value} takes no date")
        return Command("status", value, line=line)
    if value in ("on-hold", "onhold", "on_hold", "hold"):
        if len(args) != 2 or not _DATE.match(args[1]):
            raise _Bad("expected #status on-hold YYYY-MM-DD")
        try:
            until = date.fromisoformat(args[1])
        except ValueError:
            raise _Bad(f"{args[1]!r} is not a valid date") from None
        return Command("status", TicketStatus.on_hold.value, on_hold_until=until, line=line)
    raise _Bad(f"unknown status {args[0]!r} (open, closed, on-hold YYYY-MM-DD)")


# -- #field and #time (custom fields and time entries) ---------------------------------------------

_DURATION = re.compile(r"^(?:(\d{1,4})h)?(?:(\d{1,5})m(?:in)?)?$", re.IGNORECASE)
MAX_TIME_MINUTES = 10_080  # as services/time_entries.py: one entry is at most a week


def _field(rest: str, line: str) -> Command:
    name, _, value = rest.strip().partition(" ")
    if not name:
        raise _Bad("expected #field <name> <value>")
    if len(value) > MAX_VALUE_CHARS:
        raise _Bad(f"a value is at most {MAX_VALUE_CHARS} characters")
    return Command("field", name.lower(), value=value.strip(), line=line)


def parse_duration_minutes(text: str) -> int | None:
    """Minutes in `15m`, `90m`, `1h30m`, `2h` (None when `text` is not such a duration)."""
    found = _DURATION.match(text.strip())
    if not found or not any(found.groups()):
        return None
    hours, minutes = (int(g) if g else 0 for g in found.groups())
    return hours * 60 + minutes


def _time(rest: str, line: str) -> Command:
    words = rest.split()
    minutes = parse_duration_minutes(words[0]) if words else None
    if minutes is None:
        raise _Bad("expected #time <duration> [billable] [text], e.g. #time 15m or #time 1h30m")
    if not 1 <= minutes <= MAX_TIME_MINUTES:
        raise _Bad(f"a time entry is from 1 to {MAX_TIME_MINUTES} minutes")
    billable = len(words) > 1 and words[1].lower() == "billable"
    text = " ".join(words[2 if billable else 1 :])
    if len(text) > MAX_VALUE_CHARS:
        raise _Bad(f"a description is at most {MAX_VALUE_CHARS} characters")
    return Command("time", str(minutes), value=text, minutes=minutes, billable=billable, line=line)


# -- housekeeping commands (resources.md §4) ----------------------------------------------------


def _housekeeping(name: str, rest: str, args: list[str], line: str) -> Command | None:
    """#due, #queue, #resolution, #watch, #unwatch; None for any other name."""
    if name == "due":
        if len(args) != 1:
            raise _Bad("expected #due YYYY-MM-DD or #due none")
        if args[0].lower() == "none":
            return Command("due", "none", line=line)
        if not _DATE.match(args[0]):
            raise _Bad(f"{args[0]!r} is not a date (YYYY-MM-DD) or none")
        try:
            date.fromisoformat(args[0])
        except ValueError:
            raise _Bad(f"{args[0]!r} is not a valid date") from None
        return Command("due", args[0], line=line)
    if name == "queue":
        queue = " ".join(args)
        if not queue:
            raise _Bad("expected #queue <name>")
        return Command("queue", queue, line=line)
    if name == "resolution":
        if not rest:
            raise _Bad("expected #resolution <text>")
        if len(rest) > MAX_VALUE_CHARS:
            raise _Bad(f"a resolution is at most {MAX_VALUE_CHARS} characters")
        return Command("resolution", value=rest, line=line)
    if name in ("watch", "unwatch"):
        if args:
            raise _Bad(f"#{name} takes no argument (it is about the agent who sends it)")
        return Command(name, line=line)
    return None
