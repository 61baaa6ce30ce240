"""What every change needs besides its own arguments: the time, who acts through which channel,
the notice settings, and whether this change may cause mail at all.

Mail, the HTTP API, the CLI, the scheduler and `import` each build one `ChangeContext` and pass
it to the services; that is the only thing in which they differ. `mail` is an explicit policy,
never an absent setting: `MailPolicy.silent` (archives brought in with `import`) records every
event and raises every webhook, and writes no mail.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from mailhelpdesk.clock import Clock
from mailhelpdesk.domain.events import Actor, Channel, Origin
from mailhelpdesk.services.notify import NotifySettings


class MailPolicy(enum.StrEnum):
    send = "send"  # the notices the change causes are written to the outbox
    silent = "silent"  # nothing is mailed (imported archives); events and webhooks still are


@dataclass(frozen=True)
class ChangeContext:
    clock: Clock
    origin: Origin
    notices: NotifySettings
    mail: MailPolicy = MailPolicy.send

    @property
    def may_mail(self) -> bool:
        return self.mail == MailPolicy.send

    def by(self, actor: Actor) -> ChangeContext:
        """The same change context with another actor (an agent identified later, say)."""
        return replace(self, origin=Origin(self.origin.channel, actor))

    @classmethod
    def of(
        cls,
        *,
        clock: Clock,
        channel: Channel,
        actor: Actor,
        notices: NotifySettings,
        mail: MailPolicy = MailPolicy.send,
    ) -> ChangeContext:
        return cls(clock, Origin(channel, actor), notices, mail)
