"""Answers checked against the call: what CiviCRM answers is passed on only if the parsed call
explains every key of it, and never if it holds the gateway's own credentials.

Stripping credential keys from answers (``gateway.core.results``) catches what it knows by name;
CiviCRM can put a field's value where no name is looked at (a chain ``index`` keys a chained
result by a field's values), or answer more than was asked. So the answer is held against the
call instead, and what the call does not explain is refused (502 ``upstream-unexpected-answer``,
logged with key names, never values):

- an APIv4 ``get``: the selected expressions by CiviCRM's key for each (``display_name``,
  ``email_primary.email``, ``contact_type:label``, the alias, ``UPPER:display_name`` for a
  function without one), ``id`` (added unless ``groupBy``), ``*`` / ``x.*`` / no select: any
  key of that shape that is not a credential; chain names;
- a chain's value: a list of records, one record for an integer index, or an object keyed by
  the index field's values (the keys are data: the index must name a plain, non-credential
  field; which fields a client may use is the policy's business);
- an APIv3 ``get``: the returned fields, ``id``, chain keys and the companions CiviCRM 5.77
  adds to a return (``email`` brings ``email_id``, ``gender_id`` brings ``gender``); no
  return: any plain key that is not a credential;
- other actions' answers are not modelled key by key; their chains are checked as above.

And whatever the action: no key or value anywhere in the answer may hold one of the secrets
the gateway holds (``gateway.core.redact.REDACTOR``: its CiviCRM API key and site key, passwords,
the clients' own CiviCRM keys), unless the call itself carried that value (a create echoing
what was sent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.call import Call
from gateway.core.credentials import is_credential_key
from gateway.core.errors import GatewayError
from gateway.core.expressions import FIELD_RE, Expr
from gateway.core.redact import REDACTOR

log = logging.getLogger("gateway.core.answercheck")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLAIN = re.compile(_NAME)
_CUSTOM = re.compile(rf"{_NAME}\.{_NAME}")  # custom.*: "Group_name.field_name"
_INTEGER = re.compile(r"-?\d+")
# The rate-limit storage URL is a secret (a Redis URL may hold a password); its default is not.
_NOT_SECRETS = frozenset({"memory://"})
# Setting.get answers {name, value} records whatever it selects (select names settings).
_SETTING_KEYS = frozenset({"name", "value", "domain_id", "contact_id"})
# APIv3 Contact.get companions that do not follow the name_id / name + s patterns (5.77).
_V3_ALSO = {
    "prefix_id": ("individual_prefix",),
    "suffix_id": ("individual_suffix",),
    "preferred_language": ("languages",),
}
# ... and what every APIv3 Contact.get may carry (is_deleted under its v3 name).
_V3_CONTACT = ("contact_is_deleted",)
_V3_ENVELOPE = frozenset({"is_error", "version", "count", "id", "values", "undefined_fields"})
_MAX_REPORTED = 20


def unexpected(detail: str) -> GatewayError:
    return GatewayError("upstream-unexpected-answer", detail)


@dataclass
class _Shape:
    """The keys one call's records may hold."""

    exact: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)  # "x." of "x.*"; "" for "*"
    custom: bool = False  # custom.*
    open: bool = False  # not modelled: any key
    companions: bool = False  # APIv3 returns: any "..._id" key too


def _munge(text: str) -> str:
    """CRM_Utils_String::munge, as CiviCRM names an expression without an alias."""
    return re.sub(r"[^a-zA-Z0-9_]+", "_", text.strip())[:256]


def expression_keys(expr: Expr) -> set[str]:
    """The keys CiviCRM may give one selected expression's value."""
    if expr.alias:
        return {expr.alias}
    keys = {expr.key}
    root = expr.root
    if root.kind == "func":  # SqlFunction::getAlias: every field inside, joined by "_"
        keys.add(f"{root.value}:{'_'.join(f for f in expr.fields if f != '*')}")
    elif root.kind != "field":  # SqlEquation / SqlExpression::getAlias
        keys.update({_munge(expr.text.strip(" ()")), _munge(expr.text)})
    return keys


