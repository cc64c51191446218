"""A small piece shared by the pure ASGI middlewares that look at a finished response."""

from __future__ import annotations

from starlette.types import Message, Send


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
