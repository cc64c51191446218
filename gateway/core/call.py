"""One call, parsed once: the canonical typed form every later stage works on.

A client's params are JSON, which CiviCRM (PHP) reads loosely: an object where a list belongs is
a list of its values, action names match in any case, ``api_email_get`` chains like
``api.Email.get``. Checking such input by its expected shapes lets every other shape through, so
the gateway parses it here into one form, refuses what does not parse (400 naming the param),
and forwards only :meth:`Call.to_params` of that form: what the policy checked is exactly what
CiviCRM receives.

Stages after this one (``gateway.core.fields``: field references; ``gateway.core.policy``; the backend)
take a :class:`Call` and never look at the client's raw params.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.core import expressions
from gateway.core.errors import GatewayError, from_civicrm, invalid_request
from gateway.core.expressions import Expr
from gateway.core.params import NAME_PATTERN, NAME_RE, check_names, is_read_action, normalize_v4

# CiviCRM 5.77's where operators (Civi\Api4\Utils\CoreUtil::getOperators).
OPERATORS = frozenset(
    {
        "=",
        "<=",
        ">=",
        ">",
        "<",
        "LIKE",
        "<>",
        "!=",
        "NOT LIKE",
        "IN",
        "NOT IN",
        "BETWEEN",
        "NOT BETWEEN",
        "IS NOT NULL",
        "IS NULL",
        "CONTAINS",
        "NOT CONTAINS",
        "IS EMPTY",
        "IS NOT EMPTY",
        "REGEXP",
        "NOT REGEXP",
        "REGEXP BINARY",
        "NOT REGEXP BINARY",
    }
)
_NO_VALUE = frozenset({"IS NULL", "IS NOT NULL", "IS EMPTY", "IS NOT EMPTY"})
_LIST_VALUE = frozenset({"IN", "NOT IN", "BETWEEN", "NOT BETWEEN"})
JOIN_SIDES = frozenset({"LEFT", "INNER", "EXCLUDE"})
MAX_CHAIN_DEPTH = 8
_JOIN_TARGET = re.compile(rf"({NAME_PATTERN})(?:\s+AS\s+({expressions.ALIAS_RE.pattern}))?")
# A chain reference: "$id", "$contact_id.display_name" (APIv3: "$value.id").
_REFERENCE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_.:]*)")
# APIv3 chain keys in every spelling CiviCRM accepts: api.Email.get, api_Email_get, api.email.get.
_V3_CHAIN = re.compile(r"api[._]([A-Za-z][A-Za-z0-9]*)[._]([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE)
_V3_FILTER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_V3_OPERATORS = frozenset({*OPERATORS, "NOT IN", "IS NOT NULL"})

# Params every APIv4 action takes, and the params of CiviCRM's standard actions with their kind.
_COMMON = {"checkPermissions": "bool", "chain": "chain", "debug": "bool", "language": "string"}
_GET = {"select": "exprs", "where": "clauses", "orderBy": "order", "limit": "count", "offset": "count"}
_WRITE_WHERE = {"where": "clauses", "orderBy": "order", "limit": "count", "offset": "count"}
V4_ACTION_PARAMS: dict[str, dict[str, str]] = {  # as getActions lists them on 5.77
    "get": {**_GET, "join": "joins", "groupBy": "exprs", "having": "clauses", "translationMode": "string"},
    "create": {"values": "fields"},
    "update": {**_WRITE_WHERE, "values": "fields", "reload": "bool"},
    "save": {"records": "records", "defaults": "fields", "match": "names", "reload": "bool"},
    "delete": dict(_WRITE_WHERE),
    "replace": {
        **_WRITE_WHERE,
        "records": "records",
        "defaults": "fields",
        "match": "names",
        "reload": "bool",
    },
    "revert": dict(_WRITE_WHERE),
    "getfields": {
        **_GET,
        "action": "string",
        "includeCustom": "bool",
        "loadOptions": "options",
        "values": "scalarfields",
    },
    "getactions": dict(_GET),
    "getlinks": {**_GET, "entityTitle": "scalar", "expandMultiple": "bool", "values": "scalarfields"},
    "checkaccess": {"action": "string", "values": "fields"},
    "autocomplete": {
        "input": "string",
        "page": "count",
        "key": "field",
        "ids": "scalars",
        # Their meaning lives in CiviCRM (a saved search, a form's field, a display definition
        # that may select any field of any entity): forwarded only for trusted clients.
        "formName": "unparsed",
        "fieldName": "unparsed",
        "values": "unparsed",
        "filters": "unparsed",
        "savedSearch": "unparsed",
        "display": "unparsed",
    },
    "getchecksum": {"contactId": "int", "ttl": "int"},
    "validatechecksum": {"contactId": "int", "checksum": "string"},
    "getduplicates": {"dedupeRule": "string", "values": "fields"},
    "mergeduplicates": {"contactId": "int", "duplicateId": "int", "mode": "string"},
    "export": {"id": "int", "match": "names", "cleanup": "string", "update": "string"},
    "set": {"values": "fields", "domainId": "scalar", "contactId": "int"},
}
# Entity-specific shapes of a standard action.
_ENTITY_ACTION_PARAMS = {
    ("Entity", "get"): {**_GET, "includeCustom": "bool"},
    ("Setting", "get"): {"select": "exprs", "domainId": "scalar", "contactId": "int"},
    ("Setting", "revert"): {"select": "exprs", "domainId": "scalar", "contactId": "int"},
}
# The canonical spelling of each standard action (CiviCRM matches them in any case).
STANDARD_ACTIONS = {
    name.lower(): name
    for name in (
        "get",
        "create",
        "update",
        "save",
        "delete",
        "replace",
        "revert",
        "getFields",
        "getActions",
        "getLinks",
        "checkAccess",
        "autocomplete",
        "getChecksum",
        "validateChecksum",
        "getDuplicates",
        "mergeDuplicates",
        "export",
        "set",
    )
}
# Kinds of param that hold nothing but a scalar.
_SCALAR_KINDS = frozenset({"bool", "string", "int", "count", "scalar"})
# Row cap CiviCRM applies to an APIv3 get without options.limit.
V3_DEFAULT_LIMIT = 25


def bad_param(name: str, why: str) -> GatewayError:
    return invalid_request(f"Param '{name}': {why}")


# --- where / having ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """``[left, op, value]``; ``right`` is set when the value is itself an expression
    (CiviCRM's 4th element ``true``, or any string value of a join condition, which CiviCRM
    always reads as SQL: ``'text'`` quoted is a string there, ``c.api_key`` a field)."""

    left: Expr
    op: str
    value: Any = None
    right: Expr | None = None
    on: bool = False  # a join condition: the value is an expression without the 4th element

    def to_json(self) -> list[Any]:
        if self.op in _NO_VALUE:
            return [self.left.text, self.op]
        if self.right is not None:
            if self.on:
                return [self.left.text, self.op, self.right.text]
            return [self.left.text, self.op, self.right.text, True]
        return [self.left.text, self.op, self.value]


@dataclass(frozen=True, slots=True)
class Group:
    """``["OR", [clauses]]``, ``["AND", [...]]`` or ``["NOT", [...]]``."""

    glue: str
    clauses: tuple[Clause, ...]

    def to_json(self) -> list[Any]:
        return [self.glue, [c.to_json() for c in self.clauses]]


Clause = Condition | Group


# Items one list param may hold (select, where, records...): each is parsed, resolved and
# checked on the event loop, so a huge one would stall every other client's calls.
MAX_ITEMS = 500


# JSON values one request's params may hold in all (clauses, expressions, values): parsing and
# checking run on the event loop, so a huge request would stall every other client's calls.
MAX_VALUES = 20_000


def _check_size(raw: Mapping[str, Any]) -> None:
    count = 0
    # records of a bulk save are plain values (bounded by the body's size), not expressions
    stack: list[Any] = [v for k, v in raw.items() if k != "records"]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise invalid_request(f"More than {MAX_VALUES} values in one call's params.")
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _as_list(name: str, value: Any, cap: int = MAX_ITEMS) -> list[Any]:
    """A JSON list, or an object read as PHP reads it: the list of its values."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        raise bad_param(name, f"must be a list, not {type(value).__name__}.")
    if len(value) > cap:
        raise bad_param(name, f"more than {cap} items.")
    return value


