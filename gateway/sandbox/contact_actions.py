"""Contact's own APIv4 actions (getChecksum, validateChecksum, getDuplicates, mergeDuplicates)
and the getLinks action every DAO entity has, as CiviCRM 5.77 answers them.

Registered into ``actions.ACTIONS`` on import; ``engine`` imports this module, merges
``PARAMS`` into its parameter table and asks ``permission_for`` before its generic checks,
because these actions do not follow the read/write split the other actions use.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from gateway.sandbox.actions import ACTIONS, Ctx, Record, to_api, update_one
from gateway.sandbox.errors import CiviError
from gateway.sandbox.meta import ACTION_DESCRIPTIONS, array_query
from gateway.sandbox.schema import ENTITIES
from gateway.sandbox.touch import touch

# Parameter types as the action classes declare them (engine.validate_params reads these).
PARAMS: dict[str, dict[str, str]] = {
    "getChecksum": {"contactId": "int", "ttl": "int"},
    "validateChecksum": {"contactId": "int", "checksum": "string"},
    # GetDuplicates extends the DAO create action, so it inherits values.
    "getDuplicates": {"values": "array", "dedupeRule": "mixed"},
    "mergeDuplicates": {"contactId": "int", "duplicateId": "int", "mode": "string"},
    # GetLinks is a BasicGetAction (no join/groupBy/having) with three params of its own.
    "getLinks": {
        "select": "array",
        "where": "array",
        "orderBy": "array",
        "limit": "int",
        "offset": "int",
        "values": "array",
        "entityTitle": "mixed",
        "expandMultiple": "bool",
    },
}
# @required params; checked after authorization, as the real API checks them in "prepare".
REQUIRED: dict[str, tuple[str, ...]] = {
    "getChecksum": ("contactId",),
    "validateChecksum": ("contactId", "checksum"),
    "getDuplicates": ("dedupeRule",),
    "mergeDuplicates": ("contactId", "duplicateId", "mode"),
}
DEFAULTS: dict[str, dict[str, Any]] = {"mergeDuplicates": {"mode": "safe"}}
DESCRIPTIONS = {
    # The real ValidateChecksum class repeats GetChecksum's docblock, so both read the same.
    "getChecksum": "Generate a security checksum for anonymous access to CiviCRM.",
    "validateChecksum": "Generate a security checksum for anonymous access to CiviCRM.",
    "getDuplicates": "Get matching contacts based on a dedupe rule",
    "mergeDuplicates": "Merge 2 contacts",
    "getLinks": "Get action links for the $ENTITY entity.",
}
CONTACT_ONLY = ("getChecksum", "validateChecksum", "getDuplicates", "mergeDuplicates")

CHECKSUM_TIMEOUT_DAYS = 7  # the checksum_timeout setting's default


def epoch_now() -> int:
    """Current Unix time; a seam so tests can move the clock for checksum expiry."""
    return int(time.time())


def permission_for(entity: str, action: str) -> tuple[str, ...] | None:
    """Permissions these actions need under check_permissions, or None for "not ours".

    Contact::permissions() is the 'contact' table of getEntityActionPermissions() plus the
    defaults, with validateChecksum opened to everyone (checksums are for anonymous use).
    The other four actions have no entry, so AbstractAction::getPermissions() falls back to
    'default', which is 'administer CiviCRM'.
    """
    if entity == "Contact" and action == "validateChecksum":
        return ()
    if entity == "Contact" and action in (*CONTACT_ONLY, "getLinks"):
        return ("administer CiviCRM",)
    if action == "getLinks" and entity in ENTITIES:
        # Other entities' 'default' entries vary; the sandbox's write permission stands in.
        return (ENTITIES[entity].write_perm,)
    return None


def _missing(value: Any) -> bool:
    """PHP's ``!$value && $value !== 0 && $value !== '0'``: 0 and "0" count as given."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return False
    return not value


