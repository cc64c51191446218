"""APIv4 SQL expressions parsed the way CiviCRM 5.77 parses them (``SqlExpression::convert``):
fields, numbers, quoted strings, ``NULL``, ``*``, ``(a + b)`` equations and the 38 SQL
functions, each optionally followed by `` AS alias``.

Parsing only: the query compiler (``query.Query.expression``) turns the tree into SQLite SQL,
so field names are still checked against the schema there. The error texts are CiviCRM's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sandbox.errors import CiviError

_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
ARITHMETIC = ("+", "-", "*", "/")
COMPARISON = ("<=", ">=", "<", ">", "=", "!=", "<=>", "IS NOT", "IS", "BETWEEN", "AND")


@dataclass(frozen=True)
class FnSpec:
    """One ``Civi\\Api4\\Query\\SqlFunction<NAME>``: argument counts, category, output type."""

    min_args: int
    max_args: int
    aggregate: bool = False
    data_type: str | None = None  # None: the type of the function's first field
    distinct: bool = False  # accepts DISTINCT before its argument
    order_by: bool = False  # accepts ORDER BY after its argument (GROUP_CONCAT, GROUP_FIRST)
    separator: bool = False  # accepts SEPARATOR 'x' (GROUP_CONCAT)


MANY = 99
FUNCTIONS: dict[str, FnSpec] = {
    "ABS": FnSpec(1, 1, data_type="Float"),
    "AVG": FnSpec(1, 1, aggregate=True, data_type="Float", distinct=True),
    "BINARY": FnSpec(1, 1, data_type="String"),
    "COALESCE": FnSpec(1, MANY),
    "CONCAT": FnSpec(1, MANY, data_type="String"),
    "CONCAT_WS": FnSpec(2, MANY, data_type="String"),
    "COUNT": FnSpec(1, 1, aggregate=True, data_type="Integer", distinct=True),
    "CURDATE": FnSpec(0, 0, data_type="Date"),
    "DATE": FnSpec(1, 1, data_type="Date"),
    "DATEDIFF": FnSpec(2, 2, data_type="Integer"),
    "DAYOFWEEK": FnSpec(1, 1, data_type="Integer"),
    "DAYSTOANNIV": FnSpec(1, 1, data_type="Integer"),
    "EXTRACT": FnSpec(1, 1),  # 5.77 declares no type: MySQL's text ("1980")
    "GREATEST": FnSpec(1, MANY),
    "GROUP_CONCAT": FnSpec(
        1, MANY, aggregate=True, data_type="Array", distinct=True, order_by=True, separator=True
    ),
    "GROUP_FIRST": FnSpec(1, 1, aggregate=True, order_by=True),
    "IF": FnSpec(3, 3, data_type="String"),  # not the condition's type: IF(is_deceased, 'a', 'b')
    "IFNULL": FnSpec(2, 2),
    "ISNULL": FnSpec(1, 1, data_type="Boolean"),
    "LEAST": FnSpec(1, MANY),
    "LEFT": FnSpec(2, 2, data_type="String"),
    "LOWER": FnSpec(1, 1, data_type="String"),
    "MAX": FnSpec(1, 1, aggregate=True, distinct=True),
    "MIN": FnSpec(1, 1, aggregate=True, distinct=True),
    "MONTH": FnSpec(1, 1, data_type="Integer"),
    "NEXTANNIV": FnSpec(1, 1, data_type="Date"),
    "NOW": FnSpec(0, 0, data_type="Timestamp"),
    "NULLIF": FnSpec(2, 2),
    "QUARTER": FnSpec(1, 1, data_type="Integer"),
    "RAND": FnSpec(0, 0, data_type="Float"),
    "REPLACE": FnSpec(3, 3, data_type="String"),
    "RIGHT": FnSpec(2, 2, data_type="String"),
    "ROUND": FnSpec(1, 2, data_type="Float"),
    "SUBSTRING": FnSpec(2, 3, data_type="String"),
    "SUM": FnSpec(1, 1, aggregate=True, distinct=True),
    "TIME": FnSpec(1, 1, data_type="String"),
    "UPPER": FnSpec(1, 1, data_type="String"),
    "YEAR": FnSpec(1, 1, data_type="Integer"),
}
EXTRACT_UNITS = (
    "MICROSECOND",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "WEEK",
    "MONTH",
    "QUARTER",
    "YEAR",
    "SECOND_MICROSECOND",
    "MINUTE_MICROSECOND",
    "MINUTE_SECOND",
    "HOUR_MICROSECOND",
    "HOUR_SECOND",
    "HOUR_MINUTE",
    "DAY_MICROSECOND",
    "DAY_SECOND",
    "DAY_MINUTE",
    "DAY_HOUR",
    "YEAR_MONTH",
)


# ---- the tree ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldRef:
    name: str


@dataclass(frozen=True)
class Number:
    value: int | float


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Null:
    pass


@dataclass(frozen=True)
class Wild:
    pass


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple[Node, ...]
    distinct: bool = False
    order_by: tuple[tuple[Node, str], ...] = ()
    separator: str | None = None
    unit: str | None = None  # EXTRACT(unit FROM x)

    @property
    def spec(self) -> FnSpec:
        return FUNCTIONS[self.name]


@dataclass(frozen=True)
class Equation:
    items: tuple[Node | str, ...]  # operands and operator strings, alternating

    @property
    def comparison(self) -> bool:
        return any(isinstance(i, str) and i in COMPARISON for i in self.items)


Node = FieldRef | Number | String | Null | Wild | Func | Equation


@dataclass(frozen=True)
class Expr:
    """A parsed expression with the key its value is returned under."""

    node: Node
    text: str  # the expression without its alias
    alias: str | None = None

    @property
    def key(self) -> str:
        if self.alias is not None:
            return self.alias
        node = self.node
        if isinstance(node, Func):
            return f"{node.name}:{'_'.join(fields_of(node))}"
        if isinstance(node, Equation):
            return munge(self.text.strip(" ()"))
        if isinstance(node, FieldRef):
            return node.name
        return munge(self.text)

    @property
    def aggregate(self) -> bool:
        return has_aggregate(self.node)


def munge(text: str) -> str:
    """CRM_Utils_String::munge: anything but letters, digits and _ becomes _ (256 max)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)[:256]


