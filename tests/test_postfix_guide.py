"""docs/operations.md "Hook up mail", as written, on a private Postfix 3.7 (Debian's package).

The guide's blocks marked `# postfix main.cf`, `# postfix transport`, `# postfix
helpdesk_recipients`, `# postfix header_checks`, `# postfix commands`, `# postfix flush` and
`# mailhelpdesk [smtp_relay]` are read from the page and used with only the ports, the
`/etc/postfix` folder and the domain substituted, so a line the guide loses or gets wrong fails
here. Postfix's commands run with MAIL_CONFIG set to the instance's folder (`-c DIR` for each).

The instance is `postfix -c DIR` with its own main.cf/master.cf, queue and data directories, and
smtpd on one free port (on 127.0.0.1 and on the host's end of the veth below), never port 25.
The package's system instance is never used (in a container Debian's policy-rc.d keeps the
install from starting it; elsewhere scripts/test stops the one its install started). The
instance's setup lines (folders, `inet_interfaces`, `mynetworks`, log file) stand for what
Debian's installer writes and are not the guide's.

"From outside" is a client in a network namespace the test makes (`ip netns add`, a veth pair on
a /30 of 198.18.0.0/15, a benchmarking range no real network uses): to Postfix it is a remote
host at 198.18.x.2, outside Debian's `mynetworks` (127.0.0.0/8). Where a namespace cannot be
made (no root, no iproute2) the client binds to 127.0.0.2 and `mynetworks` is 127.0.0.1/32:
Postfix decides relaying (`permit_mynetworks`, then `reject_unauth_destination`) and recipient
checks by the client's IP address alone, so that is the same test with fewer moving parts. The
helpdesk itself, on 127.0.0.1, is the local client that relays its notices.
"The internet" is an aiosmtpd sink that a transport line for the customers' domain points at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller

from mailhelpdesk.config import SmtpListenerConfig
from tests.helpers import ROOT, Daemon, crlf, free_port, make_mail, require

GUIDE = ROOT / "docs" / "operations.md"
DOMAIN = "helpdesk.test"  # the guide's example.com
T = TypeVar("T")


def guide_blocks() -> dict[str, str]:
    """Fenced blocks of the guide whose first line is a marker comment (`# postfix …`,
    `# mailhelpdesk …`): marker -> the lines after it, dedented (blocks sit in a list)."""
    found: dict[str, str] = {}
    pattern = re.compile(r"^( *)```[a-z]*\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
    for match in pattern.finditer(GUIDE.read_text()):
        body = textwrap.dedent(match.group(2))
        first, _, rest = body.partition("\n")
        if first.startswith(("# postfix ", "# mailhelpdesk ")):
            found[first[2:].strip()] = rest
    return found


def wait_for(check: Callable[[], T | None], *, what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


BASE_MAIN_CF = """\
# what Debian's installer writes, for a private instance: own folders, own port, no port 25
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
inet_interfaces = {interfaces}
inet_protocols = ipv4
mydestination =
mynetworks = {mynetworks}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
"""

MASTER_CF = """\
{smtpd}
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
proxywrite unix - - n -     1 proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


CLIENT = """
import json, smtplib, sys
host, port, source, mail_from, rcpt, send = sys.argv[1:7]
raw = sys.stdin.buffer.read()
bind = (source, 0) if source else None
with smtplib.SMTP(host, int(port), timeout=30, source_address=bind) as smtp:
    smtp.ehlo("client.customer.test")
    smtp.mail(mail_from)
    code, text = smtp.rcpt(rcpt)
    if send == "1" and code == 250:
        code, text = smtp.data(raw)
print(json.dumps([code, text.decode()]))
"""


