"""Compile APIv4 ``select``/``where``/``orderBy``/``join`` into SQLite SQL.

Values are always bound parameters; identifiers are only ever taken from the schema (an
unknown name raises ``Invalid field``), so nothing a caller sends is formatted into SQL.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.sandbox import sqlexpr
from gateway.sandbox.errors import CiviError
from gateway.sandbox.schema import BOOL, CUSTOM_GROUPS, ENTITIES, FLOAT, INT, MONEY, Entity, Field
from gateway.sandbox.sqlexpr import Equation, Expr, FieldRef, Func, Null, Number, String, Wild
from gateway.sandbox.touch import touch

COMPARISON = ("=", "!=", "<>", ">", ">=", "<", "<=")
OPERATORS = (
    *COMPARISON,
    "IN",
    "NOT IN",
    "LIKE",
    "NOT LIKE",
    "IS NULL",
    "IS NOT NULL",
    "BETWEEN",
    "NOT BETWEEN",
    "CONTAINS",
    "NOT CONTAINS",
    "IS EMPTY",
    "IS NOT EMPTY",
    "REGEXP",
    "NOT REGEXP",
    "REGEXP BINARY",
    "NOT REGEXP BINARY",
)
SUFFIXES = ("label", "name", "id", "value")
NUMERIC = (INT, BOOL, MONEY, FLOAT)
_JOIN_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\s+AS\s+([A-Za-z_][A-Za-z0-9_]*))?$")


class PhpFatal(CiviError):
    """A PHP error rather than an API exception: REST answers an empty HTML 500 page."""


def php_type(value: Any) -> str:
    return {str: "string", int: "int", float: "float", bool: "bool", dict: "array"}.get(type(value), "null")


def _clauses(clauses: Any) -> list[Any]:
    """A where/having list as PHP iterates it (a JSON object contributes its values)."""
    if isinstance(clauses, dict):
        return list(clauses.values())
    if isinstance(clauses, list):
        return clauses
    raise CiviError('Parameter "where" is not of the correct type. Expecting array.')


def invalid_field(name: str) -> CiviError:
    return CiviError(f"Invalid field '{name}'")


def quote(ident: str) -> str:
    """Quote an identifier that came from the schema (never from the caller)."""
    return '"' + ident.replace('"', '""') + '"'


@dataclass
class Resolved:
    """A field path resolved to an SQL expression."""

    expr: str
    field: Field
    suffix: str | None = None


@dataclass
class ExplicitJoin:
    entity: Entity
    alias: str
    side: str
    conditions: list[Any]


@dataclass
class Query:
    """SQL under construction for one entity; ``joins`` are added as fields need them."""

    entity: Entity
    alias: str = "a"
    joins: dict[str, str] = field(default_factory=dict)
    explicit: dict[str, ExplicitJoin] = field(default_factory=dict)
    params: list[Any] = field(default_factory=list)
    # fields the caller may not see: clauses and sorts on them are ignored, as CiviCRM's
    # field permissions ignore them (api_key for a user without key permissions)
    hidden: Callable[[Field], bool] | None = None

    # ---- field resolution -------------------------------------------------------------
    def resolve(self, path: str) -> Resolved:
        if not isinstance(path, str) or not path:
            raise invalid_field(str(path))
        name, _, suffix = path.partition(":")
        if suffix and suffix not in SUFFIXES:
            raise invalid_field(path)
        res = self._resolve_in(self.entity, self.alias, name, path, depth=0)
        if suffix:
            table = FK_OPTIONS.get(res.field.fk_entity or "")
            if not res.field.options and table and suffix in ("label", "name"):
                # a pseudoconstant from a table (GroupContact.group_id:label, EntityTag.tag_id:label)
                column = table[1] if suffix == "label" else "name"
                res.expr = f"(SELECT o.{quote(column)} FROM {table[0]} o WHERE o.id = {res.expr})"  # noqa: S608
                return res
            if not res.field.options:
                raise invalid_field(path)
            res.suffix = suffix
        return res

    def _resolve_in(self, ent: Entity, alias: str, name: str, full: str, depth: int) -> Resolved:
        fields = ent.field_map()
        if name in fields:
            f = fields[name]
            touch(ent.name, name)
            if f.sql:
                return Resolved(f.sql.format(a=quote(alias)), f)
            return Resolved(f"{quote(alias)}.{quote(f.name)}", f)
        head, dot, rest = name.partition(".")
        if not dot:
            raise invalid_field(full)
        if depth == 0 and head in self.explicit:
            j = self.explicit[head]
            return self._resolve_in(j.entity, head, rest, full, depth + 1)
        group = CUSTOM_GROUPS.get(head)
        if group and group.extends == ent.name:
            for f in group.fields:
                if f.name == rest:
                    touch(ent.name, f"{group.name}.{f.name}")
                    jalias = f"{alias}__{group.name}"
                    self.joins.setdefault(
                        jalias,
                        f"LEFT JOIN {group.table} AS {quote(jalias)} "
                        f"ON {quote(jalias)}.entity_id = {quote(alias)}.id",
                    )
                    return Resolved(
                        f"{quote(jalias)}.{quote(f.column or f.name)}",
                        Field(**{**f.__dict__, "name": f"{group.name}.{f.name}"}),
                    )
            raise invalid_field(full)
        fk = fields.get(head)
        if fk is None or fk.fk_entity not in ENTITIES or depth >= 2:
            raise invalid_field(full)
        target = ENTITIES[fk.fk_entity]
        touch(ent.name, head)
        jalias = f"{alias}__{head}"
        on = fk.sql.format(a=quote(alias)) if fk.sql else f"{quote(alias)}.{quote(fk.name)}"
        self.joins.setdefault(
            jalias, f"LEFT JOIN {target.table} AS {quote(jalias)} ON {quote(jalias)}.id = {on}"
        )
        return self._resolve_in(target, jalias, rest, full, depth + 1)

    # ---- SQL expressions ----------------------------------------------------------------
    def expression(self, node: sqlexpr.Node | str) -> tuple[str, Field | None]:
        """SQLite SQL for a parsed expression, and the field whose type its value has (the
        first field it reads). Literals are inlined, never bound, so the SQL can sit in any
        clause without disturbing the order of bound parameters."""
        if isinstance(node, FieldRef):
            res = self.resolve(node.name)
            return res.expr, res.field
        if isinstance(node, Number):
            return repr(node.value), None
        if isinstance(node, String):
            return sql_literal(node.value), None
        if isinstance(node, Null):
            return "NULL", None
        if isinstance(node, Wild):
            return "*", None
        if isinstance(node, Equation):
            parts = []
            first: Field | None = None
            for item in node.items:
                if isinstance(item, str):
                    parts.append(_EQUATION_OPS.get(item, item))
                    continue
                sql, f = self.expression(item)
                first = first or f
                parts.append(f"COALESCE({sql}, 0)" if isinstance(item, FieldRef) else sql)
            return "(" + " ".join(parts) + ")", first
        assert isinstance(node, Func)
        compiled = [self.expression(a) for a in node.args]
        args = [sql for sql, _ in compiled]
        first = next((f for _, f in compiled if f is not None), None)
        return _render_function(node, args, self), first

    def select_expr(self, expr: Expr) -> tuple[str, Field | None]:
        return self.expression(expr.node)

    # ---- explicit joins ---------------------------------------------------------------
    def add_join(self, spec: Any) -> None:
        """``["Email AS email", "LEFT", ["id", "=", "email.contact_id"], ...]``."""
        if isinstance(spec, dict):
            spec = list(spec.values())  # a PHP array either way
        if not isinstance(spec, list) or len(spec) < 2 or not isinstance(spec[0], str):
            raise CiviError("Invalid join parameter")
        m = _JOIN_RE.match(spec[0].strip())
        if not m or m.group(1) not in ENTITIES:
            raise CiviError(
                f"Invalid join entity: {spec[0]}" if not m else f"API entity {m.group(1)} not found"
            )
        ent = ENTITIES[m.group(1)]
        alias = m.group(2) or m.group(1).lower()
        if alias == self.alias:
            raise CiviError(f'Illegal join alias: "{alias}"')  # the main table's own alias
        side = spec[1] if isinstance(spec[1], str) else ("INNER" if spec[1] else "LEFT")
        side = side.upper()
        if side not in ("LEFT", "INNER", "EXCLUDE"):
            raise CiviError(f"Invalid join type: {side}")
        conds = [
            list(c.values()) if isinstance(c, dict) else c for c in spec[2:] if isinstance(c, list | dict)
        ]
        self.explicit[alias] = ExplicitJoin(ent, alias, side, conds)

    def explicit_join_sql(self) -> str:
        parts = []
        for alias, j in self.explicit.items():
            ons = [self._on_clause(c) for c in j.conditions] or ["1"]
            kind = "INNER JOIN" if j.side == "INNER" else "LEFT JOIN"
            parts.append(f"{kind} {j.entity.table} AS {quote(alias)} ON {' AND '.join(ons)}")
        return " ".join(parts)

    def _on_clause(self, cond: list[Any]) -> str:
        # Join conditions compare two fields: ["id", "=", "email.contact_id"]
        if len(cond) == 3 and isinstance(cond[2], str) and cond[1] in COMPARISON:
            if isinstance(cond[0], str) and self.reads_hidden(cond[0]):
                return "1"
            left = self.resolve(cond[0]).expr
            literal = cond[2]
            if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
                # a quoted string is a value: ["et.entity_table", "=", "'civicrm_contact'"]
                self.params.append(literal[1:-1])
                return f"{left} {'!=' if cond[1] == '<>' else cond[1]} ?"
            try:
                right_res = self.resolve(cond[2])
                if self.hidden is not None and self.hidden(right_res.field):
                    return "1"
                right = right_res.expr
            except CiviError:
                self.params.append(cond[2])
                right = "?"
            return f"{left} {'!=' if cond[1] == '<>' else cond[1]} {right}"
        return self.where([cond])

    def exclude_sql(self) -> list[str]:
        return [f"{quote(a)}.id IS NULL" for a, j in self.explicit.items() if j.side == "EXCLUDE"]

    # ---- where ------------------------------------------------------------------------
    def where(self, clauses: list[Any], glue: str = "AND") -> str:
        parts = [self._clause(c) for c in _clauses(clauses)]
        if not parts:
            return "1"
        return "(" + f" {glue} ".join(parts) + ")"

    def having(self, clauses: list[Any], columns: dict[str, tuple[str, Field]]) -> str:
        """HAVING: every expression must be a key of the select (an alias, ``FN:field`` or
        a selected field)."""
        self._having = columns
        try:
            return self.where(clauses)
        finally:
            self._having = None

    _having: dict[str, tuple[str, Field]] | None = None

    def _clause(self, clause: Any) -> str:
        if isinstance(clause, dict):
            clause = list(clause.values())  # a PHP array either way
        if not isinstance(clause, list):
            # PHP iterates the clause's characters as if it were an array: a TypeError
            raise PhpFatal(
                "Api4SelectQuery::treeWalkClauses(): Argument #1 ($clause) must "
                f"be of type array, {php_type(clause)} given"
            )
        if not clause or not isinstance(clause[0], str):
            raise CiviError("Invalid where clause")
        head = clause[0]
        if head in ("OR", "AND", "NOT"):
            sub = clause[1] if len(clause) > 1 else []
            if isinstance(sub, dict):
                sub = list(sub.values())
            if not isinstance(sub, list):
                raise CiviError("Invalid where clause")
            inner = self.where(sub, "OR" if head == "OR" else "AND")
            return f"(NOT {inner})" if head == "NOT" else inner
        op = clause[1] if len(clause) > 1 else None
        if not isinstance(op, str) or op.upper() not in OPERATORS:
            raise CiviError("Illegal operator")
        op = op.upper()
        res = self._clause_subject(head)
        value = clause[2] if len(clause) > 2 else None
        if self.reads_hidden(head):
            return "1"
        if len(clause) > 3 and clause[3] is True and isinstance(value, str):
            # 4th element true: the value is another field or expression, not a literal
            if self.reads_hidden(value):
                return "1"
            other = self._clause_subject(value).expr
            return f"{res.expr} {'!=' if op == '<>' else op} {other}"
        if res.field.filter_sql == "proximity":
            return self._proximity(value)
        if res.field.filter_sql:
            # a Filter field (Contact.groups): the row matches when one of its values does
            negated = op in ("NOT IN", "!=", "<>")
            member = Field("value", "Integer", res.field.title)
            cond = self._compare(
                Resolved('m."value"', member), {"NOT IN": "IN", "!=": "=", "<>": "="}.get(op, op), value
            )
            test = res.field.filter_sql.format(a=quote(self.alias), cond=cond)
            return f"(NOT {test})" if negated else test
        return self._compare(res, op, value)

    def _proximity(self, value: Any) -> str:
        """Address ``proximity`` (AddressGetSpecProvider::getProximitySql): within ``distance``
        km (or miles) of geo_code_1/geo_code_2; an address string needs a geocoder."""
        if not isinstance(value, dict):
            value = {}
        unit = 1609.344 if value.get("distance_unit") == "miles" else 1000.0
        try:
            distance = float(value.get("distance") or 0) * unit
        except (TypeError, ValueError):
            distance = 0.0
        if "geo_code_1" not in value or "geo_code_2" not in value:
            if not value.get("address"):
                raise CiviError('Parameter "address" is required.')
            raise CiviError("No valid geocoding provider enabled")
        try:
            lat, lng = float(value["geo_code_1"]), float(value["geo_code_2"])
        except (TypeError, ValueError):
            return "(0)"
        a = quote(self.alias)
        self.params.extend([lat, lng, distance])
        return f'(EARTH_DISTANCE({a}."geo_code_1", {a}."geo_code_2", ?, ?) <= ?)'

    def reads_hidden(self, text: str) -> bool:
        """Does this field path or expression read a field the caller may not see?"""
        if self.hidden is None or (self._having is not None and text in self._having):
            return False
        names = (
            [text]
            if sqlexpr.is_plain_field(text)
            else sqlexpr.fields_of(sqlexpr.parse(text, alias=False).node)
        )
        return any(self.hidden(self.resolve(n).field) for n in names)

    def _clause_subject(self, head: str) -> Resolved:
        """What a clause compares: a field, or (5.77) any SQL expression; in HAVING, a key
        of the select."""
        if self._having is not None:
            if head in self._having:
                sql, f = self._having[head]
                return Resolved(sql, f)
            raise CiviError(
                f"Invalid expression in HAVING clause: '{head}'. Must use a value from SELECT clause."
            )
        if sqlexpr.is_plain_field(head):
            return self.resolve(head)
        sql, found = self.expression(sqlexpr.parse(head, alias=False).node)
        return Resolved(sql, Field(head, found.data_type if found else "String", head))

    def _bind(self, res: Resolved, value: Any) -> str:
        self.params.append(sql_scalar(res.field.name, coerce_filter_value(res, value)))
        return "?"

    def _compare(self, res: Resolved, op: str, value: Any) -> str:
        e = res.expr
        if op in COMPARISON:
            if isinstance(value, list | dict):
                raise CiviError(f"Operator {op} expects a scalar value")
            return f"{e} {'!=' if op == '<>' else op} {self._bind(res, value)}"
        if op in ("IN", "NOT IN"):
            if not isinstance(value, list):
                value = [value] if value is not None else []
            if not value:
                return "0" if op == "IN" else "1"
            marks = ", ".join(self._bind(res, v) for v in value)
            return f"{e} {op} ({marks})"
        if op in ("LIKE", "NOT LIKE"):
            return f"{e} {op} {self._bind(res, value)} ESCAPE '\\'"
        if op in ("IS NULL", "IS NOT NULL"):
            return f"{e} {op}"
        if op in ("BETWEEN", "NOT BETWEEN"):
            if not isinstance(value, list) or len(value) != 2:
                raise CiviError(f"Operator {op} expects an array of 2 values")
            return f"{e} {op} {self._bind(res, value[0])} AND {self._bind(res, value[1])}"
        if op in ("CONTAINS", "NOT CONTAINS"):
            values = value if isinstance(value, list) else [value]
            likes = []
            for v in values:
                self.params.append("%" + escape_like(str(v)) + "%")
                likes.append(f"{e} LIKE ? ESCAPE '\\'")
            inner = "(" + " AND ".join(likes or ["1"]) + ")"
            return inner if op == "CONTAINS" else f"(NOT {inner} OR {e} IS NULL)"
        if op in ("IS EMPTY", "IS NOT EMPTY"):
            empty = 0 if res.field.data_type in NUMERIC else ""
            self.params.append(empty)
            inner = f"({e} IS NULL OR {e} = ?)"
            return inner if op == "IS EMPTY" else f"(NOT {inner})"
        # REGEXP family
        neg = op.startswith("NOT ")
        fn = "REGEXP_BINARY" if op.endswith("BINARY") else "REGEXP"
        try:
            re.compile(str(value))
        except (re.error, RecursionError, OverflowError):
            # MySQL refuses a malformed pattern at query time; CiviCRM reports its DB error.
            raise CiviError("DB Error: unknown error") from None
        self.params.append(str(value))
        inner = f"{fn}(?, {e})"
        return f"(NOT COALESCE({inner}, 0))" if neg else inner

    # ---- orderBy ----------------------------------------------------------------------
    def order_by(self, spec: dict[str, Any], select_aliases: dict[str, str]) -> list[str]:
        out = []
        for name, direction in spec.items():
            d = str(direction).upper()
            if d not in ("ASC", "DESC"):
                raise CiviError(f"Invalid sort direction. Cannot order by {name} {direction}")
            if name in select_aliases:
                out.append(f"{select_aliases[name]} {d}")
            else:
                out.append(f"{self.resolve(name).expr} {d}")
        return out

    def join_sql(self) -> str:
        return " ".join([self.explicit_join_sql(), *self.joins.values()]).strip()


_EQUATION_OPS = {"<=>": "IS", "/": "* 1.0 /"}


def sql_literal(text: str) -> str:
    """A string as an SQLite literal (quotes doubled; SQLite has no backslash escapes)."""
    if "\x00" in text:
        raise CiviError("DB Error: syntax error")
    return "'" + text.replace("'", "''") + "'"


_SIMPLE = {
    "ABS": "ABS",
    "IFNULL": "IFNULL",
    "NULLIF": "NULLIF",
    "REPLACE": "REPLACE",
    "ROUND": "ROUND",
    "LOWER": "PHP_LOWER",
    "UPPER": "PHP_UPPER",
    "DATE": "date",
    "TIME": "time",
    "SUBSTRING": "substr",
    "DAYSTOANNIV": "DAYSTOANNIV",
    "NEXTANNIV": "NEXTANNIV",
    "CONCAT_WS": "CONCAT_WS",
    "RAND": "RAND",
}
# entities whose records are the options of a foreign key to them: table, label column
FK_OPTIONS = {"Group": ("civicrm_group", "title"), "Tag": ("civicrm_tag", "label")}
GROUP_SEPARATOR = "\x01"  # GROUP_CONCAT without SEPARATOR: CiviCRM returns a list


def _render_function(fn: Func, args: list[str], q: Query) -> str:
    """One of CiviCRM's SQL functions as SQLite computes it (MySQL semantics kept where the
    two differ: NULL in CONCAT, float division, 1-based DAYOFWEEK, ...)."""
    name = fn.name
    distinct = "DISTINCT " if fn.distinct else ""
    if name in _SIMPLE:
        return f"{_SIMPLE[name]}({', '.join(args)})"
    if name in ("COUNT", "SUM", "AVG", "MAX", "MIN"):
        return f"{name}({distinct}{args[0]})"
    if name == "BINARY":
        return args[0]
    if name == "COALESCE":
        return f"COALESCE({', '.join(args)}, NULL)"
    if name == "CONCAT":
        return "(" + " || ".join(f"CAST({a} AS TEXT)" for a in args) + ")"
    if name in ("GREATEST", "LEAST"):
        if len(args) == 1:
            return args[0]
        return f"{'MAX' if name == 'GREATEST' else 'MIN'}({', '.join(args)})"
    if name == "CURDATE":
        return "date('now', 'localtime')"
    if name == "NOW":
        return "datetime('now', 'localtime')"
    if name == "DATEDIFF":
        return f"CAST(julianday(date({args[0]})) - julianday(date({args[1]})) AS INTEGER)"
    if name == "DAYOFWEEK":
        return f"(CAST(strftime('%w', {args[0]}) AS INTEGER) + 1)"
    if name == "MONTH":
        return f"CAST(strftime('%m', {args[0]}) AS INTEGER)"
    if name == "YEAR":
        return f"CAST(strftime('%Y', {args[0]}) AS INTEGER)"
    if name == "QUARTER":
        return f"((CAST(strftime('%m', {args[0]}) AS INTEGER) + 2) / 3)"
    if name == "EXTRACT":
        return f"EXTRACT_UNIT({sql_literal(fn.unit or '')}, {args[0]})"
    if name == "IF":
        return f"(CASE WHEN {args[0]} THEN {args[1]} ELSE {args[2]} END)"
    if name == "ISNULL":
        return f"({args[0]} IS NULL)"
    if name == "LEFT":
        return f"substr({args[0]}, 1, {args[1]})"
    if name == "RIGHT":
        return f"(CASE WHEN {args[1]} > 0 THEN substr({args[0]}, -({args[1]})) ELSE '' END)"
    if name in ("GROUP_CONCAT", "GROUP_FIRST"):
        sep = GROUP_SEPARATOR if fn.separator is None or name == "GROUP_FIRST" else fn.separator
        order = ""
        if fn.order_by and sqlite3.sqlite_version_info >= (3, 44):  # ORDER BY in aggregates
            order = " ORDER BY " + ", ".join(f"{q.expression(n)[0]} {d}" for n, d in fn.order_by)
        value = args[0] if len(args) == 1 else "(" + " || ".join(f"CAST({a} AS TEXT)" for a in args) + ")"
        if distinct:
            # SQLite's DISTINCT aggregate takes one argument and the default separator
            return f"REPLACE(group_concat(DISTINCT {value}), ',', {sql_literal(sep)})"
        return f"group_concat({value}, {sql_literal(sep)}{order})"
    raise CiviError(f"Unable to parse sql expression: {name}")


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def coerce_filter_value(res: Resolved, value: Any) -> Any:
    """Turn a filter value into what the column stores (labels to keys, bools to 0/1)."""
    f = res.field
    if res.suffix in ("label", "name") and f.options:
        for key, label in f.options.items():
            if label == value or (res.suffix == "name" and str(key) == str(value)):
                return key
        return value
    if isinstance(value, bool):
        return int(value)
    if f.data_type in (INT, BOOL) and isinstance(value, str):
        v = value.strip()
        if re.fullmatch(r"-?\d+", v):
            return int(v)
        if f.data_type == BOOL and v.lower() in ("true", "false"):
            return int(v.lower() == "true")
    if f.data_type in (MONEY, FLOAT) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# SQLite's INTEGER range; MySQL compares larger numbers as DECIMAL/DOUBLE.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def sql_scalar(name: str, value: Any) -> Any:
    """A filter value SQLite can bind, or CiviCRM's refusal of a non-scalar one."""
    if isinstance(value, list | dict):
        raise CiviError(f"Invalid value for field {name}: expected a scalar")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        return float(value)
    return value
