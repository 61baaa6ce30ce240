"""Interventions (api-contract.md §4.9): a remote system asks staff for a decision on a ticket,
staff edit the fields and submit, and the decision is POSTed back (the "epilog").

    create      POST /api/create_ticket shape C: a ticket in the intervention's queue, the
                `.private` template as a staff note, `.public` (if present) as a customer-visible
                response mailed like an agent's answer, the instance stored (UNIQUE(name, uid)).
    submit      by API (POST /api/v1/tickets/intervention/submit) or by an agent's mail
                (`#set <field> <value>` … `#submit`): one staff note with the field values, the
                data bag updated, state `submitted`, and one epilog row in the HTTP outbox, all
                in one transaction. Without a remote (remote_enabled = false or no URL) the
                submission completes at once.
    epilog      EpilogHandler: 2xx → `completed`, a `{"ok": true, "data": {…}}` reply merged into
                the bag and `.final` (if present) posted as a public response mailed to the
                customer; each failed try → a staff note; the last one → `failed`, ticket open.

States: open → submitted → completed | failed. A `failed` intervention may be submitted again
(a new epilog with a new response id); `submitted` and `completed` ones refuse (409).

Templates live under `interventions/` in the template search path (`[templates] dir` first, then
the shipped templates), next to `notices/`: `<name>.private.txt` (required, checked at start),
`<name>.public.txt`, `<name>.final.txt`, each with an optional `.html` twin (autoescaped).
They are rendered in the notices' sandboxed, strict environment with the data bag's keys at the
top level plus `data` (the whole bag), `intervention`, `title`, `uid` and `customer_email`;
`.final` also gets `ticket_number` and `submitted_by_email`. Those names win over bag keys.
Field types: `checkbox` takes true/false, yes/no, 1/0 (also JSON booleans); `text` takes a
string, and a JSON number stays a number (by mail, a value that parses as a number where the
bag held a number becomes that number).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import jinja2
from sqlmodel import Session

from mailhelpdesk.clock import Clock
from mailhelpdesk.config import (
    Config,
    ConfigError,
    InterventionConfig,
    InterventionFieldConfig,
    read_intervention_token,
)
from mailhelpdesk.domain.enums import InterventionState, ResponseKind
from mailhelpdesk.domain.events import Actor, Channel, EventType
from mailhelpdesk.domain.models import HttpDelivery, InterventionInstance, Ticket
from mailhelpdesk.errors import ConflictError, InvalidInputError, NotFoundError
from mailhelpdesk.mail.html_text import sanitize_html
from mailhelpdesk.mail.render import NoticeRenderError, environment, render_file
from mailhelpdesk.services import events
from mailhelpdesk.services import tickets as ticket_service
from mailhelpdesk.services.context import ChangeContext
from mailhelpdesk.services.notify import NotifySettings
from mailhelpdesk.services.tickets import NewResponse
from mailhelpdesk.store import http_outbox
from mailhelpdesk.store import interventions as store
from mailhelpdesk.store import tickets as ticket_store

log = logging.getLogger(__name__)

EPILOG_KIND = "epilog"
TEMPLATE_FOLDER = "interventions"
PARTS = ("private", "public", "final")
MAX_UID_CHARS = 255
SYSTEM_NAME = "mailhelpdesk"
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_INT = re.compile(r"^[+-]?\d{1,18}$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


class InterventionFieldError(InvalidInputError):
    """Input naming something the intervention does not have (422, `errors[field]`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InterventionUidExists(ConflictError):
    """A second create with the same (intervention, uid): 409 `intervention_uid_exists`."""

    code = "intervention_uid_exists"

    def __init__(self, name: str, uid: str, ticket_number: int) -> None:
        super().__init__(
            f"Intervention '{name}' with uid '{uid}' exists already (ticket {ticket_number})."
        )
        self.data = {"ticket_number": ticket_number}


class InterventionNotOpen(ConflictError):
    """A submit (or #set) on an intervention that is already submitted or completed: 409."""

    code = "intervention_not_open"

    def __init__(self, row: InterventionInstance, ticket_number: int) -> None:
        super().__init__(f"The intervention on ticket {ticket_number} is {row.state}, not open.")
        self.data = {"ticket_number": ticket_number, "state": row.state}


# -- definitions and templates -------------------------------------------------------------------


def definition(settings: NotifySettings, name: str) -> InterventionConfig | None:
    return next((d for d in settings.interventions if d.name == name), None)


def field_of(defn: InterventionConfig, name: str) -> InterventionFieldConfig | None:
    wanted = name.strip().lower()
    return next((f for f in defn.fields if f.name.lower() == wanted), None)


def template_path(name: str, part: str, suffix: str = ".txt") -> str:
    return f"{TEMPLATE_FOLDER}/{name}.{part}{suffix}"


def check_templates(config: Config) -> None:
    """Every intervention has its `.private` template, and every template parses (ConfigError)."""
    env = environment(config.templates.dir)
    for i, defn in enumerate(config.interventions):
        for part in PARTS:
            for suffix in (".txt", ".html"):
                path = template_path(defn.name, part, suffix)
                try:
                    env.get_template(path)
                except jinja2.TemplateNotFound:
                    if part == "private" and suffix == ".txt":
                        raise ConfigError(
                            f"interventions[{i}].name: template {path} not found (put it in [templates] dir)"
                        ) from None
                except jinja2.TemplateSyntaxError as exc:
                    raise ConfigError(
                        f"interventions[{i}].name: {path} line {exc.lineno}: {exc.message}"
                    ) from None


@dataclass(frozen=True)
class RenderedPart:
    text: str
    html: str | None


def render_part(
    template_dir: str, name: str, part: str, context: Mapping[str, Any]
) -> RenderedPart | None:
    """`<name>.<part>.txt` (+ `.html`) rendered whole, or None when the part has no `.txt`."""
    env = environment(template_dir)
    rendered: dict[str, str | None] = {}
    for suffix in (".txt", ".html"):
        path = template_path(name, part, suffix)
        try:
            rendered[suffix] = render_file(env, path, context)
        except jinja2.TemplateNotFound:
            if suffix == ".txt":
                return None
            rendered[suffix] = None
    html = rendered[".html"]
    return RenderedPart(rendered[".txt"] or "", sanitize_html(html) if html else None)


def _render_string(template_dir: str, source: str, context: Mapping[str, Any]) -> str:
    """A title or field label with `{{placeholders}}`; the text as written if it cannot render."""
    if "{" not in source:
        return source
    try:
        return environment(template_dir).from_string(source).render(dict(context))
    except Exception:  # noqa: BLE001 - a label is never worth failing a request for
        return source


def context_of(
    defn: InterventionConfig,
    *,
    bag: Mapping[str, Any],
    uid: str,
    customer_email: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **bag,
        "data": dict(bag),
        "intervention": defn.name,
        "title": defn.title or defn.name,
        "uid": uid,
        "customer_email": customer_email,
        **(extra or {}),
    }


def labels(
    settings: NotifySettings, defn: InterventionConfig, bag: Mapping[str, Any]
) -> dict[str, str]:
    """Each field's label with its placeholders filled from the bag (the name if it has none)."""
    return {
        f.name: _render_string(settings.template_dir, f.label or f.name, bag) for f in defn.fields
    }


# -- create ----------------------------------------------------------------------------------------


def create(
    session: Session,
    *,
    change: ChangeContext,
    originator_email: str,
    name: str,
    uid: str,
    data: Mapping[str, Any],
    actor: str = "API",
) -> Ticket:
    """Shape C of create_ticket. Raises InterventionFieldError (unknown intervention, bad uid, a
    template the bag cannot fill) or InterventionUidExists. The opening is a staff note, so the
    `created` event tells the agents and not the customer (services/reactions.py)."""
    settings = change.notices
    defn = definition(settings, name)
    if defn is None:
        raise InterventionFieldError("intervention", f"Intervention '{name}' is not configured.")
    if (
        not uid.strip()
        or len(uid) > MAX_UID_CHARS
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in uid)
    ):
        raise InterventionFieldError(
            "uid", f"uid must be 1-{MAX_UID_CHARS} characters without control characters."
        )
    existing = store.get_by_uid(session, name=name, uid=uid)
    if existing is not None:
        raise InterventionUidExists(name, uid, _number_of(session, existing))
    bag = dict(data)
    context = context_of(defn, bag=bag, uid=uid, customer_email=originator_email.lower())
    try:
        private = render_part(settings.template_dir, name, "private", context)
        public = render_part(settings.template_dir, name, "public", context)
    except NoticeRenderError as exc:
        raise InterventionFieldError("data.data", f"Intervention '{name}': {exc}") from None
    if private is None:
        raise InterventionFieldError(
            "intervention", f"Intervention '{name}' has no {template_path(name, 'private')}."
        )
    subject = _render_string(settings.template_dir, defn.title or defn.name, context)
    first = NewResponse(
        kind=ResponseKind.note,
        plain_text=private.text,
        html=private.html,
        is_internal=True,
        created_by_name=actor,
        subject=subject,
    )
    ticket = ticket_service.create_ticket(
        session,
        subject=subject,
        originator_email=originator_email,
        queue_name=defn.queue,
        first=first,
        change=change,
    )
    row = store.insert(
        session, name=name, uid=uid, ticket_id=ticket.id or 0, data=bag, now=change.clock.now()
    )
    if row is None:
        # a concurrent create won the unique index: this transaction (and its ticket) rolls back
        winner = store.get_by_uid(session, name=name, uid=uid)
        raise InterventionUidExists(name, uid, _number_of(session, winner) if winner else 0)
    _step(session, ticket, "created", name=name, uid=uid, change=change)
    if public is not None:
        _post_public(session, change=change, ticket=ticket, part=public, author=actor)
    return ticket


