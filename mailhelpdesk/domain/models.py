"""The tables. Nothing here is SQLite-only: the same schema runs on PostgreSQL.

Times are stored as timezone-aware UTC (`utc_datetime` columns); SQLite hands them back
naive, so readers go through `as_utc`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

# the largest value an INTEGER column holds on PostgreSQL (ids, ticket numbers): a larger number
# in a request names nothing, and must be refused before it reaches a query
MAX_INTEGER = 2_147_483_647


def utc_column(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for what was stored as UTC: make them aware again."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_reply_key() -> str:
    """A fresh random per-agent key for signed reply addresses (128 bits, hex)."""
    return secrets.token_hex(16)


class Setting(SQLModel, table=True):
    """Small durable values shared by every daemon on the database (e.g. the reply-address key)."""

    __tablename__ = "settings"
    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_column=Column(Text, nullable=False))


class Counter(SQLModel, table=True):
    """Monotonic counters; ticket numbers come from here so they are never reused."""

    __tablename__ = "counters"
    name: str = Field(primary_key=True, max_length=50)
    value: int


class Queue(SQLModel, table=True):
    __tablename__ = "queues"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    address: str = Field(default="", max_length=320)


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    alternate_addresses: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    origin: str = Field(default="cli", max_length=20)  # config | cli
    # the queues an agent's API tokens see, one name a line ("" = all; services/visibility.py)
    queues: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # Argon2id PHC string for the seed adapters' logins ("" = no password, no login)
    password_hash: str = Field(default="", max_length=255)
    password_changed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    # signed into every reply address made for this agent (mail/tokens.py) and never reused:
    # SQLite hands a removed agent's id to the next agent added, so the id alone would let the
    # old agent's addresses verify as the new one (issue 17)
    reply_key: str = Field(default_factory=new_reply_key, max_length=64)


class InboundMessage(SQLModel, table=True):
    """The spool: raw bytes exactly as received, kept before the sender is told 250."""

    __tablename__ = "inbound_messages"
    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(sa_column=utc_column(index=True))
    source: str = Field(max_length=20)  # smtp | imap | import | api
    source_ref: str = Field(default="", max_length=500)
    envelope_from: str | None = Field(default=None, max_length=998)
    envelope_to: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    queue_hint: str = Field(default="", max_length=200)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int
    state: str = Field(default="new", max_length=20, index=True)
    attempts: int = 0
    outcome: str = Field(default="", max_length=30)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    message_id: str | None = Field(default=None, max_length=998, index=True)
    fingerprint: str | None = Field(default=None, max_length=64, index=True)
    ticket_id: int | None = Field(default=None, index=True)
    processed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    # the list's sorts, keyset-paged with number as the tie-break (store/ticket_query.py)
    __table_args__ = (
        Index("ix_tickets_updated_at_number", "updated_at", "number"),
        Index("ix_tickets_priority_number", "priority", "number"),
        # the list's status/queue/assignee filters and their counts (every list is of
        # tickets not in the trash: deleted_at IS NULL), read off the index alone (0019)
        Index("ix_tickets_status_live", "status", "queue_id", "assigned_to_email", "deleted_at"),
        # the most urgent open tickets by due time: one range, counted off the index (0021)
        Index("ix_tickets_priority_status_due", "priority", "status", "deleted_at", "due_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True)
    subject: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="open", max_length=20, index=True)
    priority: int = 20
    queue_id: int = Field(foreign_key="queues.id", index=True)
    originator_email: str = Field(max_length=320, index=True)
    originator_name: str = Field(default="", max_length=400)
    assigned_to_email: str | None = Field(default=None, max_length=320, index=True)
    resolved_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    on_hold_until: date | None = None
    created_at: datetime = Field(sa_column=utc_column(index=True))
    updated_at: datetime = Field(sa_column=utc_column())
    # the customer the ticket is for (services/contacts.py); None only when it has no originator
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    # -- housekeeping (resources.md §2): due date, last resolution, trash, merge ------------------
    due_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True, index=True))
    resolution: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # set while the ticket is in the trash (soft-deleted): every read treats it as absent
    deleted_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True, index=True)
    )
    # the number of the ticket this one was merged into: mail threaded here lands there
    merged_into: int | None = None
    # 32 hex characters from a CSPRNG: the Tickiti `secure_id` and the status page's /t/{id};
    # replaced (so the old link answers 404) when an agent revokes the link
    secure_id: str | None = Field(default=None, max_length=32, unique=True, index=True)


class TicketCC(SQLModel, table=True):
    __tablename__ = "ticket_ccs"
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=400)


class TicketTag(SQLModel, table=True):
    __tablename__ = "ticket_tags"
    __table_args__ = (UniqueConstraint("ticket_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    name: str = Field(max_length=100)


class Response(SQLModel, table=True):
    """One message on a ticket: a customer's mail, an agent's answer, a note or a system event."""

    __tablename__ = "responses"
    # the keyset of POST /api/v1/tickets/responses/query: (created_at, id) ascending
    __table_args__ = (Index("ix_responses_created_at_id", "created_at", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    kind: str = Field(max_length=20)
    is_internal: bool = False
    is_pinned: bool = False
    staff_response: bool = False
    is_email_sourced: bool = False
    created_by_email: str | None = Field(default=None, max_length=320)
    created_by_name: str = Field(default="", max_length=400)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    message_id: str | None = Field(default=None, max_length=998)
    plain_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    visible_text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    verified: str | None = Field(default=None, max_length=40)
    inbound_id: int | None = Field(default=None, foreign_key="inbound_messages.id")
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())


class Blob(SQLModel, table=True):
    """Attachment bytes, stored once per content (sha256)."""

    __tablename__ = "blobs"
    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"
    id: int | None = Field(default=None, primary_key=True)
    response_id: int = Field(foreign_key="responses.id", index=True)
    name: str = Field(max_length=500)
    mime_type: str = Field(max_length=200)
    file_size: int
    is_inline: bool = False
    content_id: str | None = Field(default=None, max_length=998)
    sha256: str = Field(foreign_key="blobs.sha256", max_length=64)


class KnownMessageId(SQLModel, table=True):
    """Every Message-ID we stored or sent, with its ticket: what In-Reply-To/References thread on.

    Not unique: a reused Message-ID is recorded again, and the first row wins for threading.
    """

    __tablename__ = "known_message_ids"
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=998, index=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    direction: str = Field(max_length=3)  # in | out


class AppliedMessage(SQLModel, table=True):
    """One row per message content applied: the database refuses a second apply of the same mail,
    even from two daemons at once."""

    __tablename__ = "applied_messages"
    fingerprint: str = Field(primary_key=True, max_length=64)
    inbound_id: int = Field(foreign_key="inbound_messages.id")


class MailboxCursor(SQLModel, table=True):
    """How far an IMAP mailbox has been read: UIDVALIDITY plus the last UID kept."""

    __tablename__ = "mailbox_cursors"
    mailbox: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(default=0, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    last_sync_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Lease(SQLModel, table=True):
    """Who works a resource that only one daemon may work at a time (an IMAP mailbox
    `imap:<name>`, a scheduled job `job:<name>`), until when. Taken and renewed by one
    conditional statement (store/leases.py); an expired lease is anyone's to take."""

    __tablename__ = "leases"
    resource: str = Field(primary_key=True, max_length=200)
    holder: str = Field(max_length=200)
    acquired_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column())


