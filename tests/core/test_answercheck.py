"""gateway.core.answercheck: an answer is passed on only if the parsed call explains every key of it,
and never with the gateway's own credentials in it (issue 25, item 4). Records as CiviCRM 5.77
answers them (seen on the real site)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.core.answercheck import check_answer, expression_keys
from gateway.core.call import parse
from gateway.core.errors import GatewayError
from gateway.core.expressions import parse as parse_expr
from gateway.core.redact import REDACTOR
from tests.conftest import redactor_restored

SECRET = "gw-civicrm-api-key-8d1c55e0a4b24c1f"


@pytest.fixture(autouse=True)
def gateway_secret() -> Iterator[None]:
    with redactor_restored():
        REDACTOR.add([SECRET])
        yield


def refused(version: int, entity: str, action: str, params: dict[str, Any], records: list[Any]) -> str:
    with pytest.raises(GatewayError) as caught:
        check_answer(parse(version, entity, action, params), records)
    assert caught.value.slug == "upstream-unexpected-answer" and caught.value.status == 502
    assert SECRET not in caught.value.detail
    return caught.value.detail


def passes(version: int, entity: str, action: str, params: dict[str, Any], records: list[Any]) -> None:
    check_answer(parse(version, entity, action, params), records)


# --- APIv4 get: selected keys ------------------------------------------------------------------


def test_selected_fields_aliases_functions_suffixes_and_implicit_joins_pass() -> None:
    params = {
        "select": [
            "display_name",
            "contact_type:label",
            "email_primary.email",
            "UPPER(first_name)",
            "COUNT(DISTINCT contact_type)",
            "CONCAT(first_name, last_name)",
            "LOWER(last_name) AS low",
            "id + 1",
        ]
    }
    record = {
        "id": 4,
        "display_name": "Alice Smith",
        "contact_type:label": "Individual",
        "email_primary.email": "alice@example.org",
        "UPPER:first_name": "ALICE",
        "COUNT:contact_type": 1,
        "CONCAT:first_name_last_name": "AliceSmith",
        "low": "smith",
        "id_1": 5,
    }
    passes(4, "Contact", "get", params, [record])


def test_a_key_the_call_did_not_select_is_refused_and_named() -> None:
    detail = refused(
        4, "Contact", "get", {"select": ["display_name"]}, [{"id": 1, "display_name": "A", "hash": "x"}]
    )
    assert "'hash'" in detail
    detail = refused(4, "Contact", "get", {"select": ["display_name"]}, [{"id": 1, "first_name": "A"}])
    assert "'first_name'" in detail


def test_id_comes_unless_group_by() -> None:
    passes(4, "Contact", "get", {"select": ["display_name"]}, [{"id": 1, "display_name": "A"}])
    grouped = {"select": ["contact_type", "COUNT(id) AS n"], "groupBy": ["contact_type"]}
    passes(4, "Contact", "get", grouped, [{"contact_type": "Individual", "n": 205}])
    refused(4, "Contact", "get", grouped, [{"id": 1, "contact_type": "Individual", "n": 205}])


def test_count_star_key() -> None:
    assert "COUNT:" in expression_keys(parse_expr("COUNT(*)"))
    passes(4, "Contact", "get", {"select": ["COUNT(*)"]}, [{"COUNT:": 204}])


def test_wildcards_allow_any_field_of_their_shape_but_never_a_credential() -> None:
    for params in ({}, {"select": ["*"]}, {"select": []}):
        passes(
            4,
            "Contact",
            "get",
            params,
            [{"id": 2, "display_name": "A", "sort_name": "A", "is_deleted": False}],
        )
        assert "'api_key'" in refused(4, "Contact", "get", params, [{"id": 2, "api_key": "k"}])
        refused(4, "Contact", "get", params, [{"id": 2, "hash": "h"}])
        refused(4, "Contact", "get", params, [{"id": 2, "email_primary.email": "a@b"}])  # not a field of *
    joined = {
        "select": ["e.*", "custom.*"],
        "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
    }
    passes(
        4, "Contact", "get", joined, [{"id": 2, "e.email": "a@b", "e.is_primary": True, "Extra.shoe_size": 9}]
    )
    refused(4, "Contact", "get", joined, [{"id": 2, "e.api_key": "k"}])
    refused(4, "Contact", "get", joined, [{"id": 2, "display_name": "A"}])


def test_a_credential_selected_by_name_passes_the_shape_check() -> None:
    """Whether a client may select it is the policy's decision, made before the call."""
    passes(4, "Contact", "get", {"select": ["api_key"]}, [{"id": 2, "api_key": "someone-elses"}])


