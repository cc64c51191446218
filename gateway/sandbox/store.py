"""Database bootstrap: tables, the base records every CiviCRM install has, users, settings."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sqlite3
from datetime import date, datetime
from typing import Any

from gateway.sandbox.schema import OPTION_GROUPS, ddl

# Permissions an admin has (CiviCRM's admin role has all; these are the ones the sandbox checks)
ALL_PERMISSIONS = (
    "access CiviCRM",
    "view all contacts",
    "edit all contacts",
    "add contacts",
    "delete contacts",
    "access deleted contacts",
    "administer CiviCRM",
    "authenticate with api key",
    "authenticate with password",
    "view debug output",
    "edit groups",
    "manage tags",
    "view all activities",
    "delete activities",
    "access AJAX API",
    "access CiviContribute",
    "edit contributions",
    "delete in CiviContribute",
    "edit api keys",
    "administer CiviCRM system",
    "view my contact",
    "edit my contact",
    "access CiviEvent",
    "edit all events",
    "delete in CiviEvent",
    "edit event participants",
    "access CiviMember",
    "edit memberships",
    "delete in CiviMember",
)
STAFF_PERMISSIONS = ("access CiviCRM", "view all contacts", "edit all contacts")
# The least-privileged API user of tests/real/kit (user "staff", role api_staff): may
# read contacts over REST with its key, may not write, see api keys or read error details.
API_STAFF_PERMISSIONS = (
    "access CiviCRM",
    "view all contacts",
    "access AJAX API",
    "authenticate with api key",
)

ADMIN_CONTACT_ID = 2

DEFAULT_SETTINGS: dict[str, Any] = {
    "debug_enabled": False,
    "backtrace": False,
    "environment": "Production",
    "lcMessages": "en_US",
    "defaultCurrency": "USD",
    "maxAttachments": 3,
    "contact_default_language": "*default*",
    "display_name_format": "{contact.individual_prefix}{ }{contact.first_name}{ }"
    "{contact.last_name}{ }{contact.individual_suffix}",
    "sort_name_format": "{contact.last_name}{, }{contact.first_name}",
    "enable_components": [
        "CiviEvent",
        "CiviContribute",
        "CiviMember",
        "CiviMail",
        "CiviReport",
        "CiviPledge",
    ],
}

_META_DDL = (
    "CREATE TABLE sandbox_user (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE "
    "NOT NULL, password TEXT NOT NULL, contact_id INTEGER NOT NULL REFERENCES "
    "civicrm_contact(id) ON DELETE CASCADE, permissions TEXT NOT NULL)",
    "CREATE TABLE sandbox_setting (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE sandbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def regexp(pattern: str | None, value: Any) -> int | None:
    """SQLite REGEXP: MySQL's REGEXP is case-insensitive under the default collation."""
    if pattern is None or value is None:
        return None
    return int(re.search(pattern, str(value), re.IGNORECASE) is not None)


def regexp_binary(pattern: str | None, value: Any) -> int | None:
    if pattern is None or value is None:
        return None
    return int(re.search(pattern, str(value)) is not None)


def _lower(value: Any) -> str | None:
    """MySQL's LOWER/UPPER are Unicode-aware; SQLite's built-ins fold ASCII only."""
    return None if value is None else str(value).lower()


def _upper(value: Any) -> str | None:
    return None if value is None else str(value).upper()


def _concat_ws(sep: Any, *parts: Any) -> str | None:
    if sep is None:
        return None
    return str(sep).join(str(p) for p in parts if p is not None)


def _date(value: Any) -> date | None:
    try:
        return datetime.fromisoformat(str(value)[:10]).date() if value else None
    except ValueError:
        return None


def _next_anniversary(value: Any) -> date | None:
    start = _date(value)
    if start is None:
        return None
    today = date.today()
    for year in (today.year, today.year + 1):
        try:
            anniv = start.replace(year=year)
        except ValueError:  # 29 February: MySQL's DATE_ADD lands on the 28th
            anniv = start.replace(year=year, day=28)
        if anniv >= today:
            return anniv
    return None


def next_anniversary(value: Any) -> str | None:
    anniv = _next_anniversary(value)
    return anniv.isoformat() if anniv else None


def days_to_anniversary(value: Any) -> int | None:
    anniv = _next_anniversary(value)
    return (anniv - date.today()).days if anniv else None


_UNIT_FORMATS = {
    "SECOND": "%S",
    "MINUTE": "%M",
    "HOUR": "%H",
    "DAY": "%d",
    "MONTH": "%m",
    "YEAR": "%Y",
    "WEEK": "%U",
    "YEAR_MONTH": "%Y%m",
    "DAY_HOUR": "%d%H",
    "HOUR_MINUTE": "%H%M",
    "MINUTE_SECOND": "%M%S",
    "DAY_MINUTE": "%d%H%M",
    "DAY_SECOND": "%d%H%M%S",
    "HOUR_SECOND": "%H%M%S",
}


def extract_unit(unit: str, value: Any) -> int | None:
    """MySQL's EXTRACT(unit FROM value) for the units a date or datetime has."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if unit == "QUARTER":
        return (moment.month + 2) // 3
    if unit == "MICROSECOND":
        return moment.microsecond
    fmt = _UNIT_FORMATS.get(unit)
    return int(moment.strftime(fmt)) if fmt else None


def earth_distance(lat1: Any, lng1: Any, lat2: Any, lng2: Any) -> float | None:
    """CRM_Contact_BAO_ProximityQuery's great-circle distance in metres (NULL without a point)."""
    try:
        a1, o1, a2, o2 = (math.radians(float(v)) for v in (lat1, lng1, lat2, lng2))
    except (TypeError, ValueError):
        return None
    cos = math.cos(a1) * math.cos(a2) * math.cos(o1 - o2) + math.sin(a1) * math.sin(a2)
    return math.acos(max(-1.0, min(1.0, cos))) * 6378137


