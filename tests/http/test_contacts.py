"""Contacts over real HTTP, SMTP and the CLI against a running daemon (resources.md §3, §5)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.helpers import make_mail
from tests.http.conftest import Api, assert_error, unique


def _get(api: Api, path: str, token: str, **query: Any) -> httpx.Response:
    return httpx.get(
        api.base + path, params=query, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _patch(api: Api, path: str, body: Any, token: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.patch(api.base + path, content=json.dumps(body), headers=headers, timeout=60)


def _address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@customer.test"


def _mail(api: Api, sender: str, subject: str, name: str = "") -> None:
    api.daemon.send(
        make_mail(sender=f"{name} <{sender}>" if name else sender, subject=subject),
        mail_from=sender,
    )
    api.daemon.wait_idle()


def _ticket_of(api: Api, sender: str) -> tuple[int, int | None]:
    rows = api.rows(
        "SELECT number, contact_id FROM tickets WHERE originator_email = ? ORDER BY number DESC",
        sender,
    )
    assert rows, f"no ticket from {sender}"
    return rows[0][0], rows[0][1]


def _create(api: Api, token: str, **body: Any) -> dict[str, Any]:
    resp = api.post("/api/v1/contacts", body, token=token)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def test_first_mail_creates_the_contact_and_sets_the_ticket_contact(api: Api, admin: str) -> None:
    """A customer's first mail makes the contact (name, email) and the ticket carries its id."""
    sender = _address("first")
    _mail(api, sender, "My printer", name="Farah Haddad")
    number, contact_id = _ticket_of(api, sender)
    assert contact_id is not None
    ticket = _get(api, f"/api/v1/tickets/{number}", admin).json()["data"]
    assert ticket["contact_id"] == contact_id
    contact = _get(api, f"/api/v1/contacts/{contact_id}", admin).json()["data"]
    assert contact["email"] == sender and contact["name"] == "Farah Haddad"
    assert contact["ticket_count"] == 1 and contact["alternate_emails"] == []
    assert set(contact) == {
        "id",
        "email",
        "name",
        "company",
        "phone",
        "alternate_emails",
        "notes",
        "created_at",
        "updated_at",
        "ticket_count",
    }
    _mail(api, sender, "My scanner too")
    numbers = [
        r[0] for r in api.rows("SELECT number FROM tickets WHERE contact_id = ?", contact_id)
    ]
    assert len(numbers) == 2
    again = _get(api, f"/api/v1/contacts/{contact_id}", admin).json()["data"]
    assert again["ticket_count"] == 2 and again["name"] == "Farah Haddad"


def test_an_api_ticket_gets_the_contact_of_its_originator(api: Api, admin: str) -> None:
    """Tickets opened through the API are filed under the same contact as mail would be."""
    email = _address("api")
    contact = _create(api, admin, email=email, name="Jun Park")
    resp = api.post(
        "/api/v1/tickets",
        {"originator_email_address": email.upper(), "data": {"subject": "Hi", "content": "x"}},
        token=admin,
    )
    assert resp.status_code == 200, resp.text
    number = resp.json()["data"]["ticket_number"]
    assert (
        _get(api, f"/api/v1/tickets/{number}", admin).json()["data"]["contact_id"] == contact["id"]
    )


def test_create_show_list_and_page(api: Api, admin: str) -> None:
    """POST makes a contact; GET finds it by id, by q (name, company, any address) and email."""
    tag = uuid.uuid4().hex[:8]
    made = [
        _create(
            api,
            admin,
            email=_address(f"list{i}"),
            name=f"Person {tag} {i}",
            company=f"Acme {tag}",
            phone="+1 555 0100",
            notes="prefers mail",
            alternate_emails=[f"alt{i}-{tag}@home.test"],
        )
        for i in range(3)
    ]
    assert made[0]["company"] == f"Acme {tag}" and made[0]["ticket_count"] == 0
    assert made[0]["alternate_emails"] == [f"alt0-{tag}@home.test"]
    shown = _get(api, f"/api/v1/contacts/{made[1]['id']}", admin).json()["data"]
    assert shown == made[1]
    page = _get(api, "/api/v1/contacts", admin, q=tag, per_page=2, page=2).json()["data"]
    assert page["meta"] == {"total": 3, "page": 2, "per_page": 2}
    assert [c["id"] for c in page["contacts"]] == [made[2]["id"]]
    by_alt = _get(api, "/api/v1/contacts", admin, email=f"ALT1-{tag}@home.test").json()["data"]
    assert [c["id"] for c in by_alt["contacts"]] == [made[1]["id"]]
    by_part = _get(api, "/api/v1/contacts", admin, q=f"alt2-{tag}").json()["data"]
    assert [c["id"] for c in by_part["contacts"]] == [made[2]["id"]]
    wildcard = _get(api, "/api/v1/contacts", admin, q="%_%" + tag).json()["data"]
    assert wildcard["meta"]["total"] == 0, "LIKE wildcards in q are literal characters"
    default = _get(api, "/api/v1/contacts", admin).json()["data"]["meta"]
    assert default["page"] == 1 and default["per_page"] == 25


