"""gateway.core.validate: the client mistakes CiviCRM would hide behind a masked 500 from a
least-privileged user (required params, mandatory values, value types, a missing target),
found before anything is sent, in CiviCRM's own words.

Field types and mandatory fields come from CiviCRM 5.77's metadata as the embedded sandbox serves
it (tests/unit/conftest.py). The required_if grammar is tests/core/test_required_if.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.call import parse
from gateway.core.errors import GatewayError
from gateway.core.fields import references
from gateway.core.schema import Schema
from gateway.core.validate import (
    check,
    check_filters,
    check_repeated_names,
    check_required,
    check_target,
    check_values,
    evaluate_condition,
)
from tests.unit.conftest import SandboxSite


def error_of(fn: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        fn(*args)
    return caught.value


async def async_error_of(coro: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await coro
    return caught.value


# --- required params ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "params", "missing"),
    [
        ("delete", {}, "where"),
        ("save", {}, "records"),
        # an empty list is a missing one (PHP's empty()), as on the real 5.77
        ("replace", {"records": []}, "records"),
        ("replace", {"records": [{"street_address": "x"}], "where": []}, "where"),
        ("delete", {"where": []}, "where"),
        ("save", {"records": []}, "records"),
        ("checkAccess", {"action": "create"}, "values"),
        ("getChecksum", {}, "contactId"),
        ("mergeDuplicates", {"contactId": 3, "duplicateId": 4}, "mode"),
    ],
)
def test_required_params_in_civicrms_words(action: str, params: dict[str, Any], missing: str) -> None:
    error = error_of(check_required, parse(4, "Contact", action, params))
    assert (error.slug, error.status) == ("civicrm-bad-request", 400)
    assert error.detail == f'Parameter "{missing}" is required.'


def test_an_update_needs_values_and_a_where_or_an_id() -> None:
    assert error_of(check_required, parse(4, "Contact", "update", {"where": [["id", "=", 3]]})).detail == (
        'Parameter "values" is required.'
    )
    error = error_of(check_required, parse(4, "Contact", "update", {"values": {"first_name": "A"}}))
    assert error.detail == 'Parameter "where" is required unless primary keys are supplied in values.'
    check_required(parse(4, "Contact", "update", {"values": {"id": 3, "first_name": "A"}}))
    error = error_of(
        check_required, parse(4, "Contact", "update", {"values": {"first_name": "A"}, "where": []})
    )
    assert error.detail == 'Parameter "where" is required unless primary keys are supplied in values.'
    check_required(parse(4, "Contact", "update", {"values": {"id": 3, "first_name": "A"}, "where": []}))


def test_present_but_empty_is_missing() -> None:
    """CiviCRM 5.77 checks required params with PHP's empty(): ``"where": []`` on a delete is
    'Parameter "where" is required.' (checked on the real site), not a delete of nothing."""
    assert error_of(check_required, parse(4, "Contact", "delete", {"where": []})).detail == (
        'Parameter "where" is required.'
    )
    check_required(parse(4, "Contact", "get", {}))


# --- value types and mandatory values (metadata) ----------------------------------------------


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ({"employer_id": "abc"}, "Contact.employer_id must be a whole number, not 'abc'."),
        ({"employer_id": 1.5}, "must be a whole number, not 1.5."),
        ({"employer_id": True}, "must be a whole number, not True."),
        ({"is_opt_out": "maybe"}, "Contact.is_opt_out must be true or false, not 'maybe'."),
        ({"birth_date": "<script>"}, "Contact.birth_date must be a valid value"),
        ({"employer_id": 0}, "Contact.employer_id refers to a Contact by its id, and 0 is no record's id"),
        ({"employer_id": "-4"}, "and '-4' is no record's id"),
    ],
)
async def test_values_of_the_wrong_type_are_422(schema: Schema, values: dict[str, Any], detail: str) -> None:
    call = parse(4, "Contact", "update", {"values": values, "where": [["id", "=", 3]]})
    error = await async_error_of(check_values(call, schema))
    assert (error.slug, error.status) == ("civicrm-validation", 422)
    assert detail in error.detail


async def test_values_civicrm_reads_are_fine(schema: Schema) -> None:
    values = {
        "employer_id": "3",
        "is_opt_out": "1",
        "birth_date": "2024-05-06",
        "first_name": ["anything"],
        "contact_type:label": "not checked",  # a suffixed field's value is an option label
        "custom_thing": "x",  # not a field the metadata knows: unknown fields are fields.py's
    }
    for value in (None, "$id", 2.0, 99999999999999999999.0):  # clear, chain reference, whole floats
        values["employer_id"] = value
        await check_values(parse(4, "Contact", "update", {"values": values, "where": []}), schema)


async def test_records_and_defaults_are_checked_merged(schema: Schema) -> None:
    call = parse(
        4,
        "Contact",
        "save",
        {"records": [{"id": 3}, {"id": 4, "is_opt_out": 1}], "defaults": {"employer_id": "x"}},
    )
    assert "Contact.employer_id" in (await async_error_of(check_values(call, schema))).detail
    ok = parse(
        4, "Contact", "save", {"records": [{"id": 3, "employer_id": 2}], "defaults": {"employer_id": "x"}}
    )
    await check_values(ok, schema)  # the record's own value wins over the default


async def test_mandatory_values_of_a_create(schema: Schema) -> None:
    error = await async_error_of(
        check_values(parse(4, "Note", "create", {"values": {"subject": "s"}}), schema)
    )
    assert (error.slug, error.status) == ("civicrm-validation", 422)
    assert (
        error.detail == "Mandatory values missing from Api4 Note::create: entity_id, note"
    )  # in field order
    no_values = parse(4, "Activity", "create", {})
    assert (await async_error_of(check_values(no_values, schema))).detail.endswith(
        "Activity::create: activity_type_id, source_contact_id"
    )
    empty = parse(4, "Note", "create", {"values": {"entity_id": 3, "note": ""}})  # "" is not given
    assert (await async_error_of(check_values(empty, schema))).detail.endswith("Note::create: note")
    await check_values(parse(4, "Note", "create", {"values": {"entity_id": 3, "note:label": "n"}}), schema)
    # a field with a default is not mandatory (APIv4 Contact.create: contact_type Individual)
    await check_values(parse(4, "Contact", "create", {"values": {"first_name": "A"}}), schema)
    # a save record with an id updates: nothing is mandatory; every other record creates
    await check_values(parse(4, "Note", "save", {"records": [{"id": 3}]}), schema)
    records = parse(4, "Note", "save", {"records": [{"id": 3}, {"note": "n"}], "defaults": {"subject": "s"}})
    assert (await async_error_of(check_values(records, schema))).detail.endswith("Note::save: entity_id")


async def test_required_if_from_the_metadata(schema: Schema) -> None:
    # Tag: a name, or a label (5.77's getFields required_if)
    error = await async_error_of(
        check_values(parse(4, "Tag", "create", {"values": {"description": "d"}}), schema)
    )
    assert error.detail == "Mandatory values missing from Api4 Tag::create: name, label"
    await check_values(parse(4, "Tag", "create", {"values": {"label": "Press"}}), schema)
    await check_values(parse(4, "Tag", "create", {"values": {"name": "press"}}), schema)


async def test_reads_and_v3_values_are_not_checked(schema: Schema) -> None:
    await check_values(parse(4, "Contact", "get", {"where": [["id", "=", "x"]]}), schema)
    await check_values(parse(3, "Contact", "create", {"first_name": "A"}), schema)


def test_evaluate_condition_beyond_the_spec_providers() -> None:
    assert evaluate_condition("$values.a === 1 || $values.b === null", {"a": 2}) is True
    assert evaluate_condition("$values.a === '1'", {"a": 1}) is False  # === compares types
    assert evaluate_condition("$values.a == 1.5", {"a": 1.5}) is True
    assert evaluate_condition("!(empty($values.a) && empty($values.b))", {"b": "x"}) is True
    assert evaluate_condition("TRUE && false", {}) is False
    assert evaluate_condition("$values.a &&", {"a": 1}) is None
    assert evaluate_condition("$values.a $values.b", {}) is None


# --- where values -----------------------------------------------------------------------------


async def test_a_where_value_of_the_wrong_type_is_400(schema: Schema) -> None:
    fields = await schema.fields("Contact")
    call = parse(
        4, "Contact", "get", {"where": [["OR", [["first_name", "=", "A"], ["id", "IN", [1, "two"]]]]]}
    )
    error = error_of(check_filters, call, [], fields)
    assert (error.slug, error.status) == ("civicrm-bad-request", 400)
    assert error.detail == "Invalid value for Contact.id in where: expected a whole number, got [1, 'two']."
    for fine in (
        [["id", "LIKE", "1%"]],  # not a comparison of values
        [["id", "=", "contact_id", True]],  # an expression
        [["UPPER(id)", "=", "x"]],  # not a plain field
        [["id", "BETWEEN", [1, "2"]]],
        [["bogus", "=", "x"]],  # unknown: fields.py's business
    ):
        check_filters(parse(4, "Contact", "get", {"where": fine}), [], fields)


# --- repeated names ---------------------------------------------------------------------------


def test_records_that_repeat_a_name_or_label() -> None:
    call = parse(4, "Tag", "save", {"records": [{"name": "a"}, {"name": "b"}, {"name": "a"}]})
    error = error_of(check_repeated_names, call)
    assert (error.slug, error.status) == ("invalid-request", 400)
    assert error.detail == "Records repeat the name 'a'; CiviCRM keeps names unique: one record each."
    assert (
        "the label 'L'"
        in error_of(
            check_repeated_names, parse(4, "Tag", "save", {"records": [{"label": "L"}, {"label": "L"}]})
        ).detail
    )
    check_repeated_names(
        parse(4, "Tag", "save", {"records": [{"name": ""}, {"name": ""}, {"name": "a", "label": "a"}]})
    )


# --- the target of an update ------------------------------------------------------------------


async def test_an_update_of_a_missing_id_is_refused_after_one_lookup(site: SandboxSite) -> None:
    schema = Schema(site, None)  # type: ignore[arg-type]
    missing = parse(4, "Contact", "update", {"values": {"first_name": "A"}, "where": [["id", "=", 9999]]})
    error = await async_error_of(check_target(missing, schema))
    assert (error.slug, error.status) == ("record-not-found", 404)
    assert error.detail == "Expected one Contact but found 0"
    assert site.calls[-1] == (
        4,
        "Contact",
        "get",
        {"select": ["id"], "where": [["id", "=", 9999]], "limit": 1},
    )
    by_value = parse(4, "Contact", "update", {"values": {"id": 9999, "first_name": "A"}})
    assert (await async_error_of(check_target(by_value, schema))).slug == "record-not-found"
    await check_target(parse(4, "Contact", "update", {"values": {"id": 3, "first_name": "A"}}), schema)


async def test_only_a_single_id_target_is_looked_up(site: SandboxSite) -> None:
    schema = Schema(site, None)  # type: ignore[arg-type]
    for call in (
        parse(4, "Contact", "delete", {"where": [["id", "=", 9999]]}),  # 5.77: a delete of nothing answers []
        parse(4, "Contact", "update", {"values": {"first_name": "A"}, "where": [["id", ">", 9999]]}),
        parse(
            4,
            "Contact",
            "update",
            {"values": {"first_name": "A"}, "where": [["id", "=", 9999], ["is_deleted", "=", 0]]},
        ),
        parse(4, "Contact", "update", {"values": {"id": "$id", "first_name": "A"}}),
    ):
        await check_target(call, schema)
    assert site.calls == []


# --- the whole check, over a call and its chains ------------------------------------------------


async def test_check_walks_the_chains(site: SandboxSite) -> None:
    schema = Schema(site, None)  # type: ignore[arg-type]
    chained = parse(
        4, "Contact", "get", {"chain": {"t": ["Tag", "create", {"values": {"description": "d"}}]}}
    )
    error = await async_error_of(check(chained, await references(chained, schema), schema))
    assert error.detail == "Mandatory values missing from Api4 Tag::create: name, label"
    # a chained update's target is not looked up (its where holds the parent's values)
    calls = len(site.calls)
    target = parse(
        4,
        "Contact",
        "get",
        {"chain": {"u": ["Contact", "update", {"values": {"id": 9999, "first_name": "A"}}]}},
    )
    await check(target, [], schema)
    assert not any(c[2] == "get" and c[3].get("limit") == 1 for c in site.calls[calls:])
    # APIv3 calls are CiviCRM's to check
    await check(parse(3, "Contact", "create", {}), [], schema)
