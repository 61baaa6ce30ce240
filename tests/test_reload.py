"""SIGHUP under SMTP load: the config is re-read, a changed template folder is used for the next
notice and a new agent is known, while no SMTP connection is dropped and no message is lost."""

from __future__ import annotations

import email
import email.policy
import signal
import smtplib
import sqlite3
import threading
import time
from pathlib import Path

from tests.helpers import Daemon, crlf, make_mail

SENDERS = 4


def _templates(folder: Path, marker: str) -> Path:
    notices = folder / "notices"
    notices.mkdir(parents=True)
    (notices / "acknowledgement.subject.txt").write_text(f"{marker} {{{{ ticket_tag }}}}\n")
    (notices / "acknowledgement.txt").write_text(f"{marker}: we have your message.\n")
    (notices / "acknowledgement.html").write_text(f"<p>{marker}</p>\n")
    return folder


def test_sighup_reloads_templates_and_agents_without_dropping_a_session(tmp_path: Path) -> None:
    old = _templates(tmp_path / "old", "OLD-ACK")
    new = _templates(tmp_path / "new", "NEW-ACK")
    daemon = Daemon(tmp_path, extra_config=f'[templates]\ndir = "{old}"\n')
    daemon.start()
    reloaded = threading.Event()
    stop = threading.Event()
    sent: list[tuple[str, bool]] = []  # (sender address, sent after the reload was seen)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as smtp:  # one session
                i = 0
                while not stop.is_set():
                    who = f"w{worker}-{i}@customer.test"
                    after = reloaded.is_set()
                    smtp.sendmail(
                        who,
                        ["support@helpdesk.test"],
                        crlf(make_mail(sender=who, subject=f"load {worker}/{i}")),
                    )
                    with lock:
                        sent.append((who, after))
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(SENDERS)]
    try:
        for t in threads:
            t.start()
        while len(sent) < 20:
            assert not errors, errors
            time.sleep(0.01)
        config = daemon.config.read_text().replace(str(old), str(new))
        config += '\n[[agents]]\nemail = "bob@helpdesk.test"\nname = "Bob Agent"\n'
        daemon.config.write_text(config)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while daemon.health()["data"]["config_generation"] != 2:
            assert time.monotonic() < deadline, "the reload was not applied"
            time.sleep(0.02)
        reloaded.set()
        marker = len(sent)
        while len(sent) < marker + 20:
            assert not errors, errors
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, errors  # every session lived through the reload
        daemon.wait_idle(sending=True, timeout=120)
        agents = sqlite3.connect(daemon.tmp / "helpdesk.db").execute("SELECT email FROM agents")
        assert "bob@helpdesk.test" in {row[0] for row in agents}
    finally:
        stop.set()
        daemon.stop()

    acks: dict[str, list[str]] = {}
    for path in (daemon.tmp / "outbound-mail" / "new").iterdir():
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        acks.setdefault(str(msg["To"]).strip("<>"), []).append(str(msg["Subject"]))
    assert len(sent) == len({who for who, _after in sent})
    for who, after in sent:
        (subject,) = acks[who]  # nothing lost, nothing twice
        if after:
            assert subject.startswith("NEW-ACK"), (who, subject)
    assert any(s[0].startswith("OLD-ACK") for s in acks.values())
    log = daemon.log.read_text()
    assert "reloaded config=" in log and "generation=2" in log


def test_a_broken_config_on_sighup_keeps_the_running_one(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        good = daemon.config.read_text()
        daemon.config.write_text(good + "\n[smtp_listener\nbroken =\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload failed" not in daemon.log.read_text():
            assert time.monotonic() < deadline, "the failed reload was not logged"
            time.sleep(0.02)
        health = daemon.health()["data"]
        assert health["status"] == "ok" and health["config_generation"] == 1
        daemon.send(make_mail(subject="still serving"))
        daemon.wait_idle()
        daemon.config.write_text(good)  # for the CLI below, which reads the file itself
        assert [t["subject"] for t in daemon.tickets()] == ["still serving"]
    finally:
        daemon.config.write_text(good)
        daemon.stop()


def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    first = Daemon(tmp_path)
    first.start()
    try:
        (tmp_path / "second").mkdir()
        second = Daemon(tmp_path / "second")  # other ports, and pointed at the same file:
        text = second.config.read_text()
        second.config.write_text(text.replace(str(tmp_path / "second"), str(tmp_path), 1))
        assert f"sqlite:///{tmp_path / 'helpdesk.db'}" in second.config.read_text()
        done = subprocess.run(
            [sys.executable, "-m", "mailhelpdesk", "--config", str(second.config), "serve"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0
        assert "already serves" in done.stderr and "PostgreSQL" in done.stderr, done.stderr
        assert first.proc is not None and f"pid {first.proc.pid}" in done.stderr
        assert first.health()["data"]["status"] == "ok"
    finally:
        first.stop()
    first.start()  # the lock went with the first process: a restart takes it again
    first.stop()
