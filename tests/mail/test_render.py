"""Notice templates: sandboxed, strict, autoescaped for HTML only, overridable by a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailhelpdesk.mail.render import NOTICES, NoticeRenderError, available_notices, render_notice

CONTEXT: dict[str, Any] = {
    "helpdesk_name": "Example Support",
    "helpdesk_address": "support@helpdesk.test",
    "ticket_number": 100042,
    "ticket_tag": "[#100042]",
    "ticket_subject": "Printer <on> fire & smoke",
    "ticket_status": "open",
    "queue": "Inbox",
    "customer_name": "Priya Sharma",
    "customer_email": "priya@customer.test",
    "message_text": "It <b>burns</b>.",
    "agent_name": "Alice",
    "error_line": "#status someday",  # command_error
    "error": "unknown status",
    "on_hold_until": "2026-11-25",  # on_hold_woke
    "sla_target": "first response",  # sla_warning, sla_breach
    "due_at": "2026-11-23T11:00:00+00:00",
    "untouched_days": 3,  # reminder
}


@pytest.mark.parametrize("name", NOTICES)
def test_every_notice_renders_with_the_tag_in_the_subject(name: str) -> None:
    notice = render_notice(name, CONTEXT)
    assert "[#100042]" in notice.subject and "\n" not in notice.subject
    assert notice.text.strip() and notice.html.strip()


def test_status_link_appears_only_when_there_is_one() -> None:
    link = "https://help.example.test/t/0123456789abcdef0123456789abcdef"
    with_link = {**CONTEXT, "ticket": {"number": 100042, "secure_url": link}}
    for name in ("acknowledgement", "agent_response"):
        notice = render_notice(name, with_link)
        assert link in notice.text and f'href="{link}"' in notice.html
        assert link not in render_notice(name, CONTEXT).text
        assert "/t/" not in render_notice(name, {**CONTEXT, "ticket": {"secure_url": None}}).text
        # API callers pass their own data: a `ticket` that is not the notice's own is ignored
        assert "/t/" not in render_notice(name, {**CONTEXT, "ticket": "#7731"}).text
        assert "/t/" not in render_notice(name, {**CONTEXT, "ticket": {"number": 1}}).text


def test_shipped_notices_are_all_listed() -> None:
    assert set(NOTICES) <= set(available_notices())


def test_html_is_escaped_and_text_is_not() -> None:
    notice = render_notice("new_ticket", CONTEXT)
    assert "It <b>burns</b>." in notice.text
    assert "It &lt;b&gt;burns&lt;/b&gt;." in notice.html and "<b>burns" not in notice.html
    assert "Printer <on> fire & smoke" in notice.subject


def test_missing_data_is_an_error_not_a_half_rendered_mail() -> None:
    context = dict(CONTEXT)
    del context["ticket_subject"]
    with pytest.raises(NoticeRenderError, match="ticket_subject"):
        render_notice("acknowledgement", context)


def test_unknown_notice_names_the_known_ones() -> None:
    with pytest.raises(NoticeRenderError, match="acknowledgement"):
        render_notice("ack", CONTEXT)
    with pytest.raises(NoticeRenderError):
        render_notice("../notices/acknowledgement", CONTEXT)


def test_override_folder_wins_and_falls_back(tmp_path: Path) -> None:
    (tmp_path / "notices").mkdir()
    (tmp_path / "notices" / "acknowledgement.txt").write_text("Custom for {{ customer_name }}\n")
    notice = render_notice("acknowledgement", CONTEXT, template_dir=str(tmp_path))
    assert notice.text == "Custom for Priya Sharma\n"
    assert "[#100042]" in notice.subject  # the shipped subject is still used


def test_sandbox_refuses_unsafe_attributes(tmp_path: Path) -> None:
    (tmp_path / "notices").mkdir()
    for suffix in (".subject.txt", ".txt", ".html"):
        (tmp_path / "notices" / f"evil{suffix}").write_text(
            "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        )
    with pytest.raises(NoticeRenderError):
        render_notice("evil", CONTEXT, template_dir=str(tmp_path))


def test_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "notices").mkdir()
    (tmp_path / "notices" / "acknowledgement.txt").write_text("line one\n{% if %}\n")
    with pytest.raises(NoticeRenderError, match=r"acknowledgement\.txt line 2"):
        render_notice("acknowledgement", CONTEXT, template_dir=str(tmp_path))


def test_subject_is_one_line_even_if_data_has_newlines() -> None:
    notice = render_notice(
        "acknowledgement", {**CONTEXT, "ticket_subject": "a\r\nBcc: victim@x.test"}
    )
    assert "\r" not in notice.subject and "\n" not in notice.subject