def test_setting_get_answers_name_value_records() -> None:
    passes(
        4,
        "Setting",
        "get",
        {"select": ["contact_default_language"]},
        [{"name": "contact_default_language", "value": "*default*", "domain_id": 1}],
    )


def test_a_get_record_must_be_an_object() -> None:
    refused(4, "Contact", "get", {"select": ["id"]}, ["a string"])


def test_other_actions_are_not_modelled_key_by_key() -> None:
    passes(
        4, "Contact", "create", {"values": {"first_name": "A"}}, [{"id": 9, "first_name": "A", "hash": "h"}]
    )
    passes(4, "Contact", "getFields", {"select": ["name"]}, [{"name": "id", "options": False}])


# --- APIv4 chains ------------------------------------------------------------------------------

EMAILS = {"select": ["email"], "where": [["contact_id", "=", "$id"]]}


def chained(index: Any = None) -> dict[str, Any]:
    link: list[Any] = ["Email", "get", EMAILS]
    if index is not None:
        link.append(index)
    return {"select": ["display_name"], "chain": {"em": link}}


def test_chained_results_are_lists_of_records_checked_against_the_chained_call() -> None:
    passes(
        4, "Contact", "get", chained(), [{"id": 4, "display_name": "A", "em": [{"id": 4, "email": "a@b"}]}]
    )
    passes(4, "Contact", "get", chained(), [{"id": 4, "display_name": "A", "em": []}])
    refused(
        4,
        "Contact",
        "get",
        chained(),
        [{"id": 4, "display_name": "A", "em": [{"id": 4, "signature_html": "x"}]}],
    )
    refused(4, "Contact", "get", chained(), [{"id": 4, "display_name": "A", "em": {"id": 4, "email": "a@b"}}])


def test_index_zero_is_one_record() -> None:
    passes(4, "Contact", "get", chained(0), [{"id": 4, "display_name": "A", "em": {"id": 4, "email": "a@b"}}])
    refused(4, "Contact", "get", chained(0), [{"id": 4, "display_name": "A", "em": {"id": 4, "hash": "h"}}])


def test_an_index_field_keys_records_by_its_values() -> None:
    """The keys are data (here e-mail addresses): not field names, not checked as such."""
    answer = [{"id": 4, "display_name": "A", "em": {"a@example.org": {"id": 4, "email": "a@example.org"}}}]
    passes(4, "Contact", "get", chained("email"), answer)
    passes(
        4, "Contact", "get", chained("id"), [{"id": 4, "display_name": "A", "em": {"4": {"email": "a@b"}}}]
    )
    passes(4, "Contact", "get", chained("id"), [{"id": 4, "display_name": "A", "em": []}])
    refused(
        4, "Contact", "get", chained("email"), [{"id": 4, "display_name": "A", "em": {"a@b": {"hash": "h"}}}]
    )
    refused(4, "Contact", "get", chained("email"), [{"id": 4, "display_name": "A", "em": "a@b"}])


def test_an_answer_keyed_by_a_credential_is_refused() -> None:
    """Cause 1 of the issue: ``index`` = ``api_key`` turns every key into an object key."""
    call = parse(
        4,
        "Contact",
        "get",
        {"select": ["id"], "chain": {"c": ["Contact", "get", {"select": ["id"]}, "api_key"]}},
    )
    with pytest.raises(GatewayError) as caught:
        check_answer(call, [{"id": 2, "c": {"0123456789abcdef": {"id": 2}}}])
    assert "0123456789abcdef" not in caught.value.detail
    call = parse(4, "Contact", "get", {"select": ["id"], "chain": {"c": ["Contact", "get", {}, "hash"]}})
    with pytest.raises(GatewayError):
        check_answer(call, [{"id": 2, "c": {}}])


# --- APIv3 ---------------------------------------------------------------------------------------


