"""Test helpers: a real daemon in its own process, free ports, SMTP sends, reading the store."""

from __future__ import annotations

import json
import os
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def require(present: bool, what: str) -> None:
    """A real part the test needs (a server, a client, the corpus) is missing: that is a failure
    naming the part, never a skip, so a run that did not exercise it cannot pass (scripts/test
    installs every Debian package the tests drive)."""
    if present:
        return
    import pytest

    pytest.fail(f"{what} is required (scripts/test installs the Debian packages)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def crlf(raw: bytes) -> bytes:
    """Line endings as SMTP wants them (smtplib sends bytes unchanged)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it: a child belongs to the thread that started it (the
    daemon's understanding pool is started from a thread), so every thread's children count."""
    found = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            found += process_tree(kid)
    return found


def tree_memory_kb(pid: int, field: str = "Pss") -> int:
    """A memory figure summed over `pid` and the processes under it: `Pss` (the default: each
    shared page split between its sharers, so the sum is what the tree costs the machine, from
    /proc/PID/smaps_rollup), or a /proc/PID/status field (`VmRSS` now, `VmHWM` the peak: pages
    shared by the daemon, its fork server and its workers are counted in each, an upper bound)."""
    name = "smaps_rollup" if field == "Pss" else "status"
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/{name}").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user and system) used so far by `pid` and the processes under it, with the
    children they have already reaped, and by `pid` alone: the difference of two readings is
    what the tree (and its first process) spent between them."""
    ticks = own = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile: its parent's reaped-children figures hold it
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        if member == pid:
            own = int(fields[11]) + int(fields[12])
    per_s = os.sysconf("SC_CLK_TCK")
    return ticks / per_s, own / per_s


def own_cpu_s() -> float:
    """CPU seconds (user and system) of this process so far, every thread of it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU per item (message, request) spent between `start` and `stop`, in ms: by the process
    tree under `pid` (`tree`), by `pid` alone (`main`), and by this process (`own`: the
    clients that drove it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tree = self.main = self.own = 0.0
        self._at_start = ((0.0, 0.0), 0.0)

    def start(self) -> None:
        self._at_start = tree_cpu_s(self.pid), own_cpu_s()

    def stop(self, items: int) -> None:
        (tree, main), own = tree_cpu_s(self.pid), own_cpu_s()
        (tree_0, main_0), own_0 = self._at_start
        self.tree = (tree - tree_0) / items * 1000
        self.main = (main - main_0) / items * 1000
        self.own = (own - own_0) / items * 1000


def cpu_ceiling(ms_each: float) -> float:
    """How many a second work of `ms_each` ms of CPU each allows on this machine, with every
    core busy all the time: what no spreading of that work over processes can beat."""
    return (os.cpu_count() or 1) * 1000 / ms_each


def make_mail(
    *,
    subject: str = "Help please",
    sender: str = "Priya Sharma <priya@customer.test>",
    to: str = "support@helpdesk.test",
    body: str = "My printer is on fire.\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = message_id or f"<{time.time_ns()}.{os.getpid()}@customer.test>"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP_POLICY)


def write_config(
    tmp: Path,
    *,
    smtp_port: int,
    http_port: int,
    extra: str = "",
    relay: str = "",
    http: str = "",
) -> Path:
    path = tmp / "mailhelpdesk.toml"
    path.write_text(
        f"""
[helpdesk]
name = "Test Support"
address = "support@helpdesk.test"
secret = "test-secret-not-for-production"

[database]
url = "sqlite:///{tmp / "helpdesk.db"}"

[http]
host = "127.0.0.1"
port = {http_port}
{http}

[smtp_listener]
host = "127.0.0.1"
port = {smtp_port}
max_message_bytes = 2000000

[smtp_relay]
maildir = "{tmp / "outbound-mail"}"
{relay}

[[queues]]
name = "Billing"
address = "billing@helpdesk.test"

[[agents]]
email = "alice@helpdesk.test"
name = "Alice Agent"

{extra}
"""
    )
    return path


class Daemon:
    """`mailhelpdesk serve` in a child process, on free loopback ports."""

    def __init__(
        self, tmp: Path, *, extra_config: str = "", relay_config: str = "", http_config: str = ""
    ) -> None:
        self.tmp = tmp
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.config = write_config(
            tmp,
            smtp_port=self.smtp_port,
            http_port=self.http_port,
            extra=extra_config,
            relay=relay_config,
            # "{http_port}" in the [http] lines stands for the port chosen here (public_url)
            http=http_config.replace("{http_port}", str(self.http_port)),
        )
        self.db_url = f"sqlite:///{tmp / 'helpdesk.db'}"
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailhelpdesk", "--config", str(self.config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if self.health()["ok"]:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not start:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}/healthz", timeout=2
        ) as resp:
            return dict(json.loads(resp.read()))

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_idle(self, timeout: float = 60, *, sending: bool = False) -> None:
        """Until every kept message is processed; with `sending`, until nothing is queued to be
        sent either (mail or HTTP): after that, nothing more can go out, so a test may assert
        that nothing more did, without sleeping."""
        deadline = time.monotonic() + timeout
        key = "idle" if sending else "inbound_pending"
        while time.monotonic() < deadline:
            value = self.health()["data"][key]
            if (value is True) if sending else (value == 0 and value is not False):
                return
            time.sleep(0.05)
        raise TimeoutError("the daemon did not become idle" if sending else "ingest did not finish")

    def send(
        self,
        raw: bytes,
        *,
        mail_from: str = "priya@customer.test",
        rcpt: Iterable[str] = ("support@helpdesk.test",),
    ) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            smtp.sendmail(mail_from, list(rcpt), crlf(raw))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mailhelpdesk", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            cwd=self.tmp,
            timeout=120,
            check=False,  # a failure is raised below, with the command's stderr
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mailhelpdesk {' '.join(args)} failed: {result.stderr}")
        return result

    def tickets(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("ticket", "list", "--json").stdout))

    def ticket(self, number: int) -> dict[str, Any]:
        return dict(json.loads(self.cli("ticket", "show", str(number), "--json").stdout))


def store_change(clock: Any = None) -> Any:
    """A ChangeContext for tests that change a running daemon's tickets straight in its store
    (channel cli, the helpdesk as actor, mail silent: only the daemon itself sends mail)."""
    from mailhelpdesk.clock import SystemClock
    from mailhelpdesk.domain.events import Actor, Channel
    from mailhelpdesk.services.context import ChangeContext, MailPolicy
    from mailhelpdesk.services.notify import NotifySettings

    notices = NotifySettings(
        helpdesk_name="Test Support",
        helpdesk_address="support@helpdesk.test",
        secret=b"unused: nothing is mailed",
        own_addresses=frozenset({"support@helpdesk.test"}),
    )
    return ChangeContext.of(
        clock=clock or SystemClock(),
        channel=Channel.cli,
        actor=Actor.system(),
        notices=notices,
        mail=MailPolicy.silent,
    )


def fail_reply_text_on(monkeypatch: Any, marker: str, error: str = "boom in reply text") -> None:
    """Make the reply-text step raise `error` for a message whose text holds `marker`: a
    message that fails in the middle of an ingest batch."""
    import mailhelpdesk.ingest.facts as facts

    real = facts.visible_text

    def explode(text: str) -> str:
        if marker in text:
            raise RuntimeError(error)
        return real(text)

    monkeypatch.setattr(facts, "visible_text", explode)
