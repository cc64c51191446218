"""The answer to a call that passed :func:`gateway.flow.prepare.prepare_call`: the backend call(s)
under the client's limits, and the response, in one piece or streamed page by page.

The routes only turn HTTP into ``(version, entity, action, params)`` and the format asked for;
whether an answer is paged, streamed or exported is decided here, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.policy import request_cost
from gateway.flow import export
from gateway.flow.clients import Client
from gateway.flow.prepare import shape_result
from gateway.services import Services
from gateway.web.responses import JSONResponse

# Gets that take no limit: Setting.get is not a paged query in CiviCRM.
_UNPAGED = frozenset({"Setting"})


async def answer(services: Services, client: Client, call: Call, fmt: str, *, format_named: bool) -> Response:
    """The answer in ``fmt`` (json, ndjson or csv). ``format_named``: the caller named the
    format (``format=`` in the query) rather than preferring it in ``Accept``; only then is a
    format that does not fit the call refused instead of answered as JSON."""
    if fmt == "json":
        return await json_answer(services, client, call)
    if call.version == 4 and call.action == "get":
        return await export_answer(services, client, call, fmt)
    if not format_named:
        return await json_answer(services, client, call)
    raise GatewayError(
        "invalid-request",
        f"format={fmt} (or Accept: {export.MEDIA_TYPES[fmt].split(';')[0]}) streams APIv4 get calls only.",
    )


async def whole_answer(services: Services, client: Client, call: Call) -> Response:
    """One backend call, answered as one JSON body."""
    async with services.limiter.admit(client, cost=request_cost(call) - 1):
        records = await services.backend.call(
            call.version, call.entity, call.action, call.to_params(), identity=client.identity
        )
    body, headers = shape_result(client, call, records)
    return JSONResponse(body, headers=headers)


async def json_answer(services: Services, client: Client, call: Call) -> Response:
    """A plain JSON answer. An APIv4 get with no limit that finds more than one page of
    records is streamed as a JSON array, walked by id (see gateway.flow.export), so a 100,000-record
    read holds one page in memory, not the whole answer three times over.

    The first call asks for one record more than a page, in the caller's own order: a result
    that fits is answered exactly as CiviCRM ordered it, with its count headers. Only a larger
    one is re-read in id order and streamed (without X-Result-Count, which it cannot know yet);
    a failure after streaming has begun leaves the array unterminated."""
    if (
        call.version != 4
        or call.action != "get"
        or call.entity in _UNPAGED
        or call.limit
        or call.chain
        or not export.keyset_possible(call)
    ):
        return await whole_answer(services, client, call)
    page_size = services.settings.export_page_size
    async with services.limiter.admit(client, cost=request_cost(call) - 1):
        records = await services.backend.call(
            4, call.entity, "get", {**call.to_params(), "limit": page_size + 1}, identity=client.identity
        )
    if len(records) <= page_size:
        body, headers = shape_result(client, call, records)
        return JSONResponse(body, headers=headers)
    del records
    chunks = _pages(services, client, call, "json")
    try:
        first = await anext(chunks)
    except GatewayError as exc:
        # The same query passed a moment ago, so a refusal now is of the paging itself
        # (records without ids, an entity that cannot order by id): answer in one piece.
        if exc.status >= 500:
            raise
        return await whole_answer(services, client, call)
    return _stream(first, chunks, "application/json", {"X-Streamed": "true"})


async def export_answer(services: Services, client: Client, call: Call, fmt: str) -> Response:
    """Stream an APIv4 get as NDJSON or CSV, page by page (see gateway.flow.export).

    The first page is fetched before answering, so a bad query still gets a problem+json
    status; a failure after that cuts the stream short (the body is then incomplete)."""
    metrics = services.metrics

    def count_rows(n: int) -> None:
        if metrics is not None:
            metrics.export_rows.labels(fmt).inc(n)

    chunks = _pages(services, client, call, fmt, on_rows=count_rows)
    first = await anext(chunks, b"")
    headers = {}
    if fmt == "csv":
        headers["Content-Disposition"] = f'attachment; filename="{call.entity}.csv"'
    return _stream(first, chunks, export.MEDIA_TYPES[fmt], headers)


def _pages(
    services: Services, client: Client, call: Call, fmt: str, *, on_rows: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """The call's records page by page, encoded; every page after the first is one more call
    against the client's rate and holds one of its in-flight slots while it runs."""
    limiter = services.limiter

    def gate(first: bool) -> Any:
        return limiter.admit(client, cost=0 if first else 1)

    return export.stream(
        services.backend,
        call,
        fmt,
        page_size=services.settings.export_page_size,
        identity=client.identity,
        strip_credentials=not client.policy.credential_fields,
        gate=gate,
        on_rows=on_rows,
    )


def _stream(
    first: bytes, rest: AsyncIterator[bytes], media_type: str, headers: dict[str, str]
) -> StreamingResponse:
    """The chunk already fetched (so a failure before it was a proper error status), then
    the rest as it comes."""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    return StreamingResponse(body(), media_type=media_type, headers=headers)