class Outside:
    """An SMTP client that Postfix sees as a remote host: in a network namespace of its own
    (`server` is the host's end of the veth, where smtpd listens too), or bound to 127.0.0.2."""

    def __init__(self) -> None:
        self.namespace = ""
        self.server, self.address, self.mynetworks = "127.0.0.1", "127.0.0.2", "127.0.0.1/32"
        tag = os.getpid() % 100000
        namespace, host_if = f"mhd-postfix-{tag}", f"mhdpf{tag}"
        # the veth pair's two ends, a /30 of 198.18.0.0/15 per test process
        host_end, client_end = f"198.18.{tag % 250 + 1}.1", f"198.18.{tag % 250 + 1}.2"
        steps = [
            ["ip", "netns", "add", namespace],
            [
                "ip",
                "link",
                "add",
                host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace,
            ],
            ["ip", "addr", "add", f"{host_end}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{client_end}/30", "dev", "eth0"],
            ["ip", "-n", namespace, "link", "set", "eth0", "up"],
            ["ip", "-n", namespace, "link", "set", "lo", "up"],
        ]
        if shutil.which("ip") is None or os.geteuid() != 0:
            return
        for step in steps:
            made = subprocess.run(step, capture_output=True, check=False)
            if step[:3] == ["ip", "netns", "add"] and made.returncode == 0:
                self.namespace = namespace  # from here on, close() removes it
            if made.returncode != 0:
                self.close()
                return
        self.server, self.address, self.mynetworks = host_end, client_end, "127.0.0.0/8"

    def close(self) -> None:
        """Removes the namespace (and with it both ends of the veth pair)."""
        if self.namespace:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
            self.namespace = ""

    def smtp(self, port: int, rcpt: str, *, mail_from: str, raw: bytes = b"") -> tuple[int, str]:
        """One session from outside: RCPT's reply, or DATA's when `raw` is given and RCPT took."""
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        source = "" if self.namespace else self.address
        args = [self.server, str(port), source, mail_from, rcpt, "1" if raw else "0"]
        result = subprocess.run(
            [*prefix, sys.executable, "-c", CLIENT, *args],
            input=crlf(raw),
            capture_output=True,
            timeout=60,
            check=False,  # a failure is raised below, with the client's stderr
        )
        if result.returncode != 0:
            raise AssertionError(f"SMTP client from outside failed: {result.stderr.decode()}")
        code, text = json.loads(result.stdout)
        return int(code), str(text)


class Postfix:
    """A private Postfix: `postfix -c DIR`, its own queue, smtpd on a free loopback port.

    Its folder is made under /tmp with mode 0755 (Postfix's unprivileged daemons must reach
    their queue; pytest's tmp folders are 0700)."""

    def __init__(self, outside: Outside) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailhelpdesk-postfix-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.conf = self.root / "conf"
        self.port = free_port()
        for sub in ("conf", "queue", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", user="postfix")
        interfaces = ["127.0.0.1", *([outside.server] if outside.server != "127.0.0.1" else [])]
        (self.conf / "main.cf").write_text(
            BASE_MAIN_CF.format(
                root=self.root,
                hostname=socket.gethostname(),
                interfaces=", ".join(interfaces),
                mynetworks=outside.mynetworks,
            )
        )
        smtpd = "\n".join(f"{ip}:{self.port} inet n - n - - smtpd" for ip in interfaces)
        (self.conf / "master.cf").write_text(MASTER_CF.format(smtpd=smtpd))
        self.env = {**os.environ, "MAIL_CONFIG": str(self.conf)}
        self.started = False

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """One shell line as the guide writes it; MAIL_CONFIG points every Postfix command
        (postfix, postmap, postqueue) at this instance, as `-c DIR` would."""
        result = subprocess.run(
            command,
            shell=True,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # a failure is raised below, with Postfix's stderr and log
        )
        if result.returncode != 0:
            raise AssertionError(f"{command!r} failed: {result.stderr}\n{self.log()[-3000:]}")
        return result

    def localize(self, text: str) -> str:
        return text.replace("/etc/postfix", str(self.conf)).replace("example.com", DOMAIN)

    def start(self) -> None:
        self.run(f"postfix -c {self.conf} start")
        self.started = True
        wait_for(self._listening, what="postfix smtpd to listen", timeout=30)

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stops only this instance (`postfix stop` with its own config; its master's pid is
        read from its own queue), waits until that master is gone, then removes the folder."""
        try:
            if self.started:
                pid = (self.root / "queue" / "pid" / "master.pid").read_text().strip()
                subprocess.run(
                    ["postfix", "-c", str(self.conf), "stop"],
                    capture_output=True,
                    timeout=60,
                    check=False,  # stopped or not, the wait below says
                )
                wait_for(
                    lambda: not Path(f"/proc/{pid}").exists(), what="postfix to stop", timeout=30
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def queue(self) -> str:
        return self.run("postqueue -p").stdout

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


class Sink:
    """The customers' side of the internet: records every message Postfix delivers to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.original_content or b""))
        return "250 taken"

    def to(self, address: str) -> list[bytes]:
        with self.lock:
            return [raw for rcpts, raw in self.messages if address in rcpts]


class Setup:
    def __init__(
        self, postfix: Postfix, daemon: Daemon, sink: Sink, outside: Outside, before: str
    ) -> None:
        self.postfix, self.daemon, self.sink, self.outside = postfix, daemon, sink, outside
        self.refused_before_guide = before  # RCPT reply from outside with Postfix's defaults

    def send_from_outside(self, raw: bytes, rcpt: str, mail_from: str) -> None:
        code, text = self.outside.smtp(self.postfix.port, rcpt, mail_from=mail_from, raw=raw)
        assert code == 250, f"{code} {text}"

    def rcpt_reply(self, rcpt: str) -> tuple[int, str]:
        return self.outside.smtp(self.postfix.port, rcpt, mail_from="priya@customer.test")

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.daemon.tmp / "helpdesk.db") as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require(shutil.which("postfix") is not None and shutil.which("postmap") is not None, "postfix")
    blocks = guide_blocks()
    sink = Sink()
    sink.controller.start()
    outside = Outside()
    postfix = Postfix(outside)
    daemon: Daemon | None = None
    try:
        postfix.start()
        # what a new operator finds: Postfix's defaults refuse the support domain from outside
        code, text = outside.smtp(
            postfix.port, f"support@{DOMAIN}", mail_from="priya@customer.test"
        )
        before_text = f"{code} {text}"

        daemon = Daemon(
            tmp_path_factory.mktemp("desk"),
            relay_config=blocks["mailhelpdesk [smtp_relay]"].replace(
                "port = 25", f"port = {postfix.port}"
            ),
        )
        listener = f"[127.0.0.1]:{daemon.smtp_port}"
        with (postfix.conf / "main.cf").open("a") as main_cf:
            main_cf.write("\n# from docs/operations.md\n")
            main_cf.write(postfix.localize(blocks["postfix main.cf"]))
        for name in ("transport", "helpdesk_recipients", "header_checks"):
            text = postfix.localize(blocks[f"postfix {name}"])
            (postfix.conf / name).write_text(text.replace("[127.0.0.1]:2525", listener))
        with (postfix.conf / "transport").open("a") as transport:
            # not the guide's: "the internet" for the customers' domain is the sink
            transport.write(f"customer.test   smtp:[127.0.0.1]:{sink.controller.port}\n")
        for line in postfix.localize(blocks["postfix commands"]).splitlines():
            if line.strip():
                postfix.run(line)
        daemon.start()
        yield Setup(postfix, daemon, sink, outside, before_text)
    finally:
        if daemon is not None:
            daemon.stop()
        postfix.stop()
        outside.close()
        sink.controller.stop()


