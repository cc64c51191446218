"""The OpenAPI document: FastAPI's description of the generic routes, completed with what a
person or a client generator needs to learn this CiviCRM.

- every ``/v3`` and ``/v4`` operation gets the Bearer security scheme (when the gateway has
  client tokens: a tokenless one documents no scheme, so the docs show no padlocks), one problem+json
  response per error status (with an example per problem type) and request examples;
- with metadata (:mod:`.metadata`), each entity gets a tag and one operation per action at its
  concrete path (``POST /v4/Contact/get``), whose request and response schemas name the
  entity's real fields. The generic route serves these paths; they are only documented here.

Field options are data (an administrator can add one at any time), so they are described
(``description`` and ``x-civicrm-options``) rather than made an ``enum`` that a generated
client would enforce and break on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import orjson

from gateway.core.credentials import is_credential_field
from gateway.core.params import NAME_RE, V4_PARAMS, is_read_action
from gateway.web.openapi import paths as described
from gateway.web.openapi.metadata import Metadata
from gateway.web.openapi.paths import SECURITY_SCHEME, error_refs, headers, schema_ref
from gateway.web.openapi.samples import BASE_URL, FIND_VALUES, SAMPLE_FILTER, SAMPLE_VALUES, code_samples

# Options beyond this many (states, countries) are summarised: a real site would otherwise put
# tens of thousands of option labels in the document.
OPTIONS_LIMIT = 40
# CiviCRM data types -> JSON Schema. Dates stay plain strings: CiviCRM writes
# "YYYY-MM-DD HH:MM:SS", which is not RFC 3339, and a client generator would refuse it.
_TYPES: dict[str, dict[str, Any]] = {
    "Integer": {"type": "integer"},
    "Int": {"type": "integer"},
    "Float": {"type": "number"},
    "Money": {"type": "number"},
    "Boolean": {"type": "boolean"},
    "String": {"type": "string"},
    "Text": {"type": "string"},
    "Memo": {"type": "string"},
    "Email": {"type": "string"},
    "Link": {"type": "string"},
    "Blob": {"type": "string"},
    "Mediumblob": {"type": "string"},
    "Date": {"type": "string"},
    "Time": {"type": "string"},
    "Timestamp": {"type": "string"},
    "Datetime": {"type": "string"},
    "Array": {"type": "array", "items": {}},
    "Object": {"type": "object"},
}
_FORMATS = {
    "Date": "YYYY-MM-DD",
    "Timestamp": "YYYY-MM-DD HH:MM:SS",
    "Datetime": "YYYY-MM-DD HH:MM:SS",
    "Time": "HH:MM:SS",
}
# Preferred fields for examples, in order, after the required ones.
_EXAMPLE_FIELDS = (
    "contact_type",
    "first_name",
    "last_name",
    "organization_name",
    "email",
    "phone",
    "subject",
    "activity_type_id",
    "total_amount",
    "financial_type_id",
    "street_address",
    "city",
    "title",
    "name",
    "note",
)


# --- native params ---------------------------------------------------------------------------

_NATIVE: dict[str, dict[str, Any]] = {
    "select": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Fields to return ('*' for all, 'custom.*' for custom fields, "
        "'field:label' for an option's label)",
    },
    "where": schema_ref("ApiV4Where"),
    "join": {
        "type": "array",
        "items": {"type": "array", "items": {}},
        "description": "Explicit joins: [entity AS alias, type, bridge?, conditions...]",
    },
    "groupBy": {"type": "array", "items": {"type": "string"}},
    "having": schema_ref("ApiV4Where"),
    "orderBy": {
        "type": "object",
        "additionalProperties": {"type": "string", "enum": ["ASC", "DESC"]},
        "description": "{field: 'ASC' | 'DESC'}",
    },
    "limit": {"type": "integer", "minimum": 0, "description": "At most this many records (0: all)"},
    "offset": {"type": "integer", "minimum": 0},
    "chain": schema_ref("ApiV4Chain"),
    "reload": {"type": "boolean", "description": "Return the saved records as re-read"},
    "match": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Fields that identify an existing record to update",
    },
    "useTrash": {"type": "boolean", "description": "Move contacts to the trash (not delete)"},
    "loadOptions": {
        "description": "Include each field's options (true, or a list of keys such as ['id', 'label'])",
        "anyOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}],
    },
    "action": {"type": "string", "description": "Describe the fields of this action"},
    "input": {"type": "string", "description": "What the person typed"},
    "page": {"type": "integer", "minimum": 1},
}


def _native(*names: str, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {**{n: _NATIVE[n] for n in names}, **extra}}


# --- fields ----------------------------------------------------------------------------------


def is_credential(name: str) -> bool:
    """A credential field, by its bare name or as the last part of ``Group.field`` /
    ``join.field``: such fields are in no schema and no example, whoever asks."""
    return is_credential_field(name.rpartition(".")[2].partition(":")[0])


def usable_fields(fields: Any) -> list[dict[str, Any]]:
    """getFields records with a name, credentials left out."""
    return [
        f
        for f in fields or []
        if isinstance(f, dict) and isinstance(f.get("name"), str) and not is_credential(f["name"])
    ]


def _options(field: dict[str, Any]) -> list[tuple[Any, Any]]:
    raw = field.get("options")
    if isinstance(raw, dict):
        return list(raw.items())
    if isinstance(raw, list):
        pairs = []
        for index, item in enumerate(raw):
            if isinstance(item, dict):
                pairs.append((item.get("id", item.get("name")), item.get("label", item.get("name"))))
            else:
                pairs.append((index, item))
        return pairs
    return []


def _coerce(value: Any, kind: str | None) -> Any:
    """``value`` as JSON of ``kind``, or ``None`` when it is not one (CiviCRM often sends
    numbers and booleans as strings)."""
    if value is None or value == "":
        return None
    try:
        if kind == "integer":
            return value if isinstance(value, int) and not isinstance(value, bool) else int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            return (
                value
                if isinstance(value, bool)
                else {"1": True, "0": False, "true": True, "false": False}.get(str(value).lower())
            )
        if kind == "string":
            return value if isinstance(value, str) else None
    except (TypeError, ValueError):
        return None
    return None


class SchemaOf(Protocol):
    def __call__(self, field: dict[str, Any], *, record: bool = False) -> dict[str, Any]: ...


def field_schema(field: dict[str, Any], *, record: bool = False) -> dict[str, Any]:
    """JSON Schema of one getFields record. ``record``: as returned (nullable, readOnly)."""
    data_type = str(field.get("data_type") or "")
    # A copy of the template, one level deep (its only nested value is Array's empty items)
    schema: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in _TYPES.get(data_type, {}).items()
    }
    kind = schema.get("type")
    if field.get("serialize") and kind != "array":
        schema = {"type": "array", "items": schema}
    notes = [str(field["description"]).strip()] if field.get("description") else []
    if data_type in _FORMATS:
        notes.append(f"Format {_FORMATS[data_type]}.")
    credential = is_credential(str(field.get("name", "")))
    options = [] if credential else _options(field)
    if options:
        shown = ", ".join(f"{key} = {label}" for key, label in options[:OPTIONS_LIMIT])
        more = len(options) - OPTIONS_LIMIT
        notes.append(f"Options: {shown}" + (f", and {more} more (see getFields)." if more > 0 else "."))
        schema["x-civicrm-options"] = {str(k): v for k, v in options[:OPTIONS_LIMIT]}
    if field.get("fk_entity"):
        notes.append(f"Refers to a {field['fk_entity']} by its id.")
        schema["x-civicrm-fk-entity"] = field["fk_entity"]
    if field.get("custom_group"):
        notes.append(f"Custom field of group {field['custom_group']}.")
        schema["x-civicrm-custom-group"] = field["custom_group"]
    if data_type:
        schema["x-civicrm-data-type"] = data_type
    title = field.get("label") or field.get("title")
    if title:
        schema["title"] = str(title)
    # Not JSON Schema's 'default': client generators would send it with every update,
    # overwriting what is stored. CiviCRM applies its defaults itself, on create only.
    default = None if credential or kind == "array" else _coerce(field.get("default_value"), kind)
    if default is not None:
        schema["x-civicrm-default"] = default
        notes.append(f"Default on create: {json.dumps(default)}.")
    if notes:
        schema["description"] = " ".join(notes)
    if record:
        if field.get("readonly"):
            schema["readOnly"] = True
        if isinstance(schema.get("type"), str):  # any returned value may be empty
            schema["type"] = [schema["type"], "null"]
    elif isinstance(schema.get("type"), str) and field.get("nullable", True):
        schema["type"] = [schema["type"], "null"]
    return schema


def _filter_schema(field: dict[str, Any], schema_of: SchemaOf = field_schema) -> dict[str, Any]:
    """A simple-form filter: the value, a list of values (IN) or null (IS NULL). Kept terse:
    the field is described in full by the record schema."""
    scalar = schema_of(field)
    kind = scalar.get("type")
    schema: dict[str, Any] = {}
    if isinstance(kind, list):
        kind = kind[0]
    if kind in ("string", "integer", "number", "boolean"):
        schema["anyOf"] = [{"type": kind}, {"type": "array", "items": {"type": kind}}, {"type": "null"}]
    title = field.get("label") or field.get("title")
    if title:
        schema["title"] = str(title)
    return schema


def sample_value(field: dict[str, Any]) -> Any:
    """A plausible value for examples: an option, a known sample, or one of the right type
    (a list of one for a serialized, multi-valued field)."""
    if field.get("serialize"):
        return [sample_value({**field, "serialize": None})]
    name = str(field.get("name", ""))
    kind = _TYPES.get(str(field.get("data_type") or ""), {}).get("type")
    default = _coerce(field.get("default_value"), kind)
    if default is not None and not is_credential(name):
        return default
    options = _options(field)
    if options:
        return _coerce(options[0][0], kind) if kind in ("integer", "number") else options[0][0]
    if name in SAMPLE_VALUES or name.split(".")[-1] in SAMPLE_VALUES:
        return SAMPLE_VALUES.get(name, SAMPLE_VALUES.get(name.split(".")[-1]))
    return {"integer": 1, "number": 10.5, "boolean": True, "array": [], "object": {}}.get(
        kind or "",
        _FORMATS.get(str(field.get("data_type")), "text")
        .replace("YYYY-MM-DD", "2024-01-31")
        .replace("HH:MM:SS", "12:00:00"),
    )


# --- one entity ------------------------------------------------------------------------------


class _Names:
    """Component names, unique and stable (the same metadata always gives the same names)."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)

    def claim(self, wanted: str) -> str:
        name, n = wanted, 2
        while name in self.taken:
            name, n = f"{wanted}{n}", n + 1
        self.taken.add(name)
        return name


