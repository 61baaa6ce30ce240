"""Configuration: one TOML file (or none) turned into frozen dataclasses.

The table and key names are the user-facing contract of DESIGN.md §5. Every error names the
key (`smtp_listener.port: expected an integer`) so an operator never sees a traceback. There is
no module-level config object: `load_config` returns one and the composition root passes it down.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENV_VAR = "MAILHELPDESK_CONFIG"
DEFAULT_FILE = "mailhelpdesk.toml"


class ConfigError(Exception):
    """A config file that cannot be used; the message names the key at fault."""


@dataclass(frozen=True)
class HelpdeskConfig:
    name: str = "Helpdesk"
    address: str = "support@localhost"
    secret: str = ""
    secret_file: str = ""
    # sender name of an agent's answer to a customer ({agent}, {helpdesk}); From is our address
    agent_name_format: str = "{agent} via {helpdesk}"
    # authserv-ids of our own receiving MTA(s) whose topmost Authentication-Results header is
    # believed (DKIM/DMARC pass verifies an agent's mail); empty: only signed reply addresses do
    trusted_authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///mailhelpdesk.db"
    # SQLite: PRAGMA synchronous; FULL makes a commit survive power loss, NORMAL only a crash
    sqlite_synchronous: str = "FULL"


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8025
    max_request_bytes: int = 30_000_000
    # the address customers reach this API at (https://help.example.com): the base of the status
    # page link `{{ ticket.secure_url }}` in notices; empty: notices carry no link
    public_url: str = ""
    # requests one client address may make to the status page per minute (429 above)
    status_page_requests_per_minute: int = 30
    # reverse proxies (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto
    # are believed; empty: none are, the client is the socket's peer (issue 17: anyone could
    # name their own address and dodge the per-IP limit of the unauthenticated mint endpoint)
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmtpListenerConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2525
    max_message_bytes: int = 26_214_400
    # how long SMTP sessions wait together so their messages share one commit
    group_commit_window_ms: int = 2
    # hostname announced in the greeting; empty: the machine's FQDN
    hostname: str = ""
    # addresses or CIDR networks of the operator's relays (the MTA in front of the listener):
    # only mail they hand over has its Authentication-Results believed (issue 17); empty: none
    trusted_relays: tuple[str, ...] = ()
    # bounds under abuse, as Postfix has them (docs/operations.md "Bounds under abuse"):
    # accepted recipients per message (452 past it; RFC 5321 asks for at least 100)
    max_recipients: int = 100
    # refused commands (RCPT to unknown addresses, recipients past the limit) before 421 and close
    max_errors: int = 20
    # concurrent sessions in all, and from one client address (421 to the next one)
    max_sessions: int = 100
    max_sessions_per_client: int = 10
    # messages of more than 1 MiB that may be received at once; the rest wait for a slot, so
    # message bytes held in memory stay under about large_messages_in_flight x max_message_bytes
    large_messages_in_flight: int = 4
    # a session silent this long gets 421 and is closed; a whole session ends after session_s
    idle_timeout_s: int = 120
    session_s: int = 1800


@dataclass(frozen=True)
class ImapMailboxConfig:
    name: str
    host: str
    username: str
    port: int = 993
    security: str = "ssl"
    password: str = ""
    password_file: str = ""
    auth: str = "login"
    oauth2_token_command: str = ""
    ca_file: str = ""
    verify_tls: bool = True
    folder: str = "INBOX"
    processed_folder: str = ""
    idle: bool = True
    poll_interval_s: int = 60
    queue: str = "Inbox"


@dataclass(frozen=True)
class SmtpRelayConfig:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = ""
    password_file: str = ""
    # CA bundle the relay's certificate is checked against (a private CA, a self-signed relay);
    # empty: the system's CAs. verify_tls = false accepts any certificate (a test relay only)
    ca_file: str = ""
    verify_tls: bool = True
    maildir: str = "outbound-mail"
    timeout_s: int = 30
    # temporary failures (4xx, connection errors) are retried after retry_base_s, doubling up to
    # retry_max_s, until deadline_s after the message was queued; then the message is failed
    retry_base_s: int = 30
    retry_max_s: int = 3600
    deadline_s: int = 172800


@dataclass(frozen=True)
class QueueConfig:
    name: str
    address: str = ""
    acknowledge: bool = True


@dataclass(frozen=True)
class AgentConfig:
    email: str
    name: str = ""
    alternate_addresses: tuple[str, ...] = ()
    # the queues this agent's API tokens (token create --owner) see; empty: every queue
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboundConfig:
    # automatic notices to one recipient (customers; agents are exempt) within the sliding window
    max_auto_notices_per_window: int = 10
    auto_notice_window_s: int = 3600
    # an address whose mail bounced for good gets no automatic notices for this long
    suppress_bouncing_s: int = 604800
    # automatic notices are written as what to render and composed by the sender just before
    # sending (short transactions for the change that caused them); false: composed at once
    compose_in_sender: bool = True


@dataclass(frozen=True)
class TemplatesConfig:
    # a folder searched before the shipped templates (notices/<name>.subject.txt, .txt, .html)
    dir: str = ""


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 64
    # an ingest batch commits after this long, so SMTP sessions waiting for their 250 are not
    # held behind it: lower answers senders sooner, higher files tickets a little faster
    batch_budget_ms: int = 25
    # CC amplification (issue 17): at most this many CCs are taken from one message, and a
    # ticket never has more than max_ccs_per_ticket; the rest are left out (logged), so one mail
    # with thousands of Cc: addresses cannot make every answer go to thousands of people
    max_ccs_per_message: int = 20
    max_ccs_per_ticket: int = 50
    # remote images in HTML mail (tracking pixels) are replaced by a placeholder when the mail
    # is filed; true keeps their addresses in the stored, sanitised HTML
    allow_remote_images: bool = False
    # processes that understand mail (parse, classify, visible text ...) outside the write
    # transaction, on every core (ingest/understanding.py): unset means the machine's CPU count,
    # 0 understands in the daemon's own process (no pool)
    understand_workers: int | None = None
    # a message whose understanding takes longer (or kills its process) is set aside with that
    # reason and the pool rebuilt; the rest of its batch goes on
    understand_timeout_s: int = 30

    def understand_pool_size(self) -> int:
        """The pool's size: `understand_workers`, or the CPU count when it is unset."""
        if self.understand_workers is None:
            return os.cpu_count() or 1
        return self.understand_workers


