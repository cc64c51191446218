"""Checks of a parsed call against CiviCRM's own metadata, before anything is sent.

A CiviCRM user without "view debug output" (the safe way to run the gateway) gets every error as
the same masked HTTP 500. The gateway therefore finds the client mistakes itself, with the
same problem type and CiviCRM's own wording whether or not CiviCRM would have hidden them:
unknown entities and actions (in :mod:`gateway.core.schema`), unknown fields (in
:mod:`gateway.core.fields`), and here required params, mandatory values and value types.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from gateway.core.call import Call, Condition, Group
from gateway.core.errors import GatewayError, from_civicrm, invalid_request
from gateway.core.fields import FieldRef
from gateway.core.schema import FieldInfo, Schema

# Params an action cannot run without (CiviCRM's getActions "required").
REQUIRED_PARAMS = {
    "delete": ("where",),
    "replace": ("records", "where"),
    "save": ("records",),
    "checkaccess": ("action", "values"),
    "getchecksum": ("contactId",),
    "validatechecksum": ("checksum", "contactId"),
    "getduplicates": ("dedupeRule",),
    "mergeduplicates": ("contactId", "duplicateId", "mode"),
    "export": ("id",),
    "set": ("values",),
    "getcoordinates": ("address",),  # Address.getCoordinates (5.77: 'Parameter "address" is required.')
}
_INT = re.compile(r"-?\d{1,19}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_DATE = re.compile(r"[A-Za-z0-9 :./+-]{0,40}")


def _civicrm_error(message: str) -> GatewayError:
    return from_civicrm(message, status=500, error_code=0)


def _has(call: Call, name: str) -> bool:
    """The param is given and not empty (see :func:`_php_empty`, defined below)."""
    if name in ("where", "records", "values"):
        attr = {"where": call.where, "records": call.records, "values": call.values}[name]
        return not _php_empty(attr)
    return not _php_empty(call.options.get(name))


def check_required(call: Call) -> None:
    """Required params of the standard actions, in CiviCRM's words."""
    action = call.action.lower()
    if action == "update":
        if not call.values:
            raise _civicrm_error('Parameter "values" is required.')
        if _php_empty(call.where) and "id" not in call.values:
            raise _civicrm_error('Parameter "where" is required unless primary keys are supplied in values.')
    for name in REQUIRED_PARAMS.get(action, ()):
        if not _has(call, name):
            raise _civicrm_error(f'Parameter "{name}" is required.')


def _type_ok(info: FieldInfo, value: Any) -> bool:
    if value is None or (isinstance(value, str) and value.startswith("$")):
        return True  # null clears a field; "$x" is a chain reference resolved by CiviCRM
    kind = info.data_type
    if isinstance(value, list):
        return all(_type_ok(info, v) for v in value)
    if kind == "Integer":
        # A number past 64 bits arrives as a float (JSON has one number type): whole is fine.
        return (
            (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, float) and value.is_integer())
            or (isinstance(value, str) and bool(_INT.fullmatch(value.strip())))
        )
    if kind == "Boolean":
        return isinstance(value, bool) or value in (0, 1, "0", "1", "true", "false", "")
    if kind in ("Float", "Money"):
        return (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and bool(_NUMBER.fullmatch(value.strip()))
        )
    if kind in ("Date", "Timestamp", "Datetime"):
        # what PHP's date parsing can read (2024-05-06, 20240506100000, "now", "+1 day");
        # anything else fails inside CiviCRM, masked for a least-privileged user
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and bool(_DATE.fullmatch(value))
        )
    return True