def _create_only(field: dict[str, Any]) -> dict[str, Any]:
    """A field CiviCRM marks read-only, as a new record's value: said so in its description."""
    note = "CiviCRM marks this field read-only: it may be given on create, not changed by an update."
    description = str(field.get("description") or "").strip()
    return {**field, "description": f"{description} {note}".strip()}


def _object(
    fields: list[dict[str, Any]], *, record: bool = False, schema_of: SchemaOf = field_schema
) -> dict[str, Any]:
    return {"type": "object", "properties": {f["name"]: schema_of(f, record=record) for f in fields}}


def _schemas_once() -> SchemaOf:
    """:func:`field_schema`, made once per field and kind within one entity's part (a field
    is in its record, filters, values and new values alike). The schemas are shared: not to
    be changed afterwards."""
    made: dict[tuple[int, bool], tuple[dict[str, Any], dict[str, Any]]] = {}

    def schema_of(field: dict[str, Any], *, record: bool = False) -> dict[str, Any]:
        key = (id(field), record)
        found = made.get(key)
        if found is None:  # the field is kept beside its schema: its id stays its own
            found = made[key] = (field, field_schema(field, record=record))
        return found[1]

    return schema_of


def _example_fields(fields: list[dict[str, Any]], label_field: str | None) -> list[dict[str, Any]]:
    by_name = {f["name"]: f for f in fields}
    chosen = [f for f in fields if f.get("required")]
    for name in (label_field, *_EXAMPLE_FIELDS):
        if name in by_name and by_name[name] not in chosen:
            chosen.append(by_name[name])
    for f in fields:
        if len(chosen) >= 3:
            break
        if f not in chosen and f.get("data_type") == "String" and not f.get("custom_group"):
            chosen.append(f)
    keep = max(3, sum(1 for f in chosen if f.get("required")))  # every mandatory value
    return [f for f in chosen[:keep] if not is_credential(f["name"]) and f["name"] != "id"]


