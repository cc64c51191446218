"""Preparing one call (the flow's "prepare" step): params normalisation -> parse into a
:class:`Call` -> names in CiviCRM's spelling -> field references -> validation against metadata
-> access policy; and, once the backend answered, the records shaped and checked against the
call (:func:`shape_result`). Every call (single, batch member, export, CLI, MCP) is prepared by
:func:`prepare_call` (through :class:`gateway.flow.flow.CallFlow`) and nothing else reaches a
backend.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from gateway.core import expressions, fields, validate
from gateway.core.answercheck import check_answer, without_additions
from gateway.core.call import Call, ChainLink, Condition, parse
from gateway.core.credentials import is_credential_field, is_credential_key
from gateway.core.errors import GatewayError
from gateway.core.params import check_names, normalize_v4
from gateway.core.policy import Policy, check_calls, denied
from gateway.core.policy import check as check_policy
from gateway.core.results import Records, response_body
from gateway.core.schema import SAME_AS, Schema, Schemas, unknown_api
from gateway.flow.clients import Client

# The operator at the command line: everything but credentials.
OPERATOR = Client("operator", Policy())


async def _canonical_names(call: Call, schema: Schema) -> Call:
    """Entity and action names in CiviCRM's own spelling (it matches actions in any case and
    entities too), throughout the chain tree; 404 for what does not exist."""
    if call.version == 4:
        entity = await schema.entity(call.entity)
        action = await schema.action(entity, call.action)
        chain = {
            name: ChainLink(await _canonical_names(link.call, schema), link.index)
            for name, link in call.chain.items()
        }
        joins = call.join
        if joins:
            joins = tuple(
                [
                    replace(
                        j,
                        entity=await schema.entity(j.entity),
                        bridge=await schema.entity(j.bridge) if j.bridge else None,
                    )
                    for j in joins
                ]
            )
        return replace(call, entity=entity, action=action, chain=chain, join=joins)
    known = True
    try:
        entity = await schema.entity(_v3_camel(call.entity))
    except GatewayError:
        # APIv3 has entities APIv4 lacks (Profile, CustomValue...): what they read is theirs
        # to decide, so only a trusted client (or unsafe_unchecked_actions) may call them.
        entity, known = call.entity, False
    if not (call.known_action and known) and not await schema.v3_action_exists(entity, call.action):
        raise unknown_api(f"API ({entity}, {call.action}) does not exist (or the extension is not enabled).")
    chains = []
    for key, calls in call.v3_chains:
        chains.append((key, tuple([await _canonical_names(c, schema) for c in calls])))
    return replace(call, entity=entity, v3_chains=tuple(chains), known_action=call.known_action and known)


async def _check_join_keys(call: Call, schema: Schema) -> None:
    """Each explicit join links on a real key (CiviCRM's metadata): ``alias.id`` equal to a
    field whose foreign key is the joined entity, or a reference field of the joined entity
    equal to the ``id`` it refers to. Any other equality multiplies rows (10 contacts joined on
    a shared ``communication_style_id`` read every contact with that style, for each)."""
    for sub, _ in call.walk():
        joins = {j.alias: j.entity for j in sub.join or ()}
        for join in sub.join or ():
            if not join.bridge and not await _joined_on_a_key(sub, join.alias, joins, schema):
                raise denied(
                    f"The join {join.alias!r} is not on a key: link a reference field to the id it "
                    f'refers to, e.g. ["{join.alias}.contact_id", "=", "id"].'
                )


def _join_side(call: Call, expr: expressions.Expr, joins: dict[str, str]) -> tuple[str, str, str] | None:
    """(entity, field, alias or "") of a plain field in a join condition."""
    if expr.root.kind != "field" or expr.alias is not None:
        return None
    head, dot, rest = expr.root.value.partition(":")[0].partition(".")
    if not dot:
        return call.entity, head, ""
    return (joins[head], rest, head) if head in joins and "." not in rest else None


async def _refers(schema: Schema, field: tuple[str, str, str], target: tuple[str, str, str]) -> bool:
    if target[1] != "id":
        return False
    info = (await schema.fields(field[0])).get(field[1])
    if info is None:
        return False
    if info.fk_entity is None:
        return field[1] == "entity_id"  # a dynamic reference (entity_table names the entity)
    return await schema.canonical(info.fk_entity) == await schema.canonical(target[0])


async def _joined_on_a_key(call: Call, alias: str, joins: dict[str, str], schema: Schema) -> bool:
    join = next(j for j in call.join or () if j.alias == alias)
    for cond in join.conditions:
        if not (isinstance(cond, Condition) and cond.op == "=" and cond.right is not None):
            continue
        a, b = _join_side(call, cond.left, joins), _join_side(call, cond.right, joins)
        if a is None or b is None or (a[2] == alias) == (b[2] == alias):
            continue  # one side is the joined entity's, the other another's
        if await _refers(schema, a, b) or await _refers(schema, b, a):
            return True
    return False


def _v3_camel(name: str) -> str:
    """APIv3's reading of an entity name: ``option_value``, ``Contact_`` and ``uf_match`` are
    ``OptionValue``, ``Contact`` and ``UfMatch`` (matched in any case afterwards)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) if "_" in name else name


