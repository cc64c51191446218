"""Contact.getChecksum/validateChecksum/getDuplicates/mergeDuplicates and getLinks."""

from __future__ import annotations

import hashlib
import json
import re

import httpx
import pytest

from gateway.sandbox import contact_actions
from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError, Unauthorized
from gateway.sandbox.schema import ENTITIES
from gateway.sandbox.store import ADMIN_CONTACT_ID
from gateway.sandbox.wire import WireConfig, create_wire_app

REAL_CONTACT_ACTIONS = [
    "autocomplete",
    "checkAccess",
    "create",
    "delete",
    "get",
    "getActions",
    "getChecksum",
    "getDuplicates",
    "getFields",
    "getLinks",
    "mergeDuplicates",
    "replace",
    "save",
    "update",
    "validateChecksum",
]
NOW = 1_800_000_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A settable clock for checksum times."""
    now = [NOW]
    monkeypatch.setattr(contact_actions, "epoch_now", lambda: now[0])
    return now


def exact(message: str) -> str:
    """A pytest ``match`` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


def _v(env: dict) -> list:
    return env["values"]


def _person(sb: Sandbox, first: str, last: str, **extra: object) -> int:
    return _v(
        sb.api4(
            "Contact",
            "create",
            {"values": {"contact_type": "Individual", "first_name": first, "last_name": last, **extra}},
        )
    )[0]["id"]


def _hash(sb: Sandbox, cid: int) -> str:
    return _v(sb.api4("Contact", "get", {"select": ["hash"], "where": [["id", "=", cid]]}))[0]["hash"]


# ---- getActions ---------------------------------------------------------------------------
def test_contact_lists_the_fifteen_real_actions(sb: Sandbox) -> None:
    names = [a["name"] for a in _v(sb.api4("Contact", "getActions", {"select": ["name"]}))]
    assert names == REAL_CONTACT_ACTIONS


def test_get_links_is_generic_and_the_contact_actions_are_not(sb: Sandbox) -> None:
    for name in ENTITIES:
        names = {a["name"] for a in _v(sb.api4(name, "getActions", {}))}
        assert "getLinks" in names
        if name != "Contact":
            assert not names & set(contact_actions.CONTACT_ONLY)
    with pytest.raises(CiviError, match=exact("Api Email getChecksum version 4 does not exist.")):
        sb.api4("Email", "getChecksum", {"contactId": 1})
    desc = _v(sb.api4("Email", "getActions", {"where": [["name", "=", "getLinks"]]}))
    assert desc[0]["description"] == "Get action links for the Email entity."


# ---- checksums ----------------------------------------------------------------------------
def test_get_checksum_is_civicrm_format(sb: Sandbox, ada: int, clock: list[int]) -> None:
    out = _v(sb.api4("Contact", "getChecksum", {"contactId": ada}))
    expected = hashlib.md5(f"{_hash(sb, ada)}_{ada}_{NOW}_168".encode()).hexdigest()
    assert out == [{"id": ada, "checksum": f"{expected}_{NOW}_168"}]
    # deterministic given the time; ttl in hours, 0 means "inf"
    assert _v(sb.api4("Contact", "getChecksum", {"contactId": ada}))[0]["checksum"] == out[0]["checksum"]
    assert _v(sb.api4("Contact", "getChecksum", {"contactId": ada, "ttl": 2}))[0]["checksum"].endswith(
        f"_{NOW}_2"
    )
    assert _v(sb.api4("Contact", "getChecksum", {"contactId": ada, "ttl": "0"}))[0]["checksum"].endswith(
        f"_{NOW}_inf"
    )


def test_validate_checksum_honours_expiry(sb: Sandbox, ada: int, clock: list[int]) -> None:
    cs = _v(sb.api4("Contact", "getChecksum", {"contactId": ada, "ttl": 1}))[0]["checksum"]
    forever = _v(sb.api4("Contact", "getChecksum", {"contactId": ada, "ttl": 0}))[0]["checksum"]

    def valid(checksum: str, cid: int = ada) -> bool:
        return _v(sb.api4("Contact", "validateChecksum", {"contactId": cid, "checksum": checksum}))[0][
            "valid"
        ]

    assert valid(cs) and valid(forever)
    assert not valid(cs, ADMIN_CONTACT_ID)  # bound to the contact's hash and id
    assert not valid(cs.replace(f"_{NOW}_", f"_{NOW + 1}_"))  # tampered timestamp
    clock[0] = NOW + 3600
    assert valid(cs)  # the last second of its hour
    clock[0] = NOW + 3601
    assert not valid(cs)
    clock[0] = NOW + 10 * 365 * 86400
    assert valid(forever)