class _Examples:
    """Each action's request examples for one entity (what they share worked out once)."""

    def __init__(
        self, ent: dict[str, Any], get_fields: list[dict[str, Any]], write_fields: list[dict[str, Any]]
    ) -> None:
        label = ent.get("label_field") if isinstance(ent.get("label_field"), str) else None
        readable = _example_fields(get_fields, label)
        writable = [f for f in write_fields if not f.get("readonly")]
        values = {
            f["name"]: sample_value(f) for f in _example_fields(writable, None) if f["name"] not in V4_PARAMS
        }
        if "name" in values and ("label" in values or "title" in values):
            # CiviCRM makes a unique machine name from the label or title (5.77's required_if:
            # name only when neither is given); a fixed name fails the second time it is sent.
            del values["name"]
        self.values = values
        # What an example changes on an existing record: not its (unique) machine name.
        self.change = next(({k: v} for k, v in values.items() if k != "name"), dict(list(values.items())[:1]))
        self.select = ["id", *[f["name"] for f in readable[:2]]] if get_fields else ["*"]
        # A get filters on a value the sandbox's demo data holds, or not at all: Try-it-out on
        # the sandbox then finds records.
        names = {f["name"] for f in get_fields}
        self.found = next((name for name in FIND_VALUES if name in names), None)

    def of(self, action: str) -> dict[str, Any]:
        values, change, select = self.values, self.change, self.select
        if action == "get":
            found = self.found
            if found is None:
                return {"simple": {"limit": 10}, "native": {"select": select, "limit": 10}}
            value = FIND_VALUES[found]
            return {
                "simple": {found: value, "limit": 10},
                "native": {"select": select, "where": [[found, "=", value]], "limit": 10},
            }
        if action == "create":
            return {"simple": values, "native": {"values": values}}
        if action == "update":
            return {"simple": {"id": 1, **change}, "native": {"where": [["id", "=", 1]], "values": change}}
        if action == "delete":
            return {"simple": {"id": 1}, "native": {"where": [["id", "=", 1]]}}
        if action in ("save", "replace"):
            native: dict[str, Any] = {"records": [values, {"id": 1, **change}]}
            if action == "replace":
                native = {"where": [["id", "IN", [1, 2]]], "records": [values]}
            return {"native": native}
        if action == "getFields":
            return {
                "native": {
                    "action": "create",
                    "loadOptions": True,
                    "select": ["name", "title", "data_type", "required", "options"],
                }
            }
        if action == "checkAccess":
            return {"native": {"action": "create", "values": values}}
        return {}


