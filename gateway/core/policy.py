"""Access policy: what each client may call, checked against everything a parsed call touches.

Input is a :class:`gateway.core.call.Call` (every chained call included) and the field references
:mod:`gateway.core.fields` found in it, so the checks never depend on how the client shaped its
params. What is checked:

- every call in the tree (chains, APIv3 chaining, and the ``get`` of every entity reached through
  an explicit, bridge or implicit join) against allow/deny globs on ``v4:Entity.action``;
  names compare case-insensitively, as CiviCRM resolves actions;
- read-only clients: every call in the tree must be a read;
- every field reference against the field allow-lists (``fields = {Contact = [...]}``) and the
  credential list (:mod:`gateway.core.credentials`), unless ``credential_fields = true``;
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

from gateway.core import expressions
from gateway.core.call import Call, ChainLink, Condition, has_grammar
from gateway.core.credentials import is_credential_action, is_credential_field, is_secret_entity
from gateway.core.errors import GatewayError
from gateway.core.fields import FieldRef
from gateway.core.params import is_read_action
from gateway.core.schema import ALIASES, SAME_AS

DEFAULT_MAX_CHAIN_DEPTH = 3
# Explicit joins a call may make unless its client is trusted (each multiplies the rows the
# database reads before any limit applies).
DEFAULT_MAX_JOINS = 3
# What else an action does: a deny (or a missing allow) on those covers it too.
IMPLIED_ACTIONS = {
    "save": ("create", "update"),
    "replace": ("create", "update", "delete"),
    "mergeduplicates": ("update", "delete"),
}
CONTACT_TYPES = frozenset({"individual", "organization", "household"})


def _writes_trash_flag(call: Call) -> bool:
    values = [call.values or {}, call.defaults or {}, *(call.records or ())]
    if call.version == 3 and not call.is_read:
        values.append(call.filters)
    return any(v.get("is_deleted") not in (None, False, 0, "0", "") for v in values if "is_deleted" in v)


# Reads whose fields CiviCRM's configuration chooses (contact_autocomplete_options, default
# search displays), not the call.
SITE_CONFIGURED_READS = frozenset({"autocomplete", "getlist"})
# Aggregates that pack the values of many rows into one.
PACKING_AGGREGATES = frozenset({"GROUP_CONCAT"})
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


DECISIONS_KEPT = 4096


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
    # GET /audit: "own" records, "all" clients' records, or "none" (gateway/web/routes/audit.py).
    audit: str = "none"
    max_joins: int = DEFAULT_MAX_JOINS
    # Actions (globs as in allow) whose params the gateway does not understand, forwarded as
    # sent for this client all the same: each one named is a hole the operator accepts.
    unsafe_unchecked_actions: tuple[str, ...] = ()
    # May manage webhook subscriptions (POST /webhooks; docs/changes.md).
    webhooks: bool = False
    # may_call's answers: a client asks the same few on every request (globs matched once).
    _decisions: dict[tuple[int, str, str, str | None], bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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
            "max_joins",
            "unsafe_unchecked_actions",
            "webhooks",
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
        joins = data.get("max_joins", DEFAULT_MAX_JOINS)
        if not isinstance(joins, int) or isinstance(joins, bool) or not 0 <= joins <= 16:
            raise ValueError("max_joins must be a whole number from 0 to 16")
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
            max_joins=joins,
            unsafe_unchecked_actions=patterns("unsafe_unchecked_actions", ()),
            webhooks=_flag(data, "webhooks"),
        )

    # --- questions other modules ask ----------------------------------------------------------
    def permits(self, label: str, canonical: str | None = None) -> bool:
        """``label``: ``v4:Entity.action``; compared in lower case. ``canonical``: the entity
        this one is another name of (``Contact`` for ``Individual``): rules written for it
        apply too, deny first. An entity of :data:`SECRET_ENTITIES` is allowed only by a
        pattern that names it."""
        labels = [label.lower()]
        if canonical:
            version, _, rest = labels[0].partition(":")
            labels.append(f"{version}:{canonical.lower()}.{rest.partition('.')[2]}")
        if any(fnmatch.fnmatchcase(lab, p) for p in self.deny for lab in labels):
            return False
        matching = [(lab, p) for p in self.allow for lab in labels if fnmatch.fnmatchcase(lab, p)]
        if not matching:
            return False
        entity = labels[0].partition(":")[2].partition(".")[0]
        if is_secret_entity(entity) or (canonical and is_secret_entity(canonical)):
            return any(_names_entity(p, lab) for lab, p in matching)
        return True

    def may_call(self, version: int, entity: str, action: str, canonical: str | None = None) -> bool:
        """Whether this client may call ``entity.action`` at all, before its params are looked
        at: the globs, read-only, credential actions (the rules ``check_calls`` applies to
        every call of a request; documents ask here too)."""
        key = (version, entity, action, canonical)
        found = self._decisions.get(key)
        if found is None:
            found = self._may_call(version, entity, action, canonical)
            if len(self._decisions) >= DECISIONS_KEPT:  # names are the client's: bounded
                self._decisions.clear()
            self._decisions[key] = found
        return found

    def _may_call(self, version: int, entity: str, action: str, canonical: str | None) -> bool:
        if not self.permits(f"v{version}:{entity}.{action}", canonical):
            return False
        if self.read_only and not is_read_action(version, action):
            return False
        return self.credential_fields or not is_credential_action(action)

    def field_list(self, entity: str | None, canonical: str | None = None) -> frozenset[str] | None:
        """The fields this client may use on ``entity`` (None: all but credentials); the list
        written for its canonical entity applies too (both: only what both allow)."""
        by_name = {name.lower(): names for name, names in self.fields.items()}
        names = {e.lower() for e in (entity, canonical) if e is not None}
        # a list written for another name of the same entity applies too (Individual's to Contact)
        for name in list(names):
            main = SAME_AS.get(name, name).lower()
            names |= ALIASES.get(main, frozenset()) | {main}
        lists = [by_name[n] for n in names if n in by_name]
        if not lists:
            return None
        return frozenset.intersection(*lists)

    def field_allowed(
        self, entity: str | None, name: str, canonical: str | None = None, *, secret: bool = False
    ) -> bool:
        """Whether this client may reference ``entity.name`` (a bare field name) at all."""
        if not self.credential_fields and (secret or is_credential_field(name)):
            return False
        if not self.fields:
            return True
        if entity is None:
            return False  # not resolvable: a restricted client cannot reach it
        allowed = self.field_list(entity, canonical)
        return allowed is None or name in allowed

    @property
    def unrestricted(self) -> bool:
        """May call anything and see every field but credentials."""
        return self.allow == ("*",) and not self.deny and not self.read_only and not self.fields

    @property
    def trusted(self) -> bool:
        """Trusted with everything, credentials included: the only client whose calls may
        carry params the gateway does not understand."""
        return self.unrestricted and self.credential_fields

    def may_forward_unchecked(self, label: str) -> bool:
        """Whether a call the gateway cannot check fully may go to CiviCRM for this client."""
        low = label.lower()
        return self.trusted or any(fnmatch.fnmatchcase(low, p) for p in self.unsafe_unchecked_actions)

    def offers(self, version: int, entity: str, action: str) -> bool:
        """Whether a call of ``entity.action`` can pass this policy at all (what a client's API
        document lists): the globs for it and what it implies, on the canonical entity too,
        and understood or named in ``unsafe_unchecked_actions``."""
        same = SAME_AS.get(entity.lower())
        if not self.may_call(version, entity, action, same):
            return False
        if not all(self.may_call(version, entity, a, same) for a in IMPLIED_ACTIONS.get(action.lower(), ())):
            return False
        unchecked = not has_grammar(version, entity, action) or action.lower() in SITE_CONFIGURED_READS
        return not unchecked or self.may_forward_unchecked(f"v{version}:{entity}.{action}")

    @property
    def restricts_fields(self) -> bool:
        return bool(self.fields)


def _names_entity(pattern: str, label: str) -> bool:
    """The pattern names the label's entity itself, not through a wildcard."""
    entity = pattern.partition(":")[2].partition(".")[0]
    return not any(c in entity for c in "*?[") and entity == label.partition(":")[2].partition(".")[0]


