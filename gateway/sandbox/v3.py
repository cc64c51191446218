"""APIv3 on top of the APIv4 engine: v3 params to v4 where/select, v3 envelopes and the
legacy Contact record shape (strings, ""-for-null, contact_id/contact_is_deleted aliases)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gateway.sandbox.errors import CiviError
from gateway.sandbox.perms import needs
from gateway.sandbox.schema import BOOL, DATE, ENTITIES, FLOAT, INT, MONEY, STR, TEXT, TS, Entity, Field
from gateway.sandbox.touch import touch

if TYPE_CHECKING:
    from gateway.sandbox.engine import Sandbox

RESERVED = {
    "sequential",
    "return",
    "options",
    "version",
    "debug",
    "check_permissions",
    "prettyprint",
    "json",
    "entity",
    "action",
    "IDS",
    "rowCount",
    "offset",
    "sort",
    "limit",
}
ACTIONS3 = ("get", "getsingle", "getcount", "getvalue", "create", "delete", "getfields", "getoptions")
V3_OPS = {
    "=",
    "!=",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "IN",
    "NOT IN",
    "LIKE",
    "NOT LIKE",
    "BETWEEN",
    "NOT BETWEEN",
    "IS NULL",
    "IS NOT NULL",
}
TYPE_CODES = {INT: 1, STR: 2, DATE: 4, TS: 12, BOOL: 16, TEXT: 32, FLOAT: 512, MONEY: 1024}

# The legacy Contact record: v3 key -> APIv4 select expression (None = always "")
CONTACT_KEYS: tuple[tuple[str, str | None], ...] = (
    ("contact_id", "id"),
    ("contact_type", "contact_type"),
    ("contact_sub_type", "contact_sub_type"),
    ("sort_name", "sort_name"),
    ("display_name", "display_name"),
    ("external_identifier", "external_identifier"),
    ("organization_name", "organization_name"),
    ("first_name", "first_name"),
    ("middle_name", "middle_name"),
    ("last_name", "last_name"),
    ("do_not_email", "do_not_email"),
    ("do_not_phone", "do_not_phone"),
    ("do_not_mail", "do_not_mail"),
    ("do_not_sms", "do_not_sms"),
    ("do_not_trade", "do_not_trade"),
    ("is_opt_out", "is_opt_out"),
    ("legal_identifier", "legal_identifier"),
    ("nick_name", "nick_name"),
    ("legal_name", "legal_name"),
    ("image_URL", "image_URL"),
    ("preferred_communication_method", "preferred_communication_method"),
    ("preferred_language", "preferred_language"),
    ("contact_source", "source"),
    ("prefix_id", "prefix_id"),
    ("suffix_id", "suffix_id"),
    ("formal_title", "formal_title"),
    ("communication_style_id", "communication_style_id"),
    ("job_title", "job_title"),
    ("gender_id", "gender_id"),
    ("birth_date", "birth_date"),
    ("is_deceased", "is_deceased"),
    ("deceased_date", "deceased_date"),
    ("household_name", "household_name"),
    ("sic_code", "sic_code"),
    ("contact_is_deleted", "is_deleted"),
    ("current_employer", "employer_id.display_name"),
    ("address_id", "address_primary"),
    ("street_address", "address_primary.street_address"),
    ("supplemental_address_1", "address_primary.supplemental_address_1"),
    ("supplemental_address_2", "address_primary.supplemental_address_2"),
    ("supplemental_address_3", "address_primary.supplemental_address_3"),
    ("city", "address_primary.city"),
    ("postal_code_suffix", "address_primary.postal_code_suffix"),
    ("postal_code", "address_primary.postal_code"),
    ("geo_code_1", "address_primary.geo_code_1"),
    ("geo_code_2", "address_primary.geo_code_2"),
    ("state_province_id", "address_primary.state_province_id"),
    ("country_id", "address_primary.country_id"),
    ("phone_id", "phone_primary"),
    ("phone_type_id", "phone_primary.phone_type_id"),
    ("phone", "phone_primary.phone"),
    ("email_id", "email_primary"),
    ("email", "email_primary.email"),
    ("on_hold", "email_primary.on_hold"),
    ("im_id", None),
    ("provider_id", None),
    ("im", None),
    ("worldregion_id", None),
    ("world_region", None),
    ("languages", "preferred_language:label"),
    ("individual_prefix", "prefix_id:label"),
    ("individual_suffix", "suffix_id:label"),
    ("communication_style", "communication_style_id:label"),
    ("gender", "gender_id:label"),
    ("state_province_name", None),
    ("state_province", None),
    ("country", "address_primary.country_id:label"),
    ("id", "id"),
)
CONTACT_MAP = dict(CONTACT_KEYS)
# keys the legacy Contact query adds when a key is returned
LEGACY_EXTRAS = {
    "email": ("email_id",),
    "phone": ("phone_id", "phone_type_id"),
    "gender_id": ("gender",),
    "prefix_id": ("individual_prefix",),
    "suffix_id": ("individual_suffix",),
    "communication_style_id": ("communication_style",),
}
CONTACT_ALIASES = {"contact_id": "id", "contact_is_deleted": "is_deleted", "contact_source": "source"}
# Keys of a freshly created contact as v3 create answers (sample "v3 Contact.create")
CONTACT_CREATE_KEYS = (
    "id",
    "contact_type",
    "external_identifier",
    "display_name",
    "organization_name",
    "contact_sub_type",
    "first_name",
    "middle_name",
    "last_name",
    "do_not_email",
    "do_not_phone",
    "do_not_mail",
    "do_not_sms",
    "do_not_trade",
    "is_opt_out",
    "legal_identifier",
    "sort_name",
    "nick_name",
    "legal_name",
    "image_URL",
    "preferred_communication_method",
    "preferred_language",
    "hash",
    "api_key",
    "prefix_id",
    "suffix_id",
    "formal_title",
    "communication_style_id",
    "email_greeting_id",
    "email_greeting_custom",
    "email_greeting_display",
    "postal_greeting_id",
    "postal_greeting_custom",
    "postal_greeting_display",
    "addressee_id",
    "addressee_custom",
    "addressee_display",
    "job_title",
    "gender_id",
    "birth_date",
    "is_deceased",
    "deceased_date",
    "household_name",
    "primary_contact_id",
    "sic_code",
    "user_unique_id",
    "created_date",
    "modified_date",
    "preferred_mail_format",
)


def v3_string(value: Any, f: Field | None = None) -> str:
    """APIv3 shows every value as MySQL's text for it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if f is not None and f.data_type == MONEY:
            return f"{value:.2f}"
        return repr(value).removesuffix(".0") if value.is_integer() else repr(value)
    return str(value)