def test_checksum_missing_params_are_worded_like_civicrm(sb: Sandbox, ada: int) -> None:
    with pytest.raises(CiviError, match=exact('Parameter "contactId" is required.')):
        sb.api4("Contact", "getChecksum", {})
    with pytest.raises(CiviError, match=exact('Parameter "checksum" is required.')):
        sb.api4("Contact", "validateChecksum", {"contactId": ada})
    with pytest.raises(
        CiviError, match=exact('Parameter "contactId" is not of the correct type. Expecting int.')
    ):
        sb.api4("Contact", "getChecksum", {"contactId": "abc"})
    with pytest.raises(CiviError, match="Unknown api parameter: setFoo"):
        sb.api4("Contact", "getChecksum", {"contactId": ada, "foo": 1})
    # 0 counts as given (PHP's check), and CiviCRM answers with its placeholder
    assert _v(sb.api4("Contact", "getChecksum", {"contactId": 0}))[0]["checksum"] == "invalidChecksum"


def test_checksum_permissions(sb: Sandbox, ada: int) -> None:
    staff = sb.ensure_staff()["contact_id"]
    with pytest.raises(Unauthorized, match=r"Contact::getChecksum"):
        sb.api4("Contact", "getChecksum", {"contactId": ada}, check_permissions=True, contact_id=staff)
    with pytest.raises(Unauthorized):
        sb.api4("Contact", "getChecksum", {"contactId": ada}, check_permissions=True)
    cs = _v(
        sb.api4(
            "Contact", "getChecksum", {"contactId": ada}, check_permissions=True, contact_id=ADMIN_CONTACT_ID
        )
    )[0]["checksum"]
    # validateChecksum is open to anyone, anonymous included: that is what checksums are for
    assert (
        _v(
            sb.api4("Contact", "validateChecksum", {"contactId": ada, "checksum": cs}, check_permissions=True)
        )[0]["valid"]
        is True
    )
    # authorization comes before parameter validation
    with pytest.raises(Unauthorized):
        sb.api4("Contact", "getChecksum", {}, check_permissions=True)


# ---- getDuplicates ------------------------------------------------------------------------
def test_get_duplicates_individuals(sb: Sandbox, ada: int) -> None:
    twin = _person(sb, "ADA", "lovelace")
    _person(sb, "Ada", "Byron")
    sb.api4("Email", "create", {"values": {"contact_id": twin, "email": "ada@example.org"}})
    rule = "Individual.Supervised"
    out = _v(
        sb.api4(
            "Contact",
            "getDuplicates",
            {"dedupeRule": rule, "values": {"first_name": "Ada", "last_name": "Lovelace"}},
        )
    )
    assert out == [{"id": ada}, {"id": twin}]
    with_email = {"first_name": "Ada", "last_name": "Lovelace", "email_primary.email": "ADA@example.org"}
    assert _v(sb.api4("Contact", "getDuplicates", {"dedupeRule": rule, "values": with_email})) == [
        {"id": twin}
    ]
    # the contact itself and trashed contacts are not duplicates
    sb.api4("Contact", "delete", {"where": [["id", "=", ada]]})
    assert (
        _v(
            sb.api4(
                "Contact",
                "getDuplicates",
                {"dedupeRule": "IndividualUnsupervised", "values": {**with_email, "id": twin}},
            )
        )
        == []
    )


def test_get_duplicates_organizations_and_errors(sb: Sandbox) -> None:
    org = _v(
        sb.api4(
            "Contact", "create", {"values": {"contact_type": "Organization", "organization_name": "Acme"}}
        )
    )[0]["id"]
    out = sb.api4(
        "Contact",
        "getDuplicates",
        {"dedupeRule": "Organization.Unsupervised", "values": {"organization_name": "acme"}},
    )
    assert _v(out) == [{"id": org}]
    with pytest.raises(CiviError, match=exact('Parameter "dedupeRule" is required.')):
        sb.api4("Contact", "getDuplicates", {"values": {"organization_name": "Acme"}})
    with pytest.raises(CiviError, match=exact("Mismatched contact type.")):
        sb.api4(
            "Contact",
            "getDuplicates",
            {
                "dedupeRule": "Individual.Supervised",
                "values": {"contact_type": "Organization", "organization_name": "Acme"},
            },
        )
    with pytest.raises(CiviError, match="Expected to find one DedupeRuleGroup record"):
        sb.api4("Contact", "getDuplicates", {"dedupeRule": "NoSuchRule", "values": {}})
    with pytest.raises(Unauthorized):
        sb.api4(
            "Contact",
            "getDuplicates",
            {"dedupeRule": "Organization.Supervised"},
            check_permissions=True,
            contact_id=sb.ensure_staff()["contact_id"],
        )


