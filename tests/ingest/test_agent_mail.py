"""Agents answering from their own mail client (issue 6): replies, mail commands, verification,
CCs and forwards, through the real pipeline on a SQLite file (no network).

Agent mails are the hand-written Gmail, Outlook and Apple Mail fixtures in
tests/fixtures/agent_replies/, filled in with the notice the agent answers."""

from __future__ import annotations

import email
from datetime import date
from email.message import EmailMessage
from email.policy import default as default_policy
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailhelpdesk.domain.models import InboundMessage, OutboxItem, Ticket
from mailhelpdesk.mail.tokens import ReplyToken, reply_address
from mailhelpdesk.store import tickets as store
from mailhelpdesk.store.db import read_scope
from tests.desk import Desk, make_desk
from tests.helpers import make_mail

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agent_replies"
SHAPES = ("gmail", "outlook", "apple")
TRUSTED = "mx.helpdesk.test"
_ids = count(1)


class AgentDesk(Desk):
    """Desk with two agents (Alice has an alternate address) and a trusted authserv-id."""

    def __init__(self, tmp: Path) -> None:
        sections = {
            "helpdesk": {
                "address": "support@helpdesk.test",
                "secret": "s3cret",
                "name": "Test Support",
                "trusted_authserv_ids": [TRUSTED],
            },
            "agents": [
                {
                    "email": "alice@helpdesk.test",
                    "name": "Alice Agent",
                    "alternate_addresses": ["alice@home.test"],
                },
                {"email": "bob@helpdesk.test", "name": "Bob Agent"},
            ],
            # the MTA in front of the listener, whose Authentication-Results are believed
            "smtp_listener": {"trusted_relays": ["127.0.0.1"]},
        }
        super().__init__(make_desk(tmp, sections).app)

    def feed(self, raw: bytes, **kw: Any) -> InboundMessage:
        """As handed over by the trusted relay on 127.0.0.1 (unless a test names a peer)."""
        kw.setdefault("peer", "127.0.0.1")
        return super().feed(raw, **kw)

    def agent_id(self, email_: str) -> int:
        return next(a.id for a in self.settings.agents if a.email == email_)

    def outbox(self) -> list[OutboxItem]:
        with read_scope(self.engine) as session:
            return list(session.exec(select(OutboxItem).order_by(OutboxItem.id)))

    def ticket(self) -> Ticket:
        (ticket,) = self.tickets()
        return ticket

    def tags(self) -> list[str]:
        with read_scope(self.engine) as session:
            return store.tags_of(session, self.ticket().id or 0)


def msg(row: OutboxItem) -> EmailMessage:
    return email.message_from_bytes(row.raw, policy=default_policy)  # type: ignore[return-value]


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@pytest.fixture
def desk(tmp_path: Path) -> AgentDesk:
    d = AgentDesk(tmp_path)
    d.feed(
        make_mail(
            subject="Printer on fire",
            message_id="<first@customer.test>",
            headers={"Cc": "Boss <boss@customer.test>"},
        )
    )
    return d


def alice_notice(desk: AgentDesk) -> EmailMessage:
    (row,) = [
        r
        for r in desk.outbox()
        if r.kind == "new_ticket" and r.primary_rcpt == "alice@helpdesk.test"
    ]
    return msg(row)


def fixture(shape: str, *, reply_to: str, notice_id: str, commands: str = "") -> bytes:
    raw = (FIXTURES / f"{shape}_reply.eml").read_text()
    html = "".join(f"<div>{line}</div>" for line in commands.splitlines())
    for key, value in {
        "{{REPLY_TO}}": reply_to,
        "{{NOTICE_ID}}": notice_id,
        "{{COMMANDS}}": commands,
        "{{COMMANDS_HTML}}": html,
        "{{MESSAGE_ID}}": f"<agent-{next(_ids)}@helpdesk.test>",
    }.items():
        raw = raw.replace(key, value)
    return raw.encode()


def agent_reply(desk: AgentDesk, shape: str = "gmail", commands: str = "", **kw: str):  # type: ignore[no-untyped-def]
    notice = alice_notice(desk)
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    raw = fixture(shape, reply_to=reply_to, notice_id=notice["Message-ID"], commands=commands)
    return desk.feed(raw, rcpt=(reply_to,), mail_from="alice@helpdesk.test")


def new_rows(desk: AgentDesk, before: int) -> list[OutboxItem]:
    return desk.outbox()[before:]


