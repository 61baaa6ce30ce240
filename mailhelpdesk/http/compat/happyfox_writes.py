"""The HappyFox write actions (the document's topics 4-5 and 7-16), each a thin translation onto
the services the native API calls: api_requests (create, respond), ticket_changes (status,
priority, assignee, tags, due date, custom fields, category), time_entries, watchers,
forwarding and housekeeping. Every handler runs in the request's one transaction, so a
request's changes happen all or not at all.

Ids are HappyFox's: agents (`staff`, `assignee`) and contacts (`user`) by their row id,
categories by queue id, statuses and priorities by the configured tables, custom fields by
position (happyfox_vocab.py).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlmodel import Session

from mailhelpdesk.domain.events import Actor
from mailhelpdesk.domain.models import MAX_INTEGER, Agent, Ticket
from mailhelpdesk.errors import InvalidInputError, NotFoundError
from mailhelpdesk.http import tickiti
from mailhelpdesk.http.compat.happyfox_route import Call
from mailhelpdesk.http.compat.happyfox_vocab import Vocabulary, VocabularyError
from mailhelpdesk.http.endpoint import Runtime, pydantic_errors
from mailhelpdesk.http.errors import ApiError, from_exception
from mailhelpdesk.mail import attachment_policy as policy
from mailhelpdesk.services import (
    api_requests,
    contacts,
    directory,
    forwarding,
    housekeeping,
    inline_images,
    ticket_changes,
    time_entries,
    visibility,
    watchers,
)
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.api_requests import Body, FieldErrors
from mailhelpdesk.services.context import ChangeContext, MailPolicy
from mailhelpdesk.services.ticket_changes import TicketUpdate

MAX_BULK = 100
INLINE = "/inline/"
# an inline picture's url as POST ticket-inline-attachment answered it (group 1: its SHA-256)
INLINE_URL = re.compile(r"(?:https?://[^\s\"'<>]*)?/compat/happyfox/inline/([0-9a-f]{64})/?")
REQUIRED = "This field is required."


class _In(BaseModel):
    """Every HappyFox body: unknown keys are kept (the t-cf-<id> fields) and types are loose,
    since multipart/form-data sends every value as text."""

    model_config = ConfigDict(extra="allow")


Scalar = str | int | float | bool | None


class CreateIn(_In):
    name: str | None = None
    email: str | None = None
    user: int | str | None = None  # an existing contact, by id (the document's "client")
    client: int | str | None = None
    phone: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    category: int | str | None = None
    priority: int | str | None = None
    assignee: int | str | None = None
    tags: str | list[str] | None = None
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    created_at: str | None = None
    due_date: str | None = None
    visible_only_staff: bool | str | None = None
    attachments: list[tickiti.UploadIn] = []


class StaffIn(_In):
    staff: int | str | None = None
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    update_customer: bool | str | None = None
    send_survey: bool | str | None = None
    parent_update: Scalar = None
    last_staff_message: int | str | None = None
    subject: str | None = None
    status: int | str | None = None
    priority: int | str | None = None
    assignee: int | str | None = None
    time_spent: int | str | None = None
    due_date: str | None = None
    tags: str | list[str] | None = None
    html: str | None = None
    plaintext: str | None = None
    alert: Scalar = None
    attachments: list[tickiti.UploadIn] = []


class UserReplyIn(_In):
    user: int | str | None = None
    text: str | None = None
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    attachments: list[tickiti.UploadIn] = []


class InlineIn(_In):
    attachments: list[tickiti.UploadIn] = []


class TagsIn(_In):
    add: str | list[str] | None = None
    remove: str | list[str] | None = None


class SubscribeIn(_In):
    staff_id: int | str | None = None
    data: list[int | str] = []


class StaffIdIn(_In):
    staff_id: int | str | None = None


class ForwardIn(_In):
    staff_id: int | str | None = None
    to: str | list[str] | None = None
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    subject: str | None = None
    message: str | None = None
    to_include_ticket_contact: bool | str | None = None
    cc_include_ticket_contact: bool | str | None = None
    send_all_messages: bool | str | None = None
    include_pvt_notes: bool | str | None = None
    ticket_attachments: list[int | str] | str | None = None
    convert_replies_as_new_ticket: bool | str | None = None
    attachments: list[tickiti.UploadIn] = []


class MoveIn(_In):
    staff_id: int | str | None = None
    target_category_id: int | str | None = None
    move_note: str | None = None
    assign_to: int | str | None = None


# -- small translations ---------------------------------------------------------------------------


def listed(value: str | list[Any] | None) -> list[str]:
    """A comma separated list (or a JSON list) as its trimmed, non-empty items."""
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def flag(value: bool | str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def parse_date(value: str, field: str) -> date:
    """yyyy-mm-dd or dd/mm/yyyy (the document's two formats)."""
    text = value.strip()
    try:
        if "/" in text:
            day, month, year = (int(p) for p in text.split("/"))
            return date(year, month, day)
        if len(text) == 10:
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise FieldErrors({field: "must be a date as yyyy-mm-dd or dd/mm/yyyy"})


def due_moment(day: date) -> datetime:
    """A HappyFox due date is a day: due at its end (UTC)."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def _id(value: Any, field: str) -> int:
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_INTEGER:
        raise FieldErrors({field: "must be an id (a positive whole number)"})
    return int(text)


def agent_by_id(session: Session, value: Any, field: str) -> Agent:
    if value is None or value == "":
        raise FieldErrors({field: REQUIRED})
    agent = directory.agent(session, _id(value, field))
    if agent is None:
        raise FieldErrors({field: f"no agent has the id {str(value)[:20]}"})
    return agent


def custom_fields_of(body: BaseModel, vocab: Vocabulary) -> dict[str, Any]:
    """The `t-cf-<id>` members as {name: value} (choice ids turned into choices)."""
    found: dict[str, Any] = {}
    for key, raw in (body.model_extra or {}).items():
        if not key.startswith("t-cf-"):
            continue
        try:
            field = vocab.field_by_id(key.removeprefix("t-cf-"))
            found[field.name] = vocab.field_value_in(field, raw)
        except VocabularyError as exc:
            raise FieldErrors({key: str(exc)}) from None
    return found


def renamer(vocab: Vocabulary) -> Callable[[str], str]:
    """A native error's field name as HappyFox names it (custom_fields.<name> → t-cf-<id>)."""
    native = {"assign": "assignee", "due_at": "due_date", "data.queue_name": "category"}

    def rename(name: str) -> str:
        if name.startswith("custom_fields."):
            field = vocab.field_by_name(name.removeprefix("custom_fields."))
            return f"t-cf-{vocab.field_id(field.name)}" if field else name
        return native.get(name, name)

    return rename


def _ticket(session: Session, number: int) -> Ticket:
    return directory.ticket(session, number)


def acting_as(change: ChangeContext, agent: Agent) -> ChangeContext:
    """The change made by the staff member the request names (history shows them)."""
    return change.by(Actor.agent(agent.email, agent.name))


# -- the handlers ---------------------------------------------------------------------------------


class Writes:
    """The write handlers, bound to the runtime and the vocabulary."""

    def __init__(self, rt: Runtime, vocab: Vocabulary, detail: Callable[[Session, int], Any]):
        self.rt, self.vocab, self.detail = rt, vocab, detail
        self.rename = renamer(vocab)

    # 4, 5, 17: create one ticket or many -------------------------------------------------

    def create(self, session: Session, call: Call) -> Any:
        if isinstance(call.body, list):
            return self._bulk(session, call)
        number = self._create_one(session, call.body, call)
        return self.detail(session, number)

    def _bulk(self, session: Session, call: Call) -> list[dict[str, Any]]:
        if not call.body or len(call.body) > MAX_BULK:
            raise FieldErrors({"tickets": f"send from 1 to {MAX_BULK} ticket payloads"})
        results: list[dict[str, Any]] = []
        for item in call.body:
            try:
                with session.begin_nested():  # one ticket's failure undoes only that ticket
                    body = CreateIn.model_validate(item if isinstance(item, dict) else {})
                    if not isinstance(item, dict):
                        raise FieldErrors({"ticket": "must be a JSON object"})
                    number = self._create_one(session, body, call)
                results.append(
                    {"display_id": self.vocab.display_id(number), "id": number, "success": True}
                )
            except ValidationError as exc:
                errors = pydantic_errors(exc)
                results.append(self._failed(errors))
            except Exception as exc:
                error = from_exception(exc)
                if error.status >= 500:
                    raise
                results.append(self._failed(error.errors or {"ticket": [error.message]}))
        return results

    def _failed(self, errors: dict[str, list[str]]) -> dict[str, Any]:
        return {
            "success": False,
            "error": [{"field": self.rename(k), "errors": list(v)} for k, v in errors.items()],
        }

    def _create_one(self, session: Session, m: CreateIn, call: Call) -> int:
        vocab = self.vocab
        missing = {
            name: REQUIRED
            for name, value in (("subject", m.subject), ("category", m.category))
            if value is None or str(value).strip() == ""
        }
        if not (m.text or m.html):
            missing["text"] = "text or html is required."
        contact_ref = m.user if m.user is not None else m.client
        if contact_ref is None:
            if not m.email:
                missing["email"] = REQUIRED
            if not m.name:
                missing["name"] = REQUIRED
        if missing:
            raise FieldErrors(missing)
        if contact_ref is not None:
            email = contacts.get(session, _id(contact_ref, "user")).email
        else:
            email = tickiti._email(m.email or "", "email")
        queues = directory.queues(session)
        category = queues.get(_id(m.category, "category"))
        viewer = visibility.viewer_for(session, call.token)
        if category is None or not viewer.sees_queue(category):
            raise FieldErrors({"category": f"no category has the id {str(m.category)[:20]}"})
        priority = None
        try:
            if m.priority is not None and m.priority != "":
                priority = vocab.priority_by_id(m.priority).priority
        except VocabularyError as exc:
            raise FieldErrors({"priority": str(exc)}) from None
        assignee = None
        if m.assignee is not None and m.assignee != "":
            assignee = agent_by_id(session, m.assignee, "assignee").email
        fields = custom_fields_of(m, vocab)
        due = parse_date(m.due_date, "due_date") if m.due_date else None
        files = tickiti.uploads(m.attachments)
        html, pictures = self._embed(session, m.html)
        change = self.rt.change(session, call.token)
        made = api_requests.create_ticket(
            session,
            settings=self.rt.settings,
            change=change,
            originator_email=email,
            body=Body(
                subject=tickiti._line(m.subject or "", "subject"), content=html or m.text or ""
            ),
            queue_name=category,
            is_public=not flag(m.visible_only_staff, False),
            originator_as_responder=True,
            priority=priority,
            assignee=assignee,
            attachments=files + pictures,
            viewer=viewer,
        )
        number = int(made["ticket_number"])
        ticket = _ticket(session, number)
        if m.name or m.phone:
            self._fill_contact(session, ticket.contact_id, m.name, m.phone)
        ticket_service.add_ccs(session, ticket, [(a, "") for a in listed(m.cc)], exclude=set())
        self._apply(
            session,
            number,
            TicketUpdate(
                tags_add=tuple(listed(m.tags)),
                custom_fields=fields,
                due_at=due_moment(due) if due else None,
            ),
            change,
        )
        return number

    def _embed(self, session: Session, html: str | None) -> tuple[str | None, tuple[Any, ...]]:
        """Pictures uploaded with ticket-inline-attachment and named by `html`, made inline
        attachments of the message (services/inline_images.py)."""
        if not html:
            return html, ()
        return inline_images.embed(session, html, INLINE_URL, lambda d: f"inline-{d[:12]}")

    # 6: an inline picture, uploaded ahead of the message ---------------------------------

    def inline_attachment(self, session: Session, call: Call) -> dict[str, Any]:
        m: InlineIn = call.body
        if len(m.attachments) != 1:
            raise FieldErrors({"file": "send exactly one file (multipart/form-data)"})
        (item,) = m.attachments
        try:
            data = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise FieldErrors({"file": "must be base64"}) from None
        try:
            digest, _mime = inline_images.keep(
                session, name=item.name, declared=item.mime_type, data=data
            )
        except InvalidInputError as exc:
            raise FieldErrors({"file": str(exc)}) from None
        return {"url": f"{call.base_url}{INLINE}{digest}/"}

    def inline_picture(self, session: Session, call: Call) -> dict[str, Any]:
        """GET …/inline/<sha256>/: a kept picture, for a preview of the message being written."""
        digest = str(call.path.get("digest", ""))
        data = inline_images.read(session, digest)
        if not data:
            raise NotFoundError("No such inline picture.")
        return {
            "name": f"inline-{digest[:12]}",
            "mime_type": policy.sniff(data[: policy.HEAD_BYTES]),
            "content_base64": base64.b64encode(data).decode("ascii"),
        }

    def _fill_contact(
        self, session: Session, contact_id: int | None, name: str | None, phone: str | None
    ) -> None:
        """A new contact's name and phone from the payload; never overwrites what is known."""
        if contact_id is None:
            return
        known = contacts.show(session, contact_id=contact_id)
        fields = contacts.ContactFields(
            name=name.strip() if name and not known["name"] else None,
            phone=phone.strip()[:50] if phone and not known["phone"] else None,
        )
        if fields.name or fields.phone:
            contacts.update(session, contact_id=contact_id, fields=fields, clock=self.rt.clock)

    def _apply(
        self, session: Session, number: int, changes: TicketUpdate, change: ChangeContext
    ) -> None:
        """Changes through ticket_changes (all checked first); errors named as HappyFox does."""
        ticket = _ticket(session, number)
        errors = ticket_changes.check_update(
            session, ticket, changes, definitions=change.notices.custom_fields
        )
        if errors:
            raise FieldErrors(errors)
        ticket_changes.update(session, ticket, changes, change=change)

    # 7, 8: staff update and private note --------------------------------------------------

    def staff_update(self, session: Session, call: Call) -> Any:
        return self._staff(session, call, private=False)

    def staff_note(self, session: Session, call: Call) -> Any:
        return self._staff(session, call, private=True)

    def _staff(self, session: Session, call: Call, *, private: bool) -> Any:
        m: StaffIn = call.body
        number = call.number or 0
        vocab = self.vocab
        agent = agent_by_id(session, m.staff, "staff")
        change = acting_as(self.rt.change(session, call.token), agent)
        if not private and not flag(m.update_customer, False):
            change = dataclasses.replace(change, mail=MailPolicy.silent)
        _ticket(session, number)  # 404 before anything else is checked
        if m.last_staff_message not in (None, ""):
            self._check_collision(session, number, m.last_staff_message)
        status, until = None, None
        if m.status not in (None, ""):
            try:
                status = vocab.status_by_id(m.status).status
            except VocabularyError as exc:
                raise FieldErrors({"status": str(exc)}) from None
        due = parse_date(m.due_date, "due_date") if m.due_date else None
        if status == "on-hold":
            until = due or (self.rt.clock.now() + timedelta(days=vocab.config.on_hold_days)).date()
        priority = None
        if m.priority not in (None, ""):
            try:
                priority = vocab.priority_by_id(m.priority).priority
            except VocabularyError as exc:
                raise FieldErrors({"priority": str(exc)}) from None
        assign = None
        if "assignee" in m.model_fields_set:
            assign = (
                "none"
                if m.assignee in (None, "")
                else agent_by_id(session, m.assignee, "assignee").email
            )
        minutes = None
        if m.time_spent not in (None, ""):
            text = str(m.time_spent).strip()
            if not (text.isascii() and text.isdigit()):
                raise FieldErrors({"time_spent": "must be a whole number of minutes"})
            minutes = int(text)
        self._apply(
            session,
            number,
            TicketUpdate(
                priority=priority,
                assign=assign,
                tags_add=tuple(listed(m.tags)),
                custom_fields=custom_fields_of(m, vocab),
                due_at=due_moment(due) if due else None,
            ),
            change,
        )
        html, pictures = self._embed(session, m.html)
        content = html or m.plaintext
        files = tickiti.uploads(m.attachments) + pictures
        if content or files:
            api_requests.respond(
                session,
                change=change,
                ticket_number=number,
                from_email=agent.email,
                content=content,
                is_internal=private,
                status=status if status in ("closed", "on-hold") else None,
                on_hold_until=until,
                attachments=files,
            )
        elif status is not None:
            self._apply(session, number, TicketUpdate(status=status, on_hold_until=until), change)
        if minutes:
            time_entries.add(
                session, _ticket(session, number), minutes=minutes, billable=False, change=change
            )
        return self.detail(session, number)

    def _check_collision(self, session: Session, number: int, given: Any) -> None:
        """`last_staff_message`: refuse (409) when another staff message came after it."""
        latest = directory.last_staff_response_id(session, number)
        if str(latest) != str(given).strip():
            raise ApiError(
                409,
                "conflict",
                f"Another staff message (update {latest}) was added after {str(given)[:20]}.",
            )

    # 9: contact reply ----------------------------------------------------------------------

    def user_reply(self, session: Session, call: Call) -> Any:
        m: UserReplyIn = call.body
        missing = {k: REQUIRED for k, v in (("user", m.user), ("text", m.text)) if not v}
        if missing:
            raise FieldErrors(missing)
        contact = contacts.get(session, _id(m.user, "user"))
        change = self.rt.change(session, call.token).by(Actor.customer(contact.email, contact.name))
        api_requests.respond(
            session,
            change=change,
            ticket_number=call.number or 0,
            from_email=contact.email,
            content=m.text,
            is_internal=False,
            status=None,
            on_hold_until=None,
            attachments=tickiti.uploads(m.attachments),
        )
        return self.detail(session, call.number or 0)

    # 10, 11: custom fields and tags -------------------------------------------------------

    def update_custom_fields(self, session: Session, call: Call) -> Any:
        m: StaffIn = call.body
        agent = agent_by_id(session, m.staff, "staff")
        change = acting_as(self.rt.change(session, call.token), agent)
        self._apply(
            session,
            call.number or 0,
            TicketUpdate(custom_fields=custom_fields_of(m, self.vocab)),
            change,
        )
        return self.detail(session, call.number or 0)

    def update_tags(self, session: Session, call: Call) -> Any:
        m: TagsIn = call.body
        change = self.rt.change(session, call.token)
        self._apply(
            session,
            call.number or 0,
            TicketUpdate(tags_add=tuple(listed(m.add)), tags_remove=tuple(listed(m.remove))),
            change,
        )
        return self.detail(session, call.number or 0)

    # 12, 13: subscribers -------------------------------------------------------------------

    def subscribe(self, session: Session, call: Call) -> dict[str, Any]:
        m: SubscribeIn = call.body
        agents = [agent_by_id(session, m.staff_id, "staff_id")]
        agents += [agent_by_id(session, i, "data") for i in m.data]
        change = acting_as(self.rt.change(session, call.token), agents[0])
        ticket = _ticket(session, call.number or 0)
        names: list[str] = []
        for agent in agents:
            watchers.watch(session, ticket, agent.email, change=change)
            if (agent.name or agent.email) not in names:
                names.append(agent.name or agent.email)
        return {"message": ", ".join(names) + ", Subscribers added to ticket"}

    def unsubscribe(self, session: Session, call: Call) -> dict[str, Any]:
        m: StaffIdIn = call.body
        agent = agent_by_id(session, m.staff_id, "staff_id")
        change = acting_as(self.rt.change(session, call.token), agent)
        watchers.unwatch(session, _ticket(session, call.number or 0), agent.email, change=change)
        return {"message": f"{agent.name or agent.email} unsubscribed"}

    # 14, 15, 16: forward, move, delete ----------------------------------------------------

    def forward(self, session: Session, call: Call) -> dict[str, Any]:
        m: ForwardIn = call.body
        agent = agent_by_id(session, m.staff_id, "staff_id")
        missing = {k: REQUIRED for k, v in (("to", m.to), ("subject", m.subject)) if not v}
        if missing:
            raise FieldErrors(missing)
        number = call.number or 0
        ticket = _ticket(session, number)
        to = [*listed(m.to), *listed(m.cc), *listed(m.bcc)]
        if flag(m.to_include_ticket_contact, False) or flag(m.cc_include_ticket_contact, False):
            to.append(ticket.originator_email)
        change = acting_as(self.rt.change(session, call.token), agent)
        forwarding.forward(
            session,
            ticket_number=number,
            to=to,
            note=m.message,
            include_attachments=bool(listed(m.ticket_attachments)),
            change=change,
        )
        return {"message": f"Successfully forwarded the ticket {self.vocab.display_id(number)}"}

    def move(self, session: Session, call: Call) -> dict[str, Any]:
        m: MoveIn = call.body
        agent = agent_by_id(session, m.staff_id, "staff_id")
        if m.target_category_id in (None, ""):
            raise FieldErrors({"target_category_id": REQUIRED})
        queues = directory.queues(session)
        target = queues.get(_id(m.target_category_id, "target_category_id"))
        if target is None or not visibility.viewer_for(session, call.token).sees_queue(target):
            raise FieldErrors(
                {"target_category_id": f"no category has the id {str(m.target_category_id)[:20]}"}
            )
        assign = None
        if m.assign_to not in (None, ""):
            assign = agent_by_id(session, m.assign_to, "assign_to").email
        number = call.number or 0
        change = acting_as(self.rt.change(session, call.token), agent)
        self._apply(session, number, TicketUpdate(queue=target, assign=assign), change)
        if m.move_note and m.move_note.strip():
            api_requests.respond(
                session,
                change=change,
                ticket_number=number,
                from_email=agent.email,
                content=m.move_note.strip(),
                is_internal=True,
                status=None,
                on_hold_until=None,
            )
        return {"status_code": 200, "message": f"moved ticket to {target}"}

    def delete(self, session: Session, call: Call) -> dict[str, Any]:
        m: StaffIdIn = call.body
        agent = agent_by_id(session, m.staff_id, "staff_id")
        number = call.number or 0
        change = acting_as(self.rt.change(session, call.token), agent)
        housekeeping.trash(session, ticket_number=number, change=change)
        return {"deleted_ticket": self.vocab.display_id(number)}