# ---- mergeDuplicates ----------------------------------------------------------------------
def _belongings(sb: Sandbox, main: int, dupe: int) -> None:
    gid = _v(sb.api4("Group", "create", {"values": {"title": "Friends"}}))[0]["id"]
    tid = _v(sb.api4("Tag", "create", {"values": {"name": "VIP"}}))[0]["id"]
    sb.api4("Email", "create", {"values": {"contact_id": main, "email": "a@x.org"}})
    sb.api4("Email", "create", {"values": {"contact_id": dupe, "email": "b@x.org", "location_type_id": 2}})
    sb.api4("Phone", "create", {"values": {"contact_id": dupe, "phone": "555-0101"}})
    sb.api4("GroupContact", "create", {"values": {"contact_id": dupe, "group_id": gid}})
    sb.api4("EntityTag", "create", {"values": {"entity_id": dupe, "tag_id": tid}})
    sb.api4("Note", "create", {"values": {"entity_id": dupe, "note": "met at a conference"}})
    sb.api4(
        "Activity",
        "create",
        {"values": {"source_contact_id": dupe, "activity_type_id": 1, "subject": "Lunch"}},
    )


def _owned(sb: Sandbox, entity: str, field: str, cid: int) -> int:
    return len(_v(sb.api4(entity, "get", {"where": [[field, "=", cid]]})))


def test_merge_moves_belongings_and_trashes_the_duplicate(sb: Sandbox, ada: int) -> None:
    dupe = _person(sb, "Ada", "Lovelace", job_title="Analyst")
    _belongings(sb, ada, dupe)
    out = sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": dupe})
    assert _v(out) == [{"merged": [{"main_id": ada, "other_id": dupe}], "skipped": []}]
    for entity, field in (
        ("Email", "contact_id"),
        ("Phone", "contact_id"),
        ("GroupContact", "contact_id"),
        ("EntityTag", "entity_id"),
        ("Note", "entity_id"),
        ("Activity", "source_contact_id"),
    ):
        assert _owned(sb, entity, field, dupe) == 0, entity
    emails = _v(
        sb.api4(
            "Email",
            "get",
            {
                "where": [["contact_id", "=", ada]],
                "select": ["email", "is_primary"],
                "orderBy": {"id": "ASC"},
            },
        )
    )
    assert [{k: v for k, v in e.items() if k != "id"} for e in emails] == [
        {"email": "a@x.org", "is_primary": True},
        {"email": "b@x.org", "is_primary": False},
    ]
    main = _v(sb.api4("Contact", "get", {"where": [["id", "=", ada]], "select": ["job_title"]}))[0]
    assert main["job_title"] == "Analyst"  # empty on the main contact: filled from the other
    gone = _v(
        sb.api4("Contact", "get", {"where": [["id", "=", dupe], ["is_deleted", "=", True]], "select": ["id"]})
    )
    assert gone == [{"id": dupe}]
    with pytest.raises(
        CiviError,
        match=rf"Cannot merge because one contact \(ID {dupe}\) has "
        "been deleted.",
    ):
        sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": dupe})


def test_safe_mode_skips_conflicts_aggressive_keeps_main(sb: Sandbox, ada: int) -> None:
    sb.api4("Contact", "update", {"values": {"id": ada, "job_title": "Countess"}})
    dupe = _person(sb, "Ada", "Lovelace", job_title="Analyst", nick_name="Enchantress")
    out = sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": dupe})
    assert _v(out) == [{"merged": [], "skipped": [{"main_id": ada, "other_id": dupe}]}]
    assert _owned(sb, "Contact", "id", dupe) == 1  # untouched
    out = sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": dupe, "mode": "aggressive"})
    assert _v(out)[0]["merged"] == [{"main_id": ada, "other_id": dupe}]
    main = _v(sb.api4("Contact", "get", {"where": [["id", "=", ada]], "select": ["job_title", "nick_name"]}))[
        0
    ]
    assert main == {"id": ada, "job_title": "Countess", "nick_name": "Enchantress"}


