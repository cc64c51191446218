"""APIv4 SQL expressions (``select``, ``groupBy``, ``orderBy``, ``having``, where operands), parsed
strictly into a small tree so that every field an expression reads is known.

CiviCRM accepts far more than field names there: ``UPPER(api_key) AS u`` returns a credential
under another name. The grammar below is the subset of CiviCRM's that clients use (its 38
functions, arithmetic and comparisons, literals, ``*`` wildcards, ``AS`` aliases); anything else
is refused, and the expression is forwarded re-rendered from the tree, never as the client
spelled it, so that what was checked is exactly what CiviCRM parses.

Fail-closed choices: string literals may not contain backslashes or their own quote (parsers
that disagree on escapes could otherwise read a field where this one reads text); keywords are
recognised only in upper case and only where they belong, so a lower-case ``as`` or ``from`` is
taken for a field name (and then refused as unknown) rather than skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from gateway.core.errors import GatewayError, from_civicrm, invalid_request

# CiviCRM 5.77's Civi\Api4\Query\SqlFunction* classes.
FUNCTIONS = frozenset(
    {
        "ABS",
        "AVG",
        "BINARY",
        "COALESCE",
        "CONCAT",
        "CONCAT_WS",
        "COUNT",
        "CURDATE",
        "DATE",
        "DATEDIFF",
        "DAYOFWEEK",
        "DAYSTOANNIV",
        "EXTRACT",
        "GREATEST",
        "GROUP_CONCAT",
        "GROUP_FIRST",
        "IF",
        "IFNULL",
        "ISNULL",
        "LEAST",
        "LEFT",
        "LOWER",
        "MAX",
        "MIN",
        "MONTH",
        "NEXTANNIV",
        "NOW",
        "NULLIF",
        "QUARTER",
        "RAND",
        "REPLACE",
        "RIGHT",
        "ROUND",
        "SUBSTRING",
        "SUM",
        "TIME",
        "UPPER",
        "YEAR",
    }
)
AGGREGATES = frozenset({"AVG", "COUNT", "GROUP_CONCAT", "GROUP_FIRST", "MAX", "MIN", "SUM"})
_UNITS = frozenset(
    {
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
    }
)
_OPERATORS = ("<=", ">=", "!=", "<>", "+", "-", "*", "/", "=", "<", ">")

# A field path: names joined by dots (implicit joins, join aliases, custom groups), an optional
# ``:suffix`` (``contact_type:label``), or a ``.*`` wildcard at the end.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
FIELD_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*(?::{_NAME})?|(?:{_NAME}\.)*\*")
ALIAS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^'\\]*'|\"[^\"\\]*\")|(?P<num>\d+(?:\.\d+)?)"
    rf"|(?P<name>(?:{_NAME}\.)*(?:{_NAME}(?::{_NAME})?|\*))"
    r"|(?P<op><=|>=|!=|<>|[-+*/=<>])|(?P<punct>[(),]))"
)
MAX_LENGTH = 1000
MAX_NODES = 200
# Parentheses, function calls and unary minus signs inside one another. The parser recurses once
# per level, so a bound far below Python's recursion limit keeps input like 480 "(" or 990 "-"
# a 400 rather than a RecursionError; real expressions nest a few levels.
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Node:
    """One piece of an expression: ``field``, ``literal``, ``func``, ``binop``, ``neg``,
    ``paren`` or ``keyword``; ``args`` are its children in order."""

    kind: str
    value: str
    args: tuple[Node, ...] = ()


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed expression: its tree, its ``AS`` alias and the canonical text forwarded."""

    root: Node
    alias: str | None
    text: str

    def nodes(self) -> Iterator[Node]:
        """Every node of the tree, in order."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.args))

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field path the expression reads, in order (wildcards included)."""
        if not self.root.args:  # the common case, a bare field: no walk
            return (self.root.value,) if self.root.kind == "field" else ()
        return tuple(n.value for n in self.nodes() if n.kind == "field")

    @property
    def functions(self) -> tuple[str, ...]:
        if not self.root.args:
            return (self.root.value,) if self.root.kind == "func" else ()
        return tuple(n.value for n in self.nodes() if n.kind == "func")

    @property
    def is_field(self) -> bool:
        """A bare field (or wildcard) with no alias."""
        return self.root.kind == "field" and self.alias is None

    @property
    def is_aggregate(self) -> bool:
        return any(f in AGGREGATES for f in self.functions)

    @property
    def key(self) -> str:
        """The result key CiviCRM gives this expression's value."""
        if self.alias:
            return self.alias
        if self.root.kind == "field":
            return self.root.value
        if self.root.kind == "func" and len(self.root.args) == 1 and self.root.args[0].kind == "field":
            return f"{self.root.value}:{self.root.args[0].value}"
        return self.text