# --- the check ---------------------------------------------------------------------------------


def _call_labels(call: Call, refs: list[FieldRef]) -> list[tuple[Call, str]]:
    """Every (call, label) the request triggers, joins included."""
    out: list[tuple[Call, str]] = []
    for sub, _ in call.walk():
        out.append((sub, sub.label))
        for implied in IMPLIED_ACTIONS.get(sub.action.lower(), ()):
            out.append((sub, f"v{sub.version}:{sub.entity}.{implied}"))
        if _writes_trash_flag(sub):  # is_deleted = true is what delete does (the trash)
            out.append((sub, f"v{sub.version}:{sub.entity}.delete"))
        if sub.entity.lower() in CONTACT_TYPES and sub.action.lower() in ("save", "replace"):
            if any("id" in r for r in sub.records or ()) or "id" in (sub.defaults or {}):
                # save by id skips the contact-type filter: it writes any contact
                out.append((sub, f"v{sub.version}:Contact.update"))
        for join in sub.join or ():
            out.append((sub, f"v4:{join.entity}.get"))
            if join.bridge:
                out.append((sub, f"v4:{join.bridge}.get"))
    for ref in refs:
        if ref.via is not None:
            out.append((ref.call, f"v{ref.call.version}:{ref.via}.get"))
            if ref.use == "write":  # email_primary.email in values writes the Email
                out.append((ref.call, f"v{ref.call.version}:{ref.via}.create"))
                out.append((ref.call, f"v{ref.call.version}:{ref.via}.update"))
    return out


