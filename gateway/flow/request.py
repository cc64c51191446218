"""What a face hands the call flow: who is calling (:class:`Credentials`), from where
(:class:`Origin`), and the call (:class:`CallRequest`, :class:`BatchRequest`). Plain data, no
web framework: an HTTP route, a CLI command and an MCP tool build the same objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# The call's params, read only once the caller is authenticated (an HTTP body is not read for
# a caller without a valid token).
ParamsSource = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Credentials:
    """What authenticates the caller: its ``Authorization`` header value, its peer address,
    and whether the request names an original client (a loopback peer is then a proxy)."""

    authorization: str | None = None
    peer: str | None = None
    proxied: bool = False


@dataclass(frozen=True)
class Origin:
    """How the call came, for the audit trail, problems and Idempotency-Key: the face
    (``rest``, ``cli``, ``mcp``), where it was sent (a problem's ``instance``), its request id,
    its source address and its Idempotency-Key (a key on anything but a write is ignored)."""

    face: str = "rest"
    instance: str = ""
    request_id: str | None = None
    source: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class CallRequest:
    """One call. ``fmt``: json, ndjson or csv; ``format_named``: the caller named the format
    (not merely preferred it), so a format that does not fit the call is refused;
    ``reads_only``: the call came in a form any web page can make a browser send (HTTP GET),
    so nothing in its tree may write."""

    version: int
    entity: str
    action: str
    params: ParamsSource
    credentials: Credentials
    origin: Origin
    fmt: str = "json"
    format_named: bool = False
    reads_only: bool = False
    # Told the client's name once known (the HTTP face puts it in its access log).
    on_client: Callable[[str], None] | None = None


@dataclass(frozen=True)
class BatchRequest:
    """Many named calls of one API version: ``params`` gives ``{name: [Entity, action,
    params?]}``."""

    version: int
    params: ParamsSource
    credentials: Credentials
    origin: Origin
    on_client: Callable[[str], None] | None = None


def given(params: dict[str, Any]) -> ParamsSource:
    """A params source for params a face already holds (a CLI argument, an MCP tool's input)."""

    async def source() -> dict[str, Any]:
        return params

    return source