async def prepare_call(
    schemas: Schemas,
    client: Client,
    version: int,
    entity: str,
    action: str,
    params: dict[str, Any],
    *,
    validating: bool = True,
    reads_only: bool = False,
) -> Call:
    """Names, params normalisation, parsing, validation and access policy: the one way in.
    ``reads_only``: the call came as a GET, which any web page can make a browser send, so
    nothing in its call tree may write (405 before anything else is checked)."""
    check_names(entity, action)
    if version == 4:
        params = normalize_v4(action, params)
    policy = client.policy
    # Every client but a trusted one has each name resolved through CiviCRM's metadata, even
    # with validation off: what cannot be resolved cannot be checked.
    checking = validating or not policy.trusted
    schema = schemas.for_identity(client.identity) if checking else None
    call = parse(version, entity, action, params)
    if reads_only and not call.reads_only:
        raise GatewayError(
            "method-not-allowed",
            f"{call.label} chains a call that changes data: send it with POST.",
            headers={"Allow": "POST"},
        )
    canonical: dict[str, str] = {}
    if schema is not None:
        call = await _canonical_names(call, schema)
        canonical = await schema.canonical_map()
    check_calls(policy, call, None, canonical)
    refs = await fields.references(call, schema)
    if schema is not None and not policy.trusted:
        await _check_join_keys(call, schema)
    call = check_policy(policy, call, refs, canonical)
    if schema is not None and validating:
        await validate.check(call, refs, schema)
    if schema is not None and not policy.credential_fields:
        call = await _without_credentials(call, schema)
    return call


async def _without_credentials(call: Call, schema: Schema) -> Call:
    """A get that selects every field (no select, ``*``, ``join.*``) names them instead, less
    the credentials: CiviCRM then never reads a ``hash`` or ``api_key`` for a client that may
    not see it (stripping the answer stays as the last line of defence)."""
    if call.version != 4:
        return call
    chain = {
        name: ChainLink(await _without_credentials(link.call, schema), link.index)
        for name, link in call.chain.items()
    }
    select = call.select
    if call.is_get and not any(e.is_aggregate for e in select or ()):
        exprs = list(select or ()) or [expressions.parse("*", allow_wildcard=True)]
        expanded: list[expressions.Expr] = []
        for expr in exprs:
            if expr.is_field and expr.text.endswith("*") and expr.text != "custom.*":
                expanded.extend(await _expand(call, expr.text, schema))
            else:
                expanded.append(expr)
        if [e.text for e in expanded] != [e.text for e in exprs] or select is None:
            select = tuple(expanded)
    if select is call.select and chain == call.chain:
        return call
    return replace(call, select=select, chain=chain)


async def _expand(call: Call, wildcard: str, schema: Schema) -> list[expressions.Expr]:
    prefix = wildcard[:-1]  # "" or "email_primary." / "e."
    entity = call.entity
    if prefix:
        head = prefix[:-1]
        joins = {j.alias: j.entity for j in call.join or ()}
        if head in joins:
            entity = await schema.entity(joins[head])
        else:
            info = (await schema.fields(call.entity)).get(head)
            if info is None or not info.fk_entity:
                return [expressions.parse(wildcard, allow_wildcard=True)]  # CiviCRM will say what it is
            entity = info.fk_entity
    fields = await schema.fields(entity)
    if not any(is_credential_field(name) for name in fields):
        return [expressions.parse(wildcard, allow_wildcard=True)]
    return [
        expressions.parse(prefix + name)
        for name, info in fields.items()
        if info.kind == "Field" and not is_credential_field(name)
    ]


def _narrow_write_answer(policy: Policy, call: Call, records: Records) -> Records:
    """A write answers the whole record it saved (``reload`` or not): for a client with a field
    list on the entity, only those fields (and ``id``) are passed on."""
    if call.is_read:
        return records
    allowed = policy.field_list(call.entity, SAME_AS.get(call.entity.lower()))
    if allowed is None:
        return records
    keep = allowed | {"id"}
    # APIv3 answers some fields under their unique name (contact_source for source)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", call.entity).lower() + "_"

    def kept(key: str) -> bool:
        return key in keep or (call.version == 3 and key.removeprefix(prefix) in keep)

    return Records(
        [{k: v for k, v in r.items() if kept(k)} if isinstance(r, dict) else r for r in records],
        count_matched=records.count_matched,
    )


def shape_result(client: Client, call: Call, records: Records) -> tuple[Any, dict[str, str]]:
    records = _narrow_write_answer(client.policy, call, records)
    strip = not client.policy.credential_fields
    if (
        strip
        and call.version == 3
        and call.action == "getvalue"
        and any(is_credential_key(name) for name in call.returns or ())
    ):
        records = Records([None])  # a scalar answer has no key to strip: drop the value
    records = Records(without_additions(call, records), count_matched=records.count_matched)
    body, headers = response_body(call.version, call.action, records, strip_credentials=strip)
    check_answer(
        call, body if isinstance(body, list) else [body], credentials=not strip
    )  # what is passed on, vs the call
    return body, headers
