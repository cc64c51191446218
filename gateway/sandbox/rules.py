"""What CiviCRM's BAOs do on write beyond storing values: names, primary flags, derived columns.

Each rule receives the row as it will be stored (after defaults) and may edit it.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from gateway.sandbox.schema import CONTACT, ENTITIES
from gateway.sandbox.store import rand_hash

Row = dict[str, Any]


def _label(field: str, key: Any) -> str:
    opts = CONTACT.field_map()[field].options or {}
    return opts.get(key, "") if key is not None else ""


def _join(*parts: Any) -> str:
    return " ".join(str(p) for p in parts if p not in (None, ""))


def contact_names(row: Row) -> None:
    """display_name/sort_name/greetings as CiviCRM's default formats compute them."""
    ctype = row.get("contact_type") or "Individual"
    if ctype == "Individual":
        first, last = row.get("first_name"), row.get("last_name")
        display = _join(
            _label("prefix_id", row.get("prefix_id")), first, last, _label("suffix_id", row.get("suffix_id"))
        )
        sort = ", ".join(str(p) for p in (last, first) if p not in (None, ""))
        row["display_name"] = display or row.get("display_name")
        row["sort_name"] = sort or row.get("sort_name")
        if row.get("email_greeting_id") is not None:
            row["email_greeting_display"] = _join("Dear", first) if first else "Dear"
        if row.get("postal_greeting_id") is not None:
            row["postal_greeting_display"] = _join("Dear", first) if first else "Dear"
        if row.get("addressee_id") is not None:
            row["addressee_display"] = _join(
                _label("prefix_id", row.get("prefix_id")),
                first,
                row.get("middle_name"),
                last,
                _label("suffix_id", row.get("suffix_id")),
            )
    else:
        name = row.get("organization_name" if ctype == "Organization" else "household_name")
        if name:
            row["display_name"] = row["sort_name"] = name
        for key in ("email_greeting", "postal_greeting"):
            if row.get(f"{key}_id") is not None:
                row[f"{key}_display"] = _join("Dear", name)
        if row.get("addressee_id") is not None:
            row["addressee_display"] = name


def contact_defaults(row: Row, rng: random.Random) -> None:
    """Create-time defaults the Contact BAO fills in (individuals get greetings/language)."""
    # the default greeting options of 5.77: individuals 1/1/1, households 5/5/2 and
    # organizations only an addressee (3), each with the site's language and style
    greetings = {
        "Individual": (("email_greeting_id", 1), ("postal_greeting_id", 1), ("addressee_id", 1)),
        "Household": (("email_greeting_id", 5), ("postal_greeting_id", 5), ("addressee_id", 2)),
        "Organization": (("addressee_id", 3),),
    }.get(str(row.get("contact_type")))
    if greetings is not None:
        for key, value in (("preferred_language", "en_US"), ("communication_style_id", 1), *greetings):
            if row.get(key) is None:
                row[key] = value
    if not row.get("hash"):
        row["hash"] = rand_hash(rng)


def primary_flag(conn: sqlite3.Connection, table: str, row: Row, creating: bool) -> None:
    """One primary email/phone/address per contact: the first is primary; a new primary
    demotes the others."""
    cid = row.get("contact_id")
    if cid is None:
        return
    others = conn.execute(
        f"SELECT COUNT(*) FROM {table} WHERE contact_id = ? AND is_primary = 1 "  # noqa: S608
        "AND id IS NOT ?",
        (cid, row.get("id")),
    ).fetchone()[0]
    if creating and not others:
        row["is_primary"] = True
    if row.get("is_primary"):
        conn.execute(
            f"UPDATE {table} SET is_primary = 0 WHERE contact_id = ? AND id IS NOT ?",  # noqa: S608
            (cid, row.get("id")),
        )


def phone_numeric(row: Row) -> None:
    if row.get("phone") is not None:
        row["phone_numeric"] = re.sub(r"\D", "", str(row["phone"]))


def title_to_name(row: Row) -> None:
    if not row.get("name") and row.get("title"):
        row["name"] = re.sub(r"\W+", "_", str(row["title"])).strip("_")[:64]
    if not row.get("frontend_title") and row.get("title"):
        row["frontend_title"] = row["title"]


def tag_label(row: Row) -> None:
    """5.77: a tag without a label is labelled by its name; one without a name is named
    after its label (munged; CiviCRM also makes it unique, which the sandbox does not)."""
    if not row.get("label") and row.get("name"):
        row["label"] = row["name"]
    if not row.get("name") and row.get("label"):
        row["name"] = re.sub(r"\W+", "_", str(row["label"])).strip("_")[:64]


# Rules applied to a row before it is stored, per entity
ROW_RULES: dict[str, list[Callable[[Row], None]]] = {
    "Contact": [contact_names],
    "Phone": [phone_numeric],
    "Group": [title_to_name],
    "Tag": [tag_label],
}

PRIMARY_TABLES = {name: ENTITIES[name].table for name in ("Email", "Phone", "Address")}