def test_v3_returns_and_the_companions_civicrm_adds() -> None:
    passes(
        3,
        "Contact",
        "get",
        {"return": ["display_name"]},
        [{"contact_id": "4", "display_name": "A", "id": "4"}],
    )
    passes(
        3,
        "Contact",
        "get",
        {"return": ["gender_id", "email", "phone", "country", "prefix_id", "group", "state_province"]},
        [
            {
                "contact_id": "4",
                "gender_id": "",
                "gender": "",
                "email_id": "4",
                "email": "a@b",
                "phone_id": "1",
                "phone_type_id": "1",
                "phone": "1",
                "address_id": "1",
                "country_id": "1228",
                "country": "United States",
                "prefix_id": "",
                "individual_prefix": "",
                "groups": "",
                "state_province": "",
                "state_province_id": "",
                "state_province_name": "",
                "id": "4",
            }
        ],
    )
    refused(
        3,
        "Contact",
        "get",
        {"return": ["display_name"]},
        [{"display_name": "A", "id": "4", "first_name": "x"}],
    )
    refused(
        3, "Contact", "get", {"return": ["display_name"]}, [{"display_name": "A", "id": "4", "api_key": "x"}]
    )


def test_v3_without_return_any_plain_non_credential_key() -> None:
    passes(3, "Contact", "get", {}, [{"id": "4", "display_name": "A", "world_region": "x"}])
    refused(3, "Contact", "get", {}, [{"id": "4", "hash": "h"}])


def test_v3_chains_are_api_answers_checked_against_the_chained_call() -> None:
    params = {"return": ["display_name"], "api.Email.get": {"return": ["email"]}}
    envelope = {"is_error": 0, "version": 3, "count": 1, "id": 4, "values": [{"id": "4", "email": "a@b"}]}
    record = {"contact_id": "4", "display_name": "A", "id": "4", "api.Email.get": envelope}
    passes(3, "Contact", "get", params, [record])
    bad = {**envelope, "values": [{"id": "4", "email": "a@b", "signature_html": "x"}]}
    refused(3, "Contact", "get", params, [{**record, "api.Email.get": bad}])
    refused(3, "Contact", "get", params, [{**record, "api.Email.get": {**envelope, "extra": 1}}])
    two = {"return": ["display_name"], "api.Email.get": [{"return": ["email"]}, {"return": ["id"]}]}
    answer = {**record, "api.Email.get": [envelope, {**envelope, "values": [{"id": "4"}]}]}
    passes(3, "Contact", "get", two, [answer])


def test_v3_single_values_pass() -> None:
    passes(3, "Contact", "getcount", {}, [12])
    passes(3, "Contact", "getvalue", {"return": "display_name", "id": 4}, ["Alice"])
    passes(
        3,
        "Contact",
        "getsingle",
        {"return": ["display_name"], "id": 4},
        [{"contact_id": "4", "display_name": "A", "id": "4"}],
    )


# --- the gateway's own credentials -------------------------------------------------------------


LISTED = {"select": ["display_name"], "chain": {"em": ["Email", "get", {"select": ["email"]}]}}
KEYED = {"select": ["display_name"], "chain": {"em": ["Email", "get", {"select": ["email"]}, "email"]}}


@pytest.mark.parametrize(
    ("params", "records"),
    [
        ({"select": ["display_name"]}, [{"id": 2, "display_name": SECRET}]),
        ({"select": ["display_name"]}, [{"id": 2, "display_name": f"prefix {SECRET} suffix"}]),
        (LISTED, [{"id": 2, "display_name": "A", "em": [{"id": 1, "email": SECRET}]}]),
        (KEYED, [{"id": 2, "display_name": "A", "em": {SECRET: {"id": 1, "email": "x"}}}]),
        ({"select": ["display_name"]}, [{"id": 2, "display_name": {"nested": [[{"deep": SECRET}]]}}]),
        ({"select": ["display_name"]}, [{"id": 2, "display_name": "A", SECRET: 1}]),
    ],
)
def test_the_gateways_credential_is_never_passed_on(params: dict[str, Any], records: list[Any]) -> None:
    detail = refused(4, "Contact", "get", params, records)
    assert "credential" in detail


def test_the_gateways_credential_in_a_scalar_answer() -> None:
    refused(3, "Contact", "getvalue", {"return": "display_name", "id": 4}, ["x" + SECRET])


def test_a_credential_the_call_itself_sent_may_come_back() -> None:
    """A create echoing what it was sent tells its client nothing new."""
    passes(4, "Contact", "create", {"values": {"first_name": SECRET}}, [{"id": 9, "first_name": SECRET}])
    refused(
        4,
        "Contact",
        "create",
        {"values": {"first_name": "A"}},
        [{"id": 9, "first_name": "A", "hash": SECRET}],
    )


def test_the_rate_limit_storage_default_is_no_secret() -> None:
    with redactor_restored():
        REDACTOR.add(["memory://"])
        passes(4, "Contact", "get", {"select": ["display_name"]}, [{"id": 1, "display_name": "memory://"}])