def error(message: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "is_error": 1, "error_message": message}


def not_found(entity: str, action: str) -> dict[str, Any]:
    return error(
        f"API ({entity}, {action}) does not exist (join the API team and implement it!)",
        error_code="not-found",
        entity=entity,
        action=action,
    )


def _where(ent: Entity, params: dict[str, Any]) -> list[Any]:
    fields = ent.field_map()
    where: list[Any] = []
    for key, value in params.items():
        if key in RESERVED or key.startswith("api.") or key.startswith("return."):
            continue
        name = CONTACT_ALIASES.get(key, key) if ent.name == "Contact" else key
        if name not in fields:
            continue
        f = fields[name]
        if f.options and isinstance(value, str) and not value.lstrip("-").isdigit():
            # a pseudoconstant given by name or label ("option_group_id": "gender")
            value = next((k for k, label in f.options.items() if value in (label, str(k))), value)
        if isinstance(value, dict) and len(value) == 1:
            op, operand = next(iter(value.items()))
            if str(op).upper() in V3_OPS:
                where.append([name, str(op).upper(), operand])
                continue
        where.append([name, "=", value])
    return where


def _options(params: dict[str, Any]) -> dict[str, Any]:
    opts = params.get("options") or {}
    if not isinstance(opts, dict):
        opts = {}
    out: dict[str, Any] = {}
    limit = opts.get("limit", params.get("rowCount", 25))
    out["limit"] = int(limit) if str(limit).lstrip("-").isdigit() else 25
    offset = opts.get("offset", 0)
    out["offset"] = int(offset) if str(offset).isdigit() else 0
    sort = opts.get("sort")
    if isinstance(sort, str) and sort.strip():
        order = {}
        for part in sort.split(","):
            bits = part.split()
            if bits:
                order[bits[0]] = bits[1].upper() if len(bits) > 1 else "ASC"
        out["orderBy"] = order
    return out


def _returns(params: dict[str, Any]) -> list[str]:
    ret = params.get("return")
    keys: list[str] = []
    if isinstance(ret, str):
        keys = [k.strip() for k in ret.split(",") if k.strip()]
    elif isinstance(ret, list):
        keys = [str(k) for k in ret]
    elif isinstance(ret, dict):
        keys = [str(k) for k, v in ret.items() if v]
    keys += [k[7:] for k, v in params.items() if k.startswith("return.") and v]
    return keys


