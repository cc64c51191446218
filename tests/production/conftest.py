"""Fixtures for the production features: an upstream whose faults tests switch on and off,
and a wrapper round the HTTP backend's client that injects connection failures before or after a request is sent."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.backends.httpclient import Broken, Reply, Transport, Unreachable
from tests.conftest import ADMIN_KEY, SITE_KEY, ThreadServer

_METADATA_PATH = re.compile(r"/civicrm/ajax/api4/(Entity/get|\w+/(getActions|getFields))$")


@dataclass
class Faults:
    """What the upstream does next. ``plan`` is consumed one entry per request:
    ``"ok"``, ``"503"``, ``"429"`` (Retry-After 0), ``"429-long"`` (Retry-After 120),
    ``"502-after"`` (runs the call, then answers
    502: CiviCRM did the work but the answer is lost), ``"garbage"`` (200 with non-JSON)."""

    plan: list[str] = field(default_factory=list)
    delay: float = 0.0
    seen: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # Metadata calls (Entity.get, getActions, getFields) are recorded and faulted too.
    record_metadata: bool = False


class FaultyApp:
    def __init__(self, app: Any, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _METADATA_PATH.search(scope["path"]) and not self.faults.record_metadata:
            # The gateway's own metadata look-ups (cached; they validate each call) pass
            # untouched: the faults and the records are about the calls clients make.
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.faults.paths.append(scope["path"])
        self.faults.seen.append(dict(parse_qsl(body.decode(), keep_blank_values=True)))
        step = self.faults.plan.pop(0) if self.faults.plan else "ok"
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        if step in ("503", "429", "429-long", "garbage"):
            status = {"503": 503, "429": 429, "429-long": 429, "garbage": 200}[step]
            headers = [(b"content-type", b"text/html")]
            if step.startswith("429"):
                headers.append((b"retry-after", b"0" if step == "429" else b"120"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"<html>oops</html>"})
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        if step == "502-after":

            async def swallow(message: Message) -> None:
                pass

            await self.app(scope, replay, swallow)
            await send(
                {"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"Bad Gateway"})
            return
        await self.app(scope, replay, send)


@dataclass
class FaultyUpstream:
    url: str
    sandbox: Any
    faults: Faults
    server: ThreadServer


@pytest.fixture
def faulty_upstream(sandbox: Any) -> Iterator[FaultyUpstream]:
    from gateway.sandbox.wire import WireConfig, create_wire_app

    faults = Faults()
    app = FaultyApp(create_wire_app(sandbox, WireConfig(api_keys={ADMIN_KEY: 2}, site_key=SITE_KEY)), faults)
    server = ThreadServer(app).start()
    yield FaultyUpstream(server.url, sandbox, faults, server)
    server.stop()


class InjectingTransport:
    """Wraps the backend's real pooled client, injecting failures from ``plan``: ``"connect"``
    fails before anything is sent; ``"reset-after"`` sends the request, lets CiviCRM run it, then
    fails as a connection reset would."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.inner: Transport | None = None
        self.sent = 0

    def wrap(self, inner: Transport) -> InjectingTransport:
        self.inner = inner
        return self

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        assert self.inner is not None
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "connect":
            raise Unreachable("injected: connection refused")
        reply = await self.inner.post(path, body, headers)
        self.sent += 1
        if step == "reset-after":
            raise Broken("injected: connection reset by peer")
        return reply

    def stats(self) -> dict[str, float]:
        return self.inner.stats() if self.inner else {}

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()