def fields_of(node: Node | str) -> list[str]:
    """Field names an expression reads, in order (CiviCRM's getFields())."""
    if isinstance(node, FieldRef):
        return [node.name]
    if isinstance(node, Func):
        out = [f for a in node.args for f in fields_of(a)]
        return out + [f for n, _ in node.order_by for f in fields_of(n)]
    if isinstance(node, Equation):
        return [f for i in node.items for f in fields_of(i)]
    return []


def has_aggregate(node: Node | str) -> bool:
    if isinstance(node, Func):
        return node.spec.aggregate or any(has_aggregate(a) for a in node.args)
    if isinstance(node, Equation):
        return any(has_aggregate(i) for i in node.items)
    return False


def is_plain_field(text: str) -> bool:
    """A field path (``email_primary.email``, ``gender_id:label``), not an expression."""
    return re.fullmatch(r"[A-Za-z_][\w.]*(:\w+)?", text) is not None


# ---- parsing -----------------------------------------------------------------------------
def parse(expression: str, *, alias: bool = True) -> Expr:
    """CiviCRM's ``SqlExpression::convert($expression, $parseAlias)``."""
    pos = expression.rfind(" AS ") if alias else -1
    text = expression[:pos] if pos > 0 else expression
    name = munge(expression[pos + 4 :]) if pos > 0 else None
    try:
        return Expr(_convert(text, expression), text, name)
    except RecursionError:
        # nesting deeper than Python's stack (PHP would run out of memory): refuse it
        raise CiviError(f"Unable to parse sql expression: {expression}") from None


def _convert(text: str, whole: str, permitted: tuple[type, ...] | None = None) -> Node:
    bracket = text.find("(")
    first, last = text[:1], text[-1:]
    node: Node
    if first == "(" and last == ")":
        node = _equation(text[1:-1].strip())
    elif bracket > 0 and last == ")":
        fn = text[:bracket]
        if fn != fn.upper():
            raise CiviError("Sql function must be uppercase.")
        if fn not in FUNCTIONS:
            raise CiviError(f"Unable to parse sql expression: {whole}")
        node = _function(fn, text[bracket + 1 : -1].strip())
    elif len(text) >= 2 and first == last and first in "\"'":
        node = String(_unquote(text[1:-1]))
    elif text == "NULL":
        node = Null()
    elif text == "*":
        node = Wild()
    elif _NUMERIC.match(text):
        number = float(text)
        node = Number(int(number) if re.fullmatch(r"\s*[+-]?\d+", text) else number)
    else:
        node = FieldRef(text)
    if permitted is not None and not isinstance(node, permitted):
        raise CiviError("Illegal sql expression.")
    return node


