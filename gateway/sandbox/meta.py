"""Meta actions answered from the schema rather than a table: getFields, getActions, and the
``Entity`` and ``Setting`` entities. Their results are filtered in Python by ``array_query``."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from gateway.sandbox.actions import ACTIONS, Ctx, Record
from gateway.sandbox.errors import CiviError
from gateway.sandbox.query import OPERATORS
from gateway.sandbox.schema import ACTOR, CUSTOM_GROUPS, ENTITIES, NOW, Entity, Field, all_fields
from gateway.sandbox.spec577 import SPEC_577

# the order 5.77's getFields gives a field's keys in (the spec's own order, whatever the select)
FIELD_KEYS = (
    "default_value",
    "type",
    "entity",
    "required",
    "nullable",
    "required_if",
    "readonly",
    "name",
    "title",
    "description",
    "data_type",
    "serialize",
    "fk_entity",
    "options",
    "suffixes",
    "label",
    "input_type",
    "input_attrs",
    "custom_group",
    "table_name",
    "column_name",
)

ACTION_DESCRIPTIONS = {
    "get": "Retrieve records.",
    "create": "Create a new record.",
    "update": "Update one or more records.",
    "save": "Create or update one or more records.",
    "delete": "Delete one or more records.",
    "replace": "Replace a set of records.",
    "getFields": "Lists information about fields for the entity.",
    "getActions": "List all the actions available for this entity.",
    "autocomplete": "Retrieve matching records for an autocomplete search.",
    "checkAccess": "Check if current user is authorized to perform specified action.",
    "set": "Set the value of one or more settings.",
    "export": "Export $ENTITY for use elsewhere.",
    "revert": "Revert one or more $ENTITIES.",
    "refresh": "Refresh one or more groups.",
    "getCoordinates": "Converts an address string to lat/long coordinates.",
}


# ---- filtering of in-memory results -------------------------------------------------------
def _like(pattern: str, value: Any) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, "" if value is None else str(value), re.IGNORECASE | re.S) is not None


def _match(rec: Record, clause: Any, valid: set[str]) -> bool:
    if not isinstance(clause, list) or not clause or not isinstance(clause[0], str):
        raise CiviError("Invalid where clause")
    head = clause[0]
    if head in ("AND", "OR", "NOT"):
        subs = [_match(rec, c, valid) for c in (clause[1] if len(clause) > 1 else [])]
        if head == "OR":
            return any(subs)
        return not all(subs) if head == "NOT" else all(subs)
    op = clause[1] if len(clause) > 1 else "="
    if not isinstance(op, str) or op.upper() not in OPERATORS:
        raise CiviError("Illegal operator")
    op = op.upper()
    if head not in valid:
        raise CiviError(f"Invalid field '{head}'")
    v = rec.get(head)
    want: Any = clause[2] if len(clause) > 2 else None
    if op in ("=", "!=", "<>"):
        eq = (
            v == want
            or (isinstance(v, list) and want in v)
            or (str(v) == str(want) and v is not None and want is not None)
        )
        return eq if op == "=" else not eq
    if op in ("IN", "NOT IN"):
        hit = v in (want or []) or (isinstance(v, list) and any(x in v for x in want or []))
        return hit if op == "IN" else not hit
    if op in ("LIKE", "NOT LIKE"):
        return _like(str(want), v) == (op == "LIKE")
    if op == "IS NULL":
        return v is None
    if op == "IS NOT NULL":
        return v is not None
    if op in ("IS EMPTY", "IS NOT EMPTY"):
        return (not v) == (op == "IS EMPTY")
    if op in ("CONTAINS", "NOT CONTAINS"):
        hit = want in v if isinstance(v, list | str) and want is not None else False
        return hit == (op == "CONTAINS")
    try:
        if op in ("BETWEEN", "NOT BETWEEN"):
            hit = want[0] <= v <= want[1]
            return hit == (op == "BETWEEN")
        return {">": v > want, ">=": v >= want, "<": v < want, "<=": v <= want}.get(op, False)
    except TypeError:
        return False


def _sort_key(name: str, record: Record) -> tuple[bool, str]:
    return record.get(name) is None, str(record.get(name))


def array_query(
    rows: list[Record], params: dict[str, Any], ctx: Ctx | None = None, keys: tuple[str, ...] | None = None
) -> list[Record]:
    """select/where/orderBy/limit/offset over records already in memory (BasicGet style)."""
    valid = set(keys or (rows[0].keys() if rows else ()))
    where = params.get("where") or []
    rows = [r for r in rows if all(_match(r, c, valid) for c in where)]
    for name, direction in reversed(list((params.get("orderBy") or {}).items())):
        rows.sort(key=functools.partial(_sort_key, name), reverse=str(direction).upper() == "DESC")
    select = [s for s in params.get("select") or [] if isinstance(s, str)]
    if ctx is not None:
        # BasicGet reports the total before limit/offset as "count"
        ctx.extra["count"] = len(rows)
        if "row_count" in select:
            ctx.count_matched = len(rows)
    offset = params.get("offset") or 0
    limit = params.get("limit") or 0
    rows = rows[offset : offset + limit] if limit else rows[offset:]
    fields = [s for s in select if s != "row_count"]
    if select and not fields:
        return []
    if fields and "*" not in fields:
        # keys keep the records' own order, not the select's (as the real spec arrays do)
        rows = [{k: v for k, v in r.items() if k in fields} for r in rows]
    return rows


# ---- getFields ---------------------------------------------------------------------------
def _options(f: Field, load: Any) -> Any:
    if not f.options:
        return False
    if not load:
        return True
    if isinstance(load, list):
        load = [k for k in load if isinstance(k, str)]  # PHP would skip non-string keys too
        out = []
        for key, label in f.options.items():
            item = {"id": key, "name": label, "label": label}
            out.append(
                {k: item.get(k) for k in load if k in ("id", "name", "label")}
                | {k: None for k in load if k not in ("id", "name", "label")}
            )
        return out
    keys = list(f.options)
    if keys == list(range(len(keys))):
        return list(f.options.values())  # PHP would encode a 0..n-1 keyed array as a list
    # As every transport delivers it: JSON object keys are strings ({"1": "Mrs."}).
    return {str(key): label for key, label in f.options.items()}


def field_spec(f: Field, entity: str, action: str, load: Any) -> Record:
    default = f.default
    if default is NOW or default is ACTOR:
        default = None
    group = CUSTOM_GROUPS.get(f.custom_group or "")
    creating = action in ("create", "save")
    spec = {
        "required": bool(f.required and creating and f.default is None),
        "name": f.name,
        "title": f.title,
        "label": f.title,
        "description": f.description,
        "type": f.type,
        "entity": entity,
        "default_value": default,
        "nullable": f.nullable,
        "required_if": None,
        "data_type": f.data_type,
        "readonly": f.readonly,
        "serialize": f.serialize or None,
        "fk_entity": f.fk_entity,
        "options": _options(f, load),
        "input_type": f.widget,
        "input_attrs": [],
        "custom_group": group.name if group else None,
        "table_name": group.table if group else (ENTITIES[entity].table if entity in ENTITIES else None),
        "column_name": (f.column or f.name) if not f.sql else None,
        "suffixes": ["name", "label"] if f.options else None,
    }
    if not creating:
        spec["default_value"] = None  # 5.77 reports defaults to the actions that apply them
    spec.update(SPEC_577.get((entity, "create" if creating else "get"), {}).get(f.name, {}))
    return {k: spec[k] for k in FIELD_KEYS}


def get_fields(ctx: Ctx, entity: str, fields: list[Field]) -> list[Record]:
    p = ctx.params
    action = p.get("action") or "get"
    load = p.get("loadOptions", False)
    rows = [
        field_spec(f, entity, action, load)
        for f in fields
        if ctx.may_see_field(f)
        and not (f.readonly and action in ("create", "update", "save") and f.type == "Extra")
        and not (f.type == "Filter" and action in ("create", "update", "save"))
    ]
    return array_query(rows, p, ctx, FIELD_KEYS)


def entity_actions(name: str) -> list[str]:
    if name == "Entity":
        return ["get", "getActions", "getFields"]
    if name == "Setting":
        return ["get", "getActions", "getFields", "set"]
    ent = ENTITIES[name]
    return sorted(
        {*ent.actions, "checkAccess", "getActions", "getFields", "getLinks"}
        & {*ACTIONS, "getActions", "getFields"}
    )


def _describe(action: str, entity: str) -> str | None:
    """An action's docblock summary; generic ones name the entity via ``$ENTITY``."""
    text = ACTION_DESCRIPTIONS.get(action)
    return text.replace("$ENTITY", entity) if text else None