MAX_UNDERSTAND_WORKERS = 64


@dataclass(frozen=True)
class ClusterConfig:
    """Several daemons on one PostgreSQL database (docs/operations.md "Scale-out"). Each IMAP
    mailbox and each scheduled job is worked by the daemon holding its lease in the database;
    a lease not renewed for `lease_ttl_s` (its holder died) is taken over by another daemon."""

    # how long a lease lasts without renewal; holders renew it every third of this. Shorter
    # takes a dead daemon's mailboxes over sooner; it must stay well above the clock skew
    # between the daemons' hosts and above the longest stall of a daemon's database thread
    lease_ttl_s: int = 30


@dataclass(frozen=True)
class ApiConfig:
    # how long a completed Idempotency-Key is remembered (replayed) before it is purged
    idempotency_ttl_s: int = 86400
    # the same as a duration string ("24h", "2d"; api-contract.md §3.2); wins when set; minimum 1 h
    idempotency_ttl: str = ""
    # how long an in-progress claim is leased before a retry may take it over
    idempotency_lease_s: int = 60
    # sliding-window rate limit per token (per client IP for the unauthenticated endpoint)
    rate_limit_requests: int = 100
    rate_limit_window_s: int = 60
    # largest request body accepted (413 above)
    max_body_bytes: int = 10_485_760
    # unused keys minted by the unauthenticated POST /api/idempotency_key that may exist at
    # once; beyond it the endpoint answers 503 until some are used or expire
    max_minted_keys: int = 10_000


@dataclass(frozen=True)
class HttpDeliveriesConfig:
    # outgoing HTTP calls (webhooks, intervention epilogs): a try without a 2xx answer within
    # timeout_s is retried after retry_base_s, doubling up to retry_max_s, max_attempts tries in all
    retry_base_s: int = 60
    retry_max_s: int = 21600
    max_attempts: int = 10
    timeout_s: int = 10


WEBHOOK_EVENTS = ("ticket.created", "response.created", "ticket.status_changed", "ticket.assigned")


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    # the events POSTed to url (WEBHOOK_EVENTS); empty: all of them
    events: tuple[str, ...] = ()
    # HMAC-SHA256 key for the X-Mailhelpdesk-Signature header (empty, and no secret_file: unsigned)
    secret: str = ""
    secret_file: str = ""


@dataclass(frozen=True)
class InterventionFieldConfig:
    name: str
    type: str = "text"  # text | checkbox
    label: str = ""  # may use {{placeholders}} from the data bag


@dataclass(frozen=True)
class InterventionConfig:
    """One `[[interventions]]` entry (api-contract.md §4.9; services/interventions.py)."""

    name: str
    title: str = ""
    queue: str = "Inbox"
    remote_enabled: bool = True
    remote_epilog_url: str = ""
    remote_timeout_s: int = 10
    # the per-intervention secret: sent as `Authorization: Bearer …` and the HMAC key of the signature
    token: str = ""
    token_file: str = ""
    fields: tuple[InterventionFieldConfig, ...] = ()