def _expr(name: str, value: Any, *, alias: bool = True) -> Expr:
    if not isinstance(value, str):
        raise bad_param(name, f"expected a field name or expression, not {type(value).__name__}.")
    return expressions.parse(value, allow_alias=alias, allow_wildcard=name == "select")


def _clauses(name: str, value: Any, depth: int = 0, *, on: bool = False) -> tuple[Clause, ...]:
    if depth > 16:
        raise bad_param(name, "clauses nested deeper than 16 levels.")
    items = _as_list(name, value)
    return tuple(_clause(name, item, depth, on=on) for item in items)


# Operators whose value may be a list (CONTAINS: any of several values of a multi-value field).
_LIST_OK = _LIST_VALUE | {"CONTAINS", "NOT CONTAINS"}
_REGEXP = frozenset({"REGEXP", "NOT REGEXP", "REGEXP BINARY", "NOT REGEXP BINARY"})
_REGEXP_UNSURE = re.compile(r"\(\?|\\(?![dDwWsSbB])[A-Za-z]|\[:|\\[0-9]")


def _clause(name: str, raw: Any, depth: int, *, on: bool = False) -> Clause:
    if isinstance(raw, dict):
        raw = list(raw.values())
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise bad_param(
            name, 'each clause must be a list [field, operator, value] or ["OR"|"AND"|"NOT", [clauses]].'
        )
    head = raw[0]
    if head in ("OR", "AND", "NOT"):
        if len(raw) != 2:
            raise bad_param(name, f'a {head} clause is ["{head}", [clauses]].')
        return Group(head, _clauses(name, raw[1], depth + 1, on=on))
    if len(raw) < 2 or not isinstance(raw[1], str) or raw[1].upper() not in OPERATORS:
        # CiviCRM's own words for a missing or unknown operator.
        raise from_civicrm("Illegal operator", status=500, error_code=0)
    op = raw[1].upper()
    left = _expr(name, head, alias=False)
    if left.root.kind == "literal" and not on:  # CiviCRM: "Illegal sql expression" in WHERE
        raise bad_param(name, f"{head[:80]!r}: a clause compares a field or an expression, not a value.")
    _no_aggregate(name, left)
    if op in _NO_VALUE:
        if len(raw) > 2:
            raise bad_param(name, f"operator {op} takes no value.")
        return Condition(left, op)
    if len(raw) > 4 or len(raw) < 3:
        raise bad_param(name, f'a {op} clause is [field, "{op}", value].')
    value = raw[2]
    if on and len(raw) == 4:
        raise bad_param(name, "join conditions are [field, operator, value]: their values are expressions.")
    expression_value = (on and isinstance(value, str)) or (len(raw) == 4 and raw[3] is True)
    if expression_value and op in _LIST_OK:
        # CiviCRM renders "x IN expr" for these, a DB syntax error: they take a list of values
        raise bad_param(name, f"operator {op} takes a list of values, not an expression.")
    if on and isinstance(value, str):
        right = _expr(name, value, alias=False)
        _no_aggregate(name, right)
        if op in _REGEXP:
            if right.root.kind != "literal":
                raise bad_param(name, "a REGEXP in a join condition compares with a quoted pattern.")
            _check_regexp(name, right.root.value[1:-1])
        return Condition(left, op, right=right, on=True)
    if len(raw) == 4:
        if raw[3] is True:
            right = _expr(name, value, alias=False)
            _no_aggregate(name, right)
            return Condition(left, op, right=right)
        if raw[3] is not False:
            raise bad_param(name, "the 4th element of a clause must be true or false.")
    if isinstance(value, list | dict) and op not in _LIST_OK:
        raise bad_param(name, f"operator {op} compares with one value, not a list.")
    if op in _REGEXP:
        _check_regexp(name, value)
    if op in _LIST_VALUE:
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            raise bad_param(name, f"operator {op} needs a list of values.")
        if op in ("BETWEEN", "NOT BETWEEN") and len(value) != 2:
            raise bad_param(name, f"operator {op} needs a list of 2 values.")
    _check_value(name, value)
    return Condition(left, op, value)


