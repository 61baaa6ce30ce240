"""Ten minutes of simulated time against an autoresponder and a dead mailbox: at most the rate
limit's worth of automatic mail goes out, and their answers open no ticket."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from mailhelpdesk.domain.models import OutboxItem
from mailhelpdesk.store.db import read_scope
from tests.desk import make_desk
from tests.helpers import make_mail
from tests.ingest.test_bounces import postfix_dsn, return_path_of

OOO = "ooo@customer.test"  # answers everything with an out-of-office
DEAD = "dead@customer.test"  # every mail to it bounces


def out_of_office(notice: OutboxItem) -> bytes:
    return make_mail(
        sender=f"Away <{OOO}>",
        subject="Automatic reply: I am on holiday",
        body="Back on Monday.\n",
        headers={
            "Auto-Submitted": "auto-replied",
            "In-Reply-To": notice.message_id,
            "X-Autoreply": "yes",
        },
    )


def test_ten_minutes_against_an_autoresponder_and_a_bouncing_address(tmp_path: Path) -> None:
    desk = make_desk(tmp_path)
    limit = desk.config.outbound.max_auto_notices_per_window
    answered: set[int] = set()
    genuine = 0
    for tick in range(60):  # 10 simulated minutes, one round every 10 s
        # both write to the helpdesk every round (a new question each time)
        for sender in (OOO, DEAD):
            desk.feed(
                make_mail(sender=sender, subject=f"question {tick}", body=f"question {tick}\n")
            )
            genuine += 1
        with read_scope(desk.engine) as session:
            fresh = [
                n
                for n in session.exec(select(OutboxItem))
                if n.id not in answered and n.state != "suppressed"
            ]
        for notice in fresh:  # what the helpdesk sent gets its automatic answer back
            answered.add(notice.id or 0)
            if notice.primary_rcpt == OOO:
                desk.feed(out_of_office(notice))
            elif notice.primary_rcpt == DEAD:
                desk.feed(
                    postfix_dsn(original_message_id=notice.message_id, recipient=DEAD),
                    mail_from="",
                    rcpt=return_path_of(desk, notice),
                )
        desk.clock.advance(seconds=10)

    with read_scope(desk.engine) as session:
        sent_to = {
            rcpt: list(session.exec(select(OutboxItem).where(OutboxItem.primary_rcpt == rcpt)))
            for rcpt in (OOO, DEAD)
        }
    to_ooo = [n for n in sent_to[OOO] if n.state != "suppressed"]
    to_dead = [n for n in sent_to[DEAD] if n.state != "suppressed"]
    print(
        f"\nloop simulation: {genuine} genuine mails, {len(to_ooo)} notices to the autoresponder, "
        f"{len(to_dead)} to the bouncing address, {len(desk.tickets())} tickets"
    )
    assert len(to_ooo) <= limit  # the rate limit holds over the whole window
    assert len(to_dead) == 1  # the first bounce stops automatic mail to it
    assert to_dead[0].state == "failed"
    assert len(desk.tickets()) == genuine  # the 60 answers and bounces opened nothing