def connect(db_path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("REGEXP", 2, regexp, deterministic=True)
    conn.create_function("REGEXP_BINARY", 2, regexp_binary, deterministic=True)
    # MySQL functions of CiviCRM's SQL expressions that SQLite lacks or computes differently
    conn.create_function("PHP_LOWER", 1, _lower, deterministic=True)
    conn.create_function("PHP_UPPER", 1, _upper, deterministic=True)
    conn.create_function("CONCAT_WS", -1, _concat_ws, deterministic=True)
    conn.create_function("NEXTANNIV", 1, next_anniversary)
    conn.create_function("DAYSTOANNIV", 1, days_to_anniversary)
    conn.create_function("EXTRACT_UNIT", 2, extract_unit, deterministic=True)
    conn.create_function("RAND", 0, random.random)
    conn.create_function("EARTH_DISTANCE", 4, earth_distance, deterministic=True)
    return conn


def is_initialised(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='sandbox_meta'").fetchone()
    return row is not None


def api_key_for(seed: int, who: str) -> str:
    """Deterministic per seed, so tests and docs can rely on them; not secret."""
    return hashlib.sha256(f"civicrm-sandbox:{seed}:{who}".encode()).hexdigest()[:32]


def site_key_for(seed: int) -> str:
    return api_key_for(seed, "site-key")


def rand_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def seed_option_lists(conn: sqlite3.Connection) -> None:
    """The option groups and values the sandbox's pseudoconstant fields use (activity types
    get ids 6.., as on a fresh CiviCRM)."""
    for gid, (name, title, options) in enumerate(OPTION_GROUPS, start=1):
        conn.execute(
            "INSERT INTO civicrm_option_group (id, name, title, is_reserved, "
            "is_active, is_locked, option_value_fields) VALUES "
            "(?, ?, ?, 1, 1, 0, ?)",
            (gid, name, title, "\x01name\x01label\x01description\x01"),
        )
        for weight, (value, label) in enumerate(options.items(), start=1):
            conn.execute(
                "INSERT INTO civicrm_option_value (option_group_id, label, value, "
                "name, filter, is_default, weight, is_optgroup, is_reserved, "
                "is_active) VALUES (?, ?, ?, ?, 0, 0, ?, 0, 0, 1)",
                (gid, label, str(value), label, weight),
            )


def initialise(conn: sqlite3.Connection, seed: int, rng: random.Random, now: str) -> None:
    """Create every table and the base records (a fresh CiviCRM has contacts 1 and 2)."""
    for stmt in (*ddl(), *_META_DDL):
        conn.execute(stmt)
    conn.execute(
        "INSERT INTO civicrm_contact (id, contact_type, display_name, organization_name, "
        "legal_name, sort_name, do_not_email, do_not_phone, do_not_mail, do_not_sms, "
        "do_not_trade, is_opt_out, is_deceased, is_deleted, modified_date, "
        "preferred_mail_format) VALUES (1, 'Organization', 'Default Organization', "
        "'Default Organization', 'Default Organization', 'Default Organization', "
        "0, 0, 0, 0, 0, 0, 0, 0, ?, 'Both')",
        (now,),
    )
    conn.execute(
        "INSERT INTO civicrm_email (id, contact_id, location_type_id, email, is_primary, "
        "is_billing, on_hold, is_bulkmail) VALUES "
        "(1, 1, 3, 'fixme.domainemail@example.org', 1, 0, 0, 0)"
    )
    # Only the admin exists, as in a fresh CiviCRM (so the first new contact is 3, as in the
    # samples); the staff user is added on demand by Sandbox.ensure_staff().
    first, last = "Standalone", "Admin"
    conn.execute(
        "INSERT INTO civicrm_contact (id, contact_type, display_name, first_name, "
        "last_name, sort_name, do_not_email, do_not_phone, do_not_mail, do_not_sms, "
        "do_not_trade, is_opt_out, preferred_language, hash, api_key, "
        "communication_style_id, email_greeting_id, email_greeting_display, "
        "postal_greeting_id, postal_greeting_display, addressee_id, addressee_display, "
        "is_deceased, is_deleted, created_date, modified_date, preferred_mail_format) "
        "VALUES (?, 'Individual', ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 'en_US', ?, ?, 1, 1, ?, "
        "1, ?, 1, ?, 0, 0, ?, ?, 'Both')",
        (
            ADMIN_CONTACT_ID,
            f"{first} {last}",
            first,
            last,
            f"{last}, {first}",
            rand_hash(rng),
            api_key_for(seed, "admin"),
            f"Dear {first}",
            f"Dear {first}",
            f"{first} {last}",
            now,
            now,
        ),
    )
    seed_option_lists(conn)
    conn.execute(
        "INSERT INTO sandbox_user (username, password, contact_id, permissions) VALUES (?, ?, ?, ?)",
        ("admin", "admin", ADMIN_CONTACT_ID, json.dumps(list(ALL_PERMISSIONS))),
    )
    for name, value in DEFAULT_SETTINGS.items():
        conn.execute("INSERT INTO sandbox_setting (name, value) VALUES (?, ?)", (name, json.dumps(value)))
    conn.execute("INSERT INTO sandbox_meta (key, value) VALUES ('seed', ?)", (str(seed),))
    conn.execute("INSERT INTO sandbox_meta (key, value) VALUES ('site_key', ?)", (site_key_for(seed),))
