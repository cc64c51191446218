"""Access policy: what each client may call, checked against every call a request would trigger.

A request reaches more than its own entity and action: APIv4 ``chain`` runs further calls,
``join`` reads other entities, implicit joins (``contact_id.display_name``) read through foreign
keys, and APIv3 ``api.Entity.action`` keys chain calls. All of them are enumerated here and each
must pass the policy; what cannot be enumerated (implicit joins) is refused unless the client may
read every entity.

Patterns are globs on ``v4:Entity.action`` (``v4:Contact.get*``, ``v4:*.getFields``, ``*``);
a pattern without a version prefix applies to both APIs. Deny wins over allow.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, parse

from .credentials import is_credential_action, is_credential_field
from .errors import GatewayError
from .params import check_names, is_read_action


@dataclass(frozen=True)
class Call:
    version: int
    entity: str
    action: str
    params: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"v{self.version}:{self.entity}.{self.action}"


def _normalise_pattern(pattern: str) -> str:
    return pattern if pattern.startswith(("v3:", "v4:", "v*:", "*")) else f"v*:{pattern}"


@dataclass(frozen=True)
class Policy:
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    read_only: bool = False
    max_limit: int | None = None
    credential_fields: bool = False
    rate_limit: str | None = None
    concurrency: int | None = None
    rate: RateLimitItem | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        known = {"allow", "deny", "read_only", "max_limit", "credential_fields", "rate_limit",
                 "concurrency"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")

        def patterns(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = data.get(key, default)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ValueError(f"{key} must be a list of patterns")
            return tuple(_normalise_pattern(p) for p in value)

        max_limit = data.get("max_limit")
        if max_limit is not None and (not isinstance(max_limit, int) or max_limit < 1):
            raise ValueError("max_limit must be a positive whole number")
        concurrency = data.get("concurrency")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError("concurrency must be a positive whole number")
        rate_limit = data.get("rate_limit")
        rate = None
        if rate_limit:
            try:
                rate = parse(str(rate_limit))
            except ValueError:
                raise ValueError(f"rate_limit {rate_limit!r} is not like '100/minute'") from None
        return cls(allow=patterns("allow", ("*",)), deny=patterns("deny", ()),
                   read_only=bool(data.get("read_only", False)), max_limit=max_limit,
                   credential_fields=bool(data.get("credential_fields", False)),
                   rate_limit=str(rate_limit) if rate_limit else None, concurrency=concurrency,
                   rate=rate)

    # --- matching --------------------------------------------------------------------------
    def field_allowed(self, entity: str, field: str) -> bool:
        """Whether this client may reference ``entity.field`` (a bare field name) at all:
        credentials only with ``credential_fields``. The field allow-lists of the access-policy
        redesign narrow this further; documents and checks ask here, never decide themselves."""
        return self.credential_fields or not is_credential_field(field)

    def permits(self, label: str) -> bool:
        if any(fnmatch.fnmatchcase(label, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(label, p) for p in self.allow)

    @property
    def reads_everything(self) -> bool:
        """May read any entity: then implicit joins need no enumeration."""
        if not any(fnmatch.fnmatchcase("v4:AnyEntity.get", p) for p in self.allow):
            return False
        # A deny pattern whose action part could match "get" narrows reads.
        return not any(fnmatch.fnmatchcase("get", p.rpartition(".")[2] or p) for p in self.deny)


def _denied(detail: str) -> GatewayError:
    return GatewayError("gateway-policy-denied", detail)


# --- what a request triggers -------------------------------------------------------------------

def triggered_calls(version: int, entity: str, action: str,
                    params: Mapping[str, Any], *, depth: int = 0) -> Iterator[Call]:
    """The call itself and every call its params chain or join to."""
    if depth > 8:
        raise _denied("Chains nested deeper than 8 levels are refused.")
    check_names(entity, action)
    yield Call(version, entity, action, params)
    if version == 4:
        chain = params.get("chain") or {}
        if not isinstance(chain, Mapping):
            raise GatewayError("invalid-request", "'chain' must be an object of named calls.")
        for name, spec in chain.items():
            if not (isinstance(spec, list) and len(spec) >= 2 and isinstance(spec[0], str)
                    and isinstance(spec[1], str)):
                raise GatewayError("invalid-request",
                                   f"chain {name!r} must be [Entity, action, params?, ...].")
            sub = spec[2] if len(spec) > 2 and isinstance(spec[2], Mapping) else {}
            yield from triggered_calls(4, spec[0], spec[1], sub, depth=depth + 1)
        joins = params.get("join") or []
        if not isinstance(joins, list):
            raise GatewayError("invalid-request", "'join' must be a list.")
        for join in joins:
            target = join[0] if isinstance(join, list) and join else join
            if not isinstance(target, str) or not target.split():
                raise GatewayError("invalid-request", "Each join must start with 'Entity AS alias'.")
            yield from triggered_calls(4, target.split()[0], "get", {}, depth=depth + 1)
    else:
        for key, value in params.items():
            if not key.startswith("api."):
                continue
            parts = key.split(".")
            if len(parts) != 3:
                raise GatewayError("invalid-request", f"Chained call {key!r} must be api.Entity.action.")
            subs = value if isinstance(value, list) else [value]
            for sub in subs:
                yield from triggered_calls(3, parts[1], parts[2],
                                           sub if isinstance(sub, Mapping) else {}, depth=depth + 1)


def _where_fields(clauses: Any) -> Iterator[str]:
    if not isinstance(clauses, list):
        return
    for clause in clauses:
        if isinstance(clause, list) and clause:
            head = clause[0]
            if head in ("OR", "AND", "NOT") and len(clause) > 1:
                yield from _where_fields(clause[1])
            elif isinstance(head, str):
                yield head


def referenced_fields(call: Call) -> Iterator[str]:
    """Field names a call reads, filters, sorts or writes (as the client spelled them)."""
    p = call.params
    if call.version == 3:
        ret = p.get("return")
        if isinstance(ret, str):
            yield from (f.strip() for f in ret.split(","))
        elif isinstance(ret, list):
            yield from (f for f in ret if isinstance(f, str))
        yield from (k for k in p if not k.startswith(("api.", "options")))
        return
    for key in ("select", "groupBy"):
        value = p.get(key)
        if isinstance(value, list):
            yield from (f for f in value if isinstance(f, str))
    yield from _where_fields(p.get("where"))
    yield from _where_fields(p.get("having"))
    for key in ("orderBy", "values", "defaults"):
        value = p.get(key)
        if isinstance(value, Mapping):
            yield from (k for k in value if isinstance(k, str))
    records = p.get("records")
    if isinstance(records, list):
        for record in records:
            if isinstance(record, Mapping):
                yield from (k for k in record if isinstance(k, str))


def _limit_of(call: Call) -> Any:
    if call.version == 4:
        return call.params.get("limit")
    options = call.params.get("options")
    return options.get("limit") if isinstance(options, Mapping) else None


def check(policy: Policy, version: int, entity: str, action: str,
          params: dict[str, Any]) -> dict[str, Any]:
    """Refuse what the policy forbids; returns the params with the client's row cap applied."""
    for call in triggered_calls(version, entity, action, params):
        if not policy.permits(call.label):
            raise _denied(f"This client may not call {call.label}.")
        if is_credential_action(call.action) and not policy.credential_fields:
            raise _denied(f"{call.label} hands out credentials; this client may not call it.")
        if policy.read_only and not is_read_action(call.version, call.action):
            raise _denied(f"This client is read-only; {call.label} changes data.")
        for name in referenced_fields(call):
            last = name.rpartition(".")[2].split(":")[0]
            if is_credential_field(last) and not policy.credential_fields:
                raise _denied(f"The field {name!r} holds a credential; this client may not use it.")
            if call.version == 4 and "." in name and not policy.reads_everything:
                raise _denied(f"{name!r} reads through a join; this client may only use its "
                              "entities' own fields.")
        limit = _limit_of(call)
        if policy.max_limit is not None and call.action == "get" and limit not in (None, 0):
            if not isinstance(limit, int) or limit > policy.max_limit:
                raise _denied(f"limit {limit!r} exceeds this client's maximum of {policy.max_limit}.")
    if policy.max_limit is not None and action == "get" and not _limit_of(
            Call(version, entity, action, params)):
        # No limit would mean every row: cap it (X-Total-Count still tells the full size when
        # the client selects row_count).
        if version == 4:
            params = {**params, "limit": policy.max_limit}
        else:
            params = {**params, "options": {**(params.get("options") or {}),
                                            "limit": policy.max_limit}}
    return params
