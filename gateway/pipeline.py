"""One call's way through the gateway: params normalisation -> access policy -> backend ->
result shaping. Routes only turn HTTP input into ``(version, entity, action, params)``."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .clients import Client
from .errors import GatewayError, invalid_request
from .params import check_names, normalize_v3, normalize_v4, parse_body
from .policy import check as check_policy
from .responses import JSONResponse
from .results import Records, response_body


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError("payload-too-large", f"The body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError("payload-too-large", f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def params_from_body(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    body = await read_body(request, settings.max_body_bytes)
    return parse_body(body, max_depth=settings.max_json_depth)


# "%2F" and "%5C" decode to path separators: a name holding one would be re-read as
# "entity/action" by the router (and could slip past a proxy's path rules), so it is refused.
_ENCODED_SEPARATOR = re.compile(rb"%(?:2f|5c)", re.IGNORECASE)


def check_target(request: Request) -> None:
    """Refuse a request target whose meaning changes once percent-decoded."""
    raw = request.scope.get("raw_path") or b""
    if _ENCODED_SEPARATOR.search(raw.partition(b"?")[0]):
        raise invalid_request("Encoded '/' or '\\' in the path: entity and action names cannot "
                              "contain them.")


def authenticate(request: Request) -> Client:
    """The calling client; done before the body is read (the request target is checked
    first, so a malformed target is refused whoever sends it)."""
    check_target(request)
    peer = request.client.host if request.client else None
    headers = request.headers
    proxied = any(name in headers for name in ("forwarded", "x-forwarded-for", "x-real-ip"))
    client = request.app.state.authenticator.authenticate(headers.get("authorization"), peer,
                                                          proxied=proxied)
    request.state.client = client.name
    return client


def prepare_call(client: Client, version: int, entity: str, action: str,
                 params: dict[str, Any]) -> dict[str, Any]:
    """Names, params normalisation and access policy: every call (single, batch member,
    export) passes here before any backend sees it."""
    check_names(entity, action)
    params = normalize_v4(action, params) if version == 4 else normalize_v3(params)
    return check_policy(client.policy, version, entity, action, params)


def shape_result(client: Client, version: int, action: str, records: Records
                 ) -> tuple[Any, dict[str, str]]:
    return response_body(version, action, records,
                         strip_credentials=not client.policy.credential_fields)


async def run_call(request: Request, client: Client, version: int, entity: str, action: str,
                   params: dict[str, Any]) -> Response:
    params = prepare_call(client, version, entity, action, params)
    return await run_prepared(request, client, version, entity, action, params)


async def run_prepared(request: Request, client: Client, version: int, entity: str, action: str,
                       params: dict[str, Any]) -> Response:
    """The backend call and the JSON answer, for params that passed ``prepare_call``."""
    state = request.app.state
    kwargs = {"identity": client.identity} if client.identity is not None else {}
    async with state.limiter.admit(client):
        records = await state.backend.call(version, entity, action, params, **kwargs)
    body, headers = shape_result(client, version, action, records)
    return JSONResponse(body, headers=headers)