def _step(
    session: Session,
    ticket: Ticket,
    step: str,
    *,
    name: str,
    uid: str,
    change: ChangeContext,
    **extra: Any,
) -> None:
    """One step of an intervention's life on the ticket's record."""
    events.record(
        session,
        ticket,
        EventType.intervention,
        {"step": step, "name": name, "uid": uid, **extra},
        change=change,
    )


def _number_of(session: Session, row: InterventionInstance) -> int:
    ticket = session.get(Ticket, row.ticket_id)
    return ticket.number if ticket else 0


def _post_public(
    session: Session,
    *,
    change: ChangeContext,
    ticket: Ticket,
    part: RenderedPart,
    author: str,
) -> int:
    """A customer-visible staff response, mailed to the customer (and CCs) like an agent's
    answer: an `agent_response` event, whatever mails it is decided there."""
    response = ticket_service.add_response(
        session,
        ticket,
        NewResponse(
            kind=ResponseKind.agent,
            plain_text=part.text,
            html=part.html,
            is_internal=False,
            created_by_name=author,
            subject=ticket.subject,
        ),
        change=change,
        reopen=False,
    )
    return response.id or 0


def _staff_note(
    session: Session,
    ticket: Ticket,
    text: str,
    *,
    change: ChangeContext,
    base: NewResponse | None = None,
    author_email: str | None = None,
    author_name: str = SYSTEM_NAME,
) -> int:
    new = NewResponse(
        kind=ResponseKind.note,
        plain_text=text,
        is_internal=True,
        created_by_email=author_email,
        created_by_name=author_name,
        subject=ticket.subject,
    )
    if base is not None:  # an agent's mail: keep its Message-ID, inbound row and verification
        new = replace(
            base,
            kind=ResponseKind.note,
            plain_text=text,
            visible_text=text,
            html=None,
            is_internal=True,
        )
    return ticket_service.add_response(session, ticket, new, change=change, reopen=False).id or 0