def _v4_shape(call: Call) -> _Shape:
    shape = _Shape()
    if not call.is_get:
        shape.open = True
        return shape
    if call.entity == "Setting":
        shape.exact |= _SETTING_KEYS
        return shape
    if not call.group_by or any(e.text == "id" for e in call.group_by):
        shape.exact.add("id")
    for expr in call.select or [None]:
        if expr is None or (expr.is_field and expr.text.endswith("*")):
            text = expr.text if expr is not None else "*"
            if text == "custom.*":
                shape.custom = True
            else:
                shape.prefixes.add(text[:-1])
        else:
            shape.exact |= expression_keys(expr)
    return shape


def _v3_shape(call: Call) -> _Shape:
    shape = _Shape()
    if call.action not in ("get", "getsingle"):
        shape.open = True
    elif call.returns is None:
        shape.prefixes.add("")
    else:
        shape.companions = True
        shape.exact.add("id")
        if call.entity == "Contact":
            shape.exact.update(_V3_CONTACT)
            # Contact's query answers the fields it filtered on too (the call's own; dropped
            # from what is passed on by without_additions)
            shape.exact.update(call.filters)
        shape.exact |= _v3_return_keys(call.returns)
    return shape


def _v3_return_keys(names: Iterable[str]) -> set[str]:
    """The keys APIv3 may answer for the fields ``names``: each with its companions."""
    keys: set[str] = set()
    for name in names:
        keys.update({name, name + "_id", name + "s", name + "_name", *_V3_ALSO.get(name, ())})
        if name.endswith("_id"):
            keys.add(name[:-3])
    return keys


def _allowed(shape: _Shape, key: str, credentials: bool = False) -> bool:
    if key in shape.exact:
        return True  # named by the call (a credential only if the policy let the call name it)
    if shape.open:
        return True
    if is_credential_key(key) and not credentials:
        return False
    if shape.companions and key.endswith("_id") and _PLAIN.fullmatch(key):
        return True
    if shape.custom and _CUSTOM.fullmatch(key):
        return True
    for prefix in shape.prefixes:
        if key.startswith(prefix) and _PLAIN.fullmatch(key[len(prefix) :]):
            return True
    return False


class _Checker:
    def __init__(self, credentials: bool = False) -> None:
        self.credentials = credentials  # the client may see credential fields
        self.problems: list[str] = []
        self._shapes: dict[tuple[int, str | None], _Shape] = {}  # a chain's, once per answer

    def shape(self, call: Call, index: str | None) -> _Shape:
        key = (id(call), index)
        if key not in self._shapes:
            shape = _v4_shape(call) if call.version == 4 else _v3_shape(call)
            if index is not None:
                shape.exact.add(index)  # CiviCRM selects the index field to key the result by
            self._shapes[key] = shape
        return self._shapes[key]

    def note(self, problem: str) -> None:
        if len(self.problems) < _MAX_REPORTED and problem not in self.problems:
            self.problems.append(problem)

    def records(self, call: Call, records: Iterable[Any], where: str, *, index: str | None = None) -> None:
        shape = self.shape(call, index)
        chains = self._chains(call)
        # Keys found allowed, for this call's records: a get's records share their keys, so
        # each key is judged once per answer, not once per record.
        allowed: set[Any] = set()
        for record in records:
            if not isinstance(record, dict):
                if call.version == 4 and call.is_get:
                    self.note(f"{where}: a {type(record).__name__} where a record belongs")
                continue
            if record.keys() <= allowed:  # every key judged before (never a chain's)
                continue
            for key, value in record.items():
                if key in allowed:
                    continue
                if key in chains:
                    self.chain(chains[key], value, f"{where}.{key}")
                elif _allowed(shape, key, self.credentials):
                    allowed.add(key)
                else:
                    self.note(f"{where}: key {_name(key)}")

    @staticmethod
    def _chains(call: Call) -> dict[str, tuple[tuple[Call, ...], Any]]:
        if call.version == 4:
            return {name: ((link.call,), link.index) for name, link in call.chain.items()}
        return {key: (calls, None) for key, calls in call.v3_chains}

    def chain(self, link: tuple[tuple[Call, ...], Any], value: Any, where: str) -> None:
        calls, index = link
        if calls[0].version == 3:
            self.v3_chain(calls, value, where)
            return
        child = calls[0]
        if index is None:
            if not isinstance(value, list):
                self.note(f"{where}: a {type(value).__name__} where a list of records belongs")
                return
            self.records(child, value, where)
        elif isinstance(index, int) or _INTEGER.fullmatch(str(index)):
            # One record (itemAt); a scalar item comes as a one-item list.
            if isinstance(value, dict):
                self.records(child, [value], where)
            elif not (isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)):
                self.note(f"{where}: a {type(value).__name__} where one record belongs")
        else:
            name = str(index)
            if not FIELD_RE.fullmatch(name) or name.endswith("*") or is_credential_key(name):
                self.note(f"{where}: keyed by a field that may not be read that way")
                return
            # The keys are the index field's values: data, checked by the credential scan only.
            if isinstance(value, dict):
                self.records(child, value.values(), where, index=name)
            elif isinstance(value, list):  # none, or keys 0..n-1 (PHP's list)
                self.records(child, value, where, index=name)
            else:
                self.note(f"{where}: a {type(value).__name__} where records keyed by {name} belong")

    def v3_chain(self, calls: tuple[Call, ...], value: Any, where: str) -> None:
        results = value if isinstance(value, list) and len(calls) > 1 else [value]
        if len(results) != len(calls):
            self.note(f"{where}: {len(results)} results for {len(calls)} chained calls")
            return
        for call, result in zip(calls, results, strict=True):
            if call.action == "getsingle":
                self.records(call, [result], where)
            elif call.action == "get":
                if not isinstance(result, dict):
                    self.note(f"{where}: a {type(result).__name__} where an API answer belongs")
                    continue
                for key in result:
                    if key not in _V3_ENVELOPE:
                        self.note(f"{where}: key {_name(key)}")
                values = result.get("values", [])
                self.records(call, values.values() if isinstance(values, dict) else values, where)