_SUMMARIES = {
    "get": "Find {plural}",
    "create": "Create {title}",
    "update": "Update {plural}",
    "save": "Create or update {plural}",
    "delete": "Delete {plural}",
    "replace": "Replace a set of {plural}",
    "getFields": "Describe {title} fields",
    "getActions": "List {title} actions",
    "autocomplete": "Autocomplete {plural}",
    "checkAccess": "Check access to {title} actions",
}
_SIMPLE_NOTE = {
    "get": "Simple form: field names with values filter the records (a list means IN, null "
    "means IS NULL), mixed freely with native params.",
    "delete": "Simple form: field names with values select the records to delete.",
    "create": "Simple form: the field values at the top level instead of in 'values'.",
    "update": "Simple form: 'id' selects the record, the other fields are the new values.",
}


def _entity_operations(
    ent: dict[str, Any],
    names: _Names,
    schemas: dict[str, Any],
    op_ids: _Names,
    security: list[dict[str, Any]],
    *,
    auth_required: bool = True,
) -> dict[str, Any]:
    """Schemas (added to ``schemas``) and paths of one entity."""
    name = ent["name"]
    if not NAME_RE.fullmatch(name):  # the gateway refuses such names; nothing to document
        return {}
    title = str(ent.get("title") or name)
    plural = str(ent.get("title_plural") or title)
    fields = ent.get("fields") or {}
    get_fields = usable_fields(fields.get("get"))
    write_fields = usable_fields(fields.get("create"))
    ref = schema_ref
    schema_of = _schemas_once()

    record = names.claim(f"{name}Record")
    # Open: a select may also return joined (email_primary.email), suffixed (gender_id:label)
    # and aliased keys, which a closed schema would make a strict client reject.
    schemas[record] = {
        **_object(get_fields, record=True, schema_of=schema_of),
        "additionalProperties": True,
        "description": f"A {title} as CiviCRM returns it: the selected fields, "
        "and any joined (`x.y`), suffixed (`x:label`) or aliased "
        "keys the select asked for.",
    }
    if name == "Setting":  # its fields are the settings; get answers one {name, value} each
        schemas[record] = {
            "type": "object",
            "description": "One setting and its value.",
            "properties": {"name": {"type": "string"}, "value": {}},
        }
        get_fields = []
    id_field = next((f for f in get_fields if f["name"] == "id"), None)
    id_schema = dict(schema_of(id_field)) if id_field else {"type": "integer"}
    id_schema["description"] = f"The id of an existing {title}"
    any_object: dict[str, Any] = {"type": "object", "additionalProperties": True}

    filters: dict[str, Any] | None = None
    if get_fields:
        filters = ref(names.claim(f"{name}Filters"))
        schemas[filters["$ref"].rsplit("/", 1)[1]] = {
            "type": "object",
            "description": _SIMPLE_NOTE["get"],
            "properties": {
                f["name"]: _filter_schema(f, schema_of) for f in get_fields if f["name"] not in V4_PARAMS
            },
        }
    # Values a record takes (create's 'values', update's, save's records); 'id' is added
    # only where it selects a record.
    values: dict[str, Any] = any_object
    new_values: dict[str, Any] = any_object
    simple_values: dict[str, Any] | None = None
    simple_new_values: dict[str, Any] | None = None
    if write_fields:
        writable = [f for f in write_fields if not f.get("readonly") and f["name"] != "id"]
        values = ref(names.claim(f"{name}Values"))
        schemas[values["$ref"].rsplit("/", 1)[1]] = {
            **_object(writable, schema_of=schema_of),
            "additionalProperties": True,
            "description": f"Field values of a {title} (also `field:name` to give an option by its name).",
        }
        # CiviCRM's 'readonly' means "not editable afterwards, or calculated" (its getFields:
        # "auto-increment, calculated, or otherwise non-editable"); APIv4 does not refuse such
        # fields on a write, and some must be given on create (Contact.contact_type, readonly
        # in 5.77's schema). So a new record's values name them too; updates leave them out.
        create_only = [f for f in write_fields if f.get("readonly") and f["name"] != "id"]
        creatable = writable + [_create_only(f) for f in create_only]
        required = [f["name"] for f in creatable if f.get("required")]
        new_values = values
        if required or create_only:
            new_values = ref(names.claim(f"{name}NewValues"))
            described_required = f": {', '.join(required)} required" if required else ""
            schemas[new_values["$ref"].rsplit("/", 1)[1]] = {
                **_object(creatable, schema_of=schema_of),
                "additionalProperties": True,
                **({"required": required} if required else {}),
                "description": f"Field values of a new {title}{described_required} "
                "(also `field:name` to give an option by its name).",
            }
        simple_values = values
        if any(f["name"] in V4_PARAMS for f in writable):  # such fields need the native form
            simple_values = ref(names.claim(f"{name}SimpleValues"))
            schemas[simple_values["$ref"].rsplit("/", 1)[1]] = _object(
                [f for f in writable if f["name"] not in V4_PARAMS], schema_of=schema_of
            )
        simple_new_values = simple_values
        if create_only:
            simple_new_values = ref(names.claim(f"{name}SimpleNewValues"))
            schemas[simple_new_values["$ref"].rsplit("/", 1)[1]] = _object(
                [f for f in creatable if f["name"] not in V4_PARAMS], schema_of=schema_of
            )

    def simple(form: dict[str, Any] | None, native: dict[str, Any]) -> dict[str, Any]:
        """Native params, plus the entity's fields at the top level for the simple form."""
        return {"allOf": [form, native]} if form is not None else native

    record_input = {"allOf": [values, {"type": "object", "properties": {"id": id_schema}}]}
    bodies: dict[str, dict[str, Any]] = {
        "get": simple(
            filters,
            _native("select", "where", "join", "groupBy", "having", "orderBy", "limit", "offset", "chain"),
        ),
        "delete": simple(filters, _native("where", "useTrash", "chain")),
        "create": simple(simple_new_values, _native("chain", values=new_values)),
        "update": simple(simple_values, _native("where", "reload", "chain", values=values, id=id_schema)),
        "save": _native(
            "match", "reload", "chain", defaults=values, records={"type": "array", "items": record_input}
        ),
        "replace": _native(
            "where", "match", "reload", defaults=values, records={"type": "array", "items": record_input}
        ),
        "getFields": _native("action", "loadOptions", "select", "where"),
        "getActions": _native("select", "where"),
        "autocomplete": _native("input", "page"),
    }
    paths: dict[str, Any] = {}
    examples_of = _Examples(ent, get_fields, write_fields)
    errors = error_refs()
    for action_info in ent.get("actions") or []:
        action = action_info.get("name")
        if not isinstance(action, str) or not NAME_RE.fullmatch(action):
            continue
        body = bodies.get(action, {"type": "object", "additionalProperties": True})
        params = names.claim(f"{name}{action[:1].upper()}{action[1:]}Params")
        schemas[params] = {**body, "description": f"Params of {name}.{action}"}
        returns_records = action in ("get", "create", "update", "save", "delete", "replace")
        items = ref(record) if returns_records else {"type": "object", "additionalProperties": True}
        examples = examples_of.of(action)
        description = (
            str(action_info.get("description") or "").strip() or f"CiviCRM's {name}.{action} action."
        )
        if action in _SIMPLE_NOTE:
            description = f"{description}\n\n{_SIMPLE_NOTE[action]}"
        path = f"/v4/{name}/{action}"
        sample = examples.get("simple", examples.get("native", {}))
        operation: dict[str, Any] = {
            "tags": [name],
            "summary": _SUMMARIES.get(action, f"{name}.{action}").format(
                title=title, plural=plural.lower() if plural != name else plural
            ),
            "description": description,
            "operationId": op_ids.claim(f"{name}_{action}"),
            "security": security,
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": ref(params),
                        "examples": {
                            k: {"summary": f"{k.capitalize()} form", "value": v} for k, v in examples.items()
                        }
                        or {"none": {"summary": "No params", "value": {}}},
                    }
                },
            },
            "responses": {
                "200": {
                    "description": f"The {plural} (a JSON list)"
                    if returns_records
                    else "The results (a JSON list)",
                    "headers": headers("X-Result-Count", "X-Total-Count"),
                    "content": {"application/json": {"schema": {"type": "array", "items": items}}},
                },
                **errors,
            },
            "x-codeSamples": code_samples("post", path, body=sample, token=auth_required),
        }
        if not is_read_action(4, action):
            operation["parameters"] = [described.idempotency_key_parameter()]
            operation["responses"]["200"]["headers"] = headers(
                "X-Result-Count", "X-Total-Count", "Idempotent-Replayed"
            )
        paths[path] = {"post": operation}
    return paths