# -- submit ----------------------------------------------------------------------------------------


def coerce(fld: InterventionFieldConfig, value: Any, current: Any = None) -> Any:
    """A field value as the bag stores it (InvalidInputError when it does not fit the type)."""
    if fld.type == "checkbox":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise InvalidInputError(
            f"field {fld.name} is a checkbox: true/false, yes/no or 1/0, not {value!r}"
        )
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InvalidInputError(f"field {fld.name} is text: give a string or a number")
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        stripped = text.strip()
        if _INT.match(stripped):
            return int(stripped)
        if _FLOAT.match(stripped):
            return float(stripped)
    return text


def _open_instance(
    session: Session, settings: NotifySettings, ticket: Ticket
) -> tuple[InterventionInstance, InterventionConfig]:
    row = store.for_ticket(session, ticket.id or 0, lock=True)
    if row is None:
        raise InterventionFieldError(
            "ticket_number", f"Ticket {ticket.number} has no intervention."
        )
    defn = definition(settings, row.name)
    if defn is None:
        raise InterventionFieldError(
            "ticket_number",
            f"Intervention '{row.name}' of ticket {ticket.number} is no longer configured.",
        )
    if row.state not in (InterventionState.open, InterventionState.failed):
        raise InterventionNotOpen(row, ticket.number)
    return row, defn