CUSTOM_FIELD_TYPES = ("text", "number", "date", "choice", "multi_choice", "toggle")


@dataclass(frozen=True)
class CustomFieldConfig:
    """One `[[custom_fields]]` entry (resources.md §3; services/custom_fields.py validates the
    values against it on every write)."""

    name: str
    label: str = ""  # shown to people; the name when empty
    type: str = "text"  # text | number | date | choice | multi_choice | toggle
    choices: tuple[str, ...] = ()  # choice and multi_choice only
    required_to_close: bool = False  # a ticket cannot be closed while the field is unset


def _optional_duration_s(text: str, key: str) -> int:
    """A duration in seconds, or 0 for an empty value (never)."""
    return parse_duration_s(text, key) if text.strip() else 0


@dataclass(frozen=True)
class TiHelpdeskCompatConfig:
    """`[compat.tihelpdesk]`: the tiHelpdesk adapter's vocabulary (docs/compat.md). Each map is
    the seed's word -> ours; the first seed word naming one of ours is what we show."""

    subdomain: str = ""  # when set, `subdomain` in a request must equal it (else any is accepted)
    statuses: dict[str, str] = field(
        default_factory=lambda: {
            "Open": "open",
            "Pending": "on-hold",
            "Closed": "closed",
            "Resolving": "open",
            "Resolved": "closed",
        }
    )
    priorities: dict[str, str] = field(
        default_factory=lambda: {
            "Low": "low",
            "Medium": "normal",
            "High": "high",
            "Urgent": "urgent",
        }
    )
    on_hold_days: int = 7  # a status mapped to on-hold waits this many days
    product_field: str = "product"  # the [[custom_fields]] name holding `product` ("": none)
    type_field: str = "type"  # the [[custom_fields]] name holding `type` ("": none)


@dataclass(frozen=True)
class TikettiCompatConfig:
    """`[compat.tiketti]`: the Tiketti adapter's JWT lifetimes and vocabulary."""

    access_ttl_s: int = 900  # a JWT access token lives this long
    refresh_ttl_s: int = 2_592_000  # a refresh token (rotated on every use) lives this long
    organization_id: str = ""  # the X-Organization-Id accepted ("": derived from the secret)
    statuses: dict[str, str] = field(
        default_factory=lambda: {
            "open": "open",
            "pending": "on-hold",
            "resolved": "closed",
            "closed": "closed",
        }
    )
    priorities: dict[str, str] = field(
        default_factory=lambda: {
            "low": "low",
            "normal": "normal",
            "high": "high",
            "urgent": "urgent",
        }
    )
    on_hold_days: int = 7


@dataclass(frozen=True)
class TeamsworkCompatConfig:
    """`[compat.teamswork]`: the Teamswork adapter's vocabulary."""

    statuses: dict[str, str] = field(
        default_factory=lambda: {
            "Open": "open",
            "Closed": "closed",
            "Reopened": "open",
            "Started": "open",
            "Resolved": "closed",
        }
    )
    priorities: dict[str, str] = field(
        default_factory=lambda: {
            "Low": "low",
            "Medium": "normal",
            "Important": "high",
            "Urgent": "urgent",
        }
    )
    on_hold_days: int = 7


@dataclass(frozen=True)
class HappyFoxStatusConfig:
    """One HappyFox status (docs/compat.md): its id and name on the wire, and our status."""

    id: int
    name: str
    status: str  # open | on-hold | closed
    color: str = "888888"
    default: bool = False


@dataclass(frozen=True)
class HappyFoxPriorityConfig:
    """One HappyFox priority: its id and name on the wire, and our priority."""

    id: int
    name: str
    priority: str  # low | normal | high | urgent
    default: bool = False


def _happyfox_statuses() -> tuple[HappyFoxStatusConfig, ...]:
    return (
        HappyFoxStatusConfig(1, "Open", "open", "1FA3E0", default=True),
        HappyFoxStatusConfig(2, "On Hold", "on-hold", "E8A317"),
        HappyFoxStatusConfig(3, "Closed", "closed", "4CAF50"),
    )


def _happyfox_priorities() -> tuple[HappyFoxPriorityConfig, ...]:
    return (
        HappyFoxPriorityConfig(1, "Low", "low"),
        HappyFoxPriorityConfig(2, "Medium", "normal", default=True),
        HappyFoxPriorityConfig(3, "High", "high"),
        HappyFoxPriorityConfig(4, "Critical", "urgent"),
    )