# --- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_reply_from_mail_client_is_public_answer_to_customer_and_ccs(
    desk: AgentDesk, shape: str
) -> None:
    before = len(desk.outbox())
    row = agent_reply(desk, shape)
    assert row.outcome == "reply_added", row.reason
    last = desk.responses(desk.ticket())[-1]
    assert (last.kind, last.verified, last.staff_response, last.is_internal) == (
        "agent",
        "signed_address",
        True,
        False,
    )
    assert (
        "keep the door closed" in last.visible_text
        and "My printer is on fire" not in last.visible_text
    )
    rows = new_rows(desk, before)
    assert [(r.kind, r.primary_rcpt) for r in rows] == [
        ("agent_response", "priya@customer.test"),
        ("agent_response", "boss@customer.test"),
    ]
    answer = msg(rows[0])
    assert answer["From"].addresses[0].addr_spec == "support@helpdesk.test"
    assert answer["From"].addresses[0].display_name == "Alice Agent via Test Support"
    assert answer["Auto-Submitted"] is None and answer["Subject"] == "Re: [#100001] Printer on fire"
    assert (
        answer["In-Reply-To"] == "<first@customer.test>"
        and "<first@customer.test>" in answer["References"]
    )
    body = text_of(answer)
    assert (
        "keep the door closed" in body
        and "My printer is on fire" not in body
        and "wrote:" not in body
    )


def test_agent_name_format_is_configurable(tmp_path: Path) -> None:
    import dataclasses

    d = AgentDesk(tmp_path)
    assert d.settings.notify is not None
    d.settings = dataclasses.replace(
        d.settings,
        notify=dataclasses.replace(d.settings.notify, agent_name_format="{agent} at {helpdesk}"),
    )
    d.feed(make_mail(message_id="<first@customer.test>"))
    before = len(d.outbox())
    agent_reply(d)
    assert (
        msg(new_rows(d, before)[0])["From"].addresses[0].display_name
        == "Alice Agent at Test Support"
    )


def test_attachments_of_an_agent_reply_are_kept(desk: AgentDesk) -> None:
    notice = alice_notice(desk)
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = (
        "Alice Agent <alice@helpdesk.test>",
        reply_to,
        "Re: [#100001] Printer on fire",
    )
    m["Message-ID"], m["In-Reply-To"] = "<att-agent@helpdesk.test>", notice["Message-ID"]
    m.set_content(
        "#priority High\nThe manual is attached.\n\nOn Mon, Nov 23, 2026 Test Support wrote:\n> old\n"
    )
    m.add_attachment(
        b"%PDF-1.4 manual", maintype="application", subtype="pdf", filename="manual.pdf"
    )
    desk.feed(m.as_bytes(), rcpt=(reply_to,))
    with read_scope(desk.engine) as session:
        from mailhelpdesk.services.views import ticket_object

        data = ticket_object(session, desk.ticket())
    last = data["responses"][-1]
    assert last["kind"] == "agent" and [a["name"] for a in last["attachments"]] == ["manual.pdf"]
    assert (
        "#priority" not in last["plain_text"]
        and "#priority" not in last["visible_text"]
        and last["html"] is None
    )
    assert desk.ticket().priority == 30


# --- commands --------------------------------------------------------------------------------

