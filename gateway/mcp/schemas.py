"""The MCP tools' names, annotations and JSON Schemas.

Each tool has a *base* input schema that holds for every client (types and sizes only): the
arguments are checked against it before anything else, so a malformed or oversized input is a
clear ``invalid-request``, while whether an entity or field may be used is left to the call
flow, which answers exactly as it answers a REST call. The schema a client is *shown* adds what
CiviCRM's metadata, narrowed to its policy, says: the entities it may use with each tool.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from mcp import types

# get_records: records per call when the assistant names no limit, and the most it may ask for
# (an assistant's context, not a bulk export: the REST routes stream those).
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
MAX_NAME = 128
MAX_ITEMS = 200

_ENTITY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME,
    "description": "The CiviCRM entity (APIv4 name), e.g. Contact; list_entities says which you may use.",
}
_WHERE = {
    "type": "array",
    "maxItems": MAX_ITEMS,
    "description": 'APIv4 where clauses: [["field", "operator", value], ...], e.g. '
    '[["last_name", "=", "Smith"]]; ["OR", [clauses]] groups alternatives.',
    "items": {"type": "array", "minItems": 1, "maxItems": 4},
}
_DRY_RUN = {
    "type": "boolean",
    "default": False,
    "description": "Check the call (names, values, this client's policy) without sending it to CiviCRM.",
}
_IDEMPOTENCY_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "Any unique string: sent again with the same call, the write runs once and its "
    "first answer is repeated (as the Idempotency-Key header of the REST routes).",
}
_VALUES = {
    "type": "object",
    "maxProperties": MAX_ITEMS,
    "description": "Field name -> value; describe_entity lists the fields and their options.",
}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its fixed name, what it does, the API action it checks against the policy
    (None: a question about metadata, not a call) and its hints."""

    name: str
    title: str
    description: str
    action: str | None
    input: dict[str, Any]
    output: dict[str, Any]
    read_only: bool = True
    destructive: bool = False
    idempotent: bool = True

    @property
    def writes(self) -> bool:
        return not self.read_only

    def tool(self, entities: list[str] | None) -> types.Tool:
        """The tool as listed to a client that may use it on ``entities`` (None: unknown, the
        metadata is not available)."""
        schema = copy.deepcopy(self.input)
        if entities and "entity" in schema["properties"]:
            schema["properties"]["entity"]["enum"] = entities
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            inputSchema=schema,
            outputSchema=self.output,
            annotations=types.ToolAnnotations(
                title=self.title,
                readOnlyHint=self.read_only,
                destructiveHint=self.destructive,
                idempotentHint=self.idempotent,
                openWorldHint=False,
            ),
        )


_RECORDS_OUT = _object(
    {
        "entity": {"type": "string"},
        "records": {"type": "array", "items": {"type": "object"}},
        "count": {"type": "integer"},
        "total": {"type": ["integer", "null"]},
    },
    ["entity", "records", "count"],
)
_WRITE_OUT = _object(
    {
        "entity": {"type": "string"},
        "action": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "records": {"type": "array", "items": {"type": "object"}},
        "count": {"type": "integer"},
        "replayed": {"type": "boolean"},
    },
    ["entity", "action", "dry_run"],
)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "list_entities",
        "List entities",
        "The CiviCRM entities this client may read, with their titles, descriptions and the "
        "actions it may use on each.",
        None,
        _object({}, []),
        _object({"entities": {"type": "array", "items": {"type": "object"}}}, ["entities"]),
    ),
    ToolSpec(
        "describe_entity",
        "Describe an entity",
        "An entity's fields this client may see: name, type, title, description, the options of "
        "fields with a fixed list, and whether a new record needs it.",
        None,
        _object({"entity": _ENTITY}, ["entity"]),
        _object(
            {
                "entity": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "actions": {"type": "array", "items": {"type": "string"}},
                "fields": {"type": "array", "items": {"type": "object"}},
            },
            ["entity", "fields"],
        ),
    ),
    ToolSpec(
        "get_records",
        "Get records",
        f"Read records (CiviCRM APIv4 get). At most {MAX_LIMIT} per call ({DEFAULT_LIMIT} unless "
        "limit says otherwise); page with offset.",
        "get",
        _object(
            {
                "entity": _ENTITY,
                "select": {
                    "type": "array",
                    "maxItems": MAX_ITEMS,
                    "items": {"type": "string", "minLength": 1, "maxLength": 512},
                    "description": "Fields to return (default: the entity's own fields), e.g. "
                    '["id", "display_name", "email_primary.email"].',
                },
                "where": _WHERE,
                "orderBy": {
                    "type": "object",
                    "maxProperties": 20,
                    "additionalProperties": {"enum": ["ASC", "DESC"]},
                    "description": 'Field -> "ASC" or "DESC", e.g. {"sort_name": "ASC"}.',
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
            },
            ["entity"],
        ),
        _RECORDS_OUT,
    ),
    ToolSpec(
        "count_records",
        "Count records",
        "How many records match the where clauses (CiviCRM APIv4 row_count).",
        "get",
        _object({"entity": _ENTITY, "where": _WHERE}, ["entity"]),
        _object({"entity": {"type": "string"}, "count": {"type": "integer"}}, ["entity", "count"]),
    ),
    ToolSpec(
        "create_record",
        "Create a record",
        "Create one record (CiviCRM APIv4 create). dry_run checks it without creating it.",
        "create",
        _object(
            {"entity": _ENTITY, "values": _VALUES, "dry_run": _DRY_RUN, "idempotency_key": _IDEMPOTENCY_KEY},
            ["entity", "values"],
        ),
        _WRITE_OUT,
        read_only=False,
        destructive=False,
        idempotent=False,
    ),
    ToolSpec(
        "update_records",
        "Update records",
        "Set values on every record matching where (CiviCRM APIv4 update). dry_run checks it "
        "without changing anything.",
        "update",
        _object(
            {
                "entity": _ENTITY,
                "where": {**_WHERE, "minItems": 1},
                "values": {**_VALUES, "minProperties": 1},
                "dry_run": _DRY_RUN,
                "idempotency_key": _IDEMPOTENCY_KEY,
            },
            ["entity", "where", "values"],
        ),
        _WRITE_OUT,
        read_only=False,
        destructive=True,
        idempotent=True,
    ),
    ToolSpec(
        "delete_records",
        "Delete records",
        "Delete every record matching where (CiviCRM APIv4 delete; contacts go to the trash). "
        "dry_run checks it without deleting anything.",
        "delete",
        _object(
            {
                "entity": _ENTITY,
                "where": {**_WHERE, "minItems": 1},
                "dry_run": _DRY_RUN,
                "idempotency_key": _IDEMPOTENCY_KEY,
            },
            ["entity", "where"],
        ),
        _WRITE_OUT,
        read_only=False,
        destructive=True,
        idempotent=True,
    ),
)
BY_NAME = {spec.name: spec for spec in TOOLS}
