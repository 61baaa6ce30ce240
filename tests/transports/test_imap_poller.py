"""The IMAP poller against a real Dovecot, mostly through the real daemon (`mailhelpdesk serve`).

One private Dovecot serves the whole module (tests/dovecot.py); each test gets its own IMAP user
and maildir, and its own daemon and database. A missing Dovecot fails the module;
it is never skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailhelpdesk.clock import SystemClock
from mailhelpdesk.config import ImapMailboxConfig
from mailhelpdesk.transports.imap_poller import IMAPPoller, probe
from tests.dovecot import Dovecot, ImapUser, crlf
from tests.helpers import Daemon, make_mail

BOX = "support"
_users = itertools.count(1)


@pytest.fixture
def user(dovecot: Dovecot) -> ImapUser:
    dovecot.start()  # a test that stopped it must not break the next one
    return dovecot.add_user(f"user{next(_users)}-{os.getpid()}")


# -- helpers ---------------------------------------------------------------------------------


def mailbox_toml(dovecot: Dovecot, user: ImapUser, *, security: str = "none", **extra: Any) -> str:
    port = dovecot.ssl_port if security == "ssl" else dovecot.port
    lines = [
        "[[imap_mailboxes]]",
        f'name = "{BOX}"',
        f'host = "{dovecot.host}"',
        f"port = {port}",
        f'security = "{security}"',
        f'username = "{user.name}"',
        f'password = "{user.password}"',
    ]
    for key, value in extra.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def start_daemon(tmp_path: Path, dovecot: Dovecot, user: ImapUser, **extra: Any) -> Daemon:
    daemon = Daemon(tmp_path, extra_config=mailbox_toml(dovecot, user, **extra))
    daemon.start()
    return daemon


def query(daemon: Daemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(daemon.tmp / "helpdesk.db", timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def scalar(daemon: Daemon, sql: str, *args: Any) -> Any:
    return query(daemon, sql, *args)[0][0]


def count(daemon: Daemon, where: str = "1") -> int:
    """Spool rows matching `where`."""
    return int(scalar(daemon, f"SELECT COUNT(*) FROM inbound_messages WHERE {where}"))


def wait_count(
    daemon: Daemon, where: str, at_least: int, *, timeout: float, every: float = 0.05
) -> None:
    wait_for(
        lambda: count(daemon, where) >= at_least,
        timeout=timeout,
        what=f"{at_least} rows where {where}",
        every=every,
    )


def imap_status(daemon: Daemon) -> dict[str, Any]:
    return dict(daemon.health()["data"]["imap_mailboxes"][BOX])


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, sqlite3.OperationalError):
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_ingested(daemon: Daemon, total: int, timeout: float = 120) -> None:
    """Until `total` IMAP messages are kept and nothing kept is still pending."""
    wait_for(
        lambda: count(daemon, "source = 'imap'") >= total and count(daemon, "state = 'new'") == 0,
        timeout=timeout,
        what=f"{total} IMAP messages ingested",
    )


def generated(prefix: str, n: int, *, body_bytes: int = 0) -> list[tuple[str, bytes]]:
    """(Message-ID, raw) pairs with unique Message-IDs, senders spread over 37 customers."""
    pad = ("lorem ipsum dolor sit amet " * (body_bytes // 27 + 1))[:body_bytes]
    return [
        (
            mid := f"<{prefix}-{i}@customer.test>",
            make_mail(
                subject=f"{prefix} {i}",
                message_id=mid,
                sender=f"c{i % 37}@customer.test",
                body=f"Message {i} of {prefix}.\n{pad}\n",
            ),
        )
        for i in range(n)
    ]


CORPUS_GLOBS = (
    "zammad/*.box",
    "redmine/*.eml",
    "rt/**/*",
    "zbateson-mail-mime-parser/m*.txt",
    "php-mime-mail-parser/*",
    "django-helpdesk/*",
    "mailman3/*",
    "talon/**/*.eml",
)


def corpus_messages(root: Path, n: int) -> list[bytes]:
    """The first `n` complete messages (a header block with From and Subject) of the corpus."""
    found: list[bytes] = []
    for pattern in CORPUS_GLOBS:
        for path in sorted(root.glob(pattern)):
            if not path.is_file() or path.suffix in (".yml", ".json", ".md"):
                continue
            raw = path.read_bytes()
            head = b"\n" + raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].lower()
            if b"\nfrom:" in head and b"\nsubject:" in head:
                found.append(raw)
            if len(found) == n:
                return found
    raise AssertionError(f"the corpus has only {len(found)} complete messages")


# -- the must-show points ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "processed_folder", ["", "Processed"], ids=["flag-seen", "move-to-processed"]
)
def test_200_corpus_messages_each_ingested_once_then_marked(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path, corpus_dir: Path, processed_folder: str
) -> None:
    """200 real messages in INBOX: 200 spool rows, all done, one per UID, bytes as on the
    server; then every message is flagged \\Seen (or moved to the processed folder)."""
    messages = corpus_messages(corpus_dir, 200)
    dovecot.append(user, messages)
    extra = {"processed_folder": processed_folder} if processed_folder else {}
    daemon = start_daemon(tmp_path, dovecot, user, **extra)
    try:
        wait_ingested(daemon, 200)
        if processed_folder:
            wait_for(lambda: dovecot.count(user, "INBOX") == 0, timeout=30, what="INBOX emptied")
        else:
            wait_for(
                lambda: all("\\Seen" in f for f in dovecot.flags(user).values()),
                timeout=30,
                what="all \\Seen",
            )
        status = imap_status(daemon)
    finally:
        daemon.stop()
    rows = query(
        daemon, "SELECT source_ref, state, outcome, raw FROM inbound_messages WHERE source = 'imap'"
    )
    refs = Counter(ref for ref, *_ in rows)
    outcomes = Counter(outcome for _r, _s, outcome, _raw in rows)
    mode = f"moved to {processed_folder}" if processed_folder else "flagged Seen"
    print(f"\n200 corpus messages over IMAP, {mode}: {dict(outcomes)}")
    assert len(rows) == 200
    assert all(n == 1 for n in refs.values())
    assert sorted(int(ref.rsplit(":", 1)[1]) for ref in refs) == list(range(1, 201))
    assert all(state == "done" for _r, state, _o, _raw in rows)
    assert sorted(bytes(raw) for *_x, raw in rows) == sorted(crlf(m) for m in messages)
    assert (
        status["messages_kept"] == 200
        and status["last_uid"] == 200
        and status["last_error"] is None
    )
    if processed_folder:
        assert dovecot.count(user, "INBOX") == 0
        assert dovecot.count(user, processed_folder) == 200
    else:
        flags = dovecot.flags(user)
        assert len(flags) == 200 and all("\\Seen" in f for f in flags.values())


def test_idle_new_mail_becomes_a_ticket_within_seconds(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """20 messages APPENDed one at a time while the daemon waits in IDLE: p50 from APPEND to
    ticket under 5 s."""
    daemon = start_daemon(tmp_path, dovecot, user, poll_interval_s=3600)
    latencies: list[float] = []
    try:
        wait_for(lambda: imap_status(daemon)["state"] == "idle", timeout=30, what="poller in IDLE")
        assert imap_status(daemon)["idle"] is True
        with dovecot.client(user, select=None) as conn:
            for n, (_mid, raw) in enumerate(generated("idle", 20), start=1):
                time.sleep(random.uniform(0.02, 0.15))  # arrive while it waits, not in a burst
                started = time.monotonic()
                assert conn.append("INBOX", None, None, crlf(raw))[0] == "OK"
                wait_count(
                    daemon, "state = 'done' AND ticket_id IS NOT NULL", n, timeout=30, every=0.01
                )
                latencies.append(time.monotonic() - started)
    finally:
        daemon.stop()
    p50 = statistics.median(latencies)
    print(
        f"\nIDLE: APPEND to ticket p50={p50:.3f}s max={max(latencies):.3f}s over {len(latencies)} messages"
    )
    assert scalar(daemon, "SELECT COUNT(*) FROM tickets") == 20
    assert p50 < 5.0


def test_sigkill_during_300_message_sync_loses_and_doubles_nothing(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """kill -9 at random moments while 300 messages are fetched and ingested, restart each time:
    every Message-ID ends on exactly one ticket response and one done spool row."""
    mails = generated("kill", 300, body_bytes=2000)
    dovecot.append(user, [raw for _mid, raw in mails])
    rng = random.Random(20261123)
    # half the kills are timed on messages kept (mid-fetch), half on messages applied (mid-ingest)
    points = [("kept", p) for p in sorted(rng.sample(range(10, 290), 3))]
    points += [("done", p) for p in sorted(rng.sample(range(10, 290), 3))]
    daemon = start_daemon(tmp_path, dovecot, user)
    kills: list[str] = []
    try:
        for kind, point in points:
            wait_count(
                daemon, "state = 'done'" if kind == "done" else "1", point, timeout=60, every=0.002
            )
            time.sleep(rng.uniform(0, 0.05))
            kept, done = count(daemon), count(daemon, "state = 'done'")
            daemon.kill()
            kills.append(f"{kind}>={point} (kept {kept}, done {done})")
            daemon.start()
        wait_ingested(daemon, 300)
        wait_for(
            lambda: all("\\Seen" in f for f in dovecot.flags(user).values()),
            timeout=30,
            what="all \\Seen",
        )
    finally:
        daemon.kill()
    rows = query(daemon, "SELECT source_ref, state, outcome, message_id FROM inbound_messages")
    on_tickets = Counter(
        mid
        for (mid,) in query(
            daemon, "SELECT message_id FROM responses WHERE message_id LIKE '<kill-%'"
        )
    )
    print(f"\nIMAP kill -9: {len(kills)} kills: {'; '.join(kills)}")
    expected = {mid for mid, _raw in mails}
    assert len(kills) == len(points)
    assert set(on_tickets) == expected, f"lost: {sorted(expected - set(on_tickets))[:10]}"
    assert [m for m, n in on_tickets.items() if n > 1] == []
    assert len(rows) == 300 and len({ref for ref, *_ in rows}) == 300
    assert all(state == "done" and outcome == "ticket_created" for _r, state, outcome, _m in rows)
    assert scalar(daemon, "SELECT COUNT(*) FROM tickets") == 300


def test_dovecot_restart_mid_sync_recovers_by_itself(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """Dovecot goes away in the middle of a sync and comes back: the poller reconnects on its own
    (backoff) and finishes; nothing lost, nothing doubled."""
    mails = generated("restart", 300, body_bytes=8000)
    dovecot.create_folder(user, "Staging")
    dovecot.append(user, [raw for _mid, raw in mails], folder="Staging")
    daemon = start_daemon(tmp_path, dovecot, user)
    try:
        wait_for(lambda: imap_status(daemon)["state"] == "idle", timeout=30, what="poller in IDLE")
        dovecot.move_all(user, "Staging", "INBOX")  # 300 new messages at once
        wait_count(daemon, "1", 1, timeout=60, every=0.002)
        dovecot.stop()
        kept_when_stopped = count(daemon)
        wait_for(
            lambda: imap_status(daemon)["state"] in ("error", "connecting"),
            timeout=30,
            what="poller notices",
        )
        error = imap_status(daemon)["last_error"]
        time.sleep(1.5)
        dovecot.start()
        wait_ingested(daemon, 300)
        more = generated("after-restart", 5)
        dovecot.append(user, [raw for _mid, raw in more])  # and it is live again
        wait_ingested(daemon, 305)
        status = imap_status(daemon)
    finally:
        daemon.stop()
    print(
        f"\nDovecot restart: stopped with {kept_when_stopped}/300 kept; error seen: {error}; connects={status['connects']}"
    )
    rows = query(daemon, "SELECT source_ref, state, outcome FROM inbound_messages")
    on_tickets = Counter(
        mid
        for (mid,) in query(
            daemon, "SELECT message_id FROM responses WHERE message_id LIKE '<restart-%'"
        )
    )
    assert kept_when_stopped < 300, "Dovecot must stop mid-sync"
    assert error
    assert status["connects"] >= 2 and status["last_error"] is None and status["state"] == "idle"
    assert len(rows) == 305 and len({ref for ref, *_ in rows}) == 305
    assert all(state == "done" and outcome == "ticket_created" for _r, state, outcome in rows)
    assert set(on_tickets) == {mid for mid, _raw in mails} and max(on_tickets.values()) == 1


@pytest.mark.parametrize("mode", ["poll-while-running", "idle-across-restart"])
def test_uidvalidity_change_reads_folder_again_without_doubling(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path, mode: str
) -> None:
    """The folder is deleted and recreated with the same messages (new UIDVALIDITY): the cursor
    resets, everything is fetched again, and dedupe keeps each message on one ticket only.
    Polling re-SELECTs each round and sees the change while running; an IDLE session (Dovecot
    sends nothing when the selected folder is recreated) sees it on its next SELECT: re-arm or
    reconnect, here a restart."""
    dovecot.create_folder(user, "Support")
    mails = generated("uidv", 30)
    dovecot.append(user, [raw for _mid, raw in mails], folder="Support")
    before = dovecot.uidvalidity(user, "Support")
    polling = mode == "poll-while-running"
    extra: dict[str, Any] = {"folder": "Support", "idle": not polling, "poll_interval_s": 1}
    daemon = start_daemon(tmp_path, dovecot, user, **extra)
    try:
        wait_ingested(daemon, 30)
        if not polling:
            daemon.stop()
        dovecot.recreate_folder(user, "Support")
        dovecot.append(user, [raw for _mid, raw in mails], folder="Support")
        after = dovecot.uidvalidity(user, "Support")
        if not polling:
            daemon.start()
        wait_for(
            lambda: (
                imap_status(daemon)["uidvalidity"] == after
                and imap_status(daemon)["last_uid"] == 30
            ),
            timeout=60,
            what="poller on the new UIDVALIDITY",
        )
        wait_ingested(daemon, 60)
    finally:
        daemon.stop()
    outcomes = Counter(
        outcome for (outcome,) in query(daemon, "SELECT outcome FROM inbound_messages")
    )
    on_tickets = Counter(
        mid
        for (mid,) in query(
            daemon, "SELECT message_id FROM responses WHERE message_id LIKE '<uidv-%'"
        )
    )
    assert after != before
    assert scalar(daemon, "SELECT uidvalidity FROM mailbox_cursors WHERE mailbox = ?", BOX) == after
    assert outcomes == {"ticket_created": 30, "duplicate": 30}
    assert scalar(daemon, "SELECT COUNT(*) FROM tickets") == 30
    assert set(on_tickets) == {mid for mid, _raw in mails} and max(on_tickets.values()) == 1
    assert "UIDVALIDITY changed" in daemon.log.read_text()


def test_message_already_seen_is_still_ingested(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """Mail another client has read (\\Seen) is selected by UID, not UNSEEN: it is ingested."""
    seen, unseen, later = generated("seen", 3), generated("unseen", 2), generated("seen-later", 1)
    dovecot.append(user, [raw for _mid, raw in seen], flags="\\Seen")
    dovecot.append(user, [raw for _mid, raw in unseen])
    daemon = start_daemon(tmp_path, dovecot, user)
    try:
        wait_ingested(daemon, 5)
        wait_for(lambda: imap_status(daemon)["state"] == "idle", timeout=30, what="poller in IDLE")
        dovecot.append(user, [raw for _mid, raw in later], flags="\\Seen")
        wait_ingested(daemon, 6)
    finally:
        daemon.stop()
    on_tickets = {mid for (mid,) in query(daemon, "SELECT message_id FROM responses")}
    assert {mid for mid, _raw in seen + unseen + later} <= on_tickets
    assert scalar(daemon, "SELECT COUNT(*) FROM tickets") == 6


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_with_ca_file_verifies_the_test_certificate(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path, security: str
) -> None:
    """ssl (IMAPS port) and starttls (plain port, upgraded) with the test CA: mail flows."""
    mails = generated(f"tls-{security}", 5)
    dovecot.append(user, [raw for _mid, raw in mails])
    daemon = start_daemon(tmp_path, dovecot, user, security=security, ca_file=dovecot.cert_file)
    try:
        wait_ingested(daemon, 5)
        status = imap_status(daemon)
    finally:
        daemon.stop()
    assert status["last_error"] is None and status["messages_kept"] == 5
    assert scalar(daemon, "SELECT COUNT(*) FROM tickets") == 5
    logins = [
        line
        for line in dovecot.log_tail(200_000).splitlines()
        if f"Login: user=<{user.name}>" in line
    ]
    assert any(
        ", TLS," in line for line in logins
    )  # the daemon's session was encrypted (the APPEND's was not)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_verification_failure_is_reported_not_a_crash(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path, security: str
) -> None:
    """Without ca_file the self-signed certificate is refused: /healthz shows the mailbox in error
    with the reason, the daemon keeps serving (SMTP still takes mail)."""
    dovecot.append(user, [raw for _mid, raw in generated(f"untrusted-{security}", 2)])
    daemon = start_daemon(tmp_path, dovecot, user, security=security)
    try:
        status = wait_for(
            lambda: (s := imap_status(daemon))["state"] == "error" and s["last_error"] and s,
            timeout=30,
            what="TLS error reported",
        )
        daemon.send(make_mail(subject="still serving"))
        daemon.wait_idle(timeout=30)
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.health()["ok"]
    finally:
        daemon.stop()
    assert "certificate verif" in status["last_error"].lower(), status
    assert status["messages_kept"] == 0
    assert scalar(daemon, "SELECT COUNT(*) FROM inbound_messages WHERE source = 'imap'") == 0
    assert "TLS certificate verification failed" in daemon.log.read_text()


def test_unhandled_message_is_set_aside_and_the_50_after_it_are_ingested(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """Two bad messages among good ones: garbage bytes (kept, then handled or set aside by the
    ingest pipeline) and one the server cannot read (Dovecot drops the connection on each fetch
    of it: isolated, recorded as a failed spool row, left unmarked). The 50 messages after them
    are ingested."""
    before, after = generated("before-bad", 3), generated("after-bad", 50)
    dovecot.append(user, [raw for _mid, raw in before])
    dovecot.append(
        user, [b"\x00\x01\x02\xff\xfe not a mail message at all \x80\x81\n\x00"]
    )  # UID 4
    dovecot.append(
        user,
        [make_mail(subject="unreadable on the server", message_id="<unreadable@customer.test>")],
    )  # UID 5
    dovecot.append(user, [raw for _mid, raw in after])
    os.chmod(dovecot.message_file(user, 5), 0)  # the mail process (nobody) cannot open it any more
    daemon = start_daemon(tmp_path, dovecot, user)
    try:
        wait_ingested(daemon, 55, timeout=90)
        status = imap_status(daemon)
    finally:
        daemon.stop()
        os.chmod(dovecot.message_file(user, 5), 0o600)
    rows = {
        int(ref.rsplit(":", 1)[1]): (state, outcome, reason, size)
        for ref, state, outcome, reason, size in query(
            daemon, "SELECT source_ref, state, outcome, reason, size FROM inbound_messages"
        )
    }
    on_tickets = {mid for (mid,) in query(daemon, "SELECT message_id FROM responses")}
    print(f"\nset aside: garbage -> {rows[4][:3]}; unreadable -> {rows[5][:3]}")
    assert sorted(rows) == list(range(1, 56))
    assert rows[4][3] > 0 and rows[4][0] in (
        "done",
        "failed",
    )  # kept as received; the pipeline decided
    assert rows[5][0] == "failed" and "uid=5" in rows[5][2] and rows[5][3] == 0
    assert {mid for mid, _raw in before + after} <= on_tickets
    assert all(rows[uid][0] == "done" for uid in range(6, 56))
    assert status["last_uid"] == 55 and status["last_error"] is None
    flags = dovecot.flags(user)
    assert "\\Seen" not in flags[5] and all("\\Seen" in flags[uid] for uid in range(6, 56))
    assert "imap message set aside" in daemon.log.read_text()


# -- probe (what `mailhelpdesk check` shows) ------------------------------------------------------


def plain_box(dovecot: Dovecot, user: ImapUser) -> ImapMailboxConfig:
    return ImapMailboxConfig(
        name=BOX,
        host=dovecot.host,
        port=dovecot.port,
        security="none",
        username=user.name,
        password=user.password,
    )


def test_probe_reports_capabilities_folder_and_count(dovecot: Dovecot, user: ImapUser) -> None:
    """`probe` (for `mailhelpdesk check`) over none, ssl, starttls, unverified ssl and XOAUTH2."""
    dovecot.append(user, [raw for _mid, raw in generated("probe", 4)])
    box, ca = plain_box(dovecot, user), str(dovecot.cert_file)
    configs = {
        "none": replace(box, processed_folder="Processed"),
        "ssl": replace(box, port=dovecot.ssl_port, security="ssl", ca_file=ca),
        "starttls": replace(box, security="starttls", ca_file=ca),
        "no-verify": replace(box, port=dovecot.ssl_port, security="ssl", verify_tls=False),
        # Dovecot's XOAUTH2 with a passwd-file checks the token as the password
        "xoauth2": replace(
            box, password="", auth="xoauth2", oauth2_token_command=f"echo {user.password}"
        ),
    }
    reports = {key: asyncio.run(probe(config)) for key, config in configs.items()}
    for key, report in reports.items():
        assert report["ok"], (key, report)
        assert report["messages"] == 4 and report["folder"] == "INBOX" and report["uidvalidity"]
        assert "IDLE" in report["capabilities"] and report["idle"] is True
    assert reports["none"]["processed_folder"] == "Processed"


def test_probe_reports_refused_login_missing_folder_and_no_server(
    dovecot: Dovecot, user: ImapUser
) -> None:
    """Every failure is a report with the reason, never an exception."""
    box = plain_box(dovecot, user)
    folder = asyncio.run(probe(replace(box, folder="Nope")))
    closed = asyncio.run(probe(replace(box, port=1)))
    token = asyncio.run(
        probe(replace(box, auth="xoauth2", oauth2_token_command="echo oops >&2; exit 3"))
    )
    wrong = asyncio.run(
        probe(replace(box, password="wrong"))
    )  # last: Dovecot delays the next login
    assert not folder["ok"] and "Nope" in folder["error"]
    assert not closed["ok"] and "cannot connect" in closed["error"]
    assert not token["ok"] and "oauth2_token_command failed (exit 3): oops" in token["error"]
    assert not wrong["ok"] and "login refused" in wrong["error"]


def test_a_burst_of_untagged_lines_does_not_overflow_the_parser() -> None:
    """aioimaplib recurses once per line of a chunk; 5,000 `* n EXPUNGE` lines (a big MOVE by
    another client) in one chunk must not raise RecursionError (which drops the connection)."""
    from mailhelpdesk.transports.imap_session import _Protocol

    async def feed() -> bool:
        protocol = _Protocol(asyncio.get_running_loop())
        protocol.state = "SELECTED"
        protocol.data_received(
            b"".join(b"* %d EXPUNGE\r\n" % n for n in range(5000, 0, -1)) + b"* 7 EXISTS\r\n"
        )
        return protocol.new_mail.is_set()

    assert asyncio.run(feed()) is True


def test_uid_set_is_compact() -> None:
    from mailhelpdesk.transports.imap_session import uid_set

    assert uid_set([5, 1, 2, 3, 9, 10, 7]) == "1:3,5,7,9:10"
    assert uid_set([42]) == "42"


# -- the cursor and the order of work, in process ------------------------------------------------


def test_cursor_moves_only_from_where_it_was_seen(tmp_path: Path) -> None:
    """Compare-and-set: a second reader that saw an older cursor cannot advance it (it would keep
    the same messages twice); a new UIDVALIDITY resets the cursor to 0."""
    from mailhelpdesk.store import cursors, schema
    from mailhelpdesk.store.db import make_engine, session_scope

    engine = make_engine(f"sqlite:///{tmp_path / 'cursor.db'}")
    schema.upgrade(engine)
    now = SystemClock().now()
    with session_scope(engine) as db:
        cursor, reset = cursors.open_cursor(db, mailbox=BOX, uidvalidity=7, now=now)
        assert (cursor.last_uid, reset) == (0, False)
        cursors.advance_cursor(db, mailbox=BOX, uidvalidity=7, from_uid=0, to_uid=50, now=now)
    with pytest.raises(cursors.CursorMovedError), session_scope(engine) as db:
        cursors.advance_cursor(db, mailbox=BOX, uidvalidity=7, from_uid=0, to_uid=60, now=now)
    with pytest.raises(cursors.CursorMovedError), session_scope(engine) as db:
        cursors.advance_cursor(db, mailbox=BOX, uidvalidity=8, from_uid=50, to_uid=60, now=now)
    with session_scope(engine) as db:
        assert cursors.open_cursor(db, mailbox=BOX, uidvalidity=7, now=now)[0].last_uid == 50
        cursor, reset = cursors.open_cursor(db, mailbox=BOX, uidvalidity=8, now=now)
        assert (cursor.uidvalidity, cursor.last_uid, reset) == (8, 0, True)
    engine.dispose()


def test_failed_commit_marks_nothing_and_loses_nothing(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commit fails: nothing is kept, nothing is flagged \\Seen (marking comes only after
    a commit); the poller backs off, reconnects and keeps every message exactly once."""
    from mailhelpdesk.store import cursors, schema
    from mailhelpdesk.store.db import make_engine

    dovecot.append(user, [raw for _mid, raw in generated("commit", 60)])
    engine = make_engine(f"sqlite:///{tmp_path / 'poller.db'}")
    schema.upgrade(engine)
    real_advance = cursors.advance_cursor
    seen_when_failing: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> None:
        if not seen_when_failing:
            seen_when_failing.append(sum("\\Seen" in f for f in dovecot.flags(user).values()))
            raise RuntimeError("disk full (simulated)")
        real_advance(*args, **kwargs)

    monkeypatch.setattr(cursors, "advance_cursor", failing_once)

    async def run() -> dict[str, Any]:
        executor = ThreadPoolExecutor(max_workers=1)
        poller = IMAPPoller(
            plain_box(dovecot, user), engine=engine, clock=SystemClock(), executor=executor
        )
        poller.start()
        try:
            for _ in range(600):
                if poller.status()["last_uid"] == 60 and poller.status()["state"] == "idle":
                    break
                await asyncio.sleep(0.05)
            return poller.status()
        finally:
            await poller.stop()
            executor.shutdown()

    status = asyncio.run(run())
    with sqlite3.connect(tmp_path / "poller.db") as conn:
        refs = [ref for (ref,) in conn.execute("SELECT source_ref FROM inbound_messages")]
    engine.dispose()
    assert seen_when_failing == [0]
    assert status["connects"] == 2 and status["messages_kept"] == 60
    assert len(refs) == 60 and len(set(refs)) == 60
    assert all("\\Seen" in f for f in dovecot.flags(user).values())


