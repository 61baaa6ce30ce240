"""Idempotency-Key over real HTTP (api-contract.md §3), plus the runner's lease rules in-process."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from mailhelpdesk.clock import FrozenClock
from mailhelpdesk.http.errors import ApiError
from mailhelpdesk.http.idempotency import KeyedRunner, canonical_json, fingerprint, parse_key
from mailhelpdesk.store import idempotency as store_keys
from mailhelpdesk.store import schema
from mailhelpdesk.store.db import Database
from tests.helpers import Daemon
from tests.http.conftest import Api, assert_error, unique
from tests.transports.test_smtp_sender import Sink

BODY = {
    "originator_email_address": "idem@customer.test",
    "data": {"subject": "Replay me", "content": "once"},
    "is_public": True,
}


def test_replay_is_byte_identical_with_header(api: Api, admin: str) -> None:
    key = unique()
    first = api.post("/api/create_ticket", BODY, token=admin, key=key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    for _ in range(3):
        again = api.post("/api/create_ticket", BODY, token=admin, key=key)
        assert again.status_code == 200 and again.content == first.content
        assert (
            again.headers["idempotent-replayed"] == "true"
            and "x-ratelimit-remaining" in again.headers
        )


def test_key_order_and_whitespace_are_not_a_mismatch(api: Api, admin: str) -> None:
    key = unique()
    first = api.post("/api/create_ticket", BODY, token=admin, key=key)
    reordered = json.dumps(
        {
            "is_public": True,
            "data": {"content": "once", "subject": "Replay me"},
            "originator_email_address": "idem@customer.test",
        },
        indent=4,
    ).encode()
    again = api.post("/api/create_ticket", content=reordered, token=admin, key=key)
    assert (
        again.status_code == 200
        and again.content == first.content
        and again.headers["idempotent-replayed"] == "true"
    )
    integral = api.post(
        "/api/tickets/create",
        {"originator_email_address": "f@customer.test", "subject": "s", "content": "c", "n": 1},
        token=admin,
        key=(k2 := unique()),
    )
    as_float = api.post(
        "/api/tickets/create",
        content=b'{"n": 1.0, "content": "c", "subject": "s", '
        b'"originator_email_address": "f@customer.test"}',
        token=admin,
        key=k2,
    )
    assert as_float.content == integral.content


def test_mismatch_is_409_conflict_and_record_untouched(api: Api, admin: str) -> None:
    key = unique()
    first = api.post("/api/create_ticket", BODY, token=admin, key=key)
    for changed in ({**BODY, "is_public": False}, {**BODY, "unknown_field": 1}):
        assert_error(
            api.post("/api/create_ticket", changed, token=admin, key=key),
            409,
            "idempotency_key_conflict",
        )
    assert_error(
        api.post("/api/tickets/create", BODY, token=admin, key=key), 409, "idempotency_key_conflict"
    )
    assert api.post("/api/create_ticket", BODY, token=admin, key=key).content == first.content


def test_key_format(api: Api, admin: str) -> None:
    for bad in ("a" * 256, "has space", "tab\there", "é"):
        resp = httpx.post(
            api.base + "/api/create_ticket",
            content=json.dumps(BODY).encode("utf-8"),
            headers={
                "Authorization": f"Bearer {admin}",
                "Content-Type": "application/json",
                "Idempotency-Key": bad.encode("utf-8"),
            },
        )  # type: ignore[dict-item]
        assert_error(resp, 400, "idempotency_key_invalid")
    two = httpx.post(
        api.base + "/api/create_ticket",
        content=json.dumps(BODY).encode(),
        headers=[
            ("Authorization", f"Bearer {admin}"),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ],
    )
    assert_error(two, 400, "idempotency_key_invalid")
    assert api.post("/api/create_ticket", BODY, token=admin, key="a" * 255).status_code == 200
    quoted = unique()
    plain = api.post("/api/create_ticket", BODY, token=admin, key=quoted)
    assert (
        api.post("/api/create_ticket", BODY, token=admin, key=f'"{quoted}"').content
        == plain.content
    )
    for path in ("/api/ticket_respond", "/api/send_email", "/api/render_template"):
        assert_error(api.post(path, {}, token=admin), 400, "idempotency_key_required")


def test_schema_error_leaves_key_reusable_but_handler_422_is_stored(api: Api, admin: str) -> None:
    key = unique()
    assert_error(
        api.post(
            "/api/create_ticket",
            {"originator_email_address": "x@customer.test"},
            token=admin,
            key=key,
        ),
        422,
        "validation_failed",
    )
    assert api.post("/api/create_ticket", BODY, token=admin, key=key).status_code == 200
    key2 = unique()
    unknown = {
        "originator_email_address": "x@customer.test",
        "data": {"subject": "s", "content": "c", "queue_name": "Nope"},
    }
    first = api.post("/api/create_ticket", unknown, token=admin, key=key2)
    assert_error(first, 422, "validation_failed")
    replay = api.post("/api/create_ticket", unknown, token=admin, key=key2)
    assert replay.content == first.content and replay.headers["idempotent-replayed"] == "true"


def test_keys_are_per_token(api: Api, admin: str) -> None:
    other = api.token("create-ticket")
    key = unique()
    a = api.post("/api/create_ticket", BODY, token=admin, key=key).json()["data"]["ticket_number"]
    b = api.post("/api/create_ticket", BODY, token=other, key=key).json()["data"]["ticket_number"]
    assert a != b


def test_minted_key_bound_to_its_action(api: Api, admin: str) -> None:
    minted = api.post("/api/idempotency_key", {"action": "send_email"}).json()["data"][
        "idempotency_key"
    ]
    assert_error(
        api.post("/api/create_ticket", BODY, token=admin, key=minted),
        409,
        "idempotency_key_conflict",
    )
    mail = {"to_address": "m@customer.test", "subject": "s", "content": "c"}
    first = api.post("/api/send_email", mail, token=admin, key=minted)
    assert first.status_code == 200
    assert api.post("/api/send_email", mail, token=admin, key=minted).content == first.content
    unbound = api.post("/api/idempotency_key", {}).json()["data"]["idempotency_key"]
    assert api.post("/api/create_ticket", BODY, token=admin, key=unbound).status_code == 200


ROUNDS = int(os.environ.get("MAILHELPDESK_IDEM_ROUNDS", "20"))


@pytest.mark.parametrize("round_no", range(ROUNDS))
def test_fifty_concurrent_requests_one_key_make_one_ticket(
    api: Api, admin: str, round_no: int
) -> None:
    """50 identical requests at once: one ticket, one acknowledgement; the rest replay or 409; no 5xx."""
    email = f"race{round_no}-{unique('r')}@customer.test"
    body = {
        "originator_email_address": email,
        "data": {"subject": f"Race {round_no}", "content": "go"},
    }
    key = unique()
    with ThreadPoolExecutor(50) as pool:
        results = list(
            pool.map(
                lambda _: api.post("/api/create_ticket", body, token=admin, key=key), range(50)
            )
        )
    statuses = [r.status_code for r in results]
    assert all(s in (200, 409) for s in statuses), statuses
    ok = [r for r in results if r.status_code == 200]
    assert ok and len({r.content for r in ok}) == 1
    for r in results:
        if r.status_code == 409:
            assert (
                r.json()["error"] == "idempotency_key_in_progress"
                and r.headers["retry-after"] == "1"
            )
    assert api.rows("SELECT count(*) FROM tickets WHERE originator_email = ?", email) == [(1,)]
    assert api.rows(
        "SELECT count(*) FROM outbox WHERE kind = 'acknowledgement' AND primary_rcpt = ?", email
    ) == [(1,)]
    final = api.post("/api/create_ticket", body, token=admin, key=key)
    assert final.status_code == 200 and final.content == ok[0].content


def test_send_email_retried_across_restart_sends_once(tmp_path: Path) -> None:
    """A script retries send_email with one key while the relay refuses (451), across a daemon
    restart: the relay sink receives exactly one message once it accepts mail."""
    sink = Sink().start()
    sink.data_reply = "451 4.3.0 try again later"
    relay = f'host = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\ntimeout_s = 5\nretry_base_s = 1\nretry_max_s = 1\n'
    daemon = Daemon(tmp_path, relay_config=relay)
    daemon.start()
    try:
        api = Api(daemon)
        token = api.token("send-email")
        mail = {"to_address": "once@customer.test", "subject": "Invoice 7", "content": "attached"}
        first = api.post("/api/send_email", mail, token=token, key="invoice-7")
        assert first.status_code == 200 and first.json()["data"]["status"] == "queued"
        assert (
            api.post("/api/send_email", mail, token=token, key="invoice-7").content == first.content
        )
        daemon.stop()
        daemon.start()
        for _ in range(3):
            again = api.post("/api/send_email", mail, token=token, key="invoice-7")
            assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        sink.data_reply = None
        deadline = time.monotonic() + 30
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        api.daemon.wait_idle(sending=True)  # nothing queued: no second copy can follow
        delivered = [
            m for m in sink.parsed() if m["To"].addresses[0].addr_spec == "once@customer.test"
        ]
        assert len(delivered) == 1, [m["Message-ID"] for m in delivered]
        assert delivered[0]["Message-ID"] == first.json()["data"]["message_id"]
        assert api.rows(
            "SELECT count(*), max(state) FROM outbox WHERE primary_rcpt = 'once@customer.test'"
        ) == [(1, "sent")]
    finally:
        daemon.stop()
        sink.stop()


# -- the runner in-process, with a frozen clock ---------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[tuple[KeyedRunner, FrozenClock]]:
    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    schema.upgrade(database.engine)
    clock = FrozenClock(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    yield KeyedRunner(database, clock, ttl_s=86400, lease_s=60), clock
    database.close()


def test_lease_in_progress_then_takeover(runner: tuple[KeyedRunner, FrozenClock]) -> None:
    keyed, clock = runner
    seen: list[str] = []

    def slow(_session: Session, _args: object) -> dict[str, str]:
        # a second request with the key while the first is still running
        with pytest.raises(ApiError) as busy:
            keyed.run(
                token_id=1,
                key="k",
                action="a",
                fp="f",
                validate=lambda: None,
                handle=lambda s, a: {},
            )
        seen.append(busy.value.code)
        assert busy.value.headers == {"Retry-After": "1"}
        return {"done": "yes"}

    out = keyed.run(token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=slow)
    assert out.status == 200 and seen == ["idempotency_key_in_progress"]
    # a claim abandoned by a crash is taken over once its lease has expired
    keyed.abandon_claim(token_id=1, key="crashed", action="a", fp="f")
    with pytest.raises(ApiError):
        keyed.run(
            token_id=1,
            key="crashed",
            action="a",
            fp="f",
            validate=lambda: None,
            handle=lambda s, a: {},
        )
    clock.advance(seconds=61)
    out = keyed.run(
        token_id=1,
        key="crashed",
        action="a",
        fp="f",
        validate=lambda: None,
        handle=lambda s, a: {"n": 1},
    )
    assert out.status == 200 and json.loads(out.body) == {"ok": True, "data": {"n": 1}}


def test_handler_fault_forgets_the_claim(runner: tuple[KeyedRunner, FrozenClock]) -> None:
    keyed, _clock = runner

    def boom(_session: Session, _args: object) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        keyed.run(token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=boom)
    # claim, work and answer are one transaction: the fault left no row behind to get stuck on
    with Session(keyed.engine) as session:
        assert store_keys.get(session, token_id=1, key="k") is None
    out = keyed.run(
        token_id=1,
        key="k",
        action="a",
        fp="f",
        validate=lambda: None,
        handle=lambda s, a: {"ok": 1},
    )
    assert out.status == 200 and "Idempotent-Replayed" not in out.headers


def test_purge_after_ttl(runner: tuple[KeyedRunner, FrozenClock]) -> None:
    keyed, clock = runner
    keyed.run(
        token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=lambda s, a: {"n": 1}
    )
    assert keyed.run(
        token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=lambda s, a: {"n": 2}
    ).headers == {"Idempotent-Replayed": "true"}
    clock.advance(hours=23)
    assert keyed.purge() == 0
    clock.advance(hours=2)
    assert keyed.purge() == 1
    out = keyed.run(
        token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=lambda s, a: {"n": 2}
    )
    assert json.loads(out.body)["data"] == {"n": 2}


def test_canonical_json_and_key_parsing() -> None:
    assert (
        canonical_json({"b": 1.0, "a": ["é", 2.5, {"d": 0, "c": None}]})
        == '{"a":["é",2.5,{"c":null,"d":0}],"b":1}'
    )
    assert fingerprint("post", "/api/x", {"a": 1}) == fingerprint("POST", "/api/x", {"a": 1.0})
    assert fingerprint("POST", "/api/x", {"a": 1}) != fingerprint("POST", "/api/y", {"a": 1})
    assert parse_key(['"abc"'], required=True) == "abc"
    assert parse_key([], required=False) is None


def test_another_body_while_the_first_runs_is_a_conflict(
    runner: tuple[KeyedRunner, FrozenClock],
) -> None:
    """§3.3: a different payload with the key is a caller bug, said at once, even mid-flight."""
    keyed, _clock = runner
    seen: list[str] = []

    def slow(_session: Session, _args: object) -> dict[str, str]:
        for fp in ("other", "f"):
            with pytest.raises(ApiError) as busy:
                keyed.run(
                    token_id=1,
                    key="k",
                    action="a",
                    fp=fp,
                    validate=lambda: None,
                    handle=lambda s, a: {},
                )
            seen.append(busy.value.code)
        return {}

    keyed.run(token_id=1, key="k", action="a", fp="f", validate=lambda: None, handle=slow)
    assert seen == ["idempotency_key_conflict", "idempotency_key_in_progress"]
