"""POST /api/v1/tickets/intervention/submit (EXT, api-contract.md §4.9): staff submit an
intervention's decision by API, as they can by mail with `#set` / `#submit`.

Body: `ticket_number`, `from_email` (a known agent, else 422), `data` (field values by field
name; unknown field or a value of the wrong type → 422 on `data.<field>`), optional `content`
(added to the staff note). A ticket without an intervention → 422 on `ticket_number`; one whose
intervention is already submitted or completed → 409 `intervention_not_open`. Ability
`tickets:write`; Idempotency-Key optional, as on the v1 writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from mailhelpdesk.domain.models import MAX_INTEGER
from mailhelpdesk.http.endpoint import Acting, Endpoint, Runtime, with_token
from mailhelpdesk.http.tickiti import _email
from mailhelpdesk.services import interventions

PATH = "/api/v1/tickets/intervention/submit"


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ticket_number: int = Field(ge=1, le=MAX_INTEGER)
    from_email: str
    data: dict[str, Any] = Field(default_factory=dict)
    content: str | None = None


@dataclass(frozen=True)
class SubmitArgs:
    ticket_number: int
    from_email: str
    values: dict[str, Any]
    content: str | None


def check_submit(m: SubmitIn, _params: dict[str, Any]) -> SubmitArgs:
    return SubmitArgs(m.ticket_number, _email(m.from_email, "from_email"), dict(m.data), m.content)


def endpoints(rt: Runtime) -> list[Endpoint]:
    def submit(session: Session, acting: Acting[SubmitArgs]) -> dict[str, Any]:
        a = acting.args
        return interventions.submit_api(
            session,
            change=rt.change(session, acting.token),
            ticket_number=a.ticket_number,
            from_email=a.from_email,
            values=a.values,
            content=a.content,
        )

    return [
        Endpoint(
            PATH,
            "v1_intervention_submit",
            "tickets:write",
            "optional",
            SubmitIn,
            with_token(check_submit),
            submit,
            "Submit a ticket's intervention (field values; queues the epilog call)",
            ticket_of=lambda acting: acting.args.ticket_number,
        ),
    ]