def _unquote(body: str) -> str:
    return re.sub(r"\\(.)", r"\1", body)


def _capture(arg: str) -> str:
    """The first expression of ``arg``: up to a space or comma outside quotes and brackets
    (``SqlExpression::captureExpression``)."""
    quote: str | None = None
    depth = 0
    escaped = False
    item = ""
    for char in arg:
        if not escaped and char in "\"'":
            if quote is None:
                quote = char
            elif char == quote:
                quote = None
        if quote is None:
            if char in ", " and depth == 0:
                return item
            if char == "(":
                depth += 1
            elif char == ")" and depth:
                depth -= 1
        item += char
        escaped = char == "\\" and (len(item) - len(item.rstrip("\\"))) % 2 == 1
    return item


def _keyword(arg: str, words: tuple[str, ...]) -> tuple[str | None, str]:
    for word in words:
        if arg.startswith(word + " ") or arg.rstrip() == word:
            return word, arg[len(word) :].lstrip()
    return None, arg


def _expressions(
    arg: str, whole: str, most: int, permitted: tuple[type, ...] | None = None
) -> tuple[list[Node], str]:
    out: list[Node] = []
    arg = arg.lstrip()
    while arg:
        item = _capture(arg)
        if not item:
            break
        arg = arg[len(item) :].lstrip()
        out.append(_convert(item, whole, permitted))
        if len(out) < most and arg.startswith(","):
            arg = arg[1:].lstrip()
        else:
            break
    return out, arg


_OPERANDS = (FieldRef, String, Number, Null)


def _equation(arg: str) -> Equation:
    items: list[Node | str] = []
    ops = (*ARITHMETIC, *COMPARISON)
    while arg:
        nodes, arg = _expressions(arg, arg, 1, _OPERANDS)
        items += nodes
        op, arg = _keyword(arg, ops)
        if op:
            items.append(op)
        elif not nodes:
            raise CiviError("Illegal sql expression.")
    return Equation(tuple(items))


def _function(name: str, arg: str) -> Func:
    spec = FUNCTIONS[name]
    distinct = False
    unit = None
    if spec.distinct:
        flag, arg = _keyword(arg, ("DISTINCT",))
        distinct = flag is not None
    if name == "EXTRACT":
        unit, arg = _keyword(arg, EXTRACT_UNITS)
        if unit is None:
            raise CiviError("Missing param 1 for SQL function EXTRACT")
        word, arg = _keyword(arg, ("FROM",))
        if word is None:
            raise CiviError("Missing param 2 for SQL function EXTRACT")
    args, arg = _expressions(arg, arg, spec.max_args) if spec.max_args else ([], arg)
    if len(args) < spec.min_args:
        if not args:
            raise CiviError(f"Too few arguments to param 1 for SQL function {name}")
        raise CiviError(f"Missing param {len(args) + 1} for SQL function {name}")
    order: list[tuple[Node, str]] = []
    separator = None
    if spec.order_by:
        word, arg = _keyword(arg, ("ORDER BY",))
        while word:
            nodes, arg = _expressions(arg, arg, 1)
            direction, arg = _keyword(arg, ("ASC", "DESC"))
            order += [(n, direction or "ASC") for n in nodes]
            word = None
            if arg.startswith(","):
                arg, word = arg[1:].lstrip(), "ORDER BY"
    if spec.separator:
        word, arg = _keyword(arg, ("SEPARATOR",))
        if word:
            nodes, arg = _expressions(arg, arg, 1, (String,))
            separator = nodes[0].value if nodes and isinstance(nodes[0], String) else None
    if arg.strip():
        raise CiviError(f"Too many arguments given for SQL function {name}")
    return Func(name, tuple(args), distinct, tuple(order), separator, unit)
