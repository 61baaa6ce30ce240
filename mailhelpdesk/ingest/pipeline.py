"""The ingest pipeline: one ordered table of named steps, read top to bottom.

Every kept message goes through the same steps whether it came by SMTP, IMAP or `import`:

    parse → dedupe → classify → record-bounce → thread → identify-sender → apply

A step may end the run early by raising `Discard` with the outcome and its reason (a duplicate,
a bounce that belongs to no ticket). Any other exception stops the run as `StepFailed`, which
names the step: the worker sets the message aside with "step <name>: <error>", for
`mailhelpdesk inbound list|retry`. What a message changes on a ticket is recorded as ticket
events by the services `apply` calls, and the notices those events cause are decided there
(services/reactions.py), never here.
"""

from __future__ import annotations

from collections.abc import Callable

from mailhelpdesk.ingest import steps
from mailhelpdesk.ingest.apply import apply
from mailhelpdesk.ingest.context import Discard, IngestContext

Step = Callable[[IngestContext], None]

STEPS: tuple[tuple[str, Step], ...] = (
    ("parse", steps.parse),
    ("dedupe", steps.dedupe),
    ("classify", steps.classify),
    ("record-bounce", steps.record_bounce),
    ("thread", steps.thread),
    ("identify-sender", steps.identify_sender),
    ("apply", apply),
)


class StepFailed(Exception):
    """A step raised: which one, and what it raised (the message is set aside with both)."""

    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"step {step}: {type(error).__name__}: {error}")
        self.step = step
        self.error = error


def run_pipeline(
    ctx: IngestContext, table: tuple[tuple[str, Step], ...] | None = None
) -> str | None:
    """Run the steps (STEPS unless another table is given) in order. Returns the name of the
    step that ended the run with a Discard (its outcome is on the context), or None when every
    step ran; raises StepFailed."""
    for name, step in STEPS if table is None else table:
        try:
            step(ctx)
        except Discard as stop:
            ctx.outcome = stop.outcome
            ctx.reason = stop.reason
            return name
        except Exception as exc:
            raise StepFailed(name, exc) from exc
    return None
