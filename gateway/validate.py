"""Checks of a parsed call against CiviCRM's own metadata, before anything is sent.

A CiviCRM user without "view debug output" (the safe way to run the gateway) gets every error as
the same masked HTTP 500. The gateway therefore finds the client mistakes itself, with the
same problem type and CiviCRM's own wording whether or not CiviCRM would have hidden them:
unknown entities and actions (in :mod:`gateway.schema`), unknown fields (in
:mod:`gateway.fields`), and here required params, mandatory values and value types.
"""

from __future__ import annotations

import re
from typing import Any

from .call import Call, Condition, Group
from .errors import GatewayError, from_civicrm
from .fields import FieldRef
from .schema import FieldInfo, Schema

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
}
_INT = re.compile(r"-?\d{1,19}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _civicrm_error(message: str) -> GatewayError:
    return from_civicrm(message, status=500, error_code=0)


def _has(call: Call, name: str) -> bool:
    attr = {"where": call.where, "records": call.records, "values": call.values}.get(name)
    if name in ("where", "records", "values"):
        return attr is not None
    return call.options.get(name) is not None


def check_required(call: Call) -> None:
    """Required params of the standard actions, in CiviCRM's words."""
    action = call.action.lower()
    if action == "update":
        if not call.values:
            raise _civicrm_error('Parameter "values" is required.')
        if call.where is None and "id" not in call.values:
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
    return True


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
    action = call.action.lower()
    if action not in ("create", "save"):
        return
    create_fields = await schema.fields(call.entity, action="create")
    mandatory = [f.name for f in create_fields.values() if f.required and not f.has_default]
    for row in rows:
        merged = {**(call.defaults or {}), **row}
        if action == "save" and "id" in merged:
            continue  # an update of an existing record
        given = {k.split(":", 1)[0] for k, v in merged.items() if v not in (None, "")}
        missing = [name for name in mandatory if name not in given]
        if missing:
            raise _civicrm_error(
                f"Mandatory values missing from Api4 {call.entity}::{call.action}: {', '.join(missing)}"
            )


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


async def check(call: Call, refs: list[FieldRef], schema: Schema) -> None:
    for sub, depth in call.walk():
        if sub.version != 4:
            continue
        check_required(sub)
        await check_values(sub, schema)
        check_filters(sub, refs, await schema.fields(sub.entity))
        if depth == 0:
            await check_target(sub, schema)