def get_actions(ctx: Ctx, entity: str) -> list[Record]:
    from gateway.sandbox.perms import visible

    # as CiviCRM's getActions: only what the user may run (every action without checks)
    rows: list[Record] = [
        {"name": a, "description": _describe(a, entity), "params": {}}
        for a in entity_actions(entity)
        if not ctx.check or entity not in ENTITIES or visible(entity, a, ctx.perms)
    ]
    return array_query(rows, ctx.params, ctx, ("name", "description", "params"))


# ---- Entity ------------------------------------------------------------------------------
ENTITY_KEYS = (
    "name",
    "title",
    "title_plural",
    "type",
    "description",
    "primary_key",
    "label_field",
    "icon",
    "searchable",
    "table_name",
    "class",
    "dao",
    "paths",
)


def _entity_row(ent: Entity) -> Record:
    return {
        "name": ent.name,
        "title": ent.title,
        "title_plural": ent.title_plural,
        "type": list(ent.type),
        "description": ent.description,
        "primary_key": ["id"],
        "label_field": ent.label_field,
        "icon": ent.icon,
        "searchable": ent.searchable,
        "table_name": ent.table,
        "class": f"Civi\\Api4\\{ent.name}",
        "dao": f"CRM_{_dao_part(ent.name)}_DAO_{ent.name}",
        "paths": [],
    }