def _check_regexp(name: str, value: Any) -> None:
    """A pattern the database cannot compile fails the whole query (a DB Error from CiviCRM):
    the client's mistake, said before anything is sent."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise bad_param(name, "a REGEXP pattern is a string.")
    pattern = str(value)
    # MariaDB compiles with PCRE2: what the two engines read differently is refused outright
    # (inline flags, \N, POSIX classes, repeat counts past PCRE2's 65535).
    if _REGEXP_UNSURE.search(pattern) or any(int(n) > 1000 for n in re.findall(r"\{(\d+)", pattern)):
        raise bad_param(name, "the REGEXP pattern uses a construct the gateway does not check; simplify it.")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise bad_param(name, f"the REGEXP pattern does not compile ({str(exc)[:80]}).") from None


def _no_aggregate(name: str, expr: Expr) -> None:
    """An aggregate filters groups, not rows: SQL refuses it in WHERE and ON (MySQL's "Invalid
    use of group function", a DB Error from CiviCRM), so it is the client's mistake to say."""
    if name != "having" and expr.is_aggregate:
        found = sorted(f for f in expr.functions if f in expressions.AGGREGATES)
        raise bad_param(
            name,
            f"the aggregate function {found[0]} cannot filter rows: select it "
            "with an alias and filter on that alias in 'having'.",
        )


def _check_value(name: str, value: Any, depth: int = 0) -> None:
    """Filter and field values: scalars, or lists of them (CONTAINS, IN, multi-value fields)."""
    if isinstance(value, list) and depth == 0:
        for item in value:
            _check_value(name, item, 1)
    elif isinstance(value, dict | list):
        raise bad_param(name, "values must be scalars or lists of scalars.")


# --- joins -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    entity: str
    alias: str
    side: str
    bridge: str | None
    conditions: tuple[Clause, ...]

    def to_json(self) -> list[Any]:
        out: list[Any] = [f"{self.entity} AS {self.alias}", self.side]
        if self.bridge:
            out.append(self.bridge)
        out.extend(c.to_json() for c in self.conditions)
        return out


def _joins(value: Any) -> tuple[Join, ...]:
    joins = []
    aliases: set[str] = set()
    for raw in _as_list("join", value):
        if isinstance(raw, dict):
            raw = list(raw.values())
        if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[0], str):
            raise bad_param(
                "join", 'each join is ["Entity AS alias", "LEFT"|"INNER"|"EXCLUDE", conditions...].'
            )
        target = _JOIN_TARGET.fullmatch(raw[0].strip())
        if not target:
            raise bad_param("join", f"{raw[0][:80]!r} is not 'Entity AS alias'.")
        entity = target.group(1)
        alias = target.group(2) or entity.lower()
        if alias in aliases:
            raise bad_param("join", f"alias {alias!r} used twice.")
        aliases.add(alias)
        side = raw[1]
        if isinstance(side, bool):
            side = "INNER" if side else "LEFT"
        if not isinstance(side, str) or side.upper() not in JOIN_SIDES:
            raise bad_param("join", "the join type must be LEFT, INNER or EXCLUDE.")
        rest = raw[2:]
        bridge = None
        if rest and isinstance(rest[0], str):
            if not NAME_RE.fullmatch(rest[0]):
                raise bad_param("join", f"bridge {rest[0][:80]!r} is not an entity name.")
            bridge, rest = rest[0], rest[1:]
        conditions = tuple(_clause("join", c, 1, on=True) for c in rest)
        joins.append(Join(entity, alias, side.upper(), bridge, conditions))
    return tuple(joins)


