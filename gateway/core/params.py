"""Params normalisation: from what a client sent to the params CiviCRM expects.

Runs before anything is forwarded: names are checked strictly, bodies must be JSON objects of
bounded depth, and the simple field-value form (civicrmapi's rule) becomes native APIv4 params.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.core.errors import GatewayError, invalid_request

# An entity or action name: the routes, their OpenAPI patterns and check_names all use this.
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)

# Every documented top-level APIv4 parameter. Anything else in a get/delete/create/update body
# is taken as a field name (the simple form).
V4_PARAMS = frozenset(
    {
        "select",
        "where",
        "values",
        "orderBy",
        "limit",
        "offset",
        "join",
        "chain",
        "groupBy",
        "having",
        "language",
        "domainId",  # Setting.get/set/revert's own params, never field filters
        "contactId",
        "checkPermissions",
        "useTrash",
        "records",
        "defaults",
        "match",
        "reload",
        "debug",
        "loadOptions",
        "action",
        "includeCustom",
        "fields",
        "input",
        "searchField",
        "page",
        "key",
        "formName",
        "fieldName",
        "filters",
        "ids",
        "version",
        "translationMode",
        "index",
        "exclude",
        "idField",
    }
)
SIMPLE_ACTIONS = frozenset({"get", "delete", "create", "update"})


def check_names(entity: str, action: str) -> None:
    """Letters, digits and underscores only, starting with a letter: nothing else is forwarded."""
    if not NAME_RE.fullmatch(entity):
        raise invalid_request(
            f"Invalid entity name {entity[:80]!r}: use letters, digits and underscores, "
            "starting with a letter (at most 64 characters)."
        )
    if not NAME_RE.fullmatch(action):
        raise invalid_request(
            f"Invalid action name {action[:80]!r}: use letters, digits and underscores, "
            "starting with a letter (at most 64 characters)."
        )


def is_read_action(version: int, action: str) -> bool:
    """Actions that change nothing, in any letter case as CiviCRM matches them (and that
    CiviCRM lets through over GET)."""
    low = action.lower()
    return low.startswith("get") or (version == 4 and low in ("autocomplete", "checkaccess"))


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse deeply nested JSON before it reaches anything recursive."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise invalid_request(f"JSON nested deeper than {max_depth} levels.")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_body(
    body: bytes, *, max_depth: int, content_type: str | None = None, what: str = "The body"
) -> dict[str, Any]:
    """The request body as a params object; an empty body means no params."""
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        media = (content_type or "").split(";")[0].strip().lower()
        hint = ""
        if media and media != "application/json" and not media.endswith("+json"):
            hint = (
                f" It was sent as {media[:60]}: the gateway takes a JSON object of params "
                "with 'Content-Type: application/json'."
            )
        raise invalid_request(f"{what} is not valid JSON: {exc}.{hint}") from None
    if not isinstance(data, dict):
        raise invalid_request(f"{what} must be a JSON object of params, not {type(data).__name__}.")
    # Nesting cannot exceed the number of brackets (those inside strings only overcount),
    # so the usual small body skips the walk.
    if body.count(b"{") + body.count(b"[") > max_depth:
        check_depth(data, max_depth)
    return data


def _clause(field: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        return [field, "IN", value]
    if value is None:
        return [field, "IS NULL"]
    return [field, "=", value]


def normalize_v4(action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Turn the simple field-value form into native APIv4 params.

    Same rule as civicrmapi's docs, extended so that native params may be mixed in:
    - get/delete: each field key becomes a ``where`` clause (``=``; a list means ``IN``;
      ``null`` means ``IS NULL``), added to any ``where`` given;
    - create: field keys become ``values`` (merged over any ``values`` given);
    - update: ``id`` becomes ``where id =``, the other field keys become ``values``.
    Other actions, and bodies with no field keys, pass through unchanged.
    """
    action = action.lower()  # CiviCRM matches actions in any case
    if action not in SIMPLE_ACTIONS:
        return params
    fields = {k: v for k, v in params.items() if k not in V4_PARAMS}
    if not fields:
        return params
    native = {k: v for k, v in params.items() if k in V4_PARAMS}
    if action in ("get", "delete"):
        where = native.get("where") or []
        if not isinstance(where, list):
            raise invalid_request("'where' must be a list of clauses.")
        native["where"] = [*where, *(_clause(k, v) for k, v in fields.items())]
    elif action == "create":
        values = native.get("values") or {}
        if not isinstance(values, dict):
            raise invalid_request("'values' must be an object of field values.")
        native["values"] = {**values, **fields}
    else:  # update
        values = native.get("values") or {}
        if not isinstance(values, dict):
            raise invalid_request("'values' must be an object of field values.")
        if "id" in fields:
            where = native.get("where") or []
            if not isinstance(where, list):
                raise invalid_request("'where' must be a list of clauses.")
            native["where"] = [*where, ["id", "=", fields.pop("id")]]
        native["values"] = {**values, **fields}
    return native


