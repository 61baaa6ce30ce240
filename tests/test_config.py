"""Config loading as DESIGN.md §4-5 says: file resolution, defaults, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailhelpdesk.config import Config, ConfigError, config_from_dict, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_embedded_defaults_match_the_contract(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILHELPDESK_CONFIG", raising=False)
    config = load_config(None)
    assert config.database.url == "sqlite:///mailhelpdesk.db"
    assert (config.smtp_listener.host, config.smtp_listener.port) == ("127.0.0.1", 2525)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8025)
    assert config.smtp_relay.host == "" and config.smtp_relay.maildir == "outbound-mail"
    assert config.helpdesk.address == "support@localhost"


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailhelpdesk.toml").write_text('[helpdesk]\nname = "local"\n')
    env = tmp_path / "env.toml"
    env.write_text('[helpdesk]\nname = "env"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[helpdesk]\nname = "explicit"\n')
    monkeypatch.delenv("MAILHELPDESK_CONFIG", raising=False)
    assert load_config(None).helpdesk.name == "local"
    monkeypatch.setenv("MAILHELPDESK_CONFIG", str(env))
    assert load_config(None).helpdesk.name == "env"
    assert load_config(str(explicit)).helpdesk.name == "explicit"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp_listener": {"port": "25"}}, "smtp_listener.port: expected an integer"),
        ({"smtp_listener": {"port": 70000}}, "smtp_listener.port: expected a port number"),
        ({"smtp_listener": {"prot": 25}}, "smtp_listener.prot: unknown key"),
        (
            {"smtp_relay": {"security": "tls"}},
            "smtp_relay.security: expected one of ssl, starttls, none",
        ),
        (
            {"imap_mailboxes": [{"name": "x", "host": "h"}]},
            "imap_mailboxes[0].username: required key is missing",
        ),
        ({"queues": {"name": "x"}}, "queues: expected an array"),
        ({"http": {"enabled": "yes"}}, "http.enabled: expected true or false"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(message)


def test_example_config_documents_every_key_and_loads() -> None:
    """config.example.toml is valid, and every key of every table appears in it."""
    import dataclasses
    import tomllib
    import typing

    text = EXAMPLE.read_text()
    config = load_config(str(EXAMPLE))
    assert isinstance(config, Config)
    data = tomllib.loads(text)

    def keys(cls: type, table: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            assert f"{f.name} =" in text or f"[{f.name}]" in text or f"[[{f.name}]]" in text, (
                f"{table}{f.name} undocumented"
            )
            hint = hints[f.name]
            inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
            if dataclasses.is_dataclass(inner):
                keys(inner, f"{f.name}.")

    keys(Config, "")
    assert data["helpdesk"]["address"]


def test_idempotency_ttl_as_a_duration_string() -> None:
    assert config_from_dict({"api": {"idempotency_ttl": "2d"}}).api.idempotency_ttl_s == 172800
    assert config_from_dict({"api": {"idempotency_ttl": "24h"}}).api.idempotency_ttl_s == 86400
    for bad, why in (("30m", "at least 1h"), ("soon", "expected a duration")):
        with pytest.raises(ConfigError, match=f"api.idempotency_ttl: .*{why}"):
            config_from_dict({"api": {"idempotency_ttl": bad}})
