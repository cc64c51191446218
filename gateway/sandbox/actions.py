"""APIv4 actions on table-backed entities: get, create, update, save, delete, replace, ..."""

from __future__ import annotations

import fnmatch
import random
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.sandbox import sqlexpr
from gateway.sandbox.errors import CiviError
from gateway.sandbox.query import GROUP_SEPARATOR, Query, quote
from gateway.sandbox.rules import PRIMARY_TABLES, ROW_RULES, contact_defaults
from gateway.sandbox.schema import (
    ACTOR,
    BOOL,
    CUSTOM_GROUPS,
    DATE,
    ENTITIES,
    FLOAT,
    INT,
    MONEY,
    NOW,
    TS,
    Entity,
    Field,
    custom_fields,
)
from gateway.sandbox.touch import touch

Record = dict[str, Any]
SEPARATOR = "\x01"  # CRM_Core_DAO::VALUE_SEPARATOR: how serialized lists are stored
COMMA = 5  # CRM_Core_DAO::SERIALIZE_COMMA: a list stored "a,b" (Tag.used_for)
# api4(entity, action, params, index) for chained calls, run inside the same transaction
Api4Call = Callable[[str, str, dict[str, Any], Any], dict[str, Any]]
KEY_PERMS = ("administer CiviCRM", "edit api keys")


@dataclass
class Ctx:
    """Everything one action needs: the connection, who is acting, and the params."""

    conn: sqlite3.Connection
    entity: Entity
    action: str
    params: dict[str, Any]
    check: bool
    contact_id: int | None
    perms: frozenset[str]
    now: str
    rng: random.Random
    call: Api4Call
    empty: bool = False  # permission filtering hides every row
    count_matched: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def may_see_field(self, f: Field) -> bool:
        if f.name == "api_key" and self.check:
            return any(p in self.perms for p in KEY_PERMS)
        return True


# ---- value conversion -------------------------------------------------------------------
def to_api(f: Field, value: Any) -> Any:
    """A stored value as APIv4 types it (ints, bools, floats, strings; never str-for-int)."""
    if value is None:
        return None
    if f.serialize:
        return [p for p in str(value).split(SEPARATOR if f.serialize != COMMA else ",") if p != ""]
    if f.data_type == INT:
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    if f.data_type == BOOL:
        return bool(int(value)) if not isinstance(value, str) else value not in ("", "0")
    if f.data_type in (MONEY, FLOAT):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    return value if isinstance(value, str) else str(value)


def to_db(f: Field, value: Any, suffix: str = "") -> Any:
    """A value from the caller as the column stores it."""
    if suffix in ("label", "name") and f.options:
        for key, label in f.options.items():
            if value in (label, key) or str(value) == str(key):
                return key
        return value
    if value is None or (value == "" and f.data_type != "String"):
        return None
    if f.serialize:
        items = (
            list(value.values())
            if isinstance(value, dict)
            else value
            if isinstance(value, list)
            else str(value).split(",")
        )
        if f.serialize == COMMA:
            return ",".join(str(i) for i in items)
        return SEPARATOR + SEPARATOR.join(str(i) for i in items) + SEPARATOR
    if isinstance(value, list | dict):
        raise CiviError(f"Invalid value for field {f.name}")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        # MySQL (strict mode) refuses it: "Out of range value for column"
        raise CiviError("DB Error: constraint violation")
    if f.data_type == BOOL:
        if isinstance(value, str):
            return int(value.lower() not in ("", "0", "false"))
        return int(bool(value))
    if f.data_type == INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value
    if f.data_type in (MONEY, FLOAT) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if f.data_type == DATE and isinstance(value, str) and not re.match(r"\d{4}-?\d{2}-?\d{2}", value):
        # PHP's strtotime() fails and CRM_Utils_Date makes it the epoch (5.77 stores 1970-01-01)
        if value.strip().lower() not in ("now", "today", "tomorrow", "yesterday"):
            return "1970-01-01"
    return value


# ---- get --------------------------------------------------------------------------------
def default_fields(ent: Entity, ctx: Ctx) -> list[Field]:
    return [f for f in ent.fields if f.type == "Field" and ctx.may_see_field(f)]


def mentions(where: Any, name: str) -> bool:
    """Does a where tree name this field anywhere (clauses may be PHP arrays as objects)?"""
    if isinstance(where, dict):
        where = list(where.values())
    if isinstance(where, list):
        if where and where[0] == name:
            return True
        return any(mentions(w, name) for w in where if isinstance(w, list | dict))
    return False