def _never_an_id(value: Any) -> bool:
    """A whole number that no record has as its id (0 or less)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and value <= 0


def _describe(kind: str | None) -> str:
    return {
        "Integer": "a whole number",
        "Boolean": "true or false",
        "Float": "a number",
        "Money": "a number",
    }.get(kind or "", "a valid value")


async def check_values(call: Call, schema: Schema) -> None:
    """Value types of the fields a write sets, and (create) the mandatory ones."""
    if call.version != 4:
        return
    rows: list[dict[str, Any]] = []
    if call.values is not None or call.action.lower() == "create":
        rows.append(call.values or {})
    rows.extend(call.records or ())
    if not rows:
        return
    fields = await schema.fields(call.entity)
    for row in rows:
        merged = {**(call.defaults or {}), **row}
        for key, value in merged.items():
            info = fields.get(key)
            if info is not None and ":" not in key and not _type_ok(info, value):
                raise GatewayError(
                    "civicrm-validation",
                    f"{call.entity}.{key} must be {_describe(info.data_type)}, not {value!r:.80}.",
                )
            if info is not None and ":" not in key and info.fk_entity and _never_an_id(value):
                # CiviCRM would fail on the foreign key ("DB Error: constraint violation"),
                # an error it hides from a user without 'view debug output'.
                raise GatewayError(
                    "civicrm-validation",
                    f"{call.entity}.{key} refers to a {info.fk_entity} by its id, and {value!r:.80} "
                    "is no record's id (ids are positive whole numbers).",
                )
    action = call.action.lower()
    if action not in ("create", "save"):
        return
    create_fields = await schema.fields(call.entity, action="create")
    conditions = await required_if(schema, call.entity)
    for row in rows:
        merged = {**(call.defaults or {}), **row}
        if action == "save" and "id" in merged:
            continue  # an update of an existing record
        given = {k.split(":", 1)[0] for k, v in merged.items() if v not in (None, "")}
        plain = {k.split(":", 1)[0]: v for k, v in merged.items()}
        # As CiviCRM's checkRequiredFields: in field order, a required field without a
        # default, or one whose required_if holds for the values given.
        missing = [
            f.name
            for f in create_fields.values()
            if f.name not in given
            and (
                (f.required and not f.has_default)
                or (f.name in conditions and evaluate_condition(conditions[f.name], plain) is True)
            )
        ]
        if missing:
            raise _civicrm_error(
                f"Mandatory values missing from Api4 {call.entity}::{call.action}: {', '.join(missing)}"
            )


# required_if per entity, per Schema (one per identity, renewed with the metadata).
_REQUIRED_IF: weakref.WeakKeyDictionary[Schema, dict[str, dict[str, str]]] = weakref.WeakKeyDictionary()


async def required_if(schema: Schema, entity: str) -> dict[str, str]:
    """Field name -> CiviCRM's ``required_if`` condition for a create (5.77's getFields:
    Tag's name is required when no label is given and its label when no name is;
    ``TitleFieldSpecProvider`` does the same for name and title). A CiviCRM whose getFields
    does not know the key has none to check."""
    cache = _REQUIRED_IF.setdefault(schema, {})
    if entity not in cache:
        try:
            # Schema.fields does not carry required_if (gateway.core.schema): asked here, once.
            rows = await schema._call(
                entity,
                "getFields",
                {"select": ["name", "required_if"], "action": "create", "loadOptions": False},
            )
        except GatewayError as exc:
            if exc.status >= 500:
                raise
            rows = []
        cache[entity] = {
            r["name"]: r["required_if"]
            for r in rows
            if isinstance(r, dict)
            and isinstance(r.get("name"), str)
            and isinstance(r.get("required_if"), str)
            and r["required_if"].strip()
        }
    return cache[entity]


_TOKEN = re.compile(
    r"""\s*(?:(?P<op>&&|\|\||!==|===|!=|==|!|\(|\))|(?P<fn>empty)\b|\$values\.(?P<field>\w+)"""
    r"""|"(?P<dq>[^"\\]*)"|'(?P<sq>[^'\\]*)'|(?P<num>-?\d+(?:\.\d+)?)|(?P<lit>true|false|null)\b)""",
    re.IGNORECASE,
)


def _php_empty(value: Any) -> bool:
    """PHP's ``empty()``: CiviCRM's required-param check and ``required_if`` use it (an empty
    ``where`` or ``records`` list is a missing one)."""
    return value in (None, "", "0", 0, False) or value == [] or value == {} or value == ()