class OutboxItem(SQLModel, table=True):
    """One outgoing message, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=utc_column(index=True))
    kind: str = Field(max_length=50)  # notice name, or "send_email"
    ticket_id: int | None = Field(default=None, index=True)
    message_id: str = Field(max_length=998, unique=True)
    mail_from: str = Field(max_length=320)
    rcpt_tos: str = Field(sa_column=Column(Text, nullable=False))
    primary_rcpt: str = Field(max_length=320, index=True)
    is_automatic: bool = True
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = Field(
        default="queued", max_length=20, index=True
    )  # queued | sent | failed | suppressed
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=utc_column(index=True))
    deadline_at: datetime = Field(sa_column=utc_column())
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    sent_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # an automatic notice written as what to render (JSON), composed into `raw` by the sender
    # just before sending, so the change's transaction does not pay for MIME (services/notify.py)
    compose_spec: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class SuppressedAddress(SQLModel, table=True):
    """An address that bounced: automatic notices to it are held back until `until_at`."""

    __tablename__ = "suppressed_addresses"
    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    until_at: datetime = Field(sa_column=utc_column())


class ApiToken(SQLModel, table=True):
    """An HTTP API token. Only the SHA-256 of its secret is stored; the plaintext is shown once."""

    __tablename__ = "api_tokens"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    secret_sha256: str = Field(max_length=64)
    abilities: str = Field(sa_column=Column(Text, nullable=False))  # space-separated ability names
    created_at: datetime = Field(sa_column=utc_column())
    last_used_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # a token stops working at this time (None: never); api-contract.md §2.1
    expires_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # the agent the v1 family acts as ("For my attention"); None: the system user
    owner_email: str | None = Field(default=None, max_length=320)


class IdempotencyKey(SQLModel, table=True):
    """One keyed API operation (api-contract.md §3): claimed `in_progress` under a lease, then
    `completed` with the exact response, in the transaction of the work. `minted` rows come from
    POST /api/idempotency_key and have no token until their first use."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("token_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    token_id: int | None = Field(default=None, index=True)
    key: str = Field(max_length=255, index=True)
    action: str = Field(default="", max_length=50)  # the endpoint the key is bound to ('' = any)
    fingerprint: str = Field(default="", max_length=64)
    state: str = Field(max_length=20)  # minted | in_progress | completed
    lease: str = Field(default="", max_length=64)
    locked_until: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    status: int | None = None
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=utc_column())
    completed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    expires_at: datetime = Field(sa_column=utc_column(index=True))


