"""gateway.core.call: a client's params parsed once into a Call, refused (with the param named)
when they do not parse, and forwarded only as Call.to_params() of that parse.

Pure and in-process: no app, no backend. The HTTP faces of these rules are tested elsewhere
(tests/gateway/test_hostile_input.py, tests/core/test_policy.py); here each rule of the parser
has its own case, so a broken rule names itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core import call as call_module
from gateway.core.call import (
    MAX_CHAIN_DEPTH,
    MAX_ITEMS,
    MAX_VALUES,
    Condition,
    Group,
    has_grammar,
    param_kinds,
    parse,
    references_in,
)
from gateway.core.errors import GatewayError


def refused(version: int, entity: str, action: str, params: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(version, entity, action, params)
    return caught.value


def v4(params: dict[str, Any], entity: str = "Contact", action: str = "get") -> dict[str, Any]:
    """What CiviCRM would receive for these APIv4 params."""
    return parse(4, entity, action, params).to_params()


# --- APIv4: every kind of param, and what is forwarded ---------------------------------------


def test_a_get_round_trips_in_canonical_form() -> None:
    params = {
        "select": ["id", "display_name", "UPPER( first_name )  AS u"],
        "where": [["id", ">", 1], ["OR", [["first_name", "LIKE", "A%"], ["last_name", "IS NULL"]]]],
        "orderBy": {"sort_name": "desc"},
        "groupBy": ["contact_type"],
        "limit": "10",
        "offset": 5,
        "checkPermissions": 1,
        "language": "fr_FR",
    }
    assert v4(params) == {
        "select": ["id", "display_name", "UPPER(first_name) AS u"],  # re-rendered from the tree
        "where": [["id", ">", 1], ["OR", [["first_name", "LIKE", "A%"], ["last_name", "IS NULL"]]]],
        "groupBy": ["contact_type"],
        "orderBy": {"sort_name": "DESC"},
        "limit": 10,
        "offset": 5,
        "checkPermissions": True,
        "language": "fr_FR",
    }


def test_objects_where_lists_belong_are_read_as_php_reads_them() -> None:
    params = {
        "select": {"a": "id", "b": "display_name"},
        "where": {"0": {"0": "id", "1": "IN", "2": {"x": 1, "y": 2}}},
    }
    assert v4(params) == {"select": ["id", "display_name"], "where": [["id", "IN", [1, 2]]]}


def test_operators_match_in_any_case_and_are_forwarded_upper_case() -> None:
    assert v4({"where": [["first_name", "not like", "A%"]]})["where"] == [["first_name", "NOT LIKE", "A%"]]


def test_action_names_match_in_any_case() -> None:
    assert parse(4, "Contact", "GETFIELDS", {}).action == "getFields"
    assert parse(4, "Contact", "getactions", {}).action == "getActions"
    assert parse(3, "Contact", "GetSingle", {}).action == "getsingle"


def test_a_null_param_is_as_good_as_absent() -> None:
    assert v4({"select": None, "where": None, "limit": None}) == {}


def test_write_params() -> None:
    assert v4({"values": {"first_name": "A", "tags": [1, 2]}}, action="create") == {
        "values": {"first_name": "A", "tags": [1, 2]}
    }
    saved = v4(
        {
            "records": [{"first_name": "A"}, {"first_name": "B"}],
            "defaults": {"contact_type": "Individual"},
            "match": ["external_identifier"],
            "reload": "1",
        },
        action="save",
    )
    assert saved == {
        "defaults": {"contact_type": "Individual"},
        "records": [{"first_name": "A"}, {"first_name": "B"}],
        "match": ["external_identifier"],
        "reload": True,
    }
    assert v4({"where": [["id", "=", 4]], "useTrash": False}, action="delete") == {
        "where": [["id", "=", 4]],
        "useTrash": False,
    }


def test_the_params_of_other_standard_actions() -> None:
    assert v4({"action": "create", "values": {"first_name": "A"}}, action="checkAccess") == {
        "action": "create",
        "values": {"first_name": "A"},
    }
    assert v4({"contactId": "12", "ttl": 3}, action="getChecksum") == {"contactId": 12, "ttl": 3}
    fields = parse(4, "Contact", "getFields", {"loadOptions": ["id", "label"], "values": {"id": 1}})
    assert fields.options == {"loadOptions": ["id", "label"], "values": {"id": 1}}
    assert fields.field_params == {"values": "fields"}  # metadata values name fields
    assert parse(4, "Contact", "getFields", {"loadOptions": 0}).options == {"loadOptions": False}


def test_autocomplete_names_its_key_field_and_keeps_site_params_unparsed() -> None:
    call = parse(4, "Contact", "autocomplete", {"input": "ad", "key": "id", "ids": [3, 4], "formName": "f"})
    assert call.options["key"] == "id" and call.field_params == {"key": "field"}
    assert call.options["ids"] == [3, 4]
    assert call.unparsed == ("formName",)


def test_entity_specific_shapes() -> None:
    setting = parse(4, "Setting", "get", {"select": ["lcMessages"], "domainId": {"a": 1}})
    assert setting.to_params() == {"select": ["lcMessages"], "domainId": [1]}
    assert not setting.takes_limit and "limit" not in param_kinds("Setting", "get")
    assert refused(4, "Setting", "get", {"limit": 5}).detail == "Unknown api parameter: setLimit"
    # useTrash is a param of Contact.delete only
    assert refused(4, "Email", "delete", {"useTrash": False}).detail == "Unknown api parameter: setUseTrash"


def test_an_action_without_a_grammar_is_passed_as_sent_and_marked() -> None:
    call = parse(4, "Contact", "getMergedTo", {"contactId": 3, "anything": {"x": [1]}})
    assert not call.known_action
    assert call.unparsed == ("contactId", "anything")
    assert call.to_params() == {"contactId": 3, "anything": {"x": [1]}}
    assert not has_grammar(4, "Contact", "getMergedTo") and has_grammar(4, "Contact", "GET")


def test_declared_params_of_an_unmodelled_action() -> None:
    declared = {"contactId": "int", "blob": "array"}
    assert param_kinds("Contact", "getMergedTo", declared) == {
        "checkPermissions": "bool",
        "chain": "chain",
        "debug": "bool",
        "language": "string",
        "contactId": "int",
        "blob": "unparsed",  # an array of unknown meaning stays opaque
    }
    call = parse(4, "Contact", "getMergedTo", {"contactId": "7", "blob": [1]}, declared=declared)
    assert call.options["contactId"] == 7 and call.unparsed == ("blob",)


# --- APIv4 refusals: the slug, and a detail naming the param ----------------------------------


@pytest.mark.parametrize(
    ("params", "slug", "detail"),
    [
        # shapes
        ({"select": "id"}, "invalid-request", "Param 'select': must be a list, not str."),
        ({"select": [1]}, "invalid-request", "Param 'select': expected a field name or expression, not int."),
        ({"where": [3]}, "invalid-request", "Param 'where': each clause must be a list"),
        ({"where": [[]]}, "invalid-request", "Param 'where': each clause must be a list"),
        ({"where": [["OR", [], []]]}, "invalid-request", 'a OR clause is ["OR", [clauses]].'),
        ({"where": [["id", "=", 1, "yes"]]}, "invalid-request", "the 4th element of a clause must be true"),
        ({"where": [["id", "="]]}, "invalid-request", 'a = clause is [field, "=", value].'),
        ({"where": [["id", "IS NULL", 1]]}, "invalid-request", "operator IS NULL takes no value."),
        ({"where": [["id", "=", [1]]]}, "invalid-request", "operator = compares with one value, not a list."),
        ({"where": [["id", "IN", 1]]}, "invalid-request", "operator IN needs a list of values."),
        (
            {"where": [["id", "BETWEEN", [1]]]},
            "invalid-request",
            "operator BETWEEN needs a list of 2 values.",
        ),
        ({"where": [["id", "IN", [[1]]]]}, "invalid-request", "values must be scalars or lists of scalars."),
        (
            {"where": [["'x'", "=", 1]]},
            "invalid-request",
            "a clause compares a field or an expression, not a value",
        ),
        ({"where": [["COUNT(id)", ">", 1]]}, "invalid-request", "the aggregate function COUNT cannot filter"),
        (
            {"where": [["id", "IN", "contact_id", True]]},
            "invalid-request",
            "takes a list of values, not an expression",
        ),
        ({"orderBy": ["id"]}, "invalid-request", "Param 'orderBy': must be an object"),
        ({"orderBy": {"id": "UP"}}, "invalid-request", "direction of 'id' must be ASC or DESC."),
        ({"groupBy": ["COUNT(id)"]}, "invalid-request", "'COUNT(id)' is an aggregate"),
        ({"limit": -1}, "invalid-request", "Param 'limit': must be a whole number from 0 to 2147483648."),
        ({"offset": 2**31 + 1}, "invalid-request", "Param 'offset': must be a whole number"),
        ({"language": [1]}, "invalid-request", "Param 'language': must be a string."),
        (
            {"select": ["id"], "having": [["first_name", "=", "x"]]},
            "invalid-request",
            "'first_name' is not in select",
        ),
        # CiviCRM's own words (the same answer whether the gateway or CiviCRM refuses it)
        ({"where": [["id", "LIKES", 1]]}, "civicrm-bad-request", "Illegal operator"),
        ({"where": [["id"]]}, "civicrm-bad-request", "Illegal operator"),
        (
            {"limit": True},
            "civicrm-bad-request",
            'Parameter "limit" is not of the correct type. Expecting int.',
        ),
        ({"limit": "ten"}, "civicrm-bad-request", "Expecting int."),
        ({"checkPermissions": "yes"}, "civicrm-bad-request", "Expecting bool."),
        ({"bogus": 1}, "civicrm-bad-request", "Unknown api parameter: setBogus"),
        ({"select": ["id; DROP"]}, "civicrm-bad-request", "Unable to parse sql expression: id; DROP"),
        ({"where": [["*", "=", 1]]}, "civicrm-bad-request", "Unable to parse sql expression: *"),
    ],
)
def test_v4_get_refusals(params: dict[str, Any], slug: str, detail: str) -> None:
    error = refused(4, "Contact", "get", params)
    assert error.slug == slug and error.status == 400
    assert detail in error.detail


@pytest.mark.parametrize(
    ("action", "params", "detail"),
    [
        ("create", {"values": ["A"]}, "Param 'values': must be an object of field: value pairs."),
        ("create", {"values": {"a b": 1}}, "Param 'values': 'a b' is not a field name."),
        ("create", {"values": {"x.*": 1}}, "'x.*' is not a field name."),
        ("create", {"values": {"tags": {"a": 1}}}, "Param 'values.tags': values must be scalars"),
        ("save", {"records": [{"a": 1}], "match": ["a*"]}, "Param 'match': must be a list of field names."),
        ("save", {"records": [3]}, "Param 'records': must be an object"),
        ("getFields", {"values": {"id": [1]}}, "Param 'values': takes one value per field."),
        ("autocomplete", {"key": "UPPER(id)"}, "Param 'key': must be a field name."),
        ("autocomplete", {"ids": [[1]]}, "Param 'ids': must be a list of scalars."),
        ("getLinks", {"select": ["ui_action"]}, "getLinks needs 'entity' in its select."),
    ],
)
def test_v4_write_and_action_param_refusals(action: str, params: dict[str, Any], detail: str) -> None:
    error = refused(4, "Contact", action, params)
    assert error.slug == "invalid-request" and detail in error.detail


def test_names_and_params_must_be_what_they_say() -> None:
    error = refused(4, "1Contact", "get", {})
    assert error.slug == "invalid-request" and "Invalid entity name '1Contact'" in error.detail
    assert "Invalid action name 'get-all'" in refused(4, "Contact", "get-all", {}).detail
    assert refused(4, "Contact", "get", [("select", ["id"])]).detail == "Params must be a JSON object."  # type: ignore[arg-type]


def test_a_where_that_nests_past_16_levels_is_refused() -> None:
    clause: list[Any] = ["id", "=", 1]
    for _ in range(16):
        clause = ["AND", [clause]]
    parse(4, "Contact", "get", {"where": [clause]})
    error = refused(4, "Contact", "get", {"where": [["NOT", [clause]]]})
    assert "clauses nested deeper than 16 levels" in error.detail


# --- expression values and join conditions -----------------------------------------------------


def test_a_value_is_an_expression_only_with_the_4th_element_true() -> None:
    call = parse(
        4, "Contact", "get", {"where": [["first_name", "=", "last_name", True], ["id", "=", "5", False]]}
    )
    assert call.where is not None
    first, second = call.where
    assert isinstance(first, Condition) and first.right is not None and first.right.fields == ("last_name",)
    assert isinstance(second, Condition) and second.right is None and second.value == "5"
    assert call.to_params()["where"] == [["first_name", "=", "last_name", True], ["id", "=", "5"]]


def test_joins() -> None:
    call = parse(
        4,
        "Contact",
        "get",
        {
            "join": [
                ["Email AS e", "LEFT", ["e.contact_id", "=", "id"], ["e.is_primary", "=", "1"]],
                ["Tag", True, "EntityTag", ["tag.name", "=", "'vip'"]],
            ]
        },
    )
    assert call.join is not None
    email, tag = call.join
    assert (email.entity, email.alias, email.side, email.bridge) == ("Email", "e", "LEFT", None)
    # a join condition's string value is SQL: a field here, a quoted string there
    cond = email.conditions[0]
    assert isinstance(cond, Condition) and cond.on and cond.right is not None
    assert cond.right.fields == ("id",)
    assert (tag.alias, tag.side, tag.bridge) == ("tag", "INNER", "EntityTag")  # true: INNER
    assert call.to_params()["join"] == [
        ["Email AS e", "LEFT", ["e.contact_id", "=", "id"], ["e.is_primary", "=", "1"]],
        ["Tag AS tag", "INNER", "EntityTag", ["tag.name", "=", "'vip'"]],
    ]


@pytest.mark.parametrize(
    ("join", "detail"),
    [
        ("Email AS e", "Param 'join': each join is"),
        (["Email"], "each join is"),
        (["Email e", "LEFT"], "'Email e' is not 'Entity AS alias'."),
        (["Email AS e", "RIGHT"], "the join type must be LEFT, INNER or EXCLUDE."),
        (["Email AS e", "LEFT", "Bad-Bridge"], "bridge 'Bad-Bridge' is not an entity name."),
        (
            ["Email AS e", "LEFT", ["e.contact_id", "=", "id", True]],
            "join conditions are [field, operator, value]",
        ),
        (["Email AS e", "LEFT", ["e.email", "REGEXP", "e.x"]], "compares with a quoted pattern"),
        (["Email AS e", "LEFT", ["e.email", "REGEXP", "'(?i)a'"]], "the REGEXP pattern uses a construct"),
        (["Email AS e", "LEFT", ["e.contact_id", "=", "MAX(id)"]], "the aggregate function MAX"),
    ],
)
def test_join_refusals(join: Any, detail: str) -> None:
    error = refused(4, "Contact", "get", {"join": [join]})
    assert error.slug == "invalid-request" and detail in error.detail


def test_a_join_alias_is_used_once() -> None:
    joins = [["Email AS e", "LEFT"], ["Phone AS e", "LEFT"]]
    assert "alias 'e' used twice." in refused(4, "Contact", "get", {"join": joins}).detail
    # without AS the alias is the entity's name in lower case
    assert (
        "alias 'email' used twice."
        in refused(4, "Contact", "get", {"join": [["Email", "LEFT"], ["Phone AS email", "LEFT"]]}).detail
    )


def test_a_literal_compared_in_a_join_condition_is_allowed() -> None:
    # 'x' = e.email: a literal on the left is fine in ON (not in WHERE)
    parse(4, "Contact", "get", {"join": [["Email AS e", "LEFT", ["'x'", "=", "e.email"]]]})


# --- REGEXP: refused before the database fails the whole query ---------------------------------


@pytest.mark.parametrize("pattern", ["^A", "a|b", "[a-z]+\\d{2}", "\\bword\\b", "a{1000}", 7])
def test_regexp_patterns_that_both_engines_read_alike_pass(pattern: Any) -> None:
    parse(4, "Contact", "get", {"where": [["first_name", "REGEXP", pattern]]})
    parse(3, "Contact", "get", {"first_name": {"REGEXP": pattern}})


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("(unclosed", "the REGEXP pattern does not compile"),
        ("a**", "the REGEXP pattern does not compile"),
        ("(?i)a", "uses a construct the gateway does not check"),
        ("\\N", "uses a construct the gateway does not check"),
        ("[[:alpha:]]", "uses a construct the gateway does not check"),
        ("(a)\\1", "uses a construct the gateway does not check"),
        ("a{1001}", "uses a construct the gateway does not check"),
        (True, "a REGEXP pattern is a string."),
        (None, "a REGEXP pattern is a string."),
    ],
)
def test_regexp_patterns_refused(pattern: Any, detail: str) -> None:
    for op in ("REGEXP", "not regexp binary"):
        error = refused(4, "Contact", "get", {"where": [["first_name", op, pattern]]})
        assert error.slug == "invalid-request" and "Param 'where'" in error.detail and detail in error.detail
    error = refused(3, "Contact", "get", {"first_name": {"REGEXP": pattern}})
    assert "Param 'first_name'" in error.detail and detail in error.detail


# --- limits: what one request may hold ----------------------------------------------------------


def test_a_list_param_holds_at_most_max_items() -> None:
    parse(4, "Contact", "get", {"select": ["id"] * MAX_ITEMS})
    error = refused(4, "Contact", "get", {"select": ["id"] * (MAX_ITEMS + 1)})
    assert error.detail == f"Param 'select': more than {MAX_ITEMS} items."
    order = {f"f{i}": "ASC" for i in range(MAX_ITEMS + 1)}
    assert (
        refused(4, "Contact", "get", {"orderBy": order}).detail
        == f"Param 'orderBy': more than {MAX_ITEMS} items."
    )


def test_one_requests_params_hold_at_most_max_values() -> None:
    # every JSON value counts: the where list, its clause, the clause's 3 parts, then the items
    just = MAX_VALUES - 5
    parse(4, "Contact", "get", {"where": [["id", "IN", list(range(just))]]})
    error = refused(4, "Contact", "get", {"where": [["id", "IN", list(range(just + 1))]]})
    assert (
        error.slug == "invalid-request"
        and error.detail == f"More than {MAX_VALUES} values in one call's params."
    )


def test_bulk_records_are_bounded_by_the_body_not_by_the_counts() -> None:
    records = [{"first_name": f"n{i}", "last_name": "x"} for i in range(MAX_VALUES // 2)]
    assert len(parse(4, "Contact", "save", {"records": records}).records or ()) == len(records)


def test_chains_nest_at_most_max_chain_depth() -> None:
    def nested(depth: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for _ in range(depth):
            params = {"chain": {"c": ["Contact", "get", params]}}
        return params

    parse(4, "Contact", "get", nested(MAX_CHAIN_DEPTH))
    error = refused(4, "Contact", "get", nested(MAX_CHAIN_DEPTH + 1))
    assert error.detail == f"Chains nested deeper than {MAX_CHAIN_DEPTH} levels are refused."


# --- APIv4 chains ----------------------------------------------------------------------------


def test_a_chain_is_a_parsed_call_with_its_index() -> None:
    call = parse(
        4,
        "Contact",
        "get",
        {
            "select": ["id"],
            "chain": {
                "emails": ["Email", "get", {"where": [["contact_id", "=", "$id"]]}],
                "first": {"0": "Phone", "1": "GET", "2": [], "3": 0},
                "by_type": ["Email", "get", {"contact_id": "$id"}, "location_type_id"],  # the simple form
            },
        },
    )
    assert set(call.chain) == {"emails", "first", "by_type"}
    assert call.chain["first"].call.action == "get" and call.chain["first"].index == 0
    assert call.chain["by_type"].call.to_params() == {"where": [["contact_id", "=", "$id"]]}
    assert [(c.label, depth) for c, depth in call.walk()] == [
        ("v4:Contact.get", 0),
        ("v4:Email.get", 1),
        ("v4:Phone.get", 1),
        ("v4:Email.get", 1),
    ]
    assert call.to_params()["chain"] == {
        "emails": ["Email", "get", {"where": [["contact_id", "=", "$id"]]}],
        "first": ["Phone", "get", {}, 0],
        "by_type": ["Email", "get", {"where": [["contact_id", "=", "$id"]]}, "location_type_id"],
    }


@pytest.mark.parametrize(
    ("chain", "detail"),
    [
        (["Email", "get"], "Param 'chain': must be an object of named calls."),
        ({"e": ["Email"]}, "'e' must be [Entity, action, params?, index?]."),
        ({"e": ["Email", "get", {}, 0, 1]}, "must be [Entity, action, params?, index?]."),
        ({"e": ["Email", "get", "where"]}, "'e': params must be an object."),
        ({"e": ["Email", "get", {}, -1]}, "'e': index must be a whole number or a field name."),
        ({"e": ["Email", "get", {}, True]}, "index must be a whole number or a field name."),
        ({"e": ["Email", "get", {}, "UPPER(email)"]}, "index must be a whole number or a field name."),
        ({"e": ["Email", "get", {}, "*"]}, "index must be a whole number or a field name."),
    ],
)
def test_chain_refusals(chain: Any, detail: str) -> None:
    error = refused(4, "Contact", "get", {"chain": chain})
    assert error.slug == "invalid-request" and detail in error.detail


def test_a_chained_call_is_parsed_by_the_same_rules() -> None:
    error = refused(4, "Contact", "get", {"chain": {"e": ["Email", "get", {"where": [["id", "LIKES", 1]]}]}})
    assert error.detail == "Illegal operator"
    error = refused(4, "Contact", "get", {"chain": {"e": ["Bad Entity", "get"]}})
    assert "Invalid entity name" in error.detail


def test_reads_only_covers_the_chains() -> None:
    read = parse(4, "Contact", "get", {"chain": {"e": ["Email", "get", {}]}})
    write = parse(4, "Contact", "get", {"chain": {"e": ["Email", "create", {"values": {"email": "a@b.c"}}]}})
    assert read.is_read and read.reads_only
    assert write.is_read and not write.reads_only


# --- the call's own properties ----------------------------------------------------------------


def test_limits_of_a_call() -> None:
    get = parse(4, "Contact", "get", {})
    assert (get.label, get.is_get, get.effective_limit()) == ("v4:Contact.get", True, None)
    assert get.with_limit(50).to_params() == {"limit": 50}
    assert parse(4, "Contact", "get", {"limit": 0}).effective_limit() is None  # 0: every row
    v3 = parse(3, "Contact", "get", {})
    assert v3.effective_limit() == call_module.V3_DEFAULT_LIMIT  # CiviCRM's default cap
    assert parse(3, "Contact", "get", {"options": {"limit": 0}}).effective_limit() is None
    assert v3.with_limit(7).to_params()["options"] == {"limit": 7}
    assert v3.takes_limit


def test_a_where_keeps_its_structure() -> None:
    call = parse(4, "Contact", "get", {"where": [["NOT", [["id", "=", 1], ["id", "=", 2]]]]})
    assert call.where is not None
    group = call.where[0]
    assert isinstance(group, Group) and group.glue == "NOT" and len(group.clauses) == 2


# --- APIv3 -------------------------------------------------------------------------------------


def test_v3_get_with_options_returns_and_filters() -> None:
    call = parse(
        3,
        "Contact",
        "get",
        {
            "first_name": {"like": "A%"},
            "id": {"IN": [1, 2]},
            "contact_type": "Individual",
            "return": "id, display_name",
            "return.email": 1,
            "options": {"limit": "3", "sort": "sort_name desc, id"},
            "sequential": 0,  # the gateway sets these itself
            "prettyprint": 1,
        },
    )
    assert call.filters == {"first_name": {"LIKE": "A%"}, "id": {"IN": [1, 2]}, "contact_type": "Individual"}
    assert call.returns == ("id", "display_name", "email")
    assert call.v3_options == {"limit": 3, "sort": "sort_name DESC, id"}
    assert call.to_params() == {
        "first_name": {"LIKE": "A%"},
        "id": {"IN": [1, 2]},
        "contact_type": "Individual",
        "return": ["id", "display_name", "email"],
        "options": {"limit": 3, "sort": "sort_name DESC, id"},
        "sequential": 1,
    }


def test_v3_legacy_option_spellings_and_options_win() -> None:
    call = parse(
        3, "Contact", "get", {"option.limit": 5, "rowCount": 6, "option_sort": "id", "options": {"limit": 10}}
    )
    assert call.v3_options == {"limit": 10, "sort": "id"}
    assert parse(3, "Contact", "get", {"options.offset": 4}).v3_options == {"offset": 4}


def test_v3_getvalue_names_one_field_as_a_string() -> None:
    assert parse(3, "Contact", "getvalue", {"id": 2, "return": ["display_name"]}).to_params() == {
        "id": 2,
        "return": "display_name",
        "sequential": 1,
    }
    error = refused(3, "Contact", "getvalue", {"return": ["a", "b"]})
    assert error.detail == "Param 'return': getvalue returns one field: name exactly one."


def test_v3_chains_in_every_spelling() -> None:
    call = parse(
        3,
        "Contact",
        "get",
        {
            "api.Email.get": {"return": "email"},
            "api_phone_get": 1,
            "API.Address.Get": [{"is_primary": 1}, {"is_primary": 0}],
        },
    )
    assert [(key, [c.label for c in calls]) for key, calls in call.v3_chains] == [
        ("api.Email.get", ["v3:Email.get"]),
        ("api_phone_get", ["v3:Phone.get"]),
        ("API.Address.Get", ["v3:Address.get", "v3:Address.get"]),
    ]
    chained = call.v3_chains[0][1][0]
    assert chained.options == {} and "sequential" not in chained.to_params()  # only the top call's
    params = call.to_params()
    assert params["api_phone_get"] == {} and params["API.Address.Get"] == [
        {"is_primary": 1},
        {"is_primary": 0},
    ]


@pytest.mark.parametrize(
    ("params", "slug", "detail"),
    [
        (
            {"api_key": {"x": 1}},
            "invalid-request",
            "Param 'api_key': not a chained call: use api.Entity.action.",
        ),
        ({"api.Email.get": []}, "invalid-request", "Param 'api.Email.get': a chained call needs params."),
        ({"api.Email.get": [3]}, "invalid-request", "a chained call takes an object of params"),
        (
            {"options": {"foo": 1}},
            "invalid-request",
            "Param 'options.foo': the gateway accepts options limit",
        ),
        ({"options": [1]}, "invalid-request", "Param 'options': must be an object"),
        (
            {"options": {"sort": "id sideways"}},
            "invalid-request",
            "Param 'options.sort': must be 'field [ASC|DESC]",
        ),
        ({"options": {"limit": -2}}, "invalid-request", "Param 'options.limit': must be a whole number"),
        ({"a-b": 1}, "invalid-request", "Param 'a-b': not a field name."),
        ({"return.a-b": 1}, "invalid-request", "Param 'return.a-b': not a field name."),
        ({"return": ["id", 3]}, "invalid-request", "Param 'return': must be field names"),
        ({"id": {"IN": 1}}, "invalid-request", "Param 'id': operator IN needs a list of values."),
        ({"id": {"=": [1, 2]}}, "invalid-request", "operator = compares with one value, not a list."),
        ({"id": {"LIKE": "a", "=": "b"}}, "invalid-request", 'an operator filter is {"OP": value}.'),
        ({"id": {"FOO": "a"}}, "invalid-request", "Param 'id': unknown operator 'FOO'."),
        ({"id": [[1]]}, "invalid-request", "values must be scalars or lists of scalars."),
        ({"check_permissions": 0}, "gateway-policy-denied", "check_permissions cannot be turned off"),
        ({"check_permissions": "no"}, "civicrm-bad-request", "Expecting bool."),
    ],
)
def test_v3_refusals(params: dict[str, Any], slug: str, detail: str) -> None:
    error = refused(3, "Contact", "get", params)
    assert error.slug == slug and detail in error.detail


def test_v3_action_params() -> None:
    call = parse(
        3,
        "Contact",
        "getlist",
        {
            "input": "ad",
            "page_num": "2",
            "id_field": "id",
            "extra": "email",
            "params": {"contact_type": "Individual"},
        },
    )
    assert call.options == {
        "sequential": 1,
        "input": "ad",
        "page_num": 2,
        "id_field": "id",
        "extra": ["email"],
        "params": {"contact_type": "Individual"},
    }
    assert call.field_params == {"id_field": "field", "extra": "names", "params": "fields"}
    assert "must be a field name." in refused(3, "Contact", "getlist", {"id_field": "a b"}).detail
    assert "Param 'params.a b'" in refused(3, "Contact", "getlist", {"params": {"a b": 1}}).detail
    assert (
        parse(3, "Contact", "getoptions", {"field": "gender_id", "context": "get"}).options["field"]
        == "gender_id"
    )


def test_v3_metadata_actions_take_only_their_own_params() -> None:
    # getfields answers keyed by each field's unique name (not sequential): the name checks
    # read contact_source for source there (a return of "source" answers every field)
    assert parse(3, "Contact", "getfields", {"api_action": "get", "version": 3}).options == {
        "api_action": "get",
    }
    assert parse(3, "Contact", "getactions", {}).options == {"sequential": 1}
    error = refused(3, "Contact", "getfields", {"api_action": "get", "cache_clear": 1})
    assert error.detail == "Param 'cache_clear': getfields takes api_action only."


def test_v3_unknown_actions_are_parsed_but_marked() -> None:
    call = parse(3, "Contact", "frobnicate", {"x": {"IN": [1]}})
    assert not call.known_action and call.action == "frobnicate"
    assert has_grammar(3, "Contact", "GETCOUNT") and not has_grammar(3, "Contact", "frobnicate")


# --- chain references ($field) ------------------------------------------------------------------


def test_references_in_find_every_dollar_field() -> None:
    value = {
        "where": [["contact_id", "=", "$id"]],
        "values": {"x": "$contact_id.display_name"},
        "y": ["$value.id"],
    }
    assert sorted(references_in(value)) == ["contact_id.display_name", "id", "value.id"]
    assert list(references_in({"note": "costs 5$"})) == []  # a $ not at the start is text
    with pytest.raises(GatewayError) as caught:
        list(references_in({"x": "$UPPER(id)"}))
    assert (
        caught.value.slug == "invalid-request" and "is not a chain reference ($field)" in caught.value.detail
    )