# --- the call --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainLink:
    """One chained call: the call and CiviCRM's optional index (0: one record, not a list)."""

    call: Call
    index: Any = None


@dataclass(frozen=True)
class Call:
    """A parsed APIv4 or APIv3 call. Only the params present in the request are set."""

    version: int
    entity: str
    action: str
    # APIv4
    select: tuple[Expr, ...] | None = None
    where: tuple[Clause, ...] | None = None
    having: tuple[Clause, ...] | None = None
    join: tuple[Join, ...] | None = None
    group_by: tuple[Expr, ...] | None = None
    order_by: tuple[tuple[Expr, str], ...] | None = None
    limit: int | None = None
    offset: int | None = None
    values: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    records: tuple[dict[str, Any], ...] | None = None
    match: tuple[str, ...] | None = None
    chain: dict[str, ChainLink] = field(default_factory=dict)
    # scalar params (checkPermissions, language, reload, contactId, ...) and the few unparsed ones
    options: dict[str, Any] = field(default_factory=dict)
    # which params hold field names and values: name -> kind ("fields": {field: value};
    # "field": one field name; "names": a list of field names)
    field_params: dict[str, str] = field(default_factory=dict)
    # params forwarded without the gateway understanding them (only trusted clients may)
    unparsed: tuple[str, ...] = ()
    # the gateway has a grammar for this action (else only trusted clients, or a policy that
    # names it in unchecked_actions, may call it)
    known_action: bool = True
    # APIv3
    filters: dict[str, Any] = field(default_factory=dict)
    returns: tuple[str, ...] | None = None
    v3_options: dict[str, Any] = field(default_factory=dict)
    v3_chains: tuple[tuple[str, tuple[Call, ...]], ...] = ()

    @property
    def label(self) -> str:
        return f"v{self.version}:{self.entity}.{self.action}"

    @property
    def is_read(self) -> bool:
        return is_read_action(self.version, self.action)

    @property
    def is_get(self) -> bool:
        return self.action.lower() == "get"

    @property
    def reads_only(self) -> bool:
        """This call and every call it chains are reads: repeating it changes nothing."""
        return all(call.is_read for call, _ in self.walk())

    @property
    def is_metadata(self) -> bool:
        """The answer is metadata (getFields, getActions, APIv4 Entity.get) and nothing is
        chained (a chain could read data): what a metadata cache may keep."""
        if self.chain or self.v3_chains:
            return False
        if self.action.lower() in ("getfields", "getactions"):
            return True
        return self.version == 4 and self.entity == "Entity" and self.action == "get"

    @property
    def cost(self) -> int:
        """How many API calls this counts as against its client's rate: one per call in its
        tree (a chained call runs at least once)."""
        return sum(1 for _ in self.walk())

    def children(self) -> Iterator[Call]:
        if self.version == 4:
            yield from (link.call for link in self.chain.values())
        else:
            for _, calls in self.v3_chains:
                yield from calls

    def walk(self, depth: int = 0) -> Iterator[tuple[Call, int]]:
        """This call and every call it chains, with their depth."""
        yield self, depth
        for child in self.children():
            yield from child.walk(depth + 1)

    @property
    def takes_limit(self) -> bool:
        """CiviCRM accepts a row limit on this call (``Setting.get`` refuses one)."""
        if self.version == 3:
            return True
        return "limit" in param_kinds(self.entity, self.action)

    def effective_limit(self) -> int | None:
        """The row cap CiviCRM will apply (None: every row)."""
        if self.version == 4:
            return self.limit or None
        limit = self.v3_options.get("limit", V3_DEFAULT_LIMIT)
        return limit or None

    def with_limit(self, limit: int) -> Call:
        if self.version == 4:
            return replace(self, limit=limit)
        return replace(self, v3_options={**self.v3_options, "limit": limit})

    # --- back to JSON ---------------------------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """The params forwarded to CiviCRM: built from the parsed form, lists as lists."""
        return self._v4_params() if self.version == 4 else self._v3_params()

    def _v4_params(self) -> dict[str, Any]:
        p: dict[str, Any] = {}
        if self.select is not None:
            p["select"] = [e.text for e in self.select]
        if self.join is not None:
            p["join"] = [j.to_json() for j in self.join]
        if self.where is not None:
            p["where"] = [c.to_json() for c in self.where]
        if self.group_by is not None:
            p["groupBy"] = [e.text for e in self.group_by]
        if self.having is not None:
            p["having"] = [c.to_json() for c in self.having]
        if self.order_by is not None:
            p["orderBy"] = {e.text: d for e, d in self.order_by}
        if self.limit is not None:
            p["limit"] = self.limit
        if self.offset is not None:
            p["offset"] = self.offset
        for name in ("values", "defaults"):
            value = getattr(self, name)
            if value is not None:
                p[name] = dict(value)
        if self.records is not None:
            p["records"] = [dict(r) for r in self.records]
        if self.match is not None:
            p["match"] = list(self.match)
        p.update(self.options)
        if self.chain or self.v3_chains:
            p["chain"] = {
                name: [
                    link.call.entity,
                    link.call.action,
                    link.call.to_params(),
                    *([link.index] if link.index is not None else []),
                ]
                for name, link in self.chain.items()
            }
        return p

    def _v3_params(self) -> dict[str, Any]:
        p: dict[str, Any] = dict(self.filters)
        if self.returns is not None:
            # getvalue takes one field name as a string (5.77 fails on a list)
            p["return"] = self.returns[0] if self.action == "getvalue" else list(self.returns)
        if self.v3_options:
            p["options"] = dict(self.v3_options)
        p.update(self.options)
        for key, calls in self.v3_chains:
            forwarded = [c.to_params() for c in calls]
            p[key] = forwarded[0] if len(forwarded) == 1 else forwarded
        return p


