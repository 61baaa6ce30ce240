"""The customer's status page, /t/{secure_id} (resources.md §8), against a running daemon: over
real HTTP, and opened in Debian's headless chromium to prove that customer HTML runs nothing."""

from __future__ import annotations

import email
import email.policy
import re
import struct
import zlib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import headless_chromium, screenshot
from tests.helpers import Daemon, make_mail
from tests.http.conftest import Api, unique

HTTP = 'public_url = "http://127.0.0.1:{http_port}/"\n'
HOSTILE_HTML = """<html><body>
<p>My printer is <b>on fire</b>.</p>
<script>window.__pwned = 1;</script>
<img src="x" onerror="window.__pwned = 2" alt="broken">
<a id="jslink" href="javascript:window.__pwned = 3">click me</a>
<svg onload="window.__pwned = 4"></svg>
<p style="background: url(javascript:window.__pwned=5)">styled</p>
<img id="chart" src="cid:chart@customer.test" alt="chart">
<iframe src="http://127.0.0.1:9/"></iframe>
</body></html>"""
NOTE = "INTERNAL-NOTE: the customer is on the watch list"
ANSWER = "We are on it: switch the printer off, please."


def _png() -> bytes:
    """A valid 2x2 red PNG, made here (no file in the repository)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _hostile_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Priya Sharma <priya@customer.test>"
    msg["To"] = "support@helpdesk.test"
    msg["Subject"] = "Printer <b>on fire</b>"
    msg["Message-ID"] = f"<{unique('status')}@customer.test>"
    msg.set_content("My printer is on fire.\n")
    msg.add_alternative(HOSTILE_HTML, subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    html_part.add_related(_png(), maintype="image", subtype="png", cid="<chart@customer.test>")
    msg.add_attachment(b"serial 7731\n", maintype="text", subtype="plain", filename="serial.txt")
    msg.add_attachment(
        b"MZ\x90\x00" + b"\x00" * 60,
        maintype="application",
        subtype="octet-stream",
        filename="setup.exe",
    )
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    daemon = Daemon(
        tmp_path_factory.mktemp("status"),
        extra_config="[api]\nrate_limit_requests = 1000000\n",
        http_config=HTTP + "status_page_requests_per_minute = 100000\n",
    )
    daemon.start()
    try:
        yield Api(daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def case(served: Api) -> dict[str, Any]:
    """One ticket: the customer's hostile HTML mail, an internal note, a public answer."""
    daemon = served.daemon
    daemon.send(_hostile_mail())
    daemon.wait_idle()
    (header,) = [t for t in daemon.tickets() if "Printer" in t["subject"]]
    number = header["number"]
    token = served.token("all")
    for content, internal in ((NOTE, True), (ANSWER, False)):
        answer = served.post(
            "/api/ticket_respond",
            {
                "ticket_number": number,
                "from_email": "alice@helpdesk.test",
                "content": content,
                "is_internal": internal,
            },
            token=token,
            key=unique(),
        )
        assert answer.status_code == 200, answer.text
    daemon.wait_idle(sending=True)
    ticket = daemon.ticket(number)
    return {"number": number, "ticket": ticket, "url": ticket["secure_url"], "token": token}


def _sent_to(daemon: Daemon, address: str) -> list[email.message.Message]:
    folder = daemon.tmp / "outbound-mail" / "new"
    found = []
    for path in sorted(folder.iterdir()):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(msg["To"]):
            found.append(msg)
    return found


def _text_of(msg: email.message.Message) -> str:
    part = msg.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(part.get_content()) if part is not None else ""


def test_the_ticket_object_and_notices_carry_the_link(served: Api, case: dict[str, Any]) -> None:
    ticket = case["ticket"]
    assert re.fullmatch(r"[0-9a-f]{32}", ticket["secure_id"])
    assert case["url"] == f"{served.base}/t/{ticket['secure_id']}"
    notices = _sent_to(served.daemon, "priya@customer.test")
    acknowledgement = [m for m in notices if "received your message" in _text_of(m)]
    answer = [m for m in notices if ANSWER in _text_of(m)]
    assert acknowledgement and answer
    for msg in (acknowledgement[0], answer[0]):
        assert case["url"] in _text_of(msg)
    native = httpx.get(
        f"{served.base}/api/v1/tickets/{case['number']}",
        headers={"Authorization": f"Bearer {case['token']}"},
        timeout=30,
    )
    assert native.json()["data"]["secure_url"] == case["url"]


