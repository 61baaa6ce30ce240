"""Agents' mail commands: parsed from the top of the reply only, all or nothing."""

from __future__ import annotations

from datetime import date

import pytest

from mailhelpdesk.mail.commands import parse_commands


def test_no_commands_leaves_text_alone() -> None:
    block = parse_commands("Hello,\n#tag vip is not a command here\n")
    assert (
        block.commands == ()
        and block.error is None
        and block.body == "Hello,\n#tag vip is not a command here\n"
    )


@pytest.mark.parametrize(
    ("line", "name", "argument"),
    [
        ("#note", "note", ""),
        ("#status open", "status", "open"),
        ("#status closed", "status", "closed"),
        ("#STATUS Closed", "status", "closed"),
        ("#assign me", "assign", "me"),
        ("#assign none", "assign", "none"),
        ("#assign Bob@Helpdesk.test", "assign", "bob@helpdesk.test"),
        ("#assign <bob@helpdesk.test>", "assign", "bob@helpdesk.test"),
        ("#priority High", "priority", "high"),
        ("#priority urgent", "priority", "urgent"),
        ("#tag vip", "tag", "vip"),
        ("#untag needs reply", "untag", "needs reply"),
    ],
)
def test_each_command(line: str, name: str, argument: str) -> None:
    block = parse_commands(f"{line}\nThe answer.\n")
    assert block.error is None
    (command,) = block.commands
    assert (command.name, command.argument, command.line_number) == (name, argument, 1)
    assert block.body.strip() == "The answer."


def test_on_hold_takes_a_date() -> None:
    (command,) = parse_commands("#status on-hold 2026-12-01\n").commands
    assert (command.argument, command.on_hold_until) == ("on-hold", date(2026, 12, 1))


def test_several_commands_blank_lines_and_body() -> None:
    block = parse_commands(
        "\n#priority High\n\n  #tag vip\n#note\nInternal remark.\n#status closed\n"
    )
    assert [c.name for c in block.commands] == ["priority", "tag", "note"]
    assert block.is_note and [c.name for c in block.changes] == ["priority", "tag"]
    assert block.body == "Internal remark.\n#status closed\n"  # below the text it is text


@pytest.mark.parametrize(
    ("text", "line_number", "fragment"),
    [
        ("#status maybe\nhi", 1, "unknown status"),
        ("#status on-hold\nhi", 1, "on-hold YYYY-MM-DD"),
        ("#status on-hold 2026-02-30\n", 1, "not a valid date"),
        ("#status closed 2026-12-01\n", 1, "takes no date"),
        ("#priority extreme\n", 1, "unknown priority"),
        ("#assign\n", 1, "#assign"),
        ("#assign bob\n", 1, "not an email"),
        ("#tag\n", 1, "#tag"),
        ("#tag " + "x" * 101 + "\n", 1, "at most"),
        ("#note please\n", 1, "no argument"),
        ("#priority High\n#frobnicate\nhi", 2, "unknown command"),
    ],
)
def test_bad_command_is_an_error_naming_the_line(
    text: str, line_number: int, fragment: str
) -> None:
    block = parse_commands(text)
    assert block.error is not None and block.commands == ()
    assert block.error.line_number == line_number and fragment in block.error.message
    assert f"line {line_number}" in block.error.describe()


def test_crlf_and_html_converted_text() -> None:
    block = parse_commands("#status closed\r\n\r\nThanks!\r\n")
    assert [c.argument for c in block.commands] == ["closed"] and block.body.strip() == "Thanks!"


def test_too_many_command_lines() -> None:
    block = parse_commands("#tag a\n" * 30)
    assert block.error is not None and "more than" in block.error.message


# -- interventions: #set and #submit --------------------------------------------------------------


def test_set_and_submit() -> None:
    block = parse_commands(
        "#set accept yes\n#SET comment  ten  percent, from  Monday \n#submit\n\nOk by me.\n"
    )
    assert block.error is None
    first, second, submit = block.commands
    assert (first.name, first.argument, first.value) == ("set", "accept", "yes")
    assert (second.name, second.argument, second.value) == (
        "set",
        "comment",
        "ten  percent, from  Monday",
    )
    assert submit.name == "submit" and block.is_submit
    assert block.intervention == block.commands and block.changes == ()
    assert block.body.strip() == "Ok by me."


def test_set_with_an_empty_value_and_set_without_submit() -> None:
    block = parse_commands("#set comment\n#tag vip\n")
    assert block.error is None and not block.is_submit
    assert [(c.name, c.argument, c.value) for c in block.intervention] == [("set", "comment", "")]
    assert [c.name for c in block.changes] == ["tag"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#set\n", "expected #set <field> <value>"),
        ("#submit now\n", "#submit takes no argument"),
        ("#set x " + "v" * 2001 + "\n", "at most 2000 characters"),
        ("#sumbit\n", "unknown command #sumbit"),
    ],
)
def test_bad_set_or_submit(text: str, message: str) -> None:
    block = parse_commands(text)
    assert block.error is not None and message in block.error.message and block.commands == ()


# -- housekeeping commands (resources.md §4) ----------------------------------------------------


def test_housekeeping_commands_parse() -> None:
    """#due, #queue, #watch, #unwatch and #resolution (with #status closed) are commands."""
    block = parse_commands(
        "#due 2026-12-24\n#queue Second Level\n#watch\n#status closed\n"
        "#resolution Swapped the fuser unit\n\nDone.\n"
    )
    assert block.error is None
    assert [(c.name, c.argument) for c in block.changes] == [
        ("due", "2026-12-24"),
        ("queue", "Second Level"),
        ("watch", ""),
        ("status", "closed"),
    ]
    assert block.resolution == "Swapped the fuser unit"
    assert block.body.strip() == "Done."
    assert [c.argument for c in parse_commands("#due none\n#unwatch\n").changes] == ["none", ""]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#due tomorrow\n", "not a date"),
        ("#due 2026-02-30\n", "not a valid date"),
        ("#queue\n", "expected #queue"),
        ("#watch me\n", "takes no argument"),
        ("#resolution Fixed\n", "goes with #status closed"),
        ("#status open\n#resolution Fixed\n", "goes with #status closed"),
        ("#resolution\n#status closed\n", "expected #resolution"),
    ],
)
def test_housekeeping_command_errors(text: str, message: str) -> None:
    block = parse_commands(text)
    assert block.error is not None and message in block.error.message