def _name(key: Any) -> str:
    """A key as reported: a key may be data, so any secret in it is masked (before cutting)."""
    return repr(REDACTOR.text(str(key))[:64])


def _secrets_in(value: Any) -> set[str]:
    """The gateway's secrets found anywhere in ``value`` (keys and values, any depth)."""
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return REDACTOR.found_in(text) - _NOT_SECRETS


# Fields CiviCRM 5.77 selects on its own for an APIv4 get that names its select (Note.get: for
# the deprecated hook_civicrm_notePrivacy). Dropped from the answer unless the call asked.
ADDED_BY_CIVICRM = {"note": frozenset({"privacy", "entity_table", "entity_id", "contact_id"})}


def without_additions(call: Call, records: list[Any]) -> list[Any]:
    """``records`` less the fields CiviCRM adds to what was asked: :data:`ADDED_BY_CIVICRM`, and
    the fields an APIv3 Contact ``get`` filtered on (its query answers them with the return)."""
    if call.version == 3:
        if call.entity != "Contact" or call.action not in ("get", "getsingle") or call.returns is None:
            return records
        drop: set[str] | frozenset[str] = (
            _v3_return_keys(call.filters) - _v3_return_keys(call.returns) - {"id", *_V3_CONTACT}
        )
    else:
        added = ADDED_BY_CIVICRM.get(call.entity.lower()) if call.is_get else None
        if not added or call.select is None or any(e.text == "*" for e in call.select):
            return records  # no select or "*": every field was asked for
        drop = added - {key for expr in call.select for key in expression_keys(expr)}
    if not drop:
        return records
    return [
        {k: v for k, v in r.items() if k not in drop} if isinstance(r, dict) and drop & r.keys() else r
        for r in records
    ]


def check_answer(call: Call, records: list[Any], *, credentials: bool = False) -> None:
    """Raise ``upstream-unexpected-answer`` (502) unless ``call`` explains every key of
    ``records`` (the answer as it would be passed on) and no secret of the gateway is in it."""
    checker = _Checker(credentials)
    checker.records(call, records, "answer")
    leaked = _secrets_in(records)
    if leaked:
        leaked -= _secrets_in(call.to_params())
    if leaked:
        checker.problems.insert(0, "a credential of the gateway's own")
    if not checker.problems:
        return
    log.warning(
        "CiviCRM's answer to %s held what the call did not ask for (not passed on): %s",
        call.label,
        "; ".join(checker.problems),
    )
    raise unexpected(
        f"CiviCRM's answer to {call.label} held what the call did not ask for, so the gateway "
        f"did not pass it on: {'; '.join(checker.problems[:5])}."
    )