def test_patch_changes_fields_and_replaces_alternates(api: Api, admin: str) -> None:
    """PATCH sets what is sent, clears what is null, leaves the rest, replaces the alternates."""
    tag = uuid.uuid4().hex[:8]
    contact = _create(
        api,
        admin,
        email=_address("patch"),
        name="Old",
        phone="1",
        alternate_emails=[f"a-{tag}@x.test"],
    )
    resp = _patch(
        api,
        f"/api/v1/contacts/{contact['id']}",
        {
            "name": "New Name",
            "phone": None,
            "notes": "VIP",
            "alternate_emails": [f"B-{tag}@x.test", f"b-{tag}@x.test", contact["email"]],
        },
        admin,
        key=unique(),
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["name"], data["phone"], data["notes"], data["company"]) == (
        "New Name",
        "",
        "VIP",
        "",
    )
    assert data["alternate_emails"] == [f"b-{tag}@x.test"]
    assert data["updated_at"] >= contact["updated_at"]
    # the dropped alternate is free again: another contact may take it
    other = _create(api, admin, email=f"a-{tag}@x.test")
    assert other["id"] != contact["id"]


def test_documented_errors(api: Api, admin: str) -> None:
    """404 unknown contact, 422 naming the field, 409 for another contact's address, 403."""
    tag = uuid.uuid4().hex[:8]
    first = _create(api, admin, email=_address("err"), alternate_emails=[f"taken-{tag}@x.test"])
    second = _create(api, admin, email=_address("err2"))
    for path in ("/api/v1/contacts/999999999", "/api/v1/contacts/99999999999999999999"):
        assert_error(_get(api, path, admin), 404, "contact_not_found")
    assert_error(_get(api, "/api/v1/contacts/999999999/tickets", admin), 404, "contact_not_found")
    assert_error(_patch(api, "/api/v1/contacts/999999999", {"name": "x"}, admin), 404,
                 "contact_not_found")  # fmt: skip
    bad = assert_error(api.post("/api/v1/contacts", {"email": "not-an-address"}, token=admin), 422,
                       "validation_failed")  # fmt: skip
    assert "email" in bad["errors"]
    bad = assert_error(
        _patch(api, f"/api/v1/contacts/{second['id']}", {"alternate_emails": ["nope"]}, admin),
        422,
        "validation_failed",
    )
    assert "alternate_emails" in bad["errors"]
    missing = assert_error(api.post("/api/v1/contacts", {"name": "x"}, token=admin), 422,
                           "validation_failed")  # fmt: skip
    assert "email" in missing["errors"]
    assert_error(_get(api, "/api/v1/contacts", admin, per_page=101), 422, "validation_failed")
    taken = assert_error(
        _patch(
            api,
            f"/api/v1/contacts/{second['id']}",
            {"alternate_emails": [f"TAKEN-{tag}@x.test"]},
            admin,
        ),
        409,
        "email_taken",
    )
    assert "alternate_emails" in taken["errors"] and taken["data"]["contact_id"] == first["id"]
    dup = assert_error(api.post("/api/v1/contacts", {"email": first["email"]}, token=admin), 409,
                       "email_taken")  # fmt: skip
    assert "email" in dup["errors"]
    dup_alt = assert_error(
        api.post("/api/v1/contacts", {"email": f"taken-{tag}@x.test"}, token=admin),
        409,
        "email_taken",
    )
    assert dup_alt["data"]["contact_id"] == first["id"]
    unchanged = _get(api, f"/api/v1/contacts/{second['id']}", admin).json()["data"]
    assert unchanged["alternate_emails"] == [], "a refused PATCH changes nothing"
    tickets_only = api.token("tickets:write")
    assert_error(_get(api, "/api/v1/contacts", tickets_only), 403, "forbidden")
    assert_error(_get(api, f"/api/v1/contacts/{first['id']}", tickets_only), 403, "forbidden")
    assert_error(api.post("/api/v1/contacts", {"email": _address("f")}, token=tickets_only), 403,
                 "forbidden")  # fmt: skip
    reader = api.token("contacts:read")
    assert _get(api, f"/api/v1/contacts/{first['id']}", reader).status_code == 200
    assert_error(_patch(api, f"/api/v1/contacts/{first['id']}", {"name": "x"}, reader), 403,
                 "forbidden")  # fmt: skip
    writer = api.token("contacts:write")
    assert _get(api, f"/api/v1/contacts/{first['id']}/tickets", writer).status_code == 200
    assert_error(_get(api, "/api/v1/contacts", "1|wrong"), 401, "unauthenticated")


