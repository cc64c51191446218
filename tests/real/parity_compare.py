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
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})\d{6}$")
_ERROR_ID = re.compile(r"\(Error ID: [^)]*\)")


class Ids:
    """One side's record ids: the fixture's by name, those the corpus's writes create by the
    order they were created in, the seeded ones (contacts 1-3) as they are; any other id is
    "<Entity ?>" (a record neither side should be showing)."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, int], str] = {}
        self.created: dict[str, int] = {}

    def name(self, entity: str, value: int, name: str) -> None:
        self.known[(entity, value)] = f"<{name}>"

    def created_by_write(self, entity: str, value: int) -> None:
        if (entity, value) not in self.known:
            self.created[entity] = self.created.get(entity, 0) + 1
            self.known[(entity, value)] = f"<{entity} new{self.created[entity]}>"

    def token(self, entity: str, value: int) -> str:
        if entity == "Contact" and 0 < value <= 3:
            return f"<Contact {value}>"
        return self.known.get((entity, value), f"<{entity} ?>")


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

    def _message(self, entity: str, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        return re.sub(r"(?<=\bid )(\d{1,10})\b", lambda m: self._named(entity, int(m.group(1))), text)

    def _named(self, entity: str, value: int) -> str:
        """A number in a message: the id of a record of ``entity`` this side knows by name."""
        name = self.ids.known.get((entity, value))
        return name if name is not None and value > 3 else str(value)

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
            compact = _COMPACT.match(value)  # "20261207035742": as a DAO saved it
            if compact and (last in TIME_KEYS or "-".join(compact.groups()) in self.today):
                return "<now, compact>"
            return _ERROR_ID.sub("(Error ID: <id>)", value)
        return self.tree(value, entity)

    def tree(self, value: Any, entity: str) -> Any:
        if isinstance(value, dict):
            return {k: self.value(str(k), v, _v3_chained(str(k)) or entity) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v, entity) for v in value]
        if isinstance(value, str):
            return _ERROR_ID.sub("(Error ID: <id>)", value)
        return value

    def answer(
        self, status: int, body: Any, entity: str, params: Any = None, action: str = ""
    ) -> dict[str, Any]:
        """What is compared of one answer: status, problem type and the normalised body."""
        if action.lower() == "getfields" and isinstance(body, list):
            # custom fields are the site's own configuration (the sandbox has one group)
            body = [f for f in body if not (isinstance(f, dict) and "." in str(f.get("name", "")))]
        if isinstance(body, dict) and "type" in body and "status" in body:
            problem = {k: v for k, v in body.items() if k not in ("request_id", "instance")}
            # ids in messages ("Could not delete Email id 388") by name too
            problem["detail"] = self._message(entity, problem.get("detail"))
            if isinstance(problem.get("civicrm"), dict):
                civicrm = dict(problem["civicrm"])
                civicrm["error_message"] = self._message(entity, civicrm.get("error_message"))
                problem["civicrm"] = civicrm
            return {"status": status, "type": body.get("type"), "body": self.tree(problem, entity)}
        if not isinstance(body, list):
            return {"status": status, "type": None, "body": self.tree(body, entity)}
        chains = params.get("chain") if isinstance(params, dict) else None
        chained = (
            {k: v for k, v in chains.items() if isinstance(v, list) and v} if isinstance(chains, dict) else {}
        )
        return {"status": status, "type": None, "body": [self._record(r, entity, chained) for r in body]}

    def _record(self, record: Any, entity: str, chained: dict[str, list[Any]]) -> Any:
        if not isinstance(record, dict):
            return self.tree(record, entity)
        out: dict[str, Any] = {}
        for key, val in record.items():
            if key in chained and isinstance(val, list | dict):
                # a chained call's records: of the chained entity, maybe indexed (4th item)
                sub, index = chained[key][0], chained[key][3] if len(chained[key]) > 3 else None
                if index in (0, "0") and isinstance(val, dict):
                    out[key] = self._record(val, sub, {})
                elif isinstance(val, dict):
                    target = _entity_of(str(index), sub)
                    out[key] = {
                        (self._id(target, k) if target else k): self._record(v, sub, {})
                        for k, v in val.items()
                    }
                else:
                    out[key] = [self._record(v, sub, {}) for v in val]
            else:
                out[key] = self.value(str(key), val, _v3_chained(str(key)) or entity)
        return out


def _v3_chained(key: str) -> str | None:
    """The entity of an APIv3 chained call's key (``api.Email.get``, ``api_email_get``)."""
    found = re.fullmatch(r"api[._]([A-Za-z]+)[._]\w+", key)
    return found.group(1)[0].upper() + found.group(1)[1:] if found else None
