"""What one audit record holds, and how it is read off a parsed call and its answer.

Which calls are recorded: every call whose tree (chains included) writes, whatever its outcome,
and every call refused with 401 or 403, reads included (a refused read is what an auditor looks
for). Reads and writes are told apart by :func:`gateway.core.params.is_read_action`, as everywhere.

Field names written are always recorded; values only with ``audit_values = true`` (they may be
personal data), and never the value of a credential field (:mod:`gateway.core.credentials`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from gateway.core.call import Call
from gateway.core.credentials import is_credential_field
from gateway.core.params import is_read_action
from gateway.core.redact import MASK

# Statuses that mean "refused": recorded for reads too.
DENIED_STATUSES = frozenset({401, 403})
# Longest Idempotency-Key kept (the header allows 255 characters).
MAX_KEY_LENGTH = 255
# Entity and action names are recorded as the client sent them when the call did not parse.
MAX_NAME_LENGTH = 80


def outcome_of(status: int) -> str:
    """``ok``, ``denied`` (401/403) or ``error``: the ``outcome`` filter's words."""
    if status < 400:
        return "ok"
    return "denied" if status in DENIED_STATUSES else "error"


def utc_now() -> str:
    """ISO 8601 UTC to the millisecond: sorts as text, which the SQLite queries rely on."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    time: str
    request_id: str | None
    client: str | None  # None: refused before the client was known (401)
    source: str | None  # the peer address (a reverse proxy's, behind one)
    version: int
    entity: str | None  # None: a whole batch refused before its calls were read
    action: str
    batch: str | None = None  # the call's name within a /v{3,4}/batch request
    face: str = "rest"  # how the call came: rest (HTTP routes, batches too), cli, mcp
    ids: tuple[int, ...] = ()
    fields: tuple[str, ...] = ()
    values: tuple[dict[str, Any], ...] | None = None
    status: int
    problem: str | None = None
    idempotency_key: str | None = None
    replayed: bool = False
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ids"] = list(self.ids)
        data["fields"] = list(self.fields)
        data["values"] = None if self.values is None else [dict(v) for v in self.values]
        return data


def audited(version: int, action: str, call: Call | None, status: int) -> bool:
    """Whether this call gets a record: it writes, or it was refused."""
    if status in DENIED_STATUSES:
        return True
    if call is not None:
        return not call.reads_only  # chains included
    return not is_read_action(version, action)


def _written_maps(call: Call) -> list[dict[str, Any]]:
    """The field-value maps one call writes (one per record)."""
    if is_read_action(call.version, call.action) or call.action.lower() == "delete":
        return []
    if call.version == 3:
        return [dict(call.filters)] if call.filters else []
    maps: list[dict[str, Any]] = []
    defaults = call.defaults or {}
    if call.records is not None:
        maps.extend({**defaults, **record} for record in call.records)
    elif defaults:
        maps.append(dict(defaults))
    if call.values:
        maps.append(dict(call.values))
    for name, kind in call.field_params.items():  # another action's field-value param
        if kind == "fields" and isinstance(call.options.get(name), dict):
            maps.append(dict(call.options[name]))
    return maps


def written(call: Call, with_values: bool) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...] | None]:
    """The field names the call tree writes (chained calls' as ``Entity.field``), and with
    ``with_values`` one map per record written, credentials masked."""
    names: dict[str, None] = {}
    values: list[dict[str, Any]] = []
    for sub, depth in call.walk():
        prefix = f"{sub.entity}." if depth else ""
        for record in _written_maps(sub):
            shown: dict[str, Any] = {}
            for name, value in record.items():
                names[prefix + name] = None
                shown[prefix + name] = MASK if is_credential_field(name.rpartition(".")[2]) else value
            values.append(shown)
    return tuple(names), (tuple(values) if with_values else None)


def ids_in(body: Any) -> tuple[int, ...]:
    """The ids of the records an answer lists (a write answers the records it wrote)."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return ()
    found: dict[int, None] = {}
    for item in body:
        if isinstance(item, dict):
            value = item.get("id")
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                found[value] = None
    return tuple(found)


def ids_named(call: Call | None) -> tuple[int, ...]:
    """For an answer that lists no ids (APIv3 delete answers ``1``): the id the call named."""
    if call is None or call.version != 3:
        return ()
    value = call.filters.get("id")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return (value,) if isinstance(value, int) and not isinstance(value, bool) else ()


def clip(name: str | None) -> str | None:
    return None if name is None else name[:MAX_NAME_LENGTH]


def idempotency_key(value: str | None) -> str | None:
    return None if value is None else value[:MAX_KEY_LENGTH]
