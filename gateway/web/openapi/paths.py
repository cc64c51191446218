"""The gateway's own routes as client generators need them: the generic
``/v4|/v3/{entity}/{action}`` routes, the batch routes and the service routes.

FastAPI describes these routes from their Python signatures, which says too little (free-form
bodies, no response headers, default operation ids) or the wrong thing (an exploded-object
query parameter that generators serialise as ``fields[x]=``). Their description is written
here instead and replaces FastAPI's for the paths it knows; a route added later without a
description here keeps FastAPI's.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.core.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES
from gateway.core.params import NAME_PATTERN

SECURITY_SCHEME = "clientToken"
# APIv4's comparison operators (CiviCRM 5.77, Civi\Api4\Utils\CoreUtil::getOperators).
OPERATORS = (
    "=",
    "!=",
    "<>",
    ">",
    "<",
    ">=",
    "<=",
    "CONTAINS",
    "NOT CONTAINS",
    "CONTAINS ONE OF",
    "NOT CONTAINS ONE OF",
    "IN",
    "NOT IN",
    "LIKE",
    "NOT LIKE",
    "REGEXP",
    "NOT REGEXP",
    "REGEXP BINARY",
    "NOT REGEXP BINARY",
    "BETWEEN",
    "NOT BETWEEN",
    "IS EMPTY",
    "IS NOT EMPTY",
    "IS NULL",
    "IS NOT NULL",
)
FORMATS = ("json", "ndjson", "csv")
NDJSON = "application/x-ndjson"
CSV = "text/csv"


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict[str, str]:
    return ref("schemas", name)


# --- shared components -----------------------------------------------------------------------

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the one sent, or one the gateway "
        "assigned); every log line of the request carries it.",
        "schema": {"type": "string"},
    },
    "X-Result-Count": {
        "description": "How many records this answer holds (absent on a streamed answer).",
        "schema": {"type": "integer"},
    },
    "X-Total-Count": {
        "description": "How many records matched in all, when the call selected "
        "`row_count` (APIv4 countMatched).",
        "schema": {"type": "integer"},
    },
    "X-Streamed": {
        "description": "`true` when a large get is streamed as one JSON array "
        "walked by id; the body is then cut short if CiviCRM fails "
        "midway.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "The Bearer challenge.", "schema": {"type": "string"}},
    "Allow": {"description": "The methods this route accepts.", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer of an "
        "earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def idempotency_key_parameter() -> dict[str, Any]:
    """The optional ``Idempotency-Key`` header of a write (gateway/idempotency)."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes a write run at most once: a repeat with the same key and the "
        "same call answers the first answer again (`Idempotent-Replayed: "
        "true`); the same key with another call is 422; while the first "
        "runs, 409 with Retry-After. Kept 24 h by default; ignored on reads. "
        "Some clients must send it (428 without).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
        "example": "3f1e0c2a-order-1042",
    }


# Headers of the error answers beyond X-Request-ID, by status.
_ERROR_HEADERS = {
    401: ("WWW-Authenticate",),
    405: ("Allow",),
    429: ("Retry-After",),
    503: ("Retry-After",),
    409: ("Retry-After", "Idempotent-Replayed"),
    422: ("Idempotent-Replayed",),
    504: ("Idempotent-Replayed",),
}


def headers(*names: str) -> dict[str, Any]:
    return {name: ref("headers", name) for name in ("X-Request-ID", *names)}


def problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An RFC 9457 problem: what went wrong, and CiviCRM's own error if any.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "description": "/problems/{slug}: the problem type",
                "enum": sorted(p.uri for p in PROBLEM_TYPES.values()),
            },
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string", "description": "What happened, for a person"},
            "instance": {"type": "string", "description": "The path that was called"},
            "civicrm": {
                "type": "object",
                "additionalProperties": True,
                "description": "CiviCRM's own error_code and error_message",
            },
        },
    }