COMMANDS = {
    "#note": {},
    "#status closed": {"status": "closed"},
    "#status on-hold 2026-12-01": {"status": "on-hold", "on_hold_until": date(2026, 12, 1)},
    "#assign me": {"assigned_to_email": "alice@helpdesk.test"},
    "#assign bob@helpdesk.test": {"assigned_to_email": "bob@helpdesk.test"},
    "#assign none": {"assigned_to_email": None},
    "#priority High": {"priority": 30},
    "#tag vip": {"tags": ["vip"]},
    "#untag vip": {"tags": []},
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_in_each_client_shape(desk: AgentDesk, shape: str, command: str) -> None:
    if command == "#untag vip":
        agent_reply(desk, shape, "#tag vip\n")
        assert desk.tags() == ["vip"]
    if command == "#assign none":
        agent_reply(desk, shape, "#assign me\n")
    before = len(desk.outbox())
    row = agent_reply(desk, shape, command + "\n")
    assert row.outcome == "reply_added", row.reason
    ticket = desk.ticket()
    for key, value in COMMANDS[command].items():
        actual = desk.tags() if key == "tags" else getattr(ticket, key)
        assert actual == value, key
    last = desk.responses(ticket)[-1]
    assert "#" not in last.plain_text.split("\n")[0] and command not in last.visible_text
    rows = new_rows(desk, before)
    if command == "#note":
        assert (last.kind, last.is_internal, last.staff_response) == ("note", True, True)
        assert "keep the door closed" in last.visible_text
        assert rows == []  # a note reaches nobody
        return
    assert last.kind == "agent" and not last.is_internal
    expected = [("agent_response", "priya@customer.test"), ("agent_response", "boss@customer.test")]
    if command == "#status closed":
        expected.append(("ticket_closed", "priya@customer.test"))
    assert [(r.kind, r.primary_rcpt) for r in rows] == expected
    for r in rows:
        assert command not in r.raw.decode("utf-8", "replace")
    assert "keep the door closed" in text_of(msg(rows[0]))


def test_several_commands_and_reopen(desk: AgentDesk) -> None:
    agent_reply(desk, "outlook", "#status closed\n#priority urgent\n#tag a\n#tag b\n")
    ticket = desk.ticket()
    assert (ticket.status, ticket.priority, desk.tags()) == ("closed", 40, ["a", "b"])
    before = len(desk.outbox())
    agent_reply(desk, "apple", "#status open\n")
    assert desk.ticket().status == "open"
    assert [r.kind for r in new_rows(desk, before)] == [
        "agent_response",
        "agent_response",
        "ticket_reopened",
    ]


def test_commands_only_change_state_and_send_no_answer(desk: AgentDesk) -> None:
    """A reply with only commands above the quote: nothing to say to the customer, and no
    message to keep either: the change is on the record as the agent's event, by mail."""
    notice = alice_notice(desk)
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    raw = make_mail(
        sender="Alice Agent <alice@helpdesk.test>",
        to=reply_to,
        subject="Re: [#100001] Printer on fire",
        body="#status closed\n\nOn Mon, Nov 23, 2026 at 10:00 AM Test Support wrote:\n> My printer is on fire.\n",
    )
    before, responses = len(desk.outbox()), len(desk.responses(desk.ticket()))
    row = desk.feed(raw, rcpt=(reply_to,))
    assert desk.ticket().status == "closed"
    assert [r.kind for r in new_rows(desk, before)] == ["ticket_closed"]
    assert len(desk.responses(desk.ticket())) == responses
    assert row.outcome == "reply_added" and "agent commands on ticket 100001" in row.reason
    last = desk.events()[-1]
    assert (last.type, last.channel, last.actor_kind, last.actor_email) == (
        "status",
        "smtp",
        "agent",
        "alice@helpdesk.test",
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("commands", "line"),
    [
        ("#status maybe\n", "line 1"),
        ("#priority High\n#assign mallory@evil.test\n", "line 2"),
        ("#tag vip\n#frobnicate now\n", "line 2"),
        ("#status on-hold\n", "line 1"),
    ],
)
def test_bad_command_changes_nothing_and_tells_only_the_agent_once(
    desk: AgentDesk, shape: str, commands: str, line: str
) -> None:
    before_rows = len(desk.outbox())
    before_responses = len(desk.responses(desk.ticket()))
    row = agent_reply(desk, shape, commands)
    assert row.outcome == "held" and "nothing applied" in row.reason
    ticket = desk.ticket()
    assert (ticket.status, ticket.priority, ticket.assigned_to_email, desk.tags()) == (
        "open",
        20,
        None,
        [],
    )
    assert len(desk.responses(ticket)) == before_responses  # no response published
    (error,) = new_rows(desk, before_rows)
    assert (error.kind, error.primary_rcpt, error.is_automatic) == (
        "command_error",
        "alice@helpdesk.test",
        True,
    )
    text = text_of(msg(error))
    bad_line = commands.splitlines()[int(line.split()[1]) - 1]
    assert line in text and bad_line in text
    assert msg(error)["Auto-Submitted"] == "auto-replied"


def test_auto_reply_from_agent_never_gets_a_command_error(desk: AgentDesk) -> None:
    notice = alice_notice(desk)
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    before = len(desk.outbox())
    raw = make_mail(
        sender="alice@helpdesk.test",
        to=reply_to,
        subject="Automatic reply: away",
        body="#status maybe\nI am away.\n",
        headers={"Auto-Submitted": "auto-replied"},
    )
    row = desk.feed(raw, rcpt=(reply_to,))
    assert row.outcome == "recorded" and new_rows(desk, before) == []


# --- verification (no impersonation) -------------------------------------------------------------


def spoof(
    desk: AgentDesk,
    *,
    headers: dict[str, str] | None = None,
    sender: str = "Alice Agent <alice@helpdesk.test>",
    to: str = "support@helpdesk.test",
    body: str = "#status closed\nRefund approved, here is your money.\n",
    auth_results: list[str] | None = None,
) -> tuple[str, list[OutboxItem]]:
    before = len(desk.outbox())
    raw = make_mail(
        sender=sender,
        to=to,
        subject="Re: [#100001] Printer on fire",
        body=body,
        headers={"In-Reply-To": "<first@customer.test>", **(headers or {})},
    )
    if auth_results:  # prepended in order: the first is the topmost header
        raw = b"".join(f"Authentication-Results: {v}\r\n".encode() for v in auth_results) + raw
    row = desk.feed(raw, rcpt=(to,))
    return row.outcome, new_rows(desk, before)


@pytest.mark.parametrize(
    "auth_results",
    [
        None,
        [
            f"{TRUSTED}; dkim=none; dmarc=none",
            f"{TRUSTED}; dkim=pass header.d=helpdesk.test",
        ],  # forged one below ours
        [
            "mx.untrusted.test; dkim=pass header.d=helpdesk.test"
        ],  # trusted-looking, wrong authserv-id
        [f"{TRUSTED}; dkim=pass header.d=evil.test"],  # pass, but for another domain
        [f"{TRUSTED}; spf=pass smtp.mailfrom=helpdesk.test"],  # SPF alone is not enough
    ],
)
def test_spoofed_agent_never_reaches_the_customer(
    desk: AgentDesk, auth_results: list[str] | None
) -> None:
    outcome, rows = spoof(desk, auth_results=auth_results)
    assert outcome == "held"
    assert rows == []  # no answer, no status notice, no error notice
    ticket = desk.ticket()
    assert ticket.status == "open"
    last = desk.responses(ticket)[-1]
    assert last.is_internal and last.verified is None and last.kind == "customer"


def test_spoof_to_a_signed_address_of_the_customer_or_another_agent_is_held(
    desk: AgentDesk,
) -> None:
    customer_token = reply_address(
        desk.settings.secret, "support@helpdesk.test", ReplyToken(100001)
    )
    assert spoof(desk, to=customer_token) == ("held", [])
    bobs_token = reply_address(
        desk.settings.secret,
        "support@helpdesk.test",
        desk.signed_for(100001, desk.agent_id("bob@helpdesk.test")),
    )
    assert spoof(desk, to=bobs_token) == ("held", [])
    assert desk.ticket().status == "open"


def test_trusted_dkim_pass_makes_the_agent_reply_public(desk: AgentDesk) -> None:
    outcome, rows = spoof(
        desk,
        auth_results=[
            f"{TRUSTED}; dkim=pass header.d=helpdesk.test header.s=s1",
            "forged.test; none",
        ],
    )
    assert outcome == "reply_added"
    assert [(r.kind, r.primary_rcpt) for r in rows] == [
        ("agent_response", "priya@customer.test"),
        ("agent_response", "boss@customer.test"),
        ("ticket_closed", "priya@customer.test"),
    ]
    last = [r for r in desk.responses(desk.ticket()) if r.kind == "agent"][-1]
    assert last.verified == "authentication_results" and "Refund approved" in last.visible_text


def test_trusted_dmarc_pass_for_alternate_address(desk: AgentDesk) -> None:
    outcome, rows = spoof(
        desk,
        sender="Alice <alice@home.test>",
        body="Fixed.\n",
        auth_results=[f"{TRUSTED}; dmarc=pass header.from=home.test"],
    )
    assert outcome == "reply_added" and rows[0].kind == "agent_response"


def test_alternate_address_to_signed_agent_address(desk: AgentDesk) -> None:
    notice = alice_notice(desk)
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    row = desk.feed(
        make_mail(sender="alice@home.test", to=reply_to, body="From home.\n"), rcpt=(reply_to,)
    )
    assert row.outcome == "reply_added"
    assert desk.responses(desk.ticket())[-1].verified == "signed_address"


# --- CCs ---------------------------------------------------------------------------------------


def test_cc_reply_all_to_an_agent_answer_threads_onto_the_ticket(desk: AgentDesk) -> None:
    before = len(desk.outbox())
    agent_reply(desk)
    boss_copy = msg(
        next(r for r in new_rows(desk, before) if r.primary_rcpt == "boss@customer.test")
    )
    reply_to = boss_copy["Reply-To"].addresses[0].addr_spec
    # reply-all from the CC'd person's client: to the Reply-To, Cc the customer, threaded
    raw = make_mail(
        sender="Boss <boss@customer.test>",
        to=reply_to,
        subject=f"Re: {boss_copy['Subject']}",
        body="Thanks, we unplugged it.\n",
        headers={
            "Cc": "priya@customer.test",
            "In-Reply-To": boss_copy["Message-ID"],
            "References": boss_copy["Message-ID"],
        },
    )
    row = desk.feed(raw, rcpt=(reply_to, "priya@customer.test"))
    assert row.outcome == "reply_added"
    assert len(desk.tickets()) == 1
    last = desk.responses(desk.ticket())[-1]
    assert (last.kind, last.created_by_email, last.is_internal) == (
        "customer",
        "boss@customer.test",
        False,
    )
    # the same by In-Reply-To only (a client that drops Reply-To)
    row = desk.feed(
        make_mail(
            sender="boss@customer.test",
            subject="Re: x",
            headers={"In-Reply-To": boss_copy["Message-ID"]},
        )
    )
    assert row.outcome == "reply_added" and len(desk.tickets()) == 1


# --- forwards ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["gmail", "outlook", "apple", "rfc822"])
def test_agent_forward_opens_ticket_for_the_original_sender(tmp_path: Path, shape: str) -> None:
    desk = AgentDesk(tmp_path)
    row = desk.feed(
        (FIXTURES / f"{shape}_forward.eml").read_bytes(), mail_from="alice@helpdesk.test"
    )
    assert row.outcome == "ticket_created", row.reason
    ticket = desk.ticket()
    assert (
        ticket.originator_email == "bob@customer.test" and ticket.subject == "Invoice 4711 is wrong"
    )
    first, *rest = desk.responses(ticket)
    assert (first.kind, first.created_by_email, first.is_internal) == (
        "customer",
        "bob@customer.test",
        False,
    )
    assert "charges us twice" in first.visible_text and "please handle" not in first.plain_text
    for note in rest:
        assert (note.kind, note.is_internal, note.created_by_email) == (
            "note",
            True,
            "alice@helpdesk.test",
        )
    rows = desk.outbox()
    assert ("acknowledgement", "bob@customer.test") in [(r.kind, r.primary_rcpt) for r in rows]
    assert not [
        r for r in rows if r.kind == "acknowledgement" and r.primary_rcpt != "bob@customer.test"
    ]
    with read_scope(desk.engine) as session:
        ccs = [c.email for c in store.ccs_of(session, ticket.id or 0)]
    assert ccs == (["carol@customer.test"] if shape in ("outlook", "rfc822") else [])
    if shape == "rfc822":  # the customer's own thread leads to the ticket too
        again = desk.feed(
            make_mail(
                sender="bob@customer.test",
                subject="Re: Invoice",
                headers={"In-Reply-To": "<invoice-4711@customer.test>"},
            )
        )
        assert again.outcome == "reply_added" and len(desk.tickets()) == 1


def test_forward_linked_to_an_existing_ticket_is_not_a_new_ticket(desk: AgentDesk) -> None:
    """An unverified agent address on an existing ticket stays a held stranger, forward or not."""
    raw = (
        (FIXTURES / "gmail_forward.eml")
        .read_bytes()
        .replace(b"Subject: Fwd: Invoice", b"Subject: Fwd: [#100001] Invoice")
    )
    row = desk.feed(raw)
    assert row.outcome == "held" and len(desk.tickets()) == 1


def test_forward_from_a_customer_is_an_ordinary_ticket(tmp_path: Path) -> None:
    desk = AgentDesk(tmp_path)
    raw = (
        (FIXTURES / "gmail_forward.eml")
        .read_bytes()
        .replace(b"From: Alice Agent <alice@helpdesk.test>", b"From: Dave <dave@customer.test>")
    )
    desk.feed(raw)
    assert desk.ticket().originator_email == "dave@customer.test"


def test_verified_agent_forwarding_ticket_mail_keeps_it_internal(desk: AgentDesk) -> None:
    """A verified agent's forward that threads onto a ticket (subject tag) is not an answer:
    it is kept as an internal note and mailed to nobody."""
    raw = (
        (FIXTURES / "gmail_forward.eml")
        .read_bytes()
        .replace(b"Subject: Fwd: Invoice", b"Subject: Fwd: [#100001] Invoice")
    )
    raw = f"Authentication-Results: {TRUSTED}; dkim=pass header.d=helpdesk.test\r\n".encode() + raw
    before = len(desk.outbox())
    row = desk.feed(raw)
    assert row.outcome == "reply_added" and new_rows(desk, before) == []
    last = desk.responses(desk.ticket())[-1]
    assert (last.kind, last.is_internal, last.verified) == ("note", True, "authentication_results")
