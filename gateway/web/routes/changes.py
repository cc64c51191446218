"""``/v4/{Entity}/changes``: the change feed over HTTP (docs/changes.md).

POST with a JSON body or GET with the same params in the query (``select=a,b``, ``where`` as
JSON, ``limit``, ``cursor``, ``wait``). The answer is a plain JSON list of changed records and
the next cursor in ``X-Next-Cursor``; with ``Accept: text/event-stream`` the same changes
come as server-sent events whose ``id`` is the cursor (``Last-Event-ID`` resumes). Registered
before the generic ``/v4/{entity}/{action}`` route, and skipped by its fast path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response, StreamingResponse

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.params import NAME_PATTERN, check_names, parse_body
from gateway.flow.changes import ChangeFeed, FeedQuery, Page
from gateway.flow.clients import Client
from gateway.services import services
from gateway.web.calls import authenticate, read_body
from gateway.web.openapi.paths import route_problem_responses

ENTITY = Path(
    description="A CiviCRM entity whose get this client may call, e.g. Contact",
    examples=["Contact"],
    pattern=f"^{NAME_PATTERN}$",
)
EVENT_STREAM = "text/event-stream"

_CHANGE = {
    "type": "object",
    "required": ["type", "cursor"],
    "properties": {
        "type": {"type": "string", "enum": ["created", "updated", "deleted"]},
        "cursor": {"type": "string", "description": "Resume after this change"},
    },
}
_RECORD = {
    "type": "object",
    "additionalProperties": True,
    "required": ["id", "_change"],
    "properties": {"id": {"type": "integer"}, "_change": _CHANGE},
    "description": "The record as a get with this select answers it (a deleted one: id only)",
}
PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cursor": {
            "type": "string",
            "description": "X-Next-Cursor (or a change's _change.cursor) of an earlier answer; "
            "absent: start now (answers [] and the first cursor)",
        },
        "select": {"type": "array", "items": {"type": "string"}, "description": "As for get"},
        "where": {"type": "array", "items": {}, "description": "As for get"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "wait": {
            "type": "number",
            "minimum": 0,
            "description": "Seconds to wait for a change when there is none yet (long-poll; "
            "at most CIVI_GATEWAY_CHANGES_MAX_WAIT)",
        },
    },
}
_HEADERS = {
    "X-Next-Cursor": {"description": "The cursor to pass next", "schema": {"type": "string"}},
    "X-Changes-Mode": {
        "description": "modified: keyset over modified_date and id; snapshot: the entity has "
        "no modified_date, each poll compares the records with the last ones seen",
        "schema": {"type": "string", "enum": ["modified", "snapshot"]},
    },
    "X-Changes-Deletions": {
        "description": "tracked, or untracked when the feed has more records than the gateway "
        "compares (CIVI_GATEWAY_CHANGES_MAX_IDS)",
        "schema": {"type": "string", "enum": ["tracked", "untracked"]},
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The changes after the cursor, oldest first. Entities with modified_date "
        "(Contact, Activity, Note, Relationship, Mailing, ContributionRecur...) are read by "
        "keyset; the others (Contribution, Membership, Participant, Email... on CiviCRM 5.77) "
        "by comparing snapshots of the selected fields (X-Changes-Mode).",
        "headers": _HEADERS,
        "content": {
            "application/json": {"schema": {"type": "array", "items": _RECORD}},
            EVENT_STREAM: {
                "schema": {
                    "type": "string",
                    "description": "Server-sent events: event = the change type, id = its cursor, "
                    "data = the record as JSON; resume with Last-Event-ID",
                }
            },
        },
    },
    **route_problem_responses(),
}

router = APIRouter(tags=["APIv4"])

# GET's query fields: the params above, select comma-separated and where as JSON.
QUERY_PARAMETERS: list[dict[str, Any]] = [
    {"name": "cursor", "in": "query", "schema": PARAMS_SCHEMA["properties"]["cursor"]},
    {
        "name": "select",
        "in": "query",
        "schema": {
            "type": "string",
            "description": "Field names, comma-separated",
            "example": "id,display_name",
        },
    },
    {
        "name": "where",
        "in": "query",
        "schema": {
            "type": "string",
            "description": "As for get, as JSON",
            "example": '[["is_deleted","=",false]]',
        },
    },
    {"name": "limit", "in": "query", "schema": PARAMS_SCHEMA["properties"]["limit"]},
    {"name": "wait", "in": "query", "schema": PARAMS_SCHEMA["properties"]["wait"]},
]


def _query_params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            raise invalid_request(f"Query field {key!r} given more than once.")
        if key == "select":
            params[key] = [f.strip() for f in value.split(",") if f.strip()]
        elif key == "where":
            try:
                params[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise invalid_request("where must be JSON, as for a get.") from None
        else:
            params[key] = value
    return params


async def _params(request: Request) -> dict[str, Any]:
    if request.method == "GET":
        return _query_params(request)
    settings = services(request).settings
    body = await read_body(request, settings.max_body_bytes)
    if not body.strip():
        return {}
    return parse_body(
        body, max_depth=settings.max_json_depth, content_type=request.headers.get("content-type")
    )


def _headers(page: Page) -> dict[str, str]:
    return {
        "X-Next-Cursor": page.cursor,
        "X-Changes-Mode": page.mode,
        "X-Changes-Deletions": "tracked" if page.deletions_tracked else "untracked",
        "Cache-Control": "no-store",
    }


def _cursor(params: dict[str, Any], request: Request, stream: bool) -> str | None:
    cursor = params.get("cursor")
    if cursor is None and stream:
        cursor = request.headers.get("last-event-id") or None
    if cursor is not None and not isinstance(cursor, str):
        raise invalid_request("cursor must be a string (an X-Next-Cursor as given).")
    return cursor


async def changes(request: Request, entity: str = ENTITY) -> Response:
    client = await authenticate(request)
    check_names(entity, "get")
    feed = services(request).feed
    params = await _params(request)
    query = FeedQuery.of(params)
    stream = EVENT_STREAM in (request.headers.get("accept") or "")
    wait = feed.check_wait(params.get("wait", 0))
    cursor = _cursor(params, request, stream)
    if stream:
        return await _event_stream(request, feed, client, entity, query, cursor)
    if cursor is None:
        page = await feed.start(client, entity, query)
    else:
        page = await feed.poll_waiting(client, entity, cursor, query, wait)
    return Response(orjson.dumps(page.records), media_type="application/json", headers=_headers(page))


for _method in ("GET", "POST"):
    router.add_api_route(
        "/v4/{entity}/changes",
        changes,
        methods=[_method],
        name=f"v4_changes_{_method.lower()}",
        operation_id=f"v4_changes_{_method.lower()}",
        summary="What changed in an entity since a cursor (long-poll or server-sent events)",
        description="A change feed under this client's policy, as for a get of the entity: "
        "records created, updated or deleted after the cursor, each reported once per poll "
        "run as it now is, in change order. See docs/changes.md.",
        responses=RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": PARAMS_SCHEMA,
                        "examples": {
                            "start": {"summary": "Start a feed: [] and the first cursor", "value": {}},
                            "poll": {
                                "summary": "What changed since a cursor, waiting up to 20 s",
                                "value": {
                                    "cursor": "<X-Next-Cursor>",
                                    "select": ["id", "display_name"],
                                    "wait": 20,
                                },
                            },
                        },
                    }
                },
            }
        }
        if _method == "POST"
        else {"parameters": QUERY_PARAMETERS},
    )


def _event(record: dict[str, Any]) -> bytes:
    change = record["_change"]
    return (
        f"id: {change['cursor']}\nevent: {change['type']}\n".encode()
        + b"data: "
        + orjson.dumps(record)
        + b"\n\n"
    )


async def _event_stream(
    request: Request, feed: ChangeFeed, client: Client, entity: str, query: FeedQuery, cursor: str | None
) -> Response:
    """Server-sent events: the first poll (or start) runs before answering, so a bad cursor
    or query is a problem, not a broken stream."""
    stack = AsyncExitStack()
    await stack.enter_async_context(feed.waiting(client))
    try:
        page = await (
            feed.start(client, entity, query) if cursor is None else feed.poll(client, entity, cursor, query)
        )
    except BaseException:
        await stack.aclose()
        raise
    seconds = services(request).settings.changes_sse_seconds

    async def events() -> AsyncIterator[bytes]:
        current = page
        deadline = time.monotonic() + seconds
        try:
            yield f"retry: {int(feed.limits.poll_interval * 1000)}\n\n".encode()
            if cursor is None:
                yield f"id: {current.cursor}\nevent: cursor\ndata: {{}}\n\n".encode()
            while True:
                for record in current.records:
                    yield _event(record)
                if not current.records:
                    yield b": waiting\n\n"
                    left = deadline - time.monotonic()
                    if left <= 0 or await request.is_disconnected():
                        return
                    await feed.nap(entity, min(feed.limits.poll_interval, left))
                elif time.monotonic() >= deadline:
                    return
                try:
                    current = await feed.poll(client, entity, current.cursor, query)
                except GatewayError as exc:
                    yield (
                        b"event: error\ndata: "
                        + orjson.dumps({"type": exc.slug, "detail": exc.detail})
                        + b"\n\n"
                    )
                    return
        finally:
            await stack.aclose()

    return StreamingResponse(
        events(),
        media_type=EVENT_STREAM,
        headers={**_headers(page), "X-Accel-Buffering": "no"},
    )
