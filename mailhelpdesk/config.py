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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


@dataclass(frozen=True)
class LifecycleConfig:
    # a trashed ticket is deleted for good this long after it was trashed ("30d", "12h";
    # empty: never purged)
    purge_trashed_after: str = "30d"

    @property
    def purge_trashed_after_s(self) -> int:
        """The same in seconds (0: never); the text was checked when the config was loaded."""
        text = self.purge_trashed_after.strip()
        return parse_duration_s(text, "lifecycle.purge_trashed_after") if text else 0


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
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    interventions: tuple[InterventionConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http_deliveries: HttpDeliveriesConfig = field(default_factory=HttpDeliveriesConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    custom_fields: tuple[CustomFieldConfig, ...] = ()
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    source: str = "<embedded defaults>"  # where the config came from, for logs and `check`

    def inbound_addresses(self) -> dict[str, str]:
        """Lower-cased address -> queue name, for every address mail is accepted for."""
        found = {self.helpdesk.address.lower(): "Inbox"}
        for queue in self.queues:
            if queue.address:
                found[queue.address.lower()] = queue.name
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
    return _check_lifecycle(
        _check_custom_fields(
            _check_interventions(
                _check_webhooks(_check_deliveries(_check_api(_build(Config, data, prefix=""))))
            )
        )
    )


def _check_lifecycle(config: Config) -> Config:
    """`[lifecycle] purge_trashed_after` must be a duration (or empty: never): checked here, so a
    bad value stops the start with the key named, not the purge job later."""
    _ = config.lifecycle.purge_trashed_after_s
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
