"""The one walker over field references: every field a parsed call reads, filters, orders, groups,
joins on, writes or passes down a chain, resolved to the entity that holds it.

``UPPER(api_key) AS u``, ``c.api_key`` in a join condition, ``contact_id.hash`` through an
implicit join and ``$hash`` in a chained call are all a :class:`FieldRef` to (Contact, api_key)
or (Contact, hash) here, so the policy checks one set, never shapes.

With a :class:`gateway.core.schema.Schema`, paths are resolved through CiviCRM's metadata (implicit
joins follow ``fk_entity``; custom fields are ``Group.field`` names of their entity) and a name
that resolves to nothing is an ``unknown-field`` error with suggestions. Without one, every
segment of a dotted path is reported by name with the entity unknown (``None``) past the first:
enough for name-based checks (credentials), not for field allow-lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.core.call import Call, Clause, Group, references_in
from gateway.core.errors import invalid_request
from gateway.core.expressions import Expr
from gateway.core.schema import Schema, unknown_field

MAX_JOIN_HOPS = 3
# Field references one request may make (each is resolved and checked on the event loop).
MAX_REFERENCES = 1000
# APIv3 contact fields that come from the contact's primary email, phone, IM or address (v3
# reads them through those entities, whose get the client must be allowed too).
V3_LOCATION_FIELDS = {
    **{name: ("Email", name) for name in ("email", "on_hold", "email_id")},
    **{name: ("Phone", name) for name in ("phone", "phone_id", "phone_type_id")},
    **{name: ("IM", "name") for name in ("im", "im_id", "provider_id")},
    **{
        name: ("Address", name)
        for name in (
            "address_id",
            "street_address",
            "supplemental_address_1",
            "supplemental_address_2",
            "supplemental_address_3",
            "city",
            "postal_code",
            "postal_code_suffix",
            "geo_code_1",
            "geo_code_2",
            "county_id",
            "state_province_id",
            "country_id",
            "master_id",
        )
    },
    "state_province": ("Address", "state_province_id"),
    "state_province_name": ("Address", "state_province_id"),
    "country": ("Address", "country_id"),
    "county": ("Address", "county_id"),
    "worldregion": ("Address", "country_id"),
    "worldregion_id": ("Address", "country_id"),
}
# APIv3 Contact filters that search other entities (CiviCRM's contact query): a name filter
# matches the contact's email addresses too (quick search), group/tag/uf_user join their tables.
V3_CONTACT_SEARCHES = {
    "display_name": ("Email", "email"),
    "sort_name": ("Email", "email"),
    "group": ("GroupContact", "group_id"),
    "tag": ("EntityTag", "tag_id"),
    "uf_user": ("UFMatch", "uf_id"),
}
# The APIv3 action whose fields another action's params name.
V3_FIELDS_OF = {
    "getsingle": "get",
    "getcount": "get",
    "getvalue": "get",
    "getlist": "get",
    "getoptions": "get",
}
# Actions that answer metadata about the entity, not its records.
META_ACTIONS = frozenset({"getfields", "getactions", "getlinks"})


@dataclass(frozen=True, slots=True)
class FieldRef:
    """``entity`` holds ``field`` (a bare name, or ``*`` for all of them; ``None`` entity: not
    resolvable without metadata). ``via``: the entity reached through an implicit or explicit
    join (its ``get`` must be allowed too)."""

    entity: str | None
    field: str
    use: str
    path: str
    call: Call
    via: str | None = None
    # CiviCRM's metadata says it is a password input, whatever its name
    secret: bool = False


def _clause_exprs(clauses: tuple[Clause, ...] | None) -> Iterator[tuple[Expr, str | None]]:
    """(expression, value) of every condition; the value only when it is a literal."""
    stack = list(clauses or ())
    while stack:
        clause = stack.pop()
        if isinstance(clause, Group):
            stack.extend(clause.clauses)
            continue
        yield clause.left, None
        if clause.right is not None:
            yield clause.right, None


def _param_paths(call: Call) -> Iterator[tuple[str, str]]:
    """Field names held by an action's own params (autocomplete ``key``, getlist's fields...)."""
    for name, kind in call.field_params.items():
        value = call.options.get(name)
        if kind == "fields":
            for key in value or {}:
                yield key, "filter"
        elif kind == "field" and isinstance(value, str):
            yield value, "select"
        elif kind == "names":
            for item in value or ():
                yield item, "select"


def raw_paths(call: Call) -> Iterator[tuple[str, str]]:
    """(path, use) for every field path the call itself names (its chains not included)."""
    yield from _param_paths(call)
    if call.version == 3:
        for name in call.filters:
            yield name, "filter"
        for name in call.returns or ():
            yield name, "select"
        sort = call.v3_options.get("sort")
        if isinstance(sort, str):
            for part in sort.split(","):
                yield part.split()[0], "order"
        return
    aliases = {e.alias for e in call.select or () if e.alias}
    for expr in call.select or ():
        for path in expr.fields:
            yield path, "select"
    for exprs, use in ((call.group_by, "group"), (tuple(e for e, _ in call.order_by or ()), "order")):
        for expr in exprs or ():
            for path in expr.fields:
                if path not in aliases:
                    yield path, use
    for clauses, use in ((call.where, "where"), (call.having, "having")):
        for expr, _ in _clause_exprs(clauses):
            for path in expr.fields:
                if not (use == "having" and path in aliases):
                    yield path, use
    for join in call.join or ():
        for expr, _ in _clause_exprs(join.conditions):
            for path in expr.fields:
                yield path, "join"
    for name in ("values", "defaults"):
        for key in getattr(call, name) or {}:
            yield key, "write"
    for record in call.records or ():
        for key in record:
            yield key, "write"
    for key in call.match or ():
        yield key, "filter"


def chain_references(call: Call) -> Iterator[tuple[str, str]]:
    """(path, use) of the parent fields that a call's chains pass down with ``$field``."""
    if call.version == 4:
        aliases = {e.alias for e in call.select or () if e.alias}  # checked where defined
        for link in call.chain.values():
            params = link.call.to_params()
            params.pop("chain", None)  # a grandchild's "$x" refers to the child
            for ref in references_in(params):
                if ref not in aliases:
                    yield ref, "chain"
    else:
        for _, calls in call.v3_chains:
            for sub in calls:
                params = sub.to_params()
                for key in [k for k, _ in sub.v3_chains]:
                    params.pop(key, None)
                for ref in references_in(params):
                    yield ref.removeprefix("value."), "chain"