# --- the document ----------------------------------------------------------------------------

_GENERIC = re.compile(r"/v([34])/\{entity\}/\{action\}")
_BATCH = re.compile(r"/v([34])/batch")
_ALL_NATIVE = (
    "select",
    "where",
    "join",
    "groupBy",
    "having",
    "orderBy",
    "limit",
    "offset",
    "chain",
    "reload",
    "match",
    "useTrash",
    "loadOptions",
    "action",
)


def _sample_call(path: str, method: str, operation: dict[str, Any]) -> tuple[str, Any, Any]:
    """A concrete path, body and query string for an operation's code samples."""
    generic = _GENERIC.fullmatch(path)
    if generic:
        concrete = path.replace("{entity}", "Contact").replace("{action}", "get")
        if method == "get":
            return (
                concrete,
                None,
                {SAMPLE_FILTER["field"]: SAMPLE_FILTER["value"], "select": "id,display_name", "limit": 10},
            )
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        return concrete, next(iter(examples.values()))["value"], None
    if _BATCH.fullmatch(path):
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        return path, next(iter(examples.values()))["value"], None
    return path.replace("{slug}", "record-not-found"), None, None


def _own_paths(
    base_paths: dict[str, Any], security: list[dict[str, Any]], auth_required: bool
) -> dict[str, Any]:
    """The gateway's own routes, described by :mod:`.paths` where it knows them."""
    paths: dict[str, Any] = {}
    for path, item in base_paths.items():
        described_item: dict[str, Any] = {}
        for method, operation in item.items():
            generic, batch = _GENERIC.fullmatch(path), _BATCH.fullmatch(path)
            public = False
            if generic:
                operation = described.generic_operations(int(generic[1]), method, SAMPLE_FILTER)
            elif batch and method == "post":
                operation = described.batch_operation(int(batch[1]), SAMPLE_FILTER)
            elif (path, method) in described.SERVICE:
                operation = {"tags": ["service"], **copy.deepcopy(described.SERVICE[path, method])}
                public = (path, method) not in described.AUTHENTICATED
            else:  # a route described by FastAPI alone: drop its never-sent 422
                operation = copy.deepcopy(operation)
                responses = operation.get("responses", {})
                if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                    del responses["422"]
                if path.startswith(("/v3/", "/v4/")):  # a call route (the change feed): every
                    # problem it may answer, with examples, as the generic call routes
                    responses.update(described.error_refs())
            operation["security"] = [] if public else security
            concrete, body, query = _sample_call(path, method, operation)
            operation["x-codeSamples"] = code_samples(
                method, concrete, body=body, query=query, token=auth_required and not public
            )
            described_item[method] = operation
        paths[path] = described_item
    return paths


