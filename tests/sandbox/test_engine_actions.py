"""Every where operator, every action on every entity, permissions, custom fields, chain, join."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError, Unauthorized
from gateway.sandbox.schema import ENTITIES


@pytest.fixture
def people(sb: Sandbox) -> dict[str, int]:
    ids = {}
    for first, last, gender, job in (
        ("Ada", "Lovelace", 1, "Analyst"),
        ("Grace", "Hopper", 1, None),
        ("Alan", "Turing", 2, ""),
    ):
        rec = sb.api4(
            "Contact",
            "create",
            {"values": {"first_name": first, "last_name": last, "gender_id": gender, "job_title": job}},
        )["values"][0]
        ids[first] = rec["id"]
    return ids


def names(sb: Sandbox, where: list[Any]) -> list[str]:
    env = sb.api4(
        "Contact",
        "get",
        {
            "select": ["first_name"],
            "orderBy": {"first_name": "ASC"},
            "where": [["contact_type", "=", "Individual"], *where],
        },
    )
    return [r["first_name"] for r in env["values"]]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([["first_name", "=", "Ada"]], ["Ada"]),
        ([["first_name", "!=", "Ada"]], ["Alan", "Grace", "Staff", "Standalone"]),
        ([["first_name", "<>", "Ada"]], ["Alan", "Grace", "Staff", "Standalone"]),
        ([["gender_id", ">", 1]], ["Alan"]),
        ([["gender_id", ">=", 1]], ["Ada", "Alan", "Grace"]),
        ([["gender_id", "<", 2]], ["Ada", "Grace"]),
        ([["gender_id", "<=", 2]], ["Ada", "Alan", "Grace"]),
        ([["first_name", "IN", ["Ada", "Alan"]]], ["Ada", "Alan"]),
        ([["first_name", "IN", []]], []),
        ([["first_name", "NOT IN", ["Ada", "Alan", "Staff"]]], ["Grace", "Standalone"]),
        ([["last_name", "LIKE", "%o%"]], ["Ada", "Grace"]),
        ([["last_name", "LIKE", "lOVE%"]], ["Ada"]),
        ([["last_name", "NOT LIKE", "%o%"]], ["Alan", "Staff", "Standalone"]),
        ([["job_title", "IS NULL"]], ["Grace", "Staff", "Standalone"]),
        ([["job_title", "IS NOT NULL"]], ["Ada", "Alan"]),
        ([["job_title", "IS EMPTY"]], ["Alan", "Grace", "Staff", "Standalone"]),
        ([["job_title", "IS NOT EMPTY"]], ["Ada"]),
        ([["gender_id", "BETWEEN", [1, 1]]], ["Ada", "Grace"]),
        ([["gender_id", "NOT BETWEEN", [1, 1]]], ["Alan"]),
        ([["display_name", "CONTAINS", "race"]], ["Grace"]),
        ([["last_name", "REGEXP", "^(tur|hop)"]], ["Alan", "Grace"]),
        ([["gender_id:label", "=", "Male"]], ["Alan"]),
        ([["OR", [["first_name", "=", "Ada"], ["last_name", "=", "Turing"]]]], ["Ada", "Alan"]),
        ([["AND", [["gender_id", "=", 1], ["last_name", "=", "Hopper"]]]], ["Grace"]),
        ([["NOT", [["gender_id", "=", 1]]], ["gender_id", "IS NOT NULL"]], ["Alan"]),
        ([["gender_id", "=", "1"]], ["Ada", "Grace"]),
        ([["first_name", "=", "last_name", True]], []),
    ],
)
def test_operators(sb: Sandbox, people: dict[str, int], where: list[Any], expected: list[str]) -> None:
    assert names(sb, where) == expected


def test_order_limit_offset(sb: Sandbox, people: dict[str, int]) -> None:
    env = sb.api4("Contact", "get", {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 2, "offset": 1})
    ids = sorted([1, 2, 3, *people.values()], reverse=True)
    assert [r["id"] for r in env["values"]] == ids[1:3]
    env = sb.api4("Contact", "get", {"select": ["id"], "limit": 0})
    assert env["count"] == 6
    with pytest.raises(CiviError, match="Invalid sort direction"):
        sb.api4("Contact", "get", {"orderBy": {"id": "SIDEWAYS"}})


def test_select_suffix_wildcard_and_unknown(sb: Sandbox, people: dict[str, int]) -> None:
    rec = sb.api4(
        "Contact",
        "get",
        {"select": ["gender_id:label", "do_not_*", "nope"], "where": [["id", "=", people["Ada"]]]},
    )["values"][0]
    assert rec == {
        "id": people["Ada"],
        "gender_id:label": "Female",
        "do_not_email": False,
        "do_not_phone": False,
        "do_not_mail": False,
        "do_not_sms": False,
        "do_not_trade": False,
    }


def test_update_save_delete_replace(sb: Sandbox, people: dict[str, int]) -> None:
    ada = people["Ada"]
    rec = sb.api4("Contact", "update", {"values": {"id": ada, "last_name": "King"}})
    assert rec["values"][0]["display_name"] == "Ada King"
    assert rec["values"][0]["contact_id"] is None
    saved = sb.api4(
        "Contact",
        "save",
        {
            "records": [{"id": ada, "nick_name": "Countess"}, {"first_name": "New"}],
            "defaults": {"source": "import"},
        },
    )["values"]
    assert saved[0]["nick_name"] == "Countess" and saved[1]["source"] == "import"
    matched = sb.api4(
        "Contact", "save", {"records": [{"first_name": "New", "job_title": "X"}], "match": ["first_name"]}
    )["values"]
    assert matched[0]["id"] == saved[1]["id"]
    gone = sb.api4("Contact", "delete", {"where": [["id", "=", saved[1]["id"]]]})
    assert gone["values"] == [{"id": saved[1]["id"]}]
    # in the trash: hidden unless the where mentions is_deleted
    assert names(sb, [["first_name", "=", "New"]]) == []
    trashed = sb.api4("Contact", "get", {"where": [["is_deleted", "=", True]], "select": ["id"]})["values"]
    assert trashed == [{"id": saved[1]["id"]}]
    sb.api4("Contact", "delete", {"where": [["id", "=", people["Alan"]]], "useTrash": False})
    assert (
        sb.api4("Contact", "get", {"where": [["id", "=", people["Alan"]], ["is_deleted", "IN", [0, 1]]]})[
            "count"
        ]
        == 0
    )
    # replace: the contact's emails become exactly these
    for e in ("a@x.org", "b@x.org"):
        sb.api4("Email", "create", {"values": {"contact_id": ada, "email": e}})
    out = sb.api4(
        "Email", "replace", {"where": [["contact_id", "=", ada]], "records": [{"email": "c@x.org"}]}
    )["values"]
    assert [r["email"] for r in out] == ["c@x.org"]
    left = sb.api4("Email", "get", {"where": [["contact_id", "=", ada]], "select": ["email"]})
    assert left["values"] == [{"id": out[0]["id"], "email": "c@x.org"}]


def test_update_by_where_returns_each(sb: Sandbox, people: dict[str, int]) -> None:
    out = sb.api4("Contact", "update", {"where": [["gender_id", "=", 1]], "values": {"job_title": "Pioneer"}})
    assert sorted(r["id"] for r in out["values"]) == sorted([people["Ada"], people["Grace"]])


def test_get_fields_and_actions_for_every_entity(sb: Sandbox) -> None:
    for name in ENTITIES:
        fields = sb.api4(name, "getFields", {"select": ["name", "type", "entity"]})["values"]
        assert fields[0] == {"name": "id", "type": "Field", "entity": name}
        actions = [a["name"] for a in sb.api4(name, "getActions", {})["values"]]
        assert {"get", "create", "update", "save", "delete", "replace", "getFields"} <= set(actions)
        assert sb.api4(name, "get", {"limit": 1})["entity"] == name


def test_get_fields_create_marks_required(sb: Sandbox) -> None:
    fields = sb.api4(
        "Email",
        "getFields",
        {"action": "create", "select": ["name", "required"], "where": [["required", "=", True]]},
    )["values"]
    # as 5.77 says it (a real site's getFields): location_type_id is required (default 1) and
    # contact_id is not (an email may belong to no contact)
    assert fields == [{"required": True, "name": "location_type_id"}, {"required": True, "name": "email"}]
    opts = sb.api4(
        "Email",
        "getFields",
        {"loadOptions": True, "select": ["options"], "where": [["name", "=", "on_hold"]]},
    )["values"]
    assert opts == [{"options": ["No", "On Hold Bounce", "On Hold Opt Out"]}]


@pytest.mark.parametrize(
    ("entity", "values"),
    [
        ("Phone", {"contact_id": 1, "phone": "(555) 123-4567", "phone_type_id": 2}),
        ("Address", {"contact_id": 1, "street_address": "1 Main St", "city": "Springfield"}),
        ("Group", {"title": "Volunteers"}),
        ("Tag", {"name": "Major Donor"}),
        ("Activity", {"activity_type_id": 1, "subject": "Kickoff", "source_contact_id": 2}),
        ("Note", {"entity_id": 1, "note": "hello", "contact_id": 2}),
        ("Relationship", {"contact_id_a": 2, "contact_id_b": 1, "relationship_type_id": 4}),
        ("Contribution", {"contact_id": 2, "financial_type_id": 1, "total_amount": 25.5}),
    ],
)
def test_crud_each_entity(sb: Sandbox, entity: str, values: dict[str, Any]) -> None:
    rec = sb.api4(entity, "create", {"values": values})["values"][0]
    got = sb.api4(entity, "get", {"where": [["id", "=", rec["id"]]], "select": ["*", *values]})["values"][0]
    for key, value in values.items():
        assert got[key] == value
    sb.api4(entity, "update", {"values": {"id": rec["id"]}})
    assert sb.api4(entity, "delete", {"where": [["id", "=", rec["id"]]]})["count"] == 1
    assert sb.api4(entity, "get", {"where": [["id", "=", rec["id"]]]})["count"] == 0


def test_entity_derived_values(sb: Sandbox) -> None:
    phone = sb.api4("Phone", "create", {"values": {"contact_id": 1, "phone": "(555) 1-2"}})
    assert phone["values"][0]["is_primary"] is True
    got = sb.api4("Phone", "get", {"select": ["phone_numeric"]})["values"]
    assert got == [{"id": phone["values"][0]["id"], "phone_numeric": "55512"}]
    group = sb.api4("Group", "create", {"values": {"title": "Board Members"}})["values"][0]
    # 5.77's answer leaves out the defaults it did not derive (is_active, visibility)
    assert group["name"] == "Board_Members" and "is_active" not in group
    stored = sb.api4("Group", "get", {"select": ["is_active"], "where": [["id", "=", group["id"]]]})
    assert stored["values"][0]["is_active"] is True
    contrib = sb.api4(
        "Contribution",
        "create",
        {"values": {"contact_id": 2, "financial_type_id:label": "Donation", "total_amount": "10"}},
    )
    rec = contrib["values"][0]
    assert rec["financial_type_id"] == 1 and rec["total_amount"] == 10.0
    assert rec["currency"] == "USD" and rec["contribution_status_id"] == 1


def test_group_contact_and_entity_tag(sb: Sandbox, people: dict[str, int]) -> None:
    gid = sb.api4("Group", "create", {"values": {"title": "G"}})["values"][0]["id"]
    tid = sb.api4("Tag", "create", {"values": {"name": "T"}})["values"][0]["id"]
    sb.api4("GroupContact", "create", {"values": {"group_id": gid, "contact_id": people["Ada"]}})
    sb.api4("EntityTag", "create", {"values": {"tag_id": tid, "entity_id": people["Ada"]}})
    got = sb.api4("GroupContact", "get", {"select": ["status", "contact_id.display_name", "group_id.title"]})[
        "values"
    ]
    assert [{k: v for k, v in g.items() if k != "id"} for g in got] == [
        {"status": "Added", "contact_id.display_name": "Ada Lovelace", "group_id.title": "G"}
    ]
    with pytest.raises(CiviError, match="Mandatory values missing from Api4 GroupContact::create: group_id"):
        sb.api4("GroupContact", "create", {"values": {"contact_id": people["Ada"]}})


def test_custom_fields(sb: Sandbox, people: dict[str, int]) -> None:
    ada = people["Ada"]
    fields = sb.api4(
        "Contact", "getFields", {"where": [["type", "=", "Custom"]], "select": ["name", "data_type", "type"]}
    )
    assert fields["values"][0] == {
        "name": "Constituent_Information.Most_Important_Issue",
        "type": "Custom",
        "data_type": "String",
    }
    sb.api4(
        "Contact",
        "update",
        {
            "values": {
                "id": ada,
                "Constituent_Information.Most_Important_Issue": "Edu",
                "Constituent_Information.Marital_Date": "1835-07-08",
            }
        },
    )
    rec = sb.api4("Contact", "get", {"select": ["custom.*"], "where": [["id", "=", ada]]})
    assert rec["values"] == [
        {
            "id": ada,
            "Constituent_Information.Most_Important_Issue": "Edu",
            "Constituent_Information.Marital_Status": None,
            "Constituent_Information.Marital_Date": "1835-07-08",
        }
    ]
    hit = sb.api4(
        "Contact",
        "get",
        {"select": ["id"], "where": [["Constituent_Information.Most_Important_Issue", "=", "Edu"]]},
    )
    assert hit["values"] == [{"id": ada}]
    label = sb.api4(
        "Contact",
        "get",
        {"select": ["Constituent_Information.Most_Important_Issue:label"], "where": [["id", "=", ada]]},
    )
    assert label["values"] == [{"id": ada, "Constituent_Information.Most_Important_Issue:label": "Education"}]
    assert (
        "Constituent_Information.Most_Important_Issue"
        not in sb.api4("Contact", "get", {"where": [["id", "=", ada]]})["values"][0]
    )
    created = sb.api4(
        "Contact", "create", {"values": {"first_name": "C", "Constituent_Information.Marital_Status": "M"}}
    )["values"][0]
    assert created["Constituent_Information.Marital_Status"] == "M"


def test_chain_and_join(sb: Sandbox, people: dict[str, int]) -> None:
    ada = people["Ada"]
    sb.api4("Email", "create", {"values": {"contact_id": ada, "email": "ada@example.org"}})
    env = sb.api4(
        "Contact",
        "get",
        {
            "select": ["id"],
            "where": [["id", "=", ada]],
            "chain": {
                "emails": ["Email", "get", {"where": [["contact_id", "=", "$id"]], "select": ["email"]}]
            },
        },
    )
    assert [{**r, "emails": [{"email": e["email"]} for e in r["emails"]]} for r in env["values"]] == [
        {"id": ada, "emails": [{"email": "ada@example.org"}]}
    ]
    assert list(env["values"][0]["emails"][0]) == ["id", "email"]  # id comes first
    created = sb.api4(
        "Contact",
        "create",
        {
            "values": {"first_name": "Chained"},
            "chain": {
                "email": ["Email", "create", {"values": {"contact_id": "$id", "email": "c@example.org"}}, 0]
            },
        },
    )
    assert created["values"][0]["email"]["email"] == "c@example.org"
    joined = sb.api4(
        "Contact",
        "get",
        {
            "select": ["id", "email.email"],
            "join": [["Email AS email", "LEFT", ["id", "=", "email.contact_id"]]],
            "where": [["id", "IN", [ada, people["Grace"]]]],
            "orderBy": {"id": "ASC"},
        },
    )
    assert joined["values"] == [
        {"id": ada, "email.email": "ada@example.org"},
        {"id": people["Grace"], "email.email": None},
    ]
    inner = sb.api4(
        "Contact",
        "get",
        {
            "select": ["id"],
            "join": [["Email AS e", "INNER", ["id", "=", "e.contact_id"]]],
            "where": [["e.email", "LIKE", "ada%"]],
        },
    )
    assert inner["values"] == [{"id": ada}]


def test_index(sb: Sandbox) -> None:
    p = {"select": ["id", "display_name"], "limit": 2}
    assert sb.api4("Contact", "get", dict(p), index="id")["values"] == {
        "2": {"id": 2, "display_name": "Standalone Admin"},
        "1": {"id": 1, "display_name": "Default Organization"},
    }
    assert sb.api4("Contact", "get", dict(p), index=0)["values"] == {
        "id": 2,
        "display_name": "Standalone Admin",
    }
    keyed = sb.api4("Contact", "get", {"select": ["display_name"], "limit": 1}, index="id")
    assert keyed["values"] == {"2": {"display_name": "Standalone Admin"}}
    with pytest.raises(CiviError, match="Cannot use existing field name as alias"):
        sb.api4("Contact", "get", dict(p), index='"id"')


def test_permissions(sb: Sandbox) -> None:
    anon = sb.api4("Contact", "get", {"limit": 1}, check_permissions=True)
    assert anon["values"] == [] and anon["count"] == 0
    with pytest.raises(Unauthorized) as info:
        sb.api4("Contact", "create", {"values": {"first_name": "Anon"}}, check_permissions=True)
    assert info.value.status == 403
    admin = sb.api4("Contact", "get", {"where": [["id", "=", 2]]}, check_permissions=True, contact_id=2)[
        "values"
    ][0]
    assert admin["api_key"] == sb.admin_api_key
    assert sb.ensure_staff()["contact_id"] == 3  # idempotent
    staff = sb.api4("Contact", "get", {"where": [["id", "=", 2]]}, check_permissions=True, contact_id=3)[
        "values"
    ][0]
    assert "api_key" not in staff
    with pytest.raises(Unauthorized):  # creating contacts needs "add contacts" (sample 48)
        sb.api4(
            "Contact", "create", {"values": {"first_name": "ByStaff"}}, check_permissions=True, contact_id=3
        )
    sb.api4(
        "Contact",
        "update",
        {"values": {"id": 2, "nick_name": "ByStaff"}},
        check_permissions=True,
        contact_id=3,
    )
    with pytest.raises(Unauthorized):
        sb.api4("Setting", "set", {"values": {"debug_enabled": False}}, check_permissions=True, contact_id=3)
    with pytest.raises(Unauthorized):
        sb.api4("Contribution", "get", {}, check_permissions=True, contact_id=3)
    out = sb.api4("Setting", "set", {"values": {"debug_enabled": True}}, check_permissions=True, contact_id=2)
    assert out["values"] == [{"name": "debug_enabled", "value": True}]
    got = sb.api4("Setting", "get", {"select": ["debug_enabled"]})["values"]
    assert got == [{"name": "debug_enabled", "value": True}]
    users = {u["username"]: u for u in sb.users()}
    assert users["admin"]["contact_id"] == 2 and users["staff"]["contact_id"] == 3
    assert "authenticate with api key" not in users["staff"]["permissions"]


def test_fresh_sandbox_is_a_fresh_civicrm() -> None:
    fresh = Sandbox()
    assert [u["username"] for u in fresh.users()] == ["admin"]
    ids = [r["id"] for r in fresh.api4("Contact", "get", {"select": ["id"]})["values"]]
    assert ids == [1, 2]
    created = fresh.api4("Contact", "create", {"values": {"first_name": "Ada"}})["values"][0]
    assert created["id"] == 3  # as in the samples
    fresh.close()


def test_entity_get(sb: Sandbox) -> None:
    env = sb.api4("Entity", "get", {"select": ["name", "title", "type", "primary_key"], "limit": 2})
    assert env["values"][0] == {
        "name": "Activity",
        "title": "Activity",
        "type": ["DAOEntity"],
        "primary_key": ["id"],
    }
    assert env["countFetched"] == 2 and env["count"] == len(ENTITIES) + 2
    names_ = [r["name"] for r in sb.api4("Entity", "get", {"where": [["name", "LIKE", "Group%"]]})["values"]]
    assert names_ == ["Group", "GroupContact"]


def test_file_database_persists(tmp_path: Any) -> None:
    path = str(tmp_path / "civi.sqlite")
    one = Sandbox(path)
    one.api4("Contact", "create", {"values": {"first_name": "Kept"}})
    one.close()
    two = Sandbox(path)
    assert two.api4("Contact", "get", {"where": [["first_name", "=", "Kept"]]})["count"] == 1
    two.close()