def test_the_page_shows_the_public_conversation_only(served: Api, case: dict[str, Any]) -> None:
    page = httpx.get(case["url"], timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "script-src" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert ANSWER in html and "on fire" in html
    assert NOTE not in html and "watch list" not in html
    assert "priya@customer.test" not in html and "alice@helpdesk.test" not in html
    assert "<script" not in html.lower() and "onerror" not in html.lower()
    assert "javascript:" not in html.lower() and "<iframe" not in html.lower()
    assert "Printer &lt;b&gt;on fire&lt;/b&gt;" in html  # the subject is text, not markup
    assert "setup.exe (not available here)" in html


def test_files_of_public_messages_download_and_programs_do_not(
    served: Api, case: dict[str, Any]
) -> None:
    page = httpx.get(case["url"], timeout=30).text
    (serial,) = re.findall(r'href="([0-9a-f]{32}/files/\d+)" download>serial\.txt<', page)
    got = httpx.get(f"{served.base}/t/{serial}", timeout=30)
    assert got.status_code == 200 and got.content == b"serial 7731\n"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in got.headers["content-security-policy"]
    (chart,) = re.findall(r'src="([0-9a-f]{32}/files/\d+)"', page)
    picture = httpx.get(f"{served.base}/t/{chart}", timeout=30)
    assert picture.status_code == 200 and picture.content == _png()
    assert picture.headers["content-type"] == "image/png"
    ids = [int(i) for i in re.findall(r"/files/(\d+)", page)]
    exe = served.rows(
        "SELECT a.id FROM attachments a JOIN responses r ON r.id = a.response_id "
        "WHERE a.name = 'setup.exe' AND r.ticket_id = ?",
        int(case["ticket"]["id"]),
    )[0][0]
    assert exe not in ids
    secure_id = case["ticket"]["secure_id"]
    withheld = httpx.get(f"{served.base}/t/{secure_id}/files/{exe}", timeout=30)
    assert withheld.status_code == 404


def test_every_dead_link_is_the_same_404(served: Api, case: dict[str, Any]) -> None:
    daemon = served.daemon
    daemon.send(make_mail(subject="to be trashed", sender="x@customer.test"))
    daemon.wait_idle()
    (trashed,) = [t for t in daemon.tickets() if t["subject"] == "to be trashed"]
    trashed_url = daemon.ticket(trashed["number"])["secure_url"]
    assert httpx.get(trashed_url, timeout=30).status_code == 200
    daemon.cli("ticket", "delete", str(trashed["number"]))
    secure_id = case["ticket"]["secure_id"]
    dead = [
        trashed_url,
        f"{served.base}/t/{'0' * 32}",  # well-formed, nobody's
        f"{served.base}/t/{secure_id.upper()}",  # not the id
        f"{served.base}/t/{secure_id[:-1]}",
        f"{served.base}/t/%27%20OR%201%3D1--",
        f"{served.base}/t/{secure_id}x/files/1",
        f"{served.base}/t/{secure_id}/files/99999999",
        f"{served.base}/t/{secure_id}/files/-1",
    ]
    answers = [httpx.get(url, timeout=30) for url in dead]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1


def test_revoking_the_link_kills_the_old_one(served: Api, case: dict[str, Any]) -> None:
    daemon = served.daemon
    daemon.send(make_mail(subject="revoke me", sender="y@customer.test"))
    daemon.wait_idle()
    (header,) = [t for t in daemon.tickets() if t["subject"] == "revoke me"]
    old = daemon.cli("ticket", "link", str(header["number"])).stdout.strip()
    assert httpx.get(old, timeout=30).status_code == 200
    new = daemon.cli("ticket", "link", str(header["number"]), "--revoke").stdout.split()[-1]
    assert new != old and new.startswith(f"{served.base}/t/")
    assert httpx.get(old, timeout=30).status_code == 404
    assert httpx.get(new, timeout=30).status_code == 200
    history = daemon.cli("ticket", "history", str(header["number"]), "--json").stdout
    assert "link_revoked" in history


def test_the_page_is_rate_limited_per_client(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, http_config=HTTP + "status_page_requests_per_minute = 3\n")
    daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.http_port}/t/{'a' * 32}"
        codes = [httpx.get(url, timeout=30).status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        limited = httpx.get(url, timeout=30)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    finally:
        daemon.stop()


def test_customer_html_runs_nothing_in_a_real_browser(
    served: Api, case: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with headless_chromium(tmp_path / "profile") as driver:
        driver.get(case["url"])
        assert driver.title.startswith(f"[#{case['number']}]")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert ANSWER in body and "on fire" in body and NOTE not in body
        assert driver.execute_script("return document.scripts.length") == 0
        chart = driver.find_element(By.CSS_SELECTOR, "img[alt=chart]")
        assert driver.execute_script("return arguments[0].naturalWidth", chart) == 2
        for link in driver.find_elements(By.ID, "jslink"):
            link.click()  # a javascript: href that survived would run here
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        status = driver.find_element(By.ID, "status").text
        assert status == "Open"
        shot = screenshot(driver, "status-page")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 1000