@dataclass(frozen=True)
class HappyFoxConfig:
    """`[compat.happyfox]`: the vocabulary the HappyFox adapter speaks (http/compat/happyfox*)."""

    # display ids are "#" + this prefix + the ticket number in 8 digits ("#MH00000042")
    display_prefix: str = "MH"
    # a status that means on-hold holds the ticket until its due date, else this many days
    on_hold_days: int = 7
    statuses: tuple[HappyFoxStatusConfig, ...] = field(default_factory=_happyfox_statuses)
    priorities: tuple[HappyFoxPriorityConfig, ...] = field(default_factory=_happyfox_priorities)


@dataclass(frozen=True)
class CompatConfig:
    """`[compat.*]`: the seed adapters of resources.md §6 (mailhelpdesk/http/compat/)."""

    tihelpdesk: TiHelpdeskCompatConfig = field(default_factory=TiHelpdeskCompatConfig)
    tiketti: TikettiCompatConfig = field(default_factory=TikettiCompatConfig)
    teamswork: TeamsworkCompatConfig = field(default_factory=TeamsworkCompatConfig)
    happyfox: HappyFoxConfig = field(default_factory=HappyFoxConfig)


@dataclass(frozen=True)
class LifecycleConfig:
    # a trashed ticket is deleted for good this long after it was trashed ("30d", "12h";
    # empty: never purged)
    purge_trashed_after: str = "30d"
    # an open ticket whose last public message is an agent's answer, with no customer reply for
    # this long, is closed (with the closing notice); empty: never
    auto_close_after: str = ""
    # the assignee (else every agent) is reminded of an open ticket nobody touched for this
    # long, once per quiet spell; empty: never
    remind_untouched_after: str = ""
    # attachment bytes no attachment refers to any more are deleted by a scheduled job
    purge_unreferenced_blobs: bool = True

    @property
    def purge_trashed_after_s(self) -> int:
        """The same in seconds (0: never); the text was checked when the config was loaded."""
        return _optional_duration_s(self.purge_trashed_after, "lifecycle.purge_trashed_after")

    @property
    def auto_close_after_s(self) -> int:
        return _optional_duration_s(self.auto_close_after, "lifecycle.auto_close_after")

    @property
    def remind_untouched_after_s(self) -> int:
        return _optional_duration_s(self.remind_untouched_after, "lifecycle.remind_untouched_after")


PRIORITY_NAMES = ("Low", "Normal", "High", "Urgent")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class SlaConfig:
    """One `[[sla]]` entry (resources.md §9): targets for tickets of a queue and priority ("*"
    matches any). The first entry that matches a ticket wins, so put specific entries first."""

    queue: str = "*"
    priority: str = "*"
    first_response: str = ""  # a duration of business time ("1h", "2d"); empty: no target
    resolution: str = ""

    @property
    def first_response_s(self) -> int:
        return _optional_duration_s(self.first_response, "sla.first_response")

    @property
    def resolution_s(self) -> int:
        return _optional_duration_s(self.resolution, "sla.resolution")


@dataclass(frozen=True)
class BusinessHoursConfig:
    """`[business_hours]`: when SLA clocks run. The defaults are every hour of every day."""

    timezone: str = "UTC"
    days: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    start: str = "00:00"
    end: str = "24:00"  # 24:00 is the end of the day
    holidays: tuple[str, ...] = ()  # ISO dates, local to `timezone`

    def weekdays(self) -> frozenset[int]:
        """The working days, Monday = 0 (names or their first three letters, any case)."""
        found = set()
        for index, text in enumerate(self.days):
            key = text.strip().lower()
            day = next((i for i, name in enumerate(WEEKDAYS) if key in (name, name[:3])), None)
            if day is None:
                raise ConfigError(f"business_hours.days[{index}]: unknown weekday {text!r}")
            found.add(day)
        return frozenset(found)

    def start_time(self) -> time:
        value = _clock_time(self.start, "business_hours.start")
        if value is None:
            raise ConfigError("business_hours.start: 24:00 is not a start")
        return value

    def end_time(self) -> time | None:
        """None: the end of the day (24:00)."""
        return _clock_time(self.end, "business_hours.end")

    def holiday_dates(self) -> frozenset[date]:
        found = set()
        for index, text in enumerate(self.holidays):
            try:
                found.add(date.fromisoformat(text.strip()))
            except ValueError:
                raise ConfigError(
                    f"business_hours.holidays[{index}]: expected a date YYYY-MM-DD, not {text!r}"
                ) from None
        return frozenset(found)


def _clock_time(text: str, key: str) -> time | None:
    """`HH:MM`; `24:00` is the end of the day (None)."""
    hours, sep, minutes = text.strip().partition(":")
    if sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2:
        h, m = int(hours), int(minutes)
        if (h, m) == (24, 0):
            return None
        if 0 <= h <= 23 and 0 <= m <= 59:
            return time(h, m)
    raise ConfigError(f"{key}: expected a time HH:MM (00:00 to 24:00), not {text!r}")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"  # text | json


