"""gzip for answers a client accepts compressed: JSON answers above a size, the OpenAPI
documents (which arrive gzipped already, see ``gateway.web.openapi``) and the docs' assets.

Streamed answers are left alone: NDJSON and CSV exports, and a large get streamed as one JSON
array (``X-Streamed: true``). Compressing them would hold back each chunk until the compressor
flushes it, and costs CPU on the one path meant to keep memory and latency flat.
"""

from __future__ import annotations

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.flow.export import MEDIA_TYPES

# A level that compresses JSON almost as well as 9 at a fraction of the CPU.
LEVEL = 6
_STREAMED_TYPES = tuple(m.split(";")[0] for m in MEDIA_TYPES.values() if not m.startswith("application/json"))


_IDENTITY = (b"content-encoding", b"identity")


class Compression:
    """Starlette's GZipMiddleware, except for streamed answers."""

    def __init__(self, app: ASGIApp, minimum_size: int) -> None:
        self.app = app
        self.gzip = GZipMiddleware(
            self._marked,
            minimum_size=minimum_size,
            compresslevel=LEVEL,
            exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, *_STREAMED_TYPES),
        )

    async def _marked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with a streamed JSON array (X-Streamed) marked as already encoded, which
        GZipMiddleware passes through untouched."""

        async def mark(message: Message) -> None:
            if message["type"] == "http.response.start" and any(
                name.lower() == b"x-streamed" for name, _ in message.get("headers", [])
            ):
                message = {**message, "headers": [*message["headers"], _IDENTITY]}
            await send(message)

        await self.app(scope, receive, mark)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            name == b"accept-encoding" and b"gzip" in value for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return

        async def unmark(message: Message) -> None:
            if message["type"] == "http.response.start" and _IDENTITY in message["headers"]:
                message = {**message, "headers": [h for h in message["headers"] if h != _IDENTITY]}
            await send(message)

        await self.gzip(scope, receive, unmark)
