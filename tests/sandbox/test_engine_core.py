"""Engine basics: envelopes, Contact/Email get and create, and the real error messages."""

from __future__ import annotations

import pytest

from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError

ENVELOPE_KEYS = ["values", "entity", "action", "debug", "version", "count", "countFetched"]


def test_base_records(sb: Sandbox) -> None:
    env = sb.api4(
        "Contact", "get", {"select": ["id", "display_name", "contact_type"], "orderBy": {"id": "ASC"}}
    )
    assert list(env) == ENVELOPE_KEYS
    assert env["values"][:2] == [
        {"id": 1, "display_name": "Default Organization", "contact_type": "Organization"},
        {"id": 2, "display_name": "Standalone Admin", "contact_type": "Individual"},
    ]


def test_create_contact_envelope_like_sample(sb: Sandbox) -> None:
    env = sb.api4(
        "Contact",
        "create",
        {"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace"}},
    )
    rec = env["values"][0]
    assert list(rec) == [
        "id",
        "contact_type",
        "display_name",
        "first_name",
        "last_name",
        "do_not_email",
        "do_not_phone",
        "do_not_mail",
        "do_not_sms",
        "do_not_trade",
        "is_opt_out",
        "sort_name",
        "preferred_language",
        "hash",
        "communication_style_id",
        "email_greeting_id",
        "postal_greeting_id",
        "addressee_id",
        "is_deceased",
        "is_deleted",
        "created_date",
        "modified_date",
        "preferred_mail_format",
        "custom",
        "check_permissions",
    ]
    assert rec["display_name"] == "Ada Lovelace"
    assert rec["sort_name"] == "Lovelace, Ada"
    assert rec["do_not_email"] is False and rec["communication_style_id"] == 1
    assert len(rec["hash"]) == 32
    assert env["count"] == env["countFetched"] == 1


def test_create_without_contact_type_defaults_to_individual(sb: Sandbox) -> None:
    rec = sb.api4("Contact", "create", {"values": {"first_name": "NoType"}})["values"][0]
    assert rec["contact_type"] == "Individual"
    assert rec["display_name"] == rec["sort_name"] == "NoType"


def test_default_select_depends_on_contact_type(sb: Sandbox) -> None:
    org, admin = sb.api4("Contact", "get", {"where": [["id", "IN", [1, 2]]], "orderBy": {"id": "ASC"}})[
        "values"
    ]
    assert "first_name" not in org and "organization_name" in org and "sic_code" in org
    assert "organization_name" not in admin and "employer_id" in admin
    assert admin["email_greeting_display"] == "Dear Standalone"
    assert list(admin)[:4] == ["id", "contact_type", "external_identifier", "display_name"]


def test_limit_without_order_uses_sort_name_like_mysql(sb: Sandbox) -> None:
    env = sb.api4("Contact", "get", {"select": ["id", "display_name"], "limit": 2})
    assert env["values"] == [
        {"id": 2, "display_name": "Standalone Admin"},
        {"id": 1, "display_name": "Default Organization"},
    ]


def test_email_create_and_primary(sb: Sandbox, ada: int) -> None:
    rec = sb.api4("Email", "create", {"values": {"contact_id": ada, "email": "ada@example.org"}})["values"][0]
    assert rec == {
        "id": rec["id"],
        "contact_id": ada,
        "location_type_id": 1,
        "email": "ada@example.org",
        "is_primary": True,
        "on_hold": 0,
        "custom": None,
        "check_permissions": None,
    }
    second = sb.api4(
        "Email", "create", {"values": {"contact_id": ada, "email": "b@x.org", "is_primary": True}}
    )["values"][0]
    emails = sb.api4("Email", "get", {"where": [["contact_id", "=", ada]], "select": ["id", "is_primary"]})[
        "values"
    ]
    assert emails == [{"id": rec["id"], "is_primary": False}, {"id": second["id"], "is_primary": True}]
    got = sb.api4("Contact", "get", {"select": ["email_primary.email"], "where": [["id", "=", ada]]})[
        "values"
    ]
    assert got == [{"id": ada, "email_primary.email": "b@x.org"}]


@pytest.mark.parametrize(
    ("entity", "action", "params", "message"),
    [
        ("Foo", "get", {}, "API (Foo, get) does not exist (or the extension it belongs to is not enabled)."),
        ("Contact", "frobnicate", {}, "Api Contact frobnicate version 4 does not exist."),
        ("Contact", "get", {"where": [["no_such_field", "=", "x"]]}, "Invalid field 'no_such_field'"),
        ("Contact", "get", {"where": [["id", "FOO", 1]]}, "Illegal operator"),
        ("Contact", "get", {"limit": "abc"}, 'Parameter "limit" is not of the correct type. Expecting int.'),
        ("Contact", "get", {"foo": 1}, "Unknown api parameter: setFoo"),
        (
            "Contact",
            "update",
            {"values": {"first_name": "X"}},
            'Parameter "where" is required unless primary keys are supplied in values.',
        ),
        ("Contact", "delete", {}, 'Parameter "where" is required.'),
        (
            "Email",
            "create",
            {"values": {"contact_id": 999999, "email": "nobody@example.org"}},
            "DB Error: constraint violation",
        ),
        (
            "Email",
            "create",
            {"values": {"contact_id": 1}},
            "Mandatory values missing from Api4 Email::create: email",
        ),
    ],
)
def test_errors(sb: Sandbox, entity: str, action: str, params: dict, message: str) -> None:
    with pytest.raises(CiviError) as info:
        sb.api4(entity, action, params)
    assert info.value.message == message
    assert info.value.status == 500


def test_mandatory_missing_extra(sb: Sandbox) -> None:
    with pytest.raises(CiviError) as info:
        sb.api4("Email", "create", {"values": {"contact_id": 1}})
    assert info.value.error_code == 0
    assert info.value.v3_code == "mandatory_missing"
    assert info.value.extra == {"fields": ["email"]}


def test_failed_write_leaves_nothing(sb: Sandbox) -> None:
    before = sb.api4("Email", "get", {"select": ["row_count"]})["count"]
    with pytest.raises(CiviError):
        sb.api4(
            "Contact",
            "create",
            {
                "values": {"first_name": "Chain"},
                "chain": {"bad": ["Email", "create", {"values": {"contact_id": 999999, "email": "x@y.z"}}]},
            },
        )
    assert sb.api4("Contact", "get", {"where": [["first_name", "=", "Chain"]]})["count"] == 0
    assert sb.api4("Email", "get", {"select": ["row_count"]})["count"] == before


def test_non_numeric_id_matches_nothing(sb: Sandbox) -> None:
    env = sb.api4("Contact", "get", {"where": [["id", "=", "abc"]], "select": ["id"]})
    assert env["values"] == [] and env["count"] == 0


def test_row_count(sb: Sandbox) -> None:
    env = sb.api4("Contact", "get", {"select": ["row_count"]})
    assert env["values"] == [] and env["countFetched"] == 0
    assert env["count"] == env["countMatched"] == 3
    env = sb.api4("Contact", "get", {"select": ["id", "row_count"], "limit": 1})
    assert env["values"] == [{"id": 2}] and env["countMatched"] == 3