def check_command(
    session: Session, settings: NotifySettings, ticket: Ticket, name: str, field: str, value: str
) -> None:
    """What agent_mail asks before applying anything: `#set`/`#submit` can be applied here."""
    row, defn = _open_instance(session, settings, ticket)
    if name == "set":
        fld = field_of(defn, field)
        if fld is None:
            known = ", ".join(f.name for f in defn.fields) or "none"
            raise InvalidInputError(
                f"unknown field {field!r} for intervention {defn.name} (fields: {known})"
            )
        coerce(fld, value, store.data_of(row).get(fld.name))


@dataclass(frozen=True)
class Submitted:
    ticket: Ticket
    instance: InterventionInstance
    response_id: int
    epilog: HttpDelivery | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket.id,
            "ticket_number": self.ticket.number,
            "response_id": self.response_id,
            "intervention": self.instance.name,
            "uid": self.instance.uid,
            "state": self.instance.state,
            "data": store.data_of(self.instance),
            "epilog_queued": self.epilog is not None,
        }


def submit(
    session: Session,
    *,
    change: ChangeContext,
    ticket: Ticket,
    agent_email: str,
    agent_name: str,
    values: Mapping[str, Any],
    content: str | None = None,
    final: bool = True,
    base: NewResponse | None = None,
) -> Submitted:
    """Edit the fields (`values`, by field name) and, with `final`, submit the decision: one staff
    note (the response that submits it), the bag saved, state `submitted` and the epilog queued,
    in the caller's transaction. Without `final` (mail `#set` without `#submit`) only the edits
    and their note. `base` is the agent's mail when it came by mail."""
    settings = change.notices
    row, defn = _open_instance(session, settings, ticket)
    bag = store.data_of(row)
    edits: dict[str, Any] = {}
    for key, value in values.items():
        fld = field_of(defn, key)
        if fld is None:
            known = ", ".join(f.name for f in defn.fields) or "none"
            raise InterventionFieldError(
                f"data.{key}", f"Intervention '{defn.name}' has no field '{key}' (fields: {known})."
            )
        try:
            edits[fld.name] = coerce(fld, value, bag.get(fld.name))
        except InvalidInputError as exc:
            raise InterventionFieldError(f"data.{key}", str(exc)) from None
    bag.update(edits)
    now = change.clock.now()
    shown = labels(settings, defn, bag)
    lines = [
        f'Intervention "{defn.title or defn.name}" ({defn.name}, uid {row.uid}) '
        + ("submitted" if final else "edited")
        + f" by {agent_email}:"
    ]
    for fld in defn.fields:
        mark = " (changed)" if fld.name in edits else ""
        lines.append(
            f"- {shown[fld.name]}: {json.dumps(bag.get(fld.name), ensure_ascii=False)}{mark}"
        )
    if content and content.strip():
        lines += ["", content.strip()]
    response_id = _staff_note(
        session,
        ticket,
        "\n".join(lines),
        change=change,
        base=base,
        author_email=agent_email,
        author_name=agent_name,
    )
    epilog: HttpDelivery | None = None
    if final:
        row.state = InterventionState.submitted
        row.submitted_by_email, row.submitted_response_id, row.submitted_at = (
            agent_email.lower(),
            response_id,
            now,
        )
        if defn.remote_enabled and defn.remote_epilog_url:
            epilog = _enqueue_epilog(
                session, settings, defn, row, ticket, bag, response_id, agent_email.lower(), now
            )
        else:
            row.state = InterventionState.completed
    store.save(session, row, now=now, data=bag)
    _step(
        session,
        ticket,
        "submitted" if final else "edited",
        name=row.name,
        uid=row.uid,
        change=change,
        response_id=response_id,
        fields=sorted(edits),
    )
    if final and epilog is None:
        _complete(
            session,
            change=change,
            ticket=ticket,
            row=row,
            defn=defn,
            bag=bag,
            how="no remote is configured, so the submission completes it",
        )
    return Submitted(ticket, row, response_id, epilog)


