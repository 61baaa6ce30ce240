"""A real HTTP server on 127.0.0.1 standing in for a webhook receiver or an intervention's remote
system: it records every POST and answers as the test says."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 200  # what the receiver answered


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 refuses connections when two senders POST at once
    daemon_threads = True


class Receiver:
    """Records every POST. `script` holds what to do for the next requests, one item each: an int
    status, or "stall" (answer 200 only after `stall_s`); once it is empty every request gets
    `status` with `reply` as its body. `stop()` and `start()` again take it down and up on the
    same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[Received] = []
        self.script: list[int | str] = []
        self.status = 200
        self.stall_s = 2.0
        self.reply = b'{"ok": true}'
        self.lock = threading.Lock()
        self.server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    action = receiver.script.pop(0) if receiver.script else receiver.status
                    status = 200 if action == "stall" else int(action)
                    receiver.requests.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                    reply = receiver.reply if status == 200 else f"status {status}".encode()
                if action == "stall":
                    time.sleep(receiver.stall_s)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                # the sender may have given up waiting
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def keys(self) -> list[str]:
        with self.lock:
            return [r.headers.get("idempotency-key", "") for r in self.requests]

    def for_uid(self, uid: str) -> list[Received]:
        """The epilogs received for one intervention instance."""
        with self.lock:
            return [r for r in self.requests if json.loads(r.body).get("uid") == uid]
