"""The sandbox: an embedded CiviCRM APIv4/APIv3 emulator on SQLite.

One connection guarded by one lock; every public call is one transaction, so a failing write
leaves nothing behind and worker threads can share the instance.
"""

from __future__ import annotations

import json
import random
import re
import threading
from datetime import datetime
from typing import Any

from gateway.sandbox import contact_actions, meta
from gateway.sandbox.actions import ACTIONS, Ctx, Record
from gateway.sandbox.errors import CiviError, Unauthorized
from gateway.sandbox.schema import ENTITIES, META_ENTITIES, all_fields
from gateway.sandbox.store import (
    ALL_PERMISSIONS,
    API_STAFF_PERMISSIONS,
    STAFF_PERMISSIONS,
    api_key_for,
    connect,
    initialise,
    is_initialised,
)
from gateway.sandbox.touch import touch

# Parameter types per action, as the real action classes declare them (5.77's getActions with
# select [name, params]: tests/fixtures/samples/getactions-params.json). "version" is not a
# param of the real classes; the sandbox tolerates it because APIv3-style callers send it.
_A, _I, _B, _S, _M = "array", "int", "bool", "string", "mixed"
_COMMON = {"checkPermissions": _B, "chain": _A, "debug": _B, "language": _S, "version": _M}
_GET = {"select": _A, "where": _A, "orderBy": _A, "limit": _I, "offset": _I}
_BATCH = {"where": _A, "orderBy": _A, "limit": _I, "offset": _I}  # update/delete/replace
PARAMS: dict[str, dict[str, str]] = {
    "get": {**_GET, "join": _A, "groupBy": _A, "having": _A, "translationMode": _S},
    "create": {"values": _A},
    "update": {**_BATCH, "values": _A, "reload": _B},
    "save": {"records": _A, "defaults": _A, "match": _A, "reload": _B},
    "delete": dict(_BATCH),
    "replace": {**_BATCH, "records": _A, "defaults": _A, "match": _A, "reload": _B},
    "getFields": {**_GET, "action": _S, "loadOptions": _M, "values": _A, "includeCustom": _B},
    "getActions": dict(_GET),
    "autocomplete": {
        "input": _S,
        "page": _I,
        "key": _S,
        "formName": _S,
        "fieldName": _S,
        "ids": _A,
        "display": _M,
        "savedSearch": _M,
        "values": _A,
    },
    "checkAccess": {"action": _S, "values": _A},
    "revert": dict(_BATCH),
    "refresh": dict(_BATCH),
    "export": {"id": _I, "match": _A, "update": _S, "cleanup": _S},
    "getCoordinates": {"address": _S},
    "set": {"values": _A, "domainId": _M, "contactId": _I},
    "entity_get": {**_GET, "includeCustom": _B},
    "setting_get": {"select": _A, "domainId": _M, "contactId": _I},
    "setting_getFields": {
        **_GET,
        "action": _S,
        "loadOptions": _M,
        "values": _A,
        "includeCustom": _B,
        "domainId": _I,
    },
}
PARAMS.update(contact_actions.PARAMS)
READ_ACTIONS = ("get", "autocomplete", "checkAccess", "getFields", "getActions")
# "array" params read as PHP reads them: keyed (field => value) or listed (one item each).
_KEYED = frozenset({"values", "defaults", "orderBy", "chain"})
_LISTED = frozenset({"select", "where", "having", "join", "groupBy", "records", "match", "ids"})


