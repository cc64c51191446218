"""A repeat while the first request with its key still runs, a first request that fails
before CiviCRM ran it, and a first request whose process stopped midway (its lease ends)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.backends.base import TransientError
from gateway.backends.sandbox import SandboxBackend
from gateway.core.call import Call
from gateway.flow.idempotency import call_parts, fingerprint
from gateway.flow.idempotency.store import Entry, MemoryStore
from gateway.settings import Settings
from gateway.web.app import create_app
from tests.conftest import gateway_client
from tests.idempotency.conftest import auth
from tests.idempotency.test_semantics import CREATE, count, problem


class GatedBackend(SandboxBackend):
    """The embedded sandbox, where a create waits for the test to let it through (or fails
    the way an unreachable CiviCRM does, before anything was sent)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.unreachable = False
        self.creates = 0

    async def call(self, call: Call, **kwargs: Any) -> Any:
        action = call.action
        if action == "create":
            if self.unreachable:
                raise TransientError("upstream-unavailable", "refused", reached=False)
            self.entered.set()
            await self.gate.wait()
            self.creates += 1
        return await super().call(call, **kwargs)


@pytest.fixture
def settings(store_settings: dict[str, Any]) -> Settings:
    return Settings(**store_settings)


async def test_a_repeat_while_the_first_runs_is_409_then_the_replay(settings: Settings) -> None:
    backend = GatedBackend(settings)
    async with gateway_client(settings, backend=backend) as gw:
        first = asyncio.create_task(
            gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-flight"))
        )
        await backend.entered.wait()
        busy = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-flight"))
        problem(busy, 409, "idempotency-key-in-flight")
        assert busy.headers["retry-after"] == "1"
        other = await gw.post(
            "/v4/Contact/create", json={**CREATE, "first_name": "Zed"}, headers=auth("alpha", "k-flight")
        )
        problem(other, 422, "idempotency-key-reused")
        backend.gate.set()
        done = await first
        assert done.status_code == 200
        replay = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-flight"))
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == done.content
        assert backend.creates == 1
        assert await count(gw, "Keyed") == 1


async def test_a_failure_before_civicrm_releases_the_key(settings: Settings) -> None:
    backend = GatedBackend(settings)
    backend.gate.set()
    backend.unreachable = True
    async with gateway_client(settings, backend=backend) as gw:
        down = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-down"))
        problem(down, 503, "upstream-unavailable")
        backend.unreachable = False
        retry = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-down"))
        assert retry.status_code == 200
        assert "idempotent-replayed" not in retry.headers
        assert backend.creates == 1
        assert await count(gw, "Keyed") == 1


async def test_an_expired_lease_answers_outcome_unknown(settings: Settings) -> None:
    """A claim left by a process that stopped midway: once its lease ends, the key answers
    write-outcome-unknown (it may have written), never runs the write a second time."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw,
    ):
        # The claim exactly as a request of a stopped process would have left it.
        services = app.state.services
        client = services.authenticator.authenticate(auth("alpha")["Authorization"], None, proxied=False)
        call = await services.flow.prepare(client, 4, "Contact", "create", dict(CREATE))
        now = time.time()
        lost = Entry(fingerprint([call_parts(call)]), "f" * 32, now - 1, now + 3600)
        scope = hashlib.sha256(b"alpha\0k-lost").hexdigest()
        assert await services.idempotency.store.claim(scope, lost) is None
        r = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-lost"))
        body = problem(r, 504, "write-outcome-unknown")
        assert body["detail"].startswith("The request that first sent this key stopped")
        again = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-lost"))
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == r.content
        assert await count(gw, "Keyed") == 0


class BrokenStore(MemoryStore):
    """A store that fails to claim (Redis down) or to store an answer once the write ran."""

    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail = fail

    async def claim(self, scope: str, entry: Entry) -> Entry | None:
        if self.fail == "claim":
            raise ConnectionError("store down")
        return await super().claim(scope, entry)

    async def finish(self, scope: str, owner: str, entry: Entry) -> bool:
        if self.fail == "finish":
            raise ConnectionError("store down")
        return await super().finish(scope, owner, entry)


async def _with_store(store: BrokenStore, clients_file: Path) -> tuple[Any, Any]:
    settings = Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file)
    app = create_app(settings, idempotency_store=store)
    return app, httpx.ASGITransport(app=app)


async def test_a_store_that_cannot_claim_runs_nothing(clients_file: Path) -> None:
    app, transport = await _with_store(BrokenStore("claim"), clients_file)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw,
    ):
        r = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-down"))
        problem(r, 503, "idempotency-store-unavailable")
        assert r.headers["retry-after"] == "5"
        assert await count(gw, "Keyed") == 0


async def test_an_answer_that_cannot_be_stored_is_still_answered(clients_file: Path) -> None:
    app, transport = await _with_store(BrokenStore("finish"), clients_file)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw,
    ):
        r = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-lost"))
        assert r.status_code == 200
        # The key stays claimed (until its lease ends): the write is not run again.
        again = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-lost"))
        problem(again, 409, "idempotency-key-in-flight")
        assert await count(gw, "Keyed") == 1
