"""Result shaping: CiviCRM's envelopes in, plain lists of records out.

Backends call :func:`v4_records` / :func:`v3_records` on whatever envelope their transport gave;
routes call :func:`response_body` to decide the final JSON body and count headers.

APIv3 single-value actions get their value as the body, never a wrapped list:
``getsingle`` -> the record (a JSON object), ``getcount`` -> a number, ``getvalue`` -> the
value (string, number, null, ...). Everything else -> a JSON list of records.
"""

from __future__ import annotations

from typing import Any

from gateway.core.credentials import is_credential_key
from gateway.core.errors import GatewayError, from_civicrm

V3_SCALAR_ACTIONS = frozenset({"getsingle", "getcount", "getvalue"})


class Records(list[Any]):
    """A backend's result: a plain list, plus CiviCRM's match count when it gave one."""

    count_matched: int | None

    def __init__(self, items: Any = (), count_matched: int | None = None) -> None:
        super().__init__(items)
        self.count_matched = count_matched


def invalid_response(detail: str) -> GatewayError:
    return GatewayError("upstream-invalid-response", detail)


def v4_error(envelope: dict[str, Any], status: int | None = None) -> GatewayError:
    return from_civicrm(
        envelope.get("error_message") or envelope.get("status_message"),
        status=status or _int_or_none(envelope.get("status")),
        error_code=envelope.get("error_code"),
        extra=envelope,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def v4_records(envelope: Any, *, status: int | None = None) -> Records:
    """Records from an APIv4 answer: a REST envelope, or cv's bare list."""
    if isinstance(envelope, list):
        return Records(envelope)
    if not isinstance(envelope, dict):
        raise invalid_response(f"CiviCRM answered a JSON {type(envelope).__name__}, not an object.")
    if "error_message" in envelope or "error_code" in envelope or "status_message" in envelope:
        raise v4_error(envelope, status)
    values = envelope.get("values")
    if values is None:
        raise invalid_response("CiviCRM's answer has no 'values'.")
    if isinstance(values, dict):  # an ``index`` answer keyed by a field: keep the records
        values = list(values.values()) if all(isinstance(v, dict) for v in values.values()) else [values]
    if not isinstance(values, list):
        raise invalid_response("CiviCRM's 'values' is not a list.")
    matched = envelope.get("countMatched")
    return Records(values, count_matched=matched if isinstance(matched, int) else None)


def v3_records(action: str, envelope: Any) -> Records:
    """Records from an APIv3 envelope; single-value actions give a one-item list."""
    if action == "getcount" and isinstance(envelope, int) and not isinstance(envelope, bool):
        return Records([envelope])  # ``cv api ...getcount`` prints a bare number
    if not isinstance(envelope, dict):
        raise invalid_response(f"CiviCRM answered a JSON {type(envelope).__name__}, not an object.")
    if envelope.get("is_error"):
        raise from_civicrm(
            envelope.get("error_message"), error_code=envelope.get("error_code"), extra=envelope
        )
    if "is_error" not in envelope:
        raise invalid_response("CiviCRM's APIv3 answer has no 'is_error'.")
    if action in ("getcount", "getvalue"):
        if "result" not in envelope:
            raise invalid_response(f"CiviCRM's {action} answer has no 'result'.")
        return Records([envelope["result"]])
    if action == "getsingle":
        return Records([{k: v for k, v in envelope.items() if k != "is_error"}])
    values = envelope.get("values", [])
    if isinstance(values, dict):
        if action == "getfields":
            # The key is the field's unique name (``contact_source`` for ``source``), the one
            # spelling some actions answer to: kept as CiviCRM's own ``uniqueName``.
            values = {
                k: {**v, "uniqueName": k} if isinstance(v, dict) and v.get("name") not in (k, None) else v
                for k, v in values.items()
            }
        values = list(values.values())
    if not isinstance(values, list):
        # e.g. ``Setting.getvalue``-style or custom actions answering a scalar
        values = [values]
    return Records(values)


def _strip(value: Any) -> Any:
    """Drop credential fields from records at any depth (chained and joined results too).

    The last line of defence: CiviCRM returns a contact's ``api_key`` to privileged callers, so
    a gateway running on an admin key would otherwise hand its own key to any client. The
    policy refuses calls that reference a credential under another name (an alias)."""
    # This runs over every value answered: scalars are not visited one call each, and a record
    # with nothing to drop and nothing nested is passed on as it is, not copied. Keys known not
    # to be credentials are looked up as a set (a get's records share their keys).
    if isinstance(value, list):
        return [_strip(v) if isinstance(v, (dict, list)) else v for v in value]
    if isinstance(value, dict):
        keys = value.keys()
        if not keys <= _PLAIN_KEYS:
            if any(isinstance(k, str) and is_credential_key(k) for k in keys):
                return _stripped(value)
            if len(_PLAIN_KEYS) < _PLAIN_KEYS_KEPT:
                _PLAIN_KEYS.update(keys)
        # The values' types are compared as a set (one pass in C, not a loop in Python):
        # a record of scalars only is passed on as it is.
        if _SCALARS.issuperset(map(type, value.values())):
            return value
        return _stripped(value)
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


# Result keys seen that are not credential keys (bounded: keys are data in some answers).
_PLAIN_KEYS: set[Any] = set()
_PLAIN_KEYS_KEPT = 10_000


def _stripped(value: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of the record without its credential keys, its nested values stripped."""
    return {
        k: _strip(v) if isinstance(v, (dict, list)) else v
        for k, v in value.items()
        if not (isinstance(k, str) and is_credential_key(k))
    }


def response_body(
    version: int, action: str, records: Records, *, strip_credentials: bool = True
) -> tuple[Any, dict[str, str]]:
    """The JSON body for a successful call, and its count headers."""
    headers = {"X-Result-Count": str(len(records))}
    if strip_credentials:
        records = Records(_strip(list(records)), count_matched=records.count_matched)
    if records.count_matched is not None:
        headers["X-Total-Count"] = str(records.count_matched)
    if version == 3 and action in V3_SCALAR_ACTIONS:
        return (records[0] if records else None), {}
    return list(records), headers
