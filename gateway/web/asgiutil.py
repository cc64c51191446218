"""Pieces shared by the gateway's pure ASGI middlewares (request ids, access log, metrics)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMiddleware:
    """A pure ASGI middleware that acts on HTTP requests only: lifespan and websocket
    messages pass straight through. Subclasses implement :meth:`handle`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class StatusRecorder:
    """Wraps ``send`` to note the response's status; 500 until a response starts (a request
    that failed before answering is counted as the error the client will see)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class ObservingMiddleware(HttpMiddleware):
    """Calls :meth:`before` as a request starts and :meth:`after` with its status and duration
    once its answer is finished (or failed)."""

    def before(self, scope: Scope) -> None:
        """Nothing by default."""

    def after(self, scope: Scope, status: int, seconds: float) -> None:
        """Nothing by default."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        recorder = StatusRecorder(send)
        started = time.perf_counter()
        self.before(scope)
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.after(scope, recorder.status, time.perf_counter() - started)
