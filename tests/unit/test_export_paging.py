"""gateway.flow.export's paging: how one APIv4 get is walked page by page (by keyset on id when
the query allows it, else by offset with id as a tie-breaker), and the pure pieces around it
(format negotiation, CSV cells).

The plan is pure and tested as such. The walk itself needs something to answer pages: the
embedded sandbox, through tests/unit/conftest.py's SandboxSite, and only through ``walk`` below,
so a change of ``pages``' signature (issue 27) is one line here. The HTTP faces of the export
are tests/production/test_batch_export.py and test_large_get.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.core.call import Call, parse
from gateway.core.errors import GatewayError
from gateway.flow import export
from gateway.flow.export import _cell, _CsvEncoder, _plan, keyset_possible, negotiate
from gateway.sandbox.engine import Sandbox
from tests.unit.conftest import SandboxSite

# --- format negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_param", "accept", "expected"),
    [
        (None, None, "json"),
        ("csv", "application/x-ndjson", "csv"),  # an explicit format wins
        (None, "text/csv; charset=utf-8", "csv"),
        (None, "application/jsonl", "ndjson"),
        (None, "text/html, APPLICATION/X-NDJSON;q=0.9", "ndjson"),  # the first known type
        (None, "*/*", "json"),
        (None, "image/png", "json"),
    ],
)
def test_negotiate(format_param: str | None, accept: str | None, expected: str) -> None:
    assert negotiate(format_param, accept) == expected


def test_an_unknown_format_is_400() -> None:
    with pytest.raises(GatewayError) as caught:
        negotiate("xml", None)
    assert (caught.value.slug, caught.value.detail) == (
        "invalid-request",
        "format must be json, ndjson or csv, not 'xml'.",
    )


# --- the plan: keyset or offset, and the base params of every page -------------------------------


class _Planned:
    """The plan, with its page call as the params CiviCRM receives."""

    def __init__(self, plan: export._Plan) -> None:
        self.keyset, self.drop_id, self.total, self.offset = (
            plan.keyset,
            plan.drop_id,
            plan.total,
            plan.offset,
        )
        self.params = plan.call.to_params()


def plan(params: dict[str, Any]) -> _Planned:
    return _Planned(_plan(parse(4, "Contact", "get", params)))


def test_a_plain_get_is_walked_by_keyset_on_id() -> None:
    p = plan({"select": ["display_name"], "where": [["is_deleted", "=", False]]})
    assert p.keyset and p.drop_id  # id added to walk by, dropped from the rows again
    assert p.params == {
        "select": ["display_name", "id"],
        "where": [["is_deleted", "=", False]],
        "orderBy": {"id": "ASC"},
    }
    assert (p.total, p.offset) == (float("inf"), 0)


def test_id_in_the_select_is_not_dropped() -> None:
    for select in (["id", "display_name"], ["*"], None):
        p = plan({"select": select} if select else {})
        assert p.keyset and not p.drop_id
        assert p.params.get("select") == select


def test_limit_and_offset_bound_the_walk() -> None:
    p = plan({"limit": 250, "offset": 10, "orderBy": {"id": "ASC"}})
    assert p.keyset and (p.total, p.offset) == (250, 10)
    assert "limit" not in p.params and "offset" not in p.params  # set per page


@pytest.mark.parametrize(
    "params",
    [
        {"orderBy": {"sort_name": "ASC"}},
        {"orderBy": {"id": "DESC"}},
        {"select": ["contact_type", "COUNT(id) AS n"], "groupBy": ["contact_type"]},
        {"join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]]},
        {"select": ["UPPER(display_name) AS u"]},
        {"select": ["row_count"]},
    ],
)
def test_what_cannot_be_walked_by_id_is_walked_by_offset(params: dict[str, Any]) -> None:
    assert not keyset_possible(parse(4, "Contact", "get", params))
    p = plan(params)
    assert not p.keyset and not p.drop_id


def test_offset_paging_orders_by_id_last_for_a_stable_order() -> None:
    assert plan({"orderBy": {"sort_name": "DESC"}}).params["orderBy"] == {"sort_name": "DESC", "id": "ASC"}
    assert plan({"orderBy": {"id": "DESC", "sort_name": "ASC"}}).params["orderBy"] == {
        "id": "DESC",
        "sort_name": "ASC",
    }
    grouped = plan({"select": ["contact_type"], "groupBy": ["contact_type"]})
    assert "orderBy" not in grouped.params  # grouped rows have no id to order by


# --- the walk, over the sandbox --------------------------------------------------------------


@pytest.fixture(scope="module")
def people() -> Iterator[SandboxSite]:
    sandbox = Sandbox(demo=30)  # 32 contacts: the demo's and the sandbox's own
    yield SandboxSite(sandbox)
    sandbox.close()


async def walk(site: SandboxSite, call: Call, page_size: int, gate: Any = None) -> list[list[Any]]:
    """Every page of the export of ``call``, recording what was sent in ``site.calls``."""
    site.calls.clear()
    return [list(page) async for page in export.pages(site, call, page_size=page_size, gate=gate)]  # type: ignore[arg-type]


def sent(site: SandboxSite) -> list[dict[str, Any]]:
    return [params for _, _, _, params in site.calls]


async def test_keyset_pages_continue_after_the_last_id(people: SandboxSite) -> None:
    everyone = [
        r["id"]
        for r in people.sandbox.api4("Contact", "get", {"select": ["id"], "orderBy": {"id": "ASC"}})["values"]
    ]
    pages = await walk(
        people, parse(4, "Contact", "get", {"select": ["display_name"], "where": [["id", ">", 0]]}), 10
    )
    assert [len(p) for p in pages] == [10, 10, 10, 2]
    assert all(set(r) == {"display_name"} for p in pages for r in p)  # the id it walked by is dropped
    params = sent(people)
    assert params[0] == {
        "select": ["display_name", "id"],
        "where": [["id", ">", 0]],
        "orderBy": {"id": "ASC"},
        "limit": 10,
    }
    assert [p["where"] for p in params[1:]] == [
        [["id", ">", 0], ["id", ">", everyone[i]]] for i in (9, 19, 29)
    ]
    assert all("offset" not in p for p in params)


async def test_a_full_last_page_costs_one_empty_page(people: SandboxSite) -> None:
    pages = await walk(people, parse(4, "Contact", "get", {"select": ["id"]}), 16)
    assert [len(p) for p in pages] == [16, 16]
    assert len(people.calls) == 3  # the third answered nothing: the end


async def test_offset_pages_advance_by_what_came(people: SandboxSite) -> None:
    call = parse(
        4, "Contact", "get", {"select": ["id", "sort_name"], "orderBy": {"sort_name": "ASC"}, "offset": 3}
    )
    pages = await walk(people, call, 12)
    assert [len(p) for p in pages] == [12, 12, 5]
    assert [p.get("offset") for p in sent(people)] == [3, 15, 27]
    assert all(p["orderBy"] == {"sort_name": "ASC", "id": "ASC"} for p in sent(people))
    ids = [r["id"] for p in pages for r in p]
    assert len(set(ids)) == 29  # each record once


async def test_the_calls_limit_caps_the_last_page(people: SandboxSite) -> None:
    pages = await walk(people, parse(4, "Contact", "get", {"select": ["id"], "limit": 25}), 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [p["limit"] for p in sent(people)] == [10, 10, 5]  # never more rows than asked


async def test_the_gate_is_entered_per_page_first_once(people: SandboxSite) -> None:
    entered: list[bool] = []

    @contextlib.asynccontextmanager
    async def gate(first: bool) -> AsyncIterator[None]:
        entered.append(first)
        yield

    await walk(people, parse(4, "Contact", "get", {"select": ["id"]}), 15, gate=gate)
    assert entered == [True, False, False]


# --- CSV cells ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (True, "true"),
        (-3, "-3"),  # a negative number is data
        (-1.5, "-1.5"),
        ("plain", "plain"),
        ("=SUM(A1)", "'=SUM(A1)"),  # a formula is defused
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ({"a": 1}, '{"a":1}'),
        (["=x"], '["=x"]'),
    ],
)
def test_csv_cells(value: Any, cell: str) -> None:
    assert _cell(value) == cell


def test_csv_columns_come_from_the_first_row() -> None:
    encoder = _CsvEncoder()
    first = encoder.encode([{"id": 1, "name": "a,b"}])
    later = encoder.encode([{"name": "c", "extra": "dropped"}])
    assert first == b'id,name\r\n1,"a,b"\r\n'
    assert later == b",c\r\n"
    assert _CsvEncoder().encode([]) == b"\r\n"  # an empty export: an empty header line