@dataclass
class Column:
    """One key of the answer's records: a field (with its option suffix) or an expression."""

    key: str
    sql: str
    field: Field | None
    suffix: str | None = None
    expr: sqlexpr.Expr | None = None
    wild: bool = False

    @property
    def data_type(self) -> str | None:
        if self.expr is None:
            return None
        node = self.expr.node
        if isinstance(node, sqlexpr.Func):
            return node.spec.data_type
        if isinstance(node, sqlexpr.Equation):
            return "Boolean" if node.comparison else "Float"
        return None

    def as_filter_field(self) -> Field:
        """The field a having clause on this column coerces its value for."""
        if self.field is not None and self.expr is None:
            return self.field
        return Field(self.key, self.data_type or (self.field.data_type if self.field else "String"), self.key)


def _plain(item: str) -> bool:
    return sqlexpr.is_plain_field(item)


def _select_items(select: list[Any], group_by: list[Any]) -> tuple[list[str], bool, bool]:
    """(items, row_count, aggregate): Api4SelectQuery's reading of ``select``: expressions
    parsed up front (an unknown function fails here), ``id`` selected first unless the query
    aggregates (grouped by anything but id, or an aggregate function in select)."""
    items = [s for s in select if isinstance(s, str)]
    row_count = "row_count" in items
    items = [s for s in items if s != "row_count"]
    aggregate = bool(group_by)
    for item in items:
        if not _plain(item) and "*" not in item.replace("(*)", "") and sqlexpr.parse(item).aggregate:
            aggregate = True
    if items and (not aggregate or group_by == ["id"]):
        items = ["id", *items]
    return list(dict.fromkeys(items)), row_count, aggregate


def _expand_select(ctx: Ctx, q: Query, items: list[str]) -> list[Column]:
    ent = ctx.entity
    cols: list[Column] = []
    seen: set[str] = set()

    def add(key: str, wild: bool = False) -> None:
        if key in seen:
            return
        try:
            res = q.resolve(key)
        except CiviError:
            return  # APIv4 drops unknown select fields without an error
        if not ctx.may_see_field(res.field) or res.field.type == "Filter":
            return  # Filter fields only filter
        seen.add(key)
        cols.append(Column(key, res.expr, res.field, res.suffix, wild=wild))

    def add_expr(item: str) -> None:
        expr = sqlexpr.parse(item)
        for name in sqlexpr.fields_of(expr.node):
            try:
                if not ctx.may_see_field(q.resolve(name).field):
                    return  # a field the user may not see drops the expression, silently
            except CiviError:
                return  # like an unknown select field: dropped without an error
        if expr.alias is not None and expr.alias != expr.text and expr.alias in ent.field_map():
            raise CiviError("Cannot use existing field name as alias")
        if expr.key in seen:
            return
        if isinstance(expr.node, sqlexpr.FieldRef):  # "gender_id:label AS g": a field renamed
            res = q.resolve(expr.node.name)
            seen.add(expr.key)
            cols.append(Column(expr.key, res.expr, res.field, res.suffix))
            return
        sql, f = q.expression(expr.node)
        seen.add(expr.key)
        cols.append(Column(expr.key, sql, f, None, expr))

    for item in items or ["*"]:
        if item == "*":
            for f in default_fields(ent, ctx):
                add(f.name, wild=True)
        elif item == "custom.*":
            for f in custom_fields(ent.name):
                add(f.name)
        elif item.endswith(".*") and _plain(item[:-2]):
            prefix = item[:-2]
            if prefix in CUSTOM_GROUPS:
                for f in custom_fields(ent.name):
                    if f.name.startswith(prefix + "."):
                        add(f.name)
            elif prefix in q.explicit:
                for f in default_fields(q.explicit[prefix].entity, ctx):
                    add(f"{prefix}.{f.name}")
            else:
                fk = ent.field_map().get(prefix)
                target = ENTITIES.get(fk.fk_entity or "") if fk else None
                for f in default_fields(target, ctx) if target else []:
                    add(f"{prefix}.{f.name}")
        elif "*" in item and _plain(item.replace("*", "x")):
            names = [f.name for f in (*default_fields(ent, ctx), *custom_fields(ent.name))]
            for name in fnmatch.filter(names, item):
                add(name)
        elif _plain(item):
            add(item)
        else:
            add_expr(item)
    return cols


def _expr_sql(q: Query, item: Any) -> str:
    """groupBy / orderBy items: a field path or an expression, as SQL."""
    if not isinstance(item, str):
        raise CiviError(f"Invalid field '{item}'")
    if _plain(item):
        return q.resolve(item).expr
    return q.expression(sqlexpr.parse(item, alias=False).node)[0]