@dataclass(frozen=True)
class Part:
    """One entity's share of a document, built on its own: its paths, its component schemas
    (their keys are the schema names it claimed), its tag and the operation ids it claimed."""

    paths: dict[str, Any]
    schemas: dict[str, Any]
    tag: dict[str, Any] | None
    op_ids: frozenset[str]

    @cached_property
    def json(self) -> tuple[bytes, bytes, bytes]:
        """Its paths and its schemas as a document's JSON holds them (inside the braces), and
        its tag: serialised once, ahead, like the part itself."""
        return orjson.dumps(self.paths)[1:-1], orjson.dumps(self.schemas)[1:-1], orjson.dumps(self.tag)


class Skeleton:
    """What every document made from one FastAPI ``base`` shares, made once: the components,
    the gateway's own paths and the names they take; and each entity's :class:`Part`.

    A document is its skeleton and, in entity-name order, its entities' parts. An entity's
    part depends on its (narrowed) metadata and on the names it finds taken: built alone, it
    claims its names from the skeleton's; assembled with others, it is what the one-pass build
    (each entity claiming after the previous ones) gives as long as no two parts claimed the
    same name. So parts are built as soon as an entity's metadata is known (while the rest is
    still being fetched) and kept by their content for the next document; when two parts did
    claim one name, the document is built in one pass instead, as before.

    Documents share the skeleton's objects and the parts': nothing may change a document once
    it is built."""

    def __init__(self, base: dict[str, Any], *, auth_required: bool = True, parts_kept: int = 0) -> None:
        self.auth_required = auth_required
        doc = {key: copy.deepcopy(value) for key, value in base.items() if key != "paths"}
        # Replaced with the request's base URL when served (see gateway.web.openapi).
        doc["servers"] = [{"url": BASE_URL, "description": "This gateway"}]
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["Problem"] = described.problem_schema()
        schemas.update(described.where_schemas())
        schemas.update(described.batch_schemas())
        schemas["ApiRecord"] = described.record_schema()
        schemas["ApiV4Params"] = described.params_schema(_native(*_ALL_NATIVE)["properties"])
        components["responses"] = described.problem_responses()
        components["headers"] = copy.deepcopy(described.HEADERS)
        # A tokenless gateway asks for no token: no scheme, so Swagger UI shows no Authorize
        # button and no padlocks, and each operation says so with an empty ``security``.
        self.security: list[dict[str, Any]] = []
        if auth_required:
            components["securitySchemes"] = {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A client token issued by the gateway's operator "
                    "(`civicrm-gateway token create NAME`), sent as "
                    "'Authorization: Bearer <token>'. Not a CiviCRM API key.",
                }
            }
            self.security = [{SECURITY_SCHEME: []}]
        self.own = _own_paths(base.get("paths", {}), self.security, auth_required)
        self.own_op_ids = frozenset(
            op.get("operationId", "")
            for item in self.own.values()
            for op in item.values()
            if isinstance(op, dict)
        )
        doc.setdefault("info", {}).setdefault(
            "license", {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"}
        )
        self.doc = doc
        self.schema_names = frozenset(schemas)
        self._parts: OrderedDict[bytes, Part] = OrderedDict()
        self._parts_kept = parts_kept
        self._lock = threading.Lock()
        self.parts_made = 0  # parts built (not found kept), for logs and tests

    # --- parts ---------------------------------------------------------------------------
    def _part(self, ent: dict[str, Any], names: _Names, op_ids: _Names) -> Part:
        schemas: dict[str, Any] = {}
        taken = set(op_ids.taken)
        paths = _entity_operations(
            ent, names, schemas, op_ids, self.security, auth_required=self.auth_required
        )
        tag = None
        if paths:
            tag = {
                "name": ent["name"],
                "description": str(ent.get("description") or ent.get("title") or ent["name"]),
            }
        return Part(paths, schemas, tag, frozenset(op_ids.taken - taken))

    def part(self, ent: dict[str, Any]) -> Part:
        """``ent``'s part, claiming its names from the skeleton's alone; kept (up to
        ``parts_kept``) by the entity's content, so the same metadata is described once."""
        key = _content_key(ent) if self._parts_kept else None
        if key is not None:
            with self._lock:
                found = self._parts.get(key)
                if found is not None:
                    self._parts.move_to_end(key)
                    return found
        made = self._part(ent, _Names(self.schema_names), _Names(self.own_op_ids))
        with self._lock:
            self.parts_made += 1
        if key is not None:
            with self._lock:
                self._parts[key] = made
                while len(self._parts) > self._parts_kept:
                    self._parts.popitem(last=False)
        return made

    def _one_pass(self, entities: list[dict[str, Any]]) -> list[Part]:
        """The parts as one pass over the entities claims them, each after the previous."""
        names, op_ids = _Names(self.schema_names), _Names(self.own_op_ids)
        return [self._part(ent, names, op_ids) for ent in entities]

    # --- documents -----------------------------------------------------------------------
    def document(
        self, metadata: Metadata | None, note: str | None = None, *, one_pass: bool = False
    ) -> dict[str, Any]:
        """The full document of ``metadata`` (already narrowed to what the reader may see:
        see :mod:`.views`). ``one_pass``: its entities described one after the other, each
        claiming its names after the previous (what the parts must add up to; for tests)."""
        return self._assembled(metadata, note, one_pass)[0]

    def document_json(
        self, metadata: Metadata | None, note: str | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """The document and its JSON (``orjson.dumps`` of it), its parts' JSON written once each."""
        doc, parts = self._assembled(metadata, note, False)
        return doc, self._json(doc, parts)

    def _json(self, doc: dict[str, Any], parts: list[Part] | None) -> bytes:
        """``doc``'s JSON, with its paths, schemas and tags put together from the parts'."""
        own = self._own_json
        if parts is None or any(not own[1].isdisjoint(part.paths) for part in parts):
            return orjson.dumps(doc)  # built in one pass (or a path twice): as it is
        entities = [part for part in parts if part.tag is not None]
        paths = b",".join([*(part.json[0] for part in entities), *([own[0]] if own[0] else [])])
        schemas = b",".join([own[2], *(part.json[1] for part in parts if part.json[1])])
        tags = b",".join([*(part.json[2] for part in entities), own[3]])
        components = {**doc["components"], "schemas": orjson.Fragment(b"{" + schemas + b"}")}
        return orjson.dumps(
            {
                **doc,
                "paths": orjson.Fragment(b"{" + paths + b"}"),
                "components": components,
                "tags": orjson.Fragment(b"[" + tags + b"]"),
            }
        )

    @cached_property
    def _own_json(self) -> tuple[bytes, frozenset[str], bytes, bytes]:
        """The gateway's own paths (inside the braces) and their keys, the skeleton's schemas
        (inside) and the tags after the entities' (inside the brackets)."""
        return (
            orjson.dumps(self.own)[1:-1],
            frozenset(self.own),
            orjson.dumps(self.doc["components"]["schemas"])[1:-1],
            orjson.dumps(_TAGS)[1:-1],
        )

    def _assembled(
        self, metadata: Metadata | None, note: str | None, one_pass: bool
    ) -> tuple[dict[str, Any], list[Part] | None]:
        """The document, and the parts it was put together from (None: built in one pass)."""
        made: list[Part] | None = []
        doc = dict(self.doc)
        components = doc["components"] = dict(doc["components"])
        schemas = components["schemas"] = dict(components["schemas"])
        info = doc["info"] = dict(doc["info"])
        description = [info.get("description", "")]
        tags: list[dict[str, Any]] = []
        entity_paths: dict[str, Any] = {}
        if metadata is not None:
            entities = sorted(metadata.entities, key=lambda e: e["name"])
            parts = [] if one_pass else [self.part(ent) for ent in entities]
            made = parts
            if one_pass or not _apart(parts):
                parts, made = self._one_pass(entities), None
            for part in parts:
                schemas.update(part.schemas)
                if part.tag is not None:
                    entity_paths.update(part.paths)
                    tags.append(part.tag)
            description.append(
                f"Entities, actions and fields below come from CiviCRM's own metadata "
                f"({metadata.source}, {metadata.fetched_at}). Each entity's operations are also "
                "reachable through the generic routes, which serve any other entity or action."
            )
            if metadata.problems:
                description.append(
                    f"{len(metadata.problems)} metadata calls failed; those entities are documented partly."
                )
        if note:
            description.append(note)
        info["description"] = "\n\n".join(d for d in description if d)
        doc["paths"] = {**entity_paths, **self.own}
        doc["tags"] = [*tags, *_TAGS]
        # Keys in a stable, conventional order (servers right after info).
        order = ("openapi", "info", "servers", "paths", "components", "tags")
        ordered = {
            **{k: doc[k] for k in order if k in doc},
            **{k: v for k, v in doc.items() if k not in order},
        }
        return ordered, made


# The tags after the entities'.
_TAGS = (
    {"name": "APIv4", "description": "Any APIv4 entity and action"},
    {"name": "APIv3", "description": "Any APIv3 entity and action"},
    described.SERVICE_TAG,
)


def _content_key(ent: dict[str, Any]) -> bytes | None:
    """A digest of everything an entity's part is made from (None: not plain JSON data)."""
    try:
        return hashlib.blake2b(orjson.dumps(ent), digest_size=20).digest()
    except (TypeError, orjson.JSONEncodeError):
        return None


def _apart(parts: list[Part]) -> bool:
    """Whether no two parts claimed the same schema name, operation id or path."""
    schemas: set[str] = set()
    op_ids: set[str] = set()
    paths: set[str] = set()
    for part in parts:
        if not (
            schemas.isdisjoint(part.schemas)
            and op_ids.isdisjoint(part.op_ids)
            and paths.isdisjoint(part.paths)
        ):
            return False
        schemas.update(part.schemas)
        op_ids.update(part.op_ids)
        paths.update(part.paths)
    return True


def build_document(
    base: dict[str, Any], metadata: Metadata | None, *, auth_required: bool = True, note: str | None = None
) -> dict[str, Any]:
    """The full document from FastAPI's ``base`` (left untouched) and, when given, metadata
    (already narrowed to what the reader may see: see :mod:`.views`)."""
    return Skeleton(base, auth_required=auth_required).document(metadata, note)
