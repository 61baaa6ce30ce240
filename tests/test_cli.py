"""The CLI as an operator meets it: help, clear errors without tracebacks, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailhelpdesk.cli import main
from tests.helpers import make_mail

COMMANDS = [
    "init",
    "serve",
    "token",
    "ticket",
    "import",
    "render",
    "inbound",
    "outbox",
    "agent",
    "check",
]


def test_every_design_command_exists() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command}" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailhelpdesk", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "mailhelpdesk" in result.stdout


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[smtp_listener]\nport = "twenty-five"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailhelpdesk", "--config", str(bad), "init"],
        capture_output=True,
        text=True,
        check=False,  # it must fail; how is asserted below
    )
    assert result.returncode != 0
    assert "smtp_listener.port: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "init"])
    assert result.exit_code != 0 and "config file not found" in result.output


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "c.db"}"\n[helpdesk]\naddress = "support@helpdesk.test"\nsecret = "x"\n'
    )
    return path


def test_init_is_idempotent(cfg: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["--config", str(cfg), "init"])
    second = runner.invoke(main, ["--config", str(cfg), "init"])
    assert first.exit_code == 0 and "upgraded from empty" in first.output
    assert second.exit_code == 0 and "up to date" in second.output


def test_import_then_ticket_list_and_show_json(cfg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "a.eml").write_bytes(make_mail(subject="first", message_id="<a@x.test>"))
    (folder / "b.eml").write_bytes(
        make_mail(
            subject="Re: first", message_id="<b@x.test>", headers={"In-Reply-To": "<a@x.test>"}
        )
    )
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(cfg), "import", str(folder)])
    assert result.exit_code == 0, result.output
    assert "ticket_created: 1" in result.output and "reply_added: 1" in result.output
    listed = json.loads(
        runner.invoke(main, ["--config", str(cfg), "ticket", "list", "--json"]).output
    )
    assert [t["number"] for t in listed] == [100001]
    assert "responses" not in listed[0]
    shown = json.loads(
        runner.invoke(main, ["--config", str(cfg), "ticket", "show", "100001", "--json"]).output
    )
    expected_header = {
        "id",
        "number",
        "subject",
        "status",
        "priority",
        "queue_id",
        "originator_email",
        "assigned_to_email",
        "resolved",
        "on_hold_until",
        "created_at",
        "updated_at",
        "queue",
        "originator_name",
        "tags",
        "cc",
        "contact_id",
        "responses",
        "intervention",
        # housekeeping (resources.md §2 ticket object additions)
        "due_at",
        "resolution",
        "merged_into",
        "watchers",
        "custom_fields",  # resources.md §2: custom fields and time
        "time_spent_minutes",
        "secure_id",  # resources.md §8: the status page link (null without [http] public_url)
        "secure_url",
        "sla",  # resources.md §9: due times (none here: no [[sla]] in this config)
    }
    assert (
        set(shown) == expected_header
        and shown["secure_url"] is None
        and shown["intervention"] is None
    )
    assert shown["sla"] == {
        "first_response_due_at": None,
        "resolution_due_at": None,
        "breached": [],
    }
    assert shown["priority"] == "20" and shown["queue"] == "Inbox" and shown["status"] == "open"
    response_keys = {
        "id",
        "is_internal",
        "is_pinned",
        "staff_response",
        "created_by_email",
        "created_at",
        "updated_at",
        "is_email_sourced",
        "html",
        "plain_text",
        "attachments",
        "created_by_name",
        "kind",
        "visible_text",
        "subject",
        "message_id",
        "verified",
    }
    assert [set(r) for r in shown["responses"]] == [response_keys, response_keys]
    assert [r["message_id"] for r in shown["responses"]] == ["<a@x.test>", "<b@x.test>"]


def test_ticket_show_unknown_number(cfg: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(cfg), "ticket", "show", "999999"])
    assert result.exit_code != 0 and "no ticket 999999" in result.output


def test_inbound_list_shows_outcomes(cfg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "ooo.eml").write_bytes(
        make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"})
    )
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(cfg), "import", str(folder)]).exit_code == 0
    listed = json.loads(
        runner.invoke(main, ["--config", str(cfg), "inbound", "list", "--json"]).output
    )
    assert listed[0]["outcome"] == "classified" and "auto_reply" in listed[0]["reason"]
    retry = runner.invoke(main, ["--config", str(cfg), "inbound", "retry", str(listed[0]["id"])])
    assert retry.exit_code != 0 and "not set aside" in retry.output


def test_agent_add_list_remove(cfg: Path) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(
            main, ["--config", str(cfg), "agent", "add", "Bob@Helpdesk.test", "--name", "Bob"]
        ).exit_code
        == 0
    )
    listed = json.loads(
        runner.invoke(main, ["--config", str(cfg), "agent", "list", "--json"]).output
    )
    assert [a["email"] for a in listed] == ["bob@helpdesk.test"]
    assert (
        runner.invoke(
            main, ["--config", str(cfg), "agent", "remove", "bob@helpdesk.test"]
        ).exit_code
        == 0
    )
    assert (
        json.loads(runner.invoke(main, ["--config", str(cfg), "agent", "list", "--json"]).output)
        == []
    )
    bad = runner.invoke(main, ["--config", str(cfg), "agent", "add", "not-an-address"])
    assert bad.exit_code != 0 and "not an email address" in bad.output


def test_agent_passwd_reads_stdin_and_stores_only_a_hash(cfg: Path) -> None:
    from mailhelpdesk.app import build_app
    from mailhelpdesk.config import load_config
    from mailhelpdesk.services import agent_passwords
    from mailhelpdesk.store.db import session_scope

    runner = CliRunner()
    base = ["--config", str(cfg)]
    assert runner.invoke(main, [*base, "agent", "add", "ann@helpdesk.test"]).exit_code == 0
    short = runner.invoke(main, [*base, "agent", "passwd", "ann@helpdesk.test"], input="short\n")
    assert short.exit_code != 0 and "8 to 1024 characters" in short.output
    unknown = runner.invoke(
        main, [*base, "agent", "passwd", "x@helpdesk.test"], input="s3cret-pass\n"
    )
    assert unknown.exit_code != 0 and "no agent x@helpdesk.test" in unknown.output
    ok = runner.invoke(main, [*base, "agent", "passwd", "ann@helpdesk.test"], input="s3cret-pass\n")
    assert ok.exit_code == 0, ok.output

    app = build_app(load_config(str(cfg)))
    try:
        with session_scope(app.engine) as session:
            ann = agent_passwords.authenticate(session, "ANN@helpdesk.test", "s3cret-pass")
            assert ann is not None and ann.password_hash.startswith("$argon2id$")
            assert "s3cret-pass" not in ann.password_hash
            assert agent_passwords.authenticate(session, "ann@helpdesk.test", "wrong-pass") is None
            assert agent_passwords.authenticate(session, "nobody@x.test", "s3cret-pass") is None
    finally:
        app.close()
    cleared = runner.invoke(main, [*base, "agent", "passwd", "ann@helpdesk.test", "--clear"])
    assert cleared.exit_code == 0
    app = build_app(load_config(str(cfg)))
    try:
        with session_scope(app.engine) as session:
            assert agent_passwords.authenticate(session, "ann@helpdesk.test", "s3cret-pass") is None
    finally:
        app.close()


def test_token_create_list_revoke(cfg: Path) -> None:
    """The token is printed once, last, as id|secret; list never shows it; revoke marks it."""
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["--config", str(cfg), "token", "create", "--name", "shop", "--ability", "create-ticket"],
    )
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    number, _, secret = token.partition("|")
    assert number.isdigit() and len(secret) >= 32
    listed = json.loads(
        runner.invoke(main, ["--config", str(cfg), "token", "list", "--json"]).output
    )
    assert [(t["name"], t["abilities"], t["last_used_at"]) for t in listed] == [
        ("shop", ["create-ticket"], None)
    ]
    assert secret not in runner.invoke(main, ["--config", str(cfg), "token", "list"]).output
    assert runner.invoke(main, ["--config", str(cfg), "token", "revoke", "shop"]).exit_code == 0
    assert json.loads(
        runner.invoke(main, ["--config", str(cfg), "token", "list", "--json"]).output
    )[0]["revoked_at"]
    bad = runner.invoke(
        main, ["--config", str(cfg), "token", "create", "--name", "x", "--ability", "nope"]
    )
    assert bad.exit_code != 0 and "unknown ability nope" in bad.output


def test_ticket_list_filters_q_sort_and_limit(cfg: Path, tmp_path: Path) -> None:
    """`ticket list` takes the filters and the q language of GET /api/v1/tickets."""
    folder = tmp_path / "mail"
    folder.mkdir()
    subjects = ["Refund for order 7731", "Printer jam", "Remboursement de la commande"]
    for index, subject in enumerate(subjects):
        (folder / f"{index}.eml").write_bytes(
            make_mail(subject=subject, message_id=f"<l{index}@x.test>", body=f"Text {index}\n")
        )
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(cfg), "import", str(folder)]).exit_code == 0

    def listed(*args: str) -> list[str]:
        result = runner.invoke(main, ["--config", str(cfg), "ticket", "list", "--json", *args])
        assert result.exit_code == 0, result.output
        return [t["subject"] for t in json.loads(result.output)]

    assert listed() == subjects  # oldest first, as before
    assert sorted(listed("--q", "refund OR commande")) == sorted([subjects[0], subjects[2]])
    assert listed("--q", "order 7731", "--status", "open") == [subjects[0]]
    assert listed("--q", "printer", "--status", "closed") == []
    assert listed("--sort", "-number", "--limit", "2") == [subjects[2], subjects[1]]
    assert listed("--sort", "subject", "--queue", "Inbox") == sorted(subjects)
    assert listed("--assignee", "none", "--filter", "unresponded=true", "--limit", "1") == [
        subjects[0]
    ]
    bad = runner.invoke(main, ["--config", str(cfg), "ticket", "list", "--q", "status:nope"])
    assert bad.exit_code != 0 and "--q:" in bad.output and "column 1" in bad.output
    assert "Traceback" not in bad.output