def _order_sql(q: Query, spec: dict[str, Any], cols: list[Column]) -> list[str]:
    by_key = {c.key: c.sql for c in cols}
    out = []
    for name, direction in spec.items():
        d = str(direction).upper() if isinstance(direction, str) else str(direction)
        if d not in ("ASC", "DESC"):
            raise CiviError(f"Invalid sort direction. Cannot order by {name} {direction}")
        if name not in by_key and q.reads_hidden(name):
            continue  # like a clause on it: ignored, or the order would reveal it
        # a select key (alias, FN:field or field) orders by its own SQL
        out.append(f"{by_key[name] if name in by_key else _expr_sql(q, name)} {d}")
    return out


def format_value(col: Column, value: Any) -> Any:
    """A column's SQLite value as APIv4 returns it."""
    f = col.field
    dtype = col.data_type
    if col.expr is None:
        v = to_api(f, value) if f is not None else value
        if isinstance(v, list) and col.suffix in ("label", "name") and f is not None and f.options:
            # a serialized field: each stored key as its label/name
            by_text = {str(k): label for k, label in f.options.items()}
            return [by_text.get(str(k)) for k in v]
        if col.suffix in ("label", "name") and f is not None and f.options:
            v = (
                f.options.get(v, None)
                if col.suffix == "label"
                else (
                    str(f.options.get(v))
                    if v is not None and not isinstance(v, str) and v in f.options
                    else v
                )
            )
            if col.suffix == "name" and isinstance(value, str):
                v = value
        return v
    if dtype == "Array":
        node = col.expr.node
        if isinstance(node, sqlexpr.Func) and node.separator is not None:
            return None if value is None else str(value)
        if value is None:
            return None  # only NULLs concatenated: 5.77 answers null, not []
        parts = _mysql_order(node, str(value).split(GROUP_SEPARATOR))
        return [to_api(f, p) for p in parts] if f is not None else parts
    if value is None:
        return None
    if dtype is None:
        if isinstance(col.expr.node, sqlexpr.Func) and col.expr.node.name == "GROUP_FIRST":
            value = _mysql_order(col.expr.node, str(value).split(GROUP_SEPARATOR))[0]
        # no type and no field to take one from: MySQL's answer is text ("5" for GREATEST(1, 5))
        return to_api(f, value) if f is not None else str(value)
    if dtype == "Boolean":
        return bool(value)
    if dtype == "Integer":
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    if dtype == "Float":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        return int(number) if number.is_integer() and isinstance(value, int) else number
    return str(value)


def _mysql_order(node: Any, parts: list[str]) -> list[str]:
    """``GROUP_CONCAT(x ORDER BY x DESC)`` on an SQLite without ORDER BY in aggregates (before
    3.44): the parts sorted here, as MySQL's collation would (when the order is by the value)."""
    if sqlite3.sqlite_version_info >= (3, 44) or not isinstance(node, sqlexpr.Func):
        return parts
    if len(node.order_by) == 1 and len(node.args) == 1 and node.order_by[0][0] == node.args[0]:
        return sorted(parts, key=str.lower, reverse=str(node.order_by[0][1]).upper() == "DESC")
    return parts


def _fetch(ctx: Ctx, sql: str, params: list[Any]) -> list[Any]:
    try:
        return ctx.conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        # e.g. an aggregate inside WHERE, or an expression nested too deep: MySQL refuses
        # such a statement too, and CiviCRM reports its DB error
        raise CiviError("DB Error: syntax error") from None