def epilog_body(
    row: InterventionInstance,
    ticket: Ticket,
    bag: Mapping[str, Any],
    response_id: int,
    submitted_by: str,
    submitted_at: str,
) -> bytes:
    """The exact bytes POSTed to the remote (api-contract.md §4.9)."""
    body = {
        "ticket_id": ticket.id,
        "response_id": response_id,
        "ticket_number": ticket.number,
        "intervention": row.name,
        "uid": row.uid,
        "data": dict(bag),
        "submitted_by_email": submitted_by,
        "submitted_at": submitted_at,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _enqueue_epilog(
    session: Session,
    settings: NotifySettings,
    defn: InterventionConfig,
    row: InterventionInstance,
    ticket: Ticket,
    bag: Mapping[str, Any],
    response_id: int,
    submitted_by: str,
    now: Any,
) -> HttpDelivery:
    return http_outbox.enqueue(
        session,
        kind=EPILOG_KIND,
        ref=f"intervention:{row.id}",
        ticket_id=ticket.id,
        url=defn.remote_epilog_url,
        body=epilog_body(
            row, ticket, bag, response_id, submitted_by, now.isoformat(timespec="seconds")
        ),
        # the token is added at send time from secret_ref, never stored with the row
        headers={"Idempotency-Key": f"epilog:{row.name}:{row.uid}:{response_id}"},
        secret_ref=f"intervention:{defn.name}",
        bearer_from_secret=True,
        timeout_s=float(defn.remote_timeout_s),
        max_attempts=settings.epilog_max_attempts,
        now=now,
    )


def delivery_secrets(config: Config) -> dict[str, bytes]:
    """HMAC keys for the HTTP sender's resolver: `intervention:<name>` → the intervention's token."""
    found: dict[str, bytes] = {}
    for defn in config.interventions:
        token = read_intervention_token(defn)
        if token:
            found[f"intervention:{defn.name}"] = token.encode()
    return found


def submit_api(
    session: Session,
    *,
    change: ChangeContext,
    ticket_number: int,
    from_email: str,
    values: Mapping[str, Any],
    content: str | None,
) -> dict[str, Any]:
    """POST /api/v1/tickets/intervention/submit."""
    ticket = ticket_store.get_ticket_by_number(session, ticket_number)
    if ticket is None:
        raise NotFoundError(f"Ticket {ticket_number} not found.")
    agent = ticket_store.get_agent_by_email(session, from_email)
    if agent is None:
        raise InterventionFieldError(
            "from_email", f"{from_email} is not an agent of this helpdesk."
        )
    done = submit(
        session,
        change=change,
        ticket=ticket,
        agent_email=agent.email,
        agent_name=agent.name,
        values=values,
        content=content,
    )
    return done.as_dict()


# -- the epilog's outcome ---------------------------------------------------------------------------


def _complete(
    session: Session,
    *,
    change: ChangeContext,
    ticket: Ticket,
    row: InterventionInstance,
    defn: InterventionConfig,
    bag: Mapping[str, Any],
    how: str,
) -> None:
    """Post `.final` (public, mailed to the customer) or, without one, a staff note saying so."""
    settings = change.notices
    _step(session, ticket, "completed", name=row.name, uid=row.uid, change=change)
    context = context_of(
        defn,
        bag=bag,
        uid=row.uid,
        customer_email=ticket.originator_email,
        extra={"ticket_number": ticket.number, "submitted_by_email": row.submitted_by_email or ""},
    )
    try:
        final = render_part(settings.template_dir, defn.name, "final", context)
    except NoticeRenderError as exc:
        _staff_note(
            session,
            ticket,
            f"Intervention {defn.name} completed ({how}), but its final response "
            f"could not be rendered: {exc}",
            change=change,
        )
        return
    if final is None:
        _staff_note(session, ticket, f"Intervention {defn.name} completed: {how}.", change=change)
        return
    author = _render_string(settings.template_dir, defn.title or defn.name, context)
    try:
        # in a savepoint: a final response that cannot be posted or mailed (say, a customer
        # address our mail cannot carry) must not undo the completion recorded before it
        with session.begin_nested():
            _post_public(session, change=change, ticket=ticket, part=final, author=author)
    except (InvalidInputError, NoticeRenderError) as exc:
        _staff_note(
            session,
            ticket,
            f"Intervention {defn.name} completed ({how}), but its final response "
            f"could not be posted: {exc}",
            change=change,
        )


def _remote_data(body: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return {}
    if isinstance(reply, dict) and reply.get("ok") is True and isinstance(reply.get("data"), dict):
        return dict(reply["data"])
    return {}


def _shown_url(url: str) -> str:
    """The URL as staff may see it: no user:password, query or fragment (they can hold credentials)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the remote epilog URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


class EpilogHandler:
    """The HTTP sender's DeliveryHandler for `epilog` rows (transports/http_sender.py). What it
    changes is the helpdesk's own doing: actor system, channel scheduler (a background job)."""

    def __init__(self, notices: NotifySettings, clock: Clock) -> None:
        self.change = ChangeContext.of(
            clock=clock, channel=Channel.scheduler, actor=Actor.system(), notices=notices
        )
        self.clock = clock

    def _load(
        self, session: Session, row: HttpDelivery
    ) -> tuple[InterventionInstance, Ticket, InterventionConfig] | None:
        ref = row.ref.removeprefix("intervention:")
        instance = store.get(session, int(ref)) if ref.isascii() and ref.isdigit() else None
        ticket = session.get(Ticket, instance.ticket_id) if instance else None
        defn = definition(self.change.notices, instance.name) if instance else None
        if instance is None or ticket is None or defn is None:
            log.warning("epilog outcome for an unknown intervention row=%s ref=%s", row.id, row.ref)
            return None
        return instance, ticket, defn

    def delivered(self, session: Session, row: HttpDelivery, status: int, body: bytes) -> None:
        loaded = self._load(session, row)
        if loaded is None:
            return
        instance, ticket, defn = loaded
        bag = {**store.data_of(instance), **_remote_data(body)}
        instance.state = InterventionState.completed
        store.save(session, instance, now=self.clock.now(), data=bag)
        _complete(
            session,
            change=self.change,
            ticket=ticket,
            row=instance,
            defn=defn,
            bag=bag,
            how=f"the remote system accepted the decision (HTTP {status})",
        )

    def failed(self, session: Session, row: HttpDelivery, error: str, *, final: bool) -> None:
        loaded = self._load(session, row)
        if loaded is None:
            return
        instance, ticket, defn = loaded
        what = (
            f"Intervention {defn.name}: the epilog call to {_shown_url(row.url)} failed "
            f"(attempt {row.attempts} of {row.max_attempts}): {error}"
        )
        if final:
            instance.state = InterventionState.failed
            store.save(session, instance, now=self.clock.now())
            what += (
                "\nNo more attempts: the intervention is marked failed and the ticket stays open. "
                "Submit it again to retry."
            )
        else:
            what += "\nIt will be retried."
        _step(
            session,
            ticket,
            "failed" if final else "epilog_failed",
            name=instance.name,
            uid=instance.uid,
            change=self.change,
            attempt=row.attempts,
        )
        _staff_note(session, ticket, what, change=self.change)
