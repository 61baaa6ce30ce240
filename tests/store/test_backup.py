"""`mailhelpdesk backup DEST`: taken while mail arrives, restored into a fresh directory, served.

SQLite against a running daemon over SMTP; PostgreSQL against a real cluster with pg_dump and
pg_restore."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from mailhelpdesk.cli import main
from tests.helpers import Daemon, crlf, require


def _mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <c{i}@customer.test>"
    msg["To"] = "support@helpdesk.test"
    msg["Subject"] = f"backup case {i}"
    msg["Message-ID"] = f"<backup-{i}@customer.test>"
    msg.set_content(f"request number {i}\n")
    msg.add_attachment(
        f"invoice {i}\n".encode() * 50, maintype="text", subtype="plain", filename=f"inv{i}.txt"
    )
    return msg.as_bytes()


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(con.execute(sql))
    finally:
        con.close()


def test_sqlite_backup_while_mail_arrives_restores_and_serves(tmp_path: Path) -> None:
    import smtplib

    (tmp_path / "live").mkdir()
    live = Daemon(tmp_path / "live")
    live.start()
    acked: list[int] = []
    stop = threading.Event()

    def send() -> None:
        i = 0
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as smtp:
            while not stop.is_set() and i < 400:
                smtp.sendmail(f"c{i}@customer.test", ["support@helpdesk.test"], crlf(_mail(i)))
                acked.append(i)
                i += 1

    sender = threading.Thread(target=send)
    try:
        for i in range(20):  # some tickets fully processed before the backup
            live.send(_mail(10_000 + i))
        live.wait_idle()
        sender.start()
        while len(acked) < 20:  # mail is arriving while the backup runs
            sender.join(0.01)
        before = len(acked)
        dest = tmp_path / "backups"
        dest.mkdir()
        out = live.cli("backup", str(dest)).stdout
        during = len(acked)
        stop.set()
        sender.join(60)
    finally:
        stop.set()
        live.stop()
    (copy,) = dest.iterdir()
    assert out.startswith(f"backup written: {copy} (sqlite,")
    assert copy.stat().st_mode & 0o777 == 0o600
    assert during > before, "no mail arrived while the backup ran"
    # the Message-ID of every kept message, read from its raw bytes: a message kept but not
    # yet filed at backup time has no `message_id` column yet (filing sets it), and with the
    # understanding pool a batch or two are in hand at any moment
    kept_ids = [
        BytesHeaderParser().parsebytes(raw)["Message-ID"]
        for (raw,) in _rows(copy, "SELECT raw FROM inbound_messages")
    ]
    kept = set(kept_ids)
    assert len(kept) == len(kept_ids)  # nothing kept twice
    # every message acknowledged before the backup began is in it, as are the 20 processed ones
    assert {f"<backup-{i}@customer.test>" for i in range(before)} <= kept
    assert {f"<backup-{10_000 + i}@customer.test>" for i in range(20)} <= kept
    orphans = _rows(
        copy,
        "SELECT count(*) FROM attachments a LEFT JOIN blobs b ON b.sha256 = a.sha256 "
        "WHERE b.sha256 IS NULL",
    )
    assert orphans == [(0,)]

    (tmp_path / "restored").mkdir()
    restored = Daemon(tmp_path / "restored")
    shutil.copyfile(copy, tmp_path / "restored" / "helpdesk.db")
    restored.start()
    try:
        restored.wait_idle()  # a message kept but not yet filed at backup time is filed now
        health = httpx.get(f"http://127.0.0.1:{restored.http_port}/healthz", timeout=30).json()
        assert health["ok"] is True
        tickets = restored.tickets()
        subjects = {t["subject"] for t in tickets}
        assert len(tickets) == len(kept) == len(subjects)
        assert {f"backup case {i}" for i in range(before)} <= subjects
        shown = restored.ticket(tickets[0]["number"])
        (attachment,) = shown["responses"][0]["attachments"]
        assert attachment["name"].startswith("inv") and attachment["file_size"] > 0
    finally:
        restored.stop()


def test_backup_refuses_a_missing_folder_and_leaves_nothing_behind(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "c.db"}"\n'
        '[helpdesk]\naddress = "support@helpdesk.test"\nsecret = "x"\n'
    )
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(cfg), "init"]).exit_code == 0
    bad = runner.invoke(main, ["--config", str(cfg), "backup", str(tmp_path / "no" / "x.db")])
    assert bad.exit_code != 0 and "is not a folder" in bad.output
    good = runner.invoke(main, ["--config", str(cfg), "backup", str(tmp_path / "x.db")])
    assert good.exit_code == 0, good.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x.db")) == ["x.db"]


def test_postgresql_backup_restores_into_an_empty_database(
    postgres: Any, desk_factory: Any, tmp_path: Path
) -> None:
    require(shutil.which("pg_restore") is not None, "pg_restore (postgresql-client)")
    url = postgres.create_database()
    desk = desk_factory(db_url=url)
    for i in range(5):
        desk.feed(_mail(i))
    desk.drain()
    assert len(desk.tickets()) == 5
    cfg = tmp_path / "pg.toml"
    cfg.write_text(
        f'[database]\nurl = "{url}"\n[helpdesk]\naddress = "support@helpdesk.test"\nsecret = "x"\n'
    )
    dump = tmp_path / "pg.dump"
    result = CliRunner().invoke(main, ["--config", str(cfg), "backup", str(dump)])
    assert result.exit_code == 0, result.output
    assert "(postgresql," in result.output and dump.stat().st_mode & 0o777 == 0o600

    target = postgres.create_database()
    name = target.rsplit("/", 1)[1]
    subprocess.run(
        [
            "pg_restore",
            "--no-owner",
            "-h",
            "127.0.0.1",
            "-p",
            str(postgres.port),
            "-U",
            "postgres",
            "-d",
            name,
            str(dump),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    cfg.write_text(
        f'[database]\nurl = "{target}"\n[helpdesk]\naddress = "support@helpdesk.test"\nsecret = "x"\n'
    )
    listed = CliRunner().invoke(main, ["--config", str(cfg), "ticket", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    restored = json.loads(listed.output)
    assert sorted(t["subject"] for t in restored) == sorted(t.subject for t in desk.tickets())
