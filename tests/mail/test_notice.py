"""A notice built from its spec alone (mail/notice.py), as the sender has it built in the
understanding processes: good specs become messages, bad ones a reason, and a reloaded config
is never answered with templates read before it."""

from __future__ import annotations

import email
import os
from datetime import UTC, datetime
from pathlib import Path

from mailhelpdesk.mail.notice import NoticeSpec, compose_batch


def _spec(notice: str = "custom") -> str:
    spec = NoticeSpec(
        notice=notice,
        context={"who": "Ada"},
        to=("Ada", "ada@customer.test"),
        message_id="<n1@helpdesk.test>",
        reply_to="support+abc@helpdesk.test",
        in_reply_to=None,
        references=(),
        auto_submitted="auto-replied",
        ticket_number=7,
        thread_topic="Printer",
        date=datetime(2026, 12, 5, 12, 0, tzinfo=UTC),
        from_name="Support",
    ).to_json()
    assert spec is not None
    return spec


def _templates(folder: Path, subject: str) -> None:
    (folder / "notices").mkdir(parents=True, exist_ok=True)
    (folder / "notices" / "custom.subject.txt").write_text(subject)
    (folder / "notices" / "custom.txt").write_text("Hello {{ who }}\n")
    (folder / "notices" / "custom.html").write_text("<p>Hello {{ who }}</p>\n")


def test_a_batch_becomes_messages_and_reasons(tmp_path: Path) -> None:
    _templates(tmp_path, "Got it")
    built = compose_batch(
        [(1, _spec()), (2, "{not json"), (3, _spec("missing"))],
        "support@helpdesk.test",
        str(tmp_path),
        1,
    )
    assert [(item_id, raw is None) for item_id, raw, _ in built] == [
        (1, False),
        (2, True),
        (3, True),
    ]
    raw = built[0][1]
    assert raw is not None
    message = email.message_from_bytes(raw)
    assert message["Subject"] == "[#7] Got it"
    assert message["Message-ID"] == "<n1@helpdesk.test>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert built[0][2] == ""
    assert built[1][2].startswith("cannot compose: ")
    assert "template notices/missing.subject.txt not found" in built[2][2]


def test_a_new_config_generation_reads_the_templates_again(tmp_path: Path) -> None:
    """A template replaced within the same second looks unchanged to Jinja's own check; the
    daemon's reload (a new generation) is what makes the worker read it again."""
    _templates(tmp_path, "Before")
    path = tmp_path / "notices" / "custom.subject.txt"
    stamp = path.stat().st_mtime_ns
    first = compose_batch([(1, _spec())], "support@helpdesk.test", str(tmp_path), 101)
    _templates(tmp_path, "After")
    os.utime(path, ns=(stamp, stamp))  # same mtime: Jinja's reload check sees no change
    same = compose_batch([(1, _spec())], "support@helpdesk.test", str(tmp_path), 101)
    reloaded = compose_batch([(1, _spec())], "support@helpdesk.test", str(tmp_path), 102)
    subjects = [
        email.message_from_bytes(raw or b"")["Subject"] for _, raw, _ in first + same + reloaded
    ]
    assert subjects == ["[#7] Before", "[#7] Before", "[#7] After"]
