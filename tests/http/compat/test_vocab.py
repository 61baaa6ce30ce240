"""The vocabulary maps of the seed adapters: read from `[compat.<seed>]`, matched in any case,
shown as the first seed word naming ours, and refused in the field's name when unknown."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from mailhelpdesk.config import ConfigError, config_from_dict
from mailhelpdesk.http.compat import vocab
from mailhelpdesk.services.compat_vocab import FieldError, Vocabulary


def test_maps_come_from_the_config() -> None:
    cfg = config_from_dict(
        {"compat": {"tihelpdesk": {"statuses": {"Neu": "open", "Zu": "closed"}, "on_hold_days": 3}}}
    )
    words = vocab.tihelpdesk(cfg.compat.tihelpdesk)
    assert words.status_in("neu", today=date(2026, 1, 1)) == ("open", None)
    assert words.status_out("closed") == "Zu"
    with pytest.raises(ConfigError, match=r"compat\.tihelpdesk\.statuses: expected a table"):
        config_from_dict({"compat": {"tihelpdesk": {"statuses": {"Open": 1}}}})
    with pytest.raises(ConfigError, match=r"compat\.teamswork\.statuses\.Done: expected one of"):
        config_from_dict({"compat": {"teamswork": {"statuses": {"Done": "finished"}}}})
    with pytest.raises(ConfigError, match=r"compat\.tiketti\.priorities\.p1: expected one of"):
        config_from_dict({"compat": {"tiketti": {"priorities": {"p1": "critical"}}}})
    with pytest.raises(ConfigError, match=r"compat\.tihelpdesk\.nope: unknown key"):
        config_from_dict({"compat": {"tihelpdesk": {"nope": 1}}})


def test_on_hold_gets_a_date_and_unknown_words_name_the_field() -> None:
    words = Vocabulary(statuses={"Pending": "on-hold"}, priorities={"Medium": "normal"})
    today = date(2026, 12, 5)
    assert words.status_in("PENDING", today=today) == ("on-hold", today + timedelta(days=7))
    with pytest.raises(FieldError) as err:
        words.status_in("Sideways", today=today, name="ticket_status")
    assert err.value.field == "ticket_status"
    assert words.priority_out(20) == "Medium" and words.priority_out(40) == "Urgent"
    assert Vocabulary.from_json(words.to_json()) == words