def problem_responses() -> dict[str, Any]:
    """One response component per error status, with an example per problem type."""
    by_status: dict[int, list[Any]] = {}
    for problem in PROBLEM_TYPES.values():
        by_status.setdefault(problem.status, []).append(problem)
    responses: dict[str, Any] = {}
    for status, problems in sorted(by_status.items()):
        examples = {
            p.slug: {
                "summary": p.title,
                "value": {"type": p.uri, "title": p.title, "status": status, "detail": p.description},
            }
            for p in problems
        }
        responses[f"Problem{status}"] = {
            "description": "; ".join(f"{p.slug}: {p.title}" for p in problems),
            "headers": headers(*_ERROR_HEADERS.get(status, ())),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": schema_ref("Problem"), "examples": examples}},
        }
    return responses


def route_problem_responses() -> dict[int | str, dict[str, Any]]:
    """FastAPI's ``responses=`` for a route: every error status but 500, each naming the
    problem types behind it, with the one problem schema inline."""
    by_status: dict[int, list[str]] = {}
    for problem in PROBLEM_TYPES.values():
        if problem.status != 500:
            by_status.setdefault(problem.status, []).append(problem.slug)
    return {
        status: {
            "description": "; ".join(slugs),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_schema()}},
        }
        for status, slugs in sorted(by_status.items())
    }


def error_refs(*statuses: int) -> dict[str, Any]:
    """References to the problem responses (all statuses when none are named)."""
    known = sorted({p.status for p in PROBLEM_TYPES.values()})
    return {str(s): ref("responses", f"Problem{s}") for s in known if not statuses or s in statuses}


_FIELD = {"type": "string", "description": "A field name or expression"}
_VALUE = {"description": "The value to compare with"}
_EXPRESSION = {"type": "boolean", "description": "true: the value is a field name or expression"}


def _tuple(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "array",
        "prefixItems": list(items),
        "items": {},
        "minItems": len(items),
        "maxItems": len(items),
    }


def where_schemas() -> dict[str, Any]:
    """``where``/``having`` as the clause tree CiviCRM reads."""
    return {
        "ApiV4Operator": {
            "type": "string",
            "enum": list(OPERATORS),
            "description": "An APIv4 comparison operator.",
        },
        # One tuple per length: generators turn prefixItems into tuples whose items are all
        # required, so "value optional" is said by the union, not by minItems.
        "ApiV4Condition": {
            "description": "[field, operator], [field, operator, value] or [field, operator, "
            "value, valueIsExpression]: no value for IS NULL, IS EMPTY and their "
            "negations; a list for IN, BETWEEN and CONTAINS ONE OF.",
            "anyOf": [
                _tuple(_FIELD, schema_ref("ApiV4Operator")),
                _tuple(_FIELD, schema_ref("ApiV4Operator"), _VALUE),
                _tuple(_FIELD, schema_ref("ApiV4Operator"), _VALUE, _EXPRESSION),
            ],
        },
        # Nested groups are typed one level deep: a schema that refers to itself through a
        # tuple is a type that refers to itself, which TypeScript generators cannot emit.
        "ApiV4ClauseGroup": {
            "description": '["OR" | "AND" | "NOT", [clauses]]',
            **_tuple(
                {"type": "string", "enum": ["AND", "OR", "NOT"]},
                {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            schema_ref("ApiV4Condition"),
                            {"type": "array", "items": {}, "description": "A nested group"},
                        ]
                    },
                },
            ),
        },
        "ApiV4Clause": {
            "description": "A condition, or a group of clauses",
            "anyOf": [schema_ref("ApiV4Condition"), schema_ref("ApiV4ClauseGroup")],
        },
        "ApiV4Where": {
            "type": "array",
            "items": schema_ref("ApiV4Clause"),
            "description": "Clauses ANDed together.",
            "examples": [
                [["last_name", "=", "Garcia"], ["OR", [["city", "=", "Springfield"], ["id", ">", 10]]]]
            ],
        },
        "ApiV4Chain": {
            "type": "object",
            "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 4, "items": {}},
            "description": "Calls to run for each result: {name: [entity, action, params, "
            "index?]}; `$field` in params refers to the parent's field.",
        },
    }


def record_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": True,
        "description": "One record: the selected fields, joined fields "
        "(`email_primary.email`), suffixed fields (`gender_id:label`), "
        "aliases and expressions (`COUNT:id`).",
    }


