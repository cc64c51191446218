"""Regressions for the bugs the fuzzers found: each input here once made the gateway answer 500
(an unhandled exception) or answer outside its OpenAPI document."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.core.redact import install_log_redaction
from gateway.settings import Settings
from tests.conftest import assert_problem, gateway_client


@pytest.fixture
async def gw() -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=5)) as client:
        yield client


async def contacts(gw: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await gw.post("/v4/Contact/get", json={"select": ["*"], "orderBy": {"id": "ASC"}})
    assert response.status_code == 200
    return response.json()


async def test_get_fields_with_options_keyed_by_number(gw: httpx.AsyncClient) -> None:
    # The sandbox keys prefix_id's options by integer; orjson refused non-string keys.
    response = await gw.post(
        "/v4/Contact/getFields",
        json={"loadOptions": True, "select": ["name", "options"], "where": [["name", "=", "prefix_id"]]},
    )
    assert response.status_code == 200, response.text
    assert response.json()[0]["options"]["1"] == "Mrs."


async def test_get_fields_odd_load_options(gw: httpx.AsyncClient) -> None:
    response = await gw.post("/v4/Email/getFields", json={"loadOptions": [5, "label"]})
    assert response.status_code == 200, response.text
    # neither a bool nor a list of option keys: the gateway's own check, then CiviCRM's
    for load, slug in (
        ([[]], "invalid-request"),
        ("x", "civicrm-bad-request"),
        ({"a": {"b": 1}}, "civicrm-bad-request"),
    ):
        assert_problem(await gw.post("/v4/Email/getFields", json={"loadOptions": load}), 400, slug)


@pytest.mark.parametrize(
    ("record_id", "status", "slug"),
    [
        ("x", 422, "civicrm-validation"),
        ([1], 422, "civicrm-validation"),
        ({"a": 1}, 400, "invalid-request"),
        (True, 422, "civicrm-validation"),
        ("1e3", 422, "civicrm-validation"),
        (1.5, 422, "civicrm-validation"),
    ],
)
async def test_save_with_a_malformed_id_is_refused(
    gw: httpx.AsyncClient, record_id: Any, status: int, slug: str
) -> None:
    before = await contacts(gw)
    assert_problem(
        await gw.post("/v4/Contact/save", json={"records": [{"id": record_id, "first_name": "Changed"}]}),
        status,
        slug,
    )
    assert await contacts(gw) == before


async def test_malformed_regexp_is_refused_before_civicrm(gw: httpx.AsyncClient) -> None:
    # MySQL would refuse the pattern (a DB error from CiviCRM): the client's mistake, a 400.
    response = await gw.post("/v4/Contact/get", json={"where": [["first_name", "REGEXP", "("]]})
    body = assert_problem(response, 400, "invalid-request")
    assert "REGEXP pattern does not compile" in body["detail"]


@pytest.mark.parametrize(
    ("params", "status", "slug"),
    [
        ({"first_name": {"LIKE": {}}}, 400, "invalid-request"),
        ({"id": {"IN": [1, {"a": 1}]}}, 400, "invalid-request"),
        ({"id": {"LIKE": [1, 2]}}, 400, "invalid-request"),  # a PHP fatal in 5.77
    ],
)
async def test_v3_non_scalar_filters_are_refused(
    gw: httpx.AsyncClient, params: dict[str, Any], status: int, slug: str
) -> None:
    response = await gw.post("/v3/Contact/get", json=params)
    assert_problem(response, status, slug)


@pytest.mark.parametrize(
    ("entity", "params", "status", "slug"),
    [
        ("Activity", {"activity_type_id": {}, "subject": "x"}, 400, "invalid-request"),
        ("Address", {"contact_id": {}, "street_address": "x"}, 400, "invalid-request"),
        ("Contact", {"contact_type": "Individual", "employer_id": [1, 2]}, 422, "civicrm-validation"),
        ("Contact", {"contact_type": "Individual", "employer_id": 2**70}, 422, "civicrm-validation"),
    ],
)
async def test_non_scalar_or_huge_values_are_refused(
    gw: httpx.AsyncClient, entity: str, params: dict[str, Any], status: int, slug: str
) -> None:
    before = await contacts(gw)
    if entity == "Contact":
        response = await gw.post("/v4/Contact/create", json={"values": params})
    else:
        response = await gw.post(f"/v3/{entity}/create", json=params)
    assert_problem(response, status, slug)
    assert await contacts(gw) == before


async def test_huge_integer_filters_match_nothing(gw: httpx.AsyncClient) -> None:
    response = await gw.post("/v4/Contact/get", json={"where": [["id", "=", 2**70]]})
    assert response.status_code == 200 and response.json() == []
    response = await gw.post("/v3/Contact/getcount", json={"id": -(2**70)})
    assert response.status_code == 200 and response.json() == 0


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("update", {"where": [["id", "=", 3]], "values": [False]}),
        ("get", {"orderBy": [0.0, None]}),
        ("create", {"values": ["Individual"]}),
        ("get", {"select": {"a": "id"}}),
    ],
)
async def test_php_arrays_given_as_the_other_json_shape(
    gw: httpx.AsyncClient, action: str, params: dict[str, Any]
) -> None:
    # PHP reads a JSON list where it expects a map (and the reverse) as an array: CiviCRM
    # ignores or refuses the odd field names ("0"), but never crashes.
    response = await gw.post(f"/v4/Contact/{action}", json=params)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH"])
async def test_405_allow_lists_every_method_of_the_path(gw: httpx.AsyncClient, method: str) -> None:
    response = await gw.request(method, "/v4/Contact/get")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    response = await gw.request(method, "/healthz")
    assert response.headers["allow"] == "GET"


async def test_service_routes_document_their_errors(gw: httpx.AsyncClient) -> None:
    response = await gw.get("/problems/no-such-problem")
    assert response.status_code == 404
    paths = (await gw.get("/openapi.json")).json()["paths"]
    assert "404" in paths["/problems/{slug}"]["get"]["responses"]
    assert {"502", "503", "504"} <= set(paths["/readyz"]["get"]["responses"])
    assert {"401", "429"} <= set(paths["/cache/flush"]["post"]["responses"])
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_log_lines_cannot_be_forged_with_control_characters(restore_redactor: None) -> None:
    install_log_redaction([])
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logger = logging.getLogger("gateway.access.regression")
    logger.addHandler(handler)
    try:
        logger.warning("%s %s", "GET", "/v4/x\n2026-01-01 INFO gateway.access: forged\r\x1b[2J\x00")
    finally:
        logger.removeHandler(handler)
    text = buffer.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and "\x1b" not in text and "\x00" not in text
    assert "\\n2026-01-01 INFO gateway.access: forged\\r\\x1b[2J\\x00" in text


async def test_create_with_an_id_is_refused(gw: httpx.AsyncClient) -> None:
    # The sandbox used to ignore the id and create a record; CiviCRM refuses it.
    before = await contacts(gw)
    body = assert_problem(
        await gw.post(
            "/v4/Contact/create",
            json={"values": {"id": 3, "contact_type": "Individual", "first_name": "Evil"}},
        ),
        400,
        "civicrm-error",
    )
    assert "Use Update action" in body["detail"]
    assert await contacts(gw) == before


@pytest.mark.parametrize(
    "params",
    [
        {"where": [["GROUP_CONCAT('a', id)", "=", 0]]},  # found by the redteam property test
        {"where": [["OR", [["COUNT(id)", ">", 1], ["id", "=", 1]]]]},
        {"where": [["id", "=", "MAX(id)", True]]},
        {"join": [["Email AS e", "LEFT", ["e.contact_id", "=", "MIN(id)"]]]},
    ],
)
async def test_an_aggregate_that_would_filter_rows_is_refused(
    gw: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    """SQL refuses an aggregate in WHERE or ON (a DB Error from CiviCRM, answered 502): the
    gateway says it is the client's mistake, and where it belongs."""
    body = assert_problem(await gw.post("/v4/Contact/get", json=params), 400, "invalid-request")
    assert "cannot filter rows" in body["detail"] and "'having'" in body["detail"]


async def test_an_aggregate_in_having_still_works(gw: httpx.AsyncClient) -> None:
    response = await gw.post(
        "/v4/Contact/get",
        json={
            "select": ["contact_type", "COUNT(id) AS n"],
            "groupBy": ["contact_type"],
            "having": [["COUNT(id)", ">", 0]],
        },
    )
    assert response.status_code == 200, response.text
    assert sum(row["n"] for row in response.json()) == len(await contacts(gw))