@dataclass(frozen=True)
class OwnCall(Call):
    """A call the gateway makes itself, sent with its params as given: never a client's (those
    are parsed). For the metadata fetch, whose chains name their entity by each record's field
    (``["$name", "getFields", ...]``), which no client may send: the grammar refuses it, since
    no policy could tell which entity such a chain calls."""

    params: dict[str, Any] = field(default_factory=dict)

    def to_params(self) -> dict[str, Any]:
        return dict(self.params)


# --- parsing ---------------------------------------------------------------------------------


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1"):
        return bool(int(value))
    raise from_civicrm(
        f'Parameter "{name}" is not of the correct type. Expecting bool.', status=500, error_code=0
    )


def _count(name: str, value: Any) -> int:
    """limit / offset / page: a whole number >= 0 (a negative one is a DB error in CiviCRM)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise from_civicrm(
            f'Parameter "{name}" is not of the correct type. Expecting int.', status=500, error_code=0
        )
    if value < 0 or value > 2**31:
        raise bad_param(name, "must be a whole number from 0 to 2147483648.")
    return int(value)


def _int(name: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\d{1,18}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise from_civicrm(
            f'Parameter "{name}" is not of the correct type. Expecting int.', status=500, error_code=0
        )
    return int(value)


def _field_map(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_param(name, "must be an object of field: value pairs.")
    out = {}
    for key, item in value.items():
        if not expressions.FIELD_RE.fullmatch(key) or key.endswith("*"):
            raise bad_param(name, f"{key[:80]!r} is not a field name.")
        _check_value(f"{name}.{key}", item)
        out[key] = item
    return out


def _names(name: str, value: Any) -> tuple[str, ...]:
    out = []
    for item in _as_list(name, value):
        if not isinstance(item, str) or not expressions.FIELD_RE.fullmatch(item) or item.endswith("*"):
            raise bad_param(name, "must be a list of field names.")
        out.append(item)
    return tuple(out)


def _scalars(name: str, value: Any) -> list[Any]:
    items = _as_list(name, value)
    if any(isinstance(i, dict | list) for i in items):
        raise bad_param(name, "must be a list of scalars.")
    return items


def _order(value: Any) -> tuple[tuple[Expr, str], ...]:
    if not isinstance(value, dict):
        raise bad_param("orderBy", 'must be an object of {field: "ASC"|"DESC"}.')
    if len(value) > MAX_ITEMS:
        raise bad_param("orderBy", f"more than {MAX_ITEMS} items.")
    out = []
    for key, direction in value.items():
        if not isinstance(direction, str) or direction.upper() not in ("ASC", "DESC"):
            raise bad_param("orderBy", f"direction of {key[:80]!r} must be ASC or DESC.")
        out.append((_expr("orderBy", key, alias=False), direction.upper()))
    return tuple(out)


def _unknown_param(name: str) -> GatewayError:
    return from_civicrm(f"Unknown api parameter: set{name[:1].upper()}{name[1:]}", status=500, error_code=0)


def has_grammar(version: int, entity: str, action: str) -> bool:
    """Whether the gateway parses every param of ``entity.action`` (else it is unchecked)."""
    if version == 3:
        return action.lower() in _V3_ACTIONS
    return (entity, action) in _ENTITY_ACTION_PARAMS or action.lower() in V4_ACTION_PARAMS


def param_kinds(entity: str, action: str, declared: Mapping[str, str] | None = None) -> dict[str, str]:
    """The params an action takes, by kind. ``declared``: types from CiviCRM's getActions for an
    action the gateway does not model (scalar ones only; an array param of unknown meaning
    becomes ``opaque``)."""
    kinds = _ENTITY_ACTION_PARAMS.get((entity, action)) or V4_ACTION_PARAMS.get(action.lower())
    out = dict(_COMMON)
    if kinds is not None:
        out.update(kinds)
    elif declared:
        for name, kind in declared.items():
            out.setdefault(name, kind if kind in _SCALAR_KINDS else "unparsed")
    if entity == "Contact" and action.lower() == "delete":
        out["useTrash"] = "bool"
    return out


def parse(
    version: int,
    entity: str,
    action: str,
    raw: Mapping[str, Any],
    *,
    declared: Mapping[str, str] | None = None,
    depth: int = 0,
) -> Call:
    """Parse a call's params (already through the simple-form normalisation)."""
    check_names(entity, action)
    if depth > MAX_CHAIN_DEPTH:
        raise invalid_request(f"Chains nested deeper than {MAX_CHAIN_DEPTH} levels are refused.")
    if not isinstance(raw, Mapping):
        raise invalid_request("Params must be a JSON object.")
    if depth == 0:
        _check_size(raw)
    action = STANDARD_ACTIONS.get(action.lower(), action)
    if version == 3:
        return _parse_v3(entity, action, raw, depth)
    kinds = param_kinds(entity, action, declared)
    known = (entity, action) in _ENTITY_ACTION_PARAMS or action.lower() in V4_ACTION_PARAMS
    updates: dict[str, Any] = {}
    options: dict[str, Any] = {}
    field_params: dict[str, str] = {}
    unparsed: list[str] = []
    chain: dict[str, ChainLink] = {}
    for name, value in raw.items():
        kind = kinds.get(name)
        if kind is None:
            if known:  # CiviCRM's own answer for a param its action does not have
                raise _unknown_param(name)
            kind = "unparsed"  # an action the gateway has no grammar for: it cannot tell
        if value is None and kind != "chain":
            continue
        if kind == "exprs":
            updates["group_by" if name == "groupBy" else "select"] = tuple(
                _expr(name, e, alias=name == "select") for e in _as_list(name, value)
            )
        elif kind == "clauses":
            updates[name] = _clauses(name, value)
        elif kind == "joins":
            updates["join"] = _joins(value)
        elif kind == "order":
            updates["order_by"] = _order(value)
        elif kind == "count":
            if name in ("limit", "offset"):
                updates[name] = _count(name, value)
            else:
                options[name] = _count(name, value)
        elif kind == "scalarfields":  # metadata actions' values: one value per field
            options[name] = _field_map(name, value)
            if any(isinstance(v, list | dict) for v in options[name].values()):
                raise bad_param(name, "takes one value per field.")
            field_params[name] = "fields"
        elif kind == "fields":
            if name in ("values", "defaults"):
                updates[name] = _field_map(name, value)
            else:
                options[name] = _field_map(name, value)
                field_params[name] = "fields"
        elif kind == "records":
            records = []
            for record in _as_list(name, value, cap=100_000):  # bulk saves: bounded by the body
                records.append(_field_map(name, record))
            updates["records"] = tuple(records)
        elif kind == "names":
            updates["match"] = _names(name, value)
        elif kind == "field":
            if not isinstance(value, str) or not expressions.FIELD_RE.fullmatch(value) or "*" in value:
                raise bad_param(name, "must be a field name.")
            options[name] = value
            field_params[name] = "field"
        elif kind == "scalars":
            options[name] = _scalars(name, value)
        elif kind == "chain":
            chain = _chain(value, depth)
        elif kind == "bool":
            options[name] = _bool(name, value)
        elif kind == "int":
            options[name] = _int(name, value)
        elif kind == "string":
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise bad_param(name, "must be a string.")
            options[name] = str(value)
        elif kind == "options":  # getFields loadOptions: true/false or a list of option keys
            options[name] = _bool(name, value) if not isinstance(value, list) else _scalars(name, value)
        elif kind == "scalar":
            if isinstance(value, dict | list):
                if name == "domainId":
                    options[name] = _scalars(name, value)
                    continue
                raise bad_param(name, "must be a scalar.")
            options[name] = value
        else:  # unparsed: kept as sent; the policy allows it only to trusted clients
            options[name] = value
            unparsed.append(name)
    if updates.get("having"):
        _having_in_select(updates["having"], updates.get("select") or ())
    if (
        action == "getLinks"
        and updates.get("select")
        and not any(e.text == "entity" for e in updates["select"])
    ):  # 5.77's GetLinks reads each link's entity: without it CiviCRM fails (a TypeError)
        raise bad_param("select", "getLinks needs 'entity' in its select.")
    for expr in updates.get("group_by") or ():
        if expr.is_aggregate:  # SQL cannot group by an aggregate: a DB Error from CiviCRM
            raise bad_param("groupBy", f"{expr.text[:80]!r} is an aggregate; group by fields or expressions.")
    return Call(  # built once here (dataclasses.replace would introspect the class per call)
        4,
        entity,
        action,
        known_action=known,
        chain=chain,
        options=options,
        field_params=field_params,
        unparsed=tuple(unparsed),
        **updates,
    )


