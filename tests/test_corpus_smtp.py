"""Every corpus message through the real SMTP listener: no crash, no hang, each one accounted for."""

from __future__ import annotations

import smtplib
import sqlite3
from collections import Counter
from pathlib import Path

from tests.helpers import Daemon, crlf

SKIP_NAMES = {"SOURCES.md", "expected.json", "README.md"}


def corpus_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name not in SKIP_NAMES and p.suffix not in (".yml", ".json")
    )


def test_every_corpus_message_through_smtp(corpus_dir: Path, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, extra_config="")
    daemon.start()
    files = corpus_files(corpus_dir)
    refused: list[str] = []
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=60) as smtp:
            for path in files:
                raw = crlf(path.read_bytes())
                try:
                    smtp.sendmail("sender@corpus.test", ["support@helpdesk.test"], raw)
                except smtplib.SMTPDataError as exc:
                    refused.append(f"{path.relative_to(corpus_dir)}: {exc.smtp_code}")
                    smtp.rset()
        daemon.wait_idle(timeout=600)
        health = daemon.health()
    finally:
        daemon.stop()
    with sqlite3.connect(tmp_path / "helpdesk.db") as conn:
        rows = conn.execute(
            "SELECT state, outcome, reason, source_ref FROM inbound_messages"
        ).fetchall()
    outcomes = Counter(
        f"{state}:{outcome}" if outcome else state for state, outcome, _r, _s in rows
    )
    print(
        f"\ncorpus over SMTP: {len(files)} files, {len(rows)} kept, refused {len(refused)}: {dict(sorted(outcomes.items()))}"
    )
    failed = [reason for state, _o, reason, _s in rows if state == "failed"]
    assert health["ok"]
    assert refused == []
    assert len(rows) == len(files)
    assert failed == [], failed[:5]
    assert all(state == "done" for state, *_ in rows)
    assert all(outcome and (outcome != "classified" or reason) for _s, outcome, reason, _r in rows)
    assert outcomes["done:ticket_created"] > len(files) // 2
