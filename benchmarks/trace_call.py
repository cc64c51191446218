"""Follow one ``POST /v4/Contact/get`` through the gateway's own modules and count them.

Run: ``.venv/bin/python benchmarks/trace_call.py`` (in process, on the sandbox backend, after
one warm-up call so metadata is cached). Prints the modules the call passes through in order
of first visit, how many calls go from one gateway module into another, and how many of
those climb back up a layer (a lower layer calling into a higher one: only callbacks can,
since imports cannot), with each such step named.
"""

from __future__ import annotations

import asyncio
import sys
from types import FrameType
from typing import Any

import httpx

from gateway.settings import Settings
from gateway.web.app import create_app

# Top to bottom, as pyproject's import-linter contract orders them.
LAYERS = [
    "gateway.cli",
    "gateway.web",
    "gateway.services",
    "gateway.flow",
    "gateway.backends",
    "gateway.sandbox",
    "gateway.core",
    "gateway.telemetry",
]


def layer(module: str) -> int:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return -1


class Tracer:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.steps = 0
        self.upward: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        caller_frame = frame.f_back
        caller = caller_frame.f_globals.get("__name__", "") if caller_frame else ""
        if not callee.startswith("gateway") or callee.startswith("gateway.sandbox"):
            return
        if callee not in self.order:
            self.order.append(callee)
        if caller.startswith("gateway") and caller != callee:
            self.steps += 1
            if layer(callee) < layer(caller):
                self.upward.append(f"{caller} -> {callee} ({frame.f_code.co_name})")


async def main() -> None:
    app = create_app(Settings(backend="sandbox", metrics_enabled=False, audit_enabled=True))
    body = {"select": ["id", "display_name"], "where": [["id", ">", 0]], "limit": 3}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await client.post("/v4/Contact/get", json=body)  # warm: metadata cached
            tracer = Tracer()
            sys.setprofile(tracer)
            try:
                response = await client.post("/v4/Contact/get", json=body)
            finally:
                sys.setprofile(None)
    assert response.status_code == 200, response.text
    print(f"modules passed through: {len(tracer.order)}")
    for name in tracer.order:
        print(f"  {name}")
    print(f"calls from one gateway module into another: {tracer.steps}")
    print(f"of which climb back up a layer: {len(tracer.upward)}")
    for step in dict.fromkeys(tracer.upward):
        print(f"  {step}")


if __name__ == "__main__":
    asyncio.run(main())
