"""A private Dovecot for tests and benchmarks: its own config, ports, users and certificate.

`Dovecot()` writes a config under a fresh temporary folder (mode 0755: the auth process runs as
the `dovecot` user and must read the passwd-files), makes a throwaway self-signed certificate for
127.0.0.1 with `openssl`, and runs `dovecot -F` in the foreground on two free loopback ports:
plain IMAP (STARTTLS offered) and IMAPS. Users are added as passwd-files (one per user, read on
first login), so one server serves many tests, each with its own user and maildir. Mail users run
as `nobody` (Dovecot refuses uid 0).

The helpers talk to the server with the standard library's `imaplib`, a client independent of
the code under test. Stop and restart go to the one process this object started, by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

MAIL_UID = 65534  # nobody: Dovecot refuses uid 0 for mail users
DH_FILE = Path("/usr/share/dovecot/dh.pem")


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ImapUser:
    name: str
    password: str
    home: Path


CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
auth_verbose = yes
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
{dh}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
default_login_user = dovenull
default_internal_user = dovecot
mail_max_userip_connections = 200
mail_fsync = never
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users/%u.passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/users/%u.passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Processed {{
    auto = create
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    """One private Dovecot instance. Use as a context manager, or call start() and stop()."""

    host = "127.0.0.1"

    def __init__(self, root: Path | None = None) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
        self.binary = binary
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mailhelpdesk-dovecot-"))
        self._owns_root = root is None
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.port = _free_port()
        self.ssl_port = _free_port()
        self.cert_file = self.root / "cert.pem"
        self.passwd = self.root / "users"
        self.config = self.root / "dovecot.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._users: dict[str, ImapUser] = {}
        self._make_certificate()
        self.passwd.mkdir()
        os.chmod(self.passwd, 0o755)
        (self.root / "mail").mkdir(exist_ok=True)
        os.chmod(self.root / "mail", 0o755)
        self.config.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                ssl_port=self.ssl_port,
                dh=f"ssl_dh = <{DH_FILE}" if DH_FILE.exists() else "",
            )
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _make_certificate(self) -> None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(self.root / "key.pem"),
                "-out",
                str(self.cert_file),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ],
            check=True,
            capture_output=True,
        )
        os.chmod(self.root / "key.pem", 0o600)

    def start(self, timeout: float = 20) -> None:
        if self.running:
            return
        with (self.root / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        atexit.register(self.stop)  # never leave a server behind, even when the caller crashes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(200).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the master started here and to its children. Dovecot's own shutdown lets a
        session in IDLE linger for about 10 s; a test that stops the server wants the clients'
        connections gone now, as after a crash or a reboot."""
        if self.proc is None or self.proc.poll() is not None:
            return
        children = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # the listeners are gone when a connection is refused
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                return

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        atexit.unregister(self.stop)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for name in ("stdout.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")[-chars:]
        return text

    # -- users -----------------------------------------------------------------------------

    def add_user(self, name: str, password: str = "secret") -> ImapUser:
        """A user with an empty maildir (INBOX and Processed), usable at once."""
        home = self.root / "mail" / name
        home.mkdir(parents=True, exist_ok=False)
        os.chown(home, MAIL_UID, MAIL_UID)
        # one passwd-file per user (`%u` in the config): Dovecot looks at a known file's mtime at
        # most once a second, but opens a new file on its first lookup
        entry = self.passwd / f"{name}.passwd"
        entry.write_text(
            f"{name}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_UID}::{home}::userdb_mail=maildir:~/Maildir\n"
        )
        os.chmod(entry, 0o644)
        user = ImapUser(name=name, password=password, home=home)
        self._users[name] = user
        return user

    # -- client helpers (stdlib imaplib: independent of the code under test) -------------------

    @contextmanager
    def client(self, user: ImapUser, *, select: str | None = "INBOX") -> Iterator[imaplib.IMAP4]:
        conn = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            conn.login(user.name, user.password)
            if select:
                typ, data = conn.select(_quote(select))
                if typ != "OK":
                    raise RuntimeError(f"select {select}: {data}")
            yield conn
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def append(
        self, user: ImapUser, messages: Iterable[bytes], *, folder: str = "INBOX", flags: str = ""
    ) -> int:
        """APPEND each message (line endings made CRLF); returns how many were appended."""
        count = 0
        with self.client(user, select=None) as conn:
            for raw in messages:
                typ, data = conn.append(
                    _quote(folder), f"({flags})" if flags else None, None, crlf(raw)
                )
                if typ != "OK":
                    raise RuntimeError(f"append to {folder}: {data}")
                count += 1
        return count

    def flags(self, user: ImapUser, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in the folder."""
        with self.client(user, select=folder) as conn:
            _typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            found: dict[int, set[str]] = {}
            for item in data:
                if not item:
                    continue
                line = item.decode() if isinstance(item, bytes) else item[0].decode()
                match = re.search(r"UID (\d+)", line)
                flags = re.search(r"FLAGS \(([^)]*)\)", line)
                if match:
                    found[int(match.group(1))] = set(flags.group(1).split()) if flags else set()
            return found

    def count(self, user: ImapUser, folder: str = "INBOX") -> int:
        with self.client(user, select=None) as conn:
            _typ, data = conn.status(_quote(folder), "(MESSAGES)")
            match = re.search(rb"MESSAGES (\d+)", data[0] or b"")
            return int(match.group(1)) if match else 0

    def uidvalidity(self, user: ImapUser, folder: str = "INBOX") -> int:
        with self.client(user, select=None) as conn:
            _typ, data = conn.status(_quote(folder), "(UIDVALIDITY)")
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            if not match:
                raise RuntimeError(f"no UIDVALIDITY for {folder}: {data}")
            return int(match.group(1))

    def fetch_all(self, user: ImapUser, folder: str = "INBOX") -> list[bytes]:
        """Every message of the folder, whole, without setting \\Seen."""
        with self.client(user, select=folder) as conn:
            _typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [bytes(item[1]) for item in data if isinstance(item, tuple)]

    def move_all(self, user: ImapUser, source: str, target: str) -> None:
        """Move every message of `source` to `target` in one UID MOVE: they all arrive at once."""
        with self.client(user, select=source) as conn:
            typ, data = conn.uid("MOVE", "1:*", _quote(target))
            if typ != "OK":
                raise RuntimeError(f"move {source} -> {target}: {data}")

    def recreate_folder(self, user: ImapUser, folder: str) -> None:
        """DELETE and CREATE the folder: it comes back empty with a new UIDVALIDITY."""
        with self.client(user, select=None) as conn:
            conn.delete(_quote(folder))
            typ, data = conn.create(_quote(folder))
            if typ != "OK":
                raise RuntimeError(f"create {folder}: {data}")

    def create_folder(self, user: ImapUser, folder: str) -> None:
        with self.client(user, select=None) as conn:
            typ, data = conn.create(_quote(folder))
            if typ != "OK":
                raise RuntimeError(f"create {folder}: {data}")

    def message_file(self, user: ImapUser, uid: int, folder: str = "INBOX") -> Path:
        """The maildir file holding one UID (from dovecot-uidlist; flags rename it, so look it up
        again after the server may have changed them)."""
        base = user.home / "Maildir" if folder == "INBOX" else user.home / "Maildir" / f".{folder}"
        for line in (base / "dovecot-uidlist").read_text().splitlines()[1:]:
            number, _, rest = line.partition(" ")
            if number == str(uid):
                name = rest.split(":", 1)[1]  # "[extension fields ]:basename"
                for sub in ("new", "cur"):
                    for path in (base / sub).glob(f"{name}*"):
                        return path
        raise FileNotFoundError(f"no maildir file for uid {uid} in {folder}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (the master's service processes), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