def test_create_with_an_idempotency_key_is_applied_once(api: Api, admin: str) -> None:
    """The same POST with the same key replays the first answer: one contact."""
    email, key = _address("idem"), unique()
    first = api.post("/api/v1/contacts", {"email": email}, token=admin, key=key)
    again = api.post("/api/v1/contacts", {"email": email}, token=admin, key=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert api.rows("SELECT count(*) FROM contacts WHERE email = ?", email) == [(1,)]


def test_mail_from_an_alternate_address_belongs_to_the_contact(api: Api, admin: str) -> None:
    """New mail from an alternate address files under the contact; its reply that only the
    subject tag links passes the party rule, while a stranger's is held internal."""
    primary, alternate, stranger = _address("main"), _address("home"), _address("stranger")
    _mail(api, primary, "Invoice question", name="Ola Nordmann")
    number, contact_id = _ticket_of(api, primary)
    resp = _patch(api, f"/api/v1/contacts/{contact_id}", {"alternate_emails": [alternate]}, admin)
    assert resp.status_code == 200, resp.text

    _mail(api, alternate, f"Re: [#{number}] Invoice question")
    _mail(api, stranger, f"Re: [#{number}] Invoice question")
    responses = _get(api, f"/api/v1/tickets/{number}", admin).json()["data"]["responses"]
    by_sender = {r["created_by_email"]: r for r in responses}
    assert by_sender[alternate]["is_internal"] is False, "the contact's alternate is a party"
    assert by_sender[stranger]["is_internal"] is True, "a stranger with the tag is held"

    _mail(api, alternate, "A new question from home")
    new_number, new_contact = _ticket_of(api, alternate)
    assert new_number != number and new_contact == contact_id
    listed = _get(api, f"/api/v1/contacts/{contact_id}/tickets", admin).json()["data"]
    assert [t["number"] for t in listed["tickets"]] == [new_number, number]
    assert listed["meta"] == {"total": 2, "page": 1, "per_page": 25}
    assert all(t["contact_id"] == contact_id for t in listed["tickets"])
    one = _get(api, f"/api/v1/contacts/{contact_id}/tickets", admin, per_page=1, page=2)
    assert [t["number"] for t in one.json()["data"]["tickets"]] == [number]
    assert _get(api, f"/api/v1/contacts/{contact_id}", admin).json()["data"]["ticket_count"] == 2


def test_cli_contact_list_and_show(api: Api, admin: str) -> None:
    """`contact list [--q] [--json]` and `contact show ID|EMAIL [--json]` read the same store."""
    tag = uuid.uuid4().hex[:8]
    email = _address("cli")
    _mail(api, email, "CLI question", name=f"Cli {tag}")
    _number, contact_id = _ticket_of(api, email)
    _patch(api, f"/api/v1/contacts/{contact_id}", {"alternate_emails": [f"cli-{tag}@alt.test"]},
           admin)  # fmt: skip
    listed = json.loads(api.daemon.cli("contact", "list", "--q", tag, "--json").stdout)
    assert [c["id"] for c in listed] == [contact_id] and listed[0]["ticket_count"] == 1
    text = api.daemon.cli("contact", "list", "--q", tag).stdout
    assert email in text and "1 ticket(s)" in text
    shown = json.loads(api.daemon.cli("contact", "show", str(contact_id), "--json").stdout)
    via_alt = json.loads(api.daemon.cli("contact", "show", f"cli-{tag}@alt.test", "--json").stdout)
    assert shown == via_alt and shown["email"] == email
    assert [t["originator_email"] for t in shown["tickets"]] == [email]
    human = api.daemon.cli("contact", "show", email).stdout
    assert f"<{email}>" in human and f"cli-{tag}@alt.test" in human
    missing = api.daemon.cli("contact", "show", "nobody@nowhere.test", check=False)
    assert missing.returncode != 0 and "no contact nobody@nowhere.test" in missing.stderr
    empty = api.daemon.cli("contact", "list", "--q", f"none-{tag}", check=False)
    assert empty.returncode == 0 and "no contacts" in empty.stderr


def test_all_grants_the_contact_abilities(api: Api) -> None:
    """A token made with `--ability all` holds contacts:read and contacts:write."""
    name = unique("all")
    created = api.daemon.cli("token", "create", "--name", name, "--ability", "all")
    token = created.stdout.strip().splitlines()[-1]
    assert _get(api, "/api/v1/contacts", token).status_code == 200
    assert api.post("/api/v1/contacts", {"email": _address("all")}, token=token).status_code == 200
    listed = json.loads(api.daemon.cli("token", "list", "--json").stdout)
    abilities = next(t["abilities"] for t in listed if t["name"] == name)
    assert {"contacts:read", "contacts:write"} <= set(abilities)
