"""Params normalisation: names, bodies, the simple form, query strings."""

import pytest

from gateway.core.errors import GatewayError
from gateway.core.params import (
    check_names,
    is_read_action,
    normalize_v3,
    normalize_v4,
    params_from_query,
    parse_body,
)


@pytest.mark.parametrize(
    "entity,action",
    [
        ("Contact", "get"),
        ("Contact", "getFields"),
        ("Custom_Things", "get"),
        ("A1", "b_2"),
    ],
)
def test_valid_names(entity, action):
    check_names(entity, action)


@pytest.mark.parametrize(
    "entity,action",
    [
        ("Contact;rm", "get"),
        ("Contact", "get;ls"),
        ("../etc", "get"),
        ("Contact", "get\x00"),
        ("", "get"),
        ("Contact", ""),
        ("1Contact", "get"),
        ("Contäct", "get"),
        ("Contact", "get.x"),
        ("C" * 65, "get"),
        ("Contact", "$(id)"),
        ("Contact", "get all"),
    ],
)
def test_invalid_names(entity, action):
    with pytest.raises(GatewayError) as info:
        check_names(entity, action)
    assert info.value.status == 400
    assert info.value.slug == "invalid-request"


def test_read_actions():
    assert is_read_action(4, "get") and is_read_action(4, "getFields")
    assert is_read_action(4, "autocomplete")
    assert not is_read_action(3, "autocomplete")
    assert not any(is_read_action(4, a) for a in ("create", "update", "delete", "save", "replace"))


@pytest.mark.parametrize(
    "body,message",
    [
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"{not json", "not valid JSON"),
        (b"null", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_bodies(body, message):
    with pytest.raises(GatewayError) as info:
        parse_body(body, max_depth=32)
    assert message in info.value.detail
    assert info.value.status == 400


def test_empty_body_is_no_params():
    assert parse_body(b"", max_depth=32) == {}
    assert parse_body(b"  \n", max_depth=32) == {}


def test_depth_limit():
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    with pytest.raises(GatewayError, match="nested deeper"):
        parse_body(deep, max_depth=32)
    assert parse_body(b'{"a":' * 10 + b"1" + b"}" * 10, max_depth=32)


def test_extreme_nesting_is_refused_not_crashing():
    deep = b"[" * 500_000 + b"]" * 500_000
    with pytest.raises(GatewayError):
        parse_body(deep, max_depth=32)


# --- the simple form (civicrmapi's rule) ----------------------------------------------------


def test_get_fields_become_where():
    assert normalize_v4("get", {"contact_type": "Individual", "preferred_language": "de_DE"}) == {
        "where": [["contact_type", "=", "Individual"], ["preferred_language", "=", "de_DE"]]
    }


def test_get_mixes_native_params_and_lists_and_null():
    out = normalize_v4(
        "get",
        {
            "select": ["id"],
            "limit": 5,
            "id": [1, 2],
            "job_title": None,
            "where": [["is_deleted", "=", False]],
        },
    )
    assert out == {
        "select": ["id"],
        "limit": 5,
        "where": [["is_deleted", "=", False], ["id", "IN", [1, 2]], ["job_title", "IS NULL"]],
    }


def test_delete_fields_become_where():
    assert normalize_v4("delete", {"id": 4}) == {"where": [["id", "=", 4]]}


def test_create_fields_become_values():
    assert normalize_v4("create", {"contact_type": "Organization", "organization_name": "X"}) == {
        "values": {"contact_type": "Organization", "organization_name": "X"}
    }
    assert normalize_v4("create", {"values": {"a": 1}, "b": 2, "checkPermissions": True}) == {
        "values": {"a": 1, "b": 2},
        "checkPermissions": True,
    }


def test_update_with_id():
    assert normalize_v4("update", {"id": 1, "organization_name": "Mega Org"}) == {
        "where": [["id", "=", 1]],
        "values": {"organization_name": "Mega Org"},
    }


def test_native_params_pass_through_unchanged():
    native = {"select": ["id"], "where": [["id", ">", 1]], "orderBy": {"id": "DESC"}, "limit": 2}
    assert normalize_v4("get", native) == native
    assert normalize_v4("save", {"records": [{"id": 1}], "x": 1}) == {"records": [{"id": 1}], "x": 1}
    assert normalize_v4("get", {}) == {}


def test_v3_always_sequential():
    assert normalize_v3({"id": 2}) == {"id": 2, "sequential": 1}
    assert normalize_v3({"sequential": 0})["sequential"] == 1


# --- query strings ---------------------------------------------------------------------------


def test_query_params_json():
    assert params_from_query(4, [("params", '{"select":["id"],"limit":2}')], max_depth=32) == {
        "select": ["id"],
        "limit": 2,
    }


def test_query_simple_pairs():
    out = params_from_query(
        4,
        [
            ("last_name", "Lovelace"),
            ("select", "id,display_name"),
            ("limit", "5"),
            ("offset", "1"),
            ("orderBy", "sort_name:desc,id"),
        ],
        max_depth=32,
    )
    assert out == {
        "last_name": "Lovelace",
        "select": ["id", "display_name"],
        "limit": 5,
        "offset": 1,
        "orderBy": {"sort_name": "DESC", "id": "ASC"},
    }


def test_query_repeated_field_is_a_list_and_json_where():
    out = params_from_query(4, [("id", "1"), ("id", "2"), ("where", '[["id",">",0]]')], max_depth=32)
    assert out == {"id": ["1", "2"], "where": [["id", ">", 0]]}


@pytest.mark.parametrize(
    "items",
    [
        [("limit", "x")],
        [("limit", "-1")],
        [("orderBy", "id:sideways")],
        [("params", "[1]")],
        [("params", "{}"), ("id", "1")],
        [("where", "[oops")],
        [("limit", "1"), ("limit", "2")],
    ],
)
def test_bad_queries(items):
    with pytest.raises(GatewayError) as info:
        params_from_query(4, items, max_depth=32)
    assert info.value.status == 400


def test_v3_query_options():
    out = params_from_query(
        3,
        [("contact_type", "Individual"), ("limit", "2"), ("sort", "id:desc"), ("select", "id,display_name")],
        max_depth=32,
    )
    assert out == {
        "contact_type": "Individual",
        "return": "id,display_name",
        "options": {"limit": 2, "sort": "id DESC"},
    }