def run_get(ctx: Ctx) -> list[Record]:
    p = ctx.params
    ent = ctx.entity
    q = Query(ent, hidden=lambda f: not ctx.may_see_field(f))
    for spec in p.get("join") or []:
        q.add_join(spec)
    group_by = list(p.get("groupBy") or [])
    items, row_count, aggregate = _select_items(list(p.get("select") or []), group_by)
    cols = _expand_select(ctx, q, items) if items or not row_count else []
    where = p.get("where") or []
    if isinstance(where, dict):
        where = list(where.values())
    limit = p.get("limit") or 0
    offset = p.get("offset") or 0
    if limit < 0 or offset < 0:
        raise CiviError("DB Error: syntax error")  # MySQL refuses "LIMIT -1"
    joins_sql = q.explicit_join_sql()
    conds = [q.where(where)]  # clauses on fields the caller may not see are ignored
    trash_hidden = ctx.check and "access deleted contacts" not in ctx.perms
    if ent.name == "Contact" and (trash_hidden or not mentions(where, "is_deleted")):
        # the trash is only for users with 'access deleted contacts' (5.77's contact ACL)
        conds.append(f'{quote(q.alias)}."is_deleted" = 0')
    conds += q.exclude_sql()
    group_sql = [_expr_sql(q, g) for g in group_by if not (isinstance(g, str) and q.reads_hidden(g))]
    # having names a select key, or repeats a select expression (CiviCRM maps it to its alias)
    having_keys = {c.expr.text: (c.sql, c.as_filter_field()) for c in cols if c.expr}
    having_keys.update({c.key: (c.sql, c.as_filter_field()) for c in cols})
    having_sql = q.having(list(p.get("having") or []), having_keys)
    order_spec = p.get("orderBy") or {}
    if isinstance(order_spec, list):
        order_spec = {}
    order = _order_sql(q, order_spec, cols)
    if not order and group_sql:
        order = list(group_sql)  # MariaDB returns groups in GROUP BY order
    elif not aggregate:
        if not order:
            order = [f"{quote(q.alias)}.{quote(c)}" for c in (ent.limited_scan_order if limit else ())]
        order.append(f'{quote(q.alias)}."id"')
    from_sql = f"FROM {ent.table} AS {quote(q.alias)} {joins_sql} {' '.join(q.joins.values())}"
    where_sql = " AND ".join(conds)
    tail = ""
    if group_sql:
        tail += f" GROUP BY {', '.join(group_sql)}"
    elif any(not _plain(k) and sqlexpr.parse(k).aggregate for k in order_spec if isinstance(k, str)):
        # An aggregate in orderBy alone: MariaDB aggregates every row into one (SQLite
        # refuses it without a GROUP BY); one constant group does the same.
        tail += " GROUP BY 'all'"
    if having_sql != "1":
        tail += f" HAVING {having_sql}"
    if ctx.empty:
        ctx.count_matched = 0 if row_count else None
        return []
    params = list(q.params)
    if row_count:
        inner = f"SELECT {', '.join(c.sql for c in cols) or '1'} {from_sql} WHERE {where_sql}"
        # identifiers come from the schema, values are bound (see query.py)
        if tail:
            sql = f"SELECT COUNT(*) FROM ({inner}{tail})"  # noqa: S608
        else:
            sql = f"SELECT COUNT(*) {from_sql} WHERE {where_sql}"
        ctx.count_matched = _fetch(ctx, sql, params)[0][0]
    if row_count and not cols:
        return []
    hidden = []
    # A row leaves out the fields of other contact types when selected by a wildcard, or, as
    # Api4's Contact get does, whenever contact_type itself is selected (any suffix).
    typed = any(
        c.expr is None and c.field is not None and c.field.name == "contact_type" and "." not in c.key
        for c in cols
    )
    if ent.name == "Contact" and (typed or any(c.wild for c in cols)) and not aggregate:
        hidden = [f'{quote(q.alias)}."contact_type"']
    exprs = [c.sql for c in cols] + hidden or ["1"]
    sql = f"SELECT {', '.join(exprs)} {from_sql} WHERE {where_sql}{tail}"
    if order:
        sql += f" ORDER BY {', '.join(order)}"
    if limit or offset:
        sql += " LIMIT ? OFFSET ?"
        params += [limit if limit else -1, offset]
    rows = _fetch(ctx, sql, params)
    out = []
    for row in rows:
        ctype = row[-1] if hidden else None
        rec: Record = {}
        for col, value in zip(cols, row, strict=False):
            f = col.field
            if (
                (col.wild or (typed and col.expr is None and "." not in col.key))
                and ctype
                and f is not None
                and f.contact_types
                and ctype not in f.contact_types
            ):
                continue
            rec[col.key] = format_value(col, value)
        out.append(rec)
    return out