# --- the generic routes ----------------------------------------------------------------------


def _path_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "entity",
            "in": "path",
            "required": True,
            "description": "The CiviCRM entity, e.g. Contact",
            "schema": {"type": "string", "pattern": f"^{NAME_PATTERN}$", "examples": ["Contact"]},
        },
        {
            "name": "action",
            "in": "path",
            "required": True,
            "description": "The API action, e.g. get, create, update, delete",
            "schema": {"type": "string", "pattern": f"^{NAME_PATTERN}$", "examples": ["get"]},
        },
    ]


def _json_string(description: str, example: Any, content: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "contentMediaType": "application/json"}
    if content is not None:
        schema["contentSchema"] = content
    return {"description": description, "schema": schema, "example": example}


def format_parameter() -> dict[str, Any]:
    return {
        "name": "format",
        "in": "query",
        "description": "json (default), or ndjson / csv to stream an APIv4 get (the "
        "Accept header does the same).",
        "schema": {"type": "string", "enum": list(FORMATS)},
    }


def query_parameters(version: int, sample: dict[str, str]) -> list[dict[str, Any]]:
    """Named query parameters of a GET, each a plain string or integer (what every generator
    serialises the same way). Field filters (``last_name=Garcia``) are free-form, so they are
    described rather than declared."""
    import orjson

    where = [[sample["field"], "=", sample["value"]]]
    params: list[dict[str, Any]] = [
        {
            "name": "select" if version == 4 else "return",
            "in": "query",
            "description": "Fields to return, separated by commas.",
            "schema": {"type": "string"},
            "example": "id,display_name",
        },
    ]
    if version == 4:
        params.append(
            {
                "name": "where",
                "in": "query",
                **_json_string(
                    'Where clauses as a JSON array (see ApiV4Where), e.g. `[["last_name","=","Garcia"]]`.',
                    orjson.dumps(where).decode(),
                    schema_ref("ApiV4Where"),
                ),
            }
        )
    params += [
        {
            "name": "orderBy" if version == 4 else "sort",
            "in": "query",
            "description": "Sort order: `field` or `field:desc`, separated by commas.",
            "schema": {"type": "string"},
            "example": "sort_name:asc",
        },
        {
            "name": "limit",
            "in": "query",
            "description": "At most this many records.",
            "schema": {"type": "integer", "minimum": 0},
            "example": 10,
        },
        {
            "name": "offset",
            "in": "query",
            "description": "Skip this many records.",
            "schema": {"type": "integer", "minimum": 0},
        },
    ]
    if version == 4:
        params.append(format_parameter())
    native: dict[str, Any] = (
        {"select": ["id", "display_name"], "where": where, "limit": 10}
        if version == 4
        else {sample["field"]: sample["value"], "return": "display_name"}
    )
    params.append(
        {
            "name": "params",
            "in": "query",
            **_json_string(
                "All params as one JSON object (the native form); use it alone.",
                orjson.dumps(native).decode(),
            ),
        }
    )
    return params


def _ok(version: int, streams: bool) -> dict[str, Any]:
    if version == 3:
        return {
            "description": "The records as a JSON list (getsingle: the record; getcount: "
            "a number; getvalue: the value itself).",
            "headers": headers("X-Result-Count"),
            "content": {"application/json": {"schema": {}}},
        }
    content: dict[str, Any] = {
        "application/json": {"schema": {"type": "array", "items": schema_ref("ApiRecord")}}
    }
    if streams:
        content[NDJSON] = {
            "schema": {"type": "string"},
            "example": '{"id":3,"display_name":"Maria Garcia"}\n',
        }
        content[CSV] = {"schema": {"type": "string"}, "example": "id,display_name\n3,Maria Garcia\n"}
    return {
        "description": "The records, as a plain JSON list (or NDJSON / CSV when asked "
        "with `format` or `Accept`: get only, streamed).",
        "headers": headers("X-Result-Count", "X-Total-Count", "X-Streamed", "Idempotent-Replayed"),
        "content": content,
    }


