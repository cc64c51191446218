"""What CiviCRM says exists, as the gateway's checks need it: entity names, each entity's actions,
and its fields (type, foreign key, required). Loaded through the backend's own metadata calls
(``Entity.get``, ``getActions``, ``getFields``), as the identity the client's calls run as
(CiviCRM filters metadata by permission), and kept by the resilient backend's metadata cache.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.call import Call, parse
from gateway.core.errors import GatewayError
from gateway.core.identity import Identity
from gateway.core.results import Records


class MetadataSource(Protocol):
    """Where metadata comes from: the gateway's (resilient, caching) backend."""

    async def call(self, call: Call, *, identity: Identity | None = None) -> Records: ...

    def metadata_generation(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FieldInfo:
    name: str
    data_type: str | None = None
    fk_entity: str | None = None
    required: bool = False
    has_default: bool = False
    readonly: bool = False
    kind: str = "Field"  # CiviCRM's getFields "type": Field, Extra, Custom, Filter
    # a password input: a secret whatever its name (gateway.core.credentials misses it by name)
    secret: bool = False
    # the ":suffix" forms of a field with options (name, label...); None: no option list
    suffixes: tuple[str, ...] | None = None


# Entities known to be another one under a different name, whatever the metadata says.
# Entities whose records are another entity's data (``Order`` is a contribution, ``Payment`` a
# financial transaction, ``RelationshipCache`` a relationship, filled by triggers): the rules
# written for that one cover them.
SAME_AS = {
    "individual": "Contact",
    "organization": "Contact",
    "household": "Contact",
    "user": "UFMatch",
    "order": "Contribution",
    "payment": "FinancialTrxn",
    "relationshipcache": "Relationship",
}
# The other names of each canonical entity (a field list written for one applies to all).
ALIASES: dict[str, frozenset[str]] = {
    canonical.lower(): frozenset(k for k, v in SAME_AS.items() if v == canonical) | {canonical.lower()}
    for canonical in set(SAME_AS.values())
}


def canonical_entities(rows: list[dict[str, Any]]) -> dict[str, str]:
    """lower-case entity name -> the canonical entity of its table, from ``Entity.get`` rows
    with ``table_name``: the entity whose name is the table's (``civicrm_uf_match`` is
    ``UFMatch``), else the first by name."""
    by_table: dict[str, list[str]] = {}
    for row in rows:
        table = row.get("table_name")
        if isinstance(table, str) and table:
            by_table.setdefault(table, []).append(row["name"])
    out = dict(SAME_AS)
    for table, names in by_table.items():
        if any(n.lower() in SAME_AS for n in names):
            continue  # known already
        if len(names) < 2:
            continue
        plain = table.removeprefix("civicrm_").replace("_", "").lower()
        main = next((n for n in names if n.lower() == plain), sorted(names)[0])
        for name in names:
            out[name.lower()] = main
    return out


def _suffixes(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return None


def unknown_field(entity: str, name: str, known: list[str] | None = None) -> GatewayError:
    hint = ""
    if known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            hint = " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return GatewayError(
        "unknown-field", f"{entity} has no field {name!r}.{hint}", civicrm={"entity": entity, "field": name}
    )


def unknown_api(detail: str) -> GatewayError:
    return GatewayError("unknown-api", detail)


class Schema:
    """Metadata lookups for one identity; every answer comes from the backend's cache."""

    def __init__(self, backend: MetadataSource, identity: Identity | None) -> None:
        self._backend = backend
        self._identity = identity
        self._entities: dict[str, str] | None = None
        self._canonical: dict[str, str] = {}
        self._actions: dict[str, dict[str, str]] = {}
        self._fields: dict[tuple[str, str], dict[str, FieldInfo]] = {}

    async def _call(self, entity: str, action: str, params: dict[str, Any]) -> list[Any]:
        return await self._backend.call(parse(4, entity, action, params), identity=self._identity)

    async def entity(self, name: str) -> str:
        """CiviCRM's spelling of an entity name (matched in any case), or 404 unknown-api."""
        if self._entities is None:
            rows = await self._call("Entity", "get", {"select": ["name", "table_name"]})
            named = [r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)]
            self._entities = {r["name"].lower(): r["name"] for r in named}
            self._canonical = canonical_entities(named)
        found = self._entities.get(name.lower())
        if found is None:
            raise unknown_api(
                f"API ({name}, get) does not exist (or the extension it belongs to is not enabled)."
            )
        return found

    async def canonical_map(self) -> dict[str, str]:
        """lower-case entity name -> its canonical entity, for every entity that has one."""
        await self.entity("Contact")
        return self._canonical

    async def canonical(self, name: str) -> str:
        """The entity ``name`` is another name of (the contact types are ``Contact``; entities
        that share a table are the one named after the table): policy rules written for it
        cover them all."""
        entity = await self.entity(name)
        return self._canonical.get(entity.lower(), SAME_AS.get(entity.lower(), entity))

    async def actions(self, entity: str) -> dict[str, str]:
        """Lower-cased action name -> CiviCRM's spelling."""
        if entity not in self._actions:
            rows = await self._call(entity, "getActions", {"select": ["name"]})
            self._actions[entity] = {
                r["name"].lower(): r["name"]
                for r in rows
                if isinstance(r, dict) and isinstance(r.get("name"), str)
            }
        return self._actions[entity]

    async def v3_fields(self, entity: str, action: str, *, keys_only: bool = False) -> dict[str, str]:
        """APIv3's names for ``entity``'s fields as ``action`` takes them -> the field's name:
        each field's name, its aliases and its unique name (``contact_source``, the entity's
        name in snake case before the field's). ``keys_only``: the getfields keys alone (the
        unique name where there is one, its aliases), which a Contact ``return`` needs."""
        key = (f"v3:{entity}{':keys' if keys_only else ''}", action)
        if key not in self._fields:
            rows: list[Any]
            try:
                rows = await self._backend.call(
                    parse(3, entity, "getfields", {"api_action": action}), identity=self._identity
                )
            except GatewayError as exc:
                if exc.slug not in ("unknown-api", "civicrm-error", "civicrm-bad-request"):
                    raise
                rows = []
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", entity).lower() + "_"
            infos: dict[str, FieldInfo] = {}
            for r in rows:
                if not (isinstance(r, dict) and isinstance(r.get("name"), str)):
                    continue
                info = FieldInfo(r["name"])
                unique = r.get("uniqueName")
                if keys_only:
                    spellings = [unique if isinstance(unique, str) and unique else r["name"]]
                else:
                    spellings = [r["name"], prefix + r["name"], unique]
                aliases = r.get("api.aliases")
                spellings += aliases if isinstance(aliases, list) else []
                for spelling in spellings:
                    if isinstance(spelling, str) and spelling:
                        infos.setdefault(spelling, info)
            self._fields[key] = infos
        return {spelling: info.name for spelling, info in self._fields[key].items()}

    async def v3_action_exists(self, entity: str, name: str) -> bool:
        """Whether APIv3 has ``entity.name`` (its ``getactions``; an unknown entity has none)."""
        key = f"v3:{entity}"
        if key not in self._actions:
            rows: list[Any]
            try:
                rows = await self._backend.call(parse(3, entity, "getactions", {}), identity=self._identity)
            except GatewayError as exc:
                if exc.slug not in ("unknown-api", "civicrm-error", "civicrm-bad-request"):
                    raise
                rows = []
            self._actions[key] = {r.lower(): r for r in rows if isinstance(r, str)}
        return name.lower() in self._actions[key]

    async def action(self, entity: str, name: str) -> str:
        """CiviCRM's spelling of an action, 404 unknown-api when there is none, or 403
        civicrm-permission-denied when it exists but this identity may not run it.

        CiviCRM's ``getActions`` leaves out the actions its user lacks the permission for, so
        "not listed" is not "does not exist": the gateway's own identity (cached metadata) is
        asked next, then CiviCRM's ``checkAccess``, which answers for an existing action and
        fails for an unknown one. Only a client mistake or a refusal pays those calls."""
        found = (await self.actions(entity)).get(name.lower())
        if found is not None:
            return found
        exists = False
        if self._identity is not None:
            exists = name.lower() in await Schema(self._backend, None).actions(entity)
        if not exists and "checkaccess" in await self.actions(entity):

            async def answers(action: str) -> bool:
                try:
                    # "values" must not be empty; a null id names no record, so none is read
                    await self._call(entity, "checkAccess", {"action": action, "values": {"id": None}})
                except GatewayError as exc:
                    if exc.status in (503, 504):  # CiviCRM unreachable: no answer either way
                        raise
                    return False  # "Api Contact frob version 4 does not exist." (masked or not)
                return True

            # A backend that answers checkAccess for any name (an emulator) tells nothing: an
            # action no CiviCRM has is asked too, and must fail.
            exists = await answers(name) and not await answers("gatewayNoSuchAction")
        if exists:
            raise GatewayError(
                "civicrm-permission-denied",
                f"The CiviCRM user this call runs as may not run {entity}.{name} "
                "(CiviCRM's getActions leaves it out for that user).",
            )
        raise unknown_api(f"Api {entity} {name} version 4 does not exist.")

    async def lookup(self, entity: str, record_id: Any) -> list[Any]:
        """Whether a record exists (its id, or nothing): not metadata, never cached."""
        return await self._call(
            entity, "get", {"select": ["id"], "where": [["id", "=", record_id]], "limit": 1}
        )

    async def fields(self, entity: str, action: str = "get") -> dict[str, FieldInfo]:
        """The fields of ``entity`` as ``action`` sees them (``create``: with ``required``)."""
        key = (entity, action)
        if key not in self._fields:
            rows = await self._call(
                entity,
                "getFields",
                {
                    "select": [
                        "name",
                        "data_type",
                        "fk_entity",
                        "required",
                        "default_value",
                        "readonly",
                        "type",
                        "input_type",
                        "suffixes",
                    ],
                    "action": action,
                    "loadOptions": False,
                },
            )
            infos = {}
            for r in rows:
                if isinstance(r, dict) and isinstance(r.get("name"), str):
                    infos[r["name"]] = FieldInfo(
                        r["name"],
                        r.get("data_type"),
                        r.get("fk_entity") if isinstance(r.get("fk_entity"), str) else None,
                        bool(r.get("required")),
                        r.get("default_value") is not None,
                        bool(r.get("readonly")),
                        str(r.get("type") or "Field"),
                        r.get("input_type") == "Password",
                        _suffixes(r.get("suffixes")),
                    )
            self._fields[key] = infos
        return self._fields[key]


class Schemas:
    """One :class:`Schema` per CiviCRM identity, renewed after ``ttl`` seconds or when the
    backend's metadata cache was flushed (a custom field added, ``POST /cache/flush``)."""

    def __init__(
        self, backend: MetadataSource, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._backend = backend
        self._ttl = ttl
        self._clock = clock
        self._by_identity: dict[Identity | None, tuple[float, int, Schema]] = {}

    def for_identity(self, identity: Identity | None) -> Schema:
        now = self._clock()
        generation = self._backend.metadata_generation()
        entry = self._by_identity.get(identity)
        if entry is not None and entry[0] > now and entry[1] == generation:
            return entry[2]
        schema = Schema(self._backend, identity)
        if len(self._by_identity) > 1000:
            self._by_identity.clear()
        self._by_identity[identity] = (now + self._ttl, generation, schema)
        return schema