def _params(ctx: Ctx) -> dict[str, Any]:
    p = {**DEFAULTS.get(ctx.action, {}), **ctx.params}
    for name in REQUIRED.get(ctx.action, ()):
        if _missing(p.get(name)):
            raise CiviError(f'Parameter "{name}" is required.')
    return p


# ---- checksums ----------------------------------------------------------------------------
def _php_falsy(value: Any) -> bool:
    return value is None or value in ("", "0") or value is False or value == 0


def _contact_hash(ctx: Ctx, contact_id: Any) -> str:
    """The contact's hash; like CRM_Contact_BAO_Contact_Utils a missing one is made and
    stored (for an unknown id the new hash is simply never stored)."""
    touch("Contact", "hash")  # a checksum is derived from the contact's hash
    row = ctx.conn.execute("SELECT hash FROM civicrm_contact WHERE id = ?", (contact_id,)).fetchone()
    if row and row[0]:
        return str(row[0])
    new_hash = f"{ctx.rng.getrandbits(128):032x}"
    if row:
        ctx.conn.execute("UPDATE civicrm_contact SET hash = ? WHERE id = ?", (new_hash, contact_id))
    return new_hash


def _checksum_days(ctx: Ctx) -> Any:
    row = ctx.conn.execute("SELECT value FROM sandbox_setting WHERE name = 'checksum_timeout'").fetchone()
    if row is None:
        return CHECKSUM_TIMEOUT_DAYS
    return json.loads(row[0])


def generate_checksum(ctx: Ctx, contact_id: Any, ts: Any = None, live: Any = None) -> str:
    """CiviCRM's contact checksum: ``md5("{hash}_{cid}_{ts}_{live}")_{ts}_{live}``, where
    ts is the Unix time it was made and live its life in hours (or "inf")."""
    if _php_falsy(contact_id):
        return "invalidChecksum"
    contact_hash = _contact_hash(ctx, contact_id)
    if _php_falsy(ts):
        ts = epoch_now()
    if _php_falsy(live):
        live = 24 * int(_checksum_days(ctx))
    digest = hashlib.md5(f"{contact_hash}_{contact_id}_{ts}_{live}".encode()).hexdigest()  # noqa: S324 (CiviCRM's format)
    return f"{digest}_{ts}_{live}"


