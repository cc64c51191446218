"""Compile APIv4 ``select``/``where``/``orderBy``/``join`` into SQLite SQL.

Values are always bound parameters; identifiers are only ever taken from the schema (an
unknown name raises ``Invalid field``), so nothing a caller sends is formatted into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import CiviError
from .schema import BOOL, CUSTOM_GROUPS, ENTITIES, FLOAT, INT, MONEY, Entity, Field

COMPARISON = ("=", "!=", "<>", ">", ">=", "<", "<=")
OPERATORS = (*COMPARISON, "IN", "NOT IN", "LIKE", "NOT LIKE", "IS NULL", "IS NOT NULL",
             "BETWEEN", "NOT BETWEEN", "CONTAINS", "NOT CONTAINS", "IS EMPTY", "IS NOT EMPTY",
             "REGEXP", "NOT REGEXP", "REGEXP BINARY", "NOT REGEXP BINARY")
SUFFIXES = ("label", "name", "id", "value")
NUMERIC = (INT, BOOL, MONEY, FLOAT)
_JOIN_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\s+AS\s+([A-Za-z_][A-Za-z0-9_]*))?$")


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

    # ---- field resolution -------------------------------------------------------------
    def resolve(self, path: str) -> Resolved:
        if not isinstance(path, str) or not path:
            raise invalid_field(str(path))
        name, _, suffix = path.partition(":")
        if suffix and suffix not in SUFFIXES:
            raise invalid_field(path)
        res = self._resolve_in(self.entity, self.alias, name, path, depth=0)
        if suffix:
            if not res.field.options:
                raise invalid_field(path)
            res.suffix = suffix
        return res

    def _resolve_in(self, ent: Entity, alias: str, name: str, full: str,
                    depth: int) -> Resolved:
        fields = ent.field_map()
        if name in fields:
            f = fields[name]
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
                    jalias = f"{alias}__{group.name}"
                    self.joins.setdefault(
                        jalias, f"LEFT JOIN {group.table} AS {quote(jalias)} "
                                f"ON {quote(jalias)}.entity_id = {quote(alias)}.id")
                    return Resolved(f"{quote(jalias)}.{quote(f.column or f.name)}",
                                    Field(**{**f.__dict__, "name": f"{group.name}.{f.name}"}))
            raise invalid_field(full)
        fk = fields.get(head)
        if fk is None or fk.fk_entity not in ENTITIES or depth >= 2:
            raise invalid_field(full)
        target = ENTITIES[fk.fk_entity]
        jalias = f"{alias}__{head}"
        on = fk.sql.format(a=quote(alias)) if fk.sql else f"{quote(alias)}.{quote(fk.name)}"
        self.joins.setdefault(
            jalias, f"LEFT JOIN {target.table} AS {quote(jalias)} ON {quote(jalias)}.id = {on}")
        return self._resolve_in(target, jalias, rest, full, depth + 1)

    # ---- explicit joins ---------------------------------------------------------------
    def add_join(self, spec: Any) -> None:
        """``["Email AS email", "LEFT", ["id", "=", "email.contact_id"], ...]``."""
        if not isinstance(spec, list) or len(spec) < 2 or not isinstance(spec[0], str):
            raise CiviError("Invalid join parameter")
        m = _JOIN_RE.match(spec[0].strip())
        if not m or m.group(1) not in ENTITIES:
            raise CiviError(f"Invalid join entity: {spec[0]}" if not m else
                            f"API entity {m.group(1)} not found")
        ent = ENTITIES[m.group(1)]
        alias = m.group(2) or m.group(1).lower()
        side = spec[1] if isinstance(spec[1], str) else ("INNER" if spec[1] else "LEFT")
        side = side.upper()
        if side not in ("LEFT", "INNER", "EXCLUDE"):
            raise CiviError(f"Invalid join type: {side}")
        conds = [c for c in spec[2:] if isinstance(c, list)]
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
            left = self.resolve(cond[0]).expr
            try:
                right = self.resolve(cond[2]).expr
            except CiviError:
                self.params.append(cond[2])
                right = "?"
            return f"{left} {'!=' if cond[1] == '<>' else cond[1]} {right}"
        return self.where([cond])

    def exclude_sql(self) -> list[str]:
        return [f"{quote(a)}.id IS NULL" for a, j in self.explicit.items() if j.side == "EXCLUDE"]

    # ---- where ------------------------------------------------------------------------
    def where(self, clauses: list[Any], glue: str = "AND") -> str:
        parts = [self._clause(c) for c in clauses]
        if not parts:
            return "1"
        return "(" + f" {glue} ".join(parts) + ")"

    def _clause(self, clause: Any) -> str:
        if not isinstance(clause, list) or not clause or not isinstance(clause[0], str):
            raise CiviError("Invalid where clause")
        head = clause[0]
        if head in ("OR", "AND", "NOT"):
            sub = clause[1] if len(clause) > 1 else []
            if not isinstance(sub, list):
                raise CiviError("Invalid where clause")
            inner = self.where(sub, "OR" if head == "OR" else "AND")
            return f"(NOT {inner})" if head == "NOT" else inner
        op = clause[1] if len(clause) > 1 else "="
        if not isinstance(op, str) or op.upper() not in OPERATORS:
            raise CiviError("Illegal operator")
        op = op.upper()
        res = self.resolve(head)
        value = clause[2] if len(clause) > 2 else None
        if len(clause) > 3 and clause[3] is True and isinstance(value, str):
            # 4th element true: the value is another field, not a literal
            return f"{res.expr} {'!=' if op == '<>' else op} {self.resolve(value).expr}"
        return self._compare(res, op, value)

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
