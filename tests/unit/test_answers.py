"""The answer side of the pure core: gateway.core.results (CiviCRM's envelopes in, plain records
and count headers out) and gateway.core.answercheck (an answer passed on only if the call
explains it; without_additions).

Already covered elsewhere and not repeated here: the common envelopes and credential stripping
(tests/core/test_errors.py), check_answer's key shapes, chains and secret scan
(tests/core/test_answercheck.py). Here: the rest of both modules' rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.core.answercheck import ADDED_BY_CIVICRM, check_answer, without_additions
from gateway.core.call import parse
from gateway.core.errors import GatewayError
from gateway.core.redact import REDACTOR
from gateway.core.results import Records, response_body, v3_records, v4_records
from tests.conftest import redactor_restored

# --- results: APIv4 envelopes -------------------------------------------------------------------


def test_an_index_answer_keyed_by_a_field_keeps_its_records() -> None:
    keyed = v4_records({"values": {"3": {"id": 3}, "4": {"id": 4}}, "countMatched": 2})
    assert keyed == [{"id": 3}, {"id": 4}] and keyed.count_matched == 2
    # keyed by one record's values (index on a scalar field): the record itself
    assert v4_records({"values": {"id": 3, "name": "x"}}) == [{"id": 3, "name": "x"}]


def test_cvs_bare_list_and_an_odd_count() -> None:
    bare = v4_records([{"id": 1}])
    assert bare == [{"id": 1}] and bare.count_matched is None
    assert v4_records({"values": [], "countMatched": "7"}).count_matched is None  # not an int: unknown


def test_an_error_envelope_takes_its_status_from_the_transport_or_the_envelope() -> None:
    with pytest.raises(GatewayError) as caught:
        v4_records({"error_message": "Authorization failed", "status": "403"})
    assert caught.value.slug == "civicrm-permission-denied"
    with pytest.raises(GatewayError) as caught:
        v4_records({"status_message": "Temporarily unavailable for maintenance"}, status=503)
    assert caught.value.slug == "upstream-maintenance"


def test_a_values_that_is_no_list_is_invalid() -> None:
    with pytest.raises(GatewayError) as caught:
        v4_records({"values": "x"})
    assert (caught.value.slug, caught.value.detail) == (
        "upstream-invalid-response",
        "CiviCRM's 'values' is not a list.",
    )


# --- results: APIv3 envelopes -------------------------------------------------------------------


def test_v3_getfields_keeps_the_unique_name() -> None:
    records = v3_records(
        "getfields",
        {"is_error": 0, "values": {"contact_source": {"name": "source"}, "id": {"name": "id"}, "x": "odd"}},
    )
    assert records == [{"name": "source", "uniqueName": "contact_source"}, {"name": "id"}, "odd"]


def test_v3_answers_without_their_parts_are_invalid() -> None:
    for action, envelope, detail in (
        ("get", {"values": []}, "CiviCRM's APIv3 answer has no 'is_error'."),
        ("getvalue", {"is_error": 0}, "CiviCRM's getvalue answer has no 'result'."),
        ("get", [1], "CiviCRM answered a JSON list, not an object."),
        ("getcount", True, "CiviCRM answered a JSON bool, not an object."),  # a bool is no count
    ):
        with pytest.raises(GatewayError) as caught:
            v3_records(action, envelope)
        assert (caught.value.slug, caught.value.detail) == ("upstream-invalid-response", detail)


def test_v3_odd_answers_become_lists() -> None:
    assert v3_records("create", {"is_error": 0, "values": 5}) == [5]  # a custom action's scalar
    assert v3_records("get", {"is_error": 0}) == []


# --- results: the body and its headers ------------------------------------------------------------


def test_response_body_counts_and_strips() -> None:
    records = Records([{"id": 1, "api_key": "k"}, {"id": 2}], count_matched=40)
    body, headers = response_body(4, "get", records)
    assert body == [{"id": 1}, {"id": 2}]
    assert headers == {"X-Result-Count": "2", "X-Total-Count": "40"}
    kept, _ = response_body(4, "get", records, strip_credentials=False)  # a client trusted with them
    assert kept == [{"id": 1, "api_key": "k"}, {"id": 2}]
    assert response_body(3, "getsingle", Records([])) == (None, {})
    assert response_body(3, "get", Records([{"id": 1}])) == ([{"id": 1}], {"X-Result-Count": "1"})


def test_a_record_with_plain_keys_still_has_its_nested_values_stripped() -> None:
    """Only a record of scalars is passed on unread: one whose own keys are plain may still
    hold a credential in a chained list or a nested object."""
    records = Records([{"id": 1, "emails": [{"id": 2, "api_key": "k"}], "owner": {"id": 3, "hash": "h"}}])
    body, _ = response_body(4, "get", records)
    assert body == [{"id": 1, "emails": [{"id": 2}], "owner": {"id": 3}}]


def test_a_record_with_nothing_to_strip_is_passed_on_as_it_is() -> None:
    record = {"id": 1, "display_name": "A"}
    body, _ = response_body(4, "get", Records([record]))
    assert body[0] is record


# --- without_additions -----------------------------------------------------------------------


def test_fields_civicrm_adds_to_a_note_get_are_dropped_unless_asked() -> None:
    assert ADDED_BY_CIVICRM["note"] == {"privacy", "entity_table", "entity_id", "contact_id"}
    call = parse(4, "Note", "get", {"select": ["id", "subject", "entity_id"]})
    answered = [{"id": 1, "subject": "s", "entity_id": 3, "entity_table": "civicrm_contact", "privacy": "0"}]
    assert without_additions(call, answered) == [{"id": 1, "subject": "s", "entity_id": 3}]
    check_answer(call, without_additions(call, answered))
    with pytest.raises(GatewayError):
        check_answer(call, answered)  # what the check would have refused


def test_without_additions_leaves_other_answers_alone() -> None:
    rows = [{"id": 1, "privacy": "0"}]
    for call in (
        parse(4, "Note", "get", {}),  # no select: every field was asked
        parse(4, "Note", "create", {"values": {"note": "n"}}),
        parse(4, "Contact", "get", {"select": ["id"]}),
    ):
        assert without_additions(call, rows) is rows
    assert without_additions(parse(4, "Note", "get", {"select": ["id", "privacy"]}), rows) == rows


def test_a_wildcard_select_asked_for_the_fields_civicrm_would_add() -> None:
    rows = [
        {
            "id": 1,
            "note": "n",
            "entity_id": 3,
            "entity_table": "civicrm_contact",
            "contact_id": 2,
            "privacy": "0",
        }
    ]
    for select in (["*"], ["id", "*"]):
        assert without_additions(parse(4, "Note", "get", {"select": select}), rows) == rows


def test_a_v3_contact_get_answers_what_it_returns_not_what_it_filtered_on() -> None:
    call = parse(3, "Contact", "get", {"first_name": "Ada", "gender_id": 2, "return": "display_name,gender"})
    answered = [
        {
            "id": "3",
            "contact_id": "3",
            "display_name": "Ada L",
            "first_name": "Ada",
            "gender_id": "2",
            "gender": "Female",
            "contact_is_deleted": "0",
        }
    ]
    # gender_id comes with the gender it returns: kept; first_name only because it was a filter
    assert without_additions(call, answered) == [
        {
            "id": "3",
            "contact_id": "3",
            "display_name": "Ada L",
            "gender_id": "2",
            "gender": "Female",
            "contact_is_deleted": "0",
        }
    ]
    for untouched in (
        parse(3, "Contact", "get", {"first_name": "Ada"}),  # no return: every field
        parse(3, "Contact", "getcount", {"first_name": "Ada", "return": "id"}),
        parse(3, "Email", "get", {"email": "a@b.c", "return": "id"}),
    ):
        assert without_additions(untouched, answered) is answered


# --- check_answer: what test_answercheck.py does not ---------------------------------------------

SECRET = "gw-unit-secret-0a9b8c7d6e5f"


@pytest.fixture
def gateway_secret() -> Iterator[None]:
    with redactor_restored():
        REDACTOR.add([SECRET])
        yield


def test_credentials_may_come_back_to_a_client_trusted_with_them() -> None:
    call = parse(4, "Contact", "get", {"select": ["*"]})
    with pytest.raises(GatewayError):
        check_answer(call, [{"id": 1, "api_key": "k"}])
    check_answer(call, [{"id": 1, "api_key": "k"}], credentials=True)


def test_the_refusal_names_keys_never_values(gateway_secret: None) -> None:
    call = parse(4, "Contact", "get", {"select": ["id"]})
    with pytest.raises(GatewayError) as caught:
        check_answer(call, [{"id": 1, "first_name": SECRET}, {"id": 2, SECRET: 1}])
    detail = caught.value.detail
    assert caught.value.slug == "upstream-unexpected-answer" and caught.value.status == 502
    assert detail.startswith("CiviCRM's answer to v4:Contact.get held what the call did not ask for")
    assert "a credential of the gateway's own" in detail and "'first_name'" in detail
    assert SECRET not in detail


def test_a_v3_chain_answering_more_results_than_calls_is_refused() -> None:
    call = parse(
        3, "Contact", "get", {"return": "id", "api.Email.get": [{"return": "email"}, {"return": "email"}]}
    )
    with pytest.raises(GatewayError) as caught:
        check_answer(call, [{"id": 1, "api.Email.get": [{"is_error": 0, "values": []}] * 3}])
    assert "3 results for 2 chained calls" in caught.value.detail


def test_the_problems_reported_are_capped() -> None:
    call = parse(4, "Contact", "get", {"select": ["id"]})
    with pytest.raises(GatewayError) as caught:
        check_answer(call, [{"id": 1, **{f"k{i}": i for i in range(50)}}])
    assert caught.value.detail.count("key 'k") == 5  # the detail names the first five


def test_records_of_other_kinds(gateway_secret: None) -> None:
    check_answer(parse(3, "Contact", "getcount", {}), [3])
    check_answer(parse(4, "Contact", "getFields", {}), [{"name": "id", "anything": [1]}])
    with pytest.raises(GatewayError):
        check_answer(parse(4, "Contact", "getFields", {}), [{"name": "x", "default": SECRET}])
    values: list[Any] = [[1, 2]]
    with pytest.raises(GatewayError) as caught:
        check_answer(parse(4, "Contact", "get", {}), values)
    assert "a list where a record belongs" in caught.value.detail