def normalize_v3(params: dict[str, Any]) -> dict[str, Any]:
    """APIv3 params are flat already; results are always sequential lists."""
    return {**params, "sequential": 1}


# --- query strings (GET) ---------------------------------------------------------------------


def _json_param(name: str, raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request(f"Query field {name!r} is not valid JSON.") from None


def _int_param(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"Query field {name!r} must be a whole number.") from None
    if value < 0:
        raise invalid_request(f"Query field {name!r} must not be negative.")
    return value


def _order_by(raw: str) -> dict[str, str]:
    order: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        field, _, direction = part.partition(":")
        direction = (direction or "asc").upper()
        if direction not in ("ASC", "DESC"):
            raise invalid_request(f"orderBy direction must be asc or desc, not {direction!r}.")
        order[field] = direction
    return order


def _collect(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in items:
        grouped.setdefault(key, []).append(value)
    return grouped


def params_from_query(version: int, items: Iterable[tuple[str, str]], *, max_depth: int) -> dict[str, Any]:
    """Params from a GET query string.

    Either ``params=<json object>`` (the whole params), or simple ``field=value`` pairs (a
    repeated field means IN) plus ``select=a,b``, ``limit``, ``offset``, ``orderBy=f:desc,g``.
    APIv4 parameter names given a JSON value (``where=[...]``, ``join=[...]``) are parsed.
    """
    grouped = _collect(items)
    if "params" in grouped:
        if len(grouped) > 1 or len(grouped["params"]) > 1:
            raise invalid_request("Give either one 'params' JSON object or simple fields, not both.")
        return parse_body(grouped["params"][0].encode(), max_depth=max_depth, what="Query field 'params'")
    params: dict[str, Any] = {}
    for key, values in grouped.items():
        if not key:
            raise invalid_request("Empty query field name.")
        if len(values) > 1 and key in ("select", "limit", "offset", "orderBy", "sort", "return"):
            raise invalid_request(f"Query field {key!r} given more than once.")
        raw = values[0]
        if key in ("limit", "offset"):
            params[key] = _int_param(key, raw)
        elif key in ("select", "return"):
            params[key] = [f.strip() for f in raw.split(",") if f.strip()]
        elif key in ("orderBy", "sort"):
            params[key] = _order_by(raw)
        elif version == 4 and key in V4_PARAMS:
            params[key] = _json_param(key, raw) if raw[:1] in "[{" else raw
        else:
            params[key] = values if len(values) > 1 else raw
    check_depth(params, max_depth)
    if version == 3:
        return _v3_query(params)
    return params


def _v3_query(params: dict[str, Any]) -> dict[str, Any]:
    """APIv3 spells paging and sorting inside ``options``."""
    options: dict[str, Any] = {}
    for key in ("limit", "offset"):
        if key in params:
            options[key] = params.pop(key)
    order = params.pop("sort", None) or params.pop("orderBy", None)
    if order:
        options["sort"] = ", ".join(f"{f} {d}" for f, d in order.items())
    select = params.pop("select", None)
    if select:
        params["return"] = select
    if "return" in params and isinstance(params["return"], list):
        params["return"] = ",".join(params["return"])
    for key, value in list(params.items()):
        if isinstance(value, list) and key != "return":
            params[key] = {"IN": value}
    if options:
        params["options"] = options
    return params


__all__ = [
    "V4_PARAMS",
    "GatewayError",
    "check_depth",
    "check_names",
    "is_read_action",
    "normalize_v3",
    "normalize_v4",
    "params_from_query",
    "parse_body",
]
