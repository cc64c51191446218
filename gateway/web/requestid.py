"""``X-Request-ID``: the caller's own (when short and plain) or a new one, returned on the
answer, kept in the scope's state and on every log record written while the request runs."""

from __future__ import annotations

import os

from starlette.types import Message, Receive, Scope, Send

from gateway.telemetry.logs import request_id_var
from gateway.web.asgiutil import HttpMiddleware

_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id_from(scope: Scope) -> str:
    """The caller's id when it is safe to echo and log, else a fresh one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if 0 < len(candidate) <= 128 and set(candidate) <= _REQUEST_ID_OK:
                return candidate
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


class RequestIdMiddleware(HttpMiddleware):
    """Outermost middleware: every other layer and the access log see the id."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        context = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(context)