def evaluate_condition(expression: str, values: dict[str, Any]) -> bool | None:
    """CiviCRM's ``required_if`` (a small expression over ``$values``: ``empty($values.x)``,
    ``!``, ``&&``, ``||``, ``===``/``!==`` with a literal, parentheses), or ``None`` when it
    uses anything else: then the gateway cannot tell, and leaves it to CiviCRM."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return None
        pos = match.end()
        if match.group("op"):
            tokens.append(("op", match.group("op")))
        elif match.group("fn"):
            tokens.append(("empty", None))
        elif match.group("field") is not None:
            tokens.append(("value", values.get(match.group("field"))))
        elif match.group("dq") is not None or match.group("sq") is not None:
            tokens.append(
                ("value", match.group("dq") if match.group("dq") is not None else match.group("sq"))
            )
        elif match.group("num") is not None:
            number = match.group("num")
            tokens.append(("value", float(number) if "." in number else int(number)))
        else:
            tokens.append(("value", {"true": True, "false": False, "null": None}[match.group("lit").lower()]))
    at = 0

    class _Unknown(Exception):
        pass

    def peek() -> tuple[str, Any] | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal at
        if at >= len(tokens):
            raise _Unknown
        at += 1
        return tokens[at - 1]

    def expect(op: str) -> None:
        if take() != ("op", op):
            raise _Unknown

    def primary() -> Any:
        kind, value = take()
        if kind == "op" and value == "!":
            return not _truthy(primary())
        if kind == "op" and value == "(":
            inner = disjunction()
            expect(")")
            return inner
        if kind == "empty":
            expect("(")
            inner = disjunction()
            expect(")")
            return _php_empty(inner)
        if kind == "value":
            return value
        raise _Unknown

    def comparison() -> Any:
        left = primary()
        nxt = peek()
        if nxt is not None and nxt[0] == "op" and nxt[1] in ("===", "!==", "==", "!="):
            take()
            right = primary()
            same = left == right if nxt[1] in ("==", "!=") else (type(left) is type(right) and left == right)
            return same if nxt[1] in ("===", "==") else not same
        return left

    def conjunction() -> Any:
        result = _truthy(comparison())
        while peek() == ("op", "&&"):
            take()
            result = _truthy(comparison()) and result
        return result

    def disjunction() -> Any:
        result = conjunction()
        while peek() == ("op", "||"):
            take()
            result = _truthy(conjunction()) or _truthy(result)
        return result

    try:
        result = disjunction()
    except _Unknown:
        return None
    if at != len(tokens):
        return None
    return _truthy(result)


def _truthy(value: Any) -> bool:
    return not _php_empty(value)


def check_filters(call: Call, refs: list[FieldRef], fields: dict[str, FieldInfo]) -> None:
    """Where values of the wrong type for a plain field (``id = "abc"``)."""
    stack = list(call.where or ())
    while stack:
        clause = stack.pop()
        if isinstance(clause, Group):
            stack.extend(clause.clauses)
            continue
        assert isinstance(clause, Condition)
        left = clause.left
        if (
            not left.is_field
            or clause.right is not None
            or clause.op
            not in ("=", "!=", "<>", "<", ">", "<=", ">=", "IN", "NOT IN", "BETWEEN", "NOT BETWEEN")
        ):
            continue
        info = fields.get(left.text)
        if info is not None and not _type_ok(info, clause.value):
            raise GatewayError(
                "civicrm-bad-request",
                f"Invalid value for {call.entity}.{left.text} in where: expected "
                f"{_describe(info.data_type)}, got {clause.value!r:.80}.",
            )


def _target_id(call: Call) -> Any:
    """The one id an update or delete names (``where id = N``, or ``id`` in update values)."""
    where = call.where or ()
    if (
        len(where) == 1
        and isinstance(where[0], Condition)
        and where[0].left.text == "id"
        and where[0].op == "="
        and where[0].right is None
    ):
        return where[0].value
    if not where and call.action.lower() == "update" and call.values:
        return call.values.get("id")
    return None


async def check_target(call: Call, schema: Schema) -> None:
    """An update of one record by id: CiviCRM refuses it when the record does not
    exist ("Expected one X but found 0"), a refusal it hides from a user without debug rights,
    so the gateway looks first (one cheap get, as the call's own identity)."""
    if call.action.lower() != "update":  # a delete of a missing id answers [] (5.77)
        return
    target = _target_id(call)
    if target is None or (isinstance(target, str) and target.startswith("$")):
        return
    rows = await schema.lookup(call.entity, target)
    if not rows:
        raise _civicrm_error(f"Expected one {call.entity} but found 0")


def check_repeated_names(call: Call) -> None:
    """Records of one save that repeat a ``name`` or ``label``: CiviCRM keeps names unique
    (a label makes the name), so the second fails on the database's unique key, an error a
    least-privileged user only sees masked. Said here instead."""
    for key in ("name", "label"):
        seen: set[str] = set()
        for record in call.records or ():
            value = record.get(key)
            if isinstance(value, str) and value:
                if value in seen:
                    raise invalid_request(
                        f"Records repeat the {key} {value[:80]!r}; CiviCRM keeps names unique: "
                        "one record each."
                    )
                seen.add(value)


async def check(call: Call, refs: list[FieldRef], schema: Schema) -> None:
    for sub, depth in call.walk():
        if sub.version != 4:
            continue
        check_required(sub)
        check_repeated_names(sub)
        await check_values(sub, schema)
        check_filters(sub, refs, await schema.fields(sub.entity))
        if depth == 0:
            await check_target(sub, schema)
