"""``row_count`` on the cv and pipe backends: cv drops CiviCRM's match count, so ask for it.

``cv api4`` prints only the records and a ``cv pipe`` ``api4`` result is the bare list (``[]``
for ``select: ["row_count"]``), so APIv4's ``countMatched`` never reaches the gateway. For a
``get`` that selects ``row_count`` the backend sends a second query that counts the same rows
the way CiviCRM's own ``Api4SelectQuery::getCount`` does:

- no ``groupBy`` and no ``having``: ``COUNT(id)`` over the same ``where`` and ``join`` (one row
  back, one number; a join that multiplies rows counts each, as countMatched does);
- ``groupBy`` or ``having``: the number of rows the grouped query returns (countMatched counts
  groups), selecting the group keys only, or the client's own select when ``having`` may name
  one of its aliases.

A ``row_count``-only select needs no records query at all: the answer is ``[]`` with the count,
exactly as over CiviCRM's REST API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.core import expressions
from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.expressions import Expr
from gateway.core.results import Records

COUNT_ALIAS = "gateway_row_count"
# The options the count query keeps besides what selects rows: how to read them.
_KEPT_OPTIONS = ("language", "checkPermissions")


@dataclass(frozen=True)
class CountPlan:
    """The queries one call needs: ``records`` (None: none) and ``count``."""

    records: dict[str, Any] | None
    count: dict[str, Any]
    grouped: bool


def plan(call: Call) -> CountPlan | None:
    """The count query for an APIv4 ``get`` selecting ``row_count``; None for anything else.
    Both queries are built from the parsed call (what selects rows, and how to read them)."""
    if call.version != 4 or not call.is_get or call.select is None:
        return None
    if not any(e.text == "row_count" for e in call.select):
        return None
    rest = tuple(e for e in call.select if e.text != "row_count")
    group_by = call.group_by or ()
    grouped = bool(group_by) or bool(call.having)
    if not grouped:
        select: tuple[Expr, ...] = (expressions.parse(f"COUNT(id) AS {COUNT_ALIAS}"),)
    elif call.having:
        select = rest or group_by or (expressions.parse("id"),)
    else:
        select = group_by or (expressions.parse("id"),)
    kept = {k: v for k, v in call.options.items() if k in _KEPT_OPTIONS}
    count = replace(
        call, select=select, order_by=None, limit=None, offset=None, chain={}, options=kept
    ).to_params()
    records = replace(call, select=rest).to_params() if rest else None
    return CountPlan(records, count, grouped)


def counted(plan: CountPlan, rows: Records) -> int:
    """The match count from the count query's answer."""
    if plan.grouped:
        return len(rows)
    if len(rows) == 1 and isinstance(rows[0], dict) and isinstance(rows[0].get(COUNT_ALIAS), int):
        return int(rows[0][COUNT_ALIAS])
    raise GatewayError("upstream-invalid-response", "CiviCRM answered the row count query without a count.")


def combine(plan: CountPlan, records: Records | None, count_rows: Records) -> Records:
    """The call's records with ``count_matched`` set from the count query."""
    return Records(records if records is not None else [], count_matched=counted(plan, count_rows))


__all__ = ["COUNT_ALIAS", "CountPlan", "combine", "counted", "plan"]