def _canonical_of(canonical: Mapping[str, str], entity: str) -> str | None:
    found = canonical.get(entity.lower(), SAME_AS.get(entity.lower()))
    return found if found and found.lower() != entity.lower() else None


def check_calls(
    policy: Policy,
    call: Call,
    refs: list[FieldRef] | None = None,
    canonical: Mapping[str, str] | None = None,
) -> None:
    """The calls a request triggers, before any field is looked at (so that a client learns
    nothing about entities it may not call, not even which fields they have)."""
    canonical = canonical or {}
    seen: set[str] = set()
    for _sub, label in _call_labels(call, refs or []):
        if label in seen:
            continue
        seen.add(label)
        version, _, name = label.partition(":")
        entity, _, action = name.partition(".")
        same = _canonical_of(canonical, entity)
        if policy.may_call(int(version[1:]), entity, action, same):
            continue
        if not policy.permits(label, same):
            raise denied(f"This client may not call {label}.")
        if policy.read_only and not is_read_action(int(version[1:]), action):
            raise denied(f"This client is read-only; {label} changes data.")
        raise denied(f"{label} hands out credentials; this client may not call it.")
    for sub, depth in call.walk():
        if depth > policy.max_chain_depth:
            raise denied(f"Chains deeper than {policy.max_chain_depth} levels are refused for this client.")
        _check_understood(policy, sub)
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
        if sub.entity.lower() == "setting" and not policy.credential_fields:
            _check_settings(sub)


def _check_settings(call: Call) -> None:
    """Setting answers ``{name, value}`` rows: a secret's name is a value there, out of reach of
    the answer's key stripping, so a client without ``credential_fields`` names the settings
    it reads (APIv4 ``select``, each checked as a field); APIv3's Setting actions, which read
    every setting of a domain, are not for it."""
    if call.version == 3:
        raise denied(
            f"{call.label} reads every setting, secrets included; use v4:Setting.get with "
            "'select' naming the settings."
        )
    if call.is_get and (call.select is None or any(e.text.endswith("*") for e in call.select)):
        raise denied(
            "Setting.get without 'select' (or with '*') reads every setting, secrets included: name them."
        )


