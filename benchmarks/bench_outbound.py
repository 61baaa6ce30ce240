"""Outbound throughput: the outbox sender (claim → SMTP → mark sent, durable commits) next to a
bare aiosmtplib client sending the same prebuilt messages to the same aiosmtpd sink, same run.

    python benchmarks/bench_outbound.py [--messages 2000] [--batch 50]

Also times writing the notices (render + compose + outbox insert, one transaction per 50).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib
from aiosmtpd.controller import Controller

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.config import SmtpRelayConfig
from mailhelpdesk.mail.compose import AUTO_REPLIED, Outgoing, as_bytes, compose
from mailhelpdesk.mail.render import render_notice
from mailhelpdesk.store import outbox, schema
from mailhelpdesk.store.db import make_engine, session_scope
from mailhelpdesk.transports.smtp_sender import SMTPRelay, SMTPSender
from tests.helpers import free_port


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


def _context(i: int) -> dict[str, object]:
    return {
        "helpdesk_name": "Bench Support",
        "helpdesk_address": "support@helpdesk.test",
        "ticket_number": 100001 + i,
        "ticket_tag": f"[#{100001 + i}]",
        "ticket_subject": f"Printer {i} on fire",
        "ticket_status": "open",
        "queue": "Inbox",
        "customer_name": "Priya Sharma",
        "customer_email": f"c{i}@customer.test",
        "message_text": "My printer is on fire.\n" * 20,
        "agent_name": "",
    }


def write_notices(engine: object, n: int) -> tuple[float, list[bytes]]:
    clock = SystemClock()
    raws: list[bytes] = []
    started = time.perf_counter()
    for start in range(0, n, 50):
        with session_scope(engine) as session:  # type: ignore[arg-type]
            for i in range(start, min(start + 50, n)):
                notice = render_notice("acknowledgement", _context(i))
                msg = compose(
                    Outgoing(
                        "Bench Support",
                        "support@helpdesk.test",
                        [("Priya", f"c{i}@customer.test")],
                        notice.subject,
                        notice.text,
                        notice.html,
                        reply_to="support+t1-aaaaaaaaaaaaaaaa@helpdesk.test",
                        in_reply_to=f"<m{i}@customer.test>",
                        auto_submitted=AUTO_REPLIED,
                        ticket_number=100001 + i,
                    )
                )
                raw = as_bytes(msg)
                raws.append(raw)
                now = clock.now()
                outbox.enqueue(
                    session,
                    kind="acknowledgement",
                    ticket_id=None,
                    message_id=str(msg["Message-ID"]),
                    mail_from="support@helpdesk.test",
                    rcpt_tos=[f"c{i}@customer.test"],
                    is_automatic=True,
                    raw=raw,
                    now=now,
                    deadline_at=now + timedelta(days=2),
                )
    return time.perf_counter() - started, raws


async def drain(engine: object, port: int, batch: int) -> float:
    db = ThreadPoolExecutor(max_workers=1)
    sender = SMTPSender(
        engine,
        SystemClock(),
        db,  # type: ignore[arg-type]
        SMTPRelay(SmtpRelayConfig(host="127.0.0.1", port=port, security="none")),
        batch_size=batch,
    )
    started = time.perf_counter()
    while await sender.drain_once():
        pass
    elapsed = time.perf_counter() - started
    await sender.relay.close()
    db.shutdown()
    return elapsed


async def bare(raws: list[bytes], port: int) -> float:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    started = time.perf_counter()
    await client.connect()
    for i, raw in enumerate(raws):
        await client.sendmail("support@helpdesk.test", [f"c{i}@customer.test"], raw)
    await client.quit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    handler = _Counter()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            schema.upgrade(engine)
            write_s, raws = write_notices(engine, args.messages)
            bare_s = asyncio.run(bare(raws, port))
            sender_s = asyncio.run(drain(engine, port, args.batch))
            engine.dispose()
        assert handler.count == 2 * args.messages, handler.count
        n = args.messages
        print(
            f"messages: {n}, avg size {sum(map(len, raws)) // n} bytes, batch {args.batch}, {datetime.now(UTC):%Y-%m-%d %H:%M}Z"
        )
        print(f"write notices (render+compose+insert): {n / write_s:8.0f} notices/s")
        print(f"bare aiosmtplib, prebuilt, 1 conn:     {n / bare_s:8.0f} msgs/s")
        print(f"outbox sender (claim/send/mark sent):  {n / sender_s:8.0f} msgs/s")
        print(f"sender / bare ratio:                   {bare_s / sender_s:8.2f}")
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