def test_merge_errors_and_permissions(sb: Sandbox, ada: int) -> None:
    dupe = _person(sb, "Ada", "Lovelace")
    with pytest.raises(CiviError, match=exact('Parameter "duplicateId" is required.')):
        sb.api4("Contact", "mergeDuplicates", {"contactId": ada})
    with pytest.raises(CiviError, match=exact('Parameter "mode" is required.')):
        sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": dupe, "mode": ""})
    with pytest.raises(CiviError, match="getMergeContactDetails"):
        sb.api4("Contact", "mergeDuplicates", {"contactId": ada, "duplicateId": 999})
    staff = sb.ensure_staff()["contact_id"]  # may edit contacts, but is not an administrator
    with pytest.raises(Unauthorized, match=r"Contact::mergeDuplicates"):
        sb.api4(
            "Contact",
            "mergeDuplicates",
            {"contactId": ada, "duplicateId": dupe},
            check_permissions=True,
            contact_id=staff,
        )
    assert _owned(sb, "Contact", "id", dupe) == 1


# ---- getLinks -----------------------------------------------------------------------------
def test_get_links_for_contact(sb: Sandbox) -> None:
    links = _v(
        sb.api4("Contact", "getLinks", {"select": ["ui_action", "path", "text", "weight", "icon", "target"]})
    )
    assert links == [
        {
            "ui_action": "view",
            "path": "civicrm/contact/view?reset=1&cid=[id]",
            "text": "View Contact",
            "icon": "fa-external-link",
            "weight": -20,
            "target": "",
        },
        {
            "ui_action": "update",
            "path": "civicrm/contact/add?reset=1&action=update&cid=[id]",
            "text": "Update Contact",
            "icon": "fa-pencil",
            "weight": -10,
            "target": "",
        },
        {
            "ui_action": "add",
            "path": "civicrm/contact/add?reset=1&ct=[contact_type]",
            "text": "Add Contact",
            "icon": "fa-plus",
            "weight": 0,
            "target": "crm-popup",
        },
        {
            "ui_action": "delete",
            "path": "civicrm/contact/view/delete?reset=1&delete=1&cid=[id]",
            "text": "Delete Contact",
            "icon": "fa-trash",
            "weight": 100,
            "target": "crm-popup",
        },
    ]
    # values fill the path tokens; links with an unknown required token are dropped
    filled = _v(
        sb.api4(
            "Contact",
            "getLinks",
            {
                "values": {"id": 7},
                "where": [["ui_action", "IN", ["view", "add"]]],
                "select": ["ui_action", "path"],
            },
        )
    )
    assert filled == [{"ui_action": "view", "path": "civicrm/contact/view?reset=1&cid=7"}]
    assert _v(sb.api4("Contact", "getLinks", {"entityTitle": "Person", "select": ["text"], "limit": 1})) == [
        {"text": "View Person"}
    ]
    assert _v(sb.api4("Email", "getLinks", {})) == []
    with pytest.raises(Unauthorized):
        sb.api4("Contact", "getLinks", {}, check_permissions=True, contact_id=sb.ensure_staff()["contact_id"])


# ---- over the wire ------------------------------------------------------------------------
async def test_checksum_round_trip_over_the_wire(sb: Sandbox, ada: int) -> None:
    app = create_wire_app(sb, WireConfig.for_sandbox(sb))
    headers = {"X-Civi-Auth": f"Bearer {sb.admin_api_key}", "X-Requested-With": "XMLHttpRequest"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as client:
        r = await client.post(
            "/civicrm/ajax/api4/Contact/getChecksum",
            headers=headers,
            data={"params": json.dumps({"contactId": ada})},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["action"] == "getChecksum" and body["count"] == 1
        checksum = body["values"][0]["checksum"]
        r = await client.post(
            "/civicrm/ajax/api4/Contact/validateChecksum",
            headers=headers,
            data={"params": json.dumps({"contactId": ada, "checksum": checksum})},
        )
        assert r.json()["values"] == [{"valid": True}]
        r = await client.post(
            "/civicrm/ajax/api4/Contact/getChecksum", headers=headers, data={"params": "{}"}
        )
        assert r.status_code == 500
        assert r.json()["error_message"] == 'Parameter "contactId" is required.'