class HttpDelivery(SQLModel, table=True):
    """One outgoing HTTP POST (a webhook event, an intervention's epilog), written in the same
    transaction as the change that caused it and drained by transports/http_sender.py.

    `body` is the exact bytes POSTed, so a signature computed at send time covers what the
    receiver reads. `secret_ref` names the HMAC key ("" = unsigned); the key itself is resolved
    by the sender and never stored here.
    """

    __tablename__ = "http_deliveries"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_column=utc_column(index=True))
    kind: str = Field(max_length=20, index=True)  # webhook | epilog
    ref: str = Field(
        max_length=200, index=True
    )  # "intervention:<id>" | "webhook:<subscription id>"
    ticket_id: int | None = Field(default=None, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: str = Field(
        default="{}", sa_column=Column(Text, nullable=False, default="{}")
    )  # JSON object
    secret_ref: str = Field(default="", max_length=200)
    # also send `Authorization: Bearer <the secret_ref's key>` (an epilog's intervention token),
    # added at send time like the signature, so no credential is stored in `headers`
    bearer_from_secret: bool = False
    timeout_s: float = 10.0
    state: str = Field(default="queued", max_length=20, index=True)  # queued | delivered | failed
    attempts: int = 0
    max_attempts: int = 10
    next_attempt_at: datetime = Field(sa_column=utc_column(index=True))
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    last_status: int | None = None
    response_body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class WebhookSubscription(SQLModel, table=True):
    """A `[[webhooks]]` entry of the config, copied into the store at start so the service layer
    finds subscribers inside its transaction. The HMAC key stays in the config
    (secret_ref "webhook:<name>")."""

    __tablename__ = "webhook_subscriptions"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: str = Field(
        default="", sa_column=Column(Text, nullable=False, default="")
    )  # space-separated; "" = all
    signed: bool = False
    # copied from [http_deliveries] at sync, so emitting needs no config
    timeout_s: float = 10.0
    max_attempts: int = 10
    origin: str = Field(default="config", max_length=20)  # config | api
    # API-made subscriptions (origin "api"): the random salt their HMAC key is derived from
    # with the helpdesk secret (services/webhook_subscriptions.py); the key itself is not stored
    secret_salt: str = Field(default="", max_length=64)
    created_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # a seed adapter's subscription (tiHelpdesk's /api/subscribe): the payload shape its
    # deliveries take ("" = the native one) and that shape's vocabulary, as JSON
    # (services/hook_formats.py)
    payload_format: str = Field(default="", max_length=20)
    payload_options: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


class RefreshToken(SQLModel, table=True):
    """A Tiketti refresh token (resources.md §6): only its SHA-256 is kept. Each use rotates it
    (this row is marked used and a new one issued in the same family); presenting a used one
    again revokes the whole family, as a stolen copy would."""

    __tablename__ = "refresh_tokens"
    id: int | None = Field(default=None, primary_key=True)
    token_sha256: str = Field(max_length=64, unique=True)
    family: str = Field(max_length=64, index=True)
    agent_email: str = Field(max_length=320)
    created_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column())
    used_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class InterventionInstance(SQLModel, table=True):
    """One intervention started by a remote system (api-contract.md §4.9): its data bag, the
    ticket it opened and where it stands. UNIQUE(name, uid) is what makes a second create with
    the same pair lose, even when two arrive at once (services/interventions.py)."""

    __tablename__ = "intervention_instances"
    __table_args__ = (UniqueConstraint("name", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    uid: str = Field(max_length=255)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    data: str = Field(
        default="{}", sa_column=Column(Text, nullable=False, default="{}")
    )  # JSON object
    state: str = Field(
        default="open", max_length=20, index=True
    )  # open | submitted | completed | failed
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())
    submitted_by_email: str | None = Field(default=None, max_length=320)
    submitted_response_id: int | None = None
    submitted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class TicketEvent(SQLModel, table=True):
    """One change to a ticket (domain/events.py), appended in the transaction of the change and
    never updated: the ticket's history, and what notices, webhooks, reports and SLAs derive
    from. `data` is a JSON object whose keys depend on `type`."""

    __tablename__ = "ticket_events"
    __table_args__ = (Index("ix_ticket_events_ticket_id_id", "ticket_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id")
    type: str = Field(max_length=40, index=True)
    at: datetime = Field(sa_column=utc_column(index=True))
    actor_kind: str = Field(max_length=20)  # customer | agent | token | system
    actor_email: str | None = Field(default=None, max_length=320)
    actor_name: str = Field(default="", max_length=400)
    channel: str = Field(max_length=20)  # smtp | imap | api | cli | scheduler | import
    data: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


# -- contacts (resources.md §3) ----------------------------------------------------------------


class Contact(SQLModel, table=True):
    """A customer: made by their first ticket, or by POST /api/v1/contacts. `email` is the main
    address; every address of the contact, the main one included, is a ContactAddress row."""

    __tablename__ = "contacts"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=400)
    company: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=50)
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(sa_column=utc_column())
    updated_at: datetime = Field(sa_column=utc_column())