def _check_understood(policy: Policy, call: Call) -> None:
    """Understood or refused: an action the gateway has no grammar for, or a param it keeps
    as sent, reaches CiviCRM only for a trusted client or an action the policy names in
    ``unsafe_unchecked_actions``."""
    configured = call.action.lower() in SITE_CONFIGURED_READS
    if call.known_action and not call.unparsed and not configured:
        return
    if policy.may_forward_unchecked(call.label):
        return
    if configured and not call.unparsed:
        raise denied(
            f"{call.label} reads the fields that CiviCRM's settings and search displays choose "
            "(a contact's email, phone, address...), which the gateway cannot check; name it in "
            "this client's unsafe_unchecked_actions to allow it."
        )
    if not call.known_action:
        raise denied(
            f"The gateway does not know the params of {call.label}, so it cannot check them; "
            "name it in this client's unsafe_unchecked_actions to allow it."
        )
    raise denied(
        f"The param {call.unparsed[0]!r} of {call.label} can reach any field of any entity; "
        "only trusted clients (or unsafe_unchecked_actions) may use it."
    )


def _check_cost(policy: Policy, call: Call) -> None:
    """Bounded cost for every client but a trusted one: few explicit joins, each on a key,
    and no aggregate that packs many rows into one past a row cap."""
    if call.version != 4 or policy.trusted:
        return
    select = call.select or ()
    if any(e.is_aggregate for e in select) and any(e.is_field and e.text.endswith("*") for e in select):
        raise denied("'*' beside an aggregate is not narrowed for this client: name the fields.")
    for expr in select:
        if expr.is_field and expr.text.count(".") > 1 and expr.text.endswith("*"):
            raise denied(f"{expr.text!r} reaches through two joins: name the fields.")
    joins = call.join or ()
    if len(joins) > policy.max_joins:
        raise denied(f"{len(joins)} joins; this client may make at most {policy.max_joins} in one call.")
    for join in joins:
        if join.bridge:
            continue  # CiviCRM links a bridge by its keys itself
        if not join.conditions:
            # CiviCRM guesses the link (or finds none: an ON without condition, a DB error)
            raise denied(f"The join {join.alias!r} has no condition: link it on a key.")
        if not any(_is_key_condition(c, join.alias) for c in join.conditions):
            raise denied(
                f"The join {join.alias!r} is not on a key: link it with "
                f'["{join.alias}.id", "=", "<field>"] or ["{join.alias}.<field>", "=", "id"].'
            )
    if policy.max_limit is not None or policy.max_rows is not None:
        for expr in (*(call.select or ()), *(e for e, _ in call.order_by or ())):
            packing = PACKING_AGGREGATES.intersection(expr.functions)
            if packing:
                raise denied(
                    f"{sorted(packing)[0]} packs any number of rows into one, past this "
                    "client's row limit; read the rows themselves."
                )


# Implicit joins (``contact_id.employer_id.x``) one call may make unless its client is trusted:
# each is a JOIN in CiviCRM's SQL, and MariaDB stops at 61 tables.
MAX_IMPLICIT_JOINS = 8


def _check_implicit_joins(policy: Policy, refs: list[FieldRef]) -> None:
    if policy.trusted:
        return
    by_call: dict[int, set[str]] = {}
    for ref in refs:
        path = ref.path.partition(":")[0]
        if ref.via is not None and "." in path:
            by_call.setdefault(id(ref.call), set()).add(path.rpartition(".")[0])
    for prefixes in by_call.values():
        if len(prefixes) > MAX_IMPLICIT_JOINS:
            raise denied(
                f"{len(prefixes)} joined paths in one call; this client may reach through at most "
                f"{MAX_IMPLICIT_JOINS} (each is a join CiviCRM makes)."
            )