class V3:
    def __init__(self, sandbox: Sandbox, check: bool, contact_id: int | None) -> None:
        self.sb = sandbox
        self.check = check
        self.contact_id = contact_id

    def api4(self, entity: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.sb._api4(entity, action, params, self.check, self.contact_id, None)

    # ---- reads ------------------------------------------------------------------------
    def records(self, ent: Entity, params: dict[str, Any], paged: bool = True) -> list[dict[str, str]]:
        where = _where(ent, params)
        opts = _options(params)
        if not paged:
            opts.pop("limit", None)
            opts.pop("offset", None)
        returns = _returns(params)
        if ent.name == "Contact":
            if returns:
                # by id, the trash filter (and so contact_is_deleted) is not added
                by_id = any(params.get(k) not in (None, "") for k in ("id", "contact_id"))
                # the legacy query returns what it filters on too, the ids of the location
                # values and the labels of option values, in its own column order
                filters = [
                    "contact_source" if k == "source" else k
                    for k in params
                    if isinstance(k, str)
                    and k not in RESERVED
                    and not k.startswith(("api.", "api_", "return"))
                    and not chain_target(k)
                ]
                wanted = [
                    *[k for k in (*returns, *filters) if k not in ("id", "contact_id", "contact_is_deleted")],
                    *([] if by_id else ["contact_is_deleted"]),
                ]
                for key, extra in LEGACY_EXTRAS.items():
                    if key in wanted:
                        wanted += extra
                order = {k: i for i, (k, _) in enumerate(CONTACT_KEYS)}
                middle = order["contact_is_deleted"] - 0.5  # keys the legacy list lacks
                known = [k for k in dict.fromkeys(wanted) if k in CONTACT_MAP or k in ent.field_map()]
                keys = ["contact_id", *sorted(known, key=lambda k: order.get(k, middle)), "id"]
            else:
                keys = [k for k, _ in CONTACT_KEYS]
            exprs = {k: CONTACT_MAP.get(k, k) for k in keys}
            select = sorted({e for e in exprs.values() if e}, key=list(exprs.values()).index)
            env = self.api4("Contact", "get", {"select": select, "where": where, **opts})
            return [{k: v3_string(r.get(e)) if e else "" for k, e in exprs.items()} for r in env["values"]]
        fmap = ent.field_map()
        select = [k for k in returns if k in fmap] or ["*"]
        if "id" not in select and select != ["*"]:
            select.insert(0, "id")
        env = self.api4(ent.name, "get", {"select": select, "where": where, **opts})
        return [{k: v3_string(v, fmap.get(k)) for k, v in r.items() if v is not None} for r in env["values"]]

    @staticmethod
    def envelope(
        records: list[dict[str, Any]], params: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        seq = str(params.get("sequential", "0")) in ("1", "True", "true")
        values: Any = records if seq else {str(r.get("id", i)): r for i, r in enumerate(records)}
        out: dict[str, Any] = {"is_error": 0, "version": 3, "count": len(records)}
        out.update(extra or {})
        if len(records) == 1 and "id" not in out and str(records[0].get("id", "")).isdigit():
            out["id"] = int(records[0]["id"])  # civicrm_api3_create_success: one record
        out["values"] = values
        return out

    # ---- chaining -----------------------------------------------------------------------
    def chain(self, ent: Entity, records: list[dict[str, Any]], params: dict[str, Any]) -> None:
        """APIv3 chained calls: ``api.Entity.action``, ``api_Entity_action`` (any case of
        the entity) run once per record, linked by ``<parent>_id`` and ``$value.field``."""
        calls = [(k, v) for k, v in params.items() if chain_target(k)]
        for rec in records:
            for key, sub in calls:
                entity, action = chain_target(key)  # type: ignore[misc]
                rec[key] = self._chained(ent, rec, entity, action, sub)

    def _chained(self, parent: Entity, rec: dict[str, Any], entity: str, action: str, sub: Any) -> Any:
        if isinstance(sub, list):
            return [self._chained(parent, rec, entity, action, s) for s in sub]
        child = dict(sub) if isinstance(sub, dict) else {}
        child = {k: _dollar(v, rec, parent.name) for k, v in child.items()}
        parent_id = rec.get("id")
        if entity == parent.name:
            child.setdefault("id", parent_id)
        else:
            child.setdefault(f"{parent.name.lower()}_id", parent_id)
        child.setdefault("sequential", 1)
        return run_call(self, entity, action, child)

    def run(self, entity: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        entity = normalize_entity(entity)
        ent = ENTITIES.get(entity)
        act = action.lower()
        if ent is None:
            return not_found(entity, action)
        if act not in ACTIONS3:
            return not_found(entity, action)
        if self.check:
            denied = self._permission(ent, act, params)
            if denied:
                return denied
        if act == "get":
            recs = self.records(ent, params)
            self.chain(ent, recs, params)
            return self.envelope(recs, params)
        if act == "getcount":
            return {"is_error": 0, "result": len(self.records(ent, params, paged=False))}
        if act in ("getsingle", "getvalue"):
            recs = self.records(ent, params)
            if len(recs) != 1:
                return {
                    "count": len(recs),
                    "is_error": 1,
                    "error_message": f"Expected one {entity} but found {len(recs)}",
                }
            if act == "getsingle":
                self.chain(ent, recs, params)
                return {**recs[0], "is_error": 0}
            keys = _returns(params)
            if not keys:
                return error(
                    "Mandatory key(s) missing from params array: return",
                    error_code="mandatory_missing",
                    fields=["return"],
                    entity=entity,
                    action=action,
                )
            if keys[0] not in recs[0]:
                return {
                    "invalid_field": keys[0],
                    "is_error": 1,
                    "error_message": f"field {keys[0]} unset or not existing",
                }
            return {"is_error": 0, "result": recs[0][keys[0]]}
        if act == "create":
            return self.create(ent, params)
        if act == "delete":
            return self.delete(ent, params)
        if act == "getoptions":
            return self.getoptions(ent, params)
        return self.getfields(ent, params)

    def _permission(self, ent: Entity, act: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The API permission check of 5.77's getEntityActionPermissions (contact data is
        checked per record instead, see _record_denied)."""
        perms = self.sb._perms(self.contact_id)
        need = ["access CiviCRM"]
        if act.startswith("get") and act != "getfields":
            need.append(ent.read_perm or "view all contacts")
        elif ent.name in CONTACT_DATA:
            need = []  # 'default' => []: the contact's own edit permission decides
        elif ent.name == "Contact" and act == "create" and params.get("id") not in (None, ""):
            need = []  # an update: managed by the record check
        elif act in ("create", "delete"):
            need = list(needs(ent.name, act))
        missing = [p for p in dict.fromkeys(need) if p not in perms]
        if missing:
            return error(
                f"API permission check failed for {ent.name}/{act} call; insufficient "
                f"permission: require {' and '.join(dict.fromkeys(need))}",
                error_code="unauthorized",
                entity=ent.name,
                action=act,
            )
        return None

    def _record_denied(self, ent: Entity, values: dict[str, Any], row_id: Any) -> dict[str, Any] | None:
        """_civicrm_api3_check_edit_permissions: writing a contact, or a contact's email,
        phone or address, needs the right to edit that contact."""
        if not self.check or "edit all contacts" in self.sb._perms(self.contact_id):
            return None
        if ent.name == "Contact" or (ent.name in ("Email", "Phone", "Address") and values.get("contact_id")):
            return error(
                "Permission denied to modify contact record",
                error_code="unauthorized",
                entity=ent.name,
                action="create",
            )
        return None

    # ---- writes -----------------------------------------------------------------------
    def create(self, ent: Entity, params: dict[str, Any]) -> dict[str, Any]:
        values = {
            k: v
            for k, v in params.items()
            if k not in RESERVED and not chain_target(k) and not k.startswith("api.")
        }
        if ent.name == "Activity" and values.get("source_contact_id") in (None, ""):
            values["source_contact_id"] = self.contact_id  # APIv3: the acting contact
        if ent.name == "Contact":
            values = {CONTACT_ALIASES.get(k, k) if k != "contact_id" else "id": v for k, v in values.items()}
        row_id = values.pop("id", None)
        if row_id is None:
            missing = _missing_v3(ent, values)
            if missing:
                return error(
                    f"Mandatory key(s) missing from params array: {', '.join(missing)}",
                    fields=missing,
                    error_code="mandatory_missing",
                    entity=ent.name,
                    action="create",
                )
        denied = self._record_denied(ent, values, row_id)
        if denied:
            return denied
        try:
            if row_id is None:
                env = self.api4(ent.name, "create", {"values": values})
            else:
                env = self.api4(ent.name, "update", {"values": {**values, "id": row_id}})
        except CiviError as exc:
            return error(
                exc.message,
                error_code=exc.v3_code or exc.error_code,
                **({"fields": exc.extra["fields"]} if "fields" in exc.extra else {}),
            )
        if not env["values"]:
            return error(f"Entity id {row_id} not found")
        new_id = env["values"][0]["id"]
        rec = self.sb._api4(
            ent.name,
            "get",
            {
                "where": [["id", "=", new_id], ["id", "IS NOT NULL"]]
                if ent.name != "Contact"
                else [["id", "=", new_id], ["is_deleted", "IN", [0, 1]]],
                "select": ["*"],
            },
            False,
            self.contact_id,
            None,
        )["values"][0]
        fmap = ent.field_map()
        if ent.name == "Contact":
            out = {k: v3_string(rec.get(k), fmap.get(k)) for k in CONTACT_CREATE_KEYS}
            if row_id is None:  # the greeting caches are filled after create's answer
                for k in ("email_greeting_display", "postal_greeting_display", "addressee_display"):
                    out[k] = ""
        else:
            # the DAO as the BAO saved it: what was set, "" for the rest (not reloaded)
            saved = env["values"][0]
            out = {
                f.name: v3_string(saved.get(f.name), f) if saved.get(f.name) is not None else ""
                for f in ent.fields
                if f.type == "Field" and not f.sql
            }
        self.chain(ent, [out], params)
        return self.envelope([out], params, {"id": new_id})

    def delete(self, ent: Entity, params: dict[str, Any]) -> dict[str, Any]:
        row_id = params.get("id")
        if row_id in (None, ""):
            return error(
                "Mandatory key(s) missing from params array: id",
                fields=["id"],
                error_code="mandatory_missing",
                entity=ent.name,
                action="delete",
            )
        p: dict[str, Any] = {"where": [["id", "=", row_id]]}
        if ent.name == "Contact":
            p["useTrash"] = str(params.get("skip_undelete", "0")) not in ("1", "true", "True")
        try:
            if ent.name in CONTACT_DATA:
                # 5.77 checks no permission here ('default' => [], no record check on delete)
                env = self.sb._api4(ent.name, "delete", p, False, self.contact_id, None)
            else:
                env = self.api4(ent.name, "delete", p)
        except CiviError as exc:
            return error(exc.message)
        if not env["values"]:
            text = (
                "Could not delete contact"
                if ent.name == "Contact"
                else f"Could not delete {ent.name} id {row_id}"
            )
            return error(text, error_code=0, entity=ent.name, action="delete")
        return {"is_error": 0, "version": 3, "count": 1, "values": 1}

    def getoptions(self, ent: Entity, params: dict[str, Any]) -> dict[str, Any]:
        """A field's options as ``{value: label}`` (location types by name, as their table
        has no weights; option values in their order)."""
        name = params.get("field")
        if name in (None, ""):
            return error(
                "Mandatory key(s) missing from params array: field",
                fields=["field"],
                error_code="mandatory_missing",
                entity=ent.name,
                action="getoptions",
            )
        name = CONTACT_ALIASES.get(str(name), str(name)) if ent.name == "Contact" else str(name)
        f = ent.field_map().get(name)
        if f is None or not f.options:
            return error(
                f"The field '{name}' has no associated option list.", entity=ent.name, action="getoptions"
            )
        items = list(f.options.items())
        if f.name == "location_type_id":
            items.sort(key=lambda kv: str(kv[1]))
        values: Any = {str(k): v for k, v in items}
        if str(params.get("sequential", "0")) in ("1", "True", "true"):
            values = [{"key": int(k) if str(k).isdigit() else k, "value": v} for k, v in items]
        return {"is_error": 0, "version": 3, "count": len(values), "values": values}

    def getfields(self, ent: Entity, params: dict[str, Any]) -> dict[str, Any]:
        """APIv3 field specs in the legacy DAO layout (key order as CiviCRM 5.77 prints it).
        Like the real getfields, ``options.limit`` is ignored: every field comes back."""
        recs = []
        for f in ent.fields:
            if f.sql or f.type != "Field":
                continue
            importable = f.name == "id" or not f.readonly
            info: dict[str, Any] = {"name": f.name, "type": TYPE_CODES.get(f.data_type, 2), "title": f.title}
            if f.description:
                info["description"] = f.description
            if f.name == "id" or f.required:
                info["required"] = True
            info["usage"] = {
                "import": importable,
                "export": True,
                "duplicate_matching": importable,
                "token": False,
            }
            if importable:
                info["import"] = True
            info.update(
                {
                    "where": f"{ent.table}.{f.name}",
                    "export": True,
                    "table_name": ent.table,
                    "entity": ent.name,
                    "bao": _bao(ent.name),
                    "localizable": 0,
                    "html": {"type": f.widget}
                    if f.data_type != INT or f.options
                    else {"type": "Number", "size": 6, "maxlength": 14},
                }
            )
            if f.readonly or f.name == "id":
                info["readonly"] = True
            info["add"] = "1.1"  # the CiviCRM version a field appeared in; the sandbox's are core
            info["is_core_field"] = True
            if f.name == "id" and ent.name == "Contact":
                info["api.aliases"] = ["contact_id"]
            recs.append(info)
        seq = str(params.get("sequential", "0")) in ("1", "True", "true")
        values: Any = recs if seq else {r["name"]: r for r in recs}
        return {"is_error": 0, "version": 3, "count": len(recs), "values": values}


# APIv3's own mandatory keys where they differ from APIv4's: (reported name, any of these keys)
V3_MANDATORY: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "Contact": (("contact_type", ("contact_type",)),),
    "Activity": (
        (
            "one of (activity_name, activity_type_id, activity_label)",
            ("activity_name", "activity_type_id", "activity_label"),
        ),
    ),
    "Phone": (("contact_id", ("contact_id",)),),
    "Email": (("contact_id", ("contact_id",)),),
    "Address": (("contact_id", ("contact_id",)),),
}
# entities whose writes 5.77 checks against the contact they belong to, not by permission
CONTACT_DATA = ("Email", "Phone", "Address", "EntityTag", "Note", "GroupContact", "Relationship")


def _missing_v3(ent: Entity, values: dict[str, Any]) -> list[str]:
    rules = V3_MANDATORY.get(ent.name) or tuple(
        (f.name, (f.name,)) for f in ent.fields if f.required and f.default is None and f.type == "Field"
    )
    return [name for name, keys in rules if all(values.get(k) in (None, "") for k in keys)]


def normalize_entity(name: str) -> str:
    r"""``Civi\API\Request::normalizeEntityName``: munged, then CamelCase per underscore
    part ("email" -> "Email", "option_value" -> "OptionValue")."""
    munged = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    return "".join(part[:1].upper() + part[1:] for part in munged.split("_"))


def chain_target(key: str) -> tuple[str, str] | None:
    """The (entity, action) of a chain key: ``api.Email.get``, ``api_Email_get``,
    ``api.email.get``; None for any other key."""
    m = re.fullmatch(r"api[._](\w+?)[._]([A-Za-z]+)", key) if key[:4] in ("api.", "api_") else None
    if not m:
        return None
    return normalize_entity(m.group(1)), m.group(2).lower()


def _dollar(value: Any, rec: dict[str, Any], entity: str) -> Any:
    """``$value.field`` in a chained call's params: the parent record's value."""
    if isinstance(value, str) and value.startswith("$value."):
        field = value[7:]
        if field in rec:
            touch(entity, CONTACT_ALIASES.get(field, field) if entity == "Contact" else field)
            return rec[field]
    return value


def _bao(entity: str) -> str:
    """The PHP class CiviCRM names as a field's BAO (its component's namespace)."""
    component = {
        "Contact": "Contact",
        "Group": "Contact",
        "GroupContact": "Contact",
        "Relationship": "Contact",
        "Contribution": "Contribute",
        "Activity": "Activity",
    }.get(entity, "Core")
    return f"CRM_{component}_BAO_{entity}"


def run_call(v3: V3, entity: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return v3.run(entity, action, params)
    except CiviError as exc:
        return error(exc.message, **({"error_code": exc.v3_code} if exc.v3_code else {}))


def run_v3(
    sandbox: Sandbox, entity: str, action: str, params: dict[str, Any], check: bool, contact_id: int | None
) -> dict[str, Any]:
    """Run one APIv3 call (lock held by the caller); errors become is_error envelopes."""
    try:
        return V3(sandbox, check, contact_id).run(entity, action, params)
    except CiviError as exc:
        return error(exc.message, **({"error_code": exc.v3_code} if exc.v3_code else {}))
