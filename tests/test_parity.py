"""One record of every change: the same change made by SMTP, IMAP, the API, the CLI and the
scheduler yields the same ticket events (but the channel), the same notices and the same
webhooks; a ticket's whole life reads back in order from its history, by API and by CLI.

Each channel is driven for real: agent mail through the ingest pipeline (SMTP hand-off, and a
real Dovecot read by the IMAP poller), the API over HTTP on 127.0.0.1, the CLI through click,
the scheduler through the job the daemon runs. The helpdesk is built the one way
(`app.build_app`) from a TOML file the CLI reads too."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from sqlmodel import col, select

from mailhelpdesk.app import build_app
from mailhelpdesk.cli import main
from mailhelpdesk.clock import FrozenClock
from mailhelpdesk.config import ImapMailboxConfig, load_config
from mailhelpdesk.domain.events import Actor, Channel
from mailhelpdesk.domain.models import HttpDelivery, Ticket
from mailhelpdesk.http.app import create_api
from mailhelpdesk.mail.tokens import reply_address
from mailhelpdesk.services import api_tokens, ticket_changes
from mailhelpdesk.services.api_requests import ApiSettings
from mailhelpdesk.services.context import MailPolicy
from mailhelpdesk.store import events as event_store
from mailhelpdesk.store.db import read_scope, session_scope
from mailhelpdesk.transports.imap_poller import IMAPPoller
from tests.desk import Desk
from tests.dovecot import Dovecot, ImapUser
from tests.helpers import free_port, make_mail

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ALICE, BOB, CUSTOMER = "alice@helpdesk.test", "bob@helpdesk.test", "priya@customer.test"
CONFIG = """
[helpdesk]
name = "Test Support"
address = "support@helpdesk.test"
secret = "parity-secret"

[database]
url = "sqlite:///{db}"

[[agents]]
email = "alice@helpdesk.test"
name = "Alice"

[[agents]]
email = "bob@helpdesk.test"
name = "Bob"

