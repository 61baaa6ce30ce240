"""The write path's Core statements (issue 16, part 3) keep what the ORM gave: a new ticket is a
clean persistent object later steps update, its CCs, files and SLA row are written as the
service decided, loop safety read once for a batch of notices counts the batch's own notices,
and the inbound row is marked applied with one UPDATE that counts the attempt once."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from sqlalchemy import inspect
from sqlmodel import select

from mailhelpdesk.domain.enums import ResponseKind, TicketStatus
from mailhelpdesk.domain.models import (
    Attachment,
    InboundMessage,
    SuppressedAddress,
    Ticket,
    TicketCC,
    TicketEvent,
    TicketSla,
    as_utc,
)
from mailhelpdesk.mail.compose import AUTO_GENERATED
from mailhelpdesk.services import notify, sla, ticket_changes, tickets
from mailhelpdesk.services.tickets import NewAttachment, NewResponse
from mailhelpdesk.store import rows
from mailhelpdesk.store.db import read_scope, session_scope
from tests.desk import Desk
from tests.helpers import make_mail

SLA: dict[str, Any] = {
    "sla": [{"priority": "*", "first_response": "8h", "resolution": "3d"}],
    "business_hours": {
        "timezone": "UTC",
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
        "start": "09:00",
        "end": "17:00",
    },
}


def open_with_files(desk: Desk) -> int:
    with session_scope(desk.engine) as session:
        ticket = tickets.create_ticket(
            session,
            subject="Invoice   wrong\n again",
            originator_email="Priya@Customer.test",
            originator_name="Priya",
            first=NewResponse(
                kind=ResponseKind.customer,
                plain_text="see the files",
                created_by_email="priya@customer.test",
                attachments=(
                    NewAttachment("a.pdf", "application/pdf", b"%PDF-1 a"),
                    NewAttachment("logo.png", "image/png", b"png", True, "logo@x"),
                ),
            ),
            cc=[
                ("Raj@Customer.test", "Raj"),
                ("raj@customer.test", "again"),
                ("priya@customer.test", ""),
            ],
            change=desk.change(),
        )
        # the object is the session's own row: persistent, clean, every column loaded
        state = inspect(ticket)
        assert state.persistent and not state.modified and not state.expired_attributes
        assert ticket in session and session.get(Ticket, ticket.id) is ticket
        # the SLA row written at creation without a read is the one a recompute from the
        # ticket's events gives
        written = session.get(TicketSla, ticket.id)
        assert written is not None and written.first_response_due_at is not None
        first = (
            written.rule,
            as_utc(written.first_response_due_at),
            as_utc(written.resolution_due_at),
        )
        again = sla.refresh(session, ticket, desk.notify.sla, desk.clock.now())
        assert (
            again.rule,
            as_utc(again.first_response_due_at),
            as_utc(again.resolution_due_at),
        ) == first
        # and a later step of the same change updates the ticket through the ORM
        ticket_changes.set_status(session, ticket, TicketStatus.closed, change=desk.change())
        return ticket.number


def test_a_new_ticket_and_its_rows_through_core(desk_factory: Any) -> None:
    desk: Desk = desk_factory(SLA)
    number = open_with_files(desk)
    with read_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        assert ticket.status == TicketStatus.closed  # the ORM update after the Core INSERT
        assert ticket.subject == "Invoice wrong again"
        assert ticket.originator_email == "priya@customer.test"
        assert ticket.priority == 20 and ticket.secure_id and len(ticket.secure_id) == 32
        assert ticket.contact_id is not None and ticket.deleted_at is None
        ccs = session.exec(select(TicketCC).where(TicketCC.ticket_id == ticket.id)).all()
        assert [(c.email, c.name) for c in ccs] == [("raj@customer.test", "Raj")]
        files = session.exec(select(Attachment).order_by(Attachment.id)).all()  # type: ignore[arg-type]
        assert [(f.name, f.file_size, f.is_inline, f.content_id) for f in files] == [
            ("a.pdf", 8, False, None),
            ("logo.png", 3, True, "logo@x"),
        ]


def test_a_first_ticket_makes_its_contact_once(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    desk.feed(make_mail(subject="one"))
    desk.feed(make_mail(subject="two"))
    with read_scope(desk.engine) as session:
        found = {t.contact_id for t in session.exec(select(Ticket)).all()}
    assert len(found) == 1 and None not in found


def test_loop_safety_read_once_counts_the_batch_own_notices(desk_factory: Any) -> None:
    """One RefusalFacts for several notices to one customer: the rate limit sees the notices of
    the batch written before each one, exactly as a query per notice would."""
    desk: Desk = desk_factory()
    desk.feed(make_mail(subject="first"))  # one acknowledgement already counts
    settings = dataclasses.replace(desk.notify, max_auto_notices_per_window=3)
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        customer = notify.Recipient(ticket.originator_email, ticket.originator_name)
        facts = notify.RefusalFacts.for_recipients(session, [customer], settings, desk.clock.now())
        states = [
            notify.write_notice(
                session,
                notify.plan_notice(
                    session,
                    notice="ticket_closed",
                    ticket=ticket,
                    recipient=customer,
                    context=notify.notice_context(session, ticket, settings=settings),
                    settings=settings,
                    clock=desk.clock,
                    auto_submitted=AUTO_GENERATED,
                    facts=facts,
                ),
            ).state
            for _ in range(4)
        ]
    assert states == ["queued", "queued", "suppressed", "suppressed"]


def test_suppression_read_for_a_batch_honours_its_end(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    now = desk.clock.now()
    with session_scope(desk.engine) as session:
        session.add(
            SuppressedAddress(email="gone@x.test", reason="550", until_at=now + timedelta(hours=1))
        )
        session.add(
            SuppressedAddress(email="back@x.test", reason="550", until_at=now - timedelta(hours=1))
        )
        # pending, not flushed: the batch read still sees it (as an ORM query's autoflush did)
        session.add(
            SuppressedAddress(email="new@x.test", reason="", until_at=now + timedelta(hours=1))
        )
        facts = notify.RefusalFacts.for_recipients(
            session,
            [
                notify.Recipient(e)
                for e in ("Gone@x.test", "back@x.test", "new@x.test", "ok@x.test")
            ],
            desk.notify,
            now,
        )
    assert facts.suppressed == {"gone@x.test": "550", "new@x.test": "bouncing"}


def test_the_inbound_row_is_marked_applied_with_one_attempt(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    desk.feed(make_mail(subject="counted", message_id="<counted@customer.test>"))
    with read_scope(desk.engine) as session:
        row = session.exec(select(InboundMessage)).one()
        assert (row.state, row.attempts, row.outcome) == ("done", 1, "ticket_created")
        assert row.message_id == "<counted@customer.test>" and row.fingerprint
        assert row.ticket_id is not None and row.processed_at is not None


def test_rows_come_back_as_plain_objects_with_every_column(desk_factory: Any) -> None:
    desk: Desk = desk_factory()
    desk.feed(make_mail())
    with session_scope(desk.engine) as session:
        ticket = session.exec(select(Ticket)).one()
        event = rows.insert_one(
            session,
            TicketEvent,
            {
                "ticket_id": ticket.id,
                "type": "note",
                "at": desk.clock.now(),
                "actor_kind": "system",
                "channel": "cli",
                "data": "{}",
            },
        )
        assert event.id is not None and event not in session and inspect(event).transient
        # the columns not given hold their fields' defaults, in the object and in the row
        assert (event.actor_email, event.actor_name) == (None, "")
        stored = session.get(TicketEvent, event.id)
        assert stored is not None and stored is not event
        assert (stored.type, stored.actor_email, stored.actor_name) == ("note", None, "")


def test_a_ticket_whose_savepoint_rolled_back_leaves_the_session(desk_factory: Any) -> None:
    """The ingest writer rolls a failed message back to its savepoint and goes on in the same
    session; SQLite hands the rolled-back ticket's id to the next ticket, which must still be
    written and be the one the session holds for that id (the ORM forgot a ticket it had
    flushed in a rolled-back savepoint; one written by Core must be forgotten too)."""
    desk: Desk = desk_factory()

    def new_ticket(session: Any, subject: str) -> Ticket:
        return tickets.create_ticket(
            session,
            subject=subject,
            originator_email="priya@customer.test",
            first=NewResponse(kind=ResponseKind.customer, plain_text="x"),
            change=desk.change(),
        )

    with session_scope(desk.engine) as session:
        outer = session.begin_nested()
        kept = new_ticket(session, "kept")
        outer.commit()
        savepoint = session.begin_nested()
        lost = new_ticket(session, "lost")
        lost_id = lost.id
        savepoint.rollback()
        assert lost not in session
        again = new_ticket(session, "again")
        assert session.get(Ticket, again.id) is again and again.subject == "again"
        assert kept in session
    with read_scope(desk.engine) as session:
        subjects = sorted(t.subject for t in session.exec(select(Ticket)).all())
        assert subjects == ["again", "kept"]
    assert lost_id is not None
