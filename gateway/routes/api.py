"""``/v4/{entity}/{action}`` and ``/v3/{entity}/{action}``: POST with a JSON params object, GET
(read actions only) with params in the query string."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response, StreamingResponse

from .. import export
from ..call import Call
from ..consumers import Client
from ..errors import GatewayError
from ..openapi.paths import route_problem_responses
from ..params import NAME_PATTERN, check_names, is_read_action, params_from_query
from ..pipeline import (
    authenticate,
    params_from_body,
    prepare_call,
    run_prepared,
    shape_result,
)
from ..policy import request_cost
from ..responses import JSONResponse

ENTITY = Path(description="CiviCRM entity, e.g. Contact", examples=["Contact"],
              pattern=f"^{NAME_PATTERN}$")
ACTION = Path(description="API action, e.g. get, create, update, delete", examples=["get"],
              pattern=f"^{NAME_PATTERN}$")


def _ok_response(version: int) -> dict[int | str, dict]:
    schema: dict = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
    description = "The records, as a plain JSON list"
    if version == 3:
        schema = {}
        description += " (getsingle: the record; getcount: a number; getvalue: the value)"
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _format(request: Request) -> str:
    """The answer's format: ``format=json|ndjson|csv`` in the query, else the Accept header.

    A ``format`` query field with any other value is left alone (it is then a field filter)."""
    value = request.query_params.get("format")
    return export.negotiate(value if value in export.MEDIA_TYPES else None,
                            request.headers.get("accept"))


def _page_gate(request: Request, client: Client) -> export.Gate:
    """Every page after the first is one more call against the client's rate and holds one
    of its in-flight slots while it runs."""
    limiter = request.app.state.limiter

    def gate(first: bool) -> Any:
        return limiter.admit(client, cost=0 if first else 1)

    return gate


async def export_response(request: Request, client: Client, call: Call, fmt: str) -> Response:
    """Stream an APIv4 get as NDJSON or CSV, page by page (see gateway.export).

    The first page is fetched before answering, so a bad query still gets a problem+json
    status; a failure after that cuts the stream short (the body is then incomplete)."""
    state = request.app.state
    metrics = getattr(state, "metrics", None)

    def count_rows(n: int) -> None:
        if metrics is not None:
            metrics.export_rows.labels(fmt).inc(n)

    chunks = export.stream(state.backend, call, fmt,
                           page_size=state.settings.export_page_size, identity=client.identity,
                           strip_credentials=not client.policy.credential_fields,
                           on_rows=count_rows, gate=_page_gate(request, client))
    first = await anext(chunks, b"")
    headers = {}
    if fmt == "csv":
        headers["Content-Disposition"] = f'attachment; filename="{call.entity}.csv"'
    return _stream(first, chunks, export.MEDIA_TYPES[fmt], headers)


def _stream(first: bytes, rest: AsyncIterator[bytes], media_type: str,
            headers: dict[str, str]) -> StreamingResponse:
    """The chunk already fetched (so a failure before it was a proper error status), then
    the rest as it comes."""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    return StreamingResponse(body(), media_type=media_type, headers=headers)


# Gets that take no limit: Setting.get is not a paged query in CiviCRM.
_UNPAGED = frozenset({"Setting"})


async def call_json(request: Request, client: Client, call: Call) -> Response:
    """A plain JSON answer. An APIv4 get with no limit that finds more than one page of
    records is streamed as a JSON array, walked by id (see gateway.export), so a 100,000-record
    read holds one page in memory, not the whole answer three times over.

    The first call asks for one record more than a page, in the caller's own order: a result
    that fits is answered exactly as CiviCRM ordered it, with its count headers. Only a larger
    one is re-read in id order and streamed (without X-Result-Count, which it cannot know yet);
    a failure after streaming has begun leaves the array unterminated."""
    if (call.version != 4 or call.action != "get" or call.entity in _UNPAGED
            or call.limit or call.chain or not export.keyset_possible(call)):
        return await run_prepared(request, client, call)
    state = request.app.state
    page_size = state.settings.export_page_size
    async with state.limiter.admit(client, cost=request_cost(call) - 1):
        records = await state.backend.call(4, call.entity, "get",
                                           {**call.to_params(), "limit": page_size + 1},
                                           identity=client.identity)
    if len(records) <= page_size:
        body, headers = shape_result(client, call, records)
        return JSONResponse(body, headers=headers)
    del records
    chunks = export.stream(state.backend, call, "json", page_size=page_size,
                           identity=client.identity,
                           strip_credentials=not client.policy.credential_fields,
                           gate=_page_gate(request, client))
    try:
        first = await anext(chunks)
    except GatewayError as exc:
        # The same query passed a moment ago, so a refusal now is of the paging itself
        # (records without ids, an entity that cannot order by id): answer in one piece.
        if exc.status >= 500:
            raise
        return await run_prepared(request, client, call)
    return _stream(first, chunks, "application/json", {"X-Streamed": "true"})


def _get_params(request: Request, version: int, entity: str, action: str) -> dict:
    check_names(entity, action)
    if not is_read_action(version, action):
        raise GatewayError(
            "method-not-allowed",
            f"{entity}.{action} changes data: send it with POST. Only read actions "
            "(get*, autocomplete) may use GET.",
            headers={"Allow": "POST"},
        )
    items = [(k, v) for k, v in request.query_params.multi_items()
             if not (k == "format" and v in export.MEDIA_TYPES)]
    return params_from_query(version, items,
                             max_depth=request.app.state.settings.max_json_depth)


async def handle_call(request: Request, version: int, entity: str, action: str) -> Response:
    """One call, POST (params in a JSON body) or GET (read actions, params in the query).

    Both the FastAPI routes below and ``gateway.routes.direct`` (the fast path that skips
    FastAPI's routing for these two routes) answer through here."""
    client = await authenticate(request)
    if request.method == "GET":
        fmt = _format(request)
        params = _get_params(request, version, entity, action)
    else:
        check_names(entity, action)
        fmt = _format(request)
        params = await params_from_body(request)
    call = await prepare_call(request.app.state, client, version, entity, action, params)
    if fmt == "json":
        return await call_json(request, client, call)
    if call.version == 4 and call.action == "get":
        return await export_response(request, client, call, fmt)
    if request.query_params.get("format") != fmt:  # only a preference in Accept: answer JSON
        return await call_json(request, client, call)
    raise GatewayError("invalid-request",
                       f"format={fmt} (or Accept: {export.MEDIA_TYPES[fmt].split(';')[0]}) "
                       "streams APIv4 get calls only.")


def make_router(version: int) -> APIRouter:
    router = APIRouter(prefix=f"/v{version}", tags=[f"APIv{version}"])

    responses = {**_ok_response(version), **route_problem_responses()}
    body = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": True,
        "description": "APIv4 params (select, where, values, ...) or simple field-value pairs"
        if version == 4 else "Flat APIv3 params"}}}}}

    @router.post("/{entity}/{action}", name=f"v{version}_post", responses=responses,
                 openapi_extra=body, summary=f"Call any APIv{version} entity action")
    async def post(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        return await handle_call(request, version, entity, action)

    @router.get("/{entity}/{action}", name=f"v{version}_get", responses=responses,
                summary=f"Call an APIv{version} read action with query-string params")
    async def get(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        return await handle_call(request, version, entity, action)

    return router


v4_router = make_router(4)
v3_router = make_router(3)