def parse_error(text: str) -> GatewayError:
    # CiviCRM's own words, so that the answer is the same whether the gateway or CiviCRM
    # refuses it (and whether CiviCRM would have hidden the message).
    return from_civicrm(f"Unable to parse sql expression: {text}", status=500, error_code=0)


def too_deep(text: str) -> GatewayError:
    return invalid_request(
        f"Expression nested deeper than {MAX_DEPTH} levels (parentheses, function calls and "
        f"unary minus signs count): {text[:80]!r}{'...' if len(text) > 80 else ''}"
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise parse_error(text)
            kind = match.lastgroup or ""
            value = match.group(kind)
            if (
                value == "*"
                and self.tokens
                and (self.tokens[-1][0] in ("name", "num", "str") or self.tokens[-1] == ("punct", ")"))
            ):
                kind = "op"  # after an operand, "*" multiplies
            self.tokens.append((kind, value))
            pos = match.end()
        self.pos = 0
        self.nodes = 0

    # --- token helpers --------------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise parse_error(self.text)
        self.pos += 1
        return token

    def expect(self, kind: str, value: str | None = None) -> str:
        got_kind, got = self.take()
        if got_kind != kind or (value is not None and got != value):
            raise parse_error(self.text)
        return got

    def at(self, kind: str, value: str | None = None) -> bool:
        token = self.peek()
        return token is not None and token[0] == kind and (value is None or token[1] == value)

    def node(self, kind: str, value: str, args: tuple[Node, ...] = ()) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise parse_error(self.text)
        return Node(kind, value, args)

    # --- grammar --------------------------------------------------------------------------
    def top(self, allow_alias: bool) -> tuple[Node, str | None]:
        root = self.expr()
        alias = None
        if self.at("name", "AS"):
            if not allow_alias:
                raise parse_error(self.text)
            self.take()
            alias = self.expect("name")
            if not ALIAS_RE.fullmatch(alias):
                raise parse_error(self.text)
        if self.peek() is not None:
            raise parse_error(self.text)
        return root, alias

    def expr(self) -> Node:
        left = self.term()
        while self.at("op"):
            op = self.take()[1]
            left = self.node("binop", op, (left, self.term()))
        return left

    def term(self) -> Node:
        kind, value = self.take()
        if kind in ("str", "num"):
            return self.node("literal", value)
        if kind == "name" and value in ("NULL", "TRUE", "FALSE"):
            return self.node("literal", value)
        if kind == "name" and not self.at("punct", "("):
            return self.node("field", value)
        # Everything below recurses: one level deeper, checked before going down.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise too_deep(self.text)
        if kind == "op" and value == "-":
            node = self.node("neg", "-", (self.term(),))
        elif kind == "punct" and value == "(":
            inner = self.expr()
            self.expect("punct", ")")
            node = self.node("paren", "()", (inner,))
        elif kind == "name":
            node = self.function(value)
        else:
            raise parse_error(self.text)
        self.depth -= 1
        return node

    def function(self, name: str) -> Node:
        if name not in FUNCTIONS:
            raise parse_error(self.text)
        self.expect("punct", "(")
        args: list[Node] = []
        if name == "EXTRACT":
            unit = self.expect("name")
            if unit not in _UNITS:
                raise parse_error(self.text)
            self.expect("name", "FROM")
            args = [self.node("keyword", unit), self.expr()]
            self.expect("punct", ")")
            return self.node("func", name, tuple(args))
        if self.at("name", "DISTINCT") and name in AGGREGATES:
            self.take()
            args.append(self.node("keyword", "DISTINCT"))
        if not self.at("punct", ")"):
            args.append(self.expr())
            while self.at("punct", ","):
                self.take()
                args.append(self.expr())
        if name == "GROUP_CONCAT":
            if self.at("name", "ORDER"):
                self.take()
                self.expect("name", "BY")
                order = [self.expr()]
                direction = self._direction()
                order_args = [order[0], *direction]
                args.append(self.node("keyword", "ORDER BY", tuple(order_args)))
            if self.at("name", "SEPARATOR"):
                self.take()
                kind, value = self.take()
                if kind != "str":
                    raise parse_error(self.text)
                args.append(self.node("keyword", "SEPARATOR", (self.node("literal", value),)))
        self.expect("punct", ")")
        return self.node("func", name, tuple(args))

    def _direction(self) -> list[Node]:
        if self.at("name", "ASC") or self.at("name", "DESC"):
            return [self.node("keyword", self.take()[1])]
        return []


def render(node: Node) -> str:
    """The canonical text of a tree (what is forwarded to CiviCRM)."""
    if node.kind in ("field", "literal"):
        return node.value
    if node.kind == "neg":
        return "-" + render(node.args[0])
    if node.kind == "paren":
        return "(" + render(node.args[0]) + ")"
    if node.kind == "binop":
        return f"{render(node.args[0])} {node.value} {render(node.args[1])}"
    if node.kind == "keyword":
        if node.value == "ORDER BY":
            return "ORDER BY " + " ".join(render(a) for a in node.args)
        if node.value == "SEPARATOR":
            return "SEPARATOR " + render(node.args[0])
        return node.value
    # func
    if node.value == "EXTRACT":
        return f"EXTRACT({node.args[0].value} FROM {render(node.args[1])})"
    parts: list[str] = []
    plain: list[str] = []
    for arg in node.args:
        if arg.kind == "keyword" and arg.value == "DISTINCT":
            parts.append("DISTINCT ")
        elif arg.kind == "keyword":
            plain.append(render(arg))
        else:
            parts.append(("" if not parts or parts[-1] == "DISTINCT " else ", ") + render(arg))
    inner = "".join(parts)
    if plain:
        inner = " ".join([inner, *plain]) if inner else " ".join(plain)
    return f"{node.value}({inner})"


def _wildcards_misplaced(node: Node, parent: Node | None) -> bool:
    """``*`` reads every field: only a select item, or ``COUNT(*)``, may be one."""
    if node.kind == "field" and node.value.endswith("*"):
        return not (
            parent is not None and parent.kind == "func" and parent.value == "COUNT" and node.value == "*"
        )
    return any(_wildcards_misplaced(child, node) for child in node.args)


def parse(text: object, *, allow_alias: bool = True, allow_wildcard: bool = False) -> Expr:
    """Parse one expression; a GatewayError (CiviCRM's "Unable to parse sql expression")
    for anything outside the grammar. ``allow_wildcard``: a bare ``*`` / ``join.*`` (select).

    An :class:`Expr` is immutable, and clients send the same few expressions over and over:
    each is parsed once (a failure is not kept, and raises every time)."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_LENGTH:
        raise parse_error(str(text)[:200])
    return _parse(text, allow_alias, allow_wildcard)


@lru_cache(maxsize=4096)
def _parse(text: str, allow_alias: bool, allow_wildcard: bool) -> Expr:
    stripped = text.strip()
    if FIELD_RE.fullmatch(stripped):  # the common case: a plain field name
        if stripped.endswith("*") and not allow_wildcard:
            raise parse_error(stripped)
        return Expr(Node("field", stripped), None, stripped)
    parser = _Parser(stripped)
    root, alias = parser.top(allow_alias)
    if _wildcards_misplaced(root, None):
        raise parse_error(stripped)
    body = render(root)
    return Expr(root, alias, f"{body} AS {alias}" if alias else body)