def _dao_part(name: str) -> str:
    return {
        "Email": "Core",
        "Phone": "Core",
        "Address": "Core",
        "Tag": "Core",
        "EntityTag": "Core",
        "Note": "Core",
        "GroupContact": "Contact",
        "Group": "Contact",
        "Relationship": "Contact",
        "Activity": "Activity",
        "Contribution": "Contribute",
        "OptionGroup": "Core",
        "OptionValue": "Core",
        "Membership": "Member",
        "Event": "Event",
        "Participant": "Event",
    }.get(name, name)


META_ROWS = (
    {
        "name": "Entity",
        "title": "Entity",
        "title_plural": "Entities",
        "type": ["BasicEntity"],
        "description": "Retrieves information about all Api4 entities.",
        "primary_key": ["name"],
        "label_field": "title",
        "icon": "fa-cubes",
        "searchable": "none",
        "table_name": None,
        "class": "Civi\\Api4\\Entity",
        "dao": None,
        "paths": [],
    },
    {
        "name": "Setting",
        "title": "Setting",
        "title_plural": "Settings",
        "type": ["AbstractEntity"],
        "description": "Get and set site settings.",
        "primary_key": ["name"],
        "label_field": None,
        "icon": None,
        "searchable": "none",
        "table_name": None,
        "class": "Civi\\Api4\\Setting",
        "dao": None,
        "paths": [],
    },
)


def get_entities(ctx: Ctx) -> list[Record]:
    rows = sorted([*(_entity_row(e) for e in ENTITIES.values()), *META_ROWS], key=lambda r: r["name"])
    return array_query(rows, ctx.params, ctx, ENTITY_KEYS)


ENTITY_FIELDS = tuple(
    Field(
        k,
        "Array" if k in ("type", "primary_key", "paths") else "String",
        k.replace("_", " ").title(),
        type="Field",
    )
    for k in ENTITY_KEYS
)


# ---- Setting -----------------------------------------------------------------------------
def setting_fields(ctx: Ctx) -> list[Field]:
    rows = ctx.conn.execute("SELECT name, value FROM sandbox_setting ORDER BY name").fetchall()
    out = []
    for name, raw in rows:
        value = json.loads(raw)
        dtype = {bool: "Boolean", int: "Integer", list: "Array"}.get(type(value), "String")
        out.append(Field(name, dtype, name.replace("_", " ").title(), default=value))
    return out


def setting_get(ctx: Ctx) -> list[Record]:
    rows = ctx.conn.execute("SELECT name, value FROM sandbox_setting ORDER BY name").fetchall()
    select = [s for s in ctx.params.get("select") or [] if isinstance(s, str)]
    values = {name: json.loads(raw) for name, raw in rows}
    names = select or list(values)
    return [{"name": n, "value": values.get(n)} for n in names if n in values]


def setting_set(ctx: Ctx) -> list[Record]:
    values = ctx.params.get("values") or {}
    known = {n for (n,) in ctx.conn.execute("SELECT name FROM sandbox_setting")}
    out = []
    for name, value in values.items():
        if name not in known:
            raise CiviError(f"Unknown setting: {name}")
        ctx.conn.execute("UPDATE sandbox_setting SET value = ? WHERE name = ?", (json.dumps(value), name))
        out.append({"name": name, "value": value})
    return out


def all_entity_fields(name: str) -> list[Field]:
    return all_fields(name)
