"""Access policy: what each client may call, checked against everything a parsed call touches.

Input is a :class:`gateway.call.Call` (every chained call included) and the field references
:mod:`gateway.fields` found in it, so the checks never depend on how the client shaped its
params. What is checked:

- every call in the tree (chains, APIv3 chaining, and the ``get`` of every entity reached through
  an explicit, bridge or implicit join) against allow/deny globs on ``v4:Entity.action``;
  names compare case-insensitively, as CiviCRM resolves actions;
- read-only clients: every call in the tree must be a read;
- every field reference against the field allow-lists (``fields = {Contact = [...]}``) and the
  credential list (:mod:`gateway.credentials`), unless ``credential_fields = true``;
- params whose meaning the gateway does not model (``savedSearch``...) only for clients with
  no field restrictions;
- ``checkPermissions: false`` never;
- row caps: ``max_limit`` on every get in the tree, ``max_chain_depth``, and ``max_rows`` on the
  product of the limits along any chain.

Patterns are globs (``v4:Contact.get*``, ``v4:*.getFields``, ``*``); a pattern without a
version prefix applies to both APIs. Deny wins over allow.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from limits import RateLimitItem, parse

from . import expressions
from .call import Call, ChainLink
from .credentials import is_credential_action, is_credential_field
from .errors import GatewayError
from .fields import FieldRef
from .params import is_read_action

DEFAULT_MAX_CHAIN_DEPTH = 3
AUDIT_SCOPES = ("none", "own", "all")


def _normalise_pattern(pattern: str) -> str:
    pattern = pattern if pattern.startswith(("v3:", "v4:", "v*:", "*")) else f"v*:{pattern}"
    return pattern.lower()


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def denied(detail: str) -> GatewayError:
    return GatewayError("gateway-policy-denied", detail)


@dataclass(frozen=True)
class Policy:
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    read_only: bool = False
    max_limit: int | None = None
    max_rows: int | None = None
    max_chain_depth: int = DEFAULT_MAX_CHAIN_DEPTH
    credential_fields: bool = False
    # Per-entity field allow-lists; an entity not named here has all its (non-credential) fields.
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rate_limit: str | None = None
    concurrency: int | None = None
    rate: RateLimitItem | None = field(default=None, compare=False, repr=False)
    # Every write must carry an Idempotency-Key header (gateway/idempotency); else 428.
    require_idempotency_key: bool = False
    # GET /audit: "own" records, "all" clients' records, or "none" (gateway/routes/audit.py).
    audit: str = "none"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        known = {
            "allow",
            "deny",
            "read_only",
            "max_limit",
            "max_rows",
            "max_chain_depth",
            "credential_fields",
            "fields",
            "rate_limit",
            "concurrency",
            "require_idempotency_key",
            "audit",
        }
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")

        def patterns(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = data.get(key, default)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ValueError(f"{key} must be a list of patterns")
            return tuple(_normalise_pattern(p) for p in value)

        def positive(key: str) -> int | None:
            value = data.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{key} must be a positive whole number")
            return value

        rate_limit = data.get("rate_limit")
        rate = None
        if rate_limit:
            try:
                rate = parse(str(rate_limit))
            except ValueError:
                raise ValueError(f"rate_limit {rate_limit!r} is not like '100/minute'") from None
        field_lists: dict[str, frozenset[str]] = {}
        raw_fields = data.get("fields", {})
        if not isinstance(raw_fields, Mapping):
            raise ValueError("fields must be a table of Entity = [field names]")
        for entity, names in raw_fields.items():
            if isinstance(names, str) or not all(
                isinstance(n, str) and expressions.FIELD_RE.fullmatch(n) for n in names
            ):
                raise ValueError(f"fields.{entity} must be a list of field names")
            field_lists[str(entity)] = frozenset(names)
        max_limit = positive("max_limit")
        audit = data.get("audit", "none")
        if audit not in AUDIT_SCOPES:
            raise ValueError(f"audit must be one of {', '.join(AUDIT_SCOPES)}")
        max_rows = positive("max_rows")
        depth = data.get("max_chain_depth", DEFAULT_MAX_CHAIN_DEPTH)
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 8:
            raise ValueError("max_chain_depth must be a whole number from 0 to 8")
        return cls(
            allow=patterns("allow", ("*",)),
            deny=patterns("deny", ()),
            read_only=bool(data.get("read_only", False)),
            max_limit=max_limit,
            max_rows=max_rows if max_rows is not None else (max_limit * 10 if max_limit else None),
            max_chain_depth=depth,
            credential_fields=bool(data.get("credential_fields", False)),
            fields=field_lists,
            rate_limit=str(rate_limit) if rate_limit else None,
            concurrency=positive("concurrency"),
            rate=rate,
            require_idempotency_key=_flag(data, "require_idempotency_key"),
            audit=audit,
        )

    # --- questions other modules ask ----------------------------------------------------------
    def permits(self, label: str) -> bool:
        """``label``: ``v4:Entity.action``; compared in lower case."""
        label = label.lower()
        if any(fnmatch.fnmatchcase(label, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(label, p) for p in self.allow)

    def may_call(self, version: int, entity: str, action: str) -> bool:
        """Whether this client may call ``entity.action`` at all, before its params are looked
        at: the globs, read-only, credential actions (the rules ``check_calls`` applies to
        every call of a request; documents ask here too)."""
        if not self.permits(f"v{version}:{entity}.{action}"):
            return False
        if self.read_only and not is_read_action(version, action):
            return False
        return self.credential_fields or not is_credential_action(action)

    def field_allowed(self, entity: str | None, name: str) -> bool:
        """Whether this client may reference ``entity.name`` (a bare field name) at all."""
        if not self.credential_fields and is_credential_field(name):
            return False
        if not self.fields:
            return True
        if entity is None:
            return False  # not resolvable: a restricted client cannot reach it
        allowed = self.fields.get(entity)
        return allowed is None or name in allowed

    @property
    def unrestricted(self) -> bool:
        """May call anything and see every field but credentials."""
        return self.allow == ("*",) and not self.deny and not self.read_only and not self.fields

    @property
    def restricts_fields(self) -> bool:
        return bool(self.fields)


# --- the check ---------------------------------------------------------------------------------


def _call_labels(call: Call, refs: list[FieldRef]) -> list[tuple[Call, str]]:
    """Every (call, label) the request triggers, joins included."""
    out: list[tuple[Call, str]] = []
    for sub, _ in call.walk():
        out.append((sub, sub.label))
        for join in sub.join or ():
            out.append((sub, f"v4:{join.entity}.get"))
            if join.bridge:
                out.append((sub, f"v4:{join.bridge}.get"))
    for ref in refs:
        if ref.via is not None:
            out.append((ref.call, f"v{ref.call.version}:{ref.via}.get"))
    return out


def check_calls(policy: Policy, call: Call, refs: list[FieldRef] | None = None) -> None:
    """The calls a request triggers, before any field is looked at (so that a client learns
    nothing about entities it may not call, not even which fields they have)."""
    seen: set[str] = set()
    for _sub, label in _call_labels(call, refs or []):
        if label in seen:
            continue
        seen.add(label)
        version, _, name = label.partition(":")
        entity, _, action = name.partition(".")
        if policy.may_call(int(version[1:]), entity, action):
            continue
        if not policy.permits(label):
            raise denied(f"This client may not call {label}.")
        if policy.read_only and not is_read_action(int(version[1:]), action):
            raise denied(f"This client is read-only; {label} changes data.")
        raise denied(f"{label} hands out credentials; this client may not call it.")
    for sub, depth in call.walk():
        if depth > policy.max_chain_depth:
            raise denied(f"Chains deeper than {policy.max_chain_depth} levels are refused for this client.")
        if (
            sub.version == 3
            and sub.action in ("get", "getsingle")
            and sub.returns is None
            and not policy.unrestricted
        ):
            # APIv3 answers a get without "return" with fields of other entities too (a
            # contact's address, email and phone): a narrowed client names what it reads.
            raise denied(
                f"{sub.label} without 'return' reads fields of other entities; name "
                "the fields this client needs with 'return'."
            )
        if sub.options.get("checkPermissions") is False:
            raise denied("checkPermissions cannot be turned off through the gateway.")
        for name, kind in sub.field_params.items():
            if kind == "opaque" and (policy.restricts_fields or policy.allow != ("*",)):
                raise denied(
                    f"The param {name!r} of {sub.label} can reach any entity; only "
                    "clients with full access may use it."
                )


def check(policy: Policy, call: Call, refs: list[FieldRef]) -> Call:
    """Refuse what the policy forbids; returns the call with row caps and field allow-lists
    applied (``*`` selects narrowed to the allowed fields)."""
    check_calls(policy, call, refs)
    for ref in refs:
        if ref.field.endswith("*"):
            if (
                policy.fields
                and (ref.entity is None or ref.entity in policy.fields)
                and not (ref.path == "*" and ref.entity == ref.call.entity)
            ):  # narrowed below
                raise denied(
                    f"{ref.path!r} would select fields of {ref.entity or 'a join'} this "
                    "client may not read: name the fields."
                )
            continue
        if not policy.field_allowed(ref.entity, ref.field):
            where = f"{ref.entity}.{ref.field}" if ref.entity else ref.field
            if not policy.credential_fields and is_credential_field(ref.field):
                raise denied(
                    f"The field {where!r} (in {ref.path!r}) holds a credential; this client may not use it."
                )
            raise denied(f"This client may not use the field {where!r} (in {ref.path!r}).")
    call = _narrow_wildcards(policy, call)
    return _cap_rows(policy, call)


def _narrow_wildcards(policy: Policy, call: Call) -> Call:
    """A select of ``*`` (or none, which means CiviCRM's default fields) on an entity with a
    field allow-list becomes the allowed fields."""
    if call.version != 4 or not policy.fields:
        return call
    chain = {
        name: ChainLink(_narrow_wildcards(policy, link.call), link.index) for name, link in call.chain.items()
    }
    allowed = policy.fields.get(call.entity)
    select = call.select
    if allowed is not None and call.is_get:
        exprs = list(select or ())
        if not exprs or any(e.is_field and e.text == "*" for e in exprs):
            rest = [e for e in exprs if not (e.is_field and e.text == "*")]
            extra = [
                expressions.parse(n)
                for n in sorted(allowed)
                if not any(e.is_field and e.text == n for e in rest)
            ]
            if not any(e.is_aggregate for e in rest) or not rest:
                select = tuple(rest + extra)
    if select is not call.select or chain != call.chain:
        return replace(call, select=select, chain=chain)
    return call


def _cap_rows(policy: Policy, call: Call, depth_rows: int = 1) -> Call:
    """``max_limit`` on every get in the tree; ``max_rows`` on the product along a chain."""
    limit = call.effective_limit()
    if call.is_get and policy.max_limit is not None:
        asked = call.limit if call.version == 4 else call.v3_options.get("limit")
        if not asked:  # none (or 0, CiviCRM's "no limit"): the client's cap
            call = call.with_limit(policy.max_limit)
            limit = policy.max_limit
        elif asked > policy.max_limit:
            raise denied(f"limit {limit} exceeds this client's maximum of {policy.max_limit}.")
    rows = depth_rows * (limit if limit is not None else (1 if not call.is_get else math.inf))
    if policy.max_rows is not None and rows > policy.max_rows:
        raise denied(
            f"This request could produce {rows} rows through its chains; this client "
            f"may read at most {policy.max_rows} in one request."
        )
    # Each chained call runs once per row of this one (an unbounded read: as many as its parent).
    per_row = max(1, int(rows)) if math.isfinite(rows) else depth_rows
    if call.version == 4 and call.chain:
        chain = {
            name: ChainLink(_cap_rows(policy, link.call, per_row), link.index)
            for name, link in call.chain.items()
        }
        call = replace(call, chain=chain)
    elif call.version == 3 and call.v3_chains:
        chains = tuple(
            (key, tuple(_cap_rows(policy, c, per_row) for c in calls)) for key, calls in call.v3_chains
        )
        call = replace(call, v3_chains=chains)
    return call


def request_cost(call: Call) -> int:
    """How many API calls a request counts as against its client's rate: one per call in its
    tree (a chained call runs at least once)."""
    return sum(1 for _ in call.walk())
