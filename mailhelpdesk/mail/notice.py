"""A notice as data, and the message built from it: pure, so it can run anywhere.

The service layer decides a notice (services/notify.py) and writes its `NoticeSpec`; the
message is built from the spec alone by `compose_notice` (rendered by mail/render.py, composed
by mail/compose.py), either at once or later by the sender. Because building needs nothing but
the spec, the helpdesk's address and the template folder, the sender can have a whole batch
built in another process (`compose_batch`, run in the understanding pool): rendering and MIME
work are a fifth of the daemon's interpreter time while a burst of notices goes out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailhelpdesk.mail.compose import Outgoing, OutgoingAttachment, as_bytes, compose
from mailhelpdesk.mail.render import environment, render_notice

# (outbox row id, its spec as JSON) in; (row id, message bytes or None, why not) out
Composed = tuple[int, bytes | None, str]


@dataclass(frozen=True)
class NoticeSpec:
    """Everything a notice's message is built from. Written to the outbox as JSON when the
    sender composes it (`compose_in_sender`), composed at once otherwise: either way by
    `compose_notice`, so both paths build the same message and fail the same way."""

    notice: str
    context: Mapping[str, Any]
    to: tuple[str, str]  # (name, address)
    message_id: str
    reply_to: str
    in_reply_to: str | None
    references: tuple[str, ...]
    auto_submitted: str | None
    ticket_number: int
    thread_topic: str
    date: datetime
    from_name: str

    def to_json(self) -> str | None:
        """The spec as JSON, or None when the context is not plain JSON data."""
        try:
            return json.dumps(
                {
                    "v": 1,
                    "notice": self.notice,
                    "context": dict(self.context),
                    "to": list(self.to),
                    "message_id": self.message_id,
                    "reply_to": self.reply_to,
                    "in_reply_to": self.in_reply_to,
                    "references": list(self.references),
                    "auto_submitted": self.auto_submitted,
                    "ticket_number": self.ticket_number,
                    "thread_topic": self.thread_topic,
                    "date": self.date.isoformat(),
                    "from_name": self.from_name,
                },
                ensure_ascii=False,
                allow_nan=False,
            )
        except (TypeError, ValueError):
            return None

    @classmethod
    def from_json(cls, text: str) -> NoticeSpec:
        data = json.loads(text)
        return cls(
            notice=data["notice"],
            context=data["context"],
            to=(data["to"][0], data["to"][1]),
            message_id=data["message_id"],
            reply_to=data["reply_to"],
            in_reply_to=data["in_reply_to"],
            references=tuple(data["references"]),
            auto_submitted=data["auto_submitted"],
            ticket_number=data["ticket_number"],
            thread_topic=data["thread_topic"],
            date=datetime.fromisoformat(data["date"]),
            from_name=data["from_name"],
        )


def compose_notice(
    spec: NoticeSpec,
    *,
    helpdesk_address: str,
    template_dir: str,
    attachments: Sequence[OutgoingAttachment] = (),
) -> bytes:
    """The message bytes of a notice; raises NoticeRenderError (a broken template) or
    InvalidInputError (a value that cannot go into a header)."""
    rendered = render_notice(spec.notice, spec.context, template_dir=template_dir)
    message = compose(
        Outgoing(
            from_name=spec.from_name,
            from_address=helpdesk_address,
            to=[spec.to],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            reply_to=spec.reply_to,
            in_reply_to=spec.in_reply_to,
            references=spec.references,
            auto_submitted=spec.auto_submitted,
            ticket_number=spec.ticket_number,
            thread_topic=spec.thread_topic,
            message_id=spec.message_id,
            date=spec.date,
            attachments=tuple(attachments),
        )
    )
    return as_bytes(message)


def try_compose(spec: str, *, helpdesk_address: str, template_dir: str) -> tuple[bytes | None, str]:
    """(message bytes, "") or (None, why not): a broken template fails its notice, nothing more."""
    try:
        raw = compose_notice(
            NoticeSpec.from_json(spec), helpdesk_address=helpdesk_address, template_dir=template_dir
        )
    except Exception as exc:  # noqa: BLE001 - the reason is kept on the row
        return None, f"cannot compose: {exc}"
    return raw, ""


_generation = [0]  # the daemon's config generation this process's templates were read for


def compose_batch(
    pending: Sequence[tuple[int, str]], helpdesk_address: str, template_dir: str, generation: int
) -> list[Composed]:
    """Every spec of a batch built (a top-level function: the pool pickles it by name). A new
    `generation` (the daemon reloaded its config) drops the templates this process read, as
    the daemon drops its own: a file replaced within the second its old copy was read
    would not look changed to Jinja's reload check."""
    if generation != _generation[0]:
        environment.cache_clear()
        _generation[0] = generation
    return [
        (item_id, *try_compose(spec, helpdesk_address=helpdesk_address, template_dir=template_dir))
        for item_id, spec in pending
    ]