def test_without_the_guide_mail_from_outside_is_refused(setup: Setup) -> None:
    """The defect the guide fixes: no relay_domains, so the support domain is not Postfix's."""
    assert setup.refused_before_guide.startswith("454"), setup.refused_before_guide
    assert "Relay access denied" in setup.refused_before_guide


def test_postfix_takes_no_more_than_the_listener(setup: Setup) -> None:
    """The guide's message_size_limit is in force (not Postfix's 10 MB) and stays under the
    listener's default max_message_bytes, with room for Postfix's Received line."""
    limit = int(setup.postfix.run("postconf -h message_size_limit").stdout)
    (line,) = [
        line
        for line in guide_blocks()["postfix main.cf"].splitlines()
        if line.startswith("message_size_limit")
    ]
    assert limit == int(line.split("=")[1])
    assert 10_240_000 < limit < SmtpListenerConfig().max_message_bytes - 1000


def test_mail_from_outside_lands_on_a_ticket_and_the_notice_leaves_through_postfix(
    setup: Setup,
) -> None:
    raw = make_mail(subject="Printer on fire (via Postfix)", to=f"support@{DOMAIN}")
    setup.send_from_outside(raw, f"support@{DOMAIN}", "priya@customer.test")
    tickets = wait_for(
        lambda: setup.rows(
            "SELECT t.number, t.originator_email, q.name FROM tickets t "
            "JOIN queues q ON q.id = t.queue_id WHERE t.subject = ?",
            "Printer on fire (via Postfix)",
        ),
        what="the ticket",
    )
    assert [(email, queue) for _n, email, queue in tickets] == [("priya@customer.test", "Inbox")]
    (received,) = setup.rows(
        "SELECT raw FROM inbound_messages WHERE ticket_id = "
        "(SELECT id FROM tickets WHERE subject = ?)",
        "Printer on fire (via Postfix)",
    )
    # it came through Postfix (its Received line, naming the outside client), not around it
    assert f"[{setup.outside.address}]" in received[0].decode(errors="replace")

    # (d) the acknowledgement went out through the same Postfix to the customer's domain
    (ack,) = wait_for(lambda: setup.sink.to("priya@customer.test"), what="the acknowledgement")
    text = ack.decode(errors="replace")
    assert "Printer on fire (via Postfix)" in text
    # the daemon knows only Postfix's port: Postfix handed the notice to the sink
    sent = rf"to=<priya@customer\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{setup.sink.controller.port},.*status=sent"
    assert re.search(sent, setup.postfix.log()), setup.postfix.log()[-3000:]