def _having_in_select(having: tuple[Clause, ...], select: tuple[Expr, ...]) -> None:
    """CiviCRM's HAVING filters on what SELECT has (an alias, a selected expression or field,
    with or without ``:suffix``); anything else fails there, so it is the client's to fix."""
    known = {e.alias for e in select if e.alias} | {e.text.removesuffix(f" AS {e.alias}") for e in select}
    known |= {e.text.partition(":")[0] for e in select if e.is_field}
    stack = list(having)
    while stack:
        clause = stack.pop()
        if isinstance(clause, Group):
            stack.extend(clause.clauses)
            continue
        for expr in (clause.left, clause.right):
            if expr is not None and expr.text not in known and expr.text.partition(":")[0] not in known:
                raise bad_param("having", f"{expr.text[:80]!r} is not in select: select it (with an alias).")


def _chain(value: Any, depth: int) -> dict[str, ChainLink]:
    if not isinstance(value, dict):
        raise bad_param("chain", "must be an object of named calls.")
    links = {}
    for name, spec in value.items():
        if isinstance(spec, dict):
            spec = list(spec.values())
        if not (
            isinstance(spec, list)
            and 2 <= len(spec) <= 4
            and isinstance(spec[0], str)
            and isinstance(spec[1], str)
        ):
            raise bad_param("chain", f"{name[:80]!r} must be [Entity, action, params?, index?].")
        params = spec[2] if len(spec) > 2 else {}
        if isinstance(params, list) and not params:
            params = {}
        if not isinstance(params, dict):
            raise bad_param("chain", f"{name[:80]!r}: params must be an object.")
        index = spec[3] if len(spec) > 3 else None
        if index is not None and not (
            (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 2**31)
            or (isinstance(index, str) and expressions.FIELD_RE.fullmatch(index) and "*" not in index)
        ):
            # A field name keys the chained results by that field's values (CiviCRM selects
            # it): it is a field reference of the chained call, checked like any other.
            raise bad_param("chain", f"{name[:80]!r}: index must be a whole number or a field name.")
        # The simple form holds in chains too.
        sub = parse(4, spec[0], spec[1], normalize_v4(spec[1], params), depth=depth + 1)
        links[name] = ChainLink(sub, index)
    return links


