"""HTTP in and out for the call flow: a request's credentials, origin and params as the flow's
plain objects (:mod:`gateway.flow.request`), and the flow's
:class:`~gateway.flow.outcome.Answer` as a Starlette response. Everything HTTP-shaped about a
call is here; the routes only choose the route.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.params import parse_body
from gateway.flow.clients import Client
from gateway.flow.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.flow.outcome import Answer
from gateway.flow.request import Credentials, Origin, ParamsSource
from gateway.services import services

# "%2F" and "%5C" decode to path separators: a name holding one would be re-read as
# "entity/action" by the router (and could slip past a proxy's path rules), so it is refused.
_ENCODED_SEPARATOR = re.compile(rb"%(?:2f|5c)", re.IGNORECASE)


def check_target(request: Request) -> None:
    """Refuse a request target whose meaning changes once percent-decoded: checked before
    anything else, so a malformed target is refused whoever sends it."""
    raw = request.scope.get("raw_path") or b""
    if _ENCODED_SEPARATOR.search(raw.partition(b"?")[0]):
        raise invalid_request("Encoded '/' or '\\' in the path: entity and action names cannot contain them.")


def is_proxied(request: Request) -> bool:
    """The request names an original client (Forwarded, X-Forwarded-For, X-Real-IP): a
    loopback peer is then a reverse proxy speaking for someone else."""
    headers = request.headers
    return any(name in headers for name in ("forwarded", "x-forwarded-for", "x-real-ip"))


def credentials(request: Request) -> Credentials:
    return Credentials(
        request.headers.get("authorization"),
        request.client.host if request.client else None,
        proxied=is_proxied(request),
    )


def origin(request: Request) -> Origin:
    """The call's origin; an Idempotency-Key counts on POST only (a GET never writes)."""
    scope = request.scope
    return Origin(
        face="rest",
        instance=scope["path"],  # request.url.path (with any root path), without building the URL
        request_id=getattr(request.state, "request_id", None),
        source=request.client.host if request.client else None,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER) if request.method == "POST" else None,
    )


def note_client(request: Request) -> Callable[[str], None]:
    """A hook telling the access log which client called."""

    def note(name: str) -> None:
        request.state.client = name

    return note


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


def body_params(request: Request) -> ParamsSource:
    """The params in the request's JSON body, read when the flow asks (once authenticated)."""

    async def read() -> dict[str, Any]:
        settings = services(request).settings
        body = await read_body(request, settings.max_body_bytes)
        return parse_body(
            body, max_depth=settings.max_json_depth, content_type=request.headers.get("content-type")
        )

    return read


async def authenticate(request: Request) -> Client:
    """The calling client of a route that is not a call (health, audit, docs), through the
    flow's own authentication."""
    check_target(request)
    client = await services(request).flow.authenticate(credentials(request))
    request.state.client = client.name
    return client


def to_response(answer: Answer) -> Response:
    if answer.chunks is not None:
        return StreamingResponse(
            answer.chunks, status_code=answer.status, media_type=answer.media_type, headers=answer.headers
        )
    return Response(
        answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers
    )