async def references(call: Call, schema: Schema | None) -> list[FieldRef]:
    """Every field reference of ``call`` and of every call it chains."""
    out: list[FieldRef] = []
    for sub, _ in call.walk():
        joins = {j.alias: j.entity for j in sub.join or ()}
        # a metadata action's own select/where name the metadata's keys (name, data_type...);
        # what its chains pass down and key by are fields of its entity all the same
        own = [] if sub.action.lower() in META_ACTIONS else list(raw_paths(sub))
        for path, use in [*own, *chain_references(sub)]:
            out.extend(await _resolve(sub, path, use, joins, schema))
            if len(out) > MAX_REFERENCES:
                raise invalid_request(f"More than {MAX_REFERENCES} field references in one request.")
        for link in sub.chain.values() if sub.version == 4 else ():
            if isinstance(link.index, str):  # results keyed by this field's values
                out.extend(await _resolve(link.call, link.index, "select", {}, schema))
    return out


async def _resolve(
    call: Call, path: str, use: str, joins: dict[str, str], schema: Schema | None
) -> list[FieldRef]:
    bare = path.split(":", 1)[0] if not path.endswith("*") else path
    if bare == "*" and use != "select":
        return []  # COUNT(*): counts rows, reads no field
    if bare == "row_count" and use == "select" and call.version == 4:
        return []  # CiviCRM's pseudo-field: the number of matches
    if call.version == 3 and call.entity == "Contact" and bare.lower() in V3_LOCATION_FIELDS:
        location_entity, name = V3_LOCATION_FIELDS[bare.lower()]
        return [FieldRef(location_entity, name, use, path, call, via=location_entity)]
    searched: list[FieldRef] = []
    if call.version == 3 and call.entity == "Contact" and use == "filter" and bare in V3_CONTACT_SEARCHES:
        other, name = V3_CONTACT_SEARCHES[bare]
        searched.append(FieldRef(other, name, use, path, call, via=other))
    if call.version == 3 and schema is not None:
        # APIv3 names a field by its name, an alias or its unique name, never by a path.
        names = await schema.v3_fields(call.entity, V3_FIELDS_OF.get(call.action, call.action))
        # Contact's query answers a return by the field's key only (``contact_source``); any
        # other spelling answers every default field instead.
        returnable = await schema.v3_fields(call.entity, "get", keys_only=True)
        found = names.get(bare)
        if found is None or (use == "select" and call.entity == "Contact" and bare not in returnable):
            raise unknown_field(call.entity, bare, sorted(returnable if use == "select" else names))
        return [FieldRef(call.entity, found, use, path, call), *searched]
    if schema is None or call.version == 3:
        # By name only: the first segment is the call's own entity's (or a join alias).
        parts = bare.split(".")
        entity: str | None = call.entity
        if len(parts) > 1 and parts[0] in joins:
            entity, parts = joins[parts[0]], parts[1:]
        refs = [FieldRef(entity, parts[0], use, path, call)]
        refs += [FieldRef(None, p, use, path, call) for p in parts[1:]]
        return refs
    refs = await _resolve_in(call, call.entity, bare, path, use, joins, schema, hops=0, via=None)
    suffix = path.partition(":")[2] if not path.endswith("*") else ""
    if suffix and refs[-1].field not in ("*", "custom.*"):
        info = (await schema.fields(refs[-1].entity or call.entity)).get(refs[-1].field)
        if info is not None and suffix not in (info.suffixes or ()):
            # CiviCRM's words; it fails the whole call there
            raise invalid_request(
                f"No option list found for '{bare}'"
                if not info.suffixes
                else f"'{bare}' has no ':{suffix}' form (it has {', '.join(info.suffixes)})."
            )
    return refs


async def _resolve_in(
    call: Call,
    entity: str,
    name: str,
    path: str,
    use: str,
    joins: dict[str, str],
    schema: Schema,
    *,
    hops: int,
    via: str | None,
) -> list[FieldRef]:
    fields = await schema.fields(entity)
    if name in ("*", "custom.*"):  # custom.*: every custom field
        return [FieldRef(entity, name, use, path, call, via)]
    if name in fields:
        return [FieldRef(entity, name, use, path, call, via, secret=fields[name].secret)]
    head, dot, rest = name.partition(".")
    if dot and hops == 0 and head in joins:
        target = await schema.entity(joins[head])
        return await _resolve_in(call, target, rest, path, use, {}, schema, hops=1, via=target)
    info = fields.get(head)
    if dot and info is not None and info.fk_entity and hops < MAX_JOIN_HOPS:
        first = FieldRef(entity, head, use, path, call, via, secret=info.secret)
        return [
            first,
            *await _resolve_in(
                call, info.fk_entity, rest, path, use, {}, schema, hops=hops + 1, via=info.fk_entity
            ),
        ]
    raise unknown_field(entity, path if hops == 0 else name, list(fields))
