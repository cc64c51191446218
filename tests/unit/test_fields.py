"""gateway.core.fields: every field a parsed call names, in whatever position and spelling,
resolved to the entity that holds it (one set of FieldRefs for the policy to check).

With a Schema, names resolve through CiviCRM 5.77's metadata as the embedded sandbox serves it
(tests/unit/conftest.py); without one, by name. How the policy uses the refs (credentials,
allow-lists) is tests/core/test_policy.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.call import parse
from gateway.core.errors import GatewayError
from gateway.core.fields import (
    MAX_JOIN_HOPS,
    MAX_REFERENCES,
    FieldRef,
    chain_references,
    raw_paths,
    references,
)
from gateway.core.schema import Schema


async def refs(
    version: int, entity: str, action: str, params: dict[str, Any], schema: Schema | None
) -> list[FieldRef]:
    return await references(parse(version, entity, action, params), schema)


def triples(found: list[FieldRef]) -> set[tuple[str | None, str, str]]:
    """(entity, field, use) of each ref: what the policy checks."""
    return {(r.entity, r.field, r.use) for r in found}


async def unknown(
    version: int, entity: str, action: str, params: dict[str, Any], schema: Schema
) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await refs(version, entity, action, params, schema)
    return caught.value


# --- the paths a call names, by position (no metadata) ----------------------------------------


def test_raw_paths_of_every_position() -> None:
    call = parse(
        4,
        "Contact",
        "get",
        {
            "select": ["id", "UPPER(first_name) AS u", "COUNT(*)"],
            "where": [["OR", [["last_name", "=", "x"], ["nick_name", "=", "first_name", True]]]],
            "groupBy": ["contact_type"],
            "orderBy": {"u": "ASC", "sort_name": "DESC"},
            "having": [["u", "=", "A"]],
            "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
        },
    )
    assert sorted(raw_paths(call)) == sorted(
        [
            ("id", "select"),
            ("first_name", "select"),
            ("*", "select"),
            ("contact_type", "group"),
            ("sort_name", "order"),  # "u" is the select's alias: checked where it is defined
            ("nick_name", "where"),
            ("first_name", "where"),
            ("last_name", "where"),
            ("e.contact_id", "join"),
            ("id", "join"),
        ]
    )


def test_raw_paths_of_writes_and_action_params() -> None:
    save = parse(
        4,
        "Contact",
        "save",
        {"records": [{"first_name": "A"}], "defaults": {"source": "x"}, "match": ["external_identifier"]},
    )
    assert sorted(raw_paths(save)) == [
        ("external_identifier", "filter"),
        ("first_name", "write"),
        ("source", "write"),
    ]
    auto = parse(4, "Contact", "autocomplete", {"key": "external_identifier"})
    assert list(raw_paths(auto)) == [("external_identifier", "select")]
    v3 = parse(
        3,
        "Contact",
        "getlist",
        {"id_field": "id", "extra": ["email"], "params": {"last_name": "x"}, "sort": "sort_name desc"},
    )
    assert sorted(raw_paths(v3)) == [
        ("email", "select"),
        ("id", "select"),
        ("last_name", "filter"),
        ("sort_name", "order"),
    ]


def test_chain_references_are_the_parents_fields() -> None:
    v4 = parse(
        4,
        "Contact",
        "get",
        {
            "select": ["id", "UPPER(first_name) AS u"],
            "chain": {
                "e": [
                    "Email",
                    "get",
                    {
                        "where": [["contact_id", "=", "$id"], ["email", "=", "$u"]],
                        "chain": {"p": ["Phone", "get", {"where": [["contact_id", "=", "$contact_id"]]}]},
                    },
                ]
            },
        },
    )
    # $u is the parent's alias (its fields checked where defined); the grandchild's $contact_id is the child's
    assert list(chain_references(v4)) == [("id", "chain")]
    v3 = parse(
        3,
        "Contact",
        "get",
        {"api.Email.get": {"contact_id": "$value.id", "api.Phone.get": {"x": "$value.email"}}},
    )
    assert list(chain_references(v3)) == [("id", "chain")]


# --- without metadata: by name --------------------------------------------------------------


async def test_without_a_schema_each_segment_is_reported_by_name() -> None:
    found = await refs(
        4,
        "Contact",
        "get",
        {"select": ["contact_id.hash", "e.email"], "join": [["Email AS e", "LEFT"]]},
        None,
    )
    assert triples(found) == {
        ("Contact", "contact_id", "select"),
        (None, "hash", "select"),  # past the first segment the entity is unknown
        ("Email", "email", "select"),  # a join alias names its entity
    }


async def test_every_chained_call_is_walked() -> None:
    found = await refs(
        4,
        "Contact",
        "get",
        {
            "select": ["id"],
            "chain": {
                "e": [
                    "Email",
                    "get",
                    {"select": ["email"], "where": [["contact_id", "=", "$id"]]},
                    "location_type_id",
                ]
            },
        },
        None,
    )
    assert triples(found) == {
        ("Contact", "id", "select"),
        ("Contact", "id", "chain"),
        ("Email", "email", "select"),
        ("Email", "contact_id", "where"),
        ("Email", "location_type_id", "select"),  # the index: CiviCRM selects it to key by
    }
    chained = [r for r in found if r.entity == "Email"]
    assert all(r.call.entity == "Email" for r in chained)


async def test_what_reads_no_field() -> None:
    found = await refs(
        4,
        "Contact",
        "get",
        {
            "select": ["contact_type", "COUNT(*) AS n", "row_count"],  # row_count: CiviCRM's count
            "groupBy": ["contact_type"],
            "having": [["COUNT(*)", ">", 1]],
            "orderBy": {"COUNT(*)": "DESC"},
        },
        None,
    )
    # COUNT(*) in a select is the select's own wildcard (the policy narrows it); elsewhere it
    # counts rows and reads no field
    assert triples(found) == {
        ("Contact", "contact_type", "select"),
        ("Contact", "contact_type", "group"),
        ("Contact", "*", "select"),
    }


async def test_a_metadata_actions_own_select_names_metadata_keys() -> None:
    assert (
        await refs(
            4, "Contact", "getFields", {"select": ["name", "data_type"], "where": [["name", "=", "x"]]}, None
        )
        == []
    )
    found = await refs(
        4, "Contact", "getFields", {"chain": {"c": ["Contact", "get", {"where": [["id", "=", "$id"]]}]}}, None
    )
    assert ("Contact", "id", "chain") in triples(found)


async def test_v3_contact_location_fields() -> None:
    found = await refs(3, "Contact", "get", {"return": ["email", "city"], "state_province": "x"}, None)
    assert [(r.entity, r.field, r.use, r.via) for r in found] == [
        ("Address", "state_province_id", "filter", "Address"),
        ("Email", "email", "select", "Email"),  # the client must be allowed Email.get too
        ("Address", "city", "select", "Address"),
    ]


async def test_too_many_references_are_refused() -> None:
    select = [f"CONCAT({', '.join(['id'] * 100)}) AS c{i}" for i in range(11)]
    with pytest.raises(GatewayError) as caught:
        await refs(4, "Contact", "get", {"select": select}, None)
    assert caught.value.slug == "invalid-request"
    assert caught.value.detail == f"More than {MAX_REFERENCES} field references in one request."


# --- with CiviCRM's metadata ----------------------------------------------------------------


async def test_implicit_joins_follow_foreign_keys(schema: Schema) -> None:
    found = await refs(4, "Email", "get", {"select": ["contact_id.employer_id.display_name"]}, schema)
    assert [(r.entity, r.field, r.via) for r in found] == [
        ("Email", "contact_id", None),
        ("Contact", "employer_id", "Contact"),
        ("Contact", "display_name", "Contact"),
    ]
    found = await refs(4, "Contact", "get", {"select": ["email_primary.email"]}, schema)
    assert [(r.entity, r.field, r.via) for r in found] == [
        ("Contact", "email_primary", None),
        ("Email", "email", "Email"),
    ]


async def test_implicit_joins_go_at_most_max_join_hops(schema: Schema) -> None:
    path = ".".join(["employer_id"] * MAX_JOIN_HOPS + ["id"])
    assert len(await refs(4, "Contact", "get", {"select": [path]}, schema)) == MAX_JOIN_HOPS + 1
    error = await unknown(4, "Contact", "get", {"select": ["employer_id." + path]}, schema)
    assert error.slug == "unknown-field"


async def test_an_explicit_join_resolves_in_its_entity(schema: Schema) -> None:
    found = await refs(
        4,
        "Contact",
        "get",
        {"select": ["e.email"], "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]]},
        schema,
    )
    assert [(r.entity, r.field, r.use, r.via) for r in found] == [
        ("Email", "email", "select", "Email"),
        ("Email", "contact_id", "join", "Email"),
        ("Contact", "id", "join", None),
    ]
    error = await unknown(
        4, "Contact", "get", {"select": ["e.bogus"], "join": [["Email AS e", "LEFT"]]}, schema
    )
    assert error.detail.startswith("Email has no field 'bogus'.")


async def test_an_unknown_field_is_named_with_suggestions(schema: Schema) -> None:
    error = await unknown(4, "Contact", "get", {"select": ["frist_name"]}, schema)
    assert (error.slug, error.status) == ("unknown-field", 400)
    assert error.detail.startswith("Contact has no field 'frist_name'. Did you mean 'first_name'")
    assert error.civicrm == {"entity": "Contact", "field": "frist_name"}
    # in every position, a write included
    assert (
        await unknown(4, "Contact", "create", {"values": {"frist_name": "A"}}, schema)
    ).slug == "unknown-field"
    assert (
        await unknown(4, "Contact", "get", {"where": [["UPPER(frist_name)", "=", "A"]]}, schema)
    ).slug == "unknown-field"


async def test_suffixes_only_on_fields_with_options(schema: Schema) -> None:
    found = await refs(4, "Contact", "get", {"select": ["contact_type:label", "gender_id:name"]}, schema)
    assert triples(found) == {("Contact", "contact_type", "select"), ("Contact", "gender_id", "select")}
    error = await unknown(4, "Contact", "get", {"select": ["first_name:label"]}, schema)
    assert (error.slug, error.detail) == ("invalid-request", "No option list found for 'first_name'")
    error = await unknown(4, "Contact", "get", {"select": ["gender_id:bogus"]}, schema)
    assert error.detail == "'gender_id' has no ':bogus' form (it has name, label)."


async def test_wildcards(schema: Schema) -> None:
    found = await refs(4, "Contact", "get", {"select": ["*", "custom.*", "email_primary.*"]}, schema)
    assert triples(found) == {
        ("Contact", "*", "select"),
        ("Contact", "custom.*", "select"),
        ("Contact", "email_primary", "select"),
        ("Email", "*", "select"),
    }


async def test_the_chain_index_is_a_field_of_the_chained_entity(schema: Schema) -> None:
    chain = {"e": ["Email", "get", {"where": [["contact_id", "=", "$id"]]}, "location_type_id"]}
    assert ("Email", "location_type_id", "select") in triples(
        await refs(4, "Contact", "get", {"chain": chain}, schema)
    )
    chain["e"][3] = "bogus"
    assert (await unknown(4, "Contact", "get", {"chain": chain}, schema)).detail.startswith(
        "Email has no field 'bogus'"
    )


async def test_v3_names_a_field_by_its_name_alias_or_unique_name(schema: Schema) -> None:
    found = await refs(
        3, "Contact", "get", {"contact_source": "x", "contact_id": 2, "return": "display_name"}, schema
    )
    assert triples(found) == {
        ("Contact", "source", "filter"),  # the unique name
        ("Contact", "id", "filter"),  # an alias
        ("Contact", "display_name", "select"),
    }
    error = await unknown(3, "Contact", "get", {"bogus": 1}, schema)
    assert (error.slug, error.detail) == ("unknown-field", "Contact has no field 'bogus'.")
    # getsingle names the fields of get
    assert triples(await refs(3, "Contact", "getsingle", {"id": 2}, schema)) == {("Contact", "id", "filter")}


async def test_v3_contact_filters_that_search_other_entities(schema: Schema) -> None:
    # (5.77's getfields also has group, tag and uf_user, which search GroupContact, EntityTag
    # and UFMatch the same way; the sandbox's APIv3 metadata does not list them)
    found = await refs(3, "Contact", "get", {"display_name": "A", "sort_name": "B"}, schema)
    assert [(r.entity, r.field, r.use, r.via) for r in found] == [
        ("Contact", "display_name", "filter", None),
        ("Email", "email", "filter", "Email"),  # a name filter matches the contact's emails too
        ("Contact", "sort_name", "filter", None),
        ("Email", "email", "filter", "Email"),
    ]
    # a return is no search
    assert triples(await refs(3, "Contact", "get", {"return": "display_name"}, schema)) == {
        ("Contact", "display_name", "select")
    }