# --- APIv3 -----------------------------------------------------------------------------------

_V3_META = {"sequential", "version", "check_permissions", "prettyprint", "debug", "json"}


# APIv3's legacy spellings of options (CiviCRM's _civicrm_api3_get_options_from_params);
# ``options`` wins over them there, and here.
_V3_LEGACY_OPTIONS = {
    "sort": "sort",
    "option.sort": "sort",
    "option_sort": "sort",
    "offset": "offset",
    "option.offset": "offset",
    "option_offset": "offset",
    "rowCount": "limit",
    "option.limit": "limit",
    "option_limit": "limit",
}
# getlist's params (api/v3/Generic/Getlist.php): several name fields of the entity.
_V3_GETLIST = {
    "input": "string",
    "page_num": "count",
    "add_wildcard": "bool",
    "id": "scalars",
    "params": "fields",
    "id_field": "field",
    "label_field": "field",
    "search_field": "field",
    "image_field": "field",
    "color_field": "field",
    "description_field": "names",
    "extra": "names",
}
# Params of APIv3 actions that are not filters, by kind.
_V3_ACTION_PARAMS = {
    "getlist": _V3_GETLIST,
    "getoptions": {"field": "field", "context": "string"},
    "getfields": {"api_action": "string", "action": "string"},
    "getactions": {},
    "delete": {"skip_undelete": "bool"},
    "create": {"dupe_check": "bool", "skip_greeting_processing": "bool"},
}
# Metadata actions take only their own params (getfields' cache_clear would flush CiviCRM's caches).
_V3_CLOSED = frozenset({"getfields", "getactions"})


def _parse_v3(entity: str, action: str, raw: Mapping[str, Any], depth: int) -> Call:
    action = action.lower() if action.lower() in _V3_ACTIONS else action
    filters: dict[str, Any] = {}
    returns: list[str] | None = None
    v3_options: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    chains: list[tuple[str, tuple[Call, ...]]] = []
    # getfields keeps CiviCRM's keyed answer: a field's key is its unique name (contact_source
    # for source), which v3_records keeps as uniqueName and the name checks need.
    options: dict[str, Any] = {"sequential": 1} if depth == 0 and action != "getfields" else {}
    field_params: dict[str, str] = {}
    for key, value in raw.items():
        # CiviCRM chains any key starting with "api" and "." or "_" whose value is an array
        # or 1 ("api_key": {...} included); other values are filters.
        chain_like = key[:4].lower() in ("api.", "api_") and (
            isinstance(value, dict | list) or value is True or value == 1
        )
        chained = _V3_CHAIN.fullmatch(key) if chain_like else None
        if chained:
            chains.append((key, _v3_chain(key, chained, value, depth)))
        elif chain_like:
            raise bad_param(key, "not a chained call: use api.Entity.action.")
        elif key == "options":
            v3_options = _v3_options(value)
        elif key in _V3_LEGACY_OPTIONS:
            legacy.update(_v3_options({_V3_LEGACY_OPTIONS[key]: value}))
        elif key in _V3_ACTION_PARAMS.get(action, {}):
            _v3_action_param(key, _V3_ACTION_PARAMS[action][key], value, options, field_params)
        elif action in _V3_CLOSED and key not in _V3_META:
            raise bad_param(key, f"{action} takes api_action only.")
        elif key == "return":
            returns = [*(returns or []), *_v3_return(value)]
        elif key.startswith("return."):
            name = key[len("return.") :]
            if not _V3_FILTER_KEY.fullmatch(name):
                raise bad_param(key, "not a field name.")
            returns = [*(returns or []), name]
        elif key == "check_permissions":
            if not _bool(key, value):
                raise GatewayError(
                    "gateway-policy-denied", "check_permissions cannot be turned off through the gateway."
                )
        elif key in _V3_META:
            continue  # the gateway sets these itself
        elif key.startswith("options."):
            v3_options.update(_v3_options({key[len("options.") :]: value}))
        else:
            if not _V3_FILTER_KEY.fullmatch(key):
                raise bad_param(key, "not a field name.")
            filters[key] = _v3_filter(key, value)
    if action == "getvalue" and returns is not None and len(returns) != 1:
        raise bad_param("return", "getvalue returns one field: name exactly one.")
    return Call(
        3,
        entity,
        action,
        filters=filters,
        returns=tuple(returns) if returns else None,  # empty: every field
        v3_options={**legacy, **v3_options},
        v3_chains=tuple(chains),
        options=options,
        field_params=field_params,
        known_action=action in _V3_ACTIONS,
    )