_GENERIC_NOTE = {
    4: "Any APIv4 call: `{entity}` and `{action}` as CiviCRM names them. The body holds the "
    "native params (select, where, values, ...) or the simple form: field names with values, "
    "which filter (get, delete), become the values (create) or, with `id`, select the record "
    "to update. The answer is a plain JSON list of records. Every entity and action "
    "documented under its own tag is served by this route.",
    3: "Any APIv3 call, with APIv3's flat params. Results are always sequential lists; "
    "getsingle answers the record, getcount a number, getvalue the value.",
}
_GET_NOTE = (
    "Read actions only (get*, autocomplete). Besides the named parameters, any other "
    "query field is a filter on that field: `last_name=Garcia`; repeat it for IN "
    "(`id=3&id=4`)."
)


def generic_operations(version: int, method: str, sample: dict[str, str]) -> dict[str, Any]:
    """The full description of one generic route."""
    operation: dict[str, Any] = {
        "tags": [f"APIv{version}"],
        "operationId": f"v{version}_call" + ("_query" if method == "get" else ""),
        "parameters": _path_parameters(),
        "responses": {"200": _ok(version, streams=True), **error_refs()},
    }
    if method == "get":
        operation["summary"] = f"Call an APIv{version} read action with query-string params"
        operation["description"] = f"{_GENERIC_NOTE[version]}\n\n{_GET_NOTE}"
        operation["parameters"] += query_parameters(version, sample)
    else:
        operation["summary"] = f"Call any APIv{version} entity action"
        operation["description"] = _GENERIC_NOTE[version]
        if version == 4:
            operation["parameters"].append(format_parameter())
        operation["parameters"].append(idempotency_key_parameter())
        body = (
            schema_ref("ApiV4Params")
            if version == 4
            else {
                "type": "object",
                "additionalProperties": True,
                "description": "Flat APIv3 params: field filters, return, options, api.* chains",
            }
        )
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body, "examples": generic_examples(version, sample)}},
        }
    return operation


def generic_examples(version: int, sample: dict[str, str]) -> dict[str, Any]:
    field, value = sample["field"], sample["value"]
    if version == 3:
        return {
            "simple": {
                "summary": "APIv3 params (Contact.get)",
                "value": {field: value, "return": "id,display_name"},
            }
        }
    return {
        "simple": {"summary": "Simple form (Contact.get)", "value": {field: value, "limit": 10}},
        "native": {
            "summary": "Native APIv4 form (Contact.get)",
            "value": {"select": ["id", "display_name"], "where": [[field, "=", value]], "limit": 10},
        },
    }


def params_schema(native: dict[str, Any]) -> dict[str, Any]:
    """Any APIv4 call's params: the native ones typed, field values (simple form) free."""
    return {
        "type": "object",
        "additionalProperties": True,
        "description": "Native APIv4 params, or field names with values (the simple form)",
        "properties": copy.deepcopy(native),
    }


# --- batch -----------------------------------------------------------------------------------


def batch_schemas() -> dict[str, Any]:
    return {
        "BatchCalls": {
            "type": "object",
            "minProperties": 1,
            "description": "Named calls: each value is [Entity, action, params?].",
            "additionalProperties": {
                "type": "array",
                "minItems": 2,
                "maxItems": 3,
                "items": {},
                "prefixItems": [{"type": "string"}, {"type": "string"}, {"type": "object"}],
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["status"],
            "description": "One call's outcome: `values` when status is 200, else `error`.",
            "properties": {
                "status": {
                    "type": "integer",
                    "description": "The HTTP status this call would have had on its own",
                },
                "values": {
                    "description": "What the call answers on its own (a list of records, or an APIv3 scalar)"
                },
                "total": {
                    "type": "integer",
                    "description": "Matched records in all, when the call selected row_count",
                },
                "error": schema_ref("Problem"),
            },
        },
        "BatchAnswer": {
            "type": "object",
            "additionalProperties": schema_ref("BatchResult"),
            "description": "Each call's name mapped to its outcome.",
        },
    }


def batch_operation(version: int, sample: dict[str, str]) -> dict[str, Any]:
    people = [
        "Contact",
        "get",
        {"select": ["id", "display_name"], "where": [[sample["field"], "=", sample["value"]]], "limit": 2},
    ]
    if version == 3:
        people = ["Contact", "get", {sample["field"]: sample["value"], "return": "display_name"}]
    return {
        "tags": [f"APIv{version}"],
        "operationId": f"v{version}_batch",
        "summary": f"Run many APIv{version} calls in one request",
        "description": "Each call passes the same checks as on its own and gets its own "
        "status; the answer is 200 unless the batch itself is refused. With an "
        "Idempotency-Key, a batch holding a write runs at most once.",
        "parameters": [idempotency_key_parameter()],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schema_ref("BatchCalls"),
                    "examples": {
                        "two": {
                            "summary": "Two calls",
                            "value": {"people": people, "groups": ["Group", "get", {"limit": 5}]},
                        }
                    },
                }
            },
        },
        "responses": {
            "200": {
                "description": "Each call's status and values (or problem)",
                "headers": headers("Idempotent-Replayed"),
                "content": {"application/json": {"schema": schema_ref("BatchAnswer")}},
            },
            **error_refs(),
        },
    }