[[webhooks]]
name = "everything"
url = "http://127.0.0.1:9/hook"
"""


# -- the helpdesk and its channels -----------------------------------------------------------


class Helpdesk(Desk):
    """A built app, its config file (for the CLI) and one way in per channel."""

    def __init__(self, tmp: Path, extra: str = "") -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "mailhelpdesk.toml"
        self.config_path.write_text(CONFIG.format(db=tmp / "h.db") + extra)
        super().__init__(build_app(load_config(str(self.config_path)), clock=FrozenClock(START)))
        with session_scope(self.engine) as session:
            self.token = api_tokens.create_token(
                session, name="alice-script", abilities=["all"], clock=self.clock, owner_email=ALICE
            )

    def agent_mail(self, commands: str) -> bytes:
        """Alice answering the notice she got: to her signed reply address, commands only."""
        alice_id = next(a.id for a in self.settings.agents if a.email == ALICE)
        to = reply_address(
            self.notify.secret, "support@helpdesk.test", self.signed_for(100001, alice_id)
        )
        return make_mail(
            subject="Re: [#100001] Printer on fire",
            sender=f"Alice <{ALICE}>",
            to=to,
            body=commands,
            message_id=f"<{time.time_ns()}.cmd@helpdesk.test>",
        )


@contextmanager
def served(desk: Helpdesk) -> Iterator[str]:
    """The HTTP API of this helpdesk on a free loopback port, for the duration of the block."""
    api = create_api(
        health=lambda: {"status": "ok"},
        metrics=lambda: b"",
        database=desk.app.database,
        clock=desk.clock,
        settings=ApiSettings.from_config(desk.config, desk.notify),
        api_config=desk.config.api,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def via_smtp(desk: Helpdesk, commands: str, _patch: dict[str, Any], _cli: list[str]) -> None:
    row = desk.feed(desk.agent_mail(commands), rcpt=(), mail_from=ALICE, source="smtp")
    assert row.state == "done", row.reason


def via_imap(imap: Callable[[Helpdesk, bytes], None]) -> Callable[..., None]:
    def run(desk: Helpdesk, commands: str, _patch: dict[str, Any], _cli: list[str]) -> None:
        imap(desk, desk.agent_mail(commands))

    return run


def via_api(desk: Helpdesk, _commands: str, patch: dict[str, Any], _cli: list[str]) -> None:
    with served(desk) as base:
        resp = httpx.patch(
            f"{base}/api/v1/tickets/100001",
            json=patch,
            headers={"Authorization": f"Bearer {desk.token}", "Idempotency-Key": "k1"},
            timeout=30,
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["number"] == 100001
    desk.compose_notices()


def via_cli(desk: Helpdesk, _commands: str, _patch: dict[str, Any], cli: list[str]) -> None:
    args = ["--config", str(desk.config_path), "ticket", "update", "100001", *cli]
    result = CliRunner().invoke(main, [*args, "--as", ALICE])
    assert result.exit_code == 0, result.output
    desk.compose_notices()


def via_scheduler(desk: Helpdesk, _commands: str, _patch: dict[str, Any], _cli: list[str]) -> None:
    assert desk.app.wake_on_hold() == [100001]
    desk.compose_notices()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> ImapUser:
    dovecot.start()
    return dovecot.add_user(f"parity{time.time_ns()}-{os.getpid()}")


# -- what a change left behind ----------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    events: list[tuple[str, dict[str, Any]]]
    channels: set[str]
    actors: set[tuple[str, str | None]]
    notices: list[tuple[str, str]]
    webhooks: list[str]


def snapshot(desk: Helpdesk) -> tuple[int, int, int]:
    return len(desk.events()), len(desk.outbox()), len(_webhooks(desk))


def _webhooks(desk: Helpdesk) -> list[str]:
    with read_scope(desk.engine) as session:
        rows = session.exec(select(HttpDelivery).order_by(col(HttpDelivery.id))).all()
        return [json.loads(r.body)["event"] for r in rows]


def effects_since(desk: Helpdesk, before: tuple[int, int, int]) -> Effects:
    events = desk.events()[before[0] :]
    return Effects(
        events=[(e.type, event_store.data_of(e)) for e in events],
        channels={e.channel for e in events},
        actors={(e.actor_kind, e.actor_email) for e in events},
        notices=[(o.kind, o.primary_rcpt) for o in desk.outbox()[before[1] :]],
        webhooks=_webhooks(desk)[before[2] :],
    )


@dataclass(frozen=True)
class Change:
    name: str
    mail: str
    patch: dict[str, Any]
    cli: list[str]
    events: list[tuple[str, dict[str, Any]]]
    notices: list[tuple[str, str]]
    webhooks: list[str]
    on_hold: bool = False  # the ticket waits on hold until 2026-11-25, assigned to Bob


CHANGES = [
    Change(
        "close",
        "#status closed\n",
        {"status": "closed"},
        ["--status", "closed"],
        [("status", {"from": "open", "to": "closed"})],
        [("ticket_closed", CUSTOMER)],
        ["ticket.status_changed"],
    ),
    Change(
        "assign",
        f"#assign {BOB}\n",
        {"assigned_to_email": BOB},
        ["--assign", BOB],
        [("assigned", {"from": None, "to": BOB})],
        [],
        ["ticket.assigned"],
    ),
    Change(
        "priority",
        "#priority High\n",
        {"priority": "High"},
        ["--priority", "High"],
        [("priority", {"from": "Normal", "to": "High"})],
        [],
        [],
    ),
    Change(
        "tag",
        "#tag vip\n",
        {"tags_add": ["vip"]},
        ["--tag", "vip"],
        [("tag_added", {"tag": "vip"})],
        [],
        [],
    ),
    Change(
        "wake from on-hold",
        "#status open\n",
        {"status": "open"},
        ["--status", "open"],
        [("status", {"from": "on-hold", "to": "open", "was_on_hold_until": "2026-11-25"})],
        [("on_hold_woke", BOB)],
        ["ticket.status_changed"],
        on_hold=True,
    ),
]

CHANNELS = ["smtp", "imap", "api", "cli", "scheduler"]


def _prepare(desk: Helpdesk, change: Change) -> None:
    """A customer's ticket; for the on-hold case waiting until 2026-11-25, assigned to Bob, and
    the clock on the 26th (so the scheduler finds it due)."""
    desk.feed(make_mail(subject="Printer on fire", sender=f"Priya <{CUSTOMER}>"))
    if change.on_hold:
        with session_scope(desk.engine) as session:
            ticket = session.exec(select(Ticket)).one()
            quiet = desk.change(Channel.cli, Actor.system(), MailPolicy.silent)
            ticket_changes.assign(session, ticket, BOB, change=quiet)
            ticket_changes.set_status(
                session, ticket, "on-hold", on_hold_until=date(2026, 11, 25), change=quiet
            )
        desk.clock.advance(days=3)


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_the_same_change_by_every_channel_has_the_same_record_notices_and_webhooks(
    change: Change, tmp_path: Path, dovecot: Dovecot, imap_user: ImapUser
) -> None:
    """Table-driven: each change through each channel that can make it; everything but the
    channel (and the scheduler's actor, the helpdesk itself) is identical, and as expected."""

    def imap(desk: Helpdesk, raw: bytes) -> None:
        dovecot.append(imap_user, [raw])
        box = ImapMailboxConfig(
            name="support",
            host=dovecot.host,
            port=dovecot.port,
            security="none",
            username=imap_user.name,
            password=imap_user.password,
        )
        poll_once(desk, box)
        desk.drain()

    ways = {
        "smtp": via_smtp,
        "imap": via_imap(imap),
        "api": via_api,
        "cli": via_cli,
        "scheduler": via_scheduler,
    }
    seen: dict[str, Effects] = {}
    for channel in CHANNELS:
        if channel == "scheduler" and not change.on_hold:
            continue  # the scheduler makes only the changes time makes
        desk = Helpdesk(tmp_path / channel)
        try:
            _prepare(desk, change)
            before = snapshot(desk)
            ways[channel](desk, change.mail, change.patch, change.cli)
            seen[channel] = effects_since(desk, before)
        finally:
            desk.app.close()
    assert list(seen) == [c for c in CHANNELS if change.on_hold or c != "scheduler"]
    for channel, got in seen.items():
        assert got.events == change.events, channel
        assert got.notices == change.notices, channel
        assert got.webhooks == change.webhooks, channel
        assert got.channels == {channel}, channel
        expected_actor = ("system", None) if channel == "scheduler" else ("agent", ALICE)
        assert got.actors == {expected_actor}, channel


def poll_once(desk: Helpdesk, box: ImapMailboxConfig) -> None:
    """Run the real IMAP poller until it has kept what the mailbox holds, then stop it."""

    async def run() -> None:
        poller = IMAPPoller(box, engine=desk.engine, clock=desk.clock, executor=desk.app.db)
        poller.start()
        try:
            for _ in range(400):
                status = poller.status()
                if status["messages_kept"] >= 1 and status["state"] == "idle":
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the poller kept nothing: {poller.status()}")
        finally:
            await poller.stop()

    asyncio.run(run())


def test_a_ticket_life_reads_back_in_order_by_api_and_by_cli(tmp_path: Path) -> None:
    """Created by mail, answered by mail, `#assign`, `#priority`, an API response putting it on
    hold, the scheduler waking it, `#status closed`: the history lists every step in order,
    with actor and channel, the same by API and by CLI."""
    desk = Helpdesk(tmp_path)
    try:
        desk.feed(make_mail(subject="Printer on fire", sender=f"Priya <{CUSTOMER}>"))
        for commands in ("We are on it.\n", f"#assign {BOB}\n", "#priority High\n"):
            row = desk.feed(desk.agent_mail(commands), rcpt=(), mail_from=ALICE)
            assert row.state == "done", row.reason
        with served(desk) as base:
            resp = httpx.post(
                f"{base}/api/ticket_respond",
                json={
                    "ticket_number": 100001,
                    "from_email": ALICE,
                    "content": "Parts are ordered; back in January.",
                    "status": "on-hold",
                    "on_hold_until": "2026-12-31",
                },
                headers={"Authorization": f"Bearer {desk.token}", "Idempotency-Key": "life-1"},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            desk.clock.advance(days=40)  # 2027-01-02: the on-hold date has passed
            assert desk.app.wake_on_hold() == [100001]
            row = desk.feed(desk.agent_mail("#status closed\n"), rcpt=(), mail_from=ALICE)
            assert row.state == "done", row.reason
            by_api = httpx.get(
                f"{base}/api/v1/tickets/100001/history",
                headers={"Authorization": f"Bearer {desk.token}"},
                timeout=30,
            )
            unknown_api = httpx.get(
                f"{base}/api/v1/tickets/999999/history",
                headers={"Authorization": f"Bearer {desk.token}"},
                timeout=30,
            )
            anonymous = httpx.get(f"{base}/api/v1/tickets/100001/history", timeout=30)
        assert unknown_api.status_code == 404
        assert unknown_api.json()["error"] == "ticket_not_found"
        assert anonymous.status_code == 401
        assert by_api.status_code == 200, by_api.text
        api_events = by_api.json()["data"]["events"]
        cli = CliRunner().invoke(
            main, ["--config", str(desk.config_path), "ticket", "history", "100001", "--json"]
        )
        assert cli.exit_code == 0, cli.output
        assert json.loads(cli.output)["events"] == api_events
        steps = [
            (e["type"], e["channel"], e["actor"]["kind"], e["actor"]["email"]) for e in api_events
        ]
        assert steps == [
            ("created", "smtp", "customer", CUSTOMER),
            ("agent_response", "smtp", "agent", ALICE),
            ("assigned", "smtp", "agent", ALICE),
            ("priority", "smtp", "agent", ALICE),
            ("agent_response", "api", "agent", ALICE),
            ("status", "api", "agent", ALICE),
            ("status", "scheduler", "system", None),
            ("status", "smtp", "agent", ALICE),
        ]
        statuses = [
            (e["data"]["from"], e["data"]["to"]) for e in api_events if e["type"] == "status"
        ]
        assert statuses == [("open", "on-hold"), ("on-hold", "open"), ("open", "closed")]
        times = [e["at"] for e in api_events]
        assert times == sorted(times) and [int(e["id"]) for e in api_events] == sorted(
            int(e["id"]) for e in api_events
        )
        text = CliRunner().invoke(
            main, ["--config", str(desk.config_path), "ticket", "history", "100001"]
        )
        assert text.exit_code == 0, text.output
        lines = text.output.splitlines()
        assert len(lines) == len(api_events)
        assert "status on-hold -> open" in lines[6] and "scheduler" in lines[6]
        assert "assigned none -> bob@helpdesk.test" in lines[2]
        unknown = CliRunner().invoke(
            main, ["--config", str(desk.config_path), "ticket", "history", "999999"]
        )
        assert unknown.exit_code == 1 and "no ticket 999999" in unknown.output
    finally:
        desk.app.close()


BROKEN = {
    "acknowledgement.subject.txt": "{{ ticket_tag ",  # syntax error
    "agent_response.txt": "{% if %}",  # syntax error, in a human answer composed at once
    "ticket_closed.txt": "{{ no_such_value }}",  # an undefined name (strict templates)
    "on_hold_woke.subject.txt": "{{ ticket_tag | no_such_filter }}",
}


@pytest.mark.parametrize("compose_in_sender", [True, False], ids=["deferred", "inline"])
def test_a_broken_template_fails_its_notice_never_the_change(
    tmp_path: Path, compose_in_sender: bool
) -> None:
    """Broken templates for four notices: the mail, API, CLI and scheduler changes all commit;
    each notice that cannot be built is `failed` with the reason, listed by `outbox list`, on
    the deferred path (composed by the sender) and the inline one alike."""
    templates = tmp_path / "tpl" / "notices"
    templates.mkdir(parents=True)
    for name, text in BROKEN.items():
        (templates / name).write_text(text)
    extra = f'\n[templates]\ndir = "{tmp_path / "tpl"}"\n'
    extra += f"\n[outbound]\ncompose_in_sender = {'true' if compose_in_sender else 'false'}\n"
    desk = Helpdesk(tmp_path / "desk", extra)
    try:
        row = desk.feed(make_mail(subject="Printer on fire", sender=f"Priya <{CUSTOMER}>"))
        assert (row.state, row.outcome) == ("done", "ticket_created")  # by mail
        row = desk.feed(desk.agent_mail("We are on it.\n"), rcpt=(), mail_from=ALICE)
        assert (row.state, row.outcome) == ("done", "reply_added"), row.reason
        with served(desk) as base:  # by API: an on-hold date, and a second ticket
            resp = httpx.patch(
                f"{base}/api/v1/tickets/100001",
                json={"status": "on-hold", "on_hold_until": "2026-11-25", "assigned_to_email": BOB},
                headers={"Authorization": f"Bearer {desk.token}"},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
        desk.clock.advance(days=3)
        assert desk.app.wake_on_hold() == [100001]  # by the scheduler
        result = CliRunner().invoke(  # by the CLI
            main,
            ["--config", str(desk.config_path), "ticket", "update", "100001", "--status", "closed"],
        )
        assert result.exit_code == 0, result.output
        desk.compose_notices()
        with read_scope(desk.engine) as session:
            ticket = session.exec(select(Ticket)).one()
        assert ticket.status == "closed" and ticket.assigned_to_email == BOB
        rows = {o.kind: o for o in desk.outbox()}
        for kind in ("acknowledgement", "agent_response", "on_hold_woke", "ticket_closed"):
            assert rows[kind].state == "failed", kind
            assert rows[kind].last_error.startswith("cannot compose"), rows[kind].last_error
        assert rows["new_ticket"].state == "queued"  # an intact template still works
        listing = CliRunner().invoke(
            main,
            ["--config", str(desk.config_path), "outbox", "list", "--state", "failed", "--json"],
        )
        assert listing.exit_code == 0, listing.output
        failed = {item["kind"] for item in json.loads(listing.output)}
        assert failed == {"acknowledgement", "agent_response", "on_hold_woke", "ticket_closed"}
        types = [e.type for e in desk.events()]
        assert types.count("status") == 3 and "created" in types and "agent_response" in types
    finally:
        desk.app.close()