class ContactAddress(SQLModel, table=True):
    """One address of a contact. UNIQUE(email) is what makes an address belong to at most one
    contact, even when two first mails from it arrive at once."""

    __tablename__ = "contact_addresses"
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    email: str = Field(max_length=320, unique=True)


# -- custom fields and time entries (resources.md §2-3) ------------------------------------------

_Day = date  # a column is named `date` below; the alias keeps the type readable in the class


class TicketFieldValue(SQLModel, table=True):
    """The value of one custom field (config `[[custom_fields]]`) on one ticket, as JSON; an
    unset field has no row. services/custom_fields.py checks every value before it is written."""

    __tablename__ = "ticket_field_values"
    __table_args__ = (UniqueConstraint("ticket_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    name: str = Field(max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    updated_at: datetime = Field(sa_column=utc_column())


class TimeEntry(SQLModel, table=True):
    """Time spent on a ticket: minutes, whether billable, what was done, by whom, on which day."""

    __tablename__ = "time_entries"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    minutes: int
    billable: bool = False
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    agent_email: str | None = Field(default=None, max_length=320)
    date: _Day
    created_at: datetime = Field(sa_column=utc_column())


class TicketWatcher(SQLModel, table=True):
    """An agent who follows a ticket: they get the notices its assignee gets
    (services/reactions.py)."""

    __tablename__ = "ticket_watchers"
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    email: str = Field(max_length=320)
    created_at: datetime = Field(sa_column=utc_column())


# -- SLA and lifecycle state (resources.md §9) ----------------------------------------------------


class TicketSla(SQLModel, table=True):
    """A ticket's SLA due times, kept in the transaction of every change that moves them
    (services/sla.py), and what the scheduled jobs already did about them. `*_warn_at` is the
    80% point; `*_warned_at` / `*_breached_at` are set by a conditional UPDATE when the notice
    is recorded, so a restart or a second daemon never sends one twice. `reminded_at` is the
    last "untouched for N days" reminder (services/lifecycle.py). Every ticket has one row;
    `rule` is "" when no `[[sla]]` entry matches it."""

    __tablename__ = "ticket_sla"
    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    rule: str = Field(default="", max_length=200)
    first_response_due_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True, index=True)
    )
    first_response_warn_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True, index=True)
    )
    first_response_warned_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True)
    )
    first_response_breached_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True)
    )
    resolution_due_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True, index=True)
    )
    resolution_warn_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True, index=True)
    )
    resolution_warned_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    resolution_breached_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True)
    )
    reminded_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    computed_at: datetime = Field(sa_column=utc_column())