def test_idle_is_rearmed_and_each_round_selects_again(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """IDLE ends after `idle_rearm_s` (5 minutes in the daemon, under the servers' 30) and the
    next round SELECTs again: a folder recreated under an idling session (Dovecot says nothing)
    is noticed by its new UIDVALIDITY at the next re-arm."""
    from mailhelpdesk.store import schema
    from mailhelpdesk.store.db import make_engine

    dovecot.create_folder(user, "Support")
    dovecot.append(user, [raw for _mid, raw in generated("rearm", 3)], folder="Support")
    engine = make_engine(f"sqlite:///{tmp_path / 'poller.db'}")
    schema.upgrade(engine)

    async def run() -> tuple[dict[str, Any], int]:
        executor = ThreadPoolExecutor(max_workers=1)
        box = replace(plain_box(dovecot, user), folder="Support")
        poller = IMAPPoller(
            box, engine=engine, clock=SystemClock(), executor=executor, idle_rearm_s=1.0
        )
        poller.start()
        try:
            while poller.status()["state"] != "idle":  # noqa: ASYNC110 - the poller has no event to await
                await asyncio.sleep(0.05)
            await asyncio.to_thread(dovecot.recreate_folder, user, "Support")
            await asyncio.to_thread(
                dovecot.append, user, [make_mail(subject="after")], folder="Support"
            )
            after = await asyncio.to_thread(dovecot.uidvalidity, user, "Support")
            for _ in range(100):
                if poller.status()["uidvalidity"] == after and poller.status()["last_uid"] == 1:
                    break
                await asyncio.sleep(0.05)
            return poller.status(), after
        finally:
            await poller.stop()
            executor.shutdown()

    status, after = asyncio.run(run())
    engine.dispose()
    assert (
        status["uidvalidity"] == after and status["last_uid"] == 1 and status["messages_kept"] == 4
    )
    assert status["connects"] == 1  # noticed without reconnecting


def test_cli_check_logs_in_and_reports_the_mailbox(
    dovecot: Dovecot, user: ImapUser, tmp_path: Path
) -> None:
    """`mailhelpdesk check` logs in to every configured mailbox and says what it found."""
    good = Daemon(tmp_path, extra_config=mailbox_toml(dovecot, user))
    dovecot.append(user, [make_mail(subject="one"), make_mail(subject="two")])
    result = good.cli("check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"imap {BOX}:"))
    assert "ok" in line and "2 messages" in line and "IDLE yes" in line

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = Daemon(
        bad_dir,
        extra_config=mailbox_toml(dovecot, ImapUser(user.name, "wrong-password", user.home)),
    )
    result = bad.cli("check", check=False)
    assert result.returncode != 0
    assert f"imap {BOX}: FAILED" in result.stdout
