"""`[smtp_relay]` TLS against a real aiosmtpd server with a self-signed certificate made by
`openssl` here: the certificate is checked against `ca_file`, refused without it (a temporary
failure, so nothing is lost while the operator fixes the config), accepted with
`verify_tls = false`; STARTTLS and implicit TLS both; `security = "none"` speaks plain SMTP."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailhelpdesk.config import ConfigError, SmtpRelayConfig, config_from_dict
from mailhelpdesk.transports.smtp_sender import DeliveryError, SMTPRelay
from tests.helpers import free_port, require

MESSAGE = b"From: support@helpdesk.test\r\nTo: priya@customer.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require(shutil.which("openssl") is not None, "openssl")
    root = tmp_path_factory.mktemp("relay-tls")
    cert, key = root / "cert.pem", root / "key.pem"
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
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Recorder:
    """Keeps what it is given, and whether the session was encrypted when DATA came."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            encrypted = server.transport.get_extra_info("ssl_object") is not None
            self.messages.append((envelope.original_content or envelope.content, encrypted))
        return "250 accepted"


def _server(mode: str, cert: Path, key: Path) -> tuple[Controller, Recorder]:
    recorder = Recorder()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    if mode == "ssl":
        controller = Controller(recorder, hostname="127.0.0.1", port=port, ssl_context=context)
    elif mode == "starttls":
        controller = Controller(
            recorder, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, recorder


@pytest.fixture(params=["ssl", "starttls"])
def tls_server(
    request: pytest.FixtureRequest, certificate: tuple[Path, Path]
) -> Iterator[tuple[str, int, Recorder]]:
    controller, recorder = _server(request.param, *certificate)
    try:
        yield request.param, controller.port, recorder
    finally:
        controller.stop()


def _send(config: SmtpRelayConfig) -> str:
    async def go() -> str:
        relay = SMTPRelay(config)
        try:
            return await relay.deliver("support@helpdesk.test", ["priya@customer.test"], MESSAGE)
        finally:
            await relay.close()

    return asyncio.run(go())


def test_the_certificate_is_checked_against_ca_file(
    tls_server: tuple[str, int, Recorder], certificate: tuple[Path, Path]
) -> None:
    mode, port, recorder = tls_server
    config = SmtpRelayConfig(
        host="127.0.0.1", port=port, security=mode, ca_file=str(certificate[0]), timeout_s=10
    )
    reply = _send(config)
    assert "accepted" in reply
    assert len(recorder.messages) == 1
    raw, encrypted = recorder.messages[0]
    assert encrypted, "the message crossed an unencrypted session"
    assert b"Subject: hi" in raw


def test_an_unknown_certificate_is_a_temporary_failure(
    tls_server: tuple[str, int, Recorder],
) -> None:
    mode, port, recorder = tls_server
    config = SmtpRelayConfig(host="127.0.0.1", port=port, security=mode, timeout_s=10)
    with pytest.raises(DeliveryError) as caught:
        _send(config)
    assert not caught.value.permanent  # retried: the operator fixes ca_file, nothing is lost
    assert "certificate" in str(caught.value).lower()
    assert recorder.messages == []


def test_verify_tls_false_accepts_any_certificate(tls_server: tuple[str, int, Recorder]) -> None:
    mode, port, recorder = tls_server
    config = SmtpRelayConfig(
        host="127.0.0.1", port=port, security=mode, verify_tls=False, timeout_s=10
    )
    _send(config)
    assert [encrypted for _raw, encrypted in recorder.messages] == [True]


def test_security_none_speaks_plain_smtp(certificate: tuple[Path, Path]) -> None:
    controller, recorder = _server("none", *certificate)
    try:
        _send(SmtpRelayConfig(host="127.0.0.1", port=controller.port, security="none"))
    finally:
        controller.stop()
    assert [encrypted for _raw, encrypted in recorder.messages] == [False]


def test_starttls_against_a_server_without_it_is_not_sent_in_clear(
    certificate: tuple[Path, Path],
) -> None:
    """The relay defaults (587, STARTTLS) against a server that offers no STARTTLS: the
    message is held back (retried), never sent unencrypted."""
    controller, recorder = _server("none", *certificate)
    try:
        with pytest.raises(DeliveryError) as caught:
            _send(SmtpRelayConfig(host="127.0.0.1", port=controller.port, security="starttls"))
    finally:
        controller.stop()
    assert not caught.value.permanent
    assert recorder.messages == []


def test_config_refuses_a_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smtp_relay\.ca_file: cannot read"):
        config_from_dict({"smtp_relay": {"host": "mx", "ca_file": str(tmp_path / "nope.pem")}})


@pytest.mark.parametrize(
    ("extra", "key"),
    [({"ca_file": "/etc/hostname"}, "ca_file"), ({"verify_tls": False}, "verify_tls")],
)
def test_config_refuses_tls_options_without_tls(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"smtp_relay\.{key}: has no effect"):
        config_from_dict({"smtp_relay": {"host": "mx", "security": "none", **extra}})


def test_config_reads_the_tls_options(certificate: tuple[Path, Path]) -> None:
    config = config_from_dict(
        {"smtp_relay": {"host": "mx", "ca_file": str(certificate[0]), "verify_tls": False}}
    )
    assert config.smtp_relay.ca_file == str(certificate[0])
    assert config.smtp_relay.verify_tls is False