@dataclass(frozen=True)
class Config:
    helpdesk: HelpdeskConfig = field(default_factory=HelpdeskConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    smtp_listener: SmtpListenerConfig = field(default_factory=SmtpListenerConfig)
    imap_mailboxes: tuple[ImapMailboxConfig, ...] = ()
    smtp_relay: SmtpRelayConfig = field(default_factory=SmtpRelayConfig)
    queues: tuple[QueueConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    ingest: IngestConfig = field(default_factory=IngestConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    interventions: tuple[InterventionConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http_deliveries: HttpDeliveriesConfig = field(default_factory=HttpDeliveriesConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    custom_fields: tuple[CustomFieldConfig, ...] = ()
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    compat: CompatConfig = field(default_factory=CompatConfig)
    sla: tuple[SlaConfig, ...] = ()
    business_hours: BusinessHoursConfig = field(default_factory=BusinessHoursConfig)
    source: str = "<embedded defaults>"  # where the config came from, for logs and `check`

    def inbound_addresses(self) -> dict[str, str]:
        """Lower-cased address -> queue name, for every address mail is accepted for."""
        found = {self.helpdesk.address.lower(): "Inbox"}
        for queue in self.queues:
            if queue.address:
                found[queue.address.lower()] = queue.name
        # delivery reports come back to the signed return path bounces+<tag>@<domain>
        # (mail/verp.py): the listener must accept it, and it is our own address
        domain = self.helpdesk.address.rpartition("@")[2].strip().lower() or "localhost"
        found.setdefault(f"bounces@{domain}", "Inbox")
        return found


_CHOICES = {
    ("imap_mailboxes", "security"): ("ssl", "starttls", "none"),
    ("imap_mailboxes", "auth"): ("login", "xoauth2"),
    ("smtp_relay", "security"): ("ssl", "starttls", "none"),
    ("logging", "format"): ("text", "json"),
    ("logging", "level"): ("DEBUG", "INFO", "WARNING", "ERROR"),
    ("database", "sqlite_synchronous"): ("OFF", "NORMAL", "FULL", "EXTRA"),
    ("interventions", "type"): ("text", "checkbox"),
    ("custom_fields", "type"): CUSTOM_FIELD_TYPES,
}


def resolve_path(explicit: str | None) -> Path | None:
    """The config file DESIGN.md §4 says to use: PATH, else $MAILHELPDESK_CONFIG, else ./mailhelpdesk.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path(DEFAULT_FILE)
    return local if local.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    """Read and validate the config file (or return the embedded defaults)."""
    path = resolve_path(explicit)
    if path is None:
        return Config()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    config = config_from_dict(data)
    return dataclasses.replace(config, source=str(path))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, naming the first key that is wrong."""
    config: Config = _build(Config, data, prefix="")
    for check in _CHECKS:
        config = check(config)
    return config


def _check_http(config: Config) -> Config:
    """`[http] public_url` must be an absolute http(s) URL with no query: it is pasted into
    customers' notices, so a typo must stop the start, not reach them."""
    url = config.http.public_url
    if url:
        parts = urllib.parse.urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                f"http.public_url: expected an absolute http(s) URL such as "
                f"https://help.example.com, not {url!r}"
            )
    if config.http.status_page_requests_per_minute < 1:
        raise ConfigError("http.status_page_requests_per_minute: must be at least 1")
    return config


def _check_smtp_relay(config: Config) -> Config:
    """TLS settings of `[smtp_relay]` are checked at start: a CA file that is not there would
    otherwise show only as every notice failing its TLS handshake, and TLS options next to
    `security = "none"` mean the operator believes the connection is encrypted when it is not."""
    relay = config.smtp_relay
    if relay.security == "none" and (relay.ca_file or not relay.verify_tls):
        key = "ca_file" if relay.ca_file else "verify_tls"
        raise ConfigError(
            f'smtp_relay.{key}: has no effect with security = "none" (the connection is not '
            "encrypted); remove it or choose ssl or starttls"
        )
    if relay.ca_file and not os.access(relay.ca_file, os.R_OK):
        raise ConfigError(f"smtp_relay.ca_file: cannot read {relay.ca_file}")
    return config


_OUR_STATUSES = ("open", "on-hold", "closed")
_OUR_PRIORITIES = ("low", "normal", "high", "urgent")


def _check_compat(config: Config) -> Config:
    """Every `[compat.<seed>]` map names our own statuses and priorities, so a typo stops the
    start with the key named instead of refusing requests later."""
    for seed in ("tihelpdesk", "tiketti", "teamswork"):
        table = getattr(config.compat, seed)
        for key, ours in (("statuses", _OUR_STATUSES), ("priorities", _OUR_PRIORITIES)):
            for word, value in getattr(table, key).items():
                if value not in ours:
                    raise ConfigError(
                        f"compat.{seed}.{key}.{word}: expected one of {', '.join(ours)}"
                    )
    return config


HAPPYFOX_STATUSES = ("open", "on-hold", "closed")
HAPPYFOX_PRIORITIES = ("low", "normal", "high", "urgent")


def _check_happyfox(config: Config) -> Config:
    """`[compat.happyfox]`: ids unique, every status and priority one of ours, and each of ours
    named by at least one entry (else a ticket could be in a state the adapter cannot show)."""
    hf = config.compat.happyfox
    if not re.fullmatch(r"[A-Za-z]{0,10}", hf.display_prefix):
        raise ConfigError("compat.happyfox.display_prefix: expected up to 10 letters")
    for table, items, attr, ours in (
        ("statuses", hf.statuses, "status", HAPPYFOX_STATUSES),
        ("priorities", hf.priorities, "priority", HAPPYFOX_PRIORITIES),
    ):
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids) or any(i < 1 for i in ids):
            raise ConfigError(f"compat.happyfox.{table}: ids must be unique and at least 1")
        for i, item in enumerate(items):
            if getattr(item, attr) not in ours:
                raise ConfigError(
                    f"compat.happyfox.{table}[{i}].{attr}: expected one of {', '.join(ours)}"
                )
        missing = [o for o in ours if o not in {getattr(item, attr) for item in items}]
        if missing:
            raise ConfigError(f"compat.happyfox.{table}: nothing maps to {', '.join(missing)}")
    return config


def _check_lifecycle(config: Config) -> Config:
    """`[lifecycle] purge_trashed_after` must be a duration (or empty: never): checked here, so a
    bad value stops the start with the key named, not the purge job later."""
    _ = config.lifecycle.purge_trashed_after_s
    _ = config.lifecycle.auto_close_after_s
    _ = config.lifecycle.remind_untouched_after_s
    return config


def _check_sla(config: Config) -> Config:
    """`[[sla]]` entries name a known queue (or "*"), a priority (or "*") and at least one
    target; `[business_hours]` names a real time zone, weekdays, times and dates."""
    queues = {"Inbox", *(q.name for q in config.queues)}
    for index, item in enumerate(config.sla):
        key = f"sla[{index}]"
        if item.queue != "*" and item.queue not in queues:
            raise ConfigError(f'{key}.queue: unknown queue {item.queue!r} (or "*" for any)')
        if item.priority != "*" and item.priority.capitalize() not in PRIORITY_NAMES:
            raise ConfigError(f'{key}.priority: expected "*" or one of {", ".join(PRIORITY_NAMES)}')
        try:
            first, resolution = item.first_response_s, item.resolution_s
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("sla.", f"{key}.", 1)) from None
        if not first and not resolution:
            raise ConfigError(f"{key}: set first_response, resolution or both")
    hours = config.business_hours
    try:
        ZoneInfo(hours.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"business_hours.timezone: unknown time zone {hours.timezone!r}"
        ) from None
    if not hours.weekdays():
        raise ConfigError("business_hours.days: name at least one working day")
    start, end = hours.start_time(), hours.end_time()
    if end is not None and end <= start:
        raise ConfigError("business_hours.end: must be later than start")
    hours.holiday_dates()
    return config


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        values[name] = _coerce(hints[name], data[name], key, table=prefix.rstrip(".").split("[")[0])
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, table: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array")
        return tuple(_coerce(item, v, f"{key}[{i}]", table) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        return value
    if origin is dict:  # a vocabulary map ([compat.*]): word -> word
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{key}: expected a table of strings")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer")
        if value < 0:
            raise ConfigError(f"{key}: must not be negative")
        if key.endswith("port") and not 0 <= value <= 65535:
            raise ConfigError(f"{key}: expected a port number (0-65535)")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string")
        short = key.rsplit(".", 1)[-1]
        choices = _CHOICES.get((table, short))
        if choices is not None:
            normalised = (
                value.upper() if table in ("logging", "database") and short != "format" else value
            )
            if short == "format":
                normalised = value.lower()
            if normalised not in choices:
                raise ConfigError(f"{key}: expected one of {', '.join(choices)}")
            return normalised
        return value
    raise ConfigError(f"{key}: unsupported value")  # pragma: no cover - schema bug


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str, key: str) -> int:
    """Seconds in a duration such as `90s`, `30m`, `24h`, `7d`, `2w` (a bare number is seconds)."""
    value = text.strip().lower()
    number, unit = (value[:-1], value[-1]) if value and value[-1] in _UNITS else (value, "s")
    if not (number.isascii() and number.isdigit()) or int(number) <= 0:
        raise ConfigError(f"{key}: expected a duration such as 90s, 30m, 24h or 7d, not {text!r}")
    return int(number) * _UNITS[unit]


def _check_api(config: Config) -> Config:
    api = config.api
    if not api.idempotency_ttl:
        return config
    ttl = parse_duration_s(api.idempotency_ttl, "api.idempotency_ttl")
    if ttl < 3600:
        raise ConfigError("api.idempotency_ttl: must be at least 1h")
    return dataclasses.replace(config, api=dataclasses.replace(api, idempotency_ttl_s=ttl))


def _check_ingest(config: Config) -> Config:
    for name in ("max_ccs_per_message", "max_ccs_per_ticket"):
        if getattr(config.ingest, name) < 0:
            raise ConfigError(f"ingest.{name}: must not be negative")
    workers = config.ingest.understand_workers
    if workers is not None and (
        isinstance(workers, bool)
        or not isinstance(workers, int)
        or not 0 <= workers <= MAX_UNDERSTAND_WORKERS
    ):
        raise ConfigError(
            f"ingest.understand_workers: expected a whole number of processes from 0 (none: "
            f"understand in the daemon) to {MAX_UNDERSTAND_WORKERS}, not {workers!r}"
        )
    if config.ingest.understand_timeout_s < 1:
        raise ConfigError("ingest.understand_timeout_s: must be at least 1")
    return config


def _check_cluster(config: Config) -> Config:
    if config.cluster.lease_ttl_s < 1:
        raise ConfigError("cluster.lease_ttl_s: must be at least 1 (seconds)")
    return config


def _check_deliveries(config: Config) -> Config:
    d = config.http_deliveries
    for name in ("retry_base_s", "max_attempts", "timeout_s"):
        if getattr(d, name) < 1:
            raise ConfigError(f"http_deliveries.{name}: must be at least 1")
    if d.retry_max_s < d.retry_base_s:
        raise ConfigError("http_deliveries.retry_max_s: must not be less than retry_base_s")
    return config


def check_http_url(url: str, key: str) -> None:
    """An http(s) URL that an HTTP client can actually use: host present, port in range, no
    spaces or control characters (a URL that passes a prefix test but fails in the sender would
    fail every delivery instead of the config)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{key}: expected an http:// or https:// URL")
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(
            f"{key}: spaces, control and non-ASCII characters must be percent-encoded"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{key}: not a usable URL ({exc})") from None
    if not parts.hostname:
        raise ConfigError(f"{key}: the URL names no host")
    if port == 0:
        raise ConfigError(f"{key}: port 0 is not a port to send to")


def check_header_secret(value: str, key: str) -> str:
    """A secret sent in or signing a header: printable ASCII, no spaces, not empty."""
    if not value:
        raise ConfigError(f"{key}: is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ConfigError(f"{key}: printable ASCII without spaces only (it is sent in a header)")
    return value


def _check_webhooks(config: Config) -> Config:
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        key = f"webhooks[{i}]"
        if not hook.name or hook.name in seen:
            raise ConfigError(f"{key}.name: expected a unique, non-empty name")
        seen.add(hook.name)
        check_http_url(hook.url, f"{key}.url")
        if hook.secret:
            check_header_secret(hook.secret, f"{key}.secret")
        for j, event in enumerate(hook.events):
            if event not in WEBHOOK_EVENTS:
                raise ConfigError(f"{key}.events[{j}]: expected one of {', '.join(WEBHOOK_EVENTS)}")
    return config


def webhook_secret(hook: WebhookConfig, index: int = 0) -> bytes | None:
    """The HMAC key of one `[[webhooks]]` entry (the file wins), or None when it is unsigned."""
    if hook.secret_file:
        try:
            found = Path(hook.secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"webhooks[{index}].secret_file: cannot read {hook.secret_file}: {exc.strerror}"
            ) from None
        return check_header_secret(
            found, f"webhooks[{index}].secret_file ({hook.secret_file})"
        ).encode()
    return hook.secret.encode() if hook.secret else None


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _check_interventions(config: Config) -> Config:
    """Unique, file-name-safe intervention and field names; a remote call needs a URL and a token."""
    seen: set[str] = set()
    for i, item in enumerate(config.interventions):
        key = f"interventions[{i}]"
        if not _NAME.match(item.name) or ".." in item.name:
            raise ConfigError(
                f"{key}.name: letters, digits, '_', '-' and '.' only (it names template files)"
            )
        if item.name in seen:
            raise ConfigError(f"{key}.name: intervention {item.name!r} is defined twice")
        seen.add(item.name)
        if not item.queue.strip():
            raise ConfigError(f"{key}.queue: must not be empty")
        url = item.remote_epilog_url
        if url:
            check_http_url(url, f"{key}.remote_epilog_url")
        if item.token:
            check_header_secret(item.token, f"{key}.token")
        if item.remote_enabled and url and not (item.token or item.token_file):
            raise ConfigError(
                f"{key}.token: required (or token_file) when remote_enabled and remote_epilog_url are set"
            )
        if item.remote_timeout_s < 1:
            raise ConfigError(f"{key}.remote_timeout_s: must be at least 1")
        names: set[str] = set()
        for j, fld in enumerate(item.fields):
            if not _NAME.match(fld.name):
                raise ConfigError(f"{key}.fields[{j}].name: letters, digits, '_', '-' and '.' only")
            if fld.name.lower() in names:
                raise ConfigError(f"{key}.fields[{j}].name: field {fld.name!r} is defined twice")
            names.add(fld.name.lower())
    return config


_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_CHOICES, MAX_CHOICE_CHARS = 200, 200


def _check_custom_fields(config: Config) -> Config:
    """Unique lower-case names (they are written in mail commands and `cf.<name>` filters);
    choices exactly for the choice types, unique and non-empty; the label defaults to the name."""
    seen: set[str] = set()
    checked: list[CustomFieldConfig] = []
    for i, item in enumerate(config.custom_fields):
        key = f"custom_fields[{i}]"
        if not _FIELD_NAME.match(item.name):
            raise ConfigError(
                f"{key}.name: a lower-case letter, then lower-case letters, digits and '_' "
                "(at most 64)"
            )
        if item.name in seen:
            raise ConfigError(f"{key}.name: custom field {item.name!r} is defined twice")
        seen.add(item.name)
        choosing = item.type in ("choice", "multi_choice")
        if choosing and not item.choices:
            raise ConfigError(f"{key}.choices: a {item.type} field needs at least one choice")
        if not choosing and item.choices:
            raise ConfigError(f"{key}.choices: only choice and multi_choice fields have choices")
        if len(item.choices) > MAX_CHOICES:
            raise ConfigError(f"{key}.choices: at most {MAX_CHOICES}")
        lowered: set[str] = set()
        for j, choice in enumerate(item.choices):
            if not choice.strip() or choice != choice.strip() or len(choice) > MAX_CHOICE_CHARS:
                raise ConfigError(
                    f"{key}.choices[{j}]: not empty, no surrounding spaces, "
                    f"at most {MAX_CHOICE_CHARS} characters"
                )
            if item.type == "multi_choice" and "," in choice:
                raise ConfigError(
                    f"{key}.choices[{j}]: a multi_choice choice has no ',' (it separates them)"
                )
            if choice.lower() in lowered:
                raise ConfigError(f"{key}.choices[{j}]: {choice!r} is listed twice")
            lowered.add(choice.lower())
        checked.append(dataclasses.replace(item, label=item.label.strip() or item.name))
    return dataclasses.replace(config, custom_fields=tuple(checked))


def read_intervention_token(item: InterventionConfig) -> str:
    """The intervention's bearer/HMAC secret, inline or from `token_file` (the file wins)."""
    if item.token_file:
        try:
            found = Path(item.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"intervention {item.name!r}: token_file: cannot read {item.token_file}: {exc.strerror}"
            ) from None
        return check_header_secret(
            found, f"intervention {item.name!r}: token_file ({item.token_file})"
        )
    return item.token


def read_secret(config: Config) -> bytes | None:
    """The configured HMAC key for reply addresses, or None (the store then keeps a generated one,
    so that several daemons on one database agree on it)."""
    helpdesk = config.helpdesk
    if helpdesk.secret_file:
        try:
            return Path(helpdesk.secret_file).read_text().strip().encode()
        except OSError as exc:
            raise ConfigError(
                f"helpdesk.secret_file: cannot read {helpdesk.secret_file}: {exc.strerror}"
            ) from None
    return helpdesk.secret.encode() if helpdesk.secret else None


def read_password(password: str, password_file: str, key: str) -> str:
    """A password given inline or in a file (the file wins; it keeps secrets out of the config)."""
    if password_file:
        try:
            return Path(password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"{key}.password_file: cannot read {password_file}: {exc.strerror}"
            ) from None
    return password


# cross-key checks and derived values, in order, after the types are checked by _build
_CHECKS: tuple[typing.Callable[[Config], Config], ...] = (
    _check_smtp_relay,
    _check_api,
    _check_ingest,
    _check_cluster,
    _check_deliveries,
    _check_webhooks,
    _check_interventions,
    _check_custom_fields,
    _check_lifecycle,
    _check_http,
    _check_compat,
    _check_happyfox,
    _check_sla,
)
