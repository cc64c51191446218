"""Deep nesting is refused with 400 before anything recursive can overflow (issue 25, items 5
and 12): the expression parser bounds its own depth, and JSON is bounded before parsing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core import expressions
from tests.conftest import assert_problem

PARENS = "(" * 480 + "id" + ")" * 480
MINUSES = "-" * 990 + "1"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"select": [PARENS]}, id="480-parens-select"),
        pytest.param({"select": ["id"], "where": [[PARENS, "=", 1]]}, id="480-parens-where"),
        pytest.param({"select": ["id"], "orderBy": {PARENS: "ASC"}}, id="480-parens-orderBy"),
        pytest.param({"select": [MINUSES + " AS x"]}, id="990-minus-select"),
        pytest.param({"select": ["id"], "where": [["id", "=", MINUSES, True]]}, id="990-minus-where"),
        pytest.param({"select": ["UPPER(" * 120 + "display_name" + ")" * 120]}, id="120-functions"),
        pytest.param({"select": ["id"], "groupBy": [PARENS]}, id="480-parens-groupBy"),
    ],
)
async def test_deep_expressions_are_400(gw_sandbox: Any, params: dict[str, Any]) -> None:
    response = await gw_sandbox.post("/v4/Contact/get", json=params)
    body = assert_problem(response, 400, "invalid-request")
    assert "nested deeper than" in body["detail"], body


async def test_deep_expressions_in_a_chain_and_over_get_are_400(gw_sandbox: Any) -> None:
    chained = {"select": ["id"], "chain": {"e": ["Email", "get", {"select": [PARENS]}]}}
    assert_problem(await gw_sandbox.post("/v4/Contact/get", json=chained), 400, "invalid-request")
    response = await gw_sandbox.get("/v4/Contact/get", params={"select": MINUSES})
    assert_problem(response, 400, "invalid-request")


async def test_nesting_at_the_bound_is_parsed(gw_sandbox: Any) -> None:
    depth = expressions.MAX_DEPTH
    inside = "(" * depth + "id" + ")" * depth + " AS n"
    assert expressions.parse(inside).alias == "n"
    response = await gw_sandbox.post("/v4/Contact/get", json={"select": ["id", inside], "limit": 1})
    assert "nested deeper" not in response.text  # forwarded (the sandbox has its own view of it)
    over = "(" * (depth + 1) + "id" + ")" * (depth + 1)
    assert_problem(await gw_sandbox.post("/v4/Contact/get", json={"select": [over]}), 400, "invalid-request")


@pytest.mark.parametrize("depth", [33, 600, 5000, 100_000])
@pytest.mark.parametrize("kind", ["list", "object"])
async def test_deeply_nested_json_is_400(gw_sandbox: Any, depth: int, kind: str) -> None:
    """Past max_json_depth (32 by default), and past orjson's own limit (1024), alike."""
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    body = '{"select": ["id"], "where": ' + opening * depth + "1" + closing * depth + "}"
    response = await gw_sandbox.post(
        "/v4/Contact/get", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid-request")
    if depth <= 600:  # a longer URL is past what httpx sends
        nested = opening * depth + "1" + closing * depth
        query = await gw_sandbox.get("/v4/Contact/get", params={"where": nested})
        assert query.status_code == 400, query.text
    batch = '{"a": ["Contact", "get", ' + body + "]}"
    response = await gw_sandbox.post("/v4/batch", content=batch, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text


def test_the_parser_never_raises_recursion_error() -> None:
    for text in [PARENS, MINUSES, "(" * 10_000, "-" * 999 + "(" * 499, "IF(" * 400 + "1"]:
        with pytest.raises(Exception) as caught:
            expressions.parse(text)
        assert not isinstance(caught.value, RecursionError)
        assert getattr(caught.value, "status", None) == 400
