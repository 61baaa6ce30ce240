"""The HappyFox vocabulary, its configuration and the search-string reader, without a daemon."""

from __future__ import annotations

import pytest

from mailhelpdesk.config import ConfigError, CustomFieldConfig, HappyFoxConfig, config_from_dict
from mailhelpdesk.http.compat.happyfox_list import split_q
from mailhelpdesk.http.compat.happyfox_route import basic_token
from mailhelpdesk.http.compat.happyfox_vocab import Vocabulary, VocabularyError
from mailhelpdesk.http.errors import ApiError

FIELDS = (
    CustomFieldConfig("city", "City"),
    CustomFieldConfig("cities", "Cities", "multi_choice", ("Oslo", "Bergen")),
    CustomFieldConfig("seats", "Seats", "number"),
)


def test_defaults_and_translations() -> None:
    vocab = Vocabulary(HappyFoxConfig(), FIELDS)
    assert vocab.status_object("closed") == {
        "name": "Closed",
        "color": "4CAF50",
        "order": 3,
        "default": False,
        "behavior": "completed",
        "id": 3,
    }
    assert vocab.priority_object(20)["name"] == "Medium"
    assert vocab.priority_by_id(4).priority == "urgent"
    assert vocab.statuses_named(["open", "On Hold"]) == ["open", "on-hold"]
    assert vocab.display_id(42) == "#MH00000042"
    assert vocab.ticket_ref("#MH00000042") == vocab.ticket_ref("42") == 42
    with pytest.raises(VocabularyError):
        vocab.ticket_ref("XX00000042")
    assert vocab.field_value_in(FIELDS[1], [2, 1]) == ["Bergen", "Oslo"]
    assert vocab.field_value_in(FIELDS[2], "12") == 12
    assert vocab.choice_ids(FIELDS[1], ["Bergen"]) == [2]
    with pytest.raises(VocabularyError):
        vocab.field_value_in(FIELDS[1], [3])
    with pytest.raises(VocabularyError):
        vocab.field_by_id(4)


def test_configured_tables_and_their_checks() -> None:
    table = {
        "statuses": [
            {"id": 10, "name": "New", "status": "open"},
            {"id": 11, "name": "In Progress", "status": "open", "default": True},
            {"id": 12, "name": "Waiting", "status": "on-hold"},
            {"id": 13, "name": "Done", "status": "closed"},
        ],
        "display_prefix": "DC",
    }
    hf = config_from_dict({"compat": {"happyfox": table}}).compat.happyfox
    vocab = Vocabulary(hf, ())
    assert vocab.status_object("open")["name"] == "In Progress"
    assert vocab.statuses_named(["new"]) == ["open"]
    assert vocab.display_id(3) == "#DC00000003"
    for bad, message in (
        ({"statuses": [{"id": 1, "name": "Open", "status": "open"}]}, "nothing maps to"),
        ({"priorities": [{"id": 1, "name": "x", "priority": "huge"}]}, "expected one of"),
        ({"display_prefix": "M-H"}, "display_prefix"),
        (
            {
                "statuses": [
                    {"id": 1, "name": "a", "status": "open"},
                    {"id": 1, "name": "b", "status": "on-hold"},
                    {"id": 2, "name": "c", "status": "closed"},
                ]
            },
            "ids must be unique",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"compat": {"happyfox": bad}})


def test_search_strings_as_the_document_writes_them() -> None:
    assert split_q('status:"In+Progress","New"') == ([("status", ["In Progress", "New"])], [])
    assert split_q('tag:"routine_checks"+status:"In+Progress","New"') == (
        [("tag", ["routine_checks"]), ("status", ["In Progress", "New"])],
        [],
    )
    assert split_q("contact: \u201cjames@example.com\u201d") == (
        [("contact", ["james@example.com"])],
        [],
    )
    assert split_q('Field1:"value1" "Field2":"value 2"') == (
        [("Field1", ["value1"]), ("Field2", ["value 2"])],
        [],
    )
    assert split_q("id:DC00000001,2") == ([("id", ["DC00000001", "2"])], [])
    assert split_q('""') == ([], [])
    assert split_q("printer jam") == ([], ["printer", "jam"])


def test_basic_credentials() -> None:
    import base64

    header = "Basic " + base64.b64encode(b"7:s3cret").decode()
    assert basic_token(header) == "7|s3cret"
    for bad in (
        None,
        "",
        "Bearer 7|s3cret",
        "Basic ???",
        "Basic " + base64.b64encode(b"7").decode(),
    ):
        with pytest.raises(ApiError) as err:
            basic_token(bad)
        assert err.value.status == 401
