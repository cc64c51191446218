"""Normalising answers so the real site's and the sandbox's can be compared (docs/sandbox.md,
"Measured against a real CiviCRM", says what is normalised and why).

- Record ids differ (the real site has other records, and other test runs add more): every id
  is replaced by its entity and the order in which this side first saw it ("<Contact#4>"), so
  two answers agree when they name the same records in the same places.
- Timestamps the site sets itself (created_date, modified_date, anything dated today) become
  "<now>"; random values (hash, the Error ID of a masked error) become placeholders.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

# keys whose value is a record id, and the entity it belongs to (None: the key's own entity)
ID_KEYS: dict[str, str | None] = {
    "id": None,
    "contact_id": "Contact",
    "contact_id_a": "Contact",
    "contact_id_b": "Contact",
    "source_contact_id": "Contact",
    "target_contact_id": "Contact",
    "assignee_contact_id": "Contact",
    "created_id": "Contact",
    "modified_id": "Contact",
    "employer_id": "Contact",
    "primary_contact_id": "Contact",
    "entity_id": "Contact",
    "group_id": "Group",
    "tag_id": "Tag",
    "parent_id": None,
    "email_primary": "Email",
    "email_billing": "Email",
    "phone_primary": "Phone",
    "phone_billing": "Phone",
    "address_primary": "Address",
    "address_billing": "Address",
    "im_primary": "IM",
    "im_billing": "IM",
    "email_id": "Email",
    "phone_id": "Phone",
    "address_id": "Address",
    "activity_id": "Activity",
    "master_id": "Address",
    "contact_id_app": "Contact",
}
# join aliases and implicit-join prefixes the corpus uses -> entity
PREFIXES = {
    "e": "Email",
    "p": "Phone",
    "a": "Address",
    "g": "Group",
    "gc": "GroupContact",
    "et": "EntityTag",
    "t": "Tag",
    "n": "Note",
    "email_primary": "Email",
    "phone_primary": "Phone",
    "address_primary": "Address",
    "contact_id": "Contact",
    "entity_id": "Contact",
    "tag_id": "Tag",
    "group_id": "Group",
}
TIME_KEYS = {"created_date", "modified_date", "note_date", "cache_date", "refresh_date", "date"}
RANDOM_KEYS = {"hash", "checksum"}
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})([ T]\d{2}:\d{2}(:\d{2})?)?$")
_ERROR_ID = re.compile(r"\(Error ID: [^)]*\)")


class Ids:
    """One side's record ids, numbered per entity in the order first seen."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], str] = {}
        self.counts: dict[str, int] = {}

    def token(self, entity: str, value: int) -> str:
        key = (entity, value)
        if key not in self.seen:
            self.counts[entity] = self.counts.get(entity, 0) + 1
            self.seen[key] = f"<{entity}#{self.counts[entity]}>"
        return self.seen[key]


def _today() -> set[str]:
    now = dt.datetime.now(dt.UTC)
    return {(now + dt.timedelta(days=d)).date().isoformat() for d in (-1, 0, 1)} | {
        (dt.datetime.now() + dt.timedelta(days=d)).date().isoformat() for d in (-1, 0, 1)
    }


def _entity_of(key: str, entity: str) -> str | None:
    """The entity whose id ``key`` holds in a record of ``entity``, or None if not an id."""
    *prefix, last = key.split(".")
    if last not in ID_KEYS:
        return None
    target = ID_KEYS[last]
    if target is None:
        # "id" / "parent_id": the record's own entity, or the joined one's
        target = PREFIXES.get(prefix[-1], prefix[-1]) if prefix else entity
    return target


class Normaliser:
    def __init__(self) -> None:
        self.ids = Ids()
        self.today = _today()

    def _id(self, entity: str, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self.ids.token(entity, value)
        if isinstance(value, str) and value.isdigit():
            return "s" + self.ids.token(entity, int(value))
        if isinstance(value, list):
            return [self._id(entity, v) for v in value]
        return value

    def value(self, key: str, value: Any, entity: str) -> Any:
        last = key.rsplit(".", 1)[-1]
        target = _entity_of(key, entity)
        if target is not None and not isinstance(value, dict):
            return self._id(target, value)
        if last in RANDOM_KEYS and value:
            return "<random>"
        if isinstance(value, str):
            found = _DATETIME.match(value)
            if found and (last in TIME_KEYS or found.group(1) in self.today):
                return "<now>"
            return _ERROR_ID.sub("(Error ID: <id>)", value)
        return self.tree(value, entity)

    def tree(self, value: Any, entity: str) -> Any:
        if isinstance(value, dict):
            return {k: self.value(str(k), v, entity) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v, entity) for v in value]
        if isinstance(value, str):
            return _ERROR_ID.sub("(Error ID: <id>)", value)
        return value

    def answer(self, status: int, body: Any, entity: str) -> dict[str, Any]:
        """What is compared of one answer: status, problem type and the normalised body."""
        if isinstance(body, dict) and "type" in body and "status" in body:
            problem = {k: v for k, v in body.items() if k not in ("request_id", "instance")}
            return {"status": status, "type": body.get("type"), "body": self.tree(problem, entity)}
        records = body
        if isinstance(body, list):
            records = [self._record(r, entity) for r in body]
        return {"status": status, "type": None, "body": self.tree(records, entity) if not isinstance(body, list) else records}

    def _record(self, record: Any, entity: str) -> Any:
        if not isinstance(record, dict):
            return self.tree(record, entity)
        out = {}
        for key, val in record.items():
            if isinstance(val, list) and val and all(isinstance(v, dict) for v in val):
                # a chained call's records: of the chained entity, unknown here (ids by key)
                out[key] = [self._record(v, _chained_entity(v, entity)) for v in val]
            else:
                out[key] = self.value(str(key), val, entity)
        return out


def _chained_entity(record: dict[str, Any], parent: str) -> str:
    """Chained records' entity, guessed from their keys (only ids need it)."""
    keys = set(record)
    if "email" in keys:
        return "Email"
    if "phone" in keys:
        return "Phone"
    if "tag_id" in keys or "tag_id:label" in keys:
        return "EntityTag"
    return parent


def differs(real: dict[str, Any], sandbox: dict[str, Any]) -> bool:
    return real != sandbox
