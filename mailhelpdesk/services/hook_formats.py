"""Webhook payloads in a seed API's shape, for subscriptions a seed adapter made (tiHelpdesk's
`/api/subscribe`; resources.md §6). The event, its queueing, signing and retries are the
native ones (services/webhooks.py); only the body differs, and a format may decline an event
its seed has no trigger for (None: that subscriber gets nothing for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from mailhelpdesk.domain.models import Response, Ticket
from mailhelpdesk.services import tihelpdesk_view
from mailhelpdesk.services.compat_vocab import Vocabulary

TIHELPDESK = "tihelpdesk"
FORMATS = (TIHELPDESK,)


@dataclass(frozen=True)
class HookSource:
    """What an event is about, for formats that build their own body from the rows."""

    ticket: Ticket
    response: Response | None = None
    opening: bool = False  # the response is the ticket's first message (a `created` event)


def payload(
    session: Session, fmt: str, options: str, event: str, source: HookSource | None
) -> dict[str, Any] | None:
    if source is None or fmt != TIHELPDESK:
        return None
    return tihelpdesk_view.hook_payload(
        session,
        event,
        source.ticket,
        source.response,
        opening=source.opening,
        vocab=Vocabulary.from_json(options),
    )