# ---- writes -----------------------------------------------------------------------------
def _split_values(ent: Entity, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Caller values -> (stored fields, custom fields); readonly/unknown keys are ignored as
    the real API ignores them."""
    fields = ent.field_map()
    customs = {f.name: f for f in custom_fields(ent.name)}
    given: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            continue
        name, _, suffix = key.partition(":")
        if name in fields or name in customs:
            touch(ent.name, name)
        if name in fields:
            f = fields[name]
            if f.sql or name == "id" or (f.readonly and name not in ("created_date", "modified_date")):
                continue
            given[name] = to_db(f, value, suffix)
        elif name in customs:
            custom[name] = to_db(customs[name], value, suffix)
    return given, custom


def _store_custom(ctx: Ctx, row_id: int, custom: dict[str, Any]) -> None:
    by_group: dict[str, dict[str, Any]] = {}
    for name, value in custom.items():
        group, _, fname = name.partition(".")
        by_group.setdefault(group, {})[fname] = value
    for gname, vals in by_group.items():
        custom_group = CUSTOM_GROUPS[gname]
        cols = {f.name: f.column or f.name for f in custom_group.fields}
        names = [cols[k] for k in vals]
        exists = ctx.conn.execute(
            f"SELECT id FROM {custom_group.table} WHERE entity_id = ?",  # noqa: S608
            (row_id,),
        ).fetchone()
        if exists:
            sets = ", ".join(f"{quote(c)} = ?" for c in names)
            ctx.conn.execute(
                f"UPDATE {custom_group.table} SET {sets} WHERE entity_id = ?",  # noqa: S608
                [*vals.values(), row_id],
            )
        else:
            marks = ", ".join("?" for _ in names)
            collist = ", ".join(quote(c) for c in ["entity_id", *names])
            ctx.conn.execute(
                f"INSERT INTO {custom_group.table} ({collist}) VALUES (?, {marks})",  # noqa: S608
                [row_id, *vals.values()],
            )


def _write(ctx: Ctx, sql: str, params: list[Any]) -> sqlite3.Cursor:
    try:
        return ctx.conn.execute(sql, params)
    except sqlite3.IntegrityError as exc:
        text = str(exc)
        if "UNIQUE" in text:
            raise CiviError("DB Error: already exists") from None
        raise CiviError("DB Error: constraint violation") from None


def _stored(ent: Entity) -> list[Field]:
    return [f for f in ent.fields if not f.sql and not f.filter_sql]


def _format_custom(custom: dict[str, Any]) -> Record:
    fmap = {f.name: f for f in custom_fields_all()}
    return {k: to_api(fmap[k], v) for k, v in custom.items()}


def custom_fields_all() -> list[Field]:
    out: list[Field] = []
    for g in CUSTOM_GROUPS.values():
        out += custom_fields(g.extends)
    return out


def _required_if(entity: str, field: str, given: dict[str, Any]) -> bool:
    """Whether 5.77's ``required_if`` for a create (its getFields, spec577) holds."""
    from gateway.core.validate import evaluate_condition
    from gateway.sandbox.spec577 import SPEC_577

    condition = SPEC_577.get((entity, "create"), {}).get(field, {}).get("required_if")
    return isinstance(condition, str) and evaluate_condition(condition, given) is True


def create_one(ctx: Ctx, values: dict[str, Any]) -> Record:
    ent = ctx.entity
    given, custom = _split_values(ent, values)
    row: dict[str, Any] = {}
    missing = []
    for f in _stored(ent):
        if f.name == "id":
            continue
        if given.get(f.name) is not None:
            row[f.name] = given[f.name]
            continue
        default = f.default
        if default is NOW:
            default = ctx.now
        elif default is ACTOR:
            default = ctx.contact_id
            if default is None and f.required:
                missing.append(f.name)
                continue
        elif isinstance(default, bool):
            default = int(default)
        elif f.serialize and default is not None:
            default = to_db(f, default)
        if default is None and (f.required or _required_if(ent.name, f.name, given)):
            missing.append(f.name)
        row[f.name] = default
    if missing:
        raise CiviError(
            f"Mandatory values missing from Api4 {ent.name}::{ctx.action}: {', '.join(missing)}",
            v3_code="mandatory_missing",
            extra={"fields": missing},
        )
    before = dict(row)
    if ent.name == "Contact":
        contact_defaults(row, ctx.rng)
    for rule in ROW_RULES.get(ent.name, []):
        rule(row)
    if ent.name in PRIMARY_TABLES:
        _primary(ctx, row, creating=True)
    # Values the BAO sets are echoed back, except the greeting caches: CiviCRM fills those in
    # after the save, so create's answer lacks them (sample 1).
    derived = {
        k
        for k in row
        if row[k] != before.get(k) and not k.endswith("_display") and k not in ent.create_silent
    }
    names = [k for k in row]
    collist = ", ".join(quote(n) for n in names)
    marks = ", ".join("?" for _ in names)
    cur = _write(
        ctx,
        f"INSERT INTO {ent.table} ({collist}) VALUES ({marks})",  # noqa: S608
        [row[n] for n in names],
    )
    row_id = int(cur.lastrowid or 0)
    if custom:
        _store_custom(ctx, row_id, custom)
    if ent.name == "Contact" and row.get("contact_type") not in CONTACT_TYPES:
        return _odd_contact(ctx, row_id, row)
    out: Record = {"id": row_id}
    for f in _stored(ent):
        if f.name == "id":
            continue
        if f.name in ent.create_nulls:
            out[f.name] = None
            continue
        if f.name == "is_primary" and ent.name in PRIMARY_TABLES and row.get("contact_id") is None:
            continue  # no contact, no primary flag to report
        # the Address BAO marks coordinates it was given as not geocoded by hand
        geo = (
            ent.name == "Address"
            and f.name == "manual_geo_code"
            and {"geo_code_1", "geo_code_2"} & set(given)
        )
        if (f.name in given or f.echo or f.name in derived or geo) and row.get(f.name) is not None:
            if (
                ent.name == "Contact"
                and f.contact_types
                and row.get("contact_type") not in f.contact_types
                and f.name not in given
            ):
                continue
            out[f.name] = to_api(f, row[f.name])
            if ent.create_compact_dates and f.data_type == TS and isinstance(out[f.name], str):
                out[f.name] = re.sub(r"\D", "", out[f.name])  # the DAO's own format, as saved
    for name, raw in ent.create_raw_defaults:
        if name in out and name not in given:
            out[name] = raw
    out.update(_format_custom(custom))
    for key in values:
        # values that are no field come back as null (PHP's array_merge of the input)
        if (
            isinstance(key, str)
            and key.partition(":")[0] not in ent.field_map()
            and key not in custom
            and key not in ("id", "custom", "check_permissions")
        ):
            out[key] = None
    out["custom"] = None
    out["check_permissions"] = None
    out.update(dict.fromkeys(ent.write_trailer))
    return out


CONTACT_TYPES = ("Individual", "Organization", "Household")


def _odd_contact(ctx: Ctx, row_id: int, row: dict[str, Any]) -> Record:
    """CiviCRM 5.77 stores a contact of an unknown type (sample 29 of round 2) and answers
    a different, sparser record: names dropped, greetings "null", the raw timestamp."""
    ctx.conn.execute(
        "UPDATE civicrm_contact SET preferred_language = 'en_US', communication_style_id = 1 WHERE id = ?",
        (row_id,),
    )
    stamp = re.sub(r"\D", "", ctx.now)
    return {
        "id": row_id,
        "contact_type": row.get("contact_type"),
        "preferred_language": "en_US",
        "hash": row.get("hash"),
        "communication_style_id": 1,
        "email_greeting_custom": "null",
        "postal_greeting_custom": "null",
        "addressee_custom": "null",
        "modified_date": stamp,
        "custom": None,
        "check_permissions": None,
    }


def _primary(ctx: Ctx, row: dict[str, Any], creating: bool) -> None:
    from gateway.sandbox.rules import primary_flag

    primary_flag(ctx.conn, PRIMARY_TABLES[ctx.entity.name], row, creating)


def load_row(ctx: Ctx, row_id: int) -> dict[str, Any] | None:
    ent = ctx.entity
    names = [f.name for f in _stored(ent)]
    r = ctx.conn.execute(
        f"SELECT {', '.join(quote(n) for n in names)} FROM {ent.table} "  # noqa: S608
        "WHERE id = ?",
        (row_id,),
    ).fetchone()
    return dict(zip(names, r, strict=True)) if r else None


def update_one(ctx: Ctx, row_id: int, values: dict[str, Any]) -> Record | None:
    ent = ctx.entity
    current = load_row(ctx, row_id)
    if current is None:
        return None
    given, custom = _split_values(ent, values)
    row = {**current, **given}
    if "modified_date" in row and "modified_date" not in given:
        row["modified_date"] = ctx.now
    for rule in ROW_RULES.get(ent.name, []):
        rule(row)
    if ent.name in PRIMARY_TABLES and ("is_primary" in given or "contact_id" in given):
        _primary(ctx, row, creating=False)
    changed = [k for k in row if k != "id" and row[k] != current.get(k)]
    if changed:
        sets = ", ".join(f"{quote(k)} = ?" for k in changed)
        _write(
            ctx,
            f"UPDATE {ent.table} SET {sets} WHERE id = ?",  # noqa: S608
            [*(row[k] for k in changed), row_id],
        )
    if custom:
        _store_custom(ctx, row_id, custom)
    fmap = ent.field_map()
    out: Record = {"id": row_id}
    if ent.full_update_output:
        for f in _stored(ent):
            if f.name != "id" and row.get(f.name) is not None:
                out[f.name] = to_api(f, row[f.name])
    else:
        for name in given:
            out[name] = to_api(fmap[name], row.get(name))
    out.update(_format_custom(custom))
    out["custom"] = None
    out["check_permissions"] = None
    for key, value in ent.update_extra:
        out[key] = value
    out.update(dict.fromkeys(ent.write_trailer))
    return out


def matching_ids(ctx: Ctx, where: list[Any], batch: bool = False) -> list[int]:
    """Ids of the records ``where`` matches; ``batch``: honour the action's own orderBy,
    limit and offset (update and delete take them, like get)."""
    params: dict[str, Any] = {"select": ["id"], "where": where}
    if batch:
        params.update(
            {k: ctx.params[k] for k in ("orderBy", "limit", "offset") if ctx.params.get(k) is not None}
        )
    sub = Ctx(
        ctx.conn, ctx.entity, "get", params, False, ctx.contact_id, ctx.perms, ctx.now, ctx.rng, ctx.call
    )
    return [r["id"] for r in run_get(sub)]


def run_create(ctx: Ctx) -> list[Record]:
    values = dict(ctx.params.get("values") or {})
    if values.get("id") not in (None, "", 0):
        raise CiviError("Cannot pass id to Create action. Use Update action instead.")
    return [create_one(ctx, values)]


def run_update(ctx: Ctx) -> list[Record]:
    values = dict(ctx.params.get("values") or {})
    where = list(ctx.params.get("where") or [])
    if values.get("id") is not None:
        where.append(["id", "=", values.pop("id")])
    elif not where:
        raise CiviError('Parameter "where" is required unless primary keys are supplied in values.')
    ids = matching_ids(ctx, where, batch=True)
    if not ids and len(where) == 1 and isinstance(where[0], list) and where[0][:2] == ["id", "="]:
        # one id: CiviCRM writes that record directly, and the BAO cannot load it
        raise CiviError(f"Expected one {ctx.entity.name} but found 0")
    out = []
    for row_id in ids:
        rec = update_one(ctx, row_id, values)
        if rec is not None:
            out.append(rec)
    return out


def save_records(ctx: Ctx, records: list[Any], defaults: dict[str, Any], match: list[str]) -> list[Record]:
    out = []
    for rec in records:
        if isinstance(rec, list):
            rec = {str(i): v for i, v in enumerate(rec)}  # a PHP array either way
        if not isinstance(rec, dict):
            raise CiviError('Parameter "records" is not of the correct type. Expecting array.')
        vals = {**defaults, **rec}
        row_id = vals.get("id")
        if row_id is None and match and all(m in vals for m in match):
            found = matching_ids(
                ctx, [[m, "=", vals[m]] if vals[m] is not None else [m, "IS NULL"] for m in match]
            )
            if len(found) == 1:
                row_id = found[0]
        if row_id is not None:
            vals.pop("id", None)
            updated = update_one(ctx, record_id(row_id), vals)
            if updated is not None:
                out.append(updated)
        else:
            out.append(create_one(ctx, vals))
    return out


def record_id(value: Any) -> int:
    """A record's ``id`` as given by the caller: a whole number, or CiviCRM's refusal."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise CiviError("Invalid value for field id")
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise CiviError("Invalid value for field id")
    return int(text)


def run_save(ctx: Ctx) -> list[Record]:
    p = ctx.params
    return save_records(
        ctx, list(p.get("records") or []), dict(p.get("defaults") or {}), list(p.get("match") or [])
    )


def delete_ids(ctx: Ctx, ids: list[int], use_trash: bool) -> None:
    ent = ctx.entity
    for row_id in ids:
        if ent.name == "Contact" and use_trash:
            deleted = ctx.conn.execute(
                "SELECT is_deleted FROM civicrm_contact WHERE id = ?", (row_id,)
            ).fetchone()
            if deleted and not deleted[0]:
                ctx.conn.execute(
                    "UPDATE civicrm_contact SET is_deleted = 1, modified_date = ? WHERE id = ?",
                    (ctx.now, row_id),
                )
                continue
        owner = None
        if ent.name in PRIMARY_TABLES:
            owner = ctx.conn.execute(
                f"SELECT contact_id FROM {ent.table} WHERE id = ? AND is_primary = 1",  # noqa: S608
                (row_id,),
            ).fetchone()
        _write(ctx, f"DELETE FROM {ent.table} WHERE id = ?", [row_id])  # noqa: S608
        if owner and owner[0] is not None:
            # the BAO gives the contact another primary (its oldest) when the primary goes
            ctx.conn.execute(
                f"UPDATE {ent.table} SET is_primary = 1 WHERE id = (SELECT MIN(id) FROM {ent.table} "  # noqa: S608
                "WHERE contact_id = ?) AND NOT EXISTS (SELECT 1 FROM "
                f"{ent.table} WHERE contact_id = ? AND is_primary = 1)",
                (owner[0], owner[0]),
            )


def run_delete(ctx: Ctx) -> list[Record]:
    where = ctx.params.get("where")
    if not where:
        raise CiviError('Parameter "where" is required.')
    ids = matching_ids(ctx, list(where), batch=True)
    delete_ids(ctx, ids, bool(ctx.params.get("useTrash", True)))
    if ctx.entity.name != "Contact":
        # DAO deletes answer the id as the DAO holds it: a string (Contact's BAO: an int)
        return [{"id": str(i)} for i in ids]
    return [{"id": i} for i in ids]


def run_replace(ctx: Ctx) -> list[Record]:
    p = ctx.params
    where = p.get("where")
    if not where:
        raise CiviError('Parameter "where" is required.')
    if not p.get("records"):
        raise CiviError('Parameter "records" is required.')
    existing = matching_ids(ctx, list(where))
    defaults = dict(p.get("defaults") or {})
    for clause in where:
        if (
            isinstance(clause, list)
            and len(clause) == 3
            and clause[1] == "="
            and isinstance(clause[0], str)
            and "." not in clause[0]
        ):
            defaults.setdefault(clause[0], clause[2])
    saved = save_records(ctx, list(p.get("records") or []), defaults, list(p.get("match") or []))
    keep = {r["id"] for r in saved}
    delete_ids(ctx, [i for i in existing if i not in keep], use_trash=False)
    return saved


def run_autocomplete(ctx: Ctx) -> list[Record]:
    ent = ctx.entity
    label = ent.label_field or "id"
    text = str(ctx.params.get("input") or "")
    page = int(ctx.params.get("page") or 1)
    where = [[label, "LIKE", f"%{text}%"]] if text else []
    key = "sort_name" if ent.name == "Contact" else label
    sub = Ctx(
        ctx.conn,
        ent,
        "get",
        {
            "select": ["id", label],
            "where": where,
            "orderBy": {key: "ASC"},
            "limit": 10,
            "offset": (page - 1) * 10,
        },
        ctx.check,
        ctx.contact_id,
        ctx.perms,
        ctx.now,
        ctx.rng,
        ctx.call,
        ctx.empty,
    )
    return [{"id": r["id"], "label": r.get(label), "icon": ent.icon, "description": []} for r in run_get(sub)]


def run_check_access(ctx: Ctx) -> list[Record]:
    action = ctx.params.get("action") or "get"
    from gateway.sandbox import meta

    if str(action).lower() not in {a.lower() for a in meta.entity_actions(ctx.entity.name)}:
        raise CiviError(f"Api {ctx.entity.name} {action} version 4 does not exist.", v3_code="not-found")
    allowed = not ctx.check or (
        ctx.contact_id is not None
        and (action in ("get", "autocomplete") or ctx.entity.write_perm in ctx.perms)
    )
    return [{"access": bool(allowed)}]


def run_revert(ctx: Ctx) -> list[Record]:
    """ManagedEntity ``revert``: puts records an extension packaged back as shipped. Nothing in
    the sandbox is packaged (has_base is false), so no record is reverted."""
    if not ctx.params.get("where"):
        raise CiviError('Parameter "where" is required.')
    matching_ids(ctx, list(ctx.params["where"]), batch=True)
    return []


def run_refresh(ctx: Ctx) -> list[Record]:
    """Group ``refresh``: reloads smart groups' contact caches, answering the groups it
    loaded. The sandbox has no smart groups (no saved searches), so none is."""
    if not ctx.params.get("where"):
        raise CiviError('Parameter "where" is required.')
    matching_ids(ctx, list(ctx.params["where"]), batch=True)
    return []


def run_export(ctx: Ctx) -> list[Record]:
    """ManagedEntity ``export``: one record as a managed-entity declaration (its name-matched
    values; defaults, ids and the record's bookkeeping left out)."""
    ent = ctx.entity
    row_id: Any = ctx.params.get("id")
    if row_id in (None, ""):
        raise CiviError('Parameter "id" is required.')
    row = load_row(ctx, int(row_id))
    if row is None:
        return []
    values: Record = {}
    for f in _stored(ent):
        value = row.get(f.name)
        if f.name == "id" or f.readonly or f.default is ACTOR or f.default is NOW or value is None:
            continue
        api = to_api(f, value)
        if api == f.default or api == "":
            continue
        values[f.name] = api
    label = row.get("name") or row_id
    return [
        {
            "name": f"{ent.name}_{label}",
            "entity": ent.name,
            "cleanup": ctx.params.get("cleanup") or "unused",
            "update": ctx.params.get("update") or "unmodified",
            "params": {"version": 4, "values": values, "match": ctx.params.get("match") or ["name"]},
        }
    ]


def run_get_coordinates(ctx: Ctx) -> list[Record]:
    """Address ``getCoordinates``: geocodes a string with the site's geocoding provider; the
    sandbox has none, as a fresh site has none."""
    if not ctx.params.get("address"):
        raise CiviError('Parameter "address" is required.')
    raise CiviError("No valid geocoding provider enabled")


ACTIONS: dict[str, Callable[[Ctx], list[Record]]] = {
    "getCoordinates": run_get_coordinates,
    "revert": run_revert,
    "refresh": run_refresh,
    "export": run_export,
    "get": run_get,
    "create": run_create,
    "update": run_update,
    "save": run_save,
    "delete": run_delete,
    "replace": run_replace,
    "autocomplete": run_autocomplete,
    "checkAccess": run_check_access,
}
