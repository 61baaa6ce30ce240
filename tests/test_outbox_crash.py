"""SIGKILL between the relay taking a notice and the row being marked sent.

The relay has the message but the outbox row still says `queued`: after a restart the notice
is sent again once the claim's lease runs out. That is the at-least-once edge of any outbox
(the relay's 250 and our commit cannot be one atomic step); the copy carries the SAME
Message-ID, so the recipient's client and any MTA deduplicating on it show one message.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.helpers import Daemon, make_mail
from tests.test_roundtrip import relay, wait_for
from tests.transports.test_smtp_sender import Sink


class KillingSink(Sink):
    """Accepts the first message, then SIGKILLs the daemon before its 250 can be recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.victim: int | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)
            self.victim = None
        return reply


def test_kill_after_relay_accepted_resends_with_same_message_id(tmp_path: Path) -> None:
    sink = KillingSink().start()
    daemon = Daemon(tmp_path, relay_config=relay(sink))
    try:
        daemon.start()
        assert daemon.proc is not None
        sink.victim = daemon.proc.pid
        daemon.send(make_mail(sender="priya@customer.test", subject="kill me softly"))
        wait_for(
            lambda: daemon.proc is not None and daemon.proc.poll() is not None,
            what="the daemon to die",
        )
        first = [m["Message-ID"] for m in sink.parsed()]
        assert len(first) == 1

        daemon.start()  # the row is still leased; it goes out again when the lease runs out
        wait_for(lambda: len(sink.parsed()) >= 2, timeout=150, what="the notice to be sent again")
        daemon.wait_idle()
        rows = json.loads(daemon.cli("outbox", "list", "--json").stdout)
    finally:
        daemon.stop()
        sink.stop()
    ids = [m["Message-ID"] for m in sink.parsed()]
    assert ids.count(first[0]) == 2  # the interrupted notice, twice, with one Message-ID
    assert all(ids.count(other) == 1 for other in ids if other != first[0])  # the rest once
    assert len(set(ids)) == len(rows) and all(r["state"] == "sent" for r in rows)