# --- service routes --------------------------------------------------------------------------


def _json_ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers(),
        "content": {"application/json": {"schema": schema}},
    }


def _status(*extra: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, **{name: {"type": "string"} for name in extra}},
    }


SERVICE: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "get"): {
        "operationId": "service_healthz",
        "summary": "Alive",
        "description": "Answers as long as the process runs; asks nothing of CiviCRM.",
        "responses": {"200": _json_ok("Alive", _status())},
    },
    ("/", "get"): {
        "operationId": "service_index",
        "summary": "Name, version, backend and links",
        "description": "A small JSON index: the gateway's name, version and backend, and links "
        "to the documentation, the OpenAPI document and the health probes.",
        "responses": {"200": _json_ok("The index", {"type": "object", "additionalProperties": True})},
    },
    ("/readyz", "get"): {
        "operationId": "service_readyz",
        "summary": "This process can serve",
        "description": "Ready while the process has started and is not draining; CiviCRM's "
        "state is reported in the body (and gates readiness only with "
        "CIVI_GATEWAY_READINESS_REQUIRES_UPSTREAM=true).",
        "responses": {"200": _json_ok("Ready", _status("backend")), **error_refs(502, 503, 504)},
    },
    ("/metrics", "get"): {
        "operationId": "service_metrics",
        "summary": "Prometheus metrics",
        "description": "Requests by route template and status, latency, upstream calls, "
        "retries, breaker state, cache hits, pool use (Prometheus text format).",
        "responses": {
            "200": {
                "description": "Prometheus text format",
                "headers": headers(),
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_refs(404),
        },
    },
    ("/cache/flush", "post"): {
        "operationId": "service_cacheFlush",
        "summary": "Forget cached metadata (getFields, getActions, Entity.get)",
        "description": "For after a schema change made outside the gateway (writes through "
        "it flush by themselves). Only the operator's clients may flush: a trusted client "
        '(allow = ["*"], credential_fields = true), or the loopback caller of a gateway '
        "without tokens; any other client gets 403 gateway-policy-denied.",
        "responses": {
            "200": _json_ok(
                "How many cached answers were dropped",
                {"type": "object", "required": ["flushed"], "properties": {"flushed": {"type": "integer"}}},
            ),
            **error_refs(401, 403, 429),
        },
    },
    ("/problems/{slug}", "get"): {
        "operationId": "service_problem",
        "summary": "What an error type means",
        "description": "The page each problem's `type` links to.",
        "parameters": [
            {
                "name": "slug",
                "in": "path",
                "required": True,
                "description": "The problem type, e.g. record-not-found",
                "schema": {"type": "string", "enum": sorted(PROBLEM_TYPES)},
            }
        ],
        "responses": {
            "200": _json_ok(
                "The problem type",
                {
                    "type": "object",
                    "required": ["type", "title", "status", "description"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "description": {"type": "string"},
                    },
                },
            ),
            **error_refs(404),
        },
    },
}
# Service routes that need a client token; the others are public.
AUTHENTICATED = frozenset({("/cache/flush", "post")})
SERVICE_TAG = {
    "name": "service",
    "description": "The gateway itself: health, readiness, metrics, its caches and its error types",
}