def _php_number(text: Any) -> float:
    """PHP's numeric reading of a string in arithmetic (leading number, else 0)."""
    m = re.match(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", str(text or ""))
    return float(m.group(0)) if m else 0.0


def valid_checksum(ctx: Ctx, contact_id: Any, checksum: str) -> bool:
    parts = str(checksum).split("_", 2)
    parts += [None] * (3 - len(parts))  # type: ignore[list-item]
    _, ts, live = parts
    if generate_checksum(ctx, contact_id, ts, live) != str(checksum):
        return False
    if live == "inf":
        return True
    return _php_number(ts) + _php_number(live) * 3600 >= epoch_now()


def run_get_checksum(ctx: Ctx) -> list[Record]:
    p = _params(ctx)
    ttl = p.get("ttl")
    live = "inf" if ttl == 0 and not isinstance(ttl, bool) else ttl
    return [{"id": p["contactId"], "checksum": generate_checksum(ctx, p["contactId"], None, live)}]


def run_validate_checksum(ctx: Ctx) -> list[Record]:
    p = _params(ctx)
    return [{"valid": valid_checksum(ctx, p["contactId"], p["checksum"])}]


# ---- duplicates -------------------------------------------------------------------------
CONTACT_TYPES = ("Individual", "Household", "Organization")  # basicTypes(), by id
# The reserved rule groups a fresh install has, in the sandbox's own id order.
RULE_GROUPS = (
    "IndividualSupervised",
    "IndividualUnsupervised",
    "IndividualGeneral",
    "OrganizationSupervised",
    "OrganizationUnsupervised",
    "HouseholdSupervised",
    "HouseholdUnsupervised",
)


def _rule_contact_type(rule: Any, given_type: Any) -> str:
    """Resolve dedupeRule ("Individual.Unsupervised", a rule group name or its id) to the
    contact type it dedupes, with GetDuplicates' errors."""
    if isinstance(rule, bool) or not isinstance(rule, str | int):
        raise CiviError('Parameter "dedupeRule" is not of the correct type. Expecting string or int.')
    if isinstance(rule, int):
        rule = RULE_GROUPS[rule - 1] if 1 <= rule <= len(RULE_GROUPS) else ""
    if rule.find(".Unsupervised") > 0 or rule.find(".Supervised") > 0:
        ctype = rule.split(".")[0]
    elif rule in RULE_GROUPS:
        ctype = next(t for t in CONTACT_TYPES if rule.startswith(t))
    else:
        raise CiviError("Expected to find one DedupeRuleGroup record, but there were zero.")
    if given_type and given_type != ctype:
        raise CiviError("Mismatched contact type.")
    return ctype


def find_duplicates(ctx: Ctx, ctype: str, values: dict[str, Any]) -> list[int]:
    """The sandbox's dedupe rule: Individuals match on first and last name (and any of their
    emails when an email is given), Organizations on organization_name, Households on
    household_name; case-insensitive like MySQL's default collation."""
    for name in (
        "contact_type",
        "is_deleted",
        "first_name",
        "last_name",
        "organization_name",
        "household_name",
    ):
        touch("Contact", name)
    if values.get("email_primary.email"):
        touch("Email", "email")

    def text(key: str) -> str:
        v = values.get(key)
        return "" if v is None else str(v).strip()

    if ctype == "Individual":
        first, last = text("first_name"), text("last_name")
        if not first or not last:
            return []
        conds = ["lower(c.first_name) = lower(?)", "lower(c.last_name) = lower(?)"]
        args: list[Any] = [first, last]
        email = text("email_primary.email")
        if email:
            conds.append(
                "EXISTS (SELECT 1 FROM civicrm_email e WHERE e.contact_id = c.id "
                "AND lower(e.email) = lower(?))"
            )
            args.append(email)
    else:
        key = "organization_name" if ctype == "Organization" else "household_name"
        name = text(key)
        if not name:
            return []
        conds, args = [f"lower(c.{key}) = lower(?)"], [name]
    conds += ["c.contact_type = ?", "c.is_deleted = 0"]
    args.append(ctype)
    if values.get("id") is not None:
        conds.append("c.id != ?")
        args.append(values["id"])
    sql = f"SELECT c.id FROM civicrm_contact c WHERE {' AND '.join(conds)} ORDER BY c.id"  # noqa: S608
    return [int(r[0]) for r in ctx.conn.execute(sql, args)]


def run_get_duplicates(ctx: Ctx) -> list[Record]:
    p = _params(ctx)
    values = dict(p.get("values") or {})
    ctype = _rule_contact_type(p["dedupeRule"], values.get("contact_type"))
    return [{"id": i} for i in find_duplicates(ctx, ctype, values)]


# ---- merge --------------------------------------------------------------------------------
# Contact columns a merge never compares or copies (identity, caches, bookkeeping).
_MERGE_IGNORED = frozenset(
    {
        "id",
        "hash",
        "api_key",
        "display_name",
        "sort_name",
        "created_date",
        "modified_date",
        "is_deleted",
        "email_greeting_display",
        "postal_greeting_display",
        "addressee_display",
    }
)
# Location-block columns that are metadata, not data, when comparing two records.
_LOCATION_META = frozenset(
    {
        "id",
        "contact_id",
        "location_type_id",
        "is_primary",
        "is_billing",
        "on_hold",
        "is_bulkmail",
        "hold_date",
        "reset_date",
        "phone_numeric",
        "manual_geo_code",
        "geo_code_1",
        "geo_code_2",
    }
)
_LOCATION_TABLES = ("civicrm_email", "civicrm_phone", "civicrm_address")


def _contact_row(ctx: Ctx, contact_id: int) -> dict[str, Any]:
    ent = ENTITIES["Contact"]
    fields = [f for f in ent.fields if not f.sql and not f.filter_sql]
    for f in fields:
        touch("Contact", f.name)  # a merge compares and copies every field
    row = ctx.conn.execute(
        f"SELECT {', '.join(f.name for f in fields)} FROM civicrm_contact WHERE id = ?",  # noqa: S608
        (contact_id,),
    ).fetchone()
    if row is None:
        # Merger::getMergeContactDetails() is declared to return an array; PHP's TypeError
        # is what the caller sees for an unknown id.
        raise CiviError(
            "CRM_Dedupe_Merger::getMergeContactDetails(): Return value must be of type array, null returned"
        )
    out = {f.name: to_api(f, v) for f, v in zip(fields, row, strict=True)}
    if out.get("is_deleted"):
        raise CiviError(f"Cannot merge because one contact (ID {contact_id}) has been deleted.")
    return out


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _field_conflicts(main: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Fields both contacts fill with different values (FALSE counts as a value, as it does
    since the merger loads contacts through APIv4)."""
    out = []
    for name, theirs in other.items():
        if name in _MERGE_IGNORED or _empty(theirs):
            continue
        ours = main.get(name)
        if (ours or ours is False) and str(ours) != str(theirs):
            out.append(name)
    return out


def _location_rows(ctx: Ctx, table: str, contact_id: int) -> list[dict[str, Any]]:
    cur = ctx.conn.execute(
        f"SELECT * FROM {table} WHERE contact_id = ? ORDER BY id",  # noqa: S608
        (contact_id,),
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _data(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _LOCATION_META and v not in (None, "", 0)}


def _plan_locations(ctx: Ctx, main_id: int, other_id: int) -> tuple[list[tuple[str, int]], bool]:
    """Which of the duplicate's emails/phones/addresses move, and whether any conflicts: a
    record the main contact already has stays; one whose location type the main contact
    already uses with other data is a conflict; the rest move."""
    moves: list[tuple[str, int]] = []
    conflict = False
    for table in _LOCATION_TABLES:
        mine = [r for r in _location_rows(ctx, table, main_id) if _data(r)]
        for rec in _location_rows(ctx, table, other_id):
            data = _data(rec)
            if not data:
                continue
            if any(all(m.get(k) == v for k, v in data.items()) for m in mine):
                continue
            if any(m.get("location_type_id") == rec.get("location_type_id") for m in mine):
                conflict = True
                continue
            moves.append((table, int(rec["id"])))
    return moves, conflict


def _move_belongings(ctx: Ctx, main_id: int, other_id: int, moves: list[tuple[str, int]]) -> None:
    conn = ctx.conn
    for table, row_id in moves:
        has_primary = conn.execute(
            f"SELECT 1 FROM {table} WHERE contact_id = ? "  # noqa: S608
            "AND is_primary = 1",
            (main_id,),
        ).fetchone()
        conn.execute(
            f"UPDATE {table} SET contact_id = ?, is_primary = CASE WHEN ? THEN 0 "  # noqa: S608
            "ELSE is_primary END WHERE id = ?",
            (main_id, bool(has_primary), row_id),
        )
    # Group memberships and tags the main contact lacks; the rest stay with the duplicate.
    conn.execute(
        "UPDATE civicrm_group_contact SET contact_id = ? WHERE contact_id = ? AND "
        "group_id NOT IN (SELECT group_id FROM civicrm_group_contact WHERE "
        "contact_id = ?)",
        (main_id, other_id, main_id),
    )
    conn.execute(
        "UPDATE civicrm_entity_tag SET entity_id = ? WHERE entity_table = "
        "'civicrm_contact' AND entity_id = ? AND tag_id NOT IN (SELECT tag_id FROM "
        "civicrm_entity_tag WHERE entity_table = 'civicrm_contact' AND entity_id = ?)",
        (main_id, other_id, main_id),
    )
    conn.execute(
        "UPDATE civicrm_note SET entity_id = ? WHERE entity_table = 'civicrm_contact' AND entity_id = ?",
        (main_id, other_id),
    )
    conn.execute(
        "UPDATE civicrm_activity SET source_contact_id = ? WHERE source_contact_id = ?", (main_id, other_id)
    )
    for col in ("contact_id_a", "contact_id_b"):
        conn.execute(
            f"UPDATE civicrm_relationship SET {col} = ? WHERE {col} = ?",  # noqa: S608
            (main_id, other_id),
        )
    conn.execute("UPDATE civicrm_contribution SET contact_id = ? WHERE contact_id = ?", (main_id, other_id))


def merge_pair(ctx: Ctx, main_id: int, other_id: int, mode: str) -> dict[str, list[Any]]:
    """One Merger::merge() pair: {merged: [{main_id, other_id}], skipped: []} or the reverse.
    Safe mode skips on any conflict; any other mode keeps the main contact's value."""
    main, other = _contact_row(ctx, main_id), _contact_row(ctx, other_id)
    conflicts = _field_conflicts(main, other)
    moves, location_conflict = _plan_locations(ctx, main_id, other_id)
    pair = {"main_id": main_id, "other_id": other_id}
    if mode == "safe" and (conflicts or location_conflict):
        return {"merged": [], "skipped": [pair]}
    fill = {
        k: v
        for k, v in other.items()
        if k not in _MERGE_IGNORED and k not in conflicts and not _empty(v) and _empty(main.get(k))
    }
    sub = Ctx(
        ctx.conn,
        ENTITIES["Contact"],
        "update",
        {},
        False,
        ctx.contact_id,
        ctx.perms,
        ctx.now,
        ctx.rng,
        ctx.call,
    )
    update_one(sub, main_id, fill)  # also refreshes names and modified_date
    _move_belongings(ctx, main_id, other_id, moves)
    ctx.conn.execute(
        "UPDATE civicrm_contact SET is_deleted = 1, modified_date = ? WHERE id = ?", (ctx.now, other_id)
    )
    return {"merged": [pair], "skipped": []}


def run_merge_duplicates(ctx: Ctx) -> list[Record]:
    p = _params(ctx)
    main_id, other_id = int(p["contactId"]), int(p["duplicateId"])
    if main_id == other_id:
        # Real CiviCRM would "merge" a contact into itself and trash it; refuse instead.
        raise CiviError("Merge failed")
    return [merge_pair(ctx, main_id, other_id, str(p["mode"]))]


# ---- getLinks -----------------------------------------------------------------------------
# Entity paths (getPaths in the schema files); only Contact's are modelled so far.
PATHS: dict[str, dict[str, str]] = {
    "Contact": {
        "add": "civicrm/contact/add?reset=1&ct=[contact_type]",
        "view": "civicrm/contact/view?reset=1&cid=[id]",
        "update": "civicrm/contact/add?reset=1&action=update&cid=[id]",
        "delete": "civicrm/contact/view/delete?reset=1&delete=1&cid=[id]",
    },
}
# CRM_Core_Action: title template, weight, icon per UI action.
UI_ACTIONS: dict[str, tuple[str, int, str]] = {
    "add": ("Add %1", 0, "fa-plus"),
    "update": ("Update %1", -10, "fa-pencil"),
    "view": ("View %1", -20, "fa-external-link"),
    "delete": ("Delete %1", 100, "fa-trash"),
}
_API_ACTION = {
    "add": "create",
    "delete": "delete",
    "view": "get",
    "browse": "get",
    "export": "get",
    "preview": "get",
}
CONTACT_TYPE_ICONS = {"Individual": "fa-user", "Household": "fa-home", "Organization": "fa-building"}
LINK_KEYS = (
    "ui_action",
    "api_action",
    "api_values",
    "entity",
    "path",
    "text",
    "icon",
    "weight",
    "target",
    "conditions",
)


def entity_links(entity: str) -> list[Record]:
    """The cached link set before tokens are filled in, sorted by weight."""
    links: list[Record] = []
    for ui_action, path in PATHS.get(entity, {}).items():
        text, weight, icon = UI_ACTIONS[ui_action]
        target = "crm-popup"
        if entity == "Contact" and ui_action in ("view", "update"):
            target = ""  # contacts are too big for a popup (ContactLinksProvider)
        links.append(
            {
                "ui_action": ui_action,
                "api_action": _API_ACTION.get(ui_action, "update"),
                "api_values": None,
                "entity": entity,
                "path": path,
                "text": text,
                "icon": icon,
                "weight": weight,
                "target": target,
                "conditions": [],
            }
        )
    links.sort(key=lambda r: r["weight"])
    return links


def _php_str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def _replace_tokens(links: list[Record], title: Any, values: dict[str, Any], expand: bool) -> list[Record]:
    out = []
    for link in links:
        if title is not False and link.get("text"):
            link["text"] = link["text"].replace("%1", _php_str(title))
        keep = True
        if values and link.get("path"):
            for token in re.findall(r"\[[^\]]+\]", link["path"]):
                name = token[1:-1]
                optional = name.endswith("?")
                value = values.get(name.rstrip("?"))
                if value is None and optional:
                    value = ""
                if value is not None:
                    link["path"] = link["path"].replace(token, _php_str(value))
                elif not expand:
                    keep = False  # hide links whose required tokens are not known
                    break
        if keep:
            out.append(link)
    return out


def _may(ctx: Ctx, entity: str, api_action: str) -> bool:
    """checkAccess for a link's API action, as the sandbox grants it."""
    if ctx.contact_id is None:
        return False
    ent = ENTITIES.get(entity)
    if ent is None or api_action == "get":
        return True
    perm = ent.delete_perm if api_action == "delete" and ent.delete_perm else ent.write_perm
    return perm in ctx.perms


def _expand_add(ctx: Ctx, links: list[Record], values: dict[str, Any]) -> list[Record]:
    """expandMultiple on contacts: one "add" link per contact type (no sub-types here)."""
    out: list[Record] = []
    for link in links:
        if link.get("ui_action") != "add":
            out.append(link)
            continue
        chosen = values.get("contact_type") or ctx.entity.name
        for ctype in CONTACT_TYPES if chosen == "Contact" else (chosen,):
            new = dict(link)
            if new.get("path"):
                new["path"] = new["path"].replace("[contact_type]", ctype)
            new["api_values"] = {"contact_type": ctype}
            new["text"] = f"Add {ctype}"
            if "icon" in link:
                new["icon"] = CONTACT_TYPE_ICONS.get(ctype)
            out.append(new)
    return out


def run_get_links(ctx: Ctx) -> list[Record]:
    p = ctx.params
    entity = ctx.entity.name
    values = dict(p.get("values") or {})
    expand = bool(p.get("expandMultiple"))
    title = p.get("entityTitle", True)
    if title is True or title is None:
        title = ctx.entity.title
    links = entity_links(entity)
    if ctx.check:
        links = [link for link in links if _may(ctx, link["entity"], link["api_action"])]
    rows = array_query(links, p, ctx, LINK_KEYS)
    if [s for s in p.get("select") or []] == ["row_count"]:
        return rows
    rows = _replace_tokens(rows, title, values, expand)
    if expand and entity == "Contact":
        rows = _expand_add(ctx, rows, values)
    return rows


ACTION_DESCRIPTIONS.update(DESCRIPTIONS)
ACTIONS.update(
    {
        "getChecksum": run_get_checksum,
        "validateChecksum": run_validate_checksum,
        "getDuplicates": run_get_duplicates,
        "mergeDuplicates": run_merge_duplicates,
        "getLinks": run_get_links,
    }
)