def test_a_queue_address_reaches_its_queue(setup: Setup) -> None:
    raw = make_mail(subject="Invoice twice (via Postfix)", to=f"billing@{DOMAIN}")
    setup.send_from_outside(raw, f"billing@{DOMAIN}", "priya@customer.test")
    rows = wait_for(
        lambda: setup.rows(
            "SELECT q.name FROM tickets t JOIN queues q ON q.id = t.queue_id WHERE t.subject = ?",
            "Invoice twice (via Postfix)",
        ),
        what="the billing ticket",
    )
    assert rows == [("Billing",)]


def test_an_unknown_address_is_refused_during_the_session(setup: Setup) -> None:
    code, reply = setup.rcpt_reply(f"nobody@{DOMAIN}")
    assert code == 550, reply
    assert "relay recipient table" in reply
    # the +tag form of a known address is not refused
    code, reply = setup.rcpt_reply(f"support+anything@{DOMAIN}")
    assert code == 250, reply


def test_a_tagged_address_reaches_the_listener(setup: Setup) -> None:
    """recipient_delimiter: the transport map finds support+tag@ under support@."""
    rcpt = f"support+tagged@{DOMAIN}"
    setup.send_from_outside(
        make_mail(subject="Tagged (via Postfix)", to=rcpt), rcpt, "priya@customer.test"
    )
    wait_for(
        lambda: setup.rows("SELECT id FROM inbound_messages WHERE envelope_to LIKE ?", f"%{rcpt}%"),
        what="the tagged message at the listener",
    )


def test_forged_authentication_results_are_stripped(setup: Setup) -> None:
    subject = "Forged verdict (via Postfix)"
    raw = make_mail(
        subject=subject,
        sender="Alice Agent <alice@helpdesk.test>",
        to=f"support@{DOMAIN}",
        headers={"Authentication-Results": f"mx.{DOMAIN}; dkim=pass; dmarc=pass"},
    )
    setup.send_from_outside(raw, f"support@{DOMAIN}", "alice@helpdesk.test")
    (received,) = wait_for(
        lambda: setup.rows(
            "SELECT m.raw FROM inbound_messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE t.subject = ?",
            subject,
        ),
        what="the forged message's ticket",
    )
    headers = received[0].split(b"\r\n\r\n", 1)[0]
    assert b"Subject: Forged verdict" in headers
    assert b"Authentication-Results" not in headers


def test_mail_queued_while_the_daemon_is_down_arrives_once(setup: Setup) -> None:
    subject = "Sent while the helpdesk was down"
    daemon = setup.daemon
    daemon.stop()
    try:
        raw = make_mail(subject=subject, to=f"support@{DOMAIN}")
        setup.send_from_outside(raw, f"support@{DOMAIN}", "priya@customer.test")
        wait_for(
            lambda: "Connection refused" in setup.postfix.queue(),
            what="Postfix to defer the message",
        )
    finally:
        daemon.start()
    flush = setup.postfix.localize(guide_blocks()["postfix flush"])
    for line in flush.splitlines():
        if line.strip():
            setup.postfix.run(line)
    # Postfix would try again only after minimal_backoff_time (300 s): this is the flush
    wait_for(lambda: "Mail queue is empty" in setup.postfix.queue(), what="the queue to drain")
    daemon.wait_idle()
    assert setup.rows("SELECT count(*) FROM tickets WHERE subject = ?", subject) == [(1,)]
    # kept once: Postfix did not hand it over twice (a second copy would be a second spool row)
    assert setup.rows(
        "SELECT count(*) FROM inbound_messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE t.subject = ?",
        subject,
    ) == [(1,)]