def _v3_action_param(
    key: str, kind: str, value: Any, options: dict[str, Any], field_params: dict[str, str]
) -> None:
    if kind == "field":
        if not isinstance(value, str) or not _V3_FILTER_KEY.fullmatch(value):
            raise bad_param(key, "must be a field name.")
        options[key] = value
        field_params[key] = "field"
    elif kind == "names":
        names = [value] if isinstance(value, str) else _as_list(key, value)
        if not all(isinstance(n, str) and _V3_FILTER_KEY.fullmatch(n) for n in names):
            raise bad_param(key, "must be a list of field names.")
        options[key] = list(names)
        field_params[key] = "names"
    elif kind == "fields":  # the get's filters
        if not isinstance(value, dict):
            raise bad_param(key, "must be an object of field filters.")
        sub = {}
        for name, item in value.items():
            if not isinstance(name, str) or not _V3_FILTER_KEY.fullmatch(name):
                raise bad_param(f"{key}.{name}"[:80], "not a field name.")
            sub[name] = _v3_filter(name, item)
        options[key] = sub
        field_params[key] = "fields"
    elif kind == "scalars":
        options[key] = _scalars(key, value) if isinstance(value, list | dict) else value
    elif kind == "bool":
        options[key] = _bool(key, value)
    elif kind == "count":
        options[key] = _count(key, value)
    else:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise bad_param(key, "must be a string.")
        options[key] = str(value)


_V3_ACTIONS = frozenset(
    {
        "get",
        "getsingle",
        "getcount",
        "getvalue",
        "create",
        "delete",
        "getfields",
        "getoptions",
        "getactions",
        "getlist",
        "replace",
    }
)


def _v3_chain(key: str, match: re.Match[str], value: Any, depth: int) -> tuple[Call, ...]:
    entity, action = match.group(1), match.group(2)
    if value in (1, True, "1"):
        value = {}
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            raise bad_param(key, "a chained call takes an object of params (or a list of them).")
        calls.append(parse(3, entity[:1].upper() + entity[1:], action, item, depth=depth + 1))
    if not calls:
        raise bad_param(key, "a chained call needs params.")
    return tuple(calls)


def _v3_return(value: Any) -> list[str]:
    names = value.split(",") if isinstance(value, str) else _as_list("return", value)
    out = []
    for name in names:
        if not isinstance(name, str) or not _V3_FILTER_KEY.fullmatch(name.strip()):
            raise bad_param("return", "must be field names (a list or a comma-separated string).")
        out.append(name.strip())
    return out


def _v3_options(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_param("options", "must be an object (limit, offset, sort).")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("limit", "offset"):
            out[key] = _count(f"options.{key}", item)
        elif key == "sort":
            out[key] = _v3_sort(item)
        else:
            raise bad_param(f"options.{key}", "the gateway accepts options limit, offset and sort.")
    return out


def _v3_sort(value: Any) -> str:
    parts = value.split(",") if isinstance(value, str) else _as_list("options.sort", value)
    out = []
    for part in parts:
        if not isinstance(part, str):
            raise bad_param("options.sort", "must be 'field [ASC|DESC], ...'.")
        words = part.split()
        if (
            not 1 <= len(words) <= 2
            or not _V3_FILTER_KEY.fullmatch(words[0])
            or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC"))
        ):
            raise bad_param("options.sort", "must be 'field [ASC|DESC], ...'.")
        out.append(" ".join([words[0], *(w.upper() for w in words[1:])]))
    return ", ".join(out)


def _v3_filter(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) != 1:
            raise bad_param(key, 'an operator filter is {"OP": value}.')
        op, operand = next(iter(value.items()))
        if op.upper() not in _V3_OPERATORS:
            raise bad_param(key, f"unknown operator {op[:20]!r}.")
        op = op.upper()
        _check_value(key, operand)
        # the same value rules as APIv4's where (a PHP fatal in CiviCRM otherwise)
        if isinstance(operand, list) and op not in _LIST_VALUE:
            raise bad_param(key, f"operator {op} compares with one value, not a list.")
        if op in _LIST_VALUE and not isinstance(operand, list):
            raise bad_param(key, f"operator {op} needs a list of values.")
        if op in _REGEXP:
            _check_regexp(key, operand)
        return {op: operand}
    _check_value(key, value)
    return value


def references_in(value: Any) -> Iterator[str]:
    """Every ``$field`` chain reference inside a (chained call's) params value."""
    if isinstance(value, str):
        if value.startswith("$"):
            match = _REFERENCE.fullmatch(value)
            if not match:
                raise invalid_request(f"{value[:80]!r} is not a chain reference ($field).")
            yield match.group(1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)