_ENTITY_NAMES = {name.lower(): name for name in (*ENTITIES, *META_ENTITIES)}


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _check_type(name: str, kind: str, value: Any) -> Any:
    bad = CiviError(f'Parameter "{name}" is not of the correct type. Expecting {kind}.')
    if value is None or kind == _M:
        return value
    if kind == _A:
        if not isinstance(value, list | dict):
            raise bad
        # A PHP array is both: a JSON list given where a map is read is keyed 0..n-1, and a
        # JSON object given where a list is read contributes its values.
        if name in _KEYED and isinstance(value, list):
            return {str(i): v for i, v in enumerate(value)}
        if name in _LISTED and isinstance(value, dict):
            return list(value.values())
        return value
    if kind == _I:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise bad
    if kind == _B:
        if isinstance(value, bool):
            return value
        if value in (0, 1, "0", "1"):
            return bool(int(value))
        raise bad
    if kind == _S:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def validate_params(entity: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown params (``Unknown api parameter: setFoo``) and wrong types."""
    key = action
    if entity == "Entity" and action == "get":
        key = "entity_get"
    elif entity == "Setting" and action in ("get", "getFields"):
        key = f"setting_{action}"
    allowed = {**_COMMON, **PARAMS.get(key, {})}
    if entity == "Contact" and action == "delete":
        allowed["useTrash"] = _B
    out = {}
    for name, value in params.items():
        if name not in allowed:
            raise CiviError(f"Unknown api parameter: set{name[:1].upper()}{name[1:]}")
        out[name] = _check_type(name, allowed[name], value)
    return out


def _substitute(value: Any, record: Record, entity: str) -> Any:
    """Chained-call params: "$field" strings become the parent record's value (a field the
    parent did not select stays the literal string, as in CiviCRM)."""
    if isinstance(value, str) and value.startswith("$") and value[1:] in record:
        touch(entity, value[1:])  # the parent's field flows into the child call
        return record[value[1:]]
    if isinstance(value, list):
        return [_substitute(v, record, entity) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, record, entity) for k, v in value.items()}
    return value


def apply_index(values: list[Record], index: Any) -> Any:
    """REST ``index``: an integer picks one record, a field name re-keys the list."""
    if index is None or index == "":
        return values
    if isinstance(index, int) or (isinstance(index, str) and re.fullmatch(r"\d+", index)):
        i = int(index)
        return values[i] if i < len(values) else None
    if not values:
        return []  # PHP's empty array is a JSON list
    return {str(_php_key(r.get(index))): r for r in values}


def _php_key(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    return "" if v is None else v


class Sandbox:
    """An embedded, faithful-as-practical CiviCRM: APIv4 (and APIv3 basics) over SQLite."""

    def __init__(self, db_path: str = ":memory:", *, demo: int = 0, seed: int = 1) -> None:
        self._lock = threading.Lock()
        self._conn = connect(db_path)
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 (deterministic fixtures, not secrets)
        with self._lock:
            if not is_initialised(self._conn):
                self._conn.execute("BEGIN")
                try:
                    initialise(self._conn, seed, self._rng, _now())
                    if demo:
                        from gateway.sandbox.demo import generate

                        generate(self, demo, seed)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            else:
                row = self._conn.execute("SELECT value FROM sandbox_meta WHERE key='seed'")
                self.seed = int(row.fetchone()[0])

    # ---- public API -------------------------------------------------------------------
    def api4(
        self,
        entity: str,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        check_permissions: bool = False,
        contact_id: int | None = None,
        index: str | int | None = None,
    ) -> dict[str, Any]:
        """Run one APIv4 call and return the REST envelope; raises CiviError/Unauthorized."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                result = self._api4(entity, action, params, check_permissions, contact_id, index)
                self._conn.execute("COMMIT")
                return result
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def api3(
        self,
        entity: str,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        check_permissions: bool = False,
        contact_id: int | None = None,
    ) -> dict[str, Any]:
        """Run one APIv3 call; API errors come back as ``is_error: 1`` envelopes."""
        from gateway.sandbox.v3 import run_v3

        with self._lock:
            self._conn.execute("BEGIN")
            try:
                result = run_v3(self, entity, action, dict(params or {}), check_permissions, contact_id)
                if result.get("is_error"):
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute("COMMIT")
                return result
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def users(self) -> list[dict[str, Any]]:
        """The CMS users: username, password, contact_id, api_key, permissions."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT u.username, u.password, u.contact_id, c.api_key, u.permissions "
                "FROM sandbox_user u JOIN civicrm_contact c ON c.id = u.contact_id "
                "ORDER BY u.id"
            ).fetchall()
        return [
            {
                "username": r[0],
                "password": r[1],
                "contact_id": r[2],
                "api_key": r[3],
                "permissions": json.loads(r[4]),
            }
            for r in rows
        ]

    def permissions(self, contact_id: int | None) -> frozenset[str]:
        with self._lock:
            return self._perms(contact_id)

    def add_user(
        self,
        username: str,
        password: str,
        contact_id: int,
        permissions: list[str] | tuple[str, ...],
        api_key: str | None = None,
    ) -> None:
        """Give a contact a CMS user (and optionally an API key), as a test fixture would."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(
                    "INSERT INTO sandbox_user (username, password, contact_id, permissions) "
                    "VALUES (?, ?, ?, ?)",
                    (username, password, contact_id, json.dumps(list(permissions))),
                )
                if api_key is not None:
                    self._conn.execute(
                        "UPDATE civicrm_contact SET api_key = ? WHERE id = ?", (api_key, contact_id)
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def set_next_id(self, entity: str, next_id: int) -> None:
        """Make the next record of ``entity`` get ``next_id`` (test fixtures re-creating a
        capture's ids); refused when a record already has that id or a higher one."""
        table = ENTITIES[entity].table
        with self._lock:
            top = self._conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]  # noqa: S608
            if top >= next_id:
                raise ValueError(f"{entity} {top} exists: the next id cannot be {next_id}")
            self._conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            self._conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, next_id - 1))

    @property
    def site_key(self) -> str:
        with self._lock:
            return self._conn.execute("SELECT value FROM sandbox_meta WHERE key='site_key'").fetchone()[0]

    @property
    def admin_api_key(self) -> str:
        return api_key_for(self.seed, "admin")

    @property
    def staff_api_key(self) -> str:
        return self.ensure_staff()["api_key"]

    def ensure_staff(self) -> dict[str, Any]:
        """The "staff" user (may view and edit contacts, lacks 'authenticate with api key' and
        'administer CiviCRM'), created on first use like a site admin adding a user."""
        return self._ensure_user("staff", "Staff", STAFF_PERMISSIONS)

    def ensure_api_staff(self) -> dict[str, Any]:
        """The "api_staff" user: the least-privileged API user of a real test site
        (tests/real/kit's "staff": access CiviCRM, view all contacts, access AJAX API,
        authenticate with api key). It reads contacts over REST with its own key; every write
        is refused, ``api_key`` is hidden from it and its errors are masked."""
        return self._ensure_user("api_staff", "Api", API_STAFF_PERMISSIONS)

    def _ensure_user(self, username: str, first_name: str, permissions: tuple[str, ...]) -> dict[str, Any]:
        for user in self.users():
            if user["username"] == username:
                return user
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                cid = self._api4(
                    "Contact",
                    "create",
                    {"values": {"contact_type": "Individual", "first_name": first_name, "last_name": "User"}},
                    False,
                    None,
                    None,
                )["values"][0]["id"]
                self._conn.execute(
                    "INSERT INTO sandbox_user (username, password, contact_id, permissions) "
                    "VALUES (?, ?, ?, ?)",
                    (username, username, cid, json.dumps(list(permissions))),
                )
                self._conn.execute(
                    "UPDATE civicrm_contact SET api_key = ? WHERE id = ?",
                    (api_key_for(self.seed, username), cid),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return next(u for u in self.users() if u["username"] == username)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- internals (lock held) --------------------------------------------------------
    def _perms(self, contact_id: int | None) -> frozenset[str]:
        if contact_id is None:
            return frozenset()
        row = self._conn.execute(
            "SELECT permissions FROM sandbox_user WHERE contact_id = ?", (contact_id,)
        ).fetchone()
        if not row:
            return frozenset()
        perms = frozenset(json.loads(row[0]))
        # the site's superuser role has every permission (also those a sandbox database made
        # by an older version did not list)
        return perms | frozenset(ALL_PERMISSIONS) if "administer CiviCRM system" in perms else perms

    def _api4(
        self,
        entity: str,
        action: str,
        params: dict[str, Any] | None,
        check: bool,
        contact_id: int | None,
        index: Any,
    ) -> dict[str, Any]:
        # PHP class names are case-insensitive: "contact" finds Civi\Api4\Contact, and the
        # answer names the entity as the class does (sample 19 of round 2)
        entity = _ENTITY_NAMES.get(entity.lower(), entity) if isinstance(entity, str) else entity
        if not isinstance(entity, str) or (entity not in ENTITIES and entity not in META_ENTITIES):
            raise CiviError(
                f"API ({entity}, {action}) does not exist (or the extension it belongs to is not enabled).",
                v3_code="not-found",
            )
        available = {a.lower(): a for a in meta.entity_actions(entity)}
        canonical = available.get(str(action).lower())
        if canonical is None:
            raise CiviError(f"Api {entity} {action} version 4 does not exist.", v3_code="not-found")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise CiviError("Invalid params: expecting an object")
        params = validate_params(entity, canonical, params)
        ctx = Ctx(
            self._conn,
            ENTITIES.get(entity) or ENTITIES["Contact"],
            canonical,
            params,
            check,
            contact_id,
            self._perms(contact_id),
            _now(),
            self._rng,
            lambda e, a, p, i: self._api4(e, a, p, check, contact_id, i),
        )
        index_field = None
        if isinstance(index, str) and index and not re.fullmatch(r"\d+", index):
            index_field = self._prepare_index(entity, params, index)
        self._authorize(ctx, entity, canonical)
        values = self._run(ctx, entity, canonical)
        if params.get("chain"):
            self._chain(ctx, values, params["chain"])
        count = len(values)
        indexed = apply_index(values, index)
        if index_field and index_field.get("remove"):
            for rec in values:
                rec.pop(index_field["name"], None)
        envelope: dict[str, Any] = {
            "values": indexed,
            "entity": entity,
            "action": canonical,
            "debug": None,
            "version": 4,
            "count": count,
            "countFetched": count,
        }
        if "count" in ctx.extra:
            envelope["count"] = ctx.extra["count"]
        if ctx.count_matched is not None:
            envelope["count"] = ctx.count_matched
            envelope["countMatched"] = ctx.count_matched
        return envelope

    @staticmethod
    def _prepare_index(entity: str, params: dict[str, Any], index: str) -> dict[str, Any]:
        """Like civicrm_api4(): a non-selected index field is added to select, then removed.
        A quoted value is parsed as an SQL string expression whose alias clashes."""
        select = params.get("select")
        names = {f.name for f in all_fields(entity)} if entity in ENTITIES else set()
        if len(index) >= 2 and index[0] == index[-1] and index[0] in "\"'":
            if index[1:-1] in names:
                raise CiviError("Cannot use existing field name as alias")
            return {"name": index, "remove": False}
        if isinstance(select, list) and select and index not in select and "*" not in select:
            params["select"] = [*select, index]
            return {"name": index, "remove": True}
        return {"name": index, "remove": False}

    def _authorize(self, ctx: Ctx, entity: str, action: str) -> None:
        """Permission checks (only when check_permissions): anonymous reads see nothing,
        anonymous writes and writes without the entity's permission are denied."""
        if not ctx.check or action in ("getFields", "getActions"):
            return
        denied = Unauthorized(f"Authorization failed: CiviCRM APIv4 ({entity}::{action})")
        special = contact_actions.permission_for(entity, action)
        if special is not None:
            if any(p not in ctx.perms for p in special):
                raise denied
            return
        if entity == "Entity":
            return
        if entity == "Setting":
            need = "administer CiviCRM" if action == "set" else "access CiviCRM"
            if need not in ctx.perms:
                raise denied
            return
        ent = ENTITIES[entity]
        if action in READ_ACTIONS:
            if ctx.contact_id is None:
                ctx.empty = True
            elif ent.read_perm and ent.read_perm not in ctx.perms:
                raise denied
            elif "view all contacts" not in ctx.perms:
                ctx.empty = True
            return
        perm = ent.delete_perm if action == "delete" and ent.delete_perm else ent.write_perm
        if action == "create" and ent.create_perm:
            perm = ent.create_perm
        if (
            entity == "Contact"
            and action == "update"
            and ctx.contact_id is not None
            and "access CiviCRM" in ctx.perms
            and perm not in ctx.perms
        ):
            # Contact 'update' needs no permission of its own (5.77): each record it would
            # change is checked, so an update that matches nothing is an empty success
            given = ctx.params.get("values")
            values: dict[str, Any] = given if isinstance(given, dict) else {}
            where = [["id", "=", values["id"]]] if values.get("id") else ctx.params.get("where") or []
            if self._api4("Contact", "get", {"select": ["id"], "where": where}, True, ctx.contact_id, None)[
                "values"
            ]:
                raise denied
            return
        if ctx.contact_id is None or perm not in ctx.perms:
            raise denied

    def _run(self, ctx: Ctx, entity: str, action: str) -> list[Record]:
        if action == "getActions":
            return meta.get_actions(ctx, entity)
        if entity == "Entity":
            if action == "getFields":
                return meta.get_fields(ctx, "Entity", list(meta.ENTITY_FIELDS))
            return meta.get_entities(ctx)
        if entity == "Setting":
            if action == "getFields":
                return meta.get_fields(ctx, "Setting", meta.setting_fields(ctx))
            return meta.setting_set(ctx) if action == "set" else meta.setting_get(ctx)
        if action == "getFields":
            return meta.get_fields(ctx, entity, all_fields(entity))
        return ACTIONS[action](ctx)

    def _chain(self, ctx: Ctx, values: list[Record], chain: Any) -> None:
        if not isinstance(chain, dict):
            return
        for record in values:
            for name, call in chain.items():
                if not isinstance(call, list) or len(call) < 2:
                    raise CiviError("Invalid chain: expected [entity, action, params]")
                sub_params = _substitute(call[2] if len(call) > 2 else {}, record, ctx.entity.name)
                sub_index = call[3] if len(call) > 3 else None
                result = ctx.call(call[0], call[1], sub_params, sub_index)
                record[name] = result["values"]