def _is_key_condition(clause: Any, alias: str) -> bool:
    """``[alias.id|alias.x_id, "=", field]`` (either way round): an equality between two plain
    fields, one of them the joined entity's id or a reference field of it."""
    if not isinstance(clause, Condition) or clause.op != "=" or clause.right is None:
        return False
    sides = (clause.left, clause.right)
    if not all(e.root.kind == "field" and e.alias is None for e in sides):
        return False
    names = [e.root.value.partition(":")[0] for e in sides]
    if names[0].startswith(f"{alias}.") == names[1].startswith(f"{alias}."):
        return False
    joined = next(n for n in names if n.startswith(f"{alias}.")).removeprefix(f"{alias}.")
    return joined == "id" or (joined.endswith("_id") and "." not in joined)


def check(
    policy: Policy, call: Call, refs: list[FieldRef], canonical: Mapping[str, str] | None = None
) -> Call:
    """Refuse what the policy forbids; returns the call with row caps and field allow-lists
    applied (``*`` selects narrowed to the allowed fields)."""
    canonical = canonical or {}
    check_calls(policy, call, refs, canonical)
    for ref in refs:
        same = _canonical_of(canonical, ref.entity) if ref.entity else None
        if ref.field.endswith("*"):
            if (
                policy.fields
                and (ref.entity is None or policy.field_list(ref.entity, same) is not None)
                and not (ref.path == "*" and ref.entity == ref.call.entity)
            ):  # narrowed below
                raise denied(
                    f"{ref.path!r} would select fields of {ref.entity or 'a join'} this "
                    "client may not read: name the fields."
                )
            continue
        if not policy.field_allowed(ref.entity, ref.field, same, secret=ref.secret):
            where = f"{ref.entity}.{ref.field}" if ref.entity else ref.field
            if not policy.credential_fields and (ref.secret or is_credential_field(ref.field)):
                raise denied(
                    f"The field {where!r} (in {ref.path!r}) holds a credential; this client may not use it."
                )
            raise denied(f"This client may not use the field {where!r} (in {ref.path!r}).")
    for sub, _ in call.walk():
        _check_cost(policy, sub)
    _check_implicit_joins(policy, refs)
    call = _narrow_wildcards(policy, call, canonical)
    call = _cap_rows(policy, call)
    if policy.max_rows is not None and any(True for _ in call.children()):
        total = _tree_rows(call)
        if total > policy.max_rows:
            shown = "an unbounded number of" if math.isinf(total) else str(int(total))
            raise denied(
                f"This request could produce {shown} rows through its chains; this client "
                f"may read at most {policy.max_rows} in one request."
            )
    return call


def _narrow_wildcards(policy: Policy, call: Call, canonical: Mapping[str, str]) -> Call:
    """A select of ``*`` (or none, which means CiviCRM's default fields) on an entity with a
    field allow-list becomes the allowed fields."""
    if call.version != 4 or not policy.fields:
        return call
    chain = {
        name: ChainLink(_narrow_wildcards(policy, link.call, canonical), link.index)
        for name, link in call.chain.items()
    }
    allowed = policy.field_list(call.entity, _canonical_of(canonical, call.entity))
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
    if call.is_get and policy.max_limit is not None and call.takes_limit:
        asked = call.limit if call.version == 4 else call.v3_options.get("limit")
        if not asked:  # none (or 0, CiviCRM's "no limit"): the client's cap
            call = call.with_limit(policy.max_limit)
            limit = policy.max_limit
        elif asked > policy.max_limit:
            raise denied(f"limit {limit} exceeds this client's maximum of {policy.max_limit}.")
    if not call.takes_limit:  # Setting.get: one row per setting named
        limit = max(1, len(call.select or ()))
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


def _tree_rows(call: Call, parent: float = 1) -> float:
    """Rows the whole call tree can produce: each call runs once per row of its parent, and
    siblings add up (a get without a limit, or a metadata read: unbounded)."""
    if call.is_read:
        limit = call.effective_limit() if call.takes_limit else max(1, len(call.select or ()))
        own = float(limit) if limit is not None and (call.is_get or call.version == 3) else math.inf
    else:
        own = float(max(1, len(call.records or ())))
    rows = parent * own
    return rows + sum(_tree_rows(child, rows) for child in call.children())
