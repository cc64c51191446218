"""``/v4/{entity}/{action}`` and ``/v3/{entity}/{action}``: POST with a JSON params object, GET
(read actions only) with params in the query string."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from gateway.core.errors import GatewayError
from gateway.core.params import NAME_PATTERN, check_names, is_read_action, params_from_query
from gateway.flow import export
from gateway.flow.request import CallRequest, ParamsSource
from gateway.services import services
from gateway.web.calls import body_params, check_target, credentials, note_client, origin, to_response
from gateway.web.openapi.paths import route_problem_responses

ENTITY = Path(description="CiviCRM entity, e.g. Contact", examples=["Contact"], pattern=f"^{NAME_PATTERN}$")
ACTION = Path(
    description="API action, e.g. get, create, update, delete", examples=["get"], pattern=f"^{NAME_PATTERN}$"
)


def _ok_response(version: int) -> dict[int | str, dict[str, Any]]:
    schema: dict[str, Any] = {"type": "array", "items": {"type": "object", "additionalProperties": True}}
    description = "The records, as a plain JSON list"
    if version == 3:
        schema = {}
        description += " (getsingle: the record; getcount: a number; getvalue: the value)"
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _format(request: Request) -> str:
    """The answer's format: ``format=json|ndjson|csv`` in the query, else the Accept header.

    A ``format`` query field with any other value is left alone (it is then a field filter)."""
    value = request.query_params.get("format") if request.scope.get("query_string") else None
    return export.negotiate(value if value in export.MEDIA_TYPES else None, request.headers.get("accept"))


def _query_params(request: Request, version: int, entity: str, action: str) -> ParamsSource:
    async def read() -> dict[str, Any]:
        check_names(entity, action)
        if not is_read_action(version, action):
            raise GatewayError(
                "method-not-allowed",
                f"{entity}.{action} changes data: send it with POST. Only read actions "
                "(get*, autocomplete) may use GET.",
                headers={"Allow": "POST"},
            )
        items = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if not (k == "format" and v in export.MEDIA_TYPES)
        ]
        return params_from_query(version, items, max_depth=services(request).settings.max_json_depth)

    return read


def _body_params(request: Request, entity: str, action: str) -> ParamsSource:
    read_body = body_params(request)

    async def read() -> dict[str, Any]:
        check_names(entity, action)
        return await read_body()

    return read


async def handle_call(request: Request, version: int, entity: str, action: str) -> Response:
    """One call, POST (params in a JSON body) or GET (read actions, params in the query): the
    request as the flow's :class:`CallRequest`, the flow's answer as a response.

    Both the FastAPI routes below and ``gateway.web.routes.direct`` (the fast path that skips
    FastAPI's routing for these two routes) answer through here."""
    check_target(request)
    get = request.method == "GET"
    fmt = _format(request)
    answer = await services(request).flow.call(
        CallRequest(
            version,
            entity,
            action,
            _query_params(request, version, entity, action) if get else _body_params(request, entity, action),
            credentials(request),
            origin(request),
            fmt=fmt,
            format_named=bool(request.scope.get("query_string"))
            and request.query_params.get("format") == fmt,
            reads_only=get,
            on_client=note_client(request),
        )
    )
    return to_response(answer)


def make_router(version: int) -> APIRouter:
    router = APIRouter(prefix=f"/v{version}", tags=[f"APIv{version}"])

    responses = {**_ok_response(version), **route_problem_responses()}
    body = {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": True,
                        "description": "APIv4 params (select, where, values, ...) or simple field-value pairs"
                        if version == 4
                        else "Flat APIv3 params",
                    }
                }
            },
        }
    }

    @router.post(
        "/{entity}/{action}",
        name=f"v{version}_post",
        responses=responses,
        openapi_extra=body,
        summary=f"Call any APIv{version} entity action",
    )
    async def post(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        return await handle_call(request, version, entity, action)

    @router.get(
        "/{entity}/{action}",
        name=f"v{version}_get",
        responses=responses,
        summary=f"Call an APIv{version} read action with query-string params",
    )
    async def get(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        return await handle_call(request, version, entity, action)

    return router


v4_router = make_router(4)
v3_router = make_router(3)
